//! Finds code that holds a runtime thread. Every call's task is polled
//! through [`Watched`], which counts and logs a poll that runs longer than
//! [`SLOW_POLL`]: meanwhile the audio of every call on that thread waits,
//! and a live stream's playout may run dry.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// A frame's time: a poll this long can already cost a frame of audio.
pub const SLOW_POLL: Duration = Duration::from_millis(20);

static SLOW_POLLS: AtomicU64 = AtomicU64::new(0);
static LONGEST_POLL_US: AtomicU64 = AtomicU64::new(0);

/// Slow polls since load, and the longest poll seen (slow or not).
pub fn figures() -> (u64, Duration) {
    (SLOW_POLLS.load(Ordering::Relaxed), Duration::from_micros(LONGEST_POLL_US.load(Ordering::Relaxed)))
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
            tracing::warn!(
                "a call's task held a runtime thread for {} ms; the audio of other calls on that thread waited",
                took.as_millis()
            );
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
