//! The command line: `check`, `access explain`, `--version`, `--help`, and config errors.

use std::process::Command;

use crate::support::*;

fn gate_bin() -> Command {
    Command::new(GATE_BIN)
}

fn run(args: &[&str]) -> (i32, String, String) {
    let out = gate_bin().args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A folder with a complete config: certs, htpasswd (alice, bob) and rules.
fn setup(rules: &str, htpasswd_extra: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new();
    std::fs::copy(&pki.cert, dir.path().join("cert.pem")).unwrap();
    std::fs::copy(&pki.key, dir.path().join("key.pem")).unwrap();
    let ht = dir.path().join("htpasswd");
    write_htpasswd(&ht, &[ALICE, BOB]);
    let mut text = std::fs::read_to_string(&ht).unwrap();
    text.push_str(htpasswd_extra);
    std::fs::write(&ht, text).unwrap();
    std::fs::write(dir.path().join("access.toml"), rules).unwrap();
    let config = dir.path().join("gate.toml");
    std::fs::write(
        &config,
        "listen = \"127.0.0.1:5443\"\nupstream = \"http://127.0.0.1:5000\"\n[tls]\ncert = \"cert.pem\"\nkey = \"key.pem\"\n[auth]\nhtpasswd = \"htpasswd\"\naccess = \"access.toml\"\n",
    )
    .unwrap();
    let path = config.display().to_string();
    (dir, path)
}

const RULES: &str = "[[rule]]\nrepos = [\"team-a/**\"]\nusers = [\"alice\"]\nallow = [\"pull\", \"push\"]\n\n[[rule]]\nrepos = [\"public/**\"]\nusers = [\"anonymous\"]\nallow = [\"pull\"]\n";

#[test]
fn version_and_help() {
    let (code, out, _) = run(&["--version"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("registry-gate "), "{out}");
    for sub in [
        &["--help"][..],
        &["serve", "--help"],
        &["check", "--help"],
        &["read-only", "--help"],
        &["access", "explain", "--help"],
    ] {
        let (code, out, _) = run(sub);
        assert_eq!(code, 0, "{sub:?}");
        assert!(out.contains("Usage"), "{sub:?}: {out}");
    }
}

#[test]
fn check_reports_what_would_be_served_and_who_may_do_what() {
    let (_dir, config) = setup(RULES, "");
    let (code, out, err) = run(&["check", "--config", &config]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("users: 2"), "{out}");
    assert!(
        out.contains("alice: pull, push on team-a/** (line 1)"),
        "{out}"
    );
    assert!(out.contains("bob: nothing"), "{out}");
    assert!(
        out.contains("anonymous: pull on public/** (line 6)"),
        "{out}"
    );
    assert!(out.trim_end().ends_with("ok"), "{out}");
}

#[test]
fn check_names_file_line_and_reason() {
    let (dir, config) = setup(RULES, "carol:$1$abc$def\n");
    let (code, _, err) = run(&["check", "--config", &config]);
    assert_ne!(code, 0);
    let ht = dir.path().join("htpasswd").display().to_string();
    assert!(err.contains(&format!("{ht}:3: user \"carol\"")), "{err}");

    let (dir, config) = setup(&RULES.replace("\"push\"", "\"pish\""), "");
    let (code, _, err) = run(&["check", "--config", &config]);
    assert_ne!(code, 0);
    let rules = dir.path().join("access.toml").display().to_string();
    assert!(
        err.contains(&format!("{rules}:4:")) && err.contains("pish"),
        "{err}"
    );

    let (dir, config) = setup(RULES, "");
    std::fs::write(dir.path().join("key.pem"), "garbage").unwrap();
    let (code, _, err) = run(&["check", "--config", &config]);
    assert_ne!(code, 0);
    assert!(err.contains("key.pem"), "{err}");

    std::fs::write(&config, "listen = \"127.0.0.1:5443\"\nupstreem = \"x\"\n").unwrap();
    let (code, _, err) = run(&["check", "--config", &config]);
    assert_eq!(code, 64);
    assert!(err.contains("upstreem") && err.contains("line 2"), "{err}");
}

#[test]
fn serve_refuses_a_bad_config_with_exit_64() {
    let (_dir, config) = setup(RULES, "");
    std::fs::write(&config, "listen = \"nowhere\"\n").unwrap();
    let (code, _, err) = run(&["serve", "--config", &config]);
    assert_eq!(code, 64);
    assert!(err.contains("listen"), "{err}");
}

/// `access explain` of `action` on `repo` by `user` under `config`.
fn explain(config: &str, user: &str, repo: &str, action: &str) -> (i32, String, String) {
    run(&[
        "access", "explain", "--config", config, "--user", user, "--repo", repo, "--action", action,
    ])
}

#[test]
fn access_explain_names_the_rule() {
    let (_dir, config) = setup(RULES, "");
    let (code, out, _) = explain(&config, "alice", "team-a/x/y", "push");
    assert_eq!(code, 0);
    assert!(
        out.starts_with("allowed") && out.contains("access.toml:1"),
        "{out}"
    );
    let (code, out, _) = explain(&config, "alice", "team-b/x", "pull");
    assert_eq!(code, 1);
    assert!(out.starts_with("denied"), "{out}");
    let (code, out, _) = explain(&config, "anonymous", "public/x", "pull");
    assert_eq!(code, 0);
    assert!(out.contains("access.toml:6"), "{out}");
}
