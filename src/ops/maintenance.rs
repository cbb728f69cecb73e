//! The read-only switch for garbage collection, without stopping the registry.
//!
//! Owns: the switch, and knowing which pushes are in flight so that turning it on neither cuts
//! a push in half nor lets garbage collection run while one is unfinished (GC during a push
//! loses data). A push is in flight for a repository while one of its upload sessions is open
//! and, after its last blob, for a grace period in which its manifest may arrive. A session
//! holds while a request on it is being answered or one came within the last 60 s; one that
//! goes quiet (a client that went away) stops holding. Once the switch is on, new uploads are
//! refused (405 `UNSUPPORTED`, as the registry's own read-only mode answers), sessions already
//! open may finish and their manifests be stored, deletes are refused: the set of pushes in
//! flight can only shrink, so `on` converges however busy the pushers are.
//! Does not own: the admin endpoint's transport (net/admin.rs), the admission decision
//! (authz/policy.rs asks it which pushes are in flight) or reading requests (http/service.rs
//! turns answered writes into [`PushStep`]s).

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use tokio::sync::Notify;

use crate::authz::PushesInFlight;

/// After its last upload request, a repository waits this long for its manifest.
const MANIFEST_GRACE: Duration = Duration::from_secs(30);
/// One open upload session.
struct Session {
    /// Requests on it being answered now (a long PATCH holds the session while it streams).
    active: usize,
    last: Instant,
}

impl Session {
    /// True while a request on it is being answered or one came within `idle`
    /// (`[maintenance] upload_idle`); after that the client is taken to have gone away.
    fn holds(&self, now: Instant, idle: Duration) -> bool {
        self.active > 0 || now.saturating_duration_since(self.last) < idle
    }
}

/// A push to one repository.
#[derive(Default)]
struct Push {
    sessions: HashMap<String, Session>,
    /// When its last blob was stored: its manifest may come within the grace period.
    blob_stored: Option<Instant>,
}

impl Push {
    /// Drops sessions that no longer hold; true while the push is in flight: a session
    /// holds, or the manifest may still come after the last blob stored.
    fn live(&mut self, now: Instant, idle: Duration) -> bool {
        self.sessions.retain(|_, s| s.holds(now, idle));
        !self.sessions.is_empty()
            || self
                .blob_stored
                .is_some_and(|t| now.saturating_duration_since(t) < MANIFEST_GRACE)
    }

    /// When this push last moved: its newest session request or stored blob.
    fn last(&self) -> Option<Instant> {
        self.sessions
            .values()
            .map(|s| s.last)
            .chain(self.blob_stored)
            .max()
    }
}

/// What a push in flight is waiting for, for `status` and the CLI.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Waiting {
    pub repository: String,
    pub open_sessions: usize,
    pub requests_in_flight: usize,
    pub seconds_idle: u64,
}

pub struct Maintenance {
    read_only: AtomicBool,
    pushes: Mutex<HashMap<String, Push>>,
    changed: Notify,
    /// `[maintenance] upload_idle`.
    upload_idle: Duration,
}

/// Keeps one request on an upload session counted as in flight; dropped when it is answered.
pub struct SessionRequest<'a> {
    maintenance: &'a Maintenance,
    repo: String,
    session: String,
}

impl Drop for SessionRequest<'_> {
    fn drop(&mut self) {
        let now = Instant::now();
        let mut pushes = self.maintenance.lock();
        if let Some(s) = pushes
            .get_mut(&self.repo)
            .and_then(|p| p.sessions.get_mut(&self.session))
        {
            s.active = s.active.saturating_sub(1);
            s.last = now;
        }
        drop(pushes);
        self.maintenance.changed.notify_waiters();
    }
}

/// One answered request of a push, as the pipeline saw it (http/service.rs reads it from the
/// route, the method and the registry's answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushStep<'a> {
    /// An upload session was opened (`POST .../blobs/uploads/` answered 202).
    UploadStarted { repo: &'a str, session: &'a str },
    /// A blob was stored: a session's final `PUT ?digest=` (which ends the session), or a
    /// mount (no session). Its manifest may follow within the grace period.
    BlobStored {
        repo: &'a str,
        session: Option<&'a str>,
    },
    /// A session ended without storing a blob (cancelled, or unknown to the registry).
    UploadEnded { repo: &'a str, session: &'a str },
    /// A manifest was stored.
    ManifestStored { repo: &'a str },
}

/// The message of refused writes.
pub const READ_ONLY_MESSAGE: &str = "the registry is read-only for maintenance";

impl PushesInFlight for Maintenance {
    fn push_in_flight(&self, repo: &str) -> bool {
        let now = Instant::now();
        self.lock()
            .get_mut(repo)
            .is_some_and(|p| p.live(now, self.upload_idle))
    }

    fn session_open(&self, repo: &str, session: &str) -> bool {
        let now = Instant::now();
        self.lock()
            .get(repo)
            .and_then(|p| p.sessions.get(session))
            .is_some_and(|s| s.holds(now, self.upload_idle))
    }
}

impl Maintenance {
    pub fn new(read_only: bool, upload_idle: Duration) -> Self {
        Maintenance {
            read_only: AtomicBool::new(read_only),
            pushes: Mutex::default(),
            changed: Notify::new(),
            upload_idle,
        }
    }

    pub fn is_read_only(&self) -> bool {
        self.read_only.load(Ordering::SeqCst)
    }

    pub fn set_read_only(&self, on: bool) {
        self.read_only.store(on, Ordering::SeqCst);
        tracing::warn!(read_only = on, "maintenance switch");
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Push>> {
        self.pushes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a request on an upload session as in flight until the guard is dropped.
    pub fn session_request(&self, repo: &str, session: &str) -> SessionRequest<'_> {
        let now = Instant::now();
        let mut pushes = self.lock();
        let push = pushes.entry(repo.to_owned()).or_default();
        let s = push.sessions.entry(session.to_owned()).or_insert(Session {
            active: 0,
            last: now,
        });
        s.active += 1;
        s.last = now;
        SessionRequest {
            maintenance: self,
            repo: repo.to_owned(),
            session: session.to_owned(),
        }
    }

    /// Follows a push, one answered request at a time.
    pub fn observe(&self, step: PushStep<'_>) {
        let now = Instant::now();
        let mut pushes = self.lock();
        match step {
            PushStep::UploadStarted { repo, session } => {
                let p = pushes.entry(repo.to_owned()).or_default();
                p.sessions.insert(
                    session.to_owned(),
                    Session {
                        active: 0,
                        last: now,
                    },
                );
            }
            PushStep::BlobStored { repo, session } => {
                let p = pushes.entry(repo.to_owned()).or_default();
                if let Some(id) = session {
                    p.sessions.remove(id);
                }
                p.blob_stored = Some(now);
            }
            PushStep::UploadEnded { repo, session } => {
                if let Some(p) = pushes.get_mut(repo) {
                    p.sessions.remove(session);
                }
            }
            PushStep::ManifestStored { repo } => {
                let done = pushes.get(repo).is_some_and(|p| p.sessions.is_empty());
                if done {
                    pushes.remove(repo);
                }
            }
        }
        pushes.retain(|_, p| p.live(now, self.upload_idle));
        drop(pushes);
        self.changed.notify_waiters();
    }

    /// The pushes in flight, by repository.
    pub fn waiting(&self) -> Vec<Waiting> {
        let now = Instant::now();
        let mut pushes = self.lock();
        pushes.retain(|_, p| p.live(now, self.upload_idle));
        let mut list: Vec<Waiting> = pushes
            .iter()
            .map(|(repo, p)| Waiting {
                repository: repo.clone(),
                open_sessions: p.sessions.len(),
                requests_in_flight: p.sessions.values().map(|s| s.active).sum(),
                seconds_idle: p
                    .last()
                    .map_or(0, |l| now.saturating_duration_since(l).as_secs()),
            })
            .collect();
        list.sort_by(|a, b| a.repository.cmp(&b.repository));
        list
    }

    /// Repositories with a push in flight.
    pub fn in_flight(&self) -> usize {
        let now = Instant::now();
        let mut pushes = self.lock();
        pushes.retain(|_, p| p.live(now, self.upload_idle));
        pushes.len()
    }

    /// Waits until no push is in flight or `timeout` passed; returns how many are left.
    pub async fn drain(&self, timeout: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.changed.notified();
            let left = self.in_flight();
            if left == 0 {
                return 0;
            }
            // Grace periods end without an event, so look again at least once a second.
            let wake = (tokio::time::Instant::now() + Duration::from_secs(1)).min(deadline);
            if tokio::time::timeout_at(wake, notified).await.is_err()
                && tokio::time::Instant::now() >= deadline
            {
                return self.in_flight();
            }
        }
    }
}

/// The status as the admin endpoint answers it.
fn status_json(m: &Maintenance) -> String {
    let waiting = m.waiting();
    serde_json::json!({
        "read_only": m.is_read_only(),
        "pushes_in_flight": waiting.len(),
        "waiting_for": waiting,
    })
    .to_string()
}

/// `GET` (status) and `POST ?state=on|off[&timeout=SECS]` of `/admin/read-only`: the status
/// and a JSON body (`read_only`, `pushes_in_flight`, and `waiting_for`: repository, open
/// sessions, requests in flight, seconds idle). Turning it on answers once pushes in flight are
/// done, or after the timeout (default 300 s; `0` answers at once).
pub async fn admin_endpoint(
    m: &Maintenance,
    method: &Method,
    query: Option<&str>,
) -> (StatusCode, String) {
    let query = crate::query::Query::of(query);
    match (method, query.get("state")) {
        (&Method::GET, _) => (StatusCode::OK, status_json(m)),
        (&Method::POST, Some("on")) => {
            let timeout = query
                .get("timeout")
                .and_then(|t| t.parse().ok())
                .map_or(Duration::from_secs(300), Duration::from_secs);
            m.set_read_only(true);
            m.drain(timeout).await;
            (StatusCode::OK, status_json(m))
        }
        (&Method::POST, Some("off")) => {
            m.set_read_only(false);
            (StatusCode::OK, status_json(m))
        }
        _ => (
            StatusCode::BAD_REQUEST,
            r#"{"error":"use GET, or POST with ?state=on or ?state=off"}"#.to_owned(),
        ),
    }
}

/// One request to the admin listener's `/admin/read-only`, as the CLI sends it (with the CLI
/// header and, when `admin_token` is set, the token); its JSON answer.
fn admin_request(
    addr: &str,
    request: &str,
    token: Option<&str>,
) -> Result<serde_json::Value, String> {
    use std::io::{Read, Write};
    let authorization = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let run = || -> std::io::Result<String> {
        let mut stream = std::net::TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        write!(
            stream,
            "{request}\r\nHost: {addr}\r\n{}: {}\r\n{authorization}Content-Length: 0\r\nConnection: close\r\n\r\n",
            crate::net::admin::CLI_HEADER,
            crate::net::admin::CLI_HEADER_VALUE,
        )?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer)?;
        Ok(answer)
    };
    let answer = run().map_err(|e| format!("admin listener {addr}: {e}"))?;
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or("");
    if answer.starts_with("HTTP/1.1 403") {
        return Err(format!("admin listener {addr} refused: {body}"));
    }
    serde_json::from_str(body).map_err(|_| format!("unexpected answer from {addr}: {answer}"))
}

/// `repo (N open session(s), N request(s) in flight, idle N s)` lines of a status answer.
fn describe_waiting(doc: &serde_json::Value) -> Vec<String> {
    doc["waiting_for"]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|w| {
                    format!(
                        "{} ({} open session(s), {} request(s) in flight, idle {} s)",
                        w["repository"].as_str().unwrap_or("?"),
                        w["open_sessions"],
                        w["requests_in_flight"],
                        w["seconds_idle"]
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// How often `read-only on` reports what it waits for.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

/// The admin listeners `read-only` addresses: every `--admin` given (each `host:port`; a name
/// that resolves to several addresses, such as a Kubernetes headless Service, stands for all
/// of them), else the config's `admin_listen`. A name that does not resolve is returned in the
/// second list, to be reported as a replica not reached.
fn replicas(admin: &[String]) -> (Vec<String>, Vec<(String, String)>) {
    use std::net::ToSocketAddrs as _;
    let mut found: Vec<String> = Vec::new();
    let mut failed = Vec::new();
    for name in admin {
        match name.to_socket_addrs() {
            Ok(addrs) => {
                let mut any = false;
                for a in addrs {
                    any = true;
                    let a = a.to_string();
                    if !found.contains(&a) {
                        found.push(a);
                    }
                }
                if !any {
                    failed.push((name.clone(), "resolves to no address".to_owned()));
                }
            }
            Err(e) => failed.push((name.clone(), e.to_string())),
        }
    }
    (found, failed)
}

/// `registry-gate read-only on|off|status`: talks to the admin listener of every replica
/// (`--admin`, repeatable; a name resolving to several addresses means each of them). `on`
/// switches every replica at once, then reports what they wait for every few seconds until
/// none has a push in flight (exit 0), or `timeout_secs` passed (exit 1: not safe to
/// garbage-collect). A replica that cannot be reached is named, and the exit is 1: garbage
/// collection is safe only when every replica is read-only and drained.
pub fn cli(
    state: &str,
    config: Option<&std::path::Path>,
    admin: &[String],
    timeout_secs: u64,
) -> std::process::ExitCode {
    use std::process::ExitCode;
    // The config names the admin address and the admin_token file; with --admin and no
    // usable config, no token is sent.
    let loaded = crate::config::Config::load(config, std::env::vars());
    let names: Vec<String> = match (admin, &loaded) {
        ([_, ..], _) => admin.to_vec(),
        ([], Ok(c)) => match c.admin_listen {
            Some(a) => vec![a.to_string()],
            None => {
                eprintln!("error: admin_listen is off in the config; pass --admin ADDR");
                return ExitCode::from(64);
            }
        },
        ([], Err(e)) => {
            eprintln!("error: {e}");
            return ExitCode::from(64);
        }
    };
    let token = match loaded.as_ref().ok().and_then(|c| c.admin_token.as_deref()) {
        Some(path) => match crate::read_admin_token(path) {
            Ok(t) => Some(t),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(64);
            }
        },
        None => None,
    };
    let (addrs, mut unreached) = replicas(&names);
    let status = "GET /admin/read-only HTTP/1.1";
    let first = match state {
        "status" => status.to_owned(),
        "on" => "POST /admin/read-only?state=on&timeout=0 HTTP/1.1".to_owned(),
        s => format!("POST /admin/read-only?state={s} HTTP/1.1"),
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(timeout_secs);
    // Every replica is switched first (in parallel, so none waits behind a slow one); then
    // only their status is asked.
    let ask =
        |addrs: &[String], request: &str| -> Vec<(String, Result<serde_json::Value, String>)> {
            std::thread::scope(|s| {
                let asks: Vec<_> = addrs
                    .iter()
                    .map(|a| {
                        let token = token.as_deref();
                        s.spawn(move || (a.clone(), admin_request(a, request, token)))
                    })
                    .collect();
                asks.into_iter()
                    .map(|h| h.join().expect("admin request thread"))
                    .collect()
            })
        };
    let mut docs: Vec<(String, serde_json::Value)> = Vec::new();
    for (addr, answer) in ask(&addrs, &first) {
        match answer {
            Ok(d) => docs.push((addr, d)),
            Err(e) => {
                eprintln!("error: {e}");
                unreached.push((addr, e));
            }
        }
    }
    let in_flight = |d: &serde_json::Value| d["pushes_in_flight"].as_u64().unwrap_or(0);
    while state == "on" && docs.iter().any(|(_, d)| in_flight(d) > 0) {
        if std::time::Instant::now() >= deadline {
            break;
        }
        for (addr, d) in &docs {
            if in_flight(d) > 0 {
                println!("{addr}: waiting for: {}", describe_waiting(d).join("; "));
            }
        }
        std::thread::sleep(PROGRESS_EVERY.min(deadline - std::time::Instant::now()));
        let busy: Vec<String> = docs
            .iter()
            .filter(|(_, d)| in_flight(d) > 0)
            .map(|(a, _)| a.clone())
            .collect();
        for (addr, answer) in ask(&busy, status) {
            match answer {
                Ok(d) => {
                    if let Some(slot) = docs.iter_mut().find(|(a, _)| *a == addr) {
                        slot.1 = d;
                    }
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    docs.retain(|(a, _)| *a != addr);
                    unreached.push((addr, e));
                }
            }
        }
    }
    let mut left = 0;
    for (addr, d) in &docs {
        let on = d["read_only"].as_bool().unwrap_or(false);
        left += in_flight(d);
        println!(
            "{addr}: read-only: {}; pushes in flight: {}",
            if on { "on" } else { "off" },
            in_flight(d)
        );
        for line in describe_waiting(d) {
            println!("  {line}");
        }
    }
    let mut failed = false;
    if !unreached.is_empty() {
        let names: Vec<&str> = unreached.iter().map(|(a, _)| a.as_str()).collect();
        eprintln!(
            "{} replica(s) not reached: {}{}",
            names.len(),
            names.join(", "),
            if state == "on" {
                ": they may still take pushes; not safe to garbage-collect"
            } else {
                ""
            }
        );
        failed = true;
    }
    if state == "on" && left > 0 {
        eprintln!(
            "{left} push(es) still in flight after {timeout_secs} s: not safe to garbage-collect yet"
        );
        failed = true;
    }
    if failed {
        return ExitCode::FAILURE;
    }
    if state == "on" && docs.len() > 1 {
        println!(
            "all {} replicas are read-only with no push in flight",
            docs.len()
        );
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_address_of_every_admin_name_is_a_replica() {
        let names = [
            "127.0.0.1:9095".to_owned(),
            "localhost:9096".to_owned(),
            "127.0.0.1:9095".to_owned(),
            "no-such-replica.invalid:9095".to_owned(),
        ];
        let (found, failed) = replicas(&names);
        assert_eq!(found[0], "127.0.0.1:9095");
        assert!(found.contains(&"127.0.0.1:9096".to_owned()), "{found:?}");
        assert_eq!(found.iter().filter(|a| *a == "127.0.0.1:9095").count(), 1);
        assert_eq!(failed.len(), 1, "{failed:?}");
        assert_eq!(failed[0].0, "no-such-replica.invalid:9095");
    }

    fn upload_start(m: &Maintenance, repo: &str, id: &str) {
        m.observe(PushStep::UploadStarted { repo, session: id });
    }

    #[test]
    fn a_push_in_flight_may_finish_while_new_ones_are_refused() {
        let m = Maintenance::new(false, Duration::from_secs(60));
        upload_start(&m, "team/app", "u1");
        m.set_read_only(true);
        // Whether a write is admitted is the policy's (authz/policy.rs, tested there); this
        // follows what it asks: which repositories have a push in flight.
        assert!(m.push_in_flight("team/app"));
        assert!(!m.push_in_flight("team/other"));
        m.observe(PushStep::BlobStored {
            repo: "team/app",
            session: Some("u1"),
        });
        // The manifest may still come.
        assert_eq!(m.in_flight(), 1);
        assert!(m.push_in_flight("team/app"));
        m.observe(PushStep::ManifestStored { repo: "team/app" });
        assert_eq!(m.in_flight(), 0);
        assert!(!m.push_in_flight("team/app"));
    }

    #[test]
    fn quiet_sessions_stop_holding_and_active_ones_hold() {
        let idle = Duration::from_secs(60);
        let t0 = Instant::now();
        let mut push = Push::default();
        push.sessions.insert(
            "quiet".into(),
            Session {
                active: 0,
                last: t0,
            },
        );
        push.sessions.insert(
            "streaming".into(),
            Session {
                active: 1,
                last: t0,
            },
        );
        assert!(push.live(t0 + Duration::from_secs(59), idle));
        assert_eq!(push.sessions.len(), 2);
        // A minute later the quiet session is gone; the one with a request in flight holds.
        assert!(push.live(t0 + Duration::from_secs(61), idle));
        assert_eq!(push.sessions.keys().collect::<Vec<_>>(), ["streaming"]);
        push.sessions.clear();
        // No session and no blob stored: not in flight, however recent the sessions were.
        assert!(!push.live(t0, idle));
        // A stored blob waits for its manifest through the grace period, then not.
        push.blob_stored = Some(t0);
        assert!(push.live(t0 + Duration::from_secs(29), idle));
        assert!(!push.live(t0 + Duration::from_secs(31), idle));
    }

    #[test]
    fn session_requests_are_counted_until_answered() {
        let m = Maintenance::new(true, Duration::from_secs(60));
        upload_start(&m, "a", "u1");
        {
            let _r = m.session_request("a", "u1");
            assert_eq!(m.waiting()[0].requests_in_flight, 1);
            assert!(m.session_open("a", "u1"));
        }
        let w = m.waiting();
        assert_eq!(
            (
                w[0].repository.as_str(),
                w[0].open_sessions,
                w[0].requests_in_flight
            ),
            ("a", 1, 0)
        );
        assert!(!m.session_open("a", "u2"));
    }

    #[tokio::test]
    async fn drain_returns_when_the_last_push_ends() {
        let m = std::sync::Arc::new(Maintenance::new(true, Duration::from_secs(60)));
        upload_start(&m, "a", "u1");
        let waiter = tokio::spawn({
            let m = m.clone();
            async move { m.drain(Duration::from_secs(10)).await }
        });
        m.observe(PushStep::UploadEnded {
            repo: "a",
            session: "u1",
        });
        m.observe(PushStep::ManifestStored { repo: "a" });
        assert_eq!(waiter.await.unwrap(), 0);
        assert_eq!(m.drain(Duration::from_millis(10)).await, 0);
        upload_start(&m, "b", "u2");
        assert_eq!(m.drain(Duration::from_millis(50)).await, 1);
    }
}
