//! One binary WebSocket frame as a client sends it (RFC 6455, section 5.2):
//! final, opcode 2, masked. The session thread frames caller audio with it
//! into a buffer it keeps, so a frame costs no allocation.

/// The largest frame header: two bytes, an 8-byte length, the 4-byte mask.
pub const MAX_HEADER_BYTES: usize = 14;

/// Writes `payload` as one masked binary frame into `out`, which is cleared first.
pub fn binary_frame(payload: &[u8], mask: [u8; 4], out: &mut Vec<u8>) {
    out.clear();
    out.reserve(MAX_HEADER_BYTES + payload.len());
    // FIN and opcode 2 (binary); the mask bit with each length form.
    out.push(0x82);
    match payload.len() {
        length @ 0..=125 => out.push(0x80 | length as u8),
        length @ 126..=0xFFFF => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(length as u16).to_be_bytes());
        }
        length => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(length as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    let start = out.len();
    out.extend_from_slice(payload);
    apply_mask(&mut out[start..], mask);
}

/// Writes caller audio `payload` as one binary frame into `out`, masked with
/// a fresh random key, as a client must (RFC 6455, section 5.3).
pub fn audio_frame(payload: &[u8], out: &mut Vec<u8>) {
    binary_frame(payload, rand::random::<u32>().to_ne_bytes(), out);
}

/// XORs `data` with `mask`, the mask's first byte on the first byte of `data`.
pub fn apply_mask(data: &mut [u8], mask: [u8; 4]) {
    // Eight bytes at a time: the mask twice, in the same byte order as the data read.
    let wide = u64::from_ne_bytes([mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3]]);
    let mut chunks = data.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let word = u64::from_ne_bytes(chunk.try_into().unwrap_or([0; 8])) ^ wide;
        chunk.copy_from_slice(&word.to_ne_bytes());
    }
    for (i, byte) in chunks.into_remainder().iter_mut().enumerate() {
        *byte ^= mask[i % 4];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;

    /// The frame tungstenite's client writes for the same payload and mask.
    fn tungstenites(payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
        let mut frame = Frame::message(payload.to_vec(), OpCode::Data(Data::Binary), true);
        frame.header_mut().mask = Some(mask);
        let mut out = Vec::new();
        frame.format(&mut out).unwrap();
        out
    }

    #[test]
    fn frames_as_tungstenite_does_at_every_length_form() {
        let mut out = Vec::new();
        for length in [0, 1, 7, 125, 126, 320, 640, 1920, 0xFFFF, 0x10000, 70_001] {
            let payload: Vec<u8> = (0..length).map(|i| (i * 7 + 3) as u8).collect();
            let mask = [0x12, 0x9A, (length % 251) as u8, 0xF0];
            binary_frame(&payload, mask, &mut out);
            assert_eq!(out, tungstenites(&payload, mask), "{length} bytes");
        }
    }

    #[test]
    fn the_buffer_is_reused_not_grown() {
        let mut out = Vec::new();
        binary_frame(&[1; 640], [1, 2, 3, 4], &mut out);
        let (capacity, address) = (out.capacity(), out.as_ptr());
        for n in 0..100u8 {
            binary_frame(&[n; 640], [n, 2, 3, 4], &mut out);
        }
        assert_eq!((out.capacity(), out.as_ptr()), (capacity, address), "no allocation per frame");
        assert_eq!(out.len(), 4 + 4 + 640);
    }

    #[test]
    fn masking_twice_gives_the_payload_back() {
        let payload: Vec<u8> = (0..=255).collect();
        for start in 0..9 {
            let mut data = payload[start..].to_vec();
            apply_mask(&mut data, [0xDE, 0xAD, 0xBE, 0xEF]);
            assert_eq!(data[0], payload[start] ^ 0xDE);
            apply_mask(&mut data, [0xDE, 0xAD, 0xBE, 0xEF]);
            assert_eq!(data, payload[start..]);
        }
    }
}
