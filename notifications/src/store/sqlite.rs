//! The processed-events table on SQLite (the embedded mode). Runtime-checked queries, like the PostgreSQL backend.
//!
//! Concurrency design: every operation is a write, run in a `begin immediate` transaction on the single writer
//! connection of [`SqlitePools`]. A claim keeps its transaction open — and with it that connection and the
//! database's write lock — through the whole sink call. So a second claim of the same event waits: in this
//! process for the writer connection, in another process on the same file for the write lock (up to the busy
//! timeout; then it fails, and the worker retries). It begins only once the first claim committed or rolled back,
//! and `immediate` starts its snapshot at that point, so it sees the committed row (skip) or no row (send) — the
//! guarantee PostgreSQL gives by making the second insert wait on the first one's key. Claims of different
//! events are serialised as well; that costs nothing here, as the worker handles one record and one sink at a
//! time, and pruning only ever waits its turn between chunks. The one rule for callers: never open a claim while
//! holding another, which would wait for itself (until the pool's acquire timeout fails it).

use std::time::Duration;

use anyhow::Context as _;
use chrono::Utc;
use minizon_common::db::SqlitePools;
use sqlx::{Sqlite, Transaction};
use uuid::Uuid;

use super::Handled;

type Tx = Transaction<'static, Sqlite>;

/// Rows deleted per pruning transaction, so that a pending claim never waits behind a long delete.
const PRUNE_CHUNK: u32 = 10_000;

/// One chunk of pruning per table: deliveries, then handled events.
const PRUNE_STATEMENTS: [&str; 2] = [
    "delete from processed_events where rowid in (select rowid from processed_events where processed_at < ?1 limit ?2)",
    "delete from handled_events where rowid in (select rowid from handled_events where handled_at < ?1 limit ?2)",
];

/// The de-duplication store on an SQLite file (or in memory).
#[derive(Debug, Clone)]
pub struct SqliteProcessedEvents {
    pools: SqlitePools,
}

/// The current time as Unix milliseconds, the schema's representation of time.
fn now_millis() -> i64 {
    Utc::now().timestamp_millis()
}

impl SqliteProcessedEvents {
    /// Opens (creating if missing) and migrates the database at `url`.
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        // Nothing here reads outside a write transaction: one reader connection is the least `connect_sqlite`
        // opens, and it is only ever idle.
        let pools = minizon_common::db::connect_sqlite(url, 1).await.context("open the notifications database")?;
        sqlx::migrate!("../migrations/notifications/sqlite")
            .run(&mut pools.writer.acquire().await?)
            .await
            .context("migrate the notifications database")?;
        Ok(Self { pools })
    }

    /// The writer and reader pools (for health and shutdown).
    pub fn pools(&self) -> &SqlitePools {
        &self.pools
    }

    /// A write transaction: holds the database's write lock from its first statement to its end.
    async fn write(&self) -> Result<Tx, sqlx::Error> {
        self.pools.write().await
    }

    /// Opens a claim on `(event_id, sink)`, or `None` when the delivery is recorded already.
    pub async fn claim(&self, event_id: Uuid, sink: &str, order_id: i64) -> Result<Option<Tx>, sqlx::Error> {
        let mut tx = self.write().await?;
        if insert(&mut tx, event_id, sink, order_id).await? == 0 {
            tx.rollback().await?;
            return Ok(None);
        }
        Ok(Some(tx))
    }

    /// Records a delivery outside a claim.
    pub async fn record(&self, event_id: Uuid, sink: &str, order_id: i64) -> Result<(), sqlx::Error> {
        let mut tx = self.write().await?;
        insert(&mut tx, event_id, sink, order_id).await?;
        tx.commit().await
    }

    /// Records that the event needs nothing more.
    pub async fn mark_handled(&self, event_id: Uuid, order_id: i64, outcome: Handled) -> Result<(), sqlx::Error> {
        let mut tx = self.write().await?;
        sqlx::query(
            "insert into handled_events (event_id, order_id, outcome, handled_at) values (?1, ?2, ?3, ?4)
             on conflict do nothing",
        )
        .bind(event_id.hyphenated())
        .bind(order_id)
        .bind(outcome.as_str())
        .bind(now_millis())
        .execute(&mut *tx)
        .await?;
        tx.commit().await
    }

    /// Which of `event_ids` are recorded as handled.
    pub async fn handled_among(&self, event_ids: &[Uuid]) -> Result<Vec<Uuid>, sqlx::Error> {
        let ids: Vec<String> = event_ids.iter().map(|id| id.hyphenated().to_string()).collect();
        let ids = serde_json::to_string(&ids).map_err(|error| sqlx::Error::Encode(Box::new(error)))?;
        let found: Vec<String> = sqlx::query_scalar(
            "select event_id from handled_events where event_id in (select value from json_each(?1))",
        )
        .bind(ids)
        .fetch_all(&mut *self.pools.reader.acquire().await?)
        .await?;
        // Only this worker writes the table, always in the hyphenated form.
        Ok(found.iter().filter_map(|id| Uuid::parse_str(id).ok()).collect())
    }

    /// Forgets deliveries and handled events older than `retention`, in chunks of 10 000 rows, each in a
    /// transaction of its own so that the worker's claims get the writer between them.
    pub async fn prune(&self, retention: Duration) -> Result<u64, sqlx::Error> {
        let retention = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
        self.prune_before(now_millis().saturating_sub(retention)).await
    }

    /// Forgets deliveries and handled events recorded before `cutoff` (Unix milliseconds).
    async fn prune_before(&self, cutoff: i64) -> Result<u64, sqlx::Error> {
        let mut total = 0;
        for delete in PRUNE_STATEMENTS {
            total += self.prune_table(delete, cutoff).await?;
        }
        Ok(total)
    }

    async fn prune_table(&self, delete: &'static str, cutoff: i64) -> Result<u64, sqlx::Error> {
        let mut total = 0;
        loop {
            let mut tx = self.write().await?;
            let deleted =
                sqlx::query(delete).bind(cutoff).bind(i64::from(PRUNE_CHUNK)).execute(&mut *tx).await?.rows_affected();
            tx.commit().await?;
            total += deleted;
            if deleted < u64::from(PRUNE_CHUNK) {
                return Ok(total);
            }
        }
    }
}

/// Inserts the `(event_id, sink)` row unless it exists; the number of rows inserted (0 or 1).
async fn insert(tx: &mut Tx, event_id: Uuid, sink: &str, order_id: i64) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(
        "insert into processed_events (event_id, sink, order_id, processed_at) values (?1, ?2, ?3, ?4)
         on conflict do nothing",
    )
    .bind(event_id.hyphenated())
    .bind(sink)
    .bind(order_id)
    .bind(now_millis())
    .execute(&mut **tx)
    .await?
    .rows_affected())
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    };

    use super::*;

    const ORDER: i64 = 42;

    async fn in_memory() -> SqliteProcessedEvents {
        SqliteProcessedEvents::connect("sqlite::memory:").await.unwrap()
    }

    async fn rows(store: &SqliteProcessedEvents) -> i64 {
        sqlx::query_scalar("select count(*) from processed_events")
            .fetch_one(&mut *store.pools.writer.acquire().await.unwrap())
            .await
            .unwrap()
    }

    /// Claims as the worker does: an unavailable database (another process holding the write lock beyond the
    /// busy timeout, the writer connection busy beyond the pool's acquire timeout) is waited out, not a verdict.
    async fn claim_patiently(store: &SqliteProcessedEvents, event_id: Uuid, sink: &str) -> Option<Tx> {
        let mut last_error = None;
        for _ in 0..100 {
            match store.claim(event_id, sink, ORDER).await {
                Ok(claim) => return claim,
                Err(error) => last_error = Some(error),
            }
        }
        panic!("the claim kept failing: {last_error:?}");
    }

    /// A database file of its own in the temporary directory, removed (with its WAL files) on drop.
    struct TempDb(std::path::PathBuf);

    impl TempDb {
        fn new(name: &str) -> Self {
            let unique = Uuid::new_v4().simple();
            Self(std::env::temp_dir().join(format!("notifications-{name}-{}-{unique}.db", std::process::id())))
        }

        fn url(&self) -> String {
            format!("sqlite://{}", self.0.display())
        }
    }

    impl Drop for TempDb {
        fn drop(&mut self) {
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", self.0.display()));
            }
        }
    }

    #[tokio::test]
    async fn a_first_delivery_is_claimed_and_a_duplicate_delivery_is_skipped() {
        let store = in_memory().await;
        let event = Uuid::now_v7();

        let first = store.claim(event, "log", ORDER).await.unwrap().expect("the first delivery sends");
        first.commit().await.unwrap();
        let duplicate = store.claim(event, "log", ORDER).await.unwrap();

        assert!(duplicate.is_none(), "the redelivered event must not notify again");
        assert_eq!(rows(&store).await, 1);
    }

    #[tokio::test]
    async fn a_failed_sink_leaves_no_row_so_the_retry_sends() {
        let store = in_memory().await;
        let event = Uuid::now_v7();

        let failed = store.claim(event, "webhook", ORDER).await.unwrap().expect("the first delivery sends");
        drop(failed);
        let after_failure = rows(&store).await;
        let retry = store.claim(event, "webhook", ORDER).await.unwrap();

        assert_eq!(after_failure, 0, "a dropped claim is rolled back");
        let retry = retry.expect("the redelivery after a failure sends");
        retry.commit().await.unwrap();
        assert!(store.claim(event, "webhook", ORDER).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn each_sink_is_given_the_event_once() {
        let store = in_memory().await;
        let event = Uuid::now_v7();

        store.claim(event, "log", ORDER).await.unwrap().expect("log sends").commit().await.unwrap();
        // One claim at a time, as the worker does: a second one would wait for the first's connection.
        let webhook = store.claim(event, "webhook", ORDER).await.unwrap().map(drop);
        let other_event = store.claim(Uuid::now_v7(), "log", ORDER).await.unwrap().map(drop);

        assert!(webhook.is_some(), "another sink has not had the event yet");
        assert!(other_event.is_some(), "another event has not been sent yet");
    }

    #[tokio::test]
    async fn a_delivery_recorded_outside_a_claim_is_skipped_and_recording_twice_is_harmless() {
        let store = in_memory().await;
        let event = Uuid::now_v7();

        store.record(event, "telegram", ORDER).await.unwrap();
        store.record(event, "telegram", ORDER).await.unwrap();
        let claim = store.claim(event, "telegram", ORDER).await.unwrap();

        assert!(claim.is_none());
        assert_eq!(rows(&store).await, 1);
    }

    #[tokio::test]
    async fn a_second_handler_of_the_same_event_waits_for_the_first_commit_and_then_skips() {
        let file = TempDb::new("wait-commit");
        let store = SqliteProcessedEvents::connect(&file.url()).await.unwrap();
        let event = Uuid::now_v7();
        let first = store.claim(event, "log", ORDER).await.unwrap().expect("the first handler sends");

        // The second handler starts while the first one's claim is open; whenever it runs, it can only finish
        // after that claim ended, so its answer reflects the commit.
        let second = tokio::spawn({
            let store = store.clone();
            async move { claim_patiently(&store, event, "log").await.is_some() }
        });
        first.commit().await.unwrap();

        assert!(!second.await.unwrap(), "the second handler must see the first one's delivery");
        assert_eq!(rows(&store).await, 1);
    }

    #[tokio::test]
    async fn a_second_handler_of_the_same_event_sends_when_the_first_one_failed() {
        let file = TempDb::new("wait-rollback");
        let store = SqliteProcessedEvents::connect(&file.url()).await.unwrap();
        let event = Uuid::now_v7();
        let first = store.claim(event, "log", ORDER).await.unwrap().expect("the first handler sends");

        let second = tokio::spawn({
            let store = store.clone();
            async move {
                let claim = claim_patiently(&store, event, "log").await;
                match claim {
                    Some(claim) => claim.commit().await.map(|()| true),
                    None => Ok(false),
                }
            }
        });
        drop(first);

        assert!(second.await.unwrap().unwrap(), "the second handler must send what the first one failed to");
        assert_eq!(rows(&store).await, 1);
    }

    #[tokio::test]
    async fn a_handler_in_another_process_on_the_same_file_waits_for_the_write_lock_and_then_skips() {
        let file = TempDb::new("two-stores");
        let store = SqliteProcessedEvents::connect(&file.url()).await.unwrap();
        // A second store has a writer connection of its own, as another process on the file would.
        let other = SqliteProcessedEvents::connect(&file.url()).await.unwrap();
        let event = Uuid::now_v7();
        let first = store.claim(event, "log", ORDER).await.unwrap().expect("the first handler sends");

        let second = tokio::spawn(async move { claim_patiently(&other, event, "log").await.is_some() });
        first.commit().await.unwrap();

        assert!(!second.await.unwrap(), "the other process must see the first one's delivery");
        assert_eq!(rows(&store).await, 1);
    }

    #[tokio::test]
    async fn many_concurrent_handlers_of_one_event_notify_once() {
        let file = TempDb::new("many");
        let stores = [
            SqliteProcessedEvents::connect(&file.url()).await.unwrap(),
            SqliteProcessedEvents::connect(&file.url()).await.unwrap(),
        ];
        let event = Uuid::now_v7();
        let sent = Arc::new(AtomicU32::new(0));
        let attempts = Arc::new(AtomicU32::new(0));

        let handlers: Vec<_> = (0..24)
            .map(|i| {
                let store = stores[i % stores.len()].clone();
                let (sent, attempts) = (Arc::clone(&sent), Arc::clone(&attempts));
                tokio::spawn(async move {
                    let Some(claim) = claim_patiently(&store, event, "webhook").await else { return };
                    // The first three holders fail their sink call: their claims go, and a later handler sends.
                    if attempts.fetch_add(1, Ordering::SeqCst) < 3 {
                        drop(claim);
                        return;
                    }
                    sent.fetch_add(1, Ordering::SeqCst);
                    claim.commit().await.unwrap();
                })
            })
            .collect();
        for handler in handlers {
            handler.await.unwrap();
        }

        assert_eq!(sent.load(Ordering::SeqCst), 1, "one notification per event and sink");
        assert_eq!(attempts.load(Ordering::SeqCst), 4, "three failures, then one success, then only skips");
        assert_eq!(rows(&stores[0]).await, 1);
    }

    #[tokio::test]
    async fn deliveries_survive_a_restart_on_the_same_file() {
        let file = TempDb::new("restart");
        let event = Uuid::now_v7();
        let store = SqliteProcessedEvents::connect(&file.url()).await.unwrap();
        store.claim(event, "log", ORDER).await.unwrap().expect("first delivery").commit().await.unwrap();
        store.pools().close().await;

        let reopened = SqliteProcessedEvents::connect(&file.url()).await.unwrap();
        let redelivered = reopened.claim(event, "log", ORDER).await.unwrap();

        assert!(redelivered.is_none(), "a redelivery after a restart must not notify again");
    }

    #[tokio::test]
    async fn pruning_forgets_only_deliveries_past_the_retention_in_chunks() {
        let store = in_memory().await;
        let day = 24 * 3600 * 1000;
        let old = i64::from(PRUNE_CHUNK) + 5;
        // More old rows than one chunk, so that pruning has to go round again.
        sqlx::query(
            "with recursive n(i) as (select 1 union all select i + 1 from n where i < ?1)
             insert into processed_events (event_id, sink, order_id, processed_at)
             select printf('00000000-0000-0000-0000-%012d', i), 'log', i, ?2 from n",
        )
        .bind(old)
        .bind(now_millis() - 2 * day)
        .execute(&mut *store.pools.writer.acquire().await.unwrap())
        .await
        .unwrap();
        let recent = Uuid::now_v7();
        store.record(recent, "log", ORDER).await.unwrap();

        let pruned = store.prune(Duration::from_secs(24 * 3600)).await.unwrap();
        let pruned_again = store.prune(Duration::from_secs(24 * 3600)).await.unwrap();

        assert_eq!(pruned, u64::try_from(old).unwrap());
        assert_eq!(pruned_again, 0);
        assert_eq!(rows(&store).await, 1);
        assert!(store.claim(recent, "log", ORDER).await.unwrap().is_none(), "a recent delivery is remembered");
    }

    #[tokio::test]
    async fn a_retention_beyond_every_date_prunes_nothing() {
        let store = in_memory().await;
        store.record(Uuid::now_v7(), "log", ORDER).await.unwrap();

        let pruned = store.prune(Duration::MAX).await.unwrap();

        assert_eq!(pruned, 0);
        assert_eq!(rows(&store).await, 1);
    }
}
