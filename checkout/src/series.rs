//! Checkout's Prometheus series (besides the gRPC server and client ones); docs/operations.md lists them all.

/// Product look-ups answered from the cache.
pub const CACHE_HITS: &str = "checkout_product_cache_hits_total";
/// Product look-ups that asked ProductService.
pub const CACHE_MISSES: &str = "checkout_product_cache_misses_total";
/// Products in the cache (updated as products are fetched).
pub const CACHE_ENTRIES: &str = "checkout_product_cache_entries";
/// Time a ProductService call waited for its turn at the process-wide rate limiter.
pub const RATE_LIMITER_WAIT: &str = "checkout_product_rate_limiter_wait_seconds";

/// Registers the help texts (a no-op until the recorder is installed, so call it after binding the endpoint).
pub fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(CACHE_HITS, "Product look-ups answered from the product cache.");
    describe_counter!(CACHE_MISSES, "Product look-ups that went to ProductService.");
    describe_gauge!(CACHE_ENTRIES, "Products held by the product cache (refreshed on every fetch).");
    describe_histogram!(
        RATE_LIMITER_WAIT,
        Unit::Seconds,
        "Time a ProductService call waited at the process-wide rate limiter (its quota)."
    );
    minizon_common::db::describe_metrics();
}
