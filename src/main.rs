//! The `registry-gate` command: parse the command line, load the config, hand over to the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use registry_gate::config::{Config, LogFormat};

/// A fast, safe front door for a self-hosted container registry.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve: terminate TLS, authenticate, and forward to the registry.
    Serve {
        /// The TOML config file; without it, REGISTRY_GATE_* variables alone configure the gate.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Log format: text or json (overrides [log] format).
        #[arg(long)]
        log_format: Option<String>,
    },
    /// Check the config, certificate, key and htpasswd file; print what would be served.
    Check {
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Manage an htpasswd file: add, set, delete, verify, list (no apache2-utils needed).
    Htpasswd {
        #[command(subcommand)]
        action: registry_gate::htpasswd_cli::Command,
    },
}

/// Exit status for a configuration error (EX_USAGE, as linkerd and sysexits use it).
const EXIT_CONFIG: u8 = 64;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config, log_format } => serve(config, log_format),
        Command::Check { config } => registry_gate::check::run(config.as_deref()),
        Command::Htpasswd { action } => registry_gate::htpasswd_cli::run(action),
    }
}

fn serve(config: Option<PathBuf>, log_format: Option<String>) -> ExitCode {
    let mut config = match Config::load(config.as_deref(), std::env::vars()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("registry-gate: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    match log_format.as_deref() {
        None => {}
        Some("json") => config.log.format = LogFormat::Json,
        Some("text") => config.log.format = LogFormat::Text,
        Some(other) => {
            eprintln!("registry-gate: --log-format {other:?}: expected text or json");
            return ExitCode::from(EXIT_CONFIG);
        }
    }
    registry_gate::logging::init(&config.log);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("registry-gate: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(registry_gate::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("registry-gate: {e}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}
