//! One fork on one channel: its state and what its media bug does with the
//! channel's audio. The bug's callbacks copy frames into the fork's
//! [`CallMedia`] and never wait on the network. Starting, commanding and
//! ending forks is [`super::fork`]'s.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::ffi::{Channel, MediaBugHandler, Resampler};
use super::lock;
use crate::audio::g711;
use crate::audio::media::CallMedia;
use crate::audio::mixing::{self, Combiner, ForkMode};
use crate::audio::reframe::Reframer;
use crate::audio::uplink::PushOutcome;
use crate::call::api::CallSnapshot;
use crate::call::conversation::ConversationEnd;
use crate::call::fork_plan;
use crate::settings::{ContentType, Encoding, Protocol};

/// What the read side owns: the caller's and the other side's audio on the way to the server.
struct Capture {
    read_resampler: Option<Resampler>,
    write_resampler: Option<Resampler>,
    combiner: Combiner,
    reframer: Reframer,
    resampled: Vec<i16>,
    frame: Vec<u8>,
    dropping: bool,
}

/// What the write side owns: the server's audio on the way to the caller.
struct Play {
    resampler: Option<Resampler>,
    wire_frame: Vec<i16>,
    /// Server audio at the channel's rate, not yet mixed in.
    pending: VecDeque<i16>,
    resampled: Vec<i16>,
}

/// What a fork is made of, from its plan.
pub struct ForkParts {
    pub uuid: String,
    pub name: String,
    pub mode: ForkMode,
    pub shown_uri: String,
    pub protocol: Protocol,
    pub wire: ContentType,
    pub media: Arc<CallMedia>,
    pub playback: bool,
}

/// One fork on one channel.
pub struct Fork {
    uuid: String,
    name: String,
    mode: ForkMode,
    shown_uri: String,
    protocol: Protocol,
    /// The wire's format, mono: L16 at the fork's rate, or μ-law for Twilio.
    wire: ContentType,
    media: Arc<CallMedia>,
    playback: bool,
    paused: AtomicBool,
    /// Asked to stop with `stop`, not ended by a hangup or the server.
    stop_asked: AtomicBool,
    /// The fork is over: its bug removes itself at the next frame.
    ended: AtomicBool,
    capture: Mutex<Capture>,
    play: Mutex<Play>,
    started: Instant,
}

/// A resampler from `from` to `to`, made when first needed; none where they are equal.
fn resampler_for(slot: &mut Option<Resampler>, from: u32, to: u32) -> Result<Option<&mut Resampler>, String> {
    if from == to {
        return Ok(None);
    }
    if !slot.as_ref().is_some_and(|r| r.from_rate == from && r.to_rate == to) {
        *slot = Some(Resampler::new(from, to)?);
    }
    Ok(slot.as_mut())
}

/// `samples` at `from` Hz into `out` at `to` Hz.
fn convert(slot: &mut Option<Resampler>, samples: &[i16], from: u32, to: u32, out: &mut Vec<i16>) -> bool {
    out.clear();
    match resampler_for(slot, from, to) {
        Ok(Some(resampler)) => resampler.process(samples, out),
        Ok(None) => out.extend_from_slice(samples),
        Err(why) => {
            tracing::warn!("{why}");
            return false;
        }
    }
    true
}

/// Whether a protocol has text messages (AudioSocket has none).
fn carries_text(protocol: Protocol) -> bool {
    protocol.rules().carries_text
}

/// The reply to `send_text`: `queue` runs only where the protocol carries text.
fn send_text_reply(protocol: Protocol, name: &str, queue: impl FnOnce() -> bool) -> String {
    if !carries_text(protocol) {
        return format!("-ERR the {} protocol carries no text; nothing sent to fork {name}\n", protocol.name());
    }
    match queue() {
        true => format!("+OK text queued for fork {name}\n"),
        false => format!("-ERR too many messages waiting for fork {name}\n"),
    }
}

impl Fork {
    pub fn new(parts: ForkParts) -> Fork {
        let ForkParts { uuid, name, mode, shown_uri, protocol, wire, media, playback } = parts;
        let combiner = Combiner::new(mode, wire.rate);
        let frames_per_message = (media.uplink_message_bytes() / wire.bytes_per_frame()).max(1);
        Fork {
            capture: Mutex::new(Capture {
                read_resampler: None,
                write_resampler: None,
                reframer: Reframer::new(combiner.frame_bytes() * frames_per_message),
                combiner,
                resampled: Vec::new(),
                frame: Vec::new(),
                dropping: false,
            }),
            play: Mutex::new(Play {
                resampler: None,
                wire_frame: vec![0; wire.samples_per_frame()],
                pending: VecDeque::new(),
                resampled: Vec::new(),
            }),
            uuid,
            name,
            mode,
            shown_uri,
            protocol,
            wire,
            media,
            playback,
            paused: AtomicBool::new(false),
            stop_asked: AtomicBool::new(false),
            ended: AtomicBool::new(false),
            started: Instant::now(),
        }
    }

    /// The channel the fork streams.
    pub fn uuid(&self) -> &str {
        &self.uuid
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn shown_uri(&self) -> &str {
        &self.shown_uri
    }

    pub fn media(&self) -> Arc<CallMedia> {
        self.media.clone()
    }

    fn is_ended(&self) -> bool {
        self.ended.load(Ordering::Acquire)
    }

    /// The fork is over: its bug removes itself at the next frame.
    pub fn mark_ended(&self) {
        self.ended.store(true, Ordering::Release);
    }

    pub fn set_paused(&self, paused: bool) {
        self.paused.store(paused, Ordering::Release);
    }

    /// `send_text`: the text goes to the server as given; the reply for the API.
    pub fn send_text(&self, text: String) -> String {
        send_text_reply(self.protocol, &self.name, || self.media.send_text(text))
    }

    /// Caller audio of one message: L16 as the combiner makes it, to the wire's encoding.
    fn queue_uplink(&self, chunk: &[u8], dropping: &mut bool) {
        let outcome = match self.wire.encoding {
            // The combiner writes little-endian, as the wire wants.
            Encoding::L16 => self.media.send_audio(chunk),
            _ => self.media.send_audio(&g711::to_mulaw_tracks(chunk, self.mode.channels())),
        };
        match outcome {
            PushOutcome::DroppedOldest { first_of_episode: true } if !*dropping => {
                *dropping = true;
                tracing::warn!(
                    uuid = self.uuid.as_str(),
                    "fork {}: the server is not keeping up; dropping the oldest audio",
                    self.name
                );
            }
            PushOutcome::Queued => *dropping = false,
            _ => {}
        }
    }

    /// Stops: the metadata, if any, then close 1000 after what is queued.
    pub fn stop(&self, metadata: Option<String>) {
        self.stop_asked.store(true, Ordering::Release);
        if let Some(metadata) = metadata {
            if !carries_text(self.protocol) {
                tracing::warn!(
                    uuid = self.uuid.as_str(),
                    "fork {}: the {} protocol carries no text; metadata not sent",
                    self.name,
                    self.protocol.name()
                );
            } else if !self.media.send_text(metadata) {
                tracing::warn!(
                    uuid = self.uuid.as_str(),
                    "fork {}: too many messages waiting; metadata dropped",
                    self.name
                );
            }
        }
        self.media.closes_with(fork_plan::FORK_STOPPED);
        self.mark_ended();
    }

    /// Why the fork's task ended, as its `fork_stop` event says.
    fn end_reason(&self, end: &ConversationEnd) -> String {
        match end {
            ConversationEnd::CallerHungUp if self.stop_asked.load(Ordering::Acquire) => "stopped".to_string(),
            ConversationEnd::CallerHungUp => "hangup".to_string(),
            ConversationEnd::ServerClosed { code, .. } => {
                format!("server closed ({})", code.map_or("no code".to_string(), |c| c.to_string()))
            }
            ConversationEnd::Failed { why, .. } => format!("failed: {why}"),
        }
    }

    /// The task has ended with `end`: the headers of the `fork_stop` event.
    pub fn ended_with(&self, end: &ConversationEnd) -> Vec<(&'static str, String)> {
        self.mark_ended();
        let reason = self.end_reason(end);
        tracing::info!("fork {} to {} ended: {reason}", self.name, self.shown_uri);
        vec![
            ("WSBridge-Fork-Name", self.name.clone()),
            ("WSBridge-URI", self.shown_uri.clone()),
            ("WSBridge-Fork-Reason", reason),
            ("WSBridge-Frames-Sent", self.media.stats.frames_sent.load(Ordering::Relaxed).to_string()),
        ]
    }

    pub fn snapshot(&self) -> CallSnapshot {
        let mut snapshot = CallSnapshot::of(&self.media, &self.uuid, &self.shown_uri, self.started.elapsed());
        if self.paused.load(Ordering::Relaxed) && snapshot.state == "open" {
            snapshot.state = "paused";
        }
        snapshot.fork = Some(self.name.clone());
        snapshot
    }
}

impl MediaBugHandler for Fork {
    fn on_read(&self, samples: &[i16], rate: u32) -> bool {
        if self.is_ended() {
            return false;
        }
        let mut capture = lock(&self.capture);
        let capture = &mut *capture;
        if !convert(&mut capture.read_resampler, samples, rate, self.wire.rate, &mut capture.resampled) {
            return true;
        }
        capture.combiner.push_read(&capture.resampled);
        let sending = self.media.is_open() && !self.paused.load(Ordering::Acquire);
        loop {
            capture.frame.clear();
            if !capture.combiner.next_frame(&mut capture.frame) {
                break;
            }
            if sending {
                let (reframer, frame, dropping) = (&mut capture.reframer, &capture.frame, &mut capture.dropping);
                reframer.push(frame, |chunk| self.queue_uplink(chunk, dropping));
            }
        }
        if !sending {
            capture.reframer.clear();
        }
        true
    }

    fn on_write(&self, samples: &mut [i16], rate: u32) -> bool {
        if self.is_ended() {
            return false;
        }
        if self.mode.hears_both() {
            let mut capture = lock(&self.capture);
            let capture = &mut *capture;
            if convert(&mut capture.write_resampler, samples, rate, self.wire.rate, &mut capture.resampled) {
                capture.combiner.push_write(&capture.resampled);
            }
        }
        if !self.playback {
            return true;
        }
        let mut play = lock(&self.play);
        let play = &mut *play;
        while play.pending.len() < samples.len() {
            if !self.media.next_downlink_frame(&mut play.wire_frame).is_sound() {
                break;
            }
            if !convert(&mut play.resampler, &play.wire_frame, self.wire.rate, rate, &mut play.resampled) {
                break;
            }
            play.pending.extend(&play.resampled);
        }
        let n = play.pending.len().min(samples.len());
        if n > 0 {
            let (first, second) = play.pending.as_slices();
            let split = first.len().min(n);
            mixing::mix_into(&mut samples[..split], &first[..split]);
            mixing::mix_into(&mut samples[split..n], &second[..n - split]);
            play.pending.drain(..n);
        }
        true
    }

    fn on_close(&self, channel: Option<Channel<'_>>) {
        self.ended.store(true, Ordering::Release);
        // Unless the server closed first, the task now sends what is queued and closes with 1000.
        self.media.caller_closes();
        if let Some(channel) = channel {
            for (name, value) in crate::call::api::cdr_variables(&self.media.figures()) {
                channel.set_variable(&fork_plan::cdr_variable(name, &self.name), &value);
            }
            channel.set_variable(&fork_plan::cdr_variable("wsbridge_uri", &self.name), &self.shown_uri);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audiosocket_carries_no_text() {
        use crate::wire::protocol::{audiosocket, twilio, vonage, wsbridge};
        let mut queued = false;
        let reply = send_text_reply(Protocol(&audiosocket::RULES), "a", || {
            queued = true;
            true
        });
        assert!(reply.starts_with("-ERR the audiosocket protocol carries no text"), "{reply}");
        assert!(!queued, "nothing is queued for a protocol without text");
        for protocol in [Protocol(&wsbridge::RULES), Protocol(&twilio::RULES), Protocol(&vonage::RULES)] {
            assert_eq!(send_text_reply(protocol, "a", || true), "+OK text queued for fork a\n");
            assert_eq!(send_text_reply(protocol, "a", || false), "-ERR too many messages waiting for fork a\n");
        }
    }
}
