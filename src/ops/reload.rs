//! Hot reload: noticing that the htpasswd file, the access rules, the access keys or the
//! certificate changed, and on SIGHUP.
//!
//! Owns: watching the folders of the files (editors, `mv`, certbot and Kubernetes Secrets
//! replace a file rather than write it, which ends a watch on the file itself), comparing a
//! fingerprint so only what changed is reloaded, and logging and counting each outcome (with the
//! certificate's subject and expiry, at start too: [`certificate_in_force`]). A failed reload keeps
//! the last good state (the stores guarantee it). Fingerprints, reading, parsing and the hashing
//! a users file needs run on the blocking pool (`spawn_blocking`), never on a runtime worker.
//! Does not own: loading (net/tls.rs, auth/users.rs).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use notify::{RecursiveMode, Watcher as _};
use tokio::sync::{mpsc, watch};

use crate::auth::Authenticator;
use crate::authz::AccessControl;
use crate::net::tls::CertStore;
use crate::ops::metrics::{Metrics, ReloadKind};

/// Logs the subject and expiry of the certificate `store` serves now (`event` says why:
/// "loaded certificate", "reloaded certificate"), and sets the expiry metric.
pub fn certificate_in_force(store: &CertStore, metrics: &Metrics, event: &str) {
    let info = match store.leaf_info() {
        Ok(info) => info,
        Err(e) => {
            metrics.set_certificate_expiry(None);
            tracing::warn!(cert = %store.describe(), "{event}; {e}");
            return;
        }
    };
    metrics.set_certificate_expiry(Some(info.not_after));
    let days_left = info.days_left(crate::time::unix_now());
    let (cert, subject, not_after) = (store.describe(), &info.subject, info.not_after_utc());
    if days_left < 0 {
        tracing::error!(%cert, %subject, %not_after, "{event}, which has EXPIRED");
    } else if days_left < crate::net::tls::EXPIRY_WARNING_DAYS {
        tracing::warn!(%cert, %subject, %not_after, days_left, "{event}, which expires soon");
    } else {
        tracing::info!(%cert, %subject, %not_after, days_left, "{event}");
    }
}

/// What identifies a version of a file: modification time, size and inode (through symlinks).
type Fingerprint = Option<(SystemTime, u64, u64)>;

fn fingerprint(path: &Path) -> Fingerprint {
    use std::os::unix::fs::MetadataExt as _;
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len(), m.ino()))
}

/// Something that can be reloaded from files.
enum Target {
    Users,
    Access,
    Keys,
    Certs,
}

struct Watched {
    target: Target,
    files: Vec<PathBuf>,
    seen: Vec<Fingerprint>,
}

/// What reloads: the users, the access rules and the certificate, and where outcomes are counted.
#[derive(Clone)]
pub struct Reloadable {
    pub auth: Arc<Authenticator>,
    pub access: Arc<AccessControl>,
    pub certs: Option<Arc<CertStore>>,
    pub metrics: Arc<Metrics>,
}

/// Runs until `stop` turns true.
pub async fn run(gate: Reloadable, mut stop: watch::Receiver<bool>) {
    let certs = gate.certs.clone();
    let mut watched = vec![Watched::new(
        Target::Users,
        vec![gate.auth.users().path().to_owned()],
    )];
    if let Some(p) = gate.access.path() {
        watched.push(Watched::new(Target::Access, vec![p.to_owned()]));
    }
    if let Some(p) = gate.auth.keys().path() {
        // Unknown at first, so the pass below reads a keys file written between the gate's
        // load and this watch (a key added right after start must not wait for a later change).
        let mut keys = Watched::new(Target::Keys, vec![p.to_owned()]);
        keys.seen = vec![None];
        watched.push(keys);
    }
    // An ACME store is renewed by acme/, not read from files.
    if let Some(paths) = certs.as_ref().and_then(|c| c.paths()) {
        watched.push(Watched::new(
            Target::Certs,
            vec![paths.cert.clone(), paths.key.clone()],
        ));
    }

    let (tx, mut rx) = mpsc::channel::<()>(1);
    // One pass once the watch is in place: a change made before it would raise no event.
    let _ = tx.try_send(());
    let watcher = notify::recommended_watcher(move |_event| {
        let _ = tx.try_send(());
    });
    // Kept alive for as long as this function runs.
    let _watcher = match watcher {
        Ok(mut w) => {
            let mut dirs: Vec<PathBuf> = watched
                .iter()
                .flat_map(|w| w.files.iter())
                .map(|f| folder_of(f))
                .collect();
            dirs.sort();
            dirs.dedup();
            for dir in dirs {
                if let Err(e) = w.watch(&dir, RecursiveMode::NonRecursive) {
                    tracing::warn!("cannot watch {}: {e}; SIGHUP still reloads", dir.display());
                }
            }
            Some(w)
        }
        Err(e) => {
            tracing::warn!("file watching unavailable: {e}; SIGHUP still reloads");
            None
        }
    };
    let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!("cannot listen for SIGHUP: {e}");
            None
        }
    };

    loop {
        let forced = tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            Some(()) = rx.recv() => false,
            Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => None } } => true,
        };
        // Let a burst of events (write, chmod, rename) settle into one reload.
        tokio::time::sleep(Duration::from_millis(100)).await;
        while rx.try_recv().is_ok() {}
        for w in &mut watched {
            // File system calls, parsing and hashing run on the blocking pool, never here.
            let files = w.files.clone();
            let now: Vec<Fingerprint> =
                blocking(move || files.iter().map(|f| fingerprint(f)).collect())
                    .await
                    .unwrap_or_default();
            if !forced && now == w.seen {
                continue;
            }
            let ok = match w.target {
                Target::Users => match gate.auth.reload_users().await {
                    Ok(n) => {
                        tracing::info!(users = n, "reloaded users");
                        gate.auth.warn_prefixed_users();
                        true
                    }
                    Err(e) => {
                        tracing::error!("users not reloaded, keeping the previous ones: {e}");
                        false
                    }
                },
                Target::Access => match blocking({
                    let access = gate.access.clone();
                    move || access.reload()
                })
                .await
                .unwrap_or(Ok(()))
                {
                    Ok(()) => {
                        tracing::info!("reloaded access rules");
                        gate.access
                            .warn_unknown_users(&gate.auth.users().snapshot());
                        true
                    }
                    Err(e) => {
                        tracing::error!(
                            "access rules not reloaded, keeping the previous ones: {e}"
                        );
                        false
                    }
                },
                Target::Keys => match blocking({
                    let keys = gate.auth.keys().clone();
                    move || keys.reload()
                })
                .await
                .unwrap_or(Ok(0))
                {
                    Ok(n) => {
                        tracing::info!(keys = n, "reloaded access keys");
                        true
                    }
                    Err(e) => {
                        tracing::error!("access keys not reloaded, keeping the previous ones: {e}");
                        false
                    }
                },
                Target::Certs => match certs.clone().map(|c| async move {
                    let store = c.clone();
                    (c, blocking(move || store.reload()).await)
                }) {
                    None => true,
                    Some(reloading) => match reloading.await {
                        (store, Some(Ok(()))) => {
                            certificate_in_force(&store, &gate.metrics, "reloaded certificate");
                            true
                        }
                        (_, Some(Err(e))) => {
                            tracing::error!(
                                "certificate not reloaded, keeping the previous one: {e}"
                            );
                            false
                        }
                        (_, None) => false,
                    },
                },
            };
            let kind = match w.target {
                Target::Users => ReloadKind::Users,
                Target::Access => ReloadKind::Access,
                Target::Keys => ReloadKind::Keys,
                Target::Certs => ReloadKind::Certificate,
            };
            gate.metrics.reload(kind, ok);
            // A half-written pair (new cert, old key) fails now and is retried on the next event.
            if ok {
                w.seen = now;
            }
        }
    }
}

/// Runs `f` on the blocking pool; `None` if it panicked.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    tokio::task::spawn_blocking(f).await.ok()
}

impl Watched {
    fn new(target: Target, files: Vec<PathBuf>) -> Self {
        let seen = files.iter().map(|f| fingerprint(f)).collect();
        Watched {
            target,
            files,
            seen,
        }
    }
}

fn folder_of(file: &Path) -> PathBuf {
    match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    }
}
