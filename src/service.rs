//! The request pipeline: one function that reads top to bottom, and the access log.
//!
//! Order: old docker clients get 404 on `/v2/`; a CORS preflight is answered here, before
//! authentication, and never forwarded; then routing: `/ui` to the UI (behind auth only with
//! `[ui] auth`), `/v2` to identity (auth/) and the registry, anything else a JSON 404. Every `Err`
//! on the way becomes a response in one place (`error::to_response`), and `handle` sets the CORS
//! headers on every answer (cors.rs). Does not own: how each step works.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use http::{Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::auth::{Authenticator, Identity};
use crate::body::WithGuard;
use crate::config::Config;
use crate::cors::{self, Cors};
use crate::error::{self, Body, GateError};
use crate::proxy::{Proxy, headers::Hop};
use crate::ua;
use crate::ui::{self, Ui};

/// What the server knows about the connection a request came on.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    /// TLS ended at the gate.
    pub tls: bool,
}

/// Everything a request needs, shared by all connections.
pub struct Gate {
    pub auth: Authenticator,
    proxy: Proxy,
    block_old_clients: bool,
    trusted_proxies: Vec<std::net::IpAddr>,
    cors: Option<Cors>,
    ui: Option<Ui>,
}

/// Why the gate could not be assembled.
#[derive(Debug, thiserror::Error)]
pub enum GateSetupError {
    #[error(transparent)]
    Users(#[from] crate::auth::users::UsersError),
    #[error(transparent)]
    Upstream(#[from] crate::proxy::UpstreamSetupError),
    #[error(transparent)]
    Ui(#[from] crate::ui::UiError),
}

impl Gate {
    pub fn new(config: &Config) -> Result<Self, GateSetupError> {
        Ok(Gate {
            auth: Authenticator::new(&config.auth)?,
            proxy: Proxy::new(&config.upstream, &config.timeouts)?,
            block_old_clients: config.block_old_clients,
            trusted_proxies: config.trusted_proxies.clone(),
            cors: config.cors.as_ref().map(Cors::new),
            ui: config
                .ui
                .as_ref()
                .map(|ui| Ui::load(ui, config.public_url.as_deref()))
                .transpose()?,
        })
    }

    pub fn proxy(&self) -> &Proxy {
        &self.proxy
    }

    /// Answers one request. Never fails: errors are answered as registry JSON errors.
    pub async fn handle(self: Arc<Self>, req: Request<Incoming>, conn: ConnInfo) -> Response<Body> {
        let mut log = AccessLog {
            start: Instant::now(),
            peer: conn.peer,
            method: req.method().clone(),
            path: req.uri().path().to_owned(),
            user: Identity::Anonymous,
            status: StatusCode::OK,
            bytes_in: Arc::new(AtomicU64::new(0)),
            bytes_out: Arc::new(AtomicU64::new(0)),
        };
        // CORS: decided from the request before the pipeline consumes it.
        let cors_origin = self
            .cors
            .as_ref()
            .and_then(|c| c.allowed_origin(req.headers()));
        let preflight = cors::is_preflight(req.method(), req.headers());
        let mut resp = match self.pipeline(req, conn, &mut log).await {
            Ok(resp) => resp,
            Err(e) => {
                if e.status().is_server_error() {
                    tracing::warn!(client = %conn.peer, path = %log.path, "{e}");
                }
                error::to_response(&e)
            }
        };
        // Every answer but the preflight's own (proxied, generated, errors) is decorated here.
        if !(preflight && resp.status() == StatusCode::NO_CONTENT) {
            cors::decorate(self.cors.as_ref(), cors_origin.as_ref(), resp.headers_mut());
        }
        log.status = resp.status();
        let (parts, body) = resp.into_parts();
        Response::from_parts(parts, WithGuard::new(body, log).boxed())
    }

    async fn pipeline(
        &self,
        req: Request<Incoming>,
        conn: ConnInfo,
        log: &mut AccessLog,
    ) -> Result<Response<Body>, GateError> {
        let path = req.uri().path();
        let is_registry = path == "/v2" || path.starts_with("/v2/");

        if is_registry
            && self.block_old_clients
            && let Some(agent) = req.headers().get(header::USER_AGENT)
            && ua::is_old_docker_client(agent.as_bytes())
        {
            return Err(GateError::NotFound(
                "this docker client is too old for this registry",
            ));
        }
        if let Some(resp) = cors::preflight(self.cors.as_ref(), req.method(), req.headers()) {
            return Ok(resp);
        }
        if req.method() == Method::CONNECT || req.headers().contains_key(header::UPGRADE) {
            return Err(GateError::Unsupported(
                "CONNECT and protocol upgrades are not supported".into(),
            ));
        }
        if let Some(ui) = &self.ui
            && ui::is_ui_path(path)
        {
            if ui.needs_auth() {
                let identity = self.auth.identify(req.headers(), conn.peer.ip()).await?;
                log.user = identity.clone();
                if identity == Identity::Anonymous {
                    return Err(self.auth.challenge());
                }
            }
            return ui.serve(req.method(), req.uri(), req.headers());
        }
        if !is_registry {
            return Err(GateError::NotFound("not found"));
        }

        let identity = self.auth.identify(req.headers(), conn.peer.ip()).await?;
        log.user = identity.clone();
        if identity == Identity::Anonymous {
            return Err(self.auth.challenge());
        }

        let hop = Hop {
            peer: conn.peer.ip(),
            tls: conn.tls,
            trusted: self.trusted_proxies.contains(&conn.peer.ip()),
        };
        let mut resp = self
            .proxy
            .forward(req, hop, log.bytes_in.clone(), log.bytes_out.clone())
            .await?;
        if !resp.headers().contains_key(error::API_VERSION_HEADER) {
            resp.headers_mut()
                .insert(error::API_VERSION_HEADER, error::API_VERSION);
        }
        Ok(resp)
    }
}

/// One access-log line, written when the response body is finished (or abandoned).
struct AccessLog {
    start: Instant,
    peer: SocketAddr,
    method: Method,
    path: String,
    user: Identity,
    status: StatusCode,
    bytes_in: Arc<AtomicU64>,
    bytes_out: Arc<AtomicU64>,
}

impl Drop for AccessLog {
    fn drop(&mut self) {
        tracing::info!(
            target: "access",
            client = %self.peer.ip(),
            user = self.user.log_name(),
            method = %self.method,
            path = %self.path,
            status = self.status.as_u16(),
            bytes_in = self.bytes_in.load(Ordering::Relaxed),
            bytes_out = self.bytes_out.load(Ordering::Relaxed),
            ms = self.start.elapsed().as_millis() as u64,
        );
    }
}

/// A plain-HTTP request arrived on the TLS port: say so, and close.
pub fn plain_http_on_tls_port() -> Vec<u8> {
    let body = serde_json::json!({"errors": [{
        "code": "UNSUPPORTED",
        "message": "this port speaks HTTPS; the request was sent as plain HTTP",
        "detail": null
    }]})
    .to_string();
    format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}
