//! The admin listener: plain HTTP/1.1 for operators and monitoring, on `admin_listen`
//! (default 127.0.0.1:9090; an empty value turns it off).
//!
//! Owns: its accept loop (an accept error is logged and retried), the routes, and stopping with
//! the gate. Routes: `GET /metrics` (Prometheus text), `GET /healthz` (200 "ok" while the process
//! serves), `GET /readyz` (200 when the registry answers `GET /v2/`, else 503). It has no
//! authentication and no TLS: bind it to loopback or a private network only.
//! Does not own: the metrics themselves (ops/metrics.rs) or the upstream check (upstream/proxy.rs).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::http::service::Gate;
use crate::ops::maintenance;
use crate::ops::metrics::CONTENT_TYPE as METRICS_CONTENT_TYPE;

/// Admin requests are small; a client that takes longer to send its head is cut off.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long open admin connections may finish after the gate is told to stop.
const DRAIN: Duration = Duration::from_secs(2);

/// Serves the admin routes until `stop` turns true.
pub async fn serve(listener: TcpListener, gate: Arc<Gate>, mut stop: watch::Receiver<bool>) {
    let mut h1 = http1::Builder::new();
    h1.timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(64 * 1024);
    let graceful = GracefulShutdown::new();
    loop {
        let accepted = tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            r = listener.accept() => r,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(e) => {
                tracing::warn!("admin accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let gate = gate.clone();
        let service = service_fn(move |req| {
            let gate = gate.clone();
            async move { Ok::<_, Infallible>(route(&gate, req).await) }
        });
        let conn = graceful.watch(h1.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("admin connection ended: {e}");
            }
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(DRAIN, graceful.shutdown()).await;
}

/// One `match` from method and path to the answer.
async fn route(gate: &Gate, req: Request<Incoming>) -> Response<Full<Bytes>> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => {
            reply(StatusCode::OK, METRICS_CONTENT_TYPE, gate.metrics.render())
        }
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n"),
        (&Method::GET, "/readyz") => {
            if gate.proxy().ready().await {
                text(StatusCode::OK, "ready\n")
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not ready: the registry does not answer GET /v2/\n",
                )
            }
        }
        (&Method::GET | &Method::POST, "/admin/read-only") => {
            let (status, body) =
                maintenance::admin_endpoint(&gate.maintenance, req.method(), req.uri().query())
                    .await;
            reply(status, "application/json", body)
        }
        (_, "/metrics" | "/healthz" | "/readyz") => {
            let mut resp = text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n");
            resp.headers_mut()
                .insert(header::ALLOW, http::HeaderValue::from_static("GET"));
            resp
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    reply(status, "text/plain; charset=utf-8", body.into())
}

fn reply(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    resp
}
