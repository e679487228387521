//! The jitter buffer in a real FreeSWITCH: servers that send at real time,
//! with jitter, and with clocks 0.5% fast or slow. Each test records the
//! A-leg and judges what the caller heard: gaps, phase steps of the tone,
//! level steps between 5 ms blocks, and the send-to-play latency.

use std::f64::consts::PI;
use std::time::Duration;

use futures_util::SinkExt;
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use tokio_tungstenite::tungstenite::Message;

use crate::audio::{loud_span, read_wav, rms};
use crate::media::{bridged_call, wait_text};
use crate::ws_server::{runtime, Connection};
use crate::{encode, esl, recording_path, wait_gone, world};

crate::tests! {
    playout::clock_fast_for_five_minutes (runs 310 s),
    playout::paced_with_jitter (runs 65 s),
    playout::clock_slow (runs 65 s),
    playout::paced_at_real_time (runs 35 s),
    playout::clear_silences_a_live_stream_within_a_frame,
}

const TONE_HZ: f64 = 1000.0;
const AMPLITUDE: f64 = 7000.0;

/// How a test server paces its messages.
#[derive(Clone, Copy)]
struct Pace {
    rate: u32,
    message_bytes: usize,
    /// The sender's period relative to real time: 0.995 is a clock 0.5% fast.
    clock: f64,
    /// Each message is delayed by up to this, in order.
    max_delay_ms: f64,
    seed: u64,
}

/// The sender's sample `n`: the tone, or, in `bursts`, 2 s of tone then 1 s of digital silence.
fn signal(n: usize, rate: u32, bursts: bool) -> i16 {
    if bursts && (n / rate as usize) % 3 == 2 {
        return 0;
    }
    (AMPLITUDE * (2.0 * PI * TONE_HZ * n as f64 / rate as f64).sin()).round() as i16
}

/// Sends `seconds` of the signal on the pace's schedule; returns when the last message went.
/// Sends on the pace's schedule; returns when the last message went, and how
/// late the test's own sender ran at worst (a stalled machine, not the module).
async fn send_paced(
    connection: &mut Connection,
    pace: Pace,
    seconds: f64,
    bursts: bool,
) -> (tokio::time::Instant, Duration) {
    let mut rng = SmallRng::seed_from_u64(pace.seed);
    let samples_per_message = pace.message_bytes / 2;
    let messages = (seconds * pace.rate as f64) as usize / samples_per_message;
    let start = tokio::time::Instant::now();
    let mut last_due = start;
    let mut worst_late = Duration::ZERO;
    for index in 0..messages {
        let produced_ms = (index + 1) as f64 * samples_per_message as f64 * 1000.0 / pace.rate as f64 * pace.clock;
        let delay_ms = if pace.max_delay_ms > 0.0 { rng.random_range(0.0..pace.max_delay_ms) } else { 0.0 };
        let due = (start + Duration::from_secs_f64((produced_ms + delay_ms) / 1000.0)).max(last_due);
        last_due = due;
        tokio::time::sleep_until(due).await;
        worst_late = worst_late.max(tokio::time::Instant::now().saturating_duration_since(due));
        let first = index * samples_per_message;
        let bytes: Vec<u8> =
            (first..first + samples_per_message).flat_map(|n| signal(n, pace.rate, bursts).to_le_bytes()).collect();
        connection.ws.send(Message::Binary(bytes.into())).await.unwrap();
    }
    (tokio::time::Instant::now(), worst_late)
}

/// The tone's phase in each 5 ms block (a whole number of periods, so a
/// continuous tone keeps one phase), where the block is loud.
fn block_phases(samples: &[i16], rate: u32) -> Vec<Option<f64>> {
    let block = (rate / 200) as usize;
    samples
        .chunks_exact(block)
        .map(|chunk| {
            if rms(chunk) < AMPLITUDE / 4.0 {
                return None;
            }
            let (mut i, mut q) = (0.0, 0.0);
            for (n, sample) in chunk.iter().enumerate() {
                let angle = 2.0 * PI * TONE_HZ * n as f64 / rate as f64;
                i += *sample as f64 * angle.cos();
                q += *sample as f64 * angle.sin();
            }
            Some(q.atan2(i))
        })
        .collect()
}

/// The largest phase step between consecutive loud 5 ms blocks, in radians.
fn largest_phase_step(samples: &[i16], rate: u32) -> f64 {
    let phases = block_phases(samples, rate);
    phases
        .windows(2)
        .filter_map(|pair| match pair {
            [Some(a), Some(b)] => Some(((b - a + 3.0 * PI).rem_euclid(2.0 * PI) - PI).abs()),
            _ => None,
        })
        .fold(0.0, f64::max)
}

/// 5 ms blocks, between `from` and `to` seconds, quieter than half the tone.
fn quiet_blocks(samples: &[i16], rate: u32, from: f64, to: f64) -> Vec<f64> {
    let block = (rate / 200) as usize;
    let (first, last) = ((from * 200.0) as usize, (to * 200.0) as usize);
    samples
        .chunks_exact(block)
        .enumerate()
        .filter(|(index, chunk)| (first..last).contains(index) && rms(chunk) < AMPLITUDE / 2.0 / 2f64.sqrt())
        .map(|(index, _)| index as f64 / 200.0)
        .collect()
}

/// The largest level step between consecutive 5 ms blocks, in dB, between `from` and `to` seconds.
fn largest_level_step_db(samples: &[i16], rate: u32, from: f64, to: f64) -> f64 {
    let block = (rate / 200) as usize;
    let levels: Vec<f64> = samples
        .chunks_exact(block)
        .skip((from * 200.0) as usize)
        .take(((to - from) * 200.0) as usize)
        .map(|chunk| 20.0 * (rms(chunk) + 1.0).log10())
        .collect();
    levels.windows(2).map(|pair| (pair[1] - pair[0]).abs()).fold(0.0, f64::max)
}

/// A CDR variable of the wsbridge leg bridged from `a_leg`, read before it ends.
fn wsbridge_list_entry(path: &str) -> Option<serde_json::Value> {
    let listed: serde_json::Value = serde_json::from_str(&esl().api("wsbridge list json")).ok()?;
    listed.as_array()?.iter().find(|call| call["uri"].as_str().is_some_and(|uri| uri.ends_with(path))).cloned()
}

/// One paced call: the server sends `seconds` on `pace`, then a mark; returns
/// what the caller heard, its rate, and the latency from the last send to the mark.
/// What a paced call came to.
struct Paced {
    samples: Vec<i16>,
    rate: u32,
    /// From the last message sent to its audio played (the mark's echo).
    latency: Duration,
    /// The call's `wsbridge list` entry just before the end.
    listed: serde_json::Value,
    /// How late the test's own sender ran at worst.
    sender_late: Duration,
}

impl Paced {
    /// Gaps count against the module only when the test's sender kept its
    /// schedule; a machine that stalled the sender itself is reported instead.
    /// Whether the test's own sender kept its schedule (within 30 ms).
    fn sender_on_time(&self) -> bool {
        self.sender_late <= Duration::from_millis(30)
    }

    fn judge_gaps(&self, path: &str, gaps: &[f64]) {
        if !gaps.is_empty() && !self.sender_on_time() {
            println!(
                "{path}: the test's sender ran {} ms late, so its {} gaps are not judged",
                self.sender_late.as_millis(),
                gaps.len()
            );
            return;
        }
        assert!(
            gaps.is_empty(),
            "{path}: gaps at {gaps:?} (the sender was at most {} ms late)",
            self.sender_late.as_millis()
        );
    }
}

fn paced_call(path: &str, pace: Pace, seconds: f64, bursts: bool) -> Paced {
    let mut incoming = world().router.expect(path);
    let recording = recording_path(path.trim_start_matches('/'));
    let content_type = encode(&format!("audio/l16;rate={}", pace.rate));
    let a_leg = bridged_call(path, &format!("P-wsbridge-websocket-content-type={content_type}"), &recording);
    let mut connection = incoming.next(Duration::from_secs(5));
    let (latency, listed, sender_late) = runtime().block_on(async {
        connection.first_text().await;
        let (last_sent, sender_late) = send_paced(&mut connection, pace, seconds, bursts).await;
        let listed = wsbridge_list_entry(path).unwrap_or_default();
        connection.ws.send(Message::text(r#"{"action":"mark","name":"end"}"#)).await.unwrap();
        let (_, marked_at) = wait_text(&mut connection, r#""name":"end""#, Duration::from_secs(5)).await;
        let latency = marked_at.saturating_duration_since(last_sent.into_std());
        connection.close().await;
        (latency, listed, sender_late)
    });
    wait_gone(&a_leg, Duration::from_secs(5));
    let (samples, rate) = read_wav(&recording);
    Paced { samples, rate, latency, listed, sender_late }
}

/// 333-byte (here 334: whole samples) and 640-byte messages on an exact
/// real-time schedule for 30 s, at 16 and 8 kHz, four calls at once.
pub fn paced_at_real_time() {
    let cases = [(16000, 334), (16000, 640), (8000, 334), (8000, 320)];
    std::thread::scope(|scope| {
        for (index, (rate, message_bytes)) in cases.into_iter().enumerate() {
            scope.spawn(move || {
                let path = format!("/paced-{rate}-{message_bytes}");
                let pace = Pace { rate, message_bytes, clock: 1.0, max_delay_ms: 0.0, seed: index as u64 };
                let paced = paced_call(&path, pace, 30.0, false);
                let (samples, heard_rate, latency) = (&paced.samples, paced.rate, paced.latency);
                let (start, end) = loud_span(samples, heard_rate, 1000.0).expect("tone heard");
                let gaps = quiet_blocks(samples, heard_rate, start + 0.01, end - 0.01);
                let from = (start * heard_rate as f64) as usize + heard_rate as usize / 100;
                let to = (end * heard_rate as f64) as usize - heard_rate as usize / 100;
                let step = largest_phase_step(&samples[from..to], heard_rate);
                println!(
                    "{path}: heard {:.3} s, {} gaps, largest phase step {step:.3} rad, latency {} ms",
                    end - start,
                    gaps.len(),
                    latency.as_millis()
                );
                paced.judge_gaps(&path, &gaps);
                assert!(step <= 0.2, "{path}: a phase step of {step:.3} rad");
                // A sender that stalled stretched the stream itself: only its gaps are reported then.
                if paced.sender_on_time() {
                    assert!((end - start - 30.0).abs() < 0.1, "{path}: heard {:.3} s of 30", end - start);
                }
            });
        }
    });
}

/// The module's counts of slow task polls and runtime stalls, from `wsbridge status`.
fn runtime_holdups() -> (u64, u64, String) {
    let status = esl().api("wsbridge status");
    let count = |prefix: &str| -> (u64, String) {
        let line = status.lines().find(|line| line.starts_with(prefix)).unwrap_or_default().to_string();
        let number = line.split(": ").nth(1).and_then(|rest| rest.split(',').next()).and_then(|n| n.parse().ok());
        (number.expect("wsbridge status reports it"), line)
    };
    let (slow_polls, polls_line) = count("slow task polls");
    let (stalls, stalls_line) = count("runtime stalls");
    (slow_polls, stalls, format!("{polls_line}; {stalls_line}"))
}

/// Each message delayed by a random 0–60 ms, in order, for 60 s.
pub fn paced_with_jitter() {
    let path = "/paced-jitter";
    let pace = Pace { rate: 16000, message_bytes: 640, clock: 1.0, max_delay_ms: 60.0, seed: 42 };
    let (polls_before, stalls_before, _) = runtime_holdups();
    let paced = paced_call(path, pace, 60.0, false);
    let (polls_after, stalls_after, holdups) = runtime_holdups();
    let (samples, rate, latency, listed) = (&paced.samples, paced.rate, paced.latency, &paced.listed);
    let (start, end) = loud_span(samples, rate, 1000.0).expect("tone heard");
    let gaps = quiet_blocks(samples, rate, start + 1.0, end - 0.01);
    println!(
        "{path}: {} gaps after the first second; latency {} ms at the end; target {} ms, jitter {} ms; module {holdups}",
        gaps.len(),
        latency.as_millis(),
        listed["target_ms"],
        listed["jitter_ms"]
    );
    // A gap is the module's fault unless its runtime was starved of CPU
    // meanwhile (it woke late on its heartbeat: a loaded machine); a task of
    // its own that held a runtime thread is its fault too.
    let starved = stalls_after - stalls_before;
    if !gaps.is_empty() && polls_after == polls_before && starved > 0 {
        println!(
            "{path}: gaps at {:.2} s to {:.2} s not judged: the module's runtime was starved of CPU {starved} time(s) during the call",
            gaps[0],
            gaps[gaps.len() - 1]
        );
    } else {
        paced.judge_gaps(path, &gaps);
    }
    assert!(latency < Duration::from_millis(300), "latency {latency:?}");
}

/// A clock 0.5% fast for 5 minutes, tone bursts with silences between them:
/// latency is held near the target by dropping silence, and every burst is whole.
pub fn clock_fast_for_five_minutes() {
    let path = "/clock-fast";
    let pace = Pace { rate: 16000, message_bytes: 640, clock: 0.995, max_delay_ms: 0.0, seed: 7 };
    let Paced { samples, rate, latency, listed, .. } = paced_call(path, pace, 300.0, true);
    let target = listed["target_ms"].as_f64().unwrap_or(0.0);
    // Loud runs, in 10 ms windows: each burst of 2 s.
    let window = (rate / 100) as usize;
    let loud: Vec<bool> = samples.chunks_exact(window).map(|chunk| rms(chunk) > 1000.0).collect();
    let mut bursts = Vec::new();
    let mut run = 0;
    for is_loud in loud.iter().chain([false].iter()) {
        if *is_loud {
            run += 1;
        } else if run > 0 {
            bursts.push(run as f64 / 100.0);
            run = 0;
        }
    }
    println!(
        "{path}: latency {} ms at the end, target {target} ms; {} bursts, shortest {:.2} s, longest {:.2} s",
        latency.as_millis(),
        bursts.len(),
        bursts.iter().cloned().fold(f64::MAX, f64::min),
        bursts.iter().cloned().fold(0.0, f64::max)
    );
    assert_eq!(bursts.len(), 100, "every burst heard, none split: {bursts:?}");
    assert!(bursts.iter().all(|length| (length - 2.0).abs() <= 0.03), "a burst was cut: {bursts:?}");
    assert!(latency.as_secs_f64() * 1000.0 <= target + 100.0, "latency {latency:?} over target {target} ms + 100");
}

/// A clock 0.5% slow: every gap concealed, no digital silence, no click.
pub fn clock_slow() {
    let path = "/clock-slow";
    let pace = Pace { rate: 16000, message_bytes: 640, clock: 1.005, max_delay_ms: 0.0, seed: 3 };
    let mut events = esl();
    events.subscribe("CHANNEL_HANGUP_COMPLETE");
    let Paced { samples, rate, .. } = paced_call(path, pace, 60.0, false);
    let (start, end) = loud_span(&samples, rate, 1000.0).expect("tone heard");
    let frame = (rate / 50) as usize;
    let (from, to) = ((start * rate as f64) as usize, (end * rate as f64) as usize);
    let silent_frames = samples[from..to].chunks_exact(frame).filter(|chunk| chunk.iter().all(|s| *s == 0)).count();
    let step = largest_level_step_db(&samples, rate, start + 0.01, end - 0.01);
    let hangup = events
        .wait_event(Duration::from_secs(10), |event| {
            event.get("Channel-Name").is_some_and(|name| name.starts_with("wsbridge/") && name.ends_with(path))
        })
        .expect("the wsbridge leg's CHANNEL_HANGUP_COMPLETE");
    let concealed = hangup.get("variable_wsbridge_concealed_frames").cloned().unwrap_or_default();
    println!("{path}: {concealed} concealed frames; {silent_frames} frames of digital silence; largest level step {step:.1} dB");
    assert_eq!(silent_frames, 0);
    assert!(step < 20.0, "a {step:.1} dB step between 5 ms blocks");
    assert!(concealed.parse::<u64>().unwrap() > 0, "a slow clock must run dry now and then");
}

/// A `clear` during a live stream silences it within one frame: the tone
/// stops from full level, with no concealment tail.
pub fn clear_silences_a_live_stream_within_a_frame() {
    let path = "/clear-live";
    let mut incoming = world().router.expect(path);
    let recording = recording_path("clear-live");
    let a_leg = bridged_call(path, "", &recording);
    let mut connection = incoming.next(Duration::from_secs(5));
    let pace = Pace { rate: 16000, message_bytes: 640, clock: 1.0, max_delay_ms: 20.0, seed: 9 };
    runtime().block_on(async {
        connection.first_text().await;
        send_paced(&mut connection, pace, 3.0, false).await;
        connection.ws.send(Message::text(r#"{"action":"clear"}"#)).await.unwrap();
        wait_text(&mut connection, "cleared", Duration::from_secs(2)).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        connection.close().await;
    });
    wait_gone(&a_leg, Duration::from_secs(5));
    let (samples, rate) = read_wav(&recording);
    let block = (rate / 200) as usize;
    let levels: Vec<f64> = samples.chunks_exact(block).map(rms).collect();
    let last_full = levels.iter().rposition(|level| *level > AMPLITUDE / 2.0 / 2f64.sqrt()).expect("tone heard");
    let quiet_from =
        last_full + levels[last_full..].iter().position(|level| *level < 100.0).expect("quiet after the clear");
    let fade_ms = (quiet_from - last_full) * 5;
    let (start, end) = loud_span(&samples, rate, 1000.0).expect("tone heard");
    println!("{path}: heard {:.3} s of 3 s; from full level to quiet in {fade_ms} ms", end - start);
    assert!(fade_ms <= 25, "the tone took {fade_ms} ms to stop after the clear");
    assert!(end - start > 2.7, "heard only {:.3} s of 3 s before the clear", end - start);
}
