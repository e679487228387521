//! Every setting of the module, in one room.
//!
//! - [`server`]: the `P-wsbridge-websocket-*` values that say which server a
//!   call reaches and what it is told first (they may come from SIP headers).
//! - [`tuning`]: the `wsbridge_*` channel variables that tune one call.
//! - [`module_conf`]: `wsbridge.conf`, module-wide defaults for the tuning
//!   plus the params that only the module has; [`listener_conf`] its
//!   `listen*` params, and [`tokens`] the listener's scoped tokens.
//!
//! [`TABLE`] names every tuning variable and param once, with its default,
//! its range and its meaning. The code reads defaults and ranges from it, and
//! the README's settings table is generated from it (a unit test keeps the
//! two equal).

pub mod address;
pub mod agent;
pub mod cause;
pub mod listener_conf;
pub mod module_conf;
pub mod options;
pub mod redact;
pub mod security;
pub mod server;
pub mod tokens;
pub mod tuning;

pub use module_conf::ModuleConfig;
pub use server::{
    parse_uri_list, url_decode, CallSettings, ContentType, Encoding, FirstMessageStyle, Origin, Protocol,
    ProtocolRules, RawSettings, Scheme, ServerUri, SettingsError, VariableSource, FRAME_MS, SUPPORTED_RATES,
};
pub use tuning::CallTuning;

/// What values a setting takes, and its default.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    /// A whole number within `min..=max`; `default: None` when it follows another setting.
    Integer { default: Option<u64>, min: u64, max: u64 },
    /// A level in dBov within `min..=max`.
    Level { default: f64, min: f64, max: f64 },
    /// true/false, yes/no, on/off, 1/0, enabled/disabled.
    Flag { default: bool },
    /// One of the listed words.
    Choice { default: &'static str, choices: &'static [&'static str] },
    /// A protocol's name, from the protocols the module speaks (wire/protocol).
    Protocol { default: &'static str },
    /// Free text (a path, a URI); unset by default.
    Text,
    /// A JSON value, given plain or URL-encoded (dial strings split `{...}`
    /// variables on commas, so operators encode JSON there); unset by default.
    Json,
    /// Server URIs separated by spaces, given plain or URL-encoded; none by default.
    UriList,
}

/// Whether a call can set it with a channel variable, or only `wsbridge.conf`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// `wsbridge_<param with _ for ->` per call, and the param as the module's default.
    PerCall,
    /// Only the param in `wsbridge.conf`.
    ModuleOnly,
}

/// One row of [`TABLE`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Setting {
    /// The `wsbridge.conf` param, e.g. `playout-max-ms`.
    pub param: &'static str,
    pub scope: Scope,
    pub kind: Kind,
    /// How the default reads in the docs, where the kind alone cannot say it.
    pub default_text: Option<&'static str>,
    pub meaning: &'static str,
}

impl Setting {
    /// The channel variable, e.g. `wsbridge_playout_max_ms`; none for module-only params.
    pub fn variable(&self) -> Option<String> {
        (self.scope == Scope::PerCall).then(|| format!("wsbridge_{}", self.param.replace('-', "_")))
    }

    /// The default of an integer setting. Used in consts, so a wrong kind fails the build.
    pub const fn integer_default(&self) -> u64 {
        match self.kind {
            Kind::Integer { default: Some(default), .. } => default,
            _ => panic!("not an integer setting with a fixed default"),
        }
    }

    pub const fn integer_range(&self) -> (u64, u64) {
        match self.kind {
            Kind::Integer { min, max, .. } => (min, max),
            _ => panic!("not an integer setting"),
        }
    }

    pub const fn level_default(&self) -> f64 {
        match self.kind {
            Kind::Level { default, .. } => default,
            _ => panic!("not a level setting"),
        }
    }

    pub const fn flag_default(&self) -> bool {
        match self.kind {
            Kind::Flag { default } => default,
            _ => panic!("not a flag setting"),
        }
    }

    /// The default as the README shows it.
    pub fn default_shown(&self) -> String {
        if let Some(text) = self.default_text {
            return text.to_string();
        }
        match self.kind {
            Kind::Integer { default: Some(default), .. } => default.to_string(),
            Kind::Integer { default: None, .. } | Kind::Text | Kind::Json | Kind::UriList => "unset".to_string(),
            Kind::Level { default, .. } => default.to_string(),
            Kind::Flag { default } => default.to_string(),
            Kind::Choice { default, .. } | Kind::Protocol { default } => default.to_string(),
        }
    }

    /// The values taken, as the README shows them.
    pub fn range_shown(&self) -> String {
        match self.kind {
            Kind::Integer { min, max, .. } => format!("{min} to {max}"),
            Kind::Level { min, max, .. } => format!("{min} to {max}"),
            Kind::Flag { .. } => "true or false".to_string(),
            Kind::Choice { choices, .. } => choices.join(" or "),
            Kind::Protocol { .. } => "a protocol's name: [Protocol](#protocol)".to_string(),
            Kind::Text => "text".to_string(),
            Kind::Json => "JSON, plain or URL-encoded".to_string(),
            Kind::UriList => "ws(s) URIs separated by spaces, plain or URL-encoded".to_string(),
        }
    }
}

const fn per_call(param: &'static str, kind: Kind, meaning: &'static str) -> Setting {
    Setting { param, scope: Scope::PerCall, kind, default_text: None, meaning }
}

const fn module_only(param: &'static str, kind: Kind, meaning: &'static str) -> Setting {
    Setting { param, scope: Scope::ModuleOnly, kind, default_text: None, meaning }
}

const fn integer(default: u64, min: u64, max: u64) -> Kind {
    Kind::Integer { default: Some(default), min, max }
}

const HOUR_MS: u64 = 3_600_000;

pub const PLAYOUT_MAX_MS: Setting =
    per_call("playout-max-ms", integer(60_000, 100, HOUR_MS), "most server audio held for playout");
pub const PLAYOUT_HIGH_WATER_MS: Setting = Setting {
    default_text: Some("5/6 of the max"),
    ..per_call(
        "playout-high-water-ms",
        Kind::Integer { default: None, min: 20, max: HOUR_MS },
        "stop reading the socket above this (at most the max)",
    )
};
pub const PLAYOUT_LOW_WATER_MS: Setting = Setting {
    default_text: Some("2/3 of the max"),
    ..per_call(
        "playout-low-water-ms",
        Kind::Integer { default: None, min: 0, max: HOUR_MS },
        "read again below this (at most the high-water mark)",
    )
};
pub const PLAYOUT_TARGET_MS: Setting = per_call(
    "playout-target-ms",
    integer(60, 0, 1000),
    "the jitter buffer's smallest target: server audio plays once this much is queued, and the target grows with the measured jitter; 0 plays each frame as soon as it is complete",
);
pub const PLAYOUT_TARGET_MAX_MS: Setting =
    per_call("playout-target-max-ms", integer(200, 20, 5000), "the largest target the jitter buffer grows to");
pub const UPLINK_BACKLOG_MS: Setting =
    per_call("uplink-backlog-ms", integer(1000, 20, 60_000), "most caller audio held for a slow server");
pub const COMFORT_NOISE_DBOV: Setting = per_call(
    "comfort-noise-dbov",
    Kind::Level { default: -65.0, min: -96.0, max: 0.0 },
    "comfort noise level; 0 turns it off",
);
pub const CONNECT_TIMEOUT_MS: Setting =
    per_call("connect-timeout-ms", integer(5000, 100, 120_000), "TCP, TLS, upgrade and first message together");
pub const MAX_MESSAGE_BYTES: Setting =
    per_call("max-message-bytes", integer(1 << 20, 1024, 256 << 20), "largest message from the server");
pub const MAX_TEXT_BYTES: Setting =
    per_call("max-text-bytes", integer(64 << 10, 256, 16 << 20), "largest text message from the server");
pub const MAX_HEADERS_BYTES: Setting = per_call(
    "max-headers-bytes",
    integer(1024, 2, 64 << 10),
    "largest decoded `P-wsbridge-websocket-headers` (the original module's limit)",
);
pub const PING_INTERVAL_MS: Setting =
    per_call("ping-interval-ms", integer(20_000, 0, HOUR_MS), "how often the module pings the server; 0: never");
pub const DEAD_PEER_TIMEOUT_MS: Setting = per_call(
    "dead-peer-timeout-ms",
    integer(60_000, 0, HOUR_MS),
    "hang up (`RECOVERY_ON_TIMER_EXPIRE`) when nothing, not even a pong, has come from the server for this long; 0: never",
);
pub const FALLBACK_URIS: Setting = per_call(
    "fallback-uris",
    Kind::UriList,
    "servers tried in order when the URI cannot be reached, at setup and on reconnect; also the SIP header `P-wsbridge-websocket-fallback-uris`",
);
pub const RECONNECT_MS: Setting = per_call(
    "reconnect-ms",
    integer(0, 0, 600_000),
    "how long a call may live without its WebSocket after a network failure, reconnecting meanwhile; 0 hangs up at once",
);
pub const FIRST_MESSAGE: Setting = per_call(
    "first-message",
    Kind::Choice { default: "wsbridge", choices: &["wsbridge", "vonage"] },
    "`wsbridge`: the original's first message; `vonage`: `{\"event\":\"websocket:connected\",\"content-type\":...,<headers>}`",
);
pub const PROTOCOL: Setting = per_call(
    "protocol",
    Kind::Protocol { default: "wsbridge" },
    "what the module and the server speak: `wsbridge` (the original's), `twilio` (Twilio Media Streams, μ-law), `vonage` (Vonage's WebSocket protocol), `openai` (OpenAI's Realtime API: [Straight into a speech-to-speech model](#straight-into-a-speech-to-speech-model)) or `audiosocket` (Asterisk's AudioSocket over a `tcp://host:port` URI); also the SIP header `P-wsbridge-websocket-protocol`; an unknown name refuses the call (`SERVICE_NOT_IMPLEMENTED`)",
);
pub const TWILIO_ACCOUNT_SID: Setting = Setting {
    default_text: Some("AC followed by 32 zeros"),
    ..per_call("twilio-account-sid", Kind::Text, "the `accountSid` a `twilio` server is told")
};
pub const UPLINK_FRAME_MS: Setting = per_call(
    "uplink-frame-ms",
    integer(20, 20, 200),
    "caller audio per message to the server, in steps of 20 ms (ASR servers often want 100)",
);
pub const UPLINK_DIRECT: Setting = per_call(
    "uplink-direct",
    Kind::Flag { default: true },
    "on a plain `ws://` connection whose protocol sends caller audio as binary messages (`wsbridge`, `vonage`), the FreeSWITCH thread that has a caller frame writes it to the socket itself, in one non-blocking send; false: every frame goes through the runtime, as for `wss://`",
);
pub const DOWNLINK_REACTOR: Setting = per_call(
    "downlink-reactor",
    Kind::Flag { default: true },
    "where caller audio goes directly (`uplink-direct`), the module's one reader thread also reads the socket and puts server audio straight into the playout, without waking the runtime for each message; false: the call's task reads it",
);
pub const CNG_FRAMES: Setting = per_call(
    "cng-frames",
    Kind::Flag { default: false },
    "flag comfort-noise frames as CNG (`SFF_CNG`) so a leg with RFC 3389 comfort noise sends CN instead of the noise; off, every leg and recording hears the noise itself",
);
pub const FORK_PLAYBACK: Setting = per_call(
    "fork-playback",
    Kind::Flag { default: false },
    "a fork (`uuid_wsbridge_fork`, `wsbridge_fork`) plays the server's audio into the channel, so the caller hears it; by default forks listen only: server audio is counted and dropped, so a transcription or recording vendor cannot speak into a call",
);
pub const FORK_ALLOW_HANGUP: Setting = per_call(
    "fork-allow-hangup",
    Kind::Flag { default: false },
    "a fork's server may end the call with its `hangup` action; by default the action is logged and ignored, so a vendor that only listens cannot end a call",
);
pub const TLS_CA_FILE: Setting = per_call(
    "tls-ca-file",
    Kind::Text,
    "PEM file of the CAs that may sign the server's certificate, instead of the system's",
);
pub const TLS_PIN_SHA256: Setting = Setting {
    default_text: Some("none"),
    ..per_call(
        "tls-pin-sha256",
        Kind::Text,
        "trust only the server certificate with this SHA-256 fingerprint (hex, colons optional, as `openssl x509 -noout -fingerprint -sha256` prints it), whoever signed it; its dates and host name are still checked; `none`: no pin; a malformed pin refuses the call (`INVALID_IE_CONTENTS`)",
    )
};
pub const TLS_CERT_FILE: Setting =
    per_call("tls-cert-file", Kind::Text, "client certificate (PEM) for servers that ask for one");
pub const TLS_KEY_FILE: Setting = per_call("tls-key-file", Kind::Text, "the client certificate's private key (PEM)");
pub const TLS_INSECURE: Setting = per_call(
    "tls-insecure",
    Kind::Flag { default: false },
    "skip every certificate check (logged at each call); for labs only",
);
pub const HTTP_HEADERS: Setting =
    per_call("http-headers", Kind::Json, "an object of extra upgrade request headers; values are never logged");

pub const DEFAULT_URI: Setting =
    module_only("default-uri", Kind::Text, "the server for calls that name none (no variable, no `wsbridge/<uri>`)");
pub const DEFAULT_CONTENT_TYPE: Setting = Setting {
    default_text: Some("audio/l16;rate=16000"),
    ..module_only("default-content-type", Kind::Text, "the content type for calls that set none")
};
pub const DEBUG: Setting =
    module_only("debug", Kind::Flag { default: false }, "debug logging, as the API's `wsbridge debug on` and `off`");
pub const ALLOWED_HOSTS: Setting = Setting {
    default_text: Some("any host"),
    ..module_only(
        "allowed-hosts",
        Kind::Text,
        "hosts (`*.` wildcards), IP addresses and CIDR blocks, each with an optional :port, that calls may \
         reach, and that a SIP header's URI may reach even at a loopback or private address; a bad list allows nothing",
    )
};
pub const ALLOW_SIP_HEADER_URI: Setting = module_only(
    "allow-sip-header-uri",
    Kind::Flag { default: true },
    "whether an inbound INVITE's `P-wsbridge-websocket-uri` may choose the server",
);
pub const MAX_CONNECTING: Setting = module_only(
    "max-connecting",
    integer(200, 1, 100_000),
    "most connection attempts in progress at once; beyond it calls fail at once",
);
pub const RUNTIME_THREADS: Setting = Setting {
    default_text: Some("one per core, up to 4"),
    ..module_only(
        "runtime-threads",
        Kind::Integer { default: None, min: 1, max: 64 },
        "threads that carry every call's WebSocket; read when the module loads",
    )
};
pub const UPLINK_BATCH_MS: Setting = module_only(
    "uplink-batch-ms",
    integer(2, 0, 10),
    "how long the first caller frame of a tick waits for the other calls' frames, so that one wake-up of the runtime sends them all; 0 wakes it for every frame; only for caller audio the runtime sends (`wss://`, `twilio`, `audiosocket`, `uplink-direct` false, or while a socket is backed up); read when the module loads",
);
pub const DOWNLINK_BATCH_MS: Setting = module_only(
    "downlink-batch-ms",
    integer(2, 0, 10),
    "after the reader thread (`downlink-reactor`) has read what was ready, it waits this long before it looks again, so that one wake-up reads the messages of many calls; 0 reads each as it comes; read when the module loads",
);
pub const DRAIN: Setting = module_only(
    "drain",
    Kind::Flag { default: false },
    "refuse every new call (calls up go on), as `wsbridge drain on`; applied when the file's value changes",
);
pub const DRAIN_CAUSE: Setting = module_only(
    "drain-cause",
    Kind::Choice {
        default: "NORMAL_TEMPORARY_FAILURE",
        choices: &[
            "NORMAL_TEMPORARY_FAILURE",
            "SWITCH_CONGESTION",
            "NORMAL_CIRCUIT_CONGESTION",
            "USER_BUSY",
            "CALL_REJECTED",
        ],
    },
    "the cause new calls are refused with while draining; mod_sofia answers the first three with SIP 503, which a dispatcher retries on another node",
);

pub const LISTEN: Setting = module_only(
    "listen",
    Kind::Text,
    "address:port of the listener for calls from the WebSocket side (e.g. `127.0.0.1:8089`); unset: no listener. Rebound by `reload mod_wsbridge`",
);
pub const LISTEN_TLS_CERT_FILE: Setting = module_only(
    "listen-tls-cert-file",
    Kind::Text,
    "the listener's certificate chain (PEM): with the key, the listener speaks `wss`",
);
pub const LISTEN_TLS_KEY_FILE: Setting =
    module_only("listen-tls-key-file", Kind::Text, "the private key (PEM) of `listen-tls-cert-file`");
pub const LISTEN_TOKENS: Setting = module_only(
    "listen-tokens",
    Kind::Text,
    "unscoped bearer tokens (`Authorization: Bearer <token>`), separated by spaces or commas: any destination, in `listen-context`; logged as unscoped at load. Prefer the `<listen-tokens>` section (see [Scoped tokens against toll fraud](#scoped-tokens-against-toll-fraud)); no token at all: the listener stays off",
);
pub const LISTEN_CONTEXT: Setting = Setting {
    default_text: Some("public"),
    ..module_only("listen-context", Kind::Text, "the dialplan context calls from the WebSocket side land in")
};
pub const LISTEN_MAX_CALLS: Setting = module_only(
    "listen-max-calls",
    integer(100, 1, 100_000),
    "most calls from the WebSocket side at once; beyond it upgrades get HTTP 503",
);
pub const LISTEN_ACL: Setting = Setting {
    default_text: Some("any address"),
    ..module_only(
        "listen-acl",
        Kind::Text,
        "a FreeSWITCH ACL list (acl.conf) or CIDR the client's address must be in; any other gets HTTP 403 before the upgrade; read for each connection",
    )
};
pub const LISTEN_ALLOW_PLAINTEXT: Setting = module_only(
    "listen-allow-plaintext",
    Kind::Flag { default: false },
    "let a plain `ws` listener (no `listen-tls-*`) bind an address outside 127.0.0.0/8 and ::1; without it such a listener does not start",
);
pub const LISTEN_HANDSHAKES_PER_ADDRESS: Setting = module_only(
    "listen-handshakes-per-address",
    integer(8, 1, 10_000),
    "connections from one address (an IPv6 /64) between the TCP accept and the upgrade at once; more are closed at once",
);
pub const LISTEN_UPGRADE_TIMEOUT_MS: Setting = module_only(
    "listen-upgrade-timeout-ms",
    integer(2000, 100, 60_000),
    "how long a client has from the TCP accept to the upgrade, TLS included",
);
pub const LISTEN_AUTH_FAILURES: Setting = module_only(
    "listen-auth-failures",
    integer(10, 1, 100_000),
    "failed authentications (HTTP 401) from one address within `listen-auth-window-ms` after which it gets HTTP 429 for `listen-auth-backoff-ms`",
);
pub const LISTEN_AUTH_WINDOW_MS: Setting =
    module_only("listen-auth-window-ms", integer(60_000, 1000, HOUR_MS), "the window `listen-auth-failures` counts in");
pub const LISTEN_AUTH_BACKOFF_MS: Setting = module_only(
    "listen-auth-backoff-ms",
    integer(60_000, 1000, 24 * HOUR_MS),
    "how long an address that failed too often gets HTTP 429 (with `Retry-After`), whatever its token",
);

/// Every setting, in the order the README lists them.
pub const TABLE: &[Setting] = &[
    PLAYOUT_MAX_MS,
    PLAYOUT_HIGH_WATER_MS,
    PLAYOUT_LOW_WATER_MS,
    PLAYOUT_TARGET_MS,
    PLAYOUT_TARGET_MAX_MS,
    UPLINK_BACKLOG_MS,
    COMFORT_NOISE_DBOV,
    CONNECT_TIMEOUT_MS,
    MAX_MESSAGE_BYTES,
    MAX_TEXT_BYTES,
    MAX_HEADERS_BYTES,
    PING_INTERVAL_MS,
    DEAD_PEER_TIMEOUT_MS,
    FALLBACK_URIS,
    RECONNECT_MS,
    FIRST_MESSAGE,
    PROTOCOL,
    TWILIO_ACCOUNT_SID,
    agent::OPENAI_SESSION,
    agent::OPENAI_GREETING,
    agent::OPENAI_HANGUP_FUNCTION,
    agent::OPENAI_TRANSFER_FUNCTION,
    agent::OPENAI_TRANSFER_PATTERN,
    agent::OPENAI_DTMF,
    UPLINK_FRAME_MS,
    UPLINK_DIRECT,
    DOWNLINK_REACTOR,
    CNG_FRAMES,
    FORK_PLAYBACK,
    FORK_ALLOW_HANGUP,
    TLS_CA_FILE,
    TLS_PIN_SHA256,
    TLS_CERT_FILE,
    TLS_KEY_FILE,
    TLS_INSECURE,
    HTTP_HEADERS,
    DEFAULT_URI,
    DEFAULT_CONTENT_TYPE,
    DEBUG,
    ALLOWED_HOSTS,
    ALLOW_SIP_HEADER_URI,
    MAX_CONNECTING,
    RUNTIME_THREADS,
    UPLINK_BATCH_MS,
    DOWNLINK_BATCH_MS,
    DRAIN,
    DRAIN_CAUSE,
    agent::OPENAI_API_KEY,
    LISTEN,
    LISTEN_TLS_CERT_FILE,
    LISTEN_TLS_KEY_FILE,
    LISTEN_TOKENS,
    LISTEN_CONTEXT,
    LISTEN_MAX_CALLS,
    LISTEN_ACL,
    LISTEN_ALLOW_PLAINTEXT,
    LISTEN_HANDSHAKES_PER_ADDRESS,
    LISTEN_UPGRADE_TIMEOUT_MS,
    LISTEN_AUTH_FAILURES,
    LISTEN_AUTH_WINDOW_MS,
    LISTEN_AUTH_BACKOFF_MS,
];

/// The row for a param name, if there is one.
pub fn by_param(param: &str) -> Option<&'static Setting> {
    TABLE.iter().find(|setting| setting.param == param.trim())
}

/// The README's settings table, generated from [`TABLE`].
pub fn markdown_table() -> String {
    let mut text = String::from("| variable / param | default | values | meaning |\n|---|---|---|---|\n");
    for setting in TABLE {
        let name = match setting.variable() {
            Some(variable) => format!("`{variable}` / `{}`", setting.param),
            None => format!("`{}` (wsbridge.conf only)", setting.param),
        };
        text.push_str(&format!(
            "| {name} | {} | {} | {} |\n",
            setting.default_shown(),
            setting.range_shown(),
            setting.meaning
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    const README_BEGIN: &str = "<!-- settings table: generated from src/settings/mod.rs; begin -->\n";
    const README_END: &str = "<!-- settings table: end -->";

    /// The README's table is the generated one; `WSBRIDGE_BLESS=1 cargo test` rewrites it.
    #[test]
    fn readme_settings_table_is_generated_from_the_table() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/README.md");
        let readme = std::fs::read_to_string(path).unwrap();
        let start = readme.find(README_BEGIN).expect("README settings table begin marker") + README_BEGIN.len();
        let end = readme[start..].find(README_END).expect("README settings table end marker") + start;
        let expected = markdown_table();
        if readme[start..end] != expected {
            if std::env::var_os("WSBRIDGE_BLESS").is_some() {
                std::fs::write(path, format!("{}{expected}{}", &readme[..start], &readme[end..])).unwrap();
            } else {
                panic!(
                    "README's settings table is stale; run WSBRIDGE_BLESS=1 cargo test --lib. Expected:\n{expected}"
                );
            }
        }
    }

    /// The sample wsbridge.conf shows each default it sets as the table has it.
    #[test]
    fn sample_config_shows_the_table_defaults() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/autoload_configs/wsbridge.conf.xml");
        let sample = std::fs::read_to_string(path).unwrap();
        let mut checked = 0;
        for line in sample.lines().map(str::trim).filter(|l| l.starts_with("<param ")) {
            let attribute = |name: &str| {
                let from = line.find(&format!("{name}=\""))? + name.len() + 2;
                line[from..].split('"').next().map(str::to_string)
            };
            let (param, value) = (attribute("name").unwrap(), attribute("value").unwrap());
            let setting = by_param(&param).unwrap_or_else(|| panic!("sample param {param} is not in the table"));
            assert_eq!(value, setting.default_shown(), "sample value of {param}");
            checked += 1;
        }
        assert!(checked > 10, "only {checked} params checked");
    }

    #[test]
    fn drain_cause_choices_are_the_drain_causes() {
        let Kind::Choice { default, choices } = DRAIN_CAUSE.kind else { panic!("drain-cause is a choice") };
        let causes: Vec<&str> =
            crate::settings::cause::HangupCause::DRAIN_CHOICES.iter().map(|cause| cause.name()).collect();
        assert_eq!(choices, causes.as_slice());
        assert_eq!(default, causes[0]);
    }

    #[test]
    fn names_are_unique_and_variables_follow_params() {
        for (index, setting) in TABLE.iter().enumerate() {
            assert!(TABLE[..index].iter().all(|other| other.param != setting.param), "{}", setting.param);
            if let Some(variable) = setting.variable() {
                assert_eq!(variable, format!("wsbridge_{}", setting.param.replace('-', "_")));
            }
            if let Kind::Integer { default: Some(default), min, max } = setting.kind {
                assert!((min..=max).contains(&default), "{}", setting.param);
            }
        }
    }
}
