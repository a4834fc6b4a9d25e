//! `product-service`: the local ProductService server.

use clap::Parser;
use product_service::{Application, Config};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let telemetry = minizon_common::telemetry::init("product-service", &config.log);
    let shutdown = minizon_common::shutdown::on_signal();
    let result = async { Application::build(config).await?.run_until_stopped(shutdown).await }.await;
    telemetry.shutdown();
    result
}
