//! `GET /token` and `POST /token`: the token endpoint of the distribution token flow.
//!
//! Owns: reading the request the way docker, podman and skopeo send it (GET with optional Basic
//! credentials, `service`, repeated `scope`, `account`, `offline_token`; POST with a form for
//! the OAuth2 `password` and `refresh_token` grants, several scopes joined by spaces), the
//! intersection of requested scopes with what the rules grant, and the JSON answer. Wrong
//! credentials get 401 (so `docker login` fails) and count against the brute-force brake.
//! Does not own: reading the request off the wire (http/service.rs reads the query or the form
//! body, within a deadline), token format and signing (token/mod.rs), identity (auth/),
//! decisions (authz/policy.rs).

use std::net::IpAddr;

use http::{HeaderValue, Method, Response, StatusCode, header};

use crate::auth::{Authenticator, Credentials, Identity};
use crate::authz::{Action, Ask, Caller, Grant, Policy};
use crate::error::{self, Body, GateError};
use crate::query::Query;
use crate::token::{Tokens, intersect, token_response};

/// What answering a token request needs from the gate.
pub struct Issuer<'a> {
    pub tokens: &'a Tokens,
    pub auth: &'a Authenticator,
    pub policy: &'a Policy<'a>,
    /// The service this gate issues tokens for.
    pub service: &'a str,
}

/// A token request as the pipeline read it: GET's query with its `Authorization`, or POST's
/// form body (read by the pipeline within a deadline).
pub struct TokenRequest {
    pub method: Method,
    pub params: Query,
    pub credentials: Credentials,
    pub client: IpAddr,
}

/// Answers a token request; the identity is returned for the access log.
pub async fn answer(
    issuer: &Issuer<'_>,
    req: TokenRequest,
) -> Result<(Identity, Response<Body>), GateError> {
    let Issuer {
        tokens,
        auth,
        service: this_service,
        ..
    } = *issuer;
    let p = &req.params;
    let (identity, scopes, offline) = match req.method {
        Method::GET => {
            let identity = match req.credentials {
                Credentials::None => Identity::Anonymous,
                Credentials::Basic { user, password } => {
                    auth.verify_password(user, password, req.client).await?
                }
                Credentials::Bearer(_) | Credentials::Malformed => {
                    return Err(auth.challenge());
                }
            };
            let scopes: Vec<String> = p.all("scope").map(str::to_owned).collect();
            (identity, scopes, p.get("offline_token") == Some("true"))
        }
        Method::POST => {
            let identity = match p.get("grant_type") {
                Some("password") => {
                    let user = p.get("username").unwrap_or_default();
                    let password = p.get("password").unwrap_or_default();
                    if user.is_empty() {
                        return Err(GateError::BadRequest("username is required".into()));
                    }
                    auth.verify_password(user.to_owned(), password.as_bytes().to_vec(), req.client)
                        .await?
                }
                Some("refresh_token") => {
                    let rt = p.get("refresh_token").unwrap_or_default();
                    refresh_identity(auth, tokens, rt, this_service)?
                }
                other => {
                    return Err(GateError::BadRequest(format!(
                        "grant_type {:?} is not supported; use password or refresh_token",
                        other.unwrap_or("")
                    )));
                }
            };
            // Several scopes may come in one value, joined by spaces.
            let scopes: Vec<String> = p
                .all("scope")
                .flat_map(|s| s.split(' '))
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect();
            (identity, scopes, p.get("access_type") == Some("offline"))
        }
        _ => return Err(GateError::Unsupported("use GET or POST for /token".into())),
    };
    if let Some(s) = p.get("service")
        && s != this_service
    {
        return Err(GateError::BadRequest(format!(
            "unknown service {s:?}; this registry is {this_service:?}"
        )));
    }
    let requested: Vec<Grant> = scopes
        .iter()
        .filter_map(|s| Grant::parse_scope(s))
        .collect();
    // What is issued is what the policy grants this caller, scope by scope.
    let caller = Caller::plain(&identity);
    let granted = intersect(&requested, |kind, name, action| match kind {
        "repository" => Action::parse(action).is_some_and(|action| {
            issuer
                .policy
                .decide(caller, Ask::Grant { action, repo: name })
                .allowed
        }),
        "registry" => {
            name == "catalog" && action == "*" && issuer.policy.decide(caller, Ask::Catalog).allowed
        }
        _ => false,
    });
    // A key's tokens name it `key+NAME`; checked again on every use (http/service.rs), so
    // they die with the key. Keys get no refresh tokens: they log in with their secret.
    let sub = match &identity {
        Identity::User(u) => u.to_string(),
        Identity::Key(k) => k.user_name().to_owned(),
        Identity::Anonymous => String::new(),
    };
    let (token, claims) = tokens.access_token(&sub, this_service, granted);
    let refresh = match (&identity, offline) {
        (Identity::User(u), true) => auth
            .stored_hash(u)
            .map(|h| tokens.refresh_token(u, this_service, &h)),
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
    Ok((identity, resp))
}

/// The user a refresh token stands for, if it is still valid for their current password.
fn refresh_identity(
    auth: &Authenticator,
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
    let hash = auth.stored_hash(&claims.sub).ok_or_else(refused)?;
    if claims.pwh.as_deref() != Some(tokens.password_tag(&claims.sub, &hash).as_str()) {
        return Err(refused());
    }
    Ok(Identity::User(claims.sub.as_str().into()))
}
