//! The TCP connection under a WebSocket or an AudioSocket stream.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::net::{TcpSocket, TcpStream};

use crate::settings::ServerUri;

/// Bounds what the kernel holds for a slow server (about 2 s at 16 kHz), so
/// that backlog is dropped, and counted, in our uplink queue instead.
const SEND_BUFFER_BYTES: u32 = 64 * 1024;

/// Why no TCP connection was made.
#[derive(Debug)]
pub(crate) enum TcpFailure {
    /// An address the host resolved to may not be reached; the rule that refused it.
    Barred(String),
    Io(io::Error),
}

/// Resolves `uri`'s host now (a name may point elsewhere since the last
/// attempt), passes every address it resolves to through `check`, and
/// connects to the first of those checked addresses that answers: the
/// socket goes to an address that was checked, never to a fresh lookup.
/// One refused address refuses the server.
pub(crate) async fn connect_checked(
    uri: &ServerUri,
    check: impl Fn(IpAddr) -> Result<(), String>,
) -> Result<TcpStream, TcpFailure> {
    let addresses: Vec<SocketAddr> =
        tokio::net::lookup_host((uri.host.as_str(), uri.port)).await.map_err(TcpFailure::Io)?.collect();
    if addresses.is_empty() {
        return Err(TcpFailure::Io(io::Error::new(io::ErrorKind::NotFound, format!("{} has no address", uri.host))));
    }
    for address in &addresses {
        check(address.ip()).map_err(TcpFailure::Barred)?;
    }
    connect_tcp(&addresses).await.map_err(TcpFailure::Io)
}

/// Connects to the first of `addresses` that answers.
async fn connect_tcp(addresses: &[SocketAddr]) -> io::Result<TcpStream> {
    let mut last_error = None;
    for &address in addresses {
        let socket = if address.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
        bound_send_buffer(&socket);
        match socket.connect(address).await {
            Ok(stream) => return Ok(stream),
            Err(error) => last_error = Some(error),
        }
    }
    Err(last_error.unwrap_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address")))
}

/// Asks the kernel to hold at most [`SEND_BUFFER_BYTES`] unsent, and checks
/// that it does. When it cannot be relied on, says so once per process
/// (the connection works all the same).
fn bound_send_buffer(socket: &TcpSocket) {
    static WARNED: AtomicBool = AtomicBool::new(false);
    let set = socket.set_send_buffer_size(SEND_BUFFER_BYTES);
    let Some(warning) = unbounded_send_buffer(set, socket.send_buffer_size()) else { return };
    if !WARNED.swap(true, Ordering::Relaxed) {
        tracing::warn!("{warning}");
    }
}

/// Why the send buffer is not bounded as the uplink's drop-oldest queue
/// needs, given what setting it and then reading it back returned.
fn unbounded_send_buffer(set: io::Result<()>, effective: io::Result<u32>) -> Option<String> {
    let consequence = "audio a slow server does not take then waits in the kernel and is sent late, instead of being \
                       dropped (and counted) in the uplink queue; calls still connect (said once per process)";
    match (set, effective) {
        (Err(error), _) => Some(format!(
            "TCP: the send buffer could not be bounded to {SEND_BUFFER_BYTES} bytes ({error}), so the kernel's own \
             size applies (on Linux up to net.ipv4.tcp_wmem's maximum, often 4 MiB): {consequence}"
        )),
        // Linux doubles the size asked for, for its bookkeeping; others keep it.
        (Ok(()), Ok(size)) if size > 2 * SEND_BUFFER_BYTES => Some(format!(
            "TCP: the send buffer is {size} bytes though {SEND_BUFFER_BYTES} were asked for: {consequence}"
        )),
        // Bounded, or set and not readable back: nothing to say.
        (Ok(()), _) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_send_buffer_is_bounded() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let stream = connect_tcp(&[SocketAddr::from(([127, 0, 0, 1], port))]).await.unwrap();
        let socket = TcpSocket::from_std_stream(stream.into_std().unwrap());
        let size = socket.send_buffer_size().unwrap();
        assert!((1..=2 * SEND_BUFFER_BYTES).contains(&size), "{size}");
    }

    #[tokio::test]
    async fn every_attempt_resolves_checks_each_address_and_connects_to_a_checked_one() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let uri = ServerUri::parse(&format!("ws://localhost:{port}/")).unwrap();
        let checked = std::sync::Mutex::new(Vec::new());
        let record = |address: IpAddr| {
            checked.lock().unwrap().push(address);
            Ok(())
        };
        for _ in 0..2 {
            let stream = connect_checked(&uri, record).await.unwrap();
            let peer = stream.peer_addr().unwrap();
            assert!(checked.lock().unwrap().contains(&peer.ip()), "connected to {peer}, an address it checked");
            listener.accept().await.unwrap();
        }
        let checked = checked.into_inner().unwrap();
        assert!(checked.len() >= 2 && checked.len() % 2 == 0, "each attempt checks every address: {checked:?}");
        assert!(checked.iter().all(IpAddr::is_loopback), "{checked:?}");

        let refused = connect_checked(&uri, |address| Err(format!("{address} refused"))).await.unwrap_err();
        assert!(matches!(&refused, TcpFailure::Barred(why) if why.ends_with(" refused")), "{refused:?}");
        let nobody = tokio::time::timeout(std::time::Duration::from_millis(100), listener.accept()).await;
        assert!(nobody.is_err(), "no connection after a refusal");
    }

    #[test]
    fn an_unbounded_send_buffer_is_told_with_what_it_means() {
        assert_eq!(unbounded_send_buffer(Ok(()), Ok(2 * SEND_BUFFER_BYTES)), None, "Linux doubles it");
        assert_eq!(unbounded_send_buffer(Ok(()), Ok(SEND_BUFFER_BYTES)), None);
        assert_eq!(unbounded_send_buffer(Ok(()), Err(io::Error::other("no getsockopt"))), None);
        let refused = unbounded_send_buffer(Err(io::Error::other("not permitted")), Ok(4 << 20)).unwrap();
        assert!(refused.starts_with("TCP: the send buffer could not be bounded to 65536 bytes (not permitted)"));
        assert!(refused.contains("instead of being dropped (and counted) in the uplink queue"), "{refused}");
        let larger = unbounded_send_buffer(Ok(()), Ok(4 << 20)).unwrap();
        assert!(larger.starts_with("TCP: the send buffer is 4194304 bytes though 65536 were asked for"), "{larger}");
    }
}
