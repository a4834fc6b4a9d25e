//! Building the worker from its settings, and running it until shutdown.

use std::time::Duration;

use anyhow::Context as _;
use minizon_common::metrics::MetricsEndpoint;
use tokio_util::sync::CancellationToken;

use crate::{
    config::Config,
    dead_letter::DeadLetters,
    sinks::Channel,
    store::ProcessedEvents,
    worker::{self, EventConsumer, MAX_OUTAGE_BUDGET, Worker},
};

/// How often processed-event ids older than the retention are deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// How long a dead-letter record may wait for the broker before its send is retried.
const DEAD_LETTER_DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);

/// A worker ready to run: database migrated, consumer subscribed, sinks configured.
pub struct Application {
    config: Config,
    metrics: Option<MetricsEndpoint>,
    consumer: EventConsumer,
    dead_letters: DeadLetters,
    store: ProcessedEvents,
    channels: Vec<Channel>,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("topic", &self.config.topic)
            .field("group_id", &self.config.group_id)
            .field("channels", &self.channels)
            .finish_non_exhaustive()
    }
}

impl Application {
    /// Checks the settings, opens and migrates the database (PostgreSQL or SQLite, by its URL) and joins the
    /// consumer group. The broker need not be up yet: the consumer connects (and reconnects) in the background.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        anyhow::ensure!(
            config.sink_outage_budget <= MAX_OUTAGE_BUDGET,
            "--sink-outage-budget is at most {}",
            humantime::format_duration(MAX_OUTAGE_BUDGET)
        );
        let channels = Channel::from_config(&config)?;
        // First, so that the series registered while starting (pool gauges) have a recorder.
        let metrics = MetricsEndpoint::bind_if(config.metrics_addr)
            .await
            .with_context(|| format!("bind the metrics endpoint to {}", config.metrics_addr))?;
        crate::series::describe();
        let store = ProcessedEvents::connect(&config.database_url, config.db_max_connections).await?;
        let dead_letters =
            DeadLetters::new(&config.kafka_brokers, &config.dead_letter_topic, DEAD_LETTER_DELIVERY_TIMEOUT)
                .context("create the dead-letter producer")?;
        let consumer = worker::consumer(&config).context("create the Kafka consumer")?;
        tracing::info!(
            brokers = %config.kafka_brokers,
            topic = %config.topic,
            group = %config.group_id,
            instance = config.static_member_id().as_deref().unwrap_or("(dynamic)"),
            channels = ?channels.iter().map(Channel::name).collect::<Vec<_>>(),
            outage_budget = %humantime::format_duration(config.sink_outage_budget),
            "notifications worker ready"
        );
        Ok(Self { config, metrics, consumer, dead_letters, store, channels })
    }

    /// The address of the `/metrics` endpoint, when this worker serves one.
    pub fn metrics_addr(&self) -> Option<std::net::SocketAddr> {
        self.metrics.as_ref().map(MetricsEndpoint::local_addr)
    }

    /// The de-duplication store (the embedded mode compares LOMS's outbox with it before it starts).
    pub fn processed_events(&self) -> &ProcessedEvents {
        &self.store
    }

    /// Consumes until `shutdown`, finishing the event in hand, committing offsets and leaving the group.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let store = self.store.clone();
        let metrics = self.metrics.map(|endpoint| endpoint.spawn(shutdown.clone()));
        let pruning = tokio::spawn(prune(self.store.clone(), self.config.dedup_retention, shutdown.clone()));
        let worker =
            Worker::new(&self.config, self.consumer, self.dead_letters, self.store, self.channels, shutdown.clone());
        worker.run().await;
        // The worker stops on shutdown only; make sure the pruning stops with it however the worker ended.
        shutdown.cancel();
        let pruned = pruning.await;
        if let Some(metrics) = metrics {
            let _ = metrics.await;
        }
        // Nothing uses the database any more. Closing it on SQLite checkpoints the write-ahead log, so the file
        // alone holds every delivery when the process is gone.
        store.close().await;
        pruned.context("the pruning task panicked")?;
        Ok(())
    }
}

/// Forgets event ids older than `retention`, hourly.
async fn prune(store: ProcessedEvents, retention: Duration, shutdown: CancellationToken) {
    loop {
        match store.prune(retention).await {
            Ok(0) => {}
            Ok(deleted) => tracing::info!(deleted, "pruned processed events past the retention"),
            Err(error) => tracing::warn!(%error, "cannot prune processed events"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(PRUNE_EVERY) => {}
        }
    }
}
