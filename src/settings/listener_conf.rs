//! The listener for calls from the WebSocket side, as `wsbridge.conf` sets
//! it: the `listen*` params and the `<listen-tokens>` section.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::tokens::{valid_context, Tokens};
use super::tuning::{parse_flag, Reader};
use super::{
    Setting, LISTEN, LISTEN_ACL, LISTEN_ALLOW_PLAINTEXT, LISTEN_AUTH_BACKOFF_MS, LISTEN_AUTH_FAILURES,
    LISTEN_AUTH_WINDOW_MS, LISTEN_CONTEXT, LISTEN_HANDSHAKES_PER_ADDRESS, LISTEN_MAX_CALLS, LISTEN_TLS_CERT_FILE,
    LISTEN_TLS_KEY_FILE, LISTEN_TOKENS, LISTEN_UPGRADE_TIMEOUT_MS,
};

/// What the listener holds against a flood, per client address.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FloodLimits {
    /// Connections between the TCP accept and the upgrade at once.
    pub handshakes_per_address: usize,
    /// From the TCP accept to the upgrade, TLS included.
    pub upgrade_timeout: Duration,
    /// Failed authentications within `auth_window` before the back-off.
    pub auth_failures: usize,
    pub auth_window: Duration,
    pub auth_backoff: Duration,
}

impl Default for FloodLimits {
    fn default() -> Self {
        let ms = |setting: &Setting| Duration::from_millis(setting.integer_default());
        FloodLimits {
            handshakes_per_address: LISTEN_HANDSHAKES_PER_ADDRESS.integer_default() as usize,
            upgrade_timeout: ms(&LISTEN_UPGRADE_TIMEOUT_MS),
            auth_failures: LISTEN_AUTH_FAILURES.integer_default() as usize,
            auth_window: ms(&LISTEN_AUTH_WINDOW_MS),
            auth_backoff: ms(&LISTEN_AUTH_BACKOFF_MS),
        }
    }
}

/// The listener for calls from the WebSocket side. Its address and TLS are
/// read at load; the tokens, the ACL and the limits of each connection come
/// from the file in force when it connects (so `reloadxml` revokes a token).
#[derive(Debug, Clone, PartialEq)]
pub struct ListenerConfig {
    /// None: no listener.
    pub address: Option<SocketAddr>,
    pub tls_cert_file: Option<String>,
    pub tls_key_file: Option<String>,
    /// Scoped and unscoped, together.
    pub tokens: Tokens,
    /// The flat `listen-tokens` param, read once the context is known.
    flat_tokens: String,
    pub context: String,
    pub max_calls: usize,
    /// An ACL list name (or CIDR) the client's address must be in.
    pub acl: Option<String>,
    pub allow_plaintext: bool,
    pub flood: FloodLimits,
}

impl Default for ListenerConfig {
    fn default() -> Self {
        ListenerConfig {
            address: None,
            tls_cert_file: None,
            tls_key_file: None,
            tokens: Tokens::default(),
            flat_tokens: String::new(),
            context: LISTEN_CONTEXT.default_shown(),
            max_calls: LISTEN_MAX_CALLS.integer_default() as usize,
            acl: None,
            allow_plaintext: LISTEN_ALLOW_PLAINTEXT.flag_default(),
            flood: FloodLimits::default(),
        }
    }
}

fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
    }
}

fn named(setting: &Setting) -> String {
    format!("param {}", setting.param)
}

impl ListenerConfig {
    /// Why the listener cannot start as configured; None when it can (or is off).
    pub fn unusable(&self) -> Option<String> {
        let address = self.address?;
        if self.tokens.is_empty() {
            return Some(format!(
                "param {} is set but there is no token (neither a <listen-tokens> entry nor {})",
                LISTEN.param, LISTEN_TOKENS.param
            ));
        }
        let tls = self.tls_cert_file.is_some();
        if tls != self.tls_key_file.is_some() {
            return Some(format!(
                "{} and {} must be set together",
                LISTEN_TLS_CERT_FILE.param, LISTEN_TLS_KEY_FILE.param
            ));
        }
        if !tls && !self.allow_plaintext && !is_loopback(address.ip()) {
            return Some(format!(
                "{address} is outside 127.0.0.0/8 and ::1, and plain ws would carry tokens and audio unencrypted: set {} and {}, or {}=true",
                LISTEN_TLS_CERT_FILE.param, LISTEN_TLS_KEY_FILE.param, LISTEN_ALLOW_PLAINTEXT.param
            ));
        }
        None
    }

    /// One `listen*` param.
    pub fn set(&mut self, setting: &'static Setting, value: String, problems: &mut Vec<String>) {
        let param = setting.param;
        let optional = |value: String| Some(value).filter(|v| !v.is_empty());
        match param {
            _ if param == LISTEN.param => match value.parse() {
                _ if value.is_empty() => self.address = None,
                Ok(address) => self.address = Some(address),
                Err(_) => problems.push(format!("param {param}='{value}' is not an address:port; no listener")),
            },
            _ if param == LISTEN_TLS_CERT_FILE.param => self.tls_cert_file = optional(value),
            _ if param == LISTEN_TLS_KEY_FILE.param => self.tls_key_file = optional(value),
            _ if param == LISTEN_TOKENS.param => self.flat_tokens = value,
            _ if param == LISTEN_ACL.param => self.acl = optional(value),
            _ if param == LISTEN_CONTEXT.param => match valid_context(&value) {
                true => self.context = value,
                false => problems.push(format!(
                    "param {param}='{value}' is not a context name (A-Z, a-z, 0-9, _, - and .); using {}",
                    setting.default_shown()
                )),
            },
            _ if param == LISTEN_ALLOW_PLAINTEXT.param => match parse_flag(&value) {
                Some(flag) => self.allow_plaintext = flag,
                None => problems.push(format!("param {param}='{value}' is not true or false; using false")),
            },
            _ => self.set_integer(setting, value, problems),
        }
    }

    fn set_integer(&mut self, setting: &'static Setting, value: String, problems: &mut Vec<String>) {
        let source = |_: &str| Some(value.clone());
        let mut reader = Reader::new(&source, &named);
        let read = reader.integer(setting);
        problems.append(&mut reader.problems);
        let Some(number) = read else { return };
        let ms = Duration::from_millis(number);
        let flood = &mut self.flood;
        match setting.param {
            param if param == LISTEN_MAX_CALLS.param => self.max_calls = number as usize,
            param if param == LISTEN_HANDSHAKES_PER_ADDRESS.param => flood.handshakes_per_address = number as usize,
            param if param == LISTEN_UPGRADE_TIMEOUT_MS.param => flood.upgrade_timeout = ms,
            param if param == LISTEN_AUTH_FAILURES.param => flood.auth_failures = number as usize,
            param if param == LISTEN_AUTH_WINDOW_MS.param => flood.auth_window = ms,
            param if param == LISTEN_AUTH_BACKOFF_MS.param => flood.auth_backoff = ms,
            _ => {}
        }
    }

    /// Once every param is read: the tokens, scoped from `<listen-tokens>`'s
    /// `<token>` elements and unscoped from the flat param.
    pub fn read_tokens(&mut self, elements: &[Vec<(String, String)>], problems: &mut Vec<String>) {
        let (scoped, mut refused) = Tokens::scoped(elements, &self.context);
        problems.append(&mut refused);
        let unscoped = Tokens::unscoped(&self.flat_tokens, &self.context);
        if !unscoped.is_empty() {
            problems.push(format!(
                "param {} holds {} unscoped token(s): they may call any destination in context '{}' with any caller ID; give each a <token> entry in <listen-tokens> with its scope",
                LISTEN_TOKENS.param,
                unscoped.len(),
                self.context
            ));
        }
        self.tokens = scoped.with_unscoped(unscoped);
    }

    /// The listener's settings in force, for the status API; never a token.
    pub fn describe(&self) -> Vec<(String, String)> {
        let ms = |duration: Duration| duration.as_millis().to_string();
        let tokens = format!("{} configured, {} unscoped", self.tokens.len(), self.tokens.unscoped_count());
        [
            (LISTEN.param, self.address.map_or_else(String::new, |a| a.to_string())),
            (LISTEN_TLS_CERT_FILE.param, self.tls_cert_file.clone().unwrap_or_default()),
            (LISTEN_TLS_KEY_FILE.param, self.tls_key_file.clone().unwrap_or_default()),
            (LISTEN_TOKENS.param, tokens),
            (LISTEN_CONTEXT.param, self.context.clone()),
            (LISTEN_MAX_CALLS.param, self.max_calls.to_string()),
            (LISTEN_ACL.param, self.acl.clone().unwrap_or_default()),
            (LISTEN_ALLOW_PLAINTEXT.param, self.allow_plaintext.to_string()),
            (LISTEN_HANDSHAKES_PER_ADDRESS.param, self.flood.handshakes_per_address.to_string()),
            (LISTEN_UPGRADE_TIMEOUT_MS.param, ms(self.flood.upgrade_timeout)),
            (LISTEN_AUTH_FAILURES.param, self.flood.auth_failures.to_string()),
            (LISTEN_AUTH_WINDOW_MS.param, ms(self.flood.auth_window)),
            (LISTEN_AUTH_BACKOFF_MS.param, ms(self.flood.auth_backoff)),
        ]
        .into_iter()
        .map(|(param, value)| (param.to_string(), value))
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::super::ModuleConfig;
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn token(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        params(pairs)
    }

    #[test]
    fn listener_params_are_read_and_checked() {
        let (config, problems) = ModuleConfig::from_params(&params(&[
            ("listen", "127.0.0.1:8089"),
            ("listen-tokens", "a, b"),
            ("listen-context", "bots"),
            ("listen-max-calls", "7"),
        ]));
        assert_eq!(problems.len(), 1, "the unscoped warning: {problems:?}");
        assert!(problems[0].contains("2 unscoped token(s)") && problems[0].contains("'bots'"), "{}", problems[0]);
        let listener = &config.listener;
        assert_eq!(listener.address, Some("127.0.0.1:8089".parse().unwrap()));
        assert!(listener.tokens.admits(Some("b")));
        assert_eq!(listener.tokens.find(Some("a")).unwrap().context, "bots", "listen-context, read after");
        assert_eq!((listener.context.as_str(), listener.max_calls), ("bots", 7));
        assert_eq!(listener.unusable(), None);
        let shown = config.describe();
        assert!(shown.contains(&("listen-tokens".into(), "2 configured, 2 unscoped".into())), "{shown:?}");

        assert_eq!(ModuleConfig::default().listener.context, "public");
        assert_eq!(ModuleConfig::default().listener.unusable(), None, "off is usable");
        let (config, problems) = ModuleConfig::from_params(&params(&[
            ("listen", "nowhere"),
            ("listen-context", "a b"),
            ("listen-max-calls", "0"),
            ("listen-allow-plaintext", "perhaps"),
            ("listen-upgrade-timeout-ms", "5"),
        ]));
        assert_eq!(problems.len(), 5, "{problems:?}");
        assert_eq!(config.listener, ListenerConfig::default());
        let (config, _) = ModuleConfig::from_params(&params(&[("listen", "127.0.0.1:1")]));
        assert!(config.listener.unusable().unwrap().contains("no token"));
        let (config, _) = ModuleConfig::from_params(&params(&[
            ("listen", "127.0.0.1:1"),
            ("listen-tokens", "t"),
            ("listen-tls-cert-file", "/c"),
        ]));
        assert!(config.listener.unusable().unwrap().contains("together"));
    }

    #[test]
    fn flood_limits_and_the_acl_are_read() {
        let (config, problems) = ModuleConfig::from_params(&params(&[
            ("listen-acl", "wsbridge-clients"),
            ("listen-handshakes-per-address", "3"),
            ("listen-upgrade-timeout-ms", "1500"),
            ("listen-auth-failures", "4"),
            ("listen-auth-window-ms", "10000"),
            ("listen-auth-backoff-ms", "5000"),
        ]));
        assert!(problems.is_empty(), "{problems:?}");
        let listener = &config.listener;
        assert_eq!(listener.acl.as_deref(), Some("wsbridge-clients"));
        let flood = listener.flood;
        assert_eq!((flood.handshakes_per_address, flood.auth_failures), (3, 4));
        assert_eq!(flood.upgrade_timeout, Duration::from_millis(1500));
        assert_eq!((flood.auth_window, flood.auth_backoff), (Duration::from_secs(10), Duration::from_secs(5)));
        let defaults = FloodLimits::default();
        assert_eq!((defaults.handshakes_per_address, defaults.auth_failures), (8, 10));
        assert_eq!(defaults.upgrade_timeout, Duration::from_secs(2));
        assert_eq!((defaults.auth_window, defaults.auth_backoff), (Duration::from_secs(60), Duration::from_secs(60)));
    }

    #[test]
    fn plain_ws_beyond_loopback_needs_allow_plaintext() {
        let listener = |address: &str, extra: &[(&str, &str)]| {
            let mut pairs = vec![("listen", address), ("listen-tokens", "t")];
            pairs.extend_from_slice(extra);
            ModuleConfig::from_params(&params(&pairs)).0.listener
        };
        for loopback in ["127.0.0.1:8089", "127.0.0.2:1", "[::1]:8089", "[::ffff:127.0.0.1]:1"] {
            assert_eq!(listener(loopback, &[]).unusable(), None, "{loopback}");
        }
        for outside in ["0.0.0.0:8089", "10.1.2.3:8089", "[::]:8089"] {
            let why = listener(outside, &[]).unusable().unwrap();
            assert!(why.contains("listen-allow-plaintext=true") && why.contains(outside), "{why}");
            assert_eq!(listener(outside, &[("listen-allow-plaintext", "true")]).unusable(), None);
            let tls = [("listen-tls-cert-file", "/c"), ("listen-tls-key-file", "/k")];
            assert_eq!(listener(outside, &tls).unusable(), None, "wss may bind anywhere");
        }
    }

    #[test]
    fn scoped_tokens_come_from_the_section() {
        let secret = "a-secret-of-twenty-plus";
        let elements = vec![
            token(&[("name", "bot-a"), ("secret", secret), ("context", "bots"), ("destinations", "9\\d{3}")]),
            token(&[("name", "bot-b"), ("secret", "tiny-secret"), ("destinations", ".*")]),
            token(&[("name", "bot-c"), ("secret", "another-secret-twenty-plus"), ("destinations", "1000")]),
        ];
        let pairs = params(&[("listen", "127.0.0.1:1"), ("listen-context", "default-ctx")]);
        let (config, problems) = ModuleConfig::from_file(&pairs, &elements);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("token 'bot-b'") && !problems[0].contains("tiny-secret"), "{}", problems[0]);
        let tokens = &config.listener.tokens;
        assert_eq!((tokens.len(), tokens.unscoped_count()), (2, 0));
        assert_eq!(tokens.find(Some(secret)).unwrap().context, "bots");
        assert_eq!(tokens.find(Some("another-secret-twenty-plus")).unwrap().context, "default-ctx");
        assert_eq!(config.listener.unusable(), None);
    }
}
