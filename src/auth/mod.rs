//! Authentication: who is asking. Identity only; what they may do is decided afterwards.
//!
//! Owns: parsing the `Authorization` header (malformed values are a failed login, never a 400
//! or a panic; `Basic Og==`, an empty user and password, is anonymous), the order of the checks
//! (cache, then brake, then a slow hash on a bounded blocking pool), the 401/429 errors, and
//! counting each outcome in the metrics. User names reach logs only escaped ([`LogName`]).
//! Does not own: the file format (htpasswd.rs), the cache (cache.rs), the brake (brake.rs).

pub mod brake;
pub mod cache;
pub mod htpasswd;
pub mod keys;
pub mod users;

use std::net::IpAddr;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use http::HeaderMap;
use tokio::sync::Semaphore;

use crate::config::AuthConfig;
use crate::error::{Challenge, GateError};
use crate::ops::metrics::Metrics;
use brake::Brake;
use cache::CredentialCache;
use users::{UserStore, UsersError};

/// Who a request comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    Anonymous,
    User(Arc<str>),
    /// An access key (auth/keys.rs): it may do what its own grants say, nothing else.
    Key(Arc<keys::KeyIdentity>),
}

impl Identity {
    /// The name for logs: the user, or `-`. Control characters, quotes and backslashes are
    /// escaped (`\n`, `\u{1b}`), so no user name can forge a log line.
    pub fn log_name(&self) -> tracing::field::DisplayValue<LogName<'_>> {
        tracing::field::display(LogName(self.name()))
    }

    /// The name: the user, `key+NAME` for a key, or `-` for anonymous.
    pub fn name(&self) -> &str {
        match self {
            Identity::Anonymous => "-",
            Identity::User(u) => u,
            Identity::Key(k) => k.user_name(),
        }
    }
}

/// A user name as logs show it: see [`Identity::log_name`].
#[derive(Debug, Clone, Copy)]
pub struct LogName<'a>(pub &'a str);

impl std::fmt::Display for LogName<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for c in self.0.chars() {
            if c.is_control() || c == '"' || c == '\\' {
                write!(f, "{}", c.escape_default())?;
            } else {
                write!(f, "{c}")?;
            }
        }
        Ok(())
    }
}

/// What the `Authorization` header holds.
#[derive(PartialEq, Eq)]
pub enum Credentials {
    None,
    Basic {
        user: String,
        password: Vec<u8>,
    },
    /// A token from the token flow (checked by token/)).
    Bearer(String),
    Malformed,
}

/// Longest `Authorization` value looked at; longer ones are malformed.
const MAX_AUTHORIZATION: usize = 8 * 1024;

/// Reads the `Authorization` header.
pub fn credentials(headers: &HeaderMap) -> Credentials {
    let mut values = headers.get_all(http::header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Credentials::None;
    };
    if values.next().is_some() || value.len() > MAX_AUTHORIZATION {
        return Credentials::Malformed;
    }
    let bytes = value.as_bytes();
    let Some(space) = bytes.iter().position(|b| *b == b' ') else {
        return Credentials::Malformed;
    };
    let (scheme, rest) = bytes.split_at(space);
    if scheme.eq_ignore_ascii_case(b"bearer") {
        return match std::str::from_utf8(rest.trim_ascii()) {
            Ok(t) if !t.is_empty() => Credentials::Bearer(t.to_owned()),
            _ => Credentials::Malformed,
        };
    }
    if !scheme.eq_ignore_ascii_case(b"basic") {
        return Credentials::Malformed;
    }
    let Ok(decoded) = B64.decode(rest.trim_ascii()) else {
        return Credentials::Malformed;
    };
    let Some(colon) = decoded.iter().position(|b| *b == b':') else {
        return Credentials::Malformed;
    };
    let Ok(user) = std::str::from_utf8(&decoded[..colon]) else {
        return Credentials::Malformed;
    };
    let password = decoded[colon + 1..].to_vec();
    if user.is_empty() && password.is_empty() {
        // `skopeo --no-creds` sends `Basic Og==`.
        return Credentials::None;
    }
    Credentials::Basic {
        user: user.to_owned(),
        password,
    }
}

/// Checks credentials against the htpasswd users.
pub struct Authenticator {
    users: Arc<UserStore>,
    keys: Arc<keys::KeyStore>,
    cache: CredentialCache,
    brake: Arc<Brake>,
    hash_slots: Arc<Semaphore>,
    realm: String,
    metrics: Arc<Metrics>,
}

impl Authenticator {
    pub fn new(
        config: &AuthConfig,
        keys: Arc<keys::KeyStore>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, UsersError> {
        let users = Arc::new(UserStore::load(config.htpasswd.clone())?);
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let auth = Authenticator {
            users,
            keys,
            cache: CredentialCache::new(config.cache_ttl),
            brake: Arc::new(Brake::new(config.brake_failures, config.brake_window)),
            hash_slots: Arc::new(Semaphore::new(cores)),
            realm: config.realm.clone(),
            metrics,
        };
        auth.warn_prefixed_users();
        Ok(auth)
    }

    /// htpasswd users whose name starts with `key+` cannot log in: such names are keys'.
    pub fn warn_prefixed_users(&self) {
        for u in self.users.snapshot().users.keys() {
            if u.starts_with(keys::KEY_PREFIX) {
                tracing::warn!(
                    file = %self.users.path().display(),
                    user = %LogName(u),
                    "user names starting with {:?} are access keys; this htpasswd user cannot log in",
                    keys::KEY_PREFIX
                );
            }
        }
    }

    pub fn keys(&self) -> &Arc<keys::KeyStore> {
        &self.keys
    }

    /// Checks an access key's secret (the Basic user `key+NAME`): one SHA-256 against the keys
    /// in force now, no cache. Refusals say why (unknown or deleted, expired, wrong secret).
    pub fn verify_key(
        &self,
        name: &str,
        secret: &[u8],
        peer: IpAddr,
    ) -> Result<Identity, GateError> {
        use crate::ops::metrics::KeyOutcome;
        let user = format!("{}{name}", keys::KEY_PREFIX);
        match self.keys.snapshot().check(name, secret, keys::unix_now()) {
            Ok(id) => {
                self.metrics.auth_success(false);
                self.metrics.key_auth(&user, KeyOutcome::Success);
                Ok(Identity::Key(id))
            }
            Err(refusal) => {
                self.metrics.auth_failure();
                match &refusal {
                    keys::KeyRefusal::Unknown(_) => {}
                    keys::KeyRefusal::Expired { .. } => {
                        self.metrics.key_auth(&user, KeyOutcome::Expired);
                    }
                    keys::KeyRefusal::WrongSecret(_) => {
                        self.metrics.key_auth(&user, KeyOutcome::WrongSecret);
                    }
                }
                tracing::info!(user = %LogName(&user), client = %peer, "failed login: {refusal}");
                Err(self.key_refused(&refusal))
            }
        }
    }

    /// The 401 for a refused key, its message naming the reason.
    pub fn key_refused(&self, refusal: &keys::KeyRefusal) -> GateError {
        GateError::KeyRefused {
            challenge: Challenge::Basic {
                realm: self.realm.clone(),
            },
            message: refusal.to_string(),
        }
    }

    /// The 401 this gate answers unauthenticated requests with.
    pub fn challenge(&self) -> GateError {
        GateError::Unauthorized(Challenge::Basic {
            realm: self.realm.clone(),
        })
    }

    /// Re-reads the user file on the blocking pool; the cache is emptied only when the new
    /// users are in force.
    pub async fn reload_users(&self) -> Result<usize, UsersError> {
        let n = self.users.reload_async().await?;
        self.cache.clear();
        Ok(n)
    }

    pub fn users(&self) -> &UserStore {
        &self.users
    }

    /// The stored hash of `user`, if the user exists now.
    pub fn stored_hash(&self, user: &str) -> Option<String> {
        self.users.snapshot().users.get(user).map(|h| h.stored())
    }

    /// Checks a user's password: the cache first (verified credentials are never braked), then
    /// the brake, which counts the check as a failure from its start, then the hash on the
    /// blocking pool. The hashing permit and the brake's count move into the blocking task: a
    /// request dropped while its hash runs keeps its slot until the hash ends, and its count.
    pub async fn verify_password(
        &self,
        user: String,
        password: Vec<u8>,
        peer: IpAddr,
    ) -> Result<Identity, GateError> {
        if let Some(name) = user.strip_prefix(keys::KEY_PREFIX) {
            return self.verify_key(name, &password, peer);
        }
        let table = self.users.snapshot();
        let stored = table.users.get(&user).map(htpasswd::Hash::stored);
        let known = stored.is_some();
        let tag = self
            .cache
            .tag(&user, &password, stored.as_deref().unwrap_or(""));
        if known && self.cache.hit(&tag) {
            self.metrics.auth_success(true);
            return Ok(Identity::User(user.into()));
        }
        let attempt = match self.brake.begin(peer, &user) {
            Ok(a) => a,
            Err(retry_after) => {
                self.metrics.auth_throttled();
                return Err(GateError::TooManyRequests { retry_after });
            }
        };
        let ok = self
            .cache
            .merged(tag, || {
                let (slots, metrics) = (self.hash_slots.clone(), self.metrics.clone());
                let (user, password, attempt) = (user.clone(), password.clone(), attempt.clone());
                async move {
                    let Ok(slot) = slots.acquire_owned().await else {
                        return false;
                    };
                    tokio::task::spawn_blocking(move || {
                        let _slot = slot;
                        let (ok, hashes) = table.check(&user, &password);
                        metrics.password_hashes(hashes);
                        if ok {
                            attempt.succeeded();
                        }
                        ok
                    })
                    .await
                    .unwrap_or(false)
                }
            })
            .await;
        if ok && known {
            attempt.succeeded();
            self.cache.remember(tag);
            self.metrics.auth_success(false);
            Ok(Identity::User(user.into()))
        } else {
            self.metrics.auth_failure();
            tracing::info!(user = %LogName(&user), client = %peer, "failed login");
            Err(self.challenge())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn with_auth(v: &[u8]) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            http::header::AUTHORIZATION,
            HeaderValue::from_bytes(v).unwrap(),
        );
        h
    }

    #[test]
    fn log_names_cannot_forge_lines() {
        let id = Identity::User("eve\n2026-01-01 INFO admin logged in\u{1b}[0m\"".into());
        let shown = LogName(id.name()).to_string();
        assert!(
            !shown.contains('\n') && !shown.contains('\u{1b}'),
            "{shown}"
        );
        assert!(shown.starts_with("eve\\n2026"), "{shown}");
        assert_eq!(LogName("alice").to_string(), "alice");
    }

    #[test]
    fn parses_basic_and_rejects_garbage() {
        assert!(credentials(&HeaderMap::new()) == Credentials::None);
        assert!(credentials(&with_auth(b"Basic Og==")) == Credentials::None);
        let c = credentials(&with_auth(b"basic YWxpY2U6cDpx"));
        assert!(
            c == Credentials::Basic {
                user: "alice".into(),
                password: b"p:q".to_vec()
            }
        );
        for bad in [
            &b"Basic"[..],
            b"Basic !!!",
            b"Basic YWxpY2U=", // no colon
            b"Basic /w==",     // 0xff, not UTF-8, no colon
            b"Bearer ",
            b"Digest username=x",
        ] {
            assert!(
                credentials(&with_auth(bad)) == Credentials::Malformed,
                "{bad:?}"
            );
        }
        let long = format!("Basic {}", "A".repeat(MAX_AUTHORIZATION));
        assert!(credentials(&with_auth(long.as_bytes())) == Credentials::Malformed);
        let mut two = with_auth(b"Basic YTpi");
        two.append(
            http::header::AUTHORIZATION,
            HeaderValue::from_static("Basic YTpi"),
        );
        assert!(credentials(&two) == Credentials::Malformed);
    }
}
