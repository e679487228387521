//! Calls from the WebSocket side: a client opens a WebSocket to the module
//! and asks for a call. Everything decided before a channel exists lives
//! here: admission of the upgrade (bearer token and its limits,
//! subprotocol, the listener's call limit), then the client's first message
//! ([`crate::call::first_message`]) within its token's scope, and the
//! progress events the client is told.
//!
//! [`upgrade`] and then [`admit_call`] run the admission on an accepted
//! stream; the FreeSWITCH side (`freeswitch::listener`) binds, accepts,
//! creates the channel and hands the socket to
//! [`crate::call::conversation::serve_inbound`].

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{header, HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;

use crate::call::first_message::{FirstMessage, InboundCall, Malformed, OutOfScope, MAX_FIRST_MESSAGE_BYTES};
use crate::call::token_usage::{retry_after_seconds, TokenRefusal, TokenSlot, TokenUsage};
use crate::settings::tokens::{TokenScope, Tokens};
use crate::wire::protocol::wsbridge::hangup_event;
use crate::wire::read_budget::ReadBudget;
use crate::wire::websocket::{Io, WebSocket};

/// How long a client may take to send its first message after the upgrade.
pub const FIRST_MESSAGE_TIMEOUT: Duration = Duration::from_secs(5);
/// The most a client's upgrade request may take.
pub const MAX_REQUEST_BYTES: usize = 8192;
/// The most read after the upgrade until the first message is in: the
/// message, its frame header, and a few control frames. Whatever a frame
/// header claims, no more is read (nor buffered) before it is accepted.
const FIRST_MESSAGE_READ_BYTES: usize = MAX_FIRST_MESSAGE_BYTES + 14 + 512;
pub use crate::wire::websocket::SUBPROTOCOL;

/// The token of an `Authorization: Bearer <token>` header.
pub fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Whether a `Sec-WebSocket-Protocol` header offers `WSBRIDGE`.
pub fn offers_subprotocol(header: &str) -> bool {
    header.split(',').any(|offered| offered.trim().eq_ignore_ascii_case(SUBPROTOCOL))
}

// ---------------------------------------------------------------- the call limit

/// Calls from the WebSocket side up now, counted from admission to the end of the call.
#[derive(Debug, Default)]
pub struct CallSlots {
    active: AtomicUsize,
}

/// One admitted client's place under the limit, given back on drop.
#[derive(Debug)]
pub struct Slot(Arc<CallSlots>);

impl CallSlots {
    /// A place when fewer than `limit` are taken.
    pub fn take(self: &Arc<Self>, limit: usize) -> Option<Slot> {
        let before = self.active.fetch_add(1, Ordering::AcqRel);
        if before >= limit {
            self.active.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Slot(self.clone()))
    }

    pub fn active(&self) -> usize {
        self.active.load(Ordering::Acquire)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::AcqRel);
    }
}

// ---------------------------------------------------------------- progress

/// Call progress the client is told about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    Ringing,
    EarlyMedia,
    Answered,
}

impl Progress {
    fn bit(self) -> u8 {
        match self {
            Progress::Ringing => 1,
            Progress::EarlyMedia => 2,
            Progress::Answered => 4,
        }
    }

    pub fn event(self) -> String {
        let name = match self {
            Progress::Ringing => "ringing",
            Progress::EarlyMedia => "progress",
            Progress::Answered => "answered",
        };
        json!({ "event": name }).to_string()
    }
}

/// Tells each kind of progress once: FreeSWITCH may indicate ringing many times.
#[derive(Debug, Default)]
pub struct ProgressSeen(std::sync::atomic::AtomicU8);

impl ProgressSeen {
    /// The event to send, the first time `progress` is seen.
    pub fn first(&self, progress: Progress) -> Option<String> {
        let before = self.0.fetch_or(progress.bit(), Ordering::AcqRel);
        (before & progress.bit() == 0).then(|| progress.event())
    }
}

impl ProgressSeen {
    /// The hangup event, the first time the call is seen ending.
    pub fn first_hangup(&self, cause: &str) -> Option<String> {
        const HANGUP: u8 = 8;
        let before = self.0.fetch_or(HANGUP, Ordering::AcqRel);
        (before & HANGUP == 0).then(|| hangup_event(cause))
    }
}

// ---------------------------------------------------------------- admission

/// What admission checks an upgrade against.
#[derive(Debug, Clone)]
pub struct Admission {
    /// The listener's limit, over every token.
    pub max_calls: usize,
    pub slots: Arc<CallSlots>,
    /// Each token's calls up and call rate.
    pub usage: Arc<TokenUsage>,
    pub websocket: WebSocketConfig,
}

impl Admission {
    pub fn new(max_calls: usize, websocket: WebSocketConfig) -> Admission {
        Admission { max_calls, slots: Arc::default(), usage: Arc::default(), websocket }
    }
}

/// What the listener already knows of a client's address, before its request is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    Open,
    /// Outside `listen-acl`: HTTP 403.
    Forbidden,
    /// Backed off after too many failed authentications, for this much longer: HTTP 429.
    BackedOff(Duration),
}

/// Why a client was not admitted (for the log; the client was told).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// The upgrade failed or timed out; nothing was said.
    Upgrade(String),
    /// Outside `listen-acl`: answered 403.
    Forbidden,
    /// Backed off: answered 429.
    BackedOff,
    Unauthorized,
    /// At the listener's limit.
    Full,
    /// At the token's `max-calls`: HTTP 503.
    TokenFull(String),
    /// Over the token's `calls-per-second`: HTTP 429.
    TokenTooFast(String),
    /// Closed with 1008.
    NoFirstMessage(String),
    /// Closed with 1007.
    Malformed(String),
    /// The token may not make this call: closed with 1008.
    OutOfScope {
        token: String,
        why: String,
    },
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refused::Upgrade(why) => write!(f, "no WebSocket upgrade: {why}"),
            Refused::Forbidden => write!(f, "outside listen-acl; answered 403"),
            Refused::BackedOff => write!(f, "too many failed authentications lately; answered 429"),
            Refused::Unauthorized => write!(f, "no valid bearer token; answered 401"),
            Refused::Full => write!(f, "at listen-max-calls; answered 503"),
            Refused::TokenFull(token) => write!(f, "token {token} is at its max-calls; answered 503"),
            Refused::TokenTooFast(token) => write!(f, "token {token} is over its calls-per-second; answered 429"),
            Refused::NoFirstMessage(why) => write!(f, "{why}; closed with 1008"),
            Refused::Malformed(why) => write!(f, "malformed first message ({why}); closed with 1007"),
            Refused::OutOfScope { token, why } => write!(f, "token {token}: {why}; closed with 1008"),
        }
    }
}

/// An upgraded client: its token and its places under the limits.
pub struct Upgraded {
    pub socket: WebSocket,
    pub token: Arc<TokenScope>,
    slot: Slot,
    token_slot: TokenSlot,
    /// What may still be read before the first message is in.
    budget: ReadBudget,
}

/// An admitted client: its socket, its call, and its places under the limits
/// (held until the call ends).
pub struct Admitted {
    pub socket: WebSocket,
    pub call: InboundCall,
    pub slot: Slot,
    pub token_slot: TokenSlot,
}

fn refusal(status: StatusCode, text: &str) -> ErrorResponse {
    let mut response = ErrorResponse::new(Some(text.to_string()));
    *response.status_mut() = status;
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    response
}

fn too_many_requests(text: &str, wait: Duration) -> ErrorResponse {
    let mut response = refusal(StatusCode::TOO_MANY_REQUESTS, text);
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after_seconds(wait)));
    response
}

/// Close reasons are at most 123 bytes.
fn close_reason(text: &str) -> String {
    let mut end = text.len().min(123);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

async fn close_with(socket: &mut WebSocket, code: CloseCode, reason: &str) {
    let frame = CloseFrame { code, reason: close_reason(reason).into() };
    let _ = timeout(Duration::from_secs(1), async {
        socket.send(Message::Close(Some(frame))).await?;
        // Let the client answer the close, so the TCP close is clean.
        while let Some(Ok(_)) = socket.next().await {}
        Ok::<(), tokio_tungstenite::tungstenite::Error>(())
    })
    .await;
}

/// The client's first message, within its time and size limits.
async fn read_first_message(socket: &mut WebSocket) -> Result<FirstMessage, Refused> {
    let over = || format!("the first message is over {MAX_FIRST_MESSAGE_BYTES} bytes");
    let first = timeout(FIRST_MESSAGE_TIMEOUT, async {
        loop {
            match socket.next().await {
                Some(Ok(Message::Text(text))) => return Ok(text),
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                Some(Ok(Message::Binary(_))) => return Err("the first message must be text JSON".to_string()),
                Some(Ok(Message::Close(_))) | None => return Err("the client left before its first message".into()),
                Some(Err(tokio_tungstenite::tungstenite::Error::Capacity(_))) => return Err(over()),
                Some(Err(tokio_tungstenite::tungstenite::Error::Io(error)))
                    if error.kind() == std::io::ErrorKind::InvalidData =>
                {
                    return Err(error.to_string())
                }
                Some(Err(error)) => return Err(error.to_string()),
            }
        }
    })
    .await;
    match first {
        Err(_) => Err(Refused::NoFirstMessage("no first message within 5 s".into())),
        Ok(Err(why)) => Err(Refused::NoFirstMessage(why)),
        Ok(Ok(text)) if text.len() > MAX_FIRST_MESSAGE_BYTES => Err(Refused::NoFirstMessage(over())),
        Ok(Ok(text)) => FirstMessage::parse(text.as_str()).map_err(|Malformed(why)| Refused::Malformed(why)),
    }
}

/// A place for a call of `token` under its limits and the listener's, or
/// what the client is answered and why.
#[allow(clippy::result_large_err)] // tungstenite's ErrorResponse
fn places(token: &TokenScope, admission: &Admission) -> Result<(Slot, TokenSlot), (ErrorResponse, Refused)> {
    let name = || token.name.clone();
    let token_slot = match admission.usage.take(token, Instant::now()) {
        Ok(token_slot) => token_slot,
        Err(TokenRefusal::Full) => {
            let answer = refusal(StatusCode::SERVICE_UNAVAILABLE, "the token's calls are up");
            return Err((answer, Refused::TokenFull(name())));
        }
        Err(TokenRefusal::TooFast(wait)) => {
            let answer = too_many_requests("the token's call rate is reached", wait);
            return Err((answer, Refused::TokenTooFast(name())));
        }
    };
    let Some(slot) = admission.slots.take(admission.max_calls) else {
        return Err((refusal(StatusCode::SERVICE_UNAVAILABLE, "too many calls"), Refused::Full));
    };
    Ok((slot, token_slot))
}

/// The answer to a client the gate stops, and why.
fn gated(gate: Gate) -> Option<(ErrorResponse, Refused)> {
    match gate {
        Gate::Open => None,
        Gate::Forbidden => Some((refusal(StatusCode::FORBIDDEN, "your address may not call"), Refused::Forbidden)),
        Gate::BackedOff(wait) => Some((too_many_requests("too many failed authentications", wait), Refused::BackedOff)),
    }
}

/// Upgrades `stream` by `deadline` if `gate` is open, its request carries
/// one of `tokens`, and the token's and the listener's limits leave room
/// for a call. At most [`MAX_REQUEST_BYTES`] of the request are read.
#[allow(clippy::result_large_err)] // tungstenite's handshake callback type
pub async fn upgrade(
    stream: Box<dyn Io>,
    admission: &Admission,
    tokens: &Tokens,
    gate: Gate,
    deadline: tokio::time::Instant,
) -> Result<Upgraded, Refused> {
    let over = format!("the upgrade request is over {MAX_REQUEST_BYTES} bytes");
    let (stream, budget) = ReadBudget::wrap(stream, MAX_REQUEST_BYTES, &over);
    let mut granted = None;
    let mut refused = None;
    let callback = |request: &Request, mut response: Response| {
        if let Some((answer, why)) = gated(gate) {
            refused = Some(why);
            return Err(answer);
        }
        let authorization = request.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        let Some(token) = tokens.find(authorization.and_then(bearer_token)) else {
            refused = Some(Refused::Unauthorized);
            return Err(refusal(StatusCode::UNAUTHORIZED, "a valid bearer token is required"));
        };
        let (slot, token_slot) = places(&token, admission).map_err(|(answer, why)| {
            refused = Some(why);
            answer
        })?;
        granted = Some((token, slot, token_slot));
        let offered = request.headers().get(header::SEC_WEBSOCKET_PROTOCOL).and_then(|v| v.to_str().ok());
        if offered.is_some_and(offers_subprotocol) {
            response.headers_mut().insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(SUBPROTOCOL));
        }
        Ok(response)
    };
    let accepting = tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(admission.websocket));
    let socket = match tokio::time::timeout_at(deadline, accepting).await {
        Err(_) => return Err(Refused::Upgrade("no upgrade in time".into())),
        Ok(Err(error)) => return Err(refused.unwrap_or_else(|| Refused::Upgrade(error.to_string()))),
        Ok(Ok(socket)) => socket,
    };
    let (token, slot, token_slot) = granted.ok_or(Refused::Upgrade("upgraded without a call slot".into()))?;
    budget.set(FIRST_MESSAGE_READ_BYTES, &format!("the first message is over {MAX_FIRST_MESSAGE_BYTES} bytes"));
    Ok(Upgraded { socket, token, slot, token_slot, budget })
}

/// Waits for an upgraded client's first message and checks it against its
/// token's scope; `peer` is the client. Nothing is created before this
/// returns Ok; a refused client is closed with the reason.
pub async fn admit_call(upgraded: Upgraded, peer: SocketAddr) -> Result<Admitted, Refused> {
    let Upgraded { mut socket, token, slot, token_slot, budget } = upgraded;
    let refused = match read_first_message(&mut socket).await {
        Ok(first) => match InboundCall::scoped(first, &token, peer) {
            Ok(call) => {
                budget.lift();
                return Ok(Admitted { socket, call, slot, token_slot });
            }
            Err(OutOfScope(why)) => Refused::OutOfScope { token: token.name.clone(), why },
        },
        Err(refused) => refused,
    };
    // The places are free before the close handshake, which may take a second.
    drop((slot, token_slot));
    let (code, why) = match &refused {
        Refused::Malformed(why) => (CloseCode::Invalid, why.as_str()),
        Refused::NoFirstMessage(why) | Refused::OutOfScope { why, .. } => (CloseCode::Policy, why.as_str()),
        _ => (CloseCode::Policy, "refused"),
    };
    close_with(&mut socket, code, why).await;
    Err(refused)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::{TcpListener, TcpStream};
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;

    const SECRET: &str = "a-secret-of-twenty-plus";

    #[test]
    fn bearer_tokens_and_subprotocols_are_read() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer  abc "), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer"), None);
        assert!(offers_subprotocol("chat, WSBRIDGE"));
        assert!(!offers_subprotocol("chat"));
    }

    #[test]
    fn slots_stop_at_the_limit_and_come_back() {
        let slots = Arc::new(CallSlots::default());
        let first = slots.take(2).unwrap();
        let _second = slots.take(2).unwrap();
        assert!(slots.take(2).is_none());
        assert_eq!(slots.active(), 2);
        drop(first);
        assert!(slots.take(2).is_some());
    }

    #[test]
    fn progress_is_told_once_each() {
        let seen = ProgressSeen::default();
        assert_eq!(seen.first(Progress::Ringing).as_deref(), Some(r#"{"event":"ringing"}"#));
        assert_eq!(seen.first(Progress::Ringing), None);
        assert_eq!(seen.first(Progress::EarlyMedia).as_deref(), Some(r#"{"event":"progress"}"#));
        assert_eq!(seen.first(Progress::Answered).as_deref(), Some(r#"{"event":"answered"}"#));
        assert_eq!(hangup_event("NORMAL_CLEARING"), r#"{"event":"hangup","cause":"NORMAL_CLEARING"}"#);
        assert_eq!(seen.first_hangup("USER_BUSY").as_deref(), Some(r#"{"event":"hangup","cause":"USER_BUSY"}"#));
        assert_eq!(seen.first_hangup("USER_BUSY"), None, "told once");
        assert_eq!(seen.first(Progress::Answered), None);
    }

    fn admission(max_calls: usize) -> Admission {
        let mut websocket = WebSocketConfig::default();
        websocket.max_message_size = Some(64 << 10);
        Admission::new(max_calls, websocket)
    }

    fn tokens(extra: &[(&str, &str)]) -> Tokens {
        let mut element: Vec<(String, String)> = vec![
            ("name".into(), "bot-a".into()),
            ("secret".into(), SECRET.into()),
            ("destinations".into(), "5\\d{3}".into()),
        ];
        element.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let (tokens, problems) = Tokens::scoped(&[element], "public");
        assert!(problems.is_empty(), "{problems:?}");
        tokens.with_unscoped(Tokens::unscoped("unscoped-secret", "public"))
    }

    /// Serves one admission on a fresh port; returns the port and the task.
    async fn serve(
        admission: Admission,
        tokens: Tokens,
    ) -> (u16, tokio::task::JoinHandle<Result<InboundCall, Refused>>) {
        serve_gated(admission, tokens, Gate::Open).await
    }

    async fn serve_gated(
        admission: Admission,
        tokens: Tokens,
        gate: Gate,
    ) -> (u16, tokio::task::JoinHandle<Result<InboundCall, Refused>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let (tcp, peer) = listener.accept().await.unwrap();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
            let upgraded = upgrade(Box::new(tcp), &admission, &tokens, gate, deadline).await?;
            let admitted = admit_call(upgraded, peer).await?;
            Ok(admitted.call)
        });
        (port, task)
    }

    fn request(port: u16, token: Option<&str>) -> tokio_tungstenite::tungstenite::handshake::client::Request {
        let mut request = format!("ws://127.0.0.1:{port}/").into_client_request().unwrap();
        request.headers_mut().insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static("WSBRIDGE"));
        if let Some(token) = token {
            request.headers_mut().insert(header::AUTHORIZATION, format!("Bearer {token}").parse().unwrap());
        }
        request
    }

    type Client = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

    async fn close_of(client: &mut Client) -> Option<(u16, String)> {
        loop {
            match client.next().await {
                Some(Ok(Message::Close(frame))) => return frame.map(|f| (u16::from(f.code), f.reason.to_string())),
                Some(Ok(_)) => continue,
                _ => return None,
            }
        }
    }

    async fn close_code(client: &mut Client) -> Option<u16> {
        close_of(client).await.map(|(code, _)| code)
    }

    /// The HTTP status a refused upgrade got, and its Retry-After.
    async fn refused_status(port: u16, token: Option<&str>) -> (u16, Option<String>) {
        match tokio_tungstenite::connect_async(request(port, token)).await.unwrap_err() {
            tokio_tungstenite::tungstenite::Error::Http(response) => (
                response.status().as_u16(),
                response.headers().get(header::RETRY_AFTER).map(|v| v.to_str().unwrap().to_string()),
            ),
            other => panic!("{other}"),
        }
    }

    #[tokio::test]
    async fn a_good_client_is_admitted_with_the_subprotocol() {
        let (port, task) = serve(admission(1), tokens(&[])).await;
        let (mut client, response) = tokio_tungstenite::connect_async(request(port, Some(SECRET))).await.unwrap();
        assert_eq!(response.headers().get(header::SEC_WEBSOCKET_PROTOCOL).unwrap(), "WSBRIDGE");
        client.send(Message::text(r#"{"destination":"5000"}"#)).await.unwrap();
        let call = task.await.unwrap().unwrap();
        assert_eq!((call.destination.as_str(), call.token.as_str()), ("5000", "bot-a"));
    }

    #[tokio::test]
    async fn a_wrong_or_missing_token_gets_401() {
        for token in [Some("wrong"), None] {
            let (port, task) = serve(admission(1), tokens(&[])).await;
            assert_eq!(refused_status(port, token).await, (401, None));
            assert_eq!(task.await.unwrap().unwrap_err(), Refused::Unauthorized);
        }
    }

    #[tokio::test]
    async fn over_the_limit_gets_503() {
        let admission = admission(1);
        let _held = admission.slots.take(1).unwrap();
        let (port, task) = serve(admission, tokens(&[])).await;
        assert_eq!(refused_status(port, Some(SECRET)).await, (503, None));
        assert_eq!(task.await.unwrap().unwrap_err(), Refused::Full);
    }

    #[tokio::test]
    async fn over_the_tokens_limits_gets_503_and_429() {
        let admission = admission(10);
        let limited = tokens(&[("max-calls", "1")]);
        let _held = admission.usage.take(&limited.find(Some(SECRET)).unwrap(), Instant::now()).unwrap();
        let (port, task) = serve(admission.clone(), limited).await;
        assert_eq!(refused_status(port, Some(SECRET)).await, (503, None));
        assert_eq!(task.await.unwrap().unwrap_err(), Refused::TokenFull("bot-a".into()));
        assert_eq!(admission.slots.active(), 0, "the listener's place is not taken");

        let slow = tokens(&[("calls-per-second", "0.5")]);
        let _first = admission.usage.take(&slow.find(Some(SECRET)).unwrap(), Instant::now());
        let (port, task) = serve(admission.clone(), slow.clone()).await;
        assert_eq!(refused_status(port, Some(SECRET)).await, (429, Some("2".to_string())));
        assert_eq!(task.await.unwrap().unwrap_err(), Refused::TokenTooFast("bot-a".into()));
        let (port, task) = serve(admission, slow).await;
        let (mut client, _) = tokio_tungstenite::connect_async(request(port, Some("unscoped-secret"))).await.unwrap();
        client.send(Message::text(r#"{"destination":"anything"}"#)).await.unwrap();
        assert_eq!(task.await.unwrap().unwrap().token, "unscoped-1", "another token is not limited");
    }

    #[tokio::test]
    async fn out_of_scope_gets_1008_with_the_reason() {
        let scoped = tokens(&[("caller-id-numbers", "\\+1555\\d{7}")]);
        for (first, reason) in [
            (
                r#"{"destination":"0044123","caller_id_number":"+15551234567"}"#,
                "destination not allowed for this token",
            ),
            (r#"{"destination":"5000","caller_id_number":"+4420"}"#, "caller ID number not allowed for this token"),
        ] {
            let (port, task) = serve(admission(1), scoped.clone()).await;
            let (mut client, _) = tokio_tungstenite::connect_async(request(port, Some(SECRET))).await.unwrap();
            client.send(Message::text(first)).await.unwrap();
            assert_eq!(close_of(&mut client).await, Some((1008, reason.to_string())));
            let Err(Refused::OutOfScope { token, why }) = task.await.unwrap() else { panic!("{first}") };
            assert_eq!((token.as_str(), why.as_str()), ("bot-a", reason));
        }
    }

    #[tokio::test]
    async fn malformed_gets_1007_and_binary_gets_1008() {
        let (port, task) = serve(admission(1), tokens(&[])).await;
        let (mut client, _) = tokio_tungstenite::connect_async(request(port, Some(SECRET))).await.unwrap();
        client.send(Message::text(r#"{"destination":""}"#)).await.unwrap();
        assert_eq!(close_code(&mut client).await, Some(1007));
        assert!(matches!(task.await.unwrap(), Err(Refused::Malformed(_))));

        let (port, task) = serve(admission(1), tokens(&[])).await;
        let (mut client, _) = tokio_tungstenite::connect_async(request(port, Some(SECRET))).await.unwrap();
        client.send(Message::binary(vec![0u8; 640])).await.unwrap();
        assert_eq!(close_code(&mut client).await, Some(1008));
        assert!(matches!(task.await.unwrap(), Err(Refused::NoFirstMessage(_))));

        let (port, task) = serve(admission(1), tokens(&[])).await;
        let (mut client, _) = tokio_tungstenite::connect_async(request(port, Some(SECRET))).await.unwrap();
        client.send(Message::text(format!(r#"{{"destination":"1","p":"{}"}}"#, "x".repeat(5000)))).await.unwrap();
        assert_eq!(close_code(&mut client).await, Some(1008), "over 4 KiB");
        assert!(matches!(task.await.unwrap(), Err(Refused::NoFirstMessage(_))));
    }

    #[tokio::test]
    async fn the_gate_answers_403_and_429_whatever_the_token() {
        let (port, task) = serve_gated(admission(1), tokens(&[]), Gate::Forbidden).await;
        assert_eq!(refused_status(port, Some(SECRET)).await, (403, None));
        assert_eq!(task.await.unwrap().unwrap_err(), Refused::Forbidden);
        let wait = Duration::from_millis(59_100);
        let (port, task) = serve_gated(admission(1), tokens(&[]), Gate::BackedOff(wait)).await;
        assert_eq!(refused_status(port, Some(SECRET)).await, (429, Some("60".to_string())));
        assert_eq!(task.await.unwrap().unwrap_err(), Refused::BackedOff);
    }

    /// A first message whose frame claims 1 MiB is refused once 4 KiB and a
    /// little are in, not when the whole MiB has been buffered.
    #[tokio::test]
    async fn the_first_message_is_cut_at_4_kib_while_it_is_read() {
        use tokio::io::AsyncWriteExt;
        let mut websocket = WebSocketConfig::default();
        websocket.max_message_size = Some(1 << 20);
        websocket.max_frame_size = Some(1 << 20);
        let (port, task) = serve(Admission::new(1, websocket), tokens(&[])).await;
        let (mut client, _) = tokio_tungstenite::connect_async(request(port, Some(SECRET))).await.unwrap();
        // A masked text frame header for 1 MiB, then 16 KiB of it, then nothing.
        let length = 1u64 << 20;
        let mut frame = vec![0x81, 0x80 | 127];
        frame.extend_from_slice(&length.to_be_bytes());
        frame.extend_from_slice(&[0, 0, 0, 0]);
        frame.extend(std::iter::repeat_n(b'x', 16 << 10));
        let tcp = match client.get_mut() {
            tokio_tungstenite::MaybeTlsStream::Plain(tcp) => tcp,
            _ => unreachable!(),
        };
        let started = tokio::time::Instant::now();
        tcp.write_all(&frame).await.unwrap();
        let refused = tokio::time::timeout(Duration::from_secs(2), task).await.expect("refused at once").unwrap();
        assert_eq!(refused.unwrap_err(), Refused::NoFirstMessage("the first message is over 4096 bytes".into()));
        assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
    }

    #[tokio::test]
    async fn an_oversized_upgrade_request_is_cut() {
        let (port, task) = serve(admission(1), tokens(&[])).await;
        let mut request = request(port, Some(SECRET));
        request.headers_mut().insert("x-padding", "p".repeat(10_000).parse().unwrap());
        assert!(tokio_tungstenite::connect_async(request).await.is_err());
        let Err(Refused::Upgrade(why)) = task.await.unwrap() else { panic!("refused") };
        assert!(why.contains("over 8192 bytes"), "{why}");
    }

    #[tokio::test]
    async fn silence_after_the_upgrade_gets_1008_after_5_s() {
        let (port, task) = serve(admission(1), tokens(&[])).await;
        let (mut client, _) = tokio_tungstenite::connect_async(request(port, Some(SECRET))).await.unwrap();
        let started = tokio::time::Instant::now();
        assert_eq!(close_code(&mut client).await, Some(1008));
        assert!(started.elapsed() >= FIRST_MESSAGE_TIMEOUT);
        assert!(matches!(task.await.unwrap(), Err(Refused::NoFirstMessage(_))));
    }
}
