//! Operating the gate: certificate swaps under load, the admin listener (/metrics, /healthz,
//! /readyz), and JSON logs of the real binary.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::*;
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use reqwest::Method;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

/// rcgen's default notAfter (4096-01-01T00:00:00Z), as unix time.
const RCGEN_NOT_AFTER: f64 = 67_090_118_400.0;

// ---- metrics scraping -------------------------------------------------------------------------

/// One scrape of /metrics as series → value; a series is `name{k="v",...}` with the labels
/// sorted, so the order the gate writes them in does not matter.
type Scrape = BTreeMap<String, f64>;

fn parse_metrics(text: &str) -> Scrape {
    let mut out = Scrape::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("not a sample line: {line:?}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("not a number in {line:?}"));
        let key = match series.split_once('{') {
            None => series.to_owned(),
            Some((name, labels)) => {
                let labels = labels
                    .strip_suffix('}')
                    .unwrap_or_else(|| panic!("unclosed labels in {line:?}"));
                let mut pairs: Vec<(&str, &str)> = labels
                    .split(',')
                    .map(|kv| {
                        let (k, v) = kv.split_once('=').unwrap();
                        (k, v.trim_matches('"'))
                    })
                    .collect();
                pairs.sort_unstable();
                series_key(name, &pairs)
            }
        };
        assert!(out.insert(key, value).is_none(), "duplicate series: {line}");
    }
    out
}

fn series_key(name: &str, labels: &[(&str, &str)]) -> String {
    let mut labels = labels.to_vec();
    labels.sort_unstable();
    let inner: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    format!("{name}{{{}}}", inner.join(","))
}

async fn scrape(client: &reqwest::Client, gate: &Gate) -> Scrape {
    let r = client
        .get(format!("{}/metrics", gate.admin_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    parse_metrics(&r.text().await.unwrap())
}

fn value(s: &Scrape, key: &str) -> f64 {
    s.get(key).copied().unwrap_or(0.0)
}

fn requests(method: &str, kind: &str, class: &str) -> String {
    series_key(
        "registry_gate_requests_total",
        &[("method", method), ("kind", kind), ("class", class)],
    )
}

/// The non-zero changes between two scrapes, leaving out series whose value depends on timing
/// or on how the client pools connections.
fn deltas(before: &Scrape, after: &Scrape) -> BTreeMap<String, f64> {
    let keys: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    keys.into_iter()
        .filter(|k| {
            !k.starts_with("registry_gate_upstream_response_seconds_bucket")
                && !k.starts_with("registry_gate_upstream_response_seconds_sum")
                && !k.starts_with("registry_gate_connections_total")
        })
        .map(|k| (k.clone(), value(after, k) - value(before, k)))
        .filter(|(_, d)| *d != 0.0)
        .collect()
}

// ---- TLS client with a fresh handshake per request --------------------------------------------

/// A client config that never resumes a session, so every connection shows the certificate the
/// gate serves now (a resumed TLS 1.3 session carries the certificate of its first handshake).
fn fresh_handshakes(gate: &Gate) -> Arc<rustls::ClientConfig> {
    let mut config = gate.pki.client_config(&[b"http/1.1"]);
    config.resumption = rustls::client::Resumption::disabled();
    Arc::new(config)
}

/// The common name of the certificate a TLS connection was given.
fn peer_cn(tls: &TlsStream) -> String {
    let der = &tls
        .get_ref()
        .1
        .peer_certificates()
        .expect("no peer certificate")[0];
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).unwrap();
    let cn = cert.subject().iter_common_name().next().unwrap();
    cn.as_str().unwrap().to_owned()
}

/// The CN a new connection is served now.
async fn served_cn(config: &Arc<rustls::ClientConfig>, gate: &Gate) -> String {
    peer_cn(&try_tls_connect(config, gate.addr).await.unwrap())
}

/// Waits up to 2 s until new connections are served the certificate named `cn`.
async fn new_connections_see(config: &Arc<rustls::ClientConfig>, gate: &Gate, cn: &str) {
    eventually(
        Duration::from_secs(2),
        &format!("new connections see {cn}"),
        || async { served_cn(config, gate).await == cn },
    )
    .await;
}

/// One pull on a new connection: GET `path` with `authorization`; returns the CN and the body.
async fn pull_once(
    config: &Arc<rustls::ClientConfig>,
    addr: std::net::SocketAddr,
    path: &str,
    authorization: &str,
) -> Result<(String, Bytes), String> {
    let tls = try_tls_connect(config, addr).await?;
    let cn = peer_cn(&tls);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| format!("HTTP handshake: {e}"))?;
    tokio::spawn(conn);
    let req = http::Request::get(path)
        .header("host", format!("localhost:{}", addr.port()))
        .header("authorization", authorization)
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("request: {e}"))?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    if status != 200 {
        return Err(format!(
            "status {status}: {}",
            String::from_utf8_lossy(&body)
        ));
    }
    Ok((cn, body))
}

#[derive(Default)]
struct PullStats {
    ok: AtomicU64,
    failed: AtomicU64,
    errors: Mutex<Vec<String>>,
    names: Mutex<BTreeSet<String>>,
    stop: AtomicBool,
}

// ---- tests ------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_swaps_reach_new_connections_and_no_pull_fails() {
    let registry = Registry::start();
    let mut gate = Gate::start(&registry.url(), "admin_listen = \"127.0.0.1:0\"\n").await;
    let admin = gate.pki.client(false);
    let api = Api::new(&gate, false, Some(ALICE));
    let blob = random_bytes(64 * 1024);
    let digest = api.push_blob("ops/rotate", blob.clone()).await;
    let config = fresh_handshakes(&gate);
    assert_eq!(served_cn(&config, &gate).await, "server-1");
    let expiry_key = "registry_gate_certificate_expiry_seconds";
    assert_eq!(
        value(&scrape(&admin, &gate).await, expiry_key),
        RCGEN_NOT_AFTER
    );

    // A client that keeps pulling the blob, each time on a new connection (a new handshake).
    let stats = Arc::new(PullStats::default());
    let puller = {
        let (stats, config, addr) = (stats.clone(), config.clone(), gate.addr);
        let path = format!("/v2/ops/rotate/blobs/{digest}");
        let auth = basic(ALICE.0, ALICE.1);
        let expected = blob.clone();
        tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(90);
            while !stats.stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                match pull_once(&config, addr, &path, &auth).await {
                    Ok((cn, body)) if body[..] == expected[..] => {
                        stats.names.lock().unwrap().insert(cn);
                        stats.ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok((cn, _)) => {
                        stats.failed.fetch_add(1, Ordering::Relaxed);
                        stats
                            .errors
                            .lock()
                            .unwrap()
                            .push(format!("{cn}: wrong body"));
                    }
                    Err(e) => {
                        stats.failed.fetch_add(1, Ordering::Relaxed);
                        stats.errors.lock().unwrap().push(e);
                    }
                }
                // Pacing, not synchronisation: leave the two cores some room for the gate.
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let ok_now = || stats.ok.load(Ordering::Relaxed);
    let at_least = |n: u64| {
        let stats = stats.clone();
        move || {
            let stats = stats.clone();
            async move { stats.ok.load(Ordering::Relaxed) >= n }
        }
    };
    eventually(Duration::from_secs(10), "the puller succeeds", at_least(3)).await;
    // Three more successful pulls within 5 s from now.
    let puller_goes_on =
        |what: &'static str| eventually(Duration::from_secs(5), what, at_least(ok_now() + 3));

    // 1. A valid new pair, written as certbot does (rename). New connections get it within 2 s.
    let (cert, key) = (gate.pki.cert.clone(), gate.pki.key.clone());
    gate.pki.issue_to(&cert, &key, "server-2");
    new_connections_see(&config, &gate, "server-2").await;
    puller_goes_on("the puller goes on after the swap").await;

    // 2. A broken certificate file, also written through a rename: the reload is refused and
    // the previous pair stays.
    let failed_reloads = series_key(
        "registry_gate_reloads_total",
        &[("kind", "certificate"), ("outcome", "failure")],
    );
    let failures_before = value(&scrape(&admin, &gate).await, &failed_reloads);
    let pem = std::fs::read(&cert).unwrap();
    write_atomic(&cert, &pem[..pem.len() / 2]);
    eventually(Duration::from_secs(2), "the broken file is refused", || {
        let (admin, gate, key) = (&admin, &gate, &failed_reloads);
        async move { value(&scrape(admin, gate).await, key) > failures_before }
    })
    .await;
    assert_eq!(served_cn(&config, &gate).await, "server-2");
    puller_goes_on("the puller goes on with the broken file in place").await;
    assert_eq!(served_cn(&config, &gate).await, "server-2");

    // 3. A later valid pair is picked up again.
    gate.pki.issue_to(&cert, &key, "server-3");
    new_connections_see(&config, &gate, "server-3").await;
    puller_goes_on("the puller goes on after the last swap").await;

    stats.stop.store(true, Ordering::Relaxed);
    puller.await.unwrap();
    let errors = stats.errors.lock().unwrap().clone();
    assert_eq!(
        stats.failed.load(Ordering::Relaxed),
        0,
        "failed pulls: {errors:?}"
    );
    let names = stats.names.lock().unwrap().clone();
    assert!(
        names.contains("server-1") && names.contains("server-3"),
        "{names:?}"
    );
    let after = scrape(&admin, &gate).await;
    let succeeded = series_key(
        "registry_gate_reloads_total",
        &[("kind", "certificate"), ("outcome", "success")],
    );
    assert!(value(&after, &succeeded) >= 2.0, "{after:?}");
    assert_eq!(value(&after, expiry_key), RCGEN_NOT_AFTER);
    assert!(ok_now() >= 12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_a_known_sequence_of_requests() {
    let registry = Registry::start();
    let gate = Gate::start(&registry.url(), "admin_listen = \"127.0.0.1:0\"\n").await;
    let admin = gate.pki.client(false);
    let before = scrape(&admin, &gate).await;
    assert_eq!(
        value(&before, "registry_gate_certificate_expiry_seconds"),
        RCGEN_NOT_AFTER
    );

    let alice = Api::new(&gate, false, Some(ALICE));
    let wrong = Api::new(&gate, false, Some((ALICE.0, "not-her-password")));
    let anon = Api::new(&gate, false, None);

    // Upload: POST, PATCH, PUT. The first login hashes, the next two hit the cache.
    let blob = random_bytes(100_000);
    let digest = alice.push_blob("ops/metrics", blob.clone()).await;
    let blob_path = format!("/v2/ops/metrics/blobs/{digest}");
    for _ in 0..2 {
        let r = alice.send(Method::GET, &blob_path).await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.bytes().await.unwrap().len(), blob.len());
    }
    let r = wrong.send(Method::GET, &blob_path).await;
    assert_eq!(r.status(), 401);
    let r = anon
        .req(Method::GET, "/v2/")
        .header("user-agent", "docker/1.5.0 go/go1.4.1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = anon.send(Method::GET, "/v2/").await;
    assert_eq!(r.status(), 401);
    let r = alice.send(Method::GET, "/v2/_catalog").await;
    assert_eq!(r.status(), 200);
    let catalog_len = r.bytes().await.unwrap().len();
    let r = alice
        .send(Method::HEAD, "/v2/ops/metrics/manifests/missing")
        .await;
    assert_eq!(r.status(), 404);
    let r = anon.send(Method::GET, "/ui/").await;
    let ui_class = format!("{}xx", r.status().as_u16() / 100);
    drop(r.bytes().await);

    // Two connections that never finish a handshake: plain HTTP, and an empty ClientHello.
    for bytes in [
        &b"GET /v2/ HTTP/1.1\r\nHost: localhost\r\n\r\n"[..],
        &[0x16, 0x03, 0x01, 0x00, 0x04, 0x01, 0x00, 0x00, 0x00][..],
    ] {
        let mut tcp = tokio::net::TcpStream::connect(gate.addr).await.unwrap();
        tcp.write_all(bytes).await.unwrap();
        tcp.shutdown().await.unwrap();
        let mut sink = Vec::new();
        let _ = tcp.read_to_end(&mut sink).await;
    }
    drop((alice, wrong, anon));

    let expected: BTreeMap<String, f64> = [
        (requests("POST", "upload", "2xx"), 1.0),
        (requests("PATCH", "upload", "2xx"), 1.0),
        (requests("PUT", "upload", "2xx"), 1.0),
        (requests("GET", "blob", "2xx"), 2.0),
        (requests("GET", "blob", "4xx"), 1.0),
        (requests("GET", "other", "4xx"), 2.0),
        (requests("GET", "catalog", "2xx"), 1.0),
        (requests("HEAD", "manifest", "4xx"), 1.0),
        (requests("GET", "ui", &ui_class), 1.0),
        ("registry_gate_request_body_bytes_total".into(), 100_000.0),
        (
            "registry_gate_response_body_bytes_total".into(),
            (2 * blob.len() + catalog_len) as f64,
        ),
        // Forwarded: 3 upload steps, 2 blob GETs, the catalog and the manifest HEAD.
        ("registry_gate_upstream_response_seconds_count".into(), 7.0),
        // The one registry member took those seven.
        (
            series_key(
                "registry_gate_upstream_member_requests_total",
                &[("member", &registry.addr.to_string())],
            ),
            7.0,
        ),
        // Decisions: the 3 upload steps are pushes; 2 blob GETs and the manifest HEAD pulls.
        (
            "registry_gate_access_decisions_total{action=\"push\",outcome=\"allowed\"}".into(),
            3.0,
        ),
        (
            "registry_gate_access_decisions_total{action=\"pull\",outcome=\"allowed\"}".into(),
            3.0,
        ),
        ("registry_gate_auth_successes_total".into(), 7.0),
        ("registry_gate_auth_cache_hits_total".into(), 6.0),
        ("registry_gate_auth_failures_total".into(), 1.0),
        // One bob login and one failed login, each one bcrypt hash (one kind in the file).
        ("registry_gate_password_hashes_total".into(), 2.0),
        ("registry_gate_rejected_user_agents_total".into(), 1.0),
        (
            series_key(
                "registry_gate_tls_handshake_failures_total",
                &[("reason", "plain_http")],
            ),
            1.0,
        ),
        (
            series_key(
                "registry_gate_tls_handshake_failures_total",
                &[("reason", "error")],
            ),
            1.0,
        ),
    ]
    .into_iter()
    .collect();
    // A request is counted when its response body is done, which can be a moment after the
    // client has read it; and connections_active must come back to where it was.
    let mut last = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        last = deltas(&before, &scrape(&admin, &gate).await);
        if last == expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(last, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_follows_the_registry_and_healthz_stays_ok() {
    let mut registry = Registry::start();
    let gate = Gate::start(&registry.url(), "admin_listen = \"127.0.0.1:0\"\n").await;
    let admin = gate.pki.client(false);
    let get = |path: &'static str| {
        let (admin, url) = (admin.clone(), gate.admin_url());
        async move {
            let r = admin.get(format!("{url}{path}")).send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    assert_eq!(get("/healthz").await, (200, "ok\n".to_owned()));
    assert_eq!(get("/readyz").await.0, 200);
    assert_eq!(get("/nope").await.0, 404);
    let r = admin
        .post(format!("{}/metrics", gate.admin_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);

    registry.stop();
    eventually(
        Duration::from_secs(10),
        "readyz 503 without a registry",
        || {
            let get = &get;
            async move { get("/readyz").await.0 == 503 }
        },
    )
    .await;
    assert_eq!(get("/healthz").await, (200, "ok\n".to_owned()));

    let _again = Registry::start_on(registry.addr);
    eventually(
        Duration::from_secs(10),
        "readyz 200 with a new registry on the same port",
        || {
            let get = &get;
            async move { get("/readyz").await.0 == 200 }
        },
    )
    .await;

    // Without admin_listen in its config the test gate has no admin listener at all.
    let quiet = Gate::start(&registry.url(), "").await;
    assert!(quiet.running.as_ref().unwrap().admin_addr.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_the_access_fields_and_no_secrets() {
    let registry = Registry::start();
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let htpasswd = dir.path().join("htpasswd");
    write_htpasswd(&htpasswd, &[ALICE, BOB]);
    let config = dir.path().join("gate.toml");
    // debug, so that more than the gate's own lines are checked for secrets.
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nupstream = \"{}\"\n[tls]\ncert = \"{}\"\nkey = \"{}\"\n[auth]\nhtpasswd = \"{}\"\n[log]\nlevel = \"debug\"\n",
            registry.url(),
            pki.cert.display(),
            pki.key.display(),
            htpasswd.display()
        ),
    )
    .unwrap();
    let mut child = tokio::process::Command::new(GATE_BIN)
        .args(["serve", "--config"])
        .arg(&config)
        .args(["--log-format", "json"])
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let mut stderr = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    tokio::spawn(async move {
        while let Ok(Some(line)) = stderr.next_line().await {
            let _ = tx.send(line);
        }
    });

    // The TLS port, from the "serving TLS" line.
    let mut lines = Vec::new();
    let port = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let line = rx.recv().await.expect("the gate exited before serving");
            lines.push(line.clone());
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if v["message"] == "serving TLS" {
                let listen: std::net::SocketAddr = v["listen"].as_str().unwrap().parse().unwrap();
                return listen.port();
            }
        }
    })
    .await
    .expect("no \"serving TLS\" line within 20 s");

    let api = |creds: Option<(&str, &str)>| Api {
        client: pki.client(false),
        base: format!("https://localhost:{port}"),
        creds: creds.map(|(u, p)| (u.to_owned(), p.to_owned())),
        token: None,
    };
    let alice = api(Some(ALICE));
    let blob = random_bytes(20_000);
    let digest = alice.push_blob("ops/logs", blob.clone()).await;
    let r = alice
        .send(Method::GET, &format!("/v2/ops/logs/blobs/{digest}"))
        .await;
    assert_eq!(r.bytes().await.unwrap().len(), blob.len());
    let bob_wrong = "bob-wrong-password";
    let r = api(Some((BOB.0, bob_wrong)))
        .send(Method::GET, "/v2/")
        .await;
    assert_eq!(r.status(), 401);
    let r = api(None).send(Method::GET, "/v2/").await;
    assert_eq!(r.status(), 401);
    drop(alice);

    let pid = child.id().unwrap().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("the gate did not exit within 30 s of SIGTERM")
        .unwrap();
    while let Some(line) = rx.recv().await {
        lines.push(line);
    }
    assert_eq!(status.code(), Some(0), "{status:?}\n{}", lines.join("\n"));

    // Every line is a JSON object.
    let events: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| {
            let v: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}"));
            assert!(v.is_object(), "{l}");
            v
        })
        .collect();

    // Access lines carry the fields.
    let access: Vec<&serde_json::Value> =
        events.iter().filter(|v| v["target"] == "access").collect();
    assert_eq!(
        access.len(),
        6,
        "POST, PATCH, PUT, GET, two 401s: {access:#?}"
    );
    for v in &access {
        assert_eq!(v["client"], "127.0.0.1", "{v}");
        for field in ["user", "method", "path"] {
            assert!(v[field].is_string(), "{field} in {v}");
        }
        for field in ["status", "bytes_in", "bytes_out", "duration_ms"] {
            assert!(v[field].is_u64(), "{field} in {v}");
        }
    }
    let find = |method: &str, status: u64| {
        access
            .iter()
            .find(|v| v["method"] == method && v["status"] == status)
            .unwrap_or_else(|| panic!("no {method} {status} in {access:#?}"))
    };
    let patch = find("PATCH", 202);
    assert_eq!(patch["user"], "alice");
    assert_eq!(patch["bytes_in"], blob.len() as u64);
    let get = find("GET", 200);
    assert_eq!(get["path"], format!("/v2/ops/logs/blobs/{digest}"));
    assert_eq!(get["bytes_out"], blob.len() as u64);
    assert_eq!(find("GET", 401)["user"], "-");
    assert!(
        events
            .iter()
            .any(|v| v["message"] == "failed login" && v["user"] == "bob"),
        "no failed-login line for bob"
    );
    assert!(
        events.iter().any(|v| v["message"] == "loaded certificate"
            && v["subject"] == "server-1"
            && v["not_after"] == "4096-01-01T00:00:00Z"),
        "no certificate line with subject and expiry"
    );

    // No password, no credentials in base64, no hash, no Authorization header.
    let b64 =
        |u: &str, p: &str| base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
    let htpasswd_text = std::fs::read_to_string(&htpasswd).unwrap();
    let mut secrets = vec![
        ALICE.1.to_owned(),
        BOB.1.to_owned(),
        bob_wrong.to_owned(),
        b64(ALICE.0, ALICE.1),
        b64(BOB.0, bob_wrong),
    ];
    for line in htpasswd_text.lines() {
        let (_, hash) = line.split_once(':').unwrap();
        secrets.push(hash.to_owned());
        // The salt and digest without the `$2b$05$` prefix, in case a hash is cut or escaped.
        secrets.push(hash[7..].to_owned());
    }
    for line in &lines {
        for s in &secrets {
            assert!(!line.contains(s.as_str()), "a secret in the log: {line}");
        }
        assert!(
            !line.to_ascii_lowercase().contains("authorization"),
            "an Authorization header in the log: {line}"
        );
    }
}
