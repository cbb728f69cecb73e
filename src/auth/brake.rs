//! The brute-force brake: too many failed logins from one address answer 429 for a while.
//!
//! Owns: counting failures per client address in a fixed window and saying how long an
//! address must wait. Bounded memory. Does not own: deciding that a login failed (mod.rs), or
//! exempting credentials already known good (mod.rs checks the cache first, so successful logins
//! are never slowed).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// At most this many addresses are tracked; past it, expired windows are dropped.
const MAX_ADDRESSES: usize = 100_000;

#[derive(Clone, Copy)]
struct Window {
    start: Instant,
    failures: u32,
}

pub struct Brake {
    limit: u32,
    window: Duration,
    by_addr: Mutex<HashMap<IpAddr, Window>>,
}

impl Brake {
    /// `limit` failures within `window` engage the brake; a zero limit disables it.
    pub fn new(limit: u32, window: Duration) -> Self {
        Brake {
            limit,
            window,
            by_addr: Mutex::new(HashMap::new()),
        }
    }

    /// How long `addr` must still wait, if it is braked.
    pub fn wait(&self, addr: IpAddr) -> Option<Duration> {
        if self.limit == 0 {
            return None;
        }
        let map = self.by_addr.lock().unwrap_or_else(|e| e.into_inner());
        let w = map.get(&addr)?;
        let left = (w.start + self.window).checked_duration_since(Instant::now())?;
        (w.failures >= self.limit && !left.is_zero()).then_some(left)
    }

    /// Counts one failed login from `addr`.
    pub fn fail(&self, addr: IpAddr) {
        if self.limit == 0 {
            return;
        }
        let now = Instant::now();
        let mut map = self.by_addr.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_ADDRESSES && !map.contains_key(&addr) {
            map.retain(|_, w| w.start + self.window > now);
        }
        let w = map.entry(addr).or_insert(Window {
            start: now,
            failures: 0,
        });
        if w.start + self.window <= now {
            *w = Window {
                start: now,
                failures: 0,
            };
        }
        w.failures = w.failures.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engages_at_the_limit_per_address() {
        let b = Brake::new(3, Duration::from_secs(60));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..2 {
            b.fail(a);
            assert!(b.wait(a).is_none());
        }
        b.fail(a);
        let left = b.wait(a).expect("braked after 3 failures");
        assert!(left <= Duration::from_secs(60) && left > Duration::from_secs(50));
        assert!(b.wait(other).is_none());
    }

    #[test]
    fn window_passes_and_zero_disables() {
        let b = Brake::new(1, Duration::from_millis(1));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        b.fail(a);
        let deadline = Instant::now() + Duration::from_secs(5);
        while b.wait(a).is_some() {
            assert!(Instant::now() < deadline);
            std::thread::yield_now();
        }
        let off = Brake::new(0, Duration::from_secs(60));
        off.fail(a);
        assert!(off.wait(a).is_none());
    }
}
