//! The `minizon` binary: `minizon dev` runs the whole system in one process.

use std::io::Write as _;

use clap::{Parser, Subcommand};
use minizon::{
    cheat_sheet,
    dev::{DevConfig, DevStack},
};

#[derive(Debug, Parser)]
#[command(name = "minizon", version, about = "miniZON: LOMS, Checkout, Notifications and a local ProductService")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Everything in one process on SQLite and an embedded Kafka-protocol broker (like `temporal server start-dev`).
    Dev(Box<DevConfig>),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let Command::Dev(config) = Cli::parse().command;
    let telemetry = minizon_common::telemetry::init("minizon", &config.log);
    let shutdown = minizon_common::shutdown::on_signal();
    let result = async {
        let stack = DevStack::start(&config).await?;
        // The cheat sheet is the command's user-facing output, so it goes to stdout, whole, in one write.
        let mut stdout = std::io::stdout().lock();
        stdout.write_all(cheat_sheet::render(&stack.addresses()).as_bytes())?;
        stdout.flush()?;
        drop(stdout);
        stack.run_until_stopped(shutdown).await
    }
    .await;
    telemetry.shutdown();
    result
}
