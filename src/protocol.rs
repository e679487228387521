//! Text messages: control actions from the server, and what the module sends.

use std::fmt;

use serde_json::{json, Map, Value};

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
