//! The caller-to-server queue. The session thread only ever pushes; when the
//! server falls behind, the oldest audio goes, never a text message.

use std::collections::VecDeque;

use bytes::Bytes;

use crate::audio::playout::AfterPlayout;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToServer {
    Audio(Bytes),
    /// A caller's digit.
    Dtmf {
        digit: char,
        duration_ms: u32,
    },
    /// A clear has dropped the queued server audio.
    Cleared,
    /// A mark reached, or dropped by a clear: sent, and announced.
    Mark {
        name: String,
        cleared: bool,
    },
    /// A text message sent as given (a fork's `send_text`, or its `stop` metadata).
    Text(String),
    /// The result of a model's function call, answered through the API.
    FunctionResult {
        call_id: String,
        output: String,
    },
    /// The audio before it has played: the call does this now (nothing is sent).
    AfterPlayout(AfterPlayout),
}

/// A runaway producer of text (DTMF) must not grow the queue either.
const MAX_TEXT_MESSAGES: usize = 1024;

pub struct UplinkQueue {
    items: VecDeque<ToServer>,
    audio_frames: usize,
    max_audio_frames: usize,
    text_messages: usize,
    dropped_frames: u64,
    dropping: bool,
}

/// What a push did, so the caller can log once per episode of drops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOutcome {
    Queued,
    DroppedOldest { first_of_episode: bool },
}

impl UplinkQueue {
    pub fn new(max_audio_frames: usize) -> Self {
        UplinkQueue {
            items: VecDeque::new(),
            audio_frames: 0,
            max_audio_frames: max_audio_frames.max(1),
            text_messages: 0,
            dropped_frames: 0,
            dropping: false,
        }
    }

    pub fn push_audio(&mut self, frame: Bytes) -> PushOutcome {
        let mut outcome = PushOutcome::Queued;
        if self.audio_frames >= self.max_audio_frames {
            if let Some(index) = self.items.iter().position(|item| matches!(item, ToServer::Audio(_))) {
                self.items.remove(index);
                self.audio_frames -= 1;
                self.dropped_frames += 1;
                outcome = PushOutcome::DroppedOldest { first_of_episode: !self.dropping };
                self.dropping = true;
            }
        }
        self.items.push_back(ToServer::Audio(frame));
        self.audio_frames += 1;
        outcome
    }

    /// Queues a text item; false when refused because too many are waiting.
    pub fn push_control(&mut self, item: ToServer) -> bool {
        if self.text_messages >= MAX_TEXT_MESSAGES {
            return false;
        }
        self.items.push_back(item);
        self.text_messages += 1;
        true
    }

    /// Moves everything queued into `batch`, in order; returns the audio frames moved.
    pub fn take_all(&mut self, batch: &mut VecDeque<ToServer>) -> usize {
        let frames = self.audio_frames;
        batch.append(&mut self.items);
        self.audio_frames = 0;
        self.text_messages = 0;
        self.dropping = false;
        frames
    }

    /// Audio frames waiting.
    pub fn audio_frames(&self) -> usize {
        self.audio_frames
    }

    pub fn dropped_frames(&self) -> u64 {
        self.dropped_frames
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn audio(n: u8) -> Bytes {
        Bytes::from(vec![n; 4])
    }

    #[test]
    fn overflow_drops_the_oldest_audio_and_keeps_text() {
        let mut queue = UplinkQueue::new(3);
        queue.push_audio(audio(1));
        assert!(queue.push_control(ToServer::Dtmf { digit: '1', duration_ms: 100 }));
        queue.push_audio(audio(2));
        queue.push_audio(audio(3));
        assert_eq!(queue.push_audio(audio(4)), PushOutcome::DroppedOldest { first_of_episode: true });
        assert_eq!(queue.push_audio(audio(5)), PushOutcome::DroppedOldest { first_of_episode: false });
        assert_eq!(queue.dropped_frames(), 2);
        let mut batch = VecDeque::new();
        assert_eq!(queue.take_all(&mut batch), 3);
        let expected = vec![
            ToServer::Dtmf { digit: '1', duration_ms: 100 },
            ToServer::Audio(audio(3)),
            ToServer::Audio(audio(4)),
            ToServer::Audio(audio(5)),
        ];
        assert_eq!(Vec::from(batch), expected);
        queue.push_audio(audio(6));
        queue.push_audio(audio(7));
        queue.push_audio(audio(8));
        assert_eq!(
            queue.push_audio(audio(9)),
            PushOutcome::DroppedOldest { first_of_episode: true },
            "a drained queue starts a new episode"
        );
    }

    #[test]
    fn text_is_bounded_too() {
        let mut queue = UplinkQueue::new(1);
        let accepted = (0..MAX_TEXT_MESSAGES + 10)
            .filter(|i| {
                queue.push_control(ToServer::Dtmf { digit: char::from(b'0' + (i % 10) as u8), duration_ms: 100 })
            })
            .count();
        assert_eq!(accepted, MAX_TEXT_MESSAGES);
    }
}
