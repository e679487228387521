//! Opening the WebSocket: [`connect`] goes through TCP (`tcp.rs`), TLS for
//! wss (`tls.rs`) and the HTTP upgrade (`upgrade.rs`).

use std::fmt;
use std::io;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::WebSocketStream;

use super::direct::DirectConnection;
use super::reactor::Reactor;
use super::tcp::{connect_checked, TcpFailure};
pub use super::tls::clear_tls_cache;
pub use super::upgrade::SUBPROTOCOL;
use super::upgrade::{upgrade, upgrade_in_place, UpgradeError};
use crate::audio::media::CallMedia;
use crate::audio::uplink_writer::Uplink;
use crate::settings::options::{ConnectionOptions, TlsOptions};
use crate::settings::security::{check_address, HostPattern};
use crate::settings::{Scheme, ServerUri};

/// Several 20 ms frames at 48 kHz per read; larger messages take more reads.
const READ_BUFFER_BYTES: usize = 8 * 1024;

/// tungstenite's settings for a call's WebSocket, opened by us or by the
/// server: messages and frames up to the larger of `options`' binary and
/// text limits.
pub fn websocket_config(options: &ConnectionOptions) -> WebSocketConfig {
    let mut config = WebSocketConfig::default();
    // tungstenite zero-fills this much before every socket read; its 128 KiB
    // default costs more than the read itself and stays resident per call.
    config.read_buffer_size = READ_BUFFER_BYTES;
    let largest = options.max_message_bytes.max(options.max_text_bytes);
    config.max_message_size = Some(largest);
    config.max_frame_size = Some(largest);
    config
}

pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

pub type WebSocket = WebSocketStream<Box<dyn Io>>;

#[derive(Debug)]
pub enum ConnectError {
    /// The address rules refused an address the host resolved to: which and why.
    Barred(String),
    Tcp(io::Error),
    /// What failed: unknown issuer, hostname mismatch, expired, or the handshake.
    Tls(String),
    Handshake(String),
    /// HTTP 401 or 403 at the upgrade: the credentials sent were refused.
    Refused(u16, String),
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectError::Barred(why) => write!(f, "{why}"),
            ConnectError::Tcp(error) => write!(f, "TCP connect failed: {error}"),
            ConnectError::Tls(why) => write!(f, "TLS failed: {why}"),
            ConnectError::Handshake(why) => write!(f, "WebSocket handshake failed: {why}"),
            ConnectError::Refused(code, reason) => {
                write!(f, "the server refused the credentials: HTTP {code} {reason}")
            }
        }
    }
}

impl std::error::Error for ConnectError {}

impl From<UpgradeError> for ConnectError {
    fn from(error: UpgradeError) -> ConnectError {
        match error {
            UpgradeError::Tls(why) => ConnectError::Tls(why),
            UpgradeError::Http(why) => ConnectError::Handshake(why),
            UpgradeError::Refused(code, reason) => ConnectError::Refused(code, reason),
        }
    }
}

impl From<TcpFailure> for ConnectError {
    fn from(failure: TcpFailure) -> ConnectError {
        match failure {
            TcpFailure::Barred(why) => ConnectError::Barred(why),
            TcpFailure::Io(error) => ConnectError::Tcp(error),
        }
    }
}

/// The TCP connection to `uri`: its host resolved now, every address
/// checked against `allowed_hosts` and the SIP-header rules
/// ([`check_address`]), and a checked address connected to.
pub(crate) async fn connect_tcp(uri: &ServerUri, allowed_hosts: &[HostPattern]) -> Result<TcpStream, ConnectError> {
    let tcp = connect_checked(uri, |address| check_address(allowed_hosts, uri, address)).await?;
    let _ = tcp.set_nodelay(true);
    Ok(tcp)
}

/// Connects and upgrades. The caller bounds the time this takes. TLS's SNI
/// and certificate check, and the Host header, use the URI's host name,
/// whatever address was connected to.
pub async fn connect(
    uri: &ServerUri,
    config: WebSocketConfig,
    tls: &TlsOptions,
    headers: &[(String, String)],
    allowed_hosts: &[HostPattern],
    direct: Option<Arc<Mutex<Uplink>>>,
) -> Result<WebSocket, ConnectError> {
    // A TLS setup that cannot work fails before any traffic.
    let client = match uri.scheme {
        Scheme::Ws | Scheme::Tcp => None,
        Scheme::Wss => Some(super::tls::client_config_off_runtime(tls).await.map_err(ConnectError::Tls)?),
    };
    let tcp = connect_tcp(uri, allowed_hosts).await?;
    let io: Box<dyn Io> = match (client, direct) {
        // Plain TCP: caller audio may be written to it from the session thread.
        (None, Some(uplink)) => Box::new(super::shared_tcp::SharedTcp::attach(tcp, uplink)),
        (None, None) => Box::new(tcp),
        (Some(client), _) => {
            Box::new(super::tls::handshake(client, tcp, &uri.host, tls).await.map_err(ConnectError::Tls)?)
        }
    };
    Ok(upgrade(io, uri, config, tls, headers).await?)
}

/// A `ws://` connection whose media skips the call's task both ways
/// ([`DirectConnection`]): caller audio written by the session thread,
/// server audio read by `reactor` into `media`'s playout.
pub async fn connect_direct(
    uri: &ServerUri,
    config: WebSocketConfig,
    headers: &[(String, String)],
    allowed_hosts: &[HostPattern],
    max_audio_bytes: usize,
    media: Arc<CallMedia>,
    reactor: Arc<Reactor>,
) -> Result<Arc<DirectConnection>, ConnectError> {
    let mut tcp = connect_tcp(uri, allowed_hosts).await?;
    let rest = upgrade_in_place(&mut tcp, uri, &TlsOptions::default(), headers).await?;
    // Out of tokio's reactor: from here on the downlink reactor reads it.
    let tcp = tcp.into_std().map_err(ConnectError::Tcp)?;
    DirectConnection::start(tcp, rest, config, max_audio_bytes, media, reactor).map_err(ConnectError::Tcp)
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // tungstenite's handshake callback type
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    #[test]
    fn the_config_reads_little_and_takes_the_larger_limit() {
        let options =
            ConnectionOptions { max_message_bytes: 1000, max_text_bytes: 3000, ..ConnectionOptions::default() };
        let config = websocket_config(&options);
        assert_eq!(config.read_buffer_size, 8 * 1024);
        assert_eq!((config.max_message_size, config.max_frame_size), (Some(3000), Some(3000)));
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
        let _connection =
            connect(&uri, WebSocketConfig::default(), &TlsOptions::default(), &headers, &[], None).await.unwrap();
        assert_eq!(server.await.unwrap().as_deref(), Some("Bearer secret"));
    }
}
