//! Storage backends. Each implements the traits of [`crate::domain::storage`]; which one runs is chosen by the
//! database URL at start (`postgres://…` or `sqlite://…`).

mod outbox_signal;
pub mod postgres;
pub mod sqlite;

use std::sync::Arc;

use minizon_common::db::Backend;
pub use postgres::PgStore;
pub use sqlite::SqliteStore;

use crate::domain::{OrderStore, StockStore};

/// The storage LOMS runs on, chosen by the database URL.
#[derive(Debug, Clone)]
pub enum Storage {
    Postgres(Arc<PgStore>),
    Sqlite(Arc<SqliteStore>),
}

impl Storage {
    /// Opens (creating and migrating) the database `url` names.
    pub async fn connect(url: &str, max_connections: u32) -> anyhow::Result<Self> {
        Ok(match Backend::of(url).map_err(anyhow::Error::msg)? {
            Backend::Postgres => Self::Postgres(Arc::new(PgStore::connect(url, max_connections).await?)),
            Backend::Sqlite => Self::Sqlite(Arc::new(SqliteStore::connect(url).await?)),
        })
    }

    /// Orders, reservations and history.
    pub fn orders(&self) -> Arc<dyn OrderStore> {
        match self {
            Self::Postgres(store) => store.clone(),
            Self::Sqlite(store) => store.clone(),
        }
    }

    /// Stock administration.
    pub fn stocks(&self) -> Arc<dyn StockStore> {
        match self {
            Self::Postgres(store) => store.clone(),
            Self::Sqlite(store) => store.clone(),
        }
    }

    /// The outbox, for the relay.
    pub fn outbox(&self) -> crate::outbox::OutboxSource {
        use crate::outbox::OutboxSource;
        match self {
            Self::Postgres(store) => {
                OutboxSource::Postgres { pool: store.pool().clone(), written: store.outbox_written() }
            }
            Self::Sqlite(store) => {
                OutboxSource::Sqlite { pools: store.pools().clone(), written: store.outbox_written() }
            }
        }
    }

    /// Whether the database answers a trivial query.
    pub async fn ping(&self) -> bool {
        match self {
            Self::Postgres(store) => minizon_common::db::ping(store.pool().clone()).await,
            Self::Sqlite(store) => store.pools().ping().await,
        }
    }

    /// Closes every connection.
    pub async fn close(&self) {
        match self {
            Self::Postgres(store) => store.pool().close().await,
            Self::Sqlite(store) => store.pools().close().await,
        }
    }
}
