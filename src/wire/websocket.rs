//! Opening the WebSocket: TCP, TLS for wss, and the HTTP upgrade.
//!
//! The upgrade request is written here rather than by tungstenite because
//! its client fails a server that does not echo the requested subprotocol,
//! and the original module's servers are not required to.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_tungstenite::tungstenite::handshake::client::generate_key;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;

use crate::settings::options::TlsOptions;
use crate::settings::{Scheme, ServerUri};

pub const SUBPROTOCOL: &str = "WSBRIDGE";
/// Bounds what the kernel holds for a slow server (about 2 s at 16 kHz), so
/// that backlog is dropped, and counted, in our uplink queue instead.
const SEND_BUFFER_BYTES: u32 = 64 * 1024;
const MAX_RESPONSE_HEAD_BYTES: usize = 16 * 1024;

pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

pub type WebSocket = WebSocketStream<Box<dyn Io>>;

#[derive(Debug)]
pub enum ConnectError {
    Tcp(io::Error),
    /// What failed: unknown issuer, hostname mismatch, expired, or the handshake.
    Tls(String),
    Handshake(String),
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectError::Tcp(error) => write!(f, "TCP connect failed: {error}"),
            ConnectError::Tls(why) => write!(f, "TLS failed: {why}"),
            ConnectError::Handshake(why) => write!(f, "WebSocket handshake failed: {why}"),
        }
    }
}

/// Accepts any server certificate, still checking handshake signatures.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        signature: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, signature, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        signature: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, signature, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn system_roots() -> Arc<rustls::RootCertStore> {
    static ROOTS: OnceLock<Arc<rustls::RootCertStore>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let mut roots = rustls::RootCertStore::empty();
            let native = rustls_native_certs::load_native_certs();
            for error in &native.errors {
                tracing::warn!("loading the system's CA certificates: {error}");
            }
            let (added, ignored) = roots.add_parsable_certificates(native.certs);
            tracing::debug!("TLS: {added} system CA certificates loaded, {ignored} ignored");
            Arc::new(roots)
        })
        .clone()
}

fn read_certificates(path: &PathBuf) -> Result<Vec<CertificateDer<'static>>, String> {
    use rustls::pki_types::pem::PemObject;
    let certificates = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|error| format!("cannot read certificates from {}: {error}", path.display()))?;
    if certificates.is_empty() {
        return Err(format!("no certificate in {}", path.display()));
    }
    Ok(certificates)
}

/// The usual checks (webpki against the roots), and one more trust rule:
/// a server certificate that is byte for byte one of those in
/// `tls-ca-file` is trusted as it is, as `curl --cacert` does. That is how
/// a self-signed certificate made by `openssl req -x509` (which marks it
/// CA:TRUE, so webpki refuses it as a server's own) is trusted by pointing
/// at its own file. Its dates and names are checked all the same, and the
/// handshake signatures always are.
///
/// With a pin, the pin alone says which certificate is trusted: the one
/// with that SHA-256 fingerprint, dates and names checked as above.
#[derive(Debug)]
struct ServerTrust {
    /// None when there are no roots at all (a system without CA certificates).
    webpki: Option<Arc<rustls::client::WebPkiServerVerifier>>,
    /// The certificates of `tls-ca-file`, as read.
    exact: Vec<CertificateDer<'static>>,
    pin: Option<[u8; 32]>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerTrust {
    fn new(
        roots: Arc<rustls::RootCertStore>,
        exact: Vec<CertificateDer<'static>>,
        pin: Option<[u8; 32]>,
        provider: Arc<rustls::crypto::CryptoProvider>,
    ) -> Result<ServerTrust, String> {
        let webpki = if roots.is_empty() {
            None
        } else {
            let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
                .build()
                .map_err(|error| format!("TLS verifier: {error}"))?;
            Some(verifier)
        };
        Ok(ServerTrust { webpki, exact, pin, provider })
    }
}

/// Whether webpki refused a certificate for who signed it, or for being a
/// CA: the refusals that trusting its exact bytes answers.
fn is_issuer_refusal(error: &rustls::Error) -> bool {
    match error {
        rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer) => true,
        rustls::Error::InvalidCertificate(rustls::CertificateError::Other(other)) => {
            matches!(other.0.downcast_ref::<webpki::Error>(), Some(webpki::Error::CaUsedAsEndEntity))
        }
        _ => false,
    }
}

impl rustls::client::danger::ServerCertVerifier for ServerTrust {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        if let Some(expected) = self.pin {
            let seen = sha256(end_entity);
            if seen != expected {
                let mismatch = PinMismatch { expected, seen };
                return Err(rustls::CertificateError::Other(rustls::OtherError(Arc::new(mismatch))).into());
            }
            check_dates_and_name(end_entity, server_name, now)?;
            return Ok(rustls::client::danger::ServerCertVerified::assertion());
        }
        let verdict = match &self.webpki {
            Some(webpki) => webpki.verify_server_cert(end_entity, intermediates, server_name, ocsp, now),
            None => Err(rustls::CertificateError::UnknownIssuer.into()),
        };
        match verdict {
            Err(error) if is_issuer_refusal(&error) && self.exact.iter().any(|trusted| trusted == end_entity) => {
                check_dates_and_name(end_entity, server_name, now)?;
                Ok(rustls::client::danger::ServerCertVerified::assertion())
            }
            verdict => verdict,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        signature: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            signature,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        signature: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            signature,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

fn sha256(certificate: &[u8]) -> [u8; 32] {
    let mut digest = [0u8; 32];
    digest.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, certificate).as_ref());
    digest
}

/// The server's certificate is not the pinned one.
#[derive(Debug)]
struct PinMismatch {
    expected: [u8; 32],
    seen: [u8; 32],
}

impl fmt::Display for PinMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "pin mismatch: wsbridge_tls_pin_sha256 expects the certificate with SHA-256 fingerprint {}, but the \
             server's has {}: if the server's certificate was replaced, pin the new one",
            crate::settings::security::fingerprint_text(&self.expected),
            crate::settings::security::fingerprint_text(&self.seen)
        )
    }
}

impl std::error::Error for PinMismatch {}

/// What webpki checks of a certificate besides who signed it: that `now`
/// is within its dates and that it names `server_name` (in its
/// subjectAltName; an IP address only as an IP entry).
fn check_dates_and_name(
    end_entity: &CertificateDer<'_>,
    server_name: &ServerName<'_>,
    now: UnixTime,
) -> Result<(), rustls::Error> {
    use rustls::CertificateError as Cert;
    let (not_before, not_after) = validity(end_entity).ok_or(Cert::BadEncoding)?;
    if now < not_before {
        return Err(Cert::NotValidYetContext { time: now, not_before }.into());
    }
    if now > not_after {
        return Err(Cert::ExpiredContext { time: now, not_after }.into());
    }
    let parsed = rustls::server::ParsedCertificate::try_from(end_entity)?;
    rustls::client::verify_server_name(&parsed, server_name)
}

/// A certificate's notBefore and notAfter (RFC 5280, 4.1.2.5).
fn validity(certificate: &[u8]) -> Option<(UnixTime, UnixTime)> {
    const SEQUENCE: u8 = 0x30;
    let (certificate, _) = der_item(certificate, SEQUENCE)?;
    let (tbs, _) = der_item(certificate, SEQUENCE)?;
    // [0] version (absent in v1), serialNumber, signature, issuer, then validity.
    let rest = match der_item(tbs, 0xa0) {
        Some((_, rest)) => rest,
        None => tbs,
    };
    let (_, rest) = der_item(rest, 0x02)?;
    let (_, rest) = der_item(rest, SEQUENCE)?;
    let (_, rest) = der_item(rest, SEQUENCE)?;
    let (validity, _) = der_item(rest, SEQUENCE)?;
    let (not_before, rest) = der_time(validity)?;
    let (not_after, rest) = der_time(rest)?;
    rest.is_empty().then_some((not_before, not_after))
}

/// The contents of the DER item at the start of `input`, if it has `tag`, and what follows it.
fn der_item(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&found, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    if found != tag {
        return None;
    }
    let (length, rest) = match first {
        0..=0x7f => (usize::from(first), rest),
        0x81..=0x84 => {
            let count = usize::from(first & 0x7f);
            if rest.len() < count {
                return None;
            }
            let (bytes, rest) = rest.split_at(count);
            (bytes.iter().fold(0usize, |length, &byte| length << 8 | usize::from(byte)), rest)
        }
        _ => return None,
    };
    (rest.len() >= length).then(|| rest.split_at(length))
}

/// A UTCTime (YYMMDDHHMMSSZ) or GeneralizedTime (YYYYMMDDHHMMSSZ), as RFC 5280 allows them.
fn der_time(input: &[u8]) -> Option<(UnixTime, &[u8])> {
    const UTC_TIME: u8 = 0x17;
    const GENERALIZED_TIME: u8 = 0x18;
    let tag = *input.first()?;
    let (text, rest) = der_item(input, tag)?;
    let number = |digits: &[u8]| -> Option<i64> {
        digits.iter().try_fold(0i64, |n, &d| d.is_ascii_digit().then(|| n * 10 + i64::from(d - b'0')))
    };
    let (year, text) = match (tag, text.len()) {
        (UTC_TIME, 13) => {
            let year = number(&text[..2])?;
            (if year < 50 { 2000 + year } else { 1900 + year }, &text[2..])
        }
        (GENERALIZED_TIME, 15) => (number(&text[..4])?, &text[4..]),
        _ => return None,
    };
    let [month, day, hour, minute, second] = [0, 2, 4, 6, 8].map(|at| number(&text[at..at + 2]));
    let (month, day, hour, minute, second) = (month?, day?, hour?, minute?, second?);
    if text[10] != b'Z'
        || !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    let seconds = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second;
    // Before 1970 counts as 1970: only ever a notBefore, and equally in the past.
    Some((UnixTime::since_unix_epoch(std::time::Duration::from_secs(seconds.max(0) as u64)), rest))
}

/// Days from 1970-01-01 to a date of the proleptic Gregorian calendar (H. Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

fn build_client_config(tls: &TlsOptions) -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|error| error.to_string())?;
    let verifier: Arc<dyn rustls::client::danger::ServerCertVerifier> = if tls.insecure {
        Arc::new(AcceptAnyCertificate(provider))
    } else {
        let (roots, exact) = match &tls.ca_file {
            None => (system_roots(), Vec::new()),
            Some(path) => {
                let certificates = read_certificates(path)?;
                let mut roots = rustls::RootCertStore::empty();
                for certificate in &certificates {
                    roots
                        .add(certificate.clone())
                        .map_err(|error| format!("bad CA certificate in {}: {}", path.display(), plain(&error)))?;
                }
                (Arc::new(roots), certificates)
            }
        };
        Arc::new(ServerTrust::new(roots, exact, tls.pin_sha256, provider)?)
    };
    let builder = builder.dangerous().with_custom_certificate_verifier(verifier);
    let config = match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => {
            use rustls::pki_types::pem::PemObject;
            let chain = read_certificates(cert)?;
            let key = rustls::pki_types::PrivateKeyDer::from_pem_file(key)
                .map_err(|error| format!("cannot read the private key {}: {error}", key.display()))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|error| format!("client certificate: {}", plain(&error)))?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => return Err("a client certificate needs both tls-cert-file and tls-key-file".into()),
    };
    Ok(Arc::new(config))
}

static TLS_CONFIGS: Mutex<Option<HashMap<TlsOptions, Arc<rustls::ClientConfig>>>> = Mutex::new(None);

/// The client config for `tls`, built once per distinct set of options.
fn client_config(tls: &TlsOptions) -> Result<Arc<rustls::ClientConfig>, String> {
    let cached = |tls: &TlsOptions| {
        let cache = TLS_CONFIGS.lock().unwrap_or_else(|p| p.into_inner());
        cache.as_ref().and_then(|cache| cache.get(tls).cloned())
    };
    if let Some(config) = cached(tls) {
        return Ok(config);
    }
    // Built without the lock, so one slow build holds up no other call's connect.
    let config = build_client_config(tls)?;
    let mut cache = TLS_CONFIGS.lock().unwrap_or_else(|p| p.into_inner());
    let cache = cache.get_or_insert_with(HashMap::new);
    if cache.len() >= 64 {
        cache.clear();
    }
    cache.insert(tls.clone(), config.clone());
    Ok(config)
}

/// Forgets cached TLS configs, so changed files are read again (on reload).
pub fn clear_tls_cache() {
    *TLS_CONFIGS.lock().unwrap_or_else(|p| p.into_inner()) = None;
}

/// What went wrong in a TLS handshake, in words that say what to change.
/// Nothing here prints rustls' or webpki's type names.
fn describe_tls_failure(error: &io::Error, tls: &TlsOptions) -> String {
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

fn describe_rustls_error(error: &rustls::Error, tls: &TlsOptions) -> String {
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
fn plain(error: &rustls::Error) -> String {
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
        Cert::Other(other) => describe_other(other, tls),
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
    let seconds = time.as_secs();
    let (days, rest) = ((seconds / 86_400) as i64, seconds % 86_400);
    let (year, month, day) = civil_from_days(days);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC", rest / 3600, rest / 60 % 60, rest % 60)
}

/// The date `days` after 1970-01-01 (the inverse of [`days_from_civil`]).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days - era * 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 { shifted_month + 3 } else { shifted_month - 9 };
    (year_of_era + era * 400 + i64::from(month <= 2), month, day)
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

impl std::error::Error for ConnectError {}

/// Connects and upgrades. The caller bounds the time this takes.
pub async fn connect(
    uri: &ServerUri,
    config: WebSocketConfig,
    tls: &TlsOptions,
    headers: &[(String, String)],
) -> Result<WebSocket, ConnectError> {
    // A TLS setup that cannot work fails before any traffic. Building one reads
    // files (the system's CA store takes a good part of a second in a debug
    // build), so it runs off the runtime's threads, which carry every call's audio.
    let client = match uri.scheme {
        Scheme::Ws | Scheme::Tcp => None,
        Scheme::Wss => {
            let options = tls.clone();
            let built = tokio::task::spawn_blocking(move || client_config(&options))
                .await
                .map_err(|error| ConnectError::Tls(format!("building the TLS setup failed: {error}")))?;
            Some(built.map_err(ConnectError::Tls)?)
        }
    };
    let tcp = connect_tcp(&uri.host, uri.port).await.map_err(ConnectError::Tcp)?;
    let _ = tcp.set_nodelay(true);
    let io: Box<dyn Io> = match client {
        None => Box::new(tcp),
        Some(client) => {
            if tls.insecure {
                let pin = if tls.pin_sha256.is_some() { ", the pin included" } else { "" };
                tracing::warn!("TLS certificate checks are OFF for {} (insecure{pin})", uri.host);
            }
            let name = ServerName::try_from(uri.host.clone())
                .map_err(|error| ConnectError::Tls(format!("bad server name: {error}")))?;
            let stream = tokio_rustls::TlsConnector::from(client)
                .connect(name, tcp)
                .await
                .map_err(|error| ConnectError::Tls(describe_tls_failure(&error, tls)))?;
            Box::new(stream)
        }
    };
    upgrade(io, uri, config, tls, headers).await
}

pub(crate) async fn connect_tcp(host: &str, port: u16) -> io::Result<TcpStream> {
    let mut last_error = None;
    for address in tokio::net::lookup_host((host, port)).await? {
        let socket = if address.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
        let _ = socket.set_send_buffer_size(SEND_BUFFER_BYTES);
        match socket.connect(address).await {
            Ok(stream) => return Ok(stream),
            Err(error) => last_error = Some(error),
        }
    }
    Err(last_error.unwrap_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{host} has no address"))))
}

async fn upgrade(
    mut io: Box<dyn Io>,
    uri: &ServerUri,
    config: WebSocketConfig,
    tls: &TlsOptions,
    headers: &[(String, String)],
) -> Result<WebSocket, ConnectError> {
    let key = generate_key();
    let mut request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: {SUBPROTOCOL}\r\nUser-Agent: mod_wsbridge/{}\r\n",
        uri.resource,
        uri.host_header(),
        env!("CARGO_PKG_VERSION"),
    );
    for (name, value) in headers {
        // Validated by security::parse_http_headers: no CR, LF or reserved names.
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    // In TLS 1.3 a server refuses our client certificate after the handshake, so its alert comes here.
    let failure = |doing: &str, error: io::Error| match error.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>())
    {
        Some(tls_error) => ConnectError::Tls(describe_rustls_error(tls_error, tls)),
        None => ConnectError::Handshake(format!("{doing}: {error}")),
    };
    let write_error = |error: io::Error| failure("sending the upgrade request", error);
    io.write_all(request.as_bytes()).await.map_err(write_error)?;
    io.flush().await.map_err(write_error)?;

    let mut received = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        let count = io.read(&mut chunk).await.map_err(|error| failure("reading the upgrade response", error))?;
        if count == 0 {
            return Err(ConnectError::Handshake(
                "the server closed the connection before answering the upgrade".into(),
            ));
        }
        received.extend_from_slice(&chunk[..count]);
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut response = httparse::Response::new(&mut headers);
        match response.parse(&received) {
            Ok(httparse::Status::Complete(head_length)) => {
                check_response(&response, &key)?;
                let rest = received[head_length..].to_vec();
                return Ok(WebSocketStream::from_partially_read(io, rest, Role::Client, Some(config)).await);
            }
            Ok(httparse::Status::Partial) if received.len() < MAX_RESPONSE_HEAD_BYTES => continue,
            Ok(httparse::Status::Partial) => {
                return Err(ConnectError::Handshake(format!(
                    "upgrade response head over {MAX_RESPONSE_HEAD_BYTES} bytes"
                )))
            }
            Err(error) => return Err(ConnectError::Handshake(format!("malformed upgrade response: {error}"))),
        }
    }
}

fn check_response(response: &httparse::Response<'_, '_>, key: &str) -> Result<(), ConnectError> {
    let header = |name: &str| {
        response
            .headers
            .iter()
            .find(|header| header.name.eq_ignore_ascii_case(name))
            .map(|header| String::from_utf8_lossy(header.value).trim().to_string())
    };
    let code = response.code.unwrap_or(0);
    if code != 101 {
        return Err(ConnectError::Handshake(format!(
            "the server answered {code} {} instead of 101 Switching Protocols",
            response.reason.unwrap_or("")
        )));
    }
    if !header("Upgrade").is_some_and(|value| value.eq_ignore_ascii_case("websocket")) {
        return Err(ConnectError::Handshake("the response has no 'Upgrade: websocket'".into()));
    }
    if !header("Connection")
        .is_some_and(|value| value.split(',').any(|token| token.trim().eq_ignore_ascii_case("upgrade")))
    {
        return Err(ConnectError::Handshake("the response has no 'Connection: Upgrade'".into()));
    }
    if header("Sec-WebSocket-Accept").as_deref() != Some(derive_accept_key(key.as_bytes()).as_str()) {
        return Err(ConnectError::Handshake("Sec-WebSocket-Accept does not match the key".into()));
    }
    match header("Sec-WebSocket-Protocol") {
        Some(protocol) if !protocol.eq_ignore_ascii_case(SUBPROTOCOL) => {
            Err(ConnectError::Handshake(format!("the server chose subprotocol '{protocol}', not {SUBPROTOCOL}")))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // tungstenite's handshake callback type
mod tests {
    use super::*;
    use futures_util::{SinkExt, StreamExt};
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use std::path::Path;
    use std::sync::atomic::{AtomicU32, Ordering};
    use tokio::net::TcpListener;
    use tokio_tungstenite::tungstenite::Message;

    struct Pki {
        ca_file: PathBuf,
        server_chain: Vec<CertificateDer<'static>>,
        server_key: PrivateKeyDer<'static>,
        client_cert_file: PathBuf,
        client_key_file: PathBuf,
        ca_der: CertificateDer<'static>,
        /// The server's certificate alone, PEM.
        server_cert_file: PathBuf,
    }

    /// A fresh directory for one test's files.
    fn test_dir() -> PathBuf {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "wsbridge-tls-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// A CA, a server certificate for `server_name` (expired if asked) and a client certificate.
    fn pki(server_name: &str, expired: bool) -> Pki {
        let dir = test_dir();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(rcgen::DnType::CommonName, "wsbridge test CA");
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().unwrap()).unwrap();
        let server_key = rcgen::KeyPair::generate().unwrap();
        let mut server_params = rcgen::CertificateParams::new(vec![server_name.to_string()]).unwrap();
        if expired {
            server_params.not_before = rcgen::date_time_ymd(2001, 1, 1);
            server_params.not_after = rcgen::date_time_ymd(2002, 1, 1);
        }
        let server_cert = server_params.signed_by(&server_key, &ca).unwrap();
        let client_key = rcgen::KeyPair::generate().unwrap();
        let client_cert =
            rcgen::CertificateParams::new(vec!["client".to_string()]).unwrap().signed_by(&client_key, &ca).unwrap();
        let write = |name: &str, text: String| {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        Pki {
            ca_file: write("ca.pem", ca.pem()),
            server_chain: vec![server_cert.der().clone()],
            server_key: PrivateKeyDer::try_from(server_key.serialize_der()).unwrap(),
            client_cert_file: write("client.pem", client_cert.pem()),
            client_key_file: write("client.key", client_key.serialize_pem()),
            ca_der: ca.der().clone(),
            server_cert_file: write("server.pem", server_cert.pem()),
        }
    }

    /// A server certificate, its key, and a PEM file holding the certificate alone.
    struct ServerCertificate {
        der: CertificateDer<'static>,
        key: PrivateKeyDer<'static>,
        file: PathBuf,
    }

    /// A certificate as `openssl req -x509 -newkey ... -nodes -subj /CN=<ip>
    /// -addext subjectAltName=IP:<ip>` makes one: self-signed, and marked
    /// CA:TRUE by openssl's default v3_ca extensions.
    fn openssl_style(ip: &str, not_after: Option<(i32, u8, u8)>) -> ServerCertificate {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, ip);
        params.subject_alt_names = vec![rcgen::SanType::IpAddress(ip.parse().unwrap())];
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        if let Some((year, month, day)) = not_after {
            params.not_before = rcgen::date_time_ymd(year - 1, month, day);
            params.not_after = rcgen::date_time_ymd(year, month, day);
        }
        let certificate = params.self_signed(&key).unwrap();
        let file = test_dir().join("self-signed.pem");
        std::fs::write(&file, certificate.pem()).unwrap();
        ServerCertificate {
            der: certificate.der().clone(),
            key: PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
            file,
        }
    }

    /// Serves one wss connection with `chain`; returns its port and the first message it gets.
    async fn serve_tls(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        client_roots: Option<CertificateDer<'static>>,
    ) -> (u16, tokio::task::JoinHandle<Option<String>>) {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = match client_roots {
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                roots.add(ca).unwrap();
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                    .build()
                    .unwrap();
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let config = builder.with_single_cert(chain, key).unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.ok()?;
            let tls = acceptor.accept(tcp).await.ok()?;
            let mut ws = tokio_tungstenite::accept_async(tls).await.ok()?;
            match ws.next().await {
                Some(Ok(Message::Text(text))) => Some(text.to_string()),
                _ => None,
            }
        });
        (port, task)
    }

    /// Serves one wss connection with the PKI's server certificate.
    async fn tls_server(pki: &Pki, require_client_cert: bool) -> (u16, tokio::task::JoinHandle<Option<String>>) {
        let client_roots = require_client_cert.then(|| pki.ca_der.clone());
        serve_tls(pki.server_chain.clone(), pki.server_key.clone_key(), client_roots).await
    }

    async fn serve_certificate(certificate: &ServerCertificate) -> (u16, tokio::task::JoinHandle<Option<String>>) {
        serve_tls(vec![certificate.der.clone()], certificate.key.clone_key(), None).await
    }

    async fn try_wss(port: u16, tls: &TlsOptions) -> Result<(), String> {
        try_wss_at("localhost", port, tls).await
    }

    async fn try_wss_at(host: &str, port: u16, tls: &TlsOptions) -> Result<(), String> {
        let uri = ServerUri::parse(&format!("wss://{host}:{port}/secure")).unwrap();
        let mut connection = connect(&uri, WebSocketConfig::default(), tls, &[]).await.map_err(|e| e.to_string())?;
        connection.send(Message::text("hello over TLS")).await.map_err(|e| e.to_string())?;
        Ok(())
    }

    fn trusting(pki: &Pki) -> TlsOptions {
        TlsOptions { ca_file: Some(pki.ca_file.clone()), ..TlsOptions::default() }
    }

    fn trusting_file(file: &Path) -> TlsOptions {
        TlsOptions { ca_file: Some(file.to_path_buf()), ..TlsOptions::default() }
    }

    #[tokio::test]
    async fn a_trusted_ca_lets_the_call_through() {
        let pki = pki("localhost", false);
        let (port, server) = tls_server(&pki, false).await;
        try_wss(port, &trusting(&pki)).await.unwrap();
        assert_eq!(server.await.unwrap().as_deref(), Some("hello over TLS"));
    }

    #[tokio::test]
    async fn a_self_signed_ca_certificate_is_trusted_by_its_own_file() {
        let certificate = openssl_style("127.0.0.1", None);
        let (port, server) = serve_certificate(&certificate).await;
        try_wss_at("127.0.0.1", port, &trusting_file(&certificate.file)).await.unwrap();
        assert_eq!(server.await.unwrap().as_deref(), Some("hello over TLS"));
    }

    #[tokio::test]
    async fn a_server_certificate_alone_in_the_file_is_trusted() {
        let pki = pki("localhost", false);
        let (port, server) = tls_server(&pki, false).await;
        try_wss(port, &trusting_file(&pki.server_cert_file)).await.unwrap();
        assert_eq!(server.await.unwrap().as_deref(), Some("hello over TLS"));
    }

    #[tokio::test]
    async fn the_exact_certificate_still_needs_its_name_and_dates() {
        let certificate = openssl_style("127.0.0.1", None);
        let (port, _server) = serve_certificate(&certificate).await;
        let error = try_wss_at("localhost", port, &trusting_file(&certificate.file)).await.unwrap_err();
        assert!(error.contains("hostname mismatch"), "{error}");

        let other_address = openssl_style("127.0.0.2", None);
        let (port, _server) = serve_certificate(&other_address).await;
        let error = try_wss_at("127.0.0.1", port, &trusting_file(&other_address.file)).await.unwrap_err();
        assert!(error.contains("hostname mismatch"), "{error}");

        let expired = openssl_style("127.0.0.1", Some((2002, 1, 1)));
        let (port, _server) = serve_certificate(&expired).await;
        let error = try_wss_at("127.0.0.1", port, &trusting_file(&expired.file)).await.unwrap_err();
        assert!(error.contains("expired"), "{error}");

        let not_yet = openssl_style("127.0.0.1", Some((2091, 1, 1)));
        let (port, _server) = serve_certificate(&not_yet).await;
        let error = try_wss_at("127.0.0.1", port, &trusting_file(&not_yet.file)).await.unwrap_err();
        assert!(error.contains("not yet valid: the server's certificate is valid from 2090-01-01"), "{error}");
    }

    #[tokio::test]
    async fn another_self_signed_certificate_in_the_file_does_not_vouch_for_the_server() {
        let certificate = openssl_style("127.0.0.1", None);
        let other = openssl_style("127.0.0.1", None);
        let (port, _server) = serve_certificate(&certificate).await;
        assert!(try_wss_at("127.0.0.1", port, &trusting_file(&other.file)).await.is_err());
    }

    /// The file `openssl req -x509` itself writes, when openssl is installed.
    #[tokio::test]
    async fn a_certificate_made_by_openssl_req_x509_is_trusted_by_its_own_file() {
        let dir = test_dir();
        let (cert_file, key_file) = (dir.join("cert.pem"), dir.join("key.pem"));
        let made = std::process::Command::new("openssl")
            .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30"])
            .args(["-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"])
            .arg("-keyout")
            .arg(&key_file)
            .arg("-out")
            .arg(&cert_file)
            .output();
        match made {
            Ok(output) if output.status.success() => {}
            Ok(output) => panic!("openssl req failed: {}", String::from_utf8_lossy(&output.stderr)),
            Err(error) => {
                println!("skipped: openssl is not installed ({error})");
                return;
            }
        }
        use rustls::pki_types::pem::PemObject;
        let chain = read_certificates(&cert_file).unwrap();
        let key = PrivateKeyDer::from_pem_file(&key_file).unwrap();
        let (port, server) = serve_tls(chain.clone(), key.clone_key(), None).await;
        try_wss_at("127.0.0.1", port, &trusting_file(&cert_file)).await.unwrap();
        assert_eq!(server.await.unwrap().as_deref(), Some("hello over TLS"));
        let (port, _server) = serve_tls(chain, key, None).await;
        let error = try_wss_at("localhost", port, &trusting_file(&cert_file)).await.unwrap_err();
        assert!(error.contains("hostname mismatch"), "{error}");
    }

    #[test]
    fn validity_dates_are_read_from_the_certificate() {
        let seconds = |time: UnixTime| time.as_secs();
        let expired = openssl_style("127.0.0.1", Some((2002, 1, 1)));
        let (not_before, not_after) = validity(&expired.der).unwrap();
        assert_eq!((seconds(not_before), seconds(not_after)), (978_307_200, 1_009_843_200), "UTCTime");
        let late = openssl_style("127.0.0.1", Some((2051, 3, 4)));
        let (_, not_after) = validity(&late.der).unwrap();
        assert_eq!(seconds(not_after), 2_561_500_800, "GeneralizedTime, from 2050 on");
        assert_eq!(days_from_civil(2000, 2, 29) * 86_400, 951_782_400);
        assert_eq!(days_from_civil(1960, 6, 1) * 86_400, -302_486_400);
        assert_eq!(validity(b"not a certificate"), None);
        assert_eq!(validity(&expired.der[..expired.der.len() / 2]), None, "truncated");
    }

    #[tokio::test]
    async fn untrusted_mismatched_and_expired_certificates_are_refused_by_name() {
        let pki_ok = pki("localhost", false);
        let (port, _server) = tls_server(&pki_ok, false).await;
        let error = try_wss(port, &TlsOptions::default()).await.unwrap_err();
        assert!(error.contains("unknown issuer"), "{error}");

        let wrong_name = pki("wrong.example", false);
        let (port, _server) = tls_server(&wrong_name, false).await;
        let error = try_wss(port, &trusting(&wrong_name)).await.unwrap_err();
        assert!(error.contains("hostname mismatch"), "{error}");

        let expired = pki("localhost", true);
        let (port, _server) = tls_server(&expired, false).await;
        let error = try_wss(port, &trusting(&expired)).await.unwrap_err();
        assert!(error.contains("expired"), "{error}");
    }

    fn pinning(certificate: &[u8]) -> TlsOptions {
        TlsOptions { pin_sha256: Some(sha256(certificate)), ..TlsOptions::default() }
    }

    #[tokio::test]
    async fn a_pin_that_matches_connects_and_one_that_does_not_is_refused() {
        let certificate = openssl_style("127.0.0.1", None);
        let (port, server) = serve_certificate(&certificate).await;
        try_wss_at("127.0.0.1", port, &pinning(&certificate.der)).await.unwrap();
        assert_eq!(server.await.unwrap().as_deref(), Some("hello over TLS"));

        let other = openssl_style("127.0.0.1", None);
        let (port, _server) = serve_certificate(&certificate).await;
        let error = try_wss_at("127.0.0.1", port, &pinning(&other.der)).await.unwrap_err();
        let (expected, seen) = (sha256(&other.der), sha256(&certificate.der));
        assert!(error.starts_with("TLS failed: pin mismatch: wsbridge_tls_pin_sha256 expects"), "{error}");
        assert!(error.contains(&crate::settings::security::fingerprint_text(&expected)), "{error}");
        assert!(error.contains(&crate::settings::security::fingerprint_text(&seen)), "{error}");

        // The pin decides: a certificate a trusted CA signed is refused when it is not the pinned one.
        let pki = pki("localhost", false);
        let (port, _server) = tls_server(&pki, false).await;
        let error =
            try_wss(port, &TlsOptions { ca_file: Some(pki.ca_file.clone()), ..pinning(&other.der) }).await.unwrap_err();
        assert!(error.contains("pin mismatch"), "{error}");
        let (port, server) = tls_server(&pki, false).await;
        try_wss(port, &pinning(&pki.server_chain[0])).await.unwrap();
        assert_eq!(server.await.unwrap().as_deref(), Some("hello over TLS"), "the system CAs do not know this CA");
    }

    #[tokio::test]
    async fn a_pinned_certificate_still_needs_its_name_and_dates() {
        let certificate = openssl_style("127.0.0.1", None);
        let (port, _server) = serve_certificate(&certificate).await;
        let error = try_wss_at("localhost", port, &pinning(&certificate.der)).await.unwrap_err();
        assert!(error.contains("hostname mismatch: the server's certificate is for IP 127.0.0.1, not localhost"));

        let expired = openssl_style("127.0.0.1", Some((2002, 1, 1)));
        let (port, _server) = serve_certificate(&expired).await;
        let error = try_wss_at("127.0.0.1", port, &pinning(&expired.der)).await.unwrap_err();
        assert!(error.contains("expired: the server's certificate expired on 2002-01-01"), "{error}");
    }

    /// Refused without the certificate itself in the file, in words that say so.
    #[tokio::test]
    async fn a_self_signed_ca_certificate_is_refused_without_its_file() {
        let certificate = openssl_style("127.0.0.1", None);
        let someone_else = pki("localhost", false);
        for tls in [TlsOptions::default(), trusting(&someone_else)] {
            let (port, _server) = serve_certificate(&certificate).await;
            let error = try_wss_at("127.0.0.1", port, &tls).await.unwrap_err();
            assert!(error.starts_with("TLS failed: unknown issuer"), "{error}");
            assert!(error.contains("set wsbridge_tls_ca_file to the certificate itself"), "{error}");
            for old in ["CaUsedAsEndEntity", "OtherError", "Other("] {
                assert!(!error.contains(old), "{error}");
            }
        }
    }

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
        for days in [-800_000, -1, 0, 59, 365, 10_956, 30_000, 800_000] {
            let (year, month, day) = civil_from_days(days);
            assert_eq!(days_from_civil(year, month, day), days);
        }
    }

    #[tokio::test]
    async fn insecure_skips_the_checks() {
        let pki = pki("wrong.example", true);
        let (port, server) = tls_server(&pki, false).await;
        try_wss(port, &TlsOptions { insecure: true, ..TlsOptions::default() }).await.unwrap();
        assert_eq!(server.await.unwrap().as_deref(), Some("hello over TLS"));
    }

    #[tokio::test]
    async fn a_server_that_requires_a_client_certificate_gets_it_only_when_given() {
        let pki = pki("localhost", false);
        let (port, server) = tls_server(&pki, true).await;
        let error = try_wss(port, &trusting(&pki)).await.unwrap_err();
        assert!(
            error.contains("TLS failed: the server wants a client certificate: set wsbridge_tls_cert_file"),
            "{error}"
        );
        assert_eq!(server.await.unwrap(), None);
        let (port, server) = tls_server(&pki, true).await;
        let with_cert = TlsOptions {
            cert_file: Some(pki.client_cert_file.clone()),
            key_file: Some(pki.client_key_file.clone()),
            ..trusting(&pki)
        };
        try_wss(port, &with_cert).await.unwrap();
        assert_eq!(server.await.unwrap().as_deref(), Some("hello over TLS"));
        let error = try_wss(port, &TlsOptions { cert_file: Some(pki.client_cert_file.clone()), ..trusting(&pki) })
            .await
            .unwrap_err();
        assert!(error.contains("needs both"), "{error}");
        let missing = TlsOptions { ca_file: Some(Path::new("/no/such/ca.pem").into()), ..TlsOptions::default() };
        let error = try_wss(port, &missing).await.unwrap_err();
        assert!(error.contains("/no/such/ca.pem"), "{error}");
    }

    #[tokio::test]
    async fn upgrade_headers_are_sent() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut seen = None;
            let callback =
                |request: &tokio_tungstenite::tungstenite::handshake::server::Request,
                 response: tokio_tungstenite::tungstenite::handshake::server::Response| {
                    seen = request.headers().get("Authorization").map(|v| v.to_str().unwrap().to_string());
                    Ok(response)
                };
            let _ws = tokio_tungstenite::accept_hdr_async(tcp, callback).await.unwrap();
            seen
        });
        let uri = ServerUri::parse(&format!("ws://127.0.0.1:{port}/")).unwrap();
        let headers = vec![("Authorization".to_string(), "Bearer secret".to_string())];
        let _connection = connect(&uri, WebSocketConfig::default(), &TlsOptions::default(), &headers).await.unwrap();
        assert_eq!(server.await.unwrap().as_deref(), Some("Bearer secret"));
    }
}
