//! The state one call shares between its FreeSWITCH session thread and its
//! WebSocket task. The session side never waits: it takes a short lock,
//! copies a frame, and at most wakes the task.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::audio::playout::{AfterPlayout, Downlink, MarkOutcome, PlayoutBuffer};
use crate::audio::replies::{Heard, ReplyProgress};
use crate::audio::uplink::{PushOutcome, ToServer, UplinkQueue};
use crate::audio::uplink_pump::{PumpSlot, UplinkPump};
use crate::audio::uplink_writer::{Direct, Uplink};
use crate::settings::options::MediaLimits;
use crate::settings::{ContentType, Encoding};
use crate::support::sync::lock;

#[derive(Default)]
pub struct MediaStats {
    /// Caller frames handed to the socket (taken off the uplink queue).
    pub frames_sent: AtomicU64,
    /// Server frames received (whole frames' worth of bytes).
    pub frames_received: AtomicU64,
    /// Server frames played to the caller.
    pub frames_played: AtomicU64,
    /// Tokens a speech-to-speech model reported using.
    pub input_tokens: AtomicU64,
    pub output_tokens: AtomicU64,
}

/// Turns the server's G.711 into L16 for the playout: in the module, FreeSWITCH's own codec.
pub trait WireDecoder: Send + Sync {
    /// Appends the samples of `wire` to `linear`, little-endian.
    fn decode(&self, wire: &[u8], linear: &mut Vec<u8>);
}

/// A call's media figures at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MediaFigures {
    pub frames_sent: u64,
    pub frames_received: u64,
    pub frames_played: u64,
    pub underruns: u64,
    pub jitter_ms: f64,
    pub target_ms: f64,
    pub concealed_frames: u64,
    pub drift_dropped_frames: u64,
    pub compressed_ms: f64,
    pub dropped_frames: u64,
    pub connect_ms: Option<u64>,
    pub reconnection: Reconnection,
    /// The close code and reason, once the socket closed.
    pub close: Option<(u16, String)>,
    /// A speech-to-speech model's call only.
    pub agent: Option<AgentFigures>,
}

/// What a call with a speech-to-speech model leaves behind.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AgentFigures {
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Turns whose reply was heard: from the caller stopping to the reply's first frame played.
    pub turns: u64,
    pub turn_latency_p50_ms: Option<u32>,
    pub turn_latency_max_ms: Option<u32>,
}

pub struct CallMedia {
    /// The audio on the wire; the playout holds it as L16 at the same rate.
    pub format: ContentType,
    wire_decoder: Option<Box<dyn WireDecoder>>,
    /// 20 ms frames per uplink message.
    frames_per_message: u64,
    playout: Mutex<PlayoutBuffer>,
    playout_space: Notify,
    high_water_bytes: usize,
    low_water_bytes: usize,
    /// The queue, and the connection's write side where caller audio is written directly: one lock.
    uplink: Arc<Mutex<Uplink>>,
    /// Wakes the task for queued caller audio and text.
    uplink_ready: Arc<PumpSlot>,
    /// Where caller audio's wake-ups are batched; none wakes the task per frame.
    uplink_pump: Option<Arc<UplinkPump>>,
    caller_gone: CancellationToken,
    /// Set once the server has the first message; caller audio before that is not queued.
    open: AtomicBool,
    started: std::time::Instant,
    connect_ms: AtomicU64,
    close: Mutex<Option<(u16, String)>>,
    /// The caller hung up on an open socket: what is queued will still be sent.
    caller_flush: AtomicBool,
    reconnection: Mutex<Reconnection>,
    /// A listen-only fork's: server audio is counted, never queued for playout.
    listen_only: AtomicBool,
    /// The server is a speech-to-speech model: its figures go to the CDR.
    agent: AtomicBool,
    /// Function calls the model waits on, answered through the API: their call IDs.
    function_calls: Mutex<VecDeque<String>>,
    /// When the server was last heard from, in ms since `started`: the dead-peer check's.
    heard_ms: AtomicU64,
    /// Bytes of server audio received, for the whole frames counted in `stats`.
    received_bytes: AtomicU64,
    /// Server audio may go to the playout from the reader that has it, without the task.
    direct_downlink: AtomicBool,
    pub stats: MediaStats,
}

/// Function calls waiting at once; the oldest is forgotten beyond.
const MAX_PENDING_FUNCTION_CALLS: usize = 32;
/// How long a transcript waits for its reply's first frame, for the turn's latency.
const REPLY_START_WAIT: Duration = Duration::from_secs(1);

/// Which server the call talks to, and how often it had to find one again.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reconnection {
    pub server: String,
    pub reconnecting: bool,
    pub reconnects: u64,
    /// Time without a server, over all reconnects.
    pub gap_ms: u64,
}

/// Most server audio queued for playout in one step (about 1 s at 16 kHz).
const PUSH_PIECE_BYTES: usize = 32 * 1024;

/// The close reason when the caller hangs up.
pub const CALLER_HUNG_UP: &str = "caller hung up";

fn bytes_for(format: ContentType, duration: Duration) -> usize {
    let frames = (duration.as_millis() as usize).div_ceil(crate::settings::FRAME_MS as usize).max(1);
    frames * format.bytes_per_frame()
}

impl CallMedia {
    /// `wire_decoder` is needed, and used, only where the wire is G.711.
    pub fn new(format: ContentType, limits: MediaLimits, wire_decoder: Option<Box<dyn WireDecoder>>) -> Self {
        let linear = format.linear();
        let capacity = bytes_for(linear, limits.playout_capacity);
        let high_water = bytes_for(linear, limits.playout_high_water).min(capacity);
        let low_water = bytes_for(linear, limits.playout_low_water).min(high_water);
        let frames_per_message = (limits.uplink_frame_ms / crate::settings::FRAME_MS).max(1) as usize;
        let uplink_messages =
            (bytes_for(format, limits.uplink_backlog) / format.bytes_per_frame()).div_ceil(frames_per_message);
        assert!(format.encoding == Encoding::L16 || wire_decoder.is_some(), "G.711 from the server needs a decoder");
        CallMedia {
            format,
            wire_decoder,
            frames_per_message: frames_per_message as u64,
            playout: Mutex::new(PlayoutBuffer::with_jitter(
                linear.bytes_per_frame(),
                capacity,
                format.rate,
                limits.jitter,
            )),
            playout_space: Notify::new(),
            high_water_bytes: high_water,
            low_water_bytes: low_water,
            uplink: Arc::new(Mutex::new(Uplink::new(UplinkQueue::new(uplink_messages)))),
            uplink_ready: Arc::new(PumpSlot::default()),
            uplink_pump: None,
            caller_gone: CancellationToken::new(),
            open: AtomicBool::new(false),
            started: std::time::Instant::now(),
            connect_ms: AtomicU64::new(u64::MAX),
            close: Mutex::new(None),
            caller_flush: AtomicBool::new(false),
            reconnection: Mutex::new(Reconnection::default()),
            listen_only: AtomicBool::new(false),
            agent: AtomicBool::new(false),
            function_calls: Mutex::new(VecDeque::new()),
            heard_ms: AtomicU64::new(0),
            received_bytes: AtomicU64::new(0),
            direct_downlink: AtomicBool::new(false),
            stats: MediaStats::default(),
        }
    }

    /// Caller audio wakes the task with `pump`'s batches instead of frame by frame.
    pub fn with_uplink_pump(mut self, pump: Option<Arc<UplinkPump>>) -> Self {
        self.uplink_pump = pump;
        self
    }

    // ---- session thread side: never waits ----

    /// The next frame for the caller: server audio, a concealed gap, or nothing.
    pub fn next_downlink_frame(&self, out: &mut [i16]) -> Downlink {
        let mut reached = Vec::new();
        let mut due = Vec::new();
        let (heard, crossed_low_water) = {
            let mut playout = lock(&self.playout);
            let before = playout.buffered_bytes();
            let heard = playout.next_frame(std::time::Instant::now(), out);
            if playout.has_marks() {
                playout.take_reached_marks(&mut reached);
                playout.take_due_actions(&mut due);
            }
            (heard, before > self.low_water_bytes && playout.buffered_bytes() <= self.low_water_bytes)
        };
        if crossed_low_water {
            self.playout_space.notify_one();
        }
        for name in reached {
            self.send_mark(name, false);
        }
        self.queue_due(due);
        if heard == Downlink::Audio {
            self.stats.frames_played.fetch_add(1, Ordering::Relaxed);
        }
        heard
    }

    /// The jitter buffer's target and recent jitter, in ms, for the status API.
    pub fn jitter_now(&self) -> (f64, f64) {
        let playout = lock(&self.playout);
        (playout.jitter().target_ms(), playout.jitter().recent_jitter_ms())
    }

    /// Sends one message of caller audio (little-endian bytes): written to
    /// the socket right here when the connection allows it and nothing
    /// waits ahead of it, else queued for the task.
    pub fn send_audio(&self, frame: &[u8]) -> PushOutcome {
        let mut uplink = lock(&self.uplink);
        let direct = uplink.send_direct(frame);
        if direct != Direct::NotNow {
            drop(uplink);
            self.stats.frames_sent.fetch_add(self.frames_per_message, Ordering::Relaxed);
            if direct == Direct::SentInPart {
                // The task flushes the rest once the socket takes it.
                self.uplink_ready.wake_now();
            }
            return PushOutcome::Queued;
        }
        let outcome = uplink.queue.push_audio(Bytes::copy_from_slice(frame));
        drop(uplink);
        match &self.uplink_pump {
            Some(pump) => pump.schedule(&self.uplink_ready),
            None => self.uplink_ready.wake_now(),
        }
        outcome
    }

    /// Queues a caller's digit; false when too many messages are waiting.
    pub fn send_dtmf(&self, digit: char, duration_ms: u32) -> bool {
        self.queue_item(ToServer::Dtmf { digit, duration_ms })
    }

    /// Queues a text message for the server, sent as given; false when too many are waiting.
    pub fn send_text(&self, text: String) -> bool {
        self.queue_item(ToServer::Text(text))
    }

    /// From now on server audio is counted and dropped (a listen-only fork).
    pub fn set_listen_only(&self) {
        self.listen_only.store(true, Ordering::Release);
    }

    /// Bytes of one uplink message on the wire.
    pub fn uplink_message_bytes(&self) -> usize {
        self.format.bytes_per_frame() * self.frames_per_message as usize
    }

    fn queue_item(&self, item: ToServer) -> bool {
        let queued = lock(&self.uplink).queue.push_control(item);
        self.uplink_ready.wake_now();
        queued
    }

    /// Hands actions whose audio has played to the task, which carries them out.
    fn queue_due(&self, due: Vec<AfterPlayout>) {
        for action in due {
            self.queue_item(ToServer::AfterPlayout(action));
        }
    }

    fn send_mark(&self, name: String, cleared: bool) -> bool {
        self.queue_item(ToServer::Mark { name, cleared })
    }

    /// Tells the task to close the socket and end, whatever the reason: the
    /// caller hung up, the answer failed, or a panic.
    pub fn stop_conversation(&self) {
        self.caller_gone.cancel();
    }

    pub fn is_open(&self) -> bool {
        self.open.load(Ordering::Acquire)
    }

    /// The session with `server` is open: caller audio is queued for it from now on.
    pub fn mark_open(&self, server: &str) {
        self.connect_ms.store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
        self.set_server(server);
        self.open.store(true, Ordering::Release);
    }

    /// The server the call is talking to (as it may be logged).
    pub fn set_server(&self, server: &str) {
        lock(&self.reconnection).server = server.to_string();
    }

    pub fn set_reconnecting(&self, reconnecting: bool) {
        lock(&self.reconnection).reconnecting = reconnecting;
    }

    /// Counts a reconnect after `gap_ms` without a server; returns the count so far.
    pub fn count_reconnect(&self, gap_ms: u64) -> u64 {
        let mut reconnection = lock(&self.reconnection);
        reconnection.reconnects += 1;
        reconnection.gap_ms += gap_ms;
        reconnection.reconnects
    }

    /// The close code and reason of the WebSocket, whichever side closed it
    /// first; returns the reason in force (an earlier one stays).
    pub fn record_close(&self, code: u16, reason: &str) -> String {
        lock(&self.close).get_or_insert_with(|| (code, reason.to_string())).1.clone()
    }

    /// The caller hung up while the socket was open: the task sends what is
    /// queued, then closes with 1000. Returns whether that flush is to come.
    pub fn caller_closes(&self) -> bool {
        self.closes_with(CALLER_HUNG_UP)
    }

    /// As `caller_closes`, with the close reason given (a fork's `stop`).
    pub fn closes_with(&self, reason: &str) -> bool {
        self.stop_conversation();
        if !self.is_open() {
            return false;
        }
        let mut close = lock(&self.close);
        let first = close.is_none();
        close.get_or_insert_with(|| (1000, reason.to_string()));
        if first {
            self.caller_flush.store(true, Ordering::Release);
        }
        first
    }

    pub fn close_info(&self) -> Option<(u16, String)> {
        lock(&self.close).clone()
    }

    pub fn connect_ms(&self) -> Option<u64> {
        Some(self.connect_ms.load(Ordering::Relaxed)).filter(|ms| *ms != u64::MAX)
    }

    /// For the status API.
    pub fn state(&self) -> &'static str {
        if lock(&self.reconnection).reconnecting && !self.is_caller_gone() {
            return "reconnecting";
        }
        match (self.is_open(), self.is_caller_gone(), lock(&self.close).is_some()) {
            (_, _, true) => "closed",
            (_, true, false) => "closing",
            (true, false, false) => "open",
            (false, false, false) => "connecting",
        }
    }

    /// Caller frames the server gets: those sent, plus those the flush after
    /// a caller hangup will send. Read under the queue's lock, so none is counted twice.
    fn frames_to_server(&self) -> u64 {
        let uplink = lock(&self.uplink);
        let queued = if self.caller_flush.load(Ordering::Acquire) {
            uplink.queue.audio_frames() as u64 * self.frames_per_message
        } else {
            0
        };
        self.stats.frames_sent.load(Ordering::Relaxed) + queued
    }

    /// The call's figures as they stand (`call::api::cdr_variables` names them for CDRs).
    pub fn figures(&self) -> MediaFigures {
        // One lock at a time, as everywhere else.
        let (underruns, jitter_ms, target_ms, concealed_frames, drift_dropped_frames, compressed_ms) = {
            let playout = lock(&self.playout);
            let jitter = playout.jitter();
            (
                playout.underruns(),
                jitter.call_jitter_ms(),
                jitter.target_ms(),
                jitter.concealed_frames,
                jitter.drift_dropped_frames,
                jitter.compressed_ms,
            )
        };
        let connect_ms = self.connect_ms.load(Ordering::Relaxed);
        MediaFigures {
            frames_sent: self.frames_to_server(),
            frames_received: self.stats.frames_received.load(Ordering::Relaxed),
            frames_played: self.stats.frames_played.load(Ordering::Relaxed),
            underruns,
            jitter_ms,
            target_ms,
            concealed_frames,
            drift_dropped_frames,
            compressed_ms,
            dropped_frames: self.dropped_uplink_frames(),
            connect_ms: (connect_ms != u64::MAX).then_some(connect_ms),
            reconnection: lock(&self.reconnection).clone(),
            close: lock(&self.close).clone(),
            agent: self.agent_figures(),
        }
    }

    pub fn is_caller_gone(&self) -> bool {
        self.caller_gone.is_cancelled()
    }

    pub fn buffered_playout(&self) -> Duration {
        // The playout holds L16.
        let bytes = lock(&self.playout).buffered_bytes();
        Duration::from_micros((bytes / 2) as u64 * 1_000_000 / self.format.rate as u64)
    }

    pub fn underruns(&self) -> u64 {
        lock(&self.playout).underruns()
    }

    pub fn dropped_uplink_frames(&self) -> u64 {
        lock(&self.uplink).queue.dropped_frames()
    }

    // ---- WebSocket task side ----

    pub async fn caller_gone(&self) {
        self.caller_gone.cancelled().await
    }

    /// Waits while the playout is above the high-water mark, until it drains below the low one.
    pub async fn wait_for_playout_room(&self) {
        if lock(&self.playout).buffered_bytes() < self.high_water_bytes {
            return;
        }
        self.wait_for_low_water().await;
    }

    async fn wait_for_low_water(&self) {
        loop {
            let notified = self.playout_space.notified();
            if lock(&self.playout).buffered_bytes() <= self.low_water_bytes {
                return;
            }
            notified.await;
        }
    }

    /// Queues all of `wire` for playout, waiting for room when the buffer is full.
    pub async fn queue_playout(&self, wire: &[u8]) {
        if self.listen_only.load(Ordering::Acquire) {
            return;
        }
        match &self.wire_decoder {
            Some(decoder) if self.format.encoding != Encoding::L16 => {
                let mut linear = Vec::with_capacity(wire.len() * 2);
                decoder.decode(wire, &mut linear);
                self.queue_linear(&linear).await
            }
            _ => self.queue_linear(wire).await,
        }
    }

    async fn queue_linear(&self, mut data: &[u8]) {
        loop {
            // A large message goes in pieces, yielding between them, so that it
            // holds neither this call's playout lock (its FreeSWITCH thread
            // waits on it) nor the runtime thread that other calls share.
            let piece = &data[..data.len().min(PUSH_PIECE_BYTES)];
            let taken = lock(&self.playout).push(piece);
            data = &data[taken..];
            if data.is_empty() {
                return;
            }
            if taken < piece.len() {
                self.wait_for_low_water().await;
            } else {
                tokio::task::yield_now().await;
            }
        }
    }

    /// Barge-in for a protocol whose server is told nothing of what was heard.
    pub fn clear_playout(&self) {
        self.interrupt_playout();
    }

    /// Barge-in: drops all queued audio at once, answers the marks that were
    /// waiting for it, then confirms with `cleared`; actions that waited for
    /// the dropped audio are due at once. Returns how much of each reply (a
    /// speech-to-speech model's) cut short the caller heard.
    pub fn interrupt_playout(&self) -> Vec<Heard> {
        let (dropped_marks, due, heard) = lock(&self.playout).interrupt();
        self.playout_space.notify_one();
        for name in dropped_marks {
            self.send_mark(name, true);
        }
        self.queue_due(due);
        self.queue_item(ToServer::Cleared);
        heard
    }

    /// Audio queued from now on is `reply`'s; `turn_began` when it answers the caller's turn.
    pub fn begin_reply(&self, reply: u64, turn_began: Option<std::time::Instant>) {
        lock(&self.playout).begin_reply(reply, turn_began);
    }

    /// The latency of the turn `reply` answered, once its first frame has
    /// played (waiting up to a second for that); `None` when it answered no turn.
    pub async fn turn_latency_of(&self, reply: u64) -> Option<u32> {
        let deadline = tokio::time::Instant::now() + REPLY_START_WAIT;
        loop {
            let progress = lock(&self.playout).reply_progress(reply);
            match progress {
                ReplyProgress::Started(latency) => return latency,
                ReplyProgress::Unknown => return None,
                ReplyProgress::Waiting if tokio::time::Instant::now() >= deadline => return None,
                ReplyProgress::Waiting => {
                    tokio::time::sleep(Duration::from_millis(crate::settings::FRAME_MS as u64)).await
                }
            }
        }
    }

    /// Carries out `action` once the audio queued so far has played; false when too many wait.
    pub fn after_playout(&self, action: AfterPlayout) -> bool {
        let mut due = Vec::new();
        let added = {
            let mut playout = lock(&self.playout);
            let added = playout.add_action(action);
            playout.take_due_actions(&mut due);
            added
        };
        self.queue_due(due);
        added
    }

    /// The server is a speech-to-speech model: its figures are kept for the CDR.
    pub fn set_agent(&self) {
        self.agent.store(true, Ordering::Release);
    }

    pub fn count_tokens(&self, input: u64, output: u64) {
        self.stats.input_tokens.fetch_add(input, Ordering::Relaxed);
        self.stats.output_tokens.fetch_add(output, Ordering::Relaxed);
    }

    /// The model waits for the result of the function call `call_id`.
    pub fn expect_function_result(&self, call_id: &str) {
        let mut calls = lock(&self.function_calls);
        if calls.len() == MAX_PENDING_FUNCTION_CALLS {
            calls.pop_front();
        }
        calls.push_back(call_id.to_string());
    }

    /// Sends `output` as the result of the call `call_id`; false when no such call waits.
    pub fn answer_function_call(&self, call_id: &str, output: String) -> bool {
        let waiting = {
            let mut calls = lock(&self.function_calls);
            let position = calls.iter().position(|waiting| waiting == call_id);
            position.and_then(|index| calls.remove(index)).is_some()
        };
        waiting && self.send_function_result(call_id, output)
    }

    /// Sends `output` as the result of the call `call_id`; false when too many messages wait.
    pub fn send_function_result(&self, call_id: &str, output: String) -> bool {
        self.queue_item(ToServer::FunctionResult { call_id: call_id.to_string(), output })
    }

    fn agent_figures(&self) -> Option<AgentFigures> {
        if !self.agent.load(Ordering::Acquire) {
            return None;
        }
        let (turns, mut latencies) = {
            let playout = lock(&self.playout);
            let (turns, latencies) = playout.turns();
            (turns, latencies.to_vec())
        };
        latencies.sort_unstable();
        Some(AgentFigures {
            input_tokens: self.stats.input_tokens.load(Ordering::Relaxed),
            output_tokens: self.stats.output_tokens.load(Ordering::Relaxed),
            turns,
            turn_latency_p50_ms: latencies.get(latencies.len().saturating_sub(1) / 2).copied(),
            turn_latency_max_ms: latencies.last().copied(),
        })
    }

    /// Places a mark after the audio queued so far; false when refused.
    pub fn add_mark(&self, name: String) -> bool {
        let outcome = lock(&self.playout).add_mark(name.clone());
        match outcome {
            MarkOutcome::Reached => self.send_mark(name, false),
            MarkOutcome::Pending => true,
            MarkOutcome::Refused => false,
        }
    }

    /// Waits for caller audio or text, then moves all of it into `batch`.
    pub async fn next_uplink_batch(&self, batch: &mut VecDeque<ToServer>) {
        loop {
            let notified = self.uplink_ready.notified();
            if self.take_uplink(batch) {
                return;
            }
            notified.await;
        }
    }

    /// Moves whatever caller audio or text is queued into `batch` for the
    /// socket, counting its frames as sent; false when none was queued and
    /// no part-written frame waits to be flushed.
    pub fn take_uplink(&self, batch: &mut VecDeque<ToServer>) -> bool {
        let mut uplink = lock(&self.uplink);
        if uplink.queue.is_empty() {
            return uplink.has_backlog();
        }
        let messages = uplink.queue.take_all(batch);
        // Caller audio queues behind these until they are in the stream.
        uplink.set_held(true);
        self.stats.frames_sent.fetch_add(messages as u64 * self.frames_per_message, Ordering::Relaxed);
        true
    }

    /// What the task took is all in the stream: caller audio may go directly again.
    pub fn uplink_written(&self) {
        lock(&self.uplink).set_held(false);
    }

    /// The lock a `ws://` connection's writes take, shared with the session thread.
    pub fn uplink_writer(&self) -> Arc<Mutex<Uplink>> {
        self.uplink.clone()
    }

    /// Lets the session thread write caller audio to the connection, and a
    /// direct connection's reader put server audio into the playout, where
    /// the connection allows it (the task turns it on while the conversation is up).
    pub fn set_direct_audio(&self, on: bool) {
        lock(&self.uplink).set_direct_audio(on);
        self.direct_downlink.store(on, Ordering::Release);
    }

    /// Counts `bytes` of server audio received, as whole frames.
    pub fn count_received_bytes(&self, bytes: usize) {
        let frame_bytes = self.format.bytes_per_frame() as u64;
        let total = self.received_bytes.fetch_add(bytes as u64, Ordering::Relaxed) + bytes as u64;
        self.stats.frames_received.store(total / frame_bytes, Ordering::Relaxed);
    }

    /// The server was heard from: any message, a pong included.
    pub fn heard_from_server(&self) {
        self.heard_ms.store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// How long the server has been silent.
    pub fn server_silent_for(&self) -> Duration {
        self.started.elapsed().saturating_sub(Duration::from_millis(self.heard_ms.load(Ordering::Relaxed)))
    }

    // ---- the downlink reactor's side: never waits ----

    /// Whether server audio may be queued for playout by the reader that has it.
    pub fn takes_direct_downlink(&self) -> bool {
        self.direct_downlink.load(Ordering::Acquire)
    }

    /// Queues all of `wire` for playout and counts it, when the playout has
    /// room for all of it below its high-water mark; false, with nothing
    /// queued, when it has not (the task then queues it, waiting for room).
    pub fn queue_playout_now(&self, wire: &[u8]) -> bool {
        if self.listen_only.load(Ordering::Acquire) {
            self.count_received_bytes(wire.len());
            return true;
        }
        let queued = match &self.wire_decoder {
            Some(decoder) if self.format.encoding != Encoding::L16 => DECODED.with_borrow_mut(|linear| {
                linear.clear();
                decoder.decode(wire, linear);
                self.push_whole(linear)
            }),
            _ => self.push_whole(wire),
        };
        if queued {
            self.count_received_bytes(wire.len());
        }
        queued
    }

    fn push_whole(&self, linear: &[u8]) -> bool {
        let mut playout = lock(&self.playout);
        // As the task does: no more once at the high-water mark, and a message goes in whole.
        if playout.buffered_bytes() >= self.high_water_bytes || linear.len() > playout.free_bytes() {
            return false;
        }
        playout.push(linear);
        true
    }
}

thread_local! {
    /// The reader's G.711 decoded to L16, reused from message to message.
    static DECODED: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::options::JitterLimits;
    use std::sync::Arc;

    fn small_limits() -> MediaLimits {
        MediaLimits {
            playout_capacity: Duration::from_millis(200),
            playout_high_water: Duration::from_millis(100),
            playout_low_water: Duration::from_millis(60),
            uplink_backlog: Duration::from_millis(60),
            jitter: JitterLimits::OFF,
            uplink_frame_ms: 20,
        }
    }

    #[tokio::test]
    async fn a_large_message_waits_for_room_and_loses_nothing() {
        let format = ContentType::l16(8000);
        let media = Arc::new(CallMedia::new(format, small_limits(), None));
        // 1 s of a counting pattern: five times the capacity.
        let samples: Vec<i16> = (0..8000).map(|i| (i % 3000) as i16).collect();
        let bytes: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
        let producer = {
            let media = media.clone();
            tokio::spawn(async move { media.queue_playout(&bytes).await })
        };
        let mut played = Vec::new();
        let mut frame = vec![0i16; format.samples_per_frame()];
        while played.len() < samples.len() {
            assert!(media.buffered_playout() <= Duration::from_millis(200), "capacity exceeded");
            if media.next_downlink_frame(&mut frame) == Downlink::Audio {
                played.extend_from_slice(&frame);
            } else {
                tokio::task::yield_now().await;
            }
        }
        producer.await.unwrap();
        assert_eq!(played, samples);
    }

    #[tokio::test]
    async fn reading_pauses_above_high_water_until_low_water() {
        let format = ContentType::l16(8000);
        let media = Arc::new(CallMedia::new(format, small_limits(), None));
        media.queue_playout(&vec![0u8; 320 * 6]).await; // 120 ms: above high water
        let waiter = {
            let media = media.clone();
            tokio::spawn(async move { media.wait_for_playout_room().await })
        };
        let mut frame = vec![0i16; 160];
        for _ in 0..2 {
            tokio::task::yield_now().await;
            assert!(!waiter.is_finished(), "must wait until low water");
            assert!(media.next_downlink_frame(&mut frame) == Downlink::Audio);
        }
        // 80 ms left: still above 60 ms.
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(!waiter.is_finished());
        assert!(media.next_downlink_frame(&mut frame) == Downlink::Audio);
        tokio::time::timeout(Duration::from_secs(1), waiter).await.expect("woken at low water").unwrap();
    }

    #[tokio::test]
    async fn marks_and_clear_answer_through_the_uplink() {
        let format = ContentType::l16(8000);
        let media = CallMedia::new(format, small_limits(), None);
        assert!(media.add_mark("at-once".into()));
        media.queue_playout(&[0u8; 640]).await;
        assert!(media.add_mark("after-two".into()));
        media.queue_playout(&[0u8; 320]).await;
        assert!(media.add_mark("dropped".into()));
        let mut frame = vec![0i16; 160];
        assert!(media.next_downlink_frame(&mut frame) == Downlink::Audio);
        assert!(media.next_downlink_frame(&mut frame) == Downlink::Audio);
        media.clear_playout();
        assert_eq!(media.next_downlink_frame(&mut frame), Downlink::Nothing, "nothing plays after a clear");
        let mut batch = VecDeque::new();
        media.next_uplink_batch(&mut batch).await;
        let mark = |name: &str, cleared| ToServer::Mark { name: name.into(), cleared };
        assert_eq!(
            Vec::from(batch),
            [mark("at-once", false), mark("after-two", false), mark("dropped", true), ToServer::Cleared]
        );
    }

    #[tokio::test]
    async fn uplink_batches_keep_order() {
        let media = CallMedia::new(ContentType::l16(8000), small_limits(), None);
        media.send_audio(&[1]);
        media.send_dtmf('5', 100);
        let mut batch = VecDeque::new();
        media.next_uplink_batch(&mut batch).await;
        assert_eq!(
            Vec::from(batch),
            vec![ToServer::Audio(Bytes::from_static(&[1])), ToServer::Dtmf { digit: '5', duration_ms: 100 }]
        );
    }

    /// G.711 μ-law's decoding of one byte (ITU-T G.711), for tests only:
    /// the module decodes with FreeSWITCH's codec.
    struct ReferenceMulaw;

    impl WireDecoder for ReferenceMulaw {
        fn decode(&self, wire: &[u8], linear: &mut Vec<u8>) {
            for byte in wire {
                let byte = !byte;
                let exponent = (byte >> 4) & 7;
                let magnitude = ((((byte & 0x0f) as i32) << 3) + 0x84) << exponent;
                let sample = if byte & 0x80 != 0 { 0x84 - magnitude } else { magnitude - 0x84 };
                linear.extend_from_slice(&(sample as i16).to_le_bytes());
            }
        }
    }

    #[tokio::test]
    async fn g711_from_the_server_plays_as_l16_and_larger_uplink_messages_count_their_frames() {
        let limits = MediaLimits { uplink_frame_ms: 100, ..small_limits() };
        let media = CallMedia::new(ContentType::PCMU, limits, Some(Box::new(ReferenceMulaw)));
        assert_eq!(media.uplink_message_bytes(), 800);
        // 0xFF is μ-law's zero; 0x80 its largest positive sample.
        let mut wire = vec![0xFFu8; 80];
        wire.extend(vec![0x80u8; 80]);
        media.queue_playout(&wire).await;
        let mut frame = vec![0i16; 160];
        assert_eq!(media.next_downlink_frame(&mut frame), Downlink::Audio);
        assert!(frame[..80].iter().all(|s| *s == 0) && frame[80..].iter().all(|s| *s == 32124), "{frame:?}");
        media.mark_open("test");
        media.send_audio(&[0xFF; 800]);
        let mut batch = VecDeque::new();
        media.next_uplink_batch(&mut batch).await;
        assert_eq!(media.stats.frames_sent.load(Ordering::Relaxed), 5, "one 100 ms message is five frames");
    }
}
