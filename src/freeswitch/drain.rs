//! This node's drain: started by `wsbridge drain on`, by the `drain` param or
//! by FreeSWITCH's shutdown, and announced with `wsbridge::drained` once the
//! last call has ended.

use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use super::ffi::{EventKind, EventListener};
use super::{config_store, events, lock, registry};
use crate::call::drain_state::{DrainReason, DrainReport, DrainState};

static STATE: Mutex<DrainState> = Mutex::new(DrainState::new());
/// The `drain` param as last read, so that a reload changes the state only when the file did.
static FILE_VALUE: Mutex<Option<bool>> = Mutex::new(None);

fn state() -> MutexGuard<'static, DrainState> {
    lock(&STATE)
}

pub fn is_draining() -> bool {
    state().is_draining()
}

pub fn report() -> DrainReport {
    state().report(Instant::now())
}

pub fn start(reason: DrainReason) {
    if state().start(Instant::now(), reason) {
        let (calls, forks) = registry::counts();
        tracing::info!(
            "draining ({}): new calls are refused with {}; {} call(s) and {} fork(s) up",
            reason.name(),
            config_store::config().drain_cause,
            calls,
            forks
        );
    }
    announce_if_drained();
}

pub fn stop() {
    if state().stop() {
        tracing::info!("no longer draining: new calls are taken");
    }
}

/// Fires `wsbridge::drained` when the node drains and no call or fork is
/// left; called when draining starts and whenever a call or fork ends.
pub fn announce_if_drained() {
    let calls_up = registry::everything_up();
    let mut state = state();
    let reason = state.report(Instant::now()).reason;
    let took = state.take_drained(calls_up, Instant::now());
    drop(state);
    if let (Some(took), Some(reason)) = (took, reason) {
        tracing::info!("drained: no call or fork is left, {:.1} s after draining began", took.as_secs_f64());
        events::fire_drained(took, reason);
    }
}

/// Applies the `drain` param when its value in the file has changed, so
/// that a `reloadxml` does not undo `wsbridge drain on|off`.
pub fn follow_config(drain: bool) {
    let mut last = lock(&FILE_VALUE);
    if *last == Some(drain) {
        return;
    }
    let first_read = last.is_none();
    *last = Some(drain);
    drop(last);
    match drain {
        true => start(DrainReason::Config),
        false if !first_read => stop(),
        false => {}
    }
}

/// `fsctl shutdown elegant` waits for calls to end: take no new ones meanwhile.
pub struct OnShutdownRequested;

impl EventListener for OnShutdownRequested {
    const EVENT: EventKind = EventKind::ShutdownRequested;

    fn on_event() {
        start(DrainReason::Shutdown);
    }
}
