//! The one tokio runtime all calls share, started at load and stopped at unload.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

static RUNTIME: Mutex<Option<tokio::runtime::Runtime>> = Mutex::new(None);
static LIVE_THREADS: AtomicUsize = AtomicUsize::new(0);
/// The worker threads the running runtime was built with.
static WORKERS: AtomicUsize = AtomicUsize::new(0);

pub fn workers() -> usize {
    WORKERS.load(Ordering::Relaxed)
}

pub fn start(workers: usize) -> std::io::Result<()> {
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
    runtime.spawn(crate::poll_watch::heartbeat());
    *RUNTIME.lock().unwrap_or_else(|p| p.into_inner()) = Some(runtime);
    WORKERS.store(workers, Ordering::Relaxed);
    Ok(())
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
