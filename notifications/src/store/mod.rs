//! The processed-events table: which sinks have been given which events.
//!
//! A sink call happens inside a claim: a transaction that has inserted the `(event id, sink)` row and commits it
//! only after the sink took the notification. A second consumer handling the same event at the same time (the
//! old and the new owner of a partition during a rebalance) waits for that transaction, then sees the row and
//! skips; if the first one fails and rolls back, the second one sends. So concurrency never doubles a
//! notification; only a crash between a sink's success and the commit can (the at-least-once window every
//! external side effect has), and sinks that call out pass the event id on for the receiver to close it.
//!
//! Once every channel an event is routed to has it (or it went to the dead-letter topic), the event is recorded
//! as handled (`handled_events`): what the embedded mode compares LOMS's outbox with at start-up.
//!
//! Two backends keep that promise, chosen by the database URL at start: PostgreSQL (`postgres://…`, the
//! production topology, where the wait is on the row's key) and SQLite (`sqlite://…` or `sqlite::memory:`, the
//! embedded mode, where the wait is on the one write transaction SQLite runs at a time).

pub mod postgres;
pub mod sqlite;

use std::{collections::HashSet, time::Duration};

use minizon_common::db::Backend;
pub use postgres::PgProcessedEvents;
pub use sqlite::SqliteProcessedEvents;
use sqlx::{Postgres, Sqlite, Transaction};
use uuid::Uuid;

/// The de-duplication store, on the backend the database URL names.
#[derive(Debug, Clone)]
pub enum ProcessedEvents {
    /// PostgreSQL: any number of replicas on one database.
    Postgres(PgProcessedEvents),
    /// An SQLite file (or `sqlite::memory:`): the embedded mode, one process per file.
    Sqlite(SqliteProcessedEvents),
}

/// How an event was finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handled {
    /// Every channel it is routed to has it.
    Notified,
    /// It is on the dead-letter topic, with the reason.
    DeadLettered,
}

impl Handled {
    /// The value stored in `handled_events.outcome`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Notified => "notified",
            Self::DeadLettered => "dead-lettered",
        }
    }
}

/// Event ids per lookup statement in [`ProcessedEvents::handled_among`].
const LOOKUP_CHUNK: usize = 10_000;

/// An open claim on `(event id, sink)`; commit it once the sink took the notification, drop it otherwise (the
/// row goes with the rolled-back transaction, so a later delivery of the event sends again).
#[derive(Debug)]
pub struct Claim(ClaimTx);

#[derive(Debug)]
enum ClaimTx {
    Postgres(Transaction<'static, Postgres>),
    Sqlite(Transaction<'static, Sqlite>),
}

impl Claim {
    /// Makes the delivery permanent.
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        match self.0 {
            ClaimTx::Postgres(tx) => tx.commit().await,
            ClaimTx::Sqlite(tx) => tx.commit().await,
        }
    }
}

impl ProcessedEvents {
    /// Opens the database `url` names (`postgres://…`, created if missing; `sqlite://…`, the file created if
    /// missing; or `sqlite::memory:`) and runs its migrations. On PostgreSQL at most `max_connections` are kept;
    /// on SQLite every operation is a write, so one writer connection does it all.
    pub async fn connect(url: &str, max_connections: u32) -> anyhow::Result<Self> {
        Ok(match Backend::of(url).map_err(anyhow::Error::msg)? {
            Backend::Postgres => Self::Postgres(PgProcessedEvents::connect(url, max_connections).await?),
            Backend::Sqlite => Self::Sqlite(SqliteProcessedEvents::connect(url).await?),
        })
    }

    /// Claims the delivery of `event_id` to `sink`. `None` when it was delivered already. Waits while another
    /// claim on the same `(event id, sink)` is open, and answers by its outcome.
    pub async fn claim(&self, event_id: Uuid, sink: &str, order_id: i64) -> Result<Option<Claim>, sqlx::Error> {
        Ok(match self {
            Self::Postgres(store) => store.claim(event_id, sink, order_id).await?.map(ClaimTx::Postgres),
            Self::Sqlite(store) => store.claim(event_id, sink, order_id).await?.map(ClaimTx::Sqlite),
        }
        .map(Claim))
    }

    /// Records a delivery outside a claim: for when the claim's commit was lost after the sink had succeeded.
    pub async fn record(&self, event_id: Uuid, sink: &str, order_id: i64) -> Result<(), sqlx::Error> {
        match self {
            Self::Postgres(store) => store.record(event_id, sink, order_id).await,
            Self::Sqlite(store) => store.record(event_id, sink, order_id).await,
        }
    }

    /// Records that the event needs nothing more (idempotent: a second record keeps the first).
    pub async fn mark_handled(&self, event_id: Uuid, order_id: i64, outcome: Handled) -> Result<(), sqlx::Error> {
        match self {
            Self::Postgres(store) => store.mark_handled(event_id, order_id, outcome).await,
            Self::Sqlite(store) => store.mark_handled(event_id, order_id, outcome).await,
        }
    }

    /// Which of `event_ids` are recorded as handled.
    pub async fn handled_among(&self, event_ids: &[Uuid]) -> Result<HashSet<Uuid>, sqlx::Error> {
        let mut handled = HashSet::new();
        for chunk in event_ids.chunks(LOOKUP_CHUNK) {
            let found = match self {
                Self::Postgres(store) => store.handled_among(chunk).await?,
                Self::Sqlite(store) => store.handled_among(chunk).await?,
            };
            handled.extend(found);
        }
        Ok(handled)
    }

    /// Forgets deliveries older than `retention`, in bounded chunks so no statement holds locks for long.
    /// Returns how many were forgotten.
    pub async fn prune(&self, retention: Duration) -> Result<u64, sqlx::Error> {
        match self {
            Self::Postgres(store) => store.prune(retention).await,
            Self::Sqlite(store) => store.prune(retention).await,
        }
    }

    /// Whether the database answers a trivial query (on SQLite, through the writer every claim needs, so it
    /// waits while a claim is open).
    pub async fn ping(&self) -> bool {
        match self {
            Self::Postgres(store) => store.pool().ping().await,
            Self::Sqlite(store) => store.pools().ping().await,
        }
    }

    /// Closes every connection (on SQLite this checkpoints the write-ahead log into the file).
    pub async fn close(&self) {
        match self {
            Self::Postgres(store) => store.pool().close().await,
            Self::Sqlite(store) => store.pools().close().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_sqlite_url_opens_the_sqlite_store_and_it_de_duplicates() {
        let store = ProcessedEvents::connect("sqlite::memory:", 4).await.unwrap();
        let event = Uuid::now_v7();

        store.claim(event, "log", 1).await.unwrap().expect("the first delivery sends").commit().await.unwrap();
        let duplicate = store.claim(event, "log", 1).await.unwrap();

        assert!(matches!(store, ProcessedEvents::Sqlite(_)));
        assert!(duplicate.is_none());
        assert!(store.ping().await);
        store.mark_handled(event, 1, Handled::Notified).await.unwrap();
        store.mark_handled(event, 1, Handled::DeadLettered).await.unwrap();
        let unknown = Uuid::now_v7();
        assert_eq!(store.handled_among(&[event, unknown]).await.unwrap(), HashSet::from([event]));
        assert_eq!(store.prune(Duration::from_secs(3600)).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn a_url_of_another_database_is_refused() {
        let refused = ProcessedEvents::connect("mysql://localhost/notifications", 4).await.unwrap_err();

        assert!(refused.to_string().contains("unsupported database URL"), "{refused}");
    }
}
