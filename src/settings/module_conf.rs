//! `wsbridge.conf`: module-wide defaults for every per-call setting, plus
//! the params only the module has. A call's own variable wins over the
//! param, and the param over the built-in default in [`super::TABLE`].

use std::collections::BTreeMap;

use super::agent::OPENAI_API_KEY;
use super::server::ContentType;
use super::tuning::{parse_flag, Reader};
use super::{by_param, CallTuning, Scope, Setting};
use super::{
    ALLOWED_HOSTS, ALLOW_SIP_HEADER_URI, DEBUG, DEFAULT_CONTENT_TYPE, DEFAULT_URI, DOWNLINK_BATCH_MS, DRAIN,
    DRAIN_CAUSE, MAX_CONNECTING, RUNTIME_THREADS, UPLINK_BATCH_MS,
};
use crate::settings::cause::HangupCause;
pub use crate::settings::listener_conf::ListenerConfig;

use crate::settings::security::{redact_uri_path, HostPattern};

#[derive(Debug, Clone, PartialEq)]
pub struct ModuleConfig {
    /// Valid values of per-call settings, by param.
    per_call: BTreeMap<&'static str, String>,
    pub default_uri: Option<String>,
    pub default_content_type: Option<String>,
    pub debug: bool,
    /// Empty: any host. Policy, so it has no per-call variable.
    pub allowed_hosts: Vec<HostPattern>,
    allowed_hosts_text: String,
    /// Whether an inbound INVITE's header may choose the server.
    pub allow_sip_header_uri: bool,
    pub max_connecting: usize,
    /// Threads that run every call's WebSocket; read when the module loads.
    pub runtime_threads: usize,
    /// How long caller audio's wake-ups are gathered; read when the module loads.
    pub uplink_batch: std::time::Duration,
    /// The downlink reader's pause after each turn; zero: none.
    pub downlink_batch: std::time::Duration,
    /// Whether the file asks the node to drain.
    pub drain: bool,
    /// What new calls are refused with while draining.
    pub drain_cause: HangupCause,
    /// The listener for calls from the WebSocket side.
    pub listener: ListenerConfig,
    /// What `openai` calls authenticate with; shown nowhere.
    pub openai_api_key: Option<super::agent::ApiKey>,
}

/// One per core, up to 4. One alone costs less CPU (see the README's benchmark),
/// but its RSS grew 8-12 MiB over 1,000 churned calls, against 4 MiB with two.
fn default_runtime_threads() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(1, 4)
}

impl Default for ModuleConfig {
    fn default() -> Self {
        ModuleConfig {
            per_call: BTreeMap::new(),
            default_uri: None,
            default_content_type: None,
            debug: DEBUG.flag_default(),
            allowed_hosts: Vec::new(),
            allowed_hosts_text: String::new(),
            allow_sip_header_uri: ALLOW_SIP_HEADER_URI.flag_default(),
            max_connecting: MAX_CONNECTING.integer_default() as usize,
            runtime_threads: default_runtime_threads(),
            uplink_batch: std::time::Duration::from_millis(UPLINK_BATCH_MS.integer_default()),
            downlink_batch: std::time::Duration::from_millis(DOWNLINK_BATCH_MS.integer_default()),
            drain: DRAIN.flag_default(),
            drain_cause: HangupCause::DRAIN_CHOICES[0],
            listener: ListenerConfig::default(),
            openai_api_key: None,
        }
    }
}

fn named(setting: &Setting) -> String {
    format!("param {}", setting.param)
}

impl ModuleConfig {
    /// Reads `<param name value/>` pairs. Returns the config and a line for
    /// each param ignored: unknown, or a bad value (whose default stays).
    pub fn from_params(params: &[(String, String)]) -> (ModuleConfig, Vec<String>) {
        ModuleConfig::from_file(params, &[])
    }

    /// Reads the params and the attributes of each `<listen-tokens><token>`
    /// element, as [`ModuleConfig::from_params`] (a refused token is a line too).
    pub fn from_file(params: &[(String, String)], tokens: &[Vec<(String, String)>]) -> (ModuleConfig, Vec<String>) {
        let mut config = ModuleConfig::default();
        let mut problems = Vec::new();
        for (name, value) in params {
            let value = value.trim().to_string();
            let Some(setting) = by_param(name) else {
                problems.push(format!("unknown param '{}' ignored", name.trim()));
                continue;
            };
            match setting.scope {
                Scope::PerCall => config.set_per_call(setting, value, &mut problems),
                Scope::ModuleOnly => config.set_module_only(setting, value, &mut problems),
            }
        }
        config.listener.read_tokens(tokens, &mut problems);
        (config, problems)
    }

    /// Keeps a per-call default when the call's own reader would accept it.
    fn set_per_call(&mut self, setting: &'static Setting, value: String, problems: &mut Vec<String>) {
        let variable = setting.variable();
        let source = |asked: &str| (Some(asked) == variable.as_deref()).then(|| value.clone());
        let mut reader = Reader::new(&source, &named);
        let refused = CallTuning::read(&mut reader).err();
        let mut bad = reader.problems;
        bad.extend(refused);
        if bad.is_empty() {
            self.per_call.insert(setting.param, value);
        } else {
            problems.append(&mut bad);
        }
    }

    fn set_module_only(&mut self, setting: &'static Setting, value: String, problems: &mut Vec<String>) {
        let param = setting.param;
        let source = |_: &str| Some(value.clone());
        match param {
            _ if param == DEFAULT_URI.param => self.default_uri = Some(value).filter(|v| !v.is_empty()),
            _ if param == DEFAULT_CONTENT_TYPE.param => match ContentType::parse(&value) {
                Some(_) => self.default_content_type = Some(value),
                None => problems.push(format!(
                    "param {param}='{value}' is not a supported content type (audio/l16;rate=N, audio/pcmu, audio/pcma); using {}",
                    setting.default_shown()
                )),
            },
            _ if [DEBUG.param, ALLOW_SIP_HEADER_URI.param, DRAIN.param].contains(&param) => match parse_flag(&value) {
                Some(flag) if param == DEBUG.param => self.debug = flag,
                Some(flag) if param == DRAIN.param => self.drain = flag,
                Some(flag) => self.allow_sip_header_uri = flag,
                None => problems
                    .push(format!("param {param}='{value}' is not true or false; using {}", setting.default_shown())),
            },
            _ if param == DRAIN_CAUSE.param => match HangupCause::drain_choice(&value) {
                Some(cause) => self.drain_cause = cause,
                None => problems.push(format!(
                    "param {param}='{value}' is not one of {}; using {}",
                    setting.range_shown(),
                    setting.default_shown()
                )),
            },
            _ if param == OPENAI_API_KEY.param => self.openai_api_key = super::agent::ApiKey::new(&value),
            _ if param.starts_with("listen") => self.listener.set(setting, value, problems),
            _ if param == ALLOWED_HOSTS.param => match crate::settings::security::parse_allowlist(&value) {
                Ok(patterns) => {
                    self.allowed_hosts = patterns;
                    self.allowed_hosts_text = value;
                }
                // Failing closed: a broken allowlist must not open every host.
                Err(why) => {
                    problems.push(format!("param {param}: {why}; no host is allowed until it is fixed"));
                    self.allowed_hosts = crate::settings::security::nothing_allowed();
                    self.allowed_hosts_text = "(invalid: nothing allowed)".into();
                }
            },
            _ => {
                // The integer params: max-connecting, runtime-threads, uplink-batch-ms, downlink-batch-ms.
                let mut reader = Reader::new(&source, &named);
                let value = reader.integer(setting);
                problems.append(&mut reader.problems);
                match value {
                    Some(value) if param == MAX_CONNECTING.param => self.max_connecting = value as usize,
                    Some(value) if param == RUNTIME_THREADS.param => self.runtime_threads = value as usize,
                    Some(value) if param == UPLINK_BATCH_MS.param => {
                        self.uplink_batch = std::time::Duration::from_millis(value)
                    }
                    Some(value) if param == DOWNLINK_BATCH_MS.param => {
                        self.downlink_batch = std::time::Duration::from_millis(value)
                    }
                    _ => {}
                }
            }
        }
    }

    /// The configured default for a per-call variable (`wsbridge_*`).
    pub fn value(&self, variable: &str) -> Option<String> {
        let param = variable.strip_prefix("wsbridge_")?.replace('_', "-");
        self.per_call.get(param.as_str()).cloned()
    }

    /// Every setting in force, as `param = value`, for the status API.
    pub fn describe(&self) -> Vec<(String, String)> {
        let mut lines = vec![
            (DEFAULT_URI.param.to_string(), self.default_uri.as_deref().map(redact_uri_path).unwrap_or_default()),
            (DEFAULT_CONTENT_TYPE.param.to_string(), self.default_content_type.clone().unwrap_or_default()),
            (DEBUG.param.to_string(), self.debug.to_string()),
            (ALLOWED_HOSTS.param.to_string(), self.allowed_hosts_text.clone()),
            (ALLOW_SIP_HEADER_URI.param.to_string(), self.allow_sip_header_uri.to_string()),
            (MAX_CONNECTING.param.to_string(), self.max_connecting.to_string()),
            (RUNTIME_THREADS.param.to_string(), self.runtime_threads.to_string()),
            (UPLINK_BATCH_MS.param.to_string(), self.uplink_batch.as_millis().to_string()),
            (DOWNLINK_BATCH_MS.param.to_string(), self.downlink_batch.as_millis().to_string()),
            (DRAIN.param.to_string(), self.drain.to_string()),
            (DRAIN_CAUSE.param.to_string(), self.drain_cause.to_string()),
            (OPENAI_API_KEY.param.to_string(), if self.openai_api_key.is_some() { "***" } else { "" }.to_string()),
        ];
        lines.extend(self.listener.describe());
        lines.extend(self.per_call.iter().map(|(param, value)| (param.to_string(), shown_value(param, value))));
        lines
    }
}

/// A per-call default as the status shows it: no secret, whole or in part.
fn shown_value(param: &str, value: &str) -> String {
    use crate::settings::security::{is_secret_setting, redact_headers_json};
    use crate::settings::{url_decode, FALLBACK_URIS, HTTP_HEADERS};
    match param {
        _ if param == HTTP_HEADERS.param => {
            redact_headers_json(&url_decode(value).unwrap_or_else(|| value.to_string()))
        }
        _ if param == FALLBACK_URIS.param => {
            let decoded = url_decode(value).unwrap_or_else(|| value.to_string());
            decoded.split_whitespace().map(redact_uri_path).collect::<Vec<_>>().join(" ")
        }
        _ if is_secret_setting(param) => "***".to_string(),
        _ => value.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::TABLE;
    use super::*;
    use std::time::Duration;

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn every_per_call_param_is_a_default_for_its_variable() {
        for setting in TABLE.iter().filter(|s| s.scope == Scope::PerCall) {
            let sample = match setting.kind {
                super::super::Kind::Flag { .. } => "true".to_string(),
                super::super::Kind::Json => "{}".to_string(),
                super::super::Kind::UriList => "ws://h/ wss://g/".to_string(),
                _ => setting.default_shown().replace("5/6 of the max", "50000").replace("2/3 of the max", "40000"),
            };
            let sample = if sample == "unset" { "/x".to_string() } else { sample };
            let (config, problems) = ModuleConfig::from_params(&params(&[(setting.param, &sample)]));
            assert!(problems.is_empty(), "{}: {problems:?}", setting.param);
            assert_eq!(config.value(&setting.variable().unwrap()), Some(sample), "{}", setting.param);
        }
    }

    #[test]
    fn params_become_defaults_that_calls_can_override() {
        let (config, problems) = ModuleConfig::from_params(&params(&[
            ("playout-max-ms", "6000"),
            ("comfort-noise-dbov", "-50"),
            ("default-uri", "ws://127.0.0.1:8080/default"),
            ("default-content-type", "audio/l16;rate=8000"),
            ("debug", "on"),
            ("runtime-threads", "7"),
            ("uplink-batch-ms", "0"),
        ]));
        assert!(problems.is_empty(), "{problems:?}");
        assert!(config.debug);
        assert_eq!(config.runtime_threads, 7);
        assert_eq!(config.uplink_batch, Duration::ZERO, "0: a wake-up per frame");
        let call_variables = |name: &str| (name == "wsbridge_comfort_noise_dbov").then(|| "-40".to_string());
        let (tuning, _) =
            CallTuning::from_variables(&|name: &str| call_variables(name).or_else(|| config.value(name))).unwrap();
        assert_eq!(tuning.media.playout_capacity, Duration::from_secs(6), "from the config");
        assert_eq!(tuning.comfort_noise_dbov, -40.0, "the call's own variable wins");
    }

    #[test]
    fn a_broken_allowlist_fails_closed() {
        let (config, problems) = ModuleConfig::from_params(&params(&[("allowed-hosts", "good.example.com, bad/host")]));
        assert_eq!(problems.len(), 1);
        let uri = crate::settings::ServerUri::parse("ws://good.example.com/").unwrap();
        assert!(!crate::settings::security::allows(&config.allowed_hosts, &uri));
        assert!(crate::settings::security::check_uri(&config.allowed_hosts, &uri).is_err());
        let (config, problems) = ModuleConfig::from_params(&params(&[("allowed-hosts", "10.0.0.*")]));
        assert!(problems[0].contains("'10.0.0.*': a wildcard is only a leading `*.`"), "{problems:?}");
        let address = crate::settings::ServerUri::parse("ws://10.0.0.1/").unwrap();
        assert!(crate::settings::security::check_uri(&config.allowed_hosts, &address).is_err());
        assert_eq!(config.allowed_hosts_text, "(invalid: nothing allowed)");
    }

    #[test]
    fn bad_and_unknown_params_are_named_and_skipped() {
        let (config, problems) = ModuleConfig::from_params(&params(&[
            ("playout-max-ms", "soon"),
            ("first-message", "telegram"),
            ("default-content-type", "audio/opus"),
            ("colour", "blue"),
            ("debug", "perhaps"),
            ("runtime-threads", "0"),
            ("max-connecting", "0"),
            ("http-headers", "{\"Bad Name\":\"x\"}"),
            ("drain", "soon"),
            ("drain-cause", "NORMAL_CLEARING"),
        ]));
        assert_eq!(config, ModuleConfig::default());
        assert_eq!(problems.len(), 10, "{problems:?}");
        assert!(problems[0].starts_with("param playout-max-ms='soon'"), "{}", problems[0]);
        assert!(problems[1].starts_with("param first-message='telegram'"), "{}", problems[1]);
        assert!(problems[3].contains("unknown param 'colour'"));
        assert!(problems[5].starts_with("param runtime-threads='0' is not a number from 1 to 64"), "{}", problems[5]);
        assert!(
            problems[6].starts_with("param max-connecting='0' is not a number from 1 to 100000"),
            "{}",
            problems[6]
        );
        assert!(problems[7].starts_with("param http-headers header name"), "{}", problems[7]);
        assert!(problems[8].starts_with("param drain='soon' is not true or false"), "{}", problems[8]);
        assert!(problems[9].starts_with("param drain-cause='NORMAL_CLEARING' is not one of"), "{}", problems[9]);
    }

    #[test]
    fn drain_params_are_read() {
        let (config, problems) = ModuleConfig::from_params(&params(&[("drain", "on"), ("drain-cause", "user_busy")]));
        assert!(problems.is_empty(), "{problems:?}");
        assert!(config.drain);
        assert_eq!(config.drain_cause, HangupCause::UserBusy);
    }
}
