//! The request pipeline: one function that reads top to bottom, and the access log.
//!
//! Order: the path is read once into a [`Target`] (http/route.rs) and carried to the end
//! (routing, metrics, access log); old docker clients get 404 on `/v2/`; a CORS preflight is
//! answered here, before authentication, and never forwarded; the request's host is read once
//! (`:authority` on HTTP/2, `Host` on HTTP/1.1) and used for everything the gate builds (its
//! own upstream requests, token realm, UI); then `/ui` goes to the UI (behind auth only with
//! `[ui] auth`), `/token` to the token endpoint (token mode), `/v2` to identity (auth/), the
//! decision (authz/policy.rs) and the registry, which is sent exactly the reading the gate
//! decided on (canonical path and query, no form body); anything else is a JSON 404. Every
//! `Err` on the way becomes a response in one place (`error::to_response`), and `handle` sets
//! the CORS headers and `Docker-Distribution-Api-Version` on every answer. Every finished
//! request is counted in the metrics by the same guard that writes its access-log line.
//! Does not own: how each step works.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::auth::keys::{self, KeyStore};
use crate::auth::{self, Authenticator, Credentials, Identity};
use crate::authz::{self, AccessControl, Action, Ask, Policy, ReadOnly, Reason};
use crate::body::WithGuard;
use crate::config::{AuthMode, Config};
use crate::error::{self, Body, Challenge, GateError};
use crate::http::cors::{self, Cors};
use crate::http::origin;
use crate::http::route::{self, RegistryRequest, Route, RouteError, Target, mount_source};
use crate::http::ua;
use crate::http::ui::Ui;
use crate::ops::maintenance::{Maintenance, PushStep, READ_ONLY_MESSAGE};
use crate::ops::metrics::{Kind, Metrics};
use crate::query::Query;
use crate::token::endpoint::{self as token_endpoint, Issuer, TokenRequest};
use crate::token::{Claims, Tokens};
use crate::upstream::Proxy;
use crate::upstream::catalog::Catalog;
use crate::upstream::headers::{self, Hop};
use crate::upstream::tags::{self, TagLocks};

/// Largest `POST /token` form body read.
const MAX_TOKEN_FORM: usize = 64 * 1024;
/// Largest manifest the gate reads to push to an immutable tag (the registry's own limit).
const MAX_MANIFEST: usize = 4 << 20;
/// How recent a registry answer must be for the gate to answer the version check itself.
const VERSION_CHECK_FRESH: Duration = Duration::from_secs(5);

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

    /// As the policy sees this caller.
    fn as_policy(&self) -> authz::Caller<'_> {
        authz::Caller {
            identity: &self.identity,
            token: self.token.as_ref().map(|t| t.access.as_slice()),
        }
    }
}

/// What a request's answers need to know about where the gate is reached, and who from.
pub struct RequestCtx {
    /// The client: the peer, or the client a trusted proxy forwarded for.
    pub client: std::net::IpAddr,
    /// The host the request named (its one reading: `:authority` or `Host`).
    pub host: Option<HeaderValue>,
    /// TLS ended at the gate (the scheme of the origin without `public_url`).
    pub tls: bool,
    /// The token service name (token mode only).
    pub service: String,
}

/// Everything a request needs, shared by all connections.
pub struct Gate {
    pub metrics: Arc<Metrics>,
    pub auth: Arc<Authenticator>,
    /// Set in token mode.
    pub tokens: Option<Tokens>,
    public_url: Option<String>,
    pub access: Arc<AccessControl>,
    pub maintenance: Maintenance,
    proxy: Proxy,
    block_old_clients: bool,
    trusted_proxies: Vec<std::net::IpAddr>,
    cors: Option<Cors>,
    ui: Option<Ui>,
    /// The registry's catalog, shared by the filtered answers.
    catalog: Catalog,
    /// Deadline for a body the gate reads itself (`POST /token`, a manifest for an immutable
    /// tag).
    body_deadline: Duration,
    /// Pushes of one tag through this gate are decided one at a time (immutable tags).
    tag_locks: TagLocks,
}

/// Why the gate could not be assembled.
#[derive(Debug, thiserror::Error)]
pub enum GateSetupError {
    #[error(transparent)]
    Users(#[from] crate::auth::users::UsersError),
    #[error(transparent)]
    Upstream(#[from] crate::upstream::UpstreamSetupError),
    /// The access rules or access keys file.
    #[error(transparent)]
    File(#[from] crate::config::FileError),
    #[error(transparent)]
    Token(#[from] crate::token::TokenError),
    #[error(transparent)]
    Ui(#[from] crate::http::ui::UiError),
}

/// A refused path or request reading, as the client is told.
fn route_error(e: RouteError) -> GateError {
    match e {
        RouteError::Invalid(why) => GateError::NameInvalid(why.into()),
        RouteError::Unknown => GateError::NotFound("no such registry endpoint"),
        RouteError::FormBody => GateError::UnsupportedMediaType(e.to_string()),
        RouteError::Host(why) => GateError::BadRequest(why.into()),
    }
}

impl Gate {
    pub fn new(config: &Config) -> Result<Self, GateSetupError> {
        let metrics = Arc::new(Metrics::new());
        let keys = Arc::new(KeyStore::load(config.auth.keys.clone())?);
        let auth = Arc::new(Authenticator::new(&config.auth, keys, metrics.clone())?);
        let access = Arc::new(AccessControl::load(config.auth.access.clone())?);
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
            maintenance: Maintenance::new(config.read_only, config.upload_idle),
            proxy: Proxy::new(&config.upstream, &config.timeouts, metrics.clone())?,
            metrics,
            block_old_clients: config.block_old_clients,
            trusted_proxies: config.trusted_proxies.clone(),
            cors: config.cors.as_ref().map(Cors::new),
            ui: config.ui.as_ref().map(Ui::load).transpose()?,
            catalog: Catalog::default(),
            body_deadline: config.timeouts.header_read,
            tag_locks: TagLocks::default(),
        })
    }

    pub fn proxy(&self) -> &Proxy {
        &self.proxy
    }

    /// The policy with the rules and the read-only switch as they are now.
    pub fn policy(&self) -> Policy<'_> {
        Policy {
            rules: self.access.snapshot(),
            read_only: ReadOnly {
                on: self.maintenance.is_read_only(),
                pushes: &self.maintenance,
            },
        }
    }

    /// Answers one request. Never fails: errors are answered as registry JSON errors.
    pub async fn handle(self: Arc<Self>, req: Request<Incoming>, conn: ConnInfo) -> Response<Body> {
        let target = Target::of(req.uri().path());
        let client = headers::client_ip(conn.peer.ip(), &self.trusted_proxies, req.headers());
        let mut log = AccessLog {
            start: Instant::now(),
            client,
            method: req.method().clone(),
            path: req.uri().path().to_owned(),
            kind: target.as_ref().map_or(Kind::Other, Target::metrics_kind),
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
        let mut resp = match self.pipeline(req, target, conn, &mut log).await {
            Ok(resp) => resp,
            Err(e) => {
                if e.status().is_server_error() {
                    tracing::warn!(client = %log.client, path = %log.path, "{e}");
                }
                error::to_response(&e)
            }
        };
        // Every answer but the preflight's own (proxied, generated, errors) is decorated here.
        if !(preflight && resp.status() == StatusCode::NO_CONTENT) {
            cors::decorate(self.cors.as_ref(), cors_origin.as_ref(), resp.headers_mut());
        }
        // The one place the API version header is added: to every answer, once.
        resp.headers_mut()
            .entry(error::API_VERSION_HEADER)
            .or_insert(error::API_VERSION);
        log.status = resp.status();
        let (parts, body) = resp.into_parts();
        Response::from_parts(parts, WithGuard::new(body, log).boxed())
    }

    async fn pipeline(
        &self,
        req: Request<Incoming>,
        target: Result<Target, RouteError>,
        conn: ConnInfo,
        log: &mut AccessLog,
    ) -> Result<Response<Body>, GateError> {
        // Refused registry paths are registry requests too (Target::of only fails on them).
        let is_registry = matches!(target, Ok(Target::Registry(_)) | Err(_));
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
        let host = route::request_host(req.uri(), req.headers()).map_err(route_error)?;
        let ctx = self.request_ctx(host, log.client, conn);
        match target.map_err(route_error)? {
            Target::Registry(route) => self.serve_registry(req, route, conn, &ctx, log).await,
            Target::Ui => match &self.ui {
                Some(ui) => self.serve_ui(ui, &req, &ctx, log).await,
                None => Err(GateError::NotFound("not found")),
            },
            Target::Token if self.tokens.is_some() => self.serve_token(req, &ctx, log).await,
            Target::Token | Target::Other => Err(GateError::NotFound("not found")),
        }
    }

    /// A `/v2` request: who asks, what the policy says, then the registry (or the filtered
    /// catalog, which the gate composes itself).
    async fn serve_registry(
        &self,
        mut req: Request<Incoming>,
        route: Route,
        conn: ConnInfo,
        ctx: &RequestCtx,
        log: &mut AccessLog,
    ) -> Result<Response<Body>, GateError> {
        let mut reading = RegistryRequest::read(req.method(), route, req.uri(), req.headers())
            .map_err(route_error)?;
        let caller = self.caller(req.headers(), ctx).await?;
        log.user = caller.identity.clone();
        let policy = self.policy();

        let write = match &reading.route {
            Route::Base => {
                // The login ping: anonymous callers get the challenge, so clients send
                // credentials (or fetch a token) for every later request.
                if caller.identity == Identity::Anonymous && caller.token.is_none() {
                    return Err(self.challenge(ctx, None, None));
                }
                // The version check (docker, podman and skopeo send it before every login,
                // push and pull) names nothing the policy decides on and the registry answers
                // it with `{}` for anyone the gate let through. While the registry is known to
                // answer, the gate answers it; otherwise it goes to the registry, so a client
                // of a registry that is down sees that error at login, not at its first push.
                if matches!(reading.method, Method::GET | Method::HEAD)
                    && self.proxy.answered_within(VERSION_CHECK_FRESH)
                {
                    return Ok(version_check_answer(&reading.method));
                }
                false
            }
            Route::Catalog => {
                let d = policy.decide(caller.as_policy(), Ask::Catalog);
                if !d.allowed {
                    let error = (d.reason == Reason::TokenScope).then_some("insufficient_scope");
                    return Err(self.challenge(ctx, Some("registry:catalog:*".into()), error));
                }
                // A key sees only what its grants cover, with or without a rules file.
                if policy.rules.is_some() || matches!(caller.identity, Identity::Key(_)) {
                    return self
                        .catalog
                        .filtered(
                            &self.proxy,
                            &policy,
                            caller.as_policy(),
                            &reading.query,
                            ctx.host.as_ref(),
                        )
                        .await;
                }
                false
            }
            route => {
                let ask = reading.ask().ok_or_else(|| {
                    GateError::Unsupported(format!(
                        "{} is not supported on this endpoint",
                        reading.method
                    ))
                })?;
                self.authorize(&policy, &caller, ask, route, ctx)?;
                !matches!(
                    ask,
                    Ask::Request {
                        action: Action::Pull,
                        ..
                    }
                )
            }
        };
        if let Route::UploadStart { name } = &reading.route {
            self.check_mount(&policy, &mut reading.query, &caller, name, ctx);
        }

        let hop = Hop {
            peer: conn.peer.ip(),
            tls: conn.tls,
            trusted: self.trusted_proxies.contains(&conn.peer.ip()),
        };
        // A request on an upload session holds it open (for the read-only switch) until answered.
        let _session = match &reading.route {
            Route::Upload { name, id } => Some(self.maintenance.session_request(name, id)),
            _ => None,
        };
        let path_and_query = reading.path_and_query(req.uri().path());
        // What is forwarded is the reading: its host, path and query, nothing the gate did not
        // read.
        *req.uri_mut() = http::Uri::try_from(path_and_query)
            .map_err(|e| GateError::Internal(format!("forwarded target: {e}")))?;
        let (bytes_in, bytes_out) = (log.bytes_in.clone(), log.bytes_out.clone());
        let resp = match self.immutable_tag(&policy, &reading) {
            Some(Guarded::Push { repo, tag }) => {
                // The tag's lock is held until the registry has answered, so a second push of
                // the same tag through this gate sees what the first one stored.
                let _lock = self.tag_locks.lock(repo, tag).await;
                let (parts, body) = req.into_parts();
                let manifest = self.read_manifest(body).await?;
                let pushed = tags::digest_of_bytes(&manifest);
                let current =
                    tags::current_digest(&self.proxy, ctx.host.as_ref(), repo, tag).await?;
                let retag = Retag {
                    repo,
                    tag,
                    current: current.as_deref(),
                    new: Some(&pushed),
                };
                self.check_retag(&policy, &caller, retag, ctx)?;
                let req = Request::from_parts(parts, http_body_util::Full::new(manifest));
                self.proxy
                    .forward(req, ctx.host.clone(), hop, bytes_in, bytes_out)
                    .await?
            }
            Some(Guarded::Delete { repo, reference }) => {
                let host = ctx.host.as_ref();
                let (tag, current) = if reference.contains(':') {
                    let covered = |t: &str| policy.immutable_line(repo, t).is_some();
                    let tag =
                        tags::covered_tag_at(&self.proxy, host, repo, reference, covered).await?;
                    (tag, Some(reference.to_owned()))
                } else {
                    let current = tags::current_digest(&self.proxy, host, repo, reference).await?;
                    (Some(reference.to_owned()), current)
                };
                if let Some(tag) = &tag {
                    let retag = Retag {
                        repo,
                        tag,
                        current: current.as_deref(),
                        new: None,
                    };
                    self.check_retag(&policy, &caller, retag, ctx)?;
                }
                self.proxy
                    .forward(req, ctx.host.clone(), hop, bytes_in, bytes_out)
                    .await?
            }
            None => {
                self.proxy
                    .forward(req, ctx.host.clone(), hop, bytes_in, bytes_out)
                    .await?
            }
        };
        if write && let Some(step) = push_step(&reading, &resp) {
            self.maintenance.observe(step);
        }
        Ok(resp)
    }

    /// A manifest push by tag or a manifest delete that an `[[immutable]]` entry may cover.
    fn immutable_tag<'r>(
        &self,
        policy: &Policy<'_>,
        reading: &'r RegistryRequest,
    ) -> Option<Guarded<'r>> {
        let Route::Manifest { name, reference } = &reading.route else {
            return None;
        };
        let by_digest = reference.contains(':');
        if reading.method == Method::PUT
            && !by_digest
            && policy.immutable_line(name, reference).is_some()
        {
            return Some(Guarded::Push {
                repo: name,
                tag: reference,
            });
        }
        let covered = if by_digest {
            policy.has_immutable_tags(name)
        } else {
            policy.immutable_line(name, reference).is_some()
        };
        (reading.method == Method::DELETE && covered).then_some(Guarded::Delete {
            repo: name,
            reference,
        })
    }

    /// A manifest read whole (it is forwarded as read), within the size limit and deadline.
    async fn read_manifest(&self, body: Incoming) -> Result<bytes::Bytes, GateError> {
        let read = http_body_util::Limited::new(body, MAX_MANIFEST).collect();
        Ok(tokio::time::timeout(self.body_deadline, read)
            .await
            .map_err(|_| GateError::BadRequest("manifest body too slow".into()))?
            .map_err(|_| {
                GateError::BadRequest(format!(
                    "manifest larger than {} MiB or broken",
                    MAX_MANIFEST >> 20
                ))
            })?
            .to_bytes())
    }

    /// The policy's word on moving or deleting a tag; a refusal is a 403 naming the tag,
    /// audited and counted.
    fn check_retag(
        &self,
        policy: &Policy<'_>,
        caller: &Caller,
        retag: Retag<'_>,
        ctx: &RequestCtx,
    ) -> Result<(), GateError> {
        let Retag {
            repo,
            tag,
            current,
            new,
        } = retag;
        let d = policy.decide(
            caller.as_policy(),
            Ask::Retag {
                repo,
                tag,
                current,
                new,
            },
        );
        if d.allowed {
            return Ok(());
        }
        self.metrics.immutable_refusal();
        tracing::info!(
            target: "audit",
            outcome = "immutable",
            user = caller.identity.log_name(),
            action = if new.is_some() { "push" } else { "delete" },
            repository = repo,
            object = tag,
            client = %ctx.client,
        );
        let line = d.rule.unwrap_or(0);
        let current = current.unwrap_or("-");
        Err(GateError::Denied(match new {
            Some(new) => format!(
                "tag {tag} of {repo} is immutable (access rules line {line}): it points at {current} and cannot be moved to {new}"
            ),
            None => format!(
                "tag {tag} of {repo} is immutable (access rules line {line}): the manifest {current} it points at cannot be deleted"
            ),
        }))
    }

    /// Where this request reached the gate: its host, public origin and, in token mode, the
    /// service.
    fn request_ctx(
        &self,
        host: Option<HeaderValue>,
        client: std::net::IpAddr,
        conn: ConnInfo,
    ) -> RequestCtx {
        let mut ctx = RequestCtx {
            client,
            host,
            tls: conn.tls,
            service: String::new(),
        };
        if let Some(t) = &self.tokens {
            ctx.service = t.service.clone().unwrap_or_else(|| {
                self.origin(&ctx)
                    .as_deref()
                    .map(origin::host_of)
                    .unwrap_or("")
                    .to_owned()
            });
        }
        ctx
    }

    /// The gate's public origin for this request, if it can be told (worked out only where an
    /// answer names it: the UI and the token realm).
    fn origin(&self, ctx: &RequestCtx) -> Option<String> {
        origin::public_origin(self.public_url.as_deref(), ctx.host.as_ref(), ctx.tls)
    }

    /// The UI's files, behind Basic auth when `[ui] auth` asks for it.
    async fn serve_ui(
        &self,
        ui: &Ui,
        req: &Request<Incoming>,
        ctx: &RequestCtx,
        log: &mut AccessLog,
    ) -> Result<Response<Body>, GateError> {
        if ui.needs_auth() {
            // A browser cannot follow a Bearer challenge: the UI always asks for Basic.
            let caller = self.caller(req.headers(), ctx).await.map_err(|e| match e {
                GateError::Unauthorized(_) => self.auth.challenge(),
                other => other,
            })?;
            log.user = caller.identity.clone();
            if caller.identity == Identity::Anonymous {
                return Err(self.auth.challenge());
            }
        }
        ui.serve(
            req.method(),
            req.uri(),
            req.headers(),
            self.origin(ctx).as_deref(),
        )
    }

    /// `GET`/`POST /token`: the parameters are read here (a POST's form body within a
    /// deadline), the answer is the token endpoint's.
    async fn serve_token(
        &self,
        req: Request<Incoming>,
        ctx: &RequestCtx,
        log: &mut AccessLog,
    ) -> Result<Response<Body>, GateError> {
        let Some(tokens) = &self.tokens else {
            return Err(GateError::NotFound("not found"));
        };
        let credentials = auth::credentials(req.headers());
        let method = req.method().clone();
        let params = match method {
            Method::POST => {
                let read = http_body_util::Limited::new(req.into_body(), MAX_TOKEN_FORM).collect();
                let body = tokio::time::timeout(self.body_deadline, read)
                    .await
                    .map_err(|_| GateError::BadRequest("token request body too slow".into()))?
                    .map_err(|_| {
                        GateError::BadRequest("token request body too large or broken".into())
                    })?
                    .to_bytes();
                Query::parse(&String::from_utf8_lossy(&body))
            }
            _ => Query::of(req.uri().query()),
        };
        let policy = self.policy();
        let issuer = Issuer {
            tokens,
            auth: &self.auth,
            policy: &policy,
            service: &ctx.service,
        };
        let request = TokenRequest {
            method,
            params,
            credentials,
            client: ctx.client,
        };
        let (identity, resp) = token_endpoint::answer(&issuer, request).await?;
        log.user = identity;
        Ok(resp)
    }

    /// Who is asking: anonymous, a user by password, or the holder of a token.
    async fn caller(
        &self,
        headers: &http::HeaderMap,
        ctx: &RequestCtx,
    ) -> Result<Caller, GateError> {
        let as_challenge = |e: GateError| match e {
            GateError::Unauthorized(_) => self.challenge(ctx, None, None),
            // The mode's challenge, with the key's reason as the message.
            GateError::KeyRefused { message, .. } => match self.challenge(ctx, None, None) {
                GateError::Unauthorized(challenge) => GateError::KeyRefused { challenge, message },
                other => other,
            },
            other => other,
        };
        match auth::credentials(headers) {
            Credentials::None => Ok(Caller::anonymous()),
            Credentials::Basic { user, password } => {
                let identity = self
                    .auth
                    .verify_password(user, password, ctx.client)
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
                } else if let Some(name) = claims.sub.strip_prefix(keys::KEY_PREFIX) {
                    // A key's token dies with the key: deleted or expired, it is refused now.
                    match self.auth.keys().snapshot().current(name, keys::unix_now()) {
                        Ok(key) => Identity::Key(key),
                        Err(refusal) => {
                            let challenge = match invalid() {
                                GateError::Unauthorized(c) => c,
                                _ => return Err(invalid()),
                            };
                            return Err(GateError::KeyRefused {
                                challenge,
                                message: refusal.to_string(),
                            });
                        }
                    }
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
            realm: format!("{}/token", self.origin(ctx).as_deref().unwrap_or("")),
            service: ctx.service.clone(),
            scope,
            error,
        })
    }

    /// The decision step: the policy's answer, turned into the refusal a client expects: 403
    /// for a user the rules refuse, the challenge for anonymous callers and tokens lacking
    /// the scope, 405 while read-only. Every allowed write and every refusal is audited.
    fn authorize(
        &self,
        policy: &Policy<'_>,
        caller: &Caller,
        ask: Ask<'_>,
        route: &Route,
        ctx: &RequestCtx,
    ) -> Result<(), GateError> {
        let Ask::Request { action, repo, .. } = ask else {
            return Err(GateError::Internal("authorize takes requests".into()));
        };
        let who = &caller.identity;
        let d = policy.decide(caller.as_policy(), ask);
        self.metrics
            .decision(action, d.allowed || d.reason == Reason::ReadOnly);
        let audit = |outcome: &str| {
            tracing::info!(
                target: "audit",
                outcome,
                user = who.log_name(),
                action = action.as_str(),
                repository = repo,
                object = route.object().unwrap_or("-"),
                client = %ctx.client,
            );
        };
        if d.allowed {
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
        match (d.reason, who) {
            (Reason::ReadOnly, _) => {
                audit("read-only");
                self.metrics.read_only_refusal();
                Err(GateError::Unsupported(READ_ONLY_MESSAGE.into()))
            }
            (Reason::TokenScope, _) => {
                Err(self.challenge(ctx, Some(scope), Some("insufficient_scope")))
            }
            (_, Identity::User(u)) => {
                audit("denied");
                Err(GateError::Denied(format!("{u} may not {action} {repo}")))
            }
            (_, Identity::Key(k)) => {
                audit("denied");
                Err(GateError::Denied(format!(
                    "access key {} may not {action} {repo}: it is granted {} on {}",
                    k.name,
                    k.allow
                        .iter()
                        .map(|a| a.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    k.repos.join(", ")
                )))
            }
            (_, Identity::Anonymous) => {
                audit("denied");
                let error = caller.token.as_ref().map(|_| "insufficient_scope");
                Err(self.challenge(ctx, Some(scope), error))
            }
        }
    }

    /// A cross-repository mount reads the source repository: without pull on it (by the
    /// policy, on the same reading of `mount` and `from` that the registry gets), both are
    /// dropped from the forwarded query, so the registry starts an ordinary upload and the
    /// client sends the blob itself.
    fn check_mount(
        &self,
        policy: &Policy<'_>,
        query: &mut Query,
        caller: &Caller,
        to: &str,
        ctx: &RequestCtx,
    ) {
        let Some(from) = mount_source(query) else {
            return;
        };
        if policy
            .decide(caller.as_policy(), Ask::MountSource { from })
            .allowed
        {
            return;
        }
        tracing::info!(
            target: "audit",
            outcome = "mount refused",
            user = caller.identity.log_name(),
            repository = to,
            from = if from.is_empty() { "-" } else { from },
            client = %ctx.client,
        );
        query.remove(&["mount", "from"]);
    }
}

/// A request an `[[immutable]]` entry may refuse, once the registry says what the tag points at.
enum Guarded<'r> {
    /// `PUT /v2/<repo>/manifests/<tag>`.
    Push { repo: &'r str, tag: &'r str },
    /// `DELETE /v2/<repo>/manifests/<tag or digest>`.
    Delete { repo: &'r str, reference: &'r str },
}

/// A tag change, as asked of the policy.
#[derive(Clone, Copy)]
struct Retag<'a> {
    repo: &'a str,
    tag: &'a str,
    current: Option<&'a str>,
    new: Option<&'a str>,
}

/// The registry's own answer to an authenticated `GET /v2/` (distribution's `apiBase`): `{}`
/// as JSON; `Docker-Distribution-Api-Version` is added to every answer in `Gate::handle`.
fn version_check_answer(method: &Method) -> Response<Body> {
    const EMPTY_JSON: &str = "{}";
    let body = if method == Method::HEAD {
        error::empty()
    } else {
        error::full(EMPTY_JSON)
    };
    let mut resp = Response::new(body);
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(EMPTY_JSON.len()));
    resp
}

/// What an answered write tells the read-only switch about a push in flight.
fn push_step<'a>(req: &'a RegistryRequest, resp: &'a Response<Body>) -> Option<PushStep<'a>> {
    let status = resp.status();
    match &req.route {
        // 202: a session opened; 201: a mount stored the blob at once.
        Route::UploadStart { name } if status == StatusCode::ACCEPTED => resp
            .headers()
            .get("docker-upload-uuid")
            .and_then(|v| v.to_str().ok())
            .map(|session| PushStep::UploadStarted {
                repo: name,
                session,
            }),
        Route::UploadStart { name } if status == StatusCode::CREATED => {
            Some(PushStep::BlobStored {
                repo: name,
                session: None,
            })
        }
        Route::Upload { name, id } if req.method == Method::PUT && status.is_success() => {
            Some(PushStep::BlobStored {
                repo: name,
                session: Some(id),
            })
        }
        Route::Upload { name, id }
            if req.method == Method::DELETE || status == StatusCode::NOT_FOUND =>
        {
            Some(PushStep::UploadEnded {
                repo: name,
                session: id,
            })
        }
        Route::Manifest { name, .. } if req.method == Method::PUT && status.is_success() => {
            Some(PushStep::ManifestStored { repo: name })
        }
        _ => None,
    }
}

/// One access-log line, written when the response body is finished (or abandoned).
pub struct AccessLog {
    start: Instant,
    /// The client (behind a trusted proxy, the one it forwarded for).
    client: std::net::IpAddr,
    method: Method,
    path: String,
    kind: Kind,
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
        self.metrics
            .request(&self.method, self.kind, self.status, bytes_in, bytes_out);
        tracing::info!(
            target: "access",
            client = %self.client,
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
