//! A call from the WebSocket side as its client asks for it (the first
//! message, [`FirstMessage`]) and as its token lets it be ([`InboundCall`]):
//! pure code, run before any channel exists.

use std::fmt;
use std::net::SocketAddr;

use serde_json::{Map, Value};

use crate::call::plan::CallPlan;
use crate::settings::tokens::TokenScope;
use crate::settings::{CallSettings, CallTuning, ContentType, ServerUri};

/// Largest first message, in bytes.
pub const MAX_FIRST_MESSAGE_BYTES: usize = 4096;
/// What `variables` may hold.
pub const MAX_VARIABLES: usize = 32;
pub const MAX_VARIABLE_NAME_CHARS: usize = 64;
pub const MAX_VARIABLES_BYTES: usize = 2048;
/// The prefix of every channel variable a client sets.
pub const VARIABLE_PREFIX: &str = "wsbridge_in_";
/// The variable naming the call's token: the module's, never the client's.
pub const TOKEN_VARIABLE: &str = "wsbridge_in_token";
/// Longest destination or caller ID.
const MAX_FIELD_CHARS: usize = 128;

/// What the client asks for in its first message.
#[derive(Debug, Clone, PartialEq)]
pub struct FirstMessage {
    pub destination: String,
    pub caller_id_number: Option<String>,
    pub caller_id_name: Option<String>,
    pub content_type: ContentType,
    /// Channel variables, already named `wsbridge_in_<key>`, in the order given.
    pub variables: Vec<(String, String)>,
}

/// Why a first message is refused; the client is closed with 1007 and this.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed(pub String);

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn malformed(why: impl Into<String>) -> Malformed {
    Malformed(why.into())
}

/// What a text field may hold, so that nothing a client sends is read by
/// FreeSWITCH as more than text: `${...}` expands variables and runs APIs,
/// `{...}` opens channel variables in dial strings, and a destination or
/// number is pasted into dial strings by dialplans.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Charset {
    /// A destination or a number: `[0-9A-Za-z+*#._-]` only.
    Dialable,
    /// Free text (a caller ID name, a variable's value): no control
    /// character, no `$`, `{` or `}`.
    Text,
    /// A content type: no control character.
    Any,
}

/// Why a dialable field is refused.
const DIALABLE_REFUSAL: &str = "holds a character other than 0-9, A-Z, a-z, +, *, #, ., _ and -";

impl Charset {
    /// Why `text` does not fit, if it does not.
    fn refuses(self, text: &str) -> Option<&'static str> {
        let dialable = |c: char| c.is_ascii_alphanumeric() || "+*#._-".contains(c);
        if text.chars().any(char::is_control) {
            return Some("holds a control character");
        }
        match self {
            Charset::Dialable if !text.chars().all(dialable) => Some(DIALABLE_REFUSAL),
            Charset::Text if text.contains(['$', '{', '}']) => Some("holds $, { or }"),
            _ => None,
        }
    }
}

/// A short text: 1 to 128 characters of `charset`.
fn text_field(
    object: &Map<String, Value>,
    field: &str,
    required: bool,
    charset: Charset,
) -> Result<Option<String>, Malformed> {
    match object.get(field) {
        None | Some(Value::Null) if required => Err(malformed(format!("\"{field}\" is missing"))),
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => {
            let count = text.chars().count();
            if count == 0 || count > MAX_FIELD_CHARS {
                return Err(malformed(format!("\"{field}\" must hold 1 to {MAX_FIELD_CHARS} characters")));
            }
            if let Some(why) = charset.refuses(text) {
                return Err(malformed(format!("\"{field}\" {why}")));
            }
            Ok(Some(text.clone()))
        }
        Some(_) => Err(malformed(format!("\"{field}\" must be a string"))),
    }
}

fn variables(value: Option<&Value>) -> Result<Vec<(String, String)>, Malformed> {
    let object = match value {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Object(object)) => object,
        Some(_) => return Err(malformed("\"variables\" must be an object")),
    };
    if object.len() > MAX_VARIABLES {
        return Err(malformed(format!("\"variables\" holds more than {MAX_VARIABLES} keys")));
    }
    let mut total = 0;
    let mut out = Vec::with_capacity(object.len());
    for (key, value) in object {
        let valid_key = !key.is_empty()
            && key.len() <= MAX_VARIABLE_NAME_CHARS
            && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid_key {
            let shown: String = key.chars().take(32).collect();
            return Err(malformed(format!(
                "variable name '{shown}' is not 1 to {MAX_VARIABLE_NAME_CHARS} of A-Z, a-z, 0-9 and _"
            )));
        }
        if format!("{VARIABLE_PREFIX}{key}") == TOKEN_VARIABLE {
            return Err(malformed(format!("variable name '{key}' is reserved")));
        }
        let value = match value {
            Value::String(text) => text.clone(),
            Value::Number(number) => number.to_string(),
            Value::Bool(flag) => flag.to_string(),
            _ => return Err(malformed(format!("variable '{key}' must be a string, a number or a boolean"))),
        };
        if let Some(why) = Charset::Text.refuses(&value.replace('\t', " ")) {
            return Err(malformed(format!("variable '{key}' {why}")));
        }
        total += key.len() + value.len();
        if total > MAX_VARIABLES_BYTES {
            return Err(malformed(format!("\"variables\" hold more than {MAX_VARIABLES_BYTES} bytes")));
        }
        out.push((format!("{VARIABLE_PREFIX}{key}"), value));
    }
    Ok(out)
}

impl FirstMessage {
    /// Reads the client's first message: a JSON object of at most 4 KiB
    /// where only `destination` is required. Unknown fields are ignored;
    /// the dialplan context is never the client's to choose.
    pub fn parse(text: &str) -> Result<FirstMessage, Malformed> {
        if text.len() > MAX_FIRST_MESSAGE_BYTES {
            return Err(malformed(format!("the first message is over {MAX_FIRST_MESSAGE_BYTES} bytes")));
        }
        let Ok(Value::Object(object)) = serde_json::from_str::<Value>(text) else {
            return Err(malformed("the first message is not a JSON object"));
        };
        let destination = text_field(&object, "destination", true, Charset::Dialable)?.unwrap_or_default();
        let content_type = match text_field(&object, "content-type", false, Charset::Any)? {
            None => ContentType::default(),
            Some(text) => ContentType::parse(&text).ok_or_else(|| {
                malformed("\"content-type\" is not audio/l16;rate=8000, 16000, 24000, 32000 or 48000, audio/pcmu or audio/pcma")
            })?,
        };
        Ok(FirstMessage {
            destination,
            caller_id_number: text_field(&object, "caller_id_number", false, Charset::Dialable)?,
            caller_id_name: text_field(&object, "caller_id_name", false, Charset::Text)?,
            content_type,
            variables: variables(object.get("variables"))?,
        })
    }
}

/// The call a client gets: what it asked for, within its token's scope.
#[derive(Debug, Clone, PartialEq)]
pub struct InboundCall {
    pub destination: String,
    pub caller_id_number: String,
    pub caller_id_name: String,
    pub content_type: ContentType,
    /// The token's context.
    pub context: String,
    /// The client's `wsbridge_in_*`, then `wsbridge_in_token` and `accountcode`.
    pub variables: Vec<(String, String)>,
    /// The token's name.
    pub token: String,
    /// Hung up this long after the answer.
    pub max_seconds: Option<u64>,
}

/// Why a token may not make the call asked for; the client is closed with
/// 1008 and this.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutOfScope(pub String);

impl InboundCall {
    /// The call `first` asks for, if `token` allows it; `peer` is the client.
    pub fn scoped(first: FirstMessage, token: &TokenScope, peer: SocketAddr) -> Result<InboundCall, OutOfScope> {
        if !token.allows_destination(&first.destination) {
            return Err(OutOfScope("destination not allowed for this token".into()));
        }
        let caller_id_number =
            token.caller_id_number(first.caller_id_number.as_deref(), &peer.ip().to_string()).map_err(OutOfScope)?;
        let mut variables = first.variables;
        variables.push((TOKEN_VARIABLE.to_string(), token.name.clone()));
        variables.push(("accountcode".to_string(), token.name.clone()));
        Ok(InboundCall {
            destination: first.destination,
            caller_id_number,
            caller_id_name: first.caller_id_name.unwrap_or_else(|| "wsbridge".to_string()),
            content_type: first.content_type,
            context: token.context.clone(),
            variables,
            token: token.name.clone(),
            max_seconds: token.max_seconds,
        })
    }

    /// The call's plan: the module's tuning, the client's format, and the
    /// client as the "server" the call's media is exchanged with.
    pub fn plan(&self, peer: SocketAddr, tuning: CallTuning) -> Result<CallPlan, String> {
        let uri = ServerUri::parse(&format!("ws://{peer}/")).map_err(|error| error.to_string())?;
        Ok(CallPlan {
            server: CallSettings {
                uri,
                fallbacks: Vec::new(),
                content_type: self.content_type,
                headers: Map::new(),
                protocol: crate::wire::protocol::DEFAULT,
                uri_from_config: false,
            },
            tuning,
            shown_uri: inbound_label(peer),
        })
    }
}

/// How `wsbridge list` and the logs show an inbound call.
pub fn inbound_label(peer: SocketAddr) -> String {
    format!("inbound:{peer}")
}

/// The inbound channel's name.
pub fn channel_name(peer: SocketAddr) -> String {
    format!("wsbridge/inbound/{peer}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Encoding;
    use serde_json::json;

    #[test]
    fn the_issue_example_parses() {
        let text = r#"{"destination":"1000","caller_id_number":"bot7","caller_id_name":"Sales bot","content-type":"audio/l16;rate=16000","variables":{"campaign":"x1"}}"#;
        let first = FirstMessage::parse(text).unwrap();
        assert_eq!(first.destination, "1000");
        assert_eq!(first.caller_id_number.as_deref(), Some("bot7"));
        assert_eq!(first.caller_id_name.as_deref(), Some("Sales bot"));
        assert_eq!(first.content_type, ContentType::l16(16000));
        assert_eq!(first.variables, vec![("wsbridge_in_campaign".to_string(), "x1".to_string())]);
    }

    #[test]
    fn only_the_destination_is_required() {
        let first = FirstMessage::parse(r#"{"destination":"9","context":"default","extra":1}"#).unwrap();
        assert_eq!(first.content_type, ContentType::l16(16000), "16 kHz L16 by default");
        assert!(first.variables.is_empty() && first.caller_id_name.is_none());
        let pcmu = FirstMessage::parse(r#"{"destination":"9","content-type":"audio/pcmu"}"#).unwrap();
        assert_eq!(pcmu.content_type.encoding, Encoding::Pcmu);
    }

    #[test]
    fn variables_are_prefixed_and_bounded() {
        let first =
            FirstMessage::parse(r#"{"destination":"1","variables":{"hangup_after_bridge":"false","n":5,"b":true}}"#)
                .unwrap();
        let names: Vec<&str> = first.variables.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(names, ["wsbridge_in_hangup_after_bridge", "wsbridge_in_n", "wsbridge_in_b"]);
        assert_eq!(first.variables[1].1, "5");
        let many: Map<String, Value> = (0..33).map(|i| (format!("k{i}"), json!("v"))).collect();
        let too_many = json!({"destination": "1", "variables": many}).to_string();
        assert!(FirstMessage::parse(&too_many).unwrap_err().0.contains("32 keys"));
        let big: Map<String, Value> = (0..3).map(|i| (format!("k{i}"), json!("v".repeat(1000)))).collect();
        let too_big = json!({"destination": "1", "variables": big}).to_string();
        assert!(FirstMessage::parse(&too_big).unwrap_err().0.contains("2048 bytes"));
    }

    #[test]
    fn malformed_first_messages_are_refused_with_a_reason() {
        let long_key = format!(r#"{{"destination":"1","variables":{{"{}":"x"}}}}"#, "k".repeat(65));
        let long_destination = format!(r#"{{"destination":"{}"}}"#, "1".repeat(129));
        let oversized = format!(r#"{{"destination":"1","pad":"{}"}}"#, "x".repeat(5000));
        for bad in [
            "",
            "not json",
            "[1]",
            "{}",
            r#"{"destination":5}"#,
            r#"{"destination":""}"#,
            r#"{"destination":"1\n2"}"#,
            r#"{"destination":"1","content-type":"audio/opus"}"#,
            r#"{"destination":"1","variables":[1]}"#,
            r#"{"destination":"1","variables":{"a-b":"x"}}"#,
            r#"{"destination":"1","variables":{"${x}":"x"}}"#,
            r#"{"destination":"1","variables":{"a":{"b":1}}}"#,
            r#"{"destination":"1","variables":{"a":"x\u0000y"}}"#,
            r#"{"destination":"1","caller_id_name":7}"#,
            &long_key,
            &long_destination,
            &oversized,
        ] {
            let refused = FirstMessage::parse(bad);
            assert!(refused.is_err(), "{bad}");
            assert!(!refused.unwrap_err().0.is_empty());
        }
    }

    fn token(extra: &[(&str, &str)]) -> TokenScope {
        let mut element =
            vec![("name".to_string(), "bot-a".to_string()), ("secret".into(), "a-secret-of-twenty-plus".into())];
        element.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let (tokens, problems) = crate::settings::tokens::Tokens::scoped(&[element], "public");
        assert!(problems.is_empty(), "{problems:?}");
        let scope = (**tokens.iter().next().unwrap()).clone();
        scope
    }

    #[test]
    fn plans_name_the_client() {
        let peer: SocketAddr = "127.0.0.1:4567".parse().unwrap();
        let first = FirstMessage::parse(r#"{"destination":"1","content-type":"audio/l16;rate=8000"}"#).unwrap();
        let call = InboundCall::scoped(first, &token(&[("destinations", ".*")]), peer).unwrap();
        let plan = call.plan(peer, CallTuning::default()).unwrap();
        assert_eq!(plan.shown_uri, "inbound:127.0.0.1:4567");
        assert_eq!(plan.server.content_type, ContentType::l16(8000));
        assert_eq!(channel_name(peer), "wsbridge/inbound/127.0.0.1:4567");
        let v6: SocketAddr = "[::1]:80".parse().unwrap();
        assert!(call.plan(v6, CallTuning::default()).is_ok());
    }

    #[test]
    fn a_scoped_call_carries_its_token() {
        let peer: SocketAddr = "10.1.2.3:4567".parse().unwrap();
        let scope = token(&[("destinations", r"9\d{3}"), ("context", "bots"), ("max-seconds", "60")]);
        let first =
            FirstMessage::parse(r#"{"destination":"9123","caller_id_number":"+15550001111","variables":{"a":"1"}}"#)
                .unwrap();
        let call = InboundCall::scoped(first, &scope, peer).unwrap();
        assert_eq!((call.context.as_str(), call.token.as_str(), call.max_seconds), ("bots", "bot-a", Some(60)));
        assert_eq!(call.caller_id_number, "bot-a", "no caller-id-numbers: the token's name");
        assert_eq!(call.caller_id_name, "wsbridge");
        let expected = [("wsbridge_in_a", "1"), ("wsbridge_in_token", "bot-a"), ("accountcode", "bot-a")];
        let variables: Vec<(&str, &str)> = call.variables.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(variables, expected);
    }

    #[test]
    fn out_of_scope_says_which() {
        let peer: SocketAddr = "10.1.2.3:4567".parse().unwrap();
        let scope = token(&[("destinations", r"9\d{3}"), ("caller-id-numbers", r"\+1555\d{7}")]);
        let ask = |text: &str| InboundCall::scoped(FirstMessage::parse(text).unwrap(), &scope, peer);
        let refused = ask(r#"{"destination":"0044123456","caller_id_number":"+15551234567"}"#).unwrap_err();
        assert!(refused.0.contains("destination"), "{refused:?}");
        let refused = ask(r#"{"destination":"9123","caller_id_number":"+4420123"}"#).unwrap_err();
        assert!(refused.0.contains("caller ID"), "{refused:?}");
        assert!(ask(r#"{"destination":"9123"}"#).unwrap_err().0.contains("caller_id_number"));
        let call = ask(r#"{"destination":"9123","caller_id_number":"+15551234567"}"#).unwrap();
        assert_eq!(call.caller_id_number, "+15551234567");
    }

    #[test]
    fn nothing_a_client_sends_reaches_the_dialplan_as_more_than_text() {
        let attempts = [
            (r#"{"destination":"1000${system(id)}"}"#, "\"destination\" holds a character other than"),
            (r#"{"destination":"1000 XML default"}"#, "\"destination\" holds a character other than"),
            (r#"{"destination":"{origination_caller_id_number=1}1000"}"#, "\"destination\" holds a character"),
            (r#"{"destination":"sofia/gateway/x/1000"}"#, "\"destination\" holds a character"),
            (r#"{"destination":"1000,user/1001"}"#, "\"destination\" holds a character"),
            (r#"{"destination":"1000|loopback/1"}"#, "\"destination\" holds a character"),
            (r#"{"destination":"1000","caller_id_number":"${hangup()}"}"#, "\"caller_id_number\" holds a character"),
            (r#"{"destination":"1000","caller_id_number":"1 2"}"#, "\"caller_id_number\" holds a character"),
            (r#"{"destination":"1000","caller_id_number":"1000'"}"#, "\"caller_id_number\" holds a character"),
            (r#"{"destination":"1000","caller_id_name":"${uuid}"}"#, "\"caller_id_name\" holds $, { or }"),
            (r#"{"destination":"1000","caller_id_name":"a{b"}"#, "\"caller_id_name\" holds $, { or }"),
            (r#"{"destination":"1000","caller_id_name":"a}b"}"#, "\"caller_id_name\" holds $, { or }"),
            (r#"{"destination":"1000","variables":{"x":"${system(id)}"}}"#, "variable 'x' holds $, { or }"),
            (r#"{"destination":"1000","variables":{"x":"$${hostname}"}}"#, "variable 'x' holds $, { or }"),
            (r#"{"destination":"1000","variables":{"x":"{a=b}"}}"#, "variable 'x' holds $, { or }"),
            (r#"{"destination":"1000","variables":{"x":"a\u0007"}}"#, "variable 'x' holds a control character"),
        ];
        for (text, reason) in attempts {
            let refused = FirstMessage::parse(text).unwrap_err();
            assert!(refused.0.starts_with(reason), "{text}: {refused}");
        }
        let fine = r#"{"destination":"+44*1#2.3_4-5","caller_id_number":"bot-7.a_b+1*#","caller_id_name":"Sales bot (EU) & co: 'x' \"y\" 100%","variables":{"t":"tab\there, 100% fine: 'quoted' \"too\""}}"#;
        let first = FirstMessage::parse(fine).unwrap();
        assert_eq!(first.destination, "+44*1#2.3_4-5");
        assert_eq!(first.caller_id_name.as_deref(), Some("Sales bot (EU) & co: 'x' \"y\" 100%"));
    }

    #[test]
    fn the_token_variable_is_the_modules() {
        let refused = FirstMessage::parse(r#"{"destination":"1","variables":{"token":"forged"}}"#).unwrap_err();
        assert!(refused.0.contains("reserved"), "{refused}");
    }
}
