//! Accepting connections: TLS with a deadline, HTTP/1.1 or HTTP/2 by ALPN, graceful drain.
//!
//! Owns: the accept loop (an accept error is logged and retried, never fatal), the handshake
//! deadline, answering plain HTTP sent to the TLS port with a JSON 400 and a close (never a
//! Basic challenge in cleartext), the hyper builders (header-read timeout with a timer, bounded
//! header sizes, bounded HTTP/2 windows), the drain on shutdown, and counting open
//! connections and failed handshakes in the metrics. Enforces the connection caps (limits.rs)
//! at accept, before TLS, and closes an HTTP/2 connection that had no open stream for
//! `[timeouts] h2_idle` (hyper has no such timeout; its keep-alive pings only detect dead
//! peers), with a GOAWAY so that a request the client sends at that moment is not lost.
//!
//! HTTP/2 limits: the header list is capped at the same 64 KiB as an HTTP/1.1 head (hyper resets
//! the stream, or answers 431); receive windows are fixed when the connection starts: 256 KiB per
//! stream and 512 KiB per connection while at most 16 connections are open, 128 and 256 KiB when
//! more are, so a connection never holds more than 512 KiB of request body that the registry has
//! not taken yet (whether it waits for authentication, body unread, or for a slow registry), and
//! a crowd of uploads holds less each.
//! An HTTP/2 connection writes through `Coalesce` (net/coalesce.rs), which batches h2's
//! frame-by-frame flushes into writes of up to 64 KiB.
//! The accept loop runs on the main runtime; each accepted connection is served on one of the
//! connection threads (net/workers.rs), from its TLS handshake to its last response.
//! Does not own: what a request gets (http/service.rs).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::config::{Limits, Timeouts};
use crate::http::service::{ConnInfo, Gate, plain_http_on_tls_port};
use crate::net::coalesce::Coalesce;
use crate::net::limits::{ConnLimiter, Guarded, Streams};
use crate::net::workers::Workers;
use crate::ops::metrics::HandshakeFailure;

/// Largest request head accepted (registry clients need a few KiB; docker's many `Accept`s fit).
const MAX_HEADER_BYTES: usize = 64 * 1024;

/// HTTP/2 receive windows: what a stream, and a whole connection, may have in flight to the gate
/// (request bodies the registry has not taken yet).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct H2Windows {
    stream: u32,
    connection: u32,
}

/// The windows of a connection opened while the gate is quiet: a stream gets at most 256 KiB per
/// round trip (about 100 MB/s at 2.5 ms, 13 MB/s at 20 ms); the connection, two streams at full
/// speed or several sharing it.
const H2_WIDE: H2Windows = H2Windows {
    stream: 256 * 1024,
    connection: 512 * 1024,
};
/// The windows of a connection opened while more than [`H2_WIDE_UP_TO`] are open: half the wide
/// ones (twice nginx's 64 KiB preread). Narrower windows cost CPU on both sides (more, smaller
/// reads and window updates): 64 KiB ones took the gate's CPU for 50 concurrent uploads from
/// 2.61 to 3.42 s, these to 2.97 s (docs/benchmarks.md).
const H2_NARROW: H2Windows = H2Windows {
    stream: 128 * 1024,
    connection: 256 * 1024,
};
/// A new HTTP/2 connection gets the wide windows while at most this many connections are open
/// (itself included), the narrow ones beyond: a lone upload over a long round trip runs at full
/// speed, and 50 uploads at once, while the registry is the slower side, park about half of
/// what they would with wide windows only (peak RSS 28.4 MiB instead of 34.4–35.0).
const H2_WIDE_UP_TO: usize = 16;

impl H2Windows {
    /// The windows for a connection accepted while `open` connections are open, itself included.
    fn for_open(open: usize) -> Self {
        if open <= H2_WIDE_UP_TO {
            H2_WIDE
        } else {
            H2_NARROW
        }
    }
}

/// How long a closing HTTP/2 connection (idle, or drained) may take to answer the GOAWAY's ping
/// once none of its streams is open; then it is dropped.
const H2_GOAWAY_GRACE: Duration = Duration::from_secs(5);

/// HTTP/2 send buffer per stream: a response body's bytes the gate holds for a slow client.
/// `Coalesce` takes frames as fast as h2 makes them, so 16 KiB loses nothing (an HTTP/2 pull ran
/// at 613 MB/s with 16 and with 64 KiB) and 50 slow pulls hold 3 MiB less (docs/benchmarks.md).
const H2_SEND_BUFFER: usize = 16 * 1024;

/// The TLS and HTTP protocol settings, built once.
struct Protocols {
    h1: http1::Builder,
    h2_wide: http2::Builder<TokioExecutor>,
    h2_narrow: http2::Builder<TokioExecutor>,
    h2_idle: Duration,
    /// Time a new connection gets to send its first byte, then again to finish the TLS handshake.
    handshake: Duration,
}

impl Protocols {
    fn new(timeouts: &Timeouts) -> Self {
        let mut h1 = http1::Builder::new();
        h1.timer(TokioTimer::new())
            .header_read_timeout(timeouts.header_read)
            .max_header_size(MAX_HEADER_BYTES)
            .max_buf_size(crate::config::MAX_READ_BUFFER)
            .keep_alive(true);
        Protocols {
            h1,
            h2_wide: Self::h2_builder(H2_WIDE),
            h2_narrow: Self::h2_builder(H2_NARROW),
            h2_idle: timeouts.h2_idle,
            handshake: timeouts.handshake,
        }
    }

    fn h2(&self, windows: H2Windows) -> &http2::Builder<TokioExecutor> {
        if windows == H2_WIDE {
            &self.h2_wide
        } else {
            &self.h2_narrow
        }
    }

    fn h2_builder(windows: H2Windows) -> http2::Builder<TokioExecutor> {
        let mut h2 = http2::Builder::new(TokioExecutor::new());
        h2.timer(TokioTimer::new())
            // Fixed windows bound the bytes one upload can park in the gate. Adaptive windows
            // grow to hyper's 16 MiB BDP limit when pings are slow (a busy machine): 20
            // concurrent h2 uploads peaked at 156 MiB RSS that way, 48 MiB with hyper's fixed
            // 1 MiB windows, 27 MiB with the wide ones (docs/benchmarks.md).
            .adaptive_window(false)
            .initial_stream_window_size(windows.stream)
            .initial_connection_window_size(windows.connection)
            // What one download may queue in the gate beyond what its client's window lets
            // out (hyper's default: 400 KiB per stream, 20 MiB for 50 slow HTTP/2 pulls).
            .max_send_buf_size(H2_SEND_BUFFER)
            .max_header_list_size(MAX_HEADER_BYTES as u32)
            .keep_alive_interval(Duration::from_secs(60))
            .keep_alive_timeout(Duration::from_secs(20));
        h2
    }
}

/// What a connection needs to take part in the drain: the watcher the drain waits for, and the
/// signal that starts it.
struct Drain {
    watcher: Watcher,
    stop: watch::Receiver<bool>,
}

/// The listeners the gate serves on.
pub struct Listeners {
    pub tls: Option<(TcpListener, TlsAcceptor)>,
    pub plain: Option<TcpListener>,
}

/// Accepts until `stop` turns true, then drains open connections for at most `timeouts.drain`.
pub async fn serve(
    listeners: Listeners,
    workers: Workers,
    gate: Arc<Gate>,
    timeouts: Timeouts,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
) {
    let protocols = Arc::new(Protocols::new(&timeouts));
    let limiter = ConnLimiter::new(limits);
    let graceful = GracefulShutdown::new();
    let (tls_listener, acceptor) = match listeners.tls {
        Some((l, a)) => (Some(l), Some(a)),
        None => (None, None),
    };
    loop {
        let (accepted, is_tls) = tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            r = accept(tls_listener.as_ref()) => (r, true),
            r = accept(listeners.plain.as_ref()) => (r, false),
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: wait a little instead of spinning or exiting.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let permit = match limiter.try_open(peer.ip()) {
            Ok(p) => p,
            Err(why) => {
                gate.metrics.connection_refused(why);
                tracing::debug!(client = %peer, ?why, "connection refused: over the cap");
                drop(stream);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        // The socket moves to a connection thread (net/workers.rs), whose runtime takes it over.
        let stream = match stream.into_std() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(client = %peer, "cannot hand over a connection: {e}");
                continue;
            }
        };
        let open = (gate.metrics.connection(), permit);
        let drain = Drain {
            watcher: graceful.watcher(),
            stop: stop.clone(),
        };
        let (gate, protocols) = (gate.clone(), protocols.clone());
        let h2_windows = H2Windows::for_open(limiter.open());
        let acceptor = if is_tls { acceptor.clone() } else { None };
        workers.spawn(move || async move {
            let stream = match TcpStream::from_std(stream) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(client = %peer, "cannot take over a connection: {e}");
                    return;
                }
            };
            match acceptor {
                Some(acceptor) => {
                    serve_tls(stream, peer, acceptor, h2_windows, gate, protocols, drain).await;
                }
                None => {
                    let info = ConnInfo { peer, tls: false };
                    serve_http(TokioIo::new(stream), None, info, gate, &protocols, drain).await;
                }
            }
            drop(open);
        });
    }
    drop(tls_listener);
    drop(listeners.plain);
    let open = graceful.count();
    if open > 0 {
        tracing::info!(open, drain = ?timeouts.drain, "draining connections");
    }
    if tokio::time::timeout(timeouts.drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("drain time over; closing the remaining connections");
    }
}

async fn accept(listener: Option<&TcpListener>) -> std::io::Result<(TcpStream, SocketAddr)> {
    match listener {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

async fn serve_tls(
    mut stream: TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    h2_windows: H2Windows,
    gate: Arc<Gate>,
    protocols: Arc<Protocols>,
    drain: Drain,
) {
    // A TLS connection starts with a handshake record (0x16). Anything else, typically docker
    // retrying over plain HTTP, gets a JSON answer naming the mistake, and the connection closes.
    let mut first = [0u8; 1];
    let handshake = protocols.handshake;
    match tokio::time::timeout(handshake, stream.peek(&mut first)).await {
        Ok(Ok(1)) => {}
        Err(_) => {
            gate.metrics.handshake_failure(HandshakeFailure::Timeout);
            return;
        }
        // Closed before sending anything (a port probe), or a read error: nothing to count.
        _ => return,
    }
    if first[0] != 0x16 {
        let plain_http = first[0].is_ascii_alphabetic();
        gate.metrics.handshake_failure(if plain_http {
            HandshakeFailure::PlainHttp
        } else {
            HandshakeFailure::Error
        });
        if plain_http {
            let _ = stream.write_all(&plain_http_on_tls_port()).await;
        }
        let _ = stream.shutdown().await;
        return;
    }
    let tls = match tokio::time::timeout(handshake, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            gate.metrics.handshake_failure(HandshakeFailure::Error);
            tracing::debug!(client = %peer, "TLS handshake failed: {e}");
            return;
        }
        Err(_) => {
            gate.metrics.handshake_failure(HandshakeFailure::Timeout);
            tracing::debug!(client = %peer, "TLS handshake timed out");
            return;
        }
    };
    // A TLS-ALPN-01 validation only needs the handshake (RFC 8737 §3): close, serve nothing.
    if tls.get_ref().1.alpn_protocol() == Some(crate::net::tls::ACME_TLS_ALPN) {
        tracing::debug!(client = %peer, "answered an ACME TLS-ALPN-01 validation");
        let mut tls = tls;
        let _ = tls.shutdown().await;
        return;
    }
    let info = ConnInfo { peer, tls: true };
    if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
        let io = TokioIo::new(Coalesce::new(tls));
        serve_http(io, Some(h2_windows), info, gate, &protocols, drain).await;
    } else {
        serve_http(TokioIo::new(tls), None, info, gate, &protocols, drain).await;
    }
}

async fn serve_http<I>(
    io: TokioIo<I>,
    h2: Option<H2Windows>,
    info: ConnInfo,
    gate: Arc<Gate>,
    protocols: &Protocols,
    drain: Drain,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let result = if let Some(windows) = h2 {
        let streams = Streams::default();
        let service = service_fn({
            let streams = streams.clone();
            move |req| {
                let (gate, guard) = (gate.clone(), streams.open());
                async move {
                    // hyper moves each HTTP/2 request's future into a task of its own; boxed,
                    // the ~5 KB of `handle`'s state are not copied on the way (2 % less CPU
                    // per keep-alive 401 in alternating h2load runs).
                    let resp = Box::pin(gate.handle(req, info)).await;
                    Ok::<_, Infallible>(resp.map(|b| Guarded::new(b, guard)))
                }
            }
        });
        // Not `watcher.watch`: its wrapper hides the connection, and an idle close must reach it
        // too. The watcher is held so the drain still waits for this connection.
        let Drain {
            watcher: _draining_waits_for_this,
            mut stop,
        } = drain;
        let mut conn = std::pin::pin!(protocols.h2(windows).serve_connection(io, service));
        let closing = tokio::select! {
            r = conn.as_mut() => return log_end(r, info),
            _ = stop.wait_for(|s| *s) => "draining an HTTP/2 connection",
            () = streams.idle_for(protocols.h2_idle) => "closing an idle HTTP/2 connection",
        };
        tracing::debug!(client = %info.peer, "{closing}");
        // GOAWAY, then the streams already started (or started before the client saw it)
        // finish, however long they take (the drain has its own deadline). hyper closes once
        // the client has answered the GOAWAY's ping; a client that does not is dropped when
        // no stream has been open for H2_GOAWAY_GRACE.
        conn.as_mut().graceful_shutdown();
        let unanswered = async {
            tokio::time::sleep(H2_GOAWAY_GRACE).await;
            streams.idle_for(H2_GOAWAY_GRACE).await;
        };
        tokio::select! {
            r = conn => r,
            () = unanswered => Ok(()),
        }
    } else {
        let service = service_fn(move |req| {
            let gate = gate.clone();
            async move { Ok::<_, Infallible>(gate.handle(req, info).await) }
        });
        drain
            .watcher
            .watch(protocols.h1.serve_connection(io, service))
            .await
    };
    log_end(result, info);
}

fn log_end(result: Result<(), hyper::Error>, info: ConnInfo) {
    if let Err(e) = result {
        tracing::debug!(client = %info.peer, "connection ended: {e}");
    }
}
