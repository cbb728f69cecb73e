//! The users of the htpasswd file, kept current while the gate runs.
//!
//! Owns: reading the file, logging every problem with file, line and user, and swapping in the
//! new table only when the file could be read and gave at least one usable line (a file that
//! cannot be read or parsed at all keeps the last good users). Also owns the dummy hash an
//! unknown user is checked against, so that an unknown user costs as much as a wrong password.
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
    /// Checked when the user is unknown, at the cost of the file's own bcrypt hashes.
    pub dummy: Hash,
}

/// Reads and parses the file. Per-line problems come back in `Parsed`, for the caller to log.
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
    Ok((
        UserTable {
            dummy: dummy_like(&users),
            users,
        },
        parsed,
    ))
}

/// A bcrypt hash of a random password at the highest bcrypt cost in the file (10 if none).
fn dummy_like(users: &HashMap<String, Hash>) -> Hash {
    let cost = users
        .values()
        .filter_map(|h| match h {
            Hash::Bcrypt(s) => s.get(4..6).and_then(|c| c.parse::<u32>().ok()),
            _ => None,
        })
        .max()
        .unwrap_or(10);
    let mut secret = [0u8; 18];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut secret)
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

    /// Reads the file again; on failure the last good users stay.
    pub fn reload(&self) -> Result<usize, UsersError> {
        let (table, parsed) = read(&self.path)?;
        log_problems(&self.path, &parsed);
        let n = table.users.len();
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(table);
        Ok(n)
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
