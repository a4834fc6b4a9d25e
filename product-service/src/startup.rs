//! Builds the server (bound, so its address is known) and runs it until told to stop.

use std::{net::SocketAddr, sync::Arc};

use anyhow::Context;
use minizon_common::{
    grpc::{GrpcServer, set_health},
    metrics::MetricsEndpoint,
};
use minizon_proto::product::product_service_server::ProductServiceServer;
use tokio_util::sync::CancellationToken;

use crate::{catalog::Catalog, config::Config, grpc::ProductServiceHandler, requests::RequestLog};

/// The health-service name of the ProductService contract.
pub const SERVICE_NAME: &str = "route256.product.ProductService";

/// A ProductService that is listening but not yet serving.
#[derive(Debug)]
pub struct Application {
    server: GrpcServer,
    metrics: Option<MetricsEndpoint>,
    requests: Arc<RequestLog>,
}

impl Application {
    /// Loads the configured catalog (or the bundled one) and binds the listen address.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let catalog = match &config.catalog {
            Some(path) => Catalog::load(path).with_context(|| format!("load the catalog {}", path.display()))?,
            None => Catalog::bundled().context("load the bundled catalog")?,
        };
        Self::with_catalog(config, catalog).await
    }

    /// Serves `catalog` instead of the configured one (tests and embedders bring their own products).
    pub async fn with_catalog(config: Config, catalog: Catalog) -> anyhow::Result<Self> {
        tracing::info!(products = catalog.len(), rate_limit = ?config.rate_limit, latency = ?config.latency, "catalog loaded");
        let metrics = MetricsEndpoint::bind_if(config.metrics_addr)
            .await
            .with_context(|| format!("bind the metrics endpoint to {}", config.metrics_addr))?;
        let requests = Arc::new(RequestLog::default());
        let handler = ProductServiceHandler::new(&config, Arc::new(catalog), Arc::clone(&requests));
        let mut server = GrpcServer::bind(config.listen)
            .await
            .with_context(|| format!("bind the gRPC server to {}", config.listen))?;
        server.advertise(&[SERVICE_NAME]);
        server.routes().add_service(ProductServiceServer::new(handler));
        // Nothing this service depends on can go down: it is serving as soon as it listens.
        set_health(&server.health(), &[SERVICE_NAME], true).await;
        Ok(Self { server, metrics, requests })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// The address of the `/metrics` endpoint, when this server serves one.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(MetricsEndpoint::local_addr)
    }

    /// What the server has received: a client's request rate can be checked against it.
    pub fn requests(&self) -> Arc<RequestLog> {
        Arc::clone(&self.requests)
    }

    /// Serves until `shutdown` is cancelled, then drains in-flight requests.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let metrics = self.metrics.map(|endpoint| endpoint.spawn(shutdown.clone()));
        let served = self.server.serve(shutdown.clone()).await.context("serve gRPC");
        shutdown.cancel();
        if let Some(metrics) = metrics {
            let _ = metrics.await;
        }
        served
    }
}
