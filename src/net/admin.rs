//! The admin listener: plain HTTP/1.1 for operators and monitoring, on `admin_listen`
//! (default 127.0.0.1:9095; an empty value turns it off).
//!
//! Owns: the routes and the write guard (net/side_listener.rs runs the listener), and stopping with
//! the gate. Routes: `GET /metrics` (Prometheus text), `GET /healthz` (200 "ok" while the process
//! serves), `GET /readyz` (200 when the registry answers `GET /v2/`, else 503), and
//! `/admin/read-only` (GET status, POST switch). No TLS: bind it to loopback or a private network.
//!
//! Writes (every method but GET/HEAD under `/admin/`) are refused with a registry-style 403 `DENIED` unless they
//! come from a program rather than a web page ([`write_allowed`]): no `Origin` header (browsers
//! send one on every cross-site POST), the header `X-Registry-Gate: cli` (a page cannot add a
//! custom header to a cross-site request without a preflight, which this listener never
//! answers), and a `Host` that is the listener's own address or `localhost[:port]` (DNS
//! rebinding sends the attacker's name). With `admin_token` set, writes also need
//! `Authorization: Bearer <secret>` (compared in constant time); a write with the right token may
//! use any `Host`, for use beyond loopback.
//! Does not own: the metrics themselves (ops/metrics.rs) or the upstream check (upstream/proxy.rs).

use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::http::service::Gate;
use crate::ops::maintenance;
use crate::ops::metrics::CONTENT_TYPE as METRICS_CONTENT_TYPE;

/// The header every admin write must carry, and its value.
pub const CLI_HEADER: &str = "x-registry-gate";
pub const CLI_HEADER_VALUE: &str = "cli";

/// What admin writes are checked against.
#[derive(Clone)]
pub struct WriteGuard {
    /// The listener's own address, as a `Host` may name it.
    pub local: std::net::SocketAddr,
    /// SHA-256 of the admin token, when one is configured.
    pub token: Option<[u8; 32]>,
}

impl WriteGuard {
    pub fn new(local: std::net::SocketAddr, token: Option<&str>) -> Self {
        WriteGuard {
            local,
            token: token.map(digest),
        }
    }
}

fn digest(s: &str) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, s.as_bytes());
    let mut out = [0; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Why an admin write is refused, or `Ok` when it may go on.
pub fn write_allowed(guard: &WriteGuard, headers: &http::HeaderMap) -> Result<(), &'static str> {
    use subtle::ConstantTimeEq as _;
    if headers.contains_key(header::ORIGIN) {
        return Err("admin writes from a web page (Origin header) are refused");
    }
    if headers.get(CLI_HEADER).map(http::HeaderValue::as_bytes) != Some(CLI_HEADER_VALUE.as_bytes())
    {
        return Err("admin writes need the header X-Registry-Gate: cli");
    }
    let token_ok = match &guard.token {
        None => false,
        Some(want) => {
            let given = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(|t| digest(t.trim()));
            match given {
                Some(g) => g.ct_eq(want).into(),
                None => false,
            }
        }
    };
    if guard.token.is_some() && !token_ok {
        return Err("admin writes need Authorization: Bearer <admin_token>");
    }
    if !token_ok {
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
        let port = guard.local.port();
        let own = match host {
            Some(h) => {
                h == guard.local.to_string()
                    || h.eq_ignore_ascii_case("localhost")
                    || h.eq_ignore_ascii_case(&format!("localhost:{port}"))
            }
            None => false,
        };
        if !own {
            return Err("admin writes need Host: the admin listener's address or localhost");
        }
    }
    Ok(())
}

fn denied(message: &str) -> Response<Full<Bytes>> {
    let body = serde_json::json!({
        "errors": [{ "code": "DENIED", "message": message, "detail": null }]
    })
    .to_string();
    reply(StatusCode::FORBIDDEN, "application/json", body)
}

/// Serves the admin routes until `stop` turns true.
pub async fn serve(
    listener: TcpListener,
    gate: Arc<Gate>,
    guard: WriteGuard,
    stop: watch::Receiver<bool>,
) {
    super::side_listener::serve(
        listener,
        "admin_listen",
        true,
        move |req| {
            let (gate, guard) = (gate.clone(), guard.clone());
            async move { route(&gate, &guard, req).await }
        },
        stop,
    )
    .await;
}

/// One `match` from method and path to the answer.
async fn route(gate: &Gate, guard: &WriteGuard, req: Request<Incoming>) -> Response<Full<Bytes>> {
    if req.uri().path().starts_with("/admin/")
        && req.method() != Method::GET
        && req.method() != Method::HEAD
        && let Err(why) = write_allowed(guard, req.headers())
    {
        tracing::warn!(method = %req.method(), path = req.uri().path(), "admin write refused: {why}");
        return denied(why);
    }
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => {
            let mut text = gate.metrics.render();
            gate.proxy().render_metrics(&mut text);
            reply(StatusCode::OK, METRICS_CONTENT_TYPE, text)
        }
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n"),
        (&Method::GET, "/readyz") => {
            if gate.proxy().ready().await {
                text(StatusCode::OK, "ready\n")
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not ready: no registry member answers GET /v2/\n",
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

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn writes_need_the_cli_header_own_host_no_origin_and_the_token() {
        let g = WriteGuard::new("127.0.0.1:9095".parse().unwrap(), None);
        let ok = [("host", "127.0.0.1:9095"), ("x-registry-gate", "cli")];
        assert!(write_allowed(&g, &headers(&ok)).is_ok());
        for host in ["localhost", "LOCALHOST:9095"] {
            let h = headers(&[("host", host), ("x-registry-gate", "cli")]);
            assert!(write_allowed(&g, &h).is_ok(), "{host}");
        }
        for bad in [
            &[("host", "127.0.0.1:9095")][..],
            &[("host", "evil.example:9095"), ("x-registry-gate", "cli")],
            &[("host", "localhost:80"), ("x-registry-gate", "cli")],
            &[("x-registry-gate", "cli")],
            &[
                ("host", "127.0.0.1:9095"),
                ("x-registry-gate", "cli"),
                ("origin", "https://evil.example"),
            ],
        ] {
            assert!(write_allowed(&g, &headers(bad)).is_err(), "{bad:?}");
        }
        let t = WriteGuard::new("0.0.0.0:9095".parse().unwrap(), Some("s3cret"));
        let with = |auth: &str| {
            headers(&[
                ("host", "10.0.0.5:9095"),
                ("x-registry-gate", "cli"),
                ("authorization", auth),
            ])
        };
        assert!(write_allowed(&t, &with("Bearer s3cret")).is_ok());
        assert!(write_allowed(&t, &with("Bearer s3cre")).is_err());
        assert!(write_allowed(&t, &with("Basic s3cret")).is_err());
    }
}
