//! Who may pull, push and delete what: the rules through the running gate, against the real
//! registry, with skopeo for real pushes and pulls.

use std::time::Duration;

use crate::support::*;
use reqwest::Method;

async fn gate_with_rules(registry: &Registry, rules: &str) -> (Gate, std::path::PathBuf) {
    gate_with_rules_and(registry, rules, "").await
}

/// A gate with `rules`, and `top` top-level config keys.
async fn gate_with_rules_and(
    registry: &Registry,
    rules: &str,
    top: &str,
) -> (Gate, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap().keep();
    let path = dir.join("access.toml");
    std::fs::write(&path, rules).unwrap();
    let gate = Gate::start_with_users(
        &registry.url(),
        &format!("{top}\n[auth]\naccess = \"{}\"\n", path.display()),
        GROUP_USERS,
    )
    .await;
    (gate, path)
}

/// A gate with the group rules and an admin listener, and that listener's `HOST:PORT`, as
/// `registry-gate read-only --admin` takes it.
async fn gate_with_admin(registry: &Registry) -> (Gate, String) {
    let (gate, _) =
        gate_with_rules_and(registry, GROUP_RULES, "admin_listen = \"127.0.0.1:0\"").await;
    let admin = gate.admin_url().trim_start_matches("http://").to_owned();
    (gate, admin)
}

/// `registry-gate read-only ARGS --admin ADMIN`.
fn read_only(admin: &str, args: &[&str]) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(GATE_BIN);
    c.arg("read-only")
        .args(args)
        .args(["--admin", admin])
        .kill_on_drop(true);
    c
}

/// Starts a blob upload to `repo` (202); returns its Location.
async fn start_upload(api: &Api, repo: &str) -> String {
    let r = api
        .send(Method::POST, &format!("/v2/{repo}/blobs/uploads/"))
        .await;
    assert_eq!(r.status(), 202);
    r.headers()["location"].to_str().unwrap().to_owned()
}

const FAKE_DIGEST: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";

/// The status each action gets: pull = GET manifest, push = POST upload, delete = DELETE a
/// manifest digest the registry does not have (404 when allowed, so nothing is lost).
async fn try_action(api: &Api, action: &str, repo: &str) -> u16 {
    let r = match action {
        "pull" => {
            api.req(Method::GET, &format!("/v2/{repo}/manifests/v1"))
                .header("accept", "application/vnd.oci.image.manifest.v1+json")
                .send()
                .await
        }
        "push" => {
            api.req(Method::POST, &format!("/v2/{repo}/blobs/uploads/"))
                .send()
                .await
        }
        "delete" => {
            api.req(
                Method::DELETE,
                &format!("/v2/{repo}/manifests/{FAKE_DIGEST}"),
            )
            .send()
            .await
        }
        _ => unreachable!(),
    }
    .unwrap();
    let status = r.status().as_u16();
    if status == 202 && action == "push" {
        let loc = r.headers()["location"].to_str().unwrap().to_owned();
        api.send(Method::DELETE, &loc).await;
    }
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_cell_of_the_access_matrix() {
    let registry = Registry::start();
    let (gate, _) = gate_with_rules(&registry, GROUP_RULES).await;
    let carol = Api::new(&gate, false, Some(CAROL));
    let repos = [
        "team-a/app",
        "team-a/sub/app",
        "team-b/app",
        "public/base",
        "tools/x",
        "tools/x/y",
    ];
    for repo in repos {
        carol.push_image(repo, "v1", vec![random_bytes(1024)]).await;
    }
    // (who, repo, action) -> allowed; everything not listed is refused.
    let allowed = |who: &str, repo: &str, action: &str| -> bool {
        match who {
            "carol" => true,
            "alice" => {
                (repo.starts_with("team-a/") && action != "delete")
                    || (repo.starts_with("public/") && action == "pull")
            }
            "ci-bot" => {
                action == "pull"
                    && (repo.starts_with("team-a/")
                        || repo == "tools/x"
                        || repo.starts_with("public/"))
            }
            "bob" | "anonymous" => action == "pull" && repo.starts_with("public/"),
            _ => false,
        }
    };
    let mut failures = Vec::new();
    for (who, creds) in [
        ("alice", Some(ALICE)),
        ("ci-bot", Some(CI)),
        ("carol", Some(CAROL)),
        ("bob", Some(BOB)),
        ("anonymous", None),
    ] {
        let api = Api::new(&gate, false, creds);
        for repo in repos {
            for action in ["pull", "push", "delete"] {
                let got = try_action(&api, action, repo).await;
                let want: &[u16] = match (allowed(who, repo, action), action, who) {
                    (true, "pull", _) => &[200],
                    (true, "push", _) => &[202],
                    (true, "delete", _) => &[404],
                    (false, _, "anonymous") => &[401],
                    (false, _, _) => &[403],
                    _ => unreachable!(),
                };
                if !want.contains(&got) {
                    failures.push(format!("{who} {action} {repo}: got {got}, want {want:?}"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // A refusal is the registry's JSON error.
    let r = Api::new(&gate, false, Some(BOB))
        .send(Method::GET, "/v2/team-b/app/manifests/v1")
        .await;
    assert_eq!(r.status(), 403);
    assert_eq!(error_code(&r.text().await.unwrap()), "DENIED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_push_and_pull_follow_the_rules() {
    let registry = Registry::start();
    let (gate, _) = gate_with_rules(&registry, GROUP_RULES).await;
    let skopeo = Skopeo::new();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    oci_layout(&src, "v1", &[tar(&[("f", &random_bytes(256 << 10))])]);
    let cert_dir = gate.pki.cert_dir.to_str().unwrap().to_owned();
    let oci = format!("oci:{}:v1", src.display());
    let push = |creds: String, repo: &str| {
        let dest = format!("docker://{}/{repo}:v1", gate.host());
        let (skopeo, cert_dir, oci) = (&skopeo, cert_dir.clone(), oci.clone());
        async move { skopeo.push(&cert_dir, Some(&creds), &oci, &dest).await }
    };
    let alice = creds(ALICE);
    let ci = creds(CI);
    let (ok, err) = push(alice.clone(), "team-a/sub/app").await;
    assert!(ok, "alice may push to team-a/sub/app: {err}");
    let (ok, err) = push(alice.clone(), "team-b/app").await;
    assert!(!ok, "alice may not push to team-b");
    assert!(err.contains("denied") || err.contains("403"), "{err}");
    let (ok, _) = push(ci.clone(), "team-a/sub/app").await;
    assert!(!ok, "ci-bot may not push");
    let out = work.path().join("out");
    let (ok, err) = skopeo
        .pull(
            &cert_dir,
            &ci,
            &format!("docker://{}/team-a/sub/app:v1", gate.host()),
            &format!("oci:{}:v1", out.display()),
        )
        .await;
    assert!(ok, "ci-bot may pull team-a: {err}");
    // Anonymous pull of a public repository, the way `skopeo --no-creds` does it.
    let carol = creds(CAROL);
    let (ok, err) = push(carol, "public/base").await;
    assert!(ok, "{err}");
    let (ok, err) = skopeo
        .inspect_anonymously(
            &cert_dir,
            &format!("docker://{}/public/base:v1", gate.host()),
        )
        .await;
    assert!(ok, "anonymous may pull public/base: {err}");
    let (ok, _) = skopeo
        .inspect_anonymously(
            &cert_dir,
            &format!("docker://{}/team-a/sub/app:v1", gate.host()),
        )
        .await;
    assert!(!ok, "anonymous may not pull team-a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_tricks_never_reach_a_denied_repository() {
    let registry = Registry::start();
    let (gate, _) = gate_with_rules(&registry, GROUP_RULES).await;
    Api::new(&gate, false, Some(CAROL))
        .push_image("team-b/app", "v1", vec![random_bytes(64)])
        .await;
    let auth = basic(BOB.0, BOB.1);
    let long = "a/".repeat(130) + "public";
    let tricks = [
        "/v2/public/..%2Fteam-b/app/manifests/v1".to_owned(),
        "/v2/public%2F..%2Fteam-b%2Fapp/manifests/v1".into(),
        "/v2/team-b%2Fapp/manifests/v1".into(),
        "/v2/public/%2e%2e/team-b/app/manifests/v1".into(),
        "/v2/public/../team-b/app/manifests/v1".into(),
        "/v2/public/./../team-b/app/manifests/v1".into(),
        "/v2/./public/x/manifests/v1".into(),
        "/v2/public//x/manifests/v1".into(),
        "/v2/public/x\\..\\..\\team-b/app/manifests/v1".into(),
        "/v2/Team-b/app/manifests/v1".into(),
        "/v2/public/X/manifests/v1".into(),
        "/v2/public/x/manifests/v1/".into(),
        "/v2/public/x/tags/list/".into(),
        format!("/v2/{long}/manifests/v1"),
    ];
    let mark = registry.log_mark();
    for path in &tricks {
        let (status, text) = raw_request(
            &gate,
            &format!(
                "GET {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: {auth}",
                gate.host()
            ),
        )
        .await;
        assert!(status == 404 || status == 400, "{path}: {status}\n{text}");
        assert!(
            text.contains("NAME_INVALID") || text.contains("NOT_FOUND"),
            "{path}: {text}"
        );
    }
    // None of them reached the registry, altered or not.
    assert!(
        !registry.saw_request_since(mark, "team-b"),
        "a trick reached the registry"
    );
    assert!(
        !registry.saw_request_since(mark, "%2"),
        "an encoded path reached the registry"
    );
    // Other paths under /v2/ are a JSON 404 too.
    let (status, text) = raw_request(
        &gate,
        &format!("GET /v2/public/x/unknown/y HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}"),
    )
    .await;
    assert_eq!(status, 404, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mount_needs_pull_on_the_source() {
    let registry = Registry::start();
    let (gate, _) = gate_with_rules(&registry, GROUP_RULES).await;
    let carol = Api::new(&gate, false, Some(CAROL));
    let alice = Api::new(&gate, false, Some(ALICE));
    let secret = carol.push_blob("team-b/app", random_bytes(4096)).await;
    let own = alice.push_blob("team-a/one", random_bytes(4096)).await;

    // From a repository alice may not pull: an ordinary upload starts instead (202, not 201).
    let mark = registry.log_mark();
    let r = alice
        .send(
            Method::POST,
            &format!("/v2/team-a/app/blobs/uploads/?mount={secret}&from=team-b%2Fapp"),
        )
        .await;
    assert_eq!(r.status(), 202);
    let r = alice
        .send(Method::HEAD, &format!("/v2/team-a/app/blobs/{secret}"))
        .await;
    assert_eq!(
        r.status(),
        404,
        "the blob must not be linked into team-a/app"
    );
    assert!(
        !registry.saw_request_since(mark, "from=team-b"),
        "the mount query reached the registry"
    );

    // From her own repository: mounted (201).
    let r = alice
        .send(
            Method::POST,
            &format!("/v2/team-a/app/blobs/uploads/?mount={own}&from=team-a%2Fone"),
        )
        .await;
    assert_eq!(r.status(), 201);
    // carol may pull team-b: mounted.
    let r = carol
        .send(
            Method::POST,
            &format!("/v2/team-c/app/blobs/uploads/?mount={secret}&from=team-b%2Fapp"),
        )
        .await;
    assert_eq!(r.status(), 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_catalog_lists_only_what_the_caller_may_pull_with_exact_paging() {
    let registry = Registry::start();
    let rules = format!(
        "{GROUP_RULES}\n[[rule]]\nrepos = [\"*/ok\"]\nusers = [\"bob\"]\nallow = [\"pull\"]\n"
    );
    let (gate, _) = gate_with_rules(&registry, &rules).await;
    let carol = Api::new(&gate, false, Some(CAROL));
    let (_, blobs) = carol
        .push_image("seed/base", "v1", vec![random_bytes(64)])
        .await;
    let mut expected = Vec::new();
    for i in 0..250 {
        let ok = i % 5 < 2;
        let name = format!("c{i:03}/{}", if ok { "ok" } else { "no" });
        let r = carol
            .send(
                Method::POST,
                &format!(
                    "/v2/{name}/blobs/uploads/?mount={}&from=seed%2Fbase",
                    blobs[0]
                ),
            )
            .await;
        assert_eq!(r.status(), 201, "{name}");
        if ok {
            expected.push(name);
        }
    }
    assert_eq!(expected.len(), 100);
    let bob = Api::new(&gate, false, Some(BOB));
    let mut seen = Vec::new();
    let mut next = Some("/v2/_catalog?n=7".to_owned());
    let mut pages = 0;
    while let Some(url) = next.take() {
        pages += 1;
        assert!(pages <= 20, "too many pages");
        let r = bob.send(Method::GET, &url).await;
        assert_eq!(r.status(), 200);
        let link = r
            .headers()
            .get("link")
            .map(|v| v.to_str().unwrap().to_owned());
        let doc: serde_json::Value = r.json().await.unwrap();
        let page: Vec<String> = doc["repositories"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect();
        if let Some(link) = link {
            assert_eq!(page.len(), 7, "a page with a next link is full");
            let last = page.last().unwrap().replace('/', "%2F");
            assert_eq!(
                link,
                format!("</v2/_catalog?last={last}&n=7>; rel=\"next\"")
            );
            next = Some(link[1..link.find('>').unwrap()].to_owned());
        }
        seen.extend(page);
    }
    assert_eq!(pages, 15);
    assert_eq!(seen, expected);

    // Anonymous sees only public repositories (none here but the rule exists): an empty list.
    let r = Api::new(&gate, false, None)
        .send(Method::GET, "/v2/_catalog")
        .await;
    assert_eq!(r.status(), 200);
    let doc: serde_json::Value = r.json().await.unwrap();
    assert_eq!(doc["repositories"], serde_json::json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_changes_apply_within_two_seconds_and_a_broken_file_keeps_the_old_rules() {
    let registry = Registry::start();
    let (gate, path) = gate_with_rules(&registry, GROUP_RULES).await;
    Api::new(&gate, false, Some(CAROL))
        .push_image("team-b/app", "v1", vec![random_bytes(64)])
        .await;
    let bob = Api::new(&gate, false, Some(BOB));
    assert_eq!(try_action(&bob, "pull", "team-b/app").await, 403);
    let granted = format!(
        "{GROUP_RULES}\n[[rule]]\nrepos = [\"team-b/**\"]\nusers = [\"bob\"]\nallow = [\"pull\"]\n"
    );
    write_atomic(&path, granted.as_bytes());
    eventually(
        Duration::from_secs(2),
        "bob gains pull on team-b",
        || async { try_action(&bob, "pull", "team-b/app").await == 200 },
    )
    .await;

    write_atomic(
        &path,
        b"[[rule]]\nrepos = [\"**\"]\nusers = [\"bob\"]\nallow = [\"everything\"]\n",
    );
    // The htpasswd file is reloaded by the same watcher: once a new user works, the broken
    // rules file has been looked at too.
    write_htpasswd(
        &gate.htpasswd,
        &[ALICE, BOB, CI, CAROL, ("dave", "dave-secret")],
    );
    let dave = Api::new(&gate, false, Some(("dave", "dave-secret")));
    eventually(Duration::from_secs(2), "dave can log in", || async {
        dave.send(Method::GET, "/v2/").await.status() == 200
    })
    .await;
    assert_eq!(
        try_action(&bob, "pull", "team-b/app").await,
        200,
        "old rules still apply"
    );
    assert_eq!(
        try_action(&bob, "delete", "team-b/app").await,
        403,
        "broken rules not applied"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_lets_a_push_in_flight_finish_and_gc_keeps_referenced_blobs() {
    let registry = Registry::start();
    let (gate, admin) = gate_with_admin(&registry).await;
    let alice = Api::new(&gate, false, Some(ALICE));
    let cli = |args: &[&str]| read_only(&admin, args);

    // A push starts: its config blob is stored and its layer's upload session is open when
    // the switch is thrown.
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#
            .to_vec();
    let config_digest = alice.push_blob("team-a/app", config.clone()).await;
    let layer = random_bytes(2 << 20);
    let location = start_upload(&alice, "team-a/app").await;

    // `read-only on` returns only once that push is done, saying what it waits for.
    let on = cli(&["on", "--timeout", "60"]).output();
    let on = tokio::spawn(on);
    let status = || async {
        let out = cli(&["status"]).output().await.unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    eventually(Duration::from_secs(5), "read-only is on", || async {
        let s = status().await;
        s.contains("read-only: on") && s.contains("team-a/app (1 open session(s)")
    })
    .await;
    assert!(!on.is_finished(), "`on` must wait for the push in flight");

    // New uploads are refused, elsewhere and in the repository being pushed to alike (so the
    // pushes in flight only shrink), with the registry's JSON error.
    for repo in ["team-a/other", "team-a/app"] {
        let r = alice
            .send(Method::POST, &format!("/v2/{repo}/blobs/uploads/"))
            .await;
        assert_eq!(r.status(), 405, "{repo}");
        let body = r.text().await.unwrap();
        assert_eq!(error_code(&body), "UNSUPPORTED");
        assert!(body.contains("read-only"), "{body}");
    }
    // Deletes too.
    let carol = Api::new(&gate, false, Some(CAROL));
    assert_eq!(try_action(&carol, "delete", "team-a/app").await, 405);

    // The push in flight completes: its open session, then its manifest.
    let layer_len = layer.len();
    let digest = alice.finish_upload(&location, layer).await;
    let manifest = alice
        .put_manifest(
            "team-a/app",
            "v1",
            (&config_digest, config.len()),
            &[(&digest, layer_len)],
        )
        .await;
    let blobs = [config_digest, digest];
    let out = tokio::time::timeout(Duration::from_secs(60), on)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("pushes in flight: 0"));

    // Pulls keep working.
    assert_eq!(try_action(&alice, "pull", "team-a/app").await, 200);

    // Garbage collection on the real registry while read-only loses no referenced blob.
    let gc = tokio::process::Command::new(REGISTRY_BIN)
        .args(["garbage-collect", "--delete-untagged"])
        .arg(registry.config_path())
        .output()
        .await
        .unwrap();
    assert!(
        gc.status.success(),
        "{}",
        String::from_utf8_lossy(&gc.stderr)
    );
    for b in &blobs {
        let r = alice
            .send(Method::GET, &format!("/v2/team-a/app/blobs/{b}"))
            .await;
        assert_eq!(r.status(), 200, "{b} lost");
        assert_eq!(
            format!("sha256:{}", sha256_hex(&r.bytes().await.unwrap())),
            *b
        );
    }
    let r = alice
        .req(
            Method::HEAD,
            &format!("/v2/team-a/app/manifests/{manifest}"),
        )
        .header("accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let out = cli(&["off"]).output().await.unwrap();
    assert!(out.status.success());
    assert_eq!(try_action(&alice, "push", "team-a/other").await, 202);

    // The refusals and decisions are counted.
    let metrics = gate.metrics_text().await;
    assert!(
        metrics.contains("registry_gate_read_only_refusals_total 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "registry_gate_access_decisions_total{action=\"delete\",outcome=\"allowed\"} 1"
        ),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_catalog_requests_share_one_fetch_from_the_registry() {
    let registry = Registry::start();
    let (gate, _) = gate_with_rules(&registry, GROUP_RULES).await;
    let carol = Api::new(&gate, false, Some(CAROL));
    carol.push_blob("team-a/app", random_bytes(64)).await;
    let mark = registry.log_mark();
    let answers = futures_util::future::join_all((0..20).map(|i| {
        let api = Api::new(&gate, i % 2 == 0, Some(ALICE));
        async move {
            let r = api.send(Method::GET, "/v2/_catalog").await;
            (r.status().as_u16(), r.text().await.unwrap())
        }
    }))
    .await;
    for (status, body) in &answers {
        assert_eq!(*status, 200, "{body}");
        assert!(body.contains("team-a/app"), "{body}");
    }
    eventually(
        Duration::from_secs(5),
        "the registry logged the fetch",
        || async { registry.requests_since(mark, "/v2/_catalog") > 0 },
    )
    .await;
    assert_eq!(registry.requests_since(mark, "/v2/_catalog"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_starting_uploads_in_a_loop_cannot_hold_read_only_open() {
    let registry = Registry::start();
    let (gate, _) = gate_with_rules_and(
        &registry,
        GROUP_RULES,
        "admin_listen = \"127.0.0.1:0\"\n[maintenance]\nupload_idle = 2",
    )
    .await;
    let admin = gate.admin_url().trim_start_matches("http://").to_owned();
    let alice = Api::new(&gate, false, Some(ALICE));
    // A pusher that opens a new upload every 200 ms and abandons it, until told to stop (at
    // most 15 s).
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let pusher = {
        let alice = Api::new(&gate, false, Some(ALICE));
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut refused = 0;
            let deadline = std::time::Instant::now() + Duration::from_secs(15);
            while std::time::Instant::now() < deadline
                && !stop.load(std::sync::atomic::Ordering::Relaxed)
            {
                let r = alice
                    .send(Method::POST, "/v2/team-a/loop/blobs/uploads/")
                    .await;
                match r.status().as_u16() {
                    202 => {}
                    405 => refused += 1,
                    other => panic!("upload start answered {other}"),
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            refused
        })
    };
    eventually(
        Duration::from_secs(5),
        "the pusher has sessions open",
        || async {
            let out = read_only(&admin, &["status"]).output().await.unwrap();
            String::from_utf8_lossy(&out.stdout).contains("team-a/loop")
        },
    )
    .await;
    let started = std::time::Instant::now();
    let out = read_only(&admin, &["on", "--timeout", "30"])
        .output()
        .await
        .unwrap();
    let waited = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    // The pusher was still at it while `on` waited; its new uploads were refused.
    assert!(!pusher.is_finished(), "the pusher stopped early");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // It said what it waited for, and converged once the sessions went quiet (upload_idle 2 s;
    // no blob was stored, so no manifest is waited for).
    assert!(stdout.contains("waiting for: team-a/loop ("), "{stdout}");
    assert!(waited < Duration::from_secs(10), "`on` took {waited:?}");
    assert!(stdout.contains("pushes in flight: 0"), "{stdout}");
    // Meanwhile every new upload was refused, and pulls go on.
    assert_eq!(try_action(&alice, "push", "team-a/app").await, 405);
    assert!(pusher.await.unwrap() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_on_times_out_reporting_open_pushes() {
    let registry = Registry::start();
    let (gate, admin) = gate_with_admin(&registry).await;
    let alice = Api::new(&gate, false, Some(ALICE));
    start_upload(&alice, "team-a/app").await;
    let out = read_only(&admin, &["on", "--timeout", "1"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("pushes in flight: 1"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not safe to garbage-collect"));
}
