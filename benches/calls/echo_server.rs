//! The benchmark's WebSocket server: echoes every caller frame straight back,
//! places a mark every 5 s to time the downlink playout, and measures
//! what it receives. Each connection keeps its own figures and merges them
//! once, at its end, so the frame path takes no shared lock.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;

pub const FRAME: Duration = Duration::from_millis(20);
/// Arrivals before this frame are the call settling in; jitter counts from here.
const WARM_UP_FRAMES: u64 = 5;
// Every 5 s: each mark is also a FreeSWITCH event, which the null floor does not pay for.
const MARK_EVERY_FRAMES: u64 = 250;
const TONE_CHECK_EVERY_FRAMES: u64 = 50;

/// Microsecond histograms up to a minute, three significant figures.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds")
}

/// What the server saw of all the calls of one run.
pub struct Tally {
    pub connections: u64,
    /// Caller frames per connection, in the order the connections ended.
    pub frames_per_call: Vec<u64>,
    pub wrong_size_frames: u64,
    pub echoed_frames: u64,
    /// |arrival gap - 20 ms| of caller frames, µs.
    pub jitter_us: Histogram<u64>,
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
            frames_per_call: Vec::new(),
            wrong_size_frames: 0,
            echoed_frames: 0,
            jitter_us: histogram(),
            mark_delay_us: histogram(),
            marks_sent: 0,
            marks_back: 0,
            tone_checked: 0,
            tone_found: 0,
        }
    }

    fn merge(&mut self, call: Tally) {
        self.connections += call.connections;
        self.frames_per_call.extend(call.frames_per_call);
        self.wrong_size_frames += call.wrong_size_frames;
        self.echoed_frames += call.echoed_frames;
        self.jitter_us.add(&call.jitter_us).expect("same bounds");
        self.mark_delay_us.add(&call.mark_delay_us).expect("same bounds");
        self.marks_sent += call.marks_sent;
        self.marks_back += call.marks_back;
        self.tone_checked += call.tone_checked;
        self.tone_found += call.tone_found;
    }
}

pub struct EchoServer {
    pub port: u16,
    tally: Arc<Mutex<Tally>>,
    accept: tokio::task::JoinHandle<()>,
}

impl EchoServer {
    pub fn start(runtime: &tokio::runtime::Handle, frame_bytes: usize, tone_hz: f64, rate: u32) -> EchoServer {
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
            while let Ok((tcp, _)) = listener.accept().await {
                let tally = shared.clone();
                tokio::spawn(async move {
                    let call = serve(tcp, frame_bytes, tone_hz, rate).await;
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

async fn serve(tcp: TcpStream, frame_bytes: usize, tone_hz: f64, rate: u32) -> Tally {
    let mut call = Tally::new();
    call.connections = 1;
    let _ = tcp.set_nodelay(true);
    let accepted = tokio_tungstenite::accept_hdr_async(tcp, |request: &Request, mut response: Response| {
        if request.headers().contains_key("Sec-WebSocket-Protocol") {
            response.headers_mut().insert("Sec-WebSocket-Protocol", HeaderValue::from_static("WSBRIDGE"));
        }
        Ok(response)
    })
    .await;
    let Ok(mut ws) = accepted else {
        call.frames_per_call.push(0);
        return call;
    };
    let mut frames = 0u64;
    let mut last_arrival: Option<Instant> = None;
    let mut marks: VecDeque<(u64, Instant)> = VecDeque::new();
    while let Some(Ok(message)) = ws.next().await {
        match message {
            Message::Binary(data) => {
                let arrival = Instant::now();
                frames += 1;
                if data.len() != frame_bytes {
                    call.wrong_size_frames += 1;
                }
                if let Some(previous) = last_arrival.filter(|_| frames > WARM_UP_FRAMES) {
                    let gap = arrival - previous;
                    let off = gap.abs_diff(FRAME);
                    call.jitter_us.saturating_record(off.as_micros() as u64);
                }
                last_arrival = Some(arrival);
                if frames % TONE_CHECK_EVERY_FRAMES == TONE_CHECK_EVERY_FRAMES / 2 {
                    let samples: Vec<i16> = data.chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]])).collect();
                    call.tone_checked += 1;
                    if tone_share(&samples, tone_hz, rate) > 0.9 {
                        call.tone_found += 1;
                    }
                }
                if ws.send(Message::Binary(data)).await.is_err() {
                    break;
                }
                call.echoed_frames += 1;
                if frames % MARK_EVERY_FRAMES == 0 {
                    let mark = format!(r#"{{"action":"mark","name":"{frames}"}}"#);
                    if ws.send(Message::text(mark)).await.is_err() {
                        break;
                    }
                    call.marks_sent += 1;
                    marks.push_back((frames, Instant::now()));
                }
            }
            Message::Text(text) => {
                let Ok(event) = serde_json::from_str::<serde_json::Value>(text.trim()) else { continue };
                if event["event"] != "mark" {
                    continue;
                }
                let name: u64 = event["name"].as_str().and_then(|n| n.parse().ok()).unwrap_or(0);
                while let Some((sent_after, sent_at)) = marks.pop_front() {
                    if sent_after == name {
                        call.marks_back += 1;
                        call.mark_delay_us.saturating_record(sent_at.elapsed().as_micros() as u64);
                        break;
                    }
                }
            }
            Message::Close(_) => break,
            _ => {}
        }
    }
    call.frames_per_call.push(frames);
    call
}
