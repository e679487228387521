//! The settings parser: URI, content type, headers JSON, percent-decoding,
//! upgrade headers, allowlists and redaction, on arbitrary text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mod_wsbridge::settings::security;
use mod_wsbridge::settings::{url_decode, ContentType, FirstMessageStyle, RawSettings, ServerUri};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut fields = text.split('\u{1}');
    let mut next = || fields.next().map(str::to_string);
    let raw = RawSettings {
        uri: next(),
        content_type: next(),
        headers: next(),
        destination: next(),
        default_uri: next(),
        ..RawSettings::default()
    };
    if let Ok(settings) = raw.resolve(1024) {
        let first = settings.first_message(FirstMessageStyle::Wsbridge);
        assert!(first.starts_with(" {") && first.ends_with("\"}"));
        let _ = settings.first_message(FirstMessageStyle::Vonage);
        assert!(settings.content_type.bytes_per_frame() > 0);
    }
    let _ = url_decode(&text);
    let _ = ContentType::parse(&text);
    if let Ok(uri) = ServerUri::parse(&text) {
        let _ = uri.host_header();
        if let Ok(patterns) = security::parse_allowlist(&text) {
            let _ = security::allows(&patterns, &uri);
        }
    }
    if let Ok(headers) = security::parse_http_headers(&text) {
        for (name, value) in headers {
            assert!(!name.contains(['\r', '\n']) && !value.contains(['\r', '\n']), "header injection");
        }
    }
    let _ = security::redact_uri(&text);
});
