//! Database helpers shared by the storage modules: opening pools, classifying errors, health.

mod pool;

use std::time::Duration;

pub use pool::{
    POOL_ACQUIRE_WAIT, POOL_CONNECTIONS, POOL_MAX_CONNECTIONS, POOL_WAITERS, PgPool, Pool, PoolSeries, SqlitePool,
    Waiting, describe_metrics,
};
use sqlx::{
    ConnectOptions,
    postgres::{PgConnectOptions, PgPoolOptions},
};
use tokio_util::sync::CancellationToken;
use tonic_health::server::HealthReporter;

/// Creates the PostgreSQL database `url` names if it does not exist yet; replicas starting together may race, and
/// the loser's "already exists" is success.
pub async fn ensure_postgres_database(url: &str) -> anyhow::Result<()> {
    use anyhow::Context as _;
    use sqlx::{Postgres, migrate::MigrateDatabase as _};
    if Postgres::database_exists(url).await.context("check whether the database exists")? {
        return Ok(());
    }
    match Postgres::create_database(url).await {
        Ok(()) => Ok(()),
        // 42P04 duplicate_database; 23505 when two creations race on the catalog's unique index.
        Err(sqlx::Error::Database(error)) if matches!(error.code().as_deref(), Some("42P04" | "23505")) => Ok(()),
        Err(error) => Err(error).context("create the database"),
    }
}

/// Opens a PostgreSQL pool. `url` may carry `?options=-csearch_path%3D…` to pin a schema (tests use one schema
/// each).
pub async fn connect_postgres(url: &str, max_connections: u32) -> Result<PgPool, sqlx::Error> {
    let options: PgConnectOptions = url.parse::<PgConnectOptions>()?.log_statements(tracing::log::LevelFilter::Trace);
    let name = options.get_database().unwrap_or("postgres").to_owned();
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .min_connections(1)
        .acquire_timeout(Duration::from_secs(5))
        // A ping before every checkout is a round trip per transaction; a dead connection fails its first
        // statement instead, which maps to UNAVAILABLE like any outage.
        .test_before_acquire(false)
        .connect_with(options)
        .await?;
    Ok(Pool::new(pool, name))
}

/// True when the error is transient: the database cannot be reached now, or cannot do the work now (busy,
/// overloaded, failing over), so the call is worth an UNAVAILABLE and a retry — as opposed to a bug or a rule the
/// database enforced. Conflicts that a rerun of the same transaction resolves are [`is_retryable_conflict`].
/// Every service maps its database errors through this one classification.
pub fn is_unavailable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() => {
            is_sqlite_busy(db.code().as_deref())
        }
        sqlx::Error::Database(db) => db.code().as_deref().is_some_and(is_transient_sqlstate),
        _ => false,
    }
}

/// PostgreSQL SQLSTATEs of a server that cannot do the work now but may soon (for drivers other than sqlx, too).
pub fn is_transient_sqlstate(code: &str) -> bool {
    // 08xxx connection exceptions; 53xxx insufficient resources (too many connections, out of memory, disk
    // full); 57P01..57P05 shutting down / cannot connect now / idle session timeout; 55P03 lock_not_available
    // (a lock_timeout fired); 57014 query_canceled (a statement_timeout fired); 25006 read_only_sql_transaction
    // (a fail-over left the connection on a standby).
    code.starts_with("08")
        || code.starts_with("53")
        || code.starts_with("57P")
        || matches!(code, "55P03" | "57014" | "25006")
}

/// True for SQLite's result code when it gave up waiting for a lock another connection (or process) held past the
/// busy timeout: SQLITE_BUSY or SQLITE_LOCKED, with any extended code — the database is there but busy, where
/// PostgreSQL would have waited on a row lock instead.
fn is_sqlite_busy(code: Option<&str>) -> bool {
    const SQLITE_BUSY: i32 = 5;
    const SQLITE_LOCKED: i32 = 6;
    // The code is the extended result code; its low byte is the primary one.
    code.and_then(|code| code.parse::<i32>().ok())
        .is_some_and(|code| matches!(code & 0xff, SQLITE_BUSY | SQLITE_LOCKED))
}

/// True for transient conflicts PostgreSQL resolves by aborting one side (serialization failure, deadlock):
/// the whole transaction is safe to run again.
pub fn is_retryable_conflict(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.code().as_deref().is_some_and(is_retryable_sqlstate))
}

/// The SQLSTATEs of [`is_retryable_conflict`]: serialization failure and deadlock.
pub fn is_retryable_sqlstate(code: &str) -> bool {
    matches!(code, "40001" | "40P01")
}

/// Runs `probe` every `every` (each try bounded by `every`) and reports SERVING / NOT_SERVING for `services`,
/// logging each change, until `shutdown`.
pub fn watch<F, Fut>(
    probe: F,
    reporter: HealthReporter,
    services: &'static [&'static str],
    every: Duration,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = bool> + Send,
{
    tokio::spawn(async move {
        let mut was_serving = None;
        loop {
            let serving = tokio::time::timeout(every, probe()).await.unwrap_or(false);
            if was_serving != Some(serving) {
                if serving {
                    tracing::info!("database reachable: SERVING");
                } else {
                    tracing::warn!("database unreachable: NOT_SERVING");
                }
                crate::grpc::set_health(&reporter, services, serving).await;
                was_serving = Some(serving);
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(every) => {}
            }
        }
    })
}

/// SQLite pools for the embedded mode: one writer connection (SQLite runs one write transaction at a time; a
/// single connection queues writers in-process instead of failing them with SQLITE_BUSY) and a few readers that
/// WAL lets run beside it. An in-memory database lives in one connection, so both pools are that connection.
#[derive(Debug, Clone)]
pub struct SqlitePools {
    pub writer: SqlitePool,
    pub reader: SqlitePool,
}

impl SqlitePools {
    /// A write transaction: SQLite's write lock is taken at its first statement (`begin immediate`), so two writers
    /// never both read and then fail to upgrade.
    pub async fn write(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, sqlx::Error> {
        self.writer.begin_with("begin immediate").await
    }

    /// Whether the database answers, through the writer every change needs.
    pub async fn ping(&self) -> bool {
        self.writer.ping().await
    }

    /// Closes the readers, then the writer (which checkpoints the write-ahead log into the file).
    pub async fn close(&self) {
        self.reader.close().await;
        self.writer.close().await;
    }
}

/// How long a SQLite connection waits for another connection's (or process's) lock before it gives up with
/// SQLITE_BUSY (answered UNAVAILABLE), unless the URL says otherwise with `busy_timeout=`.
pub const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Opens (creating if missing) the SQLite database at `url` (`sqlite://path/to/file.db` or `sqlite::memory:`).
/// Besides sqlx's own URL parameters, `busy_timeout=<duration>` (e.g. `?busy_timeout=250ms`) sets how long a
/// statement waits for a lock held elsewhere; the default is [`SQLITE_BUSY_TIMEOUT`].
pub async fn connect_sqlite(url: &str, readers: u32) -> Result<SqlitePools, sqlx::Error> {
    use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
    let (url, busy_timeout) = sqlite_busy_timeout(url)?;
    let options = url
        .parse::<SqliteConnectOptions>()?
        .create_if_missing(true)
        .foreign_keys(true)
        .busy_timeout(busy_timeout)
        .log_statements(tracing::log::LevelFilter::Trace);
    let in_memory = url.contains(":memory:") || url.contains("mode=memory");
    if in_memory {
        // The database exists only as long as its one connection does: never let the pool close it.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await?;
        let pool = Pool::new(pool, "memory".to_owned());
        return Ok(SqlitePools { writer: pool.clone(), reader: pool });
    }
    // WAL keeps readers off the writer's back; NORMAL sync is durable across process crashes in WAL mode.
    let options = options.journal_mode(SqliteJournalMode::Wal).synchronous(SqliteSynchronous::Normal);
    let writer = SqlitePoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(30))
        .connect_with(options.clone())
        .await?;
    let name =
        options.get_filename().file_stem().map_or_else(|| "sqlite".into(), |stem| stem.to_string_lossy().into_owned());
    let reader = SqlitePoolOptions::new().max_connections(readers.max(1)).connect_with(options.read_only(true)).await?;
    Ok(SqlitePools {
        writer: Pool::new(writer, format!("{name}-writer")),
        reader: Pool::new(reader, format!("{name}-reader")),
    })
}

/// Takes our own `busy_timeout=` parameter out of a SQLite URL (sqlx refuses parameters it does not know).
fn sqlite_busy_timeout(url: &str) -> Result<(String, Duration), sqlx::Error> {
    let Some((base, query)) = url.split_once('?') else { return Ok((url.to_owned(), SQLITE_BUSY_TIMEOUT)) };
    let mut timeout = SQLITE_BUSY_TIMEOUT;
    let mut kept = Vec::new();
    for pair in query.split('&') {
        match pair.strip_prefix("busy_timeout=") {
            Some(value) => {
                timeout = humantime::parse_duration(value).map_err(|error| {
                    sqlx::Error::Configuration(format!("busy_timeout={value:?} in the SQLite URL: {error}").into())
                })?;
            }
            None => kept.push(pair),
        }
    }
    let url = if kept.is_empty() { base.to_owned() } else { format!("{base}?{}", kept.join("&")) };
    Ok((url, timeout))
}

/// Which database a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

impl Backend {
    /// The backend of `url`, by its scheme.
    pub fn of(url: &str) -> Result<Self, String> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Self::Postgres)
        } else if url.starts_with("sqlite:") {
            Ok(Self::Sqlite)
        } else {
            Err(format!("unsupported database URL {url:?}: use postgres://… or sqlite://…"))
        }
    }
}

#[cfg(test)]
mod tests {
    use sqlx::{Connection as _, SqliteConnection, sqlite::SqliteConnectOptions};

    use super::*;

    #[test]
    fn the_busy_timeout_comes_out_of_the_sqlite_url() {
        assert_eq!(sqlite_busy_timeout("sqlite://a.db").unwrap(), ("sqlite://a.db".into(), SQLITE_BUSY_TIMEOUT));
        assert_eq!(
            sqlite_busy_timeout("sqlite://a.db?busy_timeout=250ms").unwrap(),
            ("sqlite://a.db".into(), Duration::from_millis(250))
        );
        assert_eq!(
            sqlite_busy_timeout("sqlite://a.db?mode=rwc&busy_timeout=1s").unwrap(),
            ("sqlite://a.db?mode=rwc".into(), Duration::from_secs(1))
        );
        assert!(sqlite_busy_timeout("sqlite://a.db?busy_timeout=soon").is_err());
    }

    #[test]
    fn transient_postgres_states_are_unavailable_and_rule_violations_are_not() {
        for code in ["08006", "53300", "57P01", "55P03", "57014", "25006"] {
            assert!(is_transient_sqlstate(code), "{code}");
        }
        for code in ["23505", "23514", "42P01", "22003", "40001"] {
            assert!(!is_transient_sqlstate(code), "{code}");
        }
    }

    #[tokio::test]
    async fn sqlite_giving_up_on_a_lock_is_unavailable_and_a_bug_is_not() {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        let path = std::env::temp_dir().join(format!("common-busy-{}-{nanos}.db", std::process::id()));
        let options = SqliteConnectOptions::new().filename(&path).create_if_missing(true);
        let mut holder = SqliteConnection::connect_with(&options).await.unwrap();
        // No busy timeout: the second writer fails at once instead of waiting.
        let mut other = SqliteConnection::connect_with(&options.busy_timeout(Duration::ZERO)).await.unwrap();
        sqlx::query("begin immediate").execute(&mut holder).await.unwrap();

        let busy = sqlx::query("begin immediate").execute(&mut other).await.unwrap_err();
        let bug = sqlx::query("select 1 from no_such_table").execute(&mut holder).await.unwrap_err();

        assert!(is_unavailable(&busy), "SQLITE_BUSY is transient: {busy}");
        assert!(!is_unavailable(&bug), "a bug is not a busy database: {bug}");
        drop((holder, other));
        let _ = std::fs::remove_file(&path);
    }
}
