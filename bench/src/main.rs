//! The `minizon-bench` binary: `run` the benchmark, `wait` for a server the calling script just started, `up` /
//! `down` the production topology, and `soak` it under faults.

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
        Command::Up(args) => {
            let _telemetry = minizon_common::telemetry::init("minizon-bench", &args.log);
            let summary = minizon_bench::up::up(&args).await?;
            std::io::stdout().write_all(summary.as_bytes())?;
            Ok(())
        }
        Command::Down(args) => {
            let run_dir = std::path::absolute(&args.run_dir)?;
            let stopped = minizon_bench::topology::down(&run_dir).await?;
            let text = if stopped.is_empty() {
                format!("nothing of `make up` runs (no live pid file in {})\n", run_dir.display())
            } else {
                format!("stopped {}\n", stopped.join(", "))
            };
            std::io::stdout().write_all(text.as_bytes())?;
            Ok(())
        }
        Command::Soak(args) => {
            let _telemetry = minizon_common::telemetry::init("minizon-bench", &args.log);
            let report = minizon_bench::soak::run(&args).await?;
            std::io::stdout().write_all(report.markdown.as_bytes())?;
            if let Some(path) = &args.report {
                std::fs::write(path, &report.markdown).with_context(|| format!("write {}", path.display()))?;
            }
            if !report.passed() {
                std::process::exit(1);
            }
            Ok(())
        }
    }
}
