//! What may be shown of a secret: URIs, headers and settings as the log,
//! the status and the call list show them.

pub(crate) fn is_secret_name(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    ["auth", "token", "key", "secret", "pass", "sig", "credential", "session", "cookie", "jwt", "bearer"]
        .iter()
        .any(|word| name.contains(word))
}

/// A header as it may be logged: secret-looking values are hidden.
pub fn redact_header(name: &str, value: &str) -> String {
    if is_secret_name(name) {
        format!("{name}: ***")
    } else {
        format!("{name}: {value}")
    }
}

/// A URI as it may be logged or listed: user information and every query
/// value are hidden (a query is where bearer tokens and signatures travel).
pub fn redact_uri(text: &str) -> String {
    let (scheme, rest) = match text.split_once("://") {
        Some((scheme, rest)) => (format!("{scheme}://"), rest),
        None => (String::new(), text),
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((_, host)) => format!("***@{host}"),
        None => authority.to_string(),
    };
    let tail = tail.split('#').next().unwrap_or_default();
    let tail = match tail.split_once('?') {
        None => tail.to_string(),
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((name, _)) => format!("{name}=***"),
                    None => "***".to_string(),
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
    };
    format!("{scheme}{authority}{tail}")
}

/// A configured URI as the status shows it: also its path hidden, where
/// some services put their keys (`/v1/<key>/stream`).
pub fn redact_uri_path(text: &str) -> String {
    let redacted = redact_uri(text);
    let Some((scheme, rest)) = redacted.split_once("://") else { return redacted };
    match rest.find(['/', '?']) {
        Some(at) if &rest[at..] != "/" => format!("{scheme}://{}/***", &rest[..at]),
        _ => redacted,
    }
}

/// The `http-headers` JSON as the status shows it: the names, every value hidden.
pub fn redact_headers_json(text: &str) -> String {
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(serde_json::Value::Object(map)) => {
            let names: serde_json::Map<String, serde_json::Value> =
                map.keys().map(|name| (name.clone(), serde_json::Value::String("***".into()))).collect();
            serde_json::Value::Object(names).to_string()
        }
        _ => "***".to_string(),
    }
}

/// Whether a setting's value is a secret as a whole (an API key, a token).
pub fn is_secret_setting(param: &str) -> bool {
    is_secret_name(param) && !param.ends_with("-file") && !param.ends_with("-sha256")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_in_uris_and_headers_are_hidden() {
        assert_eq!(
            redact_uri("wss://user:pw@h.example:443/v1/stream?model=x&token=abc#frag"),
            "wss://***@h.example:443/v1/stream?model=***&token=***"
        );
        assert_eq!(redact_uri("ws://127.0.0.1:9/plain"), "ws://127.0.0.1:9/plain");
        assert_eq!(redact_uri("ws://h/?flag"), "ws://h/?***");
        assert_eq!(redact_uri_path("wss://h.example/key-in-path/stream?sig=1"), "wss://h.example/***");
        assert_eq!(redact_uri_path("ws://h:80/"), "ws://h:80/");
        assert_eq!(redact_uri_path("ws://h:80"), "ws://h:80");
        assert_eq!(
            redact_headers_json(r#"{"Authorization":"Bearer s3cret","X-Trace":"1"}"#),
            r#"{"Authorization":"***","X-Trace":"***"}"#
        );
        assert_eq!(redact_headers_json("%7B%22a%22"), "***");
        assert!(is_secret_setting("openai-api-key") && !is_secret_setting("tls-key-file"));
    }
}
