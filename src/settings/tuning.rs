//! The `wsbridge_*` channel variables that tune one call, read against
//! [`super::TABLE`]. A bad value is reported and its default used: a typo
//! must not fail a call. Only unusable upgrade headers refuse it.

use std::path::PathBuf;
use std::time::Duration;

use super::*;
use crate::settings::options::{ConnectionOptions, MediaLimits, TlsOptions};

/// How one call is tuned.
#[derive(Debug, Clone)]
pub struct CallTuning {
    pub media: MediaLimits,
    pub comfort_noise_dbov: f64,
    /// Flag comfort-noise frames SFF_CNG, for legs that carry RFC 3389 CN
    /// rather than the noise itself. Off: every leg and recording hears the noise.
    pub cng_frames: bool,
    pub connection: ConnectionOptions,
}

impl Default for CallTuning {
    fn default() -> Self {
        CallTuning {
            media: MediaLimits::default(),
            comfort_noise_dbov: super::COMFORT_NOISE_DBOV.level_default(),
            cng_frames: super::CNG_FRAMES.flag_default(),
            connection: ConnectionOptions::default(),
        }
    }
}

/// Looks up a variable by its name; `None` when unset.
pub type Source<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Reads settings from a source, collecting a line for each value ignored.
pub struct Reader<'a> {
    source: Source<'a>,
    /// How a setting is named in reports (a config file names params).
    display: &'a dyn Fn(&Setting) -> String,
    pub problems: Vec<String>,
}

impl<'a> Reader<'a> {
    /// Names settings by their channel variable.
    pub fn of_variables(source: Source<'a>) -> Self {
        Reader {
            source,
            display: &|setting| setting.variable().unwrap_or_else(|| setting.param.to_string()),
            problems: Vec::new(),
        }
    }

    pub fn new(source: Source<'a>, display: &'a dyn Fn(&Setting) -> String) -> Self {
        Reader { source, display, problems: Vec::new() }
    }

    /// The raw text of a setting; empty counts as unset.
    pub fn text(&self, setting: &Setting) -> Option<String> {
        let name = setting.variable().unwrap_or_else(|| setting.param.to_string());
        (self.source)(&name).filter(|text| !text.trim().is_empty())
    }

    /// An integer setting within its range, narrowed to `max` where another setting bounds it.
    pub fn integer_up_to(&mut self, setting: &Setting, max: u64) -> Option<u64> {
        let (min, table_max) = setting.integer_range();
        let max = max.min(table_max);
        self.number(setting, min, max)
    }

    /// A number within `min..=max`; anything else is reported and `None`.
    fn number<T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy>(
        &mut self,
        setting: &Setting,
        min: T,
        max: T,
    ) -> Option<T> {
        let text = self.text(setting)?;
        match text.trim().parse::<T>() {
            Ok(value) if (min..=max).contains(&value) => Some(value),
            _ => {
                let name = (self.display)(setting);
                self.problems.push(format!("{name}='{text}' is not a number from {min} to {max}; using the default"));
                None
            }
        }
    }

    pub fn integer(&mut self, setting: &Setting) -> Option<u64> {
        self.integer_up_to(setting, u64::MAX)
    }

    /// The value, or the table's default.
    pub fn integer_or_default(&mut self, setting: &Setting) -> u64 {
        self.integer(setting).unwrap_or(setting.integer_default())
    }

    pub fn level(&mut self, setting: &Setting) -> Option<f64> {
        let Kind::Level { min, max, .. } = setting.kind else { panic!("{} is not a level", setting.param) };
        self.number(setting, min, max)
    }

    pub fn flag(&mut self, setting: &Setting) -> Option<bool> {
        let text = self.text(setting)?;
        let flag = parse_flag(&text);
        if flag.is_none() {
            let name = (self.display)(setting);
            self.problems.push(format!("{name}='{text}' is not true or false; using the default"));
        }
        flag
    }

    /// A JSON setting's text: as given when it reads as JSON, else URL-decoded.
    pub fn json(&self, setting: &Setting) -> Option<String> {
        let text = self.text(setting)?;
        let trimmed = text.trim();
        if trimmed.starts_with(['{', '[', '"']) {
            return Some(trimmed.to_string());
        }
        Some(super::url_decode(trimmed).unwrap_or_else(|| trimmed.to_string()))
    }

    pub fn path(&self, setting: &Setting) -> Option<PathBuf> {
        self.text(setting).map(|text| PathBuf::from(text.trim()))
    }

    pub fn display(&self, setting: &Setting) -> String {
        (self.display)(setting)
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

impl CallTuning {
    /// Reads the `wsbridge_*` variables. Returns the tuning and a line for
    /// each value ignored, or why the call must be refused.
    pub fn from_variables(source: Source<'_>) -> Result<(CallTuning, Vec<String>), String> {
        let mut reader = Reader::of_variables(source);
        let tuning = Self::read(&mut reader)?;
        Ok((tuning, reader.problems))
    }

    /// Reads every tuning setting through `reader`; Err when the call must be refused.
    pub fn read(reader: &mut Reader<'_>) -> Result<CallTuning, String> {
        let mut tuning = CallTuning::default();
        read_playout(reader, &mut tuning.media);
        if let Some(level) = reader.level(&COMFORT_NOISE_DBOV) {
            tuning.comfort_noise_dbov = level;
        }
        if let Some(flag) = reader.flag(&CNG_FRAMES) {
            tuning.cng_frames = flag;
        }
        read_connection(reader, &mut tuning.connection)?;
        read_tls(reader, &mut tuning.connection.tls)?;
        read_agent(reader, &mut tuning.connection.agent)?;
        if let Some(ms) = reader.integer(&UPLINK_FRAME_MS) {
            if ms % FRAME_MS as u64 == 0 {
                tuning.media.uplink_frame_ms = ms as u32;
            } else {
                let name = reader.display(&UPLINK_FRAME_MS);
                reader.problems.push(format!("{name}='{ms}' is not a multiple of 20; using the default"));
            }
        }
        Ok(tuning)
    }
}

/// The playout's capacity, its water marks and the jitter buffer's range, each within the one before.
fn read_playout(reader: &mut Reader<'_>, media: &mut MediaLimits) {
    let ms = Duration::from_millis;
    if let Some(max) = reader.integer(&PLAYOUT_MAX_MS) {
        *media = MediaLimits::for_capacity(ms(max), media.uplink_backlog);
    }
    let capacity = media.playout_capacity.as_millis() as u64;
    if let Some(high) = reader.integer_up_to(&PLAYOUT_HIGH_WATER_MS, capacity) {
        media.playout_high_water = ms(high);
    }
    let high = media.playout_high_water.as_millis() as u64;
    if let Some(low) = reader.integer_up_to(&PLAYOUT_LOW_WATER_MS, high) {
        media.playout_low_water = ms(low);
    }
    media.playout_low_water = media.playout_low_water.min(media.playout_high_water);
    if let Some(target) = reader.integer(&PLAYOUT_TARGET_MS) {
        media.jitter.target_min_ms = target as f64;
    }
    if let Some(max) = reader.integer(&PLAYOUT_TARGET_MAX_MS) {
        media.jitter.target_max_ms = max as f64;
    }
    media.jitter.target_max_ms = media.jitter.target_max_ms.max(media.jitter.target_min_ms);
    if let Some(backlog) = reader.integer(&UPLINK_BACKLOG_MS) {
        media.uplink_backlog = ms(backlog);
    }
}

/// Timeouts, limits, pings, reconnect, the first message and the upgrade's headers.
fn read_connection(reader: &mut Reader<'_>, session: &mut ConnectionOptions) -> Result<(), String> {
    let ms = Duration::from_millis;
    if let Some(timeout) = reader.integer(&CONNECT_TIMEOUT_MS) {
        session.connect_timeout = ms(timeout);
    }
    if let Some(bytes) = reader.integer(&MAX_MESSAGE_BYTES) {
        session.max_message_bytes = bytes as usize;
    }
    if let Some(bytes) = reader.integer(&MAX_TEXT_BYTES) {
        session.max_text_bytes = bytes as usize;
    }
    if let Some(interval) = reader.integer(&PING_INTERVAL_MS) {
        session.ping_interval = ms(interval);
    }
    if let Some(timeout) = reader.integer(&DEAD_PEER_TIMEOUT_MS) {
        session.dead_peer_timeout = ms(timeout);
    }
    if let Some(budget) = reader.integer(&RECONNECT_MS) {
        session.reconnect = ms(budget);
    }
    if let Some(direct) = reader.flag(&UPLINK_DIRECT) {
        session.uplink_direct = direct;
    }
    if let Some(reactor) = reader.flag(&DOWNLINK_REACTOR) {
        session.downlink_reactor = reactor;
    }
    // Checked here so a bad list in wsbridge.conf is reported; the list itself is the call plan's.
    if let Some(text) = reader.text(&FALLBACK_URIS) {
        if let Err(why) = parse_uri_list(&text) {
            let name = reader.display(&FALLBACK_URIS);
            reader.problems.push(format!("{name}='{text}' is not a list of server URIs ({why}); ignored"));
        }
    }
    // Checked here so a bad value in wsbridge.conf is reported; the limit itself is the call plan's.
    reader.integer(&MAX_HEADERS_BYTES);
    if let Some(sid) = reader.text(&TWILIO_ACCOUNT_SID) {
        session.twilio_account_sid = sid.trim().to_string();
    }
    if let Some(text) = reader.text(&FIRST_MESSAGE) {
        match FirstMessageStyle::parse(&text) {
            Some(style) => session.first_message = style,
            None => {
                let name = reader.display(&FIRST_MESSAGE);
                reader.problems.push(format!("{name}='{text}' is not wsbridge or vonage; using the default"))
            }
        }
    }
    if let Some(text) = reader.json(&HTTP_HEADERS) {
        match crate::settings::security::parse_http_headers(&text) {
            Ok(headers) => session.http_headers = headers,
            Err(why) => return Err(format!("{} {why}", reader.display(&HTTP_HEADERS))),
        }
    }
    Ok(())
}

fn read_tls(reader: &mut Reader<'_>, tls: &mut TlsOptions) -> Result<(), String> {
    tls.ca_file = reader.path(&TLS_CA_FILE);
    tls.cert_file = reader.path(&TLS_CERT_FILE);
    tls.key_file = reader.path(&TLS_KEY_FILE);
    if let Some(insecure) = reader.flag(&TLS_INSECURE) {
        tls.insecure = insecure;
    }
    if let Some(text) = reader.text(&TLS_PIN_SHA256) {
        match crate::settings::security::parse_sha256_pin(&text) {
            Ok(pin) => tls.pin_sha256 = pin,
            // Refused, not ignored: without its pin the call would trust more than intended.
            Err(why) => return Err(format!("{} {why}", reader.display(&TLS_PIN_SHA256))),
        }
    }
    Ok(())
}

/// Reads the agent settings; Err (the call is refused) for a session that is not a JSON object.
pub fn read_agent(reader: &mut Reader<'_>, agent: &mut super::agent::AgentOptions) -> Result<(), String> {
    if let Some(text) = reader.json(&super::agent::OPENAI_SESSION) {
        agent.session = super::agent::parse_session(&text)
            .map_err(|why| format!("{} {why}", reader.display(&super::agent::OPENAI_SESSION)))?;
    }
    let text = |reader: &Reader<'_>, setting: &Setting| reader.text(setting).map(|t| t.trim().to_string());
    agent.greeting = text(reader, &super::agent::OPENAI_GREETING);
    agent.hangup_function = text(reader, &super::agent::OPENAI_HANGUP_FUNCTION);
    agent.transfer_function = text(reader, &super::agent::OPENAI_TRANSFER_FUNCTION);
    agent.transfer_pattern = None;
    if let Some(pattern) = text(reader, &super::agent::OPENAI_TRANSFER_PATTERN) {
        match (pattern.chars().count() <= super::agent::MAX_PATTERN_CHARS)
            .then(|| regex::Regex::new(&format!("^(?:{pattern})$")))
        {
            Some(Ok(regex)) => agent.transfer_pattern = Some(regex),
            _ => {
                let name = reader.display(&super::agent::OPENAI_TRANSFER_PATTERN);
                reader.problems.push(format!("{name} is not a regular expression; every transfer is refused"));
            }
        }
    }
    agent.dtmf_to_model = match text(reader, &super::agent::OPENAI_DTMF).map(|t| t.to_ascii_lowercase()).as_deref() {
        None | Some("send") => true,
        Some("ignore") => false,
        Some(other) => {
            let name = reader.display(&super::agent::OPENAI_DTMF);
            reader.problems.push(format!("{name}='{other}' is not send or ignore; using send"));
            true
        }
    };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::*;
    use super::*;
    use std::collections::HashMap;

    fn read(pairs: &[(&Setting, &str)]) -> Result<(CallTuning, Vec<String>), String> {
        let map: HashMap<String, String> =
            pairs.iter().map(|(setting, value)| (setting.variable().unwrap(), value.to_string())).collect();
        CallTuning::from_variables(&move |name: &str| map.get(name).cloned())
    }

    #[test]
    fn defaults_without_variables() {
        let (tuning, problems) = read(&[]).unwrap();
        assert!(problems.is_empty());
        assert_eq!(tuning.media.playout_capacity, Duration::from_secs(60));
        assert_eq!(tuning.media.uplink_backlog, Duration::from_secs(1));
        assert_eq!(tuning.comfort_noise_dbov, -65.0);
        assert_eq!(tuning.connection.connect_timeout, Duration::from_secs(5));
        assert_eq!(tuning.connection.max_message_bytes, 1 << 20);
    }

    #[test]
    fn playout_marks_follow_the_size_unless_set() {
        let (tuning, _) = read(&[(&PLAYOUT_MAX_MS, "6000")]).unwrap();
        assert_eq!(tuning.media.playout_high_water, Duration::from_millis(5000));
        assert_eq!(tuning.media.playout_low_water, Duration::from_millis(4000));
        let (tuning, problems) =
            read(&[(&PLAYOUT_MAX_MS, "6000"), (&PLAYOUT_HIGH_WATER_MS, "3000"), (&PLAYOUT_LOW_WATER_MS, "1000")])
                .unwrap();
        assert!(problems.is_empty());
        assert_eq!(tuning.media.playout_high_water, Duration::from_millis(3000));
        assert_eq!(tuning.media.playout_low_water, Duration::from_millis(1000));
    }

    #[test]
    fn bad_values_keep_the_default_and_are_reported() {
        let (tuning, problems) = read(&[
            (&PLAYOUT_MAX_MS, "lots"),
            (&COMFORT_NOISE_DBOV, "12"),
            (&PLAYOUT_HIGH_WATER_MS, "999999999"),
            (&UPLINK_BACKLOG_MS, "-5"),
            (&MAX_HEADERS_BYTES, "1"),
        ])
        .unwrap();
        assert_eq!(tuning.media.playout_capacity, Duration::from_secs(60));
        assert_eq!(tuning.comfort_noise_dbov, -65.0);
        assert_eq!(tuning.media.uplink_backlog, Duration::from_secs(1));
        assert_eq!(problems.len(), 5, "{problems:?}");
        assert!(problems.iter().all(|p| p.contains("using the default")));
        assert!(problems[0].starts_with("wsbridge_playout_max_ms='lots'"), "{}", problems[0]);
    }

    #[test]
    fn flags_take_the_usual_spellings() {
        assert!(read(&[(&CNG_FRAMES, "Yes")]).unwrap().0.cng_frames);
        assert!(!read(&[(&CNG_FRAMES, "off")]).unwrap().0.cng_frames);
        let (tuning, problems) = read(&[(&CNG_FRAMES, "maybe")]).unwrap();
        assert!(!tuning.cng_frames);
        assert_eq!(problems.len(), 1);
    }

    #[test]
    fn tls_and_upgrade_headers() {
        let (tuning, problems) = read(&[
            (&TLS_CA_FILE, "/etc/ca.pem"),
            (&TLS_INSECURE, "yes"),
            (&HTTP_HEADERS, r#"{"Authorization":"Bearer t"}"#),
        ])
        .unwrap();
        assert!(problems.is_empty());
        assert_eq!(tuning.connection.tls.ca_file.as_deref(), Some(std::path::Path::new("/etc/ca.pem")));
        assert!(tuning.connection.tls.insecure);
        assert_eq!(tuning.connection.http_headers, vec![("Authorization".to_string(), "Bearer t".to_string())]);
        let encoded = "%7B%22Authorization%22%3A%22Bearer%20t0k3n%22%7D";
        let (tuning, _) = read(&[(&HTTP_HEADERS, encoded)]).unwrap();
        assert_eq!(tuning.connection.http_headers, vec![("Authorization".to_string(), "Bearer t0k3n".to_string())]);
        let refusal = read(&[(&HTTP_HEADERS, "%7B%22a%22")]).unwrap_err();
        assert!(!refusal.contains("t0k3n"));
        let refusal = read(&[(&HTTP_HEADERS, r#"{"Bad Name":"x"}"#)]).unwrap_err();
        assert!(refusal.starts_with("wsbridge_http_headers header name"), "{refusal}");
    }

    #[test]
    fn a_pin_is_read_and_a_malformed_one_refuses_the_call() {
        let hex = "bd4583d2d85e600279e71ec68db609e10f28c1f54f8045a1da22431cd034ba64";
        let (tuning, problems) = read(&[(&TLS_PIN_SHA256, hex)]).unwrap();
        assert!(problems.is_empty());
        assert_eq!(tuning.connection.tls.pin_sha256.map(|pin| pin[31]), Some(0x64));
        assert_eq!(read(&[]).unwrap().0.connection.tls.pin_sha256, None);
        assert_eq!(read(&[(&TLS_PIN_SHA256, "none")]).unwrap().0.connection.tls.pin_sha256, None);
        let refusal = read(&[(&TLS_PIN_SHA256, &hex[2..])]).unwrap_err();
        assert!(refusal.starts_with("wsbridge_tls_pin_sha256 '4583"), "{refusal}");
        assert!(refusal.contains("is not a SHA-256 fingerprint"), "{refusal}");
    }

    #[test]
    fn comfort_noise_can_be_turned_off() {
        let (tuning, problems) = read(&[(&COMFORT_NOISE_DBOV, "0")]).unwrap();
        assert!(problems.is_empty());
        assert_eq!(tuning.comfort_noise_dbov, 0.0);
    }
}
