//! Fork mode: a call that is already up, streamed to a server through a
//! media bug (`uuid_wsbridge_fork`, `wsbridge fork`, the `wsbridge_fork`
//! application). The bug's callbacks copy frames into the fork's
//! [`CallMedia`] and never wait on the network; the fork's task is the
//! endpoint's session, with a [`CallControl`] that never hangs the call up
//! unless the server sends the `hangup` action.

use std::collections::{BTreeMap, VecDeque};
use std::ffi::CStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use bytes::Bytes;
use tracing::Instrument;

use super::endpoint::FreeSwitchDecoder;
use super::ffi::{
    self, ApiCommand, Application, CauseCode, Channel, LocatedSession, MediaBugHandler, Resampler, Session,
};
use super::{config_store, drain, events, runtime};
use crate::audio::g711;
use crate::audio::media::CallMedia;
use crate::audio::mixing::{self, Combiner, ForkMode};
use crate::audio::reframe::Reframer;
use crate::audio::uplink::PushOutcome;
use crate::call::api::CallSnapshot;
use crate::call::conversation::{self, CallControl, CallEvent, ConversationEnd};
use crate::call::fork_plan::{self, ForkAction, ForkPlan, StartRequest};
use crate::call::plan::admit;
use crate::diagnostics::poll_watch::Watched;
use crate::settings::cause::HangupCause;
use crate::settings::{ContentType, Encoding};

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The forks running, by channel UUID and fork name.
static FORKS: Mutex<BTreeMap<(String, String), Arc<Fork>>> = Mutex::new(BTreeMap::new());

fn forks() -> MutexGuard<'static, BTreeMap<(String, String), Arc<Fork>>> {
    lock(&FORKS)
}

fn find(uuid: &str, name: &str) -> Option<Arc<Fork>> {
    forks().get(&(uuid.to_string(), name.to_string())).cloned()
}

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

/// One fork on one channel.
pub struct Fork {
    uuid: String,
    name: String,
    mode: ForkMode,
    shown_uri: String,
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

impl Fork {
    fn is_ended(&self) -> bool {
        self.ended.load(Ordering::Acquire)
    }

    /// Caller audio of one message: L16 as the combiner makes it, to the wire's encoding.
    fn queue_uplink(&self, chunk: &[u8], dropping: &mut bool) {
        let wire = match self.wire.encoding {
            // The combiner writes little-endian, as the wire wants.
            Encoding::L16 => Bytes::copy_from_slice(chunk),
            _ => Bytes::from(g711::to_mulaw_tracks(chunk, self.mode.channels())),
        };
        match self.media.send_audio(wire) {
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
    fn stop(&self, metadata: Option<String>) {
        self.stop_asked.store(true, Ordering::Release);
        if let Some(metadata) = metadata {
            if !self.media.send_text(metadata) {
                tracing::warn!(
                    uuid = self.uuid.as_str(),
                    "fork {}: too many messages waiting; metadata dropped",
                    self.name
                );
            }
        }
        self.media.closes_with(fork_plan::FORK_STOPPED);
        self.ended.store(true, Ordering::Release);
    }

    /// The task has ended: forget the fork and say so.
    fn finish(self: &Arc<Self>, end: ConversationEnd) {
        self.ended.store(true, Ordering::Release);
        {
            let mut forks = forks();
            let key = (self.uuid.clone(), self.name.clone());
            if forks.get(&key).is_some_and(|running| Arc::ptr_eq(running, self)) {
                forks.remove(&key);
            }
        }
        let reason = match &end {
            ConversationEnd::CallerHungUp if self.stop_asked.load(Ordering::Acquire) => "stopped".to_string(),
            ConversationEnd::CallerHungUp => "hangup".to_string(),
            ConversationEnd::ServerClosed { code, .. } => {
                format!("server closed ({})", code.map_or("no code".to_string(), |c| c.to_string()))
            }
            ConversationEnd::Failed { why, .. } => format!("failed: {why}"),
        };
        tracing::info!("fork {} to {} ended: {reason}", self.name, self.shown_uri);
        let headers = vec![
            ("WSBridge-Fork-Name", self.name.clone()),
            ("WSBridge-URI", self.shown_uri.clone()),
            ("WSBridge-Fork-Reason", reason),
            ("WSBridge-Frames-Sent", self.media.stats.frames_sent.load(Ordering::Relaxed).to_string()),
        ];
        events::fire_fork(&self.uuid, "fork_stop", headers, None);
        drain::announce_if_drained();
    }

    fn snapshot(&self) -> CallSnapshot {
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
            for (name, value) in self.media.report() {
                channel.set_variable(&fork_plan::cdr_variable(name, &self.name), &value);
            }
            channel.set_variable(&fork_plan::cdr_variable("wsbridge_uri", &self.name), &self.shown_uri);
        }
    }
}

/// How a fork's task acts on its call: by UUID, and never hanging it up
/// unless the server sends the `hangup` action.
struct ForkControl {
    uuid: String,
    name: String,
}

impl CallControl for ForkControl {
    fn answer(&self) -> bool {
        true
    }

    fn hangup(&self, cause: HangupCause) {
        tracing::debug!("fork {} is over ({cause}); the call goes on", self.name);
    }

    fn hangup_named(&self, cause: &str) {
        if let Some(located) = LocatedSession::find(&self.uuid) {
            let channel = located.session().channel();
            match CauseCode::by_name(cause) {
                Some(code) => channel.hangup_with(code),
                None => channel.hangup(HangupCause::NormalClearing),
            }
        }
    }

    fn send_dtmf(&self, digits: &str, _duration_ms: u32) {
        tracing::debug!("fork {}: the server's DTMF {digits} is ignored: a fork does not send digits", self.name);
    }

    fn event(&self, event: CallEvent) {
        events::fire_fork_event(&self.uuid, &self.name, &event);
    }

    fn call_id(&self) -> &str {
        &self.uuid
    }

    fn session_ends_the_call(&self) -> bool {
        false
    }
}

/// Starts the fork `name` on `session`; the text for the API.
fn start(session: Session<'_>, name: &str, request: StartRequest) -> String {
    let uuid = session.uuid();
    let _span = tracing::info_span!("call", uuid = uuid.as_str()).entered();
    if find(&uuid, name).is_some() {
        return format!("-ERR the fork {name} already runs on {uuid}\n");
    }
    let config = config_store::config();
    if let Err(refusal) = admit(drain::is_draining(), &config) {
        return format!("-ERR {}\n", refusal.why);
    }
    let channel = session.channel();
    let plan = match fork_plan::plan_fork(&channel, &request, &config) {
        Ok(plan) => plan,
        Err(refusal) => {
            tracing::error!("refusing the fork {name}: {refusal}");
            return format!("-ERR {}\n", refusal.why);
        }
    };
    let ForkPlan { call, mode, playback, layout } = plan;
    let wire = call.server.content_type;
    // A Twilio fork's G.711 is decoded as a call's is.
    let decoder = match FreeSwitchDecoder::for_wire(wire) {
        Ok(decoder) => decoder,
        Err(why) => return format!("-ERR {why}\n"),
    };
    let media = Arc::new(CallMedia::new(wire, call.tuning.media, decoder).with_uplink_pump(runtime::uplink_pump()));
    if !playback {
        media.set_listen_only();
    }
    let combiner = Combiner::new(mode, wire.rate);
    let frames_per_message = (media.uplink_message_bytes() / wire.bytes_per_frame()).max(1);
    let fork = Arc::new(Fork {
        uuid: uuid.clone(),
        name: name.to_string(),
        mode,
        shown_uri: call.shown_uri.clone(),
        wire,
        playback,
        paused: AtomicBool::new(false),
        stop_asked: AtomicBool::new(false),
        ended: AtomicBool::new(false),
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
        media: media.clone(),
        started: Instant::now(),
    });
    {
        let mut forks = forks();
        let key = (uuid.clone(), name.to_string());
        if forks.contains_key(&key) {
            return format!("-ERR the fork {name} already runs on {uuid}\n");
        }
        forks.insert(key, fork.clone());
    }
    if let Err(why) = ffi::add_media_bug(session, "wsbridge_fork", fork.clone()) {
        fork.ended.store(true, Ordering::Release);
        forks().remove(&(uuid.clone(), name.to_string()));
        return format!("-ERR {why}\n");
    }
    let mut options = call.tuning.session.clone();
    options.fork_layout = Some(layout);
    let control = ForkControl { uuid: uuid.clone(), name: name.to_string() };
    let task_fork = fork.clone();
    let task = Watched::new(async move {
        let end = conversation::run(call.server, media, control, options).await;
        task_fork.finish(end);
    })
    .instrument(tracing::info_span!("call", uuid = uuid.as_str()));
    if !runtime::spawn(task) {
        fork.ended.store(true, Ordering::Release);
        forks().remove(&(uuid.clone(), name.to_string()));
        return "-ERR mod_wsbridge is shutting down\n".to_string();
    }
    tracing::info!("fork {name} started: {} {} to {}", mode.name(), wire, fork.shown_uri);
    let headers = vec![
        ("WSBridge-Fork-Name", name.to_string()),
        ("WSBridge-URI", fork.shown_uri.clone()),
        ("WSBridge-Fork-Mode", mode.name().to_string()),
        ("WSBridge-Fork-Rate", wire.rate.to_string()),
    ];
    events::fire_fork(&uuid, "fork_start", headers, None);
    format!("+OK fork {name} started on {uuid}\n")
}

/// `uuid_wsbridge_fork <uuid> <command> ...`; also `wsbridge fork ...`.
pub fn run(arguments: &str) -> String {
    let command = match fork_plan::parse(arguments) {
        Ok(command) => command,
        Err(usage) => return usage,
    };
    let (uuid, name) = (command.uuid.as_str(), command.name.as_str());
    let running = find(uuid, name);
    let fork = match (command.action, running) {
        (ForkAction::Start(request), _) => {
            return match LocatedSession::find(uuid) {
                Some(located) => start(located.session(), name, request),
                None => format!("-ERR no channel {uuid}\n"),
            }
        }
        (_, None) => return format!("-ERR no fork {name} on {uuid}\n"),
        (action, Some(fork)) => (action, fork),
    };
    let (action, fork) = fork;
    match action {
        ForkAction::Start(_) => format!("-ERR the fork {name} already runs on {uuid}\n"),
        ForkAction::Stop { metadata } => {
            fork.stop(metadata);
            format!("+OK fork {name} stopping\n")
        }
        ForkAction::Pause => {
            fork.paused.store(true, Ordering::Release);
            format!("+OK fork {name} paused\n")
        }
        ForkAction::Resume => {
            fork.paused.store(false, Ordering::Release);
            format!("+OK fork {name} resumed\n")
        }
        ForkAction::SendText(text) => match fork.media.send_text(text) {
            true => format!("+OK text queued for fork {name}\n"),
            false => format!("-ERR too many messages waiting for fork {name}\n"),
        },
    }
}

/// How many forks are streaming, for `wsbridge status` and the drain.
pub fn running() -> usize {
    forks().len()
}

/// The forks running, for `wsbridge list`.
pub fn snapshots() -> Vec<CallSnapshot> {
    let running: Vec<Arc<Fork>> = forks().values().cloned().collect();
    running.iter().map(|fork| fork.snapshot()).collect()
}

/// `uuid_wsbridge_fork`.
pub struct UuidWsbridgeFork;

impl ApiCommand for UuidWsbridgeFork {
    const NAME: &'static CStr = c"uuid_wsbridge_fork";
    const DESCRIPTION: &'static CStr = c"stream a call that is up to a WebSocket server (fork mode)";
    const SYNTAX: &'static CStr = fork_plan::SYNTAX;

    fn run(arguments: &str) -> String {
        run(arguments)
    }
}

/// The `wsbridge_fork` dialplan application: `start`'s arguments, on the channel running it.
pub struct WsbridgeForkApp;

impl Application for WsbridgeForkApp {
    const NAME: &'static CStr = c"wsbridge_fork";
    const SHORT_DESCRIPTION: &'static CStr = c"stream this call to a WebSocket server (fork mode)";
    const SYNTAX: &'static CStr = c"[name=<id>] <url> [mono|mixed|stereo] [8000|16000|24000|32000|48000] [metadata]";

    fn run(session: Session<'_>, data: &str) {
        let reply = match fork_plan::parse_app(data) {
            Ok((name, request)) => start(session, &name, request),
            Err(usage) => usage,
        };
        if reply.starts_with("-ERR") {
            tracing::error!(uuid = session.uuid().as_str(), "wsbridge_fork: {}", reply.trim_end());
        }
    }
}
