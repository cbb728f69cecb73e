//! The configuration: one TOML file, every key overridable by a `REGISTRY_GATE_*` variable.
//!
//! Owns: the file format (key names are a public interface: users' files and scripts rely on
//! them), environment overrides, validation, and the typed [`Config`] the rest of the gate uses;
//! also [`FileError`] and [`line_of`], the `file:line` errors of the other TOML files (access
//! rules, access keys).
//! Unknown keys and unknown `REGISTRY_GATE_*` variables are errors that name them. Relative paths
//! are resolved against the config file's folder (the working directory without a file).
//! Does not own: reading the files the config names (net/tls.rs, auth/, authz/rules.rs,
//! http/ui.rs, token/).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::Uri;
use serde::Deserialize;

/// Largest read buffer per connection, client side and registry side. hyper's default (about
/// 400 KiB) grows on every fast upload; 50 parallel pushes then held tens of MiB. 64 KiB keeps
/// a push registry-bound and holds a whole request head (`MAX_HEADER_BYTES`). A fixed limit,
/// not a setting.
pub const MAX_READ_BUFFER: usize = 64 * 1024;

/// The 1-based line of byte `offset` in `text`, for `file:line` errors in the TOML files the
/// gate reads (config, access rules, keys).
pub fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// A problem with one of the other TOML files the gate reads (access rules, access keys),
/// naming the file and, where the file is at fault, the line.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}:{line}: {message}")]
    Invalid {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl FileError {
    /// `text`, the contents of `path`, read as TOML into `T`.
    pub fn parse_toml<T: serde::de::DeserializeOwned>(text: &str, path: &Path) -> Result<T, Self> {
        toml::from_str(text).map_err(|e| FileError::Parse {
            path: path.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })
    }

    /// What is wrong at byte `offset` of `text`, the contents of `path`.
    pub fn invalid(path: &Path, text: &str, offset: usize, message: String) -> Self {
        FileError::Invalid {
            path: path.to_owned(),
            line: line_of(text, offset),
            message,
        }
    }
}

/// A config problem, with the file or variable it came from.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{var}: {message}")]
    Env { var: String, message: String },
    #[error("{origin}: {message}")]
    Invalid { origin: String, message: String },
}

/// Keys as written in the file. `deny_unknown_fields` makes a typo an error with its name.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    plain_listen: Option<String>,
    upstream: Option<OneOrMany>,
    upstream_ca: Option<PathBuf>,
    public_url: Option<String>,
    admin_listen: Option<String>,
    admin_token: Option<PathBuf>,
    block_old_clients: Option<bool>,
    trusted_proxies: Option<Vec<String>>,
    acme_http_listen: Option<String>,
    #[serde(default)]
    tls: FileTls,
    acme: Option<FileAcme>,
    #[serde(default)]
    auth: FileAuth,
    #[serde(default)]
    timeouts: FileTimeouts,
    #[serde(default)]
    limits: FileLimits,
    cors: Option<FileCors>,
    #[serde(default)]
    ui: FileUi,
    #[serde(default)]
    log: FileLog,
    #[serde(default)]
    maintenance: FileMaintenance,
}

/// `upstream = "http://r1:5000"` or `upstream = ["http://r1:5000", "http://r2:5000"]`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTls {
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileAcme {
    domains: Option<Vec<String>>,
    contact: Option<String>,
    directory: Option<String>,
    cache: Option<PathBuf>,
    ca: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileAuth {
    htpasswd: Option<PathBuf>,
    realm: Option<String>,
    cache_ttl: Option<u64>,
    brake_failures: Option<u32>,
    brake_window: Option<u64>,
    access: Option<PathBuf>,
    keys: Option<PathBuf>,
    mode: Option<String>,
    service: Option<String>,
    token_key: Option<PathBuf>,
    token_ttl: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTimeouts {
    header_read: Option<u64>,
    handshake: Option<u64>,
    upstream_connect: Option<u64>,
    upstream_response: Option<u64>,
    upstream_retry: Option<u64>,
    idle: Option<u64>,
    h2_idle: Option<u64>,
    drain: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileLimits {
    max_connections: Option<usize>,
    max_connections_per_client: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileCors {
    allow_origins: Option<Vec<String>>,
    allow_credentials: Option<bool>,
    max_age: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileUi {
    dir: Option<PathBuf>,
    auth: Option<bool>,
    #[serde(default)]
    vars: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileLog {
    format: Option<String>,
    level: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileMaintenance {
    read_only: Option<bool>,
    upload_idle: Option<u64>,
}

/// How an environment variable's text becomes a TOML value.
#[derive(Clone, Copy)]
enum Kind {
    Str,
    Int,
    Bool,
    /// Comma-separated list of strings.
    List,
}

/// Every key that can be set from the environment: `REGISTRY_GATE_` + the name here.
const ENV_KEYS: &[(&str, &[&str], Kind)] = &[
    ("LISTEN", &["listen"], Kind::Str),
    ("PLAIN_LISTEN", &["plain_listen"], Kind::Str),
    ("UPSTREAM", &["upstream"], Kind::List),
    ("UPSTREAM_CA", &["upstream_ca"], Kind::Str),
    ("PUBLIC_URL", &["public_url"], Kind::Str),
    ("ADMIN_LISTEN", &["admin_listen"], Kind::Str),
    ("ADMIN_TOKEN", &["admin_token"], Kind::Str),
    ("BLOCK_OLD_CLIENTS", &["block_old_clients"], Kind::Bool),
    ("TRUSTED_PROXIES", &["trusted_proxies"], Kind::List),
    ("TLS_CERT", &["tls", "cert"], Kind::Str),
    ("TLS_KEY", &["tls", "key"], Kind::Str),
    ("ACME_HTTP_LISTEN", &["acme_http_listen"], Kind::Str),
    ("ACME_DOMAINS", &["acme", "domains"], Kind::List),
    ("ACME_CONTACT", &["acme", "contact"], Kind::Str),
    ("ACME_DIRECTORY", &["acme", "directory"], Kind::Str),
    ("ACME_CACHE", &["acme", "cache"], Kind::Str),
    ("ACME_CA", &["acme", "ca"], Kind::Str),
    ("AUTH_HTPASSWD", &["auth", "htpasswd"], Kind::Str),
    ("AUTH_REALM", &["auth", "realm"], Kind::Str),
    ("AUTH_CACHE_TTL", &["auth", "cache_ttl"], Kind::Int),
    (
        "AUTH_BRAKE_FAILURES",
        &["auth", "brake_failures"],
        Kind::Int,
    ),
    ("AUTH_BRAKE_WINDOW", &["auth", "brake_window"], Kind::Int),
    ("AUTH_ACCESS", &["auth", "access"], Kind::Str),
    ("AUTH_KEYS", &["auth", "keys"], Kind::Str),
    ("AUTH_MODE", &["auth", "mode"], Kind::Str),
    ("AUTH_SERVICE", &["auth", "service"], Kind::Str),
    ("AUTH_TOKEN_KEY", &["auth", "token_key"], Kind::Str),
    ("AUTH_TOKEN_TTL", &["auth", "token_ttl"], Kind::Int),
    (
        "TIMEOUTS_HEADER_READ",
        &["timeouts", "header_read"],
        Kind::Int,
    ),
    ("TIMEOUTS_HANDSHAKE", &["timeouts", "handshake"], Kind::Int),
    (
        "TIMEOUTS_UPSTREAM_CONNECT",
        &["timeouts", "upstream_connect"],
        Kind::Int,
    ),
    (
        "TIMEOUTS_UPSTREAM_RESPONSE",
        &["timeouts", "upstream_response"],
        Kind::Int,
    ),
    (
        "TIMEOUTS_UPSTREAM_RETRY",
        &["timeouts", "upstream_retry"],
        Kind::Int,
    ),
    ("TIMEOUTS_IDLE", &["timeouts", "idle"], Kind::Int),
    ("TIMEOUTS_H2_IDLE", &["timeouts", "h2_idle"], Kind::Int),
    ("TIMEOUTS_DRAIN", &["timeouts", "drain"], Kind::Int),
    (
        "LIMITS_MAX_CONNECTIONS",
        &["limits", "max_connections"],
        Kind::Int,
    ),
    (
        "LIMITS_MAX_CONNECTIONS_PER_CLIENT",
        &["limits", "max_connections_per_client"],
        Kind::Int,
    ),
    ("CORS_ALLOW_ORIGINS", &["cors", "allow_origins"], Kind::List),
    (
        "CORS_ALLOW_CREDENTIALS",
        &["cors", "allow_credentials"],
        Kind::Bool,
    ),
    ("CORS_MAX_AGE", &["cors", "max_age"], Kind::Int),
    ("UI_DIR", &["ui", "dir"], Kind::Str),
    ("UI_AUTH", &["ui", "auth"], Kind::Bool),
    ("LOG_FORMAT", &["log", "format"], Kind::Str),
    ("LOG_LEVEL", &["log", "level"], Kind::Str),
    (
        "MAINTENANCE_READ_ONLY",
        &["maintenance", "read_only"],
        Kind::Bool,
    ),
    (
        "MAINTENANCE_UPLOAD_IDLE",
        &["maintenance", "upload_idle"],
        Kind::Int,
    ),
];

const ENV_PREFIX: &str = "REGISTRY_GATE_";
/// `REGISTRY_GATE_UI_VAR_<NAME>` fills `${NAME}` in the UI's index.html.
const ENV_UI_VAR_PREFIX: &str = "REGISTRY_GATE_UI_VAR_";

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// TLS listener address.
    pub listen: Option<SocketAddr>,
    /// Plain-HTTP listener, for deployments behind a TLS-terminating load balancer.
    pub plain_listen: Option<SocketAddr>,
    pub upstream: Upstream,
    /// The gate's public origin (`https://registry.example.com`), without a trailing slash.
    pub public_url: Option<String>,
    pub admin_listen: Option<SocketAddr>,
    /// File holding the secret admin writes must carry as `Authorization: Bearer`.
    pub admin_token: Option<PathBuf>,
    pub block_old_clients: bool,
    /// Peers whose `Forwarded` / `X-Forwarded-*` headers are kept.
    pub trusted_proxies: Vec<IpAddr>,
    pub tls: Option<TlsPaths>,
    /// Certificates from an ACME CA instead of `tls` (the two exclude each other).
    pub acme: Option<AcmeConfig>,
    /// Plain-HTTP listener answering ACME HTTP-01 challenges and redirecting everything else
    /// to `https://` (it never serves the registry).
    pub acme_http_listen: Option<SocketAddr>,
    pub auth: AuthConfig,
    pub timeouts: Timeouts,
    pub limits: Limits,
    pub cors: Option<CorsConfig>,
    pub ui: Option<UiConfig>,
    pub log: LogConfig,
    pub read_only: bool,
    /// An upload session this long without a request stops holding the read-only switch.
    pub upload_idle: Duration,
}

#[derive(Debug, Clone)]
pub struct Upstream {
    /// The registry members, at least one, no duplicates; each scheme and authority only, e.g.
    /// `http://127.0.0.1:5000`. They share one storage and one `http.secret` (docs/fleet.md).
    pub members: Vec<Uri>,
    /// Extra CA bundle trusted for an `https://` upstream.
    pub ca: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct TlsPaths {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Let's Encrypt's production directory, the default of `[acme] directory`.
pub const LETS_ENCRYPT_PRODUCTION: &str = "https://acme-v02.api.letsencrypt.org/directory";
/// Let's Encrypt's staging directory (untrusted certificates, generous rate limits).
pub const LETS_ENCRYPT_STAGING: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmeConfig {
    /// The names the certificate is for (DNS names, no wildcards: no DNS-01 here).
    pub domains: Vec<String>,
    /// `mailto:` URL given to the CA for expiry notices, if any.
    pub contact: Option<String>,
    /// The ACME directory URL (`https://`).
    pub directory: String,
    /// Folder for the account key and the certificate (created 0700, files 0600).
    pub cache: PathBuf,
    /// Extra PEM CA bundle trusted for the ACME server (private CAs, tests).
    pub ca: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct AuthConfig {
    pub htpasswd: PathBuf,
    pub realm: String,
    /// How long a verified password is accepted without hashing again; zero turns the cache off.
    pub cache_ttl: Duration,
    /// Failed logins from one address within `brake_window` before 429; zero turns it off.
    pub brake_failures: u32,
    pub brake_window: Duration,
    pub access: Option<PathBuf>,
    /// Access keys for CI (auth/keys.rs); `None`: no keys.
    pub keys: Option<PathBuf>,
    pub mode: AuthMode,
}

/// How clients authenticate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthMode {
    /// `WWW-Authenticate: Basic` on every request.
    Basic,
    /// The distribution token flow: `/token` issues signed tokens; Basic still works on `/v2/`.
    Token(TokenConfig),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenConfig {
    /// The `service` tokens are issued for; default: the public host.
    pub service: Option<String>,
    /// File holding the signing key (`registry-gate token-key FILE` makes one).
    pub key: PathBuf,
    pub ttl: Duration,
}

#[derive(Debug, Clone)]
pub struct Timeouts {
    /// Reading a request's headers (slowloris).
    pub header_read: Duration,
    /// Finishing the TLS handshake.
    pub handshake: Duration,
    pub upstream_connect: Duration,
    /// Waiting for the upstream's response headers (a final `PUT ?digest=` can take minutes).
    pub upstream_response: Duration,
    /// How long a request no member took yet (refused connections, every member down) is held
    /// and tried again before 502; zero answers at once.
    pub upstream_retry: Duration,
    /// No byte moving on a body for this long ends the transfer.
    pub idle: Duration,
    /// An HTTP/2 connection with no open stream for this long is closed.
    pub h2_idle: Duration,
    /// How long in-flight requests may finish after SIGTERM.
    pub drain: Duration,
}

/// Caps on open client connections (TLS and plain together).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_connections: usize,
    /// Per client address (IPv6: per /64); behind a load balancer, per balancer.
    pub max_connections_per_client: usize,
}

#[derive(Debug, Clone)]
pub struct CorsConfig {
    /// Exact origins, `scheme://host[:port]`; `*` only when credentials are off.
    pub allow_origins: Vec<String>,
    pub allow_credentials: bool,
    pub max_age: Duration,
}

#[derive(Debug, Clone)]
pub struct UiConfig {
    pub dir: PathBuf,
    pub auth: bool,
    pub vars: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A `RUST_LOG`-style filter.
    pub level: String,
}

impl Config {
    /// Loads the optional file, applies `REGISTRY_GATE_*` variables from `env`, and validates.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let (mut table, base_dir, origin) = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                // Deserializing the text directly keeps line and column in the error.
                let parse_err = |e: toml::de::Error| ConfigError::Parse {
                    path: path.to_owned(),
                    message: e.to_string().trim_end().to_owned(),
                };
                toml::from_str::<FileConfig>(&text).map_err(parse_err)?;
                let table: toml::Table = toml::from_str(&text).map_err(parse_err)?;
                let dir = path.parent().map(Path::to_owned).unwrap_or_default();
                (table, dir, path.display().to_string())
            }
            None => (toml::Table::new(), PathBuf::new(), "environment".to_owned()),
        };
        let mut from_env = false;
        for (var, value) in env {
            if apply_env(&mut table, &var, &value)? {
                from_env = true;
            }
        }
        let origin = if from_env && file.is_some() {
            format!("{origin} + REGISTRY_GATE_* environment")
        } else {
            origin
        };
        let raw = FileConfig::deserialize(toml::Value::Table(table)).map_err(|e| {
            ConfigError::Invalid {
                origin: origin.clone(),
                message: e.to_string().trim_end().to_owned(),
            }
        })?;
        validate(raw, &base_dir, &origin)
    }
}

/// Applies one environment variable; returns whether it was one of ours.
fn apply_env(table: &mut toml::Table, var: &str, value: &str) -> Result<bool, ConfigError> {
    let Some(name) = var.strip_prefix(ENV_PREFIX) else {
        return Ok(false);
    };
    let env_err = |message: String| ConfigError::Env {
        var: var.to_owned(),
        message,
    };
    if let Some(ui_var) = var.strip_prefix(ENV_UI_VAR_PREFIX) {
        let ui = section(table, "ui");
        let vars = section(ui, "vars");
        vars.insert(ui_var.to_owned(), toml::Value::String(value.to_owned()));
        return Ok(true);
    }
    let Some((_, path, kind)) = ENV_KEYS.iter().find(|(n, _, _)| *n == name) else {
        let known: Vec<String> = ENV_KEYS
            .iter()
            .map(|(n, _, _)| format!("{ENV_PREFIX}{n}"))
            .collect();
        return Err(env_err(format!(
            "unknown variable; known ones are {} and {ENV_UI_VAR_PREFIX}<NAME>",
            known.join(", ")
        )));
    };
    let parsed = match kind {
        Kind::Str => toml::Value::String(value.to_owned()),
        Kind::Int => toml::Value::Integer(
            value
                .trim()
                .parse::<i64>()
                .map_err(|_| env_err(format!("expected a whole number, got {value:?}")))?,
        ),
        Kind::Bool => toml::Value::Boolean(match value.trim() {
            "true" | "1" | "yes" | "on" => true,
            "false" | "0" | "no" | "off" => false,
            _ => return Err(env_err(format!("expected true or false, got {value:?}"))),
        }),
        Kind::List => toml::Value::Array(
            value
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| toml::Value::String(s.to_owned()))
                .collect(),
        ),
    };
    let (last, parents) = path.split_last().expect("ENV_KEYS paths are not empty");
    let mut t = table;
    for p in parents {
        t = section(t, p);
    }
    t.insert((*last).to_owned(), parsed);
    Ok(true)
}

/// The sub-table `key` of `table`, created (or replaced, if not a table) when needed.
fn section<'a>(table: &'a mut toml::Table, key: &str) -> &'a mut toml::Table {
    let entry = table
        .entry(key.to_owned())
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    if !entry.is_table() {
        *entry = toml::Value::Table(toml::Table::new());
    }
    entry.as_table_mut().expect("made a table above")
}

fn validate(raw: FileConfig, base: &Path, origin: &str) -> Result<Config, ConfigError> {
    let invalid = |message: String| ConfigError::Invalid {
        origin: origin.to_owned(),
        message,
    };
    let resolve = |p: PathBuf| if p.is_absolute() { p } else { base.join(p) };
    let addr = |key: &str, v: Option<String>| -> Result<Option<SocketAddr>, ConfigError> {
        match v.as_deref().map(str::trim) {
            None | Some("") => Ok(None),
            Some(s) => s.parse().map(Some).map_err(|_| {
                invalid(format!(
                    "{key}: {s:?} is not an address like \"0.0.0.0:5443\" or \"[::]:5443\""
                ))
            }),
        }
    };
    let listen = addr("listen", raw.listen)?;
    // `":80"` is accepted for all IPv4 interfaces, as the ACME docs of other servers write it.
    let acme_http_listen = addr(
        "acme_http_listen",
        raw.acme_http_listen
            .map(|s| match s.trim().strip_prefix(':') {
                Some(port) => format!("0.0.0.0:{port}"),
                None => s,
            }),
    )?;
    let plain_listen = addr("plain_listen", raw.plain_listen)?;
    let admin_listen = addr(
        "admin_listen",
        Some(raw.admin_listen.unwrap_or_else(|| "127.0.0.1:9095".into())),
    )?;
    if listen.is_none() && plain_listen.is_none() {
        return Err(invalid(
            "set listen (TLS, e.g. \"0.0.0.0:5443\") or plain_listen".into(),
        ));
    }

    let upstream_texts = match raw.upstream {
        None => {
            return Err(invalid(
                "upstream is required, e.g. \"http://127.0.0.1:5000\"".into(),
            ));
        }
        Some(OneOrMany::One(s)) => vec![s],
        Some(OneOrMany::Many(list)) => list,
    };
    if upstream_texts.is_empty() {
        return Err(invalid(
            "upstream: the list is empty; name at least one registry".into(),
        ));
    }
    let mut members: Vec<Uri> = Vec::new();
    for upstream_text in upstream_texts {
        let upstream_uri = parse_upstream(upstream_text.trim()).map_err(invalid)?;
        if members.contains(&upstream_uri) {
            return Err(invalid(format!(
                "upstream: {upstream_text:?} is listed twice"
            )));
        }
        members.push(upstream_uri);
    }
    let upstream = Upstream {
        members,
        ca: raw.upstream_ca.map(resolve),
    };

    let public_url = match raw.public_url {
        None => None,
        Some(s) if s.trim().is_empty() => None,
        Some(s) => {
            let s = s.trim().trim_end_matches('/').to_owned();
            let uri: Uri = s
                .parse()
                .map_err(|e| invalid(format!("public_url: {s:?} is not a URL: {e}")))?;
            if uri.scheme().is_none() || uri.authority().is_none() {
                return Err(invalid(format!(
                    "public_url: {s:?} must look like https://registry.example.com"
                )));
            }
            Some(s)
        }
    };

    let trusted_proxies = raw
        .trusted_proxies
        .unwrap_or_default()
        .into_iter()
        .map(|s| {
            s.trim()
                .parse::<IpAddr>()
                .map_err(|_| invalid(format!("trusted_proxies: {s:?} is not an IP address")))
        })
        .collect::<Result<_, _>>()?;

    let tls = match (raw.tls.cert, raw.tls.key) {
        (Some(cert), Some(key)) => Some(TlsPaths {
            cert: resolve(cert),
            key: resolve(key),
        }),
        (None, None) => None,
        _ => return Err(invalid("[tls] needs both cert and key".into())),
    };
    let acme = match raw.acme {
        None => None,
        Some(_) if tls.is_some() => {
            return Err(invalid(
                "[acme] and [tls] cert/key exclude each other: the certificate comes either from \
                 files or from the ACME CA; remove one of them"
                    .into(),
            ));
        }
        Some(a) => Some(acme_config(a, &resolve, &invalid)?),
    };
    if listen.is_some() && tls.is_none() && acme.is_none() {
        return Err(invalid(
            "listen serves TLS and needs [tls] cert and key or [acme] (use plain_listen behind a TLS load balancer)"
                .into(),
        ));
    }
    if acme.is_some() && listen.is_none() {
        return Err(invalid(
            "[acme] needs listen: the certificate is served there (and TLS-ALPN-01 answered)"
                .into(),
        ));
    }

    let auth = AuthConfig {
        htpasswd: resolve(raw.auth.htpasswd.ok_or_else(|| {
            invalid("[auth] htpasswd is required (create one with `registry-gate htpasswd -c FILE USER`)".into())
        })?),
        realm: raw.auth.realm.unwrap_or_else(|| "Registry".into()),
        cache_ttl: Duration::from_secs(raw.auth.cache_ttl.unwrap_or(300)),
        brake_failures: raw.auth.brake_failures.unwrap_or(10),
        brake_window: Duration::from_secs(raw.auth.brake_window.unwrap_or(60).max(1)),
        access: raw.auth.access.map(resolve),
        keys: raw.auth.keys.map(resolve),
        mode: match raw.auth.mode.as_deref().unwrap_or("basic") {
            "basic" => AuthMode::Basic,
            "token" => AuthMode::Token(TokenConfig {
                service: raw.auth.service.filter(|s| !s.trim().is_empty()),
                key: resolve(raw.auth.token_key.ok_or_else(|| {
                    invalid("[auth] mode = \"token\" needs token_key (create one with `registry-gate token-key FILE`)".into())
                })?),
                ttl: Duration::from_secs(match raw.auth.token_ttl.unwrap_or(300) {
                    0..60 => return Err(invalid("[auth] token_ttl must be at least 60 seconds (clients assume a token lives that long)".into())),
                    n => n,
                }),
            }),
            other => {
                return Err(invalid(format!(
                    "[auth] mode: {other:?} is not \"basic\" or \"token\""
                )));
            }
        },
    };

    let secs = |v: Option<u64>, default: u64, key: &str| -> Result<Duration, ConfigError> {
        match v.unwrap_or(default) {
            0 => Err(invalid(format!(
                "[timeouts] {key} must be at least 1 second"
            ))),
            n => Ok(Duration::from_secs(n)),
        }
    };
    let t = raw.timeouts;
    let timeouts = Timeouts {
        header_read: secs(t.header_read, 30, "header_read")?,
        handshake: secs(t.handshake, 10, "handshake")?,
        upstream_connect: secs(t.upstream_connect, 10, "upstream_connect")?,
        upstream_response: secs(t.upstream_response, 900, "upstream_response")?,
        upstream_retry: Duration::from_secs(t.upstream_retry.unwrap_or(5)),
        idle: secs(t.idle, 900, "idle")?,
        h2_idle: secs(t.h2_idle, 120, "h2_idle")?,
        drain: secs(t.drain, 60, "drain")?,
    };

    let limits = Limits {
        max_connections: match raw.limits.max_connections.unwrap_or(10_000) {
            0 => {
                return Err(invalid(
                    "[limits] max_connections must be at least 1".into(),
                ));
            }
            n => n,
        },
        max_connections_per_client: match raw.limits.max_connections_per_client.unwrap_or(256) {
            0 => {
                return Err(invalid(
                    "[limits] max_connections_per_client must be at least 1".into(),
                ));
            }
            n => n,
        },
    };

    let cors = match raw.cors {
        None => None,
        Some(c) => {
            let allow_credentials = c.allow_credentials.unwrap_or(true);
            let mut origins = Vec::new();
            for o in c.allow_origins.unwrap_or_default() {
                let o = o.trim().to_owned();
                if o == "*" {
                    if allow_credentials {
                        return Err(invalid(
                            "[cors] allow_origins = [\"*\"] cannot be used with credentials: list the exact origins, or set allow_credentials = false".into(),
                        ));
                    }
                } else if !is_origin(&o) {
                    return Err(invalid(format!(
                        "[cors] allow_origins: {o:?} is not an origin like \"https://ui.example.com\" (scheme://host[:port], no path)"
                    )));
                }
                origins.push(o);
            }
            Some(CorsConfig {
                allow_origins: origins,
                allow_credentials,
                max_age: Duration::from_secs(c.max_age.unwrap_or(600)),
            })
        }
    };

    let ui = raw.ui.dir.map(|dir| UiConfig {
        dir: resolve(dir),
        auth: raw.ui.auth.unwrap_or(false),
        vars: raw.ui.vars,
    });

    let format = match raw.log.format.as_deref().unwrap_or("text") {
        "text" => LogFormat::Text,
        "json" => LogFormat::Json,
        other => {
            return Err(invalid(format!(
                "[log] format: {other:?} is not \"text\" or \"json\""
            )));
        }
    };
    let log = LogConfig {
        format,
        level: raw.log.level.unwrap_or_else(|| "info".into()),
    };

    let upload_idle = match raw.maintenance.upload_idle.unwrap_or(60) {
        0 => {
            return Err(invalid(
                "[maintenance] upload_idle must be at least 1 second".into(),
            ));
        }
        n => Duration::from_secs(n),
    };

    Ok(Config {
        listen,
        plain_listen,
        upstream,
        public_url,
        admin_listen,
        admin_token: raw
            .admin_token
            .filter(|p| !p.as_os_str().is_empty())
            .map(resolve),
        block_old_clients: raw.block_old_clients.unwrap_or(true),
        trusted_proxies,
        tls,
        acme,
        acme_http_listen,
        auth,
        timeouts,
        limits,
        cors,
        ui,
        log,
        read_only: raw.maintenance.read_only.unwrap_or(false),
        upload_idle,
    })
}

/// One registry member: `http://host:port` or `https://host:port`, no path.
fn parse_upstream(text: &str) -> Result<Uri, String> {
    let uri: Uri = text
        .trim_end_matches('/')
        .parse()
        .map_err(|e| format!("upstream: {text:?} is not a URL: {e}"))?;
    match (uri.scheme_str(), uri.authority()) {
        (Some("http" | "https"), Some(_)) => {}
        _ => {
            return Err(format!(
                "upstream: {text:?} must be http://host:port or https://host:port"
            ));
        }
    }
    if uri.path() != "/" && !uri.path().is_empty() {
        return Err(format!(
            "upstream: {text:?} must not have a path; the registry serves /v2/ at its root"
        ));
    }
    Ok(uri)
}

/// Checks `[acme]`: at least one DNS name, an `https://` directory, a cache folder.
fn acme_config(
    a: FileAcme,
    resolve: &dyn Fn(PathBuf) -> PathBuf,
    invalid: &dyn Fn(String) -> ConfigError,
) -> Result<AcmeConfig, ConfigError> {
    let mut domains = Vec::new();
    for d in a.domains.unwrap_or_default() {
        let d = d.trim().trim_end_matches('.').to_ascii_lowercase();
        if !is_dns_name(&d) {
            return Err(invalid(format!(
                "[acme] domains: {d:?} is not a DNS name like \"registry.example.com\" (no wildcards, no IP addresses)"
            )));
        }
        if !domains.contains(&d) {
            domains.push(d);
        }
    }
    if domains.is_empty() {
        return Err(invalid(
            "[acme] domains needs at least one name, e.g. [\"registry.example.com\"]".into(),
        ));
    }
    let contact = match a.contact.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(c) => {
            let email = c.strip_prefix("mailto:").unwrap_or(c);
            match email.split_once('@') {
                Some((user, host))
                    if !user.is_empty()
                        && host.contains('.')
                        && !email.contains(char::is_whitespace) =>
                {
                    Some(format!("mailto:{email}"))
                }
                _ => {
                    return Err(invalid(format!(
                        "[acme] contact: {c:?} is not an email address"
                    )));
                }
            }
        }
    };
    let directory = a
        .directory
        .map(|d| d.trim().to_owned())
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| LETS_ENCRYPT_PRODUCTION.to_owned());
    match directory.parse::<Uri>() {
        Ok(uri) if uri.scheme_str() == Some("https") && uri.authority().is_some() => {}
        _ => {
            return Err(invalid(format!(
                "[acme] directory: {directory:?} is not an https:// URL (Let's Encrypt: {LETS_ENCRYPT_PRODUCTION})"
            )));
        }
    }
    let cache = a
        .cache
        .filter(|p| !p.as_os_str().is_empty())
        .ok_or_else(|| {
            invalid(
                "[acme] cache is required: a folder for the account key and the certificate".into(),
            )
        })?;
    Ok(AcmeConfig {
        domains,
        contact,
        directory,
        cache: resolve(cache),
        ca: a.ca.filter(|p| !p.as_os_str().is_empty()).map(resolve),
    })
}

/// A DNS name of letters, digits and hyphens in dot-separated labels (RFC 1123), not an IP.
fn is_dns_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.parse::<IpAddr>().is_err()
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// `scheme://host[:port]` with nothing after it.
fn is_origin(s: &str) -> bool {
    let Ok(uri) = s.parse::<Uri>() else {
        return false;
    };
    matches!(uri.scheme_str(), Some("http" | "https"))
        && uri.authority().is_some()
        && !s.ends_with('/')
        && uri
            .path_and_query()
            .is_none_or(|p| p.as_str().is_empty() || p.as_str() == "/")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    const MINIMAL: &str = r#"
listen = "127.0.0.1:5443"
upstream = "http://127.0.0.1:5000"
[tls]
cert = "cert.pem"
key = "key.pem"
[auth]
htpasswd = "htpasswd"
"#;

    #[test]
    fn minimal_file_loads_with_defaults_and_relative_paths() {
        let f = write(MINIMAL);
        let c = Config::load(Some(f.path()), []).unwrap();
        assert_eq!(c.listen, Some("127.0.0.1:5443".parse().unwrap()));
        assert_eq!(c.timeouts.header_read, Duration::from_secs(30));
        assert_eq!(c.timeouts.upstream_connect, Duration::from_secs(10));
        assert_eq!(c.timeouts.idle, Duration::from_secs(900));
        assert_eq!(c.auth.realm, "Registry");
        assert!(c.block_old_clients);
        assert_eq!(c.auth.htpasswd, f.path().parent().unwrap().join("htpasswd"));
    }

    #[test]
    fn unknown_key_is_named_with_its_line() {
        let f = write(&format!("{MINIMAL}\n[timeouts]\nheader_reed = 5\n"));
        let err = Config::load(Some(f.path()), []).unwrap_err().to_string();
        assert!(err.contains("header_reed"), "{err}");
        assert!(err.contains("line 11"), "{err}");
        assert!(err.contains(&f.path().display().to_string()), "{err}");
    }

    #[test]
    fn env_overrides_file_and_can_stand_alone() {
        let f = write(MINIMAL);
        let env = [
            ("REGISTRY_GATE_LISTEN".to_owned(), "0.0.0.0:6000".to_owned()),
            ("REGISTRY_GATE_TIMEOUTS_IDLE".to_owned(), "60".to_owned()),
            ("PATH".to_owned(), "/bin".to_owned()),
        ];
        let c = Config::load(Some(f.path()), env).unwrap();
        assert_eq!(c.listen, Some("0.0.0.0:6000".parse().unwrap()));
        assert_eq!(c.timeouts.idle, Duration::from_secs(60));

        let env = [
            ("REGISTRY_GATE_PLAIN_LISTEN", "127.0.0.1:8080"),
            ("REGISTRY_GATE_UPSTREAM", "http://registry:5000"),
            ("REGISTRY_GATE_AUTH_HTPASSWD", "/auth/htpasswd"),
            (
                "REGISTRY_GATE_CORS_ALLOW_ORIGINS",
                "https://a.example, http://b.example:8080",
            ),
            ("REGISTRY_GATE_UI_VAR_REGISTRY_TITLE", "Team registry"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        let c = Config::load(None, env).unwrap();
        assert_eq!(c.plain_listen, Some("127.0.0.1:8080".parse().unwrap()));
        assert_eq!(
            c.cors.unwrap().allow_origins,
            ["https://a.example", "http://b.example:8080"]
        );
        assert_eq!(c.upstream.members[0].to_string(), "http://registry:5000/");
    }

    #[test]
    fn upstream_is_one_url_or_a_list() {
        let f = write(MINIMAL);
        let c = Config::load(Some(f.path()), []).unwrap();
        assert_eq!(c.upstream.members.len(), 1);
        assert_eq!(c.timeouts.upstream_retry, Duration::from_secs(5));
        let list = MINIMAL.replace(
            "upstream = \"http://127.0.0.1:5000\"",
            "upstream = [\"http://r1:5000\", \"http://r2:5000/\"]",
        );
        let f = write(&list);
        let c = Config::load(Some(f.path()), []).unwrap();
        let members: Vec<String> = c.upstream.members.iter().map(Uri::to_string).collect();
        assert_eq!(members, ["http://r1:5000/", "http://r2:5000/"]);
        let env = [(
            "REGISTRY_GATE_UPSTREAM".to_owned(),
            "http://a:5000, http://b:5000".to_owned(),
        )];
        let c = Config::load(Some(f.path()), env).unwrap();
        assert_eq!(c.upstream.members.len(), 2);
        assert_eq!(c.upstream.members[1].to_string(), "http://b:5000/");
        for (bad, needle) in [
            ("upstream = []", "empty"),
            ("upstream = [\"http://a:1\", \"http://a:1\"]", "twice"),
            ("upstream = [\"http://a:1\", \"ftp://b\"]", "ftp://b"),
        ] {
            let f = write(&MINIMAL.replace("upstream = \"http://127.0.0.1:5000\"", bad));
            let err = Config::load(Some(f.path()), []).unwrap_err().to_string();
            assert!(err.contains(needle), "{bad}: {err}");
        }
    }

    #[test]
    fn unknown_or_malformed_env_is_named() {
        let err = Config::load(None, [("REGISTRY_GATE_LISTN".into(), "x".into())])
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("REGISTRY_GATE_LISTN: unknown variable"),
            "{err}"
        );
        let err = Config::load(
            None,
            [("REGISTRY_GATE_TIMEOUTS_IDLE".into(), "soon".into())],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("REGISTRY_GATE_TIMEOUTS_IDLE"), "{err}");
    }

    #[test]
    fn invalid_values_are_explained() {
        for (extra, needle) in [
            ("public_url = \"registry.example.com\"", "public_url"),
            ("[cors]\nallow_origins = [\"*\"]", "credentials"),
            (
                "[cors]\nallow_origins = [\"https://a.example/ui\"]",
                "not an origin",
            ),
            ("[log]\nformat = \"xml\"", "format"),
        ] {
            let f = write(&format!("{MINIMAL}\n{extra}\n"));
            let err = Config::load(Some(f.path()), []).unwrap_err().to_string();
            assert!(err.contains(needle), "{extra}: {err}");
        }
        let f = write("listen = \"nope\"\nupstream = \"http://x:1\"\n");
        let err = Config::load(Some(f.path()), []).unwrap_err().to_string();
        assert!(err.contains("listen"), "{err}");
    }

    const ACME: &str = r#"
listen = "127.0.0.1:5443"
upstream = "http://127.0.0.1:5000"
[acme]
domains = ["Registry.Example.com.", "registry.example.com", "b.example"]
cache = "acme"
[auth]
htpasswd = "htpasswd"
"#;

    #[test]
    fn acme_defaults_and_checks() {
        let f = write(ACME);
        let c = Config::load(Some(f.path()), []).unwrap();
        let a = c.acme.unwrap();
        assert_eq!(a.domains, ["registry.example.com", "b.example"]);
        assert_eq!(a.directory, LETS_ENCRYPT_PRODUCTION);
        assert_eq!(a.cache, f.path().parent().unwrap().join("acme"));
        assert_eq!((a.contact, a.ca), (None, None));
        assert!(c.tls.is_none() && c.acme_http_listen.is_none());

        let env = [
            ("REGISTRY_GATE_ACME_CONTACT", "ops@example.com"),
            ("REGISTRY_GATE_ACME_HTTP_LISTEN", ":80"),
            ("REGISTRY_GATE_ACME_DIRECTORY", LETS_ENCRYPT_STAGING),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        let c = Config::load(Some(f.path()), env).unwrap();
        assert_eq!(c.acme_http_listen, Some("0.0.0.0:80".parse().unwrap()));
        let a = c.acme.unwrap();
        assert_eq!(a.contact.as_deref(), Some("mailto:ops@example.com"));
        assert_eq!(a.directory, LETS_ENCRYPT_STAGING);

        for (text, needle) in [
            (
                format!("{MINIMAL}\n[acme]\ndomains = [\"a.example\"]\ncache = \"c\"\n"),
                "exclude each other",
            ),
            (
                ACME.replace("\"b.example\"", "\"*.example\""),
                "not a DNS name",
            ),
            (
                ACME.replace("\"b.example\"", "\"10.0.0.1\""),
                "not a DNS name",
            ),
            (
                ACME.replace("cache = \"acme\"", "contact = \"nobody\"\ncache = \"acme\""),
                "not an email",
            ),
            (
                ACME.replace(
                    "cache = \"acme\"",
                    "directory = \"http://ca.example/dir\"\ncache = \"acme\"",
                ),
                "https://",
            ),
            (ACME.replace("cache = \"acme\"\n", ""), "cache is required"),
            (
                ACME.replace(
                    "listen = \"127.0.0.1:5443\"",
                    "plain_listen = \"127.0.0.1:8080\"",
                ),
                "[acme] needs listen",
            ),
        ] {
            let f = write(&text);
            let err = Config::load(Some(f.path()), []).unwrap_err().to_string();
            assert!(err.contains(needle), "{needle}: {err}");
        }
    }
}

#[cfg(test)]
mod docs_drift;
