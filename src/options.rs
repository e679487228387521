//! Per-call tuning from channel variables (`wsbridge_*`), with defaults.
//! A bad value is reported and its default used: a typo must not fail a call.

use std::time::Duration;

use crate::comfort_noise::DEFAULT_LEVEL_DBOV;
use crate::media::MediaLimits;
use crate::session::SessionOptions;
use crate::settings::FirstMessageStyle;

pub const PLAYOUT_MAX_MS: &str = "wsbridge_playout_max_ms";
pub const PLAYOUT_HIGH_WATER_MS: &str = "wsbridge_playout_high_water_ms";
pub const PLAYOUT_LOW_WATER_MS: &str = "wsbridge_playout_low_water_ms";
pub const UPLINK_BACKLOG_MS: &str = "wsbridge_uplink_backlog_ms";
pub const COMFORT_NOISE_DBOV: &str = "wsbridge_comfort_noise_dbov";
pub const CONNECT_TIMEOUT_MS: &str = "wsbridge_connect_timeout_ms";
pub const MAX_MESSAGE_BYTES: &str = "wsbridge_max_message_bytes";
pub const MAX_TEXT_BYTES: &str = "wsbridge_max_text_bytes";
pub const CNG_FRAMES: &str = "wsbridge_cng_frames";
pub const PING_INTERVAL_MS: &str = "wsbridge_ping_interval_ms";
pub const DEAD_PEER_TIMEOUT_MS: &str = "wsbridge_dead_peer_timeout_ms";
pub const MAX_HEADERS_BYTES: &str = "wsbridge_max_headers_bytes";
pub const FIRST_MESSAGE: &str = "wsbridge_first_message";
pub const TLS_CA_FILE: &str = "wsbridge_tls_ca_file";
pub const TLS_CERT_FILE: &str = "wsbridge_tls_cert_file";
pub const TLS_KEY_FILE: &str = "wsbridge_tls_key_file";
pub const TLS_INSECURE: &str = "wsbridge_tls_insecure";
/// A JSON object of extra HTTP headers for the upgrade request.
pub const HTTP_HEADERS: &str = "wsbridge_http_headers";

/// Every variable read here, for documentation and lookups.
pub const VARIABLES: [&str; 18] = [
    PLAYOUT_MAX_MS,
    PLAYOUT_HIGH_WATER_MS,
    PLAYOUT_LOW_WATER_MS,
    UPLINK_BACKLOG_MS,
    COMFORT_NOISE_DBOV,
    CONNECT_TIMEOUT_MS,
    MAX_MESSAGE_BYTES,
    MAX_TEXT_BYTES,
    CNG_FRAMES,
    PING_INTERVAL_MS,
    DEAD_PEER_TIMEOUT_MS,
    MAX_HEADERS_BYTES,
    FIRST_MESSAGE,
    TLS_CA_FILE,
    TLS_CERT_FILE,
    TLS_KEY_FILE,
    TLS_INSECURE,
    HTTP_HEADERS,
];

#[derive(Debug, Clone)]
pub struct CallOptions {
    pub media: MediaLimits,
    pub comfort_noise_dbov: f64,
    /// Flag comfort-noise frames SFF_CNG, for legs that carry RFC 3389 CN
    /// rather than the noise itself. Off: every leg and recording hears the noise.
    pub cng_frames: bool,
    pub session: SessionOptions,
    /// Limit on the decoded `P-wsbridge-websocket-headers`.
    pub max_headers_bytes: usize,
    /// Set when the upgrade headers are unusable: the call must be refused.
    pub invalid_http_headers: Option<String>,
}

impl Default for CallOptions {
    fn default() -> Self {
        CallOptions {
            media: MediaLimits::default(),
            comfort_noise_dbov: DEFAULT_LEVEL_DBOV,
            cng_frames: false,
            session: SessionOptions::default(),
            max_headers_bytes: crate::settings::MAX_HEADERS_BYTES,
            invalid_http_headers: None,
        }
    }
}

struct Reader<'a> {
    source: &'a dyn Fn(&str) -> Option<String>,
    /// How a variable is named in problem reports (a config file names params).
    display: &'a dyn Fn(&str) -> String,
    problems: Vec<String>,
}

impl Reader<'_> {
    fn number<T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy>(
        &mut self,
        name: &str,
        range: std::ops::RangeInclusive<T>,
    ) -> Option<T> {
        let text = (self.source)(name)?;
        match text.trim().parse::<T>() {
            Ok(value) if range.contains(&value) => Some(value),
            _ => {
                self.problems.push(format!(
                    "{}='{text}' is not a number from {} to {}; using the default",
                    (self.display)(name),
                    range.start(),
                    range.end()
                ));
                None
            }
        }
    }
}

/// The usual spellings of a FreeSWITCH boolean.
pub fn parse_flag(text: &str) -> Option<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" | "enabled" => Some(true),
        "false" | "no" | "off" | "0" | "disabled" => Some(false),
        _ => None,
    }
}

impl Reader<'_> {
    fn flag(&mut self, name: &str) -> Option<bool> {
        let text = (self.source)(name)?;
        let flag = parse_flag(&text);
        if flag.is_none() {
            self.problems.push(format!("{}='{text}' is not true or false; using the default", (self.display)(name)));
        }
        flag
    }
}

impl CallOptions {
    /// Reads the `wsbridge_*` variables; returns the options and a line for each value ignored.
    pub fn from_variables(source: &dyn Fn(&str) -> Option<String>) -> (CallOptions, Vec<String>) {
        Self::read(source, &|name: &str| name.to_string())
    }

    /// As [`from_variables`](Self::from_variables), naming variables with `display` in reports.
    pub fn read(
        source: &dyn Fn(&str) -> Option<String>,
        display: &dyn Fn(&str) -> String,
    ) -> (CallOptions, Vec<String>) {
        let mut reader = Reader { source, display, problems: Vec::new() };
        let mut options = CallOptions::default();
        let ms = Duration::from_millis;

        if let Some(max) = reader.number::<u64>(PLAYOUT_MAX_MS, 100..=3_600_000) {
            options.media.playout_capacity = ms(max);
            options.media.playout_high_water = ms(max * 5 / 6);
            options.media.playout_low_water = ms(max * 2 / 3);
        }
        let capacity = options.media.playout_capacity.as_millis() as u64;
        if let Some(high) = reader.number::<u64>(PLAYOUT_HIGH_WATER_MS, 20..=capacity) {
            options.media.playout_high_water = ms(high);
        }
        let high = options.media.playout_high_water.as_millis() as u64;
        if let Some(low) = reader.number::<u64>(PLAYOUT_LOW_WATER_MS, 0..=high) {
            options.media.playout_low_water = ms(low);
        }
        if options.media.playout_low_water > options.media.playout_high_water {
            options.media.playout_low_water = options.media.playout_high_water;
        }
        if let Some(backlog) = reader.number::<u64>(UPLINK_BACKLOG_MS, 20..=60_000) {
            options.media.uplink_backlog = ms(backlog);
        }
        if let Some(level) = reader.number::<f64>(COMFORT_NOISE_DBOV, -96.0..=0.0) {
            options.comfort_noise_dbov = level;
        }
        if let Some(timeout) = reader.number::<u64>(CONNECT_TIMEOUT_MS, 100..=120_000) {
            options.session.connect_timeout = ms(timeout);
        }
        if let Some(bytes) = reader.number::<usize>(MAX_MESSAGE_BYTES, 1024..=(256 << 20)) {
            options.session.max_message_bytes = bytes;
        }
        if let Some(bytes) = reader.number::<usize>(MAX_TEXT_BYTES, 256..=(16 << 20)) {
            options.session.max_text_bytes = bytes;
        }
        if let Some(flag) = reader.flag(CNG_FRAMES) {
            options.cng_frames = flag;
        }
        if let Some(interval) = reader.number::<u64>(PING_INTERVAL_MS, 0..=3_600_000) {
            options.session.ping_interval = ms(interval);
        }
        if let Some(timeout) = reader.number::<u64>(DEAD_PEER_TIMEOUT_MS, 0..=3_600_000) {
            options.session.dead_peer_timeout = ms(timeout);
        }
        if let Some(bytes) = reader.number::<usize>(MAX_HEADERS_BYTES, 2..=(64 << 10)) {
            options.max_headers_bytes = bytes;
        }
        let path = |name: &str| {
            source(name).map(|p| p.trim().to_string()).filter(|p| !p.is_empty()).map(std::path::PathBuf::from)
        };
        options.session.tls.ca_file = path(TLS_CA_FILE);
        options.session.tls.cert_file = path(TLS_CERT_FILE);
        options.session.tls.key_file = path(TLS_KEY_FILE);
        if let Some(insecure) = reader.flag(TLS_INSECURE) {
            options.session.tls.insecure = insecure;
        }
        if let Some(text) = source(HTTP_HEADERS).filter(|t| !t.trim().is_empty()) {
            match crate::security::parse_http_headers(&text) {
                Ok(headers) => options.session.http_headers = headers,
                Err(why) => options.invalid_http_headers = Some(format!("{} {why}", display(HTTP_HEADERS))),
            }
        }
        if let Some(text) = source(FIRST_MESSAGE) {
            match FirstMessageStyle::parse(&text) {
                Some(style) => options.session.first_message = style,
                None => reader
                    .problems
                    .push(format!("{}='{text}' is not wsbridge or vonage; using the default", display(FIRST_MESSAGE))),
            }
        }
        (options, reader.problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn read(pairs: &[(&str, &str)]) -> (CallOptions, Vec<String>) {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        CallOptions::from_variables(&move |name: &str| map.get(name).cloned())
    }

    #[test]
    fn defaults_without_variables() {
        let (options, problems) = read(&[]);
        assert!(problems.is_empty());
        assert_eq!(options.media.playout_capacity, Duration::from_secs(60));
        assert_eq!(options.media.uplink_backlog, Duration::from_secs(1));
        assert_eq!(options.comfort_noise_dbov, -65.0);
        assert_eq!(options.session.connect_timeout, Duration::from_secs(5));
        assert_eq!(options.session.max_message_bytes, 1 << 20);
    }

    #[test]
    fn playout_marks_follow_the_size_unless_set() {
        let (options, _) = read(&[(PLAYOUT_MAX_MS, "6000")]);
        assert_eq!(options.media.playout_high_water, Duration::from_millis(5000));
        assert_eq!(options.media.playout_low_water, Duration::from_millis(4000));
        let (options, problems) =
            read(&[(PLAYOUT_MAX_MS, "6000"), (PLAYOUT_HIGH_WATER_MS, "3000"), (PLAYOUT_LOW_WATER_MS, "1000")]);
        assert!(problems.is_empty());
        assert_eq!(options.media.playout_high_water, Duration::from_millis(3000));
        assert_eq!(options.media.playout_low_water, Duration::from_millis(1000));
    }

    #[test]
    fn bad_values_keep_the_default_and_are_reported() {
        let (options, problems) = read(&[
            (PLAYOUT_MAX_MS, "lots"),
            (COMFORT_NOISE_DBOV, "12"),
            (PLAYOUT_HIGH_WATER_MS, "999999999"),
            (UPLINK_BACKLOG_MS, "-5"),
        ]);
        assert_eq!(options.media.playout_capacity, Duration::from_secs(60));
        assert_eq!(options.comfort_noise_dbov, -65.0);
        assert_eq!(options.media.uplink_backlog, Duration::from_secs(1));
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(problems.iter().all(|p| p.contains("using the default")));
    }

    #[test]
    fn flags_take_the_usual_spellings() {
        assert!(read(&[(CNG_FRAMES, "Yes")]).0.cng_frames);
        assert!(!read(&[(CNG_FRAMES, "off")]).0.cng_frames);
        let (options, problems) = read(&[(CNG_FRAMES, "maybe")]);
        assert!(!options.cng_frames);
        assert_eq!(problems.len(), 1);
    }

    #[test]
    fn tls_and_upgrade_headers() {
        let (options, problems) = read(&[
            (TLS_CA_FILE, "/etc/ca.pem"),
            (TLS_INSECURE, "yes"),
            (HTTP_HEADERS, r#"{"Authorization":"Bearer t"}"#),
        ]);
        assert!(problems.is_empty());
        assert_eq!(options.session.tls.ca_file.as_deref(), Some(std::path::Path::new("/etc/ca.pem")));
        assert!(options.session.tls.insecure);
        assert_eq!(options.session.http_headers, vec![("Authorization".to_string(), "Bearer t".to_string())]);
        let (options, _) = read(&[(HTTP_HEADERS, r#"{"Bad Name":"x"}"#)]);
        assert!(options.invalid_http_headers.unwrap().starts_with("wsbridge_http_headers header name"));
    }

    #[test]
    fn comfort_noise_can_be_turned_off() {
        let (options, problems) = read(&[(COMFORT_NOISE_DBOV, "0")]);
        assert!(problems.is_empty());
        assert_eq!(options.comfort_noise_dbov, 0.0);
    }
}
