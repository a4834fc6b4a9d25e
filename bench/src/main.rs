//! The `minizon-bench` binary: `run` the benchmark, or `wait` for a server the calling script just started.

use std::io::Write as _;

use clap::Parser as _;
use minizon_bench::config::{Cli, Command};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Run(args) => {
            minizon_common::telemetry::init(&args.log);
            let report = minizon_bench::run(&args).await?;
            // The Markdown report is the command's output: to standard output, beside the files.
            std::io::stdout().write_all(report.markdown().as_bytes())?;
            Ok(())
        }
        Command::Wait { url, timeout } => minizon_bench::target::wait_serving(&url, timeout).await,
    }
}
