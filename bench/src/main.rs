//! The `minizon-bench` binary: `run` the benchmark, or `wait` for a server the calling script just started.

use std::io::Write as _;

use anyhow::Context as _;
use clap::Parser as _;
use minizon_bench::config::{Cli, Command};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Run(args) => {
            let _ = minizon_common::telemetry::init("minizon-bench", &args.log);
            // The reports go to the files named by --json and --markdown; standard output carries the logs.
            minizon_bench::run(&args).await?;
            Ok(())
        }
        Command::Compare { base, other } => {
            let read = |path: &std::path::Path| -> anyhow::Result<minizon_bench::report::Report> {
                let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
                serde_json::from_str(&text).with_context(|| format!("parse {}", path.display()))
            };
            let table = minizon_bench::report::compare(&read(&base)?, &read(&other)?);
            std::io::stdout().write_all(table.as_bytes())?;
            Ok(())
        }
        Command::Wait { url, timeout } => minizon_bench::target::wait_serving(&url, timeout).await,
    }
}
