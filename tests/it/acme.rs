//! ACME against Debian's pebble: the gate starts with an empty cache, obtains its certificate
//! through TLS-ALPN-01 or HTTP-01, serves it to skopeo, renews it without failing a request,
//! keeps it while the CA is down, and restarts from the cache without contacting the CA.
//! The certificate is for `localhost`, which pebble accepts and skopeo resolves to 127.0.0.1;
//! pebble resolves it through pebble-challtestsrv, whose every answer is 127.0.0.1.

use std::os::unix::fs::PermissionsExt as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::support::*;

/// The `[acme]` section for `pebble`, with the cache in `cache` (relative to the config).
fn acme_section(pebble: &Pebble, directory: &str) -> String {
    format!(
        "domains = [\"localhost\"]\ncontact = \"ops@example.com\"\ndirectory = \"{directory}\"\n\
         cache = \"cache\"\nca = \"{}\"\n",
        pebble.pki.ca_file.display()
    )
}

/// A new verified TLS connection to the gate: `GET /v2/` and the leaf it was served.
async fn request(
    config: &Arc<rustls::ClientConfig>,
    gate: &GateProcess,
) -> Result<(u16, Vec<u8>), String> {
    let mut tls = try_tls_connect(config, gate.tls).await?;
    let leaf = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    tls.write_all(b"GET /v2/ HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut buf))
        .await
        .map_err(|_| "read: timed out".to_owned())?
        .map_err(|e| format!("read: {e}"))?;
    let text = String::from_utf8_lossy(&buf);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok((status, leaf))
}

/// Waits until the gate serves a certificate that verifies against `config`; returns its leaf.
async fn wait_for_certificate(config: &Arc<rustls::ClientConfig>, gate: &GateProcess) -> Vec<u8> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        match request(config, gate).await {
            Ok((401, leaf)) => return leaf,
            other => assert!(
                Instant::now() < deadline,
                "no verified certificate within 90 s ({other:?}); gate log:\n{}",
                gate.log.text()
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The base64 lines of every PEM private key, and the account key, in the cache: none of them
/// may appear in the log.
fn assert_no_key_material_in(log: &str, cache: &std::path::Path) {
    assert!(
        !log.contains("PRIVATE KEY"),
        "a private key in the log:\n{log}"
    );
    let pem = std::fs::read_to_string(cache.join("certificate.pem")).unwrap();
    let key_block = &pem[..pem.find("-----END PRIVATE KEY").unwrap()];
    for line in key_block
        .lines()
        .filter(|l| !l.starts_with("-----") && l.len() > 20)
    {
        assert!(!log.contains(line), "certificate key material in the log");
    }
    let account: serde_json::Value =
        serde_json::from_slice(&std::fs::read(cache.join("account.json")).unwrap()).unwrap();
    let account_key = account["credentials"]["key_pkcs8"].as_str().unwrap();
    assert!(account_key.len() > 40);
    assert!(!log.contains(&account_key[..40]), "account key in the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_alpn_01_from_an_empty_cache_then_skopeo_pushes_and_a_restart_needs_no_ca() {
    let registry = Registry::start();
    let tls_port = free_port();
    // Nothing listens on pebble's HTTP-01 port: only TLS-ALPN-01 can succeed.
    let mut pebble = Pebble::start(free_port(), tls_port, 90 * 86_400).await;
    let dir = tempfile::tempdir().unwrap();
    let mut gate = GateProcess::start(
        dir.path(),
        tls_port,
        &registry.url(),
        "",
        &acme_section(&pebble, &pebble.directory()),
    )
    .await;
    let root = pebble.root_pem().await;
    let config = client_config_for(&root);
    let started = Instant::now();
    let leaf = wait_for_certificate(&config, &gate).await;
    eprintln!(
        "certificate obtained through TLS-ALPN-01 in {:?}",
        started.elapsed()
    );
    let log = gate.log.text();
    assert!(
        log.contains("no usable certificate in the ACME cache yet"),
        "{log}"
    );
    assert!(
        log.contains("tls-alpn-01") && log.contains("obtained certificate"),
        "{log}"
    );

    // The cache is private.
    let cache = dir.path().join("cache");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&cache), 0o700);
    assert_eq!(mode(&cache.join("certificate.pem")), 0o600);
    assert_eq!(mode(&cache.join("account.json")), 0o600);

    // skopeo trusts pebble's root and pushes through the gate.
    let cert_dir = dir.path().join("certs.d");
    std::fs::create_dir(&cert_dir).unwrap();
    std::fs::write(cert_dir.join("ca.crt"), &root).unwrap();
    let cert_dir = cert_dir.to_str().unwrap();
    let skopeo = Skopeo::new();
    let host = format!("localhost:{tls_port}");
    let (ok, err) = skopeo.login(cert_dir, &host, ALICE.0, ALICE.1).await;
    assert!(ok, "skopeo login: {err}");
    let src = dir.path().join("src");
    oci_layout(&src, "v1", &[tar(&[("etc/hello", b"hello acme\n")])]);
    let (ok, err) = skopeo
        .push(
            cert_dir,
            None,
            &format!("oci:{}:v1", src.display()),
            &format!("docker://{host}/team/acme:v1"),
        )
        .await;
    assert!(ok, "skopeo push: {err}");

    // A restart with a valid cache serves the same certificate and does not contact the CA:
    // the directory now points at a listener that would see any connection.
    gate.stop().await;
    pebble.stop().await;
    assert_no_key_material_in(&gate.log.text(), &cache);
    let fake_ca = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    fake_ca.set_nonblocking(true).unwrap();
    let fake_directory = format!("https://{}/dir", fake_ca.local_addr().unwrap());
    let mut gate = GateProcess::start(
        dir.path(),
        tls_port,
        &registry.url(),
        "",
        &acme_section(&pebble, &fake_directory),
    )
    .await;
    assert_eq!(wait_for_certificate(&config, &gate).await, leaf);
    let (ok, err) = skopeo.login(cert_dir, &host, ALICE.0, ALICE.1).await;
    assert!(ok, "skopeo login after the restart: {err}");
    let log = gate.log.text();
    assert!(
        log.contains("loaded certificate from the ACME cache"),
        "{log}"
    );
    assert!(!log.contains("obtaining a certificate"), "{log}");
    assert!(
        matches!(fake_ca.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the restarted gate contacted the CA"
    );
    gate.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_01_from_an_empty_cache_and_the_plain_port_only_redirects() {
    let registry = Registry::start();
    let (tls_port, http_port) = (free_port(), free_port());
    // Nothing answers TLS-ALPN-01 on pebble's TLS port: only HTTP-01 can succeed.
    let pebble = Pebble::start(http_port, free_port(), 90 * 86_400).await;
    let dir = tempfile::tempdir().unwrap();
    let mut gate = GateProcess::start(
        dir.path(),
        tls_port,
        &registry.url(),
        &format!("acme_http_listen = \"127.0.0.1:{http_port}\""),
        &acme_section(&pebble, &pebble.directory()),
    )
    .await;
    let config = client_config_for(&pebble.root_pem().await);
    let started = Instant::now();
    wait_for_certificate(&config, &gate).await;
    eprintln!(
        "certificate obtained through HTTP-01 in {:?}",
        started.elapsed()
    );
    let log = gate.log.text();
    assert!(
        log.contains("http-01") && log.contains("obtained certificate"),
        "{log}"
    );

    // Everything else on the plain port is a redirect, never the registry.
    // Redirects are not followed; the client's TLS side is unused on http://.
    let client = pebble.pki.client(false);
    let r = client
        .get(format!("http://localhost:{http_port}/v2/_catalog?n=5"))
        .basic_auth(ALICE.0, Some(ALICE.1))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 301);
    assert_eq!(
        r.headers()["location"],
        format!("https://localhost:{tls_port}/v2/_catalog?n=5").as_str()
    );
    let r = client
        .get(format!(
            "http://localhost:{http_port}/.well-known/acme-challenge/unknown"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_no_key_material_in(&gate.log.text(), &dir.path().join("cache"));
    gate.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renews_without_a_failed_request_and_keeps_the_certificate_while_the_ca_is_down() {
    let registry = Registry::start();
    let tls_port = free_port();
    let validity = 45;
    let mut pebble = Pebble::start(free_port(), tls_port, validity).await;
    let dir = tempfile::tempdir().unwrap();
    let mut gate = GateProcess::start(
        dir.path(),
        tls_port,
        &registry.url(),
        "",
        &acme_section(&pebble, &pebble.directory()),
    )
    .await;
    let config = client_config_for(&pebble.root_pem().await);
    let first = wait_for_certificate(&config, &gate).await;

    // A new connection per request until another certificate is served: none may fail.
    let started = Instant::now();
    let (mut requests, mut renewed) = (0, None);
    while renewed.is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(validity + 30),
            "no renewal seen; gate log:\n{}",
            gate.log.text()
        );
        let (status, leaf) = request(&config, &gate)
            .await
            .unwrap_or_else(|e| panic!("request {requests} failed: {e}\n{}", gate.log.text()));
        assert_eq!(status, 401, "request {requests}");
        requests += 1;
        if leaf != first {
            renewed = Some(leaf);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let second = renewed.unwrap();
    eprintln!(
        "renewed after {:?}: {requests} requests on new connections, none failed",
        started.elapsed()
    );
    assert!(
        gate.log.contains("renewed certificate"),
        "{}",
        gate.log.text()
    );

    // The CA goes away: when the next renewal is due it fails, is logged with its reason, and
    // the current certificate stays in service.
    pebble.stop().await;
    gate.log
        .wait_for(
            "ACME order failed, keeping the current certificate",
            Duration::from_secs(validity + 30),
        )
        .await;
    let (status, leaf) = request(&config, &gate).await.unwrap();
    assert_eq!((status, leaf == second), (401, true));
    let log = gate.log.text();
    let line = log
        .lines()
        .find(|l| l.contains("ACME order failed"))
        .unwrap();
    assert!(
        line.contains("not_after") && line.contains("retry_in"),
        "{line}"
    );
    eprintln!("failure logged as: {line}");
    assert_no_key_material_in(&log, &dir.path().join("cache"));
    gate.stop().await;
}
