//! The settings of a call whose server is a speech-to-speech model: the
//! `openai` protocol's key, its `session`, the greeting, and the functions
//! the module carries out itself.

use regex::Regex;
use serde_json::{Map, Value};

use super::{module_only, per_call, Kind, Setting};

pub const OPENAI_API_KEY: Setting = module_only(
    "openai-api-key",
    Kind::Text,
    "sent as `Authorization: Bearer <key>` to an `openai` server (unless `http-headers` has an `Authorization`); never logged, listed, evented nor put in a CDR",
);
pub const OPENAI_SESSION: Setting = per_call(
    "openai-session",
    Kind::Json,
    "the `session` object of the `openai` protocol's `session.update` (instructions, voice, tools, turn detection, transcription); the channel's overlays wsbridge.conf's key by key, nested objects merged; the audio formats are the module's; invalid JSON refuses the call (`INVALID_IE_CONTENTS`)",
);
pub const OPENAI_GREETING: Setting = per_call(
    "openai-greeting",
    Kind::Text,
    "instructions for a first reply, asked for (`response.create`) once the session is updated, so the model speaks first",
);
pub const OPENAI_HANGUP_FUNCTION: Setting = per_call(
    "openai-hangup-function",
    Kind::Text,
    "a function name the module carries out itself: the reply already queued plays out, then the call ends with `NORMAL_CLEARING`",
);
pub const OPENAI_TRANSFER_FUNCTION: Setting = per_call(
    "openai-transfer-function",
    Kind::Text,
    "a function name the module carries out itself: its `destination` argument, if `openai-transfer-pattern` matches it whole, transfers the caller to that extension in the caller's context once the queued reply has played",
);
pub const OPENAI_TRANSFER_PATTERN: Setting = per_call(
    "openai-transfer-pattern",
    Kind::Text,
    "the regular expression a transfer's `destination` must match whole; unset or invalid, every transfer is refused",
);
pub const OPENAI_DTMF: Setting = per_call(
    "openai-dtmf",
    Kind::Choice { default: "send", choices: &["send", "ignore"] },
    "`send`: each caller digit reaches the model as a user message; `ignore`: digits are not sent",
);

/// An API key: its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    /// None for an empty key.
    pub fn new(key: &str) -> Option<ApiKey> {
        let key = key.trim();
        (!key.is_empty()).then(|| ApiKey(key.to_string()))
    }

    /// The header value an upgrade request carries.
    pub fn bearer(&self) -> String {
        format!("Bearer {}", self.0)
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(***)")
    }
}

/// What a call tells a speech-to-speech model, and what the module does for it.
#[derive(Debug, Clone, Default)]
pub struct AgentOptions {
    /// Fields of `session`, before the module sets the audio formats.
    pub session: Map<String, Value>,
    pub greeting: Option<String>,
    pub hangup_function: Option<String>,
    pub transfer_function: Option<String>,
    /// Anchored at both ends.
    pub transfer_pattern: Option<Regex>,
    pub dtmf_to_model: bool,
}

/// Longest regular expression a transfer pattern may be (it is compiled per call).
pub const MAX_PATTERN_CHARS: usize = 1024;

/// A `session` object from its JSON text.
pub fn parse_session(text: &str) -> Result<Map<String, Value>, String> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(session)) => Ok(session),
        Ok(_) => Err("is not a JSON object".to_string()),
        Err(error) => Err(format!("is not valid JSON ({error})")),
    }
}

/// `over` laid on `base` key by key; where both hold an object, those are merged the same way.
pub fn overlay(base: &mut Map<String, Value>, over: Map<String, Value>) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(Value::Object(below)), Value::Object(above)) => overlay(below, above),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

impl AgentOptions {
    /// Whether `destination` may be transferred to.
    pub fn may_transfer_to(&self, destination: &str) -> bool {
        self.transfer_pattern.as_ref().is_some_and(|pattern| pattern.is_match(destination))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::tuning::{read_agent, Reader};
    use serde_json::json;
    use std::collections::HashMap;

    fn read(pairs: &[(&Setting, &str)]) -> (Result<AgentOptions, String>, Vec<String>) {
        let map: HashMap<String, String> =
            pairs.iter().map(|(setting, value)| (setting.variable().unwrap(), value.to_string())).collect();
        let source = move |name: &str| map.get(name).cloned();
        let mut reader = Reader::of_variables(&source);
        let mut agent = AgentOptions::default();
        let result = read_agent(&mut reader, &mut agent).map(|()| agent);
        (result, reader.problems)
    }

    #[test]
    fn session_json_plain_or_encoded_and_bad_json_refuses() {
        let (agent, _) = read(&[(&OPENAI_SESSION, r#"{"instructions":"Be brief"}"#)]);
        assert_eq!(agent.unwrap().session["instructions"], "Be brief");
        let (agent, _) = read(&[(&OPENAI_SESSION, "%7B%22voice%22%3A%22marin%22%7D")]);
        assert_eq!(agent.unwrap().session["voice"], "marin");
        for bad in ["{\"instructions\":", "[1]", "%7B"] {
            let (agent, _) = read(&[(&OPENAI_SESSION, bad)]);
            assert!(agent.unwrap_err().starts_with("wsbridge_openai_session is not"), "{bad}");
        }
    }

    #[test]
    fn the_call_overlays_the_config_key_by_key() {
        let mut base = json!({"instructions":"conf","audio":{"output":{"voice":"alloy"},"input":{"noise":1}}});
        let over = json!({"audio":{"output":{"voice":"marin"}},"tools":[]});
        let Value::Object(base_map) = &mut base else { unreachable!() };
        overlay(base_map, over.as_object().unwrap().clone());
        assert_eq!(
            base,
            json!({"instructions":"conf","audio":{"output":{"voice":"marin"},"input":{"noise":1}},"tools":[]})
        );
    }

    #[test]
    fn transfer_pattern_matches_whole_and_bad_values_are_reported() {
        let (agent, problems) = read(&[(&OPENAI_TRANSFER_PATTERN, "1[0-9]{3}"), (&OPENAI_DTMF, "ignore")]);
        let agent = agent.unwrap();
        assert!(problems.is_empty());
        assert!(agent.may_transfer_to("1234"));
        assert!(!agent.may_transfer_to("12345") && !agent.may_transfer_to("x1234"), "anchored");
        assert!(!agent.dtmf_to_model);
        let (agent, problems) = read(&[(&OPENAI_TRANSFER_PATTERN, "(["), (&OPENAI_DTMF, "loud")]);
        let agent = agent.unwrap();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(!agent.may_transfer_to("(["), "an invalid pattern refuses every transfer");
        assert!(agent.dtmf_to_model);
        assert!(!AgentOptions::default().may_transfer_to("1000"), "no pattern: no transfer");
    }
}
