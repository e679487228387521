//! What a call does for a speech-to-speech model beyond playing its audio:
//! barge-in, function calls (answered through the API, or carried out by the
//! module itself), transcripts, token usage and errors.

use super::*;
use crate::audio::playout::AfterPlayout;
use crate::settings::agent::AgentOptions;
use crate::wire::protocol::AgentEvent;

pub(super) async fn act_on(
    event: AgentEvent,
    media: &CallMedia,
    control: &impl CallControl,
    decoder: &dyn Decoder,
    agent: &AgentOptions,
) {
    match event {
        AgentEvent::BargeIn => {
            let heard = media.interrupt_playout();
            for truncate in decoder.interrupted(&heard) {
                tracing::debug!("barge-in: {truncate}");
                send(media, truncate);
            }
        }
        AgentEvent::FunctionCall { name, call_id, arguments } => {
            let builtin = builtin(&name, &call_id, &arguments, media, agent);
            if builtin.is_none() {
                media.expect_function_result(&call_id);
            }
            control.event(CallEvent::FunctionCall { name, call_id, arguments, builtin });
        }
        AgentEvent::Transcript { speaker, text, reply, truncated } => {
            let turn_latency_ms = match reply {
                Some(reply) => media.turn_latency_of(reply).await,
                None => None,
            };
            control.event(CallEvent::Transcript { speaker: speaker.name(), text, truncated, turn_latency_ms });
        }
        AgentEvent::Usage { input_tokens, output_tokens } => media.count_tokens(input_tokens, output_tokens),
        AgentEvent::ServerError(what) => {
            tracing::warn!("the server reported an error: {what}");
            control.event(CallEvent::ServerError { what });
        }
        AgentEvent::Send(text) => send(media, text),
    }
}

fn send(media: &CallMedia, text: String) {
    if !media.send_text(text) {
        tracing::warn!("too many messages waiting for the server; one for the model dropped");
    }
}

/// Carries out the call's own functions: `hangup` and `transfer` once the
/// queued reply has played. Returns which it was, or `None` for a function
/// the API answers.
fn builtin(
    name: &str,
    call_id: &str,
    arguments: &str,
    media: &CallMedia,
    agent: &AgentOptions,
) -> Option<&'static str> {
    if agent.hangup_function.as_deref() == Some(name) {
        tracing::info!("the model calls {name}: hanging up once the queued reply has played");
        if !media.after_playout(AfterPlayout::Hangup) {
            tracing::warn!("too many actions waiting; {name} ignored");
        }
        return Some("hangup");
    }
    if agent.transfer_function.as_deref() != Some(name) {
        return None;
    }
    let destination = serde_json::from_str::<serde_json::Value>(arguments)
        .ok()
        .and_then(|arguments| arguments.get("destination").and_then(|d| d.as_str()).map(str::to_string));
    match destination {
        Some(destination) if agent.may_transfer_to(&destination) => {
            tracing::info!("the model calls {name}: transferring to {destination} once the queued reply has played");
            if !media.after_playout(AfterPlayout::Transfer(destination)) {
                tracing::warn!("too many actions waiting; {name} ignored");
            }
        }
        refused => {
            let shown: String = refused.as_deref().unwrap_or("(none)").chars().take(64).collect();
            tracing::warn!("the model calls {name} to '{shown}', which wsbridge_openai_transfer_pattern refuses");
            let output = serde_json::json!({
                "error": "transfer refused: the destination is not one this call may be transferred to"
            });
            if !media.send_function_result(call_id, output.to_string()) {
                tracing::warn!("too many messages waiting for the server; the refusal of {name} dropped");
            }
        }
    }
    Some("transfer")
}

/// An action whose audio has played.
pub(super) fn carry_out(action: AfterPlayout, control: &impl CallControl) {
    match action {
        AfterPlayout::Hangup => {
            tracing::info!("the queued reply has played; hanging up");
            control.hangup(HangupCause::NormalClearing);
        }
        AfterPlayout::Transfer(extension) => {
            tracing::info!("the queued reply has played; transferring to {extension}");
            control.transfer(&extension);
        }
    }
}
