//! Low-level white noise for the caller while the server sends nothing:
//! digital silence sounds like a dropped line.

use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};

/// About the noise floor of a quiet line.
pub const DEFAULT_LEVEL_DBOV: f64 = -65.0;

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

    #[test]
    fn zero_level_is_silence() {
        let mut samples = vec![7i16; 320];
        ComfortNoise::new(0.0).fill(&mut samples);
        assert!(samples.iter().all(|&s| s == 0));
    }
}
