//! Asterisk's AudioSocket over plain TCP: each message is a type byte, a
//! big-endian 16-bit payload length, then the payload.
//!
//! Written here rather than taken from the `audiosocket` crate: that crate
//! predates the DTMF and higher-rate types, and the framing is ten lines.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use tokio_tungstenite::tungstenite::Message;

use super::{unused_kind, Control, Decoder, Encoder, FromServer, Opening, Row, DEFAULT_DTMF_MS};
use crate::audio::uplink::ToServer;
use crate::settings::{ContentType, Encoding, ProtocolRules};

pub const HANGUP: u8 = 0x00;
pub const UUID: u8 = 0x01;
pub const DTMF: u8 = 0x03;
/// Signed linear 16-bit at 8 kHz; the higher rates follow Asterisk's documented types.
pub const AUDIO_8K: u8 = 0x10;
pub const ERROR: u8 = 0xff;
const HEADER_BYTES: usize = 3;

/// The audio type for a rate, as docs.asterisk.org lists them (0x10 to 0x18).
pub fn audio_kind(rate: u32) -> Option<u8> {
    match rate {
        8000 => Some(AUDIO_8K),
        12000 => Some(0x11),
        16000 => Some(0x12),
        24000 => Some(0x13),
        32000 => Some(0x14),
        44100 => Some(0x15),
        48000 => Some(0x16),
        96000 => Some(0x17),
        192000 => Some(0x18),
        _ => None,
    }
}

/// One whole message, header included. The longest payload the module
/// sends is 200 ms at 48 kHz (19200 bytes); beyond 65535 bytes, which the
/// length cannot say, the payload is cut rather than the framing broken.
pub fn message(kind: u8, payload: &[u8]) -> Bytes {
    let payload = &payload[..payload.len().min(u16::MAX as usize)];
    let mut message = BytesMut::with_capacity(HEADER_BYTES + payload.len());
    message.put_u8(kind);
    message.put_u16(payload.len() as u16);
    message.put_slice(payload);
    message.freeze()
}

/// The 16 bytes of a UUID's hex digits; a call ID that is not a UUID is
/// hashed to 16 bytes, so the server still gets a stable identity.
pub fn uuid_bytes(call_id: &str) -> [u8; 16] {
    let hex: Vec<u8> = call_id.bytes().filter(u8::is_ascii_hexdigit).collect();
    let mut bytes = [0u8; 16];
    if hex.len() == 32 && call_id.len() == 36 {
        for (byte, pair) in bytes.iter_mut().zip(hex.chunks_exact(2)) {
            let text = std::str::from_utf8(pair).expect("hex digits are ASCII");
            *byte = u8::from_str_radix(text, 16).expect("checked hex digits");
        }
    } else {
        let digest = ring::digest::digest(&ring::digest::SHA256, call_id.as_bytes());
        bytes.copy_from_slice(&digest.as_ref()[..16]);
    }
    bytes
}

/// Splits a TCP byte stream into whole messages.
#[derive(Debug, Default)]
pub struct Framing;

impl tokio_util::codec::Decoder for Framing {
    type Item = Bytes;
    type Error = std::io::Error;

    fn decode(&mut self, buffer: &mut BytesMut) -> Result<Option<Bytes>, std::io::Error> {
        if buffer.len() < HEADER_BYTES {
            return Ok(None);
        }
        let length = u16::from_be_bytes([buffer[1], buffer[2]]) as usize;
        if buffer.len() < HEADER_BYTES + length {
            buffer.reserve(HEADER_BYTES + length - buffer.len());
            return Ok(None);
        }
        Ok(Some(buffer.split_to(HEADER_BYTES + length).freeze()))
    }
}

impl tokio_util::codec::Encoder<Bytes> for Framing {
    type Error = std::io::Error;

    fn encode(&mut self, message: Bytes, buffer: &mut BytesMut) -> Result<(), std::io::Error> {
        buffer.extend_from_slice(&message);
        Ok(())
    }
}

/// Reads one whole message from the server; `audio_kind` is the call's own.
pub fn read(mut message: Bytes, audio_kind: u8) -> FromServer {
    if message.len() < HEADER_BYTES {
        return FromServer::Ignored("a message shorter than its header".into());
    }
    let kind = message.get_u8();
    message.advance(2);
    match kind {
        HANGUP => FromServer::Control(Control::Hangup { cause: None }),
        ERROR => {
            let code = message.first().map(|code| format!("0x{code:02x}")).unwrap_or_else(|| "none".into());
            tracing::warn!("the AudioSocket server sent an error (code {code})");
            FromServer::Control(Control::Hangup { cause: Some("NETWORK_OUT_OF_ORDER".into()) })
        }
        DTMF => match message.first().map(|digit| (*digit as char).to_ascii_uppercase()) {
            Some(digit) if digit.is_ascii_digit() || matches!(digit, '*' | '#' | 'A'..='D') => {
                FromServer::Control(Control::Dtmf { digits: digit.to_string(), duration_ms: DEFAULT_DTMF_MS })
            }
            _ => FromServer::Ignored("a DTMF message without a digit".into()),
        },
        kind if kind == audio_kind => FromServer::Audio(message),
        UUID => FromServer::Ignored("a UUID message from the server".into()),
        other => FromServer::Ignored(format!("a message of type 0x{other:02x}")),
    }
}

pub const RULES: ProtocolRules = ProtocolRules {
    name: "audiosocket",
    over_tcp: true,
    // A server that only listens sends nothing, and is not dead for it: TCP keeps the liveness.
    pings: false,
    carries_text: false,
    content_type: carries,
    fork_content_type: fork_carries,
};

pub const ROW: Row = Row { rules: &RULES, encoder };

/// The classic type 0x10 is 8 kHz signed linear: the default whatever
/// wsbridge.conf says; a call may ask for a newer type's rate.
fn carries(asked: ContentType, set_for_call: bool) -> Result<ContentType, String> {
    match (set_for_call, asked.encoding) {
        (true, Encoding::L16) => Ok(asked),
        (true, _) => Err(format!("the audiosocket protocol carries L16 only, not {asked}")),
        (false, _) => Ok(ContentType::l16(8000)),
    }
}

fn fork_carries(_rate: u32) -> Result<ContentType, String> {
    Err("a fork speaks the wsbridge, twilio or vonage protocol, not audiosocket".into())
}

fn encoder(opening: &Opening<'_>) -> Box<dyn Encoder> {
    let audio_kind = audio_kind(opening.settings.content_type.rate).unwrap_or(AUDIO_8K);
    Box::new(Writer { uuid: uuid_bytes(opening.call_id), audio_kind })
}

struct Writer {
    uuid: [u8; 16],
    audio_kind: u8,
}

impl Encoder for Writer {
    fn open(&mut self) -> Vec<Message> {
        vec![Message::Binary(message(UUID, &self.uuid))]
    }

    /// AudioSocket carries audio and digits, no text, marks or clears.
    fn encode(&mut self, item: &ToServer) -> Option<Message> {
        match item {
            ToServer::Audio(frame) => Some(Message::Binary(message(self.audio_kind, frame))),
            ToServer::Dtmf { digit, .. } => Some(Message::Binary(message(DTMF, &[*digit as u8]))),
            _ => None,
        }
    }

    fn closing(&mut self) -> Option<Message> {
        Some(Message::Binary(message(HANGUP, &[])))
    }

    fn decoder(&self) -> Box<dyn Decoder> {
        Box::new(Reader { audio_kind: self.audio_kind })
    }
}

struct Reader {
    audio_kind: u8,
}

impl Decoder for Reader {
    fn decode(&self, received: Message) -> FromServer {
        match received {
            Message::Binary(bytes) => read(bytes, self.audio_kind),
            _ => unused_kind(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_util::codec::Decoder;

    #[test]
    fn messages_are_type_length_payload() {
        assert_eq!(&message(HANGUP, &[])[..], &[0, 0, 0]);
        assert_eq!(&message(DTMF, b"5")[..], &[3, 0, 1, b'5']);
        let audio = message(AUDIO_8K, &[7; 320]);
        assert_eq!(&audio[..3], &[0x10, 0x01, 0x40]);
        let huge = message(AUDIO_8K, &vec![0; 70_000]);
        assert_eq!((huge.len(), &huge[1..3]), (3 + 65535, &[0xff, 0xff][..]), "cut, never mis-framed");
    }

    #[test]
    fn framing_waits_for_whole_messages() {
        let mut buffer = BytesMut::from(&[0x10u8, 0x00, 0x04, 1, 2][..]);
        assert_eq!(Framing.decode(&mut buffer).unwrap(), None);
        buffer.extend_from_slice(&[3, 4, 0x00, 0x00]);
        assert_eq!(Framing.decode(&mut buffer).unwrap().as_deref(), Some(&[0x10, 0, 4, 1, 2, 3, 4][..]));
        assert_eq!(Framing.decode(&mut buffer).unwrap().as_deref(), None);
        buffer.extend_from_slice(&[0x00]);
        assert_eq!(Framing.decode(&mut buffer).unwrap().as_deref(), Some(&[0, 0, 0][..]));
    }

    #[test]
    fn server_messages_are_read() {
        assert_eq!(read(message(AUDIO_8K, &[1, 2]), AUDIO_8K), FromServer::Audio(Bytes::from_static(&[1, 2])));
        assert_eq!(read(message(HANGUP, &[]), AUDIO_8K), FromServer::Control(Control::Hangup { cause: None }));
        assert_eq!(
            read(message(ERROR, &[2]), AUDIO_8K),
            FromServer::Control(Control::Hangup { cause: Some("NETWORK_OUT_OF_ORDER".into()) })
        );
        assert_eq!(
            read(message(DTMF, b"#"), AUDIO_8K),
            FromServer::Control(Control::Dtmf { digits: "#".into(), duration_ms: DEFAULT_DTMF_MS })
        );
        assert!(matches!(read(message(0x12, &[0; 4]), AUDIO_8K), FromServer::Ignored(_)), "another rate");
        assert!(matches!(read(message(DTMF, b"x"), AUDIO_8K), FromServer::Ignored(_)));
        assert!(matches!(read(Bytes::from_static(&[1]), AUDIO_8K), FromServer::Ignored(_)));
    }

    #[test]
    fn uuids_go_as_their_16_bytes() {
        let bytes = uuid_bytes("6f1c2a4e-0b1d-4c5e-9a7b-123456789abc");
        assert_eq!(bytes[..4], [0x6f, 0x1c, 0x2a, 0x4e]);
        assert_eq!(bytes[15], 0xbc);
        assert_eq!(uuid_bytes("not-a-uuid"), uuid_bytes("not-a-uuid"));
        assert_ne!(uuid_bytes("not-a-uuid"), uuid_bytes("other"));
    }
}
