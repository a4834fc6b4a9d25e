//! `checkout`: the Checkout server.

use checkout::{Application, Config};
use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    minizon_common::telemetry::init(&config.log);
    let shutdown = minizon_common::shutdown::on_signal();
    let app = Application::build(config).await?;
    app.run_until_stopped(shutdown).await
}
