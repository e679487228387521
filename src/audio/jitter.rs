//! When to play the server's audio: a small pre-fill before playing, a
//! target depth that follows the measured arrival jitter, and a steer back
//! to it when the server's clock runs fast. Pure timing decisions; the bytes
//! stay in [`crate::audio::playout::PlayoutBuffer`].
//!
//! How the target adapts:
//! - Each message's relative delay is its arrival time less the media time
//!   of its first sample. Its excess over the smallest relative delay of the
//!   last [`BASE_WINDOW`] is its jitter.
//! - The target is at least `target_min`. A message later than the target
//!   allows raises it at once to its jitter plus one frame (a message can
//!   complete a frame only when the next one arrives), up to `target_max`.
//! - After an underrun it grows at once by half, or by a frame at least,
//!   up to `target_max`: a late stream must not stutter twice. Concealment
//!   bridges the gap while the queue refills, for at most
//!   [`MAX_REFILL_TICKS`]; then playout resumes with what has come.
//! - While arrivals are steady it shrinks by [`DECAY_MS_PER_S`], down to the
//!   95th percentile of recent jitter plus one frame, so a spike does not
//!   leave its delay for the rest of the call.
//!
//! Bursts (a server sending ahead of real time) are told from live streams
//! by their arrival rate: while more than [`LIVE_RATE`] of real time arrives
//! over [`RATE_WINDOW`], or the buffer holds more than [`BURST_MS`], the
//! stream is a burst and nothing is dropped from it.

use crate::settings::options::JitterLimits;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Recent relative delays kept for the base (their minimum).
pub const BASE_WINDOW: Duration = Duration::from_secs(4);
/// Recent jitter samples kept for the percentile (about 10 s of 20 ms messages).
const JITTER_SAMPLES: usize = 500;
/// Sorting 500 samples at every message would cost more than the rest of the frame path.
const PERCENTILE_EVERY: usize = 25;
pub const DECAY_MS_PER_S: f64 = 4.0;
/// A live stream arrives at about real time; a burst faster than this.
pub const LIVE_RATE: f64 = 1.05;
pub const RATE_WINDOW: Duration = Duration::from_secs(2);
/// A live sender may send this much ahead of real time (one large message).
pub const LIVE_SLACK_MS: f64 = 200.0;
/// Buffered beyond this is a burst, never drift.
pub const BURST_MS: f64 = 500.0;
/// Above the target by this much, near-silent frames are dropped.
pub const DRIFT_MARGIN_MS: f64 = 40.0;
/// After an underrun, concealment bridges at most this many ticks while the
/// queue refills; then playout resumes with what there is. A slow sender
/// never refills to the target, and a longer concealment fades too far.
pub const MAX_REFILL_TICKS: u32 = 2;
/// How long the queue must stay over the target plus the margin, with no
/// silence to drop, before pitch periods are taken out of sound.
pub const ACCELERATE_AFTER: Duration = Duration::from_secs(3);
/// At most one period (2.5 to 15 ms) is taken out per this many ms.
pub const ACCELERATE_EVERY: Duration = Duration::from_millis(100);
/// After this long without audio arriving, a new stream starts afresh.
const IDLE_GAP: Duration = Duration::from_millis(500);

/// What to do at a playout tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tick {
    /// Play the next frame.
    Play,
    /// Drop the next frame (near-silence, the stream running fast), then play the one after.
    DropThenPlay,
    /// Play the next frame with a pitch period taken out of it: the queue
    /// has stayed over the target with no silence to drop (a stall's backlog).
    Accelerate,
    /// Still filling: play nothing yet.
    Wait,
    /// Ran dry while playing: conceal this tick and fill to the target again.
    Underrun,
    /// A burst played to its end: nothing more was sent, so nothing is concealed.
    Drained,
}

pub struct JitterControl {
    limits: JitterLimits,
    frame_ms: f64,
    target_ms: f64,
    playing: bool,
    /// Ticks since an underrun while refilling; `None` when not refilling after one.
    refill_ticks: Option<u32>,
    /// Media time received so far in this stream, in ms.
    received_ms: f64,
    stream_start: Option<Instant>,
    last_arrival: Option<Instant>,
    /// What the last message left queued: far ahead of real time means a burst.
    queued_at_last_arrival_ms: f64,
    /// (arrival, relative delay in ms) for the base.
    relative_delays: VecDeque<(Instant, f64)>,
    /// (arrival, media ms received by then) for the rate.
    /// (arrival, media ms received before it, and after it) for the rate.
    arrivals: VecDeque<(Instant, f64, f64)>,
    jitter_ms: VecDeque<f64>,
    /// The 95th percentile of `jitter_ms`, refreshed every [`PERCENTILE_EVERY`] samples.
    recent_p95_ms: f64,
    since_percentile: usize,
    last_decay: Option<Instant>,
    /// For the report: every jitter sample's bucket, 1 ms wide up to 1 s.
    histogram: Vec<u32>,
    pub concealed_frames: u64,
    pub drift_dropped_frames: u64,
    /// Audio taken out by [`Tick::Accelerate`], in ms.
    pub compressed_ms: f64,
    /// Since when the queue has been over the target plus the margin.
    over_since: Option<Instant>,
    last_accelerate: Option<Instant>,
}

impl JitterControl {
    pub fn new(limits: JitterLimits, frame_ms: f64) -> Self {
        JitterControl {
            limits,
            frame_ms,
            target_ms: limits.target_min_ms,
            playing: false,
            refill_ticks: None,
            received_ms: 0.0,
            stream_start: None,
            last_arrival: None,
            queued_at_last_arrival_ms: 0.0,
            relative_delays: VecDeque::new(),
            arrivals: VecDeque::new(),
            jitter_ms: VecDeque::new(),
            recent_p95_ms: 0.0,
            since_percentile: 0,
            last_decay: None,
            histogram: vec![0; 1001],
            concealed_frames: 0,
            drift_dropped_frames: 0,
            compressed_ms: 0.0,
            over_since: None,
            last_accelerate: None,
        }
    }

    /// Whether this control does anything (a target of 0 keeps the old behaviour).
    pub fn is_adaptive(&self) -> bool {
        self.limits.target_min_ms > 0.0
    }

    pub fn target_ms(&self) -> f64 {
        self.target_ms
    }

    /// The 95th percentile of recent jitter.
    pub fn recent_jitter_ms(&self) -> f64 {
        self.recent_p95_ms
    }

    /// The 95th percentile of every jitter sample of the call.
    pub fn call_jitter_ms(&self) -> f64 {
        let total: u64 = self.histogram.iter().map(|c| *c as u64).sum();
        if total == 0 {
            return 0.0;
        }
        let wanted = (total as f64 * 0.95).ceil() as u64;
        let mut seen = 0;
        for (ms, count) in self.histogram.iter().enumerate() {
            seen += *count as u64;
            if seen >= wanted {
                return ms as f64;
            }
        }
        1000.0
    }

    /// A message of `media_ms` of audio arrived at `now`, with `buffered_ms` queued before it.
    pub fn on_arrival(&mut self, now: Instant, media_ms: f64, buffered_ms: f64) {
        let idle =
            self.last_arrival.is_none_or(|last| now.duration_since(last) >= IDLE_GAP && buffered_ms < self.frame_ms);
        if idle {
            // A new stream: its delays are not comparable with the last one's.
            self.stream_start = Some(now);
            self.received_ms = 0.0;
            self.relative_delays.clear();
            self.arrivals.clear();
        }
        self.last_arrival = Some(now);
        let start = self.stream_start.unwrap_or(now);
        let relative = now.duration_since(start).as_secs_f64() * 1000.0 - self.received_ms;
        while self.relative_delays.front().is_some_and(|(at, _)| now.duration_since(*at) > BASE_WINDOW) {
            self.relative_delays.pop_front();
        }
        // Keep the window's minimum at the front cheaply: drop later entries that are larger.
        while self.relative_delays.back().is_some_and(|(_, delay)| *delay >= relative) {
            self.relative_delays.pop_back();
        }
        self.relative_delays.push_back((now, relative));
        let base = self.relative_delays.front().map_or(relative, |(_, delay)| *delay);
        let jitter = (relative - base).max(0.0);
        self.received_ms += media_ms;
        self.queued_at_last_arrival_ms = buffered_ms + media_ms;
        self.arrivals.push_back((now, self.received_ms - media_ms, self.received_ms));
        while self.arrivals.front().is_some_and(|(at, _, _)| now.duration_since(*at) > RATE_WINDOW) {
            self.arrivals.pop_front();
        }
        if !self.is_live(buffered_ms + media_ms) {
            return;
        }
        if self.jitter_ms.len() == JITTER_SAMPLES {
            self.jitter_ms.pop_front();
        }
        self.jitter_ms.push_back(jitter);
        self.histogram[(jitter.round() as usize).min(1000)] += 1;
        self.since_percentile += 1;
        if self.since_percentile >= PERCENTILE_EVERY || self.jitter_ms.len() < PERCENTILE_EVERY {
            self.since_percentile = 0;
            self.recent_p95_ms = percentile(self.jitter_ms.iter().copied(), 0.95);
        }
        // Grow at once for a late message; shrink only slowly (see decay).
        let wanted = jitter + self.frame_ms;
        if self.is_adaptive() && wanted > self.target_ms {
            self.target_ms = wanted.min(self.limits.target_max_ms);
        }
    }

    /// A live stream arrives at about real time; a burst well ahead of it.
    fn is_live(&self, buffered_ms: f64) -> bool {
        if buffered_ms > BURST_MS.max(self.limits.target_max_ms + DRIFT_MARGIN_MS * 2.0) {
            return false;
        }
        match (self.arrivals.front(), self.arrivals.back()) {
            (Some((first_at, before_first, _)), Some((last_at, _, after_last))) => {
                let elapsed = last_at.duration_since(*first_at).as_secs_f64() * 1000.0;
                // All the media of the window, against the time it took to come,
                // with room for one large message of a live sender.
                after_last - before_first <= elapsed * LIVE_RATE + LIVE_SLACK_MS
            }
            _ => true,
        }
    }

    /// What to do at this tick, with `buffered_ms` queued; `next_is_quiet`
    /// tells whether the next frame is near-silence.
    pub fn tick(&mut self, now: Instant, buffered_ms: f64, next_is_quiet: impl FnOnce() -> bool) -> Tick {
        let whole_frame = buffered_ms >= self.frame_ms;
        if !self.is_adaptive() {
            return if whole_frame { Tick::Play } else { Tick::Wait };
        }
        if !self.playing {
            let quiet_since_last =
                self.last_arrival.is_some_and(|last| now.duration_since(last).as_secs_f64() * 1000.0 >= self.target_ms);
            let refilled_enough = self.refill_ticks.is_some_and(|ticks| ticks >= MAX_REFILL_TICKS);
            // Start at the target, with whatever came when nothing more is coming,
            // or, after an underrun, once concealment has bridged long enough.
            if whole_frame && (buffered_ms >= self.target_ms || quiet_since_last || refilled_enough) {
                self.playing = true;
                self.refill_ticks = None;
                self.last_decay = Some(now);
                return Tick::Play;
            }
            if let Some(ticks) = self.refill_ticks.as_mut() {
                *ticks += 1;
            }
            return Tick::Wait;
        }
        if !whole_frame && self.queued_at_last_arrival_ms > BURST_MS {
            // The end of audio sent ahead of time (a prompt, a TTS reply): the
            // server said all it meant to, so no gap is concealed.
            self.playing = false;
            return Tick::Drained;
        }
        if !whole_frame {
            self.playing = false;
            self.refill_ticks = Some(1);
            let grown = (self.target_ms * 1.5).max(self.target_ms + self.frame_ms);
            self.target_ms = grown.min(self.limits.target_max_ms).max(self.limits.target_min_ms);
            return Tick::Underrun;
        }
        self.decay(now);
        let excess = buffered_ms - self.target_ms;
        if excess <= DRIFT_MARGIN_MS || buffered_ms < 2.0 * self.frame_ms || !self.is_live(buffered_ms) {
            self.over_since = None;
            return Tick::Play;
        }
        if next_is_quiet() {
            self.drift_dropped_frames += 1;
            return Tick::DropThenPlay;
        }
        let over_since = *self.over_since.get_or_insert(now);
        let rested = self.last_accelerate.is_none_or(|last| now.duration_since(last) >= ACCELERATE_EVERY);
        if now.duration_since(over_since) >= ACCELERATE_AFTER && rested {
            self.last_accelerate = Some(now);
            return Tick::Accelerate;
        }
        Tick::Play
    }

    fn decay(&mut self, now: Instant) {
        let Some(last) = self.last_decay else {
            self.last_decay = Some(now);
            return;
        };
        let seconds = now.duration_since(last).as_secs_f64();
        if seconds < 1.0 {
            return;
        }
        self.last_decay = Some(now);
        let floor = (self.recent_jitter_ms() + self.frame_ms).max(self.limits.target_min_ms);
        if self.target_ms > floor {
            self.target_ms = (self.target_ms - DECAY_MS_PER_S * seconds).max(floor);
        }
    }

    /// After a `clear`: fill to the target before playing again.
    pub fn restart(&mut self) {
        self.playing = false;
        self.refill_ticks = None;
        self.over_since = None;
    }
}

fn percentile(values: impl Iterator<Item = f64>, quantile: f64) -> f64 {
    let mut sorted: Vec<f64> = values.collect();
    if sorted.is_empty() {
        return 0.0;
    }
    sorted.sort_by(f64::total_cmp);
    let index = ((sorted.len() as f64 * quantile).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index]
}
