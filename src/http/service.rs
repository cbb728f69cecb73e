//! The request pipeline: one function that reads top to bottom, and the access log.
//!
//! Order: old docker clients get 404 on `/v2/`; a CORS preflight is answered here, before
//! authentication, and never forwarded; then routing: `/ui` to the UI (behind auth only with
//! `[ui] auth`), `/token` to the token endpoint (token mode), `/v2` to identity (auth/), the
//! decision (authz/rules.rs) and the registry, anything else a JSON 404. Every `Err` on the way
//! becomes a response in one place (`error::to_response`), and `handle` sets the CORS headers on
//! every answer (http/cors.rs). Every finished request is counted in the metrics by the same guard
//! that writes its access-log line. Does not own: how each step works.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use http::{Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::auth::{self, Authenticator, Credentials, Identity};
use crate::authz::{AccessControl, Action};
use crate::body::WithGuard;
use crate::config::{AuthMode, Config};
use crate::error::{self, Body, Challenge, GateError};
use crate::http::cors::{self, Cors};
use crate::http::route::{self, Route, RouteError};
use crate::http::ui::{self, Ui};
use crate::http::{origin, query, ua};
use crate::ops::maintenance::Maintenance;
use crate::ops::metrics::{Kind, Metrics};
use crate::token::endpoint as token_endpoint;
use crate::token::{Claims, Tokens};
use crate::upstream::catalog;
use crate::upstream::{Proxy, headers::Hop};

/// What the server knows about the connection a request came on.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    /// TLS ended at the gate.
    pub tls: bool,
}

/// Who sent a request, and the token they showed, if any.
pub struct Caller {
    pub identity: Identity,
    pub token: Option<Claims>,
}

impl Caller {
    fn anonymous() -> Self {
        Caller {
            identity: Identity::Anonymous,
            token: None,
        }
    }
}

/// What a request's answers need to know about where the gate is reached.
pub struct RequestCtx {
    /// The gate's public origin for this request, if it can be told.
    pub origin: Option<String>,
    /// The token service name (token mode only).
    pub service: String,
}

/// Everything a request needs, shared by all connections.
pub struct Gate {
    pub metrics: Arc<Metrics>,
    pub auth: Authenticator,
    /// Set in token mode.
    pub tokens: Option<Tokens>,
    public_url: Option<String>,
    pub access: AccessControl,
    pub maintenance: Maintenance,
    proxy: Proxy,
    block_old_clients: bool,
    trusted_proxies: Vec<std::net::IpAddr>,
    cors: Option<Cors>,
    ui: Option<Ui>,
    /// Deadline for a body the gate reads itself (`POST /token`): `[timeouts] header_read`.
    pub body_read: std::time::Duration,
}

/// Why the gate could not be assembled.
#[derive(Debug, thiserror::Error)]
pub enum GateSetupError {
    #[error(transparent)]
    Users(#[from] crate::auth::users::UsersError),
    #[error(transparent)]
    Upstream(#[from] crate::upstream::UpstreamSetupError),
    #[error(transparent)]
    Access(#[from] crate::authz::AccessError),
    #[error(transparent)]
    Token(#[from] crate::token::TokenError),
    #[error(transparent)]
    Ui(#[from] crate::http::ui::UiError),
}

impl Gate {
    pub fn new(config: &Config) -> Result<Self, GateSetupError> {
        let metrics = Arc::new(Metrics::new());
        let auth = Authenticator::new(&config.auth, metrics.clone())?;
        let access = AccessControl::load(config.auth.access.clone())?;
        access.warn_unknown_users(&auth.users().snapshot());
        let tokens = match &config.auth.mode {
            AuthMode::Basic => None,
            AuthMode::Token(t) => Some(Tokens::load(t)?),
        };
        Ok(Gate {
            auth,
            tokens,
            public_url: config.public_url.clone(),
            access,
            maintenance: Maintenance::new(config.read_only),
            proxy: Proxy::new(&config.upstream, &config.timeouts, metrics.clone())?,
            metrics,
            block_old_clients: config.block_old_clients,
            trusted_proxies: config.trusted_proxies.clone(),
            body_read: config.timeouts.header_read,
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
            metrics: self.metrics.clone(),
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
        mut req: Request<Incoming>,
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
            self.metrics.rejected_user_agent();
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
        let ctx = self.request_ctx(&req, conn);
        if let Some(ui) = &self.ui
            && ui::is_ui_path(path)
        {
            return self.serve_ui(ui, &req, conn, &ctx, log).await;
        }
        if !is_registry {
            if self.tokens.is_some() && path == "/token" {
                return token_endpoint::serve(self, req, conn, &ctx, log).await;
            }
            return Err(GateError::NotFound("not found"));
        }
        let route = route::parse(path).map_err(|e| match e {
            RouteError::Invalid(why) => GateError::NameInvalid(why.into()),
            RouteError::Unknown => GateError::NotFound("no such registry endpoint"),
        })?;

        let caller = self.caller(req.headers(), conn, &ctx).await?;
        log.user = caller.identity.clone();
        let identity = &caller.identity;

        let repo_action = match route.repository() {
            Some(repo) => Some((repo.to_owned(), action_for(&route, req.method())?)),
            None => None,
        };
        match (&route, &repo_action) {
            (Route::Base, _) => {
                // The login ping: anonymous callers get the challenge, so clients send
                // credentials (or fetch a token) for every later request.
                if *identity == Identity::Anonymous && caller.token.is_none() {
                    return Err(self.challenge(&ctx, None, None));
                }
            }
            (Route::Catalog, _) => {
                if let Some(t) = &caller.token
                    && !t.grants_catalog()
                {
                    return Err(self.challenge(
                        &ctx,
                        Some("registry:catalog:*".into()),
                        Some("insufficient_scope"),
                    ));
                }
                if *identity == Identity::Anonymous
                    && !self.access.grants_any(identity, Action::Pull)
                {
                    return Err(self.challenge(&ctx, Some("registry:catalog:*".into()), None));
                }
                if self.access.has_rules() {
                    let host = req.headers().get(header::HOST).cloned();
                    return catalog::filtered(
                        &self.proxy,
                        &self.access,
                        identity,
                        req.uri().query(),
                        host.as_ref(),
                    )
                    .await;
                }
            }
            (_, Some((repo, action))) => {
                self.authorize(&caller, *action, repo, &route, conn, &ctx)?;
                if *action != Action::Pull {
                    self.maintenance
                        .admit_write(repo, *action)
                        .inspect_err(|_| self.metrics.read_only_refusal())?;
                }
                if let Route::UploadStart { name } = &route {
                    self.check_mount(&mut req, &caller, name, conn)?;
                }
            }
            (_, None) => {}
        }

        let hop = Hop {
            peer: conn.peer.ip(),
            tls: conn.tls,
            trusted: self.trusted_proxies.contains(&conn.peer.ip()),
        };
        let method = req.method().clone();
        let mut resp = self
            .proxy
            .forward(req, hop, log.bytes_in.clone(), log.bytes_out.clone())
            .await?;
        if matches!(repo_action, Some((_, a)) if a != Action::Pull) {
            self.maintenance
                .observe(&route, &method, resp.status(), resp.headers());
        }
        if !resp.headers().contains_key(error::API_VERSION_HEADER) {
            resp.headers_mut()
                .insert(error::API_VERSION_HEADER, error::API_VERSION);
        }
        Ok(resp)
    }

    /// Where this request reached the gate: its public origin and, in token mode, the service.
    fn request_ctx(&self, req: &Request<Incoming>, conn: ConnInfo) -> RequestCtx {
        let origin = origin::public_origin(
            self.public_url.as_deref(),
            req.headers(),
            req.uri(),
            conn.tls,
        );
        let service = match &self.tokens {
            Some(t) => t.service.clone().unwrap_or_else(|| {
                origin
                    .as_deref()
                    .map(origin::host_of)
                    .unwrap_or("")
                    .to_owned()
            }),
            None => String::new(),
        };
        RequestCtx { origin, service }
    }

    /// The UI's files, behind Basic auth when `[ui] auth` asks for it.
    async fn serve_ui(
        &self,
        ui: &Ui,
        req: &Request<Incoming>,
        conn: ConnInfo,
        ctx: &RequestCtx,
        log: &mut AccessLog,
    ) -> Result<Response<Body>, GateError> {
        if ui.needs_auth() {
            // A browser cannot follow a Bearer challenge: the UI always asks for Basic.
            let caller = self
                .caller(req.headers(), conn, ctx)
                .await
                .map_err(|e| match e {
                    GateError::Unauthorized(_) => self.auth.challenge(),
                    other => other,
                })?;
            log.user = caller.identity.clone();
            if caller.identity == Identity::Anonymous {
                return Err(self.auth.challenge());
            }
        }
        ui.serve(req.method(), req.uri(), req.headers())
    }

    /// Who is asking: anonymous, a user by password, or the holder of a token.
    async fn caller(
        &self,
        headers: &http::HeaderMap,
        conn: ConnInfo,
        ctx: &RequestCtx,
    ) -> Result<Caller, GateError> {
        let as_challenge = |e: GateError| match e {
            GateError::Unauthorized(_) => self.challenge(ctx, None, None),
            other => other,
        };
        match auth::credentials(headers) {
            Credentials::None => Ok(Caller::anonymous()),
            Credentials::Basic { user, password } => {
                let identity = self
                    .auth
                    .verify_password(user, password, conn.peer.ip())
                    .await
                    .map_err(as_challenge)?;
                Ok(Caller {
                    identity,
                    token: None,
                })
            }
            Credentials::Bearer(token) => {
                let invalid = || self.challenge(ctx, None, Some("invalid_token"));
                let tokens = self
                    .tokens
                    .as_ref()
                    .ok_or_else(|| self.challenge(ctx, None, None))?;
                let claims = tokens
                    .verify(&token, &ctx.service, "access")
                    .map_err(|_| invalid())?;
                let identity = if claims.sub.is_empty() {
                    Identity::Anonymous
                } else if self.auth.stored_hash(&claims.sub).is_some() {
                    Identity::User(claims.sub.as_str().into())
                } else {
                    // The user left the htpasswd file: the token dies with the account.
                    return Err(invalid());
                };
                Ok(Caller {
                    identity,
                    token: Some(claims),
                })
            }
            Credentials::Malformed => {
                self.metrics.auth_failure();
                Err(self.challenge(ctx, None, None))
            }
        }
    }

    /// The 401 for this gate's mode: Basic, or Bearer naming the token realm and scope.
    pub fn challenge(
        &self,
        ctx: &RequestCtx,
        scope: Option<String>,
        error: Option<&'static str>,
    ) -> GateError {
        if self.tokens.is_none() {
            return self.auth.challenge();
        }
        GateError::Unauthorized(Challenge::Bearer {
            realm: format!("{}/token", ctx.origin.as_deref().unwrap_or("")),
            service: ctx.service.clone(),
            scope,
            error,
        })
    }

    /// The decision step: allowed when the rules grant it (and the token, if any, carries
    /// it); else 403 for a user and the challenge for anonymous or a token lacking the scope.
    /// Every allowed write and every refusal goes to the audit log.
    fn authorize(
        &self,
        caller: &Caller,
        action: Action,
        repo: &str,
        route: &Route,
        conn: ConnInfo,
        ctx: &RequestCtx,
    ) -> Result<(), GateError> {
        let who = &caller.identity;
        let rules_allow = self.access.decide(who, action, repo).allowed;
        let token_allows = caller.token.as_ref().is_none_or(|t| t.grants(repo, action));
        self.metrics.decision(action, rules_allow && token_allows);
        let audit = |outcome: &str| {
            tracing::info!(
                target: "audit",
                outcome,
                user = who.log_name(),
                action = action.as_str(),
                repository = repo,
                object = route.object().unwrap_or("-"),
                client = %conn.peer.ip(),
            );
        };
        if rules_allow && token_allows {
            if action != Action::Pull {
                audit("allowed");
            }
            return Ok(());
        }
        let scope = format!(
            "repository:{repo}:{}",
            match action {
                Action::Pull => "pull",
                Action::Push => "pull,push",
                Action::Delete => "delete",
            }
        );
        if !rules_allow {
            audit("denied");
            if let Identity::User(u) = who {
                return Err(GateError::Denied(format!("{u} may not {action} {repo}")));
            }
        }
        let error = caller.token.as_ref().map(|_| "insufficient_scope");
        Err(self.challenge(ctx, Some(scope), error))
    }

    /// A cross-repository mount reads the source repository: without pull on it, `mount` and
    /// `from` are dropped, so the registry starts an ordinary upload and the client sends the
    /// blob itself.
    fn check_mount(
        &self,
        req: &mut Request<Incoming>,
        caller: &Caller,
        to: &str,
        conn: ConnInfo,
    ) -> Result<(), GateError> {
        let who = &caller.identity;
        let Some(query) = req.uri().query() else {
            return Ok(());
        };
        let pairs: Vec<&str> = query.split('&').collect();
        let key = |p: &&str| p.split_once('=').map_or(*p, |(k, _)| k).to_owned();
        if !pairs.iter().any(|p| key(p) == "mount") {
            return Ok(());
        }
        let from = pairs
            .iter()
            .find(|p| key(p) == "from")
            .and_then(|p| p.split_once('='))
            .map(|(_, v)| query::percent_decode(v));
        let allowed = from.as_deref().is_some_and(|f| {
            route::is_valid_name(f)
                && self.access.decide(who, Action::Pull, f).allowed
                && caller
                    .token
                    .as_ref()
                    .is_none_or(|t| t.grants(f, Action::Pull))
        });
        if allowed {
            return Ok(());
        }
        tracing::info!(
            target: "audit",
            outcome = "mount refused",
            user = who.log_name(),
            repository = to,
            from = from.as_deref().unwrap_or("-"),
            client = %conn.peer.ip(),
        );
        let kept: Vec<&str> = pairs
            .into_iter()
            .filter(|p| key(p) != "mount" && key(p) != "from")
            .collect();
        let pq = if kept.is_empty() {
            req.uri().path().to_owned()
        } else {
            format!("{}?{}", req.uri().path(), kept.join("&"))
        };
        let mut parts = req.uri().clone().into_parts();
        parts.path_and_query = Some(
            pq.parse()
                .map_err(|e| GateError::Internal(format!("rewriting mount query: {e}")))?,
        );
        *req.uri_mut() = http::Uri::from_parts(parts)
            .map_err(|e| GateError::Internal(format!("rewriting mount query: {e}")))?;
        Ok(())
    }
}

/// The action a request performs on its repository (distribution spec endpoints).
fn action_for(route: &Route, method: &Method) -> Result<Action, GateError> {
    let read = *method == Method::GET || *method == Method::HEAD;
    let action = match route {
        Route::Manifest { .. } if read => Action::Pull,
        Route::Manifest { .. } if *method == Method::PUT => Action::Push,
        Route::Manifest { .. } | Route::Blob { .. } if *method == Method::DELETE => Action::Delete,
        Route::Blob { .. } | Route::Tags { .. } | Route::Referrers { .. } if read => Action::Pull,
        Route::UploadStart { .. } if *method == Method::POST => Action::Push,
        Route::Upload { .. }
            if read
                || *method == Method::PATCH
                || *method == Method::PUT
                || *method == Method::DELETE =>
        {
            Action::Push
        }
        _ => {
            return Err(GateError::Unsupported(format!(
                "{method} is not supported on this endpoint"
            )));
        }
    };
    Ok(action)
}

/// One access-log line, written when the response body is finished (or abandoned).
pub struct AccessLog {
    start: Instant,
    peer: SocketAddr,
    method: Method,
    path: String,
    pub(crate) user: Identity,
    status: StatusCode,
    bytes_in: Arc<AtomicU64>,
    bytes_out: Arc<AtomicU64>,
    metrics: Arc<Metrics>,
}

impl Drop for AccessLog {
    fn drop(&mut self) {
        let bytes_in = self.bytes_in.load(Ordering::Relaxed);
        let bytes_out = self.bytes_out.load(Ordering::Relaxed);
        let kind = Kind::of(&self.path);
        self.metrics
            .request(&self.method, kind, self.status, bytes_in, bytes_out);
        tracing::info!(
            target: "access",
            client = %self.peer.ip(),
            user = self.user.log_name(),
            method = %self.method,
            path = %self.path,
            status = self.status.as_u16(),
            bytes_in,
            bytes_out,
            duration_ms = self.start.elapsed().as_millis() as u64,
        );
    }
}

/// A plain-HTTP request arrived on the TLS port: say so, and close.
pub fn plain_http_on_tls_port() -> Vec<u8> {
    let body = serde_json::json!({"errors": [{
        "code": "UNSUPPORTED",
        "message": "this port speaks HTTPS; the request was sent as plain HTTP (docker retries over plain HTTP after an HTTPS error, such as missing credentials: try docker login first)",
        "detail": null
    }]})
    .to_string();
    format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}
