//! The connections LOMS's write batches run on: tokio-postgres, which pipelines. A batch sends BEGIN together with
//! its first statement, and its write together with COMMIT, each pair in one flight, so it waits for PostgreSQL
//! twice instead of four times (sqlx sends a statement only once the one before it was answered); a batch of one
//! statement sends BEGIN, it and COMMIT in one flight ([`Pipelined::write_alone`]) and waits once. On the 2-core
//! benchmark machine the committer's session spent 29 % of its time waiting for LOMS's next statement, and a call
//! waits for the batch in flight before its own, so each wait was paid twice per call; pipelined, CreateOrder ran
//! 13–28 % faster (docs/benchmarks-history.md, run 11).
//!
//! A transaction that ends without COMMIT or ROLLBACK (an error on the way, a dropped future) takes its connection
//! out of the pool instead of handing a connection inside a transaction to the next batch.

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod, Runtime};
use futures::future::{join, join3};
use minizon_common::db::PoolSeries;
use tokio_postgres::{NoTls, Row, error::SqlState, types::ToSql};

use crate::domain::LomsError;

/// How long a batch waits for a connection (or for a new one to be opened) before its calls are answered
/// UNAVAILABLE: the sqlx pool's acquire timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A statement's parameter, as tokio-postgres takes it.
pub(super) type Param<'a> = &'a (dyn ToSql + Sync);
/// A statement's parameters.
pub(super) type Params<'a> = [Param<'a>];

/// A pool of pipelining connections, opened on demand, at most one per batch in flight, watched as the pool
/// `<database>-write-batches` of the `db_pool_*` series.
#[derive(Debug, Clone)]
pub(super) struct Pipelined {
    pool: Pool,
    series: PoolSeries,
}

impl Pipelined {
    /// Up to `size` connections to the database `url` names (the URL sqlx is given: `postgres://…`).
    pub(super) fn new(url: &str, size: usize) -> anyhow::Result<Self> {
        let config: tokio_postgres::Config = url.parse()?;
        let name = format!("{}-write-batches", config.get_dbname().unwrap_or("postgres"));
        // Fast: a returned connection is checked for being open, not pinged (a dead one fails its first statement,
        // which is UNAVAILABLE like any outage); no transaction is ever returned open (see `Transaction`'s drop).
        let manager = Manager::from_config(config, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = Pool::builder(manager)
            .max_size(size.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(CONNECT_TIMEOUT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .build()?;
        let watched = pool.clone();
        let series = PoolSeries::new(name, size.max(1), move || {
            let status = watched.status();
            (!watched.is_closed()).then_some((status.size, status.available))
        });
        Ok(Self { pool, series })
    }

    /// Opens a transaction with `sql` as its first statement, sent in the same flight as BEGIN, and returns it with
    /// the statement's rows.
    pub(super) async fn begin_with(
        &self,
        sql: &str,
        params: &Params<'_>,
    ) -> Result<(Transaction, Vec<Row>), LomsError> {
        let client = self.connection().await?;
        let statement = client.prepare_cached(sql).await?;
        let tx = Transaction { client: Some(client) };
        let client = tx.client();
        // tokio-postgres sends a request when its future is first polled, and `join` polls BEGIN first.
        let (begun, rows) = join(client.batch_execute("BEGIN"), client.query(&statement, params)).await;
        begun?;
        Ok((tx, rows?))
    }

    /// Runs `sql` in a transaction of its own: BEGIN, the statement and COMMIT in one flight.
    pub(super) async fn write_alone(&self, sql: &str, params: &Params<'_>) -> Committed {
        let client = match self.connection().await {
            Ok(client) => client,
            Err(error) => return Committed::No(error),
        };
        Transaction { client: Some(client) }.commit_with(sql, params, true).await
    }

    /// A connection of the pool, watched while it is waited for.
    async fn connection(&self) -> Result<Object, LomsError> {
        let _waiting = self.series.waiting();
        self.pool.get().await.map_err(pool_error)
    }

    /// Closes every connection.
    pub(super) fn close(&self) {
        self.pool.close();
    }
}

/// An open transaction on a pipelining connection.
#[derive(Debug)]
pub(super) struct Transaction {
    /// `None` once the transaction ended cleanly and its connection went back to the pool.
    client: Option<Object>,
}

/// How a write sent with COMMIT ended.
#[derive(Debug)]
pub(super) enum Committed {
    /// Written and committed.
    Yes,
    /// PostgreSQL refused the write (and the COMMIT after it rolled the transaction back): nothing was written.
    No(LomsError),
    /// As [`Committed::No`], the write refused by the unique constraint named: a row with its key is there already
    /// (or a concurrent transaction inserted one and committed first).
    Duplicate(String, LomsError),
    /// The connection failed with the write or the COMMIT in flight: the outcome is unknown.
    Unknown(LomsError),
}

impl Transaction {
    fn client(&self) -> &Object {
        self.client.as_ref().expect("a transaction has its connection until it ends")
    }

    /// Runs `sql` and returns its rows.
    pub(super) async fn query(&self, sql: &str, params: &Params<'_>) -> Result<Vec<Row>, LomsError> {
        let client = self.client();
        let statement = client.prepare_cached(sql).await?;
        Ok(client.query(&statement, params).await?)
    }

    /// Runs `sql` and COMMIT in one flight.
    pub(super) async fn write_and_commit(self, sql: &str, params: &Params<'_>) -> Committed {
        self.commit_with(sql, params, false).await
    }

    /// Runs `sql` and COMMIT in one flight, after BEGIN in the same flight when `begin` (the transaction is not
    /// open yet).
    async fn commit_with(mut self, sql: &str, params: &Params<'_>, begin: bool) -> Committed {
        let client = self.client();
        let statement = match client.prepare_cached(sql).await {
            Ok(statement) => statement,
            // Nothing was sent: the transaction is dropped and its connection closed.
            Err(error) => return Committed::No(error.into()),
        };
        crate::storage::batch::committing();
        // `join3` polls in order, and tokio-postgres sends a request when its future is first polled.
        let begun = async { if begin { client.batch_execute("BEGIN").await } else { Ok(()) } };
        let (begun, written, committed) =
            join3(begun, client.execute(&statement, params), client.batch_execute("COMMIT")).await;
        let clean = committed.is_ok();
        let outcome = match (begun, written, committed) {
            (Ok(()), Ok(_), Ok(())) => Committed::Yes,
            // COMMIT in a transaction a statement failed rolls back, and says so without an error.
            (Ok(()), Err(refused), _) if refused.as_db_error().is_some() => refusal(refused),
            (Err(error), ..) | (_, Err(error), _) | (.., Err(error)) => Committed::Unknown(error.into()),
        };
        if clean {
            // Outside any transaction again: the connection can serve the next batch.
            self.client = None;
        }
        outcome
    }

    /// Ends the transaction without writing.
    pub(super) async fn rollback(mut self) -> Result<(), LomsError> {
        self.client().batch_execute("ROLLBACK").await?;
        self.client = None;
        Ok(())
    }
}

impl Drop for Transaction {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            // Still inside the transaction (or unsure): close the connection rather than return it to the pool;
            // PostgreSQL rolls the transaction back when its connection goes.
            drop(Object::take(client));
        }
    }
}

/// What a write PostgreSQL refused ended as: [`Committed::Duplicate`] on a unique constraint, else [`Committed::No`].
fn refusal(refused: tokio_postgres::Error) -> Committed {
    let duplicate = refused
        .as_db_error()
        .filter(|db| *db.code() == SqlState::UNIQUE_VIOLATION)
        .map(|db| db.constraint().unwrap_or_default().to_owned());
    match duplicate {
        Some(constraint) => Committed::Duplicate(constraint, refused.into()),
        None => Committed::No(refused.into()),
    }
}

impl From<tokio_postgres::Error> for LomsError {
    fn from(error: tokio_postgres::Error) -> Self {
        match error.code() {
            Some(state) if minizon_common::db::is_retryable_sqlstate(state.code()) => Self::Contention,
            Some(state) if minizon_common::db::is_transient_sqlstate(state.code()) => {
                Self::Unavailable(error.to_string())
            }
            Some(_) => Self::Internal(Box::new(error)),
            // Encoding a parameter or decoding a column (the error's source is the conversion's): a bug.
            None if !error.is_closed() && source(&error).is_some_and(|source| !source.is::<std::io::Error>()) => {
                Self::Internal(Box::new(error))
            }
            // No SQLSTATE otherwise: the connection failed (closed, I/O, timed out), not the statement.
            None => Self::Unavailable(error.to_string()),
        }
    }
}

/// What the error wraps, if anything.
fn source(error: &tokio_postgres::Error) -> Option<&(dyn std::error::Error + 'static)> {
    std::error::Error::source(error)
}

/// A connection the pool could not give within [`CONNECT_TIMEOUT`], or could not open.
fn pool_error(error: PoolError) -> LomsError {
    match error {
        PoolError::Backend(error) => error.into(),
        other => LomsError::Unavailable(format!("no connection for the write batch: {other}")),
    }
}
