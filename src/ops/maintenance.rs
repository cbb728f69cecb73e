//! The read-only switch for garbage collection, without stopping the registry.
//!
//! Owns: the switch, and knowing which pushes are in flight so that turning it on neither cuts
//! a push in half nor lets garbage collection run while one is unfinished (GC during a push
//! loses data). A push is in flight for a repository from its first upload request until its
//! manifest is stored, with a grace period after the last blob for the manifest to arrive;
//! abandoned pushes expire. While read-only, pushes already in flight may finish; new pushes
//! and deletes get 405 `UNSUPPORTED`, as the registry's own read-only mode answers.
//! Does not own: the admin endpoint's transport (net/admin.rs) or the decision to push (authz/rules.rs).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use http::{HeaderMap, Method, StatusCode};
use tokio::sync::Notify;

use crate::authz::Action;
use crate::error::GateError;
use crate::http::route::Route;

/// After its last upload request, a repository waits this long for its manifest.
const MANIFEST_GRACE: Duration = Duration::from_secs(30);
/// An upload session with no request for this long is abandoned.
const ABANDONED: Duration = Duration::from_secs(600);

#[derive(Default)]
struct Push {
    sessions: HashSet<String>,
    last: Option<Instant>,
}

impl Push {
    fn live(&self, now: Instant) -> bool {
        let Some(last) = self.last else {
            return false;
        };
        let quiet = now.saturating_duration_since(last);
        if self.sessions.is_empty() {
            quiet < MANIFEST_GRACE
        } else {
            quiet < ABANDONED
        }
    }
}

#[derive(Default)]
pub struct Maintenance {
    read_only: AtomicBool,
    pushes: Mutex<HashMap<String, Push>>,
    changed: Notify,
}

/// The message of refused writes.
pub const READ_ONLY_MESSAGE: &str = "the registry is read-only for maintenance";

impl Maintenance {
    pub fn new(read_only: bool) -> Self {
        let m = Maintenance::default();
        m.read_only.store(read_only, Ordering::SeqCst);
        m
    }

    pub fn is_read_only(&self) -> bool {
        self.read_only.load(Ordering::SeqCst)
    }

    pub fn set_read_only(&self, on: bool) {
        self.read_only.store(on, Ordering::SeqCst);
        tracing::warn!(read_only = on, "maintenance switch");
    }

    /// Refuses a write while read-only, unless it continues a push already in flight.
    /// Deletes are always refused while read-only.
    pub fn admit_write(&self, repo: &str, action: Action) -> Result<(), GateError> {
        if !self.is_read_only() {
            return Ok(());
        }
        if action == Action::Delete {
            return Err(GateError::Unsupported(READ_ONLY_MESSAGE.into()));
        }
        let now = Instant::now();
        let pushes = self.pushes.lock().unwrap_or_else(|e| e.into_inner());
        if pushes.get(repo).is_some_and(|p| p.live(now)) {
            return Ok(());
        }
        Err(GateError::Unsupported(READ_ONLY_MESSAGE.into()))
    }

    /// Follows a push from the answers to its requests.
    pub fn observe(&self, route: &Route, method: &Method, status: StatusCode, headers: &HeaderMap) {
        let now = Instant::now();
        let mut pushes = self.pushes.lock().unwrap_or_else(|e| e.into_inner());
        match route {
            Route::UploadStart { name } if status.is_success() => {
                let p = pushes.entry(name.clone()).or_default();
                p.last = Some(now);
                if let Some(id) = headers
                    .get("docker-upload-uuid")
                    .and_then(|v| v.to_str().ok())
                    && status == StatusCode::ACCEPTED
                {
                    p.sessions.insert(id.to_owned());
                }
            }
            Route::Upload { name, id } => {
                let p = pushes.entry(name.clone()).or_default();
                p.last = Some(now);
                let finished = (*method == Method::PUT && status.is_success())
                    || *method == Method::DELETE
                    || status == StatusCode::NOT_FOUND;
                if finished {
                    p.sessions.remove(id);
                }
            }
            Route::Manifest { name, .. } if *method == Method::PUT && status.is_success() => {
                let done = pushes.get(name).is_some_and(|p| p.sessions.is_empty());
                if done {
                    pushes.remove(name);
                }
            }
            _ => return,
        }
        pushes.retain(|_, p| p.live(now));
        drop(pushes);
        self.changed.notify_waiters();
    }

    /// Repositories with a push in flight.
    pub fn in_flight(&self) -> usize {
        let now = Instant::now();
        let mut pushes = self.pushes.lock().unwrap_or_else(|e| e.into_inner());
        pushes.retain(|_, p| p.live(now));
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

/// `GET` (status) and `POST ?state=on|off[&timeout=SECS]` of `/admin/read-only`: the status
/// and a JSON body. Turning it on answers once pushes in flight are done, or after the timeout
/// (default 300 s).
pub async fn admin_endpoint(
    m: &Maintenance,
    method: &Method,
    query: Option<&str>,
) -> (StatusCode, String) {
    let answer = |left: usize| {
        serde_json::json!({ "read_only": m.is_read_only(), "pushes_in_flight": left }).to_string()
    };
    match (method, crate::http::query::param(query, "state").as_deref()) {
        (&Method::GET, _) => (StatusCode::OK, answer(m.in_flight())),
        (&Method::POST, Some("on")) => {
            let timeout = crate::http::query::param(query, "timeout")
                .and_then(|t| t.parse().ok())
                .map_or(Duration::from_secs(300), Duration::from_secs);
            m.set_read_only(true);
            let left = m.drain(timeout).await;
            (StatusCode::OK, answer(left))
        }
        (&Method::POST, Some("off")) => {
            m.set_read_only(false);
            (StatusCode::OK, answer(m.in_flight()))
        }
        _ => (
            StatusCode::BAD_REQUEST,
            r#"{"error":"use GET, or POST with ?state=on or ?state=off"}"#.to_owned(),
        ),
    }
}

/// `registry-gate read-only on|off|status`: talks to the admin listener.
pub fn cli(
    state: &str,
    config: Option<&std::path::Path>,
    admin: Option<&str>,
    timeout_secs: u64,
) -> std::process::ExitCode {
    use std::io::{Read, Write};
    use std::process::ExitCode;
    // The config names the admin address and the admin_token file; with --admin and no
    // usable config, no token is sent.
    let loaded = crate::config::Config::load(config, std::env::vars());
    let addr = match (admin, &loaded) {
        (Some(a), _) => a.to_owned(),
        (None, Ok(c)) => match c.admin_listen {
            Some(a) => a.to_string(),
            None => {
                eprintln!("error: admin_listen is off in the config; pass --admin ADDR");
                return ExitCode::from(64);
            }
        },
        (None, Err(e)) => {
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
    let authorization = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let request = match state {
        "status" => "GET /admin/read-only HTTP/1.1".to_owned(),
        s => format!("POST /admin/read-only?state={s}&timeout={timeout_secs} HTTP/1.1"),
    };
    let run = || -> std::io::Result<String> {
        let mut stream = std::net::TcpStream::connect(&addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(timeout_secs + 30)))?;
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
    let answer = match run() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: admin listener {addr}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or("");
    if answer.starts_with("HTTP/1.1 403") {
        eprintln!("error: admin listener {addr} refused: {body}");
        return ExitCode::FAILURE;
    }
    let Ok(doc) = serde_json::from_str::<serde_json::Value>(body) else {
        eprintln!("error: unexpected answer from {addr}: {answer}");
        return ExitCode::FAILURE;
    };
    let on = doc["read_only"].as_bool().unwrap_or(false);
    let left = doc["pushes_in_flight"].as_u64().unwrap_or(0);
    println!(
        "read-only: {}; pushes in flight: {left}",
        if on { "on" } else { "off" }
    );
    if state == "on" && left > 0 {
        eprintln!(
            "{left} push(es) still in flight after {timeout_secs} s: not safe to garbage-collect yet"
        );
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upload_start(m: &Maintenance, repo: &str, id: &str) {
        let mut h = HeaderMap::new();
        h.insert("docker-upload-uuid", id.parse().unwrap());
        m.observe(
            &Route::UploadStart { name: repo.into() },
            &Method::POST,
            StatusCode::ACCEPTED,
            &h,
        );
    }

    #[test]
    fn a_push_in_flight_may_finish_while_new_ones_are_refused() {
        let m = Maintenance::new(false);
        upload_start(&m, "team/app", "u1");
        m.set_read_only(true);
        assert!(m.admit_write("team/app", Action::Push).is_ok());
        assert!(m.admit_write("team/app", Action::Delete).is_err());
        assert!(m.admit_write("team/other", Action::Push).is_err());
        m.observe(
            &Route::Upload {
                name: "team/app".into(),
                id: "u1".into(),
            },
            &Method::PUT,
            StatusCode::CREATED,
            &HeaderMap::new(),
        );
        // The manifest may still come.
        assert_eq!(m.in_flight(), 1);
        assert!(m.admit_write("team/app", Action::Push).is_ok());
        m.observe(
            &Route::Manifest {
                name: "team/app".into(),
                reference: "v1".into(),
            },
            &Method::PUT,
            StatusCode::CREATED,
            &HeaderMap::new(),
        );
        assert_eq!(m.in_flight(), 0);
        assert!(m.admit_write("team/app", Action::Push).is_err());
        m.set_read_only(false);
        assert!(m.admit_write("team/other", Action::Push).is_ok());
    }

    #[tokio::test]
    async fn drain_returns_when_the_last_push_ends() {
        let m = std::sync::Arc::new(Maintenance::new(true));
        upload_start(&m, "a", "u1");
        let waiter = tokio::spawn({
            let m = m.clone();
            async move { m.drain(Duration::from_secs(10)).await }
        });
        m.observe(
            &Route::Upload {
                name: "a".into(),
                id: "u1".into(),
            },
            &Method::DELETE,
            StatusCode::NO_CONTENT,
            &HeaderMap::new(),
        );
        m.observe(
            &Route::Manifest {
                name: "a".into(),
                reference: "v1".into(),
            },
            &Method::PUT,
            StatusCode::CREATED,
            &HeaderMap::new(),
        );
        assert_eq!(waiter.await.unwrap(), 0);
        assert_eq!(m.drain(Duration::from_millis(10)).await, 0);
        upload_start(&m, "b", "u2");
        assert_eq!(m.drain(Duration::from_millis(50)).await, 1);
    }
}
