//! registry-gate: a TLS-terminating, authenticating front door for a container registry.
//!
//! [`start`] assembles the parts from a [`config::Config`] and binds the listeners;
//! [`run`] adds signal handling around it. Each module owns one concern; see its header.

pub mod acme;
pub mod auth;
pub mod authz;
pub mod body;
pub mod cli;
pub mod config;
pub mod error;
pub mod http;
pub mod net;
pub mod ops;
pub mod query;
pub mod time;
pub mod token;
pub mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use config::Config;
use http::service::{Gate, GateSetupError};
use net::{admin, server, tls, workers};
use ops::reload;
use tls::{CertStore, TlsError};

/// Why the gate could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Setup(#[from] GateSetupError),
    #[error(transparent)]
    Acme(#[from] acme::AcmeError),
    #[error("{setting} {addr}: {}", bind_reason(source))]
    Bind {
        setting: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the connection threads: {0}")]
    Workers(#[source] std::io::Error),
    #[error("admin_token {path}: {source}")]
    AdminToken {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A gate that is serving.
pub struct Running {
    /// The TLS listener's bound address (useful with port 0).
    pub tls_addr: Option<SocketAddr>,
    pub plain_addr: Option<SocketAddr>,
    /// The admin listener's bound address; `None` when `admin_listen` is empty.
    pub admin_addr: Option<SocketAddr>,
    pub gate: Arc<Gate>,
    pub certs: Option<Arc<CertStore>>,
    stop: watch::Sender<bool>,
    server: JoinHandle<()>,
    admin: Option<JoinHandle<()>>,
}

impl Running {
    /// Stops accepting and waits until open requests finish (or the drain time is over).
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.server.await;
        if let Some(admin) = self.admin {
            let _ = admin.await;
        }
    }
}

/// `address in use` rather than the OS's `Address already in use (os error 98)`.
fn bind_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::AddrInUse => "address in use".into(),
        std::io::ErrorKind::AddrNotAvailable => "address not available on this host".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

/// Binds `addr` for the config key `setting`, whose name the error carries.
async fn bind(setting: &'static str, addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind {
            setting,
            addr,
            source,
        })
}

/// The secret in the `admin_token` file, trimmed; an empty file is an error.
pub fn read_admin_token(path: &std::path::Path) -> Result<String, StartError> {
    let err = |source| StartError::AdminToken {
        path: path.to_owned(),
        source,
    };
    let text = std::fs::read_to_string(path).map_err(err)?;
    let token = text.trim();
    if token.is_empty() {
        return Err(err(std::io::Error::other("the file is empty")));
    }
    Ok(token.to_owned())
}

/// Loads everything the config names, binds the listeners and starts serving.
pub async fn start(config: &Config) -> Result<Running, StartError> {
    let certs = match (&config.tls, &config.acme) {
        (Some(paths), _) => Some(Arc::new(CertStore::load(paths.clone())?)),
        (None, Some(acme)) => Some(Arc::new(CertStore::for_acme(acme.cache.clone()))),
        (None, None) => None,
    };
    let gate = Arc::new(Gate::new(config)?);
    let acme = match (&config.acme, &certs) {
        (Some(acme), Some(store)) => {
            // HTTP-01 when the operator gave it a port, else TLS-ALPN-01 on the TLS listener.
            let kind = if config.acme_http_listen.is_some() {
                acme::ChallengeKind::Http01
            } else {
                acme::ChallengeKind::TlsAlpn01
            };
            Some(acme::Acme::prepare(
                acme,
                store.clone(),
                kind,
                gate.metrics.clone(),
            )?)
        }
        _ => {
            if let Some(store) = &certs {
                reload::certificate_in_force(store, &gate.metrics, "loaded certificate");
            }
            None
        }
    };

    let tls = match (config.listen, &certs) {
        (Some(addr), Some(store)) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(tls::server_config(store.clone())?);
            Some((bind("listen", addr).await?, acceptor))
        }
        _ => None,
    };
    let plain = match config.plain_listen {
        Some(addr) => {
            tracing::warn!(
                %addr,
                "plain_listen serves HTTP without TLS: only use it behind a TLS-terminating load balancer"
            );
            Some(bind("plain_listen", addr).await?)
        }
        None => None,
    };
    let acme_http = match config.acme_http_listen {
        Some(addr) => Some(bind("acme_http_listen", addr).await?),
        None => None,
    };
    let tls_addr = tls.as_ref().and_then(|(l, _)| l.local_addr().ok());
    let plain_addr = plain.as_ref().and_then(|l| l.local_addr().ok());
    let admin = match config.admin_listen {
        Some(addr) => Some(bind("admin_listen", addr).await?),
        None => None,
    };
    let admin_addr = admin.as_ref().and_then(|l| l.local_addr().ok());
    let admin_token = match &config.admin_token {
        Some(path) => Some(read_admin_token(path)?),
        None => None,
    };

    let (stop, stop_rx) = watch::channel(false);
    tokio::spawn(reload::run(
        reload::Reloadable {
            auth: gate.auth.clone(),
            access: gate.access.clone(),
            certs: certs.clone(),
            metrics: gate.metrics.clone(),
        },
        stop_rx.clone(),
    ));
    let acme_http_addr = acme_http.as_ref().and_then(|l| l.local_addr().ok());
    if let Some(listener) = acme_http {
        let tokens = acme.as_ref().map(acme::Acme::tokens).unwrap_or_default();
        let redirect = match &config.public_url {
            Some(origin) => acme::http01::RedirectTo::Origin(origin.clone()),
            None => acme::http01::RedirectTo::SameHost {
                tls_port: tls_addr.map_or(443, |a| a.port()),
            },
        };
        tokio::spawn(acme::http01::serve(
            listener,
            tokens,
            redirect,
            stop_rx.clone(),
        ));
    }
    if let Some(acme) = acme {
        tokio::spawn(acme.run(stop_rx.clone()));
    }
    let workers = workers::Workers::start(workers::count()).map_err(StartError::Workers)?;
    let server = tokio::spawn(server::serve(
        server::Listeners { tls, plain },
        workers,
        gate.clone(),
        config.timeouts.clone(),
        config.limits,
        stop_rx.clone(),
    ));
    let admin = match (admin, admin_addr) {
        (Some(l), Some(local)) => {
            let guard = admin::WriteGuard::new(local, admin_token.as_deref());
            Some(tokio::spawn(admin::serve(l, gate.clone(), guard, stop_rx)))
        }
        _ => None,
    };
    if let Some(a) = tls_addr {
        tracing::info!(listen = %a, upstream = %config.upstream.members[0], "serving TLS");
    }
    if let Some(a) = plain_addr {
        tracing::info!(listen = %a, upstream = %config.upstream.members[0], "serving plain HTTP");
    }
    if let Some(a) = acme_http_addr {
        tracing::info!(acme_http_listen = %a, "serving ACME HTTP-01 challenges and redirects to https://");
    }
    if let Some(a) = admin_addr {
        tracing::info!(admin_listen = %a, "serving /metrics, /healthz, /readyz and /admin/read-only");
    }
    Ok(Running {
        tls_addr,
        plain_addr,
        admin_addr,
        gate,
        certs,
        stop,
        server,
        admin,
    })
}

/// Serves until SIGTERM or SIGINT, then drains and returns.
pub async fn run(config: Config) -> Result<(), StartError> {
    let running = start(&config).await?;
    wait_for_shutdown_signal().await;
    tracing::info!("shutting down");
    running.shutdown().await;
    Ok(())
}

async fn wait_for_shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).ok();
    let term = async {
        match term.as_mut() {
            Some(s) => {
                s.recv().await;
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = term => {},
        _ = tokio::signal::ctrl_c() => {},
    }
}
