//! Planning a call: everything decided before a `wsbridge` leg exists, as
//! pure code. `outgoing_channel` gathers the sources, asks [`plan_call`],
//! and either refuses the call with the [`Refusal`]'s cause or builds the
//! leg from the [`CallPlan`].

use std::fmt;

use crate::settings::agent::{self, OPENAI_SESSION};
use crate::settings::cause::HangupCause;
use crate::settings::options::ConnectionOptions;
use crate::settings::security;
use crate::settings::server::{RawSettings, VariableSource};
use crate::settings::tuning::Reader;
use crate::settings::{CallSettings, CallTuning, ModuleConfig, FALLBACK_URIS, MAX_HEADERS_BYTES, PROTOCOL};
use crate::wire::protocol;

/// Where a call's settings come from.
pub struct CallSources<'a> {
    /// The originate variables: the dial string's `{...}` and what the A-leg exported.
    pub originate: &'a dyn VariableSource,
    /// The A-leg's own channel variables (`sip_h_*` included), when there is an A-leg.
    pub a_leg: Option<&'a dyn VariableSource>,
    /// What followed `wsbridge/` in the dial string, if anything.
    pub destination: Option<&'a str>,
}

/// What a call will do: reach `server`, tuned by `tuning`.
#[derive(Debug, Clone)]
pub struct CallPlan {
    pub server: CallSettings,
    pub tuning: CallTuning,
    /// The server URI with token-like query values hidden, for names and logs.
    pub shown_uri: String,
}

/// Why a call is refused, and the cause it is refused with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub why: String,
    pub cause: HangupCause,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.why, self.cause)
    }
}

fn refuse(why: impl Into<String>, cause: HangupCause) -> Refusal {
    Refusal { why: why.into(), cause }
}

/// Whether this node takes a new call at all: while it drains, every new
/// call is refused with `drain-cause`, before its settings are read.
pub fn admit(draining: bool, config: &ModuleConfig) -> Result<(), Refusal> {
    match draining {
        true => Err(refuse("the node is draining (wsbridge drain on)", config.drain_cause)),
        false => Ok(()),
    }
}

/// Decides a call from its sources and the module's config. Values ignored
/// for being bad are logged as warnings; they never refuse the call.
pub fn plan_call(sources: &CallSources<'_>, config: &ModuleConfig) -> Result<CallPlan, Refusal> {
    // Tuning comes from the dial string, the A-leg, then wsbridge.conf; never from SIP headers.
    let tuning_source = |name: &str| {
        (sources.originate.variable(name))
            .or_else(|| sources.a_leg.and_then(|a_leg| a_leg.variable(name)))
            .or_else(|| config.value(name))
    };
    let tuning = match CallTuning::from_variables(&tuning_source) {
        Ok((tuning, problems)) => {
            for problem in problems {
                tracing::warn!("{problem}");
            }
            Ok(tuning)
        }
        Err(why) => Err(why),
    };
    // Reported above when bad; read quietly here.
    let max_headers_bytes = Reader::of_variables(&tuning_source).integer_or_default(&MAX_HEADERS_BYTES) as usize;

    let mut raw = RawSettings::gather(sources.originate, sources.a_leg, sources.destination);
    if raw.fallback_uris.is_none() {
        raw.fallback_uris =
            tuning_source(&FALLBACK_URIS.variable().unwrap_or_default()).filter(|t| !t.trim().is_empty());
    }
    if raw.protocol.is_none() {
        raw.protocol = tuning_source(&PROTOCOL.variable().unwrap_or_default()).filter(|t| !t.trim().is_empty());
    }
    raw.default_uri = config.default_uri.clone();
    raw.default_content_type = config.default_content_type.clone();
    let server =
        protocol::resolve(&raw, max_headers_bytes).map_err(|error| refuse(error.to_string(), error.cause()))?;

    let shown_uri = server.shown(&server.uri);
    if raw.uri_from_sip_header && !config.allow_sip_header_uri {
        let why = format!("the URI {shown_uri} came from a SIP header, and allow-sip-header-uri is false");
        return Err(refuse(why, HangupCause::OutgoingCallBarred));
    }
    if raw.fallbacks_from_sip_header && !config.allow_sip_header_uri {
        let why = "the fallback URIs came from a SIP header, and allow-sip-header-uri is false";
        return Err(refuse(why, HangupCause::OutgoingCallBarred));
    }
    // Every server is checked before any connection is made; host names again at every connect.
    for uri in std::iter::once(&server.uri).chain(&server.fallbacks) {
        security::check_uri(&config.allowed_hosts, uri).map_err(|why| refuse(why, HangupCause::OutgoingCallBarred))?;
    }
    let mut tuning = tuning.map_err(|why| refuse(why, HangupCause::InvalidIeContents))?;
    tuning.connection.max_connecting = config.max_connecting;
    tuning.connection.allowed_hosts = config.allowed_hosts.clone();
    if server.protocol.name() == protocol::openai::RULES.name {
        prepare_agent(sources, config, &mut tuning.connection);
    }
    Ok(CallPlan { server, tuning, shown_uri })
}

/// An `openai` call's session is wsbridge.conf's overlaid by the call's own,
/// and it authenticates with the module's key unless its headers already do.
fn prepare_agent(sources: &CallSources<'_>, config: &ModuleConfig, connection: &mut ConnectionOptions) {
    // Every event is text, audio too, and `session.updated` repeats the whole session (instructions, tools).
    connection.max_text_bytes = connection.max_text_bytes.max(connection.max_message_bytes);
    let variable = OPENAI_SESSION.variable().unwrap_or_default();
    let own = sources.originate.variable(&variable).or_else(|| sources.a_leg.and_then(|a| a.variable(&variable)));
    let configured_source = |name: &str| config.value(name);
    let configured = Reader::of_variables(&configured_source).json(&OPENAI_SESSION);
    let configured = configured.and_then(|text| agent::parse_session(&text).ok());
    if let (Some(_), Some(mut session)) = (own.filter(|text| !text.trim().is_empty()), configured) {
        agent::overlay(&mut session, std::mem::take(&mut connection.agent.session));
        connection.agent.session = session;
    }
    let has_authorization = connection.http_headers.iter().any(|(name, _)| name.eq_ignore_ascii_case("authorization"));
    if let (Some(key), false) = (&config.openai_api_key, has_authorization) {
        connection.http_headers.push(("Authorization".to_string(), key.bearer()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::time::Duration;

    struct Vars(HashMap<String, String>);

    impl Vars {
        fn of(pairs: &[(&str, &str)]) -> Vars {
            Vars(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
        }
    }

    impl VariableSource for Vars {
        fn variable(&self, name: &str) -> Option<String> {
            self.0.get(name).cloned()
        }
    }

    fn config(params: &[(&str, &str)]) -> ModuleConfig {
        let params: Vec<(String, String)> = params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let (config, problems) = ModuleConfig::from_params(&params);
        assert!(problems.is_empty(), "{problems:?}");
        config
    }

    fn plan(
        originate: &[(&str, &str)],
        a_leg: Option<&[(&str, &str)]>,
        destination: Option<&str>,
        config: &ModuleConfig,
    ) -> Result<CallPlan, Refusal> {
        let originate = Vars::of(originate);
        let a_leg = a_leg.map(Vars::of);
        let sources =
            CallSources { originate: &originate, a_leg: a_leg.as_ref().map(|a| a as &dyn VariableSource), destination };
        plan_call(&sources, config)
    }

    fn refusal(originate: &[(&str, &str)], a_leg: Option<&[(&str, &str)]>, config: &ModuleConfig) -> HangupCause {
        let refusal = plan(originate, a_leg, None, config).unwrap_err();
        assert!(!refusal.why.is_empty());
        refusal.cause
    }

    const URI: &str = "P-wsbridge-websocket-uri";
    const CONTENT_TYPE: &str = "P-wsbridge-websocket-content-type";
    const HEADERS: &str = "P-wsbridge-websocket-headers";

    #[test]
    fn each_refusal_has_its_cause() {
        let open = ModuleConfig::default();
        assert_eq!(refusal(&[], None, &open), HangupCause::DestinationOutOfOrder, "no URI at all");
        assert_eq!(refusal(&[(URI, "gopher://h/")], None, &open), HangupCause::InvalidUrl);
        assert_eq!(refusal(&[(URI, "ws%3A%2F%2Fh%2")], None, &open), HangupCause::InvalidUrl);
        assert_eq!(
            refusal(&[(URI, "ws://h/"), (CONTENT_TYPE, "audio/opus")], None, &open),
            HangupCause::ServiceNotImplemented
        );
        assert_eq!(refusal(&[(URI, "ws://h/"), (HEADERS, "%7B%22a%22")], None, &open), HangupCause::InvalidIeContents);
        assert_eq!(
            refusal(
                &[(URI, "ws://h/"), (HEADERS, "{\"a\":\"long\"}"), ("wsbridge_max_headers_bytes", "4")],
                None,
                &open
            ),
            HangupCause::MandatoryIeLengthError,
            "the call's own limit"
        );
        assert_eq!(
            refusal(&[(URI, "ws://h/"), ("wsbridge_http_headers", "{\"Bad Name\":\"x\"}")], None, &open),
            HangupCause::InvalidIeContents
        );
        let guarded = config(&[("allowed-hosts", "bots.example.com"), ("allow-sip-header-uri", "false")]);
        assert_eq!(refusal(&[(URI, "ws://elsewhere/")], None, &guarded), HangupCause::OutgoingCallBarred);
        let sip = [("sip_h_P-wsbridge-websocket-uri", "ws://bots.example.com/")];
        assert_eq!(refusal(&[], Some(&sip), &guarded), HangupCause::OutgoingCallBarred, "URI from a SIP header");
        assert!(plan(&[], Some(&[(URI, "ws://bots.example.com/")]), None, &guarded).is_ok(), "a bare A-leg variable");
    }

    #[test]
    fn a_sip_header_may_not_name_a_special_address_unless_allowed_hosts_does() {
        let open = ModuleConfig::default();
        let sip = |uri: &str| vec![("sip_h_P-wsbridge-websocket-uri".to_string(), uri.to_string())];
        let from_sip = |uri: &str, config: &ModuleConfig| {
            let pairs = sip(uri);
            let pairs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            plan(&[], Some(&pairs), None, config)
        };
        for special in
            ["ws://127.0.0.1:8080/", "ws://10.0.0.1/", "ws://169.254.169.254/", "ws://[::1]/", "ws://[fe80::1]/"]
        {
            let refusal = from_sip(special, &open).unwrap_err();
            assert_eq!(refusal.cause, HangupCause::OutgoingCallBarred, "{special}");
            assert!(refusal.why.contains("came from a SIP header; allowed-hosts does not name it"), "{refusal}");
        }
        assert!(from_sip("ws://127.0.0.1:8080/", &open).unwrap_err().why.contains("a loopback address"));
        assert_eq!(from_sip("ws://2130706433/", &open).unwrap_err().cause, HangupCause::InvalidUrl);
        assert_eq!(from_sip("ws://0x7f.1/", &open).unwrap_err().cause, HangupCause::InvalidUrl);
        assert!(from_sip("ws://93.184.216.34/", &open).is_ok(), "a public address");
        assert!(from_sip("ws://bots.example.com/", &open).is_ok(), "a name: its addresses are checked at connect");
        // The operator's own URI is not limited by the address rules.
        assert!(plan(&[(URI, "ws://127.0.0.1:8080/")], None, None, &open).is_ok());
        assert!(plan(&[], None, Some("ws://10.0.0.1/"), &open).is_ok());
        assert_eq!(plan(&[(URI, "ws://127.1/")], None, None, &open).unwrap_err().cause, HangupCause::InvalidUrl);
        // Named by allowed-hosts, by address or block; the list goes to every connect.
        for list in ["127.0.0.1", "127.0.0.0/8:*", "127.0.0.1:8080"] {
            let named = config(&[("allowed-hosts", list)]);
            let plan = from_sip("ws://127.0.0.1:8080/", &named).unwrap_or_else(|refusal| panic!("{list}: {refusal}"));
            assert_eq!(plan.tuning.connection.allowed_hosts, named.allowed_hosts);
        }
        let fallbacks = [("sip_h_P-wsbridge-websocket-fallback-uris", "ws://192.168.1.1/")];
        let barred = plan(&[(URI, "ws://bots.example.com/")], Some(&fallbacks), None, &open);
        assert_eq!(barred.unwrap_err().cause, HangupCause::OutgoingCallBarred, "a SIP header's fallback too");
    }

    #[test]
    fn a_draining_node_refuses_with_the_drain_cause() {
        assert_eq!(admit(false, &ModuleConfig::default()), Ok(()));
        assert_eq!(admit(true, &ModuleConfig::default()).unwrap_err().cause, HangupCause::NormalTemporaryFailure);
        let busy = config(&[("drain-cause", "USER_BUSY")]);
        assert_eq!(admit(true, &busy).unwrap_err().cause, HangupCause::UserBusy);
    }

    #[test]
    fn fallbacks_are_parsed_and_each_is_checked_before_any_connection() {
        let open = ModuleConfig::default();
        let plan = plan(&[("wsbridge_fallback_uris", "ws%3A%2F%2Fb%3A2%2F ws://c:3/")], None, Some("ws://a:1/"), &open)
            .unwrap();
        let ports: Vec<u16> = plan.server.fallbacks.iter().map(|uri| uri.port).collect();
        assert_eq!(ports, [2, 3]);
        let header = [("P-wsbridge-websocket-fallback-uris", "ws://d:4/"), ("wsbridge_fallback_uris", "ws://e:5/")];
        let plan = super::tests::plan(&header, None, Some("ws://a:1/"), &open).unwrap();
        assert_eq!(plan.server.fallbacks[0].port, 4, "the P- variable wins");
        let guarded = config(&[("allowed-hosts", "a:1"), ("allow-sip-header-uri", "false")]);
        let barred = [("wsbridge_fallback_uris", "ws://a:1/ ws://elsewhere:9/")];
        let barred_plan = super::tests::plan(&barred, None, Some("ws://a:1/"), &guarded);
        assert_eq!(barred_plan.unwrap_err().cause, HangupCause::OutgoingCallBarred, "a barred fallback");
        let refusal_of =
            |pairs: &[(&str, &str)]| super::tests::plan(pairs, None, Some("ws://a:1/"), &open).unwrap_err().cause;
        assert_eq!(refusal_of(&[("wsbridge_fallback_uris", "ftp://x/")]), HangupCause::InvalidUrl);
        let sip = [("sip_h_P-wsbridge-websocket-fallback-uris", "ws://a:1/")];
        let from_sip = super::tests::plan(&[("P-wsbridge-websocket-uri", "ws://a:1/")], Some(&sip), None, &guarded);
        assert_eq!(from_sip.unwrap_err().cause, HangupCause::OutgoingCallBarred, "fallbacks from a SIP header");
    }

    #[test]
    fn tuning_comes_from_the_dial_string_then_the_a_leg_then_the_config() {
        let conf = config(&[("comfort-noise-dbov", "-50"), ("uplink-backlog-ms", "300"), ("max-connecting", "7")]);
        let plan = plan(
            &[("wsbridge_comfort_noise_dbov", "-40")],
            Some(&[("wsbridge_comfort_noise_dbov", "-30"), ("wsbridge_connect_timeout_ms", "900")]),
            Some("ws://h:9/p?token=secret"),
            &conf,
        )
        .unwrap();
        assert_eq!(plan.tuning.comfort_noise_dbov, -40.0);
        assert_eq!(plan.tuning.connection.connect_timeout, Duration::from_millis(900));
        assert_eq!(plan.tuning.media.uplink_backlog, Duration::from_millis(300));
        assert_eq!(plan.tuning.connection.max_connecting, 7);
        assert_eq!(plan.server.uri.port, 9);
        assert_eq!(plan.shown_uri, "ws://h:9/p?token=***");
    }

    #[test]
    fn an_openai_call_gets_the_key_the_overlaid_session_and_room_for_its_text() {
        let conf = config(&[
            ("openai-api-key", "sk-test"),
            ("openai-session", r#"{"instructions":"conf","audio":{"output":{"voice":"alloy"}}}"#),
        ]);
        let own =
            [("wsbridge_protocol", "openai"), ("wsbridge_openai_session", r#"{"audio":{"output":{"voice":"marin"}}}"#)];
        let plan = plan(&own, None, Some("wss://api.example/v1/realtime"), &conf).unwrap();
        let connection = &plan.tuning.connection;
        assert_eq!(connection.http_headers, [("Authorization".to_string(), "Bearer sk-test".to_string())]);
        assert_eq!(
            serde_json::Value::Object(connection.agent.session.clone()),
            serde_json::json!({"instructions":"conf","audio":{"output":{"voice":"marin"}}})
        );
        assert_eq!(connection.max_text_bytes, connection.max_message_bytes);
        let azure = [("wsbridge_protocol", "openai"), ("wsbridge_http_headers", r#"{"Authorization":"Bearer other"}"#)];
        let plan = super::tests::plan(&azure, None, Some("wss://h/"), &conf).unwrap();
        assert_eq!(plan.tuning.connection.http_headers.len(), 1, "the call's own Authorization wins");
        let plain = super::tests::plan(&[], None, Some("wss://h/"), &conf).unwrap();
        assert!(plain.tuning.connection.http_headers.is_empty(), "only openai calls carry the key");
        let bad = [("wsbridge_protocol", "openai"), ("wsbridge_openai_session", "{nope")];
        assert_eq!(
            super::tests::plan(&bad, None, Some("wss://h/"), &conf).unwrap_err().cause,
            HangupCause::InvalidIeContents
        );
    }

    #[test]
    fn tuning_never_comes_from_sip_headers() {
        let plan =
            plan(&[], Some(&[("sip_h_wsbridge_comfort_noise_dbov", "-20")]), Some("ws://h/"), &config(&[])).unwrap();
        assert_eq!(plan.tuning.comfort_noise_dbov, -65.0);
    }

    #[test]
    fn config_defaults_name_the_server_last() {
        let conf = config(&[("default-uri", "ws://default/"), ("default-content-type", "audio/l16;rate=8000")]);
        let plan = plan(&[], None, None, &conf).unwrap();
        assert_eq!((plan.server.uri.host.as_str(), plan.server.content_type.rate), ("default", 8000));
        let dialled = super::tests::plan(&[], None, Some("ws://dialled/"), &conf).unwrap();
        assert_eq!(dialled.server.uri.host, "dialled");
    }

    #[test]
    fn bad_tuning_is_ignored_not_refused() {
        let plan = plan(&[("wsbridge_playout_max_ms", "lots")], None, Some("ws://h/"), &config(&[])).unwrap();
        assert_eq!(plan.tuning.media.playout_capacity, Duration::from_secs(60));
    }
}
