//! Vonage's WebSocket protocol: binary L16 both ways, the events
//! `websocket:connected`, `websocket:dtmf`, `websocket:notify` and
//! `websocket:cleared` to the server, and the actions `notify` and `clear` from it.

use serde_json::{json, Value};

use super::{parse_control, Control, Inbound};

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
pub fn read(text: &str) -> Inbound {
    let Ok(Value::Object(message)) = serde_json::from_str::<Value>(text) else {
        return Inbound::Ignored("not a JSON object".into());
    };
    match message.get("action").and_then(Value::as_str) {
        Some("notify") => {
            let payload = message.get("payload").cloned().unwrap_or(Value::Null).to_string();
            if payload.len() > super::MAX_NOTIFY_PAYLOAD_BYTES {
                return Inbound::Ignored("notify payload over 4 KiB".into());
            }
            Inbound::Control(Control::Mark { name: payload })
        }
        _ => match parse_control(text) {
            Ok(control) => Inbound::Control(control),
            Err(error) => Inbound::Ignored(error.to_string()),
        },
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
        let Inbound::Control(Control::Mark { name }) = read(r#"{"action":"notify","payload":{"step":2}}"#) else {
            panic!("notify is a mark")
        };
        assert_eq!(notify(&name), r#"{"event":"websocket:notify","payload":{"step":2}}"#);
        assert_eq!(read(r#"{"action":"clear"}"#), Inbound::Control(Control::Clear));
        assert_eq!(read(r#"{"action":"hangup"}"#), Inbound::Control(Control::Hangup { cause: None }));
        assert!(matches!(read("[1]"), Inbound::Ignored(_)));
        let huge = format!(r#"{{"action":"notify","payload":"{}"}}"#, "x".repeat(5000));
        assert!(matches!(read(&huge), Inbound::Ignored(_)));
    }
}
