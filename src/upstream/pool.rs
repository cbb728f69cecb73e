//! The registry members behind the gate: which one takes a request, and which ones are healthy.
//!
//! Owns: balancing and passive health. Balancing is **least outstanding requests**, ties broken
//! round robin: a registry's requests differ by orders of magnitude in duration (a `HEAD` takes
//! a millisecond, a layer's `PATCH` or blob `GET` minutes), so counting requests handed out
//! (round robin) piles new work onto a member already busy streaming, while counting the
//! requests still open (response bodies included) does not; the round-robin tie break spreads
//! an idle gate's requests over every member. Passive health: a connect failure or a
//! 502/503/504 takes a member out; a prober per member then sends `GET /v2/` at a backoff that
//! doubles from 250 ms to 30 s (every 100 ms while a request waits because no member is up),
//! and the first answer that is not 502/503/504 brings the member back. Also the per-member
//! metrics, the wait for a member when none is up, and when a member last answered (which
//! lets the gate answer the version check itself while the registry is known to answer).
//! Does not own: sending requests or deciding what may be sent again (upstream/proxy.rs).

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use http::Uri;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

/// The first wait before probing a member that was taken out.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// The longest wait between probes of a member that stays down.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// The probe interval while requests wait for a member.
pub const HURRY: Duration = Duration::from_millis(100);

/// One registry.
pub struct Member {
    /// `http://host:port`.
    pub base: Uri,
    /// `host:port`, as logs and metrics name it.
    pub name: String,
    outstanding: AtomicUsize,
    requests: AtomicU64,
    failures: AtomicU64,
    up: AtomicBool,
    went_down: Notify,
}

impl Member {
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }
}

/// The members and their health.
pub struct Pool {
    members: Vec<Member>,
    next: AtomicUsize,
    /// Bumped whenever a member comes back, for the requests waiting for one.
    back: watch::Sender<u64>,
    /// Requests waiting because no member is up; the probers hurry while there are some.
    waiting: AtomicUsize,
    hurry: Notify,
    /// When a member last gave an answer that was not 502/503/504 (request or probe), in
    /// milliseconds since `epoch`; 0 before the first.
    answered_at: AtomicU64,
    epoch: Instant,
}

/// One request on a member, counted as outstanding until dropped (the proxy keeps it in the
/// response body, so a long download counts until it ends).
pub struct InFlight {
    pool: Arc<Pool>,
    index: usize,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.pool.members[self.index]
            .outstanding
            .fetch_sub(1, Ordering::Relaxed);
    }
}

impl Pool {
    /// All members start up: the first request or probe tells otherwise.
    pub fn new(bases: &[Uri]) -> Pool {
        let members = bases
            .iter()
            .map(|b| Member {
                base: b.clone(),
                name: b
                    .authority()
                    .map_or_else(|| b.to_string(), |a| a.to_string()),
                outstanding: AtomicUsize::new(0),
                requests: AtomicU64::new(0),
                failures: AtomicU64::new(0),
                up: AtomicBool::new(true),
                went_down: Notify::new(),
            })
            .collect();
        Pool {
            members,
            next: AtomicUsize::new(0),
            back: watch::Sender::new(0),
            waiting: AtomicUsize::new(0),
            hurry: Notify::new(),
            answered_at: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    /// A member answered (not 502/503/504).
    pub fn answered(&self) {
        let ms = self.epoch.elapsed().as_millis() as u64 + 1;
        self.answered_at.fetch_max(ms, Ordering::Relaxed);
    }

    /// True while a member is up and one answered within `window`.
    pub fn answered_within(&self, window: Duration) -> bool {
        let at = self.answered_at.load(Ordering::Relaxed);
        at != 0
            && self.epoch.elapsed().as_millis() as u64 + 1 - at <= window.as_millis() as u64
            && self.any_up()
    }

    pub fn members(&self) -> &[Member] {
        &self.members
    }

    pub fn any_up(&self) -> bool {
        self.members.iter().any(Member::is_up)
    }

    /// The up member not in `tried` with the fewest outstanding requests; ties round robin.
    pub fn pick(&self, tried: &[usize]) -> Option<usize> {
        let n = self.members.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        let mut best: Option<(usize, usize)> = None;
        for k in 0..n {
            let i = (start + k) % n;
            let m = &self.members[i];
            if !m.is_up() || tried.contains(&i) {
                continue;
            }
            let load = m.outstanding.load(Ordering::Relaxed);
            if best.is_none_or(|(_, b)| load < b) {
                best = Some((i, load));
            }
        }
        best.map(|(i, _)| i)
    }

    /// Counts a request sent to member `i`, outstanding until the guard is dropped.
    pub fn start(self: &Arc<Self>, i: usize) -> InFlight {
        let m = &self.members[i];
        m.requests.fetch_add(1, Ordering::Relaxed);
        m.outstanding.fetch_add(1, Ordering::Relaxed);
        InFlight {
            pool: self.clone(),
            index: i,
        }
    }

    /// Member `i` failed (connect failure, broken connection, 502/503/504): out until a probe
    /// answers.
    pub fn failed(&self, i: usize, why: &str) {
        let m = &self.members[i];
        m.failures.fetch_add(1, Ordering::Relaxed);
        if m.up.swap(false, Ordering::AcqRel) {
            tracing::warn!(member = %m.name, "registry member taken out: {why}");
            m.went_down.notify_one();
        }
    }

    /// A probe of member `i` answered: it takes requests again.
    pub fn probed_ok(&self, i: usize) {
        self.answered();
        let m = &self.members[i];
        if !m.up.swap(true, Ordering::AcqRel) {
            tracing::info!(member = %m.name, "registry member back");
            self.back.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// Waits until a member is up or `until`; false when none came back in time. The probers
    /// probe every [`HURRY`] while someone waits.
    pub async fn wait_for_member(&self, until: Instant) -> bool {
        let mut back = self.back.subscribe();
        if self.any_up() {
            return true;
        }
        struct Waiting<'a>(&'a AtomicUsize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::Relaxed);
            }
        }
        self.waiting.fetch_add(1, Ordering::Relaxed);
        let _waiting = Waiting(&self.waiting);
        self.hurry.notify_waiters();
        loop {
            match tokio::time::timeout_at(until, back.changed()).await {
                Ok(Ok(())) if self.any_up() => return true,
                Ok(Ok(())) => continue,
                _ => return self.any_up(),
            }
        }
    }

    /// The prober of member `i`: idle while it is up; while it is down, `probe` at a growing
    /// backoff (every [`HURRY`] while requests wait) until it answers.
    pub async fn prober<F, Fut>(self: Arc<Self>, i: usize, probe: F)
    where
        F: Fn(Uri) -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let m = &self.members[i];
        loop {
            let went_down = m.went_down.notified();
            if m.is_up() {
                went_down.await;
                continue;
            }
            let mut backoff = FIRST_BACKOFF;
            let mut last = Instant::now();
            while !m.is_up() {
                let wait = if self.waiting.load(Ordering::Relaxed) > 0 {
                    HURRY
                } else {
                    backoff
                };
                tokio::select! {
                    _ = tokio::time::sleep_until(last + wait) => {}
                    _ = self.hurry.notified() => {
                        tokio::time::sleep_until(last + HURRY).await;
                    }
                }
                last = Instant::now();
                if probe(m.base.clone()).await {
                    self.probed_ok(i);
                } else {
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// The per-member series in the Prometheus text format.
    pub fn render(&self, w: &mut String) {
        /// Name, type, help, and the value of a member.
        type Series = (&'static str, &'static str, &'static str, fn(&Member) -> u64);
        let series: [Series; 4] = [
            (
                "upstream_member_requests_total",
                "counter",
                "Requests sent to each registry member (attempts, retries included).",
                |m| m.requests.load(Ordering::Relaxed),
            ),
            (
                "upstream_member_failures_total",
                "counter",
                "Connect failures, broken connections and 502/503/504 answers, by member.",
                |m| m.failures.load(Ordering::Relaxed),
            ),
            (
                "upstream_member_up",
                "gauge",
                "1 while a member takes requests, 0 while it is out until a probe answers.",
                |m| u64::from(m.is_up()),
            ),
            (
                "upstream_member_outstanding",
                "gauge",
                "Requests open on each member now, response bodies included.",
                |m| m.outstanding.load(Ordering::Relaxed) as u64,
            ),
        ];
        for (name, kind, help, value) in series {
            let _ = writeln!(w, "# HELP registry_gate_{name} {help}");
            let _ = writeln!(w, "# TYPE registry_gate_{name} {kind}");
            for m in &self.members {
                let _ = writeln!(
                    w,
                    "registry_gate_{name}{{member=\"{}\"}} {}",
                    m.name,
                    value(m)
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(n: usize) -> Arc<Pool> {
        let bases: Vec<Uri> = (0..n)
            .map(|i| format!("http://r{i}:5000").parse().unwrap())
            .collect();
        Arc::new(Pool::new(&bases))
    }

    #[test]
    fn idle_members_take_turns_and_busy_ones_are_avoided() {
        let p = pool(2);
        let picks: Vec<usize> = (0..4).map(|_| p.pick(&[]).unwrap()).collect();
        assert_eq!(picks, [0, 1, 0, 1]);
        let _long = p.start(0);
        for _ in 0..4 {
            assert_eq!(p.pick(&[]), Some(1), "member 0 is busy");
        }
        assert_eq!(p.pick(&[1]), Some(0), "tried members are skipped");
        drop(_long);
        let picks: Vec<usize> = (0..2).map(|_| p.pick(&[]).unwrap()).collect();
        assert_eq!(picks.iter().filter(|&&i| i == 0).count(), 1);
    }

    #[test]
    fn a_recent_answer_counts_only_while_a_member_is_up() {
        let p = pool(1);
        assert!(!p.answered_within(Duration::from_secs(5)), "no answer yet");
        p.answered();
        assert!(p.answered_within(Duration::from_secs(5)));
        p.failed(0, "test");
        assert!(!p.answered_within(Duration::from_secs(5)), "no member up");
        p.probed_ok(0);
        assert!(p.answered_within(Duration::from_secs(5)));
    }

    #[test]
    fn a_failed_member_is_out_until_probed() {
        let p = pool(2);
        p.failed(0, "test");
        p.failed(0, "again");
        for _ in 0..4 {
            assert_eq!(p.pick(&[]), Some(1));
        }
        assert_eq!(p.pick(&[1]), None);
        p.probed_ok(0);
        assert_eq!(p.pick(&[1]), Some(0));
        let mut text = String::new();
        p.render(&mut text);
        assert!(
            text.contains("registry_gate_upstream_member_failures_total{member=\"r0:5000\"} 2")
        );
        assert!(text.contains("registry_gate_upstream_member_up{member=\"r1:5000\"} 1"));
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_requests_hurry_the_prober_and_see_the_member_back() {
        let p = pool(1);
        let probes = Arc::new(AtomicUsize::new(0));
        let counted = probes.clone();
        let prober = tokio::spawn(p.clone().prober(0, move |_| {
            let n = counted.fetch_add(1, Ordering::Relaxed) + 1;
            // The member answers from the fifth probe on.
            async move { n >= 5 }
        }));
        p.failed(0, "test");
        let start = Instant::now();
        assert!(p.wait_for_member(start + Duration::from_secs(5)).await);
        assert_eq!(probes.load(Ordering::Relaxed), 5);
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "probed every {HURRY:?} while waiting, not at the backoff: {:?}",
            start.elapsed()
        );
        // Down again with nobody waiting: the backoff grows (250 ms, 500 ms, ...).
        p.failed(0, "test");
        probes.store(0, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert_eq!(probes.load(Ordering::Relaxed), 2);
        prober.abort();
    }
}
