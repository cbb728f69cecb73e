//! CORS as a real browser applies it: Debian's headless Chromium, driven by playwright-core
//! (tests/browser/cors.mjs), loads a small page of ours from the gate's `/ui` and calls the real
//! registry through the gate: from the same origin, from a second allowed origin, and from an
//! origin that is not allowed. Needs `npm ci` in tests/browser and `/usr/bin/chromium`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::support::*;
use reqwest::Method;
use serde_json::{Value, json};

const CHROMIUM: &str = "/usr/bin/chromium";

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// Percent-encodes everything but unreserved characters (RFC 3986 §2.3), for the URL fragment.
fn encode_component(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Fails at once, with what to do, when the browser side is not installed.
fn require_browser_tools() {
    let dir = browser_dir();
    assert!(
        dir.join("node_modules/playwright-core/package.json")
            .exists(),
        "{}/node_modules is missing: run `npm ci` in tests/browser before `cargo test` (CI does)",
        dir.display()
    );
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: install Debian's chromium package"
    );
}

/// Runs cors.mjs with `input`; returns its JSON output.
async fn run_browser(input: &Value) -> Value {
    let dir = browser_dir();
    let child = tokio::process::Command::new("node")
        .arg(dir.join("cors.mjs"))
        .env("BROWSER_TEST", input.to_string())
        .current_dir(&dir)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(180), child)
        .await
        .expect("node tests/browser/cors.mjs did not finish within 180 s")
        .expect("run node (is nodejs installed?)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "cors.mjs failed ({}):\n{stderr}\n{stdout}",
        out.status
    );
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("cors.mjs printed no JSON ({e}):\n{stdout}\n{stderr}"))
}

/// The status a step got, or its error text.
fn status(results: &Value, step: &str) -> Result<u64, String> {
    let r = &results[step];
    r["status"]
        .as_u64()
        .ok_or_else(|| r["error"].as_str().unwrap_or("no result").to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_reaches_the_registry_from_allowed_origins_only() {
    require_browser_tools();
    let registry = Registry::start();
    let page_dir = browser_dir().join("page");
    let ui = format!("[ui]\ndir = \"{}\"\n", page_dir.display());
    // The second origin serves the same page; it is started first so the first can allow it.
    let second = Gate::start(&registry.url(), &ui).await;
    let allowed_origin = format!("https://localhost:{}", second.addr.port());
    // Chromium treats 127.0.0.1 and localhost as different origins: this one is not listed.
    let blocked_origin = format!("https://127.0.0.1:{}", second.addr.port());
    let gate = Gate::start(
        &registry.url(),
        &format!("[cors]\nallow_origins = [\"{allowed_origin}\"]\n{ui}"),
    )
    .await;

    let api = Api::new(&gate, false, Some(ALICE));
    let mut scenarios = Vec::new();
    let mut digests = Vec::new();
    for (name, page_origin, target) in [
        ("same", gate.url(), None),
        ("allowed", allowed_origin.clone(), Some(gate.url())),
        ("blocked", blocked_origin.clone(), Some(gate.url())),
    ] {
        let repo = format!("browser/{name}");
        let (digest, _) = api.push_image(&repo, "v1", vec![random_bytes(2048)]).await;
        let params = json!({
            "target": target, "user": ALICE.0, "password": ALICE.1,
            "repo": repo, "digest": digest,
        });
        scenarios.push(json!({
            "name": name,
            "url": format!("{page_origin}/ui/#{}", encode_component(&params.to_string())),
        }));
        digests.push((name, repo, digest));
    }
    let out = run_browser(&json!({
        "spki": [gate.pki.leaf_spki_sha256, second.pki.leaf_spki_sha256],
        "scenarios": scenarios,
    }))
    .await;
    let report = serde_json::to_string_pretty(&out).unwrap();

    for (name, repo, digest) in &digests {
        let s = &out["scenarios"][name];
        assert_eq!(
            s["pageStatus"], 200,
            "{name}: the page did not load\n{report}"
        );
        assert!(
            s["error"].is_null(),
            "{name}: page did not finish\n{report}"
        );
        let results = &s["results"];
        assert!(results["acceptLength"].as_u64().unwrap() > 128, "{report}");
        match *name {
            "same" | "allowed" => {
                // Every call went through, and the page could read what a UI needs.
                assert_eq!(status(results, "anonCatalog"), Ok(401), "{name}\n{report}");
                assert!(
                    results["anonCatalog"]["wwwAuthenticate"]
                        .as_str()
                        .is_some_and(|v| v.starts_with("Basic")),
                    "{name}: the 401's challenge is readable\n{report}"
                );
                assert_eq!(status(results, "catalog"), Ok(200), "{name}\n{report}");
                let repos = &results["catalog"]["body"]["repositories"];
                assert!(
                    repos.as_array().unwrap().iter().any(|r| r == repo.as_str()),
                    "{name}\n{report}"
                );
                assert_eq!(status(results, "anonManifest"), Ok(401), "{name}\n{report}");
                assert_eq!(status(results, "manifest"), Ok(200), "{name}\n{report}");
                assert_eq!(
                    results["manifest"]["digest"],
                    digest.as_str(),
                    "{name}: Docker-Content-Digest is readable\n{report}"
                );
                assert_eq!(status(results, "upload"), Ok(202), "{name}\n{report}");
                assert!(
                    results["upload"]["location"].is_string()
                        && results["upload"]["uuid"].is_string(),
                    "{name}: Location and Docker-Upload-UUID are readable\n{report}"
                );
                assert_eq!(status(results, "delete"), Ok(202), "{name}\n{report}");
            }
            _ => {
                // The browser refused every response (and sent no DELETE after the preflight).
                for step in [
                    "anonCatalog",
                    "catalog",
                    "anonManifest",
                    "manifest",
                    "upload",
                    "delete",
                ] {
                    let got = status(results, step);
                    assert!(
                        got.as_ref().is_err_and(|e| e.starts_with("TypeError")),
                        "{name} {step}: expected the browser to block it, got {got:?}\n{report}"
                    );
                }
            }
        }
    }

    // Same origin: the page found the gate's own origin through ${REGISTRY_URL}.
    let same = &out["scenarios"]["same"]["results"];
    assert_eq!(same["target"], gate.url(), "{report}");
    assert_eq!(same["origin"], gate.url(), "{report}");
    // Cross-origin calls were preflighted (Chromium caches an accepted answer per URL for
    // max_age, so each URL shows up once): the manifest URL first for the long Accept alone, and
    // the gate's 204 let the GET, the credentialed GET and the DELETE through. Same-origin calls
    // were not preflighted.
    let preflighted = |name: &str| -> Vec<String> {
        out["scenarios"][name]["preflights"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u.as_str().unwrap().to_owned())
            .collect()
    };
    let allowed_digest = &digests[1].2;
    for path in [
        "/v2/_catalog".to_owned(),
        format!("/v2/browser/allowed/manifests/{allowed_digest}"),
        "/v2/browser/allowed/blobs/uploads/".to_owned(),
    ] {
        let url = format!("{}{path}", gate.url());
        assert!(preflighted("allowed").contains(&url), "{url}\n{report}");
    }
    assert!(!preflighted("blocked").is_empty(), "{report}");
    assert_eq!(preflighted("same"), Vec::<String>::new(), "{report}");

    // What the registry holds now: deleted from the allowed origins, untouched from the other.
    for (name, repo, digest) in &digests {
        let r = api
            .req(Method::HEAD, &format!("/v2/{repo}/manifests/{digest}"))
            .header("accept", "application/vnd.oci.image.manifest.v1+json")
            .send()
            .await
            .unwrap();
        let expected = if *name == "blocked" { 200 } else { 404 };
        assert_eq!(r.status(), expected, "{name}: manifest after the page ran");
    }
}
