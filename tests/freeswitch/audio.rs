//! Audio judged by its content: tone frequency, levels and durations.

use std::f64::consts::PI;

pub fn tone(frequency: f64, rate: u32, seconds: f64, amplitude: f64) -> Vec<i16> {
    let count = (rate as f64 * seconds).round() as usize;
    (0..count).map(|n| (amplitude * (2.0 * PI * frequency * n as f64 / rate as f64).sin()).round() as i16).collect()
}

pub fn rms(samples: &[i16]) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    (samples.iter().map(|&s| (s as f64).powi(2)).sum::<f64>() / samples.len() as f64).sqrt()
}

/// Power of `frequency` in `samples` (Goertzel), normalised so that a pure
/// tone gives about its mean square.
pub fn power_at(samples: &[i16], rate: u32, frequency: f64) -> f64 {
    let coefficient = 2.0 * (2.0 * PI * frequency / rate as f64).cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &sample in samples {
        let s0 = sample as f64 + coefficient * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    let power = s1 * s1 + s2 * s2 - coefficient * s1 * s2;
    2.0 * power / (samples.len() as f64).powi(2)
}

/// Frequency from the rate of upward zero crossings.
pub fn zero_crossing_frequency(samples: &[i16], rate: u32) -> f64 {
    let crossings = samples.windows(2).filter(|pair| pair[0] < 0 && pair[1] >= 0).count();
    crossings as f64 * rate as f64 / samples.len() as f64
}

/// Asserts that `samples` hold a clean tone at `frequency`: the zero
/// crossings agree within 1.5 %, and that frequency carries most of the power.
pub fn assert_tone(samples: &[i16], rate: u32, frequency: f64, what: &str) {
    assert!(samples.len() as u32 >= rate / 10, "{what}: only {} samples", samples.len());
    let measured = zero_crossing_frequency(samples, rate);
    assert!(
        (measured - frequency).abs() / frequency < 0.015,
        "{what}: tone at {measured:.1} Hz, expected {frequency} Hz"
    );
    let total = rms(samples).powi(2);
    let at_tone = power_at(samples, rate, frequency);
    assert!(at_tone / total > 0.8, "{what}: only {:.0}% of the power is at {frequency} Hz", 100.0 * at_tone / total);
}

/// Where the signal is louder than `threshold` RMS, in 10 ms windows:
/// (first loud second, last loud second + 10 ms).
pub fn loud_span(samples: &[i16], rate: u32, threshold: f64) -> Option<(f64, f64)> {
    let window = (rate / 100) as usize;
    let loud: Vec<usize> = samples
        .chunks(window)
        .enumerate()
        .filter(|(_, chunk)| rms(chunk) > threshold)
        .map(|(index, _)| index)
        .collect();
    let (first, last) = (*loud.first()?, *loud.last()?);
    Some((first as f64 / 100.0, (last + 1) as f64 / 100.0))
}

fn try_read_wav(path: &std::path::Path) -> Result<(Vec<i16>, u32), String> {
    let mut reader = hound::WavReader::open(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    let spec = reader.spec();
    assert_eq!(spec.channels, 1, "mono recording expected");
    let samples = reader.samples::<i16>().collect::<Result<Vec<_>, _>>().map_err(|e| e.to_string())?;
    Ok((samples, spec.sample_rate))
}

/// A recording FreeSWITCH has finished: its thread writes the WAV header's
/// length after the channel is gone, so wait for that, for up to 5 s.
pub fn read_wav(path: &std::path::Path) -> (Vec<i16>, u32) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let result = try_read_wav(path);
        match result {
            Ok((samples, rate)) if !samples.is_empty() => return (samples, rate),
            _ if std::time::Instant::now() < deadline => std::thread::sleep(std::time::Duration::from_millis(100)),
            Ok(read) => return read,
            Err(why) => panic!("{why}"),
        }
    }
}
