//! What each listener token is using: its calls up (against its
//! `max-calls`) and its recent call rate (against its `calls-per-second`).
//! Kept by the token's name, so a `reloadxml` that changes a token's limits
//! keeps counting its calls up; entries of idle tokens are pruned.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::settings::tokens::TokenScope;
use crate::support::sync::lock;

/// Entries kept before idle ones are pruned.
const PRUNE_ABOVE: usize = 256;

/// Why a token may not place a call now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenRefusal {
    /// At its `max-calls`: HTTP 503.
    Full,
    /// Over its `calls-per-second`: HTTP 429, to retry after this long.
    TooFast(Duration),
}

#[derive(Debug)]
struct Usage {
    active: usize,
    /// Calls that may start now: refilled at the token's rate, up to its burst.
    credit: f64,
    refilled: Instant,
}

/// Every token's usage.
#[derive(Debug, Default)]
pub struct TokenUsage {
    tokens: Mutex<HashMap<String, Usage>>,
}

/// One call's place under its token's limits, given back on drop.
#[derive(Debug)]
pub struct TokenSlot {
    usage: Arc<TokenUsage>,
    name: String,
}

/// A token at `rate` calls a second may start this many at once.
fn burst(rate: f64) -> f64 {
    rate.max(1.0)
}

impl Usage {
    fn refill(&mut self, rate: Option<f64>, now: Instant) {
        if let Some(rate) = rate {
            let earned = now.saturating_duration_since(self.refilled).as_secs_f64() * rate;
            self.credit = (self.credit + earned).min(burst(rate));
        }
        self.refilled = now;
    }

    fn idle(&self) -> bool {
        self.active == 0 && self.credit >= 1.0
    }
}

impl TokenUsage {
    /// A place for a new call of `scope`'s token at `now`, or why not.
    pub fn take(self: &Arc<Self>, scope: &TokenScope, now: Instant) -> Result<TokenSlot, TokenRefusal> {
        let mut tokens = lock(&self.tokens);
        if tokens.len() > PRUNE_ABOVE {
            tokens.retain(|_, usage| !usage.idle());
        }
        let rate = scope.calls_per_second;
        let usage = tokens.entry(scope.name.clone()).or_insert_with(|| Usage {
            active: 0,
            credit: rate.map_or(1.0, burst),
            refilled: now,
        });
        usage.refill(rate, now);
        if scope.max_calls.is_some_and(|max| usage.active >= max) {
            return Err(TokenRefusal::Full);
        }
        if let Some(rate) = rate {
            if usage.credit < 1.0 {
                let wait = Duration::from_secs_f64((1.0 - usage.credit) / rate);
                return Err(TokenRefusal::TooFast(wait));
            }
            usage.credit -= 1.0;
        }
        usage.active += 1;
        Ok(TokenSlot { usage: self.clone(), name: scope.name.clone() })
    }

    /// Calls up now under the token `name`.
    pub fn active(&self, name: &str) -> usize {
        lock(&self.tokens).get(name).map_or(0, |usage| usage.active)
    }

    pub fn entries(&self) -> usize {
        lock(&self.tokens).len()
    }
}

impl Drop for TokenSlot {
    fn drop(&mut self) {
        if let Some(usage) = lock(&self.usage.tokens).get_mut(&self.name) {
            usage.active = usage.active.saturating_sub(1);
        }
    }
}

/// `Retry-After` in whole seconds: at least 1.
pub fn retry_after_seconds(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::tokens::Tokens;

    fn scope(extra: &[(&str, &str)]) -> TokenScope {
        let mut element: Vec<(String, String)> =
            [("name", "t"), ("secret", "a-secret-of-twenty-plus"), ("destinations", ".*")]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
        element.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let tokens = Tokens::scoped(&[element], "p").0;
        let found = tokens.find(Some("a-secret-of-twenty-plus")).unwrap();
        (*found).clone()
    }

    #[test]
    fn max_calls_stop_at_the_limit_and_come_back() {
        let usage = Arc::new(TokenUsage::default());
        let limited = scope(&[("max-calls", "2")]);
        let now = Instant::now();
        let first = usage.take(&limited, now).unwrap();
        let _second = usage.take(&limited, now).unwrap();
        assert_eq!(usage.take(&limited, now).unwrap_err(), TokenRefusal::Full);
        assert_eq!(usage.active("t"), 2);
        drop(first);
        assert!(usage.take(&limited, now).is_ok());
        let unlimited = scope(&[]);
        let held: Vec<_> = (0..100).map(|_| usage.take(&unlimited, now).unwrap()).collect();
        assert_eq!(usage.active("t"), 101, "no max-calls: only the listener's limit");
        drop(held);
    }

    #[test]
    fn calls_per_second_refuse_with_a_wait() {
        let usage = Arc::new(TokenUsage::default());
        let two = scope(&[("calls-per-second", "2")]);
        let start = Instant::now();
        let _a = usage.take(&two, start).unwrap();
        let _b = usage.take(&two, start).unwrap();
        let Err(TokenRefusal::TooFast(wait)) = usage.take(&two, start) else { panic!("a third call at once") };
        assert_eq!(wait, Duration::from_millis(500));
        assert_eq!(retry_after_seconds(wait), 1);
        assert!(usage.take(&two, start + Duration::from_millis(499)).is_err());
        assert!(usage.take(&two, start + Duration::from_millis(500)).is_ok(), "one more after 0.5 s");
        // Over 10 s, 2 a second, whatever the client tries.
        let mut admitted = 0;
        let mut slots = Vec::new();
        for tick in 0..1000 {
            if let Ok(slot) = usage.take(&two, start + Duration::from_secs(1) + Duration::from_millis(10 * tick)) {
                admitted += 1;
                slots.push(slot);
            }
        }
        assert!((20..=22).contains(&admitted), "{admitted} in 10 s at 2 a second");
        let slow = scope(&[("calls-per-second", "0.1")]);
        let usage = Arc::new(TokenUsage::default());
        let _first = usage.take(&slow, start).unwrap();
        let Err(TokenRefusal::TooFast(wait)) = usage.take(&slow, start) else { panic!() };
        assert_eq!(retry_after_seconds(wait), 10);
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_seconds(Duration::ZERO), 1);
        assert_eq!(retry_after_seconds(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_seconds(Duration::from_secs(2)), 2);
        assert_eq!(retry_after_seconds(Duration::from_millis(2001)), 3);
    }

    #[test]
    fn idle_entries_are_pruned() {
        let usage = Arc::new(TokenUsage::default());
        let now = Instant::now();
        let mut busy = scope(&[]);
        busy.name = "busy".into();
        let _held = usage.take(&busy, now).unwrap();
        for index in 0..1000 {
            let mut other = scope(&[]);
            other.name = format!("t{index}");
            drop(usage.take(&other, now).unwrap());
        }
        assert!(usage.entries() <= PRUNE_ABOVE + 1, "{} entries", usage.entries());
        assert_eq!(usage.active("busy"), 1, "a token with calls up is kept");
    }
}
