//! A test server that speaks OpenAI's Realtime API (the GA interface) over
//! WebSocket, written field by field from the `openai` Python package's
//! types (openai/types/realtime/*.py) and OpenAI's Realtime reference.
//!
//! It sends `session.created` on accept, checks every client event as it
//! arrives (realtime_server/client_events.rs), collects the caller's audio
//! from `input_audio_buffer.append`, and sends the server events a test
//! scripts. Every event both ways is kept, and `check_with_openai_types`
//! has realtime_events.py validate them all with the package's pydantic
//! models, so the server's own events are proven well-formed too.

mod client_events;
mod self_test;
mod server_events;

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

use crate::g711::base64_decode;
use crate::ws_server::Connection;
pub use client_events::check_client_event;
use self_test::speaks_the_published_protocol;

crate::tests! {
    realtime_server::speaks_the_published_protocol,
}

/// How much of an audio payload the kept events hold (a whole base64 quad).
const KEPT_AUDIO_CHARS: usize = 8;

/// A fresh id as OpenAI spells them: `prefix` + `_` + 21 letters and digits.
pub fn new_id(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos() as u64;
    let mut state = nanos ^ COUNTER.fetch_add(1, Ordering::Relaxed).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let id: String = (0..21)
        .map(|_| {
            // xorshift64*: ids only need to differ, not to be secret.
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            ALPHABET[(state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 58) as usize % ALPHABET.len()] as char
        })
        .collect();
    format!("{prefix}_{id}")
}

/// The session object a GA `session.created` carries: OpenAI's defaults.
fn default_session() -> Value {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let pcm = json!({"type": "audio/pcm", "rate": 24000});
    json!({
        "type": "realtime",
        "object": "realtime.session",
        "id": new_id("sess"),
        "model": "gpt-realtime",
        "output_modalities": ["audio"],
        "instructions": "Your knowledge cutoff is 2023-10. You are a helpful, witty, and friendly AI.",
        "tools": [],
        "tool_choice": "auto",
        "max_output_tokens": "inf",
        "tracing": null,
        "truncation": "auto",
        "prompt": null,
        "expires_at": now + 3600,
        "audio": {
            "input": {
                "format": pcm,
                "transcription": null,
                "noise_reduction": null,
                "turn_detection": {
                    "type": "server_vad",
                    "threshold": 0.5,
                    "prefix_padding_ms": 300,
                    "silence_duration_ms": 200,
                    "idle_timeout_ms": null,
                    "create_response": true,
                    "interrupt_response": true
                }
            },
            "output": {"format": pcm, "voice": "marin", "speed": 1.0}
        },
        "include": null
    })
}

/// `update` merged into `into`: objects key by key, anything else replaced;
/// an audio `format` is one value (a union of types), replaced whole.
fn merge(into: &mut Value, update: &Value) {
    match (into.as_object_mut(), update.as_object()) {
        (Some(target), Some(source)) => {
            for (key, value) in source {
                match key.as_str() {
                    "format" => drop(target.insert(key.clone(), value.clone())),
                    _ => merge(target.entry(key.clone()).or_insert(Value::Null), value),
                }
            }
        }
        _ => *into = update.clone(),
    }
}

/// One OpenAI Realtime connection, seen from OpenAI's side.
pub struct RealtimeServer {
    connection: Connection,
    /// The session as the server holds it: the defaults, then each update merged in.
    session: Value,
    /// Client events read ahead (by collect_audio_for) and not yet taken.
    queued: VecDeque<Value>,
    audio: Vec<u8>,
    append_sizes: Vec<usize>,
    client_events: Vec<Value>,
    server_events: Vec<Value>,
    /// Each response's output items so far, for its `response.done`.
    outputs: HashMap<String, Vec<Value>>,
    closed: Option<Option<u16>>,
}

impl RealtimeServer {
    /// Takes a connection and sends `session.created` with OpenAI's default session.
    pub async fn accept(connection: Connection) -> RealtimeServer {
        let beta = connection.headers.iter().find(|(name, _)| name == "openai-beta");
        assert!(
            beta.is_none_or(|(_, value)| !value.contains("realtime=v1")),
            "realtime server: the client asked for the beta interface ({beta:?}); this server speaks the GA one"
        );
        let mut server = RealtimeServer {
            connection,
            session: default_session(),
            queued: VecDeque::new(),
            audio: Vec::new(),
            append_sizes: Vec::new(),
            client_events: Vec::new(),
            server_events: Vec::new(),
            outputs: HashMap::new(),
            closed: None,
        };
        let session = server.session.clone();
        server.send_event(json!({"type": "session.created", "session": session})).await;
        server
    }

    /// The upgrade request's header `name` (lower case), if it was sent.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.connection.headers.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str())
    }

    /// The session as it stands: the defaults with every update merged in.
    pub fn session(&self) -> &Value {
        &self.session
    }

    /// Every byte the client appended, decoded, in order.
    pub fn appended_audio(&self) -> &[u8] {
        &self.audio
    }

    /// The decoded size of each `input_audio_buffer.append` (their count is its length).
    pub fn append_sizes(&self) -> &[usize] {
        &self.append_sizes
    }

    /// Every client event received, appends' audio shortened.
    pub fn client_events(&self) -> &[Value] {
        &self.client_events
    }

    /// Every event this server sent, audio deltas shortened.
    pub fn server_events(&self) -> &[Value] {
        &self.server_events
    }

    /// Some(close code) once the client closed or the connection broke.
    pub fn closed(&self) -> Option<Option<u16>> {
        self.closed
    }

    /// Waits (5 s) for `session.update`, answers `session.updated`, returns the client's session.
    pub async fn expect_session_update(&mut self) -> Value {
        let event = self.expect_event("session.update", Duration::from_secs(5)).await;
        let update = event["session"].clone();
        merge(&mut self.session, &update);
        let session = self.session.clone();
        self.send_event(json!({"type": "session.updated", "session": session})).await;
        update
    }

    /// The next client event, which must be of type `kind`, within `timeout`.
    pub async fn expect_event(&mut self, kind: &str, timeout: Duration) -> Value {
        match self.next_event(timeout).await {
            Some(event) if event["type"] == kind => event,
            Some(event) => panic!("realtime server: expected `{kind}`, got {event}"),
            None => panic!("realtime server: no `{kind}` within {timeout:?} (closed: {:?})", self.closed),
        }
    }

    /// The next client event other than an append, or None on timeout or close.
    pub async fn next_event(&mut self, timeout: Duration) -> Option<Value> {
        if let Some(event) = self.queued.pop_front() {
            return Some(event);
        }
        self.read_event(tokio::time::Instant::now() + timeout).await
    }

    /// Reads for `duration`: appends collected, other events queued for next_event.
    pub async fn collect_audio_for(&mut self, duration: Duration) {
        let deadline = tokio::time::Instant::now() + duration;
        while let Some(event) = self.read_event(deadline).await {
            self.queued.push_back(event);
        }
    }

    /// Reads until a client event other than an append, the deadline, or the close.
    async fn read_event(&mut self, deadline: tokio::time::Instant) -> Option<Value> {
        while self.closed.is_none() {
            let message = match tokio::time::timeout_at(deadline, self.connection.ws.next()).await {
                Err(_) => return None,
                Ok(Some(Ok(message))) => message,
                Ok(Some(Err(_)) | None) => {
                    self.closed = Some(None);
                    break;
                }
            };
            let text = match message {
                Message::Text(text) => text.to_string(),
                Message::Binary(data) => {
                    panic!("realtime server: a binary message of {} bytes; OpenAI's events are JSON text", data.len())
                }
                Message::Close(frame) => {
                    let _ = self.connection.ws.flush().await;
                    self.closed = Some(frame.map(|frame| u16::from(frame.code)));
                    break;
                }
                _ => continue,
            };
            if let Some(event) = self.received(&text) {
                return Some(event);
            }
        }
        None
    }

    /// Parses, checks and keeps one client event; None for an append (collected).
    fn received(&mut self, text: &str) -> Option<Value> {
        let event: Value = serde_json::from_str(text)
            .unwrap_or_else(|e| panic!("realtime server: a client event not JSON ({e}): {text}"));
        if let Err(why) = check_client_event(&event) {
            panic!("realtime server: refused {why}");
        }
        if event["type"] != "input_audio_buffer.append" {
            self.client_events.push(event.clone());
            return Some(event);
        }
        let audio = event["audio"].as_str().unwrap_or_default();
        let bytes = base64_decode(audio)
            .unwrap_or_else(|| panic!("realtime server: input_audio_buffer.append's audio is not base64: {audio:.80}"));
        self.append_sizes.push(bytes.len());
        self.audio.extend_from_slice(&bytes);
        self.client_events.push(shortened(event, "audio"));
        None
    }

    /// Sends one server event, given an `event_id` if it has none, and keeps it.
    pub async fn send_event(&mut self, event: Value) {
        self.feed_event(event).await;
        self.connection.ws.flush().await.expect("realtime server: send");
    }

    /// As send_event, but only queued: the next flush sends it.
    async fn feed_event(&mut self, mut event: Value) {
        if event.get("event_id").is_none() {
            event["event_id"] = json!(new_id("event"));
        }
        let text = event.to_string();
        self.server_events.push(if event.get("delta").is_some() { shortened(event, "delta") } else { event });
        self.connection.ws.feed(Message::text(text)).await.expect("realtime server: send");
    }

    /// Closes the WebSocket (code 1000), reads (2 s at most) until the client's close, ends the TCP stream.
    pub async fn close(&mut self) {
        let frame = CloseFrame { code: CloseCode::Normal, reason: "".into() };
        let _ = self.connection.ws.close(Some(frame)).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while self.closed.is_none() {
            match tokio::time::timeout_at(deadline, self.connection.ws.next()).await {
                Ok(Some(Ok(Message::Close(frame)))) => self.closed = Some(frame.map(|frame| u16::from(frame.code))),
                Ok(Some(Ok(_))) => continue,
                _ => self.closed = Some(None),
            }
        }
        // As RFC 6455 has the server do: it closes the TCP connection first.
        let _ = self.connection.ws.get_mut().shutdown().await;
    }

    /// Validates every event both ways with the openai package's types (panics if one fails).
    pub fn check_with_openai_types(&self) {
        if let Err(report) = validate_with_openai_types(&self.client_events, &self.server_events) {
            panic!("realtime server: the openai types refuse these events:\n{report}");
        }
    }
}

/// `event` with the base64 at `key` cut to its first few characters.
fn shortened(mut event: Value, key: &str) -> Value {
    if let Some(text) = event[key].as_str() {
        event[key] = json!(text.chars().take(KEPT_AUDIO_CHARS).collect::<String>());
    }
    event
}

/// Runs realtime_events.py on both lists: Ok(its report), or Err(its report of what it refused).
pub fn validate_with_openai_types(client: &[Value], server: &[Value]) -> Result<String, String> {
    static FILES: AtomicU64 = AtomicU64::new(0);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/freeswitch/realtime_events.py");
    let files: Vec<PathBuf> = [client, server]
        .iter()
        .map(|events| {
            let number = FILES.fetch_add(1, Ordering::Relaxed);
            let file = std::env::temp_dir().join(format!("realtime-events-{}-{number}.json", std::process::id()));
            std::fs::write(&file, serde_json::to_vec(events).unwrap()).expect("write the events for python");
            file
        })
        .collect();
    let output = Command::new("python3").arg(&script).arg(&files[0]).arg("--server").arg(&files[1]).output();
    files.iter().for_each(|file| drop(std::fs::remove_file(file)));
    let output = output.unwrap_or_else(|e| panic!("realtime server: cannot run python3 {}: {e}", script.display()));
    let report = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    match output.status.code() {
        Some(0) => Ok(report),
        Some(1) => Err(report),
        Some(3) => panic!("realtime server: the `openai` Python package (with its GA Realtime types) is needed: pip install --upgrade openai\n{report}"),
        _ => panic!("realtime server: {} failed ({}):\n{report}", script.display(), output.status),
    }
}
