//! Connection pools that can be watched: every service opens its pools through [`Pool`], which counts the callers
//! waiting for a connection and times their wait, and reports the pool's connections every few seconds.
//!
//! sqlx keeps no count of its waiters, so the count is taken here, around `acquire`. Every connection a service
//! uses goes through [`Pool::acquire`] or [`Pool::begin`]: the wrapper is not an executor itself, so a query cannot
//! borrow a connection past the count.

use std::{borrow::Cow, time::Duration};

use metrics::{Gauge, Histogram};
use sqlx::{Database, Transaction, pool::PoolConnection};
use tokio::time::Instant;

/// Connections a pool holds, by `pool` and `state` (`idle`, `in_use`).
pub const POOL_CONNECTIONS: &str = "db_pool_connections";
/// Most connections a pool may open, by `pool`.
pub const POOL_MAX_CONNECTIONS: &str = "db_pool_max_connections";
/// Callers waiting for a connection of a pool right now, by `pool`.
pub const POOL_WAITERS: &str = "db_pool_waiters";
/// How long callers waited for a connection, by `pool`.
pub const POOL_ACQUIRE_WAIT: &str = "db_pool_acquire_wait_seconds";

/// How often the connection gauges are refreshed.
const POOL_METRICS_EVERY: Duration = Duration::from_secs(5);

/// Registers the help texts of the pool series.
pub fn describe_metrics() {
    metrics::describe_gauge!(POOL_CONNECTIONS, "Database connections of a pool, idle or in use.");
    metrics::describe_gauge!(POOL_MAX_CONNECTIONS, "Most connections a database pool may open.");
    metrics::describe_gauge!(POOL_WAITERS, "Callers waiting for a connection of a database pool.");
    metrics::describe_histogram!(
        POOL_ACQUIRE_WAIT,
        metrics::Unit::Seconds,
        "Time callers waited for a connection of a database pool."
    );
}

/// A PostgreSQL pool, watched.
pub type PgPool = Pool<sqlx::Postgres>;
/// A SQLite pool, watched.
pub type SqlitePool = Pool<sqlx::Sqlite>;

/// A sqlx pool whose waiters are counted under the `pool` label `name`.
#[derive(Debug)]
pub struct Pool<DB: Database> {
    pool: sqlx::Pool<DB>,
    series: PoolSeries,
}

// By hand: a derived `Clone` would ask the database type itself (`Postgres`, `Sqlite`) to be `Clone`.
impl<DB: Database> Clone for Pool<DB> {
    fn clone(&self) -> Self {
        Self { pool: self.pool.clone(), series: self.series.clone() }
    }
}

impl<DB: Database> Pool<DB> {
    /// Watches `pool` under the label `name`. The series are registered with the recorder installed now, so a
    /// process opens its pools after binding its metrics endpoint.
    pub fn new(pool: sqlx::Pool<DB>, name: String) -> Self {
        let watched = pool.clone();
        let max = watched.options().get_max_connections() as usize;
        let series = PoolSeries::new(name, max, move || {
            (!watched.is_closed()).then(|| (watched.size() as usize, watched.num_idle()))
        });
        Self { pool, series }
    }

    /// A connection, counted as a waiter and timed until it is handed over, the pool gives up (its acquire
    /// timeout), or the caller does (its future dropped by a deadline).
    pub async fn acquire(&self) -> Result<PoolConnection<DB>, sqlx::Error> {
        let _waiting = self.series.waiting();
        self.pool.acquire().await
    }

    /// A transaction on a connection of the pool (`BEGIN`).
    pub async fn begin(&self) -> Result<Transaction<'static, DB>, sqlx::Error> {
        self.begin_transaction(None).await
    }

    /// A transaction opened with `statement` instead of `BEGIN` (SQLite's `begin immediate`).
    pub async fn begin_with(&self, statement: &'static str) -> Result<Transaction<'static, DB>, sqlx::Error> {
        self.begin_transaction(Some(Cow::Borrowed(statement))).await
    }

    async fn begin_transaction(
        &self,
        statement: Option<Cow<'static, str>>,
    ) -> Result<Transaction<'static, DB>, sqlx::Error> {
        // What `sqlx::Pool::begin` does, on a connection taken through the count.
        Transaction::begin(self.acquire().await?, statement).await
    }

    /// Whether a connection answers a ping.
    pub async fn ping(&self) -> bool {
        use sqlx::Connection as _;
        match self.acquire().await {
            Ok(mut connection) => connection.ping().await.is_ok(),
            Err(_) => false,
        }
    }

    /// Closes the pool: waits for the connections in use to come back, then closes them all.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// The series of one pool of any driver, under the `pool` label: its waiters and their waits (around every
/// checkout, [`PoolSeries::waiting`]), and its connections, refreshed every few seconds until it closes. sqlx's
/// pools get them through [`Pool`]; a pool of another driver (LOMS's pipelining write-batch connections) uses it
/// directly.
#[derive(Debug, Clone)]
pub struct PoolSeries {
    waiters: Gauge,
    acquire_wait: Histogram,
}

impl PoolSeries {
    /// The series of the pool `name` of at most `max` connections; `connections` says how many it holds and how
    /// many of them are idle, or `None` once it is closed.
    pub fn new(name: String, max: usize, connections: impl Fn() -> Option<(usize, usize)> + Send + 'static) -> Self {
        report_connections(name.clone(), max, connections);
        Self {
            waiters: metrics::gauge!(POOL_WAITERS, "pool" => name.clone()),
            acquire_wait: metrics::histogram!(POOL_ACQUIRE_WAIT, "pool" => name),
        }
    }

    /// Counts the caller as a waiter until the guard drops (its connection handed over, or its wait given up), and
    /// then records how long it waited.
    pub fn waiting(&self) -> Waiting<'_> {
        self.waiters.increment(1.0);
        Waiting { waiters: &self.waiters, acquire_wait: &self.acquire_wait, started: Instant::now() }
    }
}

/// One caller counted in the waiters gauge for as long as it lives, its wait recorded when it ends: so a caller
/// that gives up (its future dropped by a deadline) leaves the count, and its wait is timed too.
#[derive(Debug)]
pub struct Waiting<'a> {
    waiters: &'a Gauge,
    acquire_wait: &'a Histogram,
    started: Instant,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.waiters.decrement(1.0);
        self.acquire_wait.record(self.started.elapsed());
    }
}

/// Refreshes a pool's connection gauges every few seconds until `connections` says it closed. `name` is the
/// `pool` label.
fn report_connections(name: String, max: usize, connections: impl Fn() -> Option<(usize, usize)> + Send + 'static) {
    metrics::gauge!(POOL_MAX_CONNECTIONS, "pool" => name.clone()).set(max as f64);
    let idle = metrics::gauge!(POOL_CONNECTIONS, "pool" => name.clone(), "state" => "idle");
    let in_use = metrics::gauge!(POOL_CONNECTIONS, "pool" => name, "state" => "in_use");
    tokio::spawn(async move {
        while let Some((size, free)) = connections() {
            idle.set(free as f64);
            in_use.set(size.saturating_sub(free) as f64);
            tokio::time::sleep(POOL_METRICS_EVERY).await;
        }
        idle.set(0.0);
        in_use.set(0.0);
    });
}

#[cfg(test)]
mod tests {
    use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
    use sqlx::sqlite::SqlitePoolOptions;

    use super::*;

    /// The value of the series `name` in the exposition `text`, if it is there.
    fn sample(text: &str, name: &str) -> Option<f64> {
        text.lines().find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
    }

    /// A watched pool of one connection, labelled `one`, with the exposition of its own recorder.
    async fn pool_of_one() -> (SqlitePool, PrometheusHandle) {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let sqlite = SqlitePoolOptions::new().max_connections(1).connect("sqlite::memory:").await.unwrap();
        (metrics::with_local_recorder(&recorder, || Pool::new(sqlite, "one".to_owned())), handle)
    }

    #[tokio::test]
    async fn a_caller_waiting_for_the_last_connection_is_counted_until_it_gets_it() {
        let (pool, handle) = pool_of_one().await;
        let waiters = r#"db_pool_waiters{pool="one"}"#;
        let waits = r#"db_pool_acquire_wait_seconds_count{pool="one"}"#;

        let held = pool.acquire().await.unwrap();
        assert_eq!(sample(&handle.render(), waiters), Some(0.0), "a free connection is no wait");
        let second = tokio::spawn({
            let pool = pool.clone();
            async move { pool.acquire().await.map(drop) }
        });
        let mut counted = false;
        for _ in 0..500 {
            if sample(&handle.render(), waiters) == Some(1.0) {
                counted = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(counted, "the second caller waits for the only connection:\n{}", handle.render());

        drop(held);
        second.await.unwrap().unwrap();
        let text = handle.render();
        assert_eq!(sample(&text, waiters), Some(0.0), "{text}");
        assert_eq!(sample(&text, waits), Some(2.0), "both acquisitions are timed: {text}");
    }

    #[tokio::test]
    async fn a_caller_that_gives_up_waiting_leaves_the_count() {
        let (pool, handle) = pool_of_one().await;

        let _held = pool.acquire().await.unwrap();
        let gave_up = tokio::time::timeout(Duration::from_millis(50), pool.acquire()).await;

        assert!(gave_up.is_err(), "the only connection is held");
        let text = handle.render();
        assert_eq!(sample(&text, r#"db_pool_waiters{pool="one"}"#), Some(0.0), "{text}");
        assert_eq!(
            sample(&text, r#"db_pool_acquire_wait_seconds_count{pool="one"}"#),
            Some(2.0),
            "the wait given up is timed: {text}"
        );
    }
}
