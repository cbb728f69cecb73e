//! The brute-force brake: too many failed logins from one client, or against one user, answer
//! 429 for a while.
//!
//! Owns: counting password checks per client and per user name in a fixed window, and saying how
//! long a client must wait. A check counts as a failure from the moment it STARTS
//! ([`Brake::begin`]); the count is taken back only when the check succeeds
//! ([`Attempt::succeeded`]). So N parallel or abandoned wrong passwords cost at most `limit`
//! hashes: the (limit+1)th is refused before it reaches the hashing pool, whether or not the
//! earlier checks have finished, and a client that drops its request keeps its count.
//!
//! Clients are keyed by address, IPv6 ones by their /64 (one host usually owns a whole /64, so
//! counting single addresses there counts nothing); an IPv4-mapped IPv6 address counts as its
//! IPv4 address. Users are keyed by a keyed 64-bit hash of the name (bounded size whatever the
//! name's length); a user's limit is [`USER_LIMIT_FACTOR`] times the client limit, so a guess
//! spread over many addresses is stopped without one NAT locking a whole team out.
//!
//! Memory is bounded: each map holds at most [`MAX_ENTRIES`] keys. When full, expired windows go
//! first, then windows that are not braked; when every entry is braked, the oldest window goes.
//! Does not own: deciding that a login failed (mod.rs), or exempting credentials already known
//! good (mod.rs checks the cache first, so verified credentials are never braked).

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// At most this many clients, and this many user names, are tracked.
pub const MAX_ENTRIES: usize = 100_000;
/// A user name may fail this many times the per-client limit within the window.
pub const USER_LIMIT_FACTOR: u32 = 3;

#[derive(Clone, Copy)]
struct Window {
    start: Instant,
    failures: u32,
}

/// Fixed windows per key, at most `cap` keys.
struct Counter<K> {
    cap: usize,
    map: HashMap<K, Window>,
}

impl<K: Eq + Hash + Copy> Counter<K> {
    fn new(cap: usize) -> Self {
        Counter {
            cap,
            map: HashMap::new(),
        }
    }

    /// Time left braked for `key`, if its failures reached `limit`.
    fn wait(&self, key: &K, limit: u32, window: Duration, now: Instant) -> Option<Duration> {
        let w = self.map.get(key)?;
        let left = (w.start + window).checked_duration_since(now)?;
        (w.failures >= limit && !left.is_zero()).then_some(left)
    }

    fn add(&mut self, key: K, limit: u32, window: Duration, now: Instant) {
        if self.map.len() >= self.cap && !self.map.contains_key(&key) {
            self.make_room(limit, window, now);
        }
        let w = self.map.entry(key).or_insert(Window {
            start: now,
            failures: 0,
        });
        if w.start + window <= now {
            *w = Window {
                start: now,
                failures: 0,
            };
        }
        w.failures = w.failures.saturating_add(1);
    }

    fn sub(&mut self, key: &K) {
        if let Some(w) = self.map.get_mut(key) {
            w.failures = w.failures.saturating_sub(1);
            if w.failures == 0 {
                self.map.remove(key);
            }
        }
    }

    /// Frees at least one slot: expired windows, then unbraked ones, then the oldest.
    fn make_room(&mut self, limit: u32, window: Duration, now: Instant) {
        self.map.retain(|_, w| w.start + window > now);
        if self.map.len() >= self.cap {
            self.map.retain(|_, w| w.failures >= limit);
        }
        if self.map.len() >= self.cap {
            let oldest = self
                .map
                .iter()
                .min_by_key(|(_, w)| w.start)
                .map(|(k, _)| *k);
            if let Some(k) = oldest {
                self.map.remove(&k);
            }
        }
    }
}

struct State {
    by_client: Counter<IpAddr>,
    by_user: Counter<u64>,
}

pub struct Brake {
    limit: u32,
    window: Duration,
    names: std::collections::hash_map::RandomState,
    state: Mutex<State>,
}

/// The key a client is counted under: its address, or the /64 of an IPv6 address.
pub fn client_key(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(_) => addr,
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return IpAddr::V4(v4);
            }
            let s = v6.segments();
            IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
    }
}

/// One password check in progress, counted as a failure unless [`Attempt::succeeded`] is called.
#[derive(Clone)]
pub struct Attempt {
    brake: Option<Arc<Brake>>,
    client: IpAddr,
    user: u64,
    cleared: Arc<AtomicBool>,
}

impl std::fmt::Debug for Attempt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attempt")
            .field("client", &self.client)
            .finish_non_exhaustive()
    }
}

impl Attempt {
    /// Takes this check's failure back (once, however many clones call it).
    pub fn succeeded(&self) {
        let Some(brake) = &self.brake else { return };
        if self.cleared.swap(true, Ordering::AcqRel) {
            return;
        }
        let mut s = brake.lock();
        s.by_client.sub(&self.client);
        s.by_user.sub(&self.user);
    }
}

impl Brake {
    /// `limit` failures from one client within `window` engage the brake (a user name gets
    /// `USER_LIMIT_FACTOR` times as many); a zero limit disables it.
    pub fn new(limit: u32, window: Duration) -> Self {
        Self::with_capacity(limit, window, MAX_ENTRIES)
    }

    fn with_capacity(limit: u32, window: Duration, cap: usize) -> Self {
        Brake {
            limit,
            window,
            names: std::collections::hash_map::RandomState::new(),
            state: Mutex::new(State {
                by_client: Counter::new(cap),
                by_user: Counter::new(cap),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn user_limit(&self) -> u32 {
        self.limit.saturating_mul(USER_LIMIT_FACTOR)
    }

    /// Starts a check of `user`'s password from `addr`: counts it as a failure now, or answers
    /// how long to wait when the client or the user is braked (then nothing is counted).
    pub fn begin(self: &Arc<Self>, addr: IpAddr, user: &str) -> Result<Attempt, Duration> {
        let client = client_key(addr);
        let user = self.names.hash_one(user);
        if self.limit == 0 {
            return Ok(Attempt {
                brake: None,
                client,
                user,
                cleared: Arc::default(),
            });
        }
        let now = Instant::now();
        let mut s = self.lock();
        let by_client = s.by_client.wait(&client, self.limit, self.window, now);
        let by_user = s.by_user.wait(&user, self.user_limit(), self.window, now);
        if let Some(left) = by_client.max(by_user) {
            return Err(left);
        }
        s.by_client.add(client, self.limit, self.window, now);
        s.by_user.add(user, self.user_limit(), self.window, now);
        Ok(Attempt {
            brake: Some(self.clone()),
            client,
            user,
            cleared: Arc::default(),
        })
    }

    /// Keys tracked now (clients, users), for tests and bounds.
    pub fn tracked(&self) -> (usize, usize) {
        let s = self.lock();
        (s.by_client.map.len(), s.by_user.map.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn engages_at_the_limit_per_client_when_checks_start() {
        let b = Arc::new(Brake::new(3, Duration::from_secs(60)));
        // Three checks started and not finished (parallel or abandoned) already count.
        let held: Vec<_> = (0..3)
            .map(|i| b.begin(ip("192.0.2.1"), &format!("u{i}")).unwrap())
            .collect();
        let left = b.begin(ip("192.0.2.1"), "u9").expect_err("braked");
        assert!(left <= Duration::from_secs(60) && left > Duration::from_secs(50));
        assert!(b.begin(ip("192.0.2.2"), "u9").is_ok());
        drop(held);
        assert!(
            b.begin(ip("192.0.2.1"), "u9").is_err(),
            "dropping keeps the count"
        );
    }

    #[test]
    fn success_takes_its_count_back_once() {
        let b = Arc::new(Brake::new(2, Duration::from_secs(60)));
        let a = ip("192.0.2.1");
        let bad = b.begin(a, "alice").unwrap();
        let good = b.begin(a, "alice").unwrap();
        assert!(b.begin(a, "alice").is_err());
        good.succeeded();
        good.clone().succeeded();
        let again = b.begin(a, "alice").unwrap();
        assert!(b.begin(a, "alice").is_err());
        drop((bad, again));
    }

    #[test]
    fn a_user_is_braked_across_clients() {
        let b = Arc::new(Brake::new(2, Duration::from_secs(60)));
        for i in 0..2 * USER_LIMIT_FACTOR {
            b.begin(IpAddr::from([198, 51, 100, i as u8]), "alice")
                .unwrap();
        }
        assert!(b.begin(ip("203.0.113.1"), "alice").is_err());
        assert!(b.begin(ip("203.0.113.1"), "bob").is_ok());
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_v4_as_v4() {
        let b = Arc::new(Brake::new(2, Duration::from_secs(60)));
        b.begin(ip("2001:db8:1:2::1"), "a").unwrap();
        b.begin(ip("2001:db8:1:2:ffff::9"), "b").unwrap();
        assert!(b.begin(ip("2001:db8:1:2::77"), "c").is_err());
        assert!(b.begin(ip("2001:db8:1:3::1"), "c").is_ok());
        assert_eq!(
            client_key(ip("::ffff:192.0.2.5")),
            client_key(ip("192.0.2.5"))
        );
    }

    #[test]
    fn memory_is_bounded_and_braked_clients_are_kept_longest() {
        let b = Arc::new(Brake::with_capacity(1, Duration::from_secs(60), 8));
        let victim = ip("192.0.2.1");
        b.begin(victim, "x").unwrap();
        for i in 0..1000u32 {
            let _ = b.begin(IpAddr::from(i.to_be_bytes()), &format!("u{i}"));
            let (clients, users) = b.tracked();
            assert!(clients <= 8 && users <= 8);
        }
        // Every entry is braked (limit 1), so the oldest were dropped: memory wins over memory
        // of old failures, and recent ones are still braked.
        assert!(b.begin(IpAddr::from(999u32.to_be_bytes()), "y").is_err());
    }

    #[test]
    fn window_passes_and_zero_disables() {
        let b = Arc::new(Brake::new(1, Duration::from_millis(1)));
        let a = ip("192.0.2.1");
        b.begin(a, "u").unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while b.begin(a, "u").is_err() {
            assert!(Instant::now() < deadline);
            std::thread::yield_now();
        }
        let off = Arc::new(Brake::new(0, Duration::from_secs(60)));
        for _ in 0..10 {
            assert!(off.begin(a, "u").is_ok());
        }
    }
}
