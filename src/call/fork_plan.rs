//! Fork mode, as pure code: a call that is already up streamed to a server
//! through a media bug. What `uuid_wsbridge_fork` and the `wsbridge_fork`
//! application ask for ([`parse`]) and how a fork's settings are planned
//! from the channel ([`plan_fork`]); `audio::mixing` turns the call's two
//! directions into the frames the server gets.

use crate::audio::mixing::ForkMode;
use crate::call::plan::{plan_call, CallPlan, CallSources, Refusal};
use crate::settings::cause::HangupCause;
use crate::settings::options::{ForkLayout, Tracks};
use crate::settings::server::{CONTENT_TYPE_VARIABLE, HEADERS_VARIABLE, SIP_HEADER_PREFIX, URI_VARIABLE};
use crate::settings::tuning::Reader;
use crate::settings::{ContentType, ModuleConfig, VariableSource, FORK_ALLOW_HANGUP, FORK_PLAYBACK, SUPPORTED_RATES};

/// The name of a fork started without `name=`.
pub const DEFAULT_NAME: &str = "default";
pub const DEFAULT_RATE: u32 = 16000;
const MAX_NAME_CHARS: usize = 64;

/// What `start` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartRequest {
    pub url: String,
    pub mode: ForkMode,
    pub rate: u32,
    /// A JSON object, sent in the first message.
    pub metadata: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForkAction {
    Start(StartRequest),
    /// Sends the metadata, if any, then closes with 1000.
    Stop {
        metadata: Option<String>,
    },
    Pause,
    Resume,
    SendText(String),
}

/// One `uuid_wsbridge_fork` command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForkCommand {
    pub uuid: String,
    pub name: String,
    pub action: ForkAction,
}

/// The arguments `uuid_wsbridge_fork` takes.
macro_rules! fork_syntax {
    () => {
        "<uuid> start [name=<id>] <url> [mono|mixed|stereo] [8000|16000|24000|32000|48000] [metadata] | <uuid> stop [name=<id>] [metadata] | <uuid> pause|resume [name=<id>] | <uuid> send_text [name=<id>] <text>"
    };
}

/// The syntax FreeSWITCH shows for `uuid_wsbridge_fork`.
pub const SYNTAX: &std::ffi::CStr = match std::ffi::CStr::from_bytes_with_nul(concat!(fork_syntax!(), "\0").as_bytes())
{
    Ok(text) => text,
    Err(_) => panic!("the syntax has no NUL"),
};
pub const USAGE: &str = concat!("usage: uuid_wsbridge_fork ", fork_syntax!());
pub const APP_USAGE: &str = "usage: wsbridge_fork <url> [mono|mixed|stereo] [8000|16000|24000|32000|48000] [metadata]";

/// Splits off the first word (runs of spaces are one separator); the rest keeps its spaces.
fn first_word(text: &str) -> (&str, &str) {
    let text = text.trim_start();
    match text.find(char::is_whitespace) {
        Some(end) => (&text[..end], text[end..].trim_start()),
        None => (text, ""),
    }
}

/// An optional `name=<id>` right after the command.
fn take_name(rest: &str) -> Result<(String, &str), String> {
    let (word, after) = first_word(rest);
    let Some(name) = word.strip_prefix("name=") else {
        return Ok((DEFAULT_NAME.to_string(), rest.trim_start()));
    };
    let good = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS || !name.chars().all(good) {
        return Err(format!("-ERR a fork's name is 1 to {MAX_NAME_CHARS} of A-Z a-z 0-9 - _ .\n"));
    }
    Ok((name.to_string(), after))
}

/// Checks that `text` is a JSON object; it is sent as given.
fn metadata(text: &str) -> Result<Option<String>, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(serde_json::Value::Object(_)) => Ok(Some(text.to_string())),
        _ => Err("-ERR the metadata must be a JSON object\n".to_string()),
    }
}

/// `<url> [mode] [rate] [metadata]`: what `start` and the application take.
pub fn parse_start(arguments: &str) -> Result<StartRequest, String> {
    let (url, mut rest) = first_word(arguments);
    if url.is_empty() || url.starts_with('{') {
        return Err(format!("-ERR {USAGE}\n"));
    }
    let mut mode = ForkMode::default();
    let mut rate = DEFAULT_RATE;
    let (word, after) = first_word(rest);
    if let Some(parsed) = ForkMode::parse(word) {
        mode = parsed;
        rest = after;
    }
    let (word, after) = first_word(rest);
    if let Ok(parsed) = word.parse::<u32>() {
        if !SUPPORTED_RATES.contains(&parsed) {
            return Err(format!("-ERR the rate {parsed} is not one of 8000, 16000, 24000, 32000, 48000\n"));
        }
        rate = parsed;
        rest = after;
    }
    Ok(StartRequest { url: url.to_string(), mode, rate, metadata: metadata(rest)? })
}

/// The application's data: `[name=<id>] <url> [mode] [rate] [metadata]`.
pub fn parse_app(data: &str) -> Result<(String, StartRequest), String> {
    let (name, rest) = take_name(data)?;
    let request = parse_start(rest).map_err(|_| format!("-ERR {APP_USAGE}\n"))?;
    Ok((name, request))
}

/// Parses `<uuid> <command> [name=<id>] ...`.
pub fn parse(arguments: &str) -> Result<ForkCommand, String> {
    let usage = || format!("-ERR {USAGE}\n");
    let (uuid, rest) = first_word(arguments);
    let (command, rest) = first_word(rest);
    if uuid.is_empty() || command.is_empty() {
        return Err(usage());
    }
    let (name, rest) = take_name(rest)?;
    let action = match command.to_ascii_lowercase().as_str() {
        "start" => ForkAction::Start(parse_start(rest)?),
        "stop" => ForkAction::Stop { metadata: metadata(rest)? },
        "pause" if rest.is_empty() => ForkAction::Pause,
        "resume" if rest.is_empty() => ForkAction::Resume,
        "send_text" if !rest.is_empty() => ForkAction::SendText(rest.to_string()),
        _ => return Err(usage()),
    };
    Ok(ForkCommand { uuid: uuid.to_string(), name, action })
}

// ---------------------------------------------------------------- planning

/// The channel's variables as a fork sees them: the URL and metadata come
/// from the command, never from the channel or a SIP header.
struct ForkVariables<'a> {
    channel: &'a dyn VariableSource,
    url: &'a str,
    metadata: Option<&'a str>,
}

impl VariableSource for ForkVariables<'_> {
    fn variable(&self, name: &str) -> Option<String> {
        match name {
            URI_VARIABLE => Some(self.url.to_string()),
            HEADERS_VARIABLE => self.metadata.map(str::to_string),
            CONTENT_TYPE_VARIABLE => None,
            _ if name.starts_with(SIP_HEADER_PREFIX) && name.contains("P-wsbridge-websocket-") => None,
            _ => self.channel.variable(name),
        }
    }
}

/// A fork, planned: the call's plan plus what only forks have.
#[derive(Debug, Clone)]
pub struct ForkPlan {
    pub call: CallPlan,
    pub mode: ForkMode,
    /// Server audio is played into the channel (`fork-playback`).
    pub playback: bool,
    /// The server's `hangup` action ends the call (`fork-allow-hangup`).
    pub allow_hangup: bool,
    pub layout: ForkLayout,
}

/// Plans a fork as the endpoint plans a call (protocol, TLS, allow-list,
/// reconnect, tuning), from the channel's `wsbridge_*` variables and
/// wsbridge.conf; the wire carries the fork's rate (Twilio: μ-law at 8 kHz).
pub fn plan_fork(
    channel: &dyn VariableSource,
    start: &StartRequest,
    config: &ModuleConfig,
) -> Result<ForkPlan, Refusal> {
    let call = plan_fork_call(channel, start, config)?;
    let source = |name: &str| channel.variable(name).or_else(|| config.value(name));
    let mut reader = Reader::of_variables(&source);
    let playback = reader.flag(&FORK_PLAYBACK).unwrap_or(FORK_PLAYBACK.flag_default());
    let allow_hangup = reader.flag(&FORK_ALLOW_HANGUP).unwrap_or(FORK_ALLOW_HANGUP.flag_default());
    for problem in reader.problems {
        tracing::warn!("{problem}");
    }
    let tracks = match start.mode {
        ForkMode::Mono => Tracks::Inbound,
        ForkMode::Mixed => Tracks::Mixed,
        ForkMode::Stereo => Tracks::Both,
    };
    let layout = ForkLayout { content_type: content_type_text(call.server.content_type, start.mode), tracks };
    Ok(ForkPlan { call, mode: start.mode, playback, allow_hangup, layout })
}

fn plan_fork_call(
    channel: &dyn VariableSource,
    start: &StartRequest,
    config: &ModuleConfig,
) -> Result<CallPlan, Refusal> {
    let variables = ForkVariables { channel, url: &start.url, metadata: start.metadata.as_deref() };
    let sources = CallSources { originate: &variables, a_leg: None, destination: None };
    let mut plan = plan_call(&sources, config)?;
    let content_type = (plan.server.protocol.rules().fork_content_type)(start.rate);
    plan.server.content_type = content_type.map_err(|why| Refusal { why, cause: HangupCause::InvalidIeContents })?;
    Ok(plan)
}

/// The content type a fork's first message names: mono as the endpoint's,
/// stereo with `;channels=2`.
pub fn content_type_text(format: ContentType, mode: ForkMode) -> String {
    match mode.channels() {
        1 => format.to_string(),
        channels => format!("{format};channels={channels}"),
    }
}

// ---------------------------------------------------------------- the two directions

/// The close reason when `stop` ends a fork.
pub const FORK_STOPPED: &str = "fork stopped";

/// A fork's CDR variable for one of the call's: `wsbridge_frames_sent` of
/// the fork `a` is `wsbridge_fork_a_frames_sent`.
pub fn cdr_variable(variable: &str, fork: &str) -> String {
    let figure = variable.strip_prefix("wsbridge_").unwrap_or(variable);
    format!("wsbridge_fork_{}_{figure}", fork.replace(['-', '.'], "_"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn commands_parse_with_and_without_names() {
        let start = parse("abc start ws://h/x stereo 8000 {\"a\": 1}").unwrap();
        assert_eq!(start.uuid, "abc");
        assert_eq!(start.name, DEFAULT_NAME);
        assert_eq!(
            start.action,
            ForkAction::Start(StartRequest {
                url: "ws://h/x".into(),
                mode: ForkMode::Stereo,
                rate: 8000,
                metadata: Some("{\"a\": 1}".into())
            })
        );
        let named = parse("abc start name=a ws://h/x").unwrap();
        assert_eq!(named.name, "a");
        assert_eq!(
            named.action,
            ForkAction::Start(StartRequest {
                url: "ws://h/x".into(),
                mode: ForkMode::Mono,
                rate: 16000,
                metadata: None
            })
        );
        let mixed = parse("abc start ws://h/x mixed {\"k\":\"v w\"}").unwrap();
        assert!(matches!(mixed.action, ForkAction::Start(StartRequest { mode: ForkMode::Mixed, rate: 16000, .. })));
        assert_eq!(
            parse("abc stop name=b").unwrap(),
            ForkCommand { uuid: "abc".into(), name: "b".into(), action: ForkAction::Stop { metadata: None } }
        );
        assert_eq!(
            parse("abc stop {\"bye\":true}").unwrap().action,
            ForkAction::Stop { metadata: Some("{\"bye\":true}".into()) }
        );
        assert_eq!(parse("abc pause").unwrap().action, ForkAction::Pause);
        let (name, app) = parse_app("ws://h/x stereo 16000").unwrap();
        assert_eq!((name.as_str(), app.mode, app.rate), (DEFAULT_NAME, ForkMode::Stereo, 16000));
        assert_eq!(parse_app("name=b ws://h/x").unwrap().0, "b");
        assert!(parse_app("").is_err());
        assert_eq!(parse("abc resume name=x").unwrap().action, ForkAction::Resume);
        assert_eq!(
            parse("abc send_text name=x hello  there").unwrap().action,
            ForkAction::SendText("hello  there".into())
        );
        for junk in [
            "",
            "abc",
            "abc dance",
            "abc start",
            "abc start ws://h 12345",
            "abc start ws://h mono 16000 [1]",
            "abc start ws://h mono 16000 not json",
            "abc stop nope",
            "abc pause now",
            "abc send_text",
            "abc stop name=",
            "abc stop name=a/b",
        ] {
            assert!(parse(junk).unwrap_err().starts_with("-ERR"), "{junk}");
        }
    }

    struct Vars(HashMap<String, String>);

    impl VariableSource for Vars {
        fn variable(&self, name: &str) -> Option<String> {
            self.0.get(name).cloned()
        }
    }

    fn vars(pairs: &[(&str, &str)]) -> Vars {
        Vars(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }

    #[test]
    fn a_fork_is_planned_from_the_channel_with_its_own_url_rate_and_metadata() {
        let (config, _) = ModuleConfig::from_params(&[]);
        let channel = vars(&[
            ("P-wsbridge-websocket-uri", "ws://elsewhere/"),
            ("P-wsbridge-websocket-content-type", "audio/l16;rate=8000"),
            ("sip_h_P-wsbridge-websocket-uri", "ws://sip/"),
            ("wsbridge_reconnect_ms", "3000"),
        ]);
        let start = parse_start("ws://127.0.0.1:9/f stereo 24000 {\"id\":\"7\"}").unwrap();
        let fork = plan_fork(&channel, &start, &config).unwrap();
        let plan = &fork.call;
        assert_eq!(plan.server.uri.host, "127.0.0.1");
        assert_eq!(plan.server.content_type, ContentType::l16(24000));
        assert_eq!(plan.server.headers["id"], "7");
        assert_eq!(plan.tuning.connection.reconnect.as_millis(), 3000);
        assert_eq!(fork.layout.content_type, "audio/l16;rate=24000;channels=2");
        assert_eq!(fork.layout.tracks, Tracks::Both);
        assert!(!fork.playback && !fork.allow_hangup, "a fork listens, unless told otherwise");
        let first = plan.server.first_message_naming(Default::default(), &fork.layout.content_type);
        assert_eq!(first, r#" {"id":"7","content-type":"audio/l16;rate=24000;channels=2"}"#);

        let speaking = vars(&[("wsbridge_fork_playback", "true"), ("wsbridge_fork_allow_hangup", "true")]);
        let fork = plan_fork(&speaking, &start, &config).unwrap();
        assert!(fork.playback && fork.allow_hangup);
        let twilio = vars(&[("wsbridge_protocol", "twilio"), ("wsbridge_fork_playback", "false")]);
        let fork = plan_fork(&twilio, &start, &config).unwrap();
        assert_eq!(
            (fork.call.server.protocol, fork.call.server.content_type),
            (crate::wire::protocol::named("twilio").unwrap(), ContentType::PCMU)
        );
        assert!(!fork.playback);
        let (listen_only, _) = ModuleConfig::from_params(&[("fork-playback".into(), "false".into())]);
        assert!(!plan_fork(&vars(&[]), &start, &listen_only).unwrap().playback);

        let (strict, _) = ModuleConfig::from_params(&[("allowed-hosts".into(), "10.0.0.1".into())]);
        assert!(plan_fork(&vars(&[]), &start, &strict).is_err(), "the allow-list applies to forks");
        let audiosocket = vars(&[("wsbridge_protocol", "audiosocket")]);
        assert!(plan_fork(&audiosocket, &parse_start("tcp://127.0.0.1:9").unwrap(), &config).is_err());
    }

    #[test]
    fn cdr_variables_carry_the_fork_name() {
        assert_eq!(cdr_variable("wsbridge_frames_sent", "default"), "wsbridge_fork_default_frames_sent");
        assert_eq!(cdr_variable("wsbridge_close_code", "agent-1.x"), "wsbridge_fork_agent_1_x_close_code");
    }
}
