//! Counters, gauges and the one histogram, and their Prometheus text encoding.
//!
//! Owns: every metric the gate exports and [`Metrics::render`], a hand-written encoder of the
//! Prometheus text format (version 0.0.4). Recording is a few relaxed atomic adds, no lock and no
//! allocation, so the request path stays cheap; labelled counters are fixed arrays indexed by
//! small enums, and a series is written only once it is non-zero. Does not own: deciding what
//! happened (the callers: http/service.rs for requests and bytes, upstream/proxy.rs for upstream latency,
//! auth/ for logins, net/server.rs for connections and handshakes, ops/reload.rs for reloads and the
//! certificate's expiry) or serving the text (net/admin.rs).
//!
//! The series, all prefixed `registry_gate_`:
//! - `requests_total{method,kind,class}`: finished requests; `kind` from the path (blob,
//!   manifest, upload, catalog, tags, ui, other), `class` the status class (2xx..5xx).
//! - `request_body_bytes_total`, `response_body_bytes_total`: body bytes passed through.
//! - `upstream_response_seconds`: histogram of the time to the registry's response headers.
//! - `auth_successes_total` (cache hits included), `auth_cache_hits_total`,
//!   `auth_failures_total`, `auth_throttled_total` (answered 429 by the brake),
//!   `password_hashes_total` (hashes verified on the blocking pool).
//! - `rejected_user_agents_total`: old docker clients answered 404.
//! - `access_decisions_total{action,outcome}`: `pull`/`push`/`delete`, `allowed`/`denied`.
//! - `read_only_refusals_total`: writes refused while read-only for maintenance.
//! - `connections_active`, `connections_total`: client connections, TLS and plain.
//! - `connections_refused_total{reason}`: closed at accept by a `[limits]` cap (`global`,
//!   `per_client`).
//! - `tls_handshake_failures_total{reason}`: `error`, `timeout`, or `plain_http` on the TLS port.
//! - `reloads_total{kind,outcome}`: `users`, `certificate`, `access` or `keys`, `success` or
//!   `failure`.
//! - `key_auth_total{key,outcome}`: logins and tokens of each access key (`success`, `expired`,
//!   `wrong_secret`), by the key's name (`key+NAME`); keys that do not exist count only in
//!   `auth_failures_total`, so the label set is bounded by the keys file. Behind a mutex: one
//!   short lock per key login.
//! - `immutable_refusals_total`: tag moves and deletes refused by `[[immutable]]`.
//! - `certificate_expiry_seconds`: the served certificate's notAfter, unix time.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use http::{Method, StatusCode};

/// The `Content-Type` of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What a request addresses, for the `kind` label (http/route.rs `Target::metrics_kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Blob,
    Manifest,
    Upload,
    Catalog,
    Tags,
    Ui,
    Other,
}

impl Kind {
    const ALL: [Kind; 7] = [
        Kind::Blob,
        Kind::Manifest,
        Kind::Upload,
        Kind::Catalog,
        Kind::Tags,
        Kind::Ui,
        Kind::Other,
    ];

    fn label(self) -> &'static str {
        match self {
            Kind::Blob => "blob",
            Kind::Manifest => "manifest",
            Kind::Upload => "upload",
            Kind::Catalog => "catalog",
            Kind::Tags => "tags",
            Kind::Ui => "ui",
            Kind::Other => "other",
        }
    }
}

const METHODS: [&str; 8] = [
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "OTHER",
];

fn method_index(m: &Method) -> usize {
    match *m {
        Method::GET => 0,
        Method::HEAD => 1,
        Method::POST => 2,
        Method::PUT => 3,
        Method::PATCH => 4,
        Method::DELETE => 5,
        Method::OPTIONS => 6,
        _ => 7,
    }
}

const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

fn class_index(s: StatusCode) -> usize {
    usize::from(s.as_u16() / 100).clamp(1, 5) - 1
}

/// Why a TLS connection did not get past its handshake.
#[derive(Debug, Clone, Copy)]
pub enum HandshakeFailure {
    /// The handshake failed (bad record, no shared cipher, the client rejected our certificate).
    Error,
    /// It did not finish within the handshake deadline.
    Timeout,
    /// The client spoke plain HTTP to the TLS port.
    PlainHttp,
}

const HANDSHAKE_REASONS: [&str; 3] = ["error", "timeout", "plain_http"];

/// What a reload was for.
#[derive(Debug, Clone, Copy)]
pub enum ReloadKind {
    Users,
    Certificate,
    Access,
    Keys,
}

const RELOAD_KINDS: [&str; 4] = ["users", "certificate", "access", "keys"];

/// What became of an access key's login.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum KeyOutcome {
    Success,
    Expired,
    WrongSecret,
}

impl KeyOutcome {
    fn label(self) -> &'static str {
        match self {
            KeyOutcome::Success => "success",
            KeyOutcome::Expired => "expired",
            KeyOutcome::WrongSecret => "wrong_secret",
        }
    }
}

/// Upper bounds of the upstream latency buckets: microseconds and the `le` label.
const BUCKETS: [(u64, &str); 14] = [
    (5_000, "0.005"),
    (10_000, "0.01"),
    (25_000, "0.025"),
    (50_000, "0.05"),
    (100_000, "0.1"),
    (250_000, "0.25"),
    (500_000, "0.5"),
    (1_000_000, "1"),
    (2_500_000, "2.5"),
    (5_000_000, "5"),
    (10_000_000, "10"),
    (30_000_000, "30"),
    (60_000_000, "60"),
    (300_000_000, "300"),
];

/// A latency histogram: per-bucket counts (the last one is `+Inf`) and the sum in microseconds.
#[derive(Default)]
struct Histogram {
    buckets: [AtomicU64; BUCKETS.len() + 1],
    sum_micros: AtomicU64,
}

impl Histogram {
    fn observe(&self, d: Duration) {
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let i = BUCKETS
            .iter()
            .position(|(le, _)| micros <= *le)
            .unwrap_or(BUCKETS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }
}

/// `certificate_expiry_seconds` before any certificate was loaded.
const NO_EXPIRY: i64 = i64::MIN;

/// All metrics of one gate.
pub struct Metrics {
    requests: [[[AtomicU64; CLASSES.len()]; Kind::ALL.len()]; METHODS.len()],
    request_bytes: AtomicU64,
    response_bytes: AtomicU64,
    upstream: Histogram,
    auth_successes: AtomicU64,
    auth_cache_hits: AtomicU64,
    auth_failures: AtomicU64,
    auth_throttled: AtomicU64,
    password_hashes: AtomicU64,
    rejected_user_agents: AtomicU64,
    /// `[action: pull, push, delete][0 = allowed, 1 = denied]`
    decisions: [[AtomicU64; 2]; 3],
    read_only_refusals: AtomicU64,
    immutable_refusals: AtomicU64,
    key_auth: std::sync::Mutex<std::collections::BTreeMap<(String, KeyOutcome), u64>>,
    connections_active: AtomicI64,
    connections_total: AtomicU64,
    /// `[0 = global cap, 1 = per-client cap]`
    connections_refused: [AtomicU64; 2],
    handshake_failures: [AtomicU64; HANDSHAKE_REASONS.len()],
    /// `[kind][0 = success, 1 = failure]`
    reloads: [[AtomicU64; 2]; RELOAD_KINDS.len()],
    certificate_expiry: AtomicI64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            requests: Default::default(),
            request_bytes: AtomicU64::new(0),
            response_bytes: AtomicU64::new(0),
            upstream: Histogram::default(),
            auth_successes: AtomicU64::new(0),
            auth_cache_hits: AtomicU64::new(0),
            auth_failures: AtomicU64::new(0),
            auth_throttled: AtomicU64::new(0),
            password_hashes: AtomicU64::new(0),
            rejected_user_agents: AtomicU64::new(0),
            decisions: Default::default(),
            read_only_refusals: AtomicU64::new(0),
            immutable_refusals: AtomicU64::new(0),
            key_auth: std::sync::Mutex::default(),
            connections_active: AtomicI64::new(0),
            connections_total: AtomicU64::new(0),
            connections_refused: Default::default(),
            handshake_failures: Default::default(),
            reloads: Default::default(),
            certificate_expiry: AtomicI64::new(NO_EXPIRY),
        }
    }
}

fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl Metrics {
    pub fn new() -> Self {
        Self::default()
    }

    /// A finished request (recorded once, when its response body is done or dropped).
    pub fn request(
        &self,
        method: &Method,
        kind: Kind,
        status: StatusCode,
        bytes_in: u64,
        bytes_out: u64,
    ) {
        inc(&self.requests[method_index(method)][kind as usize][class_index(status)]);
        self.request_bytes.fetch_add(bytes_in, Ordering::Relaxed);
        self.response_bytes.fetch_add(bytes_out, Ordering::Relaxed);
    }

    /// Time from sending a request upstream to its response headers.
    pub fn upstream_latency(&self, d: Duration) {
        self.upstream.observe(d);
    }

    /// A login that succeeded; `cached` when the credential cache answered.
    pub fn auth_success(&self, cached: bool) {
        inc(&self.auth_successes);
        if cached {
            inc(&self.auth_cache_hits);
        }
    }

    pub fn auth_failure(&self) {
        inc(&self.auth_failures);
    }

    pub fn auth_throttled(&self) {
        inc(&self.auth_throttled);
    }

    /// Password hashes verified (on the blocking pool; every check verifies one per work class).
    pub fn password_hashes(&self, n: usize) {
        self.password_hashes
            .fetch_add(u64::try_from(n).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    pub fn rejected_user_agent(&self) {
        inc(&self.rejected_user_agents);
    }

    /// An access decision on a repository.
    pub fn decision(&self, action: crate::authz::Action, allowed: bool) {
        inc(&self.decisions[action as usize][usize::from(!allowed)]);
    }

    /// A push or delete refused because the registry is read-only for maintenance.
    pub fn read_only_refusal(&self) {
        inc(&self.read_only_refusals);
    }

    /// A tag move or delete refused by an `[[immutable]]` entry.
    pub fn immutable_refusal(&self) {
        inc(&self.immutable_refusals);
    }

    /// A login (or token) of the access key named `key` (`key+NAME`).
    pub fn key_auth(&self, key: &str, outcome: KeyOutcome) {
        let mut map = self.key_auth.lock().unwrap_or_else(|e| e.into_inner());
        *map.entry((key.to_owned(), outcome)).or_insert(0) += 1;
    }

    /// Counts a client connection as open until the returned guard is dropped.
    pub fn connection(self: &Arc<Self>) -> ConnectionGuard {
        inc(&self.connections_total);
        self.connections_active.fetch_add(1, Ordering::Relaxed);
        ConnectionGuard(self.clone())
    }

    /// A connection closed at accept because a cap was full.
    pub fn connection_refused(&self, why: crate::net::limits::Refused) {
        use crate::net::limits::Refused;
        inc(&self.connections_refused[match why {
            Refused::Global => 0,
            Refused::PerClient => 1,
        }]);
    }

    pub fn handshake_failure(&self, why: HandshakeFailure) {
        inc(&self.handshake_failures[why as usize]);
    }

    pub fn reload(&self, kind: ReloadKind, ok: bool) {
        inc(&self.reloads[kind as usize][usize::from(!ok)]);
    }

    /// The served certificate's notAfter (unix seconds); `None` when it could not be read.
    pub fn set_certificate_expiry(&self, not_after: Option<i64>) {
        self.certificate_expiry
            .store(not_after.unwrap_or(NO_EXPIRY), Ordering::Relaxed);
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let w = &mut out;

        family(
            w,
            "requests_total",
            "counter",
            "Requests answered, by method, kind of path and status class.",
        );
        for (m, method) in METHODS.iter().enumerate() {
            for (k, kind) in Kind::ALL.iter().enumerate() {
                for (c, class) in CLASSES.iter().enumerate() {
                    let n = load(&self.requests[m][k][c]);
                    if n > 0 {
                        let kind = kind.label();
                        let _ = writeln!(
                            w,
                            "registry_gate_requests_total{{method=\"{method}\",kind=\"{kind}\",class=\"{class}\"}} {n}"
                        );
                    }
                }
            }
        }
        simple(
            w,
            "request_body_bytes_total",
            "counter",
            "Request body bytes passed to the registry.",
            load(&self.request_bytes),
        );
        simple(
            w,
            "response_body_bytes_total",
            "counter",
            "Response body bytes passed back from the registry.",
            load(&self.response_bytes),
        );

        family(
            w,
            "upstream_response_seconds",
            "histogram",
            "Time from sending a request to the registry to its response headers.",
        );
        let mut cumulative = 0;
        for (i, (_, le)) in BUCKETS.iter().enumerate() {
            cumulative += load(&self.upstream.buckets[i]);
            let _ = writeln!(
                w,
                "registry_gate_upstream_response_seconds_bucket{{le=\"{le}\"}} {cumulative}"
            );
        }
        cumulative += load(&self.upstream.buckets[BUCKETS.len()]);
        let sum = load(&self.upstream.sum_micros);
        let _ = writeln!(
            w,
            "registry_gate_upstream_response_seconds_bucket{{le=\"+Inf\"}} {cumulative}\n\
             registry_gate_upstream_response_seconds_sum {}.{:06}\n\
             registry_gate_upstream_response_seconds_count {cumulative}",
            sum / 1_000_000,
            sum % 1_000_000
        );

        simple(
            w,
            "auth_successes_total",
            "counter",
            "Successful logins, cache hits included.",
            load(&self.auth_successes),
        );
        simple(
            w,
            "auth_cache_hits_total",
            "counter",
            "Successful logins answered from the credential cache, without hashing.",
            load(&self.auth_cache_hits),
        );
        simple(
            w,
            "auth_failures_total",
            "counter",
            "Failed logins: unknown user, wrong password or a malformed Authorization header.",
            load(&self.auth_failures),
        );
        simple(
            w,
            "auth_throttled_total",
            "counter",
            "Logins refused with 429 after too many failures from one client or against one user.",
            load(&self.auth_throttled),
        );
        simple(
            w,
            "password_hashes_total",
            "counter",
            "Password hashes verified (one per kind of hash in the users file on every check).",
            load(&self.password_hashes),
        );
        simple(
            w,
            "rejected_user_agents_total",
            "counter",
            "Requests from docker clients too old for the registry, answered 404.",
            load(&self.rejected_user_agents),
        );
        family(
            w,
            "access_decisions_total",
            "counter",
            "Access decisions on repositories, by action and outcome.",
        );
        for (a, action) in ["pull", "push", "delete"].iter().enumerate() {
            for (o, outcome) in ["allowed", "denied"].iter().enumerate() {
                let _ = writeln!(
                    w,
                    "registry_gate_access_decisions_total{{action=\"{action}\",outcome=\"{outcome}\"}} {}",
                    load(&self.decisions[a][o])
                );
            }
        }
        simple(
            w,
            "read_only_refusals_total",
            "counter",
            "Pushes and deletes refused while the registry was read-only for maintenance.",
            load(&self.read_only_refusals),
        );
        simple(
            w,
            "immutable_refusals_total",
            "counter",
            "Tag moves and deletes refused because an [[immutable]] entry covers the tag.",
            load(&self.immutable_refusals),
        );
        family(
            w,
            "key_auth_total",
            "counter",
            "Logins and tokens of each access key, by outcome.",
        );
        let keys = self
            .key_auth
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for ((key, outcome), n) in keys {
            let key = crate::auth::LogName(&key);
            let _ = writeln!(
                w,
                "registry_gate_key_auth_total{{key=\"{key}\",outcome=\"{}\"}} {n}",
                outcome.label()
            );
        }
        family(
            w,
            "connections_active",
            "gauge",
            "Client connections open now, TLS and plain.",
        );
        let _ = writeln!(
            w,
            "registry_gate_connections_active {}",
            self.connections_active.load(Ordering::Relaxed)
        );
        simple(
            w,
            "connections_total",
            "counter",
            "Client connections accepted, TLS and plain.",
            load(&self.connections_total),
        );
        family(
            w,
            "connections_refused_total",
            "counter",
            "Client connections closed at accept because a [limits] cap was full, by cap.",
        );
        for (i, reason) in ["global", "per_client"].iter().enumerate() {
            let _ = writeln!(
                w,
                "registry_gate_connections_refused_total{{reason=\"{reason}\"}} {}",
                load(&self.connections_refused[i])
            );
        }

        family(
            w,
            "tls_handshake_failures_total",
            "counter",
            "TLS connections that did not get past the handshake, by reason.",
        );
        for (i, reason) in HANDSHAKE_REASONS.iter().enumerate() {
            let _ = writeln!(
                w,
                "registry_gate_tls_handshake_failures_total{{reason=\"{reason}\"}} {}",
                load(&self.handshake_failures[i])
            );
        }

        family(
            w,
            "reloads_total",
            "counter",
            "Reloads of the users file, the access rules and the certificate, by outcome.",
        );
        for (k, kind) in RELOAD_KINDS.iter().enumerate() {
            for (o, outcome) in ["success", "failure"].iter().enumerate() {
                let _ = writeln!(
                    w,
                    "registry_gate_reloads_total{{kind=\"{kind}\",outcome=\"{outcome}\"}} {}",
                    load(&self.reloads[k][o])
                );
            }
        }

        let expiry = self.certificate_expiry.load(Ordering::Relaxed);
        if expiry != NO_EXPIRY {
            family(
                w,
                "certificate_expiry_seconds",
                "gauge",
                "The served certificate's notAfter, as a unix time.",
            );
            let _ = writeln!(w, "registry_gate_certificate_expiry_seconds {expiry}");
        }
        out
    }
}

fn family(w: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(
        w,
        "# HELP registry_gate_{name} {help}\n# TYPE registry_gate_{name} {kind}"
    );
}

fn simple(w: &mut String, name: &str, kind: &str, help: &str, value: u64) {
    family(w, name, kind, help);
    let _ = writeln!(w, "registry_gate_{name} {value}");
}

/// Keeps one connection counted in `connections_active`.
pub struct ConnectionGuard(Arc<Metrics>);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.connections_active.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_only_seen_request_series_and_a_cumulative_histogram() {
        let m = Arc::new(Metrics::new());
        m.request(&Method::GET, Kind::Blob, StatusCode::OK, 0, 10);
        m.request(&Method::GET, Kind::Blob, StatusCode::PARTIAL_CONTENT, 0, 5);
        m.request(
            &Method::from_bytes(b"BREW").unwrap(),
            Kind::Other,
            StatusCode::from_u16(999).unwrap(),
            3,
            0,
        );
        m.upstream_latency(Duration::from_millis(3));
        m.upstream_latency(Duration::from_millis(700));
        m.upstream_latency(Duration::from_secs(1000));
        m.reload(ReloadKind::Certificate, false);
        m.handshake_failure(HandshakeFailure::PlainHttp);
        let open = m.connection();
        let text = m.render();
        for line in [
            "registry_gate_requests_total{method=\"GET\",kind=\"blob\",class=\"2xx\"} 2",
            "registry_gate_requests_total{method=\"OTHER\",kind=\"other\",class=\"5xx\"} 1",
            "registry_gate_request_body_bytes_total 3",
            "registry_gate_response_body_bytes_total 15",
            "registry_gate_upstream_response_seconds_bucket{le=\"0.005\"} 1",
            "registry_gate_upstream_response_seconds_bucket{le=\"0.5\"} 1",
            "registry_gate_upstream_response_seconds_bucket{le=\"1\"} 2",
            "registry_gate_upstream_response_seconds_bucket{le=\"300\"} 2",
            "registry_gate_upstream_response_seconds_bucket{le=\"+Inf\"} 3",
            "registry_gate_upstream_response_seconds_sum 1000.703000",
            "registry_gate_upstream_response_seconds_count 3",
            "registry_gate_reloads_total{kind=\"certificate\",outcome=\"failure\"} 1",
            "registry_gate_reloads_total{kind=\"users\",outcome=\"success\"} 0",
            "registry_gate_tls_handshake_failures_total{reason=\"plain_http\"} 1",
            "registry_gate_connections_active 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
        assert!(!text.contains("kind=\"manifest\""), "{text}");
        assert!(!text.contains("certificate_expiry"), "{text}");
        drop(open);
        m.set_certificate_expiry(Some(1_900_000_000));
        let text = m.render();
        assert!(
            text.contains("\nregistry_gate_connections_active 0\n"),
            "{text}"
        );
        assert!(text.contains("\nregistry_gate_certificate_expiry_seconds 1900000000\n"));
    }

    #[test]
    fn every_sample_belongs_to_a_declared_family() {
        let m = Metrics::new();
        m.request(&Method::PUT, Kind::Upload, StatusCode::CREATED, 1, 0);
        m.set_certificate_expiry(Some(1));
        let mut declared = Vec::new();
        for line in m.render().lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                declared.push(rest.split(' ').next().unwrap().to_owned());
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            let name = line.split(['{', ' ']).next().unwrap();
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .filter(|f| declared.iter().any(|d| d == f))
                .unwrap_or(name);
            assert!(
                declared.last().is_some_and(|d| d == family),
                "{line}: not under its # TYPE"
            );
            assert!(
                line.rsplit(' ').next().unwrap().parse::<f64>().is_ok(),
                "{line}"
            );
        }
    }
}
