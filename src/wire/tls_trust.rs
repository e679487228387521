//! Who a wss server must be: the certificate verifiers that rustls asks.
//!
//! [`ServerTrust`] is webpki's check plus two rules of our own (the exact
//! certificate of `tls-ca-file`, and `tls-pin-sha256`); [`AcceptAnyCertificate`]
//! is `tls-insecure`.

use std::fmt;
use std::sync::Arc;

use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};

/// Accepts any server certificate, still checking handshake signatures.
#[derive(Debug)]
pub(super) struct AcceptAnyCertificate(pub(super) Arc<rustls::crypto::CryptoProvider>);

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
pub(super) struct ServerTrust {
    /// None when there are no roots at all (a system without CA certificates).
    webpki: Option<Arc<rustls::client::WebPkiServerVerifier>>,
    /// The certificates of `tls-ca-file`, as read.
    exact: Vec<CertificateDer<'static>>,
    pin: Option<[u8; 32]>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerTrust {
    pub(super) fn new(
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

pub(super) fn sha256(certificate: &[u8]) -> [u8; 32] {
    let mut digest = [0u8; 32];
    digest.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, certificate).as_ref());
    digest
}

/// The server's certificate is not the pinned one.
#[derive(Debug)]
pub(super) struct PinMismatch {
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

/// A certificate's notBefore and notAfter (RFC 5280, 4.1.2.5). None when
/// it does not decode, or has a date before 1970 (as webpki, which refuses
/// such a date in a chain it checks).
fn validity(certificate: &[u8]) -> Option<(UnixTime, UnixTime)> {
    use x509_cert::der::Decode;
    let certificate = x509_cert::Certificate::from_der(certificate).ok()?;
    let validity = certificate.tbs_certificate().validity();
    let unix = |time: x509_cert::time::Time| UnixTime::since_unix_epoch(time.to_unix_duration());
    Some((unix(validity.not_before), unix(validity.not_after)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate valid from `not_before` to `not_after` (year, month, day), DER.
    fn certificate(not_before: (i32, u8, u8), not_after: (i32, u8, u8)) -> Vec<u8> {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params.not_before = rcgen::date_time_ymd(not_before.0, not_before.1, not_before.2);
        params.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn validity_dates_are_read_from_the_certificate() {
        let seconds = |time: UnixTime| time.as_secs();
        let expired = certificate((2001, 1, 1), (2002, 1, 1));
        let (not_before, not_after) = validity(&expired).unwrap();
        assert_eq!((seconds(not_before), seconds(not_after)), (978_307_200, 1_009_843_200), "UTCTime");
        let late = certificate((2050, 3, 4), (2051, 3, 4));
        let (_, not_after) = validity(&late).unwrap();
        assert_eq!(seconds(not_after), 2_561_500_800, "GeneralizedTime, from 2050 on");
        let leap = certificate((2000, 2, 29), (2030, 1, 1));
        assert_eq!(validity(&leap).unwrap().0.as_secs(), 951_782_400, "a leap day");
        assert_eq!(validity(&certificate((1960, 6, 1), (2030, 1, 1))), None, "before 1970, as webpki");
        assert_eq!(validity(b"not a certificate"), None);
        assert_eq!(validity(&expired[..expired.len() / 2]), None, "truncated");
    }
}
