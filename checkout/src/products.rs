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

/// How often the cache answered without asking ProductService.
#[derive(Debug, Default)]
pub struct CacheStats {
    hits: AtomicU64,
    misses: AtomicU64,
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
}

/// Cached, rate-limited product look-ups.
#[derive(Debug, Clone)]
pub struct ProductCatalog {
    client: ProductClient,
    // None when caching is switched off (a TTL of zero).
    cache: Option<Cache<Sku, Product>>,
    stats: Arc<CacheStats>,
}

impl ProductCatalog {
    /// Look-ups through `client`, cached for `ttl` (zero: not cached), at most `capacity` products.
    pub fn new(client: ProductClient, ttl: Duration, capacity: u64) -> Self {
        let cache = (!ttl.is_zero()).then(|| Cache::builder().time_to_live(ttl).max_capacity(capacity).build());
        Self { client, cache, stats: Arc::default() }
    }

    /// The hit and miss counters.
    pub fn stats(&self) -> Arc<CacheStats> {
        Arc::clone(&self.stats)
    }

    /// The product's name and price. Concurrent misses of one sku share one ProductService call.
    pub async fn product(&self, sku: Sku, deadline: Deadline) -> Result<Product, Error> {
        let Some(cache) = &self.cache else {
            self.stats.misses.fetch_add(1, Ordering::Relaxed);
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
        let counter = if entry.is_fresh() { &self.stats.misses } else { &self.stats.hits };
        counter.fetch_add(1, Ordering::Relaxed);
        Ok(entry.into_value())
    }
}
