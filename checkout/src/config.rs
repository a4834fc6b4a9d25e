//! Checkout settings, from flags and environment variables; the defaults run against a local PostgreSQL, LOMS and
//! ProductService on their default addresses.

use std::{
    net::SocketAddr,
    num::{NonZeroU32, NonZeroUsize},
    time::Duration,
};

use clap::Parser;
use secrecy::SecretString;

/// Checkout server settings.
#[derive(Debug, Clone, Parser)]
#[command(name = "checkout", about = "Checkout: carts and purchase over gRPC")]
pub struct Config {
    /// Address the gRPC server (CheckoutV1, health, reflection) listens on; port 0 picks a free port.
    #[arg(long, env = "CHECKOUT_LISTEN", default_value = "127.0.0.1:50052")]
    pub listen: SocketAddr,

    /// Database URL: `postgres://…` (PostgreSQL) or `sqlite://path/to/carts.db` (SQLite; `sqlite::memory:` keeps
    /// carts in memory only). The database is created if it does not exist, and migrated at start.
    #[arg(long, env = "CHECKOUT_DATABASE_URL", default_value = "postgres://postgres@127.0.0.1:5432/checkout")]
    pub database_url: String,

    /// Most database connections this process keeps open (on SQLite: one writer, the rest readers).
    #[arg(long, env = "CHECKOUT_DB_MAX_CONNECTIONS", default_value_t = 16)]
    pub db_max_connections: u32,

    /// LOMS address.
    #[arg(long, env = "CHECKOUT_LOMS_URL", default_value = "http://127.0.0.1:50051")]
    pub loms_url: String,

    /// The longest one LOMS call may take (the caller's deadline may cut it shorter).
    #[arg(long, env = "CHECKOUT_LOMS_TIMEOUT", default_value = "3s", value_parser = humantime::parse_duration)]
    pub loms_timeout: Duration,

    /// ProductService address (the local one by default; the external route256 one works unchanged).
    #[arg(long, env = "CHECKOUT_PRODUCT_URL", default_value = "http://127.0.0.1:50053")]
    pub product_url: String,

    /// The token ProductService requires.
    #[arg(long, env = "CHECKOUT_PRODUCT_TOKEN", default_value = "testtoken", hide_env_values = true)]
    pub product_token: SecretString,

    /// The longest one ProductService call may take (the caller's deadline may cut it shorter).
    #[arg(long, env = "CHECKOUT_PRODUCT_TIMEOUT", default_value = "2s", value_parser = humantime::parse_duration)]
    pub product_timeout: Duration,

    /// ProductService requests per second, across every request of this process (the external service's quota).
    #[arg(long, env = "CHECKOUT_PRODUCT_RATE_LIMIT", default_value = "10")]
    pub product_rate_limit: NonZeroU32,

    /// ProductService requests that may go at once after a quiet period; defaults to the rate limit. The
    /// long-run rate stays the rate limit.
    #[arg(long, env = "CHECKOUT_PRODUCT_RATE_BURST")]
    pub product_rate_burst: Option<NonZeroU32>,

    /// Product look-ups one ListCart runs at once.
    #[arg(long, env = "CHECKOUT_PRODUCT_LOOKUPS_PER_REQUEST", default_value = "5")]
    pub product_lookups_per_request: NonZeroUsize,

    /// How long a product's name and price are reused before ProductService is asked again; 0s disables the
    /// cache.
    #[arg(long, env = "CHECKOUT_PRODUCT_CACHE_TTL", default_value = "60s", value_parser = humantime::parse_duration)]
    pub product_cache_ttl: Duration,

    /// Most products the cache holds.
    #[arg(long, env = "CHECKOUT_PRODUCT_CACHE_CAPACITY", default_value_t = 100_000)]
    pub product_cache_capacity: u64,

    /// Attempts per idempotent downstream call (the first included), with backoff, within the deadline.
    #[arg(long, env = "CHECKOUT_DOWNSTREAM_ATTEMPTS", default_value_t = 3)]
    pub downstream_attempts: usize,

    /// The longest a request may take when its caller set no (or a longer) deadline.
    #[arg(long, env = "CHECKOUT_REQUEST_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,

    /// Address of the Prometheus `/metrics` endpoint (port 0 picks a free port); `off` serves none.
    #[arg(long, env = "CHECKOUT_METRICS_ADDR", default_value = "127.0.0.1:9462")]
    pub metrics_addr: minizon_common::metrics::MetricsAddr,

    #[command(flatten)]
    pub log: minizon_common::telemetry::LogArgs,
}

impl Config {
    /// The defaults, for a given database, on a free port: what tests and embedders start from.
    pub fn for_database(database_url: impl Into<String>) -> Self {
        let mut config = Self::parse_from(["checkout"]);
        config.database_url = database_url.into();
        config.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        // One process may host several servers (tests, the embedded mode): it serves its metrics once, itself.
        config.metrics_addr = minizon_common::metrics::MetricsAddr::OFF;
        config
    }
}
