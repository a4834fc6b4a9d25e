//! Product look-ups as the use cases see them: a TTL cache in front of the rate-limited ProductService client, so
//! that repeated listings cost no quota, with hit and miss counters.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use moka::future::Cache;

use crate::{
    clients::{Deadline, ProductClient},
    domain::{Product, Sku},
    error::Error,
};

/// How often the cache answered without asking ProductService (also exported as Prometheus counters).
#[derive(Debug)]
pub struct CacheStats {
    hits: AtomicU64,
    misses: AtomicU64,
    hits_total: metrics::Counter,
    misses_total: metrics::Counter,
}

impl Default for CacheStats {
    fn default() -> Self {
        Self {
            hits: AtomicU64::default(),
            misses: AtomicU64::default(),
            hits_total: metrics::counter!(crate::series::CACHE_HITS),
            misses_total: metrics::counter!(crate::series::CACHE_MISSES),
        }
    }
}

impl CacheStats {
    /// Look-ups answered from the cache (including those that waited for a concurrent fetch of the same sku).
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// Look-ups that fetched from ProductService.
    pub fn misses(&self) -> u64 {
        self.misses.load(Ordering::Relaxed)
    }

    fn hit(&self) {
        self.hits.fetch_add(1, Ordering::Relaxed);
        self.hits_total.increment(1);
    }

    fn miss(&self) {
        self.misses.fetch_add(1, Ordering::Relaxed);
        self.misses_total.increment(1);
    }
}

/// Cached, rate-limited product look-ups.
#[derive(Debug, Clone)]
pub struct ProductCatalog {
    client: ProductClient,
    // None when caching is switched off (a TTL of zero).
    cache: Option<Cache<Sku, Product>>,
    stats: Arc<CacheStats>,
    size: metrics::Gauge,
}

impl ProductCatalog {
    /// Look-ups through `client`, cached for `ttl` (zero: not cached), at most `capacity` products.
    pub fn new(client: ProductClient, ttl: Duration, capacity: u64) -> Self {
        let cache = (!ttl.is_zero()).then(|| Cache::builder().time_to_live(ttl).max_capacity(capacity).build());
        Self { client, cache, stats: Arc::default(), size: metrics::gauge!(crate::series::CACHE_ENTRIES) }
    }

    /// The hit and miss counters.
    pub fn stats(&self) -> Arc<CacheStats> {
        Arc::clone(&self.stats)
    }

    /// The product's name and price. Concurrent misses of one sku share one ProductService call.
    pub async fn product(&self, sku: Sku, deadline: Deadline) -> Result<Product, Error> {
        let Some(cache) = &self.cache else {
            self.stats.miss();
            return self.client.get_product(sku, deadline).await;
        };
        let entry = match cache.entry(sku).or_try_insert_with(self.client.get_product(sku, deadline)).await {
            Ok(entry) => entry,
            Err(shared) => match Arc::unwrap_or_clone(shared) {
                // We may have waited on a fetch started by a request with a shorter deadline: with time left,
                // fetch once more ourselves rather than fail on someone else's deadline.
                Error::DeadlineExceeded { .. } if !deadline.has_passed() => cache
                    .entry(sku)
                    .or_try_insert_with(self.client.get_product(sku, deadline))
                    .await
                    .map_err(Arc::unwrap_or_clone)?,
                error => return Err(error),
            },
        };
        if entry.is_fresh() {
            self.stats.miss();
            // moka's count is an atomic read (approximate until its housekeeping runs): cheap enough per fetch.
            self.size.set(cache.entry_count() as f64);
        } else {
            self.stats.hit();
        }
        Ok(entry.into_value())
    }
}
