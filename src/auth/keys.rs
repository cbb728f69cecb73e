//! Access keys: credentials for CI that are not passwords (`[auth] keys`).
//!
//! Owns: the keys file (TOML, `[[key]]` tables written by `registry-gate key`), its validation
//! with file, line and reason, keeping the last good keys when a reload fails, generating a
//! secret, and checking one. A key logs in with Basic auth as user `key+NAME` ([`KEY_PREFIX`];
//! `+` needs no quoting in shells or YAML and is not the `:` Basic splits at). Every user name
//! with that prefix is a key and only a key: the htpasswd file is never consulted for it, and
//! htpasswd users named so are reported at load and cannot log in.
//!
//! Secrets are 256 random bits (`rgk_` + base64url). Only their SHA-256 is stored; a random
//! 256-bit secret needs no salt or slow hash (nothing to guess), so a check is one SHA-256 and a
//! constant-time comparison: no bcrypt, no blocking pool, and no cache that could outlive the
//! key's deletion: each request looks the key up in the table in force now.
//! Does not own: what a key may do (authz/policy.rs decides from [`KeyIdentity`]), noticing
//! that the file changed (ops/reload.rs), the command line (cli/keys.rs).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, RwLock};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use regex::Regex;
use serde::Deserialize;

use crate::config::{FileError, line_of};
use subtle::ConstantTimeEq as _;
use toml::Spanned;

use crate::authz::Action;
use crate::authz::rules::glob_match;

/// The Basic-auth user name of key `NAME` is `key+NAME`.
pub const KEY_PREFIX: &str = "key+";
/// What every secret starts with, so a leaked one is recognisable (secret scanners).
pub const SECRET_PREFIX: &str = "rgk_";

static KEY_NAME: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[a-z0-9][a-z0-9._-]{0,62}$").expect("valid regex"));

/// True when `name` may name a key: lower-case letters, digits, `.`, `_`, `-`, up to 63.
pub fn is_valid_key_name(name: &str) -> bool {
    KEY_NAME.is_match(name)
}

/// What a key may do, as the policy sees it: its own grants, nothing else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyIdentity {
    pub name: String,
    /// `key+NAME`: the user name it logs in with, and its name in logs and tokens.
    user: String,
    /// Repository patterns, with the rules' glob semantics.
    pub repos: Vec<String>,
    pub allow: BTreeSet<Action>,
}

impl KeyIdentity {
    pub fn new(name: &str, repos: Vec<String>, allow: BTreeSet<Action>) -> Self {
        KeyIdentity {
            name: name.to_owned(),
            user: format!("{KEY_PREFIX}{name}"),
            repos,
            allow,
        }
    }

    /// The user name the key logs in with, also its name in logs and tokens.
    pub fn user_name(&self) -> &str {
        &self.user
    }

    /// True when the key's grants allow `action` on `repo`.
    pub fn allows(&self, action: Action, repo: &str) -> bool {
        self.allow.contains(&action) && self.repos.iter().any(|p| glob_match(p, repo))
    }
}

/// One key of the file.
#[derive(Debug, Clone)]
pub struct Key {
    pub identity: Arc<KeyIdentity>,
    /// SHA-256 of the secret.
    hash: [u8; 32],
    /// Unix seconds.
    pub created: u64,
    /// Unix seconds; `None`: never.
    pub expires: Option<u64>,
    /// 1-based line of its `[[key]]`.
    pub line: usize,
}

impl Key {
    pub fn expired(&self, now: u64) -> bool {
        self.expires.is_some_and(|e| e <= now)
    }
}

/// Why a key login was refused; the message is the 401's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyRefusal {
    #[error("access key {0:?} does not exist (it may have been deleted)")]
    Unknown(String),
    #[error("access key {name:?} expired at {at}")]
    Expired { name: String, at: String },
    #[error("wrong secret for access key {0:?}")]
    WrongSecret(String),
}

/// The keys of one version of the file.
#[derive(Debug, Clone, Default)]
pub struct KeyTable {
    pub keys: BTreeMap<String, Key>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileKeys {
    #[serde(default, rename = "key")]
    keys: Vec<Spanned<FileKey>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileKey {
    name: Spanned<String>,
    hash: Spanned<String>,
    repos: Vec<Spanned<String>>,
    allow: Vec<Spanned<String>>,
    created: u64,
    expires: Option<u64>,
}

/// SHA-256 of a secret.
pub fn hash_secret(secret: &[u8]) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, secret);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn parse_hash(text: &str) -> Option<[u8; 32]> {
    let hex = text.strip_prefix("sha256:")?;
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// A new secret: `rgk_` and 256 random bits, base64url.
pub fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::SecureRandom::fill(&aws_lc_rs::rand::SystemRandom::new(), &mut bytes)
        .expect("the system random source works");
    format!("{SECRET_PREFIX}{}", B64URL.encode(bytes))
}

impl KeyTable {
    /// Parses and validates a keys file; `path` is for messages.
    pub fn parse(text: &str, path: &Path) -> Result<KeyTable, FileError> {
        let file: FileKeys = FileError::parse_toml(text, path)?;
        let invalid =
            |offset: usize, message: String| FileError::invalid(path, text, offset, message);
        let mut keys = BTreeMap::new();
        for spanned in &file.keys {
            let k = spanned.get_ref();
            let name = k.name.get_ref();
            if !is_valid_key_name(name) {
                return Err(invalid(
                    k.name.span().start,
                    format!("key name {name:?}: use a-z, 0-9, '.', '_', '-' (up to 63)"),
                ));
            }
            let hash = parse_hash(k.hash.get_ref()).ok_or_else(|| {
                invalid(
                    k.hash.span().start,
                    "hash must be \"sha256:\" and 64 hex digits".into(),
                )
            })?;
            if k.repos.is_empty() || k.allow.is_empty() {
                return Err(invalid(
                    spanned.span().start,
                    "a key needs repos and allow".into(),
                ));
            }
            let mut allow = BTreeSet::new();
            for a in &k.allow {
                allow.insert(Action::parse(a.get_ref()).ok_or_else(|| {
                    invalid(
                        a.span().start,
                        format!("unknown action {:?}; use pull, push or delete", a.get_ref()),
                    )
                })?);
            }
            let mut repos = Vec::new();
            for p in &k.repos {
                let pattern = p.get_ref().trim();
                if !crate::authz::rules::is_valid_pattern(pattern) {
                    return Err(invalid(
                        p.span().start,
                        format!(
                            "repository pattern {pattern:?} is not like \"team/*\" or \"team/**\""
                        ),
                    ));
                }
                repos.push(pattern.to_owned());
            }
            let line = line_of(text, spanned.span().start);
            let key = Key {
                identity: Arc::new(KeyIdentity::new(name, repos, allow)),
                hash,
                created: k.created,
                expires: k.expires,
                line,
            };
            if keys.insert(name.clone(), key).is_some() {
                return Err(invalid(
                    k.name.span().start,
                    format!("key {name:?} is defined twice"),
                ));
            }
        }
        Ok(KeyTable { keys })
    }

    /// Checks the secret of key `name` (the Basic user name without the prefix) at `now`.
    pub fn check(
        &self,
        name: &str,
        secret: &[u8],
        now: u64,
    ) -> Result<Arc<KeyIdentity>, KeyRefusal> {
        let Some(key) = self.keys.get(name) else {
            return Err(KeyRefusal::Unknown(name.to_owned()));
        };
        if !bool::from(hash_secret(secret).ct_eq(&key.hash)) {
            return Err(KeyRefusal::WrongSecret(name.to_owned()));
        }
        if let Some(at) = key.expires
            && key.expired(now)
        {
            return Err(KeyRefusal::Expired {
                name: name.to_owned(),
                at: crate::time::rfc3339(at),
            });
        }
        Ok(key.identity.clone())
    }

    /// The key `name` if it exists and has not expired at `now` (a token's holder).
    pub fn current(&self, name: &str, now: u64) -> Result<Arc<KeyIdentity>, KeyRefusal> {
        match self.keys.get(name) {
            None => Err(KeyRefusal::Unknown(name.to_owned())),
            Some(k) if k.expired(now) => Err(KeyRefusal::Expired {
                name: name.to_owned(),
                at: crate::time::rfc3339(k.expires.unwrap_or(0)),
            }),
            Some(k) => Ok(k.identity.clone()),
        }
    }

    /// The file text of this table: what `registry-gate key` writes. Never holds a secret.
    pub fn render(&self) -> String {
        let mut out = String::from(
            "# registry-gate access keys, written by `registry-gate key`.\n\
             # Holds SHA-256 hashes of the secrets, never the secrets themselves.\n",
        );
        for k in self.keys.values() {
            let id = &k.identity;
            let list = |items: Vec<&str>| {
                items
                    .iter()
                    .map(|s| format!("{s:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let _ = write!(
                out,
                "\n[[key]]\nname = {:?}\nhash = \"sha256:{}\"\nrepos = [{}]\nallow = [{}]\ncreated = {}  # {}\n",
                id.name,
                hex(&k.hash),
                list(id.repos.iter().map(String::as_str).collect()),
                list(id.allow.iter().map(|a| a.as_str()).collect()),
                k.created,
                crate::time::rfc3339(k.created),
            );
            if let Some(e) = k.expires {
                let _ = writeln!(out, "expires = {e}  # {}", crate::time::rfc3339(e));
            }
        }
        out
    }

    /// Adds or replaces key `name` with a new secret; returns the secret.
    pub fn put(&mut self, identity: KeyIdentity, created: u64, expires: Option<u64>) -> String {
        let secret = new_secret();
        let key = Key {
            hash: hash_secret(secret.as_bytes()),
            identity: Arc::new(identity),
            created,
            expires,
            line: 0,
        };
        self.keys.insert(key.identity.name.clone(), key);
        secret
    }
}

/// Reads and parses a keys file; a missing file is an empty table (no keys yet).
pub fn read(path: &Path) -> Result<KeyTable, FileError> {
    match std::fs::read_to_string(path) {
        Ok(text) => KeyTable::parse(&text, path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(KeyTable::default()),
        Err(source) => Err(FileError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Writes a keys file atomically (temp file in the same folder, then rename), mode 0600.
pub fn write(path: &Path, table: &KeyTable) -> Result<(), FileError> {
    use std::io::Write as _;
    let err = |source| FileError::Write {
        path: path.to_owned(),
        source,
    };
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(err)?;
    tmp.write_all(table.render().as_bytes()).map_err(err)?;
    tmp.as_file().sync_all().map_err(err)?;
    tmp.persist(path).map_err(|e| err(e.error))?;
    Ok(())
}

/// The keys in force, replaceable at run time. Without `[auth] keys` the table stays empty.
pub struct KeyStore {
    path: Option<PathBuf>,
    current: RwLock<Arc<KeyTable>>,
}

impl KeyStore {
    pub fn load(path: Option<PathBuf>) -> Result<Self, FileError> {
        let table = match &path {
            Some(p) => read(p)?,
            None => KeyTable::default(),
        };
        if let Some(p) = &path {
            tracing::info!(file = %p.display(), keys = table.keys.len(), "loaded access keys");
        }
        Ok(KeyStore {
            path,
            current: RwLock::new(Arc::new(table)),
        })
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    pub fn snapshot(&self) -> Arc<KeyTable> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Reads the file again; on failure the last good keys stay. Blocking (file I/O).
    pub fn reload(&self) -> Result<usize, FileError> {
        let Some(path) = &self.path else {
            return Ok(0);
        };
        let table = read(path)?;
        let n = table.keys.len();
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(table);
        Ok(n)
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    u64::try_from(crate::time::unix_now()).unwrap_or(0)
}

/// Parses a lifetime like `90d`, `12h`, `30m`, `3600s` or `3600` (seconds).
pub fn parse_lifetime(text: &str) -> Option<u64> {
    let text = text.trim();
    let (digits, unit) = match text.char_indices().last()? {
        (i, c) if c.is_ascii_alphabetic() => (&text[..i], c),
        _ => (text, 's'),
    };
    let n: u64 = digits.parse().ok()?;
    let unit = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        'w' => 7 * 86_400,
        _ => return None,
    };
    n.checked_mul(unit).filter(|s| *s > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (KeyTable, String) {
        let mut t = KeyTable::default();
        let secret = t.put(
            KeyIdentity::new(
                "ci",
                vec!["team-a/**".into()],
                [Action::Pull, Action::Push].into(),
            ),
            1_000,
            Some(2_000),
        );
        (t, secret)
    }

    #[test]
    fn render_and_parse_round_trip_without_the_secret() {
        let (t, secret) = sample();
        let text = t.render();
        assert!(!text.contains(&secret), "{text}");
        assert!(!text.contains(SECRET_PREFIX), "{text}");
        let back = KeyTable::parse(&text, Path::new("keys.toml")).unwrap();
        let k = &back.keys["ci"];
        assert_eq!(k.identity.repos, ["team-a/**"]);
        assert_eq!((k.created, k.expires), (1_000, Some(2_000)));
        assert_eq!(k.line, 4);
        assert!(back.check("ci", secret.as_bytes(), 1_500).is_ok());
    }

    #[test]
    fn the_hash_check_refuses_wrong_unknown_and_expired() {
        let (t, secret) = sample();
        assert!(secret.starts_with(SECRET_PREFIX) && secret.len() == 4 + 43);
        let id = t.check("ci", secret.as_bytes(), 1_999).unwrap();
        assert!(id.allows(Action::Push, "team-a/app"));
        assert!(!id.allows(Action::Delete, "team-a/app"));
        assert!(!id.allows(Action::Pull, "team-b/app"));
        assert_eq!(
            t.check("ci", b"rgk_wrong", 1_500),
            Err(KeyRefusal::WrongSecret("ci".into()))
        );
        assert_eq!(
            t.check("cd", secret.as_bytes(), 1_500),
            Err(KeyRefusal::Unknown("cd".into()))
        );
        let e = t.check("ci", secret.as_bytes(), 2_000).unwrap_err();
        assert!(matches!(e, KeyRefusal::Expired { .. }), "{e:?}");
        assert!(
            e.to_string().contains("expired at 1970-01-01T00:33:20Z"),
            "{e}"
        );
        assert!(t.current("ci", 2_001).is_err());
        assert!(t.current("ci", 1_001).is_ok());
        // Two secrets are never the same.
        assert_ne!(new_secret(), new_secret());
    }

    #[test]
    fn parse_errors_name_the_line() {
        let (t, _) = sample();
        let text = t.render();
        let bad = text.replace("\"push\"", "\"pish\"");
        let e = KeyTable::parse(&bad, Path::new("k.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("k.toml:8:") && e.contains("pish"), "{e}");
        let bad = text.replace("sha256:", "md5:");
        let e = KeyTable::parse(&bad, Path::new("k.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("k.toml:6:"), "{e}");
        let bad = text.replace("name = \"ci\"", "name = \"key+ci\"");
        let e = KeyTable::parse(&bad, Path::new("k.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("k.toml:5:"), "{e}");
        let twice = format!("{text}{}", &text[text.find("[[key]]").unwrap()..]);
        let e = KeyTable::parse(&twice, Path::new("k.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("twice"), "{e}");
        let e = KeyTable::parse("[[key]]\nnme = 1\n", Path::new("k.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("nme"), "{e}");
        assert!(
            KeyTable::parse("", Path::new("k.toml"))
                .unwrap()
                .keys
                .is_empty()
        );
    }

    #[test]
    fn lifetimes() {
        assert_eq!(parse_lifetime("90d"), Some(90 * 86_400));
        assert_eq!(parse_lifetime("12h"), Some(12 * 3600));
        assert_eq!(parse_lifetime("5s"), Some(5));
        assert_eq!(parse_lifetime("60"), Some(60));
        assert_eq!(parse_lifetime("0d"), None);
        assert_eq!(parse_lifetime("9x"), None);
        assert_eq!(parse_lifetime(""), None);
        assert_eq!(parse_lifetime("d"), None);
    }
}
