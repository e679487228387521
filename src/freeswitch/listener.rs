//! The listener for calls from the WebSocket side: bound at load when
//! `listen` is set, on the module's runtime, and closed at unload (so
//! `reload mod_wsbridge` rebinds it with the file's new settings). Each
//! client is admitted by [`crate::call::admission::upgrade`] and
//! [`crate::call::admission::admit_call`] before any channel exists, against
//! the tokens of the wsbridge.conf in force when it connects (so a token
//! removed by `reloadxml` admits nobody from then on).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{config_store, endpoint, lock, registry, runtime};
use crate::call::admission::{self, Admission, Admitted, CallSlots};
use crate::call::conversation::CallControl;
use crate::call::first_message::inbound_label;
use crate::settings::module_conf::ListenerConfig;
use crate::settings::options::ConnectionOptions;
use crate::wire::connection::Connection;
use crate::wire::protocol::wsbridge::hangup_event;
use crate::wire::websocket::Io;

/// Stops the running listener; None when there is none.
static RUNNING: Mutex<Option<CancellationToken>> = Mutex::new(None);

/// Connections accepted but not yet admitted or refused, at most this many
/// beyond `listen-max-calls`: more are closed at once.
const MAX_PENDING_EXTRA: usize = 64;

fn tls_acceptor(cert_file: &str, key_file: &str) -> Result<tokio_rustls::TlsAcceptor, String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certificates = CertificateDer::pem_file_iter(cert_file)
        .and_then(|certificates| certificates.collect::<Result<Vec<_>, _>>())
        .map_err(|error| format!("listen-tls-cert-file {cert_file}: {error}"))?;
    if certificates.is_empty() {
        return Err(format!("listen-tls-cert-file {cert_file} holds no certificate"));
    }
    let key =
        PrivateKeyDer::from_pem_file(key_file).map_err(|error| format!("listen-tls-key-file {key_file}: {error}"))?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| error.to_string())?
        .with_no_client_auth()
        .with_single_cert(certificates, key)
        .map_err(|error| format!("listen-tls-cert-file and listen-tls-key-file: {error}"))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Binds and starts the listener when `listen` is set. A listener that
/// cannot start is logged, and the module goes on for outbound calls.
pub fn start(config: &ListenerConfig) {
    let Some(address) = config.address else { return };
    if let Some(why) = config.unusable() {
        tracing::error!("not listening for calls from the WebSocket side: {why}");
        return;
    }
    let tls = match (&config.tls_cert_file, &config.tls_key_file) {
        (Some(cert), Some(key)) => match tls_acceptor(cert, key) {
            Ok(acceptor) => Some(acceptor),
            Err(why) => {
                tracing::error!("not listening for calls from the WebSocket side on {address}: {why}");
                return;
            }
        },
        _ => None,
    };
    let bound = std::net::TcpListener::bind(address).and_then(|listener| {
        listener.set_nonblocking(true)?;
        Ok(listener)
    });
    let listener = match bound {
        Ok(listener) => listener,
        Err(error) => {
            tracing::error!(
                "cannot listen on {address} for calls from the WebSocket side: {error}; outbound calls are not affected"
            );
            return;
        }
    };
    let websocket = crate::wire::websocket::websocket_config(&ConnectionOptions::default());
    let admission = Arc::new(Admission::new(config.max_calls, websocket));
    let stop = CancellationToken::new();
    let scheme = if tls.is_some() { "wss" } else { "ws" };
    let accepting = accept_loop(listener, tls, admission, stop.clone());
    if !runtime::spawn(accepting) {
        tracing::error!("the runtime is stopped; not listening on {address}");
        return;
    }
    if let Some(previous) = lock(&RUNNING).replace(stop) {
        previous.cancel();
    }
    tracing::info!(
        "listening on {scheme}://{address} for calls from the WebSocket side ({} token(s), {} unscoped; at most {} calls)",
        config.tokens.len(),
        config.tokens.unscoped_count(),
        config.max_calls
    );
}

/// Closes the listener (the port is free once the runtime has dropped it);
/// calls up go on.
pub fn stop() {
    if let Some(stop) = lock(&RUNNING).take() {
        stop.cancel();
    }
}

async fn accept_loop(
    listener: std::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    admission: Arc<Admission>,
    stop: CancellationToken,
) {
    let listener = match TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(error) => {
            tracing::error!("the listener for calls from the WebSocket side failed: {error}");
            return;
        }
    };
    let pending = Arc::new(CallSlots::default());
    let pending_limit = admission.max_calls + MAX_PENDING_EXTRA;
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors, most likely: wait instead of spinning.
                tracing::warn!("accepting a WebSocket client failed: {error}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(pending_slot) = pending.take(pending_limit) else {
            tracing::warn!("{} WebSocket clients are being admitted already; closing {peer}", pending_limit);
            continue;
        };
        let client = serve_client(tcp, peer, tls.clone(), admission.clone(), pending_slot);
        tokio::spawn(runtime::watched(tracing::info_span!("inbound", client = %peer), client));
    }
    tracing::info!("no longer listening for calls from the WebSocket side");
}

async fn serve_client(
    tcp: TcpStream,
    peer: SocketAddr,
    tls: Option<tokio_rustls::TlsAcceptor>,
    admission: Arc<Admission>,
    pending_slot: admission::Slot,
) {
    let config = config_store::config();
    let deadline = tokio::time::Instant::now() + config.listener.flood.upgrade_timeout;
    let _ = tcp.set_nodelay(true);
    let io: Box<dyn Io> = match tls {
        None => Box::new(tcp),
        Some(acceptor) => match tokio::time::timeout_at(deadline, acceptor.accept(tcp)).await {
            Ok(Ok(stream)) => Box::new(stream),
            Ok(Err(error)) => {
                tracing::info!("WebSocket client {peer}: TLS failed: {error}");
                return;
            }
            Err(_) => {
                tracing::info!("WebSocket client {peer}: no TLS handshake in time");
                return;
            }
        },
    };
    let upgraded = admission::upgrade(io, &admission, &config.listener.tokens, deadline).await;
    drop(pending_slot);
    let admitted = match upgraded {
        Ok(upgraded) => admission::admit_call(upgraded, peer).await,
        Err(refused) => Err(refused),
    };
    let Admitted { socket, call, slot, token_slot } = match admitted {
        Ok(admitted) => admitted,
        Err(refused) => {
            registry::count_refused();
            tracing::info!("WebSocket client {peer} refused: {refused}");
            return;
        }
    };
    let (media, control, tuning) = match endpoint::start_inbound_call(&call, peer) {
        Ok(started) => started,
        Err(why) => {
            registry::count_refused();
            tracing::warn!("WebSocket client {peer}: no call to {}: {why}", call.destination);
            no_call(socket).await;
            return;
        }
    };
    tracing::info!(
        "WebSocket client {peer} (token {}) calls {} in context {} ({})",
        call.token,
        call.destination,
        call.context,
        call.content_type
    );
    let label = inbound_label(peer);
    let uuid = control.call_id().to_string();
    crate::call::conversation::serve_inbound(Connection::WebSocket(socket), label, media, control, tuning.connection)
        .instrument(runtime::call_span(&uuid))
        .await;
    drop((slot, token_slot));
}

/// Tells a client whose call could not be created, and closes.
async fn no_call(mut socket: crate::wire::websocket::WebSocket) {
    let hangup = hangup_event("DESTINATION_OUT_OF_ORDER");
    let close = CloseFrame { code: CloseCode::Again, reason: "no call could be created".into() };
    let _ = timeout(std::time::Duration::from_secs(1), async {
        use futures_util::SinkExt;
        socket.send(Message::text(hangup)).await?;
        socket.send(Message::Close(Some(close))).await
    })
    .await;
}
