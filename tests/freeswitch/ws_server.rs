//! The WebSocket server inside the tests: one listener on loopback, each
//! connection handed to the test that registered its path.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap())
}

pub struct Connection {
    pub subprotocol: Option<String>,
    /// The upgrade request's headers, names in lower case.
    pub headers: Vec<(String, String)>,
    pub ws: WebSocketStream<TcpStream>,
}

type Routes = Arc<Mutex<HashMap<String, mpsc::UnboundedSender<Connection>>>>;

pub struct Router {
    pub port: u16,
    routes: Routes,
}

impl Router {
    pub fn start() -> Router {
        let routes: Routes = Arc::default();
        let listener = runtime().block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        let port = listener.local_addr().unwrap().port();
        let accept_routes = routes.clone();
        runtime().spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { continue };
                // As any real-time server should: without it, Nagle holds each small
                // message until the module's ACK, and once a test server stops
                // reading the uplink those ACKs are delayed ones (40 ms or more).
                let _ = tcp.set_nodelay(true);
                let routes = accept_routes.clone();
                tokio::spawn(async move {
                    type Seen = (String, Option<String>, Vec<(String, String)>);
                    let seen: Arc<Mutex<Seen>> = Arc::default();
                    let seen_in_callback = seen.clone();
                    let ws = tokio_tungstenite::accept_hdr_async(tcp, move |request: &Request, response: Response| {
                        let protocol = request
                            .headers()
                            .get("Sec-WebSocket-Protocol")
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_string);
                        let headers = request
                            .headers()
                            .iter()
                            .map(|(name, value)| (name.as_str().to_string(), value.to_str().unwrap_or("").to_string()))
                            .collect();
                        *seen_in_callback.lock().unwrap() = (request.uri().path().to_string(), protocol, headers);
                        Ok(response)
                    })
                    .await;
                    let Ok(ws) = ws else { return };
                    let (path, subprotocol, headers) = seen.lock().unwrap().clone();
                    let sender = routes.lock().unwrap().get(&path).cloned();
                    match sender {
                        Some(sender) => {
                            let _ = sender.send(Connection { subprotocol, headers, ws });
                        }
                        None => eprintln!("test server: no test waits for {path}"),
                    }
                });
            }
        });
        Router { port, routes }
    }

    pub fn base(&self) -> String {
        format!("ws://127.0.0.1:{}", self.port)
    }

    /// Connections to `path` from now on.
    pub fn expect(&self, path: &str) -> Incoming {
        let (sender, receiver) = mpsc::unbounded_channel();
        self.routes.lock().unwrap().insert(path.to_string(), sender);
        Incoming { receiver }
    }
}

pub struct Incoming {
    receiver: mpsc::UnboundedReceiver<Connection>,
}

impl Incoming {
    /// The next connection, awaited on the test runtime.
    pub async fn recv(&mut self) -> Option<Connection> {
        self.receiver.recv().await
    }

    /// True when no connection comes within `limit`.
    pub fn nothing_within(&mut self, limit: Duration) -> bool {
        runtime().block_on(async { tokio::time::timeout(limit, self.receiver.recv()).await }).is_err()
    }

    pub fn next(&mut self, limit: Duration) -> Connection {
        runtime()
            .block_on(async { tokio::time::timeout(limit, self.receiver.recv()).await })
            .expect("no WebSocket connection in time")
            .expect("router gone")
    }
}

/// What the server saw of one call.
#[derive(Debug, Default)]
pub struct Received {
    pub texts: Vec<String>,
    /// (arrival seconds since the first message, frame bytes)
    pub frames: Vec<(f64, Vec<u8>)>,
    pub close_code: Option<u16>,
    pub close_reason: Option<String>,
    pub closed: bool,
}

impl Received {
    pub fn samples(&self) -> Vec<i16> {
        self.frames
            .iter()
            .flat_map(|(_, bytes)| bytes.chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]])))
            .collect()
    }
}

impl Connection {
    /// Reads until the peer closes or `limit` passes.
    pub async fn receive_all(&mut self, limit: Duration) -> Received {
        let mut received = Received::default();
        let start = tokio::time::Instant::now();
        let deadline = start + limit;
        while let Ok(Some(message)) = tokio::time::timeout_at(deadline, self.ws.next()).await {
            match message {
                Ok(Message::Text(text)) => received.texts.push(text.to_string()),
                Ok(Message::Binary(data)) => received.frames.push((start.elapsed().as_secs_f64(), data.to_vec())),
                Ok(Message::Close(frame)) => {
                    received.closed = true;
                    received.close_reason = frame.as_ref().map(|f| f.reason.to_string());
                    received.close_code = frame.map(|f| u16::from(f.code));
                    break;
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        received
    }

    pub async fn first_text(&mut self) -> String {
        loop {
            match tokio::time::timeout(Duration::from_secs(5), self.ws.next()).await {
                Ok(Some(Ok(Message::Text(text)))) => return text.to_string(),
                Ok(Some(Ok(_))) => continue,
                other => panic!("no first message: {other:?}"),
            }
        }
    }

    pub async fn send_pcm(&mut self, samples: &[i16], chunk_bytes: usize) {
        let bytes: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
        for chunk in bytes.chunks(chunk_bytes) {
            self.ws.feed(Message::Binary(chunk.to_vec().into())).await.unwrap();
        }
        self.ws.flush().await.unwrap();
    }

    pub async fn close(&mut self) {
        let _ = self.ws.close(None).await;
        let _ = tokio::time::timeout(Duration::from_secs(2), async { while let Some(Ok(_)) = self.ws.next().await {} })
            .await;
    }
}
