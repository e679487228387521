//! The one tokio runtime all calls share, started at load and stopped at
//! unload; what it was started with; and how tasks are spawned on it.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing::instrument::Instrumented;
use tracing::{Instrument, Span};

use super::lock;
use crate::audio::uplink_pump::UplinkPump;
use crate::settings::{ModuleConfig, DOWNLINK_BATCH_MS, RUNTIME_THREADS, UPLINK_BATCH_MS};
use crate::support::poll_watch::Watched;

static RUNTIME: Mutex<Option<tokio::runtime::Runtime>> = Mutex::new(None);
/// The running runtime's uplink pump; none when batching is off.
static UPLINK_PUMP: Mutex<Option<Arc<UplinkPump>>> = Mutex::new(None);
static LIVE_THREADS: AtomicUsize = AtomicUsize::new(0);
/// The worker threads the running runtime was built with.
static WORKERS: AtomicUsize = AtomicUsize::new(0);

/// The settings the runtime reads when it starts, and only then: a
/// `reloadxml` changes what is configured, not what runs.
const READ_AT_START: [&str; 3] = [RUNTIME_THREADS.param, UPLINK_BATCH_MS.param, DOWNLINK_BATCH_MS.param];
/// Those settings as the running runtime was started with them, as `ModuleConfig::describe` words them.
static STARTED_WITH: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());

pub fn workers() -> usize {
    WORKERS.load(Ordering::Relaxed)
}

/// The settings read only at start, with the values the runtime runs with.
pub fn started_with() -> Vec<(String, String)> {
    lock(&STARTED_WITH).clone()
}

/// Starts the runtime with `config`'s threads and uplink batch (zero: no pump).
pub fn start(config: &ModuleConfig) -> std::io::Result<()> {
    let (workers, uplink_batch) = (config.runtime_threads, config.uplink_batch);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .thread_name("wsbridge")
        .enable_all()
        .on_thread_start(|| {
            LIVE_THREADS.fetch_add(1, Ordering::SeqCst);
        })
        .on_thread_stop(|| {
            LIVE_THREADS.fetch_sub(1, Ordering::SeqCst);
        })
        .build()?;
    runtime.spawn(crate::support::poll_watch::heartbeat());
    let pump = (!uplink_batch.is_zero()).then(|| UplinkPump::new(uplink_batch));
    if let Some(pump) = &pump {
        runtime.spawn(pump.clone().run());
    }
    *lock(&UPLINK_PUMP) = pump;
    if let Err(error) = crate::wire::reactor::start(config.downlink_batch) {
        // Calls then read their sockets in their tasks, as before the reactor.
        tracing::error!("cannot start the downlink reader thread: {error}; server audio goes through the runtime");
    }
    *lock(&RUNTIME) = Some(runtime);
    WORKERS.store(workers, Ordering::Relaxed);
    *lock(&STARTED_WITH) =
        config.describe().into_iter().filter(|(name, _)| READ_AT_START.contains(&name.as_str())).collect();
    Ok(())
}

/// Where calls batch their caller audio's wake-ups; none: frame by frame.
pub fn uplink_pump() -> Option<Arc<UplinkPump>> {
    lock(&UPLINK_PUMP).clone()
}

/// Spawns a task; false when the runtime is stopped.
pub fn spawn(task: impl Future<Output = impl Send + 'static> + Send + 'static) -> bool {
    let guard = lock(&RUNTIME);
    match guard.as_ref() {
        Some(runtime) => {
            runtime.spawn(task);
            true
        }
        None => false,
    }
}

/// The span of what is done for the channel `uuid` (its call, or a fork on it).
pub fn call_span(uuid: &str) -> Span {
    tracing::info_span!("call", uuid = uuid)
}

/// `task` as the runtime runs every call's and client's: its slow polls
/// counted and logged ([`Watched`]), in `span`.
pub fn watched<F: Future>(span: Span, task: F) -> Instrumented<Watched<F>> {
    Watched::new(task).instrument(span)
}

/// Spawns the task of a call or fork on the channel `uuid`, watched, in the
/// channel's span; false when the runtime is stopped.
pub fn spawn_on_channel(uuid: &str, task: impl Future<Output = impl Send + 'static> + Send + 'static) -> bool {
    spawn(watched(call_span(uuid), task))
}

/// Stops the runtime, giving tasks `grace` to finish. Returns true when
/// every runtime thread has exited, so the module's code may be unloaded.
pub fn stop(grace: Duration) -> bool {
    lock(&UPLINK_PUMP).take();
    let runtime = lock(&RUNTIME).take();
    if let Some(runtime) = runtime {
        runtime.shutdown_timeout(grace);
    }
    // After the tasks: their connections leave it as they drop.
    crate::wire::reactor::stop();
    let deadline = std::time::Instant::now() + grace;
    while LIVE_THREADS.load(Ordering::SeqCst) > 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    LIVE_THREADS.load(Ordering::SeqCst) == 0
}
