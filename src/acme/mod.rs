//! ACME (RFC 8555): certificates that get and renew themselves.
//!
//! Owns: the lifecycle. At start, [`Acme::prepare`] opens the cache folder and serves a cached
//! certificate at once when it is valid for the configured domains; otherwise the TLS listener
//! serves nothing (handshakes fail with an alert, logged once) until the first order succeeds.
//! [`Acme::run`] orders when there is no usable certificate, and renews when a third of the
//! certificate's lifetime remains ([`renew_at`]). A failed order is retried with exponential
//! backoff ([`backoff`]: 10 s doubling to 1 h), the current certificate stays in use meanwhile,
//! and each failure is logged with the reason and the current certificate's expiry (also the
//! `certificate_expiry_seconds` metric). A new certificate is written to the cache, then swapped
//! into the [`CertStore`]: open connections keep theirs, new ones get it. Before ordering, the
//! cache is read again, so replicas sharing it pick up a certificate another one obtained.
//! Does not own: the protocol (instant-acme, through order.rs), the files (cache.rs), the
//! HTTP-01 listener (http01.rs) or the TLS handshake (net/tls.rs, net/server.rs).

pub mod cache;
pub mod http01;
pub mod order;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::config::AcmeConfig;
use crate::net::tls::CertStore;
use crate::ops::metrics::Metrics;
use crate::ops::reload::certificate_in_force;
use crate::time::unix_now;
use cache::{CERTIFICATE_FILE, Cache, CacheError, Cached};
pub use order::{ChallengeKind, Http01Tokens};

/// Why ACME could not start.
#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    #[error("[acme] cache: {0}")]
    Cache(#[from] CacheError),
}

/// An order never runs longer than this; a CA that stalls is a failure like any other.
const ORDER_DEADLINE: Duration = Duration::from_secs(300);

/// When to renew a certificate valid from `not_before` to `not_after` (unix seconds): when a
/// third of its lifetime remains (day 60 of Let's Encrypt's 90).
pub fn renew_at(not_before: i64, not_after: i64) -> i64 {
    let lifetime = (not_after - not_before).max(0);
    not_after - lifetime / 3
}

/// The wait after the `failures`-th failure in a row: 10 s, 20 s, 40 s ... at most 1 h.
pub fn backoff(failures: u32) -> Duration {
    let secs = 10u64.saturating_mul(1u64 << failures.saturating_sub(1).min(20));
    Duration::from_secs(secs.min(3600))
}

/// The ACME side of a running gate.
pub struct Acme {
    config: AcmeConfig,
    cache: Cache,
    store: Arc<CertStore>,
    tokens: Arc<Http01Tokens>,
    kind: ChallengeKind,
    metrics: Arc<Metrics>,
    /// The certificate in use, if any.
    current: Option<Cached>,
}

impl Acme {
    /// Opens the cache and serves its certificate when it is usable. Never contacts the CA.
    pub fn prepare(
        config: &AcmeConfig,
        store: Arc<CertStore>,
        kind: ChallengeKind,
        metrics: Arc<Metrics>,
    ) -> Result<Acme, AcmeError> {
        let cache = Cache::open(&config.cache)?;
        let mut acme = Acme {
            config: config.clone(),
            cache,
            store,
            tokens: Arc::default(),
            kind,
            metrics,
            current: None,
        };
        match acme.usable_cached() {
            Some(cached) => acme.use_certificate(cached, "loaded certificate from the ACME cache"),
            None => tracing::warn!(
                domains = ?acme.config.domains,
                directory = %acme.config.directory,
                challenge = kind.name(),
                "no usable certificate in the ACME cache yet: TLS handshakes fail until one is obtained; ordering now"
            ),
        }
        Ok(acme)
    }

    /// The HTTP-01 answers `acme_http_listen` serves.
    pub fn tokens(&self) -> Arc<Http01Tokens> {
        self.tokens.clone()
    }

    /// The cached certificate, if it names every domain and has not expired; problems are
    /// logged (the file's name, never its content).
    fn usable_cached(&self) -> Option<Cached> {
        match self.cache.certificate() {
            Ok(Some(c)) if !c.covers(&self.config.domains) => {
                tracing::info!(
                    cached = ?c.names, domains = ?self.config.domains,
                    "the cached certificate does not name every configured domain; ordering a new one"
                );
                None
            }
            Ok(Some(c)) if c.not_after <= unix_now() => {
                tracing::info!("the cached certificate has expired; ordering a new one");
                None
            }
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("ignoring the cached certificate: {e}");
                None
            }
        }
    }

    fn use_certificate(&mut self, cached: Cached, event: &str) {
        self.store.set(cached.pair.clone());
        certificate_in_force(&self.store, &self.metrics, event);
        tracing::info!(
            renew_at = %crate::time::rfc3339(renew_at(cached.not_before, cached.not_after)),
            "ACME renewal scheduled"
        );
        self.current = Some(cached);
    }

    /// Seconds until the next order is due (0: now).
    fn due_in(&self) -> u64 {
        match &self.current {
            None => 0,
            Some(c) => u64::try_from(renew_at(c.not_before, c.not_after) - unix_now()).unwrap_or(0),
        }
    }

    /// Orders and renews until `stop` turns true.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut failures: u32 = 0;
        loop {
            let wait = if failures > 0 {
                backoff(failures)
            } else {
                Duration::from_secs(self.due_in())
            };
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                () = tokio::time::sleep(wait) => {}
            }
            // A replica sharing the cache may have renewed meanwhile.
            if let Some(cached) = self.usable_cached()
                && self
                    .current
                    .as_ref()
                    .is_none_or(|c| cached.not_after > c.not_after)
                && renew_at(cached.not_before, cached.not_after) > unix_now()
            {
                self.use_certificate(cached, "loaded a newer certificate from the ACME cache");
                failures = 0;
                continue;
            }
            let renewing = self.current.is_some();
            tracing::info!(
                domains = ?self.config.domains,
                directory = %self.config.directory,
                "{}",
                if renewing { "renewing the certificate" } else { "obtaining a certificate" }
            );
            let outcome = tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                r = tokio::time::timeout(ORDER_DEADLINE, self.order_and_save()) => r,
            };
            match outcome {
                Ok(Ok(cached)) => {
                    failures = 0;
                    let event = if renewing {
                        "renewed certificate"
                    } else {
                        "obtained certificate"
                    };
                    self.use_certificate(cached, event);
                }
                Ok(Err(e)) => {
                    failures = failures.saturating_add(1);
                    self.log_failure(&error_chain(&e), failures);
                }
                Err(_) => {
                    failures = failures.saturating_add(1);
                    self.log_failure(&format!("no result within {ORDER_DEADLINE:?}"), failures);
                }
            }
        }
    }

    async fn order_and_save(&self) -> Result<Cached, order::OrderError> {
        let (cached, pem) = order::Orderer {
            config: &self.config,
            cache: &self.cache,
            store: &self.store,
            tokens: &self.tokens,
            kind: self.kind,
        }
        .order()
        .await?;
        // Written before it is served: a restart finds what is being served.
        self.cache.write(CERTIFICATE_FILE, pem.as_bytes())?;
        Ok(cached)
    }

    fn log_failure(&self, why: &str, failures: u32) {
        let retry_in = backoff(failures);
        match self.store.leaf_info() {
            Ok(info) => tracing::error!(
                failures,
                ?retry_in,
                serving = %info.subject,
                not_after = %info.not_after_utc(),
                "ACME order failed, keeping the current certificate: {why}"
            ),
            Err(_) => tracing::error!(
                failures,
                ?retry_in,
                "ACME order failed; no certificate yet, so TLS handshakes still fail: {why}"
            ),
        }
    }
}

/// An error and its causes, `a: b: c`, each cause left out when the text already holds it
/// (hyper's "client error (Connect)" alone does not say "connection refused").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}
