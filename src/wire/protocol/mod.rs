//! What the module and the server say to each other. This file holds the
//! original protocol's text messages and the [`Dialect`] that speaks the
//! call's protocol; the others each have a file.

pub mod audiosocket;
pub mod openai;
pub mod twilio;
pub mod vonage;
pub mod wsbridge;

use std::fmt;

use bytes::Bytes;
use serde_json::{Map, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::audio::replies::Heard;
use crate::audio::uplink::ToServer;
use crate::settings::agent::AgentOptions;
use crate::settings::options::ForkLayout;
use crate::settings::{
    url_decode, CallSettings, FirstMessageStyle, Protocol, ProtocolRules, RawSettings, SettingsError,
};

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

/// What a message from the server asks of the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FromServer {
    /// Server audio in the call's wire encoding.
    Audio(Bytes),
    /// Audio of one reply of a speech-to-speech model: the playout keeps where each reply begins.
    Reply(ReplyAudio),
    Control(Control),
    /// What a speech-to-speech model tells the call besides its audio.
    Agent(AgentEvent),
    /// Nothing to act on, and why (logged at debug level).
    Ignored(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyAudio {
    /// The protocol's number for the reply, rising through the call.
    pub reply: u64,
    /// When the caller stopped speaking, on the first audio of the reply that answers them.
    pub turn_began: Option<std::time::Instant>,
    pub data: Bytes,
}

/// Who spoke the words of a transcript.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Speaker {
    /// The caller, to a model.
    User,
    /// The model.
    Assistant,
}

impl Speaker {
    pub fn name(self) -> &'static str {
        match self {
            Speaker::User => "user",
            Speaker::Assistant => "assistant",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentEvent {
    /// The caller began to speak: drop the queued reply, then tell the
    /// decoder (`Decoder::interrupted`) how much of it was heard.
    BargeIn,
    /// The model calls a function; `arguments` is its JSON text.
    FunctionCall { name: String, call_id: String, arguments: String },
    /// What was said; `reply` is the number of the reply the words were spoken in.
    Transcript { speaker: Speaker, text: String, reply: Option<u64>, truncated: bool },
    /// Tokens a response used.
    Usage { input_tokens: u64, output_tokens: u64 },
    /// The server reported an error; the call goes on.
    ServerError(String),
    /// A message the protocol answers with at once.
    Send(String),
}

/// What the module sends, protocol by protocol: the opening messages of
/// each connection, then one message per item of the uplink queue.
pub trait Encoder: Send {
    /// What a new connection opens with (a new stream each time, where the protocol has streams).
    fn open(&mut self) -> Vec<Message>;
    /// The message for one uplink item; `None` where the protocol has no such message.
    fn encode(&mut self, item: &ToServer) -> Option<Message>;
    /// Whether caller audio goes out as one binary message of the queued
    /// bytes as they are; then, on a plain `ws://` connection, the session
    /// thread may write it to the socket itself.
    fn audio_as_binary(&self) -> bool {
        false
    }
    /// A message the last [`Encoder::encode`] left to follow its own, sent right after it.
    fn take_pending(&mut self) -> Option<Message> {
        None
    }
    /// Said after a reconnect, where the protocol has a way to say it.
    fn resumed(&self, _text: String) -> Option<Message> {
        None
    }
    /// What the module says as the caller hangs up, before closing.
    fn closing(&mut self) -> Option<Message> {
        None
    }
    /// Reads what the server sends on the stream the last [`Encoder::open`] began.
    fn decoder(&self) -> Box<dyn Decoder>;
}

/// Reads the call's protocol.
pub trait Decoder: Send + Sync {
    fn decode(&self, message: Message) -> FromServer;
    /// What to tell the server after a barge-in cut these replies short.
    fn interrupted(&self, _heard: &[Heard]) -> Vec<String> {
        Vec::new()
    }
}

/// What a protocol's encoder is made from, for one call.
pub struct Opening<'a> {
    pub settings: &'a CallSettings,
    /// The first message's style where the protocol lets the operator choose it.
    pub style: FirstMessageStyle,
    pub twilio_account_sid: &'a str,
    pub call_id: &'a str,
    /// A fork's layout on the wire; `None` for a call's leg.
    pub fork: Option<&'a ForkLayout>,
    /// What a speech-to-speech model is told.
    pub agent: &'a AgentOptions,
}

impl Opening<'_> {
    /// The first message in `style`, naming the fork's content type (with its channels) where there is one.
    pub fn first_message(&self, style: FirstMessageStyle) -> String {
        match self.fork {
            Some(layout) => self.settings.first_message_naming(style, &layout.content_type),
            None => self.settings.first_message(style),
        }
    }
}

/// One protocol: its rules (name, content types, scheme, pings), as settings
/// check them, and the encoder that speaks it (its decoder comes from that).
pub struct Row {
    pub rules: &'static ProtocolRules,
    pub encoder: fn(&Opening<'_>) -> Box<dyn Encoder>,
}

/// Every protocol the module speaks. A new protocol is a file beside this
/// one and a row here.
pub const PROTOCOLS: [Row; 5] = [wsbridge::ROW, twilio::ROW, vonage::ROW, audiosocket::ROW, openai::ROW];

/// The protocol a call speaks when nothing names one.
pub const DEFAULT: Protocol = Protocol(&wsbridge::RULES);

/// The protocol called `name` (any case, white space around it ignored).
pub fn named(name: &str) -> Option<Protocol> {
    let name = name.trim();
    PROTOCOLS.iter().find(|row| row.rules.name.eq_ignore_ascii_case(name)).map(|row| Protocol(row.rules))
}

/// The protocol a call's raw `protocol` value names (plain or URL-encoded); none named is [`DEFAULT`].
pub fn choose(raw: Option<&str>) -> Result<Protocol, SettingsError> {
    let Some(raw) = raw else { return Ok(DEFAULT) };
    let decoded = url_decode(raw).unwrap_or_else(|| raw.to_string());
    named(&decoded).ok_or_else(|| SettingsError::UnknownProtocol {
        protocol: decoded.trim().chars().take(64).collect(),
        known: PROTOCOLS.iter().map(|row| row.rules.name).collect::<Vec<_>>().join(", "),
    })
}

/// A call's raw settings resolved in the protocol they name.
pub fn resolve(raw: &RawSettings, max_headers_bytes: usize) -> Result<CallSettings, SettingsError> {
    raw.resolve(max_headers_bytes, choose(raw.protocol.as_deref())?)
}

fn row_of(protocol: Protocol) -> &'static Row {
    const { &PROTOCOLS }.iter().find(|row| row.rules.name == protocol.name()).unwrap_or(&PROTOCOLS[0])
}

/// One call's protocol, both ways. Its halves are used side by side (the
/// read and write loops), hence two fields.
pub struct Dialect {
    pub encoder: Box<dyn Encoder>,
    pub decoder: Box<dyn Decoder>,
    /// Whether the connection is kept alive with pings, so that a silent server counts as dead.
    pub pings: bool,
    /// The server is a speech-to-speech model (its refusals name the API key).
    pub speaks_to_a_model: bool,
}

impl Dialect {
    pub fn new(opening: &Opening<'_>) -> Self {
        let row = row_of(opening.settings.protocol);
        let encoder = (row.encoder)(opening);
        let decoder = encoder.decoder();
        let speaks_to_a_model = row.rules.name == openai::RULES.name;
        Dialect { encoder, decoder, pings: row.rules.pings, speaks_to_a_model }
    }

    /// What a new connection opens with; the decoder follows the new stream.
    pub fn open(&mut self) -> Vec<Message> {
        let opening = self.encoder.open();
        self.decoder = self.encoder.decoder();
        opening
    }

    pub fn resumed(&self, text: String) -> Option<Message> {
        self.encoder.resumed(text)
    }

    pub fn closing(&mut self) -> Option<Message> {
        self.encoder.closing()
    }
}

/// What a decoder answers for a message of a kind its protocol does not use.
pub fn unused_kind() -> FromServer {
    FromServer::Ignored("a message of a kind this protocol does not use".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::cause::HangupCause;
    use crate::settings::{ContentType, Scheme};

    #[test]
    fn the_protocol_fixes_or_refuses_the_wire_format_and_scheme() {
        let resolve = |uri: &str, content_type: Option<&str>, protocol: Option<&str>| {
            resolve(
                &RawSettings {
                    uri: Some(uri.into()),
                    content_type: content_type.map(Into::into),
                    protocol: protocol.map(Into::into),
                    ..RawSettings::default()
                },
                1024,
            )
        };
        let plain = resolve("ws://h/x", None, None).unwrap();
        assert_eq!((plain.protocol, plain.content_type), (DEFAULT, ContentType::l16(16000)));
        let twilio = resolve("wss://h/x", Some("audio/l16;rate=16000"), Some("Twilio")).unwrap();
        assert_eq!((twilio.protocol, twilio.content_type), (named("twilio").unwrap(), ContentType::PCMU));
        let vonage = resolve("ws://h/x", Some("audio/l16;rate=8000"), Some("vonage")).unwrap();
        assert_eq!(vonage.content_type, ContentType::l16(8000));
        let audiosocket = resolve("tcp://127.0.0.1:9092", None, Some("audiosocket")).unwrap();
        assert_eq!((audiosocket.uri.scheme, audiosocket.content_type), (Scheme::Tcp, ContentType::l16(8000)));
        let wideband = resolve("tcp://127.0.0.1:9092", Some("audio/l16;rate=16000"), Some("audiosocket")).unwrap();
        assert_eq!(wideband.content_type, ContentType::l16(16000), "asked for by the call");
        for (uri, content_type, protocol) in [
            ("ws://h/x", None, Some("sip")),
            ("ws://h/x", Some("audio/pcmu"), Some("vonage")),
            ("ws://h/x", None, Some("audiosocket")),
            ("tcp://h:9", None, None),
            ("tcp://h:9", Some("audio/pcma"), Some("audiosocket")),
            ("tcp://h:9", None, Some("twilio")),
        ] {
            let error = resolve(uri, content_type, protocol).unwrap_err();
            assert_eq!(error.cause(), HangupCause::ServiceNotImplemented, "{uri} {protocol:?}: {error}");
        }
        assert!(matches!(resolve("tcp://h", None, Some("audiosocket")), Err(SettingsError::InvalidUri { .. })));
    }

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
}
