//! The verified-credential cache, and merging of concurrent checks of the same credentials.
//!
//! Owns: remembering, for a bounded time and number of entries, that a user/password pair was
//! verified against a given stored hash. Entries are keyed by an HMAC-SHA256 with a per-process
//! random key over user, password and stored hash, so no password is kept and a changed hash
//! misses the cache by itself. Concurrent checks with the same key wait for one verification.
//! Does not own: the verification itself (htpasswd.rs) or when to clear (users.rs decides).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_lc_rs::hmac;
use tokio::sync::OnceCell;

/// An HMAC tag standing for one (user, password, stored hash) triple.
pub type Tag = [u8; 32];

/// At most this many verified credentials are remembered.
const MAX_ENTRIES: usize = 10_000;

pub struct CredentialCache {
    key: hmac::Key,
    ttl: Duration,
    verified: Mutex<HashMap<Tag, Instant>>,
    in_flight: Mutex<HashMap<Tag, Arc<OnceCell<bool>>>>,
}

impl CredentialCache {
    /// A cache whose entries live `ttl`; a zero `ttl` remembers nothing (checks still merge).
    pub fn new(ttl: Duration) -> Self {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let key =
            hmac::Key::generate(hmac::HMAC_SHA256, &rng).expect("the system random source works");
        CredentialCache {
            key,
            ttl,
            verified: Mutex::new(HashMap::new()),
            in_flight: Mutex::new(HashMap::new()),
        }
    }

    /// The tag of a credential triple. Length prefixes keep the fields apart.
    pub fn tag(&self, user: &str, password: &[u8], stored: &str) -> Tag {
        let mut ctx = hmac::Context::with_key(&self.key);
        for part in [user.as_bytes(), password, stored.as_bytes()] {
            ctx.update(&(part.len() as u64).to_be_bytes());
            ctx.update(part);
        }
        let mut tag = [0; 32];
        tag.copy_from_slice(ctx.sign().as_ref());
        tag
    }

    /// True when this triple was verified less than `ttl` ago.
    pub fn hit(&self, tag: &Tag) -> bool {
        let map = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        map.get(tag).is_some_and(|exp| *exp > Instant::now())
    }

    /// Remembers a successful verification.
    pub fn remember(&self, tag: Tag) {
        if self.ttl.is_zero() {
            return;
        }
        let now = Instant::now();
        let mut map = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_ENTRIES {
            map.retain(|_, exp| *exp > now);
            if map.len() >= MAX_ENTRIES {
                map.clear();
            }
        }
        map.insert(tag, now + self.ttl);
    }

    /// Forgets everything (the user file changed).
    pub fn clear(&self) {
        self.verified
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// Runs `verify` once for all concurrent callers with the same tag and shares its answer.
    pub async fn merged<F, Fut>(&self, tag: Tag, verify: F) -> bool
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = bool>,
    {
        let cell = {
            let mut map = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
            map.entry(tag).or_default().clone()
        };
        let ok = *cell.get_or_init(verify).await;
        let mut map = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        if map.get(&tag).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
            map.remove(&tag);
        }
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn tags_separate_fields_and_hashes() {
        let c = CredentialCache::new(Duration::from_secs(60));
        assert_ne!(c.tag("ab", b"c", "h"), c.tag("a", b"bc", "h"));
        assert_ne!(c.tag("a", b"b", "h1"), c.tag("a", b"b", "h2"));
        assert_eq!(c.tag("a", b"b", "h"), c.tag("a", b"b", "h"));
    }

    #[test]
    fn remembers_until_cleared_and_not_with_zero_ttl() {
        let c = CredentialCache::new(Duration::from_secs(60));
        let t = c.tag("a", b"b", "h");
        assert!(!c.hit(&t));
        c.remember(t);
        assert!(c.hit(&t));
        c.clear();
        assert!(!c.hit(&t));
        let off = CredentialCache::new(Duration::ZERO);
        off.remember(t);
        assert!(!off.hit(&t));
    }

    #[tokio::test]
    async fn concurrent_checks_run_once() {
        let c = Arc::new(CredentialCache::new(Duration::from_secs(60)));
        let runs = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = tokio::sync::watch::channel(false);
        let tag = c.tag("a", b"b", "h");
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let (c, runs, mut rx) = (c.clone(), runs.clone(), rx.clone());
            tasks.push(tokio::spawn(async move {
                c.merged(tag, || async move {
                    runs.fetch_add(1, Ordering::SeqCst);
                    let _ = rx.wait_for(|go| *go).await;
                    true
                })
                .await
            }));
        }
        // Every task is waiting on the one verification before it is released.
        while Arc::strong_count(&c) > 1 && runs.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        tx.send(true).unwrap();
        for t in tasks {
            assert!(t.await.unwrap());
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }
}
