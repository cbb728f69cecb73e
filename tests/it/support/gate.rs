//! The gate started in-process with a test PKI, users and extra config, and waiting on its
//! certificate reloads.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use registry_gate::config::Config;

use super::{
    ALICE, BOB, Pki, Registry, SERVICE, TEAM_RULES, TEAM_USERS, eventually, tls_connect,
    write_htpasswd,
};

/// The registry-gate binary cargo built for these tests.
pub const GATE_BIN: &str = env!("CARGO_BIN_EXE_registry-gate");

/// A gate running in-process with a test PKI and htpasswd file.
pub struct Gate {
    pub running: Option<registry_gate::Running>,
    pub addr: SocketAddr,
    pub pki: Pki,
    pub dir: tempfile::TempDir,
    pub htpasswd: PathBuf,
    pub config_path: PathBuf,
}

impl Gate {
    /// Starts a gate in front of `upstream` with users alice and bob and `extra` TOML appended.
    /// The admin listener is off unless `extra` sets `admin_listen` (e.g. "127.0.0.1:0").
    pub async fn start(upstream: &str, extra: &str) -> Gate {
        Gate::start_with_users(upstream, extra, &[ALICE, BOB]).await
    }

    /// Starts a gate with the given bcrypt users.
    pub async fn start_with_users(upstream: &str, extra: &str, users: &[(&str, &str)]) -> Gate {
        let pki = Pki::new();
        let dir = tempfile::tempdir().unwrap();
        let htpasswd = dir.path().join("htpasswd");
        write_htpasswd(&htpasswd, users);
        let config_path = dir.path().join("gate.toml");
        let (top, sections) = split_extra(extra);
        let mut auth_line = format!("htpasswd = \"{}\"\n", htpasswd.display());
        // Tests poll with credentials that are about to become valid; the brute-force brake
        // would turn those polls into 429s. Only the brake's own test turns it on.
        if !extra.contains("brake_failures") {
            auth_line.push_str("brake_failures = 0\n");
        }
        // Keys of an [auth] section in `extra` join the one that names the htpasswd file.
        let (auth, sections) = match sections.find("[auth]\n") {
            Some(i) => (
                String::new(),
                format!(
                    "{}[auth]\n{auth_line}{}",
                    &sections[..i],
                    &sections[i + 7..]
                ),
            ),
            None => (format!("[auth]\n{auth_line}"), sections),
        };
        let admin = if top.contains("admin_listen") {
            ""
        } else {
            "admin_listen = \"\"\n"
        };
        // A list of registries (`["http://..", ..]`) is written as it is.
        let upstream = if upstream.starts_with('[') {
            upstream.to_owned()
        } else {
            format!("\"{upstream}\"")
        };
        let text = format!(
            "listen = \"127.0.0.1:0\"\n{admin}upstream = {upstream}\n{top}\n[tls]\ncert = \"{}\"\nkey = \"{}\"\n{auth}{sections}\n",
            pki.cert.display(),
            pki.key.display(),
        );
        std::fs::write(&config_path, text).unwrap();
        let config = Config::load(Some(&config_path), std::iter::empty()).unwrap();
        let running = registry_gate::start(&config).await.unwrap();
        Gate {
            addr: running.tls_addr.unwrap(),
            running: Some(running),
            pki,
            dir,
            htpasswd,
            config_path,
        }
    }

    /// Starts a gate with `users` and the access rules `rules`, `extra` TOML before them.
    pub async fn with_rules(
        registry: &Registry,
        rules: &str,
        extra: &str,
        users: &[(&str, &str)],
    ) -> Gate {
        let dir = tempfile::tempdir().unwrap().keep();
        let path = dir.join("access.toml");
        std::fs::write(&path, rules).unwrap();
        Gate::start_with_users(
            &registry.url(),
            &format!("{extra}\n[auth]\naccess = \"{}\"\n", path.display()),
            users,
        )
        .await
    }

    /// The admin listener's `/metrics` text.
    pub async fn metrics_text(&self) -> String {
        self.pki
            .client(false)
            .get(format!("{}/metrics", self.admin_url()))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// `http://ADDR` of the admin listener (started with `admin_listen` in `extra`).
    pub fn admin_url(&self) -> String {
        let addr = self.running.as_ref().and_then(|r| r.admin_addr);
        format!("http://{}", addr.expect("admin listener is off"))
    }

    /// `https://localhost:PORT`
    pub fn url(&self) -> String {
        format!("https://localhost:{}", self.addr.port())
    }

    /// `localhost:PORT`, as docker and skopeo name the registry.
    pub fn host(&self) -> String {
        format!("localhost:{}", self.addr.port())
    }

    pub async fn shutdown(&mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
    }
}

/// Splits extra TOML into top-level keys (before the first `[`) and sections.
fn split_extra(extra: &str) -> (String, String) {
    match extra
        .find("\n[")
        .or_else(|| extra.starts_with('[').then_some(0))
    {
        Some(i) => (extra[..i].to_owned(), extra[i..].to_owned()),
        None => (extra.to_owned(), String::new()),
    }
}

/// The leaf certificate a new TLS connection to the gate is served (DER).
pub async fn served_leaf(gate: &Gate) -> Vec<u8> {
    let tls = tls_connect(gate).await;
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

/// The first certificate of a PEM file (DER).
pub fn leaf_in_file(path: &Path) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_file_iter(path)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .to_vec()
}

/// Rotates the gate's certificate and waits until new connections get it: a barrier showing
/// the reloader has looked at every watched file since the earlier writes.
pub async fn reload_barrier(gate: &mut Gate, cn: &str) {
    let (cert, key) = (gate.pki.cert.clone(), gate.pki.key.clone());
    gate.pki.issue_to(&cert, &key, cn);
    let want = leaf_in_file(&cert);
    let g = &*gate;
    eventually(Duration::from_secs(2), "new certificate served", || {
        let want = want.clone();
        async move { served_leaf(g).await == want }
    })
    .await;
}

/// A gate in token mode with the team rules and users: its token key and rules file live in
/// `dir`, which a second gate can share.
pub struct TokenGate {
    pub gate: Gate,
    pub dir: tempfile::TempDir,
}

impl TokenGate {
    /// Writes a token key and the team rules, then starts the gate in front of `registry`.
    pub async fn start(registry: &Registry) -> TokenGate {
        let dir = tempfile::tempdir().unwrap();
        registry_gate::token::write_key(&dir.path().join("token.key"), false).unwrap();
        std::fs::write(dir.path().join("access.toml"), TEAM_RULES).unwrap();
        let gate = TokenGate::start_gate(registry, dir.path()).await;
        TokenGate { gate, dir }
    }

    /// Another gate using the token key and rules in `dir`.
    pub async fn start_gate(registry: &Registry, dir: &Path) -> Gate {
        Gate::start_with_users(&registry.url(), &token_config(dir), TEAM_USERS).await
    }

    /// The token signing key.
    pub fn key(&self) -> PathBuf {
        self.dir.path().join("token.key")
    }

    /// The access rules file.
    pub fn rules(&self) -> PathBuf {
        self.dir.path().join("access.toml")
    }
}

/// The `[auth]` section of token mode with the key and rules in `dir`.
fn token_config(dir: &Path) -> String {
    format!(
        "[auth]\nmode = \"token\"\nservice = \"{SERVICE}\"\ntoken_key = \"{}\"\naccess = \"{}\"\n",
        dir.join("token.key").display(),
        dir.join("access.toml").display()
    )
}
