//! ACME test servers and the gate as a process: Debian's pebble with pebble-challtestsrv as its
//! DNS (every name resolves to 127.0.0.1), and a gate started from a config without `[tls]`
//! whose log is kept for assertions.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncBufReadExt;
use tokio::process::{Child, Command};

use super::{GATE_BIN, Pki, eventually, write_htpasswd};

/// A free loopback port: bound, read, released (for servers that must know each other's ports
/// before they start).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A process's stderr, collected line by line.
#[derive(Clone, Default)]
pub struct Log(Arc<Mutex<String>>);

impl Log {
    fn follow(&self, child: &mut Child) {
        let stderr = child.stderr.take().unwrap();
        let log = self.clone();
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let mut text = log.0.lock().unwrap();
                text.push_str(&line);
                text.push('\n');
            }
        });
    }

    pub fn text(&self) -> String {
        self.0.lock().unwrap().clone()
    }

    pub fn contains(&self, needle: &str) -> bool {
        self.0.lock().unwrap().contains(needle)
    }

    /// Waits until the log holds `needle`.
    pub async fn wait_for(&self, needle: &str, within: Duration) {
        let what = format!("log line {needle:?}");
        eventually(within, &what, || async { self.contains(needle) }).await;
    }
}

/// pebble and pebble-challtestsrv on free loopback ports.
pub struct Pebble {
    pub pki: Pki,
    pub dir: tempfile::TempDir,
    pub listen: SocketAddr,
    pub management: SocketAddr,
    pub log: Log,
    pebble: Option<Child>,
    _challtestsrv: Child,
}

impl Pebble {
    /// Starts pebble validating HTTP-01 on `http_port` and TLS-ALPN-01 on `tls_port` of
    /// 127.0.0.1, issuing certificates valid for `validity` seconds.
    pub async fn start(http_port: u16, tls_port: u16, validity: u64) -> Pebble {
        let pki = Pki::new();
        let dir = tempfile::tempdir().unwrap();
        let dns = free_port();
        let challtest_management = free_port();
        let challtestsrv = Command::new("/usr/bin/pebble-challtestsrv")
            .args(["-dns01", &format!("127.0.0.1:{dns}")])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args(["-management", &format!("127.0.0.1:{challtest_management}")])
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("pebble-challtestsrv (apt-get install pebble)");
        let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let management: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let config = serde_json::json!({
            "pebble": {
                "listenAddress": listen.to_string(),
                "managementListenAddress": management.to_string(),
                "certificate": pki.cert,
                "privateKey": pki.key,
                "httpPort": http_port,
                "tlsPort": tls_port,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": false,
                "certificateValidityPeriod": validity,
            }
        });
        let config_path = dir.path().join("pebble.json");
        std::fs::write(&config_path, config.to_string()).unwrap();
        let log = Log::default();
        let mut pebble = Command::new("/usr/bin/pebble")
            .arg("-config")
            .arg(&config_path)
            .args(["-dnsserver", &format!("127.0.0.1:{dns}")])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("pebble (apt-get install pebble)");
        // pebble logs to stdout; keep both.
        let stdout = pebble.stdout.take().unwrap();
        {
            let log = log.clone();
            tokio::spawn(async move {
                let mut lines = tokio::io::BufReader::new(stdout).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    let mut text = log.0.lock().unwrap();
                    text.push_str(&line);
                    text.push('\n');
                }
            });
        }
        log.follow(&mut pebble);
        let p = Pebble {
            pki,
            dir,
            listen,
            management,
            log,
            pebble: Some(pebble),
            _challtestsrv: challtestsrv,
        };
        let client = p.pki.client(false);
        let url = p.directory();
        eventually(Duration::from_secs(20), "pebble answers", || {
            let (client, url) = (client.clone(), url.clone());
            async move { client.get(&url).send().await.is_ok() }
        })
        .await;
        p
    }

    /// The ACME directory URL.
    pub fn directory(&self) -> String {
        format!("https://{}/dir", self.listen)
    }

    /// pebble's root CA, which issued the certificates (PEM), from the management port.
    pub async fn root_pem(&self) -> String {
        let url = format!("https://{}/roots/0", self.management);
        let r = self.pki.client(false).get(&url).send().await.unwrap();
        assert_eq!(r.status(), 200);
        r.text().await.unwrap()
    }

    /// Stops pebble (challtestsrv stays); the ACME server is then unreachable.
    pub async fn stop(&mut self) {
        if let Some(mut p) = self.pebble.take() {
            let _ = p.kill().await;
        }
    }
}

/// The gate as a process, configured with `[acme]` and no `[tls]`.
pub struct GateProcess {
    pub child: Child,
    pub log: Log,
    pub tls: SocketAddr,
    pub dir: PathBuf,
}

impl GateProcess {
    /// Starts `registry-gate serve` on TLS port `tls_port` in front of `upstream`, with users
    /// alice and bob, and `extra` appended (it must hold the `[acme]` section). Files are written
    /// into `dir`, which outlives the process (a restart reuses the cache).
    pub async fn start(dir: &Path, tls_port: u16, upstream: &str, top: &str, acme: &str) -> Self {
        let htpasswd = dir.join("htpasswd");
        write_htpasswd(&htpasswd, &[super::ALICE, super::BOB]);
        let config = dir.join("gate.toml");
        let text = format!(
            "listen = \"127.0.0.1:{tls_port}\"\nadmin_listen = \"\"\nupstream = \"{upstream}\"\n{top}\n\
             [acme]\n{acme}\n[auth]\nhtpasswd = \"{}\"\nbrake_failures = 0\n\
             [log]\nlevel = \"registry_gate=debug,info\"\n",
            htpasswd.display()
        );
        std::fs::write(&config, text).unwrap();
        let mut child = Command::new(GATE_BIN)
            .args(["serve", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let log = Log::default();
        log.follow(&mut child);
        log.wait_for("serving TLS", Duration::from_secs(20)).await;
        GateProcess {
            child,
            log,
            tls: format!("127.0.0.1:{tls_port}").parse().unwrap(),
            dir: dir.to_owned(),
        }
    }

    pub async fn stop(&mut self) {
        let _ = self.child.kill().await;
    }
}

/// A rustls client config trusting only `root_pem`, offering HTTP/1.1.
pub fn client_config_for(root_pem: &str) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(root_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let mut config =
        rustls::ClientConfig::builder_with_provider(registry_gate::net::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    // A resumed session reports the certificate of the session it resumes: every connection
    // does a full handshake, so it sees the certificate served now.
    config.resumption = rustls::client::Resumption::disabled();
    Arc::new(config)
}
