//! ProductService settings, from flags and environment variables; the defaults serve the bundled catalog.

use std::{net::SocketAddr, num::NonZeroU32, path::PathBuf, time::Duration};

use clap::Parser;
use secrecy::SecretString;

/// The token the local ProductService and Checkout both default to, so that the two run together unconfigured.
pub const DEFAULT_TOKEN: &str = "testtoken";

/// ProductService server settings.
#[derive(Debug, Clone, Parser)]
#[command(name = "product-service", about = "A local route256.product.ProductService serving a catalog file")]
pub struct Config {
    /// Address the gRPC server (ProductService, health, reflection) listens on; port 0 picks a free port.
    #[arg(long, env = "PRODUCT_SERVICE_LISTEN", default_value = "127.0.0.1:50053")]
    pub listen: SocketAddr,

    /// The token every request must carry in its `token` field.
    #[arg(long, env = "PRODUCT_SERVICE_TOKEN", default_value = DEFAULT_TOKEN, hide_env_values = true)]
    pub token: SecretString,

    /// Catalog file (a JSON array of {sku, name, price}); without it, the bundled samples/catalog.json is served.
    #[arg(long, env = "PRODUCT_SERVICE_CATALOG")]
    pub catalog: Option<PathBuf>,

    /// Delay added to every answer, to stand in for a remote service (e.g. `30ms`).
    #[arg(long, env = "PRODUCT_SERVICE_LATENCY", default_value = "0s", value_parser = humantime::parse_duration)]
    pub latency: Duration,

    /// Requests per second served before answering RESOURCE_EXHAUSTED, like the real service's quota; none when
    /// unset.
    #[arg(long, env = "PRODUCT_SERVICE_RATE_LIMIT")]
    pub rate_limit: Option<NonZeroU32>,

    /// Address of the Prometheus `/metrics` endpoint (port 0 picks a free port); `off` serves none.
    #[arg(long, env = "PRODUCT_SERVICE_METRICS_ADDR", default_value = "127.0.0.1:9465")]
    pub metrics_addr: minizon_common::metrics::MetricsAddr,

    #[command(flatten)]
    pub log: minizon_common::telemetry::LogArgs,
}

impl Config {
    /// The defaults on a free port: what tests and embedders start from.
    pub fn on_free_port() -> Self {
        let mut config = Self::parse_from(["product-service"]);
        config.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        // One process may host several servers (tests, the embedded mode): it serves its metrics once, itself.
        config.metrics_addr = minizon_common::metrics::MetricsAddr::OFF;
        config
    }
}
