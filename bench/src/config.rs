//! Load generator settings, from flags and environment variables.

use std::{path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};

use crate::{rss::Watched, topology::TopologyArgs};

/// Every scenario, in the order a run executes them at each client count: each baseline right before the
/// scenarios compared with it, so that a noisy machine disturbs both alike.
pub const SCENARIOS: &[&str] = &[
    "pgbench",
    "pgbench@80%",
    "create-3",
    "create-3@80%",
    "create-3-keyed",
    "purchase-1",
    "purchase-3",
    "purchase-10",
    "purchase-100",
    "churn-3",
    "health",
    "stocks",
    "checkout-health",
    "listcart",
    "sweep",
];

/// The load generator's command line.
#[derive(Debug, Parser)]
#[command(name = "minizon-bench", version, about = "miniZON load generator: scenarios, same-run baselines, reports")]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The load generator's commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Seed stock, run the scenarios at each client count, and write the JSON and Markdown reports.
    Run(Box<RunArgs>),
    /// Print two JSON reports side by side (e.g. PostgreSQL and SQLite) as a Markdown table.
    Compare {
        /// The reference run (e.g. PostgreSQL).
        base: PathBuf,
        /// The run compared with it (e.g. SQLite).
        other: PathBuf,
    },
    /// Wait until a gRPC server answers its health check with SERVING (for scripts that just started one).
    Wait {
        /// The server, e.g. `http://127.0.0.1:26051`.
        url: String,
        /// How long to wait.
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
    /// `make up`: start the production topology (broker, LOMS replicas, ProductService, Checkout, Notifications)
    /// in the background, seed stock into an empty LOMS, and print where everything listens and logs.
    Up(Box<UpArgs>),
    /// `make down`: stop exactly the processes the pid files of the run directory name.
    Down(Box<TopologyArgs>),
    /// `make soak`: the fault suite. Starts the topology, drives orders while killing and pausing its parts, and
    /// prints what the guarantees counted (every count must be zero).
    Soak(Box<crate::soak::SoakArgs>),
}

/// Settings of `make up`.
#[derive(Debug, Clone, Args)]
pub struct UpArgs {
    /// Where the topology runs.
    #[command(flatten)]
    pub topology: TopologyArgs,

    /// Stock loaded into LOMS when it has none yet (`warehouse_id,sku,count`).
    #[arg(long, env = "UP_STOCK_FILE", default_value = "samples/stock.csv")]
    pub stock_file: PathBuf,

    #[command(flatten)]
    pub log: minizon_common::telemetry::LogArgs,
}

/// Settings of a benchmark run.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// LOMS gRPC address.
    #[arg(long, env = "BENCH_LOMS_URL", default_value = "http://127.0.0.1:26051")]
    pub loms_url: String,

    /// LOMS admin token (stock seeding through LomsAdminV1/ImportStock).
    #[arg(long, env = "BENCH_LOMS_ADMIN_TOKEN", hide_env_values = true)]
    pub loms_admin_token: Option<String>,

    /// LOMS's database, for the sweep scenario (moves payment deadlines, counts unpaid orders). Without it the
    /// sweep is skipped.
    #[arg(long, env = "BENCH_LOMS_DATABASE_URL")]
    pub loms_database_url: Option<String>,

    /// Checkout gRPC address. Without it the Checkout scenarios are skipped.
    #[arg(long, env = "BENCH_CHECKOUT_URL")]
    pub checkout_url: Option<String>,

    /// ProductService gRPC address (the ListCart scenario takes its cart skus from the catalog).
    #[arg(long, env = "BENCH_PRODUCT_URL", default_value = "http://127.0.0.1:26053")]
    pub product_url: String,

    /// ProductService token.
    #[arg(long, env = "BENCH_PRODUCT_TOKEN", default_value = "testtoken", hide_env_values = true)]
    pub product_token: String,

    /// Lines per cart in the ListCart scenario.
    #[arg(long, default_value_t = 10)]
    pub cart_lines: usize,

    /// Client counts to run every scenario at, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "8,32")]
    pub clients: Vec<usize>,

    /// HTTP/2 connections the clients share round-robin; 0 gives every client its own.
    #[arg(long, default_value_t = 0)]
    pub connections: usize,

    /// Unrecorded CreateOrder load (3 items, the largest client count) once the stock is seeded, before the first
    /// scenario: the first writes to freshly imported stock rows ran at a fifth of the rate of the same scenario a
    /// minute later, which is the import's cost, not the service's. 0s to skip.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub prime: Duration,

    /// Unrecorded time before each scenario's measured window.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub warmup: Duration,

    /// Length of each scenario's measured window.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,

    /// Most measured iterations per scenario run, across all clients (whichever of this and the duration comes
    /// first ends it).
    #[arg(long, default_value_t = 10_000_000)]
    pub requests: u64,

    /// Deadline of every call.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,

    /// Scenarios to run, comma-separated, from: pgbench, pgbench@80%, create-3, create-3@80%, create-3-keyed,
    /// purchase-1, purchase-3, purchase-10, purchase-100, churn-3, health, stocks, checkout-health, listcart, sweep.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "pgbench,pgbench@80%,create-3,create-3@80%,create-3-keyed,purchase-1,purchase-3,purchase-10,purchase-100,churn-3,health,stocks,checkout-health,listcart,sweep"
    )]
    pub scenarios: Vec<String>,

    /// Skus seeded and bought from: `--sku-count` skus starting at this one.
    #[arg(long, default_value_t = 1_000_001)]
    pub first_sku: u32,

    /// How many skus.
    #[arg(long, default_value_t = 10_000)]
    pub sku_count: u32,

    /// Warehouses each sku is stocked in.
    #[arg(long, default_value_t = 4)]
    pub warehouses: u32,

    /// Units per (warehouse, sku): enough that no order of the run fails for stock.
    #[arg(long, default_value_t = 1_000_000_000_000)]
    pub stock: u64,

    /// Skip seeding (the stock is already there).
    #[arg(long)]
    pub no_seed: bool,

    /// Skip the `VACUUM (ANALYZE)` of LOMS's tables and the `CHECKPOINT` (PostgreSQL only) before each scenario.
    /// The vacuum stands in for autovacuum, which may be off on a development server (as on the benchmark
    /// machine): without fresh statistics PostgreSQL plans some LOMS queries as sequential scans. The checkpoint
    /// keeps one that the previous scenarios' WAL would start from landing inside a measured window.
    #[arg(long)]
    pub no_vacuum: bool,

    /// Seed of the sku draws: the same seed sends the same orders.
    #[arg(long, default_value_t = 6)]
    pub seed: u64,

    /// The pgbench executable.
    #[arg(long, env = "BENCH_PGBENCH", default_value = "pgbench")]
    pub pgbench: PathBuf,

    /// The scratch database pgbench runs on, initialised with `pgbench -i`. Without it the pgbench baseline is
    /// skipped.
    #[arg(long, env = "BENCH_PGBENCH_DATABASE_URL")]
    pub pgbench_database_url: Option<String>,

    /// Unpaid orders the sweep scenario makes due at once.
    #[arg(long, default_value_t = 100_000)]
    pub sweep_orders: u64,

    /// Items per unpaid order of the sweep scenario.
    #[arg(long, default_value_t = 1)]
    pub sweep_items: usize,

    /// Clients creating the sweep scenario's backlog.
    #[arg(long, default_value_t = 32)]
    pub sweep_create_clients: usize,

    /// Purchases per second of the light load during the sweep.
    #[arg(long, default_value_t = 50.0)]
    pub sweep_light_rate: f64,

    /// Clients of the light load during the sweep.
    #[arg(long, default_value_t = 4)]
    pub sweep_light_clients: usize,

    /// How long the light load runs before the orders fall due.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub sweep_baseline: Duration,

    /// Bound on creating the sweep backlog and on waiting for the sweep.
    #[arg(long, default_value = "300s", value_parser = humantime::parse_duration)]
    pub sweep_limit: Duration,

    /// LOMS's Prometheus endpoint (e.g. `http://127.0.0.1:9461/metrics`): each scenario then reports how many
    /// calls LOMS's write batches carried (`loms_write_batch_size`). Without it batch sizes are left out.
    #[arg(long, env = "BENCH_LOMS_METRICS_URL")]
    pub loms_metrics_url: Option<String>,

    /// Service processes whose memory is reported, as `name=pid` (repeatable).
    #[arg(long = "watch")]
    pub watch: Vec<Watched>,

    /// Where the JSON report goes.
    #[arg(long, default_value = "target/bench/report.json")]
    pub json: PathBuf,

    /// Where the Markdown report goes.
    #[arg(long, default_value = "target/bench/report.md")]
    pub markdown: PathBuf,

    /// A label for the report (e.g. the backend and build).
    #[arg(long, default_value = "PostgreSQL, release build")]
    pub label: String,

    #[command(flatten)]
    pub log: minizon_common::telemetry::LogArgs,
}

impl RunArgs {
    /// Whether scenario `name` was asked for.
    pub fn wants(&self, name: &str) -> bool {
        self.scenarios.iter().any(|wanted| wanted == name)
    }

    /// Refuses unknown scenario names and impossible settings before anything runs.
    pub fn validate(&self) -> anyhow::Result<()> {
        if let Some(unknown) = self.scenarios.iter().find(|name| !SCENARIOS.contains(&name.as_str())) {
            anyhow::bail!("unknown scenario {unknown:?}; known: {}", SCENARIOS.join(", "));
        }
        anyhow::ensure!(
            !self.clients.is_empty() && self.clients.iter().all(|c| (1..=1000).contains(c)),
            "client counts must be 1..=1000"
        );
        anyhow::ensure!(self.sku_count >= 100, "--sku-count must be at least 100 (the largest order has 100 skus)");
        anyhow::ensure!(
            self.first_sku > 0 && self.first_sku.checked_add(self.sku_count).is_some(),
            "sku range out of bounds"
        );
        anyhow::ensure!(self.warehouses > 0, "--warehouses must be positive");
        anyhow::ensure!(!self.duration.is_zero(), "--duration must be positive");
        anyhow::ensure!(
            self.sweep_create_clients > 0 && self.sweep_light_clients > 0,
            "sweep client counts must be positive"
        );
        anyhow::ensure!(self.sweep_light_rate > 0.0, "--sweep-light-rate must be positive");
        Ok(())
    }
}
