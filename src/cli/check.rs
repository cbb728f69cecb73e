//! `registry-gate check` and `registry-gate access explain`: validate everything a config
//! names, say what would be served and who may do what.
//!
//! Owns: the reports. `check` exits non-zero, naming file, line and reason, on any problem,
//! including htpasswd lines the server would skip and an expired certificate (one expiring
//! within 14 days is a warning).

use std::path::Path;
use std::process::ExitCode;

use crate::auth::{Identity, htpasswd, users};
use crate::authz::{self, Action, Ask, Caller, Policy, ReadOnly, Reason, Rules};
use crate::config::Config;

fn load_config(file: Option<&Path>) -> Result<Config, ExitCode> {
    Config::load(file, std::env::vars()).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(64)
    })
}

pub fn run(file: Option<&Path>) -> ExitCode {
    let config = match load_config(file) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let mut problems = 0;
    if let Some(paths) = &config.tls {
        match crate::net::tls::load_pair(paths) {
            Ok(pair) => {
                println!(
                    "tls: {} ({} certificate(s)) with key {}",
                    paths.cert.display(),
                    pair.cert.len(),
                    paths.key.display()
                );
                problems += certificate_expiry(&pair.cert[0]);
            }
            Err(e) => {
                eprintln!("error: {e}");
                problems += 1;
            }
        }
    }
    if let Some(acme) = &config.acme {
        problems += acme_report(acme, config.acme_http_listen.is_some());
    }
    let mut user_names: Vec<String> = Vec::new();
    match users::read(&config.auth.htpasswd) {
        Ok((table, parsed)) => {
            for p in &parsed.errors {
                eprintln!("error: {}", htpasswd::describe(&config.auth.htpasswd, p));
                problems += 1;
            }
            for p in &parsed.warnings {
                eprintln!("warning: {}", htpasswd::describe(&config.auth.htpasswd, p));
            }
            let mut names: Vec<_> = table
                .users
                .iter()
                .map(|(u, h)| format!("{u} ({})", h.format_name()))
                .collect();
            names.sort();
            println!(
                "users: {} from {}: {}",
                names.len(),
                config.auth.htpasswd.display(),
                names.join(", ")
            );
            user_names = table.users.keys().cloned().collect();
            user_names.sort();
        }
        Err(e) => {
            eprintln!("error: {e}");
            problems += 1;
        }
    }
    match &config.auth.access {
        None => println!(
            "access: no rules file; every user may pull, push and delete everything, anonymous nothing"
        ),
        Some(path) => match authz::rules::read(path) {
            Ok(rules) => {
                println!(
                    "access: {} rule(s) from {}",
                    rules.describe().len(),
                    path.display()
                );
                for line in rules.describe() {
                    println!("  {line}");
                }
                let immutable = rules.describe_immutable();
                if !immutable.is_empty() {
                    println!("immutable tags: {} entr(ies)", immutable.len());
                    for line in immutable {
                        println!("  {line}");
                    }
                }
                for u in rules.unknown_users(&|n| user_names.iter().any(|k| k == n)) {
                    eprintln!(
                        "warning: {}: user {u:?} is not in the htpasswd file",
                        path.display()
                    );
                }
                print_grants(&rules, &user_names);
            }
            Err(e) => {
                eprintln!("error: {e}");
                problems += 1;
            }
        },
    }
    if let Some(path) = &config.auth.keys {
        match crate::auth::keys::read(path) {
            Ok(table) => {
                let now = crate::auth::keys::unix_now();
                println!(
                    "access keys: {} from {} (log in as {}NAME)",
                    table.keys.len(),
                    path.display(),
                    crate::auth::keys::KEY_PREFIX
                );
                for k in table.keys.values() {
                    let id = &k.identity;
                    let allow: Vec<&str> = id.allow.iter().map(|a| a.as_str()).collect();
                    println!(
                        "  {}: {} on {}{}",
                        id.user_name(),
                        allow.join(", "),
                        id.repos.join(", "),
                        if k.expired(now) { " (EXPIRED)" } else { "" }
                    );
                }
                for u in user_names
                    .iter()
                    .filter(|u| u.starts_with(crate::auth::keys::KEY_PREFIX))
                {
                    eprintln!(
                        "warning: htpasswd user {u:?} cannot log in: names starting with {:?} are access keys",
                        crate::auth::keys::KEY_PREFIX
                    );
                }
            }
            Err(e) => {
                eprintln!("error: {e}");
                problems += 1;
            }
        }
    }
    if let Some(ui) = &config.ui {
        match crate::http::ui::Ui::load(ui) {
            Ok(loaded) => println!(
                "ui: {} file(s) from {} under /ui/{}",
                loaded.file_count(),
                ui.dir.display(),
                if ui.auth { ", behind auth" } else { "" }
            ),
            Err(e) => {
                eprintln!("error: {e}");
                problems += 1;
            }
        }
    }
    if let Some(cors) = &config.cors {
        println!("cors: allowed origins {}", cors.allow_origins.join(", "));
    }
    if let Some(a) = config.listen {
        println!("listen: https://{a}");
    }
    if let Some(a) = config.plain_listen {
        println!("plain_listen: http://{a} (no TLS: only behind a TLS-terminating load balancer)");
    }
    match config.admin_listen {
        Some(a) => println!(
            "admin_listen: http://{a} (/metrics, /healthz, /readyz, /admin/read-only; no authentication: keep it private)"
        ),
        None => println!("admin_listen: off"),
    }
    probe_upstream(&config);
    println!(
        "log: {} format, level {:?}",
        match config.log.format {
            crate::config::LogFormat::Text => "text",
            crate::config::LogFormat::Json => "json",
        },
        config.log.level
    );
    if config.read_only {
        println!("maintenance: read-only at start");
    }
    if problems > 0 {
        eprintln!("{problems} problem(s) found");
        return ExitCode::FAILURE;
    }
    println!("ok");
    ExitCode::SUCCESS
}

/// One `upstream: URL ...` line per registry member, each probed with `GET /v2/`. A member that
/// does not answer is a warning, not a problem: the gate starts before its registries and
/// waits for them.
fn probe_upstream(config: &crate::config::Config) {
    let probed = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
        .and_then(|rt| {
            rt.block_on(async {
                let metrics = std::sync::Arc::new(crate::ops::metrics::Metrics::new());
                let proxy =
                    crate::upstream::Proxy::new(&config.upstream, &config.timeouts, metrics)
                        .map_err(|e| e.to_string())?;
                Ok(proxy.probe_all().await)
            })
        });
    match probed {
        Ok(results) => {
            for (member, answer) in results {
                match answer {
                    Ok(status) => {
                        println!("upstream: {member} (GET /v2/ answered {})", status.as_u16())
                    }
                    Err(e) => {
                        println!("upstream: {member} (not answering)");
                        eprintln!("warning: upstream {member} does not answer GET /v2/: {e}");
                    }
                }
            }
        }
        Err(e) => {
            for member in &config.upstream.members {
                println!("upstream: {member}");
            }
            eprintln!("warning: the upstream could not be probed: {e}");
        }
    }
}

fn print_grants(rules: &Rules, users: &[String]) {
    println!("who may do what:");
    let mut who: Vec<Identity> = users
        .iter()
        .map(|u| Identity::User(u.as_str().into()))
        .collect();
    who.push(Identity::Anonymous);
    for w in who {
        let grants = rules.grants_for(&w);
        let name = match &w {
            Identity::Anonymous => "anonymous",
            other => other.name(),
        };
        if grants.is_empty() {
            println!("  {name}: nothing");
        } else {
            println!("  {name}: {}", grants.join("; "));
        }
    }
}

/// `registry-gate access explain --user U --repo R --action A`.
pub fn explain(file: Option<&Path>, user: &str, repo: &str, action: &str) -> ExitCode {
    let config = match load_config(file) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let Some(action) = Action::parse(action) else {
        eprintln!("error: --action {action:?}: use pull, push or delete");
        return ExitCode::from(64);
    };
    if !crate::authz::rules::is_valid_name(repo) {
        eprintln!("error: --repo {repo:?} is not a valid repository name");
        return ExitCode::from(64);
    }
    let who = if user == "anonymous" {
        Identity::Anonymous
    } else if let Some(name) = user.strip_prefix(crate::auth::keys::KEY_PREFIX) {
        // A key: its own grants decide, whatever the rules say.
        let Some(path) = &config.auth.keys else {
            eprintln!("error: {user:?} is an access key, but the config has no [auth] keys");
            return ExitCode::from(64);
        };
        let table = match crate::auth::keys::read(path) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        };
        match table.current(name, crate::auth::keys::unix_now()) {
            Ok(key) => Identity::Key(key),
            Err(refusal) => {
                println!("denied: {refusal}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        Identity::User(user.into())
    };
    let rules = match &config.auth.access {
        None => None,
        Some(path) => match authz::rules::read(path) {
            Ok(rules) => Some((std::sync::Arc::new(rules), path.clone())),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    let policy = Policy {
        rules: rules.as_ref().map(|(r, _)| r.clone()),
        read_only: ReadOnly::OFF,
    };
    let d = policy.decide(Caller::plain(&who), Ask::Grant { action, repo });
    let path = rules.as_ref().map(|(_, p)| p.display().to_string());
    let immutable = rules
        .as_ref()
        .map(|(r, _)| r.describe_immutable())
        .unwrap_or_default();
    match (d.reason, path) {
        (Reason::Key, _) => println!(
            "allowed: access key {user} is granted {action} on {repo} by its own grants (keys ignore the rules)"
        ),
        (_, _) if matches!(who, Identity::Key(_)) => println!(
            "denied: access key {user} is not granted {action} on {repo} (keys ignore the rules)"
        ),
        (Reason::Rule, Some(path)) if d.allowed => println!(
            "allowed: {user} may {action} {repo} by the rule at {path}:{}",
            d.rule.unwrap_or(0)
        ),
        (Reason::NoRulesFile, _) => {
            println!("allowed: no rules file, so every authenticated user may do everything")
        }
        (Reason::InvalidName, _) => println!("denied: {repo:?} is not a valid repository name"),
        (_, Some(path)) => println!("denied: no rule in {path} grants {user} {action} on {repo}"),
        (_, None) => println!("denied: no rules file, so anonymous may do nothing"),
    }
    if action == Action::Push || action == Action::Delete {
        for line in immutable {
            println!("note: {line}");
        }
    }
    if d.allowed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Prints the leaf's subject and expiry; returns 1 when it has expired or cannot be read.
/// `[acme]`: names, challenge, CA, and what the cache holds (read only, the CA is not asked).
fn acme_report(acme: &crate::config::AcmeConfig, http01: bool) -> usize {
    println!(
        "acme: {} through {} from {}",
        acme.domains.join(", "),
        if http01 {
            "http-01 on acme_http_listen"
        } else {
            "tls-alpn-01 on listen"
        },
        acme.directory
    );
    // Read only: `check` creates and changes nothing.
    match crate::acme::cache::Cache::existing(&acme.cache).certificate() {
        Err(e) => {
            eprintln!("error: [acme] cache: {e}");
            1
        }
        Ok(None) => {
            println!(
                "acme cache {}: no certificate yet; `serve` orders one at start (TLS serves nothing until then)",
                acme.cache.display()
            );
            0
        }
        Ok(Some(c)) => {
            println!(
                "acme cache {}: certificate for {}",
                acme.cache.display(),
                c.names.join(", ")
            );
            if !c.covers(&acme.domains) {
                eprintln!(
                    "warning: the cached certificate does not name every domain; `serve` orders a new one"
                );
            }
            certificate_expiry(&c.pair.cert[0])
        }
    }
}

fn certificate_expiry(leaf: &rustls_pki_types::CertificateDer<'_>) -> usize {
    let info = match crate::net::tls::leaf_info(leaf) {
        Ok(info) => info,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    let days = info.days_left(crate::time::unix_now());
    println!(
        "certificate: {}, expires {} ({days} days left)",
        info.subject,
        info.not_after_utc()
    );
    if days < 0 {
        eprintln!("error: the certificate expired on {}", info.not_after_utc());
        return 1;
    }
    if days < crate::net::tls::EXPIRY_WARNING_DAYS {
        eprintln!(
            "warning: the certificate expires in {days} days, on {}",
            info.not_after_utc()
        );
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert_until(year: i32) -> rustls_pki_types::CertificateDer<'static> {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
        params.not_before = rcgen::date_time_ymd(2019, 1, 1);
        params.not_after = rcgen::date_time_ymd(year, 1, 1);
        params.self_signed(&key).unwrap().der().clone()
    }

    #[test]
    fn an_expired_certificate_is_a_problem() {
        assert_eq!(certificate_expiry(&cert_until(2020)), 1);
        assert_eq!(certificate_expiry(&cert_until(4000)), 0);
        let garbage = rustls_pki_types::CertificateDer::from(vec![0x30, 0x00]);
        assert_eq!(certificate_expiry(&garbage), 1);
    }
}
