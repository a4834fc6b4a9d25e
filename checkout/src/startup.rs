//! Builds the server (database ready, clients set up, listener bound so its address is known) and runs it until
//! told to stop.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use minizon_common::{grpc::GrpcServer, metrics::MetricsEndpoint};
use minizon_proto::checkout::checkout_v1_server::CheckoutV1Server;
use tokio_util::sync::CancellationToken;

use crate::{
    clients::{LomsClient, ProductClient, loms::LomsClientSettings, product::ProductClientSettings},
    config::Config,
    grpc::CheckoutHandler,
    products::{CacheStats, ProductCatalog},
    service::Checkout,
    storage::Storage,
};

/// The health-service name of the Checkout contract.
pub const SERVICE_NAME: &str = "checkout_v1.CheckoutV1";

/// How often the database is pinged for the health service.
const HEALTH_EVERY: Duration = Duration::from_secs(5);

/// How often the product cache's counters are logged (when they changed).
const CACHE_LOG_EVERY: Duration = Duration::from_secs(60);

/// A Checkout server that is listening but not yet serving.
#[derive(Debug)]
pub struct Application {
    server: GrpcServer,
    metrics: Option<MetricsEndpoint>,
    storage: Storage,
    cache_stats: Arc<CacheStats>,
}

impl Application {
    /// Creates and migrates the database (PostgreSQL or SQLite, as its URL says), sets up the (lazily connecting)
    /// clients of LOMS and ProductService, and binds the listen address. LOMS and ProductService need not be up yet.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        // First, so that the series registered while starting (pool gauges, cache counters) have a recorder.
        let metrics = MetricsEndpoint::bind_if(config.metrics_addr)
            .await
            .with_context(|| format!("bind the metrics endpoint to {}", config.metrics_addr))?;
        crate::series::describe();
        let storage = Storage::connect(&config.database_url, config.db_max_connections).await?;

        let loms = LomsClient::new(&LomsClientSettings {
            url: config.loms_url.clone(),
            timeout: config.loms_timeout,
            attempts: config.downstream_attempts,
        })
        .with_context(|| format!("LOMS URL {:?}", config.loms_url))?;
        let product_client = ProductClient::new(&ProductClientSettings {
            url: config.product_url.clone(),
            token: config.product_token.clone(),
            timeout: config.product_timeout,
            rate_limit: config.product_rate_limit,
            burst: config.product_rate_burst.unwrap_or(config.product_rate_limit),
            attempts: config.downstream_attempts,
        })
        .with_context(|| format!("ProductService URL {:?}", config.product_url))?;
        let products = ProductCatalog::new(product_client, config.product_cache_ttl, config.product_cache_capacity);
        let cache_stats = products.stats();
        let checkout = Checkout::new(storage.carts(), loms, products, config.product_lookups_per_request);

        let mut server = GrpcServer::bind(config.listen)
            .await
            .with_context(|| format!("bind the gRPC server to {}", config.listen))?;
        server.advertise(&[SERVICE_NAME]);
        server.routes().add_service(CheckoutV1Server::new(CheckoutHandler::new(checkout, config.request_timeout)));
        tracing::info!(
            loms = %config.loms_url,
            product_service = %config.product_url,
            rate_limit = config.product_rate_limit.get(),
            cache_ttl = ?config.product_cache_ttl,
            "checkout ready"
        );
        Ok(Self { server, metrics, storage, cache_stats })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// The address of the `/metrics` endpoint, when this server serves one.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(MetricsEndpoint::local_addr)
    }

    /// The product cache's hit and miss counters.
    pub fn cache_stats(&self) -> Arc<CacheStats> {
        Arc::clone(&self.cache_stats)
    }

    /// Serves until `shutdown` is cancelled, then drains in-flight requests and closes the database.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let probe = self.storage.clone();
        let health = minizon_common::db::watch(
            move || {
                let probe = probe.clone();
                async move { probe.ping().await }
            },
            self.server.health(),
            &[SERVICE_NAME],
            HEALTH_EVERY,
            shutdown.clone(),
        );
        let cache_log = tokio::spawn(log_cache_stats(self.cache_stats, shutdown.clone()));
        let metrics = self.metrics.map(|endpoint| endpoint.spawn(shutdown.clone()));
        let served = self.server.serve(shutdown.clone()).await.context("serve gRPC");
        // The server can also stop on its own (an error): the background tasks must stop with it.
        shutdown.cancel();
        let _ = tokio::join!(health, cache_log);
        if let Some(metrics) = metrics {
            let _ = metrics.await;
        }
        self.storage.close().await;
        served
    }
}

/// Logs the cache's counters now and then, when they changed.
async fn log_cache_stats(stats: Arc<CacheStats>, shutdown: CancellationToken) {
    let mut logged = (0, 0);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(CACHE_LOG_EVERY) => {}
        }
        let now = (stats.hits(), stats.misses());
        if now != logged {
            tracing::info!(hits = now.0, misses = now.1, "product cache");
            logged = now;
        }
    }
}
