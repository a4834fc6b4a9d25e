//! Cart storage backends, each implementing [`crate::domain::CartStore`]; which one runs is chosen by the database
//! URL at start (`postgres://…` or `sqlite://…`).

pub mod postgres;
pub mod sqlite;

use std::sync::Arc;

use minizon_common::db::Backend;
pub use postgres::PostgresCartStore;
pub use sqlite::SqliteCartStore;

use crate::domain::CartStore;

/// The storage Checkout runs on, chosen by the database URL.
#[derive(Debug, Clone)]
pub enum Storage {
    /// PostgreSQL: the production topology, any number of replicas on one database.
    Postgres(Arc<PostgresCartStore>),
    /// An SQLite file (or `sqlite::memory:`): the embedded mode, one process per file.
    Sqlite(Arc<SqliteCartStore>),
}

impl Storage {
    /// Opens (creating and migrating) the database `url` names, keeping at most `max_connections` connections
    /// (on SQLite: one writer and the rest readers).
    pub async fn connect(url: &str, max_connections: u32) -> anyhow::Result<Self> {
        Ok(match Backend::of(url).map_err(anyhow::Error::msg)? {
            Backend::Postgres => Self::Postgres(Arc::new(PostgresCartStore::connect(url, max_connections).await?)),
            Backend::Sqlite => {
                let readers = max_connections.saturating_sub(1).max(1);
                Self::Sqlite(Arc::new(SqliteCartStore::connect(url, readers).await?))
            }
        })
    }

    /// The carts.
    pub fn carts(&self) -> Arc<dyn CartStore> {
        match self {
            Self::Postgres(store) => store.clone(),
            Self::Sqlite(store) => store.clone(),
        }
    }

    /// Whether the database answers a trivial query (on SQLite, through the writer every change needs).
    pub async fn ping(&self) -> bool {
        match self {
            Self::Postgres(store) => store.pool().ping().await,
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

/// A cart from the rows of `carts left join cart_items` (version, sku, count), as both backends read it in one
/// statement so that lines and version come from the same snapshot. No row: the empty cart at version 0.
fn cart_from_rows(rows: Vec<(i64, Option<i64>, Option<i64>)>) -> Result<crate::domain::Cart, crate::error::Error> {
    use crate::{
        domain::{Cart, CartLine, CartVersion, Count, Sku},
        error::Error,
    };
    let version = CartVersion(rows.first().map_or(0, |row| row.0));
    let lines = rows
        .into_iter()
        .filter_map(|(_, sku, count)| sku.zip(count))
        .map(|(sku, count)| {
            Ok(CartLine {
                sku: Sku::try_from(sku).map_err(Error::internal)?,
                count: Count::try_from(count).map_err(Error::internal)?,
            })
        })
        .collect::<Result<Vec<_>, Error>>()?;
    Ok(Cart::new(version, lines))
}
