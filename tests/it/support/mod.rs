//! Test support: the real registry on an ephemeral port, a test PKI made with rcgen, a gate
//! started in-process, HTTP clients that trust the test CA, and waiting on conditions.
#![allow(dead_code)]

use std::future::Future;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use registry_gate::config::Config;

pub const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

/// Waits until `ok` is true, failing the test after `within`.
pub async fn eventually<F, Fut>(within: Duration, what: &str, mut ok: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !ok().await {
        assert!(
            Instant::now() < deadline,
            "condition not met within {within:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

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
        assert!(
            Path::new(REGISTRY_BIN).exists(),
            "{REGISTRY_BIN} is missing: install Debian's docker-registry package (see .ci/run)"
        );
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: info\n  formatter: text\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n  secret: test-secret\n",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let mut child = Command::new(REGISTRY_BIN)
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start docker-registry");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let log = Arc::new(std::sync::Mutex::new(Vec::new()));
        let log_writer = log.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                log_writer.lock().unwrap().push(line.clone());
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
        Registry {
            child,
            addr: addr.parse().unwrap(),
            dir,
            log,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// How many lines the registry logged so far.
    pub fn log_mark(&self) -> usize {
        self.log.lock().unwrap().len()
    }

    /// True when, after `mark`, the registry logged a request whose URI contains `needle`.
    pub fn saw_request_since(&self, mark: usize, needle: &str) -> bool {
        self.log.lock().unwrap()[mark..].iter().any(|l| {
            l.split("http.request.uri=")
                .nth(1)
                .is_some_and(|uri| uri.split(' ').next().unwrap_or("").contains(needle))
        })
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

/// A CA and a server certificate for localhost, 127.0.0.1 and ::1, written to a folder.
pub struct Pki {
    pub dir: tempfile::TempDir,
    pub ca_pem: String,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// A folder with `ca.crt`, for skopeo/podman `--cert-dir`.
    pub cert_dir: PathBuf,
    pub ca_file: PathBuf,
    /// Base64 SHA-256 of the server certificate's SubjectPublicKeyInfo, as Chromium's
    /// `--ignore-certificate-errors-spki-list` takes it.
    pub leaf_spki_sha256: String,
    ca_key: rcgen::KeyPair,
    ca_params: rcgen::CertificateParams,
    ca_der: Vec<u8>,
}

impl Pki {
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "registry-gate test CA");
        ca_params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let ca_pem = ca_cert.pem();
        let ca_der = ca_cert.der().to_vec();
        let cert_dir = dir.path().join("certs.d");
        std::fs::create_dir(&cert_dir).unwrap();
        std::fs::write(cert_dir.join("ca.crt"), &ca_pem).unwrap();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, &ca_pem).unwrap();
        let mut pki = Pki {
            cert: dir.path().join("server.pem"),
            key: dir.path().join("server.key"),
            dir,
            ca_pem,
            cert_dir,
            ca_file,
            leaf_spki_sha256: String::new(),
            ca_key,
            ca_params,
            ca_der,
        };
        pki.issue_to(&pki.cert.clone(), &pki.key.clone(), "server-1");
        pki
    }

    /// Issues a new server certificate signed by the CA into `cert`/`key`, through a rename.
    pub fn issue_to(&mut self, cert: &Path, key: &Path, cn: &str) {
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
            "::1".to_string(),
        ])
        .unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let issuer = rcgen::Issuer::from_params(&self.ca_params, &self.ca_key);
        let leaf = params.signed_by(&leaf_key, &issuer).unwrap();
        let spki = rcgen::PublicKeyData::subject_public_key_info(&leaf_key);
        self.leaf_spki_sha256 = base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            ring::digest::digest(&ring::digest::SHA256, &spki),
        );
        let chain = format!("{}{}", leaf.pem(), self.ca_pem);
        write_atomic(cert, chain.as_bytes());
        write_atomic(key, leaf_key.serialize_pem().as_bytes());
    }

    /// A rustls client config trusting the test CA, with the given ALPN protocols.
    pub fn client_config(&self, alpn: &[&[u8]]) -> rustls::ClientConfig {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(rustls::pki_types::CertificateDer::from(self.ca_der.clone()))
            .unwrap();
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        config
    }

    /// An HTTP client trusting the test CA; `h2` picks HTTP/2 by ALPN, else HTTP/1.1.
    pub fn client(&self, h2: bool) -> reqwest::Client {
        let alpn: &[&[u8]] = if h2 { &[b"h2"] } else { &[b"http/1.1"] };
        let mut b = reqwest::Client::builder()
            .use_preconfigured_tls(self.client_config(alpn))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy();
        if !h2 {
            b = b.http1_only();
        }
        b.build().unwrap()
    }
}

/// Writes through a temp file and a rename, as tools that rotate files do.
pub fn write_atomic(path: &Path, data: &[u8]) {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, data).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// bcrypt cost used for test users (fast; the format is the same at any cost).
pub const TEST_COST: u32 = 5;

/// Writes an htpasswd file with bcrypt users.
pub fn write_htpasswd(path: &Path, users: &[(&str, &str)]) {
    let mut text = String::new();
    for (u, p) in users {
        let h = bcrypt::hash(p, TEST_COST).unwrap();
        text.push_str(&format!("{u}:{h}\n"));
    }
    write_atomic(path, text.as_bytes());
}

/// A gate running in-process with a test PKI and htpasswd file.
pub struct Gate {
    pub running: Option<registry_gate::Running>,
    pub addr: SocketAddr,
    pub pki: Pki,
    pub dir: tempfile::TempDir,
    pub htpasswd: PathBuf,
    pub config_path: PathBuf,
}

pub const ALICE: (&str, &str) = ("alice", "alice-secret");
pub const BOB: (&str, &str) = ("bob", "bob-secret");

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
        let text = format!(
            "listen = \"127.0.0.1:0\"\n{admin}upstream = \"{upstream}\"\n{top}\n[tls]\ncert = \"{}\"\nkey = \"{}\"\n{auth}{sections}\n",
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

pub fn sha256_hex(data: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, data);
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Incompressible bytes.
pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut v).unwrap();
    v
}

/// A registry API client for one gate and one user (or none).
pub struct Api {
    pub client: reqwest::Client,
    pub base: String,
    pub creds: Option<(String, String)>,
    /// A bearer token sent instead of Basic credentials.
    pub token: Option<String>,
}

impl Api {
    pub fn new(gate: &Gate, h2: bool, creds: Option<(&str, &str)>) -> Api {
        Api {
            client: gate.pki.client(h2),
            base: gate.url(),
            creds: creds.map(|(u, p)| (u.to_owned(), p.to_owned())),
            token: None,
        }
    }

    /// A client that shows `token` on every request.
    pub fn with_token(gate: &Gate, token: &str) -> Api {
        Api {
            token: Some(token.to_owned()),
            ..Api::new(gate, false, None)
        }
    }

    pub fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let url = if path.starts_with("http") {
            path.to_owned()
        } else {
            format!("{}{path}", self.base)
        };
        let b = self.client.request(method, url);
        match (&self.creds, &self.token) {
            (Some((u, p)), _) => b.basic_auth(u, Some(p)),
            (None, Some(t)) => b.bearer_auth(t),
            (None, None) => b,
        }
    }

    /// Uploads a blob as docker does: POST, one chunked PATCH, PUT `?digest=`.
    pub async fn push_blob(&self, repo: &str, data: Vec<u8>) -> String {
        let digest = format!("sha256:{}", sha256_hex(&data));
        let r = self
            .req(reqwest::Method::POST, &format!("/v2/{repo}/blobs/uploads/"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202, "POST upload: {}", r.text().await.unwrap());
        let location = r.headers()["location"].to_str().unwrap().to_owned();
        let chunks: Vec<Result<bytes::Bytes, std::io::Error>> = data
            .chunks(1 << 20)
            .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
            .collect();
        let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
        let r = self
            .req(reqwest::Method::PATCH, &location)
            .header("content-type", "application/octet-stream")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202, "PATCH: {}", r.text().await.unwrap());
        let location = r.headers()["location"].to_str().unwrap().to_owned();
        let sep = if location.contains('?') { '&' } else { '?' };
        let r = self
            .req(
                reqwest::Method::PUT,
                &format!("{location}{sep}digest={digest}"),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "PUT digest: {}", r.text().await.unwrap());
        digest
    }

    /// Pushes a config and the given layers and an OCI manifest under `tag`; returns the
    /// manifest digest and the layer digests.
    pub async fn push_image(
        &self,
        repo: &str,
        tag: &str,
        layers: Vec<Vec<u8>>,
    ) -> (String, Vec<String>) {
        let config =
            br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#
                .to_vec();
        let config_len = config.len();
        let config_digest = self.push_blob(repo, config).await;
        let mut layer_descs = Vec::new();
        let mut digests = Vec::new();
        for l in layers {
            let len = l.len();
            let d = self.push_blob(repo, l).await;
            layer_descs.push(serde_json::json!({
                "mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": d, "size": len
            }));
            digests.push(d);
        }
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_len},
            "layers": layer_descs,
        })
        .to_string();
        let r = self
            .req(reqwest::Method::PUT, &format!("/v2/{repo}/manifests/{tag}"))
            .header("content-type", "application/vnd.oci.image.manifest.v1+json")
            .body(manifest)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "PUT manifest: {}", r.text().await.unwrap());
        let digest = r.headers()["docker-content-digest"]
            .to_str()
            .unwrap()
            .to_owned();
        (digest, digests)
    }
}

/// The registry error code of a JSON error response body.
pub fn error_code(body: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(body)
        .unwrap_or_else(|e| panic!("not a JSON error body ({e}): {body}"));
    v["errors"][0]["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// A tar archive (ustar) of the given files, as an image layer.
pub fn tar(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, data) in files {
        let mut h = [0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        h[100..108].copy_from_slice(b"0000644\0");
        h[108..116].copy_from_slice(b"0000000\0");
        h[116..124].copy_from_slice(b"0000000\0");
        h[124..136].copy_from_slice(format!("{:011o}\0", data.len()).as_bytes());
        h[136..148].copy_from_slice(b"00000000000\0");
        h[156] = b'0';
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        out.extend_from_slice(&h);
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

/// An OCI image layout on disk with the given layers; returns the manifest digest and every
/// blob digest (config and layers).
pub fn oci_layout(dir: &Path, tag: &str, layers: &[Vec<u8>]) -> (String, Vec<String>) {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |data: &[u8]| {
        let hex = sha256_hex(data);
        std::fs::write(blobs.join(&hex), data).unwrap();
        format!("sha256:{hex}")
    };
    let layer_digests: Vec<String> = layers.iter().map(|l| put(l)).collect();
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": layer_digests},
    })
    .to_string();
    let config_digest = put(config.as_bytes());
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
        "layers": layers.iter().zip(&layer_digests).map(|(l, d)| serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": l.len()
        })).collect::<Vec<_>>(),
    })
    .to_string();
    let manifest_digest = put(manifest.as_bytes());
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    std::fs::write(
        dir.join("index.json"),
        serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": manifest_digest, "size": manifest.len(),
                "annotations": {"org.opencontainers.image.ref.name": tag}
            }]
        })
        .to_string(),
    )
    .unwrap();
    let mut all = vec![config_digest];
    all.extend(layer_digests);
    (manifest_digest, all)
}

/// skopeo with a permissive policy and its own auth file, so nothing on the machine leaks in.
pub struct Skopeo {
    pub dir: tempfile::TempDir,
}

impl Skopeo {
    pub fn new() -> Skopeo {
        assert!(
            Path::new("/usr/bin/skopeo").exists(),
            "/usr/bin/skopeo is missing: install Debian's skopeo package (see .ci/run)"
        );
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("policy.json"),
            r#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
        )
        .unwrap();
        Skopeo { dir }
    }

    /// Runs skopeo with `args`; returns (success, stderr).
    pub async fn run(&self, args: &[&str]) -> (bool, String) {
        let policy = self.dir.path().join("policy.json");
        let out = tokio::process::Command::new("/usr/bin/skopeo")
            .arg("--policy")
            .arg(&policy)
            .args(args)
            .env("REGISTRY_AUTH_FILE", self.dir.path().join("auth.json"))
            .env("HOME", self.dir.path())
            .env("TMPDIR", self.dir.path())
            .kill_on_drop(true)
            .output()
            .await
            .expect("run skopeo");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

/// Sends `request` (a raw HTTP/1.1 head, `Connection: close` added) over verified TLS and
/// returns the status code and the whole answer. For paths no client library would send as is.
pub async fn raw_request(gate: &Gate, request: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let config = Arc::new(gate.pki.client_config(&[b"http/1.1"]));
    let tcp = tokio::net::TcpStream::connect(gate.addr).await.unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(config)
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap();
    let head = request.trim_end_matches("\r\n");
    tls.write_all(format!("{head}\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

/// `Authorization: Basic` value for a user.
pub fn basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// podman as root with vfs storage in its own temp root, and its own auth file.
pub struct Podman {
    pub dir: tempfile::TempDir,
}

impl Podman {
    pub fn new() -> Podman {
        assert!(
            Path::new("/usr/bin/podman").exists(),
            "/usr/bin/podman is missing: install Debian's podman package (see .ci/run)"
        );
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("policy.json"),
            r#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
        )
        .unwrap();
        std::fs::write(dir.path().join("auth.json"), r#"{"auths":{}}"#).unwrap();
        Podman { dir }
    }

    /// Runs podman with `args`; returns (success, stderr).
    pub async fn run(&self, args: &[&str]) -> (bool, String) {
        let d = self.dir.path();
        let out = tokio::process::Command::new("/usr/bin/podman")
            .arg("--root")
            .arg(d.join("root"))
            .arg("--runroot")
            .arg(d.join("run"))
            .args([
                "--storage-driver",
                "vfs",
                "--cgroup-manager",
                "cgroupfs",
                "--events-backend",
                "file",
            ])
            .args(args)
            .env("REGISTRY_AUTH_FILE", d.join("auth.json"))
            .env("CONTAINERS_POLICY", d.join("policy.json"))
            .env("HOME", d)
            .env("TMPDIR", d)
            .env("XDG_RUNTIME_DIR", d.join("xdg"))
            .kill_on_drop(true)
            .output()
            .await
            .expect("run podman");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

/// The leaf certificate a new TLS connection to the gate is served (DER).
pub async fn served_leaf(gate: &Gate) -> Vec<u8> {
    let config = Arc::new(gate.pki.client_config(&[b"http/1.1"]));
    let tcp = tokio::net::TcpStream::connect(gate.addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap();
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

pub const DOCKERD_BIN: &str = "/usr/sbin/dockerd";
pub const DOCKER_BIN: &str = "/usr/bin/docker";

/// A private dockerd (Debian's docker.io) with its own data root, exec root, pid file, socket
/// and config file in a temp dir: vfs storage, no iptables, no bridge. Stopped on drop.
pub struct Dockerd {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    /// `unix://…/docker.sock`, for `DOCKER_HOST`.
    pub host: String,
}

impl Dockerd {
    /// Starts dockerd and waits until `docker version` answers through its socket.
    pub async fn start() -> Dockerd {
        for bin in [DOCKERD_BIN, DOCKER_BIN] {
            assert!(
                Path::new(bin).exists(),
                "{bin} is missing: install Debian's docker.io package (see .ci/run)"
            );
        }
        let dir = tempfile::Builder::new()
            .prefix("rg-dockerd")
            .tempdir_in("/tmp")
            .unwrap();
        let d = dir.path();
        let socket = d.join("docker.sock");
        // The trust key would go to /etc/docker/key.json; keep it here, with nothing from
        // /etc/docker/daemon.json.
        std::fs::write(
            d.join("daemon.json"),
            serde_json::json!({ "deprecated-key-path": d.join("key.json") }).to_string(),
        )
        .unwrap();
        let log = std::fs::File::create(d.join("dockerd.log")).unwrap();
        let mut cmd = Command::new(DOCKERD_BIN);
        cmd.arg("--config-file")
            .arg(d.join("daemon.json"))
            .arg("--data-root")
            .arg(d.join("data"))
            .arg("--exec-root")
            .arg(d.join("exec"))
            .arg("--pidfile")
            .arg(d.join("dockerd.pid"))
            .arg("-H")
            .arg(format!("unix://{}", socket.display()))
            .args([
                "--debug",
                "--storage-driver",
                "vfs",
                "--iptables=false",
                "--ip6tables=false",
                "--ip-masq=false",
                "--bridge=none",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        // Registry traffic goes to loopback only, never through a proxy.
        for v in [
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "NO_PROXY",
            "http_proxy",
            "https_proxy",
            "no_proxy",
        ] {
            cmd.env_remove(v);
        }
        let child = cmd.spawn().expect("start dockerd");
        let mut dockerd = Dockerd {
            child: Some(child),
            host: format!("unix://{}", socket.display()),
            dir,
        };
        let probe = dockerd.client();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = dockerd.child.as_mut().unwrap().try_wait().unwrap() {
                dockerd.child = None;
                panic!("dockerd exited with {status}:\n{}", dockerd.log_tail(40));
            }
            if socket.exists() && probe.run(&["version"]).await.ok {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "dockerd did not answer within 60 s:\n{}",
                dockerd.log_tail(40)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        dockerd
    }

    /// A docker client for this daemon with its own empty `DOCKER_CONFIG` (so its own logins).
    pub fn client(&self) -> Docker {
        let config = tempfile::tempdir().unwrap();
        std::fs::write(config.path().join("config.json"), r#"{"auths":{}}"#).unwrap();
        Docker {
            config,
            host: self.host.clone(),
        }
    }

    /// The daemon's log (with `--debug`, every registry endpoint it tried).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dockerd.log")).unwrap_or_default()
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Stops dockerd: SIGTERM and a wait with a deadline, then SIGKILL; then the containerd it
    /// started, if still there; then whatever is still mounted under the temp dir.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(30);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        let d = self.dir.path();
        let pid_file = d.join("exec/containerd/containerd.pid");
        if let Some(pid) = std::fs::read_to_string(pid_file)
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok())
        {
            let ours = std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&*d.to_string_lossy()));
            if ours {
                let _ = Command::new("kill")
                    .arg("-KILL")
                    .arg(pid.to_string())
                    .status();
                let deadline = Instant::now() + Duration::from_secs(10);
                while Path::new(&format!("/proc/{pid}/cmdline")).exists()
                    && Instant::now() < deadline
                {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
        let prefix = d.to_string_lossy().into_owned();
        let mut mounts: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|m| *m == prefix || m.starts_with(&format!("{prefix}/")))
            .map(str::to_owned)
            .collect();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mounts {
            let _ = Command::new("umount").arg("--lazy").arg(&m).status();
        }
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What a docker command did.
pub struct Ran {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Debian's docker client talking to one private dockerd, with its own `DOCKER_CONFIG`.
pub struct Docker {
    pub config: tempfile::TempDir,
    host: String,
}

impl Docker {
    pub async fn run(&self, args: &[&str]) -> Ran {
        self.run_with_stdin(args, "").await
    }

    pub async fn run_with_stdin(&self, args: &[&str], input: &str) -> Ran {
        use tokio::io::AsyncWriteExt;
        let mut child = tokio::process::Command::new(DOCKER_BIN)
            .args(args)
            .env("DOCKER_HOST", &self.host)
            .env("DOCKER_CONFIG", self.config.path())
            .env("HOME", self.config.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("run docker");
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(input.as_bytes()).await.unwrap();
        drop(stdin);
        let out = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("docker {args:?} did not finish within 120 s"))
            .unwrap();
        Ran {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// `docker login HOST` with the password on stdin.
    pub async fn login(&self, host: &str, user: &str, password: &str) -> Ran {
        self.run_with_stdin(
            &["login", "--username", user, "--password-stdin", host],
            password,
        )
        .await
    }
}

/// A `docker save` archive (manifest.json, the config, one folder per layer) of an image with
/// the given uncompressed layer tars, tagged `tag`; returns the archive and the image ID
/// (`sha256:` of the config).
pub fn docker_archive(tag: &str, layers: &[Vec<u8>]) -> (Vec<u8>, String) {
    let diff_ids: Vec<String> = layers.iter().map(|l| sha256_hex(l)).collect();
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": {
            "type": "layers",
            "diff_ids": diff_ids.iter().map(|h| format!("sha256:{h}")).collect::<Vec<_>>(),
        },
        "history": layers.iter().map(|_| serde_json::json!({"created_by": "registry-gate test"})).collect::<Vec<_>>(),
    })
    .to_string();
    let config_hex = sha256_hex(config.as_bytes());
    let config_name = format!("{config_hex}.json");
    let layer_names: Vec<String> = diff_ids.iter().map(|h| format!("{h}/layer.tar")).collect();
    let manifest = serde_json::json!([{
        "Config": config_name,
        "RepoTags": [tag],
        "Layers": layer_names,
    }])
    .to_string();
    let mut files: Vec<(&str, &[u8])> = vec![
        ("manifest.json", manifest.as_bytes()),
        (&config_name, config.as_bytes()),
    ];
    for (name, data) in layer_names.iter().zip(layers) {
        files.push((name, data));
    }
    (tar(&files), format!("sha256:{config_hex}"))
}
