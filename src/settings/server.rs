//! The `P-wsbridge-websocket-*` values: which server a call reaches, in what
//! audio format, and what its first message says. Where they are looked up
//! (dial string, A-leg, inbound SIP headers), how they are decoded and
//! validated, and the first message they produce.

use std::fmt;

use serde_json::{Map, Value};

use crate::settings::address::{host_problem, split_authority};
use crate::settings::cause::HangupCause;

pub const URI_VARIABLE: &str = "P-wsbridge-websocket-uri";
pub const CONTENT_TYPE_VARIABLE: &str = "P-wsbridge-websocket-content-type";
pub const HEADERS_VARIABLE: &str = "P-wsbridge-websocket-headers";
/// Further servers, separated by spaces, tried in order after the URI.
pub const FALLBACK_URIS_VARIABLE: &str = "P-wsbridge-websocket-fallback-uris";
/// The protocol, as `wsbridge_protocol` names it, from a SIP header.
pub const PROTOCOL_VARIABLE: &str = "P-wsbridge-websocket-protocol";
/// mod_sofia stores an inbound INVITE header `P-Foo` as the variable `sip_h_P-Foo`.
pub const SIP_HEADER_PREFIX: &str = "sip_h_";
pub const FRAME_MS: u32 = 20;
pub const SUPPORTED_RATES: [u32; 5] = [8000, 16000, 24000, 32000, 48000];

/// How samples are carried on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// Signed 16-bit little-endian PCM.
    L16,
    /// G.711 μ-law, one byte a sample.
    Pcmu,
    /// G.711 A-law, one byte a sample.
    Pcma,
}

impl Encoding {
    pub fn bytes_per_sample(self) -> usize {
        match self {
            Encoding::L16 => 2,
            Encoding::Pcmu | Encoding::Pcma => 1,
        }
    }

    /// FreeSWITCH's codec for it.
    pub fn codec_name(self) -> &'static str {
        match self {
            Encoding::L16 => "L16",
            Encoding::Pcmu => "PCMU",
            Encoding::Pcma => "PCMA",
        }
    }

    /// One byte of silence on the wire (G.711's code for zero).
    pub fn silence_byte(self) -> u8 {
        match self {
            Encoding::L16 => 0,
            Encoding::Pcmu => 0xFF,
            Encoding::Pcma => 0xD5,
        }
    }
}

/// Mono audio on the wire: L16 at one of the supported rates, or G.711 at 8 kHz.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContentType {
    pub encoding: Encoding,
    pub rate: u32,
}

impl Default for ContentType {
    fn default() -> Self {
        ContentType::l16(16000)
    }
}

impl ContentType {
    pub const fn l16(rate: u32) -> Self {
        ContentType { encoding: Encoding::L16, rate }
    }

    pub const PCMU: ContentType = ContentType { encoding: Encoding::Pcmu, rate: 8000 };
    pub const PCMA: ContentType = ContentType { encoding: Encoding::Pcma, rate: 8000 };

    /// Accepts `audio/l16;rate=N` for the supported rates, and G.711 as
    /// `audio/pcmu;rate=8000`, `audio/x-mulaw`, `audio/pcma;rate=8000` or
    /// `audio/x-alaw` (the rate may be left out), ignoring case and white space.
    pub fn parse(text: &str) -> Option<ContentType> {
        let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect::<String>().to_ascii_lowercase();
        let (media_type, rate) = match compact.split_once(';') {
            Some((media_type, parameter)) => (media_type, Some(parameter.strip_prefix("rate=")?.parse::<u32>().ok()?)),
            None => (compact.as_str(), None),
        };
        match media_type {
            "audio/l16" => rate.filter(|rate| SUPPORTED_RATES.contains(rate)).map(ContentType::l16),
            "audio/pcmu" | "audio/x-mulaw" | "audio/mulaw" if matches!(rate, None | Some(8000)) => Some(Self::PCMU),
            "audio/pcma" | "audio/x-alaw" | "audio/alaw" if matches!(rate, None | Some(8000)) => Some(Self::PCMA),
            _ => None,
        }
    }

    pub fn samples_per_frame(&self) -> usize {
        (self.rate * FRAME_MS / 1000) as usize
    }

    /// Bytes of one 20 ms frame on the wire.
    pub fn bytes_per_frame(&self) -> usize {
        self.samples_per_frame() * self.encoding.bytes_per_sample()
    }

    /// The same rate as L16: what the playout and the leg's read side carry.
    pub fn linear(&self) -> ContentType {
        ContentType::l16(self.rate)
    }
}

impl fmt::Display for ContentType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.encoding {
            Encoding::L16 => write!(f, "audio/l16;rate={}", self.rate),
            Encoding::Pcmu => write!(f, "audio/pcmu;rate={}", self.rate),
            Encoding::Pcma => write!(f, "audio/pcma;rate={}", self.rate),
        }
    }
}

/// What a protocol carries and how its connection is kept, as the settings
/// check them. Each protocol's file under `wire/protocol/` holds its rules.
#[derive(Debug)]
pub struct ProtocolRules {
    /// As `wsbridge_protocol` and `P-wsbridge-websocket-protocol` name it.
    pub name: &'static str,
    /// Carried over plain TCP (`tcp://host:port`) rather than a WebSocket.
    pub over_tcp: bool,
    /// The connection is kept alive with pings, so a silent server counts as dead.
    pub pings: bool,
    /// The protocol has text messages (`send_text` and a fork's `stop` metadata can be sent).
    pub carries_text: bool,
    /// The wire format the protocol imposes on `asked` (the bool: the call's
    /// own variable asked for it), or why it cannot carry it.
    pub content_type: fn(ContentType, bool) -> Result<ContentType, String>,
    /// What a fork at this rate streams in this protocol, or why a fork cannot speak it.
    pub fork_content_type: fn(u32) -> Result<ContentType, String>,
}

/// The language the module and the server speak over the connection.
#[derive(Clone, Copy)]
pub struct Protocol(pub &'static ProtocolRules);

impl Protocol {
    pub fn name(self) -> &'static str {
        self.0.name
    }

    pub fn rules(self) -> &'static ProtocolRules {
        self.0
    }
}

impl PartialEq for Protocol {
    fn eq(&self, other: &Protocol) -> bool {
        self.0.name == other.0.name
    }
}

impl fmt::Debug for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.name)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Ws,
    Wss,
    /// Plain TCP, for the AudioSocket protocol.
    Tcp,
}

/// Who chose a server, which decides the rules on where it may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Origin {
    /// The dial string, the dialplan, the API or wsbridge.conf: the operator's own.
    #[default]
    Operator,
    /// An inbound INVITE's header (a `sip_h_` variable): the caller's choice,
    /// kept off the special address ranges unless `allowed-hosts` names it.
    SipHeader,
}

/// A validated server address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerUri {
    /// As configured, after decoding and white-space removal (for logs).
    pub text: String,
    pub scheme: Scheme,
    pub host: String,
    pub port: u16,
    /// Path and query, at least "/".
    pub resource: String,
    /// Who chose it; [`ServerUri::parse`] says the operator.
    pub origin: Origin,
}

impl ServerUri {
    /// ws and wss, plus http and https as their aliases. A host name over
    /// 253 characters, or an IPv4 address in any form but the dotted quad
    /// (`2130706433`, `127.1`, `0x7f.1`, `0177.0.0.1`), is refused with
    /// `INVALID_URL`, whoever gave it: resolvers read those forms as
    /// addresses the text does not show.
    pub fn parse(text: &str) -> Result<ServerUri, SettingsError> {
        let invalid = |why: &str| SettingsError::InvalidUri { uri: text.to_string(), why: why.to_string() };
        let (scheme_text, rest) = text.split_once("://").ok_or_else(|| invalid("no scheme"))?;
        let scheme = match scheme_text.to_ascii_lowercase().as_str() {
            "ws" | "http" => Scheme::Ws,
            "wss" | "https" => Scheme::Wss,
            "tcp" => Scheme::Tcp,
            _ => return Err(SettingsError::UnsupportedScheme { uri: text.to_string() }),
        };
        let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(authority_end);
        let resource = tail.split('#').next().unwrap_or_default();
        let resource = if resource.is_empty() {
            "/".to_string()
        } else if resource.starts_with('?') {
            format!("/{resource}")
        } else {
            resource.to_string()
        };
        if authority.contains('@') {
            return Err(invalid("user information is not supported"));
        }
        let (host, port_text, bracketed) = split_authority(authority).map_err(invalid)?;
        if let Some(why) = host_problem(host, bracketed) {
            return Err(invalid(&why));
        }
        let port = match port_text {
            None => match scheme {
                Scheme::Ws => 80,
                Scheme::Wss => 443,
                Scheme::Tcp => return Err(invalid("a tcp URI needs a port")),
            },
            Some(port) => port.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| invalid("bad port"))?,
        };
        if resource.chars().any(|c| c.is_control() || c.is_whitespace() || !c.is_ascii()) {
            return Err(invalid("bad characters in the path"));
        }
        let host = host.to_string();
        Ok(ServerUri { text: text.to_string(), scheme, host, port, resource, origin: Origin::Operator })
    }

    /// The Host header value: the port is left out where it is the scheme's default.
    pub fn host_header(&self) -> String {
        let host = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        let default_port = match self.scheme {
            Scheme::Ws | Scheme::Tcp => 80,
            Scheme::Wss => 443,
        };
        if self.port == default_port {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

/// Everything a call needs to reach its server.
#[derive(Debug, Clone, PartialEq)]
pub struct CallSettings {
    pub uri: ServerUri,
    /// Tried in order when the URI cannot be reached, at setup and on reconnect.
    pub fallbacks: Vec<ServerUri>,
    pub content_type: ContentType,
    /// The headers object, keys in the order given.
    pub headers: Map<String, Value>,
    pub protocol: Protocol,
    /// The URI is wsbridge.conf's `default-uri`: its path is not shown.
    pub uri_from_config: bool,
}

/// How the first message looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FirstMessageStyle {
    /// Byte-compatible with the original module.
    #[default]
    Wsbridge,
    /// `{"event":"websocket:connected","content-type":...,<headers>}`, as Vonage's successor sends.
    Vonage,
}

impl FirstMessageStyle {
    pub fn parse(text: &str) -> Option<FirstMessageStyle> {
        match text.trim().to_ascii_lowercase().as_str() {
            "wsbridge" | "original" => Some(FirstMessageStyle::Wsbridge),
            "vonage" => Some(FirstMessageStyle::Vonage),
            _ => None,
        }
    }
}

impl CallSettings {
    /// `server` (the URI or a fallback) as logs and lists show it: user
    /// information and query values hidden, and the path too where it is
    /// wsbridge.conf's (`default-uri`, `fallback-uris`).
    pub fn shown(&self, server: &ServerUri) -> String {
        let fallback = server != &self.uri;
        match self.uri_from_config || fallback {
            true => crate::settings::redact::redact_uri_path(&server.text),
            false => crate::settings::redact::redact_uri(&server.text),
        }
    }

    /// `Wsbridge`: a space, then compact JSON, the header keys in order and
    /// `content-type` last. `Vonage`: the event and content type first.
    pub fn first_message(&self, style: FirstMessageStyle) -> String {
        self.first_message_naming(style, &self.content_type.to_string())
    }

    /// The first message, naming `content_type` (a fork's may carry `;channels=2`).
    pub fn first_message_naming(&self, style: FirstMessageStyle, content_type: &str) -> String {
        let reserved = |key: &str| {
            key.eq_ignore_ascii_case("content-type") || (style == FirstMessageStyle::Vonage && key == "event")
        };
        let mut message = Map::with_capacity(self.headers.len() + 2);
        let content_type = Value::String(content_type.to_string());
        if style == FirstMessageStyle::Vonage {
            message.insert("event".to_string(), Value::String("websocket:connected".into()));
            message.insert("content-type".to_string(), content_type.clone());
        }
        for (key, value) in &self.headers {
            if !reserved(key) {
                message.insert(key.clone(), value.clone());
            }
        }
        match style {
            FirstMessageStyle::Wsbridge => {
                message.insert("content-type".to_string(), content_type);
                format!(" {}", Value::Object(message))
            }
            FirstMessageStyle::Vonage => Value::Object(message).to_string(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SettingsError {
    MissingUri,
    InvalidUri {
        uri: String,
        why: String,
    },
    UnsupportedScheme {
        uri: String,
    },
    BadEncoding {
        variable: &'static str,
    },
    HeadersTooLong {
        bytes: usize,
        limit: usize,
    },
    HeadersNotObject,
    HeadersInvalidJson {
        why: String,
    },
    UnsupportedContentType {
        content_type: String,
    },
    UnknownProtocol {
        protocol: String,
        /// The names the module knows, for the log line.
        known: String,
    },
    /// The protocol cannot carry the content type, or not over the URI's scheme.
    ProtocolMismatch {
        why: String,
    },
}

impl SettingsError {
    pub fn cause(&self) -> HangupCause {
        match self {
            SettingsError::MissingUri => HangupCause::DestinationOutOfOrder,
            SettingsError::InvalidUri { .. } | SettingsError::UnsupportedScheme { .. } => HangupCause::InvalidUrl,
            SettingsError::BadEncoding { variable } => match *variable {
                URI_VARIABLE | FALLBACK_URIS_VARIABLE => HangupCause::InvalidUrl,
                HEADERS_VARIABLE => HangupCause::InvalidIeContents,
                _ => HangupCause::ServiceNotImplemented,
            },
            SettingsError::HeadersTooLong { .. } => HangupCause::MandatoryIeLengthError,
            SettingsError::HeadersNotObject | SettingsError::HeadersInvalidJson { .. } => {
                HangupCause::InvalidIeContents
            }
            SettingsError::UnsupportedContentType { .. } => HangupCause::ServiceNotImplemented,
            SettingsError::UnknownProtocol { .. } | SettingsError::ProtocolMismatch { .. } => {
                HangupCause::ServiceNotImplemented
            }
        }
    }
}

impl fmt::Display for SettingsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SettingsError::MissingUri => {
                write!(f, "no WebSocket URI: set {URI_VARIABLE} or dial wsbridge/ws://host:port/path")
            }
            SettingsError::InvalidUri { uri, why } => {
                write!(f, "invalid WebSocket URI '{}': {why}", crate::settings::redact::redact_uri(uri))
            }
            SettingsError::UnsupportedScheme { uri } => {
                write!(f, "unsupported scheme in '{}': use ws, wss, http or https", crate::settings::redact::redact_uri(uri))
            }
            SettingsError::BadEncoding { variable } => write!(f, "{variable} is not valid URL encoding of UTF-8 text"),
            SettingsError::HeadersTooLong { bytes, limit } => {
                write!(f, "{HEADERS_VARIABLE} is {bytes} bytes after decoding; the limit is {limit}")
            }
            SettingsError::HeadersNotObject => write!(f, "{HEADERS_VARIABLE} must be a JSON object"),
            SettingsError::HeadersInvalidJson { why } => write!(f, "{HEADERS_VARIABLE} is not valid JSON: {why}"),
            SettingsError::UnsupportedContentType { content_type } => write!(
                f,
                "unsupported content type '{content_type}': use audio/l16;rate=N with N one of 8000, 16000, 24000, 32000, 48000, or audio/pcmu;rate=8000 or audio/pcma;rate=8000"
            ),
            SettingsError::UnknownProtocol { protocol, known } => {
                write!(f, "unknown protocol '{protocol}': use {known}")
            }
            SettingsError::ProtocolMismatch { why } => write!(f, "{why}"),
        }
    }
}

impl std::error::Error for SettingsError {}

/// Decodes `%XX` escapes; a stray `%` or a result that is not UTF-8 is an error.
/// `+` stays as it is, as in FreeSWITCH's own `switch_url_decode`.
pub fn url_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' {
            let escape = bytes.get(index + 1..index + 3)?;
            if !escape.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            index += 3;
        } else {
            index += 1;
        }
    }
    percent_encoding::percent_decode_str(text).decode_utf8().ok().map(|decoded| decoded.into_owned())
}

/// Where a call's variables come from.
pub trait VariableSource {
    fn variable(&self, name: &str) -> Option<String>;
}

impl<F: Fn(&str) -> Option<String>> VariableSource for F {
    fn variable(&self, name: &str) -> Option<String> {
        self(name)
    }
}

/// The value of setting `name`: the originate variables first (bare, then
/// `sip_h_`), then the A-leg's bare variable, then the A-leg's `sip_h_` one.
/// Empty values count as unset.
pub fn lookup(name: &str, originate: &dyn VariableSource, a_leg: Option<&dyn VariableSource>) -> Option<String> {
    lookup_with_origin(name, originate, a_leg).map(|(value, _)| value)
}

/// As [`lookup`]; the flag tells whether the value came from a SIP header (`sip_h_`).
pub fn lookup_with_origin(
    name: &str,
    originate: &dyn VariableSource,
    a_leg: Option<&dyn VariableSource>,
) -> Option<(String, bool)> {
    let sip_name = format!("{SIP_HEADER_PREFIX}{name}");
    let mut sources: Vec<&dyn VariableSource> = vec![originate];
    sources.extend(a_leg);
    sources
        .into_iter()
        .flat_map(|source| [(source.variable(name), false), (source.variable(&sip_name), true)])
        .filter_map(|(value, from_sip)| value.filter(|v| !v.is_empty()).map(|v| (v, from_sip)))
        .next()
}

/// Raw (still URL-encoded) values as found for one call.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawSettings {
    pub uri: Option<String>,
    pub content_type: Option<String>,
    pub headers: Option<String>,
    /// What followed `wsbridge/` in the dial string, if anything.
    pub destination: Option<String>,
    /// The URI came from an inbound INVITE's header.
    pub uri_from_sip_header: bool,
    /// Fallback servers, still URL-encoded or plain, separated by spaces.
    pub fallback_uris: Option<String>,
    /// The fallbacks came from an inbound INVITE's header.
    pub fallbacks_from_sip_header: bool,
    /// Used when neither a variable nor the destination names a server.
    pub default_uri: Option<String>,
    /// Used when no variable sets the content type.
    pub default_content_type: Option<String>,
    /// `P-wsbridge-websocket-protocol`, else `wsbridge_protocol` or the `protocol` param.
    pub protocol: Option<String>,
}

impl RawSettings {
    pub fn gather(
        originate: &dyn VariableSource,
        a_leg: Option<&dyn VariableSource>,
        destination: Option<&str>,
    ) -> Self {
        let uri = lookup_with_origin(URI_VARIABLE, originate, a_leg);
        let fallbacks = lookup_with_origin(FALLBACK_URIS_VARIABLE, originate, a_leg);
        RawSettings {
            fallbacks_from_sip_header: fallbacks.as_ref().is_some_and(|(_, from_sip)| *from_sip),
            fallback_uris: fallbacks.map(|(value, _)| value),
            uri_from_sip_header: uri.as_ref().is_some_and(|(_, from_sip)| *from_sip),
            uri: uri.map(|(value, _)| value),
            content_type: lookup(CONTENT_TYPE_VARIABLE, originate, a_leg),
            headers: lookup(HEADERS_VARIABLE, originate, a_leg),
            protocol: lookup(PROTOCOL_VARIABLE, originate, a_leg),
            destination: destination.map(str::trim).filter(|d| !d.is_empty()).map(str::to_string),
            ..RawSettings::default()
        }
    }

    /// Decodes copies of the values and validates them; the inputs are untouched.
    /// `max_headers_bytes` bounds the decoded headers JSON.
    pub fn resolve(&self, max_headers_bytes: usize, protocol: Protocol) -> Result<CallSettings, SettingsError> {
        let without_spaces = |text: &str| text.chars().filter(|c| !c.is_whitespace()).collect::<String>();

        let chosen = self.uri.as_ref().or(self.destination.as_ref()).or(self.default_uri.as_ref());
        let uri_text = match chosen {
            Some(uri) => url_decode(uri).ok_or(SettingsError::BadEncoding { variable: URI_VARIABLE })?,
            None => return Err(SettingsError::MissingUri),
        };
        let uri_text = without_spaces(&uri_text);
        if uri_text.is_empty() {
            return Err(SettingsError::MissingUri);
        }
        let mut uri = ServerUri::parse(&uri_text)?;
        // `uri_from_sip_header` says where `self.uri` came from; the destination and default are the operator's.
        if self.uri.is_some() && self.uri_from_sip_header {
            uri.origin = Origin::SipHeader;
        }

        let content_type = match self.content_type.as_ref().or(self.default_content_type.as_ref()) {
            None => ContentType::default(),
            Some(raw) => {
                let decoded = url_decode(raw).ok_or(SettingsError::BadEncoding { variable: CONTENT_TYPE_VARIABLE })?;
                ContentType::parse(&decoded)
                    .ok_or(SettingsError::UnsupportedContentType { content_type: without_spaces(&decoded) })?
            }
        };

        let headers = match &self.headers {
            None => Map::new(),
            Some(raw) => parse_headers(raw, max_headers_bytes)?,
        };

        let fallbacks = match &self.fallback_uris {
            None => Vec::new(),
            Some(raw) => parse_uri_list(raw)?,
        };
        let fallback_origin = if self.fallbacks_from_sip_header { Origin::SipHeader } else { Origin::Operator };
        let fallbacks: Vec<ServerUri> =
            fallbacks.into_iter().map(|fallback| ServerUri { origin: fallback_origin, ..fallback }).collect();

        let content_type = (protocol.rules().content_type)(content_type, self.content_type.is_some())
            .map_err(|why| SettingsError::ProtocolMismatch { why })?;
        for server in std::iter::once(&uri).chain(&fallbacks) {
            let over_tcp = server.scheme == Scheme::Tcp;
            if over_tcp != protocol.rules().over_tcp {
                let why = match over_tcp {
                    true => format!("{}: tcp URIs are not for protocol {}", server.text, protocol.name()),
                    false => format!("{}: protocol {} needs a tcp://host:port URI", server.text, protocol.name()),
                };
                return Err(SettingsError::ProtocolMismatch { why });
            }
        }
        let uri_from_config = self.uri.is_none() && self.destination.is_none();
        Ok(CallSettings { uri, fallbacks, content_type, headers, protocol, uri_from_config })
    }
}

/// Server URIs separated by white space, given plain or URL-encoded.
pub fn parse_uri_list(raw: &str) -> Result<Vec<ServerUri>, SettingsError> {
    let decoded = url_decode(raw).ok_or(SettingsError::BadEncoding { variable: FALLBACK_URIS_VARIABLE })?;
    decoded.split_whitespace().map(ServerUri::parse).collect()
}

fn parse_headers(raw: &str, limit: usize) -> Result<Map<String, Value>, SettingsError> {
    let decoded = url_decode(raw).ok_or(SettingsError::BadEncoding { variable: HEADERS_VARIABLE })?;
    if decoded.len() > limit {
        return Err(SettingsError::HeadersTooLong { bytes: decoded.len(), limit });
    }
    match serde_json::from_str::<Value>(&decoded) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(SettingsError::HeadersNotObject),
        Err(error) => Err(SettingsError::HeadersInvalidJson { why: error.to_string() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const MAX_HEADERS_BYTES: usize = crate::settings::MAX_HEADERS_BYTES.integer_default() as usize;

    /// Any content type, over a WebSocket: the protocols' own rules are tested with them.
    const PLAIN: ProtocolRules = ProtocolRules {
        name: "plain",
        over_tcp: false,
        pings: true,
        carries_text: true,
        content_type: |asked, _| Ok(asked),
        fork_content_type: |rate| Ok(ContentType::l16(rate)),
    };

    impl RawSettings {
        fn resolve_default(&self) -> Result<CallSettings, SettingsError> {
            self.resolve(MAX_HEADERS_BYTES, Protocol(&PLAIN))
        }
    }

    fn source(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |name: &str| map.get(name).cloned()
    }

    fn raw(uri: Option<&str>, content_type: Option<&str>, headers: Option<&str>) -> RawSettings {
        RawSettings {
            uri: uri.map(Into::into),
            content_type: content_type.map(Into::into),
            headers: headers.map(Into::into),
            ..RawSettings::default()
        }
    }

    #[test]
    fn content_types_are_matched_loosely_and_only_supported_rates_pass() {
        assert_eq!(ContentType::parse("audio/l16;rate=16000"), Some(ContentType::l16(16000)));
        assert_eq!(ContentType::parse(" AUDIO/L16; Rate = 8000 "), Some(ContentType::l16(8000)));
        for rate in SUPPORTED_RATES {
            assert_eq!(ContentType::parse(&format!("audio/L16;rate={rate}")).unwrap().rate, rate);
        }
        for bad in [
            "audio/l16;rate=11025",
            "audio/pcmu;rate=16000",
            "audio/l16",
            "audio/l16;rate=",
            "audio/l16;rate=16000;x=1",
            "",
        ] {
            assert_eq!(ContentType::parse(bad), None, "{bad}");
        }
        for (text, expected) in [
            ("audio/pcmu;rate=8000", ContentType::PCMU),
            ("audio/x-mulaw", ContentType::PCMU),
            ("AUDIO/PCMU", ContentType::PCMU),
            ("audio/pcma;rate=8000", ContentType::PCMA),
            ("audio/x-alaw;rate=8000", ContentType::PCMA),
        ] {
            assert_eq!(ContentType::parse(text), Some(expected), "{text}");
        }
        assert_eq!(ContentType::PCMU.to_string(), "audio/pcmu;rate=8000");
        assert_eq!((ContentType::PCMA.bytes_per_frame(), ContentType::PCMA.linear().bytes_per_frame()), (160, 320));
        assert_eq!(ContentType::l16(16000).bytes_per_frame(), 640);
        assert_eq!(ContentType::l16(8000).bytes_per_frame(), 320);
        assert_eq!(ContentType::l16(48000).samples_per_frame(), 960);
    }

    #[test]
    fn uris_are_parsed_with_default_ports_and_paths() {
        let uri = ServerUri::parse("ws://127.0.0.1:8080/path?x=1").unwrap();
        assert_eq!(
            (uri.scheme, uri.host.as_str(), uri.port, uri.resource.as_str()),
            (Scheme::Ws, "127.0.0.1", 8080, "/path?x=1")
        );
        let uri = ServerUri::parse("HTTPS://example.com").unwrap();
        assert_eq!((uri.scheme, uri.port, uri.resource.as_str()), (Scheme::Wss, 443, "/"));
        assert_eq!(uri.host_header(), "example.com");
        let uri = ServerUri::parse("ws://[::1]:9000?q").unwrap();
        assert_eq!((uri.host.as_str(), uri.port, uri.resource.as_str()), ("::1", 9000, "/?q"));
        assert_eq!(uri.host_header(), "[::1]:9000");
        assert_eq!(ServerUri::parse("http://h/").unwrap().scheme, Scheme::Ws);
    }

    #[test]
    fn bad_uris_are_refused_with_invalid_url() {
        for bad in [
            "ftp://h/",
            "sip:user@host",
            "ws://",
            "ws://h:0/",
            "ws://h:99999/",
            "ws://u@h/",
            "ws://[::1/",
            "ws://h/a b",
            "h:80",
        ] {
            let error = ServerUri::parse(bad).unwrap_err();
            assert_eq!(error.cause(), HangupCause::InvalidUrl, "{bad}: {error}");
        }
    }

    #[test]
    fn odd_ipv4_forms_and_long_names_are_refused_whoever_gives_them() {
        for odd in
            ["2130706433", "127.1", "0x7f.1", "0x7f000001", "0177.0.0.1", "127.0.0.01", "127.0.0.1.", "1.2.3.256"]
        {
            for text in [format!("ws://{odd}/"), format!("wss://{odd}:8443/x"), format!("tcp://{odd}:9092")] {
                let error = ServerUri::parse(&text).unwrap_err();
                assert_eq!(error.cause(), HangupCause::InvalidUrl, "{text}");
                assert!(error.to_string().contains("not an IPv4 address in canonical form"), "{text}: {error}");
            }
        }
        for fine in ["ws://127.0.0.1/", "ws://10.0.0.evil.com/", "ws://[::ffff:127.0.0.1]/", "ws://a1b2/"] {
            assert!(ServerUri::parse(fine).is_ok(), "{fine}");
        }
        let long = format!("ws://{}.com/", "a".repeat(250));
        assert!(ServerUri::parse(&long).unwrap_err().to_string().contains("over 253 characters"));
        assert!(ServerUri::parse(&format!("ws://{}.com/", "a".repeat(249))).is_ok(), "253 characters");
    }

    #[test]
    fn a_uri_from_a_sip_header_is_marked_so_and_the_operators_are_not() {
        let originate = source(&[]);
        let a_leg = source(&[
            ("sip_h_P-wsbridge-websocket-uri", "ws://sip/"),
            ("sip_h_P-wsbridge-websocket-fallback-uris", "ws://b/ ws://c/"),
        ]);
        let settings = RawSettings::gather(&originate, Some(&a_leg), None).resolve_default().unwrap();
        assert_eq!(settings.uri.origin, Origin::SipHeader);
        assert!(settings.fallbacks.iter().all(|fallback| fallback.origin == Origin::SipHeader));
        let a_leg = source(&[("P-wsbridge-websocket-uri", "ws://dialplan/"), ("wsbridge_x", "")]);
        let settings = RawSettings::gather(&originate, Some(&a_leg), None).resolve_default().unwrap();
        assert_eq!(settings.uri.origin, Origin::Operator);
        let mut raw = RawSettings::gather(&originate, None, Some("ws://dialled/"));
        raw.fallback_uris = Some("ws://f/".into());
        let settings = raw.resolve_default().unwrap();
        assert_eq!((settings.uri.origin, settings.fallbacks[0].origin), (Origin::Operator, Origin::Operator));
        assert_eq!(ServerUri::parse("ws://h/").unwrap().origin, Origin::Operator);
    }

    #[test]
    fn url_decoding_is_strict_and_keeps_plus() {
        assert_eq!(url_decode("ws%3A%2F%2Fh%3A1%2Fp").as_deref(), Some("ws://h:1/p"));
        assert_eq!(url_decode("%7B%22n%22%3A%22%2B44%22%7D+x").as_deref(), Some("{\"n\":\"+44\"}+x"));
        assert_eq!(url_decode("100%"), None);
        assert_eq!(url_decode("%zz"), None);
        assert_eq!(url_decode("%ff%fe"), None, "not UTF-8");
    }

    #[test]
    fn lookup_order_is_originate_then_a_leg_bare_then_sip_header() {
        let originate = source(&[]);
        let a_leg =
            source(&[("sip_h_P-wsbridge-websocket-uri", "ws://sip/"), ("P-wsbridge-websocket-uri", "ws://bare/")]);
        assert_eq!(lookup(URI_VARIABLE, &originate, Some(&a_leg)).as_deref(), Some("ws://bare/"));

        let a_leg = source(&[("sip_h_P-wsbridge-websocket-uri", "ws://sip/")]);
        assert_eq!(lookup(URI_VARIABLE, &originate, Some(&a_leg)).as_deref(), Some("ws://sip/"));
        assert!(RawSettings::gather(&originate, Some(&a_leg), None).uri_from_sip_header);

        let originate = source(&[("P-wsbridge-websocket-uri", "ws://dial/")]);
        let a_leg = source(&[("P-wsbridge-websocket-uri", "ws://bare/")]);
        assert_eq!(lookup(URI_VARIABLE, &originate, Some(&a_leg)).as_deref(), Some("ws://dial/"));

        let originate = source(&[("P-wsbridge-websocket-uri", "")]);
        assert_eq!(lookup(URI_VARIABLE, &originate, Some(&a_leg)).as_deref(), Some("ws://bare/"), "empty is unset");
        assert_eq!(lookup(URI_VARIABLE, &originate, None), None);
    }

    #[test]
    fn destination_is_the_uri_when_no_variable_is_set() {
        let settings = RawSettings::gather(&source(&[]), None, Some("ws://127.0.0.1:9/x")).resolve_default().unwrap();
        assert_eq!(settings.uri.port, 9);
        let settings =
            RawSettings::gather(&source(&[("P-wsbridge-websocket-uri", "ws%3A%2F%2Fh%2Fv")]), None, Some("ws://d/"))
                .resolve_default()
                .unwrap();
        assert_eq!(settings.uri.host, "h", "the variable wins over the destination");
        assert_eq!(
            RawSettings::gather(&source(&[]), None, Some("")).resolve_default().unwrap_err(),
            SettingsError::MissingUri
        );
    }

    #[test]
    fn decoding_works_on_a_copy_and_gives_the_same_result_twice() {
        let raw = raw(Some("ws%3A%2F%2Fh%2F%2541"), None, Some("%7B%22a%22%3A%22%2541%22%7D"));
        let first = raw.resolve_default().unwrap();
        let second = raw.resolve_default().unwrap();
        assert_eq!(first, second);
        assert_eq!(first.uri.resource, "/%41");
        assert_eq!(first.headers["a"], "%41");
    }

    #[test]
    fn spaces_are_stripped_from_uri_and_content_type() {
        let settings = raw(Some(" ws://h:1/p "), Some("audio/l16; rate=8000"), None).resolve_default().unwrap();
        assert_eq!(settings.uri.text, "ws://h:1/p");
        assert_eq!(settings.content_type.rate, 8000);
    }

    #[test]
    fn each_bad_input_maps_to_its_cause() {
        let uri = Some("ws://h/");
        let cases: Vec<(RawSettings, HangupCause)> = vec![
            (raw(None, None, None), HangupCause::DestinationOutOfOrder),
            (raw(Some("gopher://h/"), None, None), HangupCause::InvalidUrl),
            (raw(Some("ws%3A%2F%2Fh%2"), None, None), HangupCause::InvalidUrl),
            (raw(uri, Some("audio%2"), None), HangupCause::ServiceNotImplemented),
            (raw(uri, None, Some("%7B%")), HangupCause::InvalidIeContents),
            (raw(uri, None, Some("[1,2]")), HangupCause::InvalidIeContents),
            (raw(uri, None, Some("%7B%22a%22")), HangupCause::InvalidIeContents),
            (raw(uri, None, Some(&format!("{{\"a\":\"{}\"}}", "x".repeat(1100)))), HangupCause::MandatoryIeLengthError),
            (raw(uri, Some("audio/opus"), None), HangupCause::ServiceNotImplemented),
        ];
        for (input, cause) in cases {
            let error = input.resolve_default().unwrap_err();
            assert_eq!(error.cause(), cause, "{input:?}: {error}");
            assert!(!error.to_string().is_empty());
        }
    }

    #[test]
    fn vonage_style_first_message() {
        let settings = raw(Some("ws://h/"), Some("audio/l16;rate=8000"), Some(r#"{"from":"4477","event":"x"}"#))
            .resolve_default()
            .unwrap();
        assert_eq!(
            settings.first_message(FirstMessageStyle::Vonage),
            r#"{"event":"websocket:connected","content-type":"audio/l16;rate=8000","from":"4477"}"#
        );
    }

    #[test]
    fn configured_defaults_come_last() {
        let mut input = raw(None, None, None);
        input.default_uri = Some("ws://default/".into());
        input.default_content_type = Some("audio/l16;rate=8000".into());
        let settings = input.resolve_default().unwrap();
        assert_eq!((settings.uri.host.as_str(), settings.content_type.rate), ("default", 8000));
        input.destination = Some("ws://dialled/".into());
        assert_eq!(input.resolve_default().unwrap().uri.host, "dialled");
        input.headers = Some("{\"a\":1}".into());
        assert_eq!(input.resolve(4, Protocol(&PLAIN)).unwrap_err().cause(), HangupCause::MandatoryIeLengthError);
    }

    #[test]
    fn headers_limit_applies_after_decoding() {
        // 1024 decoded bytes pass even though the encoded text is three times longer.
        let value = "é".repeat((MAX_HEADERS_BYTES - 8) / 2);
        let json = format!("{{\"a\":\"{value}\"}}");
        assert_eq!(json.len(), MAX_HEADERS_BYTES);
        let encoded = percent_encoding::utf8_percent_encode(&json, percent_encoding::NON_ALPHANUMERIC).to_string();
        assert!(raw(Some("ws://h/"), None, Some(&encoded)).resolve_default().is_ok());
        let too_long = format!("{{\"a\":\"{value}x\"}}");
        assert_eq!(
            raw(Some("ws://h/"), None, Some(&too_long)).resolve_default().unwrap_err(),
            SettingsError::HeadersTooLong { bytes: MAX_HEADERS_BYTES + 1, limit: MAX_HEADERS_BYTES }
        );
    }

    #[test]
    fn first_message_keeps_key_order_and_puts_content_type_last_once() {
        let headers = "%7B%22to%22%3A%22447700900123%22%2C%22content-type%22%3A%22x%22%2C%22from%22%3A1%2C%22n%22%3A%7B%22b%22%3Atrue%7D%7D";
        let settings = raw(Some("ws://h/"), Some("audio/L16;rate=8000"), Some(headers)).resolve_default().unwrap();
        assert_eq!(
            settings.first_message(FirstMessageStyle::Wsbridge),
            r#" {"to":"447700900123","from":1,"n":{"b":true},"content-type":"audio/l16;rate=8000"}"#
        );
        let settings = raw(Some("ws://h/"), None, None).resolve_default().unwrap();
        assert_eq!(settings.first_message(FirstMessageStyle::Wsbridge), r#" {"content-type":"audio/l16;rate=16000"}"#);
    }

    #[test]
    fn configured_uris_show_no_path_and_no_uri_shows_its_query() {
        let mut input = raw(Some("ws://h/bot?token=t"), None, None);
        input.fallback_uris = Some("ws://f/key-path".into());
        let dialled = input.resolve_default().unwrap();
        assert_eq!(dialled.shown(&dialled.uri), "ws://h/bot?token=***");
        assert_eq!(dialled.shown(&dialled.fallbacks[0]), "ws://f/***");
        let configured = RawSettings { default_uri: Some("wss://h/secret-path".into()), ..RawSettings::default() }
            .resolve_default()
            .unwrap();
        assert!(configured.uri_from_config);
        assert_eq!(configured.shown(&configured.uri), "wss://h/***");
    }
}
