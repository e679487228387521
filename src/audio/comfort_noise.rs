//! Low-level white noise for the caller while the server sends nothing:
//! digital silence sounds like a dropped line.

use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};

/// About the noise floor of a quiet line.
pub const DEFAULT_LEVEL_DBOV: f64 = crate::settings::COMFORT_NOISE_DBOV.level_default();

pub struct ComfortNoise {
    rng: SmallRng,
    /// Peak of the uniform distribution; 0 means silence.
    peak: f32,
}

impl ComfortNoise {
    /// `level_dbov` is the RMS relative to full scale; 0 turns the noise off.
    pub fn new(level_dbov: f64) -> Self {
        let peak = if level_dbov >= 0.0 {
            0.0
        } else {
            // A uniform distribution on [-p, p] has an RMS of p / sqrt(3).
            (32767.0 * 10f64.powf(level_dbov / 20.0) * 3f64.sqrt()) as f32
        };
        ComfortNoise { rng: SmallRng::seed_from_u64(rand::random()), peak }
    }

    pub fn fill(&mut self, out: &mut [i16]) {
        if self.peak == 0.0 {
            out.fill(0);
            return;
        }
        for sample in out {
            *sample = (self.rng.random_range(-1.0f32..1.0) * self.peak).round() as i16;
        }
    }
}

/// What the caller hears each frame: server audio when there is some,
/// comfort noise otherwise, with a short cross-fade at each switch so the
/// step between the two does not click.
pub struct DownlinkMixer {
    noise: ComfortNoise,
    fade_samples: usize,
    last_was_audio: bool,
    last_sample: i16,
    scratch: Vec<i16>,
}

/// Long enough to avoid a click, short enough not to blur speech onsets.
pub const FADE_MS: u32 = 5;

impl DownlinkMixer {
    pub fn new(level_dbov: f64, rate: u32) -> Self {
        DownlinkMixer {
            noise: ComfortNoise::new(level_dbov),
            fade_samples: (rate * FADE_MS / 1000) as usize,
            last_was_audio: false,
            last_sample: 0,
            scratch: Vec::new(),
        }
    }

    /// `frame` holds server audio when `is_audio`, and anything otherwise.
    pub fn finish_frame(&mut self, frame: &mut [i16], is_audio: bool) {
        let fade = self.fade_samples.min(frame.len());
        if is_audio {
            if !self.last_was_audio && fade > 0 {
                self.scratch.resize(fade, 0);
                self.noise.fill(&mut self.scratch);
                for (index, (sample, noise)) in frame.iter_mut().zip(&self.scratch).enumerate() {
                    *sample = mix(*noise, *sample, index, fade);
                }
            }
        } else {
            self.noise.fill(frame);
            if self.last_was_audio {
                let from = self.last_sample;
                for (index, sample) in frame[..fade].iter_mut().enumerate() {
                    *sample = mix(from, *sample, index, fade);
                }
            }
        }
        self.last_was_audio = is_audio;
        self.last_sample = frame.last().copied().unwrap_or(0);
    }
}

/// From `a` towards `b`: at `index` of `length` steps.
fn mix(a: i16, b: i16, index: usize, length: usize) -> i16 {
    let weight = (index + 1) as f32 / (length + 1) as f32;
    (a as f32 * (1.0 - weight) + b as f32 * weight).round() as i16
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rms_dbov(samples: &[i16]) -> f64 {
        let power: f64 = samples.iter().map(|&s| (s as f64) * (s as f64)).sum::<f64>() / samples.len() as f64;
        20.0 * (power.sqrt() / 32767.0).log10()
    }

    #[test]
    fn level_matches_the_setting_and_is_not_constant() {
        for level in [-65.0, -50.0, -40.0] {
            let mut noise = ComfortNoise::new(level);
            let mut samples = vec![0i16; 16000];
            noise.fill(&mut samples);
            let measured = rms_dbov(&samples);
            assert!((measured - level).abs() < 1.0, "asked {level} dBov, got {measured:.2}");
            let distinct: std::collections::HashSet<_> = samples.iter().collect();
            assert!(distinct.len() > 10, "noise must not be a constant value");
        }
    }

    fn largest_step(samples: &[i16]) -> i32 {
        samples.windows(2).map(|pair| (pair[1] as i32 - pair[0] as i32).abs()).max().unwrap_or(0)
    }

    #[test]
    fn switching_between_audio_and_noise_does_not_click() {
        let rate = 16000;
        let mut mixer = DownlinkMixer::new(DEFAULT_LEVEL_DBOV, rate);
        let mut heard = Vec::new();
        // A loud DC level stands in for audio stopping at its peak: the worst case.
        for is_audio in [false, true, true, false, false, true] {
            let mut frame = vec![if is_audio { 20000i16 } else { 0 }; 320];
            mixer.finish_frame(&mut frame, is_audio);
            heard.extend_from_slice(&frame);
        }
        let fade = (rate * FADE_MS / 1000) as i32;
        let limit = 20000 / fade + 200;
        assert!(largest_step(&heard) <= limit, "a step of {} at a switch (limit {limit})", largest_step(&heard));
        assert_eq!(heard[320 + 100], 20000, "audio after the fade is untouched");
    }

    #[test]
    fn zero_level_is_silence() {
        let mut samples = vec![7i16; 320];
        ComfortNoise::new(0.0).fill(&mut samples);
        assert!(samples.iter().all(|&s| s == 0));
    }
}
