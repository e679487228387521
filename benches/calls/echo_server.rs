//! The benchmark's WebSocket server: echoes every caller frame back, at once
//! or (live) each after a random delay in order, places a mark every 5 s to
//! time the downlink playout, and measures what it receives. Each connection
//! keeps its own figures and merges them once, at its end, so the frame path
//! takes no shared lock. Uplink jitter is timed by the kernel's receive
//! timestamps (see stamped.rs); the server's own wake-up times are kept beside
//! them, to show what the server's scheduling would have added.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::stamped::Stamped;

pub const FRAME: Duration = Duration::from_millis(20);
/// Arrivals before this frame are the call settling in; jitter counts from here.
const WARM_UP_FRAMES: u64 = 5;
// Every 5 s: each mark is also a FreeSWITCH event, which the null floor does not pay for.
const MARK_EVERY_FRAMES: u64 = 250;
const TONE_CHECK_EVERY_FRAMES: u64 = 50;
/// The live echo's delays: connection n draws from a generator seeded with this plus n.
const DELAY_SEED: u64 = 0x5eed_0000;

type Ws = WebSocketStream<Stamped>;

/// G.711 μ-law's decoding (ITU-T G.711), to check the tone of a μ-law stream.
fn mulaw_to_linear(byte: u8) -> i16 {
    let byte = !byte;
    let magnitude = ((((byte & 0x0f) as i32) << 3) + 0x84) << ((byte >> 4) & 7);
    (if byte & 0x80 != 0 { 0x84 - magnitude } else { magnitude - 0x84 }) as i16
}
type WsError = tokio_tungstenite::tungstenite::Error;

/// Microsecond histograms up to a minute, three significant figures.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds")
}

/// What the server saw of all the calls of one run.
pub struct Tally {
    pub connections: u64,
    /// Caller messages per connection, in the order the connections ended.
    pub messages_per_call: Vec<u64>,
    /// Caller audio bytes per connection, in the same order.
    pub bytes_per_call: Vec<u64>,
    pub wrong_size_frames: u64,
    pub echoed_frames: u64,
    /// |arrival gap - 20 ms| of caller frames by the kernel's receive timestamps, µs.
    pub jitter_us: Histogram<u64>,
    /// The same by when the server's task read each frame, µs.
    pub jitter_read_us: Histogram<u64>,
    /// Frames that had no kernel timestamp, and were timed when read.
    pub unstamped_frames: u64,
    /// From sending a mark after an echoed frame to hearing it was played, µs.
    pub mark_delay_us: Histogram<u64>,
    pub marks_sent: u64,
    pub marks_back: u64,
    pub tone_checked: u64,
    pub tone_found: u64,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            connections: 0,
            messages_per_call: Vec::new(),
            bytes_per_call: Vec::new(),
            wrong_size_frames: 0,
            echoed_frames: 0,
            jitter_us: histogram(),
            jitter_read_us: histogram(),
            unstamped_frames: 0,
            mark_delay_us: histogram(),
            marks_sent: 0,
            marks_back: 0,
            tone_checked: 0,
            tone_found: 0,
        }
    }

    fn merge(&mut self, call: Tally) {
        self.connections += call.connections;
        self.messages_per_call.extend(call.messages_per_call);
        self.bytes_per_call.extend(call.bytes_per_call);
        self.wrong_size_frames += call.wrong_size_frames;
        self.echoed_frames += call.echoed_frames;
        self.jitter_us.add(&call.jitter_us).expect("same bounds");
        self.jitter_read_us.add(&call.jitter_read_us).expect("same bounds");
        self.unstamped_frames += call.unstamped_frames;
        self.mark_delay_us.add(&call.mark_delay_us).expect("same bounds");
        self.marks_sent += call.marks_sent;
        self.marks_back += call.marks_back;
        self.tone_checked += call.tone_checked;
        self.tone_found += call.tone_found;
    }

    /// The whole frames of `frame_bytes` that each of `calls` delivered, by
    /// bytes, not messages: a peer's fork may put several frames in a message.
    /// A call that never connected delivered none.
    pub fn frames_per_call(&self, frame_bytes: usize, calls: usize) -> Vec<u64> {
        let mut frames: Vec<u64> = self.bytes_per_call.iter().map(|bytes| bytes / frame_bytes as u64).collect();
        frames.resize(calls.max(frames.len()), 0);
        frames
    }
}

/// What every connection of a server is: its frames, its tone, and how late it echoes.
#[derive(Debug, Clone, Copy)]
pub struct Echo {
    pub frame_bytes: usize,
    pub tone_hz: f64,
    pub rate: u32,
    /// Each frame is echoed after a random delay of 0 to this many ms; 0 echoes at once.
    pub max_delay_ms: u64,
    /// Frames are G.711 μ-law rather than L16.
    pub mulaw: bool,
    /// Twilio Media Streams: frames are base64 μ-law in `media` messages, marks are Twilio's.
    pub twilio: bool,
    /// OpenAI's Realtime API: frames come in `input_audio_buffer.append` and go
    /// back in `response.output_audio.delta`, as a speech-to-speech model's reply; no marks.
    pub openai: bool,
    /// A fork's server: echoes nothing and places no marks.
    pub listen_only: bool,
}

pub struct EchoServer {
    pub port: u16,
    tally: Arc<Mutex<Tally>>,
    accept: tokio::task::JoinHandle<()>,
}

impl EchoServer {
    pub fn start(runtime: &tokio::runtime::Handle, echo: Echo) -> EchoServer {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("echo server listen");
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let listener = {
            let _inside = runtime.enter();
            TcpListener::from_std(listener).unwrap()
        };
        let tally = Arc::new(Mutex::new(Tally::new()));
        let shared = tally.clone();
        let accept = runtime.spawn(async move {
            let mut connection = 0;
            while let Ok((tcp, _)) = listener.accept().await {
                let tally = shared.clone();
                let echoes = DelayedEchoes::new(echo.max_delay_ms, DELAY_SEED + connection);
                connection += 1;
                tokio::spawn(async move {
                    let call = serve(tcp, echo, echoes).await;
                    tally.lock().unwrap().merge(call);
                });
            }
        });
        EchoServer { port, tally, accept }
    }

    /// Stops accepting; the figures of every connection that has ended.
    pub fn finish(self) -> Tally {
        self.accept.abort();
        std::mem::replace(&mut *self.tally.lock().unwrap(), Tally::new())
    }
}

/// The share of a frame's energy at `hz` (Goertzel): about 1 for a pure tone whose
/// period divides the frame, near 0 for noise or silence.
fn tone_share(samples: &[i16], hz: f64, rate: u32) -> f64 {
    let n = samples.len() as f64;
    let coefficient = 2.0 * (2.0 * std::f64::consts::PI * hz / rate as f64).cos();
    let (mut previous, mut before) = (0.0f64, 0.0f64);
    let mut energy = 0.0;
    for &sample in samples {
        let x = sample as f64;
        energy += x * x;
        let current = x + coefficient * previous - before;
        before = previous;
        previous = current;
    }
    if energy == 0.0 {
        return 0.0;
    }
    let power = previous * previous + before * before - coefficient * previous * before;
    2.0 * power / (n * energy)
}

/// A connection's frames waiting to be echoed, in arrival order, each with
/// its send time: the later of the previous frame's and its arrival plus a
/// random delay, so that a delay never reorders the stream.
struct DelayedEchoes {
    rng: SmallRng,
    max_delay_ms: u64,
    /// (send time, frame number, frame)
    queue: VecDeque<(Instant, u64, Bytes)>,
    last_due: Option<Instant>,
}

impl DelayedEchoes {
    fn new(max_delay_ms: u64, seed: u64) -> DelayedEchoes {
        DelayedEchoes { rng: SmallRng::seed_from_u64(seed), max_delay_ms, queue: VecDeque::new(), last_due: None }
    }

    fn push(&mut self, arrival: Instant, frame: u64, data: Bytes) {
        let delayed = arrival + Duration::from_millis(self.rng.random_range(0..=self.max_delay_ms));
        let due = self.last_due.map_or(delayed, |last| last.max(delayed));
        self.last_due = Some(due);
        self.queue.push_back((due, frame, data));
    }

    /// When the next frame is to be sent, if any waits.
    fn next_due(&self) -> Option<Instant> {
        self.queue.front().map(|(due, _, _)| *due)
    }

    /// The next frame whose send time has come, with its number.
    fn pop_due(&mut self, now: Instant) -> Option<(u64, Bytes)> {
        if self.next_due()? > now {
            return None;
        }
        self.queue.pop_front().map(|(_, frame, data)| (frame, data))
    }
}

/// Subprotocols the server accepts when a client offers them: mod_audio_fork's
/// client fails the handshake unless its own comes back.
const PEER_SUBPROTOCOLS: [&str; 1] = ["audio.drachtio.org"];

/// Answers the upgrade, naming the subprotocol asked for: a peer's, else WSBRIDGE.
async fn handshake(tcp: Stamped) -> Option<Ws> {
    tokio_tungstenite::accept_hdr_async(tcp, |request: &Request, mut response: Response| {
        if let Some(offered) = request.headers().get("Sec-WebSocket-Protocol") {
            let offered = offered.to_str().unwrap_or_default();
            let peer = PEER_SUBPROTOCOLS.into_iter().find(|name| offered.split(',').any(|o| o.trim() == *name));
            let answer = HeaderValue::from_static(peer.unwrap_or("WSBRIDGE"));
            response.headers_mut().insert("Sec-WebSocket-Protocol", answer);
        }
        Ok(response)
    })
    .await
    .ok()
}

/// One call's connection: what it has received, and what waits to be echoed.
struct Connection {
    echo: Echo,
    call: Tally,
    /// Caller messages: a frame each from wsbridge, one or more from a peer's fork.
    frames: u64,
    bytes: u64,
    last_arrival: Option<Instant>,
    /// The kernel's receive time of the latest read, ns since the epoch (0: none).
    stamp: Arc<AtomicU64>,
    last_stamp_ns: Option<u64>,
    /// Marks sent and not yet heard back: (frame they follow, when sent).
    marks: VecDeque<(u64, Instant)>,
    echoes: DelayedEchoes,
    /// A Twilio stream's, once its `start` has come.
    stream_sid: Option<String>,
}

impl Connection {
    /// Counts a caller frame, times its arrival, checks its tone and queues its echo.
    fn on_frame(&mut self, data: Bytes) {
        let arrival = Instant::now();
        self.frames += 1;
        self.bytes += data.len() as u64;
        if data.len() != self.echo.frame_bytes {
            self.call.wrong_size_frames += 1;
        }
        let read_gap = self.last_arrival.map(|previous| arrival - previous);
        let stamp_ns = Some(self.stamp.load(Ordering::Relaxed)).filter(|ns| *ns != 0);
        let stamp_gap =
            stamp_ns.zip(self.last_stamp_ns).map(|(now, then)| Duration::from_nanos(now.saturating_sub(then)));
        if self.frames > WARM_UP_FRAMES {
            if let Some(gap) = read_gap {
                self.call.jitter_read_us.saturating_record(gap.abs_diff(FRAME).as_micros() as u64);
                if stamp_gap.is_none() {
                    self.call.unstamped_frames += 1;
                }
                let gap = stamp_gap.unwrap_or(gap);
                self.call.jitter_us.saturating_record(gap.abs_diff(FRAME).as_micros() as u64);
            }
        }
        self.last_arrival = Some(arrival);
        self.last_stamp_ns = stamp_ns;
        if self.frames % TONE_CHECK_EVERY_FRAMES == TONE_CHECK_EVERY_FRAMES / 2 {
            self.check_tone(&data);
        }
        if !self.echo.listen_only {
            self.echoes.push(arrival, self.frames, data);
        }
    }

    fn check_tone(&mut self, data: &[u8]) {
        let samples: Vec<i16> = match self.echo.mulaw {
            true => data.iter().map(|byte| mulaw_to_linear(*byte)).collect(),
            false => data.chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]])).collect(),
        };
        self.call.tone_checked += 1;
        if tone_share(&samples, self.echo.tone_hz, self.echo.rate) > 0.9 {
            self.call.tone_found += 1;
        }
    }

    /// Echoes every frame whose time has come, each every 5 s followed by a mark.
    async fn send_due(&mut self, ws: &mut Ws) -> Result<(), WsError> {
        while let Some((frame, data)) = self.echoes.pop_due(Instant::now()) {
            match &self.stream_sid {
                _ if self.echo.openai => ws.send(Message::text(realtime_delta(frame, &data))).await?,
                Some(sid) => {
                    let media =
                        serde_json::json!({"event":"media","streamSid":sid,"media":{"payload":BASE64.encode(&data)}});
                    ws.send(Message::text(media.to_string())).await?
                }
                None => ws.send(Message::Binary(data)).await?,
            }
            self.call.echoed_frames += 1;
            if frame % MARK_EVERY_FRAMES == 0 && !self.echo.openai {
                let mark = match &self.stream_sid {
                    Some(sid) => serde_json::json!({"event":"mark","streamSid":sid,"mark":{"name":frame.to_string()}}),
                    None => serde_json::json!({"action":"mark","name":frame.to_string()}),
                };
                ws.send(Message::text(mark.to_string())).await?;
                self.call.marks_sent += 1;
                self.marks.push_back((frame, Instant::now()));
            }
        }
        Ok(())
    }

    /// Times a mark event from the module against when its mark was sent.
    /// Returns a Twilio `media` message's frame.
    fn on_text(&mut self, text: &str) -> Option<Bytes> {
        let Ok(event) = serde_json::from_str::<serde_json::Value>(text.trim()) else { return None };
        if self.echo.openai {
            let audio = event["audio"].as_str().filter(|_| event["type"] == "input_audio_buffer.append")?;
            return BASE64.decode(audio).ok().map(Bytes::from);
        }
        if self.echo.twilio {
            match event["event"].as_str() {
                Some("start") => self.stream_sid = event["streamSid"].as_str().map(str::to_string),
                Some("media") => {
                    let payload = event["media"]["payload"].as_str()?;
                    return BASE64.decode(payload).ok().map(Bytes::from);
                }
                _ => {}
            }
        }
        if event["event"] != "mark" {
            return None;
        }
        // Twilio names the mark inside `mark`, the native protocol at the top.
        let name = event["name"].as_str().or(event["mark"]["name"].as_str());
        let name: u64 = name.and_then(|n| n.parse().ok()).unwrap_or(0);
        while let Some((sent_after, sent_at)) = self.marks.pop_front() {
            if sent_after == name {
                self.call.marks_back += 1;
                self.call.mark_delay_us.saturating_record(sent_at.elapsed().as_micros() as u64);
                break;
            }
        }
        None
    }

    /// Reads the call's messages and echoes its frames until either side ends it.
    async fn run(&mut self, ws: &mut Ws) {
        loop {
            let due = self.echoes.next_due();
            let wake = tokio::time::Instant::from_std(due.unwrap_or_else(Instant::now));
            let message = tokio::select! {
                message = ws.next() => message,
                _ = tokio::time::sleep_until(wake), if due.is_some() => {
                    if self.send_due(ws).await.is_err() {
                        return;
                    }
                    continue;
                }
            };
            match message {
                Some(Ok(Message::Binary(data))) => {
                    self.on_frame(data);
                    // A frame with no delay goes straight back.
                    if self.send_due(ws).await.is_err() {
                        return;
                    }
                }
                Some(Ok(Message::Text(text))) => {
                    if let Some(frame) = self.on_text(text.as_str()) {
                        self.on_frame(frame);
                        if self.send_due(ws).await.is_err() {
                            return;
                        }
                    }
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                Some(Ok(_)) => {}
            }
        }
    }
}

/// A frame as a model's reply: one item per 5 s of echo, as a model's turns would be.
fn realtime_delta(frame: u64, data: &[u8]) -> String {
    let item = frame / MARK_EVERY_FRAMES;
    serde_json::json!({
        "type": "response.output_audio.delta", "event_id": format!("event_{frame}"),
        "response_id": format!("resp_{item}"), "item_id": format!("item_{item}"),
        "output_index": 0, "content_index": 0, "delta": BASE64.encode(data),
    })
    .to_string()
}

async fn serve(tcp: TcpStream, echo: Echo, echoes: DelayedEchoes) -> Tally {
    let _ = tcp.set_nodelay(true);
    // One caller frame on the wire a read (the client's header: 2 + 2 + 4 bytes),
    // so that a read's stamp is its frame's; Twilio's JSON frames vary, and are read as they come.
    let read_cap = if echo.twilio || echo.openai { 64 * 1024 } else { echo.frame_bytes + 8 };
    let (tcp, stamp) = Stamped::new(tcp, read_cap);
    let mut connection = Connection {
        echo,
        call: Tally::new(),
        frames: 0,
        bytes: 0,
        last_arrival: None,
        stamp,
        last_stamp_ns: None,
        marks: VecDeque::new(),
        echoes,
        stream_sid: None,
    };
    connection.call.connections = 1;
    if let Some(mut ws) = handshake(tcp).await {
        connection.run(&mut ws).await;
    }
    connection.call.messages_per_call.push(connection.frames);
    connection.call.bytes_per_call.push(connection.bytes);
    connection.call
}
