//! The `loms` binary: the gRPC server, and stock administration from the command line.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use loms::{
    Application, Config,
    domain::StockStore,
    grpc::admin::distinct_levels,
    outbox::{OutboxSource, Republish},
    storage::{PgStore, StockCache},
};

#[derive(Debug, Parser)]
#[command(name = "loms", version, about = "LOMS: orders, stock and reservations over gRPC")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gRPC server (the default when no command is given).
    Serve(Box<Config>),
    /// Stock administration straight against the database.
    #[command(subcommand)]
    Stock(StockCommand),
    /// The event outbox, straight against the database (PostgreSQL or SQLite).
    #[command(subcommand)]
    Outbox(OutboxCommand),
}

#[derive(Debug, Subcommand)]
enum OutboxCommand {
    /// Returns events the relay set aside (the broker refused them for good) to the relay, after their cause was
    /// fixed (say, the broker's and `--outbox-max-message-bytes` raised). The later events of their orders follow.
    Republish {
        /// The event to republish (its `event_id`, as logged when it was set aside).
        #[arg(long, conflicts_with = "all", required_unless_present = "all")]
        event_id: Option<uuid::Uuid>,
        /// Every event set aside.
        #[arg(long)]
        all: bool,
        /// Database URL.
        #[arg(long, env = "LOMS_DATABASE_URL", default_value = "postgres://postgres@127.0.0.1:5432/loms")]
        database_url: String,
        #[command(flatten)]
        log: minizon_common::telemetry::LogArgs,
    },
}

#[derive(Debug, Subcommand)]
enum StockCommand {
    /// Set units on hand from a CSV file with the header `warehouse_id,sku,count` (all rows or none).
    Import {
        /// The CSV file.
        file: PathBuf,
        /// Database URL.
        #[arg(long, env = "LOMS_DATABASE_URL", default_value = "postgres://postgres@127.0.0.1:5432/loms")]
        database_url: String,
        #[command(flatten)]
        log: minizon_common::telemetry::LogArgs,
    },
}

fn main() -> anyhow::Result<()> {
    let command = Cli::parse().command.unwrap_or_else(|| Command::Serve(Box::new(Config::parse_from(["loms"]))));
    runtime(&command)?.block_on(run(command))
}

/// The process's runtime: `serve` on its configured workers ([`Config::worker_threads`]), the one-off commands on
/// tokio's default (a worker per core).
fn runtime(command: &Command) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Command::Serve(config) = command {
        builder.worker_threads(config.worker_threads.get());
    }
    builder.enable_all().build()
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve(config) => serve(*config).await,
        Command::Stock(StockCommand::Import { file, database_url, log }) => {
            let telemetry = minizon_common::telemetry::init("loms", &log);
            let imported = import(&file, &database_url).await;
            telemetry.shutdown();
            imported
        }
        Command::Outbox(OutboxCommand::Republish { event_id, all: _, database_url, log }) => {
            let telemetry = minizon_common::telemetry::init("loms", &log);
            let which = event_id.map_or(Republish::All, Republish::Event);
            let republished = republish(&which, &database_url).await;
            telemetry.shutdown();
            republished
        }
    }
}

/// Returns parked outbox events to the relay (`loms outbox republish`).
async fn republish(which: &Republish, database_url: &str) -> anyhow::Result<()> {
    let source = OutboxSource::connect(database_url).await?;
    let republished = source.republish(which).await.context("republish")?;
    if republished == 0 {
        anyhow::bail!("no parked event matches {which:?}");
    }
    tracing::info!(republished, "parked outbox events returned to the relay: published at its next poll");
    Ok(())
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let telemetry = minizon_common::telemetry::init("loms", &config.log);
    let shutdown = minizon_common::shutdown::on_signal();
    let result = async { Application::build(config).await?.run_until_stopped(shutdown).await }.await;
    telemetry.shutdown();
    result
}

async fn import(file: &std::path::Path, database_url: &str) -> anyhow::Result<()> {
    let rows = loms::stock_file::read(file)?;
    let levels = distinct_levels(&rows).map_err(|status| anyhow::anyhow!("{}", status.message()))?;
    // A one-off process: nothing to cache. Running servers show the new levels within their Stocks cache TTL.
    let store = PgStore::connect(database_url, 2, 1, false, StockCache::default()).await?;
    let imported = store.import_stock(&levels).await.context("import stock")?;
    tracing::info!(imported, file = %file.display(), "stock imported");
    Ok(())
}
