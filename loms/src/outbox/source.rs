//! The relay's side of the database: claim a round of events, mark what the broker acknowledged, measure the lag,
//! prune, and wait for new events — on PostgreSQL or on SQLite.
//!
//! PostgreSQL may have several LOMS replicas relaying at once: a round's rows stay locked (`for update skip
//! locked`) in a transaction that lasts until they are marked. SQLite is the embedded mode, one process with one
//! relay: a round reads its rows without holding the writer (so requests never wait for the broker) and marks
//! them in a short write transaction.
//!
//! On both, the store wakes its own process's relay after each commit that wrote events (`written`). Every
//! replica runs a relay, so each one's commits are published promptly by its own relay; the poll picks up events
//! of processes that run none. (A database-side `NOTIFY` would wake every relay, but it takes a global lock at
//! every commit and serialised all order transactions under load.)

use std::{sync::Arc, time::Duration};

use chrono::Utc;
use minizon_common::db::PgPool;
use minizon_common::db::SqlitePools;
use sqlx::{Postgres, Transaction};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Rows deleted per statement when pruning, so that no statement holds locks for long.
const PRUNE_CHUNK: i64 = 10_000;

/// The earliest unsent event of each order, in id order, with a backend's event id cast and tail. The
/// `not exists` is what keeps the order per order: an order's second event is not a candidate while its first one
/// is unsent (on PostgreSQL, even while another relay holds the first one) — or parked: the later events of an
/// order whose event was set aside wait behind it until it is republished. Parked events are not candidates.
macro_rules! candidates {
    ($event_id:literal, $tail:literal) => {
        concat!(
            "select o.id, ",
            $event_id,
            " as event_id, o.order_id, o.payload, o.traceparent
             from outbox o
             where o.sent_at is null and o.parked_at is null
               and not exists (
                   select 1 from outbox earlier
                   where earlier.order_id = o.order_id and earlier.sent_at is null and earlier.id < o.id)
             order by o.id",
            $tail
        )
    };
}

/// Claims a round on PostgreSQL; the rows stay locked until the round's transaction ends.
const POSTGRES_CLAIM: &str = candidates!("o.event_id::text", " limit $1 for update of o skip locked");

/// Reads a round on SQLite (one relay per database: nothing to lock against).
const SQLITE_CLAIM: &str = candidates!("o.event_id", " limit ?1");

/// One claimed event.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct OutboxRow {
    pub(crate) id: i64,
    pub(crate) event_id: String,
    pub(crate) order_id: i64,
    pub(crate) payload: String,
    pub(crate) traceparent: Option<String>,
}

/// How far behind the relay is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxLag {
    /// Events written but not yet acknowledged by the broker (parked ones not included).
    pub unsent: i64,
    /// Age of the oldest of them; `None` when there is none.
    pub oldest_unsent_age: Option<Duration>,
    /// Events set aside because the broker refuses them for good, waiting for `loms outbox republish`.
    pub parked: i64,
}

/// An event the broker refused for good, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Parked {
    pub(crate) id: i64,
    pub(crate) reason: String,
}

/// Which parked events `republish` returns to the relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Republish {
    /// The one with this event id.
    Event(uuid::Uuid),
    /// Every parked event.
    All,
}

/// The database the outbox lives in.
#[derive(Debug, Clone)]
pub enum OutboxSource {
    /// Any number of relays (LOMS replicas) on one database; `written` is signalled by this process's store after
    /// every commit that wrote events.
    Postgres { pool: PgPool, written: Arc<Notify> },
    /// One relay; `written` as above.
    Sqlite { pools: SqlitePools, written: Arc<Notify> },
}

/// A claimed round, until it is finished.
#[derive(Debug)]
pub(crate) struct Claim {
    pub(crate) rows: Vec<OutboxRow>,
    lock: Option<Transaction<'static, Postgres>>,
}

impl OutboxSource {
    /// The outbox of the (already migrated) LOMS database `url` names, for a one-off process such as
    /// `loms outbox republish`; its relay, if any, runs elsewhere.
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        use minizon_common::db::Backend;
        Ok(match Backend::of(url).map_err(anyhow::Error::msg)? {
            Backend::Postgres => Self::Postgres {
                pool: minizon_common::db::connect_postgres(url, 1).await.context("connect to the LOMS database")?,
                written: Arc::default(),
            },
            Backend::Sqlite => Self::Sqlite {
                pools: minizon_common::db::connect_sqlite(url, 1).await.context("open the LOMS database")?,
                written: Arc::default(),
            },
        })
    }

    /// Claims up to `batch` events (each order's earliest unsent one).
    pub(crate) async fn claim(&self, batch: u32) -> Result<Claim, sqlx::Error> {
        match self {
            Self::Postgres { pool, .. } => {
                let mut tx = pool.begin().await?;
                let rows = sqlx::query_as(POSTGRES_CLAIM).bind(i64::from(batch)).fetch_all(&mut *tx).await?;
                Ok(Claim { rows, lock: Some(tx) })
            }
            Self::Sqlite { pools, .. } => {
                let rows = sqlx::query_as(SQLITE_CLAIM)
                    .bind(i64::from(batch))
                    .fetch_all(&mut *pools.reader.acquire().await?)
                    .await?;
                Ok(Claim { rows, lock: None })
            }
        }
    }

    /// Marks `acknowledged` sent and sets `parked` aside with their reasons (when `mark`; otherwise releases the
    /// claim untouched — only the crash test hook wants that) and ends the claim.
    pub(crate) async fn finish(
        &self,
        claim: Claim,
        acknowledged: &[i64],
        parked: &[Parked],
        mark: bool,
    ) -> Result<(), sqlx::Error> {
        let nothing = acknowledged.is_empty() && parked.is_empty();
        match (self, claim.lock) {
            (Self::Postgres { .. }, Some(mut tx)) => {
                if mark && !acknowledged.is_empty() {
                    sqlx::query("update outbox set sent_at = now() where id = any($1)")
                        .bind(acknowledged)
                        .execute(&mut *tx)
                        .await?;
                }
                if mark && !parked.is_empty() {
                    let ids: Vec<i64> = parked.iter().map(|p| p.id).collect();
                    let reasons: Vec<&str> = parked.iter().map(|p| p.reason.as_str()).collect();
                    sqlx::query(
                        "update outbox set parked_at = now(), park_reason = p.reason
                         from unnest($1::bigint[], $2::text[]) as p(id, reason) where outbox.id = p.id",
                    )
                    .bind(&ids)
                    .bind(&reasons)
                    .execute(&mut *tx)
                    .await?;
                }
                if mark { tx.commit().await } else { tx.rollback().await }
            }
            (Self::Sqlite { pools, .. }, _) if mark && !nothing => {
                let now = Utc::now().timestamp_millis();
                let ids = serde_json::to_string(acknowledged).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
                let mut tx = pools.write().await?;
                sqlx::query("update outbox set sent_at = ?1 where id in (select value from json_each(?2))")
                    .bind(now)
                    .bind(ids)
                    .execute(&mut *tx)
                    .await?;
                // Rare (a broken row), so one statement each.
                for row in parked {
                    sqlx::query("update outbox set parked_at = ?1, park_reason = ?2 where id = ?3")
                        .bind(now)
                        .bind(&row.reason)
                        .bind(row.id)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await
            }
            _ => Ok(()),
        }
    }

    /// Returns parked events to the relay (their later events follow them); how many.
    pub async fn republish(&self, which: &Republish) -> Result<u64, sqlx::Error> {
        let done = match (self, which) {
            (Self::Postgres { pool, .. }, Republish::Event(event_id)) => sqlx::query(
                "update outbox set parked_at = null, park_reason = null where event_id = $1 and parked_at is not null",
            )
            .bind(event_id)
            .execute(&mut *pool.acquire().await?)
            .await?
            .rows_affected(),
            (Self::Postgres { pool, .. }, Republish::All) => {
                sqlx::query("update outbox set parked_at = null, park_reason = null where parked_at is not null")
                    .execute(&mut *pool.acquire().await?)
                    .await?
                    .rows_affected()
            }
            (Self::Sqlite { pools, .. }, which) => {
                let mut tx = pools.write().await?;
                let done = match which {
                    Republish::Event(event_id) => sqlx::query(
                        "update outbox set parked_at = null, park_reason = null where event_id = ?1 and parked_at is not null",
                    )
                    .bind(event_id.to_string())
                    .execute(&mut *tx)
                    .await?,
                    Republish::All => {
                        sqlx::query("update outbox set parked_at = null, park_reason = null where parked_at is not null")
                            .execute(&mut *tx)
                            .await?
                    }
                };
                tx.commit().await?;
                done.rows_affected()
            }
        };
        self.wake();
        Ok(done)
    }

    /// Wakes this process's relay (a republish from another process is seen at the next poll).
    fn wake(&self) {
        let (Self::Postgres { written, .. } | Self::Sqlite { written, .. }) = self;
        written.notify_one();
    }

    /// Measures the outbox lag now.
    pub async fn lag(&self) -> Result<OutboxLag, sqlx::Error> {
        let (unsent, age, parked) = match self {
            Self::Postgres { pool, .. } => {
                let (unsent, age, parked): (i64, Option<f64>, i64) = sqlx::query_as(
                    "select count(*) filter (where parked_at is null),
                            extract(epoch from now() - min(created_at) filter (where parked_at is null))::float8,
                            count(*) filter (where parked_at is not null)
                     from outbox where sent_at is null",
                )
                .fetch_one(&mut *pool.acquire().await?)
                .await?;
                (unsent, age, parked)
            }
            Self::Sqlite { pools, .. } => {
                let (unsent, oldest, parked): (i64, Option<i64>, i64) = sqlx::query_as(
                    "select count(*) filter (where parked_at is null),
                            min(created_at) filter (where parked_at is null),
                            count(*) filter (where parked_at is not null)
                     from outbox where sent_at is null",
                )
                .fetch_one(&mut *pools.reader.acquire().await?)
                .await?;
                (unsent, oldest.map(|at| (Utc::now().timestamp_millis() - at) as f64 / 1000.0), parked)
            }
        };
        let oldest_unsent_age = age.map(|seconds| Duration::try_from_secs_f64(seconds.max(0.0)).unwrap_or_default());
        Ok(OutboxLag { unsent, oldest_unsent_age, parked })
    }

    /// Deletes sent rows older than `retention`, chunk by chunk.
    pub(crate) async fn prune(&self, retention: Duration) -> Result<u64, sqlx::Error> {
        let mut total = 0;
        loop {
            let deleted = match self {
                Self::Postgres { pool, .. } => sqlx::query(
                    "delete from outbox where id in (
                         select id from outbox where sent_at < now() - make_interval(secs => $1) order by id limit $2)",
                )
                .bind(retention.as_secs_f64())
                .bind(PRUNE_CHUNK)
                .execute(&mut *pool.acquire().await?)
                .await?
                .rows_affected(),
                Self::Sqlite { pools, .. } => {
                    let cutoff =
                        Utc::now().timestamp_millis() - i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
                    let mut tx = pools.write().await?;
                    let deleted = sqlx::query(
                        "delete from outbox where id in (
                             select id from outbox where sent_at < ?1 order by id limit ?2)",
                    )
                    .bind(cutoff)
                    .bind(PRUNE_CHUNK)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                    tx.commit().await?;
                    deleted
                }
            };
            total += deleted;
            if deleted < PRUNE_CHUNK.unsigned_abs() {
                return Ok(total);
            }
        }
    }

    /// Waits for a commit of this process that wrote events, the poll interval, or shutdown, whichever comes
    /// first. A commit signalled while a round ran left a permit, so it is never missed.
    pub(crate) async fn wait(&self, poll_interval: Duration, stop: &CancellationToken) {
        let (Self::Postgres { written, .. } | Self::Sqlite { written, .. }) = self;
        tokio::select! {
            () = stop.cancelled() => {}
            () = tokio::time::sleep(poll_interval) => {}
            () = written.notified() => {}
        }
    }
}
