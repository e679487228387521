//! The downlink queue: server audio waiting to be played, re-framed on the
//! way out so that message boundaries do not matter.

use std::collections::VecDeque;
use std::io::Read;

pub struct PlayoutBuffer {
    bytes: VecDeque<u8>,
    frame_bytes: usize,
    capacity_bytes: usize,
    /// Set once audio has played, so that running dry counts as an underrun.
    playing: bool,
    underruns: u64,
}

impl PlayoutBuffer {
    pub fn new(frame_bytes: usize, capacity_bytes: usize) -> Self {
        assert!(frame_bytes > 0 && capacity_bytes >= frame_bytes);
        PlayoutBuffer { bytes: VecDeque::new(), frame_bytes, capacity_bytes, playing: false, underruns: 0 }
    }

    pub fn buffered_bytes(&self) -> usize {
        self.bytes.len()
    }

    pub fn free_bytes(&self) -> usize {
        self.capacity_bytes - self.bytes.len()
    }

    /// Queues as much of `data` as fits and returns how much that was.
    pub fn push(&mut self, data: &[u8]) -> usize {
        let taken = data.len().min(self.free_bytes());
        self.bytes.extend(&data[..taken]);
        taken
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
        for (sample, bytes) in out.iter_mut().zip(frame.chunks_exact(2)) {
            *sample = i16::from_le_bytes([bytes[0], bytes[1]]);
        }
        self.playing = true;
        true
    }

    pub fn clear(&mut self) {
        self.bytes.clear();
        self.playing = false;
        self.release_idle_memory();
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
}
