//! Every htpasswd a user already has, made by the real tools, through the running gate; hot
//! reload of users; the brute-force brake.

use std::process::Command;
use std::time::Duration;

use crate::support::*;
use reqwest::Method;

/// Runs a hash tool and returns its stdout line.
fn tool(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().unwrap_or_else(|e| {
        panic!("{cmd} is missing ({e}): install apache2-utils and openssl (see .ci/run)")
    });
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// One htpasswd line per format, each made by the tool users make it with.
fn lines_from_real_tools() -> Vec<(String, String)> {
    let mut lines = Vec::new();
    for (user, args) in [
        ("bcrypt5", &["-nbB", "-C", "5"][..]),
        ("bcrypt10", &["-nbB", "-C", "10"]),
        ("md5", &["-nbm"]),
        ("sha", &["-nbs"]),
        ("plain", &["-nbp"]),
    ] {
        let pw = format!("{user}-pw");
        let mut a = args.to_vec();
        a.extend([user, pw.as_str()]);
        lines.push((user.to_owned(), tool("htpasswd", &a)));
    }
    for (user, flag) in [("osslapr1", "-apr1"), ("sha256", "-5"), ("sha512", "-6")] {
        let pw = format!("{user}-pw");
        let hash = tool("openssl", &["passwd", flag, &pw]);
        lines.push((user.to_owned(), format!("{user}:{hash}")));
    }
    lines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_format_from_the_real_tools_logs_in() {
    let registry = Registry::start();
    let gate = Gate::start(&registry.url(), "").await;
    let lines = lines_from_real_tools();
    let text: String = lines.iter().map(|(_, l)| format!("{l}\n")).collect();
    write_atomic(&gate.htpasswd, text.as_bytes());
    let last = lines.last().unwrap().0.clone();
    eventually(Duration::from_secs(2), "new users loaded", || {
        let api = Api::new(&gate, false, Some((last.as_str(), "sha512-pw")));
        async move { api.send(Method::GET, "/v2/").await.status() == 200 }
    })
    .await;
    for (user, line) in &lines {
        let pw = format!("{user}-pw");
        let ok = Api::new(&gate, false, Some((user.as_str(), pw.as_str())));
        assert_eq!(ok.send(Method::GET, "/v2/").await.status(), 200, "{line}");
        let bad = Api::new(&gate, false, Some((user.as_str(), "wrong")));
        assert_eq!(bad.send(Method::GET, "/v2/").await.status(), 401, "{line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_with_bcrypt_and_apr1_users() {
    let registry = Registry::start();
    let gate = Gate::start(&registry.url(), "").await;
    let bcrypt_line = tool("htpasswd", &["-nbB", "-C", "10", "bc", "bc-pw"]);
    let apr1_line = tool("htpasswd", &["-nbm", "md", "md-pw"]);
    write_atomic(
        &gate.htpasswd,
        format!("{bcrypt_line}\n{apr1_line}\n").as_bytes(),
    );
    eventually(Duration::from_secs(2), "users loaded", || {
        let api = Api::new(&gate, false, Some(("md", "md-pw")));
        async move { api.send(Method::GET, "/v2/").await.status() == 200 }
    })
    .await;
    let skopeo = Skopeo::new();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    oci_layout(
        &src,
        "v1",
        &[tar(&[("a", &random_bytes(1 << 20))]), tar(&[("b", b"b")])],
    );
    let cert_dir = gate.pki.cert_dir.to_str().unwrap().to_owned();
    for (creds, repo) in [("bc:bc-pw", "bcrypt/app"), ("md:md-pw", "apr1/app")] {
        let dest = format!("docker://{}/{repo}:v1", gate.host());
        let (ok, err) = skopeo
            .push(
                &cert_dir,
                Some(creds),
                &format!("oci:{}:v1", src.display()),
                &dest,
            )
            .await;
        assert!(ok, "{creds} push: {err}");
        let out = work.path().join(repo.replace('/', "-"));
        let (ok, err) = skopeo
            .pull(
                &cert_dir,
                creds,
                &dest,
                &format!("oci:{}:v1", out.display()),
            )
            .await;
        assert!(ok, "{creds} pull: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_reload_while_running_and_a_broken_file_keeps_the_last_good_users() {
    let registry = Registry::start();
    let mut gate = Gate::start(&registry.url(), "").await;
    assert_eq!(login(&gate, ALICE.0, ALICE.1).await, 200);
    // Warm the credential cache for bob: revocation must reach cached credentials too.
    assert_eq!(login(&gate, BOB.0, BOB.1).await, 200);

    // Add carol, change alice's password, delete bob.
    write_htpasswd(
        &gate.htpasswd,
        &[("alice", "alice-new"), ("carol", "carol-pw")],
    );
    let g = &gate;
    eventually(Duration::from_secs(2), "carol added", || async {
        login(g, "carol", "carol-pw").await == 200
    })
    .await;
    eventually(Duration::from_secs(2), "bob deleted", || async {
        login(g, BOB.0, BOB.1).await == 401
    })
    .await;
    assert_eq!(
        login(&gate, ALICE.0, ALICE.1).await,
        401,
        "old password revoked"
    );
    assert_eq!(login(&gate, "alice", "alice-new").await, 200);

    // A file that cannot be parsed at all, or is gone, keeps the last good users. The
    // certificate rotation is a barrier: once it is served, the reloader has seen the user file.
    write_atomic(&gate.htpasswd, b"this is not an htpasswd file\n");
    reload_barrier(&mut gate, "after-garbage").await;
    assert_eq!(login(&gate, "carol", "carol-pw").await, 200);
    assert_eq!(login(&gate, "alice", "alice-new").await, 200);
    std::fs::remove_file(&gate.htpasswd).unwrap();
    reload_barrier(&mut gate, "after-delete").await;
    assert_eq!(
        login(&gate, "carol", "carol-pw").await,
        200,
        "a deleted file keeps the last users"
    );

    write_htpasswd(
        &gate.htpasswd,
        &[("dave", "dave-pw"), ("carol", "carol-pw")],
    );
    let g = &gate;
    eventually(Duration::from_secs(2), "dave added", || async {
        login(g, "dave", "dave-pw").await == 200
    })
    .await;
    assert_eq!(login(&gate, "alice", "alice-new").await, 401);
}

async fn login(gate: &Gate, user: &str, password: &str) -> u16 {
    let api = Api::new(gate, false, Some((user, password)));
    api.send(Method::GET, "/v2/").await.status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_brake_answers_429_with_retry_after_and_spares_known_good_credentials() {
    let registry = Registry::start();
    let gate = Gate::start(
        &registry.url(),
        "[auth]\nbrake_failures = 3\nbrake_window = 30\n",
    )
    .await;
    let good = Api::new(&gate, false, Some(ALICE));
    assert_eq!(good.send(Method::GET, "/v2/").await.status(), 200);
    let bad = Api::new(&gate, false, Some(("alice", "guess")));
    for _ in 0..3 {
        assert_eq!(bad.send(Method::GET, "/v2/").await.status(), 401);
    }
    let r = bad.send(Method::GET, "/v2/").await;
    assert_eq!(r.status(), 429);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=30).contains(&retry), "{retry}");
    assert_eq!(error_code(&r.text().await.unwrap()), "TOOMANYREQUESTS");
    // Even the right password is not checked from a braked address…
    let bob = Api::new(&gate, false, Some(BOB));
    assert_eq!(bob.send(Method::GET, "/v2/").await.status(), 429);
    // …but credentials already verified are never slowed.
    assert_eq!(good.send(Method::GET, "/v2/").await.status(), 200);
}
