//! The processed-events table on PostgreSQL (the production topology: any number of replicas on one database).
//!
//! A claim is a transaction that inserted the `(event id, sink)` row with `on conflict do nothing`: a second
//! transaction inserting the same key blocks on the first one's uncommitted row, then either finds it committed
//! (nothing inserted: skip) or rolled back (its own insert goes through: send).

use std::time::Duration;

use super::Handled;

use anyhow::Context as _;
use minizon_common::db::PgPool;
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

/// Rows deleted per pruning statement, so that no statement holds its locks for long.
const PRUNE_CHUNK: u32 = 10_000;

/// One chunk of pruning per table: deliveries, then handled events.
const PRUNE_STATEMENTS: [&str; 2] = [
    "delete from processed_events where ctid in (
         select ctid from processed_events where processed_at < now() - make_interval(secs => $1) limit $2)",
    "delete from handled_events where ctid in (
         select ctid from handled_events where handled_at < now() - make_interval(secs => $1) limit $2)",
];

/// The de-duplication store on PostgreSQL.
#[derive(Debug, Clone)]
pub struct PgProcessedEvents {
    pool: PgPool,
}

impl PgProcessedEvents {
    /// Connects to the database (creating it if needed) and runs the migrations.
    pub async fn connect(url: &str, max_connections: u32) -> anyhow::Result<Self> {
        minizon_common::db::ensure_postgres_database(url).await.context("create the notifications database")?;
        let pool = minizon_common::db::connect_postgres(url, max_connections)
            .await
            .context("connect to the notifications database")?;
        sqlx::migrate!("../migrations/notifications/postgres")
            .run(&mut pool.acquire().await?)
            .await
            .context("migrate the notifications database")?;
        Ok(Self { pool })
    }

    /// The pool, for health checks and shutdown.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Opens a claim on `(event_id, sink)`, or `None` when the delivery is recorded already.
    pub async fn claim(
        &self,
        event_id: Uuid,
        sink: &str,
        order_id: i64,
    ) -> Result<Option<Transaction<'static, Postgres>>, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query(
            "insert into processed_events (event_id, sink, order_id) values ($1, $2, $3) on conflict do nothing",
        )
        .bind(event_id)
        .bind(sink)
        .bind(order_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 0 {
            tx.rollback().await?;
            return Ok(None);
        }
        Ok(Some(tx))
    }

    /// Records a delivery outside a claim.
    pub async fn record(&self, event_id: Uuid, sink: &str, order_id: i64) -> Result<(), sqlx::Error> {
        sqlx::query(
            "insert into processed_events (event_id, sink, order_id) values ($1, $2, $3) on conflict do nothing",
        )
        .bind(event_id)
        .bind(sink)
        .bind(order_id)
        .execute(&mut *self.pool.acquire().await?)
        .await?;
        Ok(())
    }

    /// Records that the event needs nothing more.
    pub async fn mark_handled(&self, event_id: Uuid, order_id: i64, outcome: Handled) -> Result<(), sqlx::Error> {
        sqlx::query(
            "insert into handled_events (event_id, order_id, outcome) values ($1, $2, $3) on conflict do nothing",
        )
        .bind(event_id)
        .bind(order_id)
        .bind(outcome.as_str())
        .execute(&mut *self.pool.acquire().await?)
        .await?;
        Ok(())
    }

    /// Which of `event_ids` are recorded as handled.
    pub async fn handled_among(&self, event_ids: &[Uuid]) -> Result<Vec<Uuid>, sqlx::Error> {
        sqlx::query_scalar("select event_id from handled_events where event_id = any($1)")
            .bind(event_ids)
            .fetch_all(&mut *self.pool.acquire().await?)
            .await
    }

    /// Forgets deliveries and handled events older than `retention`, in chunks of 10 000 rows.
    pub async fn prune(&self, retention: Duration) -> Result<u64, sqlx::Error> {
        let mut total = 0;
        for delete in PRUNE_STATEMENTS {
            total += self.prune_table(delete, retention).await?;
        }
        Ok(total)
    }

    async fn prune_table(&self, delete: &'static str, retention: Duration) -> Result<u64, sqlx::Error> {
        let mut total = 0;
        loop {
            let deleted = sqlx::query(delete)
                .bind(retention.as_secs_f64())
                .bind(i64::from(PRUNE_CHUNK))
                .execute(&mut *self.pool.acquire().await?)
                .await?
                .rows_affected();
            total += deleted;
            if deleted < u64::from(PRUNE_CHUNK) {
                return Ok(total);
            }
        }
    }
}
