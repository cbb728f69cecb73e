//! `GET /token` and `POST /token`: the token endpoint of the distribution token flow.
//!
//! Owns: reading the request the way docker, podman and skopeo send it (GET with optional Basic
//! credentials, `service`, repeated `scope`, `account`, `offline_token`; POST with a form for
//! the OAuth2 `password` and `refresh_token` grants, several scopes joined by spaces), the
//! intersection of requested scopes with what the rules grant, and the JSON answer. Wrong
//! credentials get 401 (so `docker login` fails) and count against the brute-force brake.
//! Does not own: token format and signing (token/mod.rs), identity (auth/), decisions (authz/rules.rs).

use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::auth::{self, Credentials, Identity};
use crate::authz::Action;
use crate::error::{self, Body, GateError};
use crate::http::query;
use crate::http::route;
use crate::http::service::{ConnInfo, Gate, RequestCtx};
use crate::token::{Grant, Tokens, intersect, token_response};

/// Largest form body accepted.
const MAX_FORM: usize = 64 * 1024;

pub async fn serve(
    gate: &Gate,
    req: Request<Incoming>,
    conn: ConnInfo,
    ctx: &RequestCtx,
    log: &mut crate::http::service::AccessLog,
) -> Result<Response<Body>, GateError> {
    let Some(tokens) = gate.tokens.as_ref() else {
        return Err(GateError::NotFound("not found"));
    };
    let (identity, scopes, service, offline) = match *req.method() {
        Method::GET => {
            let q = req.uri().query().map(str::to_owned);
            let q = q.as_deref();
            let identity = match auth::credentials(req.headers()) {
                Credentials::None => Identity::Anonymous,
                Credentials::Basic { user, password } => {
                    gate.auth
                        .verify_password(user, password, conn.peer.ip())
                        .await?
                }
                Credentials::Bearer(_) | Credentials::Malformed => {
                    return Err(gate.auth.challenge());
                }
            };
            let scopes: Vec<String> = query::params(q, "scope").collect();
            let offline = query::param(q, "offline_token").as_deref() == Some("true");
            (identity, scopes, query::param(q, "service"), offline)
        }
        Method::POST => {
            // A deadline on the whole body: it is small, and a client that trickles it holds a
            // task (the same deadline as for request headers).
            let collect = http_body_util::Limited::new(req.into_body(), MAX_FORM).collect();
            let body = tokio::time::timeout(gate.body_read, collect)
                .await
                .map_err(|_| GateError::BadRequest("token request body too slow".into()))?
                .map_err(|_| {
                    GateError::BadRequest("token request body too large or broken".into())
                })?
                .to_bytes();
            let form = String::from_utf8_lossy(&body).into_owned();
            let f = Some(form.as_str());
            let identity = match query::param(f, "grant_type").as_deref() {
                Some("password") => {
                    let user = query::param(f, "username").unwrap_or_default();
                    let password = query::param(f, "password").unwrap_or_default();
                    if user.is_empty() {
                        return Err(GateError::BadRequest("username is required".into()));
                    }
                    gate.auth
                        .verify_password(user, password.into_bytes(), conn.peer.ip())
                        .await?
                }
                Some("refresh_token") => {
                    let rt = query::param(f, "refresh_token").unwrap_or_default();
                    refresh_identity(gate, tokens, &rt, &ctx.service)?
                }
                other => {
                    return Err(GateError::BadRequest(format!(
                        "grant_type {:?} is not supported; use password or refresh_token",
                        other.unwrap_or("")
                    )));
                }
            };
            let scopes: Vec<String> = query::params(f, "scope")
                .flat_map(|s| s.split(' ').map(str::to_owned).collect::<Vec<_>>())
                .filter(|s| !s.is_empty())
                .collect();
            let offline = query::param(f, "access_type").as_deref() == Some("offline");
            (identity, scopes, query::param(f, "service"), offline)
        }
        _ => return Err(GateError::Unsupported("use GET or POST for /token".into())),
    };
    log.user = identity.clone();
    if let Some(s) = &service
        && *s != ctx.service
    {
        return Err(GateError::BadRequest(format!(
            "unknown service {s:?}; this registry is {:?}",
            ctx.service
        )));
    }
    let requested: Vec<Grant> = scopes
        .iter()
        .filter_map(|s| Grant::parse_scope(s))
        .collect();
    let granted = intersect(&requested, |kind, name, action| match kind {
        "repository" => {
            route::is_valid_name(name)
                && Action::parse(action)
                    .is_some_and(|a| gate.access.decide(&identity, a, name).allowed)
        }
        "registry" => {
            name == "catalog"
                && action == "*"
                && (matches!(identity, Identity::User(_))
                    || gate.access.grants_any(&identity, Action::Pull))
        }
        _ => false,
    });
    let sub = match &identity {
        Identity::User(u) => u.to_string(),
        Identity::Anonymous => String::new(),
    };
    let (token, claims) = tokens.access_token(&sub, &ctx.service, granted);
    let refresh = match (&identity, offline) {
        (Identity::User(u), true) => gate
            .auth
            .stored_hash(u)
            .map(|h| tokens.refresh_token(u, &ctx.service, &h)),
        _ => None,
    };
    let body = token_response(&token, &claims, refresh.as_deref()).to_string();
    let mut resp = Response::new(error::full(body));
    *resp.status_mut() = StatusCode::OK;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(error::API_VERSION_HEADER, error::API_VERSION);
    Ok(resp)
}

/// The user a refresh token stands for, if it is still valid for their current password.
fn refresh_identity(
    gate: &Gate,
    tokens: &Tokens,
    refresh_token: &str,
    service: &str,
) -> Result<Identity, GateError> {
    let refused = || {
        GateError::Unauthorized(crate::error::Challenge::Basic {
            realm: "refresh token".into(),
        })
    };
    let claims = tokens
        .verify(refresh_token, service, "refresh")
        .map_err(|_| refused())?;
    let hash = gate.auth.stored_hash(&claims.sub).ok_or_else(refused)?;
    if claims.pwh.as_deref() != Some(tokens.password_tag(&claims.sub, &hash).as_str()) {
        return Err(refused());
    }
    Ok(Identity::User(claims.sub.as_str().into()))
}
