//! Log output: readable text or JSON lines, filtered by a `RUST_LOG`-style string.
//!
//! Owns: installing the tracing subscriber. No module logs a password, a hash or an
//! `Authorization` header; the access log (http/service.rs) names only the user.

use std::io::IsTerminal as _;

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Lines queued for the writer thread before logging threads wait (32 bytes each).
const LOG_QUEUE_LINES: usize = 8_192;

/// Installs the global subscriber. `RUST_LOG`, when set, wins over `[log] level`.
///
/// Lines are written by a background thread, so a slow reader of stderr (a pipe to journald
/// or a container runtime) never blocks the threads serving requests. Keep the returned guard
/// alive until exit: dropping it flushes what is still queued.
pub fn init(config: &LogConfig) -> tracing_appender::non_blocking::WorkerGuard {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .or_else(|| EnvFilter::try_new(&config.level).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        // Block rather than drop lines when the queue is full: the access log is an audit trail.
        .lossy(false)
        // The queue is allocated and initialised up front: tracing-appender's default of 128,000
        // lines is 4 MiB of resident memory, a fifth of an idle gate; this still absorbs a burst
        // of about 2 MB of access log while the reader of stderr stalls.
        .buffered_lines_limit(LOG_QUEUE_LINES)
        .finish(std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Colours only on a terminal: journald, `docker logs` and files get plain text.
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(writer);
    let _ = match config.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    guard
}
