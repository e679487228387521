//! G.711 μ-law encoding (ITU-T G.711), for Twilio forks.

/// G.711 μ-law of one sample (ITU-T G.711), for Twilio forks.
pub fn mulaw(sample: i16) -> u8 {
    const BIAS: i32 = 0x84;
    const CLIP: i32 = 32635;
    let mut value = sample as i32;
    let sign = if value < 0 {
        value = -value;
        0x80
    } else {
        0
    };
    let value = value.min(CLIP) + BIAS;
    let segment = (value >> 7) as u32;
    let exponent = if segment == 0 { 0 } else { 31 - segment.leading_zeros() as i32 };
    let mantissa = (value >> (exponent + 3)) & 0x0F;
    !((sign | (exponent << 4) | mantissa) as u8)
}

/// A frame of little-endian L16 as μ-law; a stereo frame becomes its left
/// half then its right half (Twilio's inbound and outbound tracks).
pub fn to_mulaw_tracks(frame: &[u8], channels: usize) -> Vec<u8> {
    let samples: Vec<i16> = frame.chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]])).collect();
    (0..channels).flat_map(|channel| samples.iter().skip(channel).step_by(channels).map(|s| mulaw(*s))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mulaw_matches_g711() {
        assert_eq!(mulaw(0), 0xFF);
        assert_eq!(mulaw(-1), 0x7F);
        assert_eq!(mulaw(32767), 0x80);
        assert_eq!(mulaw(-32768), 0x00);
        assert_eq!(mulaw(1000), 0xCE);
        let tracks = to_mulaw_tracks(&[0, 0, 0xFF, 0x7F, 0, 0, 0xFF, 0x7F], 2);
        assert_eq!(tracks, [0xFF, 0xFF, 0x80, 0x80]);
    }
}
