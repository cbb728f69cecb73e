//! CORS and the `/ui` static files, over HTTP against the gate in front of the real registry.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::support::*;
use reqwest::Method;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const UI_ORIGIN: &str = "https://ui.example";
const EVIL_ORIGIN: &str = "https://evil.example";

fn cors_section(extra: &str) -> String {
    format!("[cors]\nallow_origins = [\"{UI_ORIGIN}\"]\n{extra}")
}

/// The `access-control-*` headers of a response, for "none at all" checks.
fn cors_headers(h: &reqwest::header::HeaderMap) -> Vec<String> {
    h.keys()
        .map(|k| k.as_str().to_owned())
        .filter(|k| k.starts_with("access-control-"))
        .collect()
}

fn assert_decorated(h: &reqwest::header::HeaderMap, what: &str) {
    assert_eq!(h["access-control-allow-origin"], UI_ORIGIN, "{what}");
    assert_eq!(h["access-control-allow-credentials"], "true", "{what}");
    let expose = h["access-control-expose-headers"].to_str().unwrap();
    for name in [
        "Docker-Content-Digest",
        "Location",
        "Range",
        "Docker-Upload-UUID",
        "WWW-Authenticate",
    ] {
        assert!(expose.contains(name), "{what}: {expose}");
    }
    assert!(vary_has_origin(h), "{what}: {h:?}");
}

fn vary_has_origin(h: &reqwest::header::HeaderMap) -> bool {
    h.get_all("vary")
        .iter()
        .any(|v| v.to_str().unwrap().to_ascii_lowercase().contains("origin"))
}

/// An upstream that only counts connections: anything forwarded shows up here.
async fn counting_upstream() -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            c.fetch_add(1, Ordering::SeqCst);
            held.push(s);
        }
    });
    (format!("http://{addr}"), count)
}

fn preflight(gate: &Gate, path: &str, origin: Option<&str>) -> reqwest::RequestBuilder {
    let b = gate
        .pki
        .client(false)
        .request(Method::OPTIONS, format!("{}{path}", gate.url()))
        .header("access-control-request-method", "DELETE")
        .header("access-control-request-headers", "authorization,x-extra");
    match origin {
        Some(o) => b.header("origin", o),
        None => b,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preflights_are_answered_by_the_gate_before_auth_and_never_forwarded() {
    let (upstream, forwarded) = counting_upstream().await;
    let gate = Gate::start(&upstream, &cors_section("max_age = 300\n")).await;

    // Allowed origin, on a path that would otherwise be a 401: the full answer.
    let r = preflight(&gate, "/v2/team/app/manifests/v1", Some(UI_ORIGIN))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let h = r.headers();
    assert_eq!(h["access-control-allow-origin"], UI_ORIGIN);
    assert_eq!(h["access-control-allow-credentials"], "true");
    assert_eq!(
        h["access-control-allow-methods"],
        "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"
    );
    let allow = h["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    for name in [
        "authorization",
        "accept",
        "content-type",
        "content-range",
        "cache-control",
        "x-extra",
    ] {
        assert!(allow.split(", ").any(|n| n == name), "{name}: {allow}");
    }
    assert_eq!(h["access-control-max-age"], "300");
    assert!(vary_has_origin(h));
    assert!(h.get("www-authenticate").is_none());

    // A requested header that is not a token is not echoed.
    let r = gate
        .pki
        .client(false)
        .request(Method::OPTIONS, format!("{}/v2/", gate.url()))
        .header("origin", UI_ORIGIN)
        .header("access-control-request-method", "GET")
        .header("access-control-request-headers", "x-ok, bad\"name")
        .send()
        .await
        .unwrap();
    let allow = r.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap();
    assert!(allow.contains("x-ok") && !allow.contains("bad"), "{allow}");

    // A disallowed origin: still the gate's 204 (not a 401, not forwarded), without CORS headers.
    for path in ["/v2/team/app/manifests/v1", "/v2/", "/ui/", "/elsewhere"] {
        let r = preflight(&gate, path, Some(EVIL_ORIGIN))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204, "{path}");
        assert_eq!(cors_headers(r.headers()), Vec::<String>::new(), "{path}");
    }

    // No Origin: not a preflight, so an ordinary request that needs credentials.
    let r = preflight(&gate, "/v2/", None).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(cors_headers(r.headers()), Vec::<String>::new());

    // Without [cors] the gate still answers preflights itself, with no CORS headers at all.
    let plain = Gate::start(&upstream, "").await;
    let r = preflight(&plain, "/v2/team/app/manifests/v1", Some(UI_ORIGIN))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(cors_headers(r.headers()), Vec::<String>::new());
    assert!(!vary_has_origin(r.headers()));

    assert_eq!(
        forwarded.load(Ordering::SeqCst),
        0,
        "a preflight reached the upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_to_an_allowed_origin_carries_the_cors_headers() {
    let registry = Registry::start();
    let gate = Gate::start(&registry.url(), &cors_section("")).await;
    let alice = Api::new(&gate, false, Some(ALICE));
    let (manifest, _) = alice
        .push_image("team/app", "v1", vec![random_bytes(1000)])
        .await;
    let anon = Api::new(&gate, false, None);
    let wrong = Api::new(&gate, false, Some(("alice", "wrong")));

    for origin in [Some(UI_ORIGIN), Some(EVIL_ORIGIN), None] {
        let with_origin = |b: reqwest::RequestBuilder| match origin {
            Some(o) => b.header("origin", o),
            None => b,
        };
        let answers = [
            (
                "401 anonymous",
                with_origin(anon.req(Method::GET, "/v2/")),
                401,
            ),
            (
                "401 wrong password",
                with_origin(wrong.req(Method::GET, "/v2/_catalog")),
                401,
            ),
            (
                "202 upload start",
                with_origin(alice.req(Method::POST, "/v2/team/app/blobs/uploads/")),
                202,
            ),
            (
                "200 proxied",
                with_origin(alice.req(Method::GET, "/v2/_catalog")),
                200,
            ),
            (
                "200 manifest HEAD",
                with_origin(
                    alice
                        .req(Method::HEAD, &format!("/v2/team/app/manifests/{manifest}"))
                        .header("accept", "application/vnd.oci.image.manifest.v1+json"),
                ),
                200,
            ),
            (
                "404 from the registry",
                with_origin(alice.req(Method::GET, "/v2/team/none/manifests/v1")),
                404,
            ),
            (
                "404 from the gate",
                with_origin(alice.req(Method::GET, "/elsewhere")),
                404,
            ),
        ];
        for (what, req, status) in answers {
            let r = req.send().await.unwrap();
            assert_eq!(r.status(), status, "{what} {origin:?}");
            let what = format!("{what} {origin:?}");
            match origin {
                Some(UI_ORIGIN) => assert_decorated(r.headers(), &what),
                _ => {
                    assert_eq!(cors_headers(r.headers()), Vec::<String>::new(), "{what}");
                    // With [cors] configured, the answer depends on Origin: caches must know.
                    assert!(vary_has_origin(r.headers()), "{what}");
                }
            }
        }
    }

    // A same-origin DELETE carries an Origin that is not listed: served, never refused.
    let r = alice
        .req(
            Method::DELETE,
            &format!("/v2/team/app/manifests/{manifest}"),
        )
        .header("origin", gate.url())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(cors_headers(r.headers()), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_cors_section_there_are_no_cors_headers() {
    let registry = Registry::start();
    let gate = Gate::start(&registry.url(), "").await;
    let alice = Api::new(&gate, false, Some(ALICE));
    for req in [
        Api::new(&gate, false, None).req(Method::GET, "/v2/"),
        alice.req(Method::GET, "/v2/_catalog"),
        alice.req(Method::POST, "/v2/team/app/blobs/uploads/"),
    ] {
        let r = req.header("origin", UI_ORIGIN).send().await.unwrap();
        assert!(r.status().as_u16() < 500);
        assert_eq!(cors_headers(r.headers()), Vec::<String>::new());
        assert!(!vary_has_origin(r.headers()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wildcard_origin_works_without_credentials() {
    let registry = Registry::start();
    let gate = Gate::start(
        &registry.url(),
        "[cors]\nallow_origins = [\"*\"]\nallow_credentials = false\n",
    )
    .await;
    let r = Api::new(&gate, false, None)
        .req(Method::GET, "/v2/")
        .header("origin", EVIL_ORIGIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
    assert!(
        r.headers()
            .get("access-control-allow-credentials")
            .is_none()
    );
}

// ---- /ui ----

/// A UI folder with a sibling secret and symlinks in and out; returns (parent dir, ui dir).
fn ui_fixture() -> (tempfile::TempDir, std::path::PathBuf) {
    let top = tempfile::tempdir().unwrap();
    let ui = top.path().join("ui");
    let outside = top.path().join("outside");
    for d in [
        &ui,
        &outside,
        &ui.join("sub"),
        &ui.join("nolist"),
        &ui.join(".git"),
    ] {
        std::fs::create_dir_all(d).unwrap();
    }
    let write = |p: &Path, s: &str| std::fs::write(p, s).unwrap();
    write(&top.path().join("Cargo.toml"), "secret-cargo");
    write(&outside.join("secret.txt"), "secret-outside");
    write(
        &ui.join("index.html"),
        "<html><x-ui registry-url=\"${REGISTRY_URL}\" pull-url=\"${PULL_URL}\" title=\"${REGISTRY_TITLE}\"></x-ui></html>",
    );
    write(&ui.join("app.js"), "console.log('app');\n");
    write(&ui.join("style.css"), "body { color: black }\n");
    write(
        &ui.join("logo.svg"),
        "<svg xmlns=\"http://www.w3.org/2000/svg\"/>",
    );
    write(&ui.join("data.bin"), "0123456789");
    write(&ui.join("sub/index.html"), "<p>sub</p>");
    write(&ui.join("nolist/a.txt"), "a");
    write(&ui.join(".hidden"), "secret-hidden");
    write(&ui.join(".git/config"), "secret-git");
    let link =
        |target: &Path, name: &str| std::os::unix::fs::symlink(target, ui.join(name)).unwrap();
    link(&outside.join("secret.txt"), "leak.txt");
    link(&outside, "outdir");
    link(Path::new("app.js"), "inside.js");
    link(Path::new(".hidden"), "dotlink");
    link(Path::new("/etc/passwd"), "passwd");
    (top, ui)
}

fn ui_section(ui: &Path, extra: &str) -> String {
    format!("[ui]\ndir = \"{}\"\n{extra}", ui.display())
}

struct Raw {
    status: u16,
    head: String,
    body: Vec<u8>,
}

/// Sends `path` byte for byte (no client-side normalization of `..` or `%2e`).
async fn raw_get(gate: &Gate, path: &[u8]) -> Raw {
    let mut tls = tls_connect(gate).await;
    let mut req = b"GET ".to_vec();
    req.extend_from_slice(path);
    req.extend_from_slice(b" HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    tls.write_all(&req).await.unwrap();
    let mut buf = Vec::new();
    let _ = tls.read_to_end(&mut buf).await;
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(buf.len());
    let head = String::from_utf8_lossy(&buf[..split]).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Raw {
        status,
        head,
        body: buf.get(split + 4..).unwrap_or_default().to_vec(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_path_trick_leaves_the_ui_folder() {
    let registry = Registry::start();
    let (_top, ui) = ui_fixture();
    let gate = Gate::start(&registry.url(), &ui_section(&ui, "")).await;

    let r = raw_get(&gate, b"/ui/app.js").await;
    assert_eq!(r.status, 200, "{}", r.head);
    for path in [
        "/ui/../Cargo.toml",
        "/ui/%2e%2e/Cargo.toml",
        "/ui/%2E%2e/Cargo.toml",
        "/ui/%252e%252e/Cargo.toml",
        "/ui/..%5cCargo.toml",
        "/ui/..%5c..%5cCargo.toml",
        "/ui/sub/..%2f..%2fCargo.toml",
        "/ui/sub/../../Cargo.toml",
        "/ui/./app.js",
        "/ui/a%00b",
        "/ui/app.js%00.png",
        "/ui//etc/passwd",
        "/ui/.hidden",
        "/ui/%2ehidden",
        "/ui/.git/config",
        "/ui/leak.txt",
        "/ui/outdir/secret.txt",
        "/ui/passwd",
        "/ui/dotlink",
        "/ui/nolist/",
        "/ui/missing.js",
    ] {
        let r = raw_get(&gate, path.as_bytes()).await;
        assert_eq!(r.status, 404, "{path}: {}", r.head);
        assert!(
            !String::from_utf8_lossy(&r.body).contains("secret"),
            "{path}"
        );
        assert!(
            !String::from_utf8_lossy(&r.body).contains("root:"),
            "{path}"
        );
    }
    // A raw backslash is refused by the HTTP parser or by the UI; never served.
    for path in [&b"/ui/..\\Cargo.toml"[..], b"/ui/sub\\..\\..\\Cargo.toml"] {
        let r = raw_get(&gate, path).await;
        assert!(
            r.status == 400 || r.status == 404,
            "{}: {}",
            String::from_utf8_lossy(path),
            r.head
        );
        assert!(!String::from_utf8_lossy(&r.body).contains("secret"));
    }
    // Symlinks that stay inside the folder are served; a folder without index.html has files.
    let r = raw_get(&gate, b"/ui/inside.js").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"console.log('app');\n");
    let r = raw_get(&gate, b"/ui/nolist/a.txt").await;
    assert_eq!(r.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ui_files_are_served_with_types_validators_and_ranges() {
    let registry = Registry::start();
    let (_top, ui) = ui_fixture();
    let gate = Gate::start(
        &registry.url(),
        &ui_section(&ui, "[ui.vars]\nREGISTRY_TITLE = \"Team \\\"R\\\"\"\n"),
    )
    .await;
    let client = gate.pki.client(false);
    let get = |path: &str| client.get(format!("{}{path}", gate.url()));

    let r = get("/ui").send().await.unwrap();
    assert_eq!(r.status(), 301);
    assert_eq!(r.headers()["location"], "/ui/");
    let r = get("/ui/sub").send().await.unwrap();
    assert_eq!(r.status(), 301);
    assert_eq!(r.headers()["location"], "/ui/sub/");

    let r = get("/ui/").send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/html; charset=utf-8");
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    let page = r.text().await.unwrap();
    assert!(
        page.contains(&format!("registry-url=\"{}\"", gate.url())),
        "{page}"
    );
    assert!(
        page.contains(&format!("pull-url=\"{}\"", gate.host())),
        "{page}"
    );
    assert!(page.contains("title=\"Team &quot;R&quot;\""), "{page}");
    let r = get("/ui/sub/").send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), "<p>sub</p>");

    for (path, ctype) in [
        ("/ui/index.html", "text/html; charset=utf-8"),
        ("/ui/app.js", "text/javascript; charset=utf-8"),
        ("/ui/style.css", "text/css; charset=utf-8"),
        ("/ui/logo.svg", "image/svg+xml"),
        ("/ui/data.bin", "application/octet-stream"),
    ] {
        let r = get(path).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(r.headers()["content-type"], ctype, "{path}");
        assert_eq!(r.headers()["x-content-type-options"], "nosniff", "{path}");
    }

    // ETag and If-None-Match.
    let r = get("/ui/app.js").send().await.unwrap();
    let etag = r.headers()["etag"].to_str().unwrap().to_owned();
    let modified = r.headers()["last-modified"].to_str().unwrap().to_owned();
    assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");
    for inm in [
        etag.clone(),
        format!("W/{etag}"),
        format!("\"x\", {etag}"),
        "*".into(),
    ] {
        let r = get("/ui/app.js")
            .header("if-none-match", &inm)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 304, "{inm}");
        assert_eq!(r.headers()["etag"], etag.as_str());
        assert!(r.bytes().await.unwrap().is_empty());
    }
    let r = get("/ui/app.js")
        .header("if-none-match", "\"other\"")
        .header("if-modified-since", &modified)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "If-None-Match wins over If-Modified-Since");

    // Last-Modified and If-Modified-Since.
    let r = get("/ui/app.js")
        .header("if-modified-since", &modified)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);
    let r = get("/ui/app.js")
        .header("if-modified-since", "Thu, 01 Jan 1998 00:00:00 GMT")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // The rendered index: its ETag is that of the rendered page, and revalidates.
    let r = get("/ui/").send().await.unwrap();
    let index_etag = r.headers()["etag"].to_str().unwrap().to_owned();
    let rendered = r.bytes().await.unwrap();
    assert_eq!(
        index_etag,
        format!("\"{}\"", &sha256_hex(&rendered)[..32]),
        "the ETag hashes the page as served"
    );
    let r = get("/ui/")
        .header("if-none-match", &index_etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);

    // HEAD: the headers of a GET, no body.
    let r = client
        .head(format!("{}/ui/data.bin", gate.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-length"], "10");
    assert_eq!(r.headers()["content-type"], "application/octet-stream");
    assert!(r.bytes().await.unwrap().is_empty());

    // Range.
    let r = get("/ui/data.bin")
        .header("range", "bytes=2-5")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.headers()["content-range"], "bytes 2-5/10");
    assert_eq!(r.bytes().await.unwrap(), "2345");
    let r = get("/ui/data.bin")
        .header("range", "bytes=-3")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.bytes().await.unwrap(), "789");
    let r = get("/ui/data.bin")
        .header("range", "bytes=10-")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 416);
    assert_eq!(r.headers()["content-range"], "bytes */10");

    // Only GET and HEAD.
    let r = client
        .post(format!("{}/ui/app.js", gate.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ui_auth_public_url_and_no_ui() {
    let registry = Registry::start();
    let (_top, ui) = ui_fixture();

    // public_url wins over the Host; [ui] auth puts the UI behind Basic auth.
    let gate = Gate::start(
        &registry.url(),
        &format!(
            "public_url = \"https://registry.example.com:8443\"\n{}",
            ui_section(&ui, "auth = true\n")
        ),
    )
    .await;
    let r = Api::new(&gate, false, None).send(Method::GET, "/ui/").await;
    assert_eq!(r.status(), 401);
    assert!(r.headers().contains_key("www-authenticate"));
    let r = Api::new(&gate, false, Some(ALICE))
        .send(Method::GET, "/ui/")
        .await;
    assert_eq!(r.status(), 200);
    let page = r.text().await.unwrap();
    assert!(
        page.contains("registry-url=\"https://registry.example.com:8443\""),
        "{page}"
    );
    assert!(
        page.contains("pull-url=\"registry.example.com:8443\""),
        "{page}"
    );

    // Without [ui] auth the UI is public, while the registry still is not.
    let open = Gate::start(&registry.url(), &ui_section(&ui, "")).await;
    let anon = Api::new(&open, false, None);
    assert_eq!(anon.send(Method::GET, "/ui/app.js").await.status(), 200);
    assert_eq!(anon.send(Method::GET, "/v2/").await.status(), 401);

    // Without [ui], /ui is an ordinary 404.
    let none = Gate::start(&registry.url(), "").await;
    let r = Api::new(&none, false, Some(ALICE))
        .send(Method::GET, "/ui/")
        .await;
    assert_eq!(r.status(), 404);
    assert_eq!(error_code(&r.text().await.unwrap()), "NOT_FOUND");
}

#[tokio::test]
async fn a_ui_folder_that_is_missing_or_too_big_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = registry_gate::config::UiConfig {
        dir: dir.path().join("missing"),
        auth: false,
        vars: Default::default(),
    };
    let err = registry_gate::http::ui::Ui::load(&config)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("missing"), "{err}");

    let big = dir.path().join("big");
    std::fs::create_dir(&big).unwrap();
    let file = std::fs::File::create(big.join("huge.bin")).unwrap();
    file.set_len(registry_gate::http::ui::MAX_TOTAL_BYTES + 1)
        .unwrap();
    let config = registry_gate::config::UiConfig { dir: big, ..config };
    let err = registry_gate::http::ui::Ui::load(&config)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("more than"), "{err}");
}

#[test]
fn the_ui_example_config_loads() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/ui.toml");
    let config = registry_gate::config::Config::load(Some(&path), std::iter::empty()).unwrap();
    let ui = config.ui.unwrap();
    assert_eq!(ui.dir, Path::new("/srv/registry-ui"));
    assert!(!ui.auth);
    assert_eq!(ui.vars["DELETE_IMAGES"], "true");
    assert!(config.cors.is_none(), "the same-origin UI needs no [cors]");
}
