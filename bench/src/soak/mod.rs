//! `make soak`: the fault suite. Starts the production topology (the start-up of `make up`, on databases and
//! ports of its own), drives orders on short stock while it kills LOMS replicas and Notifications, stops the
//! broker and makes the webhook receiver fail, waits for the system to settle, and counts what the guarantees
//! forbid: oversold units, reservations left behind, changes never notified or notified twice, INTERNAL or
//! UNKNOWN answers. Every count must be zero.

pub mod audit;
pub mod faults;
pub mod load;
pub mod receiver;
pub mod report;

use std::{collections::HashMap, path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context as _;
use clap::Args;
use minizon_proto::product::{ListSkusRequest, product_service_client::ProductServiceClient};
use tokio::{sync::Mutex, time::Instant};
use tokio_util::sync::CancellationToken;

use crate::{
    target,
    topology::{self, Running, TopologyArgs},
};

/// Settings of a soak run; the defaults are the full run of `make soak`.
#[derive(Debug, Clone, Args)]
pub struct SoakArgs {
    /// Directory of the built binaries.
    #[arg(long, env = "SOAK_BIN_DIR", default_value = "target/debug")]
    pub bin_dir: PathBuf,

    /// Logs, pid files and the broker's data of the soak's topology (emptied at the start).
    #[arg(long, env = "SOAK_RUN_DIR", default_value = "data/soak")]
    pub run_dir: PathBuf,

    /// The broker's start script.
    #[arg(long, default_value = "scripts/kafka.sh")]
    pub kafka_script: PathBuf,

    /// PostgreSQL server, without a database name; the soak's databases are `minizon_soak_*`, dropped first.
    #[arg(long, env = "SOAK_POSTGRES_URL", default_value = "postgres://postgres@127.0.0.1:5432")]
    pub postgres_url: String,

    /// Ports of the soak's topology: the broker on this one, ProductService +1, Checkout +2, LOMS from +11. Below
    /// 32768, outside Linux's ephemeral range: a port there may be held at any moment by some outgoing connection
    /// (a replica's own, to PostgreSQL), and a restarted service could not bind it.
    #[arg(long, env = "SOAK_PORT_BASE", default_value_t = 27_100)]
    pub port_base: u16,

    /// LOMS replicas on one database.
    #[arg(long, env = "SOAK_LOMS_REPLICAS", default_value_t = 3)]
    pub loms_replicas: u16,

    /// Log filter of the services (their logs are in the run directory).
    #[arg(long, env = "SOAK_SERVICE_LOG", default_value = "info")]
    pub service_log: String,

    /// Orders in all.
    #[arg(long, env = "SOAK_ORDERS", default_value_t = 10_000)]
    pub orders: u64,

    /// Concurrent clients.
    #[arg(long, env = "SOAK_CLIENTS", default_value_t = 64)]
    pub clients: usize,

    /// Orders per second; 0 paces the load so that it lasts the fault window (`--fault-window`).
    #[arg(long, env = "SOAK_RATE", default_value_t = 0.0)]
    pub rate: f64,

    /// The faults are spread over this window from the start of the load.
    #[arg(long, env = "SOAK_FAULT_WINDOW", default_value = "150s", value_parser = humantime::parse_duration)]
    pub fault_window: Duration,

    /// SIGKILLs of LOMS replicas (each restarted).
    #[arg(long, env = "SOAK_LOMS_KILLS", default_value_t = 3)]
    pub loms_kills: u32,

    /// SIGKILLs of Notifications (each restarted).
    #[arg(long, env = "SOAK_NOTIFICATIONS_KILLS", default_value_t = 3)]
    pub notifications_kills: u32,

    /// How long a killed process stays down.
    #[arg(long, env = "SOAK_DOWN_FOR", default_value = "1s", value_parser = humantime::parse_duration)]
    pub down_for: Duration,

    /// How long the broker is stopped (SIGSTOP); 0s for never.
    #[arg(long, env = "SOAK_BROKER_PAUSE", default_value = "30s", value_parser = humantime::parse_duration)]
    pub broker_pause: Duration,

    /// How long the webhook receiver answers 503; 0s for never.
    #[arg(long, env = "SOAK_RECEIVER_OUTAGE", default_value = "60s", value_parser = humantime::parse_duration)]
    pub receiver_outage: Duration,

    /// LOMS's payment timeout (orders left unpaid are cancelled after it).
    #[arg(long, env = "SOAK_PAYMENT_TIMEOUT", default_value = "5s")]
    pub payment_timeout: String,

    /// Skus the orders buy (the first ones of the ProductService catalog).
    #[arg(long, env = "SOAK_SKUS", default_value_t = 20)]
    pub skus: u32,

    /// Warehouses each sku is stocked in.
    #[arg(long, default_value_t = 2)]
    pub warehouses: u32,

    /// Stock as a percentage of what the paid orders ask for: below 100 some orders must be refused.
    #[arg(long, env = "SOAK_STOCK_PERCENT", default_value_t = 60)]
    pub stock_percent: u32,

    /// Most lines per order.
    #[arg(long, default_value_t = 3)]
    pub max_lines: usize,

    /// Percentage of orders paid.
    #[arg(long, default_value_t = 50)]
    pub pay_percent: u8,

    /// Percentage of orders cancelled (the rest of the unpaid ones time out).
    #[arg(long, default_value_t = 25)]
    pub cancel_percent: u8,

    /// Percentage of orders bought through a Checkout cart.
    #[arg(long, default_value_t = 10)]
    pub checkout_percent: u8,

    /// Attempts per call on transient failures (a killed replica).
    #[arg(long, default_value_t = 20)]
    pub attempts: u32,

    /// Deadline of every call.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,

    /// Longest wait, after the load and the faults, for the system to settle before counting.
    #[arg(long, env = "SOAK_SETTLE_TIMEOUT", default_value = "300s", value_parser = humantime::parse_duration)]
    pub settle_timeout: Duration,

    /// Seed of every random choice.
    #[arg(long, default_value_t = 12)]
    pub seed: u64,

    /// Keep the run directory of an earlier run instead of starting from an empty one.
    #[arg(long)]
    pub keep_run_dir: bool,

    /// Where the Markdown table is also written (besides standard output).
    #[arg(long, env = "SOAK_REPORT")]
    pub report: Option<std::path::PathBuf>,

    #[command(flatten)]
    pub log: minizon_common::telemetry::LogArgs,
}

impl SoakArgs {
    /// Refuses impossible settings before anything starts.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.orders > 0 && (1..=1000).contains(&self.clients), "orders > 0 and clients 1..=1000");
        anyhow::ensure!(self.skus > 0 && self.warehouses > 0 && self.max_lines > 0, "skus, warehouses, lines > 0");
        anyhow::ensure!(
            u16::from(self.pay_percent) + u16::from(self.cancel_percent) <= 100 && self.checkout_percent <= 100,
            "pay + cancel percentages must be at most 100"
        );
        anyhow::ensure!(self.attempts > 0, "--attempts must be positive");
        anyhow::ensure!(self.rate >= 0.0 && self.rate.is_finite(), "--rate must be 0 or positive");
        anyhow::ensure!(!self.fault_window.is_zero(), "--fault-window must be positive");
        anyhow::ensure!(self.port_base.checked_add(11 + self.loms_replicas).is_some(), "--port-base too high");
        humantime::parse_duration(&self.payment_timeout).context("--payment-timeout")?;
        Ok(())
    }

    /// The soak's topology: its own ports, databases (`minizon_soak_*`) and run directory.
    fn layout(&self, receiver: &receiver::Receiver) -> anyhow::Result<topology::Layout> {
        let topology = TopologyArgs {
            bin_dir: self.bin_dir.clone(),
            run_dir: self.run_dir.clone(),
            kafka_script: self.kafka_script.clone(),
            kafka_listen: std::net::SocketAddr::from(([127, 0, 0, 1], self.port_base)),
            postgres_url: self.postgres_url.clone(),
            database_prefix: "minizon_soak_".into(),
            loms_replicas: self.loms_replicas,
            loms_port: self.port_base + 11,
            checkout_port: self.port_base + 2,
            product_port: self.port_base + 1,
            admin_token: "soak-admin-token".into(),
            service_log: self.service_log.clone(),
        };
        let mut layout = topology.layout()?;
        layout.loms_env = vec![("LOMS_PAYMENT_TIMEOUT".into(), self.payment_timeout.clone())];
        // Carts of the soak's skus are checked against the catalog once, not at ProductService's quota.
        layout.checkout_env = vec![("CHECKOUT_PRODUCT_CACHE_TTL".into(), "1h".into())];
        layout.notifications_env = vec![
            ("NOTIFICATIONS_SINKS".into(), "webhook".into()),
            ("NOTIFICATIONS_WEBHOOK_URL".into(), receiver.url()),
        ];
        Ok(layout)
    }

    /// Orders per second the load is paced at.
    fn paced_rate(&self) -> Option<f64> {
        let rate = if self.rate > 0.0 { self.rate } else { self.orders as f64 / self.fault_window.as_secs_f64() };
        Some(rate)
    }
}

/// Runs the soak; returns the report (whose `passed` says whether every count is zero).
pub async fn run(args: &SoakArgs) -> anyhow::Result<report::Report> {
    args.validate()?;
    let receiver = Arc::new(receiver::Receiver::start().await?);
    let layout = args.layout(&receiver)?;
    if !args.keep_run_dir {
        match std::fs::remove_dir_all(&layout.run_dir) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(error).with_context(|| format!("empty {}", layout.run_dir.display())),
        }
    }
    fresh_databases(&layout).await?;

    tracing::info!(run_dir = %layout.run_dir.display(), "starting the topology");
    let services = Arc::new(Mutex::new(topology::start_all(&layout).await?));
    // The services run in process groups of their own (so that a fault reaches only its target), so a Ctrl-C in
    // the terminal does not reach them: the soak stops what it started before it exits.
    let outcome = tokio::select! {
        outcome = drive(args, &layout, services.clone(), receiver) => outcome,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted: the services it started are stopped")),
    };
    let mut services = services.lock().await;
    topology::stop_all(&mut services, &layout.run_dir).await;
    outcome
}

/// Drops the soak's databases (the services create and migrate them again).
async fn fresh_databases(layout: &topology::Layout) -> anyhow::Result<()> {
    let admin_url = format!("{}/postgres", layout.postgres.trim_end_matches('/'));
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&admin_url)
        .await
        .with_context(|| format!("connect to {admin_url}"))?;
    for service in ["loms", "checkout", "notifications"] {
        let name = format!("{}{service}", layout.database_prefix);
        anyhow::ensure!(name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'), "bad database name {name}");
        sqlx::raw_sql(&format!("drop database if exists {name} with (force)")).execute(&mut conn).await?;
    }
    Ok(())
}

async fn drive(
    args: &SoakArgs,
    layout: &topology::Layout,
    services: Arc<Mutex<Vec<Running>>>,
    receiver: Arc<receiver::Receiver>,
) -> anyhow::Result<report::Report> {
    let skus = catalog_skus(&layout.product_url(), args.skus).await?;
    let plan = load::LoadPlan {
        orders: args.orders,
        clients: args.clients,
        rate: args.paced_rate(),
        skus: skus.clone(),
        max_lines: args.max_lines,
        pay_percent: args.pay_percent,
        cancel_percent: args.cancel_percent,
        checkout_percent: args.checkout_percent,
        attempts: args.attempts,
        seed: args.seed,
    };
    let seeded = seed(args, layout, &skus).await?;
    let stop_reader = CancellationToken::new();
    let _stop_reader_on_exit = stop_reader.clone().drop_guard();
    let dead = audit::read_dead_letters(
        &layout.kafka_listen.to_string(),
        "loms.order-status-changed.dead-letter",
        stop_reader.clone(),
    )
    .await?;

    let mut loms = Vec::new();
    for replica in 1..=layout.loms_replicas {
        loms.push(target::endpoint(&layout.loms_url(replica), args.request_timeout)?.connect_lazy());
    }
    let checkout = target::endpoint(&layout.checkout_url(), args.request_timeout)?.connect_lazy();
    let targets = load::Targets { loms, checkout };
    let fault_plan = faults::FaultPlan {
        window: args.fault_window,
        loms_kills: args.loms_kills,
        notifications_kills: args.notifications_kills,
        down_for: args.down_for,
        broker_pause: args.broker_pause,
        receiver_outage: args.receiver_outage,
    };

    tracing::info!(orders = args.orders, clients = args.clients, rate = plan.rate, "load and faults start");
    let start = Instant::now();
    let (loaded, broken) = tokio::join!(
        load::run(&plan, &targets),
        faults::run(fault_plan, start, services, layout.run_dir.clone(), receiver.clone(), layout.loms_replicas),
    );
    let faults = broken?;
    let load = loaded?;
    tracing::info!(secs = load.elapsed.as_secs_f64(), orders = load.orders.len(), "load done; settling");

    let pool = audit::connect(&layout.database_url("loms")).await?;
    let settle_started = Instant::now();
    let settled = loop {
        let progress = audit::progress(&pool, &receiver.snapshot().by_event, &dead.ids()).await?;
        if progress.settled() {
            break true;
        }
        if settle_started.elapsed() >= args.settle_timeout {
            tracing::warn!(?progress, "not settled within the settle timeout: counting anyway");
            break false;
        }
        tracing::info!(?progress, received = receiver.distinct(), "settling");
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let settle = settle_started.elapsed();
    let received = receiver.snapshot();
    let dead_ids = dead.ids();
    let counts = audit::count(&pool, &seeded, &load.orders, &received.by_event, &dead_ids).await?;
    Ok(report::Report::new(args, layout, &load, &faults, &counts, &received, settled, settle))
}

/// The first `count` skus of the ProductService catalog (Checkout sells only those).
async fn catalog_skus(product_url: &str, count: u32) -> anyhow::Result<Vec<u32>> {
    let channel = target::endpoint(product_url, Duration::from_secs(10))?.connect().await?;
    let skus = ProductServiceClient::new(channel)
        .list_skus(ListSkusRequest { token: "testtoken".into(), start_after_sku: 0, count })
        .await
        .context("ProductService ListSkus")?
        .into_inner()
        .skus;
    anyhow::ensure!(skus.len() == count as usize, "the catalog has {} skus, the soak asks for {count}", skus.len());
    Ok(skus)
}

/// Stocks every sku in every warehouse with a share of what the paid orders will ask for; returns the units
/// seeded per (warehouse, sku).
async fn seed(args: &SoakArgs, layout: &topology::Layout, skus: &[u32]) -> anyhow::Result<HashMap<(i64, i64), i64>> {
    // Expected paid units of one sku: orders × share paid × lines per order (1..=max, so (1+max)/2) × 1.5 units
    // a line, spread over the skus.
    let lines = (1 + args.max_lines.min(skus.len())) as f64 / 2.0;
    let paid_units = args.orders as f64 * f64::from(args.pay_percent) / 100.0 * lines * 1.5 / skus.len() as f64;
    let per_warehouse =
        (paid_units * f64::from(args.stock_percent) / 100.0 / f64::from(args.warehouses)).ceil().max(1.0) as u64;
    let mut admin = target::admin_client(&layout.loms_url(1), &layout.admin_token).await?;
    target::seed_stock(&mut admin, skus.iter().copied(), args.warehouses, per_warehouse).await?;
    tracing::info!(skus = skus.len(), per_warehouse, warehouses = args.warehouses, "stock seeded");
    let units = i64::try_from(per_warehouse)?;
    Ok(skus
        .iter()
        .flat_map(|sku| (1..=i64::from(args.warehouses)).map(move |warehouse| ((warehouse, i64::from(*sku)), units)))
        .collect())
}
