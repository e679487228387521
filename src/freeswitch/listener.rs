//! The listener for calls from the WebSocket side: bound at load when
//! `listen` is set, on the module's runtime, and closed at unload (so
//! `reload mod_wsbridge` rebinds it with the file's new settings). Each
//! client is admitted by [`crate::call::admission::upgrade`] and
//! [`crate::call::admission::admit_call`] before any channel exists, against
//! the tokens of the wsbridge.conf in force when it connects (so a token
//! removed by `reloadxml` admits nobody from then on).

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{config_store, endpoint, ffi, lock, registry, runtime};
use crate::call::address_guard::{Address, AddressGuard, HandshakeTicket};
use crate::call::admission::{self, Admission, Admitted, CallSlots, Gate, Refused};
use crate::call::conversation::CallControl;
use crate::call::first_message::inbound_label;
use crate::settings::module_conf::ListenerConfig;
use crate::settings::options::ConnectionOptions;
use crate::wire::connection::Connection;
use crate::wire::protocol::wsbridge::hangup_event;
use crate::wire::websocket::Io;

/// Stops the running listener; None when there is none.
static RUNNING: Mutex<Option<CancellationToken>> = Mutex::new(None);

/// Connections accepted but not yet upgraded or refused, at most this many
/// beyond `listen-max-calls`: more are closed at once.
const MAX_PENDING_EXTRA: usize = 64;
/// How often the per-address tables are pruned and refusal counts logged.
const PRUNE_EVERY: Duration = Duration::from_secs(10);

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
    let shared = Arc::new(Shared {
        tls,
        admission: Admission::new(config.max_calls, websocket),
        guard: Arc::default(),
        pending: Arc::default(),
        pending_limit: config.max_calls + MAX_PENDING_EXTRA,
    });
    let stop = CancellationToken::new();
    let scheme = if shared.tls.is_some() { "wss" } else { "ws" };
    let accepting = accept_loop(listener, shared, stop.clone());
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

/// What every client of one listener shares.
struct Shared {
    tls: Option<tokio_rustls::TlsAcceptor>,
    admission: Admission,
    /// Per client address: handshakes, failed authentications, refusals logged.
    guard: Arc<AddressGuard>,
    /// Connections accepted and not yet upgraded or refused.
    pending: Arc<CallSlots>,
    pending_limit: usize,
}

impl Shared {
    /// Logs a refusal of `peer`: the first of its address in full, the rest
    /// of the minute as a count (see [`AddressGuard::refusal`]).
    fn refused(&self, peer: SocketAddr, why: impl std::fmt::Display) {
        let line = format!("WebSocket client {peer} refused: {why}");
        if let Some(line) = self.guard.refusal(peer.ip(), line, Instant::now()) {
            tracing::info!("{line}");
        }
    }
}

async fn accept_loop(listener: std::net::TcpListener, shared: Arc<Shared>, stop: CancellationToken) {
    let listener = match TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(error) => {
            tracing::error!("the listener for calls from the WebSocket side failed: {error}");
            return;
        }
    };
    let mut prune = tokio::time::interval(PRUNE_EVERY);
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            _ = prune.tick() => {
                let flood = config_store::config().listener.flood;
                shared.guard.prune(&flood, Instant::now()).into_iter().for_each(|line| tracing::info!("{line}"));
                continue;
            }
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors, most likely: wait instead of spinning.
                tracing::warn!("accepting a WebSocket client failed: {error}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Closed at once, before anything is read: one address cannot fill the handshakes.
        let flood = config_store::config().listener.flood;
        let Some(ticket) = shared.guard.enter(peer.ip(), &flood) else {
            let most = flood.handshakes_per_address;
            shared.refused(peer, format!("{most} connections from its address are in the handshake already; closed"));
            continue;
        };
        let Some(pending_slot) = shared.pending.take(shared.pending_limit) else {
            shared.refused(peer, format!("{} clients are in the handshake already; closed", shared.pending_limit));
            continue;
        };
        let client = serve_client(tcp, peer, shared.clone(), (ticket, pending_slot));
        tokio::spawn(runtime::watched(tracing::info_span!("inbound", client = %peer), client));
    }
    tracing::info!("no longer listening for calls from the WebSocket side");
}

/// A client's address as FreeSWITCH's ACL reads it (IPv4 for a v4-mapped IPv6).
fn acl_text(ip: IpAddr) -> String {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or_else(|| v6.to_string(), |v4| v4.to_string()),
        IpAddr::V4(v4) => v4.to_string(),
    }
}

/// What is known of `ip` before its request is read: outside the ACL, or backed off.
fn gate_for(ip: IpAddr, listener: &ListenerConfig, guard: &AddressGuard) -> Gate {
    if let Some(acl) = &listener.acl {
        if !ffi::acl_allows(&acl_text(ip), acl) {
            return Gate::Forbidden;
        }
    }
    guard.backed_off(ip, Instant::now()).map_or(Gate::Open, Gate::BackedOff)
}

/// The client's stream, TLS done by `deadline` when the listener speaks wss.
async fn tls_within(
    tcp: TcpStream,
    tls: &Option<tokio_rustls::TlsAcceptor>,
    deadline: tokio::time::Instant,
) -> Result<Box<dyn Io>, String> {
    let _ = tcp.set_nodelay(true);
    let Some(acceptor) = tls else { return Ok(Box::new(tcp)) };
    match tokio::time::timeout_at(deadline, acceptor.accept(tcp)).await {
        Ok(Ok(stream)) => Ok(Box::new(stream)),
        Ok(Err(error)) => Err(format!("TLS failed: {error}")),
        Err(_) => Err("no TLS handshake in time".into()),
    }
}

/// Upgrades and admits a client, or logs why not. `handshake` is its
/// place among the handshakes, held until the upgrade is done.
async fn admit_client(
    tcp: TcpStream,
    peer: SocketAddr,
    shared: &Shared,
    handshake: (HandshakeTicket, admission::Slot),
) -> Option<Admitted> {
    let config = config_store::config();
    let listener = &config.listener;
    let deadline = tokio::time::Instant::now() + listener.flood.upgrade_timeout;
    let gate = gate_for(peer.ip(), listener, &shared.guard);
    let upgraded = match tls_within(tcp, &shared.tls, deadline).await {
        Ok(io) => admission::upgrade(io, &shared.admission, &listener.tokens, gate, deadline).await,
        Err(why) => Err(Refused::Upgrade(why)),
    };
    drop(handshake);
    if let Err(Refused::Unauthorized) = &upgraded {
        if shared.guard.failed_auth(peer.ip(), &listener.flood, Instant::now()) {
            let (failures, backoff) = (listener.flood.auth_failures, listener.flood.auth_backoff.as_secs());
            tracing::warn!(
                "WebSocket clients from {}: {failures} failed authentications; HTTP 429 for {backoff} s",
                Address::of(peer.ip())
            );
        }
    }
    let admitted = match upgraded {
        Ok(upgraded) => admission::admit_call(upgraded, peer).await,
        Err(refused) => Err(refused),
    };
    admitted
        .inspect_err(|refused| {
            registry::count_refused();
            shared.refused(peer, refused);
        })
        .ok()
}

async fn serve_client(
    tcp: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    handshake: (HandshakeTicket, admission::Slot),
) {
    let Some(Admitted { socket, call, slot, token_slot }) = admit_client(tcp, peer, &shared, handshake).await else {
        return;
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
    let _ = timeout(Duration::from_secs(1), async {
        use futures_util::SinkExt;
        socket.send(Message::text(hangup)).await?;
        socket.send(Message::Close(Some(close))).await
    })
    .await;
}
