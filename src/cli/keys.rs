//! `registry-gate key`: add, list, delete and rotate access keys.
//!
//! Owns: the subcommand's arguments, finding the keys file (`--file`, else the config's
//! `[auth] keys`), printing a new secret exactly once with the `docker login` line to use, and
//! exit codes (0 done, 1 no such key, 2 any other error, 64 a config problem). The file is
//! replaced atomically (temp file, rename; mode 0600), so a running gate reloads it whole within
//! two seconds. Two `key` commands run at the same moment on one file may lose one's change.
//! Does not own: the file format, hashing and checks (auth/keys.rs).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::auth::keys::{self, KEY_PREFIX, KeyIdentity, KeyTable};
use crate::authz::Action;
use crate::config::Config;

const EXIT_NO_KEY: u8 = 1;
const EXIT_ERROR: u8 = 2;
const EXIT_CONFIG: u8 = 64;

/// Manage access keys for CI (`[auth] keys`).
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Create a key and print its secret, once.
    Add {
        /// The key's name: a-z, 0-9, '.', '_', '-'; it logs in as `key+NAME`.
        name: String,
        /// Repository patterns it may use (`team-a/**`, `tools/*`); comma-separated or repeated.
        #[arg(long, required = true, value_delimiter = ',')]
        repos: Vec<String>,
        /// Actions: pull, push, delete; comma-separated.
        #[arg(long, required = true, value_delimiter = ',')]
        allow: Vec<String>,
        /// Lifetime: `90d`, `12h`, `30m`, `3600s`; without it the key never expires.
        #[arg(long)]
        expires: Option<String>,
        #[command(flatten)]
        file: FileArgs,
    },
    /// List the keys: name, grants, created, expires (never a secret).
    List {
        #[command(flatten)]
        file: FileArgs,
    },
    /// Delete a key; a running gate refuses it within two seconds.
    Delete {
        name: String,
        #[command(flatten)]
        file: FileArgs,
    },
    /// Give a key a new secret (printed once); the old secret stops working. Grants stay; a key
    /// that expires gets its lifetime again from now.
    Rotate {
        name: String,
        #[command(flatten)]
        file: FileArgs,
    },
}

#[derive(Debug, clap::Args)]
pub struct FileArgs {
    /// The keys file (instead of the config's `[auth] keys`).
    #[arg(long)]
    file: Option<PathBuf>,
    /// The config file, to find `[auth] keys` and the public URL for the login line.
    #[arg(long, short)]
    config: Option<PathBuf>,
}

/// Where the keys are, and the registry host to print in the login line.
fn locate(args: &FileArgs) -> Result<(PathBuf, String), ExitCode> {
    let config = if args.file.is_none() || args.config.is_some() {
        match Config::load(args.config.as_deref(), std::env::vars()) {
            Ok(c) => Some(c),
            Err(e) => {
                eprintln!("error: {e} (or name the keys file with --file)");
                return Err(ExitCode::from(EXIT_CONFIG));
            }
        }
    } else {
        None
    };
    let host = config
        .as_ref()
        .and_then(|c| c.public_url.as_deref())
        .map_or("REGISTRY", crate::http::origin::host_of)
        .to_owned();
    let path = match (
        &args.file,
        config.as_ref().and_then(|c| c.auth.keys.clone()),
    ) {
        (Some(f), _) => f.clone(),
        (None, Some(p)) => p,
        (None, None) => {
            eprintln!("error: no keys file: set [auth] keys in the config, or pass --file");
            return Err(ExitCode::from(EXIT_CONFIG));
        }
    };
    Ok((path, host))
}

fn load(path: &Path) -> Result<KeyTable, ExitCode> {
    keys::read(path).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(EXIT_ERROR)
    })
}

fn save(path: &Path, table: &KeyTable) -> Result<(), ExitCode> {
    keys::write(path, table).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(EXIT_ERROR)
    })
}

fn describe(id: &KeyIdentity) -> String {
    format!(
        "{} on {}",
        id.allow
            .iter()
            .map(|a| a.as_str())
            .collect::<Vec<_>>()
            .join(","),
        id.repos.join(",")
    )
}

/// Stores `table` and prints `summary` and the secret. The secret exists only in this output:
/// when it cannot be written (a closed pipe), `before` is stored back, so no key is left whose
/// secret nobody saw.
fn save_and_print(
    path: &Path,
    table: &KeyTable,
    before: &KeyTable,
    summary: &str,
    name: &str,
    secret: &str,
    host: &str,
) -> Result<(), ExitCode> {
    use std::io::Write as _;
    save(path, table)?;
    let text = format!(
        "{summary}\nsecret (shown only now; the gate keeps only its hash):\n  {secret}\nlog in with:\n  echo '{secret}' | docker login --username '{KEY_PREFIX}{name}' --password-stdin {host}\n"
    );
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        save(path, before)?;
        eprintln!("error: cannot print the secret ({e}); key {name:?} was not changed");
        return Err(ExitCode::from(EXIT_ERROR));
    }
    Ok(())
}

pub fn run(command: Command) -> ExitCode {
    match try_run(command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(code) => code,
    }
}

fn try_run(command: Command) -> Result<(), ExitCode> {
    let now = keys::unix_now();
    match command {
        Command::Add {
            name,
            repos,
            allow,
            expires,
            file,
        } => {
            if !keys::is_valid_key_name(&name) {
                eprintln!("error: key name {name:?}: use a-z, 0-9, '.', '_', '-' (up to 63)");
                return Err(ExitCode::from(EXIT_ERROR));
            }
            let mut actions = BTreeSet::new();
            for a in &allow {
                actions.insert(Action::parse(a.trim()).ok_or_else(|| {
                    eprintln!("error: --allow {a:?}: use pull, push or delete");
                    ExitCode::from(EXIT_ERROR)
                })?);
            }
            let repos: Vec<String> = repos.iter().map(|r| r.trim().to_owned()).collect();
            if let Some(bad) = repos
                .iter()
                .find(|r| !crate::authz::rules::is_valid_pattern(r))
            {
                eprintln!("error: --repos {bad:?} is not like \"team/*\" or \"team/**\"");
                return Err(ExitCode::from(EXIT_ERROR));
            }
            let expires = match expires.as_deref() {
                None => None,
                Some(text) => Some(
                    keys::parse_lifetime(text)
                        .and_then(|s| now.checked_add(s))
                        .ok_or_else(|| {
                            eprintln!(
                                "error: --expires {text:?}: use a lifetime like 90d, 12h, 30m"
                            );
                            ExitCode::from(EXIT_ERROR)
                        })?,
                ),
            };
            let (path, host) = locate(&file)?;
            let mut table = load(&path)?;
            if table.keys.contains_key(&name) {
                eprintln!(
                    "error: key {name:?} exists in {}; use `key rotate` or `key delete`",
                    path.display()
                );
                return Err(ExitCode::from(EXIT_ERROR));
            }
            let before = table.clone();
            let id = KeyIdentity::new(&name, repos, actions);
            let grants = describe(&id);
            let secret = table.put(id, now, expires);
            let summary = format!(
                "added access key {name:?} ({grants}; expires {}) to {}",
                expires.map_or("never".into(), crate::time::rfc3339),
                path.display()
            );
            save_and_print(&path, &table, &before, &summary, &name, &secret, &host)?;
        }
        Command::List { file } => {
            let (path, _) = locate(&file)?;
            let table = load(&path)?;
            if table.keys.is_empty() {
                println!("no access keys in {}", path.display());
            }
            for k in table.keys.values() {
                let state = if k.expired(now) { "EXPIRED" } else { "valid" };
                println!(
                    "{}{}  {}  created {}  expires {}  {state}",
                    KEY_PREFIX,
                    k.identity.name,
                    describe(&k.identity),
                    crate::time::rfc3339(k.created),
                    k.expires.map_or("never".into(), crate::time::rfc3339),
                );
            }
        }
        Command::Delete { name, file } => {
            let (path, _) = locate(&file)?;
            let mut table = load(&path)?;
            if table.keys.remove(&name).is_none() {
                eprintln!("error: no key {name:?} in {}", path.display());
                return Err(ExitCode::from(EXIT_NO_KEY));
            }
            save(&path, &table)?;
            println!("deleted access key {name:?} from {}", path.display());
        }
        Command::Rotate { name, file } => {
            let (path, host) = locate(&file)?;
            let mut table = load(&path)?;
            let Some(old) = table.keys.get(&name).cloned() else {
                eprintln!("error: no key {name:?} in {}", path.display());
                return Err(ExitCode::from(EXIT_NO_KEY));
            };
            let expires = old
                .expires
                .map(|e| now.saturating_add(e.saturating_sub(old.created)));
            let before = table.clone();
            let secret = table.put((*old.identity).clone(), now, expires);
            let summary = format!(
                "rotated access key {name:?} ({}; expires {}); the old secret no longer works",
                describe(&old.identity),
                expires.map_or("never".into(), crate::time::rfc3339),
            );
            save_and_print(&path, &table, &before, &summary, &name, &secret, &host)?;
        }
    }
    Ok(())
}
