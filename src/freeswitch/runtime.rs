//! The one tokio runtime all calls share, started at load and stopped at unload.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::audio::uplink_pump::UplinkPump;

static RUNTIME: Mutex<Option<tokio::runtime::Runtime>> = Mutex::new(None);
/// The running runtime's uplink pump; none when batching is off.
static UPLINK_PUMP: Mutex<Option<Arc<UplinkPump>>> = Mutex::new(None);
static LIVE_THREADS: AtomicUsize = AtomicUsize::new(0);
/// The worker threads the running runtime was built with.
static WORKERS: AtomicUsize = AtomicUsize::new(0);

pub fn workers() -> usize {
    WORKERS.load(Ordering::Relaxed)
}

/// Starts the runtime; `uplink_batch` is the uplink pump's window, zero for none.
pub fn start(workers: usize, uplink_batch: Duration) -> std::io::Result<()> {
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
    runtime.spawn(crate::diagnostics::poll_watch::heartbeat());
    let pump = (!uplink_batch.is_zero()).then(|| UplinkPump::new(uplink_batch));
    if let Some(pump) = &pump {
        runtime.spawn(pump.clone().run());
    }
    *UPLINK_PUMP.lock().unwrap_or_else(|p| p.into_inner()) = pump;
    *RUNTIME.lock().unwrap_or_else(|p| p.into_inner()) = Some(runtime);
    WORKERS.store(workers, Ordering::Relaxed);
    Ok(())
}

/// Where calls batch their caller audio's wake-ups; none: frame by frame.
pub fn uplink_pump() -> Option<Arc<UplinkPump>> {
    UPLINK_PUMP.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// Spawns a call's task; false when the runtime is stopped.
pub fn spawn(task: impl Future<Output = impl Send + 'static> + Send + 'static) -> bool {
    let guard = RUNTIME.lock().unwrap_or_else(|p| p.into_inner());
    match guard.as_ref() {
        Some(runtime) => {
            runtime.spawn(task);
            true
        }
        None => false,
    }
}

/// Stops the runtime, giving tasks `grace` to finish. Returns true when
/// every runtime thread has exited, so the module's code may be unloaded.
pub fn stop(grace: Duration) -> bool {
    UPLINK_PUMP.lock().unwrap_or_else(|p| p.into_inner()).take();
    let runtime = RUNTIME.lock().unwrap_or_else(|p| p.into_inner()).take();
    if let Some(runtime) = runtime {
        runtime.shutdown_timeout(grace);
    }
    let deadline = std::time::Instant::now() + grace;
    while LIVE_THREADS.load(Ordering::SeqCst) > 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    LIVE_THREADS.load(Ordering::SeqCst) == 0
}
