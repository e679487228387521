//! The two directions of a call made into one stream: mono (the caller),
//! mixed, or stereo (the caller left, the other side right).

use std::collections::VecDeque;

use crate::settings::FRAME_MS;

/// Which audio of the call a fork streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ForkMode {
    /// The channel's read audio: what the caller says.
    #[default]
    Mono,
    /// Both directions mixed into one.
    Mixed,
    /// The caller left, the other direction right, interleaved.
    Stereo,
}

impl ForkMode {
    pub fn parse(text: &str) -> Option<ForkMode> {
        match text.to_ascii_lowercase().as_str() {
            "mono" => Some(ForkMode::Mono),
            "mixed" => Some(ForkMode::Mixed),
            "stereo" => Some(ForkMode::Stereo),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ForkMode::Mono => "mono",
            ForkMode::Mixed => "mixed",
            ForkMode::Stereo => "stereo",
        }
    }

    pub fn channels(self) -> usize {
        match self {
            ForkMode::Stereo => 2,
            ForkMode::Mono | ForkMode::Mixed => 1,
        }
    }

    /// Whether the other direction (what the channel is sent) is needed.
    pub fn hears_both(self) -> bool {
        self != ForkMode::Mono
    }
}

/// Most audio held per direction while the other catches up: 10 frames.
const MAX_HELD_FRAMES: usize = 10;

/// The caller's audio waits at most this many frames for the other direction.
const WAIT_FRAMES: usize = 2;

/// Turns the two directions of a call, each mono at the wire's rate, into
/// the fork's frames. The caller's audio (read) paces it: each of its 20 ms
/// frames gives one frame out. The other direction arrives from another
/// thread at its own phase, so a read frame waits up to two frames for it,
/// then goes with silence in its place. Nothing grows without bound.
#[derive(Debug)]
pub struct Combiner {
    mode: ForkMode,
    samples_per_frame: usize,
    read: VecDeque<i16>,
    write: VecDeque<i16>,
    /// The frame's samples of each side, reused from frame to frame.
    left: Vec<i16>,
    right: Vec<i16>,
    /// Write samples dropped because they arrived faster than the caller's.
    pub write_dropped: u64,
}

impl Combiner {
    pub fn new(mode: ForkMode, rate: u32) -> Self {
        let samples_per_frame = (rate * FRAME_MS / 1000) as usize;
        Combiner {
            mode,
            samples_per_frame,
            read: VecDeque::with_capacity(samples_per_frame * MAX_HELD_FRAMES),
            write: VecDeque::with_capacity(samples_per_frame * MAX_HELD_FRAMES),
            left: Vec::with_capacity(samples_per_frame),
            right: Vec::with_capacity(samples_per_frame),
            write_dropped: 0,
        }
    }

    pub fn samples_per_frame(&self) -> usize {
        self.samples_per_frame
    }

    /// Bytes of one frame out, little-endian L16.
    pub fn frame_bytes(&self) -> usize {
        self.samples_per_frame * self.mode.channels() * 2
    }

    fn bound(queue: &mut VecDeque<i16>, limit: usize) -> u64 {
        let excess = queue.len().saturating_sub(limit);
        queue.drain(..excess);
        excess as u64
    }

    /// Audio the channel read (the caller), at the wire's rate.
    pub fn push_read(&mut self, samples: &[i16]) {
        self.read.extend(samples);
        Self::bound(&mut self.read, self.samples_per_frame * MAX_HELD_FRAMES);
    }

    /// Audio written to the channel (the other side), at the wire's rate.
    pub fn push_write(&mut self, samples: &[i16]) {
        if !self.mode.hears_both() {
            return;
        }
        self.write.extend(samples);
        // The other side may run ahead of the caller by at most a few frames.
        self.write_dropped += Self::bound(&mut self.write, self.samples_per_frame * (WAIT_FRAMES + 2));
    }

    /// The next frame out, little-endian L16, appended to `out`; false when none is due yet.
    pub fn next_frame(&mut self, out: &mut Vec<u8>) -> bool {
        let n = self.samples_per_frame;
        if self.read.len() < n {
            return false;
        }
        let both = self.mode.hears_both();
        if both && self.write.len() < n && self.read.len() < n * (WAIT_FRAMES + 1) {
            return false;
        }
        let take_write = if both { self.write.len().min(n) } else { 0 };
        // Slices, not sample by sample through the deques: this runs on the media thread every 20 ms.
        self.left.clear();
        let (front, back) = self.read.as_slices();
        self.left.extend_from_slice(&front[..front.len().min(n)]);
        self.left.extend_from_slice(&back[..n - self.left.len()]);
        self.read.drain(..n);
        self.right.clear();
        let (front, back) = self.write.as_slices();
        self.right.extend_from_slice(&front[..front.len().min(take_write)]);
        self.right.extend_from_slice(&back[..take_write - self.right.len()]);
        self.write.drain(..take_write);
        self.right.resize(n, 0);
        let start = out.len();
        out.resize(start + self.frame_bytes(), 0);
        let frame = &mut out[start..];
        match self.mode {
            ForkMode::Mono => {
                for (bytes, left) in frame.chunks_exact_mut(2).zip(&self.left) {
                    bytes.copy_from_slice(&left.to_le_bytes());
                }
            }
            ForkMode::Mixed => {
                for ((bytes, left), right) in frame.chunks_exact_mut(2).zip(&self.left).zip(&self.right) {
                    bytes.copy_from_slice(&mix(*left, *right).to_le_bytes());
                }
            }
            ForkMode::Stereo => {
                for ((bytes, left), right) in frame.chunks_exact_mut(4).zip(&self.left).zip(&self.right) {
                    bytes[..2].copy_from_slice(&left.to_le_bytes());
                    bytes[2..].copy_from_slice(&right.to_le_bytes());
                }
            }
        }
        true
    }
}

/// Two samples added, clipped to 16 bits.
pub fn mix(a: i16, b: i16) -> i16 {
    (a as i32 + b as i32).clamp(i16::MIN as i32, i16::MAX as i32) as i16
}

/// Adds `played` into `frame`, clipped.
pub fn mix_into(frame: &mut [i16], played: &[i16]) {
    for (sample, add) in frame.iter_mut().zip(played) {
        *sample = mix(*sample, *add);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame_samples(bytes: &[u8]) -> Vec<i16> {
        bytes.chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]])).collect()
    }

    #[test]
    fn stereo_interleaves_caller_left_and_other_side_right() {
        let mut combiner = Combiner::new(ForkMode::Stereo, 8000);
        let mut out = Vec::new();
        combiner.push_read(&[1; 160]);
        assert!(!combiner.next_frame(&mut out), "the caller's frame waits for the other side");
        combiner.push_write(&[2; 160]);
        assert!(combiner.next_frame(&mut out));
        assert_eq!(out.len(), combiner.frame_bytes());
        assert_eq!(frame_samples(&out)[..4], [1, 2, 1, 2]);
        // The other side is silent: the caller's audio goes after two frames' wait, with silence on the right.
        out.clear();
        for _ in 0..3 {
            combiner.push_read(&[5; 160]);
        }
        assert!(combiner.next_frame(&mut out));
        assert_eq!(frame_samples(&out)[..2], [5, 0]);
    }

    #[test]
    fn mixed_adds_with_clipping_and_mono_ignores_the_other_side() {
        let mut mixed = Combiner::new(ForkMode::Mixed, 8000);
        mixed.push_read(&[30000; 160]);
        mixed.push_write(&[10000; 160]);
        let mut out = Vec::new();
        assert!(mixed.next_frame(&mut out));
        assert!(frame_samples(&out).iter().all(|s| *s == i16::MAX));

        let mut mono = Combiner::new(ForkMode::Mono, 16000);
        mono.push_write(&[9; 320]);
        mono.push_read(&[3; 320]);
        out.clear();
        assert!(mono.next_frame(&mut out));
        assert_eq!(frame_samples(&out), vec![3; 320]);
        assert!(!mono.next_frame(&mut out));
    }

    #[test]
    fn nothing_grows_without_bound() {
        let mut combiner = Combiner::new(ForkMode::Stereo, 8000);
        for _ in 0..1000 {
            combiner.push_write(&[1; 160]);
            combiner.push_read(&[1; 170]);
        }
        assert!(combiner.read.len() <= 160 * MAX_HELD_FRAMES && combiner.write.len() <= 160 * (WAIT_FRAMES + 2));
        assert!(combiner.write_dropped > 0);
    }

    /// Frames as the combiner makes them are the samples of each side, in
    /// order, mixed or interleaved, whatever the push sizes and however the
    /// queues wrap around inside.
    #[test]
    fn frames_are_each_sides_samples_in_order_whatever_the_push_sizes() {
        for mode in [ForkMode::Mono, ForkMode::Mixed, ForkMode::Stereo] {
            let mut combiner = Combiner::new(mode, 8000);
            let (mut reads, mut writes, mut out) = (Vec::new(), Vec::new(), Vec::new());
            let mut next = 1i16;
            for round in 0..400usize {
                let read: Vec<i16> = (0..(round * 37 % 230 + 1))
                    .map(|_| {
                        next = next.wrapping_mul(31).wrapping_add(7);
                        next
                    })
                    .collect();
                let write: Vec<i16> = read.iter().map(|s| s.wrapping_mul(3)).collect();
                combiner.push_read(&read);
                combiner.push_write(&write);
                reads.extend(&read);
                writes.extend(&write);
                while combiner.next_frame(&mut out) {}
            }
            assert_eq!(combiner.write_dropped, 0);
            let samples = frame_samples(&out);
            let frames = samples.len() / 160 / mode.channels();
            assert!(frames > 100, "{mode:?}: {frames} frames");
            for (i, got) in samples.chunks(mode.channels()).enumerate() {
                let (left, right) = (reads[i], writes[i]);
                let want = match mode {
                    ForkMode::Mono => vec![left],
                    ForkMode::Mixed => vec![mix(left, right)],
                    ForkMode::Stereo => vec![left, right],
                };
                assert_eq!(got, want.as_slice(), "{mode:?} sample {i}");
            }
        }
    }
}
