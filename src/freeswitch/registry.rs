//! Everything that runs on a channel, in one place: the endpoint's calls and
//! the forks streaming calls that are up, by channel UUID (and fork name).
//! `wsbridge status`, `list` and `kill`, the fork commands and the drain ask
//! here. Also the module's call counters.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use super::fork_stream::Fork;
use super::lock;
use crate::audio::media::CallMedia;
use crate::call::api::{CallSnapshot, Totals};

/// A call of the `wsbridge` endpoint: the channel is its leg.
pub struct CallEntry {
    uri: String,
    media: Arc<CallMedia>,
    started: Instant,
}

impl CallEntry {
    pub fn new(uri: String, media: Arc<CallMedia>) -> Self {
        CallEntry { uri, media, started: Instant::now() }
    }
}

/// What runs on a channel.
pub enum OnChannel {
    /// The endpoint's call, whose leg the channel is.
    Call(CallEntry),
    /// A fork streaming the channel's audio (`uuid_wsbridge_fork`).
    Fork(Arc<Fork>),
}

/// Where something runs: the channel's UUID, and the fork's name for a fork.
type Slot = (String, Option<String>);

static RUNNING: Mutex<BTreeMap<Slot, OnChannel>> = Mutex::new(BTreeMap::new());
static CALLS_TOTAL: AtomicU64 = AtomicU64::new(0);
static CALLS_REFUSED: AtomicU64 = AtomicU64::new(0);
static CALLS_FAILED: AtomicU64 = AtomicU64::new(0);
static CALLS_REFUSED_DRAINING: AtomicU64 = AtomicU64::new(0);

fn running() -> MutexGuard<'static, BTreeMap<Slot, OnChannel>> {
    lock(&RUNNING)
}

fn call_slot(uuid: &str) -> Slot {
    (uuid.to_string(), None)
}

fn fork_slot(uuid: &str, name: &str) -> Slot {
    (uuid.to_string(), Some(name.to_string()))
}

pub fn register_call(uuid: &str, entry: CallEntry) {
    CALLS_TOTAL.fetch_add(1, Ordering::Relaxed);
    running().insert(call_slot(uuid), OnChannel::Call(entry));
}

pub fn unregister_call(uuid: &str) {
    running().remove(&call_slot(uuid));
}

pub fn is_call_up(uuid: &str) -> bool {
    running().contains_key(&call_slot(uuid))
}

/// The media of the endpoint's call whose leg is `uuid`.
pub fn call_media(uuid: &str) -> Option<Arc<CallMedia>> {
    match running().get(&call_slot(uuid)) {
        Some(OnChannel::Call(call)) => Some(call.media.clone()),
        _ => None,
    }
}

/// Adds the fork `name` on the channel `uuid`; false when one by that name runs there already.
pub fn add_fork(uuid: &str, name: &str, fork: Arc<Fork>) -> bool {
    let mut running = running();
    let slot = fork_slot(uuid, name);
    if running.contains_key(&slot) {
        return false;
    }
    running.insert(slot, OnChannel::Fork(fork));
    true
}

/// The fork `name` running on the channel `uuid`.
pub fn fork(uuid: &str, name: &str) -> Option<Arc<Fork>> {
    match running().get(&fork_slot(uuid, name)) {
        Some(OnChannel::Fork(fork)) => Some(fork.clone()),
        _ => None,
    }
}

/// Forgets `fork`, if it is still the one running under its name (not a newer one).
pub fn remove_fork(uuid: &str, name: &str, fork: &Arc<Fork>) {
    let mut running = running();
    let slot = fork_slot(uuid, name);
    if matches!(running.get(&slot), Some(OnChannel::Fork(current)) if Arc::ptr_eq(current, fork)) {
        running.remove(&slot);
    }
}

/// How many calls and how many forks are up.
pub fn counts() -> (usize, usize) {
    let running = running();
    let forks = running.keys().filter(|(_, fork)| fork.is_some()).count();
    (running.len() - forks, forks)
}

/// Calls and forks together: what a drain waits for.
pub fn everything_up() -> usize {
    running().len()
}

/// A call refused before its leg existed (bad settings or policy).
pub fn count_refused() {
    CALLS_REFUSED.fetch_add(1, Ordering::Relaxed);
}

/// A call refused because the node was draining.
pub fn count_refused_draining() {
    CALLS_REFUSED_DRAINING.fetch_add(1, Ordering::Relaxed);
}

/// A call whose server was unreachable or broke.
pub fn count_failed() {
    CALLS_FAILED.fetch_add(1, Ordering::Relaxed);
}

pub fn totals() -> Totals {
    Totals {
        calls: CALLS_TOTAL.load(Ordering::Relaxed),
        refused: CALLS_REFUSED.load(Ordering::Relaxed),
        failed: CALLS_FAILED.load(Ordering::Relaxed),
        refused_draining: CALLS_REFUSED_DRAINING.load(Ordering::Relaxed),
    }
}

/// For `wsbridge list`: the calls, then the forks, each by UUID.
pub fn snapshots() -> Vec<CallSnapshot> {
    let mut calls = Vec::new();
    let mut forks = Vec::new();
    for ((uuid, _), running) in running().iter() {
        match running {
            OnChannel::Call(call) => calls.push(CallSnapshot::of(&call.media, uuid, &call.uri, call.started.elapsed())),
            OnChannel::Fork(fork) => forks.push(fork.clone()),
        }
    }
    // A fork's figures are read outside the lock, as its callbacks take its own locks.
    calls.extend(forks.iter().map(|fork| fork.snapshot()));
    calls
}
