//! The users of the htpasswd file, kept current while the gate runs.
//!
//! Owns: reading the file, logging every problem with file, line and user, and swapping in the
//! new table only when the file could be read and gave at least one usable line (a file that
//! cannot be read or parsed at all keeps the last good users). Reading, parsing and the dummy
//! hash run on the blocking pool ([`UserStore::reload_async`]), never on a runtime worker.
//!
//! Also owns equal cost ([`UserTable::check`]): every password check, for a known user of any
//! format or for an unknown user, verifies exactly one hash of every *work class* in the file
//! (format plus cost parameter, [`Hash::work_class`]): the user's own hash for its class, and
//! for every other class the class's representative (a hash from the file, whose answer is
//! thrown away). So an apr1 or `{SHA}` user costs the same as an unknown user, who costs the
//! same as a bcrypt user: in a file with bcrypt-10 and apr1 users every check costs one
//! bcrypt-10 plus one apr1 verification (about 60 ms + 0.3 ms here). Measured with
//! `equal_cost_for_every_format` below. A file with no usable user gets a bcrypt-10 dummy of a
//! random secret, so an empty file is not an instant "no".
//! Does not own: noticing that the file changed (ops/reload.rs).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use super::htpasswd::{self, Hash, Parsed};

/// Why the user file could not be used at all.
#[derive(Debug, thiserror::Error)]
pub enum UsersError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: no usable user line ({problems})")]
    NoUsers { path: PathBuf, problems: String },
}

/// One loaded version of the file.
#[derive(Debug)]
pub struct UserTable {
    pub users: HashMap<String, Hash>,
    /// One hash per work class in the file, each verified on every check (see the header).
    work: Vec<(String, Hash)>,
}

impl UserTable {
    /// A table of `users` with its work classes.
    pub fn new(users: HashMap<String, Hash>) -> Self {
        let mut classes: HashMap<String, Hash> = HashMap::new();
        for h in users.values() {
            classes.entry(h.work_class()).or_insert_with(|| h.clone());
        }
        if classes.is_empty() {
            let dummy = dummy_bcrypt(10);
            classes.insert(dummy.work_class(), dummy);
        }
        let mut work: Vec<_> = classes.into_iter().collect();
        work.sort_by(|a, b| a.0.cmp(&b.0));
        UserTable { users, work }
    }

    /// Checks `password` for `user` with the same work whoever the user is: one verification
    /// per work class. Slow; call on the blocking pool. Returns how many hashes were verified.
    pub fn check(&self, user: &str, password: &[u8]) -> (bool, usize) {
        let own = self.users.get(user);
        let own_class = own.map(Hash::work_class);
        let mut ok = false;
        for (class, representative) in &self.work {
            match own {
                Some(h) if own_class.as_deref() == Some(class.as_str()) => {
                    ok = h.verify(password);
                }
                // The answer is thrown away; only the time counts.
                _ => {
                    std::hint::black_box(representative.verify(password));
                }
            }
        }
        (ok, self.work.len())
    }

    /// The work classes verified on every check.
    pub fn work_classes(&self) -> impl Iterator<Item = &str> {
        self.work.iter().map(|(c, _)| c.as_str())
    }
}

/// Reads and parses the file. Per-line problems come back in `Parsed`, for the caller to log.
/// Blocking (file I/O, and hashing for an empty file).
pub fn read(path: &Path) -> Result<(UserTable, Parsed), UsersError> {
    let text = std::fs::read_to_string(path).map_err(|source| UsersError::Read {
        path: path.to_owned(),
        source,
    })?;
    let mut parsed = htpasswd::parse(&text);
    if parsed.users.is_empty() && !parsed.errors.is_empty() {
        let problems = parsed
            .errors
            .iter()
            .take(3)
            .map(|p| htpasswd::describe(path, p))
            .collect::<Vec<_>>()
            .join("; ");
        return Err(UsersError::NoUsers {
            path: path.to_owned(),
            problems,
        });
    }
    let users = std::mem::take(&mut parsed.users);
    Ok((UserTable::new(users), parsed))
}

/// A bcrypt hash of a random password at `cost`.
fn dummy_bcrypt(cost: u32) -> Hash {
    let mut secret = [0u8; 18];
    aws_lc_rs::rand::SecureRandom::fill(&aws_lc_rs::rand::SystemRandom::new(), &mut secret)
        .expect("the system random source works");
    let hash = bcrypt::hash(secret, cost).expect("cost is within 4..=31");
    Hash::Bcrypt(hash)
}

/// The current users, replaceable at run time.
pub struct UserStore {
    path: PathBuf,
    current: RwLock<Arc<UserTable>>,
}

impl UserStore {
    /// Loads the file; fails when it cannot be read or holds no usable line.
    pub fn load(path: PathBuf) -> Result<Self, UsersError> {
        let (table, parsed) = read(&path)?;
        log_problems(&path, &parsed);
        tracing::info!(file = %path.display(), users = table.users.len(), "loaded users");
        Ok(UserStore {
            path,
            current: RwLock::new(Arc::new(table)),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The table in force now.
    pub fn snapshot(&self) -> Arc<UserTable> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Reads the file again; on failure the last good users stay. Blocking: see
    /// [`UserStore::reload_async`].
    pub fn reload(&self) -> Result<usize, UsersError> {
        let (table, parsed) = read(&self.path)?;
        log_problems(&self.path, &parsed);
        let n = table.users.len();
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(table);
        Ok(n)
    }

    /// [`UserStore::reload`] on the blocking pool, so file I/O and hashing never hold a runtime
    /// worker.
    pub async fn reload_async(self: &Arc<Self>) -> Result<usize, UsersError> {
        let store = self.clone();
        match tokio::task::spawn_blocking(move || store.reload()).await {
            Ok(r) => r,
            Err(e) => Err(UsersError::Read {
                path: self.path.clone(),
                source: std::io::Error::other(e.to_string()),
            }),
        }
    }
}

fn log_problems(path: &Path, parsed: &Parsed) {
    for p in &parsed.errors {
        tracing::error!("{} (this user cannot log in)", htpasswd::describe(path, p));
    }
    for p in &parsed.warnings {
        tracing::warn!("{}", htpasswd::describe(path, p));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn table(lines: &str) -> UserTable {
        UserTable::new(htpasswd::parse(lines).users)
    }

    #[test]
    fn every_check_verifies_one_hash_per_class() {
        let bc = bcrypt::hash("b", 4).unwrap();
        let t = table(&format!(
            "b:{bc}\na:{}\ns:{{SHA}}hvfkN/qlp/zhXR3cuerq6jd2Z7g=\n",
            htpasswd::apr1(b"a", b"salt1234")
        ));
        let classes: Vec<_> = t.work_classes().collect();
        assert_eq!(classes.len(), 3, "{classes:?}");
        assert_eq!(t.check("b", b"b"), (true, 3));
        assert_eq!(t.check("b", b"x"), (false, 3));
        assert_eq!(t.check("nobody", b"b"), (false, 3));
        assert_eq!(t.check("a", b"b"), (false, 3));
        // An empty file still costs a bcrypt verification.
        let empty = table("");
        assert_eq!(empty.check("x", b"y"), (false, 1));
        assert_eq!(empty.work_classes().next(), Some("bcrypt-10"));
    }

    /// Unknown, apr1, {SHA} and bcrypt users cost the same (within noise) in one file.
    #[test]
    fn equal_cost_for_every_format() {
        let bc = bcrypt::hash("b", 8).unwrap();
        let apr = htpasswd::apr1(b"a", b"saltsalt");
        let t = table(&format!(
            "b:{bc}\na:{apr}\ns:{{SHA}}hvfkN/qlp/zhXR3cuerq6jd2Z7g=\n"
        ));
        let time = |user: &str| {
            let start = Instant::now();
            t.check(user, b"wrong");
            start.elapsed()
        };
        // Each user's fastest of several interleaved checks: other load on the machine only
        // ever adds time, so the minimum is the cost of the work itself.
        let users = ["b", "a", "s", "nobody"];
        let mut best = [Duration::MAX; 4];
        for _ in 0..6 {
            for (i, user) in users.iter().enumerate() {
                best[i] = best[i].min(time(user));
            }
        }
        let lo = best.iter().min().copied().unwrap_or_default();
        let hi = best.iter().max().copied().unwrap_or_default();
        // bcrypt-8 alone is ~15 ms; without equal cost, apr1, {SHA} and unknown users would
        // take well under 1 % of it.
        assert!(hi < lo * 2, "fastest checks per user {best:?}");
    }
}
