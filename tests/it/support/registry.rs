//! The real registry: Debian's docker-registry on an ephemeral port, its log captured.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

pub const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

/// The real registry (Debian's docker-registry, distribution 2.8.2), killed on drop.
pub struct Registry {
    child: Child,
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    /// Every line the registry logged (requests included), to see what reached it.
    pub log: Arc<std::sync::Mutex<Vec<String>>>,
}

impl Registry {
    pub fn start() -> Registry {
        Registry::start_on("127.0.0.1:0".parse().unwrap())
    }

    /// Starts a registry on `addr` (port 0 picks one), e.g. to replace a stopped one.
    pub fn start_on(addr: SocketAddr) -> Registry {
        Registry::start_with(addr, None)
    }

    /// A registry of a fleet: its storage is `store`, shared with the others, and so is the
    /// `http.secret` every test registry uses, so any of them can continue another's upload.
    /// SIGTERM drains open requests for up to 10 s ([`Registry::stop_gracefully`]).
    pub fn start_shared(store: &Path, addr: SocketAddr) -> Registry {
        Registry::start_with(addr, Some(store))
    }

    fn start_with(addr: SocketAddr, store: Option<&Path>) -> Registry {
        assert!(
            Path::new(REGISTRY_BIN).exists(),
            "{REGISTRY_BIN} is missing: install Debian's docker-registry package (see .ci/run)"
        );
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.yml");
        let root = store.map_or_else(|| dir.path().join("data"), Path::to_owned);
        let drain = if store.is_some() {
            "  draintimeout: 10s\n"
        } else {
            ""
        };
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: info\n  formatter: text\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n  secret: test-secret\n{drain}",
                root.display()
            ),
        )
        .unwrap();
        let log = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (child, addr) = spawn(&config, log.clone());
        Registry {
            child,
            addr,
            dir,
            log,
        }
    }

    /// Starts the stopped registry again on the same address with the same storage.
    pub fn restart(&mut self) {
        self.stop();
        let config = self.config_path();
        let text = std::fs::read_to_string(&config).unwrap();
        let text: String = text
            .lines()
            .map(|l| {
                if l.starts_with("  addr: ") {
                    format!("  addr: {}\n", self.addr)
                } else {
                    format!("{l}\n")
                }
            })
            .collect();
        std::fs::write(&config, text).unwrap();
        let (child, addr) = spawn(&config, self.log.clone());
        assert_eq!(addr, self.addr);
        self.child = child;
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, as an orchestrator stops it: it stops listening, finishes the requests it
    /// has (`draintimeout`, set by [`Registry::start_shared`]) and exits.
    pub fn stop_gracefully(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }

    /// The upload session ids in the request URIs the registry logged.
    pub fn upload_sessions(&self) -> std::collections::BTreeSet<String> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| l.split("http.request.uri=").nth(1))
            .filter_map(|uri| uri.split("/blobs/uploads/").nth(1))
            .map(|rest| {
                rest.trim_matches('"')
                    .split(['?', ' ', '"'])
                    .next()
                    .unwrap_or("")
                    .to_owned()
            })
            .filter(|id| !id.is_empty())
            .collect()
    }

    /// How many lines the registry logged so far.
    pub fn log_mark(&self) -> usize {
        self.log.lock().unwrap().len()
    }

    /// True when, after `mark`, the registry logged a request whose URI contains `needle`.
    pub fn saw_request_since(&self, mark: usize, needle: &str) -> bool {
        self.requests_since(mark, needle) > 0
    }

    /// How many requests whose URI contains `needle` the registry logged after `mark`.
    pub fn requests_since(&self, mark: usize, needle: &str) -> usize {
        self.log.lock().unwrap()[mark..]
            .iter()
            .filter(|l| {
                l.split("http.request.uri=")
                    .nth(1)
                    .is_some_and(|uri| uri.split(' ').next().unwrap_or("").contains(needle))
            })
            .count()
    }

    /// The registry's config file, for `garbage-collect`.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.yml")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs `docker-registry serve CONFIG`, appending its log lines to `log`; returns the process
/// and the address it reported.
fn spawn(config: &Path, log: Arc<std::sync::Mutex<Vec<String>>>) -> (Child, SocketAddr) {
    let mut child = Command::new(REGISTRY_BIN)
        .arg("serve")
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start docker-registry");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            log.lock().unwrap().push(line.clone());
            if let Some(rest) = line.split("listening on ").nth(1) {
                let addr: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
                    .collect();
                if let Some(tx) = tx.take() {
                    let _ = tx.send(addr);
                }
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("docker-registry did not report its address within 20 s");
    (child, addr.parse().unwrap())
}
