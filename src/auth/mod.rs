//! Authentication: who is asking. Identity only; what they may do is decided afterwards.
//!
//! Owns: parsing the `Authorization` header (malformed values are a failed login, never a 400
//! or a panic; `Basic Og==`, an empty user and password, is anonymous), the order of the checks
//! (cache, then brake, then a slow hash on a bounded blocking pool), the 401/429 errors, and
//! counting each outcome in the metrics.
//! Does not own: the file format (htpasswd.rs), the cache (cache.rs), the brake (brake.rs).

pub mod brake;
pub mod cache;
pub mod htpasswd;
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
}

impl Identity {
    /// The name for logs: the user, or `-`.
    pub fn log_name(&self) -> &str {
        match self {
            Identity::Anonymous => "-",
            Identity::User(u) => u,
        }
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
    cache: CredentialCache,
    brake: Brake,
    hash_slots: Semaphore,
    realm: String,
    metrics: Arc<Metrics>,
}

impl Authenticator {
    pub fn new(config: &AuthConfig, metrics: Arc<Metrics>) -> Result<Self, UsersError> {
        let users = Arc::new(UserStore::load(config.htpasswd.clone())?);
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Ok(Authenticator {
            users,
            cache: CredentialCache::new(config.cache_ttl),
            brake: Brake::new(config.brake_failures, config.brake_window),
            hash_slots: Semaphore::new(cores),
            realm: config.realm.clone(),
            metrics,
        })
    }

    /// The 401 this gate answers unauthenticated requests with.
    pub fn challenge(&self) -> GateError {
        GateError::Unauthorized(Challenge::Basic {
            realm: self.realm.clone(),
        })
    }

    /// Re-reads the user file; the cache is emptied only when the new users are in force.
    pub fn reload_users(&self) -> Result<usize, UsersError> {
        let n = self.users.reload()?;
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

    /// Checks a user's password: the cache first, then the brake, then the hash on the
    /// blocking pool. A failure counts against the client's address.
    pub async fn verify_password(
        &self,
        user: String,
        password: Vec<u8>,
        peer: IpAddr,
    ) -> Result<Identity, GateError> {
        let table = self.users.snapshot();
        let (known, hash) = match table.users.get(&user) {
            Some(h) => (true, h.clone()),
            None => (false, table.dummy.clone()),
        };
        let tag = self.cache.tag(&user, &password, &hash.stored());
        if known && self.cache.hit(&tag) {
            self.metrics.auth_success(true);
            return Ok(Identity::User(user.into()));
        }
        if let Some(retry_after) = self.brake.wait(peer) {
            self.metrics.auth_throttled();
            return Err(GateError::TooManyRequests { retry_after });
        }
        let ok = self
            .cache
            .merged(tag, || async {
                if !hash.is_slow() {
                    return hash.verify(&password);
                }
                let Ok(_slot) = self.hash_slots.acquire().await else {
                    return false;
                };
                let (hash, password) = (hash.clone(), password.clone());
                tokio::task::spawn_blocking(move || hash.verify(&password))
                    .await
                    .unwrap_or(false)
            })
            .await;
        if ok && known {
            self.cache.remember(tag);
            self.metrics.auth_success(false);
            Ok(Identity::User(user.into()))
        } else {
            self.brake.fail(peer);
            self.metrics.auth_failure();
            tracing::info!(user = %user, client = %peer, "failed login");
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
