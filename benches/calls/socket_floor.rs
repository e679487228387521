//! The `socket-floor` row: what any module carrying the same traffic must pay
//! the kernel. The same N connections to the same echo server, 50 frames a
//! second each, every frame 640 bytes of the same tone as a client WebSocket
//! frame with the module's header (FIN + binary, 16-bit length, mask bit and a
//! fresh 4-byte key, payload masked). It runs in a process of its own, the
//! benchmark binary started again with `--socket-floor-child`, so its CPU can
//! be read from /proc as FreeSWITCH's is: one thread, one epoll set (mio), one
//! timer for all connections (the poll's timeout to the next 20 ms tick), one
//! `send` per frame and, as a rule, one `recv` per echo. No unsafe code.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use mio::net::TcpStream as MioStream;
use mio::{Events, Interest, Poll, Token};
use test_support::proc_stats;

use crate::echo_server::EchoServer;
use crate::options::{Endpoint, Options};
use crate::report::{Media, Row};
use crate::{delivery, peak_rss_kib_until, FRAME_BYTES, RATE, TONE_HZ};

/// The argument that makes the benchmark binary the floor's process.
pub const CHILD_ARGUMENT: &str = "--socket-floor-child";
const FRAME: Duration = Duration::from_millis(20);
/// FIN + binary; mask bit + 126 (a 16-bit length follows); 640; then the key.
const HEADER_BYTES: usize = 8;

/// The parent's side: the floor's process, and what it said.
pub struct SocketFloor {
    child: Child,
    stdout: BufReader<ChildStdout>,
    pub pid: u32,
    /// When every connection had been upgraded and the first tick was due.
    pub ready: Instant,
}

impl SocketFloor {
    /// Starts the floor's process and waits until its connections are upgraded.
    pub fn start(port: u16, calls: usize, seconds: u64, frame: &[u8]) -> SocketFloor {
        assert_eq!(frame.len() % 4, 0, "the floor masks whole words");
        let exe = std::env::current_exe().expect("the benchmark's own path");
        let payload: String = frame.iter().map(|byte| format!("{byte:02x}")).collect();
        let mut child = Command::new(exe)
            .args([CHILD_ARGUMENT, &port.to_string(), &calls.to_string(), &seconds.to_string(), &payload])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting the socket floor's process");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).expect("the socket floor's first line");
        assert_eq!(line.trim(), "ready", "socket floor: {line}");
        SocketFloor { pid: child.id(), child, stdout, ready: Instant::now() }
    }

    /// Waits for the floor to end; the frames it sent and the sends that fell short.
    pub fn finish(mut self) -> (u64, u64) {
        let mut line = String::new();
        let _ = self.stdout.read_line(&mut line);
        let status = self.child.wait().expect("waiting for the socket floor");
        assert!(status.success(), "socket floor: {status}");
        let mut numbers = line.split_whitespace().filter_map(|n| n.parse().ok());
        (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0))
    }
}

struct Connection {
    stream: MioStream,
    /// A frame's tail that a short send left behind; sent first at the next tick.
    pending: Vec<u8>,
    open: bool,
}

/// Upgrades a blocking connection: plain HTTP, before the loop starts.
fn upgrade(port: u16, call: usize) -> TcpStream {
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).expect("socket floor: connect");
    tcp.set_nodelay(true).unwrap();
    let request = format!(
        "GET /floor/{call} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).expect("socket floor: upgrade request");
    let mut response = Vec::new();
    let mut byte = [0u8; 1];
    while !response.ends_with(b"\r\n\r\n") {
        tcp.read_exact(&mut byte).expect("socket floor: upgrade response");
        response.push(byte[0]);
    }
    assert!(response.starts_with(b"HTTP/1.1 101"), "socket floor: {}", String::from_utf8_lossy(&response));
    tcp
}

/// xorshift64: a fresh masking key per frame, as RFC 6455 asks, at no cost worth counting.
fn next_key(state: &mut u64) -> [u8; 4] {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    (*state as u32).to_ne_bytes()
}

/// The floor's process: `--socket-floor-child PORT CALLS SECONDS PAYLOAD-HEX`.
pub fn child_main(args: &[String]) {
    let [port, calls, seconds, payload] = args else { panic!("{CHILD_ARGUMENT} PORT CALLS SECONDS PAYLOAD-HEX") };
    let port: u16 = port.parse().unwrap();
    let calls: usize = calls.parse().unwrap();
    let ticks = seconds.parse::<u64>().unwrap() * (1000 / FRAME.as_millis() as u64);
    let payload: Vec<u8> =
        (0..payload.len()).step_by(2).map(|i| u8::from_str_radix(&payload[i..i + 2], 16).unwrap()).collect();
    let length = u16::try_from(payload.len()).expect("a 16-bit length");
    assert!(length >= 126);

    let poll = Poll::new().expect("epoll");
    let mut connections: Vec<Connection> = (0..calls)
        .map(|call| {
            let tcp = upgrade(port, call);
            tcp.set_nonblocking(true).unwrap();
            let mut stream = MioStream::from_std(tcp);
            poll.registry().register(&mut stream, Token(call), Interest::READABLE).expect("epoll add");
            Connection { stream, pending: Vec::new(), open: true }
        })
        .collect();
    let mut poll = poll;
    println!("ready");
    std::io::stdout().flush().unwrap();

    let mut frame = vec![0u8; HEADER_BYTES + payload.len()];
    frame[0] = 0x82;
    frame[1] = 0x80 | 126;
    frame[2..4].copy_from_slice(&length.to_be_bytes());
    let mut events = Events::with_capacity(1024);
    let mut received = vec![0u8; 64 * 1024];
    let mut key_state = 0x9e37_79b9_7f4a_7c15u64;
    let (mut sent, mut short_sends) = (0u64, 0u64);
    let mut next_tick = Instant::now();
    let mut tick = 0;
    while tick < ticks {
        let now = Instant::now();
        if now >= next_tick {
            for connection in connections.iter_mut().filter(|c| c.open) {
                let key = next_key(&mut key_state);
                frame[4..8].copy_from_slice(&key);
                for (out, word) in frame[HEADER_BYTES..].chunks_exact_mut(4).zip(payload.chunks_exact(4)) {
                    for i in 0..4 {
                        out[i] = word[i] ^ key[i];
                    }
                }
                let mut joined;
                let frame: &[u8] = if connection.pending.is_empty() {
                    &frame
                } else {
                    joined = std::mem::take(&mut connection.pending);
                    joined.extend_from_slice(&frame);
                    &joined
                };
                match connection.stream.write(frame) {
                    Ok(n) if n == frame.len() => sent += 1,
                    Ok(n) => {
                        short_sends += 1;
                        connection.pending = frame[n..].to_vec();
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        short_sends += 1;
                        connection.pending = frame.to_vec();
                    }
                    Err(_) => connection.open = false,
                }
            }
            tick += 1;
            next_tick += FRAME;
            continue;
        }
        poll.poll(&mut events, Some(next_tick - now)).expect("epoll_wait");
        for event in events.iter() {
            let connection = &mut connections[event.token().0];
            // Edge-triggered: a read shorter than the buffer emptied the socket,
            // so the next arrival wakes us again; only a full one reads once more.
            loop {
                match connection.stream.read(&mut received) {
                    Ok(0) => {
                        connection.open = false;
                        break;
                    }
                    Ok(n) if n < received.len() => break,
                    Ok(_) => {}
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(_) => {
                        connection.open = false;
                        break;
                    }
                }
            }
        }
    }
    for connection in connections.iter_mut().filter(|c| c.open) {
        // A masked close frame with no payload.
        let _ = connection.stream.write(&[0x88, 0x80, 0, 0, 0, 0]);
    }
    println!("{sent} {short_sends}");
}

/// One 20 ms frame of the 1 kHz tone at 16 kHz, L16 little-endian, as FreeSWITCH's tone_stream makes it.
fn tone_frame() -> Vec<u8> {
    (0..FRAME_BYTES / 2)
        .flat_map(|n| {
            let phase = 2.0 * std::f64::consts::PI * TONE_HZ * n as f64 / RATE as f64;
            ((phase.sin() * 8000.0) as i16).to_le_bytes()
        })
        .collect()
}

/// The `socket-floor` row: the same connections and frames from the floor's own
/// process, its CPU and context switches read from /proc over the same window.
pub fn run_socket_floor(options: &Options, calls: usize, server: &tokio::runtime::Handle) -> Row {
    let server = EchoServer::start(server, Endpoint::SocketFloor.echo().unwrap());
    let floor = SocketFloor::start(server.port, calls, options.seconds, &tone_frame());
    let pid = floor.pid;
    let window_start = floor.ready + Duration::from_secs(2);
    let window_end = floor.ready + Duration::from_secs(options.seconds) - Duration::from_secs(2);
    assert!(window_end > window_start + Duration::from_secs(5), "raise --seconds");
    std::thread::sleep(window_start.saturating_duration_since(Instant::now()));
    let cpu_before = proc_stats::cpu_us(pid);
    let wakeups_before = proc_stats::context_switches(pid);
    let bench_cpu_before = proc_stats::cpu_us("self");
    let measured_from = Instant::now();
    let peak_rss_kib = peak_rss_kib_until(pid, window_end);
    let cpu_used_us = proc_stats::cpu_us(pid) - cpu_before;
    let wakeups = proc_stats::context_switches(pid) - wakeups_before;
    let length = measured_from.elapsed();
    let bench_cpu_used_us = proc_stats::cpu_us("self") - bench_cpu_before;
    let (sent, short_sends) = floor.finish();
    std::thread::sleep(Duration::from_millis(500));
    let tally = server.finish();

    let media = Media {
        frames_sent: sent,
        gaps_per_call_minute: f64::NAN,
        playout_target_mean_ms: f64::NAN,
        ..delivery(&tally, FRAME_BYTES, calls, options.seconds)
    };
    let call_seconds = calls as f64 * length.as_secs_f64();
    println!(
        "{:>13} {:>4} calls: {} connections, {sent} frames sent ({short_sends} short sends), {} received by the \
         server; used {:.2} CPU-s and {wakeups} context switches through a {:.1} s window, peak RSS {peak_rss_kib} KiB",
        "socket-floor",
        calls,
        tally.connections,
        media.frames_received,
        cpu_used_us as f64 / 1e6,
        length.as_secs_f64(),
    );
    Row {
        endpoint: "socket-floor",
        calls,
        completed: tally.connections as usize,
        cpu_us_per_call_second: cpu_used_us as f64 / call_seconds,
        cpu_ratio_to_null: None,
        over_floor: None,
        wakeups_per_call_second: Some(wakeups as f64 / call_seconds),
        // The floor's process is the whole benchmark binary; its memory says nothing of a module's.
        rss_kib_per_call: f64::NAN,
        setup_p50_ms: f64::NAN,
        setup_p99_ms: f64::NAN,
        setup_ok_p50_ms: f64::NAN,
        setup_ok_p99_ms: f64::NAN,
        bench_cpu_percent: bench_cpu_used_us as f64 / length.as_micros() as f64 * 100.0,
        media: Some(media),
    }
}
