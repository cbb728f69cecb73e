//! `registry-gate check`: validate everything a config names, and say what would be served.
//!
//! Owns: the report. Exits non-zero, naming file, line and reason, on any problem, including
//! htpasswd lines the server would skip and an expired certificate (one expiring within 14 days
//! is a warning).

use std::path::Path;
use std::process::ExitCode;

use crate::auth::users;
use crate::config::Config;

pub fn run(file: Option<&Path>) -> ExitCode {
    let config = match Config::load(file, std::env::vars()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(64);
        }
    };
    let mut problems = 0;
    if let Some(paths) = &config.tls {
        match crate::tls::load_pair(paths) {
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
    match users::read(&config.auth.htpasswd) {
        Ok((table, parsed)) => {
            for p in &parsed.errors {
                eprintln!(
                    "error: {}",
                    crate::auth::htpasswd::describe(&config.auth.htpasswd, p)
                );
                problems += 1;
            }
            for p in &parsed.warnings {
                eprintln!(
                    "warning: {}",
                    crate::auth::htpasswd::describe(&config.auth.htpasswd, p)
                );
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
        }
        Err(e) => {
            eprintln!("error: {e}");
            problems += 1;
        }
    }
    if let Some(a) = config.listen {
        println!("listen: https://{a}");
    }
    if let Some(a) = config.plain_listen {
        println!("plain_listen: http://{a} (no TLS: only behind a TLS-terminating load balancer)");
    }
    println!("upstream: {}", config.upstream.base);
    match config.admin_listen {
        Some(a) => println!(
            "admin_listen: http://{a} (/metrics, /healthz, /readyz; no authentication: keep it private)"
        ),
        None => println!("admin_listen: off"),
    }
    println!(
        "log: {} format, level {:?}",
        match config.log.format {
            crate::config::LogFormat::Text => "text",
            crate::config::LogFormat::Json => "json",
        },
        config.log.level
    );
    if problems > 0 {
        eprintln!("{problems} problem(s) found");
        return ExitCode::FAILURE;
    }
    println!("ok");
    ExitCode::SUCCESS
}

/// Prints the leaf's subject and expiry; returns 1 when it has expired or cannot be read.
fn certificate_expiry(leaf: &rustls_pki_types::CertificateDer<'_>) -> usize {
    let info = match crate::tls::leaf_info(leaf) {
        Ok(info) => info,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    let days = info.days_left(crate::tls::unix_now());
    println!(
        "certificate: {}, expires {} ({days} days left)",
        info.subject,
        info.not_after_utc()
    );
    if days < 0 {
        eprintln!("error: the certificate expired on {}", info.not_after_utc());
        return 1;
    }
    if days < crate::tls::EXPIRY_WARNING_DAYS {
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
