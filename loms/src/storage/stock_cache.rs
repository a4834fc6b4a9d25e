//! A short-lived, per-process cache of what Stocks answers (units that can still be bought, per warehouse).
//!
//! Why it is safe: Stocks is advisory — the reservation inside CreateOrder is the authority, so a stale answer can
//! never sell a unit twice. Within one process the cache is exact: every store write drops the skus it changed
//! after its commit and before the RPC answers, so a client always reads its own writes. Writes of *other*
//! processes (another replica, `loms stock import`) show after at most the TTL.
//!
//! The race it closes: a read that misses, loads an old value, and stores it after a writer dropped the key would
//! keep the old value until the TTL. Each sku hashes to an epoch that writers bump before dropping keys; a load
//! stores its value only if its epoch did not move, and drops it again if the epoch moved while it was storing.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;

use crate::domain::{LomsError, Sku, StockLevel, StockStore, WarehouseId};

/// Units that can be bought now, per warehouse.
pub type Available = Vec<(WarehouseId, u64)>;

/// Epoch shards: enough that writes to other skus rarely keep a read from being cached.
const SHARDS: usize = 256;
/// At most this many skus are cached; beyond it the least used go first.
const CAPACITY: u64 = 200_000;

/// The cache; a TTL of zero turns it off (every Stocks reads the database).
#[derive(Debug, Clone, Default)]
pub struct StockCache(Option<Arc<Inner>>);

#[derive(Debug)]
struct Inner {
    entries: moka::sync::Cache<u32, Arc<Available>>,
    epochs: Box<[AtomicU64]>,
}

impl Inner {
    fn epoch(&self, sku: u32) -> &AtomicU64 {
        &self.epochs[sku as usize % SHARDS]
    }
}

impl StockCache {
    /// A cache whose entries live at most `ttl`.
    pub fn new(ttl: Duration) -> Self {
        if ttl.is_zero() {
            return Self(None);
        }
        Self(Some(Arc::new(Inner {
            entries: moka::sync::Cache::builder().max_capacity(CAPACITY).time_to_live(ttl).build(),
            epochs: (0..SHARDS).map(|_| AtomicU64::new(0)).collect(),
        })))
    }

    /// The cached answer for `sku`, or `load`'s (stored for the next reads unless a write raced it).
    pub async fn read_through<F, Fut>(&self, sku: Sku, load: F) -> Result<Available, LomsError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Available, LomsError>>,
    {
        let Some(inner) = &self.0 else { return load().await };
        let key = sku.get();
        if let Some(hit) = inner.entries.get(&key) {
            return Ok(hit.as_ref().clone());
        }
        let epoch = inner.epoch(key);
        let before = epoch.load(Ordering::Acquire);
        let loaded = load().await?;
        if epoch.load(Ordering::Acquire) == before {
            inner.entries.insert(key, Arc::new(loaded.clone()));
            // A writer that bumped the epoch between the check and the insert may have dropped the key before
            // the insert landed: drop it again rather than keep what may be the old value.
            if epoch.load(Ordering::Acquire) != before {
                inner.entries.invalidate(&key);
            }
        }
        Ok(loaded)
    }

    /// Forgets the skus a committed write changed. Call after the commit, before answering.
    pub fn changed(&self, skus: impl IntoIterator<Item = Sku>) {
        let Some(inner) = &self.0 else { return };
        for sku in skus {
            let key = sku.get();
            inner.epoch(key).fetch_add(1, Ordering::AcqRel);
            inner.entries.invalidate(&key);
        }
    }
}

/// Stock administration that drops the skus it changed from the cache, whatever the outcome (a write whose reply
/// was lost may still have committed).
#[derive(Debug)]
pub struct ForgetChangedStock {
    pub store: Arc<dyn StockStore>,
    pub cache: StockCache,
}

#[async_trait]
impl StockStore for ForgetChangedStock {
    async fn set_stock(&self, warehouse: WarehouseId, sku: Sku, on_hand: u64) -> Result<StockLevel, LomsError> {
        let set = self.store.set_stock(warehouse, sku, on_hand).await;
        self.cache.changed([sku]);
        set
    }

    async fn add_stock(&self, warehouse: WarehouseId, sku: Sku, delta: i64) -> Result<StockLevel, LomsError> {
        let added = self.store.add_stock(warehouse, sku, delta).await;
        self.cache.changed([sku]);
        added
    }

    async fn import_stock(&self, levels: &[(WarehouseId, Sku, u64)]) -> Result<usize, LomsError> {
        let imported = self.store.import_stock(levels).await;
        self.cache.changed(levels.iter().map(|(_, sku, _)| *sku));
        imported
    }

    async fn stock_levels(&self, sku: Sku) -> Result<Vec<StockLevel>, LomsError> {
        self.store.stock_levels(sku).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sku(raw: u32) -> Sku {
        Sku::try_from(raw).unwrap()
    }

    fn answer(count: u64) -> Available {
        vec![(WarehouseId::try_from(1_i64).unwrap(), count)]
    }

    #[tokio::test]
    async fn a_second_read_is_served_from_the_cache_until_a_write_drops_it() {
        let cache = StockCache::new(Duration::from_secs(60));
        let first = cache.read_through(sku(7), || async { Ok(answer(5)) }).await.unwrap();
        let cached = cache.read_through(sku(7), || async { panic!("should be cached") }).await.unwrap();
        assert_eq!((first, cached), (answer(5), answer(5)));

        cache.changed([sku(7)]);
        let reloaded = cache.read_through(sku(7), || async { Ok(answer(4)) }).await.unwrap();
        assert_eq!(reloaded, answer(4));
    }

    #[tokio::test]
    async fn a_load_that_a_write_overtook_is_not_kept() {
        let cache = StockCache::new(Duration::from_secs(60));
        let racing = cache.clone();
        // The write commits and drops the sku while the read is loading the old value.
        let stale = cache
            .read_through(sku(9), || async move {
                racing.changed([sku(9)]);
                Ok(answer(10))
            })
            .await
            .unwrap();
        assert_eq!(stale, answer(10), "the caller still gets what it read");
        let next = cache.read_through(sku(9), || async { Ok(answer(3)) }).await.unwrap();
        assert_eq!(next, answer(3), "the next read goes to the database");
    }

    #[tokio::test]
    async fn a_zero_ttl_turns_the_cache_off() {
        let cache = StockCache::new(Duration::ZERO);
        cache.read_through(sku(1), || async { Ok(answer(1)) }).await.unwrap();
        let again = cache.read_through(sku(1), || async { Ok(answer(2)) }).await.unwrap();
        assert_eq!(again, answer(2));
    }

    #[tokio::test]
    async fn entries_expire_after_the_ttl() {
        let cache = StockCache::new(Duration::from_millis(50));
        cache.read_through(sku(2), || async { Ok(answer(1)) }).await.unwrap();
        // Bounded poll (moka expires lazily): the entry must be gone well within seconds of its TTL.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let now = cache.read_through(sku(2), || async { Ok(answer(2)) }).await.unwrap();
            if now == answer(2) {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "the entry outlived its TTL by seconds");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
