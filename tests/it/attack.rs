//! Attacks on the one-reading principle: requests the gate and the real registry could read
//! differently, each tried through a running gate in front of Debian's registry.

use reqwest::Method;
use reqwest::header::{CONTENT_TYPE, HeaderValue};

use crate::support::*;

async fn gate_with_rules(registry: &Registry) -> Gate {
    Gate::with_rules(registry, MOUNT_RULES, "", TEAM_USERS).await
}

/// Go's `mime.ParseMediaType` lower-cases with `strings.ToLower`, which maps by Unicode's simple
/// case folding: `İ` (U+0130) becomes `i`, `K` (U+212A, Kelvin) becomes `k`. A `Content-Type` of
/// `applİcation/x-www-form-urlencoded` is a form to the registry, so its body can carry a
/// `mount` and `from` the gate never read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unicode_case_folding_in_content_type_does_not_smuggle_a_form() {
    let registry = Registry::start();
    let gate = gate_with_rules(&registry).await;
    let carol = Api::new(&gate, false, Some(CAROL));
    let secret = carol.push_blob("team-b/app", random_bytes(4096)).await;

    let boundary = "XbOuNdArY";
    let multipart = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"mount\"\r\n\r\n{secret}\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"from\"\r\n\r\nteam-b/app\r\n--{boundary}--\r\n"
    );
    let attempts: [(&str, String); 3] = [
        (
            "appl\u{130}cation/x-www-form-urlencoded",
            format!("mount={secret}&from=team-b%2Fapp"),
        ),
        (
            "APPL\u{130}CATION/X-WWW-FORM-URLENCODED; charset=utf-8",
            format!("mount={secret}&from=team-b%2Fapp"),
        ),
        (
            "mult\u{130}part/form-data; boundary=XbOuNdArY",
            multipart.clone(),
        ),
    ];
    for h2 in [false, true] {
        let alice = Api::new(&gate, h2, Some(ALICE));
        for (i, (ct, body)) in attempts.iter().enumerate() {
            let target = format!("team-a/fold{i}-{}", if h2 { "h2" } else { "h1" });
            let r = alice
                .req(Method::POST, &format!("/v2/{target}/blobs/uploads/"))
                .header(
                    CONTENT_TYPE,
                    HeaderValue::from_bytes(ct.as_bytes()).unwrap(),
                )
                .body(body.clone())
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let text = r.text().await.unwrap();
            assert_eq!(
                carol.blob_status(&target, &secret).await,
                404,
                "{ct:?} (h2: {h2}): answered {status} {text}; the blob of team-b/app was linked into {target}"
            );
            assert_eq!(status, 415, "{ct:?} (h2: {h2}): {text}");
        }
    }
}

/// The `Link` cursor of the filtered catalog must never be a repository the caller may not pull
/// (a per-request scan budget once ended a page on `team-b/s19998` for alice). Here 1 500
/// repositories only carol may pull (two registry pages) come between and after alice's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_catalog_cursor_names_no_repository_the_caller_may_not_pull() {
    let registry = Registry::start();
    let gate = gate_with_rules(&registry).await;
    let alice = Api::new(&gate, false, Some(ALICE));
    alice.push_blob("team-a/one", random_bytes(64)).await;
    alice.push_blob("team-a/two", random_bytes(64)).await;
    // Repositories as the registry's catalog finds them: a directory with `_layers` in it.
    let root = registry
        .dir
        .path()
        .join("data/docker/registry/v2/repositories");
    for i in 0..1_500 {
        let team = if i % 2 == 0 { "team-0" } else { "team-b" };
        std::fs::create_dir_all(root.join(format!("{team}/s{i:05}/_layers"))).unwrap();
    }
    // Follow the links (bounded): every name seen, in bodies or cursors, must be alice's, and
    // the pages still end.
    let mut path = "/v2/_catalog?n=1".to_owned();
    let mut seen = Vec::new();
    let mut finished = false;
    for _ in 0..3 {
        let r = alice.send(Method::GET, &path).await;
        assert_eq!(r.status(), 200, "{path}");
        let link = r
            .headers()
            .get("link")
            .map(|v| v.to_str().unwrap().to_owned());
        let body: serde_json::Value = r.json().await.unwrap();
        for name in body["repositories"].as_array().unwrap() {
            seen.push(name.as_str().unwrap().to_owned());
        }
        let Some(link) = link else {
            finished = true;
            break;
        };
        assert!(
            !link.contains("team-b") && !link.contains("team-0"),
            "the catalog cursor leaks a repository alice may not pull: {link}"
        );
        path = link
            .trim_start_matches('<')
            .split('>')
            .next()
            .unwrap()
            .to_owned();
    }
    assert!(finished, "the catalog pages never ended");
    assert_eq!(seen, ["team-a/one", "team-a/two"]);
    // A cursor naming a hidden repository tells nothing about it: the page is what follows it
    // in name order, as for any other string.
    let r = alice
        .send(Method::GET, "/v2/_catalog?last=team-0%2Fs00000")
        .await;
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        body["repositories"],
        serde_json::json!(["team-a/one", "team-a/two"])
    );
}

/// Probes that held, kept as regressions: another repository's upload session, and request
/// targets no client library sends (a fragment, a second `?`, an absolute form naming another
/// host, a lower-case method, a form body hidden behind `Connection`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_sessions_and_odd_request_targets_hold() {
    let registry = Registry::start();
    let gate = gate_with_rules(&registry).await;
    let carol = Api::new(&gate, false, Some(CAROL));
    let alice = Api::new(&gate, false, Some(ALICE));
    let secret = carol.push_blob("team-b/app", random_bytes(4096)).await;

    // carol's upload session in team-b/app, replayed by alice under team-a/x: the registry's
    // `_state` names the repository, so no method continues or finishes it.
    let r = carol
        .send(Method::POST, "/v2/team-b/app/blobs/uploads/")
        .await;
    assert_eq!(r.status(), 202);
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    let (_, tail) = location.split_once("/blobs/uploads/").unwrap();
    let hijack = format!("/v2/team-a/x/blobs/uploads/{tail}");
    let data = random_bytes(64);
    let digest = format!("sha256:{}", sha256_hex(&data));
    for method in [Method::GET, Method::PATCH, Method::PUT, Method::DELETE] {
        let url = if method == Method::PUT {
            format!("{hijack}&digest={digest}")
        } else {
            hijack.clone()
        };
        let r = alice
            .req(method.clone(), &url)
            .header("content-type", "application/octet-stream")
            .body(data.clone())
            .send()
            .await
            .unwrap();
        assert!(!r.status().is_success(), "{method} {url}: {}", r.status());
    }
    // carol's session is intact.
    let r = carol.send(Method::GET, &location).await;
    assert_eq!(r.status(), 204, "carol's upload session was disturbed");

    let auth = basic(ALICE.0, ALICE.1);
    let host = gate.host();
    let tries = [
        // The fragment is no part of the query the gate reads, nor of what it forwards.
        format!(
            "POST /v2/team-a/r0/blobs/uploads/?#&mount={secret}&from=team-b%2Fapp HTTP/1.1\r\nHost: {host}\r\nAuthorization: {auth}\r\nContent-Length: 0"
        ),
        // A second `?` is part of a value.
        format!(
            "POST /v2/team-a/r1/blobs/uploads/?a=1?&mount={secret}&from=team-b%2Fapp HTTP/1.1\r\nHost: {host}\r\nAuthorization: {auth}\r\nContent-Length: 0"
        ),
        // An absolute-form target naming another host than Host.
        format!(
            "POST https://evil.example/v2/team-a/r2/blobs/uploads/?mount={secret}&from=team-b%2Fapp HTTP/1.1\r\nHost: {host}\r\nAuthorization: {auth}\r\nContent-Length: 0"
        ),
        // A lower-case method.
        format!(
            "post /v2/team-a/r3/blobs/uploads/?mount={secret}&from=team-b%2Fapp HTTP/1.1\r\nHost: {host}\r\nAuthorization: {auth}\r\nContent-Length: 0"
        ),
        // A form body whose Content-Type the client asks hops to drop.
        format!(
            "POST /v2/team-a/r4/blobs/uploads/ HTTP/1.1\r\nHost: {host}\r\nAuthorization: {auth}\r\nConnection: content-type\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\nmount={secret}&from=team-b%2Fapp",
            format!("mount={secret}&from=team-b%2Fapp").len()
        ),
    ];
    for (i, t) in tries.iter().enumerate() {
        let (status, answer) = raw_request(&gate, t).await;
        let r = carol
            .send(Method::HEAD, &format!("/v2/team-a/r{i}/blobs/{secret}"))
            .await;
        assert_eq!(
            r.status(),
            404,
            "try {i} ({status}): the blob was linked: {answer}"
        );
    }
}
