//! Who may be reached, what may be sent in the upgrade request, and what
//! must never reach a log in clear text.

use serde_json::Value;

use crate::settings::ServerUri;

/// One allowlist entry: a host (with `*` wildcards) and optionally a port (or `*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    host: String,
    port: Option<u16>,
}

/// Parses `allowed-hosts`: patterns separated by commas or white space,
/// e.g. `bots.example.com, *.voice.example.com:443, 127.0.0.1:*, [::1]:8080`.
pub fn parse_allowlist(text: &str) -> Result<Vec<HostPattern>, String> {
    let mut patterns = Vec::new();
    for item in text.split([',', ' ', '\t', '\n']).map(str::trim).filter(|item| !item.is_empty()) {
        let (host, port) = if let Some(rest) = item.strip_prefix('[') {
            let (host, after) = rest.split_once(']').ok_or_else(|| format!("'{item}': unclosed ["))?;
            (host, after.strip_prefix(':'))
        } else if item.matches(':').count() == 1 {
            let (host, port) = item.split_once(':').expect("one colon");
            (host, Some(port))
        } else {
            (item, None)
        };
        let port = match port {
            None | Some("*") => None,
            Some(port) => Some(port.parse::<u16>().map_err(|_| format!("'{item}': bad port"))?),
        };
        if host.is_empty()
            || !host.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':' | '*'))
        {
            return Err(format!("'{item}': bad host pattern"));
        }
        patterns.push(HostPattern { host: host.to_ascii_lowercase(), port });
    }
    Ok(patterns)
}

fn glob(pattern: &str, text: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == text,
        Some((prefix, rest)) => {
            text.starts_with(prefix)
                && (0..=text.len() - prefix.len()).any(|skip| glob(rest, &text[prefix.len() + skip..]))
        }
    }
}

/// True when the allowlist is empty (no restriction) or a pattern matches.
pub fn allows(patterns: &[HostPattern], uri: &ServerUri) -> bool {
    let host = uri.host.to_ascii_lowercase();
    patterns.is_empty()
        || patterns.iter().any(|pattern| glob(&pattern.host, &host) && pattern.port.is_none_or(|port| port == uri.port))
}

const RESERVED_HEADERS: [&str; 5] = ["host", "upgrade", "connection", "content-length", "transfer-encoding"];
const MAX_HEADER_COUNT: usize = 32;
const MAX_HEADER_BYTES: usize = 8192;

fn is_token(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Extra HTTP headers for the upgrade request, from a JSON object of strings.
pub fn parse_http_headers(json: &str) -> Result<Vec<(String, String)>, String> {
    let object = match serde_json::from_str::<Value>(json) {
        Ok(Value::Object(object)) => object,
        Ok(_) => return Err("must be a JSON object".into()),
        Err(error) => return Err(format!("is not valid JSON: {error}")),
    };
    if object.len() > MAX_HEADER_COUNT {
        return Err(format!("has {} headers; at most {MAX_HEADER_COUNT}", object.len()));
    }
    let mut headers = Vec::new();
    let mut total = 0;
    for (name, value) in object {
        let lower = name.to_ascii_lowercase();
        if !is_token(&name) {
            return Err(format!("header name '{}' is not a valid HTTP token", name.escape_debug()));
        }
        if RESERVED_HEADERS.contains(&lower.as_str()) || lower.starts_with("sec-websocket-") {
            return Err(format!("header '{name}' is set by the module itself"));
        }
        let value = match value {
            Value::String(text) => text,
            Value::Number(number) => number.to_string(),
            _ => return Err(format!("header '{name}' must have a string value")),
        };
        if value.chars().any(|c| (c.is_control() && c != '\t') || !c.is_ascii()) {
            return Err(format!("header '{name}' has a control or non-ASCII character in its value"));
        }
        total += name.len() + value.len();
        if total > MAX_HEADER_BYTES {
            return Err(format!("headers are over {MAX_HEADER_BYTES} bytes"));
        }
        headers.push((name, value));
    }
    Ok(headers)
}

/// A SHA-256 certificate fingerprint for `tls-pin-sha256`: 64 hex digits,
/// any case, colons optional, as `openssl x509 -noout -fingerprint -sha256`
/// prints it (its `sha256 Fingerprint=` label may be pasted too). `none`
/// sets no pin.
pub fn parse_sha256_pin(text: &str) -> Result<Option<[u8; 32]>, String> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    let hex = match text.split_once('=') {
        Some((label, hex)) if label.trim().eq_ignore_ascii_case("sha256 fingerprint") => hex.trim(),
        _ => text,
    };
    let digits: Vec<u8> = hex.bytes().filter(|&byte| byte != b':').collect();
    if digits.len() != 64 || !digits.iter().all(u8::is_ascii_hexdigit) {
        return Err(format!(
            "'{}' is not a SHA-256 fingerprint: give the 64 hex digits (colons optional) that `openssl x509 -noout \
             -fingerprint -sha256 -in server.pem` prints, or none",
            text.escape_debug()
        ));
    }
    let value = |digit: u8| (digit as char).to_digit(16).expect("a hex digit") as u8;
    let mut pin = [0u8; 32];
    for (byte, pair) in pin.iter_mut().zip(digits.chunks_exact(2)) {
        *byte = value(pair[0]) << 4 | value(pair[1]);
    }
    Ok(Some(pin))
}

/// A fingerprint as openssl prints it: `AB:CD:...`.
pub fn fingerprint_text(fingerprint: &[u8; 32]) -> String {
    fingerprint.iter().map(|byte| format!("{byte:02X}")).collect::<Vec<_>>().join(":")
}

pub use crate::settings::redact::{is_secret_setting, redact_header, redact_headers_json, redact_uri, redact_uri_path};

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(text: &str) -> ServerUri {
        ServerUri::parse(text).unwrap()
    }

    #[test]
    fn allowlist_matches_hosts_ports_and_wildcards() {
        let patterns = parse_allowlist("bots.example.com, *.voice.example.com:443 127.0.0.1:* [::1]:8080").unwrap();
        assert!(allows(&patterns, &uri("wss://bots.example.com/x")));
        assert!(allows(&patterns, &uri("ws://BOTS.example.com:9000/")));
        assert!(allows(&patterns, &uri("wss://eu.voice.example.com/")));
        assert!(!allows(&patterns, &uri("ws://eu.voice.example.com:80/")), "port pinned to 443");
        assert!(!allows(&patterns, &uri("wss://voice.example.com.evil.net/")));
        assert!(!allows(&patterns, &uri("wss://evilbots.example.com/")));
        assert!(allows(&patterns, &uri("ws://127.0.0.1:1234/")));
        assert!(allows(&patterns, &uri("ws://[::1]:8080/")));
        assert!(!allows(&patterns, &uri("ws://[::1]:8081/")));
        assert!(!allows(&patterns, &uri("ws://10.0.0.1/")));
        assert!(allows(&[], &uri("ws://anything/")), "no list: no restriction");
        assert!(parse_allowlist("host:notaport").is_err());
        assert!(parse_allowlist("bad/host").is_err());
    }

    #[test]
    fn http_headers_are_validated() {
        let headers = parse_http_headers(r#"{"Authorization":"Bearer abc","X-Call":42}"#).unwrap();
        assert_eq!(headers, vec![("Authorization".into(), "Bearer abc".into()), ("X-Call".into(), "42".into())]);
        for bad in [
            "[1]",
            "{",
            r#"{"Bad Name":"x"}"#,
            r#"{"X":"a\r\nInjected: yes"}"#,
            r#"{"Host":"elsewhere"}"#,
            r#"{"Sec-WebSocket-Protocol":"other"}"#,
            r#"{"X":{"nested":1}}"#,
            r#"{"X":"é"}"#,
        ] {
            assert!(parse_http_headers(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sha256_pins_are_read_as_openssl_prints_them() {
        let openssl = "BD:45:83:D2:D8:5E:60:02:79:E7:1E:C6:8D:B6:09:E1:0F:28:C1:F5:4F:80:45:A1:DA:22:43:1C:D0:34:BA:64";
        let pin = parse_sha256_pin(openssl).unwrap().unwrap();
        assert_eq!(pin[..3], [0xbd, 0x45, 0x83]);
        assert_eq!(fingerprint_text(&pin), openssl);
        for same in [
            openssl.to_ascii_lowercase(),
            openssl.replace(':', ""),
            format!("  {}  ", openssl.replace(':', "").to_ascii_lowercase()),
            format!("sha256 Fingerprint={openssl}"),
            format!("SHA256 Fingerprint={openssl}"),
        ] {
            assert_eq!(parse_sha256_pin(&same), Ok(Some(pin)), "{same}");
        }
        assert_eq!(parse_sha256_pin("none"), Ok(None));
        assert_eq!(parse_sha256_pin("NONE"), Ok(None));
        for bad in [
            "xyz",
            &openssl[3..],
            &format!("{openssl}:00"),
            &openssl.replace('B', "G"),
            &format!("+{}", &openssl.replace(':', "")[1..]),
            &format!("sha1 Fingerprint={openssl}"),
        ] {
            let why = parse_sha256_pin(bad).unwrap_err();
            assert!(why.contains("is not a SHA-256 fingerprint"), "{bad}: {why}");
        }
    }

    #[test]
    fn secrets_never_reach_logs() {
        assert_eq!(redact_header("Authorization", "Bearer abc"), "Authorization: ***");
        assert_eq!(redact_header("X-Api-Key", "k"), "X-Api-Key: ***");
        assert_eq!(redact_header("X-Call", "42"), "X-Call: 42");
        assert_eq!(redact_uri("wss://h/p?call=1&token=abc&sig=x"), "wss://h/p?call=***&token=***&sig=***");
        assert_eq!(redact_uri("ws://h/p"), "ws://h/p");
    }
}
