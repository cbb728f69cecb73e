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
    /// Check the config, certificate, key, htpasswd, rules files and UI folder; print what would
    /// be served.
    Check {
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Manage an htpasswd file: add, set, delete, verify, list (no apache2-utils needed).
    Htpasswd {
        #[command(subcommand)]
        action: registry_gate::cli::htpasswd::Command,
    },
    /// Access keys for CI: add, list, delete, rotate (`[auth] keys`).
    Key {
        #[command(subcommand)]
        action: registry_gate::cli::keys::Command,
    },
    /// Write a new random signing key for token mode (`[auth] token_key`).
    TokenKey {
        file: PathBuf,
        /// Replace an existing key (every token signed with it stops working).
        #[arg(long)]
        force: bool,
    },
    /// Access rules: explain a decision.
    Access {
        #[command(subcommand)]
        command: AccessCommand,
    },
    /// The read-only switch for garbage collection, through the admin listener.
    ReadOnly {
        /// on: refuse new pushes and deletes, wait for pushes in flight; off; or status.
        #[arg(value_parser = ["on", "off", "status"])]
        state: String,
        /// The config file, to find admin_listen.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// An admin address, HOST:PORT (instead of the config's admin_listen). Repeat it for
        /// every replica; a name resolving to several addresses (a Kubernetes headless
        /// Service) means each of them. `on` succeeds only when every one is read-only with no
        /// push in flight.
        #[arg(long)]
        admin: Vec<String>,
        /// With `on`: how long to wait for pushes in flight, in seconds.
        #[arg(long, default_value_t = 300)]
        timeout: u64,
    },
}

#[derive(Subcommand)]
enum AccessCommand {
    /// Print whether USER may do ACTION on REPO, and the rule that decides it.
    Explain {
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// A user name, or `anonymous`.
        #[arg(long)]
        user: String,
        #[arg(long)]
        repo: String,
        /// pull, push or delete.
        #[arg(long)]
        action: String,
    },
}

/// Exit status for a configuration error (EX_USAGE, as linkerd and sysexits use it).
const EXIT_CONFIG: u8 = 64;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config, log_format } => serve(config, log_format),
        Command::Check { config } => registry_gate::cli::check::run(config.as_deref()),
        Command::Htpasswd { action } => registry_gate::cli::htpasswd::run(action),
        Command::Key { action } => registry_gate::cli::keys::run(action),
        Command::TokenKey { file, force } => match registry_gate::token::write_key(&file, force) {
            Ok(()) => {
                println!("wrote a new token key to {}", file.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("registry-gate: {}: {e}", file.display());
                ExitCode::FAILURE
            }
        },
        Command::Access {
            command:
                AccessCommand::Explain {
                    config,
                    user,
                    repo,
                    action,
                },
        } => registry_gate::cli::check::explain(config.as_deref(), &user, &repo, &action),
        Command::ReadOnly {
            state,
            config,
            admin,
            timeout,
        } => registry_gate::ops::maintenance::cli(&state, config.as_deref(), &admin, timeout),
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
    let _log_guard = registry_gate::ops::logging::init(&config.log);
    // Accepting and the background work (reloads, ACME, probes, the admin listener) run here;
    // client connections run on the connection threads (net/workers.rs).
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
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
