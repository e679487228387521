//! `cargo bench --bench calls`: hundreds of real calls through a real
//! FreeSWITCH, each playing a 1 kHz tone into `wsbridge` and hearing it
//! echoed back by a WebSocket server, side by side with the same load on
//! FreeSWITCH's `null` endpoint, the floor any endpoint costs. `wsbridge`
//! echoes each frame at once; `wsbridge-live` echoes each after a random
//! 0–40 ms, in order, as a live server might, to test the jitter buffer:
//! its gaps per call-minute, concealed frames and playout latency.
//! `wsbridge-twilio` speaks Twilio Media Streams to a server that echoes in
//! kind; `wsbridge-pcmu` carries the same μ-law in the native protocol, so
//! the two differ by Twilio's JSON and base64 alone; `wsbridge-openai` speaks
//! OpenAI's Realtime API (base64 L16 at 24 kHz) to a server that answers each
//! frame as reply audio. `wsbridge-fork` streams
//! the null endpoint's calls through listen-only forks (media bugs), for a
//! fork's cost next to an endpoint call's. `socket-floor` is no
//! FreeSWITCH at all: a lean epoll loop of its own process sends the same
//! frames over the same number of connections to the same server, the kernel's
//! cost that any module must pay; the table sets `(wsbridge − null)` against it.
//!
//! Every run gets a fresh FreeSWITCH from a temporary loopback config, as the
//! integration tests do. Prints one table, writes calls.csv, calls.md and
//! calls.png. Options (after `--`): `--calls 50,200,500`, `--seconds 60`,
//! `--rate 50` (call attempts per second),
//! `--endpoints null,socket-floor,wsbridge,wsbridge-live,wsbridge-pcmu,wsbridge-twilio,wsbridge-openai,wsbridge-fork`,
//! `--out <dir>` (default target/calls-bench), `--uplink-batch-ms N` (the
//! module param, to measure it; default: the module's own), `--uplink-direct
//! false` (caller audio through the runtime, as before the direct write),
//! `--downlink-reactor false` (server audio read by each call's task, as
//! before the reactor), `--downlink-batch-ms N` (the reader thread's rest
//! after each turn), `--capacity
//! FROM,STEP,MAX` (wsbridge calls stepped up until a step loses a frame or its
//! uplink jitter p99 reaches 5 ms: the node's call capacity), `--fork-module
//! PATH.so:COMMAND` (again for more: a peer's fork module, loaded into the runs'
//! FreeSWITCH, its API command starting each call's fork as `COMMAND <uuid> start
//! <url> mixed 16k`; a row each beside `wsbridge-fork`, on the same calls and the
//! same listen-only server), `--module PATH.so` (loaded as mod_wsbridge instead
//! of the freshly built module: a peer of the endpoint itself).

#![allow(clippy::result_large_err)] // tungstenite's handshake callback type

mod capacity;
mod echo_server;
mod events;
mod options;
mod report;
mod socket_floor;
mod stamped;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use echo_server::{EchoServer, Tally};
use events::{count, wait_for, CallEvents, Calls, Collector};
use options::{parse_options, Endpoint, Options, USAGE};
use report::{Media, Row};
use test_support::instance::FreeSwitch;
use test_support::{esl, proc_stats, BuildEnv};

/// Where this crate's build found FreeSWITCH, and where its sources are.
const BUILD: BuildEnv = test_support::build_env!();

const RATE: u32 = 16000;
const FRAME_BYTES: usize = 640;
const TONE_HZ: f64 = 1000.0;
const FRAMES_PER_SECOND: u64 = 50;
const RUNTIME_THREADS: usize = 1;
/// The live server's largest echo delay.
const LIVE_MAX_DELAY_MS: u64 = 40;
/// The config's default WebSocket base, which no call of the benchmark uses.
const WS_BASE: &str = "ws://127.0.0.1:9";

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

fn percentile_ms(values: &mut [u64], quantile: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_unstable();
    let index = ((values.len() as f64 * quantile).ceil() as usize).clamp(1, values.len()) - 1;
    ms(values[index])
}

/// What the server got of the calls' caller audio: whole frames and bytes
/// against what `seconds` of calls make, the arrivals' jitter, the echoes and
/// marks. Frames are counted by bytes: a peer's fork may send several a message.
fn delivery(tally: &Tally, frame_bytes: usize, calls: usize, seconds: u64) -> Media {
    let per_call = seconds * FRAMES_PER_SECOND;
    let frames_per_call = tally.frames_per_call(frame_bytes, calls);
    // No mark came back (none sent, to a listen-only server or the floor's): no delay to show.
    let mark_delay = |ms: f64| if tally.marks_back == 0 { f64::NAN } else { ms };
    Media {
        frames_expected: per_call * calls as u64,
        frames_received: frames_per_call.iter().sum(),
        frames_lost: frames_per_call.iter().map(|frames| per_call.saturating_sub(*frames)).sum(),
        bytes_expected: per_call * frame_bytes as u64 * calls as u64,
        bytes_received: tally.bytes_per_call.iter().sum(),
        messages_received: tally.messages_per_call.iter().sum(),
        calls_by_frames: frames_per_call.iter().fold(BTreeMap::new(), |mut calls, frames| {
            *calls.entry(*frames).or_default() += 1;
            calls
        }),
        jitter_p50_ms: ms(tally.jitter_us.value_at_quantile(0.5)),
        jitter_p99_ms: ms(tally.jitter_us.value_at_quantile(0.99)),
        jitter_max_ms: ms(tally.jitter_us.max()),
        jitter_read_p99_ms: ms(tally.jitter_read_us.value_at_quantile(0.99)),
        unstamped_frames: tally.unstamped_frames,
        frames_echoed: tally.echoed_frames,
        mark_delay_mean_ms: mark_delay(tally.mark_delay_us.mean() / 1000.0),
        mark_delay_p50_ms: mark_delay(ms(tally.mark_delay_us.value_at_quantile(0.5))),
        mark_delay_p99_ms: mark_delay(ms(tally.mark_delay_us.value_at_quantile(0.99))),
        marks_sent: tally.marks_sent,
        marks_back: tally.marks_back,
        tone_checked: tally.tone_checked,
        tone_found: tally.tone_found,
        ..Media::default()
    }
}

/// A channel variable's values at hangup, from the calls that set it.
fn variable_values<'a>(calls: &'a HashMap<String, CallEvents>, name: &str) -> impl Iterator<Item = f64> + 'a {
    let key = format!("variable_{name}");
    calls
        .values()
        .filter_map(|call| call.hangup.as_ref())
        .filter_map(move |hangup| hangup.get(&key).and_then(|v| v.parse::<f64>().ok()))
}

fn variable_sum(calls: &HashMap<String, CallEvents>, name: &str) -> u64 {
    variable_values(calls, name).sum::<f64>() as u64
}

/// The mean over the calls that set it; NaN when none did.
fn variable_mean(calls: &HashMap<String, CallEvents>, name: &str) -> f64 {
    let (sum, count) = variable_values(calls, name).fold((0.0, 0), |(sum, count), v| (sum + v, count + 1));
    if count == 0 {
        f64::NAN
    } else {
        sum / count as f64
    }
}

/// One run: an endpoint, a number of calls, and the UUID prefix that marks its calls.
struct Run<'a> {
    options: &'a Options,
    endpoint: Endpoint,
    calls: usize,
    prefix: String,
}

/// When the first call was placed, and how long placing them all took.
struct Ramp {
    started: Instant,
    took: Duration,
}

/// What FreeSWITCH and the benchmark used while every call was up.
struct Window {
    length: Duration,
    cpu_used_us: u64,
    runtime_cpu_us: u64,
    /// Context switches of mod_wsbridge's runtime threads.
    runtime_wakeups: u64,
    bench_cpu_used_us: u64,
    peak_rss_kib: u64,
    calls_up: usize,
}

fn run(options: &Options, endpoint: Endpoint, calls: usize, run_number: u16, server: &tokio::runtime::Handle) -> Row {
    if endpoint == Endpoint::SocketFloor {
        return socket_floor::run_socket_floor(options, calls, server);
    }
    let run = Run { options, endpoint, calls, prefix: format!("{:08x}-", 0xbe_0000 + run_number as u32) };
    let server = endpoint.echo().map(|echo| EchoServer::start(server, echo));
    let freeswitch = start_freeswitch(endpoint, run_number, options);
    let pid = freeswitch.pid();
    let collector = Collector::start(&freeswitch, &run.prefix);
    std::thread::sleep(Duration::from_secs(2));
    let idle_rss_kib = proc_stats::rss_kib(pid);

    let mut control = freeswitch.esl();
    let ramp = run.originate(&mut control, server.as_ref(), &collector.calls);
    let answered = run.wait_answered(&collector.calls);
    let window = run.measure_window(&ramp, pid, &collector.calls);
    let (version, events) = run.tear_down(freeswitch, collector, control, &ramp, answered);

    let events = events.lock().unwrap();
    let media = server.map(|server| run.media(server, &events));
    let row = run.row(&events, &window, idle_rss_kib, media);
    run.print(&row, &window, &ramp, idle_rss_kib, &version);
    // Why a call did not complete, for the few that do not.
    for (uuid, call) in events.iter().filter(|(_, call)| {
        call.hangup.as_ref().and_then(|h| h.get("Hangup-Cause")).is_none_or(|cause| cause != "NORMAL_CLEARING")
    }) {
        let hangup = call.hangup.as_ref();
        let variable = |name: &str| hangup.and_then(|h| h.get(name)).map_or("-", String::as_str);
        println!(
            "{:>13} {:>4} calls: {uuid} not completed: answered {}, +OK {}, hangup cause {}, {} frames sent, {}",
            "",
            calls,
            call.answered.is_some(),
            call.originate_ok.is_some(),
            variable("Hangup-Cause"),
            variable("variable_wsbridge_frames_sent"),
            variable("variable_wsbridge_close_reason"),
        );
    }
    row
}

/// The most resident memory `pid` had, sampled each second until `end`.
fn peak_rss_kib_until(pid: u32, end: Instant) -> u64 {
    let mut peak_rss_kib = proc_stats::rss_kib(pid);
    while Instant::now() + Duration::from_secs(1) < end {
        std::thread::sleep(Duration::from_secs(1));
        peak_rss_kib = peak_rss_kib.max(proc_stats::rss_kib(pid));
    }
    std::thread::sleep(end.saturating_duration_since(Instant::now()));
    peak_rss_kib
}

/// A fresh FreeSWITCH for one run; for wsbridge, with the published run's
/// settings; for a peer's fork, with the peer's module loaded.
fn start_freeswitch(endpoint: Endpoint, run_number: u16, options: &Options) -> FreeSwitch {
    let module = options.module.as_deref();
    let freeswitch = FreeSwitch::start_with_module_and_log_level(&BUILD, WS_BASE, 10 + run_number, module, "warning");
    if let Endpoint::PeerFork(peer) = endpoint {
        // Copied, so that the instance's mod dir holds all it loads, and the peer is installed nowhere.
        let copy = freeswitch.mod_dir().join(format!("{}.so", peer.name));
        std::fs::copy(&peer.path, &copy).unwrap_or_else(|e| panic!("{}: {e}", peer.path.display()));
        let reply = freeswitch.esl().api(&format!("load {}", peer.name));
        assert!(reply.contains("+OK"), "load {}: {reply}", peer.name);
    }
    if endpoint.echo().is_some() {
        // The published run's setting: one runtime thread costs the least CPU.
        let batch = options
            .uplink_batch_ms
            .map_or(String::new(), |ms| format!(r#"<param name="uplink-batch-ms" value="{ms}"/>"#));
        let direct =
            options.uplink_direct.map_or(String::new(), |on| format!(r#"<param name="uplink-direct" value="{on}"/>"#));
        let reactor = options
            .downlink_reactor
            .map_or(String::new(), |on| format!(r#"<param name="downlink-reactor" value="{on}"/>"#));
        let reactor_batch = options
            .downlink_batch_ms
            .map_or(String::new(), |ms| format!(r#"<param name="downlink-batch-ms" value="{ms}"/>"#));
        freeswitch.set_wsbridge_conf(&format!(
            r#"<param name="runtime-threads" value="{RUNTIME_THREADS}"/>{batch}{direct}{reactor}{reactor_batch}"#
        ));
        let mut esl = freeswitch.esl();
        esl.api("reloadxml");
        let reply = esl.api("reload mod_wsbridge");
        assert!(reply.contains("+OK"), "reload mod_wsbridge: {reply}");
    }
    freeswitch
}

impl Run<'_> {
    /// Places the calls at `--rate` a second, each playing a tone for `--seconds`.
    fn originate(&self, control: &mut esl::Esl, server: Option<&EchoServer>, events: &Calls) -> Ramp {
        let tone_ms = self.options.seconds * 1000;
        let started = Instant::now();
        for call in 0..self.calls {
            let uuid = format!("{}0000-4000-8000-{call:012x}", self.prefix);
            let target = match self.endpoint {
                Endpoint::Null => format!("{{origination_uuid={uuid},rate={RATE}}}null/bench"),
                Endpoint::SocketFloor => unreachable!("the socket floor places no calls"),
                Endpoint::Wsbridge | Endpoint::WsbridgeLive => {
                    let port = server.unwrap().port;
                    format!("{{origination_uuid={uuid}}}wsbridge/ws://127.0.0.1:{port}/bench/{call}")
                }
                Endpoint::WsbridgePcmu => {
                    let port = server.unwrap().port;
                    let pcmu = "P-wsbridge-websocket-content-type=audio%2Fpcmu";
                    format!("{{origination_uuid={uuid},{pcmu}}}wsbridge/ws://127.0.0.1:{port}/bench/{call}")
                }
                Endpoint::WsbridgeFork => {
                    // The null call plays the tone; its fork carries both directions, mixed.
                    let port = server.unwrap().port;
                    let fork = format!("wsbridge_fork ws://127.0.0.1:{port}/bench/{call} mixed {RATE}");
                    format!(
                        "{{origination_uuid={uuid},rate={RATE},wsbridge_fork_playback=false,execute_on_answer='{fork}'}}null/bench"
                    )
                }
                Endpoint::WsbridgeTwilio | Endpoint::WsbridgeOpenai => {
                    let port = server.unwrap().port;
                    let protocol = if self.endpoint == Endpoint::WsbridgeTwilio { "twilio" } else { "openai" };
                    format!("{{origination_uuid={uuid},wsbridge_protocol={protocol}}}wsbridge/ws://127.0.0.1:{port}/bench/{call}")
                }
                Endpoint::PeerFork(peer) => {
                    // The same null call as wsbridge-fork's; the peer's fork is an API command, not an app.
                    let port = server.unwrap().port;
                    let fork = format!("{} {uuid} start ws://127.0.0.1:{port}/bench/{call} mixed 16k", peer.command);
                    format!("{{origination_uuid={uuid},rate={RATE},api_on_answer='{fork}'}}null/bench")
                }
            };
            events.lock().unwrap().entry(uuid.clone()).or_default().originated = Some(Instant::now());
            let reply = control.command(&format!("bgapi originate {target} tone_{tone_ms}ms XML wsbridge-test"));
            assert!(reply.as_deref().is_ok_and(|r| r.starts_with("+OK")), "bgapi originate: {reply:?}");
            let next = started + Duration::from_secs_f64((call + 1) as f64 / self.options.rate);
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
        }
        Ramp { started, took: started.elapsed() }
    }

    /// How many calls were answered, waiting up to 30 s for all of them.
    fn wait_answered(&self, events: &Calls) -> usize {
        let answered = wait_for(events, self.calls, Instant::now() + Duration::from_secs(30), |c| c.answered.is_some());
        if answered < self.calls {
            eprintln!("{}: only {answered} of {} calls were answered", self.endpoint.name(), self.calls);
        }
        answered
    }

    /// The measuring window: every call up, none ended yet.
    fn measure_window(&self, ramp: &Ramp, pid: u32, events: &Calls) -> Window {
        let window_start = Instant::now() + Duration::from_secs(2);
        let window_end = ramp.started + Duration::from_secs(self.options.seconds) - Duration::from_secs(2);
        assert!(
            window_end > window_start + Duration::from_secs(5),
            "calls of {} s leave no steady window after a {:.1} s ramp; raise --seconds or --rate",
            self.options.seconds,
            ramp.took.as_secs_f64()
        );
        std::thread::sleep(window_start - Instant::now());
        let cpu_before = proc_stats::cpu_us(pid);
        let runtime_cpu_before = proc_stats::threads_cpu_us(pid, "wsbridge");
        let runtime_wakeups_before = proc_stats::threads_context_switches(pid, "wsbridge");
        let bench_cpu_before = proc_stats::cpu_us("self");
        let measured_from = Instant::now();
        let peak_rss_kib = peak_rss_kib_until(pid, window_end);
        let cpu_used_us = proc_stats::cpu_us(pid) - cpu_before;
        let runtime_cpu_us = proc_stats::threads_cpu_us(pid, "wsbridge") - runtime_cpu_before;
        let runtime_wakeups =
            proc_stats::threads_context_switches(pid, "wsbridge").saturating_sub(runtime_wakeups_before);
        let length = measured_from.elapsed();
        let bench_cpu_used_us = proc_stats::cpu_us("self") - bench_cpu_before;
        let calls_up = self.calls - count(events, |c| c.hangup.is_some());
        Window { length, cpu_used_us, runtime_cpu_us, runtime_wakeups, bench_cpu_used_us, peak_rss_kib, calls_up }
    }

    /// Waits for the answered calls to hang up, stops the event collector and
    /// shuts FreeSWITCH down; returns its version and the calls' events.
    fn tear_down(
        &self,
        freeswitch: FreeSwitch,
        collector: Collector,
        control: esl::Esl,
        ramp: &Ramp,
        answered: usize,
    ) -> (String, Calls) {
        let hangup_deadline =
            ramp.started + Duration::from_secs(self.options.seconds) + ramp.took + Duration::from_secs(30);
        wait_for(&collector.calls, answered, hangup_deadline, |c| c.hangup.is_some());
        let events = collector.stop();
        drop(control);
        let version = freeswitch.version();
        if !freeswitch.stop() {
            eprintln!("{}: FreeSWITCH did not shut down cleanly", self.endpoint.name());
        }
        (version, events)
    }

    /// A call's CDR variable for `figure`: a fork's carry its name.
    fn figure(&self, figure: &str) -> String {
        match self.endpoint {
            Endpoint::WsbridgeFork => figure.replacen("wsbridge_", "wsbridge_fork_default_", 1),
            _ => figure.to_string(),
        }
    }

    /// Frames both ways and their timing, from the echo server and the calls' CDR variables.
    fn media(&self, server: EchoServer, events: &HashMap<String, CallEvents>) -> Media {
        // The last connections close as their calls hang up.
        std::thread::sleep(Duration::from_millis(500));
        let echo = self.endpoint.echo().expect("a run with a server");
        let delivered = delivery(&server.finish(), echo.frame_bytes, self.calls, self.options.seconds);
        let underruns = variable_sum(events, &self.figure("wsbridge_underruns"));
        let call_minutes = self.calls as f64 * self.options.seconds as f64 / 60.0;
        let media = Media {
            frames_sent: variable_sum(events, &self.figure("wsbridge_frames_sent")),
            frames_dropped_by_module: variable_sum(events, &self.figure("wsbridge_dropped_frames")),
            frames_played: variable_sum(events, &self.figure("wsbridge_frames_played")),
            underruns,
            gaps_per_call_minute: underruns as f64 / call_minutes,
            concealed_frames: variable_sum(events, &self.figure("wsbridge_concealed_frames")),
            drift_dropped_frames: variable_sum(events, &self.figure("wsbridge_drift_dropped_frames")),
            compressed_ms: variable_sum(events, &self.figure("wsbridge_compressed_ms")),
            playout_target_mean_ms: variable_mean(events, &self.figure("wsbridge_playout_target_ms")),
            ..delivered
        };
        // A listen-only server plays nothing back: no playout figures, as the socket floor has none.
        match echo.listen_only {
            true => Media { gaps_per_call_minute: f64::NAN, playout_target_mean_ms: f64::NAN, ..media },
            false => media,
        }
    }

    /// The run's row of the table: completed calls, CPU, memory and setup times.
    fn row(
        &self,
        events: &HashMap<String, CallEvents>,
        window: &Window,
        idle_rss_kib: u64,
        media: Option<Media>,
    ) -> Row {
        let completed = events
            .values()
            .filter(|call| call.answered.is_some())
            .filter(|call| {
                call.hangup.as_ref().and_then(|h| h.get("Hangup-Cause")).is_some_and(|c| c == "NORMAL_CLEARING")
            })
            .count();
        let mut setup_us: Vec<u64> = events
            .values()
            .filter_map(|call| Some(call.answered?.saturating_duration_since(call.originated?).as_micros() as u64))
            .collect();
        let mut setup_ok_us: Vec<u64> = events
            .values()
            .filter_map(|call| Some(call.originate_ok?.saturating_duration_since(call.originated?).as_micros() as u64))
            .collect();
        let call_seconds = self.calls as f64 * window.length.as_secs_f64();
        let calls = self.calls as f64;
        Row {
            endpoint: self.endpoint.name(),
            calls: self.calls,
            completed,
            cpu_us_per_call_second: window.cpu_used_us as f64 / call_seconds,
            cpu_ratio_to_null: None,
            over_floor: None,
            // Only mod_wsbridge's runtime threads are counted: a null call and a peer's fork have none at work.
            wakeups_per_call_second: (!matches!(self.endpoint, Endpoint::Null | Endpoint::PeerFork(_)))
                .then(|| window.runtime_wakeups as f64 / call_seconds),
            rss_kib_per_call: window.peak_rss_kib.saturating_sub(idle_rss_kib) as f64 / calls,
            setup_p50_ms: percentile_ms(&mut setup_us, 0.5),
            setup_p99_ms: percentile_ms(&mut setup_us, 0.99),
            setup_ok_p50_ms: percentile_ms(&mut setup_ok_us, 0.5),
            setup_ok_p99_ms: percentile_ms(&mut setup_ok_us, 0.99),
            bench_cpu_percent: window.bench_cpu_used_us as f64 / window.length.as_micros() as f64 * 100.0,
            media,
        }
    }

    /// The run's one or two lines of progress output.
    fn print(&self, row: &Row, window: &Window, ramp: &Ramp, idle_rss_kib: u64, version: &str) {
        println!(
            "{:>13} {:>4} calls: {} completed, {} up through a {:.1} s window, ramp {:.1} s; \
             FreeSWITCH used {:.2} CPU-s ({:.2} in mod_wsbridge's runtime threads, {} context switches), \
             RSS {idle_rss_kib} -> {} KiB ({version})",
            self.endpoint.name(),
            self.calls,
            row.completed,
            window.calls_up,
            window.length.as_secs_f64(),
            ramp.took.as_secs_f64(),
            window.cpu_used_us as f64 / 1e6,
            window.runtime_cpu_us as f64 / 1e6,
            window.runtime_wakeups,
            window.peak_rss_kib,
        );
        if let Some(media) = &row.media {
            println!(
                "{:>13} {:>4} calls: module sent {} frames, dropped {}; {} underruns, {} frames concealed, \
                 {} drift-dropped, {} ms compressed; marks {} sent, {} back; 1 kHz tone in {} of {} checked frames",
                "",
                self.calls,
                media.frames_sent,
                media.frames_dropped_by_module,
                media.underruns,
                media.concealed_frames,
                media.drift_dropped_frames,
                media.compressed_ms,
                media.marks_sent,
                media.marks_back,
                media.tone_found,
                media.tone_checked
            );
            // Every byte: a shortfall that is no whole frame would hide in the frame counts.
            println!(
                "{:>13} {:>4} calls: the server got {} of the {} bytes expected ({} short), in {} messages; \
                 whole frames per call: {}",
                "",
                self.calls,
                media.bytes_received,
                media.bytes_expected,
                media.bytes_expected as i64 - media.bytes_received as i64,
                media.messages_received,
                media
                    .calls_by_frames
                    .iter()
                    .map(|(frames, calls)| format!("{frames} in {calls}"))
                    .collect::<Vec<_>>()
                    .join(", "),
            );
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(socket_floor::CHILD_ARGUMENT) {
        socket_floor::child_main(&args[2..]);
        return;
    }
    let missing = env!("WSBRIDGE_FS_MISSING");
    if !missing.is_empty() {
        println!("SKIPPED: the calls benchmark needs FreeSWITCH, and {missing}");
        return;
    }
    if std::env::args().any(|arg| arg == "--help") {
        println!("{USAGE}");
        return;
    }
    let options = match parse_options() {
        Ok(options) => options,
        Err(why) => {
            eprintln!("{why}\n{USAGE}");
            std::process::exit(2);
        }
    };
    // Two threads: one alone stamps the arrivals of a 500-call burst late, one after
    // another, and so would charge its own queueing to the module's jitter.
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let server = runtime.handle().clone();

    let mut rows = Vec::new();
    let mut run_number = 0;
    if let Some((from, step, max)) = options.capacity {
        capacity::capacity_search(&options, (from, step, max), &server);
        return;
    }
    for &calls in &options.calls {
        for endpoint in options.runs() {
            rows.push(run(&options, endpoint, calls, run_number, &server));
            run_number += 1;
        }
    }
    compare_with_floors(&mut rows);

    report_all(&options, &rows);
}

/// Each row's CPU against the null endpoint's, and wsbridge's over the socket floor's, at the same calls.
fn compare_with_floors(rows: &mut [Row]) {
    let floors: HashMap<usize, f64> =
        rows.iter().filter(|row| row.endpoint == "null").map(|row| (row.calls, row.cpu_us_per_call_second)).collect();
    let socket_floors: HashMap<usize, f64> = rows
        .iter()
        .filter(|row| row.endpoint == "socket-floor")
        .map(|row| (row.calls, row.cpu_us_per_call_second))
        .collect();
    for row in rows {
        row.cpu_ratio_to_null = floors.get(&row.calls).map(|floor| row.cpu_us_per_call_second / floor);
        // The floor carries 640-byte L16 frames: wsbridge's and wsbridge-live's traffic.
        if row.endpoint == "wsbridge" || row.endpoint == "wsbridge-live" {
            row.over_floor = floors
                .get(&row.calls)
                .zip(socket_floors.get(&row.calls))
                .map(|(null, socket)| (row.cpu_us_per_call_second - null) / socket);
        }
    }
}

/// Prints the table and writes calls.csv, calls.md and calls.png.
fn report_all(options: &Options, rows: &[Row]) {
    let table = report::table(rows);
    println!(
        "\n{} s per call, {} call attempts per second, {} cores; the echo server's two threads are not pinned \
         (the cores are shared with FreeSWITCH), so uplink jitter is timed by the kernel's receive timestamps\n",
        options.seconds,
        options.rate,
        cores()
    );
    println!("{table}");
    std::fs::create_dir_all(&options.out).expect("creating the output directory");
    let write = |name: &str, text: &str| {
        let path = options.out.join(name);
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        println!("wrote {}", path.display());
    };
    write("calls.csv", &report::csv(rows));
    write("calls.md", &table);
    let png = options.out.join("calls.png");
    match report::plot(rows, &png) {
        Ok(()) => println!("wrote {}", png.display()),
        Err(why) => println!("no plot: {why}"),
    }
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
