//! The calls up, by UUID, and the module's call counters: what `wsbridge
//! status`, `list` and `kill` report on.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use crate::audio::media::CallMedia;
use crate::call::api::{CallSnapshot, Totals};

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

static CALLS: Mutex<BTreeMap<String, Arc<CallEntry>>> = Mutex::new(BTreeMap::new());
static CALLS_TOTAL: AtomicU64 = AtomicU64::new(0);
static CALLS_REFUSED: AtomicU64 = AtomicU64::new(0);
static CALLS_FAILED: AtomicU64 = AtomicU64::new(0);
static CALLS_REFUSED_DRAINING: AtomicU64 = AtomicU64::new(0);

fn calls() -> MutexGuard<'static, BTreeMap<String, Arc<CallEntry>>> {
    CALLS.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub fn register(uuid: &str, entry: CallEntry) {
    CALLS_TOTAL.fetch_add(1, Ordering::Relaxed);
    calls().insert(uuid.to_string(), Arc::new(entry));
}

pub fn unregister(uuid: &str) {
    calls().remove(uuid);
}

pub fn is_up(uuid: &str) -> bool {
    calls().contains_key(uuid)
}

pub fn active_calls() -> usize {
    calls().len()
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

pub fn snapshots() -> Vec<CallSnapshot> {
    calls().iter().map(|(uuid, call)| CallSnapshot::of(&call.media, uuid, &call.uri, call.started.elapsed())).collect()
}
