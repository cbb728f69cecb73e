//! The gate in front of the real registry, through the registry API over HTTP/1.1 and HTTP/2.

use std::time::{Duration, Instant};

use crate::support::*;
use reqwest::Method;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_api_over_http1_and_http2() {
    let registry = Registry::start();
    let gate = Gate::start(&registry.url(), "").await;
    for h2 in [false, true] {
        let api = Api::new(&gate, h2, Some(ALICE));
        let repo = if h2 { "team/app2" } else { "team/app" };
        let layer = random_bytes(3 << 20);
        let (manifest, layers) = api.push_image(repo, "v1", vec![layer.clone()]).await;

        // The upload Location names the gate's own host and port, over https.
        let r = api
            .send(Method::POST, &format!("/v2/{repo}/blobs/uploads/"))
            .await;
        let expected_version = if h2 {
            reqwest::Version::HTTP_2
        } else {
            reqwest::Version::HTTP_11
        };
        assert_eq!(r.version(), expected_version);
        let loc = r.headers()["location"].to_str().unwrap();
        assert!(
            loc.starts_with(&format!("{}/v2/{repo}/blobs/uploads/", gate.url())),
            "{loc}"
        );
        api.send(Method::DELETE, loc).await;

        // HEAD passes length and digest through untouched.
        let r = api
            .send(Method::HEAD, &format!("/v2/{repo}/blobs/{}", layers[0]))
            .await;
        assert_eq!(r.status(), 200);
        assert_eq!(
            r.headers()["content-length"],
            layer.len().to_string().as_str()
        );
        assert_eq!(r.headers()["docker-content-digest"], layers[0].as_str());
        assert_eq!(
            r.headers()
                .get_all("docker-distribution-api-version")
                .iter()
                .count(),
            1
        );

        // Range: 206 with the exact slice.
        let r = api
            .req(Method::GET, &format!("/v2/{repo}/blobs/{}", layers[0]))
            .header("range", "bytes=1000-1999")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 206);
        assert_eq!(
            r.headers()["content-range"],
            format!("bytes 1000-1999/{}", layer.len()).as_str()
        );
        assert_eq!(&r.bytes().await.unwrap()[..], &layer[1000..2000]);

        // The whole blob, streamed back.
        let r = api
            .send(Method::GET, &format!("/v2/{repo}/blobs/{}", layers[0]))
            .await;
        assert_eq!(
            sha256_hex(&r.bytes().await.unwrap()),
            layers[0].trim_start_matches("sha256:")
        );

        let tags: serde_json::Value = api
            .send(Method::GET, &format!("/v2/{repo}/tags/list"))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(tags["tags"], serde_json::json!(["v1"]));
        let catalog: serde_json::Value = api
            .send(Method::GET, "/v2/_catalog")
            .await
            .json()
            .await
            .unwrap();
        assert!(
            catalog["repositories"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r == repo),
            "{catalog}"
        );

        // Query strings pass byte for byte (the registry checks its HMAC-signed _state).
        let r = api
            .send(
                Method::GET,
                &format!("/v2/_catalog?n=1&last={}", urlencode(repo)),
            )
            .await;
        assert_eq!(r.status(), 200);

        let r = api
            .send(Method::DELETE, &format!("/v2/{repo}/manifests/{manifest}"))
            .await;
        assert_eq!(r.status(), 202);
        let r = api
            .send(Method::GET, &format!("/v2/{repo}/manifests/{manifest}"))
            .await;
        assert_eq!(r.status(), 404);
    }
}

fn urlencode(s: &str) -> String {
    s.replace('/', "%2F")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_requests_get_the_json_challenge() {
    let registry = Registry::start();
    let gate = Gate::start(&registry.url(), "[auth]\nrealm = \"Team Registry\"\n").await;
    for creds in [
        None,
        Some(("alice", "wrong")),
        Some(("nobody", "x")),
        Some(("", "")),
    ] {
        let api = Api::new(&gate, false, creds);
        let r = api.send(Method::GET, "/v2/").await;
        assert_eq!(r.status(), 401, "{creds:?}");
        assert_eq!(
            r.headers()["www-authenticate"],
            "Basic realm=\"Team Registry\""
        );
        assert_eq!(
            r.headers()
                .get_all("docker-distribution-api-version")
                .iter()
                .count(),
            1
        );
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/json")
        );
        assert_eq!(error_code(&r.text().await.unwrap()), "UNAUTHORIZED");
    }
    let api = Api::new(&gate, false, Some(ALICE));
    let r = api.send(Method::GET, "/v2/").await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()
            .get_all("docker-distribution-api-version")
            .iter()
            .count(),
        1
    );
    // Garbage in the header is a 401, never a 400 or 500.
    for bad in ["Basic !!!", "Basic YWxpY2U=", "Bearer x", "Basic"] {
        let r = gate
            .pki
            .client(false)
            .get(format!("{}/v2/", gate.url()))
            .header("authorization", bad)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{bad}");
    }
    let r = gate
        .pki
        .client(false)
        .get(format!("{}/elsewhere", gate.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(error_code(&r.text().await.unwrap()), "NOT_FOUND");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_docker_clients_get_404_and_modern_go_passes() {
    let registry = Registry::start();
    let gate = Gate::start(&registry.url(), "").await;
    let api = Api::new(&gate, false, Some(ALICE));
    for (ua, status) in [
        ("docker/1.4.1 go/go1.3.3", 404),
        ("docker/1.5.0 go/go1.4.1", 404),
        ("Go 1.1 package http", 404),
        ("docker/1.5.0-dev go/go1.4", 200),
        ("docker/1.6.2 go/go1.4.2", 200),
        ("Go-http-client/1.1", 200),
        ("docker/20.10.24 go/go1.19.10", 200),
    ] {
        let r = api
            .req(Method::GET, "/v2/")
            .header("user-agent", ua)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status, "{ua}");
        if status == 404 {
            assert_eq!(
                r.headers()["docker-distribution-api-version"],
                "registry/2.0"
            );
            error_code(&r.text().await.unwrap());
        }
    }
    let off = Gate::start(&registry.url(), "block_old_clients = false\n").await;
    let r = Api::new(&off, false, Some(ALICE))
        .req(Method::GET, "/v2/")
        .header("user-agent", "docker/1.4.1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_down_is_a_quick_json_502() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    // upstream_retry = 0: answered at once, not held for a registry to come back (fleet.rs
    // tests the holding).
    let gate = Gate::start(
        &format!("http://{addr}"),
        "[timeouts]\nupstream_connect = 2\nupstream_retry = 0\n",
    )
    .await;
    let api = Api::new(&gate, false, Some(ALICE));
    let start = Instant::now();
    let r = api.send(Method::GET, "/v2/").await;
    assert_eq!(r.status(), 502);
    assert!(start.elapsed() < Duration::from_secs(3));
    let body = r.text().await.unwrap();
    assert_eq!(error_code(&body), "UNAVAILABLE");
    assert!(body.contains("connect"), "{body}");
}

/// The version check that starts every docker login, push and pull: the registry's own answer
/// first, then the gate's while the registry answers; once it stops, the registry's error within
/// the freshness window (5 s), and the registry's answers again once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_version_check_is_answered_by_the_gate_only_while_the_registry_answers() {
    let mut registry = Registry::start();
    let gate = Gate::start(&registry.url(), "[timeouts]\nupstream_retry = 0\n").await;
    let check = |api: &Api, method: Method| {
        let req = api.req(method, "/v2/");
        async move {
            let r = req.send().await.unwrap();
            let status = r.status().as_u16();
            let headers = r.headers().clone();
            (status, headers, r.text().await.unwrap())
        }
    };
    for h2 in [false, true] {
        let api = Api::new(&gate, h2, Some(ALICE));
        let (status, headers, body) = check(&api, Method::GET).await;
        assert_eq!((status, body.as_str()), (200, "{}"));
        let mark = registry.log_mark();
        for method in [Method::GET, Method::HEAD, Method::GET] {
            let (status, h, body) = check(&api, method.clone()).await;
            assert_eq!(status, 200, "{method}");
            assert_eq!(body, if method == Method::HEAD { "" } else { "{}" });
            for name in ["content-type", "content-length"] {
                assert_eq!(h.get(name), headers.get(name), "{name}");
            }
            assert_eq!(
                h.get_all("docker-distribution-api-version").iter().count(),
                1
            );
        }
        assert_eq!(
            registry.requests_since(mark, "/v2/"),
            0,
            "answered by the gate"
        );
        // Anonymous callers still get the challenge, never the gate's answer.
        let (status, _, _) = check(&Api::new(&gate, h2, None), Method::GET).await;
        assert_eq!(status, 401);
        let (status, _, _) =
            check(&Api::new(&gate, h2, Some((ALICE.0, "wrong"))), Method::GET).await;
        assert_eq!(status, 401);
    }

    let api = Api::new(&gate, false, Some(ALICE));
    registry.stop();
    let stopped = Instant::now();
    eventually(
        Duration::from_secs(10),
        "the version check reports the registry down",
        || async { check(&api, Method::GET).await.0 == 502 },
    )
    .await;
    assert!(
        stopped.elapsed() < Duration::from_secs(7),
        "the gate answered for {:?} after the registry stopped",
        stopped.elapsed()
    );
    registry.restart();
    eventually(
        Duration::from_secs(20),
        "the registry answers again",
        || async { check(&api, Method::GET).await.0 == 200 },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_upstream_is_a_json_504_after_the_response_timeout() {
    // The real registry always answers; a listener that never does stands in for a stuck one.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let gate = Gate::start(
        &format!("http://{addr}"),
        "[timeouts]\nupstream_response = 1\n",
    )
    .await;
    let r = Api::new(&gate, false, Some(ALICE))
        .send(Method::GET, "/v2/")
        .await;
    assert_eq!(r.status(), 504);
    assert_eq!(error_code(&r.text().await.unwrap()), "UNAVAILABLE");
    holder.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aborted_upload_leaves_the_gate_healthy() {
    let registry = Registry::start();
    let gate = Gate::start(&registry.url(), "").await;
    let api = Api::new(&gate, false, Some(ALICE));
    let r = api.send(Method::POST, "/v2/team/app/blobs/uploads/").await;
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    // A body that sends 4 MiB and then fails: the client drops the connection mid-upload.
    let chunks: Vec<Result<bytes::Bytes, std::io::Error>> = vec![
        Ok(bytes::Bytes::from(random_bytes(4 << 20))),
        Err(std::io::Error::other("client gave up")),
    ];
    let aborted = api
        .req(Method::PATCH, &location)
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await;
    assert!(aborted.is_err());
    // The next push works, on a new connection and on the pooled upstream side.
    let (_, layers) = api
        .push_image("team/app", "after-abort", vec![random_bytes(1 << 20)])
        .await;
    let r = api
        .send(Method::HEAD, &format!("/v2/team/app/blobs/{}", layers[0]))
        .await;
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_are_cut_off_after_the_header_timeout() {
    let registry = Registry::start();
    let gate = Gate::start(&registry.url(), "[timeouts]\nheader_read = 1\n").await;
    let mut tls = tls_connect(&gate).await;
    let start = Instant::now();
    tls.write_all(b"GET /v2/ HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .unwrap();
    // Never finish the head; the gate must close the connection.
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "connection still open after 10 s");
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_on_the_tls_port_is_refused_without_a_challenge() {
    let registry = Registry::start();
    let gate = Gate::start(&registry.url(), "").await;
    let mut tcp = tokio::net::TcpStream::connect(gate.addr).await.unwrap();
    tcp.write_all(b"GET /v2/ HTTP/1.1\r\nHost: localhost\r\nAuthorization: Basic YWxpY2U6YWxpY2Utc2VjcmV0\r\n\r\n").await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&buf);
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    assert!(
        text.to_ascii_lowercase().contains("connection: close"),
        "{text}"
    );
    assert!(
        !text.to_ascii_lowercase().contains("www-authenticate"),
        "{text}"
    );
    assert!(text.contains("HTTPS"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_an_open_download_finish() {
    let registry = Registry::start();
    let blob = random_bytes(16 << 20);
    for h2 in [false, true] {
        shutdown_lets_a_download_finish(&registry, h2, &blob).await;
    }
}

/// Over HTTP/2 the drain sends a GOAWAY; the stream already open goes on to its end.
async fn shutdown_lets_a_download_finish(registry: &Registry, h2: bool, blob: &[u8]) {
    let mut gate = Gate::start(&registry.url(), "").await;
    let api = Api::new(&gate, h2, Some(ALICE));
    let (_, layers) = api.push_image("team/big", "v1", vec![blob.to_vec()]).await;
    let mut resp = api
        .send(Method::GET, &format!("/v2/team/big/blobs/{}", layers[0]))
        .await;
    assert_eq!(resp.version() == reqwest::Version::HTTP_2, h2);
    let first = resp.chunk().await.unwrap().unwrap();
    let shutdown = tokio::spawn({
        let running = gate.running.take().unwrap();
        async move { running.shutdown().await }
    });
    // New connections are refused once the gate stops accepting.
    let addr = gate.addr;
    eventually(Duration::from_secs(5), "listener closed", || async move {
        tokio::net::TcpStream::connect(addr).await.is_err()
    })
    .await;
    let mut got = first.to_vec();
    while let Some(c) = resp.chunk().await.unwrap() {
        got.extend_from_slice(&c);
    }
    assert_eq!(got.len(), blob.len(), "h2: {h2}");
    assert_eq!(sha256_hex(&got), sha256_hex(blob));
    tokio::time::timeout(Duration::from_secs(10), shutdown)
        .await
        .unwrap()
        .unwrap();
}

/// HTTP/2 responses leave the gate in batches of frames (net/coalesce.rs). Streams multiplexed
/// on one connection, one of them stalled by its reader while the others run, all arrive whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_downloads_sharing_a_connection_with_a_stalled_one_arrive_whole() {
    let registry = Registry::start();
    let gate = Gate::start(&registry.url(), "").await;
    let api = Api::new(&gate, true, Some(ALICE));
    let layer = random_bytes(6 << 20);
    let (_, layers) = api.push_image("team/many", "v1", vec![layer]).await;
    let path = format!("/v2/team/many/blobs/{}", layers[0]);
    let want = layers[0].trim_start_matches("sha256:");

    let all = async {
        // The stalled one reads one chunk, then nothing until the others are done.
        let mut stalled = api.send(Method::GET, &path).await;
        assert_eq!(stalled.version(), reqwest::Version::HTTP_2);
        let mut body = stalled.chunk().await.unwrap().unwrap().to_vec();
        let others = futures_util::future::join_all((0..6).map(|_| async {
            let r = api.send(Method::GET, &path).await;
            assert_eq!(r.version(), reqwest::Version::HTTP_2);
            sha256_hex(&r.bytes().await.unwrap())
        }))
        .await;
        for digest in others {
            assert_eq!(digest, want);
        }
        while let Some(chunk) = stalled.chunk().await.unwrap() {
            body.extend_from_slice(&chunk);
        }
        assert_eq!(sha256_hex(&body), want);
    };
    tokio::time::timeout(Duration::from_secs(60), all)
        .await
        .expect("the downloads finish within 60 s");
}
