//! Calls from the WebSocket side: a client opens a WebSocket to the module
//! and asks for a call. Everything decided before a channel exists lives
//! here, as pure code: admission of the upgrade (bearer token, subprotocol,
//! the call limit), the client's first message, the variables it may set,
//! and the progress events it is told.
//!
//! [`admit`] runs the whole admission on an accepted stream; the FreeSWITCH
//! side (`freeswitch::listener`) binds, accepts, creates the channel and
//! hands the socket to [`crate::call::conversation::serve_inbound`].

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Map, Value};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{header, HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;

use crate::call::plan::CallPlan;
use crate::settings::tokens::Tokens;
use crate::settings::{CallSettings, CallTuning, ContentType, ServerUri};
use crate::wire::protocol::wsbridge::hangup_event;
use crate::wire::websocket::{Io, WebSocket};

/// Largest first message, in bytes.
pub const MAX_FIRST_MESSAGE_BYTES: usize = 4096;
/// How long a client may take to send its first message after the upgrade.
pub const FIRST_MESSAGE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the TCP accept may take to become an upgraded WebSocket (TLS included).
pub const UPGRADE_TIMEOUT: Duration = Duration::from_secs(5);
/// What `variables` may hold.
pub const MAX_VARIABLES: usize = 32;
pub const MAX_VARIABLE_NAME_CHARS: usize = 64;
pub const MAX_VARIABLES_BYTES: usize = 2048;
/// The prefix of every channel variable a client sets.
pub const VARIABLE_PREFIX: &str = "wsbridge_in_";
/// Longest destination or caller ID.
const MAX_FIELD_CHARS: usize = 128;
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

// ---------------------------------------------------------------- the first message

/// What the client asks for in its first message.
#[derive(Debug, Clone, PartialEq)]
pub struct FirstMessage {
    pub destination: String,
    pub caller_id_number: Option<String>,
    pub caller_id_name: Option<String>,
    pub content_type: ContentType,
    /// Channel variables, already named `wsbridge_in_<key>`, in the order given.
    pub variables: Vec<(String, String)>,
}

/// Why a first message is refused; the client is closed with 1007 and this.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed(pub String);

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn malformed(why: impl Into<String>) -> Malformed {
    Malformed(why.into())
}

/// A short printable text: no control characters, 1 to 128 characters.
fn text_field(object: &Map<String, Value>, field: &str, required: bool) -> Result<Option<String>, Malformed> {
    match object.get(field) {
        None | Some(Value::Null) if required => Err(malformed(format!("\"{field}\" is missing"))),
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => {
            let count = text.chars().count();
            if count == 0 || count > MAX_FIELD_CHARS {
                return Err(malformed(format!("\"{field}\" must hold 1 to {MAX_FIELD_CHARS} characters")));
            }
            if text.chars().any(char::is_control) {
                return Err(malformed(format!("\"{field}\" holds a control character")));
            }
            Ok(Some(text.clone()))
        }
        Some(_) => Err(malformed(format!("\"{field}\" must be a string"))),
    }
}

fn variables(value: Option<&Value>) -> Result<Vec<(String, String)>, Malformed> {
    let object = match value {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Object(object)) => object,
        Some(_) => return Err(malformed("\"variables\" must be an object")),
    };
    if object.len() > MAX_VARIABLES {
        return Err(malformed(format!("\"variables\" holds more than {MAX_VARIABLES} keys")));
    }
    let mut total = 0;
    let mut out = Vec::with_capacity(object.len());
    for (key, value) in object {
        let valid_key = !key.is_empty()
            && key.len() <= MAX_VARIABLE_NAME_CHARS
            && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid_key {
            let shown: String = key.chars().take(32).collect();
            return Err(malformed(format!(
                "variable name '{shown}' is not 1 to {MAX_VARIABLE_NAME_CHARS} of A-Z, a-z, 0-9 and _"
            )));
        }
        let value = match value {
            Value::String(text) => text.clone(),
            Value::Number(number) => number.to_string(),
            Value::Bool(flag) => flag.to_string(),
            _ => return Err(malformed(format!("variable '{key}' must be a string, a number or a boolean"))),
        };
        if value.chars().any(|c| c.is_control() && c != '\t') {
            return Err(malformed(format!("variable '{key}' holds a control character")));
        }
        total += key.len() + value.len();
        if total > MAX_VARIABLES_BYTES {
            return Err(malformed(format!("\"variables\" hold more than {MAX_VARIABLES_BYTES} bytes")));
        }
        out.push((format!("{VARIABLE_PREFIX}{key}"), value));
    }
    Ok(out)
}

impl FirstMessage {
    /// Reads the client's first message: a JSON object of at most 4 KiB
    /// where only `destination` is required. Unknown fields are ignored;
    /// the dialplan context is never the client's to choose.
    pub fn parse(text: &str) -> Result<FirstMessage, Malformed> {
        if text.len() > MAX_FIRST_MESSAGE_BYTES {
            return Err(malformed(format!("the first message is over {MAX_FIRST_MESSAGE_BYTES} bytes")));
        }
        let Ok(Value::Object(object)) = serde_json::from_str::<Value>(text) else {
            return Err(malformed("the first message is not a JSON object"));
        };
        let destination = text_field(&object, "destination", true)?.unwrap_or_default();
        let content_type = match text_field(&object, "content-type", false)? {
            None => ContentType::default(),
            Some(text) => ContentType::parse(&text).ok_or_else(|| {
                malformed("\"content-type\" is not audio/l16;rate=8000, 16000, 24000, 32000 or 48000, audio/pcmu or audio/pcma")
            })?,
        };
        Ok(FirstMessage {
            destination,
            caller_id_number: text_field(&object, "caller_id_number", false)?,
            caller_id_name: text_field(&object, "caller_id_name", false)?,
            content_type,
            variables: variables(object.get("variables"))?,
        })
    }

    /// The call's plan: the module's tuning, the client's format, and the
    /// client as the "server" the call's media is exchanged with.
    pub fn plan(&self, peer: SocketAddr, tuning: CallTuning) -> Result<CallPlan, String> {
        let uri = ServerUri::parse(&format!("ws://{peer}/")).map_err(|error| error.to_string())?;
        Ok(CallPlan {
            server: CallSettings {
                uri,
                fallbacks: Vec::new(),
                content_type: self.content_type,
                headers: Map::new(),
                protocol: crate::wire::protocol::DEFAULT,
                uri_from_config: false,
            },
            tuning,
            shown_uri: inbound_label(peer),
        })
    }
}

/// How `wsbridge list` and the logs show an inbound call.
pub fn inbound_label(peer: SocketAddr) -> String {
    format!("inbound:{peer}")
}

/// The inbound channel's name.
pub fn channel_name(peer: SocketAddr) -> String {
    format!("wsbridge/inbound/{peer}")
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
    pub tokens: Tokens,
    pub max_calls: usize,
    pub slots: Arc<CallSlots>,
    pub websocket: WebSocketConfig,
}

/// Why a client was not admitted (for the log; the client was told).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// The upgrade failed or timed out; nothing was said.
    Upgrade(String),
    Unauthorized,
    Full,
    /// Closed with 1008.
    NoFirstMessage(String),
    /// Closed with 1007.
    Malformed(String),
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refused::Upgrade(why) => write!(f, "no WebSocket upgrade: {why}"),
            Refused::Unauthorized => write!(f, "no valid bearer token; answered 401"),
            Refused::Full => write!(f, "at listen-max-calls; answered 503"),
            Refused::NoFirstMessage(why) => write!(f, "{why}; closed with 1008"),
            Refused::Malformed(why) => write!(f, "malformed first message ({why}); closed with 1007"),
        }
    }
}

/// An admitted client: its socket, what it asked for, and its place under the limit.
pub struct Admitted {
    pub socket: WebSocket,
    pub first: FirstMessage,
    pub slot: Slot,
}

fn refusal(status: StatusCode, text: &str) -> ErrorResponse {
    let mut response = ErrorResponse::new(Some(text.to_string()));
    *response.status_mut() = status;
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
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
    let first = timeout(FIRST_MESSAGE_TIMEOUT, async {
        loop {
            match socket.next().await {
                Some(Ok(Message::Text(text))) => return Ok(text),
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                Some(Ok(Message::Binary(_))) => return Err("the first message must be text JSON".to_string()),
                Some(Ok(Message::Close(_))) | None => return Err("the client left before its first message".into()),
                Some(Err(tokio_tungstenite::tungstenite::Error::Capacity(_))) => {
                    return Err(format!("the first message is over {MAX_FIRST_MESSAGE_BYTES} bytes"))
                }
                Some(Err(error)) => return Err(error.to_string()),
            }
        }
    })
    .await;
    match first {
        Err(_) => Err(Refused::NoFirstMessage("no first message within 5 s".into())),
        Ok(Err(why)) => Err(Refused::NoFirstMessage(why)),
        Ok(Ok(text)) if text.len() > MAX_FIRST_MESSAGE_BYTES => {
            Err(Refused::NoFirstMessage(format!("the first message is over {MAX_FIRST_MESSAGE_BYTES} bytes")))
        }
        Ok(Ok(text)) => FirstMessage::parse(text.as_str()).map_err(|Malformed(why)| Refused::Malformed(why)),
    }
}

/// Upgrades `stream` if its request carries a valid token and a call may be
/// added, then waits for the client's first message. Nothing is created
/// before this returns Ok.
#[allow(clippy::result_large_err)] // tungstenite's handshake callback type
pub async fn admit(stream: Box<dyn Io>, admission: &Admission) -> Result<Admitted, Refused> {
    let mut slot = None;
    let callback = |request: &Request, mut response: Response| {
        let authorization = request.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        if !admission.tokens.admits(authorization.and_then(bearer_token)) {
            return Err(refusal(StatusCode::UNAUTHORIZED, "a valid bearer token is required"));
        }
        slot = admission.slots.take(admission.max_calls);
        if slot.is_none() {
            return Err(refusal(StatusCode::SERVICE_UNAVAILABLE, "too many calls"));
        }
        let offered = request.headers().get(header::SEC_WEBSOCKET_PROTOCOL).and_then(|v| v.to_str().ok());
        if offered.is_some_and(offers_subprotocol) {
            response.headers_mut().insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(SUBPROTOCOL));
        }
        Ok(response)
    };
    let upgrade = tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(admission.websocket));
    let upgraded = timeout(UPGRADE_TIMEOUT, upgrade).await;
    let mut socket = match upgraded {
        Err(_) => return Err(Refused::Upgrade("no upgrade within 5 s".into())),
        Ok(Err(error)) => {
            return Err(match error {
                tokio_tungstenite::tungstenite::Error::Http(response) => match response.status() {
                    StatusCode::UNAUTHORIZED => Refused::Unauthorized,
                    StatusCode::SERVICE_UNAVAILABLE => Refused::Full,
                    status => Refused::Upgrade(format!("answered {status}")),
                },
                other => Refused::Upgrade(other.to_string()),
            })
        }
        Ok(Ok(socket)) => socket,
    };
    if slot.is_none() {
        return Err(Refused::Upgrade("upgraded without a call slot".into()));
    }
    let parsed = read_first_message(&mut socket).await;
    match (parsed, slot) {
        (Ok(first), Some(slot)) => Ok(Admitted { socket, first, slot }),
        (Ok(_), None) => Err(Refused::Upgrade("upgraded without a call slot".into())),
        (Err(refused), slot) => {
            // The place is free before the close handshake, which may take a second.
            drop(slot);
            let (code, why) = match &refused {
                Refused::Malformed(why) => (CloseCode::Invalid, why.as_str()),
                Refused::NoFirstMessage(why) => (CloseCode::Policy, why.as_str()),
                _ => (CloseCode::Policy, "refused"),
            };
            close_with(&mut socket, code, why).await;
            Err(refused)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Encoding;
    use tokio::net::{TcpListener, TcpStream};
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;

    #[test]
    fn tokens_admit_only_their_own() {
        let tokens = Tokens::parse(" alpha, beta\tgamma ");
        assert_eq!(tokens.len(), 3);
        assert!(tokens.admits(Some("alpha")) && tokens.admits(Some("gamma")));
        for bad in ["", "alph", "alphaa", "ALPHA", "beta gamma"] {
            assert!(!tokens.admits(Some(bad)), "{bad}");
        }
        assert!(!tokens.admits(None));
        assert!(!Tokens::parse("").admits(Some("")), "no tokens admit nobody");
        assert_eq!(format!("{tokens:?}"), "Tokens(3 configured)", "tokens never reach a log");
    }

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
    fn the_issue_example_parses() {
        let text = r#"{"destination":"1000","caller_id_number":"bot7","caller_id_name":"Sales bot","content-type":"audio/l16;rate=16000","variables":{"campaign":"x1"}}"#;
        let first = FirstMessage::parse(text).unwrap();
        assert_eq!(first.destination, "1000");
        assert_eq!(first.caller_id_number.as_deref(), Some("bot7"));
        assert_eq!(first.caller_id_name.as_deref(), Some("Sales bot"));
        assert_eq!(first.content_type, ContentType::l16(16000));
        assert_eq!(first.variables, vec![("wsbridge_in_campaign".to_string(), "x1".to_string())]);
    }

    #[test]
    fn only_the_destination_is_required() {
        let first = FirstMessage::parse(r#"{"destination":"9","context":"default","extra":1}"#).unwrap();
        assert_eq!(first.content_type, ContentType::l16(16000), "16 kHz L16 by default");
        assert!(first.variables.is_empty() && first.caller_id_name.is_none());
        let pcmu = FirstMessage::parse(r#"{"destination":"9","content-type":"audio/pcmu"}"#).unwrap();
        assert_eq!(pcmu.content_type.encoding, Encoding::Pcmu);
    }

    #[test]
    fn variables_are_prefixed_and_bounded() {
        let first =
            FirstMessage::parse(r#"{"destination":"1","variables":{"hangup_after_bridge":"false","n":5,"b":true}}"#)
                .unwrap();
        let names: Vec<&str> = first.variables.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(names, ["wsbridge_in_hangup_after_bridge", "wsbridge_in_n", "wsbridge_in_b"]);
        assert_eq!(first.variables[1].1, "5");
        let many: Map<String, Value> = (0..33).map(|i| (format!("k{i}"), json!("v"))).collect();
        let too_many = json!({"destination": "1", "variables": many}).to_string();
        assert!(FirstMessage::parse(&too_many).unwrap_err().0.contains("32 keys"));
        let big: Map<String, Value> = (0..3).map(|i| (format!("k{i}"), json!("v".repeat(1000)))).collect();
        let too_big = json!({"destination": "1", "variables": big}).to_string();
        assert!(FirstMessage::parse(&too_big).unwrap_err().0.contains("2048 bytes"));
    }

    #[test]
    fn malformed_first_messages_are_refused_with_a_reason() {
        let long_key = format!(r#"{{"destination":"1","variables":{{"{}":"x"}}}}"#, "k".repeat(65));
        let long_destination = format!(r#"{{"destination":"{}"}}"#, "1".repeat(129));
        let oversized = format!(r#"{{"destination":"1","pad":"{}"}}"#, "x".repeat(5000));
        for bad in [
            "",
            "not json",
            "[1]",
            "{}",
            r#"{"destination":5}"#,
            r#"{"destination":""}"#,
            r#"{"destination":"1\n2"}"#,
            r#"{"destination":"1","content-type":"audio/opus"}"#,
            r#"{"destination":"1","variables":[1]}"#,
            r#"{"destination":"1","variables":{"a-b":"x"}}"#,
            r#"{"destination":"1","variables":{"${x}":"x"}}"#,
            r#"{"destination":"1","variables":{"a":{"b":1}}}"#,
            r#"{"destination":"1","variables":{"a":"x\u0000y"}}"#,
            r#"{"destination":"1","caller_id_name":7}"#,
            &long_key,
            &long_destination,
            &oversized,
        ] {
            let refused = FirstMessage::parse(bad);
            assert!(refused.is_err(), "{bad}");
            assert!(!refused.unwrap_err().0.is_empty());
        }
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

    #[test]
    fn plans_name_the_client() {
        let peer: SocketAddr = "127.0.0.1:4567".parse().unwrap();
        let first = FirstMessage::parse(r#"{"destination":"1","content-type":"audio/l16;rate=8000"}"#).unwrap();
        let plan = first.plan(peer, CallTuning::default()).unwrap();
        assert_eq!(plan.shown_uri, "inbound:127.0.0.1:4567");
        assert_eq!(plan.server.content_type, ContentType::l16(8000));
        assert_eq!(channel_name(peer), "wsbridge/inbound/127.0.0.1:4567");
        let v6: SocketAddr = "[::1]:80".parse().unwrap();
        assert!(first.plan(v6, CallTuning::default()).is_ok());
    }

    fn admission(max_calls: usize) -> Admission {
        let mut websocket = WebSocketConfig::default();
        websocket.max_message_size = Some(64 << 10);
        Admission { tokens: Tokens::parse("secret"), max_calls, slots: Arc::default(), websocket }
    }

    /// Serves one admission on a fresh port; returns the port and the task.
    async fn serve(admission: Admission) -> (u16, tokio::task::JoinHandle<Result<FirstMessage, Refused>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let admitted = admit(Box::new(tcp), &admission).await?;
            Ok(admitted.first)
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

    async fn close_code(
        client: &mut tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>,
    ) -> Option<u16> {
        loop {
            match client.next().await {
                Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
                Some(Ok(_)) => continue,
                _ => return None,
            }
        }
    }

    #[tokio::test]
    async fn a_good_client_is_admitted_with_the_subprotocol() {
        let (port, task) = serve(admission(1)).await;
        let (mut client, response) = tokio_tungstenite::connect_async(request(port, Some("secret"))).await.unwrap();
        assert_eq!(response.headers().get(header::SEC_WEBSOCKET_PROTOCOL).unwrap(), "WSBRIDGE");
        client.send(Message::text(r#"{"destination":"5000"}"#)).await.unwrap();
        assert_eq!(task.await.unwrap().unwrap().destination, "5000");
    }

    #[tokio::test]
    async fn a_wrong_or_missing_token_gets_401() {
        for token in [Some("wrong"), None] {
            let (port, task) = serve(admission(1)).await;
            let error = tokio_tungstenite::connect_async(request(port, token)).await.unwrap_err();
            match error {
                tokio_tungstenite::tungstenite::Error::Http(response) => {
                    assert_eq!(response.status(), StatusCode::UNAUTHORIZED)
                }
                other => panic!("{other}"),
            }
            assert_eq!(task.await.unwrap().unwrap_err(), Refused::Unauthorized);
        }
    }

    #[tokio::test]
    async fn over_the_limit_gets_503() {
        let admission = admission(1);
        let _held = admission.slots.take(1).unwrap();
        let (port, task) = serve(admission).await;
        match tokio_tungstenite::connect_async(request(port, Some("secret"))).await.unwrap_err() {
            tokio_tungstenite::tungstenite::Error::Http(response) => {
                assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE)
            }
            other => panic!("{other}"),
        }
        assert_eq!(task.await.unwrap().unwrap_err(), Refused::Full);
    }

    #[tokio::test]
    async fn malformed_gets_1007_and_binary_gets_1008() {
        let (port, task) = serve(admission(1)).await;
        let (mut client, _) = tokio_tungstenite::connect_async(request(port, Some("secret"))).await.unwrap();
        client.send(Message::text(r#"{"destination":""}"#)).await.unwrap();
        assert_eq!(close_code(&mut client).await, Some(1007));
        assert!(matches!(task.await.unwrap(), Err(Refused::Malformed(_))));

        let (port, task) = serve(admission(1)).await;
        let (mut client, _) = tokio_tungstenite::connect_async(request(port, Some("secret"))).await.unwrap();
        client.send(Message::binary(vec![0u8; 640])).await.unwrap();
        assert_eq!(close_code(&mut client).await, Some(1008));
        assert!(matches!(task.await.unwrap(), Err(Refused::NoFirstMessage(_))));

        let (port, task) = serve(admission(1)).await;
        let (mut client, _) = tokio_tungstenite::connect_async(request(port, Some("secret"))).await.unwrap();
        client.send(Message::text(format!(r#"{{"destination":"1","p":"{}"}}"#, "x".repeat(5000)))).await.unwrap();
        assert_eq!(close_code(&mut client).await, Some(1008), "over 4 KiB");
        assert!(matches!(task.await.unwrap(), Err(Refused::NoFirstMessage(_))));
    }

    #[tokio::test]
    async fn silence_after_the_upgrade_gets_1008_after_5_s() {
        let (port, task) = serve(admission(1)).await;
        let (mut client, _) = tokio_tungstenite::connect_async(request(port, Some("secret"))).await.unwrap();
        let started = tokio::time::Instant::now();
        assert_eq!(close_code(&mut client).await, Some(1008));
        assert!(started.elapsed() >= FIRST_MESSAGE_TIMEOUT);
        assert!(matches!(task.await.unwrap(), Err(Refused::NoFirstMessage(_))));
    }
}
