//! The registry token flow (distribution "token authentication"), served by the gate itself.
//!
//! Owns: signing and checking tokens (a JWT, HS256 with aws-lc-rs's HMAC, key from `[auth]
//! token_key`, so replicas sharing the key accept each other's tokens), scopes
//! (`repository:<name>:<actions>`, `registry:catalog:*`), the `/token` endpoint (`GET` with
//! optional Basic credentials; `POST` with the OAuth2 `password` and `refresh_token` grants),
//! refresh tokens bound to the user's current password hash, and RFC 3339 `issued_at`.
//! Checking a token costs an HMAC, never a password hash. Does not own: whether the holder still
//! may do what the token says; http/service.rs re-checks the rules on every request.

pub mod endpoint;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::hmac;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD as B64URL};
use serde::{Deserialize, Serialize};

use crate::authz::Grant;
use crate::config::TokenConfig;

/// How long a refresh token (docker's stored "identity token") lives.
const REFRESH_TTL: Duration = Duration::from_secs(90 * 24 * 3600);
/// Clock difference tolerated between replicas for `nbf`/`iat`.
const LEEWAY: u64 = 60;
const ISSUER: &str = "registry-gate";

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("{path}: {source}")]
    ReadKey {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path}: the token key must be base64 of at least 32 random bytes (make one with `registry-gate token-key FILE`)"
    )]
    BadKey { path: PathBuf },
    #[error("malformed token")]
    Malformed,
    #[error("token signature does not match")]
    BadSignature,
    #[error("token expired")]
    Expired,
    #[error("token is for another service")]
    WrongService,
    #[error("not a {0} token")]
    WrongUse(&'static str),
}

/// The claims of a token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    /// The user; empty for anonymous.
    pub sub: String,
    pub aud: String,
    pub exp: u64,
    pub nbf: u64,
    pub iat: u64,
    pub jti: String,
    #[serde(default)]
    pub access: Vec<Grant>,
    /// `access` or `refresh`.
    #[serde(rename = "use")]
    pub token_use: String,
    /// For refresh tokens: a tag of the user's password hash when issued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pwh: Option<String>,
}

/// Signs and checks tokens.
pub struct Tokens {
    key: hmac::Key,
    pub service: Option<String>,
    pub ttl: Duration,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Tokens {
    pub fn load(config: &TokenConfig) -> Result<Self, TokenError> {
        let text = std::fs::read_to_string(&config.key).map_err(|source| TokenError::ReadKey {
            path: config.key.clone(),
            source,
        })?;
        let bytes = STANDARD
            .decode(text.trim())
            .ok()
            .filter(|b| b.len() >= 32)
            .ok_or_else(|| TokenError::BadKey {
                path: config.key.clone(),
            })?;
        Ok(Tokens {
            key: hmac::Key::new(hmac::HMAC_SHA256, &bytes),
            service: config.service.clone(),
            ttl: config.ttl,
        })
    }

    fn sign(&self, claims: &Claims) -> String {
        let header = B64URL.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        let body = B64URL.encode(serde_json::to_vec(claims).unwrap_or_default());
        let signing_input = format!("{header}.{body}");
        let sig = hmac::sign(&self.key, signing_input.as_bytes());
        format!("{signing_input}.{}", B64URL.encode(sig.as_ref()))
    }

    /// Checks signature, expiry, audience and use.
    pub fn verify(
        &self,
        token: &str,
        service: &str,
        token_use: &'static str,
    ) -> Result<Claims, TokenError> {
        let mut parts = token.splitn(3, '.');
        let (Some(header), Some(body), Some(sig)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let sig = B64URL.decode(sig).map_err(|_| TokenError::Malformed)?;
        let signed = &token[..header.len() + 1 + body.len()];
        hmac::verify(&self.key, signed.as_bytes(), &sig).map_err(|_| TokenError::BadSignature)?;
        let claims: Claims = B64URL
            .decode(body)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(TokenError::Malformed)?;
        let t = now();
        if claims.exp <= t || claims.nbf > t + LEEWAY {
            return Err(TokenError::Expired);
        }
        if claims.aud != service {
            return Err(TokenError::WrongService);
        }
        if claims.token_use != token_use {
            return Err(TokenError::WrongUse(token_use));
        }
        Ok(claims)
    }

    fn claims(
        &self,
        sub: &str,
        service: &str,
        access: Vec<Grant>,
        ttl: Duration,
        token_use: &str,
    ) -> Claims {
        let t = now();
        let mut jti = [0u8; 16];
        let _ =
            aws_lc_rs::rand::SecureRandom::fill(&aws_lc_rs::rand::SystemRandom::new(), &mut jti);
        Claims {
            iss: ISSUER.into(),
            sub: sub.into(),
            aud: service.into(),
            exp: t + ttl.as_secs(),
            nbf: t.saturating_sub(1),
            iat: t,
            jti: jti.iter().map(|b| format!("{b:02x}")).collect(),
            access,
            token_use: token_use.into(),
            pwh: None,
        }
    }

    /// An access token for `sub` with exactly `access`.
    pub fn access_token(&self, sub: &str, service: &str, access: Vec<Grant>) -> (String, Claims) {
        let c = self.claims(sub, service, access, self.ttl, "access");
        (self.sign(&c), c)
    }

    /// A refresh token for `sub`, bound to `stored_hash` (a password change revokes it).
    pub fn refresh_token(&self, sub: &str, service: &str, stored_hash: &str) -> String {
        let mut c = self.claims(sub, service, Vec::new(), REFRESH_TTL, "refresh");
        c.pwh = Some(self.password_tag(sub, stored_hash));
        self.sign(&c)
    }

    /// A tag of a user's stored hash, so a refresh token can be tied to it without holding it.
    pub fn password_tag(&self, user: &str, stored_hash: &str) -> String {
        let mut ctx = hmac::Context::with_key(&self.key);
        ctx.update(b"refresh-binding\0");
        ctx.update(user.as_bytes());
        ctx.update(b"\0");
        ctx.update(stored_hash.as_bytes());
        B64URL.encode(&ctx.sign().as_ref()[..16])
    }
}

/// The JSON answer of the token endpoint.
pub fn token_response(token: &str, claims: &Claims, refresh: Option<&str>) -> serde_json::Value {
    let mut v = serde_json::json!({
        "token": token,
        "access_token": token,
        "expires_in": claims.exp.saturating_sub(claims.iat),
        "issued_at": crate::time::rfc3339(claims.iat),
    });
    if let Some(r) = refresh {
        v["refresh_token"] = serde_json::Value::String(r.to_owned());
    }
    v
}

/// Narrows requested scopes to what `allowed(kind, name, action)` grants; drops empty ones.
pub fn intersect(requested: &[Grant], allowed: impl Fn(&str, &str, &str) -> bool) -> Vec<Grant> {
    let mut out: Vec<Grant> = Vec::new();
    for g in requested {
        let actions: BTreeSet<String> = g
            .actions
            .iter()
            .filter(|a| allowed(&g.kind, &g.name, a))
            .cloned()
            .collect();
        if actions.is_empty() {
            continue;
        }
        match out
            .iter_mut()
            .find(|o| o.kind == g.kind && o.name == g.name)
        {
            Some(o) => {
                let mut all: BTreeSet<String> = o.actions.drain(..).collect();
                all.extend(actions);
                o.actions = all.into_iter().collect();
            }
            None => out.push(Grant {
                kind: g.kind.clone(),
                name: g.name.clone(),
                actions: actions.into_iter().collect(),
            }),
        }
    }
    out
}

/// `registry-gate token-key FILE`: writes a new random key (base64, mode 0600).
pub fn write_key(path: &Path, force: bool) -> Result<(), std::io::Error> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if path.exists() && !force {
        return Err(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            format!(
                "{} exists; pass --force to replace it (every token signed with the old key stops working)",
                path.display()
            ),
        ));
    }
    let mut key = [0u8; 32];
    aws_lc_rs::rand::SecureRandom::fill(&aws_lc_rs::rand::SystemRandom::new(), &mut key)
        .map_err(|_| std::io::Error::other("no system randomness"))?;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    writeln!(f, "{}", STANDARD.encode(key))?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> (Tokens, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key");
        write_key(&key, false).unwrap();
        let t = Tokens::load(&TokenConfig {
            service: None,
            key,
            ttl: Duration::from_secs(300),
        })
        .unwrap();
        (t, dir)
    }

    #[test]
    fn scopes_parse_and_print() {
        let g = Grant::parse_scope("repository:team/app:pull,push").unwrap();
        assert_eq!(
            (g.kind.as_str(), g.name.as_str()),
            ("repository", "team/app")
        );
        assert_eq!(g.actions, ["pull", "push"]);
        assert_eq!(g.scope(), "repository:team/app:pull,push");
        let g = Grant::parse_scope("registry:catalog:*").unwrap();
        assert_eq!(g.actions, ["*"]);
        assert!(Grant::parse_scope("nonsense").is_none());
    }

    #[test]
    fn sign_verify_and_refuse_tampering() {
        let (t, _d) = tokens();
        let grant = Grant::parse_scope("repository:a:pull").unwrap();
        let (tok, _) = t.access_token("alice", "svc", vec![grant]);
        let c = t.verify(&tok, "svc", "access").unwrap();
        assert_eq!(c.access, [Grant::parse_scope("repository:a:pull").unwrap()]);
        assert!(matches!(
            t.verify(&tok, "other", "access"),
            Err(TokenError::WrongService)
        ));
        assert!(matches!(
            t.verify(&tok, "svc", "refresh"),
            Err(TokenError::WrongUse(_))
        ));
        // Swap the claims for ones granting push: the signature no longer matches.
        let parts: Vec<&str> = tok.split('.').collect();
        let mut claims: Claims = serde_json::from_slice(&B64URL.decode(parts[1]).unwrap()).unwrap();
        claims.access[0].actions.push("push".into());
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            B64URL.encode(serde_json::to_vec(&claims).unwrap()),
            parts[2]
        );
        assert!(matches!(
            t.verify(&forged, "svc", "access"),
            Err(TokenError::BadSignature)
        ));
        let (other, _d2) = tokens();
        assert!(matches!(
            other.verify(&tok, "svc", "access"),
            Err(TokenError::BadSignature)
        ));
        assert!(matches!(
            t.verify("a.b", "svc", "access"),
            Err(TokenError::Malformed)
        ));
    }

    #[test]
    fn expired_tokens_are_refused() {
        let (t, _d) = tokens();
        let mut c = t.claims("alice", "svc", vec![], Duration::from_secs(300), "access");
        c.exp = now() - 1;
        assert!(matches!(
            t.verify(&t.sign(&c), "svc", "access"),
            Err(TokenError::Expired)
        ));
    }

    #[test]
    fn intersection_keeps_only_granted_actions_and_merges() {
        let req = vec![
            Grant::parse_scope("repository:a:pull,push").unwrap(),
            Grant::parse_scope("repository:b:pull").unwrap(),
            Grant::parse_scope("repository:a:delete").unwrap(),
        ];
        let got = intersect(&req, |_, name, action| name == "a" || action == "nothing");
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].actions, ["delete", "pull", "push"]);
    }
}
