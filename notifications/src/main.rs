//! The `notifications` binary: settings from flags and environment, logs, signals; the rest is the library.

use clap::Parser;
use notifications::{Application, Config};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let telemetry = minizon_common::telemetry::init("notifications", &config.log);
    let shutdown = minizon_common::shutdown::on_signal();
    let result = async { Application::build(config).await?.run_until_stopped(shutdown).await }.await;
    telemetry.shutdown();
    result
}
