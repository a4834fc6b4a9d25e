//! The sweep at scale: many unpaid orders fall due at the same moment; how long until LOMS's unpaid-order sweep
//! has cancelled them all, and what happens meanwhile to the latency of a light purchase load.
//!
//! The orders are created through CreateOrder (a real backlog: orders, items, reservations, history, outbox)
//! with LOMS's normal payment timeout, and then made due all at once by one SQL statement that moves their
//! deadline to `now()`: a short `LOMS_PAYMENT_TIMEOUT` would make them fall due one by one while they are being
//! created, which measures the sweep keeping up with creation rather than clearing a backlog. Progress is read
//! from the database (count of those orders still awaiting payment), polled every 100 ms.
//!
//! Both LOMS backends are supported: the database URL (`postgres://…` or `sqlite://…`) picks the dialect.

use std::{sync::Arc, time::Duration};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use sqlx::{
    PgPool, SqlitePool,
    postgres::PgPoolOptions,
    sqlite::{SqliteConnectOptions, SqlitePoolOptions},
};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::{
    runner::{self, LoadSpec, ScenarioResult},
    scenarios::loms::{AfterCreate, OrderFlow},
    target::{Channels, SkuRange},
};

/// Order status code of `awaiting payment` in LOMS's schema (the contract's enum number).
const AWAITING_PAYMENT: i16 = 1;

/// How the sweep scenario runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SweepSpec {
    /// Unpaid orders made due at once.
    pub orders: u64,
    /// Items per unpaid order.
    pub items: usize,
    /// Clients creating the backlog.
    pub create_clients: usize,
    /// Clients of the light load (purchase path, 3 items).
    pub light_clients: usize,
    /// Purchases per second of the light load.
    pub light_rate: f64,
    /// How long the light load runs before the orders fall due (its undisturbed latency).
    pub baseline: Duration,
    /// Bound on each phase: creating the backlog, and waiting for the sweep.
    pub limit: Duration,
}

/// What the sweep scenario measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepResult {
    /// Unpaid orders made due at once.
    pub orders_due: u64,
    /// Items per order.
    pub items: usize,
    /// Creating the backlog through CreateOrder.
    pub create: ScenarioResult,
    /// Seconds the statement that moved the deadlines took.
    pub make_due_secs: f64,
    /// Seconds from the deadlines moving to the last of those orders cancelled (or to the limit).
    pub sweep_secs: f64,
    /// Whether every order was cancelled within the limit.
    pub completed: bool,
    /// Orders still awaiting payment at the end (0 when completed).
    pub left_awaiting: u64,
    /// Orders cancelled per second.
    pub cancelled_per_sec: f64,
    /// The light load before the orders fell due.
    pub light_before: ScenarioResult,
    /// The light load while the sweep ran.
    pub light_during: ScenarioResult,
}

/// Runs the sweep scenario against LOMS (through `channels`) and its database at `database_url`.
pub async fn run(
    channels: &Channels,
    database_url: &str,
    skus: SkuRange,
    spec: SweepSpec,
    seed: u64,
) -> anyhow::Result<SweepResult> {
    let db = Database::connect(database_url).await?;

    // Orders other scenarios left awaiting payment would otherwise be counted: let the sweep take them first.
    make_due(&db, 0, i64::MAX).await?;
    let (_, drained) = wait_swept(&db, 0, i64::MAX, spec.limit).await?;
    anyhow::ensure!(drained == 0, "{drained} earlier unpaid orders were not swept within {:?}", spec.limit);

    tracing::info!(orders = spec.orders, items = spec.items, "sweep: creating the unpaid backlog");
    let backlog = Arc::new(OrderFlow::new(channels.clone(), skus, spec.items, AfterCreate::Leave, seed));
    let create_spec = LoadSpec {
        clients: spec.create_clients,
        warmup: Duration::ZERO,
        duration: spec.limit,
        max_iterations: spec.orders,
        rate: None,
    };
    let create = runner::run("sweep-backlog", backlog, create_spec, CancellationToken::new()).await?;
    let (first, last, due) = backlog_range(&db).await?;

    let light = Arc::new(OrderFlow::new(channels.clone(), skus, 3, AfterCreate::Pay, seed ^ 0x5eed));
    let light_spec = |duration| LoadSpec {
        clients: spec.light_clients,
        warmup: Duration::ZERO,
        duration,
        max_iterations: u64::MAX,
        rate: Some(spec.light_rate),
    };
    tracing::info!(due, "sweep: light load before the orders fall due");
    let light_before =
        runner::run("sweep-light-before", light.clone(), light_spec(spec.baseline), CancellationToken::new()).await?;

    let stop = CancellationToken::new();
    let during = tokio::spawn(runner::run("sweep-light-during", light, light_spec(spec.limit), stop.clone()));
    let moving = Instant::now();
    let made_due = make_due(&db, first, last).await?;
    let make_due_secs = moving.elapsed().as_secs_f64();
    tracing::info!(made_due, "sweep: orders fell due; waiting for the sweep");
    let swept = wait_swept(&db, first, last, spec.limit).await;
    // Stop the light load whatever the outcome, so that no client outlives the scenario.
    stop.cancel();
    let light_during = during.await.context("the light load task")??;
    let (sweep, left_awaiting) = swept?;

    Ok(SweepResult {
        orders_due: made_due,
        items: spec.items,
        create,
        make_due_secs,
        sweep_secs: sweep.as_secs_f64(),
        completed: left_awaiting == 0,
        left_awaiting,
        cancelled_per_sec: crate::stats::throughput(made_due - left_awaiting.min(made_due), sweep),
        light_before,
        light_during,
    })
}

/// LOMS's database, in its backend's dialect.
#[derive(Debug)]
enum Database {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

impl Database {
    async fn connect(url: &str) -> anyhow::Result<Self> {
        let context = || format!("connect to the LOMS database {url} (--loms-database-url)");
        if url.starts_with("sqlite:") {
            // LOMS holds the one writer connection most of the time: wait for it rather than fail.
            let options = url.parse::<SqliteConnectOptions>()?.busy_timeout(Duration::from_secs(30));
            let pool = SqlitePoolOptions::new().max_connections(1).connect_with(options).await.with_context(context)?;
            Ok(Self::Sqlite(pool))
        } else {
            Ok(Self::Postgres(PgPoolOptions::new().max_connections(2).connect(url).await.with_context(context)?))
        }
    }
}

/// Moves the payment deadline of every order in `first..=last` still awaiting payment to now; returns how many.
async fn make_due(db: &Database, first: i64, last: i64) -> anyhow::Result<u64> {
    // `$n` placeholders work in both dialects.
    let sql = "update orders set payment_deadline = $1 where status = $2 and id between $3 and $4";
    let now = chrono::Utc::now();
    let affected = match db {
        Database::Postgres(pool) => sqlx::query(sql)
            .bind(now)
            .bind(AWAITING_PAYMENT)
            .bind(first)
            .bind(last)
            .execute(pool)
            .await?
            .rows_affected(),
        // LOMS on SQLite keeps deadlines as Unix milliseconds.
        Database::Sqlite(pool) => sqlx::query(sql)
            .bind(now.timestamp_millis())
            .bind(AWAITING_PAYMENT)
            .bind(first)
            .bind(last)
            .execute(pool)
            .await?
            .rows_affected(),
    };
    Ok(affected)
}

/// The id range and count of the orders awaiting payment: the backlog just created.
async fn backlog_range(db: &Database) -> anyhow::Result<(i64, i64, i64)> {
    let sql = "select min(id), max(id), count(*) from orders where status = $1";
    let (first, last, count): (Option<i64>, Option<i64>, i64) = match db {
        Database::Postgres(pool) => sqlx::query_as(sql).bind(AWAITING_PAYMENT).fetch_one(pool).await,
        Database::Sqlite(pool) => sqlx::query_as(sql).bind(AWAITING_PAYMENT).fetch_one(pool).await,
    }
    .context("find the unpaid backlog")?;
    Ok((first.unwrap_or(0), last.unwrap_or(-1), count))
}

/// Orders in `first..=last` still awaiting payment.
async fn awaiting(db: &Database, first: i64, last: i64) -> anyhow::Result<u64> {
    let sql = "select count(*) from orders where status = $1 and id between $2 and $3";
    let left: i64 = match db {
        Database::Postgres(pool) => {
            sqlx::query_scalar(sql).bind(AWAITING_PAYMENT).bind(first).bind(last).fetch_one(pool).await
        }
        Database::Sqlite(pool) => {
            sqlx::query_scalar(sql).bind(AWAITING_PAYMENT).bind(first).bind(last).fetch_one(pool).await
        }
    }
    .context("count the unpaid orders")?;
    Ok(u64::try_from(left).unwrap_or(0))
}

/// Polls until no order in `first..=last` awaits payment, for at most `limit`. Returns the time it took and how
/// many were left (0 unless the limit was reached).
async fn wait_swept(db: &Database, first: i64, last: i64, limit: Duration) -> anyhow::Result<(Duration, u64)> {
    let started = Instant::now();
    loop {
        let left = awaiting(db, first, last).await?;
        if left == 0 || started.elapsed() >= limit {
            return Ok((started.elapsed(), left));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
