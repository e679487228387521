//! `make demo`: the whole thing working, end to end, in a few lines. It
//! starts a private FreeSWITCH on 127.0.0.1 with the freshly built module,
//! starts `wsbridge-demo` in echo mode, places one call that plays a 1 kHz
//! tone into `wsbridge` and records what comes back, and shuts it all down.
//! The integration tests run this same function.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use crate::instance::{BuildEnv, FreeSwitch};

/// What the demo saw.
#[derive(Debug)]
pub struct DemoReport {
    pub freeswitch_version: String,
    pub first_message: String,
    /// What wsbridge-demo wrote to its standard error: empty on a good run.
    pub demo_errors: String,
    pub frames_to_server: u64,
    pub frames_from_server: u64,
    /// The tone's frequency in what the caller heard back.
    pub heard_hz: f64,
    /// What the caller heard, and what the demo server recorded.
    pub heard_wav: PathBuf,
    pub recorded_wav: PathBuf,
    pub clean_shutdown: bool,
}

pub const TONE_HZ: f64 = 1000.0;

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn start_demo_server(demo_server: &Path, port: u16, out_dir: &Path) -> Result<Server, String> {
    let stdout = std::fs::File::create(out_dir.join("wsbridge-demo.txt")).map_err(|e| e.to_string())?;
    let child = Command::new(demo_server)
        .args(["--listen", &format!("127.0.0.1:{port}"), "--mode", "echo", "--record-dir"])
        .arg(out_dir)
        .stdout(stdout)
        .stderr(std::fs::File::create(out_dir.join("wsbridge-demo-errors.txt")).map_err(|e| e.to_string())?)
        .spawn()
        .map_err(|e| format!("starting {}: {e}", demo_server.display()))?;
    let server = Server(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            return Err("wsbridge-demo did not start listening".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(server)
}

/// Frequency from the upward zero crossings of the loud part of `samples`.
fn heard_frequency(samples: &[i16], rate: u32) -> f64 {
    let loud: Vec<i16> = samples
        .chunks(rate as usize / 100)
        .filter(|chunk| {
            let energy: f64 = chunk.iter().map(|s| (*s as f64).powi(2)).sum::<f64>() / chunk.len() as f64;
            energy.sqrt() > 1000.0
        })
        .flatten()
        .copied()
        .collect();
    if loud.len() < rate as usize / 10 {
        return 0.0;
    }
    let crossings = loud.windows(2).filter(|pair| pair[0] < 0 && pair[1] >= 0).count();
    crossings as f64 * rate as f64 / loud.len() as f64
}

/// Runs the demo, printing each step to `out`; its files go to `out_dir`.
pub fn run(build: &BuildEnv, demo_server: &Path, out_dir: &Path, out: &mut dyn Write) -> Result<DemoReport, String> {
    std::fs::create_dir_all(out_dir).map_err(|e| format!("{}: {e}", out_dir.display()))?;
    let out_dir = out_dir.canonicalize().map_err(|e| e.to_string())?;
    let port = free_port();
    let server = start_demo_server(demo_server, port, &out_dir)?;
    let freeswitch = FreeSwitch::start(build, &format!("ws://127.0.0.1:{port}"), 9);
    let version = freeswitch.version();
    let _ = writeln!(
        out,
        "started {version} on 127.0.0.1 (event socket port {}), and wsbridge-demo echoing on ws://127.0.0.1:{port}",
        freeswitch.esl_port
    );

    let mut events = freeswitch.esl();
    events.subscribe("CHANNEL_HANGUP_COMPLETE");
    let mut esl = freeswitch.esl();
    let reply = esl.api(&format!(
        "originate {{RECORD_READ_ONLY=true}}wsbridge/ws://127.0.0.1:{port}/demo tone_2000ms XML wsbridge-test"
    ));
    let uuid =
        reply.trim().strip_prefix("+OK ").ok_or_else(|| format!("the call failed: {}", reply.trim()))?.to_string();
    let heard_wav = out_dir.join("heard.wav");
    let _ = std::fs::remove_file(&heard_wav);
    esl.api(&format!("uuid_record {uuid} start {}", heard_wav.display()));
    let _ = writeln!(out, "placed a call playing a {TONE_HZ} Hz tone for 2 s into wsbridge; recording what comes back");
    let hangup = events
        .wait_event(Duration::from_secs(15), |event| event.get("Unique-ID") == Some(&uuid))
        .ok_or("the call did not end within 15 s")?;
    let variable = |name: &str| hangup.get(&format!("variable_{name}")).and_then(|v| v.parse().ok()).unwrap_or(0);
    let (frames_to_server, frames_from_server) =
        (variable("wsbridge_frames_sent"), variable("wsbridge_frames_received"));
    // FreeSWITCH writes the WAV header's length once the channel is gone.
    std::thread::sleep(Duration::from_millis(500));
    drop(server);
    let clean_shutdown = freeswitch.stop();

    let printed = std::fs::read_to_string(out_dir.join("wsbridge-demo.txt")).unwrap_or_default();
    // The demo's own errors, shown: a newcomer's first lines must not be errors that are not.
    let demo_errors = std::fs::read_to_string(out_dir.join("wsbridge-demo-errors.txt")).unwrap_or_default();
    if !demo_errors.trim().is_empty() {
        let _ = writeln!(out, "wsbridge-demo reported errors:\n{}", demo_errors.trim_end());
    }
    let first_message = printed
        .lines()
        .find_map(|line| line.split_once("first message ").map(|(_, message)| message.to_string()))
        .ok_or("wsbridge-demo printed no first message")?;
    let recorded_wav = out_dir.join("call-1-demo.wav");
    let mut reader = hound::WavReader::open(&heard_wav).map_err(|e| format!("{}: {e}", heard_wav.display()))?;
    let rate = reader.spec().sample_rate;
    let samples: Vec<i16> = reader.samples::<i16>().collect::<Result<_, _>>().map_err(|e| e.to_string())?;
    let heard_hz = heard_frequency(&samples, rate);

    let report = DemoReport {
        freeswitch_version: version,
        first_message,
        demo_errors,
        frames_to_server,
        frames_from_server,
        heard_hz,
        heard_wav,
        recorded_wav,
        clean_shutdown,
    };
    let _ = writeln!(out, "first message the server got: {}", report.first_message);
    let _ = writeln!(
        out,
        "frames: {} from the caller to the server, {} back from the server",
        report.frames_to_server, report.frames_from_server
    );
    let _ = writeln!(out, "tone heard back: {:.0} Hz (played {TONE_HZ} Hz)", report.heard_hz);
    let _ = writeln!(out, "what the caller heard: {}", report.heard_wav.display());
    let _ = writeln!(out, "what the server recorded: {}", report.recorded_wav.display());
    let _ = writeln!(
        out,
        "FreeSWITCH and wsbridge-demo stopped{}",
        if report.clean_shutdown { " cleanly" } else { ", but FreeSWITCH had to be killed" }
    );
    Ok(report)
}
