//! A connection to the server, read and written as WebSocket messages
//! whatever carries it: a WebSocket, or AudioSocket's plain TCP, where each
//! binary message is one whole AudioSocket message.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::{Sink, Stream};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;
use tokio_util::codec::Framed;

use crate::settings::security::HostPattern;
use crate::settings::ServerUri;
use crate::wire::direct::DirectConnection;
use crate::wire::protocol::audiosocket::Framing;
use crate::wire::websocket::{ConnectError, Io};

pub enum Connection {
    WebSocket(WebSocketStream<Box<dyn Io>>),
    /// A `ws://` WebSocket whose media skips the task both ways.
    Direct(Arc<DirectConnection>),
    AudioSocket(AudioSocketStream),
}

pub struct AudioSocketStream {
    framed: Framed<TcpStream, Framing>,
    /// A close was asked for: the next flush shuts the sending side down.
    closing: bool,
}

impl AudioSocketStream {
    pub fn new(tcp: TcpStream) -> Self {
        AudioSocketStream { framed: Framed::new(tcp, Framing), closing: false }
    }
}

impl Stream for Connection {
    type Item = Result<Message, WsError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.get_mut() {
            Connection::WebSocket(ws) => Pin::new(ws).poll_next(cx),
            Connection::Direct(direct) => direct.poll_next(cx),
            Connection::AudioSocket(tcp) => Pin::new(&mut tcp.framed)
                .poll_next(cx)
                .map(|next| next.map(|result| result.map(Message::Binary).map_err(WsError::Io))),
        }
    }
}

impl Sink<Message> for Connection {
    type Error = WsError;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        match self.get_mut() {
            Connection::WebSocket(ws) => Pin::new(ws).poll_ready(cx),
            Connection::Direct(_) => Poll::Ready(Ok(())),
            Connection::AudioSocket(tcp) => Pin::new(&mut tcp.framed).poll_ready(cx).map_err(WsError::Io),
        }
    }

    fn start_send(self: Pin<&mut Self>, message: Message) -> Result<(), WsError> {
        match self.get_mut() {
            Connection::WebSocket(ws) => Pin::new(ws).start_send(message),
            Connection::Direct(direct) => direct.start_send(message),
            Connection::AudioSocket(tcp) => match message {
                Message::Binary(bytes) => Pin::new(&mut tcp.framed).start_send(bytes).map_err(WsError::Io),
                Message::Close(_) => {
                    tcp.closing = true;
                    Ok(())
                }
                // AudioSocket has no text, and no pings: TCP keeps the liveness.
                _ => Ok(()),
            },
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        match self.get_mut() {
            Connection::WebSocket(ws) => Pin::new(ws).poll_flush(cx),
            Connection::Direct(direct) => direct.poll_flush(cx),
            Connection::AudioSocket(tcp) if tcp.closing => {
                Pin::new(&mut tcp.framed).poll_close(cx).map_err(WsError::Io)
            }
            Connection::AudioSocket(tcp) => Pin::new(&mut tcp.framed).poll_flush(cx).map_err(WsError::Io),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        match self.get_mut() {
            Connection::WebSocket(ws) => Pin::new(ws).poll_close(cx),
            Connection::Direct(direct) => direct.poll_close(cx),
            Connection::AudioSocket(tcp) => Pin::new(&mut tcp.framed).poll_close(cx).map_err(WsError::Io),
        }
    }
}

/// AudioSocket's connection: TCP alone, no TLS and no HTTP; the address
/// checked as a WebSocket's is.
pub async fn connect_audiosocket(uri: &ServerUri, allowed_hosts: &[HostPattern]) -> Result<Connection, ConnectError> {
    let tcp = crate::wire::websocket::connect_tcp(uri, allowed_hosts).await?;
    Ok(Connection::AudioSocket(AudioSocketStream::new(tcp)))
}
