//! Finds what holds up the runtime that carries every call's audio. Every
//! call's task is polled through [`Watched`], which counts and logs a poll
//! that runs longer than [`SLOW_POLL`]: meanwhile the audio of every call on
//! that thread waits, and a live stream's playout may run dry. And
//! [`heartbeat`] wakes on a timer and counts how late it woke: a runtime
//! short of CPU (a loaded machine) wakes late, whatever its tasks do.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// A frame's time: a poll this long can already cost a frame of audio.
pub const SLOW_POLL: Duration = Duration::from_millis(20);

static SLOW_POLLS: AtomicU64 = AtomicU64::new(0);
static LONGEST_POLL_US: AtomicU64 = AtomicU64::new(0);

/// A loaded machine polls slowly and stalls often: one line of each per 10 s at most.
pub const WARN_EVERY: Duration = Duration::from_secs(10);
static SLOW_POLL_WARNINGS: WarnEvery = WarnEvery::new(WARN_EVERY);
static STALL_WARNINGS: WarnEvery = WarnEvery::new(WARN_EVERY);

/// At most one warning per interval, whichever thread warns: the others
/// are counted, and the next warning says how many there were.
pub struct WarnEvery {
    interval: Duration,
    /// When the last warning went out, in ms since [`WarnEvery::now_ms`]'s start; never: `u64::MAX`.
    last_ms: AtomicU64,
    skipped: AtomicU64,
}

impl WarnEvery {
    pub const fn new(interval: Duration) -> WarnEvery {
        WarnEvery { interval, last_ms: AtomicU64::new(u64::MAX), skipped: AtomicU64::new(0) }
    }

    /// Milliseconds since the first time anyone asked.
    fn now_ms() -> u64 {
        static START: OnceLock<Instant> = OnceLock::new();
        START.get_or_init(Instant::now).elapsed().as_millis() as u64
    }

    /// Whether to warn now: `Some(warnings skipped since the last one)`, or `None` to stay quiet.
    pub fn check(&self) -> Option<u64> {
        self.check_at(WarnEvery::now_ms())
    }

    fn check_at(&self, now_ms: u64) -> Option<u64> {
        let last = self.last_ms.load(Ordering::Relaxed);
        let due = last == u64::MAX || now_ms.saturating_sub(last) >= self.interval.as_millis() as u64;
        // Of threads due at once, the one that moves `last_ms` warns.
        if !due || self.last_ms.compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed).is_err() {
            self.skipped.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(self.skipped.swap(0, Ordering::Relaxed))
    }
}

/// ` (N more since the last such line)` when some were skipped.
fn skipped_text(skipped: u64) -> String {
    match skipped {
        0 => String::new(),
        n => format!(" ({n} more since the last such line)"),
    }
}

/// Slow polls since load, and the longest poll seen (slow or not).
pub fn figures() -> (u64, Duration) {
    (SLOW_POLLS.load(Ordering::Relaxed), Duration::from_micros(LONGEST_POLL_US.load(Ordering::Relaxed)))
}

/// How often the heartbeat wakes, and how late it may wake before that counts as a stall.
pub const HEARTBEAT: Duration = Duration::from_millis(50);
pub const STALL: Duration = Duration::from_millis(40);

static STALLS: AtomicU64 = AtomicU64::new(0);
static LONGEST_STALL_US: AtomicU64 = AtomicU64::new(0);

/// Runtime stalls since load, and the longest.
pub fn stalls() -> (u64, Duration) {
    (STALLS.load(Ordering::Relaxed), Duration::from_micros(LONGEST_STALL_US.load(Ordering::Relaxed)))
}

/// Runs on the runtime until it stops: counts each wake-up `STALL` or more late.
pub async fn heartbeat() {
    let mut next = tokio::time::Instant::now() + HEARTBEAT;
    loop {
        tokio::time::sleep_until(next).await;
        let now = tokio::time::Instant::now();
        let late = now.saturating_duration_since(next);
        if late >= STALL {
            STALLS.fetch_add(1, Ordering::Relaxed);
            LONGEST_STALL_US.fetch_max(late.as_micros() as u64, Ordering::Relaxed);
            if let Some(skipped) = STALL_WARNINGS.check() {
                tracing::warn!(
                    "the module's runtime woke {} ms late: short of CPU, so live streams may have gapped{}",
                    late.as_millis(),
                    skipped_text(skipped)
                );
            }
        }
        next = now + HEARTBEAT;
    }
}

pub struct Watched<F> {
    inner: Pin<Box<F>>,
}

impl<F: Future> Watched<F> {
    pub fn new(inner: F) -> Self {
        Watched { inner: Box::pin(inner) }
    }
}

impl<F: Future> Future for Watched<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let started = Instant::now();
        let result = self.inner.as_mut().poll(cx);
        let took = started.elapsed();
        LONGEST_POLL_US.fetch_max(took.as_micros() as u64, Ordering::Relaxed);
        if took >= SLOW_POLL {
            SLOW_POLLS.fetch_add(1, Ordering::Relaxed);
            if let Some(skipped) = SLOW_POLL_WARNINGS.check() {
                tracing::warn!(
                    "a call's task held a runtime thread for {} ms; the audio of other calls on that thread waited{}",
                    took.as_millis(),
                    skipped_text(skipped)
                );
            }
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stalled_runtime_is_counted_by_the_heartbeat() {
        let (before, _) = stalls();
        let beat = tokio::spawn(heartbeat());
        tokio::time::sleep(HEARTBEAT / 2).await;
        // This test's runtime has one thread: blocking it stalls the heartbeat.
        std::thread::sleep(HEARTBEAT + STALL + Duration::from_millis(20));
        tokio::time::sleep(HEARTBEAT).await;
        beat.abort();
        let (after, longest) = stalls();
        assert!(after > before, "the stall is counted");
        assert!(longest >= STALL);
    }

    #[test]
    fn a_repeated_warning_goes_out_once_per_interval_and_counts_the_rest() {
        let warnings = WarnEvery::new(Duration::from_secs(10));
        assert_eq!(warnings.check_at(0), Some(0), "the first goes out");
        assert_eq!(warnings.check_at(1), None);
        assert_eq!(warnings.check_at(9_999), None);
        assert_eq!(warnings.check_at(10_000), Some(2), "the next says how many were skipped");
        assert_eq!(warnings.check_at(10_001), None);
        assert_eq!(warnings.check_at(30_000), Some(1));
        assert_eq!(skipped_text(0), "");
        assert_eq!(skipped_text(2), " (2 more since the last such line)");
    }

    #[tokio::test]
    async fn a_slow_poll_is_counted_and_a_quick_one_is_not() {
        let (before, _) = figures();
        Watched::new(async {}).await;
        assert_eq!(figures().0, before);
        Watched::new(async { std::thread::sleep(SLOW_POLL + Duration::from_millis(5)) }).await;
        let (after, longest) = figures();
        assert!(after > before);
        assert!(longest >= SLOW_POLL);
    }
}
