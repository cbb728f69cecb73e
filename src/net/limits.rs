//! Bounds on what one connection, one client, or everybody together may hold open.
//!
//! Owns: [`ConnLimiter`], the global and per-client caps on open client connections (`[limits]`;
//! a client is an address, an IPv6 client its /64, as the brake counts them), and [`Streams`],
//! the count of open HTTP/2 streams that tells when a connection has been idle for
//! `[timeouts] h2_idle`. A connection over a cap is closed at once, before TLS, and counted in
//! `connections_refused_total{reason}`.
//!
//! Defaults, and why: `max_connections = 10000` keeps the gate under a typical `ulimit -n` of
//! 65536 with room for one upstream connection per client connection (each proxied request holds
//! one); a single docker push opens a few connections per layer in parallel (docker's default is
//! 3 concurrent uploads, containers/image 6, one connection per request), so
//! `max_connections_per_client = 256` lets a CI host behind one NAT run dozens of pushes while
//! one misbehaving client cannot take more than 2.5 % of the gate.
//! Does not own: accepting (server.rs) or what a request gets (http/service.rs).

use std::collections::HashMap;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use tokio::time::Instant;

use crate::auth::brake::client_key;
use crate::config::Limits;

/// Which cap refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    Global,
    PerClient,
}

/// Open connections, globally and per client.
#[derive(Debug)]
pub struct ConnLimiter {
    limits: Limits,
    total: AtomicUsize,
    by_client: Mutex<HashMap<IpAddr, usize>>,
}

/// One open connection; dropping it frees its place.
#[derive(Debug)]
pub struct ConnPermit {
    limiter: Arc<ConnLimiter>,
    client: IpAddr,
}

impl Drop for ConnPermit {
    fn drop(&mut self) {
        self.limiter.total.fetch_sub(1, Ordering::AcqRel);
        let mut map = self.limiter.lock();
        if let Some(n) = map.get_mut(&self.client) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.client);
            }
        }
    }
}

impl ConnLimiter {
    pub fn new(limits: Limits) -> Arc<Self> {
        Arc::new(ConnLimiter {
            limits,
            total: AtomicUsize::new(0),
            by_client: Mutex::new(HashMap::new()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.by_client.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A place for a new connection from `peer`, or which cap is full. The map holds only
    /// clients with an open connection, so it is bounded by `max_connections`.
    pub fn try_open(self: &Arc<Self>, peer: IpAddr) -> Result<ConnPermit, Refused> {
        let client = client_key(peer);
        let mut map = self.lock();
        let n = map.get(&client).copied().unwrap_or(0);
        if n >= self.limits.max_connections_per_client {
            return Err(Refused::PerClient);
        }
        if self.total.load(Ordering::Acquire) >= self.limits.max_connections {
            return Err(Refused::Global);
        }
        self.total.fetch_add(1, Ordering::AcqRel);
        map.insert(client, n + 1);
        Ok(ConnPermit {
            limiter: self.clone(),
            client,
        })
    }

    pub fn open(&self) -> usize {
        self.total.load(Ordering::Acquire)
    }
}

/// Open streams of one HTTP/2 connection (from the request to the end of its response body), and
/// when the last one closed.
///
/// Opening and closing a stream touch two atomics and read the clock; nothing is woken. The
/// idle check sleeps a whole `h2_idle` at a time and looks at the count when it wakes, so a
/// request costs no timer and no wake-up of the connection task (a `watch` channel did both:
/// two notifications and a new timer per request on a keep-alive HTTP/2 connection).
#[derive(Clone, Default)]
pub struct Streams(Arc<StreamCount>);

struct StreamCount {
    open: AtomicUsize,
    /// When the last stream closed, in whole milliseconds after `since`, rounded up (0: none yet).
    last_close_ms: AtomicU64,
    since: Instant,
}

impl Default for StreamCount {
    fn default() -> Self {
        StreamCount {
            open: AtomicUsize::new(0),
            last_close_ms: AtomicU64::new(0),
            since: Instant::now(),
        }
    }
}

/// One open stream; dropped with its response body.
pub struct StreamGuard(Streams);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let count = &self.0.0;
        // Rounded up, so the idle time is never cut short.
        let ms = count.since.elapsed().as_millis() + 1;
        count
            .last_close_ms
            .fetch_max(u64::try_from(ms).unwrap_or(u64::MAX), Ordering::Release);
        count.open.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Streams {
    pub fn open(&self) -> StreamGuard {
        self.0.open.fetch_add(1, Ordering::AcqRel);
        StreamGuard(self.clone())
    }

    /// Resolves once no stream has been open for `idle`: at least `idle` after the connection
    /// started or its last stream closed, and at most a millisecond later.
    pub async fn idle_for(&self, idle: Duration) {
        let count = &self.0;
        let mut deadline = count.since + idle;
        loop {
            tokio::time::sleep_until(deadline).await;
            if count.open.load(Ordering::Acquire) > 0 {
                deadline = Instant::now() + idle;
                continue;
            }
            let last = Duration::from_millis(count.last_close_ms.load(Ordering::Acquire));
            deadline = count.since + last + idle;
            if deadline <= Instant::now() {
                return;
            }
        }
    }
}

/// A response body that keeps its stream counted as open until it ends or is dropped.
pub struct Guarded<B> {
    inner: B,
    _guard: StreamGuard,
}

impl<B> Guarded<B> {
    pub fn new(inner: B, guard: StreamGuard) -> Self {
        Guarded {
            inner,
            _guard: guard,
        }
    }
}

impl<B> HttpBody for Guarded<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_per_client_and_globally_and_frees_on_drop() {
        let l = ConnLimiter::new(Limits {
            max_connections: 3,
            max_connections_per_client: 2,
        });
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let v6a: IpAddr = "2001:db8::1".parse().unwrap();
        let v6b: IpAddr = "2001:db8::2".parse().unwrap();
        let p1 = l.try_open(a).unwrap();
        let _p2 = l.try_open(a).unwrap();
        assert_eq!(l.try_open(a).unwrap_err(), Refused::PerClient);
        let _p3 = l.try_open(v6a).unwrap();
        assert_eq!(l.try_open(v6b).unwrap_err(), Refused::Global);
        drop(p1);
        assert_eq!(l.open(), 2);
        let _p4 = l.try_open(v6b).unwrap();
        // One /64: the second v6 address shares the first's count.
        assert_eq!(l.lock().get(&client_key(v6a)), Some(&2));
    }

    /// The idle check of a connection with `h2_idle = 5`, as a task.
    fn idle_after_5s(s: &Streams) -> tokio::task::JoinHandle<()> {
        let s = s.clone();
        tokio::spawn(async move { s.idle_for(Duration::from_secs(5)).await })
    }

    #[tokio::test(start_paused = true)]
    async fn idle_only_without_open_streams() {
        let s = Streams::default();
        let g = s.open();
        let idle = idle_after_5s(&s);
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(!idle.is_finished());
        drop(g);
        tokio::time::sleep(Duration::from_secs(6)).await;
        assert!(idle.is_finished());
    }

    #[tokio::test(start_paused = true)]
    async fn a_closed_stream_starts_the_idle_time_again() {
        let s = Streams::default();
        let idle = idle_after_5s(&s);
        tokio::time::sleep(Duration::from_secs(3)).await;
        drop(s.open());
        // Idle since 3 s: not at 5 s (from the start), nor at 7.9 s, but by 8 s.
        tokio::time::sleep(Duration::from_millis(4_900)).await;
        assert!(!idle.is_finished());
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(idle.is_finished());
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_without_streams_is_idle_from_its_start() {
        let s = Streams::default();
        let idle = idle_after_5s(&s);
        tokio::time::sleep(Duration::from_millis(4_900)).await;
        assert!(!idle.is_finished());
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(idle.is_finished());
    }
}
