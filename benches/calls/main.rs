//! `cargo bench --bench calls`: hundreds of real calls through a real
//! FreeSWITCH, each playing a 1 kHz tone into `wsbridge` and hearing it
//! echoed back by a WebSocket server, side by side with the same load on
//! FreeSWITCH's `null` endpoint, the floor any endpoint costs. `wsbridge`
//! echoes each frame at once; `wsbridge-live` echoes each after a random
//! 0–40 ms, in order, as a live server might, to test the jitter buffer:
//! its gaps per call-minute, concealed frames and playout latency.
//! `wsbridge-twilio` speaks Twilio Media Streams to a server that echoes in
//! kind; `wsbridge-pcmu` carries the same μ-law in the native protocol, so
//! the two differ by Twilio's JSON and base64 alone. `wsbridge-fork` streams
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
//! `--endpoints null,socket-floor,wsbridge,wsbridge-live,wsbridge-pcmu,wsbridge-twilio,wsbridge-fork`,
//! `--out <dir>` (default target/calls-bench), `--uplink-batch-ms N` (the
//! module param, to measure it; default: the module's own), `--uplink-direct
//! false` (caller audio through the runtime, as before the direct write), `--capacity
//! FROM,STEP,MAX` (wsbridge calls stepped up until a step loses a frame or its
//! uplink jitter p99 reaches 5 ms: the node's call capacity).

#![allow(clippy::result_large_err)] // tungstenite's handshake callback type

mod echo_server;
mod report;
mod socket_floor;
mod stamped;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use echo_server::{Echo, EchoServer};
use report::{Media, Row};
use socket_floor::SocketFloor;
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

#[derive(Debug, Clone, Copy, PartialEq)]
enum Endpoint {
    Null,
    /// No FreeSWITCH: the same frames from a minimal epoll loop, the kernel's share.
    SocketFloor,
    Wsbridge,
    /// wsbridge with a server that echoes each frame after a random 0–40 ms.
    WsbridgeLive,
    /// wsbridge speaking Twilio Media Streams (JSON, base64 μ-law) to an echo
    /// server that answers in kind: the cost of the protocol next to the native one.
    WsbridgeTwilio,
    /// The native protocol with G.711 μ-law on the wire: the same audio as Twilio's, in binary.
    WsbridgePcmu,
    /// The null endpoint's calls, each streamed by a listen-only fork (a
    /// media bug, both directions mixed, 16 kHz) to the echo server.
    WsbridgeFork,
}

impl Endpoint {
    const ALL: [Endpoint; 7] = [
        Endpoint::Null,
        Endpoint::SocketFloor,
        Endpoint::Wsbridge,
        Endpoint::WsbridgeLive,
        Endpoint::WsbridgePcmu,
        Endpoint::WsbridgeTwilio,
        Endpoint::WsbridgeFork,
    ];

    fn name(self) -> &'static str {
        match self {
            Endpoint::Null => "null",
            Endpoint::SocketFloor => "socket-floor",
            Endpoint::Wsbridge => "wsbridge",
            Endpoint::WsbridgeLive => "wsbridge-live",
            Endpoint::WsbridgeTwilio => "wsbridge-twilio",
            Endpoint::WsbridgePcmu => "wsbridge-pcmu",
            Endpoint::WsbridgeFork => "wsbridge-fork",
        }
    }

    fn from_name(name: &str) -> Result<Endpoint, String> {
        Endpoint::ALL.into_iter().find(|endpoint| endpoint.name() == name).ok_or(format!("unknown endpoint '{name}'"))
    }

    /// How its echo server echoes; `None` for the endpoint with no server.
    fn echo(self) -> Option<Echo> {
        let echo = Echo {
            frame_bytes: FRAME_BYTES,
            tone_hz: TONE_HZ,
            rate: RATE,
            max_delay_ms: 0,
            mulaw: false,
            twilio: false,
        };
        match self {
            Endpoint::Null => None,
            Endpoint::Wsbridge | Endpoint::SocketFloor => Some(echo),
            Endpoint::WsbridgeLive => Some(Echo { max_delay_ms: LIVE_MAX_DELAY_MS, ..echo }),
            // Twilio's 20 ms of μ-law at 8 kHz.
            Endpoint::WsbridgeTwilio => Some(Echo { frame_bytes: 160, rate: 8000, mulaw: true, twilio: true, ..echo }),
            Endpoint::WsbridgePcmu => Some(Echo { frame_bytes: 160, rate: 8000, mulaw: true, ..echo }),
            Endpoint::WsbridgeFork => Some(echo),
        }
    }
}

struct Options {
    calls: Vec<usize>,
    seconds: u64,
    rate: f64,
    endpoints: Vec<Endpoint>,
    out: PathBuf,
    /// wsbridge.conf's `uplink-batch-ms`; None: the module's default.
    uplink_batch_ms: Option<u64>,
    /// wsbridge.conf's `uplink-direct`; None: the module's default.
    uplink_direct: Option<bool>,
    /// `--capacity FROM,STEP,MAX`: wsbridge calls stepped up until a step
    /// loses a frame or its uplink jitter p99 reaches 5 ms.
    capacity: Option<(usize, usize, usize)>,
}

/// What a node's call capacity must keep: no frame lost, jitter p99 under this.
const CAPACITY_JITTER_P99_MS: f64 = 5.0;

const USAGE: &str = "usage: cargo bench --bench calls -- [--calls 50,200,500] [--seconds 60] [--rate 50] \
                     [--endpoints null,socket-floor,wsbridge,wsbridge-live,wsbridge-pcmu,wsbridge-twilio,wsbridge-fork] \
                     [--out target/calls-bench] [--uplink-batch-ms N] [--uplink-direct false] [--capacity FROM,STEP,MAX]";

fn parse_options() -> Result<Options, String> {
    let mut options = Options {
        calls: vec![50, 200, 500],
        seconds: 60,
        rate: 50.0,
        endpoints: Endpoint::ALL.to_vec(),
        out: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/calls-bench"),
        uplink_batch_ms: None,
        uplink_direct: None,
        capacity: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            // cargo bench passes this to every bench binary.
            "--bench" => {}
            "--calls" => {
                options.calls = value()?
                    .split(',')
                    .map(|n| n.trim().parse().ok().filter(|n| *n > 0).ok_or(format!("bad call count '{n}'")))
                    .collect::<Result<_, _>>()?
            }
            "--seconds" => options.seconds = value()?.parse().map_err(|_| "bad --seconds")?,
            "--rate" => options.rate = value()?.parse().ok().filter(|r: &f64| *r > 0.0).ok_or("bad --rate")?,
            "--endpoints" => {
                options.endpoints =
                    value()?.split(',').map(|name| Endpoint::from_name(name.trim())).collect::<Result<_, _>>()?
            }
            "--out" => options.out = PathBuf::from(value()?),
            "--capacity" => {
                let steps: Vec<usize> = value()?.split(',').map(|n| n.trim().parse().unwrap_or(0)).collect();
                match steps[..] {
                    [from, step, max] if from > 0 && step > 0 && max >= from => {
                        options.capacity = Some((from, step, max))
                    }
                    _ => return Err("bad --capacity: FROM,STEP,MAX".into()),
                }
            }
            "--uplink-batch-ms" => {
                options.uplink_batch_ms = Some(value()?.parse().map_err(|_| "bad --uplink-batch-ms")?)
            }
            "--uplink-direct" => {
                options.uplink_direct = Some(value()?.parse().map_err(|_| "bad --uplink-direct: true or false")?)
            }
            other => return Err(format!("unknown argument '{other}'")),
        }
    }
    Ok(options)
}

/// When a call was originated, and what the event socket then told about it.
#[derive(Default)]
struct CallEvents {
    originated: Option<Instant>,
    /// When originate's `+OK` (its BACKGROUND_JOB) reached us.
    originate_ok: Option<Instant>,
    /// When the CHANNEL_ANSWER event reached us. FreeSWITCH's own event
    /// timestamps move in 20 ms timer steps, too coarse for setup times.
    answered: Option<Instant>,
    hangup: Option<esl::Headers>,
}

type Calls = Arc<Mutex<HashMap<String, CallEvents>>>;

/// Reads channel events until `stop`, keeping those of this run's calls.
fn collect_events(mut esl: esl::Esl, prefix: String, calls: Calls, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        let Some(event) = esl.next_event(Duration::from_secs(1)) else { continue };
        // originate's reply names the call's UUID after its +OK.
        let job_uuid =
            event.get("_body").and_then(|body| body.strip_prefix("+OK ")).map(|uuid| uuid.trim().to_string());
        let uuid = match event.get("Event-Name").map(String::as_str) {
            Some("BACKGROUND_JOB") => job_uuid.as_ref(),
            _ => event.get("Unique-ID"),
        };
        let Some(uuid) = uuid.filter(|uuid| uuid.starts_with(&prefix)) else { continue };
        let mut calls = calls.lock().unwrap();
        let call = calls.entry(uuid.clone()).or_default();
        match event.get("Event-Name").map(String::as_str) {
            Some("CHANNEL_ANSWER") => call.answered = Some(Instant::now()),
            Some("BACKGROUND_JOB") => call.originate_ok = Some(Instant::now()),
            Some("CHANNEL_HANGUP_COMPLETE") => call.hangup = Some(event),
            _ => {}
        }
    }
}

fn count(calls: &Calls, done: impl Fn(&CallEvents) -> bool) -> usize {
    calls.lock().unwrap().values().filter(|call| done(call)).count()
}

fn wait_for(calls: &Calls, wanted: usize, deadline: Instant, done: impl Fn(&CallEvents) -> bool) -> usize {
    loop {
        let reached = count(calls, &done);
        if reached >= wanted || Instant::now() >= deadline {
            return reached;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

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

/// The thread that keeps the events of a run's calls until it is stopped.
struct Collector {
    calls: Calls,
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl Collector {
    fn start(freeswitch: &FreeSwitch, prefix: &str) -> Collector {
        let calls: Calls = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let mut esl = freeswitch.esl();
        esl.subscribe("CHANNEL_ANSWER CHANNEL_HANGUP_COMPLETE BACKGROUND_JOB");
        let (prefix, events, stopped) = (prefix.to_string(), calls.clone(), stop.clone());
        let thread = std::thread::spawn(move || collect_events(esl, prefix, events, stopped));
        Collector { calls, stop, thread }
    }

    fn stop(self) -> Calls {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap();
        self.calls
    }
}

fn run(options: &Options, endpoint: Endpoint, calls: usize, run_number: u16, server: &tokio::runtime::Handle) -> Row {
    if endpoint == Endpoint::SocketFloor {
        return run_socket_floor(options, calls, server);
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

/// A fresh FreeSWITCH for one run; for wsbridge, with the published run's settings.
fn start_freeswitch(endpoint: Endpoint, run_number: u16, options: &Options) -> FreeSwitch {
    let freeswitch = FreeSwitch::start_with_log_level(&BUILD, "ws://127.0.0.1:9", 10 + run_number, "warning");
    if endpoint.echo().is_some() {
        // The published run's setting: one runtime thread costs the least CPU.
        let batch = options
            .uplink_batch_ms
            .map_or(String::new(), |ms| format!(r#"<param name="uplink-batch-ms" value="{ms}"/>"#));
        let direct =
            options.uplink_direct.map_or(String::new(), |on| format!(r#"<param name="uplink-direct" value="{on}"/>"#));
        freeswitch
            .set_wsbridge_conf(&format!(r#"<param name="runtime-threads" value="{RUNTIME_THREADS}"/>{batch}{direct}"#));
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
                Endpoint::WsbridgeTwilio => {
                    let port = server.unwrap().port;
                    format!("{{origination_uuid={uuid},wsbridge_protocol=twilio}}wsbridge/ws://127.0.0.1:{port}/bench/{call}")
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
        let tally = server.finish();
        let per_call = self.options.seconds * FRAMES_PER_SECOND;
        let underruns = variable_sum(events, &self.figure("wsbridge_underruns"));
        let call_minutes = self.calls as f64 * self.options.seconds as f64 / 60.0;
        let mut frames_per_call = tally.frames_per_call.clone();
        frames_per_call.resize(self.calls.max(frames_per_call.len()), 0);
        Media {
            frames_expected: per_call * self.calls as u64,
            frames_sent: variable_sum(events, &self.figure("wsbridge_frames_sent")),
            frames_received: tally.frames_per_call.iter().sum(),
            frames_lost: frames_per_call.iter().map(|frames| per_call.saturating_sub(*frames)).sum(),
            frames_dropped_by_module: variable_sum(events, &self.figure("wsbridge_dropped_frames")),
            jitter_p50_ms: ms(tally.jitter_us.value_at_quantile(0.5)),
            jitter_p99_ms: ms(tally.jitter_us.value_at_quantile(0.99)),
            jitter_max_ms: ms(tally.jitter_us.max()),
            jitter_read_p99_ms: ms(tally.jitter_read_us.value_at_quantile(0.99)),
            unstamped_frames: tally.unstamped_frames,
            frames_echoed: tally.echoed_frames,
            frames_played: variable_sum(events, &self.figure("wsbridge_frames_played")),
            underruns,
            gaps_per_call_minute: underruns as f64 / call_minutes,
            concealed_frames: variable_sum(events, &self.figure("wsbridge_concealed_frames")),
            drift_dropped_frames: variable_sum(events, &self.figure("wsbridge_drift_dropped_frames")),
            compressed_ms: variable_sum(events, &self.figure("wsbridge_compressed_ms")),
            playout_target_mean_ms: variable_mean(events, &self.figure("wsbridge_playout_target_ms")),
            mark_delay_mean_ms: tally.mark_delay_us.mean() / 1000.0,
            mark_delay_p50_ms: ms(tally.mark_delay_us.value_at_quantile(0.5)),
            mark_delay_p99_ms: ms(tally.mark_delay_us.value_at_quantile(0.99)),
            marks_sent: tally.marks_sent,
            marks_back: tally.marks_back,
            tone_checked: tally.tone_checked,
            tone_found: tally.tone_found,
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
            wakeups_per_call_second: (self.endpoint != Endpoint::Null)
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
        capacity_search(&options, (from, step, max), &server);
        return;
    }
    for &calls in &options.calls {
        for &endpoint in &options.endpoints {
            rows.push(run(&options, endpoint, calls, run_number, &server));
            run_number += 1;
        }
    }
    let floors: HashMap<usize, f64> =
        rows.iter().filter(|row| row.endpoint == "null").map(|row| (row.calls, row.cpu_us_per_call_second)).collect();
    let socket_floors: HashMap<usize, f64> = rows
        .iter()
        .filter(|row| row.endpoint == "socket-floor")
        .map(|row| (row.calls, row.cpu_us_per_call_second))
        .collect();
    for row in rows.iter_mut() {
        row.cpu_ratio_to_null = floors.get(&row.calls).map(|floor| row.cpu_us_per_call_second / floor);
        // The floor carries 640-byte L16 frames: wsbridge's and wsbridge-live's traffic.
        if row.endpoint == "wsbridge" || row.endpoint == "wsbridge-live" {
            row.over_floor = floors
                .get(&row.calls)
                .zip(socket_floors.get(&row.calls))
                .map(|(null, socket)| (row.cpu_us_per_call_second - null) / socket);
        }
    }

    let table = report::table(&rows);
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
    write("calls.csv", &report::csv(&rows));
    write("calls.md", &table);
    let png = options.out.join("calls.png");
    match report::plot(&rows, &png) {
        Ok(()) => println!("wrote {}", png.display()),
        Err(why) => println!("no plot: {why}"),
    }
}

/// Steps wsbridge calls up from `from` until a step loses a frame or its
/// uplink jitter p99 reaches the bound; the last step that kept both is the
/// node's call capacity.
fn capacity_search(options: &Options, (from, step, max): (usize, usize, usize), server: &tokio::runtime::Handle) {
    let mut capacity = None;
    let mut calls = from;
    let mut run_number = 0;
    while calls <= max {
        let row = run(options, Endpoint::Wsbridge, calls, run_number, server);
        run_number += 1;
        let media = row.media.as_ref().expect("a wsbridge row has media");
        let lost = media.frames_lost + media.frames_dropped_by_module;
        let kept = row.completed == calls && lost == 0 && media.jitter_p99_ms < CAPACITY_JITTER_P99_MS;
        println!(
            "capacity step: {calls} calls: {} completed, {lost} frames lost, uplink jitter p99 {:.2} ms, \
             FreeSWITCH {:.0} µs per call-second: {}",
            row.completed,
            media.jitter_p99_ms,
            row.cpu_us_per_call_second,
            if kept { "kept" } else { "NOT kept" }
        );
        if !kept {
            break;
        }
        capacity = Some(calls);
        calls += step;
    }
    match capacity {
        Some(calls) if calls + step > max => println!(
            "capacity: at least {calls} calls (0 lost, jitter p99 < {CAPACITY_JITTER_P99_MS} ms), the most tried"
        ),
        Some(calls) => println!(
            "capacity: {calls} calls with 0 lost frames and uplink jitter p99 < {CAPACITY_JITTER_P99_MS} ms on {} cores",
            cores()
        ),
        None => println!("capacity: below {from} calls"),
    }
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
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
fn run_socket_floor(options: &Options, calls: usize, server: &tokio::runtime::Handle) -> Row {
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

    let per_call = options.seconds * FRAMES_PER_SECOND;
    let mut frames_per_call = tally.frames_per_call.clone();
    frames_per_call.resize(calls.max(frames_per_call.len()), 0);
    let media = Media {
        frames_expected: per_call * calls as u64,
        frames_sent: sent,
        frames_received: tally.frames_per_call.iter().sum(),
        frames_lost: frames_per_call.iter().map(|frames| per_call.saturating_sub(*frames)).sum(),
        jitter_p50_ms: ms(tally.jitter_us.value_at_quantile(0.5)),
        jitter_p99_ms: ms(tally.jitter_us.value_at_quantile(0.99)),
        jitter_max_ms: ms(tally.jitter_us.max()),
        jitter_read_p99_ms: ms(tally.jitter_read_us.value_at_quantile(0.99)),
        unstamped_frames: tally.unstamped_frames,
        frames_echoed: tally.echoed_frames,
        marks_sent: tally.marks_sent,
        tone_checked: tally.tone_checked,
        tone_found: tally.tone_found,
        mark_delay_mean_ms: f64::NAN,
        mark_delay_p50_ms: f64::NAN,
        mark_delay_p99_ms: f64::NAN,
        gaps_per_call_minute: f64::NAN,
        playout_target_mean_ms: f64::NAN,
        ..Media::default()
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
