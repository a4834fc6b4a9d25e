//! The processed-events table: which sinks have been given which events.
//!
//! A sink call happens inside a claim: a transaction that has inserted the `(event id, sink)` row and commits it
//! only after the sink took the notification. A second consumer handling the same event at the same time (the
//! old and the new owner of a partition during a rebalance) waits on that row's key, then sees it taken and
//! skips; if the first one fails and rolls back, the second one sends. So concurrency never doubles a
//! notification; only a crash between a sink's success and the commit can (the at-least-once window every
//! external side effect has), and sinks that call out pass the event id on for the receiver to close it.

use std::time::Duration;

use sqlx::{PgPool, Postgres, Transaction, migrate::MigrateDatabase};
use uuid::Uuid;

/// The de-duplication store.
#[derive(Debug, Clone)]
pub struct ProcessedEvents {
    pool: PgPool,
}

/// An open claim on `(event id, sink)`; commit it once the sink took the notification, drop it otherwise.
#[derive(Debug)]
pub struct Claim {
    tx: Transaction<'static, Postgres>,
}

impl Claim {
    /// Makes the delivery permanent.
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        self.tx.commit().await
    }
}

impl ProcessedEvents {
    /// Connects to the database (creating it if needed) and runs the migrations.
    pub async fn connect(url: &str, max_connections: u32) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        if !Postgres::database_exists(url).await.context("check that the notifications database exists")? {
            // Two replicas starting together may both try: the loser's "already exists" is fine.
            let created = Postgres::create_database(url).await;
            if created.is_err() && !Postgres::database_exists(url).await.unwrap_or(false) {
                created.context("create the notifications database")?;
            }
        }
        let pool = minizon_common::db::connect_postgres(url, max_connections)
            .await
            .context("connect to the notifications database")?;
        sqlx::migrate!("../migrations/notifications/postgres")
            .run(&pool)
            .await
            .context("migrate the notifications database")?;
        Ok(Self { pool })
    }

    /// The pool, for health checks.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Claims the delivery of `event_id` to `sink`. `None` when it was delivered already.
    pub async fn claim(&self, event_id: Uuid, sink: &str, order_id: i64) -> Result<Option<Claim>, sqlx::Error> {
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
        Ok(Some(Claim { tx }))
    }

    /// Records a delivery outside a claim: for when the claim's commit was lost after the sink had succeeded.
    pub async fn record(&self, event_id: Uuid, sink: &str, order_id: i64) -> Result<(), sqlx::Error> {
        sqlx::query(
            "insert into processed_events (event_id, sink, order_id) values ($1, $2, $3) on conflict do nothing",
        )
        .bind(event_id)
        .bind(sink)
        .bind(order_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Forgets deliveries older than `retention`, in bounded chunks so no statement holds locks for long.
    pub async fn prune(&self, retention: Duration) -> Result<u64, sqlx::Error> {
        let mut total = 0;
        loop {
            let deleted = sqlx::query(
                "delete from processed_events where ctid in (
                     select ctid from processed_events
                     where processed_at < now() - make_interval(secs => $1)
                     limit 10000)",
            )
            .bind(retention.as_secs_f64())
            .execute(&self.pool)
            .await?
            .rows_affected();
            total += deleted;
            if deleted < 10000 {
                return Ok(total);
            }
        }
    }
}
