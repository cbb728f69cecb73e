//! The real docker client through the gate: a private dockerd (Debian's docker.io) per test,
//! talking to the gate as `localhost:PORT`. Docker treats loopback registries as insecure: it
//! skips certificate checks but still speaks TLS first.

use crate::support::*;

/// Two layers: a few small files, and 1 MiB of incompressible bytes.
fn layers() -> Vec<Vec<u8>> {
    vec![
        tar(&[("etc/hello", b"hello\n"), ("etc/motd", b"registry-gate\n")]),
        tar(&[("data/blob.bin", &random_bytes(1 << 20))]),
    ]
}

/// Loads a fresh image into the daemon as `src/app:v1`; returns its image ID.
pub(crate) async fn load_image(docker: &Docker, work: &std::path::Path) -> String {
    let (archive, id) = docker_archive("src/app:v1", &layers());
    let file = work.join("image.tar");
    std::fs::write(&file, archive).unwrap();
    let r = docker
        .run(&["load", "--input", file.to_str().unwrap()])
        .await;
    assert!(r.ok, "docker load: {}", r.stderr);
    assert!(
        r.stdout.contains("Loaded image: src/app:v1"),
        "{}",
        r.stdout
    );
    id
}

pub(crate) fn ensure(r: &Ran, what: &str) {
    assert!(r.ok, "{what} failed:\n{}\n{}", r.stdout, r.stderr);
}

/// The image ID of `reference`, or None when the daemon does not have it.
async fn image_id(docker: &Docker, reference: &str) -> Option<String> {
    let r = docker
        .run(&["image", "inspect", "--format", "{{.Id}}", reference])
        .await;
    r.ok.then(|| r.stdout.trim().to_owned())
}

/// `reference` pulled as `repo_digest` (`HOST/REPO@sha256:…`), by its RepoDigests.
async fn assert_repo_digest(docker: &Docker, reference: &str, repo_digest: &str) {
    let r = docker
        .run(&[
            "image",
            "inspect",
            "--format",
            "{{json .RepoDigests}}",
            reference,
        ])
        .await;
    assert!(r.stdout.contains(repo_digest), "{}", r.stdout);
}

/// The manifest digest `docker push` reported (`TAG: digest: sha256:… size: N`).
fn pushed_digest(push: &Ran) -> String {
    push.stdout
        .split("digest: ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or_else(|| panic!("no digest in docker push output: {}", push.stdout))
        .to_owned()
}

/// The endpoints dockerd tried over plain HTTP so far (its debug log names each attempt; the
/// "Skipping non-TLS endpoint" lines are the retries it decided against).
fn plain_http_attempts(dockerd: &Dockerd, gate: &Gate) -> Vec<String> {
    let plain = format!("http://{}", gate.host());
    dockerd
        .log()
        .lines()
        .filter(|l| l.contains(&plain) && !l.contains("Skipping non-TLS endpoint"))
        .map(str::to_owned)
        .collect()
}

fn assert_no_plain_http(dockerd: &Dockerd, gate: &Gate) {
    let tried = plain_http_attempts(dockerd, gate);
    assert!(
        tried.is_empty(),
        "dockerd retried over plain HTTP:\n{}",
        tried.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_logs_in_pushes_and_pulls_through_the_gate() {
    let registry = Registry::start();
    let gate = Gate::start(&registry.url(), "").await;
    let dockerd = Dockerd::start().await;
    let work = tempfile::tempdir().unwrap();
    let host = gate.host();
    let docker = dockerd.client();
    let id = load_image(&docker, work.path()).await;

    let r = docker.login(&host, ALICE.0, "wrong").await;
    assert!(!r.ok, "a wrong password must not log in: {}", r.stdout);
    assert!(
        r.stderr.contains("401 Unauthorized"),
        "wrong password: {}",
        r.stderr
    );
    let r = docker.login(&host, ALICE.0, ALICE.1).await;
    ensure(&r, "docker login");
    assert!(r.stdout.contains("Login Succeeded"), "{}", r.stdout);

    let target = format!("{host}/team/app:v1");
    ensure(&docker.run(&["tag", "src/app:v1", &target]).await, "tag");
    let push = docker.run(&["push", &target]).await;
    ensure(&push, "docker push");
    let digest = pushed_digest(&push);

    // The gate serves the manifest docker pushed, under the digest docker reported.
    let api = Api::new(&gate, false, Some(ALICE));
    let r = api
        .req(reqwest::Method::HEAD, "/v2/team/app/manifests/v1")
        .header(
            "accept",
            "application/vnd.docker.distribution.manifest.v2+json",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["docker-content-digest"], digest.as_str());

    // Remove the image entirely, then pull it back: every blob comes through the gate.
    ensure(&docker.run(&["rmi", &target, "src/app:v1"]).await, "rmi");
    assert_eq!(image_id(&docker, &id).await, None);
    ensure(&docker.run(&["pull", &target]).await, "docker pull");
    assert_eq!(image_id(&docker, &target).await.as_deref(), Some(&*id));
    assert_repo_digest(&docker, &target, &format!("{host}/team/app@{digest}")).await;
    assert_no_plain_http(&dockerd, &gate);

    // A client that has not logged in is refused. Its pull fails over HTTPS with "no basic
    // auth credentials"; docker then retries over plain HTTP on the same port (loopback is an
    // insecure registry), and what it shows is the gate's answer to that.
    let anon = dockerd.client();
    let r = anon.run(&["pull", &target]).await;
    assert!(!r.ok, "anonymous pull must fail in basic mode");
    assert!(
        r.stderr
            .contains("this port speaks HTTPS; the request was sent as plain HTTP")
            || r.stderr.contains("no basic auth credentials"),
        "anonymous pull: {}",
        r.stderr
    );
    for l in plain_http_attempts(&dockerd, &gate) {
        assert!(
            l.contains(&format!("Trying to pull {host}/team/app from http://")),
            "unexpected plain HTTP attempt: {l}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_in_token_mode_pulls_anonymously_and_pushes_what_the_rules_allow() {
    let registry = Registry::start();
    let token = TokenGate::start(&registry).await;
    let gate = &token.gate;
    let dockerd = Dockerd::start().await;
    let work = tempfile::tempdir().unwrap();
    let host = gate.host();
    let public = format!("{host}/public/base:v1");
    let team_a = format!("{host}/team-a/app:v1");
    let team_b = format!("{host}/team-b/app:v1");

    // carol publishes public/base, then the image leaves the daemon.
    let carol = dockerd.client();
    let id = load_image(&carol, work.path()).await;
    ensure(&carol.login(&host, CAROL.0, CAROL.1).await, "carol login");
    ensure(&carol.run(&["tag", "src/app:v1", &public]).await, "tag");
    ensure(&carol.run(&["push", &public]).await, "carol push");
    ensure(&carol.run(&["rmi", &public, "src/app:v1"]).await, "rmi");
    assert_eq!(image_id(&carol, &id).await, None);

    // Anonymous: a public repository pulls without login; a push is refused.
    let anon = dockerd.client();
    ensure(&anon.run(&["pull", &public]).await, "anonymous pull");
    assert_eq!(image_id(&anon, &public).await.as_deref(), Some(&*id));
    ensure(&anon.run(&["tag", &public, &team_a]).await, "tag");
    ensure(&anon.run(&["tag", &public, &team_b]).await, "tag");
    let r = anon.run(&["push", &team_a]).await;
    assert!(!r.ok, "anonymous push must fail");
    assert!(r.stderr.contains("denied"), "anonymous push: {}", r.stderr);

    // alice: a wrong password does not log in.
    let alice = dockerd.client();
    let r = alice.login(&host, ALICE.0, "wrong").await;
    assert!(!r.ok, "a wrong password must not log in: {}", r.stdout);
    assert!(
        r.stderr.contains("unauthorized"),
        "wrong password: {}",
        r.stderr
    );
    ensure(&alice.login(&host, ALICE.0, ALICE.1).await, "alice login");

    // Her push to team-a mounts the layers from public/base, which she may pull.
    let mark = registry.log_mark();
    let push = alice.run(&["push", &team_a]).await;
    ensure(&push, "alice push team-a");
    assert!(
        push.stdout.contains("Mounted from public/base"),
        "{}",
        push.stdout
    );
    assert!(registry.saw_request_since(mark, "from=public%2Fbase&mount=sha256"));
    let digest = pushed_digest(&push);

    // team-b is not hers: refused, with the gate's reason.
    let r = alice.run(&["push", &team_b]).await;
    assert!(!r.ok, "alice may not push team-b");
    assert!(
        r.stderr.contains("denied: alice may not push team-b/app"),
        "alice push team-b: {}",
        r.stderr
    );

    // What alice pushed pulls back as the same image.
    ensure(&alice.run(&["rmi", &public, &team_a, &team_b]).await, "rmi");
    assert_eq!(image_id(&alice, &id).await, None);
    ensure(&alice.run(&["pull", &team_a]).await, "alice pull team-a");
    assert_eq!(image_id(&alice, &team_a).await.as_deref(), Some(&*id));
    assert_repo_digest(&alice, &team_a, &format!("{host}/team-a/app@{digest}")).await;

    // Token mode: every exchange, refusals included, stayed on TLS.
    assert_no_plain_http(&dockerd, gate);
}
