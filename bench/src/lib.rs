//! miniZON's load generator: closed-loop tonic clients against a running system, each scenario next to a same-run
//! baseline of the same machine (pgbench on the same PostgreSQL, a no-op gRPC call on the same server), reported
//! as throughput, latency percentiles, errors by status code, ratios and peak memory, in JSON and Markdown.
//!
//! A scenario is a [`runner::Scenario`]: how a client connects and what one iteration sends. Adding one for a new
//! part of the system is a type in [`scenarios`] and a line in [`run`].

pub mod batches;
pub mod config;
pub mod pacer;
pub mod pgbench;
pub mod report;
pub mod rss;
pub mod runner;
pub mod scenarios;
pub mod soak;
pub mod stats;
pub mod sweep;
pub mod target;
pub mod topology;
pub mod up;

use std::{path::Path, sync::Arc, time::Duration};

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use crate::{
    config::RunArgs,
    report::{ClientRun, Machine, Report, Settings},
    rss::PeakMemory,
    runner::{LoadSpec, Scenario, ScenarioResult},
    scenarios::{HealthCheck, ListCart, OrderFlow, Stocks, loms::AfterCreate},
    target::{Channels, SkuRange},
};

/// How long a server may take to report SERVING before the run gives up.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Seeds stock, runs every asked scenario at every client count, and writes the reports.
pub async fn run(args: &RunArgs) -> anyhow::Result<Report> {
    args.validate()?;
    let started_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    target::wait_serving(&args.loms_url, READY_TIMEOUT).await?;
    let skus = SkuRange { first: args.first_sku, count: args.sku_count };
    if !args.no_seed {
        let token = args.loms_admin_token.as_deref().context("seeding stock needs --loms-admin-token")?;
        let mut admin = target::admin_client(&args.loms_url, token).await?;
        let levels = target::seed_stock(&mut admin, skus.iter(), args.warehouses, args.stock).await?;
        tracing::info!(levels, "stock seeded");
    }
    let maintenance = Maintenance::connect(args).await?;
    prime(args, skus).await?;
    let pgbench = pgbench_of(args);
    let mut runs = Vec::new();
    let mut listcart_runs = 0;
    for &clients in &args.clients {
        let connections = if args.connections == 0 { clients } else { args.connections };
        let loms = Channels::connect(&args.loms_url, connections, args.request_timeout).await?;
        let spec = LoadSpec {
            clients,
            warmup: args.warmup,
            duration: args.duration,
            max_iterations: args.requests,
            rate: None,
        };
        let mut recorder = Recorder::start(args).await;

        // Before each scenario, the baseline included: what autovacuum would have done by then, and a checkpoint
        // (a no-op without a PostgreSQL URL).
        let maintain = || maintenance.run();
        if args.wants(pgbench::PEAK) {
            maintain().await;
            match &pgbench {
                Some(pgbench) => {
                    let peak = pgbench.run(pgbench::PEAK, clients, args.warmup, args.duration, None).await?;
                    let tps = pgbench::summary(&peak).map_or(0.0, |op| op.throughput);
                    recorder.record(peak).await;
                    if args.wants(pgbench::PACED) && tps > 0.0 {
                        maintain().await;
                        let paced = pgbench.run(pgbench::PACED, clients, args.warmup, args.duration, Some(tps * 0.8));
                        recorder.record(paced.await?).await;
                    }
                }
                None => tracing::warn!("pgbench baseline skipped: no --pgbench-database-url"),
            }
        } else if args.wants(pgbench::PACED) {
            tracing::warn!("{} skipped: it paces at 80 % of the peak {} measures", pgbench::PACED, pgbench::PEAK);
        }
        let orders = |items, then| Arc::new(OrderFlow::new(loms.clone(), skus, items, then, args.seed));
        if args.wants("create-3") {
            maintain().await;
            let created = scenario("create-3", orders(3, AfterCreate::Leave), spec).await?;
            let peak = created.op("CreateOrder").map_or(0.0, |op| op.throughput);
            recorder.record(created).await;
            if args.wants("create-3@80%") && peak > 0.0 {
                let paced = LoadSpec { rate: Some(peak * 0.8), ..spec };
                maintain().await;
                recorder.record(scenario("create-3@80%", orders(3, AfterCreate::Leave), paced).await?).await;
            }
        } else if args.wants("create-3@80%") {
            tracing::warn!("create-3@80% skipped: it paces at 80 % of the peak create-3 measures");
        }
        if args.wants("create-3-keyed") {
            maintain().await;
            let keyed = Arc::new(OrderFlow::new(loms.clone(), skus, 3, AfterCreate::Leave, args.seed).with_keys());
            recorder.record(scenario("create-3-keyed", keyed, spec).await?).await;
        }
        for items in [1, 3, 10, 100] {
            let name = format!("purchase-{items}");
            if args.wants(&name) {
                maintain().await;
                recorder.record(scenario(&name, orders(items, AfterCreate::Pay), spec).await?).await;
            }
        }
        if args.wants("churn-3") {
            maintain().await;
            recorder.record(scenario("churn-3", orders(3, AfterCreate::Cancel), spec).await?).await;
        }
        if args.wants("health") {
            recorder.record(scenario("health", Arc::new(HealthCheck::new(loms.clone(), "")), spec).await?).await;
        }
        if args.wants("stocks") {
            maintain().await;
            recorder
                .record(scenario("stocks", Arc::new(Stocks::new(loms.clone(), skus, args.seed)), spec).await?)
                .await;
        }
        match (&args.checkout_url, args.wants("checkout-health") || args.wants("listcart")) {
            (Some(checkout_url), true) => {
                target::wait_serving(checkout_url, READY_TIMEOUT).await?;
                let checkout = Channels::connect(checkout_url, connections, args.request_timeout).await?;
                if args.wants("checkout-health") {
                    recorder
                        .record(
                            scenario("checkout-health", Arc::new(HealthCheck::new(checkout.clone(), "")), spec).await?,
                        )
                        .await;
                }
                if args.wants("listcart") {
                    let token =
                        args.loms_admin_token.as_deref().context("ListCart stocks its skus: --loms-admin-token")?;
                    let mut admin = target::admin_client(&args.loms_url, token).await?;
                    // Fresh users per run, so that every cart starts empty and ends with exactly the lines asked.
                    let first_user = 1_000_000_000 + listcart_runs * 10_000;
                    listcart_runs += 1;
                    let listcart = ListCart::prepare(
                        checkout,
                        &args.product_url,
                        &args.product_token,
                        &mut admin,
                        args.cart_lines,
                        first_user,
                    )
                    .await?;
                    maintain().await;
                    recorder.record(scenario("listcart", Arc::new(listcart), spec).await?).await;
                }
            }
            (None, true) => tracing::warn!("Checkout scenarios skipped: no --checkout-url"),
            _ => {}
        }
        let results = recorder.results;
        runs.push(ClientRun { clients, ratios: report::ratios(&results), results });
    }

    let sweep = match (&args.loms_database_url, args.wants("sweep")) {
        (Some(database_url), true) => {
            let channels = Channels::connect(&args.loms_url, args.sweep_create_clients, args.request_timeout).await?;
            let spec = sweep::SweepSpec {
                orders: args.sweep_orders,
                items: args.sweep_items,
                create_clients: args.sweep_create_clients,
                light_clients: args.sweep_light_clients,
                light_rate: args.sweep_light_rate,
                baseline: args.sweep_baseline,
                limit: args.sweep_limit,
            };
            maintenance.run().await;
            let result = sweep::run(&channels, database_url, skus, spec, args.seed).await?;
            tracing::info!(orders = result.orders_due, secs = result.sweep_secs, completed = result.completed, "sweep");
            Some(result)
        }
        (None, true) => {
            tracing::warn!("sweep skipped: no --loms-database-url");
            None
        }
        _ => None,
    };

    let memory: Vec<PeakMemory> = args
        .watch
        .iter()
        .filter_map(|w| {
            rss::sample(w.pid).map(|m| PeakMemory { service: w.name.clone(), pid: w.pid, peak_kib: m.peak_kib })
        })
        .collect();
    let database_url = [&args.pgbench_database_url, &args.loms_database_url]
        .into_iter()
        .flatten()
        .find(|url| url.starts_with("postgres"))
        .map(String::as_str);
    let report = Report {
        label: args.label.clone(),
        started_at,
        machine: machine(database_url).await,
        settings: Settings {
            warmup_secs: args.warmup.as_secs_f64(),
            duration_secs: args.duration.as_secs_f64(),
            connections: args.connections,
            skus: args.sku_count,
            warehouses: args.warehouses,
        },
        targets: report::targets(&runs, sweep.as_ref(), &memory),
        runs,
        sweep,
        memory,
    };
    write(&args.json, &serde_json::to_string_pretty(&report)?)?;
    write(&args.markdown, &report.markdown())?;
    Ok(report)
}

/// Completes each scenario's result as it ends: the memory of the watched services, and the write batches LOMS
/// committed since the previous scenario ended (its warm-up included).
struct Recorder<'a> {
    watch: &'a [rss::Watched],
    metrics: Option<(reqwest::Client, &'a str)>,
    last_batches: Option<batches::Totals>,
    results: Vec<ScenarioResult>,
}

impl<'a> Recorder<'a> {
    async fn start(args: &'a RunArgs) -> Self {
        let metrics = args.loms_metrics_url.as_deref().map(|url| (reqwest::Client::new(), url));
        let mut recorder = Self { watch: &args.watch, metrics, last_batches: None, results: Vec::new() };
        recorder.last_batches = recorder.scrape().await;
        if recorder.last_batches.is_none() {
            // No endpoint there (an older LOMS): one warning, not one per scenario.
            recorder.metrics = None;
        }
        recorder
    }

    async fn scrape(&self) -> Option<batches::Totals> {
        let (client, url) = self.metrics.as_ref()?;
        batches::scrape(client, url).await
    }

    async fn record(&mut self, mut result: ScenarioResult) {
        for watched in self.watch {
            if let Some(memory) = rss::sample(watched.pid) {
                result.rss_kib.insert(watched.name.clone(), memory.rss_kib);
            }
        }
        let now = self.scrape().await;
        if let (Some(now), Some(before)) = (&now, &self.last_batches) {
            result.batches = now.since(before);
        }
        self.last_batches = now.or(self.last_batches.take());
        log_result(&result);
        self.results.push(result);
    }
}

/// Before each scenario: `VACUUM (ANALYZE)` of LOMS's tables, standing in for autovacuum, then a `CHECKPOINT`, so
/// that every scenario (pgbench's included) starts from the same state of the server (see `--no-vacuum`).
#[derive(Debug)]
struct Maintenance(Option<sqlx::PgPool>);

impl Maintenance {
    async fn connect(args: &RunArgs) -> anyhow::Result<Self> {
        let url = args.loms_database_url.as_deref().filter(|url| url.starts_with("postgres") && !args.no_vacuum);
        let Some(url) = url else { return Ok(Self(None)) };
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect(url)
            .await
            .context("connect to the LOMS database (--loms-database-url)")?;
        Ok(Self(Some(pool)))
    }

    async fn run(&self) {
        let Some(pool) = &self.0 else { return };
        // Table names, not the whole database: the URL may pin one schema of a shared database (tests do).
        // Simple-query protocol: VACUUM refuses to run inside the implicit transaction of a prepared statement.
        let vacuum = "vacuum (analyze) stocks, orders, order_status_history, outbox";
        timed(pool, vacuum, "vacuum (analyze) of the LOMS tables", "plans may be stale").await;
        // The previous scenarios' WAL would otherwise start a checkpoint at a moment no scenario chose: at LOMS's
        // write rate one began every 30–60 s, and one inside a paced window stalled commits for seconds
        // (docs/benchmarks-history.md, run 13). Taken here, between windows, the next WAL-triggered one is
        // max_wal_size ÷ (1 + checkpoint_completion_target) of WAL away (540 MB by default; one create-3 scenario
        // at 32 clients writes about 190 MB). Needs superuser or the pg_checkpoint role.
        timed(pool, "checkpoint", "checkpoint", "one may start inside the next window").await;
    }
}

/// Runs one maintenance statement `sql` (simple-query protocol) and logs how long `what` took, or that it failed
/// and what that means (`otherwise`): maintenance never fails a run.
async fn timed(pool: &sqlx::PgPool, sql: &str, what: &str, otherwise: &str) {
    let started = std::time::Instant::now();
    match sqlx::raw_sql(sql).execute(pool).await {
        Ok(_) => tracing::info!(secs = started.elapsed().as_secs_f64(), "{what}"),
        Err(error) => tracing::warn!(%error, "{what} failed; {otherwise}"),
    }
}

/// Writes to the seeded stock for `--prime`, unrecorded, so that the first scenario does not pay for the import.
async fn prime(args: &RunArgs, skus: SkuRange) -> anyhow::Result<()> {
    // The scenarios that write orders (and so stock): create-3…, purchase-…, churn-3.
    let writes = ["create-", "purchase-", "churn-"];
    let writes_orders = args.scenarios.iter().any(|name| writes.iter().any(|kind| name.starts_with(kind)));
    if args.prime.is_zero() || !writes_orders {
        return Ok(());
    }
    let clients = args.clients.iter().copied().max().unwrap_or(1);
    let loms = Channels::connect(&args.loms_url, clients, args.request_timeout).await?;
    let flow = Arc::new(OrderFlow::new(loms, skus, 3, AfterCreate::Leave, args.seed.wrapping_add(1)));
    let spec =
        LoadSpec { clients, warmup: args.prime, duration: Duration::ZERO, max_iterations: args.requests, rate: None };
    scenario("prime", flow, spec).await?;
    Ok(())
}

/// Runs one scenario with nothing to stop it early.
pub async fn scenario<S: Scenario>(name: &str, scenario: Arc<S>, spec: LoadSpec) -> anyhow::Result<ScenarioResult> {
    tracing::info!(scenario = name, clients = spec.clients, rate = spec.rate, "running");
    runner::run(name, scenario, spec, CancellationToken::new()).await.with_context(|| format!("scenario {name}"))
}

fn pgbench_of(args: &RunArgs) -> Option<pgbench::Pgbench> {
    let database_url = args.pgbench_database_url.clone()?;
    let log_dir = args.json.parent().unwrap_or_else(|| Path::new(".")).join("pgbench-logs");
    Some(pgbench::Pgbench { binary: args.pgbench.clone(), database_url, log_dir })
}

fn log_result(result: &ScenarioResult) {
    for op in &result.ops {
        tracing::info!(
            scenario = %result.scenario,
            clients = result.clients,
            op = %op.op,
            ok_per_sec = format!("{:.0}", op.summary.throughput),
            p50_ms = op.summary.latency_ms.p50,
            p99_ms = op.summary.latency_ms.p99,
            errors = op.summary.errors,
            "result"
        );
    }
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).with_context(|| format!("create {}", parent.display()))?;
    }
    std::fs::write(path, text).with_context(|| format!("write {}", path.display()))
}

/// What is known about the machine; unknown parts are left empty rather than failing the run.
async fn machine(database_url: Option<&str>) -> Machine {
    let memory_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            let line = text.lines().find(|line| line.starts_with("MemTotal:"))?.to_owned();
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .unwrap_or(0);
    let postgres = match database_url {
        Some(url) => {
            let version = async {
                let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(url).await?;
                sqlx::query_scalar::<_, String>("select version()").fetch_one(&mut conn).await
            };
            version.await.ok()
        }
        None => None,
    };
    Machine {
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        memory_gib: memory_kib as f64 / (1024.0 * 1024.0),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease").map(|s| s.trim().to_owned()).unwrap_or_default(),
        postgres,
    }
}
