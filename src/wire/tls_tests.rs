//! wss end to end: `connect` against a rustls server, with certificates
//! made by rcgen (a CA and its server and client certificates, or
//! self-signed ones as `openssl req -x509` makes them), for every trust
//! rule and every refusal.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

use super::tls::read_certificates;
use super::tls_trust::sha256;
use super::websocket::connect;
use crate::settings::options::TlsOptions;
use crate::settings::ServerUri;

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
    let builder =
        rustls::ServerConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions().unwrap();
    let builder = match client_roots {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(ca).unwrap();
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider).build().unwrap();
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
    let mut connection =
        connect(&uri, WebSocketConfig::default(), tls, &[], &[], None).await.map_err(|e| e.to_string())?;
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
    assert!(error.contains("TLS failed: the server wants a client certificate: set wsbridge_tls_cert_file"), "{error}");
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
