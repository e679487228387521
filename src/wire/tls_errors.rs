//! TLS failures in words that say what to change: rustls' and webpki's
//! errors, and the server's alerts. Nothing here prints their type names.

use std::fmt;
use std::io;

use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::UnixTime;

use super::tls_trust::PinMismatch;
use crate::settings::options::TlsOptions;

/// What went wrong in a TLS handshake, in words that say what to change.
pub(super) fn describe_tls_failure(error: &io::Error, tls: &TlsOptions) -> String {
    match error.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
        Some(error) => describe_rustls_error(error, tls),
        None => match error.kind() {
            io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe => format!(
                "the server closed the connection during the TLS handshake ({error}): check that it serves wss:// \
                 (not ws://) on this port, and whether it wants a client certificate (wsbridge_tls_cert_file)"
            ),
            _ => format!("handshake: {error}"),
        },
    }
}

pub(super) fn describe_rustls_error(error: &rustls::Error, tls: &TlsOptions) -> String {
    use rustls::Error as E;
    match error {
        E::InvalidCertificate(error) => describe_certificate_error(error, tls),
        E::AlertReceived(alert) => describe_alert(*alert, tls),
        E::NoCertificatesPresented => "no certificate: the server sent none, and wss needs one".into(),
        E::InvalidMessage(_) | E::InappropriateMessage { .. } | E::InappropriateHandshakeMessage { .. } => format!(
            "not TLS: the server's answer is not a TLS handshake ({error}): check that it serves wss:// (not ws://) \
             on this port"
        ),
        E::PeerIncompatible(why) => format!(
            "incompatible TLS: the server and this module have nothing in common ({}): the server must offer \
             TLS 1.2 or 1.3 with a current cipher suite",
            words(why)
        ),
        E::PeerMisbehaved(why) => format!("the server broke the TLS protocol ({})", words(why)),
        E::DecryptError => "decryption failed: the server's TLS records do not decrypt (a broken server or \
                            something in the path altering traffic)"
            .into(),
        E::Other(other) => describe_other(other, tls),
        E::General(text) => text.clone(),
        other => format!("handshake: {}", words(other)),
    }
}

/// A rustls error met while reading our own certificates and keys.
pub(super) fn plain(error: &rustls::Error) -> String {
    use rustls::CertificateError as Cert;
    match error {
        rustls::Error::InvalidCertificate(Cert::Other(other)) => match other.0.downcast_ref::<webpki::Error>() {
            Some(error) => words(error),
            None => other.0.to_string(),
        },
        rustls::Error::InvalidCertificate(error) => words(error),
        rustls::Error::InconsistentKeys(_) => "the private key does not match the certificate".into(),
        other => other.to_string(),
    }
}

/// Where the server's certificate must lead, as the current settings say.
fn trusted_now(tls: &TlsOptions) -> String {
    match &tls.ca_file {
        None => "the system's CAs (wsbridge_tls_ca_file is unset)".into(),
        Some(path) => format!("the certificates in {}", path.display()),
    }
}

fn describe_certificate_error(error: &rustls::CertificateError, tls: &TlsOptions) -> String {
    use rustls::CertificateError as Cert;
    match error {
        Cert::UnknownIssuer => format!(
            "unknown issuer: the server's certificate is not signed by a trusted CA: set wsbridge_tls_ca_file to the \
             CA (or the certificate itself); trusted now: {}",
            trusted_now(tls)
        ),
        Cert::NotValidForName => {
            "hostname mismatch: the server's certificate is for another name: connect by a name in its \
             subjectAltName, or have it reissued for this one"
                .into()
        }
        Cert::NotValidForNameContext { expected, presented } => {
            let presented: Vec<String> = presented.iter().map(|name| presented_name(name)).collect();
            let presented =
                if presented.is_empty() { "no name in its subjectAltName".into() } else { presented.join(", ") };
            format!(
                "hostname mismatch: the server's certificate is for {presented}, not {expected}: connect by one of \
                 its names, or have it reissued with {expected} in its subjectAltName",
                expected = expected.to_str()
            )
        }
        Cert::Expired => "expired: the server's certificate has expired: renew it on the server (or correct this \
                          machine's clock)"
            .into(),
        Cert::ExpiredContext { time, not_after } => format!(
            "expired: the server's certificate expired on {}, and it is now {}: renew it on the server (or correct \
             this machine's clock)",
            format_time(*not_after),
            format_time(*time)
        ),
        Cert::NotValidYet => "not yet valid: the server's certificate is not valid yet: correct the clock of this \
                              machine or of the one that made the certificate"
            .into(),
        Cert::NotValidYetContext { time, not_before } => format!(
            "not yet valid: the server's certificate is valid from {}, and it is now {}: correct the clock of this \
             machine or of the one that made the certificate",
            format_time(*not_before),
            format_time(*time)
        ),
        Cert::Other(other) => describe_other(other, tls),
        other => describe_certificate_flaw(other),
    }
}

/// What is wrong with the server's certificate itself, trust and dates aside.
fn describe_certificate_flaw(error: &rustls::CertificateError) -> String {
    use rustls::CertificateError as Cert;
    match error {
        Cert::Revoked => {
            "revoked: the server's certificate has been revoked by its CA: the server needs a new one".into()
        }
        Cert::UnknownRevocationStatus | Cert::ExpiredRevocationList | Cert::ExpiredRevocationListContext { .. } => {
            format!(
                "revocation unknown: the revocation status of the server's certificate cannot be checked ({})",
                words(error)
            )
        }
        Cert::BadSignature => "bad signature: the server's certificate does not verify with the key of the CA it \
                               names: the server sends the wrong chain, or wsbridge_tls_ca_file holds the wrong CA"
            .into(),
        #[allow(deprecated)] // rustls may still raise it
        Cert::UnsupportedSignatureAlgorithm
        | Cert::UnsupportedSignatureAlgorithmContext { .. }
        | Cert::UnsupportedSignatureAlgorithmForPublicKeyContext { .. } => {
            "unsupported signature: the server's certificate is signed with an algorithm this module does not accept: \
             reissue it with RSA (SHA-256 or better), ECDSA P-256 or P-384, or Ed25519"
                .into()
        }
        Cert::BadEncoding => "bad encoding: the server's certificate is not valid DER: reissue it".into(),
        Cert::UnhandledCriticalExtension => {
            "unsupported critical extension: the server's certificate has a critical extension this module does not \
             understand: reissue it without"
                .into()
        }
        Cert::InvalidPurpose | Cert::InvalidPurposeContext { .. } => {
            "wrong purpose: the server's certificate is not for TLS servers (its extendedKeyUsage lacks serverAuth): \
             reissue it for server authentication"
                .into()
        }
        Cert::InvalidOcspResponse => "bad OCSP response: the server stapled an invalid OCSP response".into(),
        other => format!("certificate refused: {}", words(other)),
    }
}

/// An error rustls carries for another library: webpki's, or ours.
fn describe_other(other: &rustls::OtherError, tls: &TlsOptions) -> String {
    if let Some(mismatch) = other.0.downcast_ref::<PinMismatch>() {
        return mismatch.to_string();
    }
    match other.0.downcast_ref::<webpki::Error>() {
        Some(error) => describe_webpki_error(error, tls),
        None => format!("certificate refused: {}", other.0),
    }
}

/// The webpki refusals rustls has no name for.
fn describe_webpki_error(error: &webpki::Error, tls: &TlsOptions) -> String {
    use webpki::Error as W;
    match error {
        W::CaUsedAsEndEntity => format!(
            "unknown issuer: the server's certificate is a CA certificate (CA:TRUE, as `openssl req -x509` makes them) \
             and is not itself in wsbridge_tls_ca_file: set wsbridge_tls_ca_file to the certificate itself (or pin it \
             with wsbridge_tls_pin_sha256); trusted now: {}",
            trusted_now(tls)
        ),
        W::EndEntityUsedAsCa => "bad chain: a certificate the server sends as a CA is not marked CA:TRUE: fix the \
                                 server's chain, or set wsbridge_tls_ca_file to the server's certificate itself"
            .into(),
        W::CertDistrusted => "distrusted CA: the server's certificate leads to a CA that is no longer trusted: the \
                              server needs a certificate from another CA"
            .into(),
        W::PathLenConstraintViolated | W::NameConstraintViolation => format!(
            "bad chain: the server's chain breaks a constraint of its CA ({}): the server needs a certificate its CA \
             may issue",
            words(error)
        ),
        W::MaximumPathDepthExceeded
        | W::MaximumSignatureChecksExceeded
        | W::MaximumPathBuildCallsExceeded
        | W::MaximumNameConstraintComparisonsExceeded => format!(
            "chain too complex: the server's chain is too long or too tangled to verify ({}): send a shorter chain",
            words(error)
        ),
        W::UnsupportedCriticalExtension => {
            "unsupported critical extension: the server's certificate has a critical extension this module does not \
             understand: reissue it without"
                .into()
        }
        W::UnsupportedCertVersion => "unsupported certificate: the server's certificate is not X.509 version 3: \
                                      reissue it"
            .into(),
        W::UnsupportedNameType => "unsupported name: the server's name is neither a DNS name nor an IP address".into(),
        _ => format!("certificate refused: {} in the server's certificate or chain", words(error)),
    }
}

/// A webpki subjectAltName entry as people write it: `DnsName("a.b")` is
/// `a.b`, `IpAddress(10.0.0.1)` is `IP 10.0.0.1`.
fn presented_name(name: &str) -> String {
    if let Some(dns) = name.strip_prefix("DnsName(\"").and_then(|rest| rest.strip_suffix("\")")) {
        return dns.to_string();
    }
    if let Some(ip) = name.strip_prefix("IpAddress(").and_then(|rest| rest.strip_suffix(')')) {
        return format!("IP {ip}");
    }
    name.to_string()
}

/// A type's Debug name as words: `CaUsedAsEndEntity` is "ca used as end
/// entity", `UnknownCA` "unknown CA"; what follows the name is dropped.
fn words(value: &impl fmt::Debug) -> String {
    let text = format!("{value:?}");
    let name: Vec<char> = text.chars().take_while(char::is_ascii_alphanumeric).collect();
    let mut words: Vec<String> = Vec::new();
    for (at, &c) in name.iter().enumerate() {
        let before = at.checked_sub(1).map(|at| name[at]);
        let after = name.get(at + 1);
        let starts_word = c.is_ascii_uppercase()
            && before.is_some_and(|before| {
                !before.is_ascii_uppercase() || after.is_some_and(|after| after.is_ascii_lowercase())
            });
        match words.last_mut() {
            Some(word) if !starts_word => word.push(c),
            _ => words.push(c.to_string()),
        }
    }
    let words: Vec<String> = words
        .into_iter()
        .map(|word| {
            if word.len() > 1 && !word.contains(|c: char| c.is_ascii_lowercase()) {
                word
            } else {
                word.to_ascii_lowercase()
            }
        })
        .collect();
    words.join(" ")
}

/// `2002-01-01 00:00:00 UTC`.
fn format_time(time: UnixTime) -> String {
    let seconds = std::time::Duration::from_secs(time.as_secs());
    match x509_cert::der::DateTime::from_unix_duration(seconds) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
            t.year(),
            t.month(),
            t.day(),
            t.hour(),
            t.minutes(),
            t.seconds()
        ),
        // After the year 9999.
        Err(_) => format!("{} s after 1970-01-01 00:00:00 UTC", time.as_secs()),
    }
}

/// What a TLS alert from the server means for us.
fn describe_alert(alert: rustls::AlertDescription, tls: &TlsOptions) -> String {
    use rustls::AlertDescription as A;
    let no_client_certificate = tls.cert_file.is_none();
    let refuses_our_certificate = !no_client_certificate
        && matches!(
            alert,
            A::BadCertificate
                | A::UnsupportedCertificate
                | A::CertificateRevoked
                | A::CertificateExpired
                | A::CertificateUnknown
                | A::UnknownCA
                | A::AccessDenied
                | A::HandshakeFailure
        );
    match alert {
        A::CertificateRequired => "the server wants a client certificate: set wsbridge_tls_cert_file and \
                                   wsbridge_tls_key_file"
            .into(),
        A::HandshakeFailure if no_client_certificate => "the server refused the handshake (alert handshake \
                                                         failure): it may want a client certificate \
                                                         (wsbridge_tls_cert_file and wsbridge_tls_key_file), or \
                                                         share no TLS version or cipher suite with this module"
            .into(),
        _ if refuses_our_certificate => format!(
            "the server refused our client certificate (alert {}): wsbridge_tls_cert_file must be valid and signed \
             by a CA the server trusts",
            words(&alert)
        ),
        A::ProtocolVersion | A::InsufficientSecurity => format!(
            "the server refused the handshake (alert {}): it offers no TLS version or cipher suite this module \
             accepts (TLS 1.2 or 1.3)",
            words(&alert)
        ),
        A::UnrecognisedName => "the server does not serve the name asked for (SNI): check the host in the URI".into(),
        A::Unknown(code) => format!("the server ended the handshake with the alert numbered {code}"),
        other => format!("the server ended the handshake with the alert '{}'", words(&other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn described(error: rustls::Error) -> String {
        describe_tls_failure(&io::Error::new(io::ErrorKind::InvalidData, error), &TlsOptions::default())
    }

    fn webpki_refusal(error: webpki::Error) -> rustls::Error {
        rustls::CertificateError::Other(rustls::OtherError(Arc::new(error))).into()
    }

    /// No refusal prints as a type name or as `Other(OtherError(...))`.
    #[test]
    fn every_refusal_reads_as_words() {
        use rustls::{AlertDescription as A, CertificateError as Cert};
        let certificate_errors = [
            Cert::UnknownIssuer,
            Cert::NotValidForName,
            Cert::Expired,
            Cert::NotValidYet,
            Cert::Revoked,
            Cert::UnknownRevocationStatus,
            Cert::BadSignature,
            Cert::BadEncoding,
            Cert::UnhandledCriticalExtension,
            Cert::InvalidPurpose,
            Cert::InvalidOcspResponse,
            Cert::ApplicationVerificationFailure,
        ];
        let webpki_errors = [
            webpki::Error::CaUsedAsEndEntity,
            webpki::Error::EndEntityUsedAsCa,
            webpki::Error::CertDistrusted,
            webpki::Error::PathLenConstraintViolated,
            webpki::Error::NameConstraintViolation,
            webpki::Error::MaximumPathDepthExceeded,
            webpki::Error::UnsupportedCriticalExtension,
            webpki::Error::UnsupportedCertVersion,
            webpki::Error::ExtensionValueInvalid,
            webpki::Error::MalformedExtensions,
            webpki::Error::InvalidSerialNumber,
            webpki::Error::EmptyEkuExtension,
        ];
        let alerts = [A::CertificateRequired, A::HandshakeFailure, A::UnknownCA, A::ProtocolVersion, A::DecodeError];
        let mut cases: Vec<(String, rustls::Error)> = Vec::new();
        cases.extend(certificate_errors.into_iter().map(|error| (format!("{error:?}"), error.into())));
        cases.extend(webpki_errors.into_iter().map(|error| (format!("{error:?}"), webpki_refusal(error))));
        cases.extend(alerts.into_iter().map(|alert| (format!("{alert:?}"), rustls::Error::AlertReceived(alert))));
        let ours = rustls::OtherError(Arc::new(io::Error::other("a reason of our own")));
        cases.push(("OtherError".into(), rustls::CertificateError::Other(ours).into()));
        for (name, error) in cases {
            let text = described(error);
            assert!(text.len() > 20, "{name}: {text}");
            for unwanted in [name.as_str(), "OtherError", "Other("] {
                assert!(!text.contains(unwanted), "{name}: {text}");
            }
        }
        assert!(described(webpki_refusal(webpki::Error::CertDistrusted)).starts_with("distrusted CA"));
        assert!(described(Cert::UnknownIssuer.into()).contains(
            "the server's certificate is not signed by a trusted CA: set wsbridge_tls_ca_file to the CA (or the \
             certificate itself)"
        ));
        let eof = io::Error::new(io::ErrorKind::UnexpectedEof, "tls handshake eof");
        assert!(describe_tls_failure(&eof, &TlsOptions::default()).contains("serves wss://"));
    }

    #[test]
    fn names_and_times_read_as_people_write_them() {
        assert_eq!(words(&webpki::Error::CaUsedAsEndEntity), "ca used as end entity");
        assert_eq!(words(&rustls::AlertDescription::UnknownCA), "unknown CA");
        let alert = describe_alert(rustls::AlertDescription::Unknown(42), &TlsOptions::default());
        assert_eq!(alert, "the server ended the handshake with the alert numbered 42");
        let alert = describe_alert(rustls::AlertDescription::DecodeError, &TlsOptions::default());
        assert_eq!(alert, "the server ended the handshake with the alert 'decode error'");
        assert_eq!(presented_name("DnsName(\"a.example\")"), "a.example");
        assert_eq!(presented_name("IpAddress(127.0.0.1)"), "IP 127.0.0.1");
        let at = |seconds| UnixTime::since_unix_epoch(std::time::Duration::from_secs(seconds));
        assert_eq!(format_time(at(1_009_843_200)), "2002-01-01 00:00:00 UTC");
        assert_eq!(format_time(at(951_782_400 + 12 * 3600 + 34 * 60 + 56)), "2000-02-29 12:34:56 UTC");
        assert_eq!(format_time(at(2_561_500_800)), "2051-03-04 00:00:00 UTC");
        assert_eq!(format_time(at(0)), "1970-01-01 00:00:00 UTC");
        assert_eq!(format_time(at(253_402_300_799)), "9999-12-31 23:59:59 UTC");
        assert_eq!(format_time(at(253_402_300_800)), "253402300800 s after 1970-01-01 00:00:00 UTC");
    }
}
