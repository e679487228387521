//! What the listener remembers per client address, so that one address
//! cannot starve the others: its connections in the handshake (at most
//! `listen-handshakes-per-address`), its failed authentications (too many
//! in a window earn a back-off: HTTP 429 whatever the token), and its
//! refusals, logged at most once a minute as a count.
//!
//! An address is an IPv4 address, or an IPv6 /64 (one host's usual share).
//! Every table is capped ([`MAX_ADDRESSES`]) and pruned ([`AddressGuard::prune`]),
//! so nothing grows without bound however many addresses come. Pure: the
//! time is always passed in.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::settings::listener_conf::FloodLimits;
use crate::support::sync::lock;

/// Addresses each table holds at most.
pub const MAX_ADDRESSES: usize = 10_000;
/// How long refusals from one address are counted before the count is logged.
pub const LOG_WINDOW: Duration = Duration::from_secs(60);

/// A client address as the tables key it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Address {
    V4(std::net::Ipv4Addr),
    /// The first 64 bits.
    V6Prefix(u64),
}

impl Address {
    pub fn of(ip: IpAddr) -> Address {
        match ip {
            IpAddr::V4(v4) => Address::V4(v4),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Address::V4(v4),
                None => Address::V6Prefix((u128::from(v6) >> 64) as u64),
            },
        }
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::V4(v4) => write!(f, "{v4}"),
            Address::V6Prefix(prefix) => write!(f, "{}/64", Ipv6Addr::from(u128::from(*prefix) << 64)),
        }
    }
}

#[derive(Debug, Default)]
struct Failures {
    /// The latest failures, at most `auth_failures` of them.
    recent: VecDeque<Instant>,
    backed_off_until: Option<Instant>,
}

#[derive(Debug)]
struct RefusalLog {
    since: Instant,
    /// Refusals since `since` not logged yet.
    counted: u64,
    last: String,
}

#[derive(Debug, Default)]
struct Tables {
    handshakes: HashMap<Address, usize>,
    failures: HashMap<Address, Failures>,
    refusals: HashMap<Address, RefusalLog>,
    /// Refusals from addresses the refusal table had no room for.
    overflow: u64,
}

/// The listener's per-address tables.
#[derive(Debug, Default)]
pub struct AddressGuard {
    tables: Mutex<Tables>,
}

/// One connection's place among its address's handshakes, given back on drop.
#[derive(Debug)]
pub struct HandshakeTicket {
    guard: Arc<AddressGuard>,
    address: Address,
}

impl Drop for HandshakeTicket {
    fn drop(&mut self) {
        let mut tables = lock(&self.guard.tables);
        if let Some(count) = tables.handshakes.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                tables.handshakes.remove(&self.address);
            }
        }
    }
}

impl Failures {
    fn backed_off(&self, now: Instant) -> Option<Duration> {
        self.backed_off_until.filter(|until| *until > now).map(|until| until - now)
    }

    /// Idle: no back-off running and no failure within the window.
    fn idle(&self, limits: &FloodLimits, now: Instant) -> bool {
        self.backed_off(now).is_none()
            && self.recent.back().is_none_or(|last| now.saturating_duration_since(*last) >= limits.auth_window)
    }
}

impl AddressGuard {
    /// A place in the handshake for a connection from `ip`, unless its
    /// address has `handshakes_per_address` there already (or the table is full).
    pub fn enter(self: &Arc<Self>, ip: IpAddr, limits: &FloodLimits) -> Option<HandshakeTicket> {
        let address = Address::of(ip);
        let mut tables = lock(&self.tables);
        let known = tables.handshakes.contains_key(&address);
        if !known && tables.handshakes.len() >= MAX_ADDRESSES {
            return None;
        }
        let count = tables.handshakes.entry(address).or_insert(0);
        if *count >= limits.handshakes_per_address {
            return None;
        }
        *count += 1;
        Some(HandshakeTicket { guard: self.clone(), address })
    }

    /// Connections from `ip`'s address in the handshake now.
    pub fn in_handshake(&self, ip: IpAddr) -> usize {
        lock(&self.tables).handshakes.get(&Address::of(ip)).copied().unwrap_or(0)
    }

    /// How much longer `ip`'s address is backed off, if it is.
    pub fn backed_off(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        lock(&self.tables).failures.get(&Address::of(ip)).and_then(|failures| failures.backed_off(now))
    }

    /// Counts a failed authentication from `ip`; true when it starts a back-off.
    pub fn failed_auth(&self, ip: IpAddr, limits: &FloodLimits, now: Instant) -> bool {
        let address = Address::of(ip);
        let mut tables = lock(&self.tables);
        if !tables.failures.contains_key(&address) && tables.failures.len() >= MAX_ADDRESSES {
            // Full between two prunes: some address makes room (at once: this
            // runs for every failure of a flood from many addresses).
            let evicted = tables.failures.keys().next().copied();
            evicted.map(|evicted| tables.failures.remove(&evicted));
        }
        let failures = tables.failures.entry(address).or_default();
        if failures.backed_off(now).is_some() {
            return false;
        }
        failures.recent.retain(|at| now.saturating_duration_since(*at) < limits.auth_window);
        failures.recent.push_back(now);
        if failures.recent.len() < limits.auth_failures {
            return false;
        }
        failures.recent.clear();
        failures.backed_off_until = Some(now + limits.auth_backoff);
        true
    }

    /// Notes a refusal of a client from `ip`: the line to log now, if any.
    /// The first refusal of an address is logged in full; the rest within
    /// the minute are counted, and [`AddressGuard::prune`] logs the count.
    pub fn refusal(&self, ip: IpAddr, line: String, now: Instant) -> Option<String> {
        let address = Address::of(ip);
        let mut tables = lock(&self.tables);
        if let Some(log) = tables.refusals.get_mut(&address) {
            log.counted += 1;
            log.last = line;
            return None;
        }
        if tables.refusals.len() >= MAX_ADDRESSES {
            tables.overflow += 1;
            return None;
        }
        tables.refusals.insert(address, RefusalLog { since: now, counted: 0, last: String::new() });
        Some(line)
    }

    /// Drops what has expired; returns the count lines of refusal windows
    /// that ended. Called every few seconds.
    pub fn prune(&self, limits: &FloodLimits, now: Instant) -> Vec<String> {
        let mut tables = lock(&self.tables);
        tables.failures.retain(|_, failures| !failures.idle(limits, now));
        let mut lines = Vec::new();
        tables.refusals.retain(|address, log| {
            if now.saturating_duration_since(log.since) < LOG_WINDOW {
                return true;
            }
            if log.counted == 0 {
                return false;
            }
            let seconds = now.saturating_duration_since(log.since).as_secs();
            lines.push(format!(
                "WebSocket clients from {address}: {} more refused in the last {seconds} s (the last: {})",
                log.counted, log.last
            ));
            // A new window: the next refusal is counted, not logged, so an
            // address refused without pause gets one line a minute.
            log.since = now;
            log.counted = 0;
            true
        });
        if tables.overflow > 0 {
            lines.push(format!(
                "WebSocket clients from more than {MAX_ADDRESSES} addresses refused: {} of them not itemised",
                tables.overflow
            ));
            tables.overflow = 0;
        }
        lines
    }

    /// Entries in the (handshake, failure, refusal) tables.
    pub fn sizes(&self) -> (usize, usize, usize) {
        let tables = lock(&self.tables);
        (tables.handshakes.len(), tables.failures.len(), tables.refusals.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> FloodLimits {
        FloodLimits::default()
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn addresses_are_ipv4_or_an_ipv6_64() {
        assert_eq!(Address::of(ip("10.1.2.3")).to_string(), "10.1.2.3");
        assert_eq!(Address::of(ip("::ffff:10.1.2.3")), Address::of(ip("10.1.2.3")));
        assert_eq!(Address::of(ip("2001:db8:1:2::1")), Address::of(ip("2001:db8:1:2:ffff::9")));
        assert_ne!(Address::of(ip("2001:db8:1:2::1")), Address::of(ip("2001:db8:1:3::1")));
        assert_eq!(Address::of(ip("2001:db8:1:2::1")).to_string(), "2001:db8:1:2::/64");
    }

    #[test]
    fn handshakes_per_address_stop_at_the_limit_and_come_back() {
        let guard = Arc::new(AddressGuard::default());
        let flood = ip("127.0.0.2");
        let tickets: Vec<_> = (0..500).filter_map(|_| guard.enter(flood, &limits())).collect();
        assert_eq!(tickets.len(), 8, "8 in the handshake at once by default");
        assert!(guard.enter(ip("127.0.0.3"), &limits()).is_some(), "another address is not held back");
        drop(tickets);
        assert_eq!(guard.in_handshake(flood), 0);
        assert_eq!(guard.sizes().0, 0, "an address with nothing in the handshake is forgotten");
        assert!(guard.enter(flood, &limits()).is_some());
    }

    #[test]
    fn ten_failures_in_a_minute_back_off_that_address_alone() {
        let guard = AddressGuard::default();
        let (bad, good) = (ip("127.0.0.4"), ip("127.0.0.5"));
        let start = Instant::now();
        for second in 0..9 {
            assert!(!guard.failed_auth(bad, &limits(), start + Duration::from_secs(second)));
        }
        assert_eq!(guard.backed_off(bad, start + Duration::from_secs(9)), None, "9 are not enough");
        assert!(guard.failed_auth(bad, &limits(), start + Duration::from_secs(9)), "the 10th starts it");
        let now = start + Duration::from_secs(10);
        assert_eq!(guard.backed_off(bad, now), Some(Duration::from_secs(59)));
        assert_eq!(guard.backed_off(good, now), None);
        assert_eq!(guard.backed_off(bad, start + Duration::from_secs(69)), None, "60 s after the 10th");
        // Failures spread wider than the window never add up to ten.
        let slow = ip("127.0.0.6");
        for step in 0..30 {
            assert!(!guard.failed_auth(slow, &limits(), start + Duration::from_secs(7 * step)));
        }
    }

    #[test]
    fn refusals_are_logged_once_then_counted() {
        let guard = AddressGuard::default();
        let (flood, other) = (ip("127.0.0.2"), ip("127.0.0.3"));
        let start = Instant::now();
        let first = guard.refusal(flood, "refused: one".into(), start);
        assert_eq!(first.as_deref(), Some("refused: one"));
        for index in 0..999 {
            assert_eq!(guard.refusal(flood, format!("refused: {index}"), start + Duration::from_millis(index)), None);
        }
        assert!(guard.refusal(other, "refused: other".into(), start).is_some(), "each address its own line");
        assert!(guard.prune(&limits(), start + Duration::from_secs(30)).is_empty(), "not before a minute");
        let lines = guard.prune(&limits(), start + Duration::from_secs(61));
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            lines[0].contains("127.0.0.2: 999 more refused in the last 61 s (the last: refused: 998)"),
            "{}",
            lines[0]
        );
        // Still refused: counted into the next minute, not logged at once.
        assert_eq!(guard.refusal(flood, "refused: again".into(), start + Duration::from_secs(62)), None);
        let lines = guard.prune(&limits(), start + Duration::from_secs(122));
        assert!(lines[0].contains("1 more refused"), "{lines:?}");
        assert!(guard.prune(&limits(), start + Duration::from_secs(183)).is_empty());
        assert_eq!(guard.sizes().2, 0, "a quiet address is forgotten");
        assert!(guard.refusal(flood, "refused: later".into(), start + Duration::from_secs(184)).is_some());
    }

    #[test]
    fn no_table_grows_without_bound() {
        let guard = Arc::new(AddressGuard::default());
        let start = Instant::now();
        let mut tickets = Vec::new();
        for index in 0..(MAX_ADDRESSES as u32 + 5000) {
            let address = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + index));
            let _ = guard.failed_auth(address, &limits(), start);
            let _ = guard.refusal(address, "refused".into(), start);
            tickets.extend(guard.enter(address, &limits()));
        }
        let (handshakes, failures, refusals) = guard.sizes();
        assert!(handshakes <= MAX_ADDRESSES && failures <= MAX_ADDRESSES && refusals <= MAX_ADDRESSES);
        assert_eq!(tickets.len(), MAX_ADDRESSES, "beyond the cap a new address waits for room");
        let lines = guard.prune(&limits(), start + Duration::from_secs(61));
        assert!(lines.iter().any(|line| line.contains("5000 of them not itemised")), "{lines:?}");
        drop(tickets);
        let later = start + Duration::from_secs(121);
        guard.prune(&limits(), later);
        assert_eq!(guard.sizes(), (0, 0, 0), "everything expires");
    }
}
