//! The CUSTOM events `wsbridge::<kind>` that event-socket consumers see.

use std::ffi::CStr;
use std::time::Duration;

use super::ffi::{self, LocatedSession};
use crate::call::conversation::CallEvent;
use crate::call::drain_state::DrainReason;

pub const SUBCLASSES: [&CStr; 12] = [
    c"wsbridge::connect",
    c"wsbridge::disconnect",
    c"wsbridge::error",
    c"wsbridge::message",
    c"wsbridge::mark",
    c"wsbridge::reconnecting",
    c"wsbridge::reconnected",
    c"wsbridge::drained",
    c"wsbridge::fork_start",
    c"wsbridge::fork_stop",
    c"wsbridge::function_call",
    c"wsbridge::transcript",
];
const OWNER: &CStr = c"mod_wsbridge";

pub fn reserve_subclasses() -> Result<(), String> {
    SUBCLASSES.iter().try_for_each(|subclass| ffi::reserve_subclass(OWNER, subclass))
}

pub fn free_subclasses() {
    for subclass in SUBCLASSES {
        ffi::free_subclass(OWNER, subclass);
    }
}

/// The headers and body of a call's event.
fn describe(event: &CallEvent) -> (Vec<(&'static str, String)>, Option<&str>) {
    match event {
        CallEvent::Connect { uri, connect_ms } => {
            (vec![("WSBridge-URI", uri.clone()), ("WSBridge-Connect-MS", connect_ms.to_string())], None)
        }
        CallEvent::Disconnect { code, reason } => (
            vec![
                ("WSBridge-Close-Code", code.map_or_else(String::new, |c| c.to_string())),
                ("WSBridge-Close-Reason", reason.clone()),
            ],
            None,
        ),
        CallEvent::Error { what } | CallEvent::ServerError { what } => (vec![("WSBridge-Error", what.clone())], None),
        CallEvent::FunctionCall { name, call_id, arguments, builtin } => {
            let mut headers =
                vec![("WSBridge-Function-Name", name.clone()), ("WSBridge-Function-Call-ID", call_id.clone())];
            if let Some(builtin) = builtin {
                headers.push(("WSBridge-Function-Builtin", builtin.to_string()));
            }
            (headers, Some(arguments.as_str()))
        }
        CallEvent::Transcript { speaker, text, truncated, turn_latency_ms } => {
            let mut headers =
                vec![("WSBridge-Role", speaker.to_string()), ("WSBridge-Truncated", truncated.to_string())];
            if let Some(ms) = turn_latency_ms {
                headers.push(("WSBridge-Turn-Latency-Ms", ms.to_string()));
            }
            (headers, Some(text.as_str()))
        }
        CallEvent::Message { body } => (Vec::new(), Some(body.as_str())),
        CallEvent::Reconnecting { why } => (vec![("WSBridge-Error", why.clone())], None),
        CallEvent::Reconnected { uri, gap_ms, reconnects } => (
            vec![
                ("WSBridge-URI", uri.clone()),
                ("WSBridge-Gap-MS", gap_ms.to_string()),
                ("WSBridge-Reconnects", reconnects.to_string()),
            ],
            None,
        ),
        CallEvent::Mark { name, cleared } => {
            (vec![("WSBridge-Mark-Name", name.clone()), ("WSBridge-Mark-Cleared", cleared.to_string())], None)
        }
    }
}

/// Fires a call's `wsbridge::<kind>` with the channel's own headers.
pub fn fire_call_event(uuid: &str, event: &CallEvent) {
    let (headers, body) = describe(event);
    let located = LocatedSession::find(uuid);
    let session = located.as_ref().map(LocatedSession::session);
    ffi::fire_custom_event(session, &format!("wsbridge::{}", event.kind()), &headers, body);
}

/// Fires `wsbridge::<kind>` on a channel that may be gone already: then
/// with its UUID alone.
pub fn fire_on_channel(uuid: &str, kind: &str, mut headers: Vec<(&'static str, String)>, body: Option<&str>) {
    let located = LocatedSession::find(uuid);
    let session = located.as_ref().map(LocatedSession::session);
    if session.is_none() {
        headers.push(("Unique-ID", uuid.to_string()));
    }
    ffi::fire_custom_event(session, &format!("wsbridge::{kind}"), &headers, body);
}

/// A fork's session event: as a call's, with `WSBridge-Fork-Name`.
pub fn fire_fork_event(uuid: &str, fork: &str, event: &CallEvent) {
    let (mut headers, body) = describe(event);
    headers.push(("WSBridge-Fork-Name", fork.to_string()));
    fire_on_channel(uuid, event.kind(), headers, body);
}

/// Fires `wsbridge::drained`: the node drains and its last call has ended.
pub fn fire_drained(took: Duration, reason: DrainReason) {
    let headers = [
        ("WSBridge-Drain-Seconds", format!("{:.3}", took.as_secs_f64())),
        ("WSBridge-Drain-Reason", reason.name().to_string()),
    ];
    ffi::fire_custom_event(None, "wsbridge::drained", &headers, None);
}
