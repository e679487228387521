//! Packet-loss concealment for the server's audio, in the manner of G.711
//! Appendix I: when the playout runs dry mid-stream, the last pitch period
//! is repeated, unattenuated for the first 10 ms and then fading, and when
//! audio returns it is overlap-added onto the synthetic signal, so neither
//! edge clicks. A gap never switches hard to comfort noise.

/// Longest pitch period searched, and the history kept to search it.
const MAX_PITCH_MS: f32 = 15.0;
const MIN_PITCH_MS: f32 = 2.5;
const HISTORY_MS: u32 = 48;
/// Unattenuated at first, as G.711 Appendix I does.
const FULL_LEVEL_MS: u32 = 10;
/// Then the level falls this much per millisecond...
const FADE_DB_PER_MS: f32 = 0.3;
/// ...until it is this far down, where comfort noise takes over.
const FADE_FLOOR_DB: f32 = -36.0;
/// The overlap-add when real audio returns.
const OVERLAP_MS: u32 = 5;

pub struct Concealer {
    rate: u32,
    history: Vec<i16>,
    /// The pitch period being repeated, in samples; 0 when not concealing.
    period: usize,
    /// Position within the repeated period.
    phase: usize,
    /// Samples synthesised in this erasure.
    erased: usize,
    /// Synthetic samples to overlap with the audio that follows an erasure.
    tail: Vec<f32>,
}

impl Concealer {
    pub fn new(rate: u32) -> Self {
        let keep = (rate * HISTORY_MS / 1000) as usize;
        Concealer { rate, history: Vec::with_capacity(keep), period: 0, phase: 0, erased: 0, tail: Vec::new() }
    }

    fn samples(&self, ms: f32) -> usize {
        (self.rate as f32 * ms / 1000.0).round() as usize
    }

    /// Takes a frame of real audio about to be played: ends an erasure with
    /// an overlap-add, and keeps it as history.
    pub fn take_real(&mut self, frame: &mut [i16]) {
        if self.period > 0 {
            let overlap = self.samples(OVERLAP_MS as f32).min(frame.len());
            self.tail.clear();
            for _ in 0..overlap {
                let sample = self.next_synthetic();
                self.tail.push(sample);
            }
            for (index, sample) in frame.iter_mut().take(overlap).enumerate() {
                let weight = (index + 1) as f32 / (overlap + 1) as f32;
                let mixed = self.tail[index] * (1.0 - weight) + *sample as f32 * weight;
                *sample = mixed.round().clamp(i16::MIN as f32, i16::MAX as f32) as i16;
            }
            self.period = 0;
        }
        self.remember(frame);
    }

    /// Forgets everything: after a `clear`, nothing of the old audio may come back.
    pub fn reset(&mut self) {
        self.history.clear();
        self.period = 0;
        self.erased = 0;
    }

    /// Whether a gap now can be concealed (there is audio to continue).
    pub fn can_conceal(&self) -> bool {
        let needed = self.samples(MAX_PITCH_MS) * 2;
        self.history.len() >= needed && (self.period > 0 || self.history.iter().any(|s| *s != 0))
    }

    /// Fills `out` with the continuation of the last audio; false once it
    /// has faded to the comfort-noise level, leaving `out` as it was.
    pub fn conceal(&mut self, out: &mut [i16]) -> bool {
        if self.period == 0 {
            if !self.can_conceal() {
                return false;
            }
            self.period = self.find_period();
            self.phase = 0;
            self.erased = 0;
        }
        let fade_start = self.samples(FULL_LEVEL_MS as f32);
        let floor_samples = fade_start + self.samples(-FADE_FLOOR_DB / FADE_DB_PER_MS);
        if self.erased >= floor_samples {
            return false;
        }
        for sample in out.iter_mut() {
            *sample = self.next_synthetic().round() as i16;
        }
        true
    }

    /// The next synthetic sample: the repeated period, faded by the erasure's age.
    fn next_synthetic(&mut self) -> f32 {
        let start = self.history.len() - self.period;
        let value = self.history[start + self.phase] as f32;
        self.phase = (self.phase + 1) % self.period;
        let fade_start = self.samples(FULL_LEVEL_MS as f32);
        let gain = if self.erased <= fade_start {
            1.0
        } else {
            let faded_ms = (self.erased - fade_start) as f32 * 1000.0 / self.rate as f32;
            10f32.powf(-(faded_ms * FADE_DB_PER_MS).min(-FADE_FLOOR_DB) / 20.0)
        };
        self.erased += 1;
        value * gain
    }

    fn remember(&mut self, frame: &[i16]) {
        let keep = (self.rate * HISTORY_MS / 1000) as usize;
        self.history.extend_from_slice(frame);
        if self.history.len() > keep {
            let excess = self.history.len() - keep;
            self.history.drain(..excess);
        }
    }

    /// The lag, within the pitch range, whose shift best matches the last
    /// samples (normalised cross-correlation), so the repetition continues in phase.
    fn find_period(&self) -> usize {
        let history = &self.history;
        let (min_lag, max_lag) = (self.samples(MIN_PITCH_MS), self.samples(MAX_PITCH_MS));
        let window = max_lag.min(history.len() - max_lag);
        let end = history.len();
        let target = &history[end - window..];
        let mut best = (f64::MIN, max_lag);
        for lag in min_lag..=max_lag {
            let candidate = &history[end - window - lag..end - lag];
            let (mut dot, mut energy) = (0f64, 0f64);
            for (a, b) in target.iter().zip(candidate) {
                dot += *a as f64 * *b as f64;
                energy += *b as f64 * *b as f64;
            }
            let score = if energy > 0.0 { dot / energy.sqrt() } else { f64::MIN };
            // Prefer the shorter lag on a near tie: it follows a changing pitch better.
            if score > best.0 * 1.0001 || best.0 == f64::MIN {
                best = (score, lag);
            }
        }
        best.1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(hz: f64, rate: u32, start: usize, len: usize, amplitude: f64) -> Vec<i16> {
        (start..start + len)
            .map(|n| (amplitude * (2.0 * std::f64::consts::PI * hz * n as f64 / rate as f64).sin()) as i16)
            .collect()
    }

    fn rms(samples: &[i16]) -> f64 {
        (samples.iter().map(|s| (*s as f64).powi(2)).sum::<f64>() / samples.len() as f64).sqrt()
    }

    /// Levels of consecutive 5 ms blocks never step by 20 dB or more.
    fn largest_block_step_db(samples: &[i16], rate: u32) -> f64 {
        let block = (rate / 200) as usize;
        let levels: Vec<f64> = samples.chunks_exact(block).map(|b| 20.0 * (rms(b) + 1.0).log10()).collect();
        levels.windows(2).map(|w| (w[1] - w[0]).abs()).fold(0.0, f64::max)
    }

    #[test]
    fn a_one_frame_gap_in_a_tone_is_filled_without_a_click() {
        let rate = 16000;
        let frame = 320;
        let mut concealer = Concealer::new(rate);
        let mut heard = Vec::new();
        for index in 0..10 {
            let mut real = tone(1000.0, rate, index * frame, frame, 8000.0);
            concealer.take_real(&mut real);
            heard.extend_from_slice(&real);
        }
        let mut synthetic = vec![0i16; frame];
        assert!(concealer.conceal(&mut synthetic));
        assert!(rms(&synthetic) > 8000.0 / 2f64.sqrt() * 0.7, "the gap keeps most of the level: {}", rms(&synthetic));
        heard.extend_from_slice(&synthetic);
        // The server's tone resumes where it stopped (the gap was ours).
        for index in 10..14 {
            let mut real = tone(1000.0, rate, index * frame, frame, 8000.0);
            concealer.take_real(&mut real);
            heard.extend_from_slice(&real);
        }
        assert!(largest_block_step_db(&heard, rate) < 6.0, "{} dB", largest_block_step_db(&heard, rate));
    }

    #[test]
    fn a_long_gap_fades_to_the_noise_floor_gradually() {
        let rate = 8000;
        let frame = 160;
        let mut concealer = Concealer::new(rate);
        let mut heard = Vec::new();
        for index in 0..5 {
            let mut real = tone(440.0, rate, index * frame, frame, 10000.0);
            concealer.take_real(&mut real);
            heard.extend_from_slice(&real);
        }
        let mut frames = 0;
        let mut out = vec![0i16; frame];
        while concealer.conceal(&mut out) {
            heard.extend_from_slice(&out);
            frames += 1;
            assert!(frames < 20, "the fade must end");
        }
        assert!(frames >= 4, "about 100 ms of fade: {frames} frames");
        assert!(largest_block_step_db(&heard, rate) < 20.0);
        assert!(rms(&out) < 10000.0 * 0.05, "faded to well below the tone");
    }

    #[test]
    fn nothing_to_conceal_before_audio_or_after_a_reset() {
        let mut concealer = Concealer::new(16000);
        let mut out = vec![7i16; 320];
        assert!(!concealer.conceal(&mut out));
        assert_eq!(out, vec![7i16; 320], "left as it was");
        let mut silence = vec![0i16; 320];
        concealer.take_real(&mut silence);
        concealer.take_real(&mut silence);
        assert!(!concealer.conceal(&mut out), "digital silence is not continued");
        let mut real = tone(300.0, 16000, 0, 960, 5000.0);
        concealer.take_real(&mut real);
        concealer.reset();
        assert!(!concealer.conceal(&mut out));
    }
}
