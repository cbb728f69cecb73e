//! `registry-gate check`: validate everything a config names, and say what would be served.
//!
//! Owns: the report. Exits non-zero, naming file, line and reason, on any problem, including
//! htpasswd lines the server would skip.

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
            Ok(pair) => println!(
                "tls: {} ({} certificate(s)) with key {}",
                paths.cert.display(),
                pair.cert.len(),
                paths.key.display()
            ),
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
    if let Some(ui) = &config.ui {
        match crate::ui::Ui::load(ui, config.public_url.as_deref()) {
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
    println!("upstream: {}", config.upstream.base);
    if problems > 0 {
        eprintln!("{problems} problem(s) found");
        return ExitCode::FAILURE;
    }
    println!("ok");
    ExitCode::SUCCESS
}
