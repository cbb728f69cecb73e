//! Robots (issue #15): access keys made with the `registry-gate key` command and used by real
//! clients, and immutable tags, against the real registry.

use std::path::Path;
use std::time::Duration;

use reqwest::Method;

use crate::support::*;

/// alice may do everything; tags `v*` and `release-*` under team-a are immutable.
const RULES: &str = r#"
[[rule]]
repos = ["**"]
users = ["alice"]
allow = ["pull", "push", "delete"]

[[immutable]]
repos = ["team-a/**"]
tags = ["v*", "release-*"]
"#;

/// A gate with the rules above and a keys file (not yet written) in its folder.
async fn gate_with_keys(registry: &Registry, auth: &str) -> (Gate, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("access.toml"), RULES).unwrap();
    let gate = Gate::start_with_users(
        &registry.url(),
        &format!(
            "[auth]\naccess = \"{}\"\nkeys = \"{}\"\n{auth}",
            dir.path().join("access.toml").display(),
            dir.path().join("keys.toml").display()
        ),
        &[ALICE, BOB],
    )
    .await;
    (gate, dir)
}

/// Runs `registry-gate key ARGS --config GATE_CONFIG`; returns (success, stdout, stderr).
fn key_cli(gate: &Gate, args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(GATE_BIN)
        .arg("key")
        .args(args)
        .arg("--config")
        .arg(&gate.config_path)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `key add NAME ...`; returns the secret it printed.
fn add_key(gate: &Gate, name: &str, extra: &[&str]) -> String {
    let mut args = vec!["add", name];
    args.extend(extra);
    let (ok, out, err) = key_cli(gate, &args);
    assert!(ok, "key add: {err}");
    assert!(
        out.contains(&format!("--username 'key+{name}' --password-stdin")),
        "{out}"
    );
    out.lines()
        .map(str::trim)
        .find(|l| l.starts_with("rgk_"))
        .unwrap_or_else(|| panic!("no secret printed: {out}"))
        .to_owned()
}

/// The JSON error message of a refusal.
async fn message(r: reqwest::Response) -> String {
    let v: serde_json::Value = r.json().await.unwrap();
    v["errors"][0]["message"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_pushes_its_repositories_only_and_is_refused_once_deleted() {
    let registry = Registry::start();
    let (gate, dir) = gate_with_keys(&registry, "").await;
    let secret = add_key(
        &gate,
        "ci",
        &[
            "--repos",
            "team-a/**",
            "--allow",
            "pull,push",
            "--expires",
            "90d",
        ],
    );
    let user = "key+ci";
    // Only a hash is stored, and `key list` never shows a secret.
    let stored = std::fs::read_to_string(dir.path().join("keys.toml")).unwrap();
    assert!(
        !stored.contains(&secret) && !stored.contains("rgk_"),
        "{stored}"
    );
    assert!(stored.contains("hash = \"sha256:"), "{stored}");
    let (ok, list, _) = key_cli(&gate, &["list"]);
    assert!(ok);
    assert!(
        list.contains("key+ci") && list.contains("pull,push on team-a/**"),
        "{list}"
    );
    assert!(list.contains("valid") && !list.contains("rgk_"), "{list}");

    // The gate picks the new file up (watched like the rules).
    let key_api = Api::new(&gate, false, Some((user, &secret)));
    eventually(Duration::from_secs(2), "the new key logs in", || async {
        key_api.send(Method::GET, "/v2/").await.status() == 200
    })
    .await;

    // skopeo pushes with the key to team-a, not to team-b.
    let skopeo = Skopeo::new();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    oci_layout(&src, "v1", &[tar(&[("f", &random_bytes(64 << 10))])]);
    let cert_dir = gate.pki.cert_dir.to_str().unwrap().to_owned();
    let creds = format!("{user}:{secret}");
    let oci = format!("oci:{}:v1", src.display());
    let (ok, err) = skopeo
        .push(
            &cert_dir,
            Some(&creds),
            &oci,
            &format!("docker://{}/team-a/app:v1", gate.host()),
        )
        .await;
    assert!(ok, "the key pushes team-a/app: {err}");
    let (ok, err) = skopeo
        .push(
            &cert_dir,
            Some(&creds),
            &oci,
            &format!("docker://{}/team-b/app:v1", gate.host()),
        )
        .await;
    assert!(!ok, "the key may not push team-b");
    assert!(err.contains("denied") || err.contains("403"), "{err}");
    // The rules grant alice everything; the key gets nothing of it, and no delete.
    let r = key_api.send(Method::GET, "/v2/team-b/app/tags/list").await;
    assert_eq!(r.status(), 403);
    assert!(
        message(r)
            .await
            .contains("access key ci may not pull team-b/app")
    );
    let r = key_api
        .send(Method::DELETE, "/v2/team-a/app/manifests/sha256:0000000000000000000000000000000000000000000000000000000000000000")
        .await;
    assert_eq!(r.status(), 403);

    // podman logs in with the key and pushes what it pulled, to team-a only.
    let podman = Podman::new();
    let (ok, err) = podman.login(&cert_dir, &gate.host(), user, &secret).await;
    assert!(ok, "podman login with the key: {err}");
    let image = format!("{}/team-a/app:v1", gate.host());
    let (ok, err) = podman.run(&["pull", "--cert-dir", &cert_dir, &image]).await;
    assert!(ok, "podman pull with the key: {err}");
    let (ok, err) = podman
        .push(
            &cert_dir,
            &image,
            &format!("docker://{}/team-a/podman:v1", gate.host()),
        )
        .await;
    assert!(ok, "podman push with the key: {err}");
    let (ok, err) = podman
        .push(
            &cert_dir,
            &image,
            &format!("docker://{}/team-b/podman:v1", gate.host()),
        )
        .await;
    assert!(!ok, "podman push to team-b with the key");
    assert!(err.contains("denied") || err.contains("403"), "{err}");

    // `access explain` answers for keys from their own grants.
    let explain = |repo: &str, action: &str| {
        let out = std::process::Command::new(GATE_BIN)
            .args([
                "access", "explain", "--user", user, "--repo", repo, "--action", action,
            ])
            .arg("--config")
            .arg(&gate.config_path)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (ok, text) = explain("team-a/app", "push");
    assert!(ok && text.contains("by its own grants"), "{text}");
    assert!(
        text.contains("v*, release-* on team-a/** are immutable"),
        "{text}"
    );
    let (ok, text) = explain("team-b/app", "pull");
    assert!(!ok && text.contains("not granted"), "{text}");

    // Audited and counted under its own name.
    let metrics = gate.running.as_ref().unwrap().gate.metrics.render();
    assert!(
        metrics.contains("registry_gate_key_auth_total{key=\"key+ci\",outcome=\"success\"}"),
        "{metrics}"
    );

    // Deleted: refused everywhere within 2 s, with a message that says why.
    let (ok, out, err) = key_cli(&gate, &["delete", "ci"]);
    assert!(ok, "{out}{err}");
    let start = std::time::Instant::now();
    eventually(
        Duration::from_secs(2),
        "the deleted key is refused",
        || async {
            key_api
                .send(Method::GET, "/v2/team-a/app/tags/list")
                .await
                .status()
                == 401
        },
    )
    .await;
    eprintln!("deleted key refused after {:?}", start.elapsed());
    let r = key_api.send(Method::GET, "/v2/").await;
    assert_eq!(r.status(), 401);
    assert!(r.headers().contains_key("www-authenticate"));
    let m = message(r).await;
    assert!(m.contains("access key \"ci\" does not exist"), "{m}");
    let (ok, _) = skopeo
        .push(
            &cert_dir,
            Some(&creds),
            &oci,
            &format!("docker://{}/team-a/app:v2", gate.host()),
        )
        .await;
    assert!(!ok, "a deleted key pushes nothing");
    // A user whose name merely looks like a key is not a key, nor an htpasswd user.
    let r = Api::new(&gate, false, Some(("key+alice", ALICE.1)))
        .send(Method::GET, "/v2/")
        .await;
    assert_eq!(r.status(), 401);
}

/// A keys file with one key that expired an hour ago, written with the library.
fn write_expired_key(path: &Path) -> String {
    use registry_gate::auth::keys::{self, KeyIdentity, KeyTable};
    use registry_gate::authz::Action;
    let now = keys::unix_now();
    let mut table = KeyTable::default();
    let secret = table.put(
        KeyIdentity::new("old", vec!["team-a/**".into()], [Action::Pull].into()),
        now - 7200,
        Some(now - 3600),
    );
    keys::write(path, &table).unwrap();
    secret
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_key_is_refused_with_its_message_and_a_broken_file_keeps_the_last_keys() {
    let registry = Registry::start();
    let (gate, dir) = gate_with_keys(&registry, "").await;
    let keys_file = dir.path().join("keys.toml");
    let secret = write_expired_key(&keys_file);
    let api = Api::new(&gate, false, Some(("key+old", &secret)));
    eventually(
        Duration::from_secs(2),
        "the expired key is known",
        || async {
            let r = api.send(Method::GET, "/v2/").await;
            r.status() == 401 && message(r).await.contains("expired at")
        },
    )
    .await;
    let (ok, list, _) = key_cli(&gate, &["list"]);
    assert!(ok && list.contains("EXPIRED"), "{list}");

    // A new key, then a broken file: the last good keys stay.
    let fresh = add_key(&gate, "fresh", &["--repos", "team-a/**", "--allow", "pull"]);
    let fresh_api = Api::new(&gate, false, Some(("key+fresh", &fresh)));
    eventually(Duration::from_secs(2), "the fresh key logs in", || async {
        fresh_api.send(Method::GET, "/v2/").await.status() == 200
    })
    .await;
    write_atomic(&keys_file, b"[[key]]\nname = \"broken\n");
    let out = std::process::Command::new(GATE_BIN)
        .args(["check", "--config"])
        .arg(&gate.config_path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("keys.toml"), "{err}");
    // SIGHUP-free barrier: the certificate reload shows the reloader looked at every file.
    let mut gate = gate;
    reload_barrier(&mut gate, "after-broken-keys").await;
    assert_eq!(fresh_api.send(Method::GET, "/v2/").await.status(), 200);
    let metrics = gate.running.as_ref().unwrap().gate.metrics.render();
    assert!(
        metrics.contains("registry_gate_reloads_total{kind=\"keys\",outcome=\"failure\"}"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_token_mode_a_key_gets_tokens_limited_to_its_grants() {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    registry_gate::token::write_key(&dir.path().join("token.key"), false).unwrap();
    let (gate, _rules) = gate_with_keys(
        &registry,
        &format!(
            "mode = \"token\"\nservice = \"{SERVICE}\"\ntoken_key = \"{}\"\n",
            dir.path().join("token.key").display()
        ),
    )
    .await;
    let secret = add_key(
        &gate,
        "ci",
        &["--repos", "team-a/**", "--allow", "pull,push"],
    );
    let api = Api::new(&gate, false, Some(("key+ci", &secret)));
    let query = format!(
        "service={SERVICE}&scope=repository:team-a/app:pull,push,delete&scope=repository:team-b/app:pull"
    );
    eventually(Duration::from_secs(2), "the key gets a token", || async {
        api.send(Method::GET, &format!("/token?{query}"))
            .await
            .status()
            == 200
    })
    .await;
    let v: serde_json::Value = api
        .send(Method::GET, &format!("/token?{query}"))
        .await
        .json()
        .await
        .unwrap();
    let token = v["token"].as_str().unwrap().to_owned();
    use base64::Engine as _;
    let payload = token.split('.').nth(1).unwrap();
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["sub"], "key+ci");
    assert_eq!(
        claims["access"],
        serde_json::json!([{"type": "repository", "name": "team-a/app", "actions": ["pull", "push"]}]),
        "{claims}"
    );
    let bearer = Api::with_token(&gate, &token);
    bearer
        .push_image("team-a/app", "latest", vec![random_bytes(64)])
        .await;
    // Outside its grants a key is refused like a user the rules refuse.
    let r = bearer.send(Method::GET, "/v2/team-b/app/tags/list").await;
    assert_eq!(r.status(), 403);
    // The key's tokens die with it.
    let (ok, _, err) = key_cli(&gate, &["delete", "ci"]);
    assert!(ok, "{err}");
    eventually(
        Duration::from_secs(2),
        "the deleted key's token is refused",
        || async {
            bearer
                .send(Method::GET, "/v2/team-a/app/tags/list")
                .await
                .status()
                == 401
        },
    )
    .await;
    let m = message(bearer.send(Method::GET, "/v2/team-a/app/tags/list").await).await;
    assert!(m.contains("does not exist"), "{m}");
    let r = api.send(Method::GET, &format!("/token?{query}")).await;
    assert_eq!(r.status(), 401);
}

/// Pushes a config and one layer of `seed` bytes to `repo`; returns the manifest's bytes.
async fn manifest(api: &Api, repo: &str, seed: Vec<u8>) -> String {
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let config_digest = api.push_blob(repo, config.to_vec()).await;
    let len = seed.len();
    let layer = api.push_blob(repo, seed).await;
    serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer, "size": len}],
    })
    .to_string()
}

async fn put(api: &Api, repo: &str, tag: &str, manifest: &str) -> (u16, String) {
    let r = api
        .req(Method::PUT, &format!("/v2/{repo}/manifests/{tag}"))
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(manifest.to_owned())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let digest = r
        .headers()
        .get("docker-content-digest")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = r.text().await.unwrap();
    (status, digest.unwrap_or(body))
}

async fn digest_behind(api: &Api, repo: &str, tag: &str) -> String {
    let r = api
        .req(Method::HEAD, &format!("/v2/{repo}/manifests/{tag}"))
        .header("accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "HEAD {repo}:{tag}");
    r.headers()["docker-content-digest"]
        .to_str()
        .unwrap()
        .to_owned()
}

fn sha256(text: &str) -> String {
    format!("sha256:{}", sha256_hex(text.as_bytes()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn immutable_tags_are_never_moved_or_deleted() {
    let registry = Registry::start();
    let (gate, _dir) = gate_with_keys(&registry, "").await;
    let alice = Api::new(&gate, true, Some(ALICE));
    let repo = "team-a/app";
    let (m1, m2) = (
        manifest(&alice, repo, random_bytes(100)).await,
        manifest(&alice, repo, random_bytes(100)).await,
    );

    // v1 once; again with other content: refused, naming the tag; v1 is still the first.
    assert_eq!(put(&alice, repo, "v1", &m1).await, (201, sha256(&m1)));
    let (status, body) = put(&alice, repo, "v1", &m2).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(error_code(&body), "DENIED");
    assert!(body.contains("tag v1 of team-a/app is immutable"), "{body}");
    assert_eq!(digest_behind(&alice, repo, "v1").await, sha256(&m1));
    // The same content again (a retry) succeeds.
    assert_eq!(put(&alice, repo, "v1", &m1).await, (201, sha256(&m1)));
    // `latest` is not covered: it moves.
    assert_eq!(put(&alice, repo, "latest", &m1).await.0, 201);
    assert_eq!(put(&alice, repo, "latest", &m2).await.0, 201);
    assert_eq!(digest_behind(&alice, repo, "latest").await, sha256(&m2));
    // Another repository's v1 is not covered either.
    let m3 = manifest(&alice, "team-b/app", random_bytes(100)).await;
    let m4 = manifest(&alice, "team-b/app", random_bytes(100)).await;
    assert_eq!(put(&alice, "team-b/app", "v1", &m3).await.0, 201);
    assert_eq!(put(&alice, "team-b/app", "v1", &m4).await.0, 201);

    // The manifest behind v1 cannot be deleted, by digest or by tag; the one behind only
    // `latest` can.
    let r = alice
        .send(
            Method::DELETE,
            &format!("/v2/{repo}/manifests/{}", sha256(&m1)),
        )
        .await;
    assert_eq!(r.status(), 403);
    assert!(
        message(r)
            .await
            .contains("tag v1 of team-a/app is immutable")
    );
    let r = alice
        .send(Method::DELETE, &format!("/v2/{repo}/manifests/v1"))
        .await;
    assert_eq!(r.status(), 403);
    let r = alice
        .send(
            Method::DELETE,
            &format!("/v2/{repo}/manifests/{}", sha256(&m2)),
        )
        .await;
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    assert_eq!(digest_behind(&alice, repo, "v1").await, sha256(&m1));

    // Two pushes of a new v2 at once through the gate: one wins, the other is refused.
    let (a, b) = (
        manifest(&alice, repo, random_bytes(100)).await,
        manifest(&alice, repo, random_bytes(100)).await,
    );
    let other = Api::new(&gate, false, Some(ALICE));
    let ((sa, _), (sb, _)) = tokio::join!(put(&alice, repo, "v2", &a), put(&other, repo, "v2", &b));
    let mut statuses = [sa, sb];
    statuses.sort_unstable();
    assert_eq!(statuses, [201, 403]);
    let winner = if sa == 201 { &a } else { &b };
    assert_eq!(digest_behind(&alice, repo, "v2").await, sha256(winner));

    let metrics = gate.running.as_ref().unwrap().gate.metrics.render();
    assert!(
        metrics.contains("registry_gate_immutable_refusals_total 4"),
        "{metrics}"
    );
    let out = std::process::Command::new(GATE_BIN)
        .args(["check", "--config"])
        .arg(&gate.config_path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("line 7: tags v*, release-* on team-a/** are immutable"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_logs_in_with_a_key_and_cannot_move_an_immutable_tag() {
    use crate::docker::{ensure, load_image};
    let registry = Registry::start();
    let (gate, _dir) = gate_with_keys(&registry, "").await;
    let secret = add_key(
        &gate,
        "docker-ci",
        &["--repos", "team-a/**", "--allow", "pull,push"],
    );
    let key_api = Api::new(&gate, false, Some(("key+docker-ci", &secret)));
    eventually(Duration::from_secs(2), "the key logs in", || async {
        key_api.send(Method::GET, "/v2/").await.status() == 200
    })
    .await;
    let dockerd = Dockerd::start().await;
    let docker = dockerd.client();
    let work = tempfile::tempdir().unwrap();
    let host = gate.host();
    load_image(&docker, work.path()).await;
    let r = docker.login(&host, "key+docker-ci", &secret).await;
    ensure(&r, "docker login with the key");
    let v1 = format!("{host}/team-a/app:v1");
    ensure(&docker.run(&["tag", "src/app:v1", &v1]).await, "tag");
    ensure(
        &docker.run(&["push", &v1]).await,
        "docker push with the key",
    );
    let team_b = format!("{host}/team-b/app:v1");
    ensure(&docker.run(&["tag", "src/app:v1", &team_b]).await, "tag");
    let r = docker.run(&["push", &team_b]).await;
    assert!(!r.ok, "the key may not push team-b: {}", r.stdout);
    assert!(r.stderr.contains("denied"), "{}", r.stderr);
    // Pushing the same image to v1 again is a retry and works; another image is refused.
    ensure(
        &docker.run(&["push", &v1]).await,
        "docker push of the same v1",
    );
    let (archive, _) = docker_archive(&v1, &[tar(&[("x", &random_bytes(1024))])]);
    let file = work.path().join("other.tar");
    std::fs::write(&file, archive).unwrap();
    ensure(
        &docker
            .run(&["load", "--input", file.to_str().unwrap()])
            .await,
        "load another v1",
    );
    let r = docker.run(&["push", &v1]).await;
    assert!(!r.ok, "moving v1 must fail: {}", r.stdout);
    assert!(
        r.stderr.contains("tag v1 of team-a/app is immutable"),
        "{}",
        r.stderr
    );
}
