//! Opening the WebSocket: TCP, TLS for wss, and the HTTP upgrade.
//!
//! The upgrade request is written here rather than by tungstenite because
//! its client fails a server that does not echo the requested subprotocol,
//! and the original module's servers are not required to.

use std::fmt;
use std::io;
use std::sync::{Arc, OnceLock};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::rustls;
use tokio_tungstenite::tungstenite::handshake::client::generate_key;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;

use crate::settings::{Scheme, ServerUri};

pub const SUBPROTOCOL: &str = "WSBRIDGE";
/// Bounds what the kernel holds for a slow server (about 2 s at 16 kHz), so
/// that backlog is dropped, and counted, in our uplink queue instead.
const SEND_BUFFER_BYTES: u32 = 64 * 1024;
const MAX_RESPONSE_HEAD_BYTES: usize = 16 * 1024;

pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

pub type Connection = WebSocketStream<Box<dyn Io>>;

#[derive(Debug)]
pub enum ConnectError {
    Tcp(io::Error),
    Tls(io::Error),
    Handshake(String),
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectError::Tcp(error) => write!(f, "TCP connect failed: {error}"),
            ConnectError::Tls(error) => write!(f, "TLS handshake failed: {error}"),
            ConnectError::Handshake(why) => write!(f, "WebSocket handshake failed: {why}"),
        }
    }
}

impl std::error::Error for ConnectError {}

fn tls_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let mut roots = rustls::RootCertStore::empty();
            let native = rustls_native_certs::load_native_certs();
            for error in &native.errors {
                tracing::warn!("loading the system's CA certificates: {error}");
            }
            let (added, ignored) = roots.add_parsable_certificates(native.certs);
            tracing::debug!("TLS: {added} system CA certificates loaded, {ignored} ignored");
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .expect("ring supports the default TLS versions")
                .with_root_certificates(roots)
                .with_no_client_auth();
            Arc::new(config)
        })
        .clone()
}

/// Connects and upgrades. The caller bounds the time this takes.
pub async fn connect(uri: &ServerUri, config: WebSocketConfig) -> Result<Connection, ConnectError> {
    let tcp = connect_tcp(&uri.host, uri.port).await.map_err(ConnectError::Tcp)?;
    let _ = tcp.set_nodelay(true);
    let io: Box<dyn Io> = match uri.scheme {
        Scheme::Ws => Box::new(tcp),
        Scheme::Wss => {
            let name = rustls::pki_types::ServerName::try_from(uri.host.clone())
                .map_err(|error| ConnectError::Tls(io::Error::new(io::ErrorKind::InvalidInput, error)))?;
            let tls =
                tokio_rustls::TlsConnector::from(tls_config()).connect(name, tcp).await.map_err(ConnectError::Tls)?;
            Box::new(tls)
        }
    };
    upgrade(io, uri, config).await
}

async fn connect_tcp(host: &str, port: u16) -> io::Result<TcpStream> {
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

async fn upgrade(mut io: Box<dyn Io>, uri: &ServerUri, config: WebSocketConfig) -> Result<Connection, ConnectError> {
    let key = generate_key();
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: {SUBPROTOCOL}\r\nUser-Agent: mod_wsbridge/{}\r\n\r\n",
        uri.resource,
        uri.host_header(),
        env!("CARGO_PKG_VERSION"),
    );
    let write_error = |error: io::Error| ConnectError::Handshake(format!("sending the upgrade request: {error}"));
    io.write_all(request.as_bytes()).await.map_err(write_error)?;
    io.flush().await.map_err(write_error)?;

    let mut received = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        let count = io
            .read(&mut chunk)
            .await
            .map_err(|error| ConnectError::Handshake(format!("reading the upgrade response: {error}")))?;
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
