//! A small plain-HTTP/1.1 listener for the gate's side doors: the admin listener and the ACME
//! HTTP-01 listener.
//!
//! Owns: the accept loop (an accept error is logged and retried after 50 ms, never ending the
//! listener), a header-read deadline, a 64 KiB head limit, connection-per-task serving, and a
//! bounded graceful drain when `stop` turns true. Does not own: what each request gets (the
//! caller's handler).

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;

const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
const DRAIN: Duration = Duration::from_secs(2);

/// Serves `handler` on `listener` until `stop` turns true; `name` is the setting the listener
/// comes from, for logs. `keep_alive` off closes every connection after its answer.
pub async fn serve<H, F>(
    listener: TcpListener,
    name: &'static str,
    keep_alive: bool,
    handler: H,
    mut stop: watch::Receiver<bool>,
) where
    H: Fn(Request<Incoming>) -> F + Send + Sync + 'static,
    F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let mut h1 = http1::Builder::new();
    h1.timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(64 * 1024)
        .keep_alive(keep_alive);
    let graceful = GracefulShutdown::new();
    let handler = Arc::new(handler);
    loop {
        let accepted = tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            r = listener.accept() => r,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(e) => {
                tracing::warn!("{name} accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let handler = handler.clone();
        let service = service_fn(move |req| {
            let answer = handler(req);
            async move { Ok::<_, Infallible>(answer.await) }
        });
        let conn = graceful.watch(h1.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("{name} connection ended: {e}");
            }
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(DRAIN, graceful.shutdown()).await;
}
