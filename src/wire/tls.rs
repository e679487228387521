//! TLS for wss: the rustls client config that `TlsOptions` ask for, built
//! once per distinct set of options, and the handshake over a TCP stream.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};

use super::tls_errors::{describe_tls_failure, plain};
use super::tls_trust::{AcceptAnyCertificate, ServerTrust};
use crate::settings::options::TlsOptions;
use crate::support::sync::lock;

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

pub(super) fn read_certificates(path: &PathBuf) -> Result<Vec<CertificateDer<'static>>, String> {
    use rustls::pki_types::pem::PemObject;
    let certificates = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|error| format!("cannot read certificates from {}: {error}", path.display()))?;
    if certificates.is_empty() {
        return Err(format!("no certificate in {}", path.display()));
    }
    Ok(certificates)
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
        let cache = lock(&TLS_CONFIGS);
        cache.as_ref().and_then(|cache| cache.get(tls).cloned())
    };
    if let Some(config) = cached(tls) {
        return Ok(config);
    }
    // Built without the lock, so one slow build holds up no other call's connect.
    let config = build_client_config(tls)?;
    let mut cache = lock(&TLS_CONFIGS);
    let cache = cache.get_or_insert_with(HashMap::new);
    if cache.len() >= 64 {
        cache.clear();
    }
    cache.insert(tls.clone(), config.clone());
    Ok(config)
}

/// Forgets cached TLS configs, so changed files are read again (on reload).
pub fn clear_tls_cache() {
    *lock(&TLS_CONFIGS) = None;
}

/// The client config for `tls`, built off the runtime's threads, which
/// carry every call's audio: building one reads files (the system's CA
/// store takes a good part of a second in a debug build).
pub(super) async fn client_config_off_runtime(tls: &TlsOptions) -> Result<Arc<rustls::ClientConfig>, String> {
    let options = tls.clone();
    tokio::task::spawn_blocking(move || client_config(&options))
        .await
        .map_err(|error| format!("building the TLS setup failed: {error}"))?
}

/// The TLS handshake with `host` over `tcp`; its failure in words.
pub(super) async fn handshake(
    client: Arc<rustls::ClientConfig>,
    tcp: TcpStream,
    host: &str,
    tls: &TlsOptions,
) -> Result<TlsStream<TcpStream>, String> {
    if tls.insecure {
        let pin = if tls.pin_sha256.is_some() { ", the pin included" } else { "" };
        tracing::warn!("TLS certificate checks are OFF for {host} (insecure{pin})");
    }
    let name = ServerName::try_from(host.to_string()).map_err(|error| format!("bad server name: {error}"))?;
    tokio_rustls::TlsConnector::from(client).connect(name, tcp).await.map_err(|error| describe_tls_failure(&error, tls))
}
