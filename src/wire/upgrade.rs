//! The HTTP upgrade to WebSocket, client side: the request, and the check
//! of the server's answer.
//!
//! The request is written here rather than by tungstenite because its
//! client fails a server that does not echo the requested subprotocol, and
//! the original module's servers are not required to.

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_rustls::rustls;
use tokio_tungstenite::tungstenite::handshake::client::generate_key;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;

use super::tls_errors::describe_rustls_error;
use crate::settings::options::TlsOptions;
use crate::settings::ServerUri;

/// The WebSocket subprotocol of mod_wsbridge, asked for by our client and
/// offered by our listener.
pub const SUBPROTOCOL: &str = "WSBRIDGE";
const MAX_RESPONSE_HEAD_BYTES: usize = 16 * 1024;

/// Why an upgrade failed.
#[derive(Debug)]
pub(super) enum UpgradeError {
    /// The TLS under it: in TLS 1.3 a server refuses our client certificate
    /// after the handshake, so its alert comes during the upgrade.
    Tls(String),
    /// The HTTP exchange, or an answer that is not the upgrade asked for.
    Http(String),
    /// The server refused the request's credentials: HTTP 401 or 403, with the reason phrase.
    Refused(u16, String),
}

/// Asks `io`'s server to upgrade to WebSocket, and checks its answer.
pub(super) async fn upgrade<S: AsyncRead + AsyncWrite + Unpin>(
    mut io: S,
    uri: &ServerUri,
    config: WebSocketConfig,
    tls: &TlsOptions,
    headers: &[(String, String)],
) -> Result<WebSocketStream<S>, UpgradeError> {
    let rest = upgrade_in_place(&mut io, uri, tls, headers).await?;
    Ok(WebSocketStream::from_partially_read(io, rest, Role::Client, Some(config)).await)
}

/// The upgrade alone, on `io`: what followed the server's answer.
pub(super) async fn upgrade_in_place<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    uri: &ServerUri,
    tls: &TlsOptions,
    headers: &[(String, String)],
) -> Result<Vec<u8>, UpgradeError> {
    let key = generate_key();
    let write_error = |error: io::Error| io_failure("sending the upgrade request", error, tls);
    io.write_all(request(uri, &key, headers).as_bytes()).await.map_err(write_error)?;
    io.flush().await.map_err(write_error)?;
    read_response(io, &key, tls).await
}

/// The upgrade request, with the caller's extra `headers`.
fn request(uri: &ServerUri, key: &str, headers: &[(String, String)]) -> String {
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
    request
}

/// A read or write that failed while `doing`: a TLS refusal told in words, or the I/O error.
fn io_failure(doing: &str, error: io::Error, tls: &TlsOptions) -> UpgradeError {
    match error.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) {
        Some(tls_error) => UpgradeError::Tls(describe_rustls_error(tls_error, tls)),
        None => UpgradeError::Http(format!("{doing}: {error}")),
    }
}

/// Reads the response head and checks it; returns what followed the head.
async fn read_response<S: AsyncRead + Unpin>(io: &mut S, key: &str, tls: &TlsOptions) -> Result<Vec<u8>, UpgradeError> {
    let mut received = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        let count =
            io.read(&mut chunk).await.map_err(|error| io_failure("reading the upgrade response", error, tls))?;
        if count == 0 {
            return Err(UpgradeError::Http("the server closed the connection before answering the upgrade".into()));
        }
        received.extend_from_slice(&chunk[..count]);
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut response = httparse::Response::new(&mut headers);
        match response.parse(&received) {
            Ok(httparse::Status::Complete(head_length)) => {
                if let Some(code @ (401 | 403)) = response.code {
                    let reason: String = response.reason.unwrap_or("").chars().take(64).collect();
                    return Err(UpgradeError::Refused(code, reason));
                }
                check_response(&response, key).map_err(UpgradeError::Http)?;
                return Ok(received[head_length..].to_vec());
            }
            Ok(httparse::Status::Partial) if received.len() < MAX_RESPONSE_HEAD_BYTES => continue,
            Ok(httparse::Status::Partial) => {
                return Err(UpgradeError::Http(format!("upgrade response head over {MAX_RESPONSE_HEAD_BYTES} bytes")))
            }
            Err(error) => return Err(UpgradeError::Http(format!("malformed upgrade response: {error}"))),
        }
    }
}

/// Whether the server's answer is the upgrade asked for with `key`.
fn check_response(response: &httparse::Response<'_, '_>, key: &str) -> Result<(), String> {
    let header = |name: &str| {
        response
            .headers
            .iter()
            .find(|header| header.name.eq_ignore_ascii_case(name))
            .map(|header| String::from_utf8_lossy(header.value).trim().to_string())
    };
    let code = response.code.unwrap_or(0);
    if code != 101 {
        return Err(format!(
            "the server answered {code} {} instead of 101 Switching Protocols",
            response.reason.unwrap_or("")
        ));
    }
    if !header("Upgrade").is_some_and(|value| value.eq_ignore_ascii_case("websocket")) {
        return Err("the response has no 'Upgrade: websocket'".into());
    }
    if !header("Connection")
        .is_some_and(|value| value.split(',').any(|token| token.trim().eq_ignore_ascii_case("upgrade")))
    {
        return Err("the response has no 'Connection: Upgrade'".into());
    }
    if header("Sec-WebSocket-Accept").as_deref() != Some(derive_accept_key(key.as_bytes()).as_str()) {
        return Err("Sec-WebSocket-Accept does not match the key".into());
    }
    match header("Sec-WebSocket-Protocol") {
        Some(protocol) if !protocol.eq_ignore_ascii_case(SUBPROTOCOL) => {
            Err(format!("the server chose subprotocol '{protocol}', not {SUBPROTOCOL}"))
        }
        _ => Ok(()),
    }
}
