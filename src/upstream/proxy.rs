//! Forwarding to the upstream registry.
//!
//! Owns: the pooled HTTP/1.1 keep-alive client (connect timeout, TCP_NODELAY, optional TLS to an
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
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::headers::{self, Hop};
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

/// The upstream registry client.
pub struct Proxy {
    client: Client<HttpsConnector<HttpConnector>, Body>,
    base: Uri,
    response_timeout: Duration,
    idle: Duration,
    metrics: Arc<Metrics>,
}

impl Proxy {
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
            None if upstream.base.scheme_str() == Some("https") => builder
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
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(256)
            .http1_max_buf_size(crate::config::MAX_READ_BUFFER)
            // Host is the client's, set below; the client must not replace it with the upstream's.
            .set_host(false)
            .build(connector);
        Ok(Proxy {
            client,
            base: upstream.base.clone(),
            response_timeout: timeouts.upstream_response,
            idle: timeouts.idle,
            metrics,
        })
    }

    /// The upstream URI for a request path and query.
    fn upstream_uri(&self, pq: Option<&PathAndQuery>) -> Result<Uri, GateError> {
        let mut parts = self.base.clone().into_parts();
        parts.path_and_query = Some(
            pq.cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/")),
        );
        Uri::from_parts(parts).map_err(|e| GateError::Internal(format!("upstream URI: {e}")))
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
        parts.uri = self.upstream_uri(parts.uri.path_and_query())?;
        parts.version = Version::HTTP_11;
        headers::remove_hop_by_hop(&mut parts.headers);
        // The registry behind the gate does not need, and must not log, the client's password.
        parts.headers.remove(header::AUTHORIZATION);
        headers::set_forwarding(&mut parts.headers, hop);

        let body = Tracked::new(body, bytes_in, self.idle).boxed();
        let upstream_req = Request::from_parts(parts, body);
        let sent = Instant::now();
        let resp = tokio::time::timeout(self.response_timeout, self.client.request(upstream_req))
            .await
            .map_err(|_| GateError::UpstreamTimeout(self.response_timeout))?
            .map_err(upstream_error)?;
        self.metrics.upstream_latency(sent.elapsed());
        let (mut parts, body) = resp.into_parts();
        headers::remove_hop_by_hop(&mut parts.headers);
        Ok(Response::from_parts(
            parts,
            Tracked::new(body, bytes_out, self.idle).boxed(),
        ))
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
        let mut req = Request::new(crate::error::empty());
        *req.method_mut() = method;
        *req.uri_mut() = self.upstream_uri(Some(&pq))?;
        if let Some(h) = host {
            req.headers_mut().insert(header::HOST, h.clone());
        }
        if let Some(a) = accept {
            req.headers_mut()
                .insert(header::ACCEPT, HeaderValue::from_static(a));
        }
        let resp = tokio::time::timeout(self.response_timeout, self.client.request(req))
            .await
            .map_err(|_| GateError::UpstreamTimeout(self.response_timeout))?
            .map_err(upstream_error)?;
        let (parts, body) = resp.into_parts();
        let bytes = http_body_util::Limited::new(body, limit)
            .collect()
            .await
            .map_err(|e| GateError::UpstreamUnavailable(format!("reading {path_and_query}: {e}")))?
            .to_bytes();
        Ok((parts.status, parts.headers, bytes))
    }

    /// True when the upstream answers `GET /v2/` (any HTTP answer counts as alive).
    pub async fn ready(&self) -> bool {
        let Ok(uri) = self.upstream_uri(Some(&PathAndQuery::from_static("/v2/"))) else {
            return false;
        };
        let mut req = Request::new(crate::error::empty());
        *req.uri_mut() = uri;
        if let Some(a) = self.base.authority()
            && let Ok(v) = HeaderValue::from_str(a.as_str())
        {
            req.headers_mut().insert(header::HOST, v);
        }
        matches!(
            tokio::time::timeout(Duration::from_secs(5), self.client.request(req)).await,
            Ok(Ok(_))
        )
    }
}

/// Names the upstream failure without leaking internals beyond what an operator needs.
fn upstream_error(e: hyper_util::client::legacy::Error) -> GateError {
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
