//! `registry-gate htpasswd`: create and edit htpasswd files without apache2-utils.
//!
//! Owns: the subcommand's arguments and exit codes (0 done or password correct, 1 password wrong
//! or user unusable in `verify`, 2 any error), reading a password (one line from a non-TTY stdin,
//! else a prompt without echo; on the command line only with `--password`), hashing new passwords
//! (bcrypt `$2y$`, or apr1 with `--apr1`), editing one user's line while leaving every other byte
//! of the file as it was, and replacing the file atomically (temp file in the same folder, fsync,
//! same mode and owner, rename). `-c` creates a missing file but never truncates an existing one.
//! Does not own: the line grammar, hash parsing or verification (auth/htpasswd.rs); `verify` and
//! `list` go through them so they answer exactly as the server would.

use std::collections::HashSet;
use std::fs;
use std::io::{self, BufRead, IsTerminal as _, Write as _};
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use aws_lc_rs::rand::{SecureRandom as _, SystemRandom};

use crate::auth::htpasswd::{self, Hash};

/// Mode of a file created by `-c`: the hashes are secrets too.
const NEW_FILE_MODE: u32 = 0o600;

/// bcrypt reads only this many bytes of a password (Apache's tool and the bcrypt crate agree).
const BCRYPT_MAX_PASSWORD: usize = 72;

/// Exit status of `verify` when the password does not match.
const EXIT_MISMATCH: u8 = 1;
/// Exit status for every error (file, user name, password input).
const EXIT_ERROR: u8 = 2;

/// Manage an htpasswd file (exit 0 on success, 1 when `verify` fails, 2 on errors).
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Add a user; fails if the user already exists.
    Add(SetArgs),
    /// Set a user's password, adding the user if needed.
    Set(SetArgs),
    /// Remove a user (every line of that user).
    Delete(UserArgs),
    /// Check a password: exit 0 if it matches, 1 if it does not.
    Verify(VerifyArgs),
    /// List the users and the format of their hashes (never the hashes).
    List(ListArgs),
}

#[derive(Debug, clap::Args)]
pub struct SetArgs {
    /// Create FILE (mode 0600) if it does not exist; an existing file is kept, never truncated.
    #[arg(short = 'c', long)]
    pub create: bool,
    /// bcrypt cost: each step doubles the time of every login check.
    #[arg(
        long,
        default_value_t = 10,
        value_parser = clap::value_parser!(u32).range(4..=31),
        conflicts_with = "apr1"
    )]
    pub cost: u32,
    /// Write an apr1 (MD5) hash instead of bcrypt, for tools that cannot read bcrypt.
    #[arg(long)]
    pub apr1: bool,
    /// The password. Visible to `ps` and kept in shell history: prefer stdin or the prompt.
    #[arg(long, allow_hyphen_values = true)]
    pub password: Option<String>,
    /// The htpasswd file.
    pub file: PathBuf,
    /// The user name (no ':', no line breaks, not starting with '#').
    pub user: String,
}

#[derive(Debug, clap::Args)]
pub struct UserArgs {
    /// The htpasswd file.
    pub file: PathBuf,
    /// The user name.
    pub user: String,
}

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// The password. Visible to `ps` and kept in shell history: prefer stdin or the prompt.
    #[arg(long, allow_hyphen_values = true)]
    pub password: Option<String>,
    /// The htpasswd file.
    pub file: PathBuf,
    /// The user name.
    pub user: String,
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// The htpasswd file.
    pub file: PathBuf,
}

/// Why a `registry-gate htpasswd` command failed.
#[derive(Debug, thiserror::Error)]
pub enum HtpasswdError {
    #[error("{}: no such file (use -c to create it)", path.display())]
    Missing { path: PathBuf },
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} is not UTF-8 text, which the gate could not read either", path.display())]
    NotUtf8 { path: PathBuf },
    #[error("cannot write {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("invalid user name {user:?}: {reason}")]
    BadUser { user: String, reason: &'static str },
    #[error("user {user:?} already exists in {}; use `set` to change the password", path.display())]
    UserExists { user: String, path: PathBuf },
    #[error("user {user:?} not found in {}", path.display())]
    UserNotFound { user: String, path: PathBuf },
    #[error("cannot read the password")]
    PasswordInput(#[source] io::Error),
    #[error("no password on standard input (it was empty)")]
    NoPassword,
    #[error("the passwords do not match")]
    Retyped,
    #[error("cannot hash the password")]
    Bcrypt(#[from] bcrypt::BcryptError),
    #[error("the system random source failed")]
    Random,
}

/// What a successful command found.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Done,
    Mismatch,
}

/// Runs one `registry-gate htpasswd` command and prints what went wrong to stderr.
pub fn run(command: Command) -> ExitCode {
    match execute(command) {
        Ok(Outcome::Done) => ExitCode::SUCCESS,
        Ok(Outcome::Mismatch) => ExitCode::from(EXIT_MISMATCH),
        Err(e) => {
            let mut message = format!("registry-gate htpasswd: {e}");
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                message.push_str(&format!(": {s}"));
                source = s.source();
            }
            eprintln!("{message}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

fn execute(command: Command) -> Result<Outcome, HtpasswdError> {
    match command {
        Command::Add(args) => set(args, true),
        Command::Set(args) => set(args, false),
        Command::Delete(args) => delete(&args),
        Command::Verify(args) => verify(args),
        Command::List(args) => list(&args),
    }
}

fn set(args: SetArgs, add: bool) -> Result<Outcome, HtpasswdError> {
    check_user(&args.user)?;
    let (path, text) = match read_file(&args.file)? {
        Some((path, text)) => (path, text),
        None if args.create => (args.file.clone(), String::new()),
        None => return Err(HtpasswdError::Missing { path: args.file }),
    };
    let found = user_lines(&text, &args.user);
    if add && found > 0 {
        return Err(HtpasswdError::UserExists {
            user: args.user,
            path: args.file,
        });
    }
    let password = password(args.password, true)?;
    let scheme = if args.apr1 {
        Scheme::Apr1
    } else {
        if password.len() > BCRYPT_MAX_PASSWORD {
            eprintln!(
                "registry-gate htpasswd: warning: bcrypt uses only the first \
                 {BCRYPT_MAX_PASSWORD} bytes of the password"
            );
        }
        Scheme::Bcrypt { cost: args.cost }
    };
    let hash = hash_password(&password, scheme)?;
    let (new_text, _) = rewrite(&text, &args.user, Some(&format!("{}:{hash}", args.user)));
    if found > 1 {
        eprintln!(
            "registry-gate htpasswd: removed {} duplicate line(s) of user {:?}",
            found - 1,
            args.user
        );
    }
    write_atomic(&path, new_text.as_bytes())?;
    let verb = if found > 0 { "updated" } else { "added" };
    eprintln!("registry-gate htpasswd: {verb} user {:?}", args.user);
    Ok(Outcome::Done)
}

fn delete(args: &UserArgs) -> Result<Outcome, HtpasswdError> {
    let Some((path, text)) = read_file(&args.file)? else {
        return Err(HtpasswdError::Missing {
            path: args.file.clone(),
        });
    };
    let (new_text, found) = rewrite(&text, &args.user, None);
    if found == 0 {
        return Err(HtpasswdError::UserNotFound {
            user: args.user.clone(),
            path: args.file.clone(),
        });
    }
    write_atomic(&path, new_text.as_bytes())?;
    eprintln!("registry-gate htpasswd: deleted user {:?}", args.user);
    Ok(Outcome::Done)
}

fn verify(args: VerifyArgs) -> Result<Outcome, HtpasswdError> {
    let Some((_, text)) = read_file(&args.file)? else {
        return Err(HtpasswdError::Missing { path: args.file });
    };
    let parsed = htpasswd::parse(&text);
    let Some(hash) = parsed.users.get(&args.user) else {
        match parsed
            .errors
            .iter()
            .find(|p| p.user.as_deref() == Some(&args.user))
        {
            Some(problem) => eprintln!(
                "registry-gate htpasswd: user {:?} cannot log in: {}",
                args.user,
                htpasswd::describe(&args.file, problem)
            ),
            None => eprintln!(
                "registry-gate htpasswd: user {:?} not found in {}",
                args.user,
                args.file.display()
            ),
        }
        return Ok(Outcome::Mismatch);
    };
    let password = password(args.password, false)?;
    if hash.verify(&password) {
        eprintln!(
            "registry-gate htpasswd: password for user {:?} is correct",
            args.user
        );
        Ok(Outcome::Done)
    } else {
        eprintln!(
            "registry-gate htpasswd: password for user {:?} is wrong",
            args.user
        );
        Ok(Outcome::Mismatch)
    }
}

fn list(args: &ListArgs) -> Result<Outcome, HtpasswdError> {
    let Some((_, text)) = read_file(&args.file)? else {
        return Err(HtpasswdError::Missing {
            path: args.file.clone(),
        });
    };
    let parsed = htpasswd::parse(&text);
    for problem in parsed.errors.iter().chain(&parsed.warnings) {
        eprintln!("{}", htpasswd::describe(&args.file, problem));
    }
    let mut out = io::stdout().lock();
    for (user, format) in users_and_formats(&text) {
        writeln!(out, "{user}\t{}", format.unwrap_or("unusable")).map_err(|source| {
            HtpasswdError::Write {
                path: "<stdout>".into(),
                source,
            }
        })?;
    }
    Ok(Outcome::Done)
}

/// Rejects user names that would break the file or never match a login.
fn check_user(user: &str) -> Result<(), HtpasswdError> {
    let reason = if user.is_empty() {
        "it is empty"
    } else if user.contains(':') {
        "it contains ':', which separates the user from the hash"
    } else if user.contains(['\n', '\r']) {
        "it contains a line break"
    } else if user.trim_start().starts_with('#') {
        "a line starting with '#' is a comment"
    } else if user.starts_with(crate::auth::keys::KEY_PREFIX) {
        "names starting with 'key+' are access keys (registry-gate key add)"
    } else {
        return Ok(());
    };
    Err(HtpasswdError::BadUser {
        user: user.to_owned(),
        reason,
    })
}

/// Reads the file, following symlinks so that an edit replaces the target, not the link.
/// `None` when it does not exist.
fn read_file(path: &Path) -> Result<Option<(PathBuf, String)>, HtpasswdError> {
    let read_error = |source| HtpasswdError::Read {
        path: path.to_owned(),
        source,
    };
    let real = match fs::canonicalize(path) {
        Ok(p) => p,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(read_error(e)),
    };
    let bytes = fs::read(&real).map_err(read_error)?;
    let text = String::from_utf8(bytes).map_err(|_| HtpasswdError::NotUtf8 {
        path: path.to_owned(),
    })?;
    Ok(Some((real, text)))
}

/// The user a line belongs to, as `htpasswd::parse` reads it; `None` for comments and blanks.
fn line_user(line: &str) -> Option<&str> {
    let l = line.strip_suffix('\n').unwrap_or(line);
    let l = l.strip_suffix('\r').unwrap_or(l);
    if l.trim().is_empty() || l.trim_start().starts_with('#') {
        return None;
    }
    l.split_once(':').map(|(user, _)| user)
}

/// How many lines of `text` belong to `user`.
fn user_lines(text: &str, user: &str) -> usize {
    text.split_inclusive('\n')
        .filter(|l| line_user(l) == Some(user))
        .count()
}

/// Replaces the first line of `user` with `new_line` (keeping its line ending) and drops the
/// user's later lines, or appends `new_line` when the user has none; with `None`, drops every
/// line of the user. Every other byte stays. Returns the new text and how many lines matched.
fn rewrite(text: &str, user: &str, new_line: Option<&str>) -> (String, usize) {
    let mut out = String::with_capacity(text.len() + new_line.map_or(0, str::len) + 2);
    let mut found = 0;
    for line in text.split_inclusive('\n') {
        if line_user(line) != Some(user) {
            out.push_str(line);
            continue;
        }
        found += 1;
        if let (1, Some(new)) = (found, new_line) {
            out.push_str(new);
            out.push_str(line_ending(line));
        }
    }
    if let (0, Some(new)) = (found, new_line) {
        let eol = if text.contains("\r\n") { "\r\n" } else { "\n" };
        if !out.is_empty() && !out.ends_with('\n') {
            out.push_str(eol);
        }
        out.push_str(new);
        out.push_str(eol);
    }
    (out, found)
}

fn line_ending(line: &str) -> &str {
    if line.ends_with("\r\n") {
        "\r\n"
    } else if line.ends_with('\n') {
        "\n"
    } else {
        ""
    }
}

/// Each user in file order (first line wins, as in the server) and its hash format, or `None`
/// when the line cannot be used.
fn users_and_formats(text: &str) -> Vec<(&str, Option<&'static str>)> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for line in text.split_inclusive('\n') {
        let Some(user) = line_user(line).filter(|u| !u.is_empty()) else {
            continue;
        };
        if !seen.insert(user) {
            continue;
        }
        let l = line.strip_suffix('\n').unwrap_or(line);
        let l = l.strip_suffix('\r').unwrap_or(l);
        let stored = l.split_once(':').map_or("", |(_, h)| h);
        out.push((user, Hash::parse(stored).ok().map(|h| h.format_name())));
    }
    out
}

/// Gets the password: `--password`, else one line of a non-TTY stdin, else a prompt without
/// echo (asked twice when `confirm`).
fn password(explicit: Option<String>, confirm: bool) -> Result<Vec<u8>, HtpasswdError> {
    if let Some(p) = explicit {
        return Ok(p.into_bytes());
    }
    let stdin = io::stdin();
    if !stdin.is_terminal() {
        return read_password_line(&mut stdin.lock());
    }
    let prompt = if confirm {
        "New password: "
    } else {
        "Password: "
    };
    let first = rpassword::prompt_password(prompt).map_err(HtpasswdError::PasswordInput)?;
    if confirm {
        let again = rpassword::prompt_password("Re-type new password: ")
            .map_err(HtpasswdError::PasswordInput)?;
        if again != first {
            return Err(HtpasswdError::Retyped);
        }
    }
    Ok(first.into_bytes())
}

/// Reads one line and strips its `\n` or `\r\n`. Empty input (no line at all) is an error; an
/// empty line is an empty password.
fn read_password_line(input: &mut impl BufRead) -> Result<Vec<u8>, HtpasswdError> {
    let mut line = Vec::new();
    let n = input
        .read_until(b'\n', &mut line)
        .map_err(HtpasswdError::PasswordInput)?;
    if n == 0 {
        return Err(HtpasswdError::NoPassword);
    }
    if line.last() == Some(&b'\n') {
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
    }
    Ok(line)
}

/// The format of a new hash.
#[derive(Debug, Clone, Copy)]
enum Scheme {
    Bcrypt { cost: u32 },
    Apr1,
}

/// Hashes a new password with a fresh random salt.
fn hash_password(password: &[u8], scheme: Scheme) -> Result<String, HtpasswdError> {
    match scheme {
        Scheme::Bcrypt { cost } => {
            Ok(bcrypt::hash_with_result(password, cost)?.format_for_version(bcrypt::Version::TwoY))
        }
        Scheme::Apr1 => {
            let mut salt = [0u8; 8];
            SystemRandom::new()
                .fill(&mut salt)
                .map_err(|_| HtpasswdError::Random)?;
            // 256 is a multiple of 64, so masking keeps every character equally likely.
            let salt = salt.map(|b| htpasswd::ITOA64[usize::from(b & 0x3f)]);
            Ok(htpasswd::apr1(password, &salt))
        }
    }
}

/// Replaces `path` with `contents`: a temp file in the same folder, written and fsynced, given
/// the old file's mode and owner (0600 and the caller for a new file), then renamed over `path`.
/// A new file is never renamed over one that appeared in the meantime.
fn write_atomic(path: &Path, contents: &[u8]) -> Result<(), HtpasswdError> {
    let write_error = |source| HtpasswdError::Write {
        path: path.to_owned(),
        source,
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map_or_else(|| "htpasswd".into(), |n| n.to_string_lossy().into_owned());
    let old = match fs::metadata(path) {
        Ok(m) => Some(m),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(write_error(e)),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(write_error)?;
    let file = tmp.as_file();
    match &old {
        Some(meta) => {
            file.set_permissions(meta.permissions())
                .map_err(write_error)?;
            let mine = file.metadata().map_err(write_error)?;
            if (mine.uid(), mine.gid()) != (meta.uid(), meta.gid())
                && let Err(e) = std::os::unix::fs::fchown(file, Some(meta.uid()), Some(meta.gid()))
            {
                eprintln!(
                    "registry-gate htpasswd: warning: cannot keep the owner {}:{} of {} ({e}); \
                     it is now owned by {}:{}",
                    meta.uid(),
                    meta.gid(),
                    path.display(),
                    mine.uid(),
                    mine.gid()
                );
            }
        }
        None => file
            .set_permissions(fs::Permissions::from_mode(NEW_FILE_MODE))
            .map_err(write_error)?,
    }
    tmp.write_all(contents).map_err(write_error)?;
    tmp.as_file().sync_all().map_err(write_error)?;
    if old.is_some() {
        tmp.persist(path).map_err(|e| write_error(e.error))?;
    } else {
        tmp.persist_noclobber(path)
            .map_err(|e| write_error(e.error))?;
    }
    // Make the rename itself durable.
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(write_error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    const FILE: &str = "# team registry\r\nalice:{PLAIN}a\r\n\r\n  # indented comment\nbob:$apr1$x$y\n#carol:{PLAIN}old\ncarol:{PLAIN}c";

    #[test]
    fn set_replaces_only_the_users_line_and_keeps_its_ending() {
        let (text, found) = rewrite(FILE, "alice", Some("alice:NEW"));
        assert_eq!(found, 1);
        assert_eq!(text, FILE.replace("alice:{PLAIN}a\r\n", "alice:NEW\r\n"));
        let (text, _) = rewrite(FILE, "carol", Some("carol:NEW"));
        assert_eq!(
            text,
            FILE.replace("carol:{PLAIN}c", "carol:NEW"),
            "no newline added"
        );
    }

    #[test]
    fn set_appends_a_new_user_after_a_missing_final_newline() {
        let (text, found) = rewrite(FILE, "dave", Some("dave:NEW"));
        assert_eq!(found, 0);
        assert_eq!(
            text,
            format!("{FILE}\r\ndave:NEW\r\n"),
            "CRLF file gets CRLF"
        );
        assert_eq!(rewrite("", "dave", Some("dave:h")).0, "dave:h\n");
        assert_eq!(rewrite("a:b\n", "dave", Some("dave:h")).0, "a:b\ndave:h\n");
    }

    #[test]
    fn comments_and_lookalikes_are_not_the_user() {
        assert_eq!(user_lines(FILE, "carol"), 1, "#carol is a comment");
        assert_eq!(user_lines(FILE, "#carol"), 0);
        assert_eq!(user_lines("alice2:x\n alice:y\n", "alice"), 0);
    }

    #[test]
    fn duplicates_collapse_on_set_and_all_go_on_delete() {
        let text = "a:1\nx:0\na:2\na:3\n";
        assert_eq!(
            rewrite(text, "a", Some("a:N")),
            ("a:N\nx:0\n".to_owned(), 3)
        );
        assert_eq!(rewrite(text, "a", None), ("x:0\n".to_owned(), 3));
        assert_eq!(rewrite(text, "zz", None), (text.to_owned(), 0));
    }

    #[test]
    fn delete_keeps_everything_else() {
        let (text, found) = rewrite(FILE, "bob", None);
        assert_eq!(found, 1);
        assert_eq!(text, FILE.replace("bob:$apr1$x$y\n", ""));
    }

    #[test]
    fn user_names_that_would_break_the_file_are_refused() {
        for bad in ["", "a:b", "a\nb", "a\r", "#x", "  #x"] {
            assert!(check_user(bad).is_err(), "{bad:?}");
        }
        for good in ["alice", "ci-bot@example.com", "a#b", "Ünïcode"] {
            assert!(check_user(good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn password_line_strips_one_line_ending() {
        let read = |s: &[u8]| read_password_line(&mut Cursor::new(s.to_vec()));
        assert_eq!(read(b"pw\n").unwrap(), b"pw");
        assert_eq!(read(b"pw\r\n").unwrap(), b"pw");
        assert_eq!(read(b"pw").unwrap(), b"pw");
        assert_eq!(read(b" p w \nsecond\n").unwrap(), b" p w ");
        assert_eq!(read(b"\n").unwrap(), b"");
        assert_eq!(read(b"p\rw\r\r\n").unwrap(), b"p\rw\r");
        assert!(matches!(read(b""), Err(HtpasswdError::NoPassword)));
    }

    #[test]
    fn new_hashes_verify_through_the_servers_parser() {
        let bc = hash_password(b"s3cret", Scheme::Bcrypt { cost: 4 }).unwrap();
        assert!(bc.starts_with("$2y$04$"), "{bc}");
        let apr = hash_password(b"s3cret", Scheme::Apr1).unwrap();
        let salt = &apr["$apr1$".len().."$apr1$".len() + 8];
        assert!(salt.bytes().all(|b| htpasswd::ITOA64.contains(&b)), "{apr}");
        assert_eq!(apr.as_bytes()[14], b'$');
        assert_ne!(
            apr,
            hash_password(b"s3cret", Scheme::Apr1).unwrap(),
            "fresh salt"
        );
        for stored in [bc, apr] {
            let h = Hash::parse(&stored).unwrap();
            assert!(h.verify(b"s3cret"));
            assert!(!h.verify(b"s3cret "));
        }
    }

    #[test]
    fn list_shows_formats_in_file_order_without_hashes() {
        let text = "# c\nzed:{PLAIN}p\nalice:{SHA}AAAAAAAAAAAAAAAAAAAAAAAAAAA=\nbad:$1$x$y\nzed:{PLAIN}q\n";
        assert_eq!(
            users_and_formats(text),
            [
                ("zed", Some("plain text")),
                ("alice", Some("{SHA}")),
                ("bad", None)
            ]
        );
    }

    #[test]
    fn atomic_write_keeps_mode_and_creates_private_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("htpasswd");
        write_atomic(&path, b"a:b\n").unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(&path), NEW_FILE_MODE);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        write_atomic(&path, b"a:c\n").unwrap();
        assert_eq!(mode(&path), 0o640);
        assert_eq!(fs::read(&path).unwrap(), b"a:c\n");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["htpasswd"], "no temp file left behind");
    }

    #[test]
    fn edits_go_through_a_symlink_to_its_target() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("real");
        let link = dir.path().join("link");
        fs::write(&target, "a:b\n").unwrap();
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let (real, text) = read_file(&link).unwrap().unwrap();
        write_atomic(&real, rewrite(&text, "a", None).0.as_bytes()).unwrap();
        assert!(
            fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(fs::read_to_string(&target).unwrap(), "");
        assert!(read_file(&dir.path().join("missing")).unwrap().is_none());
    }
}
