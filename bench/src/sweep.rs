//! The sweep at scale: many unpaid orders fall due at the same moment; how long until LOMS's unpaid-order sweep
//! has cancelled them all, and what happens meanwhile to the latency of a light purchase load.
//!
//! The orders are created through CreateOrder (a real backlog: orders, items, reservations, history, outbox)
//! with LOMS's normal payment timeout, and then made due all at once by one SQL statement that moves their
//! deadline to `now()`: a short `LOMS_PAYMENT_TIMEOUT` would make them fall due one by one while they are being
//! created, which measures the sweep keeping up with creation rather than clearing a backlog. Progress is read
//! from the database (count of those orders still awaiting payment), polled every 100 ms.
//!
//! Only PostgreSQL is implemented; an embedded SQLite backend needs the same two statements in its dialect.

use std::{sync::Arc, time::Duration};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use sqlx::{PgPool, postgres::PgPoolOptions};
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
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect(database_url)
        .await
        .context("connect to the LOMS database (--loms-database-url)")?;

    // Orders other scenarios left awaiting payment would otherwise be counted: let the sweep take them first.
    make_due(&pool, 0, i64::MAX).await?;
    let (_, drained) = wait_swept(&pool, 0, i64::MAX, spec.limit).await?;
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
    let (first, last, due) = backlog_range(&pool).await?;

    let light = Arc::new(OrderFlow::new(channels.clone(), skus, 3, AfterCreate::Pay, seed ^ 0x5eed));
    let light_spec = |duration| LoadSpec {
        clients: spec.light_clients,
        warmup: Duration::ZERO,
        duration,
        max_iterations: u64::MAX,
        rate: Some(spec.light_rate),
    };
    tracing::info!(due, "sweep: light load before the orders fall due");
    let light_before = runner::run("sweep-light-before", light.clone(), light_spec(spec.baseline), CancellationToken::new()).await?;

    let stop = CancellationToken::new();
    let during = tokio::spawn(runner::run("sweep-light-during", light, light_spec(spec.limit), stop.clone()));
    let moving = Instant::now();
    let made_due = make_due(&pool, first, last).await?;
    let make_due_secs = moving.elapsed().as_secs_f64();
    tracing::info!(made_due, "sweep: orders fell due; waiting for the sweep");
    let swept = wait_swept(&pool, first, last, spec.limit).await;
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

/// Moves the payment deadline of every order in `first..=last` still awaiting payment to now; returns how many.
async fn make_due(pool: &PgPool, first: i64, last: i64) -> anyhow::Result<u64> {
    let done = sqlx::query(
        "update orders set payment_deadline = now() where status = $1 and id between $2 and $3",
    )
    .bind(AWAITING_PAYMENT)
    .bind(first)
    .bind(last)
    .execute(pool)
    .await
    .context("move the payment deadlines")?;
    Ok(done.rows_affected())
}

/// The id range and count of the orders awaiting payment: the backlog just created.
async fn backlog_range(pool: &PgPool) -> anyhow::Result<(i64, i64, i64)> {
    let (first, last, count): (Option<i64>, Option<i64>, i64) =
        sqlx::query_as("select min(id), max(id), count(*) from orders where status = $1")
            .bind(AWAITING_PAYMENT)
            .fetch_one(pool)
            .await
            .context("find the unpaid backlog")?;
    Ok((first.unwrap_or(0), last.unwrap_or(-1), count))
}

/// Polls until no order in `first..=last` awaits payment, for at most `limit`. Returns the time it took and how
/// many were left (0 unless the limit was reached).
async fn wait_swept(pool: &PgPool, first: i64, last: i64, limit: Duration) -> anyhow::Result<(Duration, u64)> {
    let started = Instant::now();
    loop {
        let left: i64 = sqlx::query_scalar("select count(*) from orders where status = $1 and id between $2 and $3")
            .bind(AWAITING_PAYMENT)
            .bind(first)
            .bind(last)
            .fetch_one(pool)
            .await
            .context("count the unpaid orders")?;
        let left = u64::try_from(left).unwrap_or(0);
        if left == 0 || started.elapsed() >= limit {
            return Ok((started.elapsed(), left));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
