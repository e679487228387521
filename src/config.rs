//! `wsbridge.conf`: module-wide defaults for everything a call can set.
//!
//! Each per-call variable `wsbridge_foo_bar` has a param `foo-bar`; a call's
//! own variable wins over the param, and the param over the built-in default.

use std::collections::BTreeMap;

use crate::options::{parse_flag, CallOptions, VARIABLES};
use crate::settings::ContentType;

pub const DEFAULT_URI: &str = "default-uri";
pub const DEFAULT_CONTENT_TYPE: &str = "default-content-type";
pub const DEBUG: &str = "debug";
pub const ALLOWED_HOSTS: &str = "allowed-hosts";
pub const ALLOW_SIP_HEADER_URI: &str = "allow-sip-header-uri";
pub const MAX_CONNECTING: &str = "max-connecting";
pub const RUNTIME_THREADS: &str = "runtime-threads";

#[derive(Debug, Clone, PartialEq)]
pub struct ModuleConfig {
    /// Valid values by the per-call variable they stand in for.
    values: BTreeMap<&'static str, String>,
    pub default_uri: Option<String>,
    pub default_content_type: Option<String>,
    pub debug: bool,
    /// Empty: any host. Policy, so it has no per-call variable.
    pub allowed_hosts: Vec<crate::security::HostPattern>,
    allowed_hosts_text: String,
    /// Whether an inbound INVITE's header may choose the server.
    pub allow_sip_header_uri: bool,
    pub max_connecting: usize,
    /// Threads that run every call's WebSocket; read when the module loads.
    pub runtime_threads: usize,
}

impl Default for ModuleConfig {
    fn default() -> Self {
        ModuleConfig {
            values: BTreeMap::new(),
            default_uri: None,
            default_content_type: None,
            debug: false,
            allowed_hosts: Vec::new(),
            allowed_hosts_text: String::new(),
            allow_sip_header_uri: true,
            max_connecting: 200,
            // One per core, up to 4. One alone costs less CPU (see the README's benchmark),
            // but its RSS grew 8-12 MiB over 1,000 churned calls, against 4 MiB with two.
            runtime_threads: std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(1, 4),
        }
    }
}

/// `playout-max-ms` → `wsbridge_playout_max_ms`, for the params that have one.
pub fn variable_of(param: &str) -> Option<&'static str> {
    let wanted = format!("wsbridge_{}", param.trim().replace('-', "_"));
    VARIABLES.iter().copied().find(|variable| *variable == wanted)
}

/// `wsbridge_playout_max_ms` → `playout-max-ms`.
pub fn param_of(variable: &str) -> String {
    variable.trim_start_matches("wsbridge_").replace('_', "-")
}

impl ModuleConfig {
    /// Reads `<param name value/>` pairs. Returns the config and a line for
    /// each param ignored: unknown, or a bad value (whose default stays).
    pub fn from_params(params: &[(String, String)]) -> (ModuleConfig, Vec<String>) {
        let mut config = ModuleConfig::default();
        let mut problems = Vec::new();
        for (name, value) in params {
            let value = value.trim().to_string();
            match name.trim() {
                DEFAULT_URI => config.default_uri = Some(value).filter(|v| !v.is_empty()),
                DEFAULT_CONTENT_TYPE => match ContentType::parse(&value) {
                    Some(_) => config.default_content_type = Some(value),
                    None => problems.push(format!(
                        "param {DEFAULT_CONTENT_TYPE}='{value}' is not audio/l16;rate=N for a supported N; using audio/l16;rate=16000"
                    )),
                },
                DEBUG => match parse_flag(&value) {
                    Some(flag) => config.debug = flag,
                    None => problems.push(format!("param {DEBUG}='{value}' is not true or false; using false")),
                },
                ALLOWED_HOSTS => match crate::security::parse_allowlist(&value) {
                    Ok(patterns) => {
                        config.allowed_hosts = patterns;
                        config.allowed_hosts_text = value;
                    }
                    // Failing closed: a broken allowlist must not open every host.
                    Err(why) => {
                        problems.push(format!("param {ALLOWED_HOSTS}: {why}; no host is allowed until it is fixed"));
                        config.allowed_hosts = crate::security::parse_allowlist("0.0.0.0:1").expect("valid");
                        config.allowed_hosts_text = "(invalid: nothing allowed)".into();
                    }
                },
                ALLOW_SIP_HEADER_URI => match parse_flag(&value) {
                    Some(flag) => config.allow_sip_header_uri = flag,
                    None => problems.push(format!("param {ALLOW_SIP_HEADER_URI}='{value}' is not true or false; using true")),
                },
                MAX_CONNECTING => match value.parse::<usize>() {
                    Ok(limit) if (1..=100_000).contains(&limit) => config.max_connecting = limit,
                    _ => problems.push(format!("param {MAX_CONNECTING}='{value}' is not a number from 1 to 100000; using 200")),
                },
                RUNTIME_THREADS => match value.parse::<usize>() {
                    Ok(threads) if (1..=64).contains(&threads) => config.runtime_threads = threads,
                    _ => problems.push(format!(
                        "param {RUNTIME_THREADS}='{value}' is not a number from 1 to 64; using {}",
                        config.runtime_threads
                    )),
                },
                other => match variable_of(other) {
                    Some(variable) => {
                        let (_, mut bad) = CallOptions::read(
                            &|asked: &str| (asked == variable).then(|| value.clone()),
                            &|variable: &str| format!("param {}", param_of(variable)),
                        );
                        if bad.is_empty() {
                            config.values.insert(variable, value);
                        } else {
                            problems.append(&mut bad);
                        }
                    }
                    None => problems.push(format!("unknown param '{other}' ignored")),
                },
            }
        }
        (config, problems)
    }

    /// The configured default for a per-call variable.
    pub fn value(&self, variable: &str) -> Option<String> {
        self.values.get(variable).cloned()
    }

    /// Every setting in force, as `param = value`, for the status API.
    pub fn describe(&self) -> Vec<(String, String)> {
        let mut lines = vec![
            (DEFAULT_URI.to_string(), self.default_uri.clone().unwrap_or_default()),
            (DEFAULT_CONTENT_TYPE.to_string(), self.default_content_type.clone().unwrap_or_default()),
            (DEBUG.to_string(), self.debug.to_string()),
            (ALLOWED_HOSTS.to_string(), self.allowed_hosts_text.clone()),
            (ALLOW_SIP_HEADER_URI.to_string(), self.allow_sip_header_uri.to_string()),
            (MAX_CONNECTING.to_string(), self.max_connecting.to_string()),
            (RUNTIME_THREADS.to_string(), self.runtime_threads.to_string()),
        ];
        lines.extend(self.values.iter().map(|(variable, value)| (param_of(variable), value.clone())));
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn every_variable_has_a_param_and_back() {
        for variable in VARIABLES {
            assert_eq!(variable_of(&param_of(variable)), Some(variable));
        }
        assert_eq!(variable_of("playout-max-ms"), Some("wsbridge_playout_max_ms"));
        assert_eq!(variable_of("no-such-thing"), None);
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
        ]));
        assert!(problems.is_empty(), "{problems:?}");
        assert!(config.debug);
        assert_eq!(config.runtime_threads, 7);
        let call_variables = |name: &str| (name == "wsbridge_comfort_noise_dbov").then(|| "-40".to_string());
        let (options, _) =
            CallOptions::from_variables(&|name: &str| call_variables(name).or_else(|| config.value(name)));
        assert_eq!(options.media.playout_capacity, Duration::from_secs(6), "from the config");
        assert_eq!(options.comfort_noise_dbov, -40.0, "the call's own variable wins");
    }

    #[test]
    fn a_broken_allowlist_fails_closed() {
        let (config, problems) = ModuleConfig::from_params(&params(&[("allowed-hosts", "good.example.com, bad/host")]));
        assert_eq!(problems.len(), 1);
        let uri = crate::settings::ServerUri::parse("ws://good.example.com/").unwrap();
        assert!(!crate::security::allows(&config.allowed_hosts, &uri));
    }

    #[test]
    fn bad_and_unknown_params_are_named_and_skipped() {
        let (config, problems) = ModuleConfig::from_params(&params(&[
            ("playout-max-ms", "soon"),
            ("first-message", "telegram"),
            ("default-content-type", "audio/pcmu"),
            ("colour", "blue"),
            ("debug", "perhaps"),
            ("runtime-threads", "0"),
        ]));
        assert_eq!(config, ModuleConfig::default());
        assert_eq!(problems.len(), 6, "{problems:?}");
        assert!(problems[0].starts_with("param playout-max-ms='soon'"), "{}", problems[0]);
        assert!(problems[1].starts_with("param first-message='telegram'"), "{}", problems[1]);
        assert!(problems[3].contains("unknown param 'colour'"));
    }
}
