//! `minizon dev`: LOMS, Checkout, Notifications and the local ProductService in one process, on SQLite files and
//! an embedded Kafka-protocol broker, with the bundled catalog and sample stock. Nothing to install but Rust.

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context as _;
use clap::Args;
use loms::outbox::OutboxSource;
use minizon_common::{
    metrics::{MetricsAddr, MetricsEndpoint},
    telemetry::LogArgs,
};
use minizon_proto::loms::{ImportStockRequest, ListStockRequest, loms_admin_v1_client::LomsAdminV1Client};
use secrecy::{ExposeSecret as _, SecretString};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::{metadata::MetadataValue, transport::Channel};

use crate::{broker::EmbeddedBroker, redelivery::republish_unhandled};

/// The sample stock loaded into a new data directory (warehouses 1–3, skus of the bundled catalog).
const SAMPLE_STOCK: &str = include_str!("../../samples/stock.csv");

/// Settings of the embedded stack. Every address can be port 0 (the real one is printed).
#[derive(Debug, Clone, Args)]
pub struct DevConfig {
    /// Folder of the SQLite files; a second start on it continues where the first left off.
    #[arg(long, env = "MINIZON_DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,

    /// Keep every database in memory instead (nothing survives a restart).
    #[arg(long)]
    pub in_memory: bool,

    /// LOMS gRPC address (LomsV1 and LomsAdminV1).
    #[arg(long, env = "LOMS_LISTEN", default_value = "127.0.0.1:50051")]
    pub loms_listen: SocketAddr,

    /// Checkout gRPC address.
    #[arg(long, env = "CHECKOUT_LISTEN", default_value = "127.0.0.1:50052")]
    pub checkout_listen: SocketAddr,

    /// ProductService gRPC address.
    #[arg(long, env = "PRODUCT_SERVICE_LISTEN", default_value = "127.0.0.1:50053")]
    pub product_listen: SocketAddr,

    /// Address of the one Prometheus `/metrics` endpoint of the whole stack; `off` serves none.
    #[arg(long, env = "MINIZON_METRICS_ADDR", default_value = "127.0.0.1:9464")]
    pub metrics_addr: MetricsAddr,

    /// Bootstrap address of the embedded Kafka-protocol broker.
    #[arg(long, env = "KAFKA_LISTEN", default_value = "127.0.0.1:9092")]
    pub kafka_listen: SocketAddr,

    /// Bearer token of LOMS's admin service.
    #[arg(long, env = "LOMS_ADMIN_TOKEN", default_value = "dev-admin-token", hide_env_values = true)]
    pub admin_token: SecretString,

    /// Token ProductService expects and Checkout sends.
    #[arg(long, env = "PRODUCT_SERVICE_TOKEN", default_value = "testtoken", hide_env_values = true)]
    pub product_token: SecretString,

    /// How long a reserved order may stay unpaid.
    #[arg(long, env = "LOMS_PAYMENT_TIMEOUT", default_value = "10m", value_parser = humantime::parse_duration)]
    pub payment_timeout: Duration,

    #[command(flatten)]
    pub log: LogArgs,
}

/// The addresses the stack listens on.
#[derive(Debug, Clone, Copy)]
pub struct Addresses {
    pub loms: SocketAddr,
    pub checkout: SocketAddr,
    pub product: SocketAddr,
    pub kafka: SocketAddr,
    /// The `/metrics` endpoint, when one is served.
    pub metrics: Option<SocketAddr>,
}

/// One service running on its own shutdown token, so the stack can stop them in order.
#[derive(Debug)]
struct Running {
    name: &'static str,
    stop: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Running {
    fn spawn<F>(name: &'static str, run: impl FnOnce(CancellationToken) -> F) -> Self
    where
        F: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(stop.clone()));
        Self { name, stop, task }
    }

    async fn stop(self) -> anyhow::Result<()> {
        self.stop.cancel();
        self.task
            .await
            .with_context(|| format!("{} panicked", self.name))?
            .with_context(|| format!("{} failed", self.name))
    }
}

/// The running stack.
#[derive(Debug)]
pub struct DevStack {
    addresses: Addresses,
    broker: EmbeddedBroker,
    // In stop order: the entry points first, LOMS (whose relay flushes the outbox) before Notifications.
    services: Vec<Running>,
}

impl DevStack {
    /// Starts every part, migrates the databases and loads the sample stock into an empty LOMS.
    pub async fn start(config: &DevConfig) -> anyhow::Result<Self> {
        let database = |name: &str| -> anyhow::Result<String> {
            if config.in_memory {
                return Ok("sqlite::memory:".to_owned());
            }
            std::fs::create_dir_all(&config.data_dir)
                .with_context(|| format!("create the data directory {}", config.data_dir.display()))?;
            Ok(format!("sqlite://{}", config.data_dir.join(format!("{name}.db")).display()))
        };

        // Before the services, so that everything they register lands in the one recorder this endpoint serves.
        let metrics = MetricsEndpoint::bind_if(config.metrics_addr)
            .await
            .with_context(|| format!("bind the metrics endpoint to {}", config.metrics_addr))?;
        let mut loms_config = loms::Config::for_database(database("loms")?);
        let broker = EmbeddedBroker::start(
            config.kafka_listen,
            &[&loms_config.outbox.topic, &notifications::Config::for_database("", "").dead_letter_topic],
        )
        .await?;
        let kafka = broker.bootstrap().to_string();

        loms_config.listen = config.loms_listen;
        loms_config.payment_timeout = config.payment_timeout;
        loms_config.admin_token = Some(config.admin_token.clone());
        loms_config.outbox.enabled = true;
        loms_config.outbox.kafka_brokers = kafka.clone();
        let loms = loms::Application::build(loms_config).await.context("start LOMS")?;

        let mut product_config = product_service::Config::on_free_port();
        product_config.listen = config.product_listen;
        product_config.token = config.product_token.clone();
        let product = product_service::Application::build(product_config).await.context("start ProductService")?;

        let mut checkout_config = checkout::Config::for_database(database("checkout")?);
        checkout_config.listen = config.checkout_listen;
        checkout_config.loms_url = format!("http://{}", loms.local_addr());
        checkout_config.product_url = format!("http://{}", product.local_addr());
        checkout_config.product_token = config.product_token.clone();
        let checkout = checkout::Application::build(checkout_config).await.context("start Checkout")?;

        let mut notifications_config = notifications::Config::for_database(database("notifications")?, kafka);
        // The store's staff channel, to the log as well, so that a demo shows what pickers would be told.
        notifications_config.staff_sinks = vec![notifications::SinkKind::Log];
        let notifications =
            notifications::Application::build(notifications_config).await.context("start Notifications")?;
        if !config.in_memory {
            // Before the relay runs: what the last run's broker lost is published again (see `redelivery`).
            let outbox = OutboxSource::Sqlite {
                pools: minizon_common::db::connect_sqlite(&database("loms")?, 1).await.context("open LOMS's outbox")?,
                written: Arc::default(),
            };
            let republished = republish_unhandled(&outbox, notifications.processed_events()).await;
            if let OutboxSource::Sqlite { pools, .. } = &outbox {
                pools.close().await;
            }
            republished?;
        }

        let addresses = Addresses {
            loms: loms.local_addr(),
            checkout: checkout.local_addr(),
            product: product.local_addr(),
            kafka: broker.bootstrap(),
            metrics: metrics.as_ref().map(MetricsEndpoint::local_addr),
        };
        let mut services = vec![
            Running::spawn("Checkout", |stop| checkout.run_until_stopped(stop)),
            Running::spawn("ProductService", |stop| product.run_until_stopped(stop)),
            Running::spawn("LOMS", |stop| loms.run_until_stopped(stop)),
            Running::spawn("Notifications", |stop| notifications.run_until_stopped(stop)),
        ];
        if let Some(metrics) = metrics {
            // Last in the stop order: it reports on the others until they are gone.
            services.push(Running::spawn("metrics", |stop| async move { Ok(metrics.serve(stop).await?) }));
        }
        let stack = Self { addresses, broker, services };
        seed_stock(addresses.loms, &config.admin_token).await?;
        Ok(stack)
    }

    /// Where each part listens.
    pub fn addresses(&self) -> Addresses {
        self.addresses
    }

    /// Runs until `shutdown`, then stops the services in order and the broker last.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        shutdown.cancelled().await;
        let mut result = Ok(());
        for service in self.services {
            let name = service.name;
            if let Err(error) = service.stop().await {
                tracing::error!(service = name, error = format!("{error:#}"), "stopped with an error");
                result = Err(error);
            }
        }
        self.broker.stop();
        tracing::info!("miniZON stopped");
        result
    }
}

/// Loads the sample stock through the admin service, unless LOMS already has stock (a restart on the same data).
async fn seed_stock(loms: SocketAddr, token: &SecretString) -> anyhow::Result<()> {
    let rows = loms::stock_file::parse(SAMPLE_STOCK.as_bytes()).context("the bundled sample stock")?;
    let first_sku = rows.first().map(|row| row.sku).context("the sample stock is empty")?;
    let channel = Channel::from_shared(format!("http://{loms}"))?.connect().await.context("connect to LOMS")?;
    let bearer: MetadataValue<_> = format!("Bearer {}", token.expose_secret()).parse().context("admin token")?;
    let mut admin = LomsAdminV1Client::with_interceptor(channel, move |mut request: tonic::Request<()>| {
        request.metadata_mut().insert("authorization", bearer.clone());
        Ok(request)
    });
    let stocked = admin.list_stock(ListStockRequest { sku: first_sku }).await?.into_inner();
    if !stocked.levels.is_empty() {
        tracing::info!("LOMS already has stock: keeping it");
        return Ok(());
    }
    let imported = admin.import_stock(ImportStockRequest { levels: rows }).await?.into_inner().imported;
    tracing::info!(imported, "sample stock loaded");
    Ok(())
}
