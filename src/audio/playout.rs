//! The downlink queue: server audio waiting to be played, re-framed on the
//! way out so that message boundaries do not matter. [`JitterControl`]
//! decides when each frame plays; [`Concealer`] fills the gaps of a live
//! stream that runs dry.

use std::collections::VecDeque;
use std::io::Read;
use std::time::Instant;

use crate::audio::concealment::Concealer;
use crate::audio::jitter::{JitterControl, Tick};
use crate::audio::replies::{Heard, ReplyProgress, ReplyTracker};
use crate::settings::options::JitterLimits;

/// What a playout tick produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Downlink {
    /// A frame of the server's audio.
    Audio,
    /// A frame concealing a gap in a live stream.
    Concealed,
    /// Nothing: comfort noise is due.
    Nothing,
}

impl Downlink {
    /// Whether the caller hears sound from the server (real or concealed) rather than comfort noise.
    pub fn is_sound(self) -> bool {
        self != Downlink::Nothing
    }
}

/// Near-silence, about -40 dBov: such frames may go when a live stream runs fast.
const QUIET_RMS: f64 = 330.0;

/// Whether the first frame queued in `bytes` is near-silence.
fn is_quiet(bytes: &VecDeque<u8>, frame_bytes: usize) -> bool {
    let mut energy = 0f64;
    let mut pairs = bytes.range(..frame_bytes.min(bytes.len()));
    while let (Some(low), Some(high)) = (pairs.next(), pairs.next()) {
        let sample = i16::from_le_bytes([*low, *high]) as f64;
        energy += sample * sample;
    }
    (energy / (frame_bytes / 2) as f64).sqrt() < QUIET_RMS
}

pub struct PlayoutBuffer {
    bytes: VecDeque<u8>,
    frame_bytes: usize,
    /// Bytes per millisecond of audio.
    bytes_per_ms: f64,
    jitter: JitterControl,
    concealer: Concealer,
    /// Concealing a gap: more concealed frames follow until audio returns or the fade ends.
    in_gap: bool,
    capacity_bytes: usize,
    /// Set once audio has played, so that running dry counts as an underrun.
    playing: bool,
    underruns: u64,
    /// Byte positions in the stream of everything ever queued.
    queued_total: u64,
    played_total: u64,
    /// Marks by the stream position they follow, in order.
    marks: VecDeque<(u64, String)>,
    /// The pending marks' names together (a Vonage notify payload is up to 4 KiB).
    mark_bytes: usize,
    /// What the call does once the audio before each has played.
    actions: VecDeque<(u64, AfterPlayout)>,
    replies: ReplyTracker,
}

/// What a call does once the audio queued before it has played.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterPlayout {
    Hangup,
    /// Transfers the caller to this extension, in the caller's context.
    Transfer(String),
}

/// Actions waiting at once; more are refused.
const MAX_PENDING_ACTIONS: usize = 8;

/// Most marks waiting at once; a server that floods them gets refusals.
pub const MAX_PENDING_MARKS: usize = 1024;
/// Most bytes of names the pending marks may hold together, whatever their count.
pub const MAX_PENDING_MARK_BYTES: usize = 256 * 1024;

#[derive(Debug, PartialEq, Eq)]
pub enum MarkOutcome {
    /// Everything before it has played already.
    Reached,
    Pending,
    Refused,
}

impl PlayoutBuffer {
    /// Plays each 20 ms frame as soon as it is complete (no jitter buffer).
    pub fn new(frame_bytes: usize, capacity_bytes: usize) -> Self {
        let rate = (frame_bytes / 2 * 50) as u32;
        Self::with_jitter(frame_bytes, capacity_bytes, rate, JitterLimits { target_min_ms: 0.0, target_max_ms: 0.0 })
    }

    /// 20 ms frames of `frame_bytes` at `rate`, played through a jitter buffer within `limits`.
    pub fn with_jitter(frame_bytes: usize, capacity_bytes: usize, rate: u32, limits: JitterLimits) -> Self {
        assert!(frame_bytes > 0 && capacity_bytes >= frame_bytes);
        let bytes_per_ms = rate as f64 * 2.0 / 1000.0;
        PlayoutBuffer {
            bytes: VecDeque::new(),
            frame_bytes,
            bytes_per_ms,
            jitter: JitterControl::new(limits, frame_bytes as f64 / bytes_per_ms),
            concealer: Concealer::new(rate),
            in_gap: false,
            capacity_bytes,
            playing: false,
            underruns: 0,
            queued_total: 0,
            played_total: 0,
            marks: VecDeque::new(),
            mark_bytes: 0,
            actions: VecDeque::new(),
            replies: ReplyTracker::default(),
        }
    }

    pub fn buffered_bytes(&self) -> usize {
        self.bytes.len()
    }

    pub fn free_bytes(&self) -> usize {
        self.capacity_bytes - self.bytes.len()
    }

    /// Queues as much of `data` as fits and returns how much that was.
    pub fn push(&mut self, data: &[u8]) -> usize {
        self.push_at(data, Instant::now())
    }

    /// As [`push`](Self::push), for a message that arrived at `now`.
    pub fn push_at(&mut self, data: &[u8], now: Instant) -> usize {
        let taken = data.len().min(self.free_bytes());
        let buffered_ms = self.bytes.len() as f64 / self.bytes_per_ms;
        self.jitter.on_arrival(now, taken as f64 / self.bytes_per_ms, buffered_ms);
        self.bytes.extend(&data[..taken]);
        self.queued_total += taken as u64;
        taken
    }

    /// The frame to play at the tick at `now`: audio, a concealed gap, or nothing.
    pub fn next_frame(&mut self, now: Instant, out: &mut [i16]) -> Downlink {
        let buffered_ms = self.bytes.len() as f64 / self.bytes_per_ms;
        let (bytes, frame_bytes) = (&self.bytes, self.frame_bytes);
        let tick = self.jitter.tick(now, buffered_ms, || is_quiet(bytes, frame_bytes));
        if !self.jitter.is_adaptive() {
            return if self.pop_frame(out) { Downlink::Audio } else { Downlink::Nothing };
        }
        match tick {
            Tick::Play | Tick::DropThenPlay | Tick::Accelerate => {
                if tick == Tick::DropThenPlay {
                    self.pop_frame(out);
                }
                let popped = match tick {
                    Tick::Accelerate => self.pop_compressed_frame(out),
                    _ => self.pop_frame(out),
                };
                if !popped {
                    return self.conceal(out);
                }
                self.in_gap = false;
                self.concealer.take_real(out);
                Downlink::Audio
            }
            Tick::Underrun => {
                self.underruns += 1;
                self.in_gap = true;
                self.conceal(out)
            }
            Tick::Drained => {
                self.underruns += 1;
                Downlink::Nothing
            }
            Tick::Wait if self.in_gap => self.conceal(out),
            Tick::Wait => Downlink::Nothing,
        }
    }

    fn conceal(&mut self, out: &mut [i16]) -> Downlink {
        if self.in_gap && self.concealer.conceal(out) {
            self.jitter.concealed_frames += 1;
            return Downlink::Concealed;
        }
        self.in_gap = false;
        Downlink::Nothing
    }

    /// The jitter buffer's figures: target, recent jitter, and the call's.
    pub fn jitter(&self) -> &JitterControl {
        &self.jitter
    }

    /// Fills `out` (one frame) with the next samples, or returns false when
    /// less than a whole frame is queued.
    pub fn pop_frame(&mut self, out: &mut [i16]) -> bool {
        debug_assert_eq!(out.len() * 2, self.frame_bytes);
        if self.bytes.len() < self.frame_bytes {
            if self.playing {
                self.playing = false;
                self.underruns += 1;
            }
            self.release_idle_memory();
            return false;
        }
        let mut frame = [0u8; MAX_FRAME_BYTES];
        let frame = &mut frame[..self.frame_bytes];
        self.bytes.read_exact(frame).expect("length checked above");
        self.played_total += self.frame_bytes as u64;
        self.replies.played_to(self.played_total, Instant::now);
        for (sample, bytes) in out.iter_mut().zip(frame.chunks_exact(2)) {
            *sample = i16::from_le_bytes([bytes[0], bytes[1]]);
        }
        self.playing = true;
        true
    }

    /// Fills `out` with the next frame less one pitch period, cross-faded
    /// over that period so that neither edge clicks (time compression, as
    /// NetEq's accelerate does). Without a clear period (noise, a transient)
    /// the frame plays whole. False when less than a whole frame is queued.
    fn pop_compressed_frame(&mut self, out: &mut [i16]) -> bool {
        let frame = out.len();
        let rate = (self.bytes_per_ms * 500.0) as usize;
        let (min_period, max_period) = (rate * 5 / 2000, rate * 15 / 1000);
        let wanted = frame + max_period;
        if self.bytes.len() < wanted * 2 || min_period == 0 {
            return self.pop_frame(out);
        }
        let mut ahead = vec![0i16; wanted];
        for (index, sample) in ahead.iter_mut().enumerate() {
            *sample = i16::from_le_bytes([self.bytes[index * 2], self.bytes[index * 2 + 1]]);
        }
        let Some(period) = best_period(&ahead, frame, min_period, max_period) else {
            return self.pop_frame(out);
        };
        for (index, sample) in out.iter_mut().enumerate() {
            let later = ahead[index + period] as f32;
            *sample = if index < period {
                let weight = (index + 1) as f32 / (period + 1) as f32;
                (ahead[index] as f32 * (1.0 - weight) + later * weight).round() as i16
            } else {
                later as i16
            };
        }
        let consumed = (frame + period) * 2;
        self.bytes.drain(..consumed);
        self.played_total += consumed as u64;
        self.replies.played_to(self.played_total, Instant::now);
        self.jitter.compressed_ms += period as f64 * 2.0 / self.bytes_per_ms;
        self.playing = true;
        true
    }

    /// Drops all queued audio, a partial frame included; returns the names
    /// of the marks that were waiting for it.
    pub fn clear(&mut self) -> Vec<String> {
        self.interrupt().0
    }

    /// As [`Self::clear`], for a barge-in: also returns the actions that were
    /// waiting (they are due now) and how much of each reply was heard.
    pub fn interrupt(&mut self) -> (Vec<String>, Vec<AfterPlayout>, Vec<Heard>) {
        let heard = self.replies.interrupt(self.played_total, self.queued_total, self.bytes_per_ms);
        let actions = self.actions.drain(..).map(|(_, action)| action).collect();
        (self.clear_audio(), actions, heard)
    }

    fn clear_audio(&mut self) -> Vec<String> {
        self.bytes.clear();
        self.played_total = self.queued_total;
        self.playing = false;
        // Nothing of the cleared audio may be heard again, not even concealed.
        self.in_gap = false;
        self.concealer.reset();
        self.jitter.restart();
        self.release_idle_memory();
        self.mark_bytes = 0;
        self.marks.drain(..).map(|(_, name)| name).collect()
    }

    /// Places a mark after the audio queued so far.
    pub fn add_mark(&mut self, name: String) -> MarkOutcome {
        if self.is_reached(self.queued_total) {
            return MarkOutcome::Reached;
        }
        if self.marks.len() >= MAX_PENDING_MARKS || self.mark_bytes + name.len() > MAX_PENDING_MARK_BYTES {
            return MarkOutcome::Refused;
        }
        self.mark_bytes += name.len();
        self.marks.push_back((self.queued_total, name));
        MarkOutcome::Pending
    }

    /// Moves the names of marks whose audio has all played into `reached`.
    pub fn take_reached_marks(&mut self, reached: &mut Vec<String>) {
        while let Some((position, _)) = self.marks.front() {
            if !self.is_reached(*position) {
                break;
            }
            if let Some((_, name)) = self.marks.pop_front() {
                self.mark_bytes -= name.len();
                reached.push(name);
            }
        }
    }

    pub fn has_marks(&self) -> bool {
        !self.marks.is_empty() || !self.actions.is_empty()
    }

    /// Places `action` after the audio queued so far; false when too many wait.
    pub fn add_action(&mut self, action: AfterPlayout) -> bool {
        if self.actions.len() >= MAX_PENDING_ACTIONS {
            return false;
        }
        self.actions.push_back((self.queued_total, action));
        true
    }

    /// Moves the actions whose audio has all played into `due`.
    pub fn take_due_actions(&mut self, due: &mut Vec<AfterPlayout>) {
        while self.actions.front().is_some_and(|(position, _)| self.is_reached(*position)) {
            due.extend(self.actions.pop_front().map(|(_, action)| action));
        }
    }

    /// Audio queued from now on belongs to `reply`, answering a turn that began at `turn_began`.
    pub fn begin_reply(&mut self, reply: u64, turn_began: Option<Instant>) {
        self.replies.begin(reply, self.queued_total, turn_began);
    }

    pub fn reply_progress(&self, reply: u64) -> ReplyProgress {
        self.replies.progress(reply)
    }

    /// Turns answered, and their latencies in ms.
    pub fn turns(&self) -> (u64, &[u32]) {
        self.replies.turns()
    }

    /// Reached when less than a whole frame of what precedes `position` is
    /// still queued: a trailing partial frame plays only with what follows.
    fn is_reached(&self, position: u64) -> bool {
        position.saturating_sub(self.played_total) < self.frame_bytes as u64
    }

    pub fn underruns(&self) -> u64 {
        self.underruns
    }

    /// After a burst, give the memory back rather than keep the peak per call.
    fn release_idle_memory(&mut self) {
        if self.bytes.capacity() > IDLE_CAPACITY_BYTES && self.bytes.len() < IDLE_CAPACITY_BYTES / 2 {
            self.bytes.shrink_to(IDLE_CAPACITY_BYTES / 2);
        }
    }
}

/// The pitch period (in samples, within `min..=max`) over which `samples`
/// repeats best, judged over its first `span` samples; `None` when nothing
/// repeats well enough to cross-fade unheard.
fn best_period(samples: &[i16], span: usize, min: usize, max: usize) -> Option<usize> {
    let mut best: Option<(usize, f64)> = None;
    let span = span.min(samples.len());
    let head = &samples[..span];
    // Integer sums: exact, and they vectorise. The search runs when a call's
    // queue stays high, which happens to many calls at once on an overloaded node.
    let energy = |part: &[i16]| part.iter().map(|&s| i64::from(s) * i64::from(s)).sum::<i64>();
    let energy_a = energy(head);
    for period in min..=max.min(samples.len().saturating_sub(span)) {
        let tail = &samples[period..period + span];
        let cross: i64 = head.iter().zip(tail).map(|(&a, &b)| i64::from(i32::from(a) * i32::from(b))).sum();
        let energy_b = energy(tail);
        if energy_a <= 0 || energy_b <= 0 {
            continue;
        }
        let score = cross as f64 / (energy_a as f64 * energy_b as f64).sqrt();
        if best.is_none_or(|(_, top)| score > top) {
            best = Some((period, score));
        }
    }
    best.filter(|(_, score)| *score >= MIN_PERIOD_CORRELATION).map(|(period, _)| period)
}

/// How alike two periods must be for one to be taken out unheard.
const MIN_PERIOD_CORRELATION: f64 = 0.8;

/// 20 ms at 48 kHz.
pub const MAX_FRAME_BYTES: usize = 1920;
const IDLE_CAPACITY_BYTES: usize = 64 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_come_out_whole_in_order_and_little_endian() {
        let mut buffer = PlayoutBuffer::new(4, 100);
        assert_eq!(buffer.push(&[1, 0, 2, 0, 3]), 5);
        let mut out = [0i16; 2];
        assert!(buffer.pop_frame(&mut out));
        assert_eq!(out, [1, 2]);
        assert!(!buffer.pop_frame(&mut out), "one byte is not a frame");
        assert_eq!(buffer.push(&[0xff, 0x01, 0x80]), 3);
        assert!(buffer.pop_frame(&mut out));
        assert_eq!(out, [3 - 256, i16::from_le_bytes([0x01, 0x80])]);
    }

    #[test]
    fn push_stops_at_capacity() {
        let mut buffer = PlayoutBuffer::new(4, 10);
        assert_eq!(buffer.push(&[0; 8]), 8);
        assert_eq!(buffer.push(&[0; 8]), 2);
        assert_eq!(buffer.free_bytes(), 0);
        let mut out = [0i16; 2];
        assert!(buffer.pop_frame(&mut out));
        assert_eq!(buffer.free_bytes(), 4);
    }

    #[test]
    fn marks_are_reached_when_their_audio_has_played() {
        let mut buffer = PlayoutBuffer::new(4, 100);
        assert_eq!(buffer.add_mark("empty".into()), MarkOutcome::Reached);
        buffer.push(&[0; 8]);
        assert_eq!(buffer.add_mark("a".into()), MarkOutcome::Pending);
        buffer.push(&[0; 6]);
        assert_eq!(buffer.add_mark("b".into()), MarkOutcome::Pending);
        let mut out = [0i16; 2];
        let mut reached = Vec::new();
        assert!(buffer.pop_frame(&mut out));
        buffer.take_reached_marks(&mut reached);
        assert!(reached.is_empty(), "4 of a's 8 bytes still queued");
        assert!(buffer.pop_frame(&mut out));
        buffer.take_reached_marks(&mut reached);
        assert_eq!(reached, ["a"]);
        assert!(buffer.pop_frame(&mut out));
        buffer.take_reached_marks(&mut reached);
        assert_eq!(reached, ["a", "b"], "only a 2-byte partial frame precedes b");
    }

    #[test]
    fn clear_empties_everything_and_returns_pending_marks() {
        let mut buffer = PlayoutBuffer::new(4, 100);
        buffer.push(&[1; 10]);
        buffer.add_mark("x".into());
        assert_eq!(buffer.clear(), ["x"]);
        assert_eq!(buffer.buffered_bytes(), 0);
        let mut out = [0i16; 2];
        assert!(!buffer.pop_frame(&mut out));
        assert_eq!(buffer.add_mark("y".into()), MarkOutcome::Reached);
        buffer.push(&[2, 0, 3, 0]);
        assert!(buffer.pop_frame(&mut out));
        assert_eq!(out, [2, 3], "no stale bytes from before the clear");
    }

    #[test]
    fn running_dry_after_playing_is_one_underrun() {
        let mut buffer = PlayoutBuffer::new(4, 100);
        let mut out = [0i16; 2];
        assert!(!buffer.pop_frame(&mut out));
        assert_eq!(buffer.underruns(), 0, "silence before any audio is not an underrun");
        buffer.push(&[0; 8]);
        assert!(buffer.pop_frame(&mut out) && buffer.pop_frame(&mut out));
        assert!(!buffer.pop_frame(&mut out));
        assert!(!buffer.pop_frame(&mut out));
        assert_eq!(buffer.underruns(), 1);
    }

    /// A live stream through the jitter buffer, simulated on seeded traces.
    mod simulation {
        use super::super::*;
        use rand::rngs::SmallRng;
        use rand::{RngExt, SeedableRng};
        use std::time::Duration;

        struct Trace {
            rate: u32,
            message_bytes: usize,
            /// The sender's period relative to ours: below 1 its clock runs fast.
            clock: f64,
            max_delay_ms: f64,
            seconds: f64,
            /// The sender's sample `n`.
            signal: fn(usize, u32) -> i16,
            /// (from, ms): nothing arrives from `from` for `ms`, then all that was held (a stall).
            stall: Option<(f64, f64)>,
        }

        #[derive(Default)]
        struct Outcome {
            ticks: Vec<Downlink>,
            /// Everything the caller hears, zeros where nothing played.
            heard: Vec<i16>,
            /// Send-to-play latency of each played frame, in ms.
            latency_ms: Vec<f64>,
            /// Loud frames sent, and loud frames played.
            loud_sent: usize,
            loud_played: usize,
            target_ms: f64,
            concealed: u64,
            dropped: u64,
            compressed_ms: f64,
        }

        fn tone(n: usize, rate: u32) -> i16 {
            (7000.0 * (2.0 * std::f64::consts::PI * 1000.0 * n as f64 / rate as f64).sin()) as i16
        }

        /// 2 s of tone, then 1 s of near-silence, over and over.
        fn tone_bursts(n: usize, rate: u32) -> i16 {
            if (n / rate as usize) % 3 == 2 {
                ((n % 7) as i16) - 3
            } else {
                tone(n, rate)
            }
        }

        fn run(trace: &Trace, seed: u64) -> Outcome {
            let limits = JitterLimits { target_min_ms: 40.0, target_max_ms: 200.0 };
            let frame_bytes = (trace.rate / 50 * 2) as usize;
            let mut buffer = PlayoutBuffer::with_jitter(frame_bytes, 1 << 24, trace.rate, limits);
            let mut rng = SmallRng::seed_from_u64(seed);
            let base = Instant::now();
            let at = |ms: f64| base + Duration::from_secs_f64(ms / 1000.0);
            let samples_per_message = trace.message_bytes / 2;
            let messages = (trace.seconds * trace.rate as f64) as usize / samples_per_message;
            let mut arrivals = Vec::with_capacity(messages);
            let mut last_arrival = 0.0f64;
            for index in 0..messages {
                let sent = (index + 1) as f64 * samples_per_message as f64 * 1000.0 / trace.rate as f64 * trace.clock;
                let mut arrival = (sent + rng.random_range(0.0..=trace.max_delay_ms.max(0.0))).max(last_arrival);
                if let Some((from, ms)) = trace.stall {
                    if (from..from + ms).contains(&arrival) {
                        arrival = from + ms;
                    }
                }
                last_arrival = arrival;
                arrivals.push((arrival, sent));
            }
            let mut outcome = Outcome::default();
            let frame_samples = frame_bytes / 2;
            let mut next_message = 0;
            let mut sent_peaks: Vec<bool> = Vec::new();
            let mut played_samples = 0usize;
            let mut out = vec![0i16; frame_samples];
            let ticks = ((last_arrival + 1000.0) / 20.0) as usize;
            for tick in 0..ticks {
                let now_ms = tick as f64 * 20.0 + 0.5;
                while next_message < messages && arrivals[next_message].0 <= now_ms {
                    let first = next_message * samples_per_message;
                    let samples: Vec<i16> =
                        (first..first + samples_per_message).map(|n| (trace.signal)(n, trace.rate)).collect();
                    sent_peaks.extend(samples.iter().map(|s| (*s as i64).abs() > 1000));
                    let bytes: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
                    buffer.push_at(&bytes, at(arrivals[next_message].0));
                    next_message += 1;
                }
                let heard = buffer.next_frame(at(now_ms), &mut out);
                if heard == Downlink::Audio {
                    played_samples = (buffer.played_total / 2) as usize;
                    let first = played_samples - frame_samples;
                    let sent_ms = arrivals[(first / samples_per_message).min(messages - 1)].1;
                    outcome.latency_ms.push(now_ms - sent_ms);
                    if out.iter().map(|s| (*s as i64).abs()).max().unwrap_or(0) > 1000 {
                        outcome.loud_played += 1;
                    }
                }
                if heard == Downlink::Nothing {
                    outcome.heard.extend(std::iter::repeat_n(0, frame_samples));
                } else {
                    outcome.heard.extend_from_slice(&out);
                }
                outcome.ticks.push(heard);
            }
            assert!(played_samples > 0);
            outcome.loud_sent =
                sent_peaks.chunks_exact(frame_samples).filter(|frame| frame.iter().any(|peak| *peak)).count();
            outcome.target_ms = buffer.jitter().target_ms();
            outcome.concealed = buffer.jitter().concealed_frames;
            outcome.dropped = buffer.jitter().drift_dropped_frames;
            outcome.compressed_ms = buffer.jitter().compressed_ms;
            outcome
        }

        /// Ticks that were not the server's audio, after playout began plus `settle` ticks,
        /// and before the stream's end.
        fn gaps_after(outcome: &Outcome, settle: usize) -> usize {
            let start = outcome.ticks.iter().position(|t| *t == Downlink::Audio).expect("audio played");
            let end = outcome.ticks.iter().rposition(|t| *t == Downlink::Audio).unwrap();
            outcome.ticks[start + settle..end].iter().filter(|t| **t != Downlink::Audio).count()
        }

        #[test]
        fn real_time_streams_play_without_a_gap() {
            for rate in [16000, 8000] {
                for message_bytes in [334, 640] {
                    let message_bytes = if rate == 8000 && message_bytes == 640 { 320 } else { message_bytes };
                    let trace = Trace {
                        rate,
                        message_bytes,
                        clock: 1.0,
                        max_delay_ms: 0.0,
                        seconds: 30.0,
                        signal: tone,
                        stall: None,
                    };
                    let outcome = run(&trace, 1);
                    assert_eq!(gaps_after(&outcome, 0), 0, "{rate} Hz, {message_bytes}-byte messages");
                    assert_eq!(outcome.loud_played, outcome.loud_sent);
                }
            }
        }

        #[test]
        fn jittered_arrivals_play_without_a_gap_after_the_first_second() {
            for seed in 1..=3 {
                let trace = Trace {
                    rate: 16000,
                    message_bytes: 640,
                    clock: 1.0,
                    max_delay_ms: 60.0,
                    seconds: 40.0,
                    signal: tone,
                    stall: None,
                };
                let outcome = run(&trace, seed);
                assert_eq!(gaps_after(&outcome, 50), 0, "seed {seed}");
                assert!(outcome.target_ms <= 200.0);
                let mean = outcome.latency_ms.iter().sum::<f64>() / outcome.latency_ms.len() as f64;
                assert!(mean < 140.0, "mean latency {mean:.0} ms");
            }
        }

        #[test]
        fn a_fast_clock_is_steered_back_through_silences_only() {
            let trace = Trace {
                rate: 16000,
                message_bytes: 640,
                clock: 0.995,
                max_delay_ms: 10.0,
                seconds: 120.0,
                signal: tone_bursts,
                stall: None,
            };
            let outcome = run(&trace, 7);
            let final_latency = outcome.latency_ms[outcome.latency_ms.len() - 50..].iter().cloned().fold(0.0, f64::max);
            assert!(
                final_latency <= outcome.target_ms + 100.0,
                "latency {final_latency:.0} ms, target {:.0}",
                outcome.target_ms
            );
            assert!(outcome.dropped > 0, "frames of silence are dropped");
            assert_eq!(outcome.loud_played, outcome.loud_sent, "no frame of tone is dropped");
        }

        #[test]
        fn a_slow_clock_has_its_gaps_concealed() {
            let trace = Trace {
                rate: 16000,
                message_bytes: 640,
                clock: 1.005,
                max_delay_ms: 0.0,
                seconds: 60.0,
                signal: tone,
                stall: None,
            };
            let outcome = run(&trace, 3);
            let start = outcome.ticks.iter().position(|t| *t == Downlink::Audio).unwrap();
            let end = outcome.ticks.iter().rposition(|t| *t == Downlink::Audio).unwrap();
            let silent: Vec<usize> = (start..end).filter(|index| outcome.ticks[*index] == Downlink::Nothing).collect();
            assert!(silent.is_empty(), "every gap mid-stream is concealed; silent ticks {silent:?} of {end}");
            // No click: the level of consecutive 5 ms blocks never steps by 20 dB.
            let block = 80;
            let levels: Vec<f64> = outcome.heard[(start + 1) * 320..end * 320]
                .chunks_exact(block)
                .map(|b| {
                    20.0 * ((b.iter().map(|s| (*s as f64).powi(2)).sum::<f64>() / block as f64).sqrt() + 1.0).log10()
                })
                .collect();
            let step = levels.windows(2).map(|w| (w[1] - w[0]).abs()).fold(0.0, f64::max);
            assert!(step < 20.0, "a {step:.1} dB step between 5 ms blocks");
            println!("slow clock: {} concealed frames in 60 s, largest step {step:.1} dB", outcome.concealed);
            assert!(outcome.concealed > 0);
            assert_eq!(outcome.loud_played, outcome.loud_sent);
        }

        /// A stall holds everything back for 150 ms and then delivers it at
        /// once: the gap is concealed, and the backlog it leaves on a tone
        /// with no silence to drop is taken out a pitch period at a time,
        /// without a phase step.
        #[test]
        fn a_stall_backlog_on_continuous_sound_is_drained_by_time_compression() {
            let trace = Trace {
                rate: 16000,
                message_bytes: 640,
                clock: 1.0,
                max_delay_ms: 0.0,
                seconds: 60.0,
                signal: tone,
                stall: Some((10_000.0, 150.0)),
            };
            let outcome = run(&trace, 5);
            let latency_at = |second: f64| outcome.latency_ms[(second * 50.0) as usize];
            let (before, after_stall, end) = (latency_at(9.0), latency_at(11.0), latency_at(58.0));
            println!(
                "stall: latency {before:.0} ms before, {after_stall:.0} ms after, {end:.0} ms at the end (target {:.0} ms); {:.0} ms compressed",
                outcome.target_ms, outcome.compressed_ms
            );
            assert!(after_stall > before + 100.0, "the stall left a backlog");
            // The target rose with the stall and decays slowly; the backlog follows it down.
            let bound = outcome.target_ms + crate::audio::jitter::DRIFT_MARGIN_MS + 20.0;
            assert!(end <= bound, "the backlog is drained: {end:.0} ms at the end, over {bound:.0} ms");
            // Whole periods of the tone were taken out: its phase never steps.
            let step = outcome
                .heard
                .chunks_exact(80)
                .map(|block| {
                    let (mut i, mut q) = (0.0, 0.0);
                    for (n, sample) in block.iter().enumerate() {
                        let angle = 2.0 * std::f64::consts::PI * 1000.0 * n as f64 / 16000.0;
                        i += *sample as f64 * angle.cos();
                        q += *sample as f64 * angle.sin();
                    }
                    (q.atan2(i), block.iter().any(|s| s.abs() > 3000))
                })
                .collect::<Vec<_>>()
                .windows(2)
                .filter(|pair| pair[0].1 && pair[1].1)
                .map(|pair| {
                    ((pair[1].0 - pair[0].0 + 3.0 * std::f64::consts::PI).rem_euclid(2.0 * std::f64::consts::PI)
                        - std::f64::consts::PI)
                        .abs()
                })
                .fold(0.0, f64::max);
            assert!(step < 0.2, "a phase step of {step:.3} rad");
        }

        #[test]
        fn a_burst_is_played_whole() {
            let frame_bytes = 640;
            let mut buffer = PlayoutBuffer::with_jitter(
                frame_bytes,
                1 << 24,
                16000,
                JitterLimits { target_min_ms: 40.0, target_max_ms: 200.0 },
            );
            let base = Instant::now();
            let burst: Vec<u8> = (0..160_000).flat_map(|n| tone_bursts(n, 16000).to_le_bytes()).collect();
            buffer.push_at(&burst, base);
            let mut out = vec![0i16; 320];
            let mut played = Vec::new();
            for tick in 0..600 {
                if buffer.next_frame(base + Duration::from_millis(tick * 20), &mut out) == Downlink::Audio {
                    played.extend_from_slice(&out);
                }
            }
            assert_eq!(played.len(), 160_000, "10 s in, 10 s out: silences included");
            assert_eq!(buffer.jitter().drift_dropped_frames, 0);
            assert_eq!(buffer.jitter().concealed_frames, 0, "the end of a burst is not a gap to conceal");
            assert_eq!(played[..1000], (0..1000).map(|n| tone_bursts(n, 16000)).collect::<Vec<_>>()[..]);
        }
    }

    #[test]
    fn pending_marks_are_capped_by_their_bytes_too() {
        let mut buffer = PlayoutBuffer::new(4, 100);
        buffer.push(&[0; 8]);
        let big = "n".repeat(4000);
        let fit = MAX_PENDING_MARK_BYTES / big.len();
        for _ in 0..fit {
            assert_eq!(buffer.add_mark(big.clone()), MarkOutcome::Pending);
        }
        assert_eq!(buffer.add_mark(big.clone()), MarkOutcome::Refused, "{fit} marks of 4000 bytes fill the bytes");
        assert_eq!(buffer.add_mark("small".into()), MarkOutcome::Pending, "the count is far from its cap");
        assert_eq!(buffer.clear().len(), fit + 1);
        buffer.push(&[0; 8]);
        assert_eq!(buffer.add_mark(big), MarkOutcome::Pending, "a clear frees the bytes");
    }
}
