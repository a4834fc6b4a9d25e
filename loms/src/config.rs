//! LOMS settings, from flags and environment variables; the defaults run against a local PostgreSQL.

use std::{net::SocketAddr, num::NonZeroUsize, time::Duration};

use clap::Parser;
use secrecy::SecretString;

/// LOMS server settings.
#[derive(Debug, Clone, Parser)]
#[command(name = "loms", about = "LOMS: orders, stock and reservations over gRPC")]
pub struct Config {
    /// Address the gRPC server (LomsV1, LomsAdminV1, health, reflection) listens on; port 0 picks a free port.
    #[arg(long, env = "LOMS_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,

    /// Database URL. The database is created if it does not exist, and migrated at start.
    #[arg(long, env = "LOMS_DATABASE_URL", default_value = "postgres://postgres@127.0.0.1:5432/loms")]
    pub database_url: String,

    /// Most database connections this process keeps open.
    #[arg(long, env = "LOMS_DB_MAX_CONNECTIONS", default_value_t = 16)]
    pub db_max_connections: u32,

    /// How long a Stocks answer may be served from this process's cache. This process's own writes always show at
    /// once; writes of other replicas (and of `loms stock import`) show within this time. Stocks is advisory (the
    /// reservation decides), so a few seconds are safe; 0 turns the cache off (what each TTL buys:
    /// docs/benchmarks-history.md, "Stocks cache").
    #[arg(long, env = "LOMS_STOCKS_CACHE_TTL", default_value = "5s", value_parser = humantime::parse_duration)]
    pub stock_cache_ttl: Duration,

    /// How long a reserved order may stay unpaid before LOMS cancels it.
    #[arg(long, env = "LOMS_PAYMENT_TIMEOUT", default_value = "10m", value_parser = humantime::parse_duration)]
    pub payment_timeout: Duration,

    /// When the unpaid-order sweep runs (cron with seconds: sec min hour day month weekday).
    #[arg(long, env = "LOMS_SWEEP_SCHEDULE", default_value = "* * * * * *")]
    pub sweep_schedule: String,

    /// Most overdue orders one sweep transaction cancels; a sweep runs batches until none are due.
    #[arg(long, env = "LOMS_SWEEP_BATCH", default_value_t = 500)]
    pub sweep_batch: u32,

    /// Bearer token of the admin service. Without it the admin service refuses every call.
    #[arg(long, env = "LOMS_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<SecretString>,

    /// Worker threads of the `loms serve` process's runtime (a process that embeds LOMS runs it on its own). One by
    /// default: a call costs LOMS tens of microseconds of CPU and waits on the database for the rest, and with one
    /// worker the committer answers a batch's callers and sends the next batch without waking another thread for
    /// each (on the 2-core benchmark machine CreateOrder ran 9–14 % faster at 1–128 clients than with a worker per
    /// core, docs/benchmarks-history.md run 17). The price is the peak of calls that never wait on the database
    /// (the no-op health check: ~40,000/s against ~53,000 with two): a replica that mostly serves reads can be
    /// given more.
    #[arg(long, env = "LOMS_WORKER_THREADS", default_value = "1")]
    pub worker_threads: NonZeroUsize,

    /// Group commit of CreateOrder: how many calls one transaction takes, and how long it may wait for them.
    #[command(flatten)]
    pub write_batch: crate::storage::BatchConfig,

    /// The outbox relay: Kafka brokers, topic, batching, retention.
    #[command(flatten)]
    pub outbox: crate::outbox::RelayConfig,

    /// Address of the Prometheus `/metrics` endpoint (port 0 picks a free port); `off` serves none.
    #[arg(long, env = "LOMS_METRICS_ADDR", default_value = "127.0.0.1:9461")]
    pub metrics_addr: minizon_common::metrics::MetricsAddr,

    #[command(flatten)]
    pub log: minizon_common::telemetry::LogArgs,
}

impl Config {
    /// The defaults, for a given database, on a free port: what tests and embedders start from.
    pub fn for_database(database_url: impl Into<String>) -> Self {
        let mut config = Self::parse_from(["loms"]);
        config.database_url = database_url.into();
        config.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        // One process may host several servers (tests, the embedded mode): it serves its metrics once, itself.
        config.metrics_addr = minizon_common::metrics::MetricsAddr::OFF;
        // No broker needed: tests that want events turn the relay on and point it at theirs.
        config.outbox.enabled = false;
        config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_runs_on_one_worker_thread_unless_told_otherwise() {
        assert_eq!(Config::parse_from(["loms"]).worker_threads.get(), 1);
        assert_eq!(Config::parse_from(["loms", "--worker-threads", "4"]).worker_threads.get(), 4);
    }

    #[test]
    fn zero_worker_threads_is_refused_with_the_setting_named() {
        let error = Config::try_parse_from(["loms", "--worker-threads", "0"]).unwrap_err().to_string();
        assert!(error.contains("--worker-threads"), "{error}");
    }
}
