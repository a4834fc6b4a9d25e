//! Storage backends. Each implements the traits of [`crate::domain::storage`]; which one runs is chosen by the
//! database URL at start (`postgres://…` or `sqlite://…`).

mod after_commit;
pub mod batch;
mod command_batches;
mod decode;
mod known_levels;
mod new_orders;
pub mod postgres;
mod records;
pub mod sqlite;
pub mod stock_cache;

use std::{sync::Arc, time::Duration};

pub use batch::BatchConfig;
use minizon_common::db::Backend;
pub use postgres::PgStore;
pub use sqlite::SqliteStore;
pub use stock_cache::StockCache;

use crate::domain::{OrderStore, StockStore};

/// The storage LOMS runs on, chosen by the database URL, with its CreateOrder calls batched (see [`batch`]).
#[derive(Debug, Clone)]
pub struct Storage {
    backend: Store,
    orders: Arc<dyn OrderStore>,
}

/// The store of one backend.
#[derive(Debug, Clone)]
enum Store {
    Postgres(Arc<PgStore>),
    Sqlite(Arc<SqliteStore>),
}

impl Storage {
    /// Opens (creating and migrating) the database `url` names; Stocks answers are cached up to `stock_cache_ttl`
    /// (zero: not cached); CreateOrder calls are committed in batches as `batching` says.
    pub async fn connect(
        url: &str,
        max_connections: u32,
        stock_cache_ttl: Duration,
        batching: BatchConfig,
    ) -> anyhow::Result<Self> {
        let cache = StockCache::new(stock_cache_ttl);
        Ok(match Backend::of(url).map_err(anyhow::Error::msg)? {
            Backend::Postgres => {
                // A committer per kind of batch (CreateOrder; OrderPayed and CancelOrder) runs one batch at a time.
                let in_flight = 2 * usize::from(batching.committers.max(1));
                // A second batch in flight would be decided before the first one's levels are known, and find its rows
                // changed.
                let one_flight = batching.one_flight && batching.committers <= 1;
                let store = Arc::new(PgStore::connect(url, max_connections, in_flight, one_flight, cache).await?);
                let orders = Arc::new(batch::BatchedOrders::new(store.clone(), batching));
                Self { backend: Store::Postgres(store), orders }
            }
            Backend::Sqlite => {
                let store = Arc::new(SqliteStore::connect(url, cache).await?);
                // One writer: a second batch in flight would only wait for it, and form smaller batches meanwhile.
                let batching = BatchConfig { committers: 1, ..batching };
                let orders = Arc::new(batch::BatchedOrders::new(store.clone(), batching));
                Self { backend: Store::Sqlite(store), orders }
            }
        })
    }

    /// Orders, reservations and history.
    pub fn orders(&self) -> Arc<dyn OrderStore> {
        self.orders.clone()
    }

    /// Stock administration (which keeps this process's Stocks cache exact).
    pub fn stocks(&self) -> Arc<dyn StockStore> {
        let (store, cache): (Arc<dyn StockStore>, _) = match &self.backend {
            Store::Postgres(store) => (store.clone(), store.stock_cache().clone()),
            Store::Sqlite(store) => (store.clone(), store.stock_cache().clone()),
        };
        Arc::new(stock_cache::ForgetChangedStock { store, cache })
    }

    /// The outbox, for the relay.
    pub fn outbox(&self) -> crate::outbox::OutboxSource {
        use crate::outbox::OutboxSource;
        match &self.backend {
            Store::Postgres(store) => {
                OutboxSource::Postgres { pool: store.pool().clone(), written: store.outbox_written() }
            }
            Store::Sqlite(store) => {
                OutboxSource::Sqlite { pools: store.pools().clone(), written: store.outbox_written() }
            }
        }
    }

    /// Whether the database answers a trivial query.
    pub async fn ping(&self) -> bool {
        match &self.backend {
            Store::Postgres(store) => store.pool().ping().await,
            Store::Sqlite(store) => store.pools().ping().await,
        }
    }

    /// Closes every connection.
    pub async fn close(&self) {
        match &self.backend {
            Store::Postgres(store) => store.close().await,
            Store::Sqlite(store) => store.pools().close().await,
        }
    }
}
