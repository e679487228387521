//! The TCP connection under a WebSocket or an AudioSocket stream.

use std::io;

use tokio::net::{TcpSocket, TcpStream};

/// Bounds what the kernel holds for a slow server (about 2 s at 16 kHz), so
/// that backlog is dropped, and counted, in our uplink queue instead.
const SEND_BUFFER_BYTES: u32 = 64 * 1024;

/// Connects to the first of `host`'s addresses that answers.
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
