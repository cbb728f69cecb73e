//! Forwarding to the upstream registry members.
//!
//! Owns: sending each request to a member the pool picks (upstream/pool.rs) and what may be
//! sent again ([`Proxy::send`]: a request none of which went out, any method, within
//! `upstream_retry`; a bodyless GET or HEAD also after it went out; nothing else), the probes
//! (`/readyz`, `check`, the pool's probers), the pooled HTTP/1.1 keep-alive client (connect timeout, TCP_NODELAY, optional TLS to an
//! `https://` upstream with `upstream_ca`), building the upstream request (the configured
//! upstream plus the path and query the gate decided on; never the client's authority, so
//! the gate is no open proxy), `Host` set to the host the request named (from `:authority`
//! for HTTP/2), the response
//! deadline, timing the wait for the response headers (metrics), and mapping connection
//! failures to registry-style errors. Bodies are streamed both ways untouched; redirects are
//! returned to the client, never followed.
//! Does not own: deciding whether and what to forward (http/service.rs), the header rules
//! (upstream/headers.rs).

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use http::{HeaderValue, Request, Response, Uri, Version, header, uri::PathAndQuery};
use http_body_util::BodyExt;
use hyper::body::{Body as _, Incoming};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::headers::{self, Hop};
use super::pool::{InFlight, Pool};
use crate::body::Tracked;
use crate::config::{Timeouts, Upstream};
use crate::error::{Body, GateError};
use crate::ops::metrics::Metrics;

/// Why the upstream client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamSetupError {
    #[error("upstream_ca: {0}")]
    Ca(#[from] crate::net::tls::TlsError),
    #[error("upstream_ca {path}: {source}")]
    BadCa {
        path: std::path::PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("upstream TLS: {0}")]
    Tls(#[from] rustls::Error),
    #[error("upstream TLS: no system certificates: {0}")]
    NativeRoots(std::io::Error),
}

/// The client to the registry members.
type UpstreamClient = Client<HttpsConnector<HttpConnector>, Body>;

/// The registry members and the pooled clients that reach them (one pool per connection thread).
pub struct Proxy {
    /// Index 0 for code off the connection threads, 1 + i for connection thread i.
    clients: Vec<UpstreamClient>,
    pool: Arc<Pool>,
    response_timeout: Duration,
    /// `[timeouts] upstream_retry`: how long a request no member took yet is held.
    retry: Duration,
    probe_timeout: Duration,
    idle: Duration,
    metrics: Arc<Metrics>,
    probers: Vec<tokio::task::AbortHandle>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        for p in &self.probers {
            p.abort();
        }
    }
}

/// A member's own trouble: it is taken out, and a request that is safe to repeat goes elsewhere.
fn unhealthy(status: http::StatusCode) -> bool {
    matches!(status.as_u16(), 502..=504)
}

impl Proxy {
    /// Builds the client and, inside a tokio runtime, one prober per member.
    pub fn new(
        upstream: &Upstream,
        timeouts: &Timeouts,
        metrics: Arc<Metrics>,
    ) -> Result<Self, UpstreamSetupError> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(timeouts.upstream_connect));
        http.set_nodelay(true);
        http.set_keepalive(Some(Duration::from_secs(60)));

        let builder = hyper_rustls::HttpsConnectorBuilder::new();
        let any_https = upstream
            .members
            .iter()
            .any(|m| m.scheme_str() == Some("https"));
        let builder = match &upstream.ca {
            Some(path) => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in crate::net::tls::load_certs(path)? {
                    roots
                        .add(cert)
                        .map_err(|source| UpstreamSetupError::BadCa {
                            path: path.clone(),
                            source,
                        })?;
                }
                let config =
                    rustls::ClientConfig::builder_with_provider(crate::net::tls::provider())
                        .with_safe_default_protocol_versions()?
                        .with_root_certificates(roots)
                        .with_no_client_auth();
                builder.with_tls_config(config)
            }
            None if any_https => builder
                .with_provider_and_native_roots(crate::net::tls::provider())
                .map_err(UpstreamSetupError::NativeRoots)?,
            None => {
                // Plain http upstream: the TLS side is never used.
                let config =
                    rustls::ClientConfig::builder_with_provider(crate::net::tls::provider())
                        .with_safe_default_protocol_versions()?
                        .with_root_certificates(rustls::RootCertStore::empty())
                        .with_no_client_auth();
                builder.with_tls_config(config)
            }
        };
        let connector = builder.https_or_http().enable_http1().wrap_connector(http);
        // One pool of registry connections per connection thread (net/workers.rs), so that a
        // request only uses connections whose tasks run on its own thread, and one for the rest
        // (probes, the catalog on the main runtime).
        let clients: Vec<UpstreamClient> = (0..=crate::net::workers::count())
            .map(|_| {
                Client::builder(TokioExecutor::new())
                    .pool_timer(TokioTimer::new())
                    .pool_idle_timeout(Duration::from_secs(60))
                    .pool_max_idle_per_host(256)
                    .http1_max_buf_size(crate::config::MAX_READ_BUFFER)
                    // Host is the client's, set below; the client must not replace it with the
                    // upstream's.
                    .set_host(false)
                    .build(connector.clone())
            })
            .collect();
        let client = clients[0].clone();
        let pool = Arc::new(Pool::new(&upstream.members));
        let probe_timeout = timeouts.upstream_connect.min(Duration::from_secs(5));
        let mut probers = Vec::new();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            for i in 0..upstream.members.len() {
                let client = client.clone();
                let task = pool.clone().prober(i, move |base| {
                    let client = client.clone();
                    async move {
                        probe(&client, &base, probe_timeout)
                            .await
                            .is_ok_and(|s| !unhealthy(s))
                    }
                });
                probers.push(rt.spawn(task).abort_handle());
            }
        }
        Ok(Proxy {
            clients,
            pool,
            response_timeout: timeouts.upstream_response,
            retry: timeouts.upstream_retry,
            probe_timeout,
            idle: timeouts.idle,
            metrics,
            probers,
        })
    }

    /// This thread's pool of registry connections.
    fn client(&self) -> &UpstreamClient {
        let i = crate::net::workers::current().map_or(0, |w| w + 1);
        &self.clients[i % self.clients.len()]
    }

    /// Sends `req` upstream and streams the answer back. `host` is the host the client's
    /// request named (http/route.rs `request_host`: `:authority` on HTTP/2, RFC 9113 §8.3.1),
    /// sent as `Host` because the registry builds upload `Location` URLs from it.
    ///
    /// `bytes_in` and `bytes_out` count the request and response bodies as they flow.
    pub async fn forward<B>(
        &self,
        req: Request<B>,
        host: Option<HeaderValue>,
        hop: Hop,
        bytes_in: Arc<AtomicU64>,
        bytes_out: Arc<AtomicU64>,
    ) -> Result<Response<Body>, GateError>
    where
        B: hyper::body::Body<Data = bytes::Bytes> + Send + Sync + 'static,
        B::Error: Into<crate::error::BodyError>,
    {
        let (mut parts, body) = req.into_parts();
        parts.headers.remove(header::HOST);
        if let Some(host) = host {
            parts.headers.insert(header::HOST, host);
        }
        headers::remove_hop_by_hop(&mut parts.headers);
        // The registry behind the gate does not need, and must not log, the client's password.
        parts.headers.remove(header::AUTHORIZATION);
        headers::set_forwarding(&mut parts.headers, hop);

        let body = Tracked::new(body, bytes_in, self.idle).boxed();
        let (resp, in_flight) = self.send(&parts, body).await?;
        let (mut parts, body) = resp.into_parts();
        headers::remove_hop_by_hop(&mut parts.headers);
        // The member counts this request as outstanding until the body is done or dropped.
        let body = Tracked::new(body, bytes_out, self.idle).map_frame(move |frame| {
            let _counted = &in_flight;
            frame
        });
        Ok(Response::from_parts(parts, body.boxed()))
    }

    /// Sends one request to a member, trying again where that cannot repeat anything:
    ///
    /// - A connect failure (`Error::is_connect`: refused, reset or timed out while connecting)
    ///   happens before the request was handed to any connection, and the body is still in
    ///   its [`Lent`] slot, untouched: the same request goes to another member, or, when none
    ///   is up, waits for one until `upstream_retry` has passed. Any method, a PATCH with a body
    ///   included. A pooled connection found closed before the request was written is retried
    ///   by hyper-util itself (`retry_canceled_requests`), which gets the request back unsent.
    /// - Anything else (the connection broke after the request went out, or a 502/503/504) is
    ///   tried again only for a GET or HEAD without a body, which repeats nothing.
    ///
    /// Every failure takes the member out until its prober sees it answer.
    async fn send(
        &self,
        parts: &http::request::Parts,
        body: Body,
    ) -> Result<(Response<Incoming>, InFlight), GateError> {
        let bodyless = body.is_end_stream();
        let repeatable = bodyless && matches!(parts.method, http::Method::GET | http::Method::HEAD);
        let hint = body.size_hint();
        let slot = Arc::new(std::sync::Mutex::new(Some(body)));
        let deadline = tokio::time::Instant::now() + self.retry;
        let mut tried: Vec<usize> = Vec::new();
        let mut last: Option<GateError> = None;
        loop {
            let Some(i) = self.pool.pick(&tried) else {
                // Every member is out, or was tried for this request.
                if !self.pool.wait_for_member(deadline).await {
                    return Err(last.unwrap_or_else(|| {
                        GateError::UpstreamUnavailable(format!(
                            "no registry member answered within {:?}",
                            self.retry
                        ))
                    }));
                }
                tried.clear();
                continue;
            };
            let member = &self.pool.members()[i];
            let mut req = Request::new(
                Lent {
                    slot: slot.clone(),
                    body: None,
                    end: bodyless,
                    hint,
                }
                .boxed(),
            );
            *req.method_mut() = parts.method.clone();
            *req.uri_mut() = member_uri(&member.base, parts.uri.path_and_query())?;
            *req.version_mut() = Version::HTTP_11;
            *req.headers_mut() = parts.headers.clone();
            let in_flight = self.pool.start(i);
            let sent = Instant::now();
            let answer = tokio::time::timeout(self.response_timeout, self.client().request(req))
                .await
                .map_err(|_| GateError::UpstreamTimeout(self.response_timeout))?;
            match answer {
                Ok(resp) if unhealthy(resp.status()) => {
                    self.pool
                        .failed(i, &format!("answered {}", resp.status().as_u16()));
                    tried.push(i);
                    if !(repeatable && self.pool.pick(&tried).is_some()) {
                        return Ok((resp, in_flight));
                    }
                }
                Ok(resp) => {
                    self.pool.answered();
                    self.metrics.upstream_latency(sent.elapsed());
                    return Ok((resp, in_flight));
                }
                Err(e) => {
                    let body_untouched = bodyless || lock(&slot).is_some();
                    let unsent = e.is_connect() && body_untouched;
                    let error = upstream_error(&e);
                    self.pool.failed(i, &error.to_string());
                    if !(unsent || repeatable) {
                        return Err(error);
                    }
                    tracing::debug!(member = %member.name, method = %parts.method, unsent, "trying again: {error}");
                    last = Some(error);
                    tried.push(i);
                }
            }
        }
    }

    /// GETs a small document from the upstream (at most `limit` bytes), for answers the gate
    /// composes itself (the filtered catalog). `host` is the host the client's request named,
    /// sent as for forwarding (an HTTP/2 request has no `Host` header: without it the registry
    /// answers 400).
    pub async fn fetch(
        &self,
        path_and_query: &str,
        host: Option<&HeaderValue>,
        limit: usize,
    ) -> Result<(http::StatusCode, http::HeaderMap, bytes::Bytes), GateError> {
        self.fetch_with(http::Method::GET, path_and_query, host, None, limit)
            .await
    }

    /// Like [`Proxy::fetch`] with a method and an `Accept` field (a `HEAD` of a manifest).
    pub async fn fetch_with(
        &self,
        method: http::Method,
        path_and_query: &str,
        host: Option<&HeaderValue>,
        accept: Option<&'static str>,
        limit: usize,
    ) -> Result<(http::StatusCode, http::HeaderMap, bytes::Bytes), GateError> {
        let pq = PathAndQuery::try_from(path_and_query)
            .map_err(|e| GateError::Internal(format!("upstream path: {e}")))?;
        let mut req = Request::new(());
        *req.method_mut() = method;
        *req.uri_mut() = Uri::from(pq);
        if let Some(h) = host {
            req.headers_mut().insert(header::HOST, h.clone());
        }
        if let Some(a) = accept {
            req.headers_mut()
                .insert(header::ACCEPT, HeaderValue::from_static(a));
        }
        let (parts, ()) = req.into_parts();
        let (resp, _in_flight) = self.send(&parts, crate::error::empty()).await?;
        let (parts, body) = resp.into_parts();
        let bytes = http_body_util::Limited::new(body, limit)
            .collect()
            .await
            .map_err(|e| GateError::UpstreamUnavailable(format!("reading {path_and_query}: {e}")))?
            .to_bytes();
        Ok((parts.status, parts.headers, bytes))
    }

    /// True while a member is up and one answered (not 502/503/504) within `window`.
    pub fn answered_within(&self, window: Duration) -> bool {
        self.pool.answered_within(window)
    }

    /// Probes every member with `GET /v2/` at once (any answer but 502/503/504 counts as
    /// alive), updating their health; true while at least one answers.
    pub async fn ready(&self) -> bool {
        let results = self.probe_all().await;
        results
            .iter()
            .any(|(_, r)| r.as_ref().is_ok_and(|s| !unhealthy(*s)))
    }

    /// `GET /v2/` on every member at once: each member's name and answer (or why none came).
    pub async fn probe_all(&self) -> Vec<(String, Result<http::StatusCode, String>)> {
        let mut probes = tokio::task::JoinSet::new();
        for (i, m) in self.pool.members().iter().enumerate() {
            let client = self.client().clone();
            let base = m.base.clone();
            let timeout = self.probe_timeout;
            probes.spawn(async move { (i, probe(&client, &base, timeout).await) });
        }
        let mut results: Vec<(usize, Result<http::StatusCode, String>)> = Vec::new();
        while let Some(done) = probes.join_next().await {
            if let Ok(r) = done {
                results.push(r);
            }
        }
        results.sort_by_key(|(i, _)| *i);
        results
            .into_iter()
            .map(|(i, r)| {
                match &r {
                    Ok(s) if !unhealthy(*s) => self.pool.probed_ok(i),
                    Ok(s) => self
                        .pool
                        .failed(i, &format!("probe answered {}", s.as_u16())),
                    Err(e) => self.pool.failed(i, &format!("probe: {e}")),
                }
                (
                    self.pool.members()[i]
                        .base
                        .to_string()
                        .trim_end_matches('/')
                        .to_owned(),
                    r,
                )
            })
            .collect()
    }

    /// Appends the per-member series to a `/metrics` answer.
    pub fn render_metrics(&self, out: &mut String) {
        self.pool.render(out);
    }
}

/// The URI of `path_and_query` on a member.
fn member_uri(base: &Uri, pq: Option<&PathAndQuery>) -> Result<Uri, GateError> {
    let mut parts = base.clone().into_parts();
    parts.path_and_query = Some(
        pq.cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/")),
    );
    Uri::from_parts(parts).map_err(|e| GateError::Internal(format!("upstream URI: {e}")))
}

/// `GET /v2/` on one member, with its own authority as `Host`.
async fn probe(
    client: &UpstreamClient,
    base: &Uri,
    timeout: Duration,
) -> Result<http::StatusCode, String> {
    let mut req = Request::new(crate::error::empty());
    *req.uri_mut() =
        member_uri(base, Some(&PathAndQuery::from_static("/v2/"))).map_err(|e| e.to_string())?;
    if let Some(a) = base.authority()
        && let Ok(v) = HeaderValue::from_str(a.as_str())
    {
        req.headers_mut().insert(header::HOST, v);
    }
    match tokio::time::timeout(timeout, client.request(req)).await {
        Err(_) => Err(format!("no answer within {timeout:?}")),
        Ok(Err(e)) => Err(upstream_error(&e).to_string()),
        Ok(Ok(resp)) => Ok(resp.status()),
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A request body lent to one attempt. The client takes it out of the shared slot only when
/// it first polls it, so after an attempt that failed without polling it, the whole body is
/// still in the slot for the next attempt, and none of it went out. A body without content
/// (`end`) is never taken: every attempt sends it.
struct Lent {
    slot: Arc<std::sync::Mutex<Option<Body>>>,
    body: Option<Body>,
    end: bool,
    hint: hyper::body::SizeHint,
}

impl hyper::body::Body for Lent {
    type Data = bytes::Bytes;
    type Error = crate::error::BodyError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        use std::task::Poll;
        if self.end {
            return Poll::Ready(None);
        }
        if self.body.is_none() {
            let Some(body) = lock(&self.slot).take() else {
                return Poll::Ready(Some(Err(
                    "the request body was already sent to another registry member".into(),
                )));
            };
            self.body = Some(body);
        }
        match self.body.as_mut() {
            Some(body) => std::pin::Pin::new(body).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.end || self.body.as_ref().is_some_and(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.as_ref().map_or(self.hint, |b| b.size_hint())
    }
}

/// Names the upstream failure without leaking internals beyond what an operator needs.
fn upstream_error(e: &hyper_util::client::legacy::Error) -> GateError {
    use std::error::Error as _;
    let mut cause: Option<&dyn std::error::Error> = e.source();
    let mut text = e.to_string();
    while let Some(c) = cause {
        text = c.to_string();
        cause = c.source();
    }
    if e.is_connect() {
        GateError::UpstreamUnavailable(format!("cannot connect: {text}"))
    } else {
        GateError::UpstreamUnavailable(text)
    }
}
