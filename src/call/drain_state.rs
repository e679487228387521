//! Draining a node: new calls are refused while calls up go on, and the
//! moment the last one ends is announced once, so that an orchestrator knows
//! the node can be stopped. Pure state; the module keeps one behind a lock.

use std::time::{Duration, Instant};

/// Why draining began, as `wsbridge status` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainReason {
    /// `wsbridge drain on`.
    Api,
    /// `drain` in wsbridge.conf.
    Config,
    /// FreeSWITCH is shutting down (`fsctl shutdown elegant`).
    Shutdown,
}

impl DrainReason {
    pub fn name(self) -> &'static str {
        match self {
            DrainReason::Api => "api",
            DrainReason::Config => "wsbridge.conf",
            DrainReason::Shutdown => "shutdown",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Draining {
    since: Instant,
    reason: DrainReason,
    /// Whether the end of the last call has been announced.
    announced: bool,
}

/// Whether the node drains, and since when.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DrainState {
    draining: Option<Draining>,
}

/// What `wsbridge status` shows of draining.
#[derive(Debug, Clone, PartialEq)]
pub struct DrainReport {
    pub reason: Option<DrainReason>,
    /// Seconds since draining began; none when not draining.
    pub seconds: Option<f64>,
}

impl DrainState {
    /// Not draining.
    pub const fn new() -> DrainState {
        DrainState { draining: None }
    }

    /// Starts draining; a node already draining keeps its start and reason.
    /// True when it was not draining before.
    pub fn start(&mut self, now: Instant, reason: DrainReason) -> bool {
        if self.draining.is_some() {
            return false;
        }
        self.draining = Some(Draining { since: now, reason, announced: false });
        true
    }

    /// Stops draining; new calls are taken again. True when it was draining.
    pub fn stop(&mut self) -> bool {
        self.draining.take().is_some()
    }

    pub fn is_draining(&self) -> bool {
        self.draining.is_some()
    }

    /// Whether to announce that the node is drained, given the calls still
    /// up: true once per drain, when none is left.
    /// Returns how long the drain took.
    pub fn take_drained(&mut self, calls_up: usize, now: Instant) -> Option<Duration> {
        let draining = self.draining.as_mut()?;
        if calls_up > 0 || draining.announced {
            return None;
        }
        draining.announced = true;
        Some(now.saturating_duration_since(draining.since))
    }

    pub fn report(&self, now: Instant) -> DrainReport {
        DrainReport {
            reason: self.draining.map(|d| d.reason),
            seconds: self.draining.map(|d| now.saturating_duration_since(d.since).as_secs_f64()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drained_is_announced_once_when_the_last_call_ends() {
        let mut state = DrainState::default();
        let start = Instant::now();
        assert_eq!(state.take_drained(0, start), None, "not draining");
        assert!(state.start(start, DrainReason::Api));
        assert!(!state.start(Instant::now(), DrainReason::Shutdown), "already draining");
        assert_eq!(state.report(Instant::now()).reason, Some(DrainReason::Api), "the first reason stays");
        assert_eq!(state.take_drained(2, start), None, "calls still up");
        assert_eq!(state.take_drained(0, start + Duration::from_secs(3)), Some(Duration::from_secs(3)));
        assert_eq!(state.take_drained(0, start), None, "announced already");
        assert!(state.stop());
        assert!(!state.is_draining());
        assert!(state.start(Instant::now(), DrainReason::Config));
        assert!(state.take_drained(0, Instant::now()).is_some(), "a new drain is announced again");
    }

    #[test]
    fn the_report_counts_seconds_from_the_start() {
        let mut state = DrainState::default();
        let start = Instant::now();
        assert_eq!(state.report(start), DrainReport { reason: None, seconds: None });
        state.start(start, DrainReason::Shutdown);
        let report = state.report(start + Duration::from_millis(2500));
        assert_eq!(report, DrainReport { reason: Some(DrainReason::Shutdown), seconds: Some(2.5) });
    }
}
