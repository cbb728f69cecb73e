//! `registry-gate htpasswd`, run as a process and cross-checked with Apache's own `htpasswd`
//! (Debian apache2-utils, which CI installs): each tool must verify what the other wrote.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use crate::support::GATE_BIN;

const APACHE: &str = "/usr/bin/htpasswd";

/// Apache's tool; its absence is a failure, not a skip, so the cross-check cannot silently vanish.
fn apache() -> Command {
    assert!(
        Path::new(APACHE).exists(),
        "{APACHE} is missing: install Debian's apache2-utils (CI does) to run the cross-checks"
    );
    Command::new(APACHE)
}

/// Runs `registry-gate htpasswd ARGS` with `stdin` piped in.
fn gate(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(GATE_BIN)
        .arg("htpasswd")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start registry-gate");
    // A command that fails before reading stdin closes it: that is not the test's failure.
    match child.stdin.take().unwrap().write_all(stdin.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => panic!("writing stdin: {e}"),
        _ => {}
    }
    child.wait_with_output().unwrap()
}

fn code(out: &Output) -> i32 {
    out.status.code().expect("exited normally")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn apache_verifies(file: &Path, user: &str, password: &str) -> bool {
    apache()
        .args(["-vb", file.to_str().unwrap(), user, password])
        .output()
        .unwrap()
        .status
        .success()
}

#[test]
fn apache_verifies_what_we_write() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("htpasswd");
    let f = file.to_str().unwrap();
    let out = gate(&["set", "-c", "--cost", "5", f, "bea"], "bcrypt pw\n");
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let out = gate(&["set", "--apr1", f, "mo"], "md5 pw\r\n");
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = fs::read_to_string(&file).unwrap();
    assert!(text.starts_with("bea:$2y$05$"), "{text}");
    assert!(text.contains("\nmo:$apr1$"), "{text}");

    assert!(apache_verifies(&file, "bea", "bcrypt pw"));
    assert!(
        apache_verifies(&file, "mo", "md5 pw"),
        "CRLF stripped from stdin"
    );
    assert!(!apache_verifies(&file, "bea", "bcrypt pW"));
    assert!(!apache_verifies(&file, "mo", "md5 pw\r"));
}

#[test]
fn we_verify_what_apache_writes() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("htpasswd");
    let f = file.to_str().unwrap();
    for (flags, user, password) in [
        (&["-cbB", "-C", "5"][..], "bcrypt", "pw-b"),
        (&["-bm"], "apr1", "pw-m"),
        (&["-bs"], "sha", "pw-s"),
        (&["-bp"], "plain", "pw-p"),
    ] {
        let out = apache()
            .args(flags)
            .args([f, user, password])
            .output()
            .unwrap();
        assert!(out.status.success(), "htpasswd {flags:?}: {}", stderr(&out));
    }
    for (user, password) in [
        ("bcrypt", "pw-b"),
        ("apr1", "pw-m"),
        ("sha", "pw-s"),
        ("plain", "pw-p"),
    ] {
        let ok = gate(&["verify", f, user], &format!("{password}\n"));
        assert_eq!(code(&ok), 0, "{user}: {}", stderr(&ok));
        let wrong = gate(&["verify", f, user], &format!("{password}x\n"));
        assert_eq!(code(&wrong), 1, "{user}: {}", stderr(&wrong));
        assert!(stderr(&wrong).contains("wrong"), "{}", stderr(&wrong));
        let explicit = gate(&["verify", "--password", password, f, user], "");
        assert_eq!(code(&explicit), 0, "{user}: {}", stderr(&explicit));
    }
    let unknown = gate(&["verify", "--password", "x", f, "nobody"], "");
    assert_eq!(code(&unknown), 1);
    assert!(
        stderr(&unknown).contains("not found"),
        "{}",
        stderr(&unknown)
    );

    let list = gate(&["list", f], "");
    assert_eq!(code(&list), 0);
    assert_eq!(
        String::from_utf8(list.stdout).unwrap(),
        "bcrypt\tbcrypt\napr1\tapr1\nsha\t{SHA}\nplain\tplain text\n",
        "names and formats only, never hashes"
    );
}

#[test]
fn set_and_delete_keep_every_other_byte() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("htpasswd");
    let f = file.to_str().unwrap();
    let head = "# registry users\r\n\r\nalice:{PLAIN}a\r\n   # bob:{PLAIN}old\n";
    let tail = "carol:$apr1$x$notahash-but-kept-as-is\nmalformed line\n";
    fs::write(&file, format!("{head}bob:{{PLAIN}}b\n{tail}")).unwrap();
    fs::set_permissions(&file, fs::Permissions::from_mode(0o640)).unwrap();

    let out = gate(&["set", "--cost", "4", f, "bob"], "new\n");
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = fs::read_to_string(&file).unwrap();
    let bob = text
        .strip_prefix(head)
        .and_then(|t| t.strip_suffix(tail))
        .unwrap_or_else(|| panic!("other lines changed:\n{text}"));
    assert!(
        bob.starts_with("bob:$2y$04$") && bob.ends_with('\n'),
        "{bob:?}"
    );
    assert_eq!(
        fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o640
    );
    // Apache refuses the whole file for its malformed line; check with our verify.
    assert_eq!(code(&gate(&["verify", f, "bob"], "new\n")), 0);

    let out = gate(&["add", "--cost", "4", f, "dave"], "d\n");
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let with_dave = fs::read_to_string(&file).unwrap();
    assert!(with_dave.starts_with(&text) && with_dave[text.len()..].starts_with("dave:$2y$04$"));

    let out = gate(&["delete", f, "bob"], "");
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = fs::read_to_string(&file).unwrap();
    assert_eq!(text, with_dave.replace(bob, ""));
    assert!(text.starts_with(&format!("{head}{tail}dave:")));

    let out = gate(&["delete", f, "bob"], "");
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("not found"), "{}", stderr(&out));
}

#[test]
fn add_refuses_an_existing_user_and_leaves_the_file_alone() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("htpasswd");
    let f = file.to_str().unwrap();
    fs::write(&file, "alice:{PLAIN}a\n").unwrap();
    let out = gate(&["add", "--cost", "4", f, "alice"], "other\n");
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("already exists"), "{}", stderr(&out));
    assert_eq!(fs::read_to_string(&file).unwrap(), "alice:{PLAIN}a\n");
    let out = gate(&["set", "--cost", "4", f, "a:b"], "pw\n");
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("':'"), "{}", stderr(&out));
}

#[test]
fn create_flag_and_missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("new-htpasswd");
    let f = file.to_str().unwrap();
    for args in [
        &["set", "--cost", "4", f, "u"][..],
        &["add", "--cost", "4", f, "u"],
        &["delete", f, "u"],
        &["verify", f, "u"],
        &["list", f],
    ] {
        let out = gate(args, "pw\n");
        assert_eq!(code(&out), 2, "{args:?}");
        assert!(stderr(&out).contains(f), "names the file: {}", stderr(&out));
        assert!(!file.exists());
    }
    let out = gate(&["add", "-c", "--password", "pw", f, "u"], "");
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = fs::read_to_string(&file).unwrap();
    assert!(
        text.starts_with("u:$2y$10$") && text.ends_with('\n'),
        "{text}"
    );
    assert_eq!(
        fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(apache_verifies(&file, "u", "pw"));

    // -c never truncates an existing file.
    let out = gate(&["set", "-c", "--apr1", f, "v"], "pv\n");
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(fs::read_to_string(&file).unwrap().starts_with(&text));
    assert!(apache_verifies(&file, "u", "pw") && apache_verifies(&file, "v", "pv"));
}
