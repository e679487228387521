//! What the module and the server say to each other. This file holds the
//! original protocol's text messages and the [`Dialect`] that speaks the
//! call's protocol; the others each have a file.

pub mod audiosocket;
pub mod twilio;
pub mod vonage;

use std::fmt;

use bytes::Bytes;
use serde_json::{json, Map, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::audio::uplink::Outgoing;
use crate::settings::options::ForkLayout;
use crate::settings::{CallSettings, FirstMessageStyle, Protocol};

/// An action the server asks for in a text message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// Drop all queued audio (barge-in).
    Clear,
    /// Report back once the audio queued so far has been played.
    Mark { name: String },
    /// Play DTMF to the caller.
    Dtmf { digits: String, duration_ms: u32 },
    /// End the call, optionally with a FreeSWITCH hangup cause name.
    Hangup { cause: Option<String> },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlError {
    NotJsonObject,
    NoAction,
    UnknownAction(String),
    BadField { field: &'static str, why: &'static str },
}

impl fmt::Display for ControlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ControlError::NotJsonObject => write!(f, "not a JSON object"),
            ControlError::NoAction => write!(f, "no \"action\" string"),
            ControlError::UnknownAction(action) => write!(f, "unknown action '{action}'"),
            ControlError::BadField { field, why } => write!(f, "\"{field}\" {why}"),
        }
    }
}

pub const MAX_MARK_NAME_CHARS: usize = 256;
/// A Vonage `notify` payload is held as a mark's name until its audio has played.
pub const MAX_NOTIFY_PAYLOAD_BYTES: usize = 4096;
pub const MAX_DTMF_DIGITS: usize = 128;
pub const DEFAULT_DTMF_MS: u32 = 100;
const DTMF_MS_RANGE: std::ops::RangeInclusive<u32> = 40..=5000;

fn string_field<'a>(object: &'a Map<String, Value>, field: &'static str) -> Result<Option<&'a str>, ControlError> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text)),
        Some(_) => Err(ControlError::BadField { field, why: "must be a string" }),
    }
}

/// Parses `{"action": ...}`; white space around the JSON is allowed.
pub fn parse_control(text: &str) -> Result<Control, ControlError> {
    let Ok(Value::Object(object)) = serde_json::from_str::<Value>(text) else {
        return Err(ControlError::NotJsonObject);
    };
    let action = string_field(&object, "action")?.ok_or(ControlError::NoAction)?;
    match action {
        "clear" => Ok(Control::Clear),
        "mark" => {
            let name = string_field(&object, "name")?.unwrap_or_default();
            if name.chars().count() > MAX_MARK_NAME_CHARS {
                return Err(ControlError::BadField { field: "name", why: "is over 256 characters" });
            }
            Ok(Control::Mark { name: name.to_string() })
        }
        "dtmf" => {
            let digits = string_field(&object, "digits")?
                .ok_or(ControlError::BadField { field: "digits", why: "is missing" })?
                .to_ascii_uppercase();
            if digits.is_empty() || digits.len() > MAX_DTMF_DIGITS {
                return Err(ControlError::BadField { field: "digits", why: "must hold 1 to 128 digits" });
            }
            if !digits.chars().all(|c| c.is_ascii_digit() || matches!(c, '*' | '#' | 'A'..='D')) {
                return Err(ControlError::BadField { field: "digits", why: "may hold only 0-9, *, # and A-D" });
            }
            let duration_ms = match object.get("duration") {
                None | Some(Value::Null) => DEFAULT_DTMF_MS,
                Some(value) => value
                    .as_u64()
                    .and_then(|ms| u32::try_from(ms).ok())
                    .filter(|ms| DTMF_MS_RANGE.contains(ms))
                    .ok_or(ControlError::BadField { field: "duration", why: "must be 40 to 5000 ms" })?,
            };
            Ok(Control::Dtmf { digits, duration_ms })
        }
        "hangup" => {
            let cause = string_field(&object, "cause")?;
            if let Some(cause) = cause {
                if cause.is_empty() || cause.len() > 64 || !cause.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                {
                    return Err(ControlError::BadField { field: "cause", why: "must be a hangup cause name" });
                }
            }
            Ok(Control::Hangup { cause: cause.map(str::to_ascii_uppercase) })
        }
        other => Err(ControlError::UnknownAction(other.chars().take(64).collect())),
    }
}

/// A caller's digit, as the original module sends it.
pub fn dtmf_event(digit: char, duration_ms: u32) -> String {
    format!(" {}", json!({ "digit": digit.to_string(), "duration": duration_ms }))
}

/// Sent after the first message of a reconnected session, so a server that
/// keeps state can tie the new connection to the call.
pub fn resumed_event(uuid: &str, gap_ms: u64, reconnects: u64, dropped_frames: u64) -> String {
    json!({ "event": "resumed", "uuid": uuid, "gap_ms": gap_ms, "reconnects": reconnects, "dropped_frames": dropped_frames })
        .to_string()
}

pub fn cleared_event() -> String {
    json!({ "event": "cleared" }).to_string()
}

/// A mark reached (its audio has played) or dropped by a clear.
pub fn mark_event(name: &str, cleared: bool) -> String {
    if cleared {
        json!({ "event": "mark", "name": name, "cleared": true }).to_string()
    } else {
        json!({ "event": "mark", "name": name }).to_string()
    }
}

/// What a message from the server asks of the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    /// Server audio in the call's wire encoding.
    Audio(Bytes),
    Control(Control),
    /// Nothing to act on, and why (logged at debug level).
    Ignored(String),
}

/// Writes the call's protocol: the opening messages of each connection,
/// then one message per item of the uplink queue.
#[derive(Debug, Clone)]
pub enum Encoder {
    Wsbridge { first_message: String },
    Twilio(twilio::StreamWriter),
    Vonage { first_message: String },
    AudioSocket { uuid: [u8; 16], audio_kind: u8 },
}

/// Reads the call's protocol.
#[derive(Debug, Clone)]
pub enum Decoder {
    Wsbridge,
    /// Messages for any other stream are ignored.
    Twilio {
        stream_sid: String,
    },
    Vonage,
    AudioSocket {
        audio_kind: u8,
    },
}

/// One call's protocol, both ways. Its halves are used side by side (the
/// read and write loops), hence two fields.
#[derive(Debug, Clone)]
pub struct Dialect {
    pub encoder: Encoder,
    pub decoder: Decoder,
}

impl Dialect {
    pub fn new(settings: &CallSettings, style: FirstMessageStyle, twilio_account_sid: &str, call_id: &str) -> Self {
        match settings.protocol {
            Protocol::Wsbridge => Dialect {
                encoder: Encoder::Wsbridge { first_message: settings.first_message(style) },
                decoder: Decoder::Wsbridge,
            },
            Protocol::Vonage => Dialect {
                encoder: Encoder::Vonage { first_message: settings.first_message(FirstMessageStyle::Vonage) },
                decoder: Decoder::Vonage,
            },
            Protocol::Twilio => {
                let identity = twilio::CallIdentity::new(twilio_account_sid, call_id, settings.headers.clone());
                let writer = twilio::StreamWriter::new(identity);
                let stream_sid = writer.stream_sid().to_string();
                Dialect { encoder: Encoder::Twilio(writer), decoder: Decoder::Twilio { stream_sid } }
            }
            Protocol::AudioSocket => {
                let audio_kind = audiosocket::audio_kind(settings.content_type.rate).unwrap_or(audiosocket::AUDIO_8K);
                Dialect {
                    encoder: Encoder::AudioSocket { uuid: audiosocket::uuid_bytes(call_id), audio_kind },
                    decoder: Decoder::AudioSocket { audio_kind },
                }
            }
        }
    }

    /// A fork's layout: the first message names `content_type` (with its
    /// channels), and a Twilio stream carries `tracks`.
    pub fn for_fork(mut self, settings: &CallSettings, style: FirstMessageStyle, layout: &ForkLayout) -> Self {
        match &mut self.encoder {
            Encoder::Wsbridge { first_message } => {
                *first_message = settings.first_message_naming(style, &layout.content_type)
            }
            Encoder::Vonage { first_message } => {
                *first_message = settings.first_message_naming(FirstMessageStyle::Vonage, &layout.content_type)
            }
            Encoder::Twilio(writer) => writer.set_tracks(layout.tracks),
            Encoder::AudioSocket { .. } => {}
        }
        self
    }

    /// What a new connection opens with (a new Twilio stream each time).
    pub fn open(&mut self) -> Vec<Message> {
        match &mut self.encoder {
            Encoder::Wsbridge { first_message } | Encoder::Vonage { first_message } => {
                vec![Message::text(first_message.clone())]
            }
            Encoder::Twilio(writer) => {
                let opening = writer.open().map(Message::text).into();
                self.decoder = Decoder::Twilio { stream_sid: writer.stream_sid().to_string() };
                opening
            }
            Encoder::AudioSocket { uuid, .. } => vec![Message::Binary(audiosocket::message(audiosocket::UUID, uuid))],
        }
    }

    /// Said after a reconnect, where the protocol has a way to say it.
    pub fn resumed(&self, text: String) -> Option<Message> {
        matches!(self.encoder, Encoder::Wsbridge { .. }).then(|| Message::text(text))
    }

    /// What the module says as the caller hangs up, before closing.
    pub fn closing(&mut self) -> Option<Message> {
        match &mut self.encoder {
            Encoder::Twilio(writer) => Some(Message::text(writer.stop())),
            Encoder::AudioSocket { .. } => Some(Message::Binary(audiosocket::message(audiosocket::HANGUP, &[]))),
            Encoder::Wsbridge { .. } | Encoder::Vonage { .. } => None,
        }
    }
}

impl Encoder {
    /// A message the last [`Encoder::encode`] left to follow its own (a
    /// Twilio fork's outbound track), sent right after it.
    pub fn take_pending(&mut self) -> Option<Message> {
        match self {
            Encoder::Twilio(writer) => writer.take_pending().map(Message::text),
            _ => None,
        }
    }

    /// The message for one uplink item; `None` where the protocol has no such message.
    pub fn encode(&mut self, item: &Outgoing) -> Option<Message> {
        let message = match (self, item) {
            (Encoder::Wsbridge { .. } | Encoder::Vonage { .. }, Outgoing::Audio(frame)) => {
                Message::Binary(frame.clone())
            }
            (Encoder::Twilio(writer), Outgoing::Audio(frame)) => Message::text(writer.media(frame)),
            (Encoder::Wsbridge { .. } | Encoder::Vonage { .. } | Encoder::Twilio(_), Outgoing::Text(text)) => {
                Message::text(text.clone())
            }
            (Encoder::AudioSocket { audio_kind, .. }, Outgoing::Audio(frame)) => {
                Message::Binary(audiosocket::message(*audio_kind, frame))
            }
            (Encoder::Wsbridge { .. }, Outgoing::Dtmf { digit, duration_ms }) => {
                Message::text(dtmf_event(*digit, *duration_ms))
            }
            (Encoder::Twilio(writer), Outgoing::Dtmf { digit, .. }) => Message::text(writer.dtmf(*digit)),
            (Encoder::Vonage { .. }, Outgoing::Dtmf { digit, duration_ms }) => {
                Message::text(vonage::dtmf(*digit, *duration_ms))
            }
            (Encoder::AudioSocket { .. }, Outgoing::Dtmf { digit, .. }) => {
                Message::Binary(audiosocket::message(audiosocket::DTMF, &[*digit as u8]))
            }
            (Encoder::Wsbridge { .. }, Outgoing::Mark { name, cleared }) => Message::text(mark_event(name, *cleared)),
            (Encoder::Twilio(writer), Outgoing::Mark { name, .. }) => Message::text(writer.mark(name)),
            (Encoder::Vonage { .. }, Outgoing::Mark { name, .. }) => Message::text(vonage::notify(name)),
            (Encoder::Wsbridge { .. }, Outgoing::Cleared) => Message::text(cleared_event()),
            (Encoder::Vonage { .. }, Outgoing::Cleared) => Message::text(vonage::cleared()),
            // Twilio confirms a clear with the marks it dropped alone; AudioSocket has neither.
            (Encoder::Twilio(_), Outgoing::Cleared) | (Encoder::AudioSocket { .. }, _) => return None,
        };
        Some(message)
    }
}

impl Decoder {
    /// Reads a text or binary message from the server.
    pub fn decode(&self, message: Message) -> Inbound {
        match (self, message) {
            (Decoder::Wsbridge | Decoder::Vonage, Message::Binary(audio)) => Inbound::Audio(audio),
            (Decoder::Wsbridge, Message::Text(text)) => match parse_control(text.as_str()) {
                Ok(control) => Inbound::Control(control),
                Err(error) => Inbound::Ignored(error.to_string()),
            },
            (Decoder::Vonage, Message::Text(text)) => vonage::read(text.as_str()),
            (Decoder::Twilio { stream_sid }, Message::Text(text)) => twilio::read(text.as_str(), stream_sid),
            (Decoder::Twilio { .. }, Message::Binary(_)) => {
                Inbound::Ignored("a binary message on a Twilio stream".into())
            }
            (Decoder::AudioSocket { audio_kind }, Message::Binary(message)) => audiosocket::read(message, *audio_kind),
            (_, _) => Inbound::Ignored("a message of a kind this protocol does not use".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_parse() {
        assert_eq!(parse_control(r#"{"action":"clear"}"#), Ok(Control::Clear));
        assert_eq!(parse_control(r#" {"action":"mark","name":"x"} "#), Ok(Control::Mark { name: "x".into() }));
        assert_eq!(parse_control(r#"{"action":"mark"}"#), Ok(Control::Mark { name: String::new() }));
        assert_eq!(
            parse_control(r#"{"action":"dtmf","digits":"12#a","duration":100}"#),
            Ok(Control::Dtmf { digits: "12#A".into(), duration_ms: 100 })
        );
        assert_eq!(
            parse_control(r#"{"action":"dtmf","digits":"5"}"#),
            Ok(Control::Dtmf { digits: "5".into(), duration_ms: DEFAULT_DTMF_MS })
        );
        assert_eq!(parse_control(r#"{"action":"hangup"}"#), Ok(Control::Hangup { cause: None }));
        assert_eq!(
            parse_control(r#"{"action":"hangup","cause":"user_busy"}"#),
            Ok(Control::Hangup { cause: Some("USER_BUSY".into()) })
        );
    }

    #[test]
    fn bad_messages_are_errors_not_panics() {
        for bad in [
            "",
            "not json",
            "[]",
            "{}",
            r#"{"action":5}"#,
            r#"{"action":"fly"}"#,
            r#"{"action":"mark","name":7}"#,
            r#"{"action":"dtmf"}"#,
            r#"{"action":"dtmf","digits":""}"#,
            r#"{"action":"dtmf","digits":"12x"}"#,
            r#"{"action":"dtmf","digits":"1","duration":-1}"#,
            r#"{"action":"dtmf","digits":"1","duration":99999999999}"#,
            r#"{"action":"hangup","cause":"NO; rm -rf"}"#,
        ] {
            assert!(parse_control(bad).is_err(), "{bad}");
        }
        let long_name = format!(r#"{{"action":"mark","name":"{}"}}"#, "n".repeat(300));
        assert!(parse_control(&long_name).is_err());
    }

    #[test]
    fn events_are_compact_json() {
        assert_eq!(dtmf_event('5', 260), r#" {"digit":"5","duration":260}"#);
        assert_eq!(cleared_event(), r#"{"event":"cleared"}"#);
        assert_eq!(mark_event("a\"b", false), r#"{"event":"mark","name":"a\"b"}"#);
        assert_eq!(mark_event("x", true), r#"{"event":"mark","name":"x","cleared":true}"#);
    }
}

pub fn hangup_event(cause: &str) -> String {
    json!({ "event": "hangup", "cause": cause }).to_string()
}
