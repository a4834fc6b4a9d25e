//! Structured logs through `tracing`, human-readable or JSON.

use clap::{Args, ValueEnum};
use tracing_subscriber::{EnvFilter, fmt};

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Coloured, one event a line, for a person at a terminal.
    #[default]
    Human,
    /// One JSON object a line, for a log pipeline.
    Json,
}

/// Logging flags every binary accepts.
#[derive(Debug, Clone, Args)]
pub struct LogArgs {
    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,
    /// Log filter, in `tracing_subscriber::EnvFilter` syntax (e.g. `info,loms=debug`).
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    pub log_filter: String,
}

/// Installs the global subscriber. Safe to call more than once (tests start many servers in one process): every
/// call after the first is a no-op.
pub fn init(args: &LogArgs) {
    let filter = EnvFilter::try_new(&args.log_filter).unwrap_or_else(|_| EnvFilter::new("info"));
    // stderr: stdout belongs to a command's own output (the dev stack's cheat sheet, a CLI's result).
    let builder = fmt().with_env_filter(filter).with_target(true).with_writer(std::io::stderr);
    let _ = match args.log_format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
