//! One call's WebSocket conversation, from connect to close.
//!
//! It runs on the shared tokio runtime and reaches the call only through
//! [`CallMedia`] (audio) and [`CallControl`] (answer and hang up).

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use std::panic::AssertUnwindSafe;

use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::audio::media::{CallMedia, CALLER_HUNG_UP};
use crate::audio::uplink::ToServer;
use crate::settings::cause::HangupCause;
use crate::settings::options::ConnectionOptions;
use crate::settings::{CallSettings, Scheme, ServerUri};
use crate::wire::connection::{self, Connection};
use crate::wire::protocol::{self, wsbridge, Control, Decoder, Dialect, Encoder, FromServer, Opening};
use crate::wire::websocket;

mod agent;
mod close;
mod connect;
mod exchange;

use close::finish;
use connect::{open, reconnect, recoverable};
use exchange::exchange;

/// What the task may do to its call. Implementations must not block.
pub trait CallControl: Send + Sync + 'static {
    /// Marks the call answered; false when the call is already gone.
    fn answer(&self) -> bool;
    /// Hangs the call up. A session's end or panic calls it only where
    /// [`CallControl::session_ends_the_call`].
    fn hangup(&self, cause: HangupCause);
    /// Hangs up with a cause the server named; unknown names are the implementation's to handle.
    fn hangup_named(&self, cause: &str);
    /// Plays DTMF digits to the caller.
    fn send_dtmf(&self, digits: &str, duration_ms: u32);
    /// Transfers the caller (the leg bridged to this one, else this leg) to
    /// `extension` in the caller's own context.
    fn transfer(&self, extension: &str);
    /// Announces something that happened (an event for event-socket consumers).
    fn event(&self, event: CallEvent);
    /// The call's identity for the server (the wsbridge leg's UUID).
    fn call_id(&self) -> &str;
    /// Whether the session's end hangs the call up (a fork's does not).
    fn session_ends_the_call(&self) -> bool {
        true
    }
}

/// What a session announces, for the FreeSWITCH events `wsbridge::<kind>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallEvent {
    Connect {
        uri: String,
        connect_ms: u64,
    },
    Disconnect {
        code: Option<u16>,
        reason: String,
    },
    Error {
        what: String,
    },
    /// A text message from the server, as received.
    Message {
        body: String,
    },
    Mark {
        name: String,
        cleared: bool,
    },
    /// A model calls a function; `builtin` names what the module does with it itself.
    FunctionCall {
        name: String,
        call_id: String,
        arguments: String,
        builtin: Option<&'static str>,
    },
    /// Words said on the call: by `speaker` (`user`, `assistant`).
    Transcript {
        speaker: &'static str,
        text: String,
        /// A barge-in cut the reply these words were spoken in.
        truncated: bool,
        /// From the caller's last words to the reply's first frame heard.
        turn_latency_ms: Option<u32>,
    },
    /// The server reported an error; the call goes on.
    ServerError {
        what: String,
    },
    /// The WebSocket failed mid-call; the module is reconnecting.
    Reconnecting {
        why: String,
    },
    /// A server took the call back after `gap_ms` without one.
    Reconnected {
        uri: String,
        gap_ms: u64,
        reconnects: u64,
    },
}

impl CallEvent {
    /// The event subclass's last part: `wsbridge::<kind>`.
    pub fn kind(&self) -> &'static str {
        match self {
            CallEvent::Connect { .. } => "connect",
            CallEvent::Disconnect { .. } => "disconnect",
            CallEvent::Error { .. } | CallEvent::ServerError { .. } => "error",
            CallEvent::FunctionCall { .. } => "function_call",
            CallEvent::Transcript { .. } => "transcript",
            CallEvent::Message { .. } => "message",
            CallEvent::Mark { .. } => "mark",
            CallEvent::Reconnecting { .. } => "reconnecting",
            CallEvent::Reconnected { .. } => "reconnected",
        }
    }
}

/// How a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConversationEnd {
    CallerHungUp,
    ServerClosed { code: Option<u16>, reason: String },
    Failed { cause: HangupCause, why: String },
}

impl ConversationEnd {
    /// The cause to hang the call up with, if the session ended it.
    pub fn hangup_cause(&self) -> Option<HangupCause> {
        match self {
            ConversationEnd::CallerHungUp => None,
            ConversationEnd::ServerClosed { .. } => Some(HangupCause::NormalClearing),
            ConversationEnd::Failed { cause, .. } => Some(*cause),
        }
    }
}

/// Runs the call's WebSocket session to its end and hangs the call up
/// unless the caller already did. A panic anywhere in it is logged and
/// hangs the call up with `CRASH`: nobody would feed the call otherwise.
pub async fn run(
    settings: CallSettings,
    media: Arc<CallMedia>,
    control: impl CallControl,
    options: ConnectionOptions,
) -> ConversationEnd {
    guarded(&media, &control, run_to_end(&settings, &media, &control, &options)).await
}

/// Runs a call from the WebSocket side on the socket its client opened and
/// was admitted on (see [`crate::call::admission`]); `media` is marked open already.
/// Nothing is sent first and nothing answers the call here: the dialplan
/// does. The client closing the socket hangs the call up with `NORMAL_CLEARING`.
pub async fn serve_inbound(
    connection: Connection,
    client: String,
    media: Arc<CallMedia>,
    control: impl CallControl,
    options: ConnectionOptions,
) -> ConversationEnd {
    let serve = async {
        control.event(CallEvent::Connect { uri: client.clone(), connect_ms: 0 });
        // The client's own protocol is wsbridge's, both ways.
        let encoder = wsbridge::client_encoder();
        let mut dialect = Dialect { decoder: encoder.decoder(), encoder, pings: true, speaks_to_a_model: false };
        let (mut sink, mut stream) = connection.split();
        let mut unsent = VecDeque::new();
        let ended = exchange(&mut sink, &mut stream, &mut unsent, &media, &control, &options, &mut dialect).await;
        let link = Link { sink: &mut sink, stream: &mut stream, unsent: &mut unsent, dialect: &mut dialect };
        let end = finish(ended, link, &media, &control, &options, &client).await;
        conclude(end, &client, &media, &control)
    };
    guarded(&media, &control, serve).await
}

/// Runs a session, turning a panic in it into a `CRASH` hangup.
async fn guarded(
    media: &CallMedia,
    control: &impl CallControl,
    session: impl std::future::Future<Output = ConversationEnd>,
) -> ConversationEnd {
    match AssertUnwindSafe(session).catch_unwind().await {
        Ok(end) => end,
        Err(payload) => {
            let why =
                format!("panic in the WebSocket task: {}", crate::support::logging::describe_panic(payload.as_ref()));
            let _ = std::panic::catch_unwind(AssertUnwindSafe(|| {
                tracing::error!("{why}; hanging up with {}", HangupCause::Crash);
                media.stop_conversation();
                if control.session_ends_the_call() {
                    control.hangup(HangupCause::Crash);
                }
            }));
            failed(HangupCause::Crash, why)
        }
    }
}

async fn run_to_end(
    settings: &CallSettings,
    media: &Arc<CallMedia>,
    control: &impl CallControl,
    options: &ConnectionOptions,
) -> ConversationEnd {
    let end = converse(settings, media, control, options).await;
    conclude(end, &settings.shown(&settings.uri), media, control)
}

/// Announces and logs how the session with `shown` ended, and hangs the call up if the session ended it.
fn conclude(end: ConversationEnd, shown: &str, media: &CallMedia, control: &impl CallControl) -> ConversationEnd {
    if let ConversationEnd::Failed { why, .. } = &end {
        control.event(CallEvent::Error { what: why.clone() });
    }
    if media.is_open() {
        let (code, reason) = media.close_info().map_or((None, String::new()), |(code, reason)| (Some(code), reason));
        control.event(CallEvent::Disconnect { code, reason });
    }
    let ends_the_call = control.session_ends_the_call();
    match &end {
        ConversationEnd::CallerHungUp => {
            // The close reason tells a hangup from a fork's `stop`.
            let why = media.close_info().map_or(crate::audio::media::CALLER_HUNG_UP.to_string(), |(_, reason)| reason);
            tracing::info!("{why}; WebSocket to {shown} closed")
        }
        ConversationEnd::ServerClosed { code, reason } => tracing::info!(
            "server {shown} closed the WebSocket (code {}, reason '{reason}'); {}",
            code.map_or("none".to_string(), |c| c.to_string()),
            if ends_the_call { "hanging up" } else { "the call goes on" }
        ),
        ConversationEnd::Failed { cause, why } if ends_the_call => tracing::warn!("{why}; hanging up with {cause}"),
        ConversationEnd::Failed { why, .. } => tracing::warn!("{why}; the call goes on"),
    }
    if let Some(cause) = end.hangup_cause().filter(|_| ends_the_call) {
        control.hangup(cause);
    }
    let stats = &media.stats;
    tracing::debug!(
        "frames: {} sent, {} received, {} played; {} underruns, {} caller frames dropped",
        stats.frames_sent.load(Ordering::Relaxed),
        stats.frames_received.load(Ordering::Relaxed),
        stats.frames_played.load(Ordering::Relaxed),
        media.underruns(),
        media.dropped_uplink_frames()
    );
    end
}

enum ReadEnd {
    Closed(Option<CloseFrame>),
    Eof,
    Error(WsError),
    TooBig(String),
}

enum Ended {
    CallerGone,
    Read(ReadEnd),
    Write(WsError),
    DeadPeer(Duration),
}

type Sink = futures_util::stream::SplitSink<Connection, Message>;
type Stream = futures_util::stream::SplitStream<Connection>;

/// Opens the session, runs it (reconnecting after network failures while
/// the budget allows), and finishes it.
async fn converse(
    settings: &CallSettings,
    media: &Arc<CallMedia>,
    control: &impl CallControl,
    options: &ConnectionOptions,
) -> ConversationEnd {
    let mut dialect = Dialect::new(&Opening {
        settings,
        style: options.first_message,
        twilio_account_sid: &options.twilio_account_sid,
        call_id: control.call_id(),
        fork: options.fork_layout.as_ref(),
        agent: &options.agent,
    });
    if dialect.speaks_to_a_model {
        media.set_agent();
    }
    let (connection, mut uri) = match open(settings, media, control, options, &mut dialect).await {
        Ok(opened) => opened,
        Err(end) => return end,
    };
    let (mut sink, mut stream) = connection.split();
    // Taken off the queue but not yet sent; kept across a reconnect or a caller hangup.
    let mut unsent = VecDeque::new();
    loop {
        let ended = exchange(&mut sink, &mut stream, &mut unsent, media, control, options, &mut dialect).await;
        let Some(failure) = recoverable(&ended, options, &uri) else {
            let link = Link { sink: &mut sink, stream: &mut stream, unsent: &mut unsent, dialect: &mut dialect };
            return finish(ended, link, media, control, options, &uri).await;
        };
        let (connection, server) = match reconnect(settings, media, control, options, failure, &mut dialect).await {
            Ok(reconnected) => reconnected,
            Err(end) => return end,
        };
        uri = server;
        (sink, stream) = connection.split();
    }
}

/// One connection's state as it ends.
struct Link<'a> {
    sink: &'a mut Sink,
    stream: &'a mut Stream,
    unsent: &'a mut VecDeque<ToServer>,
    dialect: &'a mut Dialect,
}

fn failed(cause: HangupCause, why: String) -> ConversationEnd {
    ConversationEnd::Failed { cause, why }
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // tungstenite's handshake callback type
mod tests {
    use super::*;
    use crate::settings::options::MediaLimits;

    use crate::audio::playout::Downlink;
    use crate::settings::{ContentType, RawSettings};
    use bytes::Bytes;
    use std::sync::Mutex;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};

    #[derive(Default, Clone)]
    struct Recorder(Arc<Mutex<Vec<String>>>);

    impl CallControl for Recorder {
        fn answer(&self) -> bool {
            self.0.lock().unwrap().push("answer".into());
            true
        }
        fn hangup(&self, cause: HangupCause) {
            self.0.lock().unwrap().push(format!("hangup {cause}"));
        }
        fn hangup_named(&self, cause: &str) {
            self.0.lock().unwrap().push(format!("hangup_named {cause}"));
        }
        fn send_dtmf(&self, digits: &str, duration_ms: u32) {
            self.0.lock().unwrap().push(format!("dtmf {digits} {duration_ms}"));
        }
        fn transfer(&self, extension: &str) {
            self.0.lock().unwrap().push(format!("transfer {extension}"));
        }
        fn event(&self, event: CallEvent) {
            self.0.lock().unwrap().push(format!("event {}", event.kind()));
        }
        fn call_id(&self) -> &str {
            "test-call"
        }
    }

    impl Recorder {
        /// What the session did to the call, events left out.
        fn events(&self) -> Vec<String> {
            self.0.lock().unwrap().iter().filter(|e| !e.starts_with("event ")).cloned().collect()
        }

        fn announced(&self) -> Vec<String> {
            self.0.lock().unwrap().iter().filter_map(|e| e.strip_prefix("event ").map(str::to_string)).collect()
        }
    }

    fn settings(port: u16, rate: u32) -> CallSettings {
        let raw = RawSettings {
            uri: Some(format!("ws://127.0.0.1:{port}/call")),
            content_type: Some(format!("audio/l16;rate={rate}")),
            headers: Some(r#"{"caller":"447700900123"}"#.into()),
            ..RawSettings::default()
        };
        protocol::resolve(&raw, 1024).unwrap()
    }

    async fn listener() -> (TcpListener, u16) {
        // The module's reader thread, as FreeSWITCH runs it: direct calls here are read by it.
        crate::wire::reactor::start(Duration::from_millis(2)).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        (listener, port)
    }

    async fn accept(listener: &TcpListener, echo_protocol: bool) -> WebSocketStream<TcpStream> {
        let (tcp, _) = listener.accept().await.unwrap();
        tokio_tungstenite::accept_hdr_async(tcp, move |request: &Request, mut response: Response| {
            assert_eq!(request.headers()["Sec-WebSocket-Protocol"], "WSBRIDGE");
            if echo_protocol {
                response.headers_mut().insert("Sec-WebSocket-Protocol", "WSBRIDGE".parse().unwrap());
            }
            Ok(response)
        })
        .await
        .unwrap()
    }
    use tokio_tungstenite::WebSocketStream;

    #[tokio::test]
    async fn audio_flows_both_ways_and_server_close_hangs_up_normally() {
        let (listener, port) = listener().await;
        let media = Arc::new(CallMedia::new(ContentType::l16(8000), MediaLimits::default(), None));
        let control = Recorder::default();
        let task =
            tokio::spawn(run(settings(port, 8000), media.clone(), control.clone(), ConnectionOptions::default()));

        let mut server = accept(&listener, false).await;
        let first = server.next().await.unwrap().unwrap();
        assert_eq!(
            first.into_text().unwrap().as_str(),
            r#" {"caller":"447700900123","content-type":"audio/l16;rate=8000"}"#
        );

        // 1.5 frames, then the other half: two whole frames come out.
        let samples: Vec<u8> = (0..320i16).flat_map(|s| s.to_le_bytes()).collect();
        server.send(Message::Binary(Bytes::copy_from_slice(&samples[..480]))).await.unwrap();
        server.send(Message::text("ignored")).await.unwrap();
        server.send(Message::Binary(Bytes::copy_from_slice(&samples[480..]))).await.unwrap();
        let mut frame = [0i16; 160];
        let mut got = Vec::new();
        for _ in 0..200 {
            if media.next_downlink_frame(&mut frame) == Downlink::Audio {
                got.extend_from_slice(&frame);
            }
            if got.len() == 320 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(got, (0..320).collect::<Vec<i16>>());

        media.send_audio(&[9; 320]);
        let up = server.next().await.unwrap().unwrap();
        assert_eq!(up.into_data().as_ref(), &[9; 320]);

        server.close(Some(CloseFrame { code: CloseCode::Away, reason: "bye".into() })).await.unwrap();
        let end = task.await.unwrap();
        assert_eq!(end, ConversationEnd::ServerClosed { code: Some(1001), reason: "bye".into() });
        assert_eq!(control.events(), vec!["answer", "hangup NORMAL_CLEARING"]);
        assert_eq!(control.announced(), vec!["connect", "message", "disconnect"]);
    }

    /// A Twilio session end to end over a real socket: the stream's messages,
    /// server audio played, a mark answered after its audio, stop at hangup.
    #[tokio::test]
    async fn a_twilio_stream_from_start_to_stop() {
        use base64::Engine as _;
        let base64 = base64::engine::general_purpose::STANDARD;
        let (listener, port) = listener().await;
        let settings =
            protocol::resolve(&RawSettings { protocol: Some("twilio".into()), ..raw_settings(port) }, 1024).unwrap();
        let media = Arc::new(CallMedia::new(ContentType::PCMU, MediaLimits::default(), Some(Box::new(SilentDecoder))));
        let control = Recorder::default();
        let task = tokio::spawn(run(settings, media.clone(), control.clone(), ConnectionOptions::default()));
        let mut server = accept(&listener, true).await;
        assert_eq!(next_json(&mut server).await["event"], "connected");
        let start = next_json(&mut server).await;
        let sid = start["streamSid"].as_str().unwrap().to_string();
        // The test's call ID is not a UUID: its hex digits, padded to 32.
        assert_eq!(start["start"]["callSid"], format!("CAeca{}", "0".repeat(29)));
        assert_eq!(start["start"]["customParameters"], serde_json::json!({"caller":"447700900123"}));
        media.send_audio(&[0x55; 160]);
        let uplink = next_json(&mut server).await;
        assert_eq!((uplink["sequenceNumber"].as_str(), uplink["media"]["chunk"].as_str()), (Some("2"), Some("1")));
        assert_eq!(base64.decode(uplink["media"]["payload"].as_str().unwrap()).unwrap(), [0x55; 160]);

        let media_message =
            serde_json::json!({"event":"media","streamSid":sid,"media":{"payload":base64.encode([0xFF; 200])}});
        server.send(Message::text(media_message.to_string())).await.unwrap();
        let mark = serde_json::json!({"event":"mark","streamSid":sid,"mark":{"name":"after"}});
        server.send(Message::text(mark.to_string())).await.unwrap();
        let wrong =
            serde_json::json!({"event":"media","streamSid":"MZother","media":{"payload":base64.encode([0xFF; 160])}});
        server.send(Message::text(wrong.to_string())).await.unwrap();
        // 200 bytes: one whole frame plays; the mark waits for the rest, which a clear drops.
        let mut frame = [0i16; 160];
        for _ in 0..200 {
            if media.buffered_playout() >= Duration::from_millis(25) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(media.buffered_playout(), Duration::from_millis(25), "the other stream's audio is ignored");
        server.send(Message::text(serde_json::json!({"event":"clear","streamSid":sid}).to_string())).await.unwrap();
        let answered = next_json(&mut server).await;
        assert_eq!(
            (answered["event"].as_str(), &answered["mark"]),
            (Some("mark"), &serde_json::json!({"name":"after"}))
        );
        assert_eq!(media.next_downlink_frame(&mut frame), Downlink::Nothing, "cleared");

        media.caller_closes();
        let stop = next_json(&mut server).await;
        assert_eq!((stop["event"].as_str(), stop["sequenceNumber"].as_str()), (Some("stop"), Some("4")));
        assert!(
            matches!(server.next().await.unwrap().unwrap(), Message::Close(Some(frame)) if frame.code == CloseCode::Normal)
        );
        assert_eq!(task.await.unwrap(), ConversationEnd::CallerHungUp);
    }

    async fn next_json(server: &mut WebSocketStream<TcpStream>) -> serde_json::Value {
        let text = server.next().await.unwrap().unwrap().into_text().unwrap();
        serde_json::from_str(text.as_str()).unwrap()
    }

    /// Decodes every G.711 byte as silence: the session test checks lengths only.
    struct SilentDecoder;

    impl crate::audio::media::WireDecoder for SilentDecoder {
        fn decode(&self, wire: &[u8], linear: &mut Vec<u8>) {
            linear.resize(linear.len() + wire.len() * 2, 0);
        }
    }

    fn raw_settings(port: u16) -> RawSettings {
        RawSettings {
            uri: Some(format!("ws://127.0.0.1:{port}/call")),
            headers: Some(r#"{"caller":"447700900123"}"#.into()),
            ..RawSettings::default()
        }
    }

    /// AudioSocket over plain TCP: the UUID first, audio and DTMF as typed
    /// messages, the server's hangup ends the call normally.
    #[tokio::test]
    async fn an_audiosocket_session_over_tcp() {
        use crate::wire::protocol::audiosocket;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (listener, port) = listener().await;
        let raw = RawSettings {
            uri: Some(format!("tcp://127.0.0.1:{port}")),
            protocol: Some("audiosocket".into()),
            ..RawSettings::default()
        };
        let media = Arc::new(CallMedia::new(ContentType::l16(8000), MediaLimits::default(), None));
        let control = Recorder::default();
        let task = tokio::spawn(run(
            protocol::resolve(&raw, 1024).unwrap(),
            media.clone(),
            control.clone(),
            ConnectionOptions::default(),
        ));
        let (mut tcp, _) = listener.accept().await.unwrap();
        let mut header = [0u8; 3];
        let mut read_message = async |tcp: &mut TcpStream| {
            tcp.read_exact(&mut header).await.unwrap();
            let mut payload = vec![0u8; u16::from_be_bytes([header[1], header[2]]) as usize];
            tcp.read_exact(&mut payload).await.unwrap();
            (header[0], payload)
        };
        let (kind, uuid) = read_message(&mut tcp).await;
        assert_eq!((kind, uuid), (audiosocket::UUID, audiosocket::uuid_bytes("test-call").to_vec()));
        media.send_audio(&[7; 320]);
        media.send_dtmf('#', 100);
        assert_eq!(read_message(&mut tcp).await, (0x10, vec![7; 320]));
        assert_eq!(read_message(&mut tcp).await, (audiosocket::DTMF, b"#".to_vec()));
        tcp.write_all(&audiosocket::message(0x10, &[1; 640])).await.unwrap();
        for _ in 0..200 {
            if media.buffered_playout() == Duration::from_millis(40) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(media.buffered_playout(), Duration::from_millis(40));
        tcp.write_all(&audiosocket::message(audiosocket::HANGUP, &[])).await.unwrap();
        for _ in 0..200 {
            if control.events().len() > 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(control.events(), vec!["answer", "hangup_named NORMAL_CLEARING"]);
        // FreeSWITCH would now hang the leg up: the caller side goes, and the module says goodbye.
        media.caller_closes();
        assert_eq!(read_message(&mut tcp).await, (audiosocket::HANGUP, vec![]));
        assert_eq!(task.await.unwrap(), ConversationEnd::CallerHungUp);
    }

    #[tokio::test]
    async fn caller_hangup_sends_close_1000() {
        let (listener, port) = listener().await;
        let media = Arc::new(CallMedia::new(ContentType::default(), MediaLimits::default(), None));
        let control = Recorder::default();
        let task =
            tokio::spawn(run(settings(port, 16000), media.clone(), control.clone(), ConnectionOptions::default()));
        let mut server = accept(&listener, true).await;
        server.next().await.unwrap().unwrap();
        // The caller's last frames, queued just before the hangup, still go out first.
        for byte in 1..=3u8 {
            media.send_audio(&vec![byte; 640]);
        }
        assert!(media.caller_closes(), "the flush is to come");
        // The figures at hangup already count the frames the flush sends.
        let reported = crate::call::api::cdr_variables(&media.figures())
            .into_iter()
            .find(|(name, _)| *name == "wsbridge_frames_sent")
            .unwrap()
            .1;
        let mut frames = Vec::new();
        let close = loop {
            match server.next().await.unwrap().unwrap() {
                Message::Close(frame) => break frame.unwrap(),
                Message::Binary(data) => frames.push(data[0]),
                _ => continue,
            }
        };
        assert_eq!(frames, [1, 2, 3]);
        assert_eq!(reported, frames.len().to_string(), "wsbridge_frames_sent matches what the server got");
        assert_eq!(close.code, CloseCode::Normal);
        assert_eq!(task.await.unwrap(), ConversationEnd::CallerHungUp);
        assert_eq!(control.events(), vec!["answer"], "the caller's own hangup is not repeated");
    }

    #[tokio::test]
    async fn refused_connection_is_destination_out_of_order() {
        let (listener, port) = listener().await;
        drop(listener);
        let control = Recorder::default();
        let media = Arc::new(CallMedia::new(ContentType::default(), MediaLimits::default(), None));
        let end = run(settings(port, 16000), media, control.clone(), ConnectionOptions::default()).await;
        assert_eq!(end.hangup_cause(), Some(HangupCause::DestinationOutOfOrder));
        assert_eq!(control.events(), vec!["hangup DESTINATION_OUT_OF_ORDER"]);
        assert_eq!(control.announced(), vec!["error"]);
    }

    #[tokio::test]
    async fn silent_server_times_out() {
        let (listener, port) = listener().await;
        let holder = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(5)).await;
            drop(tcp);
        });
        let options = ConnectionOptions { connect_timeout: Duration::from_millis(300), ..ConnectionOptions::default() };
        let media = Arc::new(CallMedia::new(ContentType::default(), MediaLimits::default(), None));
        let started = std::time::Instant::now();
        let end = run(settings(port, 16000), media, Recorder::default(), options).await;
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(
            matches!(&end, ConversationEnd::Failed { cause: HangupCause::DestinationOutOfOrder, why } if why.contains("within 300 ms")),
            "{end:?}"
        );
        holder.abort();
    }

    #[tokio::test]
    async fn non_101_and_wrong_subprotocol_are_refused() {
        for response in
            ["HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_string(), "garbage\r\n\r\n".to_string()]
        {
            let (listener, port) = listener().await;
            let server = tokio::spawn(async move {
                let (mut tcp, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 4096];
                let _ = tcp.read(&mut buf).await;
                tcp.write_all(response.as_bytes()).await.unwrap();
                tokio::time::sleep(Duration::from_millis(200)).await;
            });
            let media = Arc::new(CallMedia::new(ContentType::default(), MediaLimits::default(), None));
            let end = run(settings(port, 16000), media, Recorder::default(), ConnectionOptions::default()).await;
            assert_eq!(end.hangup_cause(), Some(HangupCause::DestinationOutOfOrder), "{end:?}");
            server.await.unwrap();
        }

        let (listener, port) = listener().await;
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let _ = tokio_tungstenite::accept_hdr_async(tcp, |_: &Request, mut response: Response| {
                response.headers_mut().insert("Sec-WebSocket-Protocol", "other".parse().unwrap());
                Ok(response)
            })
            .await;
        });
        let media = Arc::new(CallMedia::new(ContentType::default(), MediaLimits::default(), None));
        let end = run(settings(port, 16000), media, Recorder::default(), ConnectionOptions::default()).await;
        assert!(matches!(&end, ConversationEnd::Failed { why, .. } if why.contains("subprotocol")), "{end:?}");
        server.await.unwrap();
    }

    #[tokio::test]
    async fn caller_gone_while_connecting_ends_quietly() {
        let (listener, port) = listener().await;
        let media = Arc::new(CallMedia::new(ContentType::default(), MediaLimits::default(), None));
        let control = Recorder::default();
        let task =
            tokio::spawn(run(settings(port, 16000), media.clone(), control.clone(), ConnectionOptions::default()));
        let (_tcp, _) = listener.accept().await.unwrap();
        media.stop_conversation();
        assert_eq!(task.await.unwrap(), ConversationEnd::CallerHungUp);
        assert!(control.events().is_empty());
    }

    #[tokio::test]
    async fn control_messages_reach_the_call_and_junk_is_ignored() {
        let (listener, port) = listener().await;
        let media = Arc::new(CallMedia::new(ContentType::l16(8000), MediaLimits::default(), None));
        let control = Recorder::default();
        let task =
            tokio::spawn(run(settings(port, 8000), media.clone(), control.clone(), ConnectionOptions::default()));
        let mut server = accept(&listener, true).await;
        server.next().await.unwrap().unwrap();
        for text in [
            "junk",
            r#"{"action":"fly"}"#,
            r#"{"action":"dtmf","digits":"12#"}"#,
            r#"{"action":"hangup","cause":"USER_BUSY"}"#,
        ] {
            server.send(Message::text(text)).await.unwrap();
        }
        server.send(Message::Binary(Bytes::from_static(&[0; 640]))).await.unwrap();
        server.send(Message::text(r#"{"action":"mark","name":"m1"}"#)).await.unwrap();
        let mut frame = [0i16; 160];
        let mut frames = 0;
        while frames < 2 {
            if media.next_downlink_frame(&mut frame) == Downlink::Audio {
                frames += 1;
            } else {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        let echo = tokio::time::timeout(Duration::from_secs(2), server.next()).await.unwrap().unwrap().unwrap();
        assert_eq!(echo.into_text().unwrap().as_str(), r#"{"event":"mark","name":"m1"}"#);
        assert_eq!(control.events(), vec!["answer", "dtmf 12# 100", "hangup_named USER_BUSY"]);
        media.stop_conversation();
        assert_eq!(task.await.unwrap(), ConversationEnd::CallerHungUp);
    }

    #[tokio::test]
    async fn oversized_messages_close_with_1009() {
        for (text, binary) in [(true, false), (false, true)] {
            let (listener, port) = listener().await;
            let media = Arc::new(CallMedia::new(ContentType::default(), MediaLimits::default(), None));
            let control = Recorder::default();
            let options =
                ConnectionOptions { max_message_bytes: 4096, max_text_bytes: 1024, ..ConnectionOptions::default() };
            let task = tokio::spawn(run(settings(port, 16000), media, control.clone(), options));
            let mut server = accept(&listener, true).await;
            server.next().await.unwrap().unwrap();
            if text {
                server.send(Message::text("x".repeat(2000))).await.unwrap();
            }
            if binary {
                server.send(Message::Binary(Bytes::from(vec![0u8; 100_000]))).await.unwrap();
            }
            let close = loop {
                match server.next().await {
                    Some(Ok(Message::Close(frame))) => break frame,
                    Some(Ok(_)) => continue,
                    other => panic!("no close frame: {other:?}"),
                }
            };
            assert_eq!(close.map(|f| f.code), Some(CloseCode::Size));
            let end = task.await.unwrap();
            assert_eq!(end.hangup_cause(), Some(HangupCause::ProtocolError), "{end:?}");
        }
    }

    #[tokio::test]
    async fn a_server_that_stops_answering_pings_is_hung_up() {
        let (listener, port) = listener().await;
        let media = Arc::new(CallMedia::new(ContentType::default(), MediaLimits::default(), None));
        let control = Recorder::default();
        let options = ConnectionOptions {
            ping_interval: Duration::from_millis(100),
            dead_peer_timeout: Duration::from_millis(400),
            ..ConnectionOptions::default()
        };
        let task = tokio::spawn(run(settings(port, 16000), media, control.clone(), options));
        let mut server = accept(&listener, true).await;
        server.next().await.unwrap().unwrap();
        // Answer pings (tungstenite does, while we read) for a while, then go silent.
        let mut pings = 0;
        let answering = tokio::time::timeout(Duration::from_millis(700), async {
            while let Some(Ok(message)) = server.next().await {
                if message.is_ping() {
                    pings += 1;
                }
            }
        });
        let _ = answering.await;
        assert!(pings >= 4, "pings every 100 ms: {pings}");
        assert!(!task.is_finished(), "a server that answers pings stays connected");
        let started = std::time::Instant::now();
        let end = task.await.unwrap();
        assert_eq!(end.hangup_cause(), Some(HangupCause::RecoveryOnTimerExpire), "{end:?}");
        assert!(started.elapsed() < Duration::from_millis(900));
        drop(server);
    }

    #[tokio::test]
    async fn connection_attempts_beyond_the_cap_fail_at_once() {
        let (listener, port) = listener().await;
        let media = Arc::new(CallMedia::new(ContentType::default(), MediaLimits::default(), None));
        let options = ConnectionOptions { max_connecting: 0, ..ConnectionOptions::default() };
        let started = std::time::Instant::now();
        let end = run(settings(port, 16000), media, Recorder::default(), options).await;
        assert!(
            matches!(&end, ConversationEnd::Failed { cause: HangupCause::DestinationOutOfOrder, why } if why.contains("already in progress")),
            "{end:?}"
        );
        assert!(started.elapsed() < Duration::from_millis(100), "no waiting, no connecting");
        let nothing = tokio::time::timeout(Duration::from_millis(100), listener.accept()).await;
        assert!(nothing.is_err(), "the server must not have been contacted");
    }

    /// A CallControl whose answer panics, as a bug anywhere in the task would.
    #[derive(Default, Clone)]
    struct PanicsOnAnswer(Recorder);

    impl CallControl for PanicsOnAnswer {
        fn answer(&self) -> bool {
            panic!("bug while answering");
        }
        fn hangup(&self, cause: HangupCause) {
            self.0.hangup(cause)
        }
        fn hangup_named(&self, cause: &str) {
            self.0.hangup_named(cause)
        }
        fn send_dtmf(&self, digits: &str, duration_ms: u32) {
            self.0.send_dtmf(digits, duration_ms)
        }
        fn transfer(&self, extension: &str) {
            self.0.transfer(extension)
        }
        fn event(&self, event: CallEvent) {
            self.0.event(event)
        }
        fn call_id(&self) -> &str {
            "test-call"
        }
    }

    #[tokio::test]
    async fn a_panic_in_the_task_hangs_the_call_up_with_crash() {
        let (listener, port) = listener().await;
        let media = Arc::new(CallMedia::new(ContentType::l16(8000), MediaLimits::default(), None));
        let control = PanicsOnAnswer::default();
        let task =
            tokio::spawn(run(settings(port, 8000), media.clone(), control.clone(), ConnectionOptions::default()));
        let _server = accept(&listener, true).await;
        let end = timeout(Duration::from_secs(5), task).await.expect("the task ends").expect("no panic escapes");
        assert!(
            matches!(&end, ConversationEnd::Failed { cause: HangupCause::Crash, why } if why.contains("bug while answering")),
            "{end:?}"
        );
        assert_eq!(control.0.events(), vec!["hangup CRASH"]);
        assert!(media.is_caller_gone(), "the call's media is told it is over");
    }

    fn with_fallback(port: u16, fallback_port: u16) -> CallSettings {
        let mut settings = settings(port, 8000);
        settings.fallbacks = vec![ServerUri::parse(&format!("ws://127.0.0.1:{fallback_port}/fallback")).unwrap()];
        settings
    }

    /// An 8 kHz call whose session runs against a fresh listener.
    async fn started_call(
        options: ConnectionOptions,
    ) -> (TcpListener, Arc<CallMedia>, Recorder, tokio::task::JoinHandle<ConversationEnd>) {
        let (listener, port) = listener().await;
        let media = Arc::new(CallMedia::new(ContentType::l16(8000), MediaLimits::default(), None));
        let control = Recorder::default();
        let task = tokio::spawn(run(settings(port, 8000), media.clone(), control.clone(), options));
        (listener, media, control, task)
    }

    fn reconnecting(budget_ms: u64) -> ConnectionOptions {
        ConnectionOptions { reconnect: Duration::from_millis(budget_ms), ..ConnectionOptions::default() }
    }

    #[tokio::test]
    async fn a_refused_primary_falls_back_to_the_next_server() {
        let (closed, port) = listener().await;
        drop(closed);
        let (listener, fallback_port) = listener().await;
        let media = Arc::new(CallMedia::new(ContentType::l16(8000), MediaLimits::default(), None));
        let control = Recorder::default();
        let task = tokio::spawn(run(
            with_fallback(port, fallback_port),
            media.clone(),
            control.clone(),
            ConnectionOptions::default(),
        ));
        let mut server = accept(&listener, true).await;
        assert!(server.next().await.unwrap().unwrap().is_text(), "the first message goes to the fallback");
        // A fallback is shown with its path hidden, as wsbridge.conf's fallback-uris are.
        assert_eq!(media.figures().reconnection.server, format!("ws://127.0.0.1:{fallback_port}/***"));
        server.close(None).await.unwrap();
        assert_eq!(task.await.unwrap(), ConversationEnd::ServerClosed { code: None, reason: String::new() });
        assert_eq!(control.events(), vec!["answer", "hangup NORMAL_CLEARING"]);
    }

    /// A reset mid-call: the same server takes the call back, hears the first
    /// message again and `resumed`, and caller audio queued in the gap reaches it.
    #[tokio::test]
    async fn a_reset_mid_call_reconnects_and_resumes() {
        let (listener, media, control, task) = started_call(reconnecting(3000)).await;
        let mut first = accept(&listener, true).await;
        let greeting = first.next().await.unwrap().unwrap().into_text().unwrap().to_string();
        // A TCP close without a close frame. Caller audio of the gap is queued once
        // the module knows the connection is gone (what it wrote into the dead
        // socket before that is lost, as with any TCP peer).
        drop(first);
        while media.state() != "reconnecting" {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        media.send_audio(&vec![7u8; 320]);
        let mut second = accept(&listener, true).await;
        assert_eq!(
            second.next().await.unwrap().unwrap().into_text().unwrap().as_str(),
            greeting,
            "the first message again"
        );
        let resumed: serde_json::Value =
            serde_json::from_str(second.next().await.unwrap().unwrap().into_text().unwrap().as_str()).unwrap();
        assert_eq!(resumed["event"], "resumed");
        assert_eq!(resumed["uuid"], "test-call");
        assert_eq!(resumed["reconnects"], 1);
        assert!(resumed["gap_ms"].as_u64().unwrap() < 3000);
        let frame = loop {
            if let Message::Binary(data) = second.next().await.unwrap().unwrap() {
                break data;
            }
        };
        assert_eq!(frame[0], 7, "caller audio from the gap reaches the new connection");
        second.close(None).await.unwrap();
        assert_eq!(task.await.unwrap().hangup_cause(), Some(HangupCause::NormalClearing));
        assert_eq!(control.announced(), vec!["connect", "reconnecting", "reconnected", "disconnect"]);
        let report = crate::call::api::cdr_variables(&media.figures());
        assert!(report.contains(&("wsbridge_reconnects", "1".to_string())), "{report:?}");
    }

    #[tokio::test]
    async fn a_server_gone_for_good_hangs_up_when_the_budget_is_spent() {
        let (listener, _media, control, task) = started_call(reconnecting(1000)).await;
        let mut server = accept(&listener, true).await;
        server.next().await.unwrap().unwrap();
        drop(listener);
        let gone_at = tokio::time::Instant::now();
        drop(server);
        let end = task.await.unwrap();
        let took = gone_at.elapsed();
        assert_eq!(end.hangup_cause(), Some(HangupCause::NetworkOutOfOrder), "{end:?}");
        assert!(took >= Duration::from_millis(900) && took <= Duration::from_millis(1500), "hung up after {took:?}");
        assert_eq!(control.events(), vec!["answer", "hangup NETWORK_OUT_OF_ORDER"]);
    }

    #[tokio::test]
    async fn a_close_frame_ends_the_call_even_with_reconnect_on() {
        let (listener, _media, _control, task) = started_call(reconnecting(5000)).await;
        let mut server = accept(&listener, true).await;
        server.next().await.unwrap().unwrap();
        let started = tokio::time::Instant::now();
        server.close(None).await.unwrap();
        assert_eq!(task.await.unwrap().hangup_cause(), Some(HangupCause::NormalClearing));
        assert!(started.elapsed() < Duration::from_millis(500));
    }

    #[tokio::test]
    async fn the_caller_hanging_up_during_a_reconnect_ends_it_at_once() {
        let (listener, media, _control, task) = started_call(reconnecting(60_000)).await;
        let mut server = accept(&listener, true).await;
        server.next().await.unwrap().unwrap();
        drop(listener);
        drop(server);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(media.state(), "reconnecting");
        let hung_up = tokio::time::Instant::now();
        media.stop_conversation();
        assert_eq!(task.await.unwrap(), ConversationEnd::CallerHungUp);
        assert!(hung_up.elapsed() < Duration::from_millis(200));
    }

    /// A server-side accepted socket and the client that opened it.
    async fn accepted_pair() -> (Connection, WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>) {
        let (listener, port) = listener().await;
        let client = tokio::spawn(async move {
            tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/")).await.unwrap().0
        });
        let (tcp, _) = listener.accept().await.unwrap();
        let io: Box<dyn crate::wire::websocket::Io> = Box::new(tcp);
        let server = tokio_tungstenite::accept_async(io).await.unwrap();
        (Connection::WebSocket(server), client.await.unwrap())
    }

    #[tokio::test]
    async fn an_inbound_call_moves_audio_and_events_and_its_client_ends_it() {
        let (connection, mut client) = accepted_pair().await;
        let media = Arc::new(CallMedia::new(ContentType::l16(8000), MediaLimits::default(), None));
        media.mark_open("inbound:client");
        let control = Recorder::default();
        let task = tokio::spawn(serve_inbound(
            connection,
            "inbound:client".into(),
            media.clone(),
            control.clone(),
            ConnectionOptions::default(),
        ));
        // Nothing is sent first: the first thing the client hears is what the call queues.
        assert!(media.send_text(crate::call::admission::Progress::Answered.event()));
        media.send_audio(&vec![9u8; 320]);
        let first = client.next().await.unwrap().unwrap();
        assert_eq!(first.into_text().unwrap().as_str(), r#"{"event":"answered"}"#);
        assert_eq!(client.next().await.unwrap().unwrap(), Message::Binary(Bytes::from(vec![9u8; 320])));
        // Client audio reaches the playout; its actions reach the call.
        client.send(Message::Binary(Bytes::from(vec![0u8; 640]))).await.unwrap();
        client.send(Message::text(r#"{"action":"dtmf","digits":"7"}"#)).await.unwrap();
        let mut frame = [0i16; 160];
        let mut frames = 0;
        while frames < 2 {
            if media.next_downlink_frame(&mut frame) == Downlink::Audio {
                frames += 1;
            } else {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        client.close(None).await.unwrap();
        assert_eq!(task.await.unwrap().hangup_cause(), Some(HangupCause::NormalClearing));
        assert_eq!(control.events(), vec!["dtmf 7 100", "hangup NORMAL_CLEARING"], "never answered here");
        assert_eq!(control.announced().first().map(String::as_str), Some("connect"));
    }

    #[tokio::test]
    async fn an_inbound_call_hung_up_in_freeswitch_tells_the_client_then_closes_1000() {
        let (connection, mut client) = accepted_pair().await;
        let media = Arc::new(CallMedia::new(ContentType::l16(16000), MediaLimits::default(), None));
        media.mark_open("inbound:client");
        let control = Recorder::default();
        let task = tokio::spawn(serve_inbound(
            connection,
            "inbound:client".into(),
            media.clone(),
            control.clone(),
            ConnectionOptions::default(),
        ));
        media.send_text(crate::wire::protocol::wsbridge::hangup_event("USER_BUSY"));
        media.caller_closes();
        let mut texts = Vec::new();
        let close = loop {
            match client.next().await {
                Some(Ok(Message::Text(text))) => texts.push(text.to_string()),
                Some(Ok(Message::Close(frame))) => break frame,
                Some(Ok(_)) => {}
                other => panic!("no close: {other:?}"),
            }
        };
        assert_eq!(texts, vec![r#"{"event":"hangup","cause":"USER_BUSY"}"#]);
        assert_eq!(close.map(|f| u16::from(f.code)), Some(1000));
        drop(client);
        assert_eq!(task.await.unwrap(), ConversationEnd::CallerHungUp);
        assert!(control.events().is_empty(), "the call is hung up already");
    }

    fn from_sip_header(text: &str) -> ServerUri {
        ServerUri { origin: crate::settings::Origin::SipHeader, ..ServerUri::parse(text).unwrap() }
    }

    /// Accepts one upgrade and says what its Authorization header was.
    async fn accept_seeing_authorization(listener: &TcpListener) -> Option<String> {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut seen = None;
        let callback = |request: &Request, response: Response| {
            seen = request.headers().get("Authorization").map(|value| value.to_str().unwrap().to_string());
            Ok(response)
        };
        let _server = tokio_tungstenite::accept_hdr_async(tcp, callback).await.unwrap();
        seen
    }

    #[tokio::test]
    async fn a_sip_header_uri_resolving_to_loopback_is_barred_at_connect() {
        let (listener, port) = listener().await;
        let mut settings = settings(port, 8000);
        settings.uri = from_sip_header(&format!("ws://localhost:{port}/call"));
        let media = Arc::new(CallMedia::new(ContentType::l16(8000), MediaLimits::default(), None));
        let control = Recorder::default();
        let end = run(settings, media, control.clone(), ConnectionOptions::default()).await;
        let ConversationEnd::Failed { cause: HangupCause::OutgoingCallBarred, why } = &end else { panic!("{end:?}") };
        assert!(why.starts_with(&format!("ws://localhost:{port}/call resolves to ")), "{why}");
        assert!(why.contains("a loopback address, and came from a SIP header; allowed-hosts does not name it"));
        assert_eq!(control.events(), vec!["hangup OUTGOING_CALL_BARRED"]);
        let nobody = timeout(Duration::from_millis(200), listener.accept()).await;
        assert!(nobody.is_err(), "no connection was made");
        // Named in allowed-hosts, the same URI is reached.
        let mut settings = super::tests::settings(port, 8000);
        settings.uri = from_sip_header(&format!("ws://localhost:{port}/call"));
        let options = ConnectionOptions {
            allowed_hosts: crate::settings::security::parse_allowlist("localhost").unwrap(),
            ..ConnectionOptions::default()
        };
        let media = Arc::new(CallMedia::new(ContentType::l16(8000), MediaLimits::default(), None));
        let task = tokio::spawn(run(settings, media, Recorder::default(), options));
        let mut server = accept(&listener, true).await;
        server.close(None).await.unwrap();
        assert_eq!(task.await.unwrap().hangup_cause(), Some(HangupCause::NormalClearing));
    }

    #[tokio::test]
    async fn credentials_go_only_to_a_server_the_operator_chose_or_named() {
        let (listener, port) = listener().await;
        let secret = vec![("Authorization".to_string(), "Bearer secret".to_string())];
        // A block admits localhost's addresses, but does not name the host.
        let block = crate::settings::security::parse_allowlist("127.0.0.0/8 ::1").unwrap();
        let named = crate::settings::security::parse_allowlist("localhost").unwrap();
        for (origin_is_sip, allowed_hosts, sent) in
            [(true, block.clone(), false), (true, named, true), (false, block, true)]
        {
            let mut settings = settings(port, 8000);
            let text = format!("ws://localhost:{port}/call");
            settings.uri = if origin_is_sip { from_sip_header(&text) } else { ServerUri::parse(&text).unwrap() };
            let options =
                ConnectionOptions { http_headers: secret.clone(), allowed_hosts, ..ConnectionOptions::default() };
            let media = Arc::new(CallMedia::new(ContentType::l16(8000), MediaLimits::default(), None));
            let task = tokio::spawn(run(settings, media.clone(), Recorder::default(), options));
            let seen = accept_seeing_authorization(&listener).await;
            assert_eq!(seen.is_some(), sent, "from a SIP header: {origin_is_sip}");
            media.caller_closes();
            let _ = timeout(Duration::from_secs(5), task).await;
        }
    }

    /// Every reconnect checks every server again: a SIP header's server that
    /// is barred ends the call at the reconnect, with OUTGOING_CALL_BARRED.
    #[tokio::test]
    async fn every_reconnect_checks_the_addresses_again() {
        let (barred, port) = listener().await;
        let (listener, fallback_port) = listener().await;
        let mut settings = with_fallback(port, fallback_port);
        settings.uri = from_sip_header(&format!("ws://localhost:{port}/call"));
        let media = Arc::new(CallMedia::new(ContentType::l16(8000), MediaLimits::default(), None));
        let control = Recorder::default();
        let task = tokio::spawn(run(settings, media.clone(), control.clone(), reconnecting(3000)));
        let mut first = accept(&listener, true).await;
        assert!(first.next().await.unwrap().unwrap().is_text(), "the first message goes to the fallback");
        assert_eq!(
            media.figures().reconnection.server,
            format!("ws://127.0.0.1:{fallback_port}/***"),
            "the barred primary was passed over"
        );
        drop(first);
        let end = timeout(Duration::from_secs(5), task).await.unwrap().unwrap();
        let ConversationEnd::Failed { cause: HangupCause::OutgoingCallBarred, why } = &end else { panic!("{end:?}") };
        assert!(why.contains("reconnecting refused: ws://localhost:"), "{why}");
        assert_eq!(control.events(), vec!["answer", "hangup OUTGOING_CALL_BARRED"]);
        assert!(timeout(Duration::from_millis(100), barred.accept()).await.is_err(), "never connected to");
    }
}
