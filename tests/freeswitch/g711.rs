//! The test side's own G.711 (ITU-T G.711, the segment-and-quantisation
//! tables of its μ-law and A-law) and base64 (RFC 4648 §4), so that what the
//! module puts on the wire is judged by code that shares nothing with it.

/// μ-law: bias 0x84, clipped at 8159 on the 14-bit scale, codes inverted.
const ULAW_BIAS: i32 = 0x84;
const ULAW_CLIP: i32 = 8159;
/// Upper bound of each μ-law segment on the 14-bit scale (biased).
const ULAW_SEGMENT_ENDS: [i32; 8] = [0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF];
/// Upper bound of each A-law segment on the 13-bit scale.
const ALAW_SEGMENT_ENDS: [i32; 8] = [0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF];

fn segment(value: i32, ends: &[i32; 8]) -> usize {
    ends.iter().position(|end| value <= *end).unwrap_or(8)
}

pub fn ulaw_encode(sample: i16) -> u8 {
    let mut value = (sample as i32) >> 2;
    let mask = if value < 0 {
        value = -value;
        0x7F
    } else {
        0xFF
    };
    value = value.min(ULAW_CLIP) + (ULAW_BIAS >> 2);
    let seg = segment(value, &ULAW_SEGMENT_ENDS);
    if seg >= 8 {
        return 0x7F ^ mask;
    }
    (((seg as i32) << 4) | ((value >> (seg + 1)) & 0x0F)) as u8 ^ mask
}

pub fn ulaw_decode(code: u8) -> i16 {
    let code = !code;
    let magnitude = ((((code & 0x0F) as i32) << 3) + ULAW_BIAS) << ((code & 0x70) >> 4);
    (if code & 0x80 != 0 { ULAW_BIAS - magnitude } else { magnitude - ULAW_BIAS }) as i16
}

pub fn alaw_encode(sample: i16) -> u8 {
    let mut value = (sample as i32) >> 3;
    let mask = if value >= 0 {
        0xD5
    } else {
        value = -value - 1;
        0x55
    };
    let seg = segment(value, &ALAW_SEGMENT_ENDS);
    if seg >= 8 {
        return 0x7F ^ mask;
    }
    let quantised = if seg < 2 { (value >> 1) & 0x0F } else { (value >> seg) & 0x0F };
    (((seg as i32) << 4) | quantised) as u8 ^ mask
}

pub fn alaw_decode(code: u8) -> i16 {
    let code = code ^ 0x55;
    let mut magnitude = ((code & 0x0F) as i32) << 4;
    match (code & 0x70) >> 4 {
        0 => magnitude += 8,
        1 => magnitude += 0x108,
        seg => magnitude = (magnitude + 0x108) << (seg - 1),
    }
    (if code & 0x80 != 0 { magnitude } else { -magnitude }) as i16
}

const BASE64_ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with `=` padding.
pub fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for (index, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if index <= chunk.len() {
                out.push(BASE64_ALPHABET[(n >> shift) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Strict standard base64: padded to a multiple of 4, no white space.
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    if bytes.len() % 4 != 0 {
        return None;
    }
    let value = |c: u8| BASE64_ALPHABET.iter().position(|a| *a == c).map(|v| v as u32);
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    for (index, quad) in bytes.chunks(4).enumerate() {
        let last = index == bytes.len() / 4 - 1;
        let padding = quad.iter().rev().take_while(|c| **c == b'=').count();
        if padding > 2 || (padding > 0 && !last) {
            return None;
        }
        let mut n = 0u32;
        for c in &quad[..4 - padding] {
            n = n << 6 | value(*c)?;
        }
        n <<= 6 * padding as u32;
        out.extend_from_slice(&[(n >> 16) as u8, (n >> 8) as u8, n as u8][..3 - padding]);
    }
    Some(out)
}

/// Known values of both laws and of base64; runs without FreeSWITCH.
pub fn known_values() {
    // μ-law: 0xFF is +0 and 0x7F is -0; the extremes are ±32124; the
    // smallest step of the first segment is 8.
    for (code, linear) in [(0xFF, 0), (0x7F, 0), (0x80, 32124), (0x00, -32124), (0xF0, 120), (0x70, -120), (0xFE, 8)] {
        assert_eq!(ulaw_decode(code), linear, "μ-law {code:#04x}");
    }
    for (linear, code) in [(0, 0xFF), (-1, 0x7E), (32767, 0x80), (-32768, 0x00), (120, 0xF0)] {
        assert_eq!(ulaw_encode(linear), code, "μ-law of {linear}");
    }
    // A-law: codes are XORed with 0x55; ±8 around zero, ±32256 at the ends.
    for (code, linear) in [(0xD5, 8), (0x55, -8), (0xAA, 32256), (0x2A, -32256)] {
        assert_eq!(alaw_decode(code), linear, "A-law {code:#04x}");
    }
    for (linear, code) in [(0, 0xD5), (-1, 0x55), (32767, 0xAA), (-32768, 0x2A)] {
        assert_eq!(alaw_encode(linear), code, "A-law of {linear}");
    }
    // Every code decodes to a value that encodes back to it (μ-law's -0 aside).
    for code in 0..=255u8 {
        if code != 0x7F {
            assert_eq!(ulaw_encode(ulaw_decode(code)), code, "μ-law round trip of {code:#04x}");
        }
        assert_eq!(alaw_encode(alaw_decode(code)), code, "A-law round trip of {code:#04x}");
    }
    // RFC 4648 section 10.
    for (plain, encoded) in [
        ("", ""),
        ("f", "Zg=="),
        ("fo", "Zm8="),
        ("foo", "Zm9v"),
        ("foob", "Zm9vYg=="),
        ("fooba", "Zm9vYmE="),
        ("foobar", "Zm9vYmFy"),
    ] {
        assert_eq!(base64_encode(plain.as_bytes()), encoded);
        assert_eq!(base64_decode(encoded).as_deref(), Some(plain.as_bytes()));
    }
    for bad in ["Zm9", "Zm=v", "Z!==", "Zg==Zg==", "Z==="] {
        assert_eq!(base64_decode(bad), None, "{bad:?} is not base64");
    }
    let all: Vec<u8> = (0..=255).collect();
    assert_eq!(base64_decode(&base64_encode(&all)), Some(all));
}
