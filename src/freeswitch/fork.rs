//! Fork mode: a call that is already up, streamed to a server through a
//! media bug (`uuid_wsbridge_fork`, `wsbridge fork`, the `wsbridge_fork`
//! application). This file starts forks, runs their commands and ends them;
//! a fork itself, and what its bug does with the audio, is
//! [`super::fork_stream`]'s. The fork's task is the endpoint's session, with
//! a [`CallControl`] whose session never ends the call: only the server's
//! `hangup` action does.

use std::ffi::CStr;
use std::sync::Arc;

use super::ffi::{self, ApiCommand, Application, FreeSwitchDecoder, LocatedSession, Session};
use super::fork_stream::{Fork, ForkParts};
use super::{config_store, drain, events, registry, runtime};
use crate::audio::media::CallMedia;
use crate::call::conversation::{self, CallControl, CallEvent, ConversationEnd};
use crate::call::fork_plan::{self, ForkAction, ForkPlan, StartRequest};
use crate::call::plan::admit;
use crate::settings::cause::HangupCause;

/// How a fork's task acts on its call: by UUID. Its session never ends the
/// call, so the conversation never hangs it up; the server's `hangup` action
/// does, where `fork-allow-hangup` lets it.
struct ForkControl {
    uuid: String,
    name: String,
    allow_hangup: bool,
}

impl ForkControl {
    fn may_hang_up(&self) -> bool {
        if !self.allow_hangup {
            tracing::warn!(
                "fork {}: the server asked to hang up the call; ignored (fork-allow-hangup is false)",
                self.name
            );
        }
        self.allow_hangup
    }
}

impl CallControl for ForkControl {
    fn answer(&self) -> bool {
        true
    }

    fn hangup(&self, cause: HangupCause) {
        if self.may_hang_up() {
            LocatedSession::with_channel(&self.uuid, |channel| channel.hangup(cause));
        }
    }

    fn hangup_named(&self, cause: &str) {
        if self.may_hang_up() {
            LocatedSession::with_channel(&self.uuid, |channel| channel.hangup_named(cause));
        }
    }

    fn transfer(&self, extension: &str) {
        tracing::warn!("fork {}: a transfer to {extension} is ignored: a fork does not move its call", self.name);
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

/// Plans the fork `name` on `session` and makes it; the API's `-ERR` text when it cannot be.
fn plan(session: Session<'_>, uuid: &str, name: &str, request: &StartRequest) -> Result<(Fork, ForkPlan), String> {
    if registry::fork(uuid, name).is_some() {
        return Err(format!("-ERR the fork {name} already runs on {uuid}\n"));
    }
    let config = config_store::config();
    admit(drain::is_draining(), &config).map_err(|refusal| format!("-ERR {}\n", refusal.why))?;
    let plan = fork_plan::plan_fork(&session.channel(), request, &config).map_err(|refusal| {
        tracing::error!("refusing the fork {name}: {refusal}");
        format!("-ERR {}\n", refusal.why)
    })?;
    let wire = plan.call.server.content_type;
    // A Twilio fork's G.711 is decoded as a call's is.
    let decoder = FreeSwitchDecoder::for_wire(wire).map_err(|why| format!("-ERR {why}\n"))?;
    let media = CallMedia::new(wire, plan.call.tuning.media, decoder).with_uplink_pump(runtime::uplink_pump());
    if !plan.playback {
        media.set_listen_only();
    }
    let fork = Fork::new(ForkParts {
        uuid: uuid.to_string(),
        name: name.to_string(),
        mode: plan.mode,
        shown_uri: plan.call.shown_uri.clone(),
        protocol: plan.call.server.protocol,
        wire,
        media: Arc::new(media),
        playback: plan.playback,
    });
    Ok((fork, plan))
}

/// Starts the fork `name` on `session`; the text for the API.
fn start(session: Session<'_>, name: &str, request: StartRequest) -> String {
    let uuid = session.uuid();
    let _span = runtime::call_span(&uuid).entered();
    let (fork, ForkPlan { call, mode, playback: _, allow_hangup, layout }) = match plan(session, &uuid, name, &request)
    {
        Ok(planned) => planned,
        Err(reply) => return reply,
    };
    let fork = Arc::new(fork);
    if !registry::add_fork(&uuid, name, fork.clone()) {
        return format!("-ERR the fork {name} already runs on {uuid}\n");
    }
    if let Err(why) = ffi::add_media_bug(session, "wsbridge_fork", fork.clone()) {
        forget(&uuid, name, &fork);
        return format!("-ERR {why}\n");
    }
    let mut options = call.tuning.connection.clone();
    options.fork_layout = Some(layout);
    let control = ForkControl { uuid: uuid.clone(), name: name.to_string(), allow_hangup };
    let (task_fork, media, wire) = (fork.clone(), fork.media(), call.server.content_type);
    let task = async move {
        let end = conversation::run(call.server, media, control, options).await;
        finish(&task_fork, end);
    };
    if !runtime::spawn_on_channel(&uuid, task) {
        forget(&uuid, name, &fork);
        return "-ERR mod_wsbridge is shutting down\n".to_string();
    }
    tracing::info!("fork {name} started: {} {} to {}", mode.name(), wire, fork.shown_uri());
    let headers = vec![
        ("WSBridge-Fork-Name", name.to_string()),
        ("WSBridge-URI", fork.shown_uri().to_string()),
        ("WSBridge-Fork-Mode", mode.name().to_string()),
        ("WSBridge-Fork-Rate", wire.rate.to_string()),
    ];
    events::fire_on_channel(&uuid, "fork_start", headers, None);
    format!("+OK fork {name} started on {uuid}\n")
}

/// A fork that did not start: ended, and forgotten.
fn forget(uuid: &str, name: &str, fork: &Arc<Fork>) {
    fork.mark_ended();
    registry::remove_fork(uuid, name, fork);
}

/// The fork's task has ended: forget the fork and say so.
fn finish(fork: &Arc<Fork>, end: ConversationEnd) {
    let headers = fork.ended_with(&end);
    registry::remove_fork(fork.uuid(), fork.name(), fork);
    events::fire_on_channel(fork.uuid(), "fork_stop", headers, None);
    drain::announce_if_drained();
}

/// `uuid_wsbridge_fork <uuid> <command> ...`; also `wsbridge fork ...`.
pub fn run(arguments: &str) -> String {
    let command = match fork_plan::parse(arguments) {
        Ok(command) => command,
        Err(usage) => return usage,
    };
    let (uuid, name) = (command.uuid.as_str(), command.name.as_str());
    let fork = match (command.action, registry::fork(uuid, name)) {
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
            fork.set_paused(true);
            format!("+OK fork {name} paused\n")
        }
        ForkAction::Resume => {
            fork.set_paused(false);
            format!("+OK fork {name} resumed\n")
        }
        ForkAction::SendText(text) => fork.send_text(text),
    }
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
