//! Who may be reached, what may be sent in the upgrade request, and what
//! must never reach a log in clear text.

use std::net::IpAddr;

use serde_json::Value;

use crate::settings::address::{classify, looks_like_ipv4, Cidr, MAX_HOST_NAME_BYTES};
use crate::settings::server::Origin;
use crate::settings::ServerUri;

/// One allowlist entry: what it names, and optionally a port (or `*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    host: Named,
    port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Named {
    /// A host name, lower case.
    Name(String),
    /// `*.example.com`: the suffix (`.example.com`) a name must end in.
    Suffix(String),
    /// An address, or a CIDR block of them.
    Addresses(Cidr),
}

/// Parses `allowed-hosts`: patterns separated by commas or white space,
/// e.g. `bots.example.com, *.voice.example.com:443, 127.0.0.1:*, [::1]:8080,
/// 10.0.0.0/8, [fc00::/7]:443`.
pub fn parse_allowlist(text: &str) -> Result<Vec<HostPattern>, String> {
    let mut patterns = Vec::new();
    for item in text.split([',', ' ', '\t', '\n']).map(str::trim).filter(|item| !item.is_empty()) {
        let (host, port) = if let Some(rest) = item.strip_prefix('[') {
            let (host, after) = rest.split_once(']').ok_or_else(|| format!("'{item}': unclosed ["))?;
            match after {
                "" => (host, None),
                _ => (host, Some(after.strip_prefix(':').ok_or_else(|| format!("'{item}': junk after ]"))?)),
            }
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
        let host = parse_named(&host.to_ascii_lowercase()).map_err(|why| format!("'{item}': {why}"))?;
        patterns.push(HostPattern { host, port });
    }
    Ok(patterns)
}

/// An allowlist that names nothing and lists no address: what a broken
/// `allowed-hosts` stands for, so that it fails closed.
pub fn nothing_allowed() -> Vec<HostPattern> {
    vec![HostPattern { host: Named::Name(String::new()), port: None }]
}

fn parse_named(host: &str) -> Result<Named, String> {
    if host.contains('/') || host.parse::<IpAddr>().is_ok() {
        return Cidr::parse(host).map(Named::Addresses);
    }
    if host.len() > MAX_HOST_NAME_BYTES {
        return Err(format!("a host name is at most {MAX_HOST_NAME_BYTES} characters"));
    }
    let (suffix, name) = match host.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, host),
    };
    if name.contains('*') {
        return Err("a wildcard is only a leading `*.` of a host name (for addresses, give a CIDR block)".into());
    }
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')) {
        return Err("bad host pattern".into());
    }
    if looks_like_ipv4(name) {
        let why = match suffix {
            true => "an IP-looking wildcard would also match names such as 10.0.0.evil.com: give a CIDR block",
            false => "not an IPv4 address in canonical form (four decimal numbers 0 to 255, no leading zeros)",
        };
        return Err(why.into());
    }
    Ok(if suffix { Named::Suffix(format!(".{name}")) } else { Named::Name(name.to_string()) })
}

impl HostPattern {
    fn port_matches(&self, port: u16) -> bool {
        self.port.is_none_or(|own| own == port)
    }

    fn holds(&self, address: IpAddr, port: u16) -> bool {
        matches!(&self.host, Named::Addresses(block) if block.contains(address)) && self.port_matches(port)
    }
}

/// True when `patterns` name `uri`'s host on its port: the host name (or a
/// `*.` wildcard over it), or, for a host that is an IP address, that
/// address or a block that holds it. Such a host is the operator's choice:
/// no address rule applies to it, and the module's credentials may go to it.
pub fn names(patterns: &[HostPattern], uri: &ServerUri) -> bool {
    let host = uri.host.to_ascii_lowercase();
    let literal = host.parse::<IpAddr>().ok();
    patterns.iter().any(|pattern| {
        let named = match (&pattern.host, literal) {
            (Named::Addresses(block), Some(address)) => block.contains(address),
            (Named::Name(name), None) => *name == host,
            (Named::Suffix(suffix), None) => host.ends_with(suffix.as_str()),
            _ => false,
        };
        named && pattern.port_matches(uri.port)
    })
}

/// True when the allowlist is empty (no restriction) or names `uri`.
pub fn allows(patterns: &[HostPattern], uri: &ServerUri) -> bool {
    patterns.is_empty() || names(patterns, uri)
}

/// Whether `uri` may be reached, as far as its text tells, before any
/// connection: a host `allowed-hosts` cannot admit, and an address a SIP
/// header may not reach, are refused. A host name passes here and is
/// checked by its addresses at every connect ([`check_address`]).
pub fn check_uri(patterns: &[HostPattern], uri: &ServerUri) -> Result<(), String> {
    if names(patterns, uri) {
        return Ok(());
    }
    if let Ok(address) = uri.host.parse::<IpAddr>() {
        return check_address(patterns, uri, address);
    }
    if !patterns.is_empty() && !patterns.iter().any(|pattern| matches!(pattern.host, Named::Addresses(_))) {
        return Err(format!("{}:{} is not in allowed-hosts", uri.host, uri.port));
    }
    Ok(())
}

/// Whether the module may connect to `address`, one of those `uri`'s host
/// resolved to (or the host itself, where it is an address). When
/// `allowed-hosts` is set, the host or the address must be on it; a URI
/// from a SIP header may not reach a special address ([`classify`]) that
/// `allowed-hosts` does not name. The error says which rule refused it.
pub fn check_address(patterns: &[HostPattern], uri: &ServerUri, address: IpAddr) -> Result<(), String> {
    if names(patterns, uri) || patterns.iter().any(|pattern| pattern.holds(address, uri.port)) {
        return Ok(());
    }
    let literal = uri.host.parse::<IpAddr>().is_ok();
    if !patterns.is_empty() {
        return Err(match literal {
            true => format!("{}:{} is not in allowed-hosts", uri.host, uri.port),
            false => format!("{}:{} resolves to {address}, which allowed-hosts does not name", uri.host, uri.port),
        });
    }
    match classify(address) {
        Some(special) if uri.origin == Origin::SipHeader => {
            let shown = redact_uri(&uri.text);
            let resolves = if literal { "names" } else { "resolves to" };
            Err(format!(
                "{shown} {resolves} {address}, {special}, and came from a SIP header; allowed-hosts does not name it"
            ))
        }
        _ => Ok(()),
    }
}

/// Whether the module's credentials (`http-headers`, the TLS client
/// certificate and key) may go to `uri`: it is the operator's, or
/// `allowed-hosts` names it ([`names`]). A name from a SIP header that
/// merely resolves into a listed block is reached without them.
pub fn may_send_credentials(patterns: &[HostPattern], uri: &ServerUri) -> bool {
    uri.origin == Origin::Operator || names(patterns, uri)
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

    fn from_sip(text: &str) -> ServerUri {
        ServerUri { origin: Origin::SipHeader, ..uri(text) }
    }

    #[test]
    fn allowlist_matches_hosts_ports_and_wildcards() {
        let patterns = parse_allowlist("bots.example.com, *.voice.example.com:443 127.0.0.1:* [::1]:8080").unwrap();
        assert!(allows(&patterns, &uri("wss://bots.example.com/x")));
        assert!(allows(&patterns, &uri("ws://BOTS.example.com:9000/")));
        assert!(allows(&patterns, &uri("wss://eu.voice.example.com/")));
        assert!(allows(&patterns, &uri("wss://a.b.voice.example.com/")));
        assert!(!allows(&patterns, &uri("wss://voice.example.com/")), "*. needs a label before the suffix");
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
    fn allowlist_takes_addresses_and_cidr_blocks() {
        let patterns = parse_allowlist("10.0.0.0/8, [fc00::/7]:443, 192.168.1.5:8080, ::1").unwrap();
        assert!(names(&patterns, &uri("ws://10.1.2.3/")));
        assert!(names(&patterns, &uri("wss://[fd00::1]/")));
        assert!(!names(&patterns, &uri("ws://[fd00::1]:80/")), "the block's port is 443");
        assert!(names(&patterns, &uri("ws://192.168.1.5:8080/")));
        assert!(!names(&patterns, &uri("ws://192.168.1.6:8080/")));
        assert!(names(&patterns, &uri("ws://[::1]:9/")));
        assert!(names(&patterns, &uri("ws://[::ffff:10.0.0.1]/")), "an IPv4-mapped address is its IPv4 one");
        assert!(!names(&patterns, &uri("ws://bot.internal/")), "a name is not named by a block");
        assert!(parse_allowlist("10.0.0.0/8:443").is_ok());
        assert!(parse_allowlist("10.0.0.0/33").is_err());
    }

    #[test]
    fn ip_looking_wildcards_and_odd_forms_are_refused_at_load() {
        for bad in ["10.0.0.*", "*.0.0.1", "10.*.0.1", "*", "bots*.example.com", "example.*", "*.*.example.com"] {
            let why = parse_allowlist(bad).unwrap_err();
            assert!(why.contains("wildcard") || why.contains("bad host"), "{bad}: {why}");
        }
        for odd in ["2130706433", "127.1", "0x7f.1", "0177.0.0.1", "127.0.0.1."] {
            let why = parse_allowlist(odd).unwrap_err();
            assert!(why.contains("canonical"), "{odd}: {why}");
        }
        assert!(parse_allowlist(&"a".repeat(254)).unwrap_err().contains("at most 253"));
        assert!(parse_allowlist(&"a".repeat(253)).is_ok());
    }

    #[test]
    fn a_sip_header_may_not_reach_special_addresses_unless_named() {
        let refusal = check_uri(&[], &from_sip("ws://127.0.0.1:8080/bot?token=x")).unwrap_err();
        assert_eq!(
            refusal,
            "ws://127.0.0.1:8080/bot?token=*** names 127.0.0.1, a loopback address, and came from a SIP header; \
             allowed-hosts does not name it"
        );
        let loopback = "127.0.0.1".parse().unwrap();
        let refusal = check_address(&[], &from_sip("ws://localhost/"), loopback).unwrap_err();
        assert!(refusal.starts_with("ws://localhost/ resolves to 127.0.0.1, a loopback address, and came from"));
        let metadata = check_uri(&[], &from_sip("ws://169.254.169.254/")).unwrap_err();
        assert!(metadata.contains("a cloud metadata address"), "{metadata}");
        let mapped = check_uri(&[], &from_sip("ws://[::ffff:10.0.0.1]/")).unwrap_err();
        assert!(mapped.contains("the IPv4-mapped form of a private address"), "{mapped}");
        assert_eq!(check_uri(&[], &from_sip("ws://localhost/")), Ok(()), "a name waits for its addresses");
        assert_eq!(check_uri(&[], &from_sip("ws://93.184.216.34/")), Ok(()), "a public address");
        assert_eq!(check_address(&[], &from_sip("ws://bots.example.com/"), "93.184.216.34".parse().unwrap()), Ok(()));
        // The operator's own URIs are not limited by the address rules.
        assert_eq!(check_uri(&[], &uri("ws://127.0.0.1/")), Ok(()));
        assert_eq!(check_address(&[], &uri("ws://localhost/"), loopback), Ok(()));
        // allowed-hosts names the host, the address or a block holding it.
        for (list, text) in [
            ("127.0.0.1", "ws://127.0.0.1:8080/"),
            ("127.0.0.0/8", "ws://127.0.0.1:8080/"),
            ("localhost", "ws://localhost:8080/"),
            ("127.0.0.0/8", "ws://localhost:8080/"),
            ("*.internal:8080", "ws://bot.internal:8080/"),
        ] {
            let patterns = parse_allowlist(list).unwrap();
            let sip = from_sip(text);
            assert_eq!(check_uri(&patterns, &sip), Ok(()), "{list}: {text}");
            assert_eq!(check_address(&patterns, &sip, loopback), Ok(()), "{list}: {text}");
        }
        let elsewhere = parse_allowlist("127.0.0.2").unwrap();
        let refusal = check_address(&elsewhere, &from_sip("ws://localhost/"), loopback).unwrap_err();
        assert_eq!(refusal, "localhost:80 resolves to 127.0.0.1, which allowed-hosts does not name");
    }

    #[test]
    fn a_set_allowlist_bars_everything_else_whoever_named_it() {
        let names_only = parse_allowlist("bots.example.com").unwrap();
        assert_eq!(
            check_uri(&names_only, &uri("ws://elsewhere/")).unwrap_err(),
            "elsewhere:80 is not in allowed-hosts"
        );
        assert_eq!(
            check_uri(&names_only, &uri("ws://127.0.0.1:9/")).unwrap_err(),
            "127.0.0.1:9 is not in allowed-hosts"
        );
        let with_block = parse_allowlist("bots.example.com 10.0.0.0/8").unwrap();
        assert_eq!(check_uri(&with_block, &uri("ws://bot.internal/")), Ok(()), "its addresses decide, at connect");
        assert_eq!(check_address(&with_block, &uri("ws://bot.internal/"), "10.1.1.1".parse().unwrap()), Ok(()));
        assert!(check_address(&with_block, &uri("ws://bot.internal/"), "8.8.8.8".parse().unwrap()).is_err());
        let nothing = nothing_allowed();
        assert!(check_uri(&nothing, &uri("ws://bots.example.com/")).is_err());
        assert!(check_uri(&nothing, &uri("ws://127.0.0.1/")).is_err());
        assert!(check_address(&nothing, &uri("ws://bots.example.com/"), "8.8.8.8".parse().unwrap()).is_err());
    }

    #[test]
    fn credentials_go_only_to_the_operators_servers_and_named_ones() {
        let patterns = parse_allowlist("bots.example.com 127.0.0.0/8").unwrap();
        assert!(may_send_credentials(&[], &uri("wss://anywhere.example.net/")), "the operator's own");
        assert!(!may_send_credentials(&[], &from_sip("wss://anywhere.example.net/")));
        assert!(may_send_credentials(&patterns, &from_sip("wss://bots.example.com/")));
        assert!(may_send_credentials(&patterns, &from_sip("ws://127.0.0.1:9/")));
        assert!(!may_send_credentials(&patterns, &from_sip("ws://localhost:9/")), "reached, but not named");
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
