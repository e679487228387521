//! Where each reply of a speech-to-speech model begins in the playout, so
//! that a barge-in knows how much of the reply the caller heard, and a turn
//! knows when its reply was first heard.

use std::collections::VecDeque;
use std::time::Instant;

/// How much of one reply the caller heard before a barge-in dropped the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heard {
    /// The protocol's number for the reply.
    pub reply: u64,
    pub heard_ms: u64,
}

/// Replies followed at once; older ones have played out long ago.
const MAX_REPLIES: usize = 16;
/// Turns whose latency a call keeps for its CDR figures.
const MAX_TURNS: usize = 10_000;

struct Reply {
    reply: u64,
    /// Stream position of its first byte.
    start: u64,
    /// When the caller stopped speaking, for the reply that answers a turn.
    turn_began: Option<Instant>,
    started: bool,
}

#[derive(Default)]
pub struct ReplyTracker {
    replies: VecDeque<Reply>,
    /// Replies that began playing, with their turn's latency: `(reply, latency_ms)`.
    started: VecDeque<(u64, Option<u32>)>,
    turn_latencies_ms: Vec<u32>,
    turns: u64,
}

/// Where a reply stands, for its transcript's latency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyProgress {
    /// Queued, not yet heard.
    Waiting,
    /// Heard from its first frame; the latency of the turn it answered.
    Started(Option<u32>),
    /// Never queued, or dropped unheard.
    Unknown,
}

impl ReplyTracker {
    /// Audio queued from `position` on belongs to `reply` (a new number begins a new reply).
    pub fn begin(&mut self, reply: u64, position: u64, turn_began: Option<Instant>) {
        if self.replies.back().is_some_and(|last| last.reply == reply) {
            return;
        }
        if self.replies.len() == MAX_REPLIES {
            self.replies.pop_front();
        }
        self.replies.push_back(Reply { reply, start: position, turn_began, started: false });
    }

    /// The stream has played up to `played`: a reply whose first byte has gone is heard from `now`.
    pub fn played_to(&mut self, played: u64, now: impl FnOnce() -> Instant) {
        let Some(first) = self.replies.iter().position(|reply| !reply.started && reply.start < played) else {
            return;
        };
        let now = now();
        for reply in self.replies.iter_mut().skip(first).filter(|reply| !reply.started && reply.start < played) {
            reply.started = true;
            let latency = reply.turn_began.map(|began| now.saturating_duration_since(began).as_millis() as u32);
            if let Some(ms) = latency {
                self.turns += 1;
                if self.turn_latencies_ms.len() < MAX_TURNS {
                    self.turn_latencies_ms.push(ms);
                }
            }
            if self.started.len() == MAX_REPLIES {
                self.started.pop_front();
            }
            self.started.push_back((reply.reply, latency));
        }
    }

    /// A barge-in at `played` drops everything queued up to `queued`: how much
    /// of each reply still playing, or yet to play, was heard. The newest reply is
    /// always told, as the model may still be making it.
    pub fn interrupt(&mut self, played: u64, queued: u64, bytes_per_ms: f64) -> Vec<Heard> {
        let mut heard = Vec::new();
        let count = self.replies.len();
        for (index, reply) in self.replies.iter().enumerate() {
            let end = self.replies.get(index + 1).map_or(queued, |next| next.start);
            if end <= played && index + 1 < count {
                continue;
            }
            let bytes = played.saturating_sub(reply.start).min(end.saturating_sub(reply.start));
            heard.push(Heard { reply: reply.reply, heard_ms: (bytes as f64 / bytes_per_ms) as u64 });
        }
        self.replies.clear();
        heard
    }

    pub fn progress(&self, reply: u64) -> ReplyProgress {
        if let Some((_, latency)) = self.started.iter().find(|(started, _)| *started == reply) {
            return ReplyProgress::Started(*latency);
        }
        match self.replies.iter().any(|queued| queued.reply == reply) {
            true => ReplyProgress::Waiting,
            false => ReplyProgress::Unknown,
        }
    }

    /// Turns answered so far, and the latencies kept (the first [`MAX_TURNS`]).
    pub fn turns(&self) -> (u64, &[u32]) {
        (self.turns, &self.turn_latencies_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_barge_in_tells_how_much_of_each_unfinished_reply_was_heard() {
        let mut tracker = ReplyTracker::default();
        tracker.begin(1, 0, None);
        tracker.begin(1, 480, None);
        tracker.begin(2, 4800, None);
        // 48 bytes a millisecond (24 kHz L16): reply 1 is 100 ms, reply 2 began; 60 ms of it played.
        let heard = tracker.interrupt(4800 + 60 * 48, 4800 + 500 * 48, 48.0);
        assert_eq!(heard, [Heard { reply: 2, heard_ms: 60 }]);
        assert_eq!(tracker.progress(2), ReplyProgress::Unknown, "dropped");
        tracker.begin(3, 9600, None);
        let heard = tracker.interrupt(9600, 9600 + 4800, 48.0);
        assert_eq!(heard, [Heard { reply: 3, heard_ms: 0 }], "queued, none heard");
        tracker.begin(4, 20_000, None);
        let heard = tracker.interrupt(20_480, 20_480, 48.0);
        assert_eq!(heard, [Heard { reply: 4, heard_ms: 10 }], "all heard, but perhaps still streaming");
    }

    #[test]
    fn a_turn_counts_from_the_caller_stopping_to_the_first_byte_played() {
        let mut tracker = ReplyTracker::default();
        let began = Instant::now();
        tracker.begin(1, 1000, Some(began));
        tracker.played_to(1000, || unreachable!("nothing of the reply has played"));
        assert_eq!(tracker.progress(1), ReplyProgress::Waiting);
        tracker.played_to(1640, || began + Duration::from_millis(730));
        assert_eq!(tracker.progress(1), ReplyProgress::Started(Some(730)));
        tracker.begin(2, 5000, None);
        tracker.played_to(6000, || began + Duration::from_secs(2));
        assert_eq!(tracker.progress(2), ReplyProgress::Started(None), "a greeting answers no turn");
        assert_eq!(tracker.turns(), (1, &[730u32][..]));
    }
}
