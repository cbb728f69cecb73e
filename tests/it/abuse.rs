//! Abuse: brute force (parallel and abandoned guesses, per-user across addresses), cross-site
//! admin writes, connection caps, idle HTTP/2, oversized h2 headers, slow token bodies.
//! Different client addresses come from binding client sockets to 127.0.0.x.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::{self, ALICE, BOB, Gate, Registry, basic, eventually};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

async fn metric(gate: &Gate, name: &str) -> u64 {
    let text = gate.metrics_text().await;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0)
}

/// A client whose connections come from `from`.
fn client_from(gate: &Gate, from: IpAddr, h2: bool) -> reqwest::Client {
    let alpn: &[&[u8]] = if h2 { &[b"h2"] } else { &[b"http/1.1"] };
    let mut b = reqwest::Client::builder()
        .use_preconfigured_tls(gate.pki.client_config(alpn))
        .resolve("localhost", gate.addr)
        .local_address(from)
        .no_proxy();
    if !h2 {
        b = b.http1_only();
    }
    b.build().unwrap()
}

async fn tcp_from(from: IpAddr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let s = TcpSocket::new_v4()?;
    s.bind(SocketAddr::new(from, 0))?;
    s.connect(to).await
}

async fn tls_from(
    gate: &Gate,
    from: IpAddr,
    alpn: &[&[u8]],
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = tcp_from(from, gate.addr).await?;
    tokio_rustls::TlsConnector::from(Arc::new(gate.pki.client_config(alpn)))
        .connect("localhost".try_into().unwrap(), tcp)
        .await
}

async fn v2_status(client: &reqwest::Client, gate: &Gate, user: &str, pw: &str) -> u16 {
    client
        .get(format!("{}/v2/", gate.url()))
        .header("authorization", basic(user, pw))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

/// Rewrites the users with bcrypt cost 10 and waits until the gate uses them.
async fn cost10_users(gate: &Gate) {
    let before = metric(
        gate,
        "registry_gate_reloads_total{kind=\"users\",outcome=\"success\"}",
    )
    .await;
    let mut text = String::new();
    for (u, p) in [ALICE, BOB] {
        text.push_str(&format!("{u}:{}\n", bcrypt::hash(p, 10).unwrap()));
    }
    support::write_atomic(&gate.htpasswd, text.as_bytes());
    eventually(Duration::from_secs(10), "users reloaded", || async {
        metric(
            gate,
            "registry_gate_reloads_total{kind=\"users\",outcome=\"success\"}",
        )
        .await
            > before
    })
    .await;
}

/// After `n` good checks that had to queue for a hashing slot, no earlier hash is running
/// (tokio's semaphore is fair): the hash counter is final.
async fn settle(gate: &Gate) {
    let slots = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut tasks = Vec::new();
    for i in 0..slots {
        let c = client_from(gate, ip(&format!("127.0.1.{}", i + 1)), false);
        let url = gate.url();
        // A password that is wrong but never seen: a real hash, not merged with another.
        tasks.push(tokio::spawn(async move {
            c.get(format!("{url}/v2/"))
                .header("authorization", basic("settle", &format!("x{i}")))
                .send()
                .await
                .map(|r| r.status().as_u16())
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), 401);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_and_abandoned_guesses_cost_at_most_the_brake_limit() {
    let registry = Registry::start();
    let gate = Gate::start(
        &registry.url(),
        "admin_listen = \"127.0.0.1:0\"\n[auth]\nbrake_failures = 10\nbrake_window = 60\n",
    )
    .await;
    cost10_users(&gate).await;
    let hashes = "registry_gate_password_hashes_total";

    // Alice logs in once from 127.0.0.1: her verified credentials are never braked there.
    let local = client_from(&gate, ip("127.0.0.1"), false);
    assert_eq!(v2_status(&local, &gate, ALICE.0, ALICE.1).await, 200);
    let h0 = metric(&gate, hashes).await;

    // 60 parallel wrong passwords from one address.
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..60 {
        let (c, url) = (local.clone(), gate.url());
        tasks.push(tokio::spawn(async move {
            c.get(format!("{url}/v2/"))
                .header("authorization", basic(ALICE.0, &format!("guess{i}")))
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0)
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    let took = started.elapsed();
    settle(&gate).await;
    let h1 = metric(&gate, hashes).await;
    let slots = std::thread::available_parallelism().map_or(2, |n| n.get()) as u64;
    let parallel_hashes = h1 - h0 - slots;
    let n401 = statuses.iter().filter(|s| **s == 401).count();
    let n429 = statuses.iter().filter(|s| **s == 429).count();
    eprintln!("60 parallel: {parallel_hashes} hashes, {n401} x 401, {n429} x 429, {took:?}");
    assert!(parallel_hashes <= 10, "{parallel_hashes} hashes");
    assert_eq!(n401 + n429, 60, "{statuses:?}");
    assert_eq!(v2_status(&local, &gate, ALICE.0, "next").await, 429);
    assert_eq!(
        v2_status(&local, &gate, ALICE.0, ALICE.1).await,
        200,
        "cached credentials are never braked"
    );

    // 120 requests from 127.0.0.2, each dropped ~30 ms after it was sent.
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..120 {
        let gate_addr = gate.addr;
        let config = Arc::new(gate.pki.client_config(&[b"http/1.1"]));
        tasks.push(tokio::spawn(async move {
            let tcp = tcp_from(ip("127.0.0.2"), gate_addr).await.unwrap();
            let mut tls = tokio_rustls::TlsConnector::from(config)
                .connect("localhost".try_into().unwrap(), tcp)
                .await
                .unwrap();
            let req = format!(
                "GET /v2/ HTTP/1.1\r\nHost: localhost\r\nAuthorization: {}\r\n\r\n",
                basic(BOB.0, &format!("drop{i}"))
            );
            tls.write_all(req.as_bytes()).await.unwrap();
            // The scenario itself, not synchronization: give up 30 ms after sending.
            tokio::time::sleep(Duration::from_millis(30)).await;
            drop(tls);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    settle(&gate).await;
    let h2 = metric(&gate, hashes).await;
    let abandoned_hashes = h2 - h1 - slots;
    eprintln!(
        "120 abandoned: {abandoned_hashes} hashes, {:?}",
        started.elapsed()
    );
    assert!(abandoned_hashes <= 10, "{abandoned_hashes} hashes");
    let second = client_from(&gate, ip("127.0.0.2"), false);
    assert_eq!(
        v2_status(&second, &gate, BOB.0, "next").await,
        429,
        "abandoned guesses count"
    );
    // A good password from another address still gets in.
    let other = client_from(&gate, ip("127.0.0.3"), false);
    assert_eq!(v2_status(&other, &gate, BOB.0, BOB.1).await, 200);

    // Per user: guesses spread over many addresses trip the user's counter (3 x 10).
    let mut tripped = None;
    for n in 0..40u8 {
        let c = client_from(&gate, IpAddr::from([127, 0, 2, n + 1]), false);
        if v2_status(&c, &gate, "carol", &format!("g{n}")).await == 429 {
            tripped = Some(n);
            break;
        }
    }
    assert_eq!(tripped, Some(30), "the 31st guess for one user is refused");
    let fresh = client_from(&gate, ip("127.0.3.1"), false);
    assert_eq!(v2_status(&fresh, &gate, "carol", "again").await, 429);
    assert_eq!(v2_status(&fresh, &gate, "dave", "x").await, 401);
}

async fn admin_post(gate: &Gate, headers: &[(&str, &str)]) -> (u16, String) {
    let addr = gate.running.as_ref().unwrap().admin_addr.unwrap();
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut req = "POST /admin/read-only?state=off HTTP/1.1\r\n".to_owned();
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("Content-Length: 0\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, out)
}

#[tokio::test]
async fn cross_site_admin_writes_are_refused_and_the_cli_works() {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("admin.token");
    std::fs::write(&token_file, "s3cret-token\n").unwrap();
    let gate = Gate::start(&registry.url(), "admin_listen = \"127.0.0.1:0\"\n").await;
    let addr = gate.running.as_ref().unwrap().admin_addr.unwrap();
    let own = addr.to_string();

    let ok = admin_post(&gate, &[("Host", &own), ("X-Registry-Gate", "cli")]).await;
    assert_eq!(ok.0, 200, "{}", ok.1);
    for bad in [
        vec![
            ("Host", own.as_str()),
            ("X-Registry-Gate", "cli"),
            ("Origin", "https://evil.example"),
        ],
        vec![("Host", "evil.example:9095"), ("X-Registry-Gate", "cli")],
        vec![("Host", own.as_str())],
    ] {
        let (status, text) = admin_post(&gate, &bad).await;
        assert_eq!(status, 403, "{bad:?}: {text}");
        assert!(text.contains("\"code\":\"DENIED\""), "{text}");
        assert!(text.contains("application/json"), "{text}");
    }

    // The CLI sends what the listener wants.
    let bin = env!("CARGO_BIN_EXE_registry-gate");
    let out = tokio::process::Command::new(bin)
        .args(["read-only", "status", "--admin", &own])
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let out = tokio::process::Command::new(bin)
        .args(["read-only", "on", "--admin", &own, "--timeout", "5"])
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(
        gate.running
            .as_ref()
            .unwrap()
            .gate
            .maintenance
            .is_read_only()
    );

    // With admin_token, writes need it; the CLI reads it from the config.
    let registry2 = Registry::start();
    let gate2 = Gate::start(
        &registry2.url(),
        &format!(
            "admin_listen = \"127.0.0.1:0\"\nadmin_token = \"{}\"\n",
            token_file.display()
        ),
    )
    .await;
    let own2 = gate2
        .running
        .as_ref()
        .unwrap()
        .admin_addr
        .unwrap()
        .to_string();
    let (status, _) = admin_post(&gate2, &[("Host", &own2), ("X-Registry-Gate", "cli")]).await;
    assert_eq!(status, 403);
    let (status, _) = admin_post(
        &gate2,
        &[
            ("Host", "gate.internal:9095"),
            ("X-Registry-Gate", "cli"),
            ("Authorization", "Bearer s3cret-token"),
        ],
    )
    .await;
    assert_eq!(status, 200);
    let out = tokio::process::Command::new(bin)
        .args([
            "read-only",
            "on",
            "--timeout",
            "5",
            "--admin",
            &own2,
            "--config",
        ])
        .arg(&gate2.config_path)
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(
        gate2
            .running
            .as_ref()
            .unwrap()
            .gate
            .maintenance
            .is_read_only()
    );
}

#[tokio::test]
async fn bind_errors_name_the_setting() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let htpasswd = dir.path().join("htpasswd");
    support::write_htpasswd(&htpasswd, &[ALICE]);
    let config = registry_gate::config::Config::load(
        None,
        [
            (
                "REGISTRY_GATE_PLAIN_LISTEN".to_owned(),
                "127.0.0.1:0".to_owned(),
            ),
            (
                "REGISTRY_GATE_UPSTREAM".to_owned(),
                "http://127.0.0.1:1".to_owned(),
            ),
            (
                "REGISTRY_GATE_ADMIN_LISTEN".to_owned(),
                format!("127.0.0.1:{port}"),
            ),
            (
                "REGISTRY_GATE_AUTH_HTPASSWD".to_owned(),
                htpasswd.display().to_string(),
            ),
        ],
    )
    .unwrap();
    let err = registry_gate::start(&config)
        .await
        .err()
        .unwrap()
        .to_string();
    assert_eq!(
        err,
        format!("admin_listen 127.0.0.1:{port}: address in use")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_client_cap_closes_extra_connections_while_others_are_served() {
    let registry = Registry::start();
    let gate = Gate::start(
        &registry.url(),
        "admin_listen = \"127.0.0.1:0\"\n[limits]\nmax_connections_per_client = 4\n",
    )
    .await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(
            tls_from(&gate, ip("127.0.0.5"), &[b"http/1.1"])
                .await
                .unwrap(),
        );
    }
    // The fifth from the same address is closed before TLS.
    let fifth = tls_from(&gate, ip("127.0.0.5"), &[b"http/1.1"]).await;
    assert!(fifth.is_err(), "fifth connection accepted");
    eventually(Duration::from_secs(5), "refusal counted", || async {
        metric(
            &gate,
            "registry_gate_connections_refused_total{reason=\"per_client\"}",
        )
        .await
            >= 1
    })
    .await;
    // Meanwhile another client is served, over h1 and h2.
    for h2 in [false, true] {
        let c = client_from(&gate, ip("127.0.0.6"), h2);
        assert_eq!(v2_status(&c, &gate, ALICE.0, ALICE.1).await, 200);
    }
    // A held connection still works; closing one frees a place.
    let mut first = held.remove(0);
    first
        .write_all(b"GET /v2/ HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    first.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    drop(first);
    eventually(Duration::from_secs(5), "a place is free again", || async {
        tls_from(&gate, ip("127.0.0.5"), &[b"http/1.1"])
            .await
            .is_ok()
    })
    .await;
}

async fn h2_connect(
    gate: &Gate,
) -> (
    hyper::client::conn::http2::SendRequest<http_body_util::Empty<bytes::Bytes>>,
    tokio::task::JoinHandle<Result<(), hyper::Error>>,
) {
    let tls = tls_from(gate, ip("127.0.0.1"), &[b"h2"]).await.unwrap();
    let (send, conn) =
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .unwrap();
    (send, tokio::spawn(conn))
}

#[tokio::test]
async fn idle_h2_connections_close_and_big_h2_headers_are_refused() {
    let registry = Registry::start();
    let gate = Gate::start(&registry.url(), "[timeouts]\nh2_idle = 1\n").await;

    let (mut send, conn) = h2_connect(&gate).await;
    let req = http::Request::get(format!("{}/v2/", gate.url()))
        .header("authorization", basic(ALICE.0, ALICE.1))
        .body(http_body_util::Empty::new())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    drop(resp);
    let started = Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(10), conn).await;
    let idle_close = started.elapsed();
    eprintln!("idle h2 connection closed after {idle_close:?}: {ended:?}");
    let ended = ended.expect("idle h2 connection still open after 10 s");
    // A GOAWAY first: the client knows not to start a request on it (without one, hyper's client
    // sees the connection cut and reports an error).
    assert!(
        ended.unwrap().is_ok(),
        "idle h2 connection cut without GOAWAY"
    );
    assert!(
        send.is_closed(),
        "the client may still send on the closed connection"
    );
    assert!(idle_close >= Duration::from_millis(900), "{idle_close:?}");

    // More than 64 KiB of headers: refused over h2 as over h1.
    let (status, _) = support::raw_request(
        &gate,
        &format!(
            "GET /v2/ HTTP/1.1\r\nHost: localhost\r\nX-Big: {}\r\n",
            "a".repeat(70 * 1024)
        ),
    )
    .await;
    assert!(status == 431 || status == 0, "h1 answered {status}");
    let (mut send, _conn) = h2_connect(&gate).await;
    let req = http::Request::get(format!("{}/v2/", gate.url()))
        .header("authorization", basic(ALICE.0, ALICE.1))
        .header("x-big", "a".repeat(70 * 1024))
        .body(http_body_util::Empty::new())
        .unwrap();
    match send.send_request(req).await {
        Ok(r) => assert_eq!(r.status(), 431, "h2 accepted 70 KiB of headers"),
        Err(e) => eprintln!("h2 big headers: {e}"),
    }
}

/// The frame types in what an HTTP/2 server sent, read from its first frame on.
fn h2_frame_types(mut bytes: &[u8]) -> Vec<u8> {
    let mut types = Vec::new();
    while bytes.len() >= 9 {
        let len = u32::from_be_bytes([0, bytes[0], bytes[1], bytes[2]]) as usize;
        types.push(bytes[3]);
        bytes = &bytes[(9 + len).min(bytes.len())..];
    }
    types
}

/// SETTINGS_INITIAL_WINDOW_SIZE in the first SETTINGS frame of a new HTTP/2 connection.
async fn h2_initial_window(gate: &Gate) -> u32 {
    const SETTINGS: u8 = 4;
    const INITIAL_WINDOW_SIZE: u16 = 4;
    let mut tls = tls_from(gate, ip("127.0.0.1"), &[b"h2"]).await.unwrap();
    tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .unwrap();
    let mut head = [0u8; 9];
    tls.read_exact(&mut head).await.unwrap();
    assert_eq!(head[3], SETTINGS, "the server's first frame");
    let mut payload = vec![0u8; u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize];
    tls.read_exact(&mut payload).await.unwrap();
    payload
        .chunks_exact(6)
        .find(|s| u16::from_be_bytes([s[0], s[1]]) == INITIAL_WINDOW_SIZE)
        .map_or(65_535, |s| u32::from_be_bytes([s[2], s[3], s[4], s[5]]))
}

/// What uploads may park in the gate is bounded per connection by its HTTP/2 windows; with many
/// connections open, new ones get narrower windows, and wide ones again once they are gone.
#[tokio::test]
async fn http2_windows_narrow_while_many_connections_are_open() {
    let registry = Registry::start();
    let gate = Gate::start(&registry.url(), "").await;
    assert_eq!(h2_initial_window(&gate).await, 256 * 1024);
    let mut crowd = Vec::new();
    for _ in 0..16 {
        crowd.push(tcp_from(ip("127.0.0.1"), gate.addr).await.unwrap());
    }
    eventually(Duration::from_secs(5), "narrow windows", || async {
        h2_initial_window(&gate).await == 128 * 1024
    })
    .await;
    drop(crowd);
    eventually(Duration::from_secs(5), "wide windows again", || async {
        h2_initial_window(&gate).await == 256 * 1024
    })
    .await;
}

#[tokio::test]
async fn an_idle_h2_client_that_ignores_the_goaway_is_dropped() {
    const GOAWAY: u8 = 7;
    let registry = Registry::start();
    let gate = Gate::start(&registry.url(), "[timeouts]\nh2_idle = 1\n").await;
    let mut tls = tls_from(&gate, ip("127.0.0.1"), &[b"h2"]).await.unwrap();
    // The client preface and an empty SETTINGS frame, then silence: the GOAWAY's ping is never
    // answered, so the connection cannot close the graceful way.
    tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .unwrap();
    let started = Instant::now();
    let mut sent = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(15), tls.read_to_end(&mut sent)).await;
    let dropped_after = started.elapsed();
    let types = h2_frame_types(&sent);
    eprintln!("dropped after {dropped_after:?}, frames {types:?}, read {read:?}");
    assert!(read.is_ok(), "still open after 15 s");
    assert!(types.contains(&GOAWAY), "no GOAWAY in {types:?}");
    // h2_idle (1 s), then the grace for the ping's answer (5 s).
    assert!(dropped_after >= Duration::from_secs(5), "{dropped_after:?}");
}

#[tokio::test]
async fn a_slow_token_body_is_cut_off() {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("token.key");
    registry_gate::token::write_key(&key, false).unwrap();
    let gate = Gate::start(
        &registry.url(),
        &format!(
            "[timeouts]\nheader_read = 1\n[auth]\nmode = \"token\"\nservice = \"test\"\ntoken_key = \"{}\"\n",
            key.display()
        ),
    )
    .await;
    let mut tls = tls_from(&gate, ip("127.0.0.1"), &[b"http/1.1"])
        .await
        .unwrap();
    tls.write_all(
        b"POST /token HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\ngrant_type=",
    )
    .await
    .unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer);
    assert!(read.is_ok(), "no answer within 10 s");
    eprintln!("slow token body cut after {:?}", started.elapsed());
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    assert!(text.contains("too slow"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_trusted_proxy_the_brake_keys_on_the_forwarded_client() {
    let registry = Registry::start();
    let gate = Gate::start(
        &registry.url(),
        "trusted_proxies = [\"127.0.0.1\"]\n[auth]\nbrake_failures = 3\nbrake_window = 60\n",
    )
    .await;
    let client = gate.pki.client(false);
    let ping = |from: &'static str, password: &'static str| {
        let client = client.clone();
        let url = format!("{}/v2/", gate.url());
        async move {
            client
                .get(url)
                .basic_auth(ALICE.0, Some(password))
                .header("x-forwarded-for", from)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    for _ in 0..3 {
        assert_eq!(ping("198.51.100.1", "wrong").await, 401);
    }
    // That client is braked, though every request came from the proxy's address ...
    assert_eq!(ping("198.51.100.1", "wrong").await, 429);
    // ... and another client behind the same proxy is not.
    assert_eq!(ping("198.51.100.2", ALICE.1).await, 200);
    // A client cannot pick a fresh address by prepending one: the proxy's entry is the
    // nearest untrusted one.
    assert_eq!(ping("203.0.113.5, 198.51.100.1", "wrong").await, 429);
}
