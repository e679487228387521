//! wss:// to a server whose certificate is self-signed the way `openssl req
//! -x509` makes one (CA:TRUE), trusted by its own file or by its SHA-256 pin.

use std::time::Duration;

use futures_util::StreamExt;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

use crate::ws_server::runtime;
use crate::{esl, world};

crate::tests! {
    trust::self_signed_certificate_by_its_file_or_pin,
}

/// A wss server presenting `cert`; each call's caller samples come out of the receiver.
pub(crate) fn wss_server(
    cert: &rcgen::Certificate,
    key: &rcgen::KeyPair,
) -> (u16, tokio::sync::mpsc::UnboundedReceiver<Vec<i16>>) {
    let provider = std::sync::Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            tokio_rustls::rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = runtime().block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
    let port = listener.local_addr().unwrap().port();
    let (sender, received) = tokio::sync::mpsc::unbounded_channel();
    runtime().spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, sender) = (acceptor.clone(), sender.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let Ok(mut ws) = tokio_tungstenite::accept_async(tls).await else { return };
                let mut samples = Vec::new();
                while let Some(Ok(message)) = ws.next().await {
                    if let Message::Binary(data) = message {
                        samples.extend(data.chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]])));
                    }
                }
                let _ = sender.send(samples);
            });
        }
    });
    (port, received)
}

pub fn self_signed_certificate_by_its_file_or_pin() {
    // As `openssl req -x509 -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1` makes it.
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(rcgen::DnType::CommonName, "127.0.0.1");
    params.subject_alt_names = vec![rcgen::SanType::IpAddress("127.0.0.1".parse().unwrap())];
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).unwrap();
    let file = world().dir.join("self-signed.pem");
    std::fs::write(&file, cert.pem()).unwrap();
    let (port, mut received) = wss_server(&cert, &key);
    let mut esl = esl();
    let mut call = |variables: &str, app: &str| {
        esl.api(&format!("originate {{{variables}}}wsbridge/wss://127.0.0.1:{port}/tls {app}")).trim().to_string()
    };
    let mut expect_audio = |what: &str| {
        let samples = runtime()
            .block_on(async { tokio::time::timeout(Duration::from_secs(8), received.recv()).await })
            .unwrap_or_else(|_| panic!("{what}: the call ends"))
            .unwrap();
        assert!(samples.len() >= 30000, "{what}: audio flowed over TLS: {} samples", samples.len());
        crate::audio::assert_tone(&samples[8000..24000], 16000, 1000.0, what);
    };

    let reply = call(&format!("wsbridge_tls_ca_file={}", file.display()), "tone_2000ms XML wsbridge-test");
    assert!(reply.starts_with("+OK"), "the certificate's own file trusts it: {reply}");
    expect_audio("trusted by its own file");

    let pin: Vec<String> =
        ring::digest::digest(&ring::digest::SHA256, cert.der()).as_ref().iter().map(|b| format!("{b:02X}")).collect();
    let reply = call(&format!("wsbridge_tls_pin_sha256={}", pin.join(":")), "tone_2000ms XML wsbridge-test");
    assert!(reply.starts_with("+OK"), "a matching pin trusts it: {reply}");
    expect_audio("trusted by its pin");

    let wrong_pin = "00".repeat(32);
    assert_eq!(call(&format!("wsbridge_tls_pin_sha256={wrong_pin}"), "&park"), "-ERR DESTINATION_OUT_OF_ORDER");
    assert_eq!(call("wsbridge_tls_pin_sha256=xyz", "&park"), "-ERR INVALID_IE_CONTENTS", "a malformed pin");
    assert_eq!(call("origination_caller_id_name=no-trust", "&park"), "-ERR DESTINATION_OUT_OF_ORDER", "no CA file");
    // The right file, the wrong name: localhost reaches the same server, but the certificate names 127.0.0.1 only.
    let reply = esl.api(&format!(
        "originate {{wsbridge_tls_ca_file={}}}wsbridge/wss://localhost:{port}/tls &park",
        file.display()
    ));
    assert_eq!(reply.trim(), "-ERR DESTINATION_OUT_OF_ORDER", "a wrong host name is refused");

    let log = crate::log_showing(
        &world().dir.join("log/freeswitch.log"),
        &["TLS failed: pin mismatch", "TLS failed: unknown issuer", "TLS failed: hostname mismatch"],
    );
    assert!(!log.contains("CaUsedAsEndEntity") && !log.contains("OtherError"), "no debug text in the log");
}
