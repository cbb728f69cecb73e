//! Connection threads: each accepted connection lives on one thread, together with the registry
//! connections its requests use.
//!
//! Owns: [`Workers`], one single-threaded tokio runtime per core, each driven by a thread of its
//! own, and the choice of thread for a new connection (the one with the fewest open). A proxied
//! request is two connections, the client's and the registry's, whose tasks wake each other for
//! every piece of a body; on tokio's shared multi-threaded scheduler they were handed between
//! threads, and a third of a push's CPU was threads switching (docs/benchmarks.md). [`current`]
//! tells code on a connection thread which one it is: upstream/proxy.rs keeps one pool of
//! registry connections per thread, so that a request only uses connections of its own thread.
//! Does not own: accepting (net/server.rs) or what runs on the main runtime (reloads, ACME,
//! probes, the admin listener).

use std::cell::Cell;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::runtime::{Builder, Handle};
use tokio::sync::oneshot;

thread_local! {
    static CURRENT: Cell<Option<usize>> = const { Cell::new(None) };
}

/// The connection thread this code runs on, if any.
pub fn current() -> Option<usize> {
    CURRENT.with(Cell::get)
}

/// How many connection threads the gate runs: one per core it may use (the standard library
/// reads the CPU affinity mask and a cgroup's CPU quota).
pub fn count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

struct Worker {
    handle: Handle,
    open: Arc<AtomicUsize>,
    /// Dropping it ends the thread's runtime and the tasks still on it.
    _stop: oneshot::Sender<()>,
}

/// The connection threads; dropped, they stop (see the module doc).
pub struct Workers {
    workers: Vec<Worker>,
}

/// Counts one connection as open on its thread until dropped.
struct Open(Arc<AtomicUsize>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Workers {
    pub fn start(n: usize) -> io::Result<Workers> {
        let mut workers = Vec::with_capacity(n);
        for i in 0..n.max(1) {
            let runtime = Builder::new_current_thread().enable_all().build()?;
            let handle = runtime.handle().clone();
            let (stop, stopped) = oneshot::channel::<()>();
            std::thread::Builder::new()
                .name(format!("gate-conn-{i}"))
                .spawn(move || {
                    CURRENT.with(|c| c.set(Some(i)));
                    runtime.block_on(async {
                        let _ = stopped.await;
                    });
                })?;
            workers.push(Worker {
                handle,
                open: Arc::new(AtomicUsize::new(0)),
                _stop: stop,
            });
        }
        Ok(Workers { workers })
    }

    /// Runs `connection` on the thread with the fewest open connections. The future is made
    /// there, so the sockets it registers belong to that thread's runtime.
    pub fn spawn<F, Fut>(&self, connection: F)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let worker = self
            .workers
            .iter()
            .min_by_key(|w| w.open.load(Ordering::Relaxed))
            .expect("at least one worker");
        worker.open.fetch_add(1, Ordering::Relaxed);
        let open = Open(worker.open.clone());
        worker.handle.spawn(async move {
            let _open = open;
            connection().await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connections_go_to_the_least_busy_thread_and_know_it() {
        let workers = Workers::start(2).unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let (hold_tx, hold_rx) = tokio::sync::watch::channel(false);
        for _ in 0..4 {
            let (tx, mut hold) = (tx.clone(), hold_rx.clone());
            workers.spawn(move || async move {
                tx.send(current()).unwrap();
                let _ = hold.wait_for(|h| *h).await;
            });
        }
        let mut seen = Vec::new();
        for _ in 0..4 {
            seen.push(rx.recv().await.unwrap());
        }
        seen.sort();
        assert_eq!(seen, [Some(0), Some(0), Some(1), Some(1)]);
        assert_eq!(current(), None);
        hold_tx.send(true).unwrap();
    }
}
