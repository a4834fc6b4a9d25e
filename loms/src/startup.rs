//! Building and running a LOMS server: storage, gRPC services, health, the unpaid-order sweep.

use std::{net::SocketAddr, time::Duration};

use minizon_common::{
    grpc::{GrpcServer, set_health},
    metrics::MetricsEndpoint,
};
use minizon_proto::loms::{loms_admin_v1_server::LomsAdminV1Server, loms_v1_server::LomsV1Server};
use tokio_util::sync::CancellationToken;

use crate::{
    config::Config,
    grpc::{AdminService, AdminToken, OrdersService},
    jobs::unpaid_timeout::UnpaidTimeoutJob,
    storage::Storage,
};

/// gRPC service names whose health follows the database's.
const SERVICES: &[&str] = &["loms_v1.LomsV1", "loms_v1.LomsAdminV1"];

/// The health entry of the outbox relay: NOT_SERVING while it cannot publish or lags more than
/// [`crate::outbox::HEALTHY_LAG`]. Separate from [`SERVICES`]: requests do not need Kafka.
pub const OUTBOX_HEALTH: &str = "loms.OutboxRelay";

/// A LOMS server that is bound and migrated, ready to serve.
#[derive(Debug)]
pub struct Application {
    server: GrpcServer,
    metrics: Option<MetricsEndpoint>,
    storage: Storage,
    config: Config,
}

impl Application {
    /// Connects to (and migrates) the database and binds the listen address.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        // First, so that the series registered while starting (pool gauges) have a recorder.
        let metrics = MetricsEndpoint::bind_if(config.metrics_addr).await?;
        crate::series::describe();
        let storage = Storage::connect(
            &config.database_url,
            config.db_max_connections,
            config.stock_cache_ttl,
            config.write_batch,
        )
        .await?;
        let mut server = GrpcServer::bind(config.listen).await?;
        server.advertise(SERVICES);
        server
            .routes()
            .add_service(LomsV1Server::new(OrdersService::new(storage.orders(), config.payment_timeout)))
            .add_service(LomsAdminV1Server::with_interceptor(
                AdminService::new(storage.stocks(), storage.orders()),
                AdminToken::new(config.admin_token.clone()),
            ));
        Ok(Self { server, metrics, storage, config })
    }

    /// The address the server listens on (the real port when configured with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// The address of the `/metrics` endpoint, when this server serves one.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(MetricsEndpoint::local_addr)
    }

    /// Serves until `shutdown` is cancelled, then drains requests and stops the background jobs.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Self { server, metrics, storage, config } = self;
        let metrics = metrics.map(|endpoint| endpoint.spawn(shutdown.clone()));
        let health = server.health();
        set_health(&health, SERVICES, true).await;
        let probe = storage.clone();
        let health_watch = minizon_common::db::watch(
            move || {
                let probe = probe.clone();
                async move { probe.ping().await }
            },
            health.clone(),
            SERVICES,
            Duration::from_secs(2),
            shutdown.clone(),
        );
        // Dropped (stopped) if anything below fails to start.
        let relay =
            config.outbox.enabled.then(|| crate::outbox::spawn(storage.outbox(), &config.outbox)).transpose()?;
        if let Some(relay) = &relay {
            tokio::spawn(report_relay_health(relay.watch(), health.clone()));
        }
        let sweeper = UnpaidTimeoutJob::start(storage.orders(), &config.sweep_schedule, config.sweep_batch).await?;

        let served = server.serve(shutdown.clone()).await;
        // Whatever ended serving, stop the rest too.
        shutdown.cancel();
        sweeper.shutdown().await;
        // Last, so that the events of the final requests and sweep go out with the relay's flush.
        if let Some(relay) = relay {
            relay.shutdown().await;
        }
        let _ = health_watch.await;
        if let Some(metrics) = metrics {
            let _ = metrics.await;
        }
        storage.close().await;
        tracing::info!("LOMS stopped");
        served.map_err(Into::into)
    }
}

/// Mirrors the relay's status into the health service until the relay stops.
async fn report_relay_health(
    mut status: tokio::sync::watch::Receiver<crate::outbox::RelayStatus>,
    health: tonic_health::server::HealthReporter,
) {
    use tonic_health::ServingStatus;
    let mut reported = None;
    loop {
        let healthy = status.borrow_and_update().is_healthy();
        if reported != Some(healthy) {
            let serving = if healthy { ServingStatus::Serving } else { ServingStatus::NotServing };
            health.set_service_status(OUTBOX_HEALTH, serving).await;
            reported = Some(healthy);
        }
        if status.changed().await.is_err() {
            return;
        }
    }
}
