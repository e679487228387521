//! The `wsbridge` endpoint: one leg per call, modelled on mod_loopback's
//! null endpoint. `outgoing_channel` plans the call, requests the leg,
//! initialises its media and stores the call; `on_init` starts the call's
//! WebSocket task; the io routines move 20 ms frames between FreeSWITCH and
//! the call's [`CallMedia`].

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use super::ffi::{self, InboundRequest};
use super::ffi::{
    Channel, ChannelState, Codec, Endpoint, FreeSwitchDecoder, Indication, LocatedSession, OutgoingRequest, PcmFrame,
    PublishedFrame, Session, Timer, Variables, WrittenFrame,
};
use super::{config_store, drain, events, lock, registry, runtime};
use crate::audio::comfort_noise::DownlinkMixer;
use crate::audio::media::CallMedia;
use crate::audio::reframe::Reframer;
use crate::audio::uplink::PushOutcome;
use crate::call::admission::{Progress, ProgressSeen};
use crate::call::conversation::{self, CallControl, CallEvent};
use crate::call::first_message::{channel_name, InboundCall};
use crate::call::plan::{admit, plan_call, CallPlan, CallSources};
use crate::settings::cause::HangupCause;
use crate::settings::CallTuning;
use crate::settings::{Encoding, VariableSource, FRAME_MS};

impl VariableSource for Variables<'_> {
    fn variable(&self, name: &str) -> Option<String> {
        self.get(name)
    }
}

impl VariableSource for Channel<'_> {
    fn variable(&self, name: &str) -> Option<String> {
        Channel::variable(*self, name)
    }
}

/// What the read thread owns: the pacing timer, the frame handed to FreeSWITCH, the noise mixer.
struct ReadSide {
    timer: Timer,
    frame: PcmFrame,
    mixer: DownlinkMixer,
}

/// One `wsbridge` leg, owned by its session from `outgoing_channel` to `on_destroy`.
pub struct WsbridgeCall {
    plan: CallPlan,
    media: Arc<CallMedia>,
    read_codec: Codec,
    #[expect(dead_code, reason = "owned for FreeSWITCH, which writes through it until on_destroy")]
    write_codec: Codec,
    read: Mutex<ReadSide>,
    uplink_reframer: Mutex<Reframer>,
    /// Set for a call from the WebSocket side: the progress its client was told.
    inbound: Option<ProgressSeen>,
    /// A call from the WebSocket side is hung up this long after its answer (its token's `max-seconds`).
    max_seconds: Option<u64>,
}

/// Gathers the call's sources from what originate handed us and plans it.
fn plan(request: &OutgoingRequest<'_, WsbridgeCall>) -> Result<CallPlan, HangupCause> {
    let config = config_store::config();
    admit(drain::is_draining(), &config).map_err(|refusal| {
        registry::count_refused_draining();
        tracing::info!("refusing the call: {refusal}");
        refusal.cause
    })?;
    let originate = request.variables();
    let a_leg = request.a_leg().map(Session::channel);
    // originate writes "service" where the dial string has no destination.
    let destination = request.destination().filter(|d| d != "service");
    let sources = CallSources {
        originate: &originate,
        a_leg: a_leg.as_ref().map(|channel| channel as &dyn VariableSource),
        destination: destination.as_deref(),
    };
    plan_call(&sources, &config).map_err(|refusal| {
        registry::count_refused();
        tracing::error!("refusing the call: {refusal}");
        refusal.cause
    })
}

impl WsbridgeCall {
    /// The leg's codecs and the soft timer that paces reads. The read side
    /// (to the caller) is L16 at the call's rate, as the playout makes it;
    /// the write side (from the caller) is the wire's own codec, so that
    /// FreeSWITCH transcodes, or passes G.711 through untouched.
    fn with_media(session: Session<'_>, plan: CallPlan) -> Result<WsbridgeCall, String> {
        let format = plan.server.content_type;
        let read_codec = Codec::l16(session, format.rate, FRAME_MS)?;
        let write_codec = Codec::named(session, format.encoding.codec_name(), format.rate, FRAME_MS)?;
        let wire_decoder = FreeSwitchDecoder::for_wire(format)?;
        let timer = Timer::soft(session, FRAME_MS, format.samples_per_frame() as u32)?;
        session.use_codecs(&read_codec, &write_codec);
        let media = CallMedia::new(format, plan.tuning.media, wire_decoder).with_uplink_pump(runtime::uplink_pump());
        Ok(WsbridgeCall {
            uplink_reframer: Mutex::new(Reframer::new(media.uplink_message_bytes())),
            media: Arc::new(media),
            read: Mutex::new(ReadSide {
                timer,
                frame: PcmFrame::new(format.samples_per_frame(), format.rate),
                mixer: DownlinkMixer::new(plan.tuning.comfort_noise_dbov, format.rate),
            }),
            read_codec,
            write_codec,
            plan,
            inbound: None,
            max_seconds: None,
        })
    }

    /// A call from the WebSocket side: its client's socket is open already.
    fn inbound(session: Session<'_>, plan: CallPlan, max_seconds: Option<u64>) -> Result<WsbridgeCall, String> {
        let mut call = WsbridgeCall::with_media(session, plan)?;
        call.media.mark_open(&call.plan.shown_uri);
        call.inbound = Some(ProgressSeen::default());
        call.max_seconds = max_seconds;
        Ok(call)
    }
}

impl WsbridgeCall {
    /// Tells the client of a call from the WebSocket side how the call ended, once.
    fn tell_hangup(&self, channel: Channel<'_>) {
        let Some(seen) = &self.inbound else { return };
        if let Some(event) = seen.first_hangup(&channel.hangup_cause_name()) {
            self.media.send_text(event);
        }
    }
}

/// Creates the channel of a call from the WebSocket side and sends it into
/// the dialplan. Returns what its task needs: the media and the control.
pub(super) fn start_inbound_call(
    call: &InboundCall,
    peer: SocketAddr,
) -> Result<(Arc<CallMedia>, LocatedCall, CallTuning), String> {
    let config = config_store::config();
    if drain::is_draining() {
        registry::count_refused_draining();
        return Err("the node is draining".into());
    }
    let (tuning, problems) = CallTuning::from_variables(&|name: &str| config.value(name))?;
    for problem in problems {
        tracing::warn!("{problem}");
    }
    let plan = call.plan(peer, tuning.clone())?;
    let request = InboundRequest {
        channel_name: &channel_name(peer),
        context: &call.context,
        destination: &call.destination,
        caller_id_name: &call.caller_id_name,
        caller_id_number: &call.caller_id_number,
        network_address: &peer.ip().to_string(),
        variables: &call.variables,
    };
    let mut media = None;
    let uuid = ffi::start_inbound(&request, |session| {
        let call = WsbridgeCall::inbound(session, plan, call.max_seconds)?;
        media = Some(call.media.clone());
        Ok(call)
    })?;
    let media = media.ok_or("the call was built without media")?;
    Ok((media, LocatedCall { uuid }, tuning))
}

impl Endpoint for WsbridgeCall {
    fn outgoing(request: &OutgoingRequest<'_, Self>) -> Result<(), HangupCause> {
        let a_leg_uuid = request.a_leg().map(Session::uuid).unwrap_or_default();
        let _span = runtime::call_span(&a_leg_uuid).entered();
        let plan = plan(request)?;
        let shown_uri = plan.shown_uri.clone();
        let leg = request.request_leg().inspect_err(|_| tracing::error!("FreeSWITCH could not create a session"))?;
        let call = match WsbridgeCall::with_media(leg.session(), plan) {
            Ok(call) => call,
            Err(why) => {
                tracing::error!("refusing the call: {why}");
                leg.destroy();
                return Err(HangupCause::ServiceNotImplemented);
            }
        };
        leg.attach(Box::new(call));
        leg.adopt_caller_profile();
        let channel = leg.session().channel();
        channel.set_name(&format!("wsbridge/{shown_uri}"));
        channel.set_state(ChannelState::Init);
        channel.set_audio_flag();
        tracing::debug!("new leg {} for {shown_uri}", channel.name());
        Ok(())
    }

    /// The UUID is final by now, so the WebSocket task starts here.
    /// A call from the WebSocket side has its task already.
    fn on_init(&self, session: Session<'_>) -> bool {
        let uuid = session.uuid();
        let channel = session.channel();
        if self.inbound.is_some() {
            registry::register_call(&uuid, registry::CallEntry::new(self.plan.shown_uri.clone(), self.media.clone()));
            channel.set_state(ChannelState::Routing);
            return true;
        }
        let task = conversation::run(
            self.plan.server.clone(),
            self.media.clone(),
            LocatedCall { uuid: uuid.clone() },
            self.plan.tuning.connection.clone(),
        );
        registry::register_call(&uuid, registry::CallEntry::new(self.plan.shown_uri.clone(), self.media.clone()));
        if !runtime::spawn_on_channel(&uuid, task) {
            tracing::error!(uuid = uuid.as_str(), "mod_wsbridge is shutting down; refusing the call");
            channel.hangup(HangupCause::DestinationOutOfOrder);
            return true;
        }
        channel.set_state(ChannelState::Routing);
        true
    }

    fn on_hangup(&self, session: Session<'_>) {
        let channel = session.channel();
        self.tell_hangup(channel);
        // Unless the server closed first, the task now sends what is queued and closes with 1000.
        self.media.caller_closes();
        for (name, value) in crate::call::api::cdr_variables(&self.media.figures()) {
            channel.set_variable(name, &value);
        }
    }

    fn on_destroy(self: Box<Self>, session: Session<'_>) {
        registry::unregister_call(&session.uuid());
        drain::announce_if_drained();
        self.media.stop_conversation();
        // Dropping the call releases its timer and codecs.
    }

    fn on_kill(&self, session: Session<'_>) {
        // A hangup kills the channel before on_hangup: the client's event goes before the task ends.
        self.tell_hangup(session.channel());
        self.media.stop_conversation();
    }

    fn read_frame(&self, session: Session<'_>) -> Option<PublishedFrame> {
        if !session.channel().is_ready() {
            return None;
        }
        let mut read = lock(&self.read);
        let read = &mut *read;
        read.timer.next();
        let samples = read.frame.samples_mut();
        let heard = self.media.next_downlink_frame(samples).is_sound();
        read.mixer.finish_frame(samples, heard);
        Some(read.frame.publish(&self.read_codec, !heard && self.plan.tuning.cng_frames))
    }

    fn write_frame(&self, session: Session<'_>, frame: WrittenFrame<'_>) {
        if !self.media.is_open() {
            return;
        }
        let format = self.plan.server.content_type;
        let silence;
        let data = if frame.pcm.is_empty() {
            silence = vec![format.encoding.silence_byte(); format.bytes_per_frame()];
            &silence[..]
        } else {
            frame.pcm
        };
        let mut reframer = lock(&self.uplink_reframer);
        reframer.push(data, |chunk| {
            // FreeSWITCH's L16 is in host order; the wire is little-endian. G.711 has no order.
            let outcome = if cfg!(target_endian = "little") || format.encoding != Encoding::L16 {
                self.media.send_audio(chunk)
            } else {
                let wire: Vec<u8> =
                    chunk.chunks_exact(2).flat_map(|s| i16::from_ne_bytes([s[0], s[1]]).to_le_bytes()).collect();
                self.media.send_audio(&wire)
            };
            if let PushOutcome::DroppedOldest { first_of_episode: true } = outcome {
                tracing::warn!(
                    uuid = session.uuid().as_str(),
                    "the server is not keeping up; dropping the oldest caller audio"
                );
            }
        });
    }

    fn send_dtmf(&self, _session: Session<'_>, digit: char, duration_ms: u32) {
        if !self.media.send_dtmf(digit, duration_ms) {
            tracing::warn!("too many DTMF messages waiting for the server; digit {digit} dropped");
        }
    }

    fn on_indication(&self, session: Session<'_>, indication: Indication) {
        let Some(seen) = &self.inbound else { return };
        let progress = match indication {
            Indication::Ringing => Progress::Ringing,
            Indication::Progress => Progress::EarlyMedia,
            Indication::Answer => Progress::Answered,
        };
        if let Some(event) = seen.first(progress) {
            self.media.send_text(event);
            if let (Progress::Answered, Some(seconds)) = (progress, self.max_seconds) {
                session.schedule_hangup(seconds, HangupCause::AllottedTimeout);
                tracing::debug!("hanging up {seconds} s after the answer (the token's max-seconds)");
            }
        }
    }
}

/// How the WebSocket task acts on its call: by UUID, never by pointer.
pub(super) struct LocatedCall {
    uuid: String,
}

impl LocatedCall {
    fn with_channel(&self, action: impl FnOnce(Channel<'_>)) -> bool {
        LocatedSession::with_channel(&self.uuid, action)
    }
}

impl CallControl for LocatedCall {
    fn answer(&self) -> bool {
        self.with_channel(|channel| channel.mark_answered())
    }

    fn hangup(&self, cause: HangupCause) {
        self.with_channel(|channel| channel.hangup(cause));
    }

    fn hangup_named(&self, cause: &str) {
        self.with_channel(|channel| channel.hangup_named(cause));
    }

    /// Fires the call's event; an error also counts the call as failed.
    fn event(&self, event: CallEvent) {
        if let CallEvent::Error { .. } = event {
            registry::count_failed();
        }
        events::fire_call_event(&self.uuid, &event);
    }

    fn call_id(&self) -> &str {
        &self.uuid
    }

    /// The caller is the leg bridged to ours; a call with none (an originate) moves our own leg.
    fn transfer(&self, extension: &str) {
        let partner = LocatedSession::find(&self.uuid).and_then(|ours| ours.session().channel().partner_uuid());
        let target = partner.unwrap_or_else(|| self.uuid.clone());
        let moved = LocatedSession::find(&target).is_some_and(|located| located.session().transfer(extension));
        if !moved {
            tracing::warn!("the transfer of {target} to {extension} failed; the call goes on");
        }
    }

    fn send_dtmf(&self, digits: &str, duration_ms: u32) {
        // Queued on our leg as if received, so a bridge passes it to the caller.
        self.with_channel(|channel| digits.chars().for_each(|digit| channel.queue_dtmf(digit, duration_ms)));
    }
}
