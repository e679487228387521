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
    /// Byte positions in the stream of everything ever queued.
    queued_total: u64,
    played_total: u64,
    /// Marks by the stream position they follow, in order.
    marks: VecDeque<(u64, String)>,
}

/// Most marks waiting at once; a server that floods them gets refusals.
pub const MAX_PENDING_MARKS: usize = 1024;

#[derive(Debug, PartialEq, Eq)]
pub enum MarkOutcome {
    /// Everything before it has played already.
    Reached,
    Pending,
    Refused,
}

impl PlayoutBuffer {
    pub fn new(frame_bytes: usize, capacity_bytes: usize) -> Self {
        assert!(frame_bytes > 0 && capacity_bytes >= frame_bytes);
        PlayoutBuffer {
            bytes: VecDeque::new(),
            frame_bytes,
            capacity_bytes,
            playing: false,
            underruns: 0,
            queued_total: 0,
            played_total: 0,
            marks: VecDeque::new(),
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
        let taken = data.len().min(self.free_bytes());
        self.bytes.extend(&data[..taken]);
        self.queued_total += taken as u64;
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
        self.played_total += self.frame_bytes as u64;
        for (sample, bytes) in out.iter_mut().zip(frame.chunks_exact(2)) {
            *sample = i16::from_le_bytes([bytes[0], bytes[1]]);
        }
        self.playing = true;
        true
    }

    /// Drops all queued audio, a partial frame included; returns the names
    /// of the marks that were waiting for it.
    pub fn clear(&mut self) -> Vec<String> {
        self.bytes.clear();
        self.played_total = self.queued_total;
        self.playing = false;
        self.release_idle_memory();
        self.marks.drain(..).map(|(_, name)| name).collect()
    }

    /// Places a mark after the audio queued so far.
    pub fn add_mark(&mut self, name: String) -> MarkOutcome {
        if self.is_reached(self.queued_total) {
            return MarkOutcome::Reached;
        }
        if self.marks.len() >= MAX_PENDING_MARKS {
            return MarkOutcome::Refused;
        }
        self.marks.push_back((self.queued_total, name));
        MarkOutcome::Pending
    }

    /// Moves the names of marks whose audio has all played into `reached`.
    pub fn take_reached_marks(&mut self, reached: &mut Vec<String>) {
        while let Some((position, _)) = self.marks.front() {
            if !self.is_reached(*position) {
                break;
            }
            reached.extend(self.marks.pop_front().map(|(_, name)| name));
        }
    }

    pub fn has_marks(&self) -> bool {
        !self.marks.is_empty()
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
}
