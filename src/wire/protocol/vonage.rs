//! Vonage's WebSocket protocol: binary L16 both ways, the events
//! `websocket:connected`, `websocket:dtmf`, `websocket:notify` and
//! `websocket:cleared` to the server, and the actions `notify` and `clear` from it.

use serde_json::{json, Value};

use tokio_tungstenite::tungstenite::Message;

use super::{parse_control, unused_kind, Control, Decoder, Encoder, FromServer, Opening, Row};
use crate::audio::uplink::ToServer;
use crate::settings::{ContentType, Encoding, FirstMessageStyle, ProtocolRules};

/// A caller's digit.
pub fn dtmf(digit: char, duration_ms: u32) -> String {
    json!({ "event": "websocket:dtmf", "digit": digit.to_string(), "duration": duration_ms }).to_string()
}

/// The answer to a `notify` once the audio before it has played; the payload as the server sent it.
pub fn notify(payload_text: &str) -> String {
    let payload = serde_json::from_str::<Value>(payload_text).unwrap_or_else(|_| Value::String(payload_text.into()));
    json!({ "event": "websocket:notify", "payload": payload }).to_string()
}

pub fn cleared() -> String {
    json!({ "event": "websocket:cleared" }).to_string()
}

/// A text message from a Vonage server. `notify` becomes a mark named by its payload's JSON.
pub fn read(text: &str) -> FromServer {
    let Ok(Value::Object(message)) = serde_json::from_str::<Value>(text) else {
        return FromServer::Ignored("not a JSON object".into());
    };
    match message.get("action").and_then(Value::as_str) {
        Some("notify") => {
            let payload = message.get("payload").cloned().unwrap_or(Value::Null).to_string();
            if payload.len() > super::MAX_NOTIFY_PAYLOAD_BYTES {
                return FromServer::Ignored("notify payload over 4 KiB".into());
            }
            FromServer::Control(Control::Mark { name: payload })
        }
        _ => match parse_control(text) {
            Ok(control) => FromServer::Control(control),
            Err(error) => FromServer::Ignored(error.to_string()),
        },
    }
}

pub const RULES: ProtocolRules = ProtocolRules {
    name: "vonage",
    over_tcp: false,
    pings: true,
    carries_text: true,
    content_type: carries,
    fork_content_type: fork_carries,
};

pub const ROW: Row = Row { rules: &RULES, encoder };

fn carries(asked: ContentType, _set_for_call: bool) -> Result<ContentType, String> {
    match asked.encoding {
        Encoding::L16 => Ok(asked),
        _ => Err(format!("the vonage protocol carries L16 only, not {asked}")),
    }
}

fn fork_carries(rate: u32) -> Result<ContentType, String> {
    Ok(ContentType::l16(rate))
}

fn encoder(opening: &Opening<'_>) -> Box<dyn Encoder> {
    Box::new(Writer { first_message: opening.first_message(FirstMessageStyle::Vonage) })
}

struct Writer {
    first_message: String,
}

impl Encoder for Writer {
    fn open(&mut self) -> Vec<Message> {
        vec![Message::text(self.first_message.clone())]
    }

    fn audio_as_binary(&self) -> bool {
        true
    }

    fn encode(&mut self, item: &ToServer) -> Option<Message> {
        Some(match item {
            ToServer::Audio(frame) => Message::Binary(frame.clone()),
            ToServer::Text(text) => Message::text(text.clone()),
            ToServer::Dtmf { digit, duration_ms } => Message::text(dtmf(*digit, *duration_ms)),
            ToServer::Mark { name, .. } => Message::text(notify(name)),
            ToServer::Cleared => Message::text(cleared()),
            ToServer::FunctionResult { .. } | ToServer::AfterPlayout(_) => return None,
        })
    }

    fn decoder(&self) -> Box<dyn Decoder> {
        Box::new(Reader)
    }
}

struct Reader;

impl Decoder for Reader {
    fn decode(&self, message: Message) -> FromServer {
        match message {
            Message::Binary(audio) => FromServer::Audio(audio),
            Message::Text(text) => read(text.as_str()),
            _ => unused_kind(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_as_vonage_documents_them() {
        assert_eq!(dtmf('5', 260), r#"{"event":"websocket:dtmf","digit":"5","duration":260}"#);
        assert_eq!(cleared(), r#"{"event":"websocket:cleared"}"#);
        assert_eq!(notify(r#"{"a":1}"#), r#"{"event":"websocket:notify","payload":{"a":1}}"#);
    }

    #[test]
    fn notify_and_clear_are_read() {
        let FromServer::Control(Control::Mark { name }) = read(r#"{"action":"notify","payload":{"step":2}}"#) else {
            panic!("notify is a mark")
        };
        assert_eq!(notify(&name), r#"{"event":"websocket:notify","payload":{"step":2}}"#);
        assert_eq!(read(r#"{"action":"clear"}"#), FromServer::Control(Control::Clear));
        assert_eq!(read(r#"{"action":"hangup"}"#), FromServer::Control(Control::Hangup { cause: None }));
        assert!(matches!(read("[1]"), FromServer::Ignored(_)));
        let huge = format!(r#"{{"action":"notify","payload":"{}"}}"#, "x".repeat(5000));
        assert!(matches!(read(&huge), FromServer::Ignored(_)));
    }
}
