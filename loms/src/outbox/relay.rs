//! The relay task: claim a round of rows, publish them, wait for the acknowledgements, mark them, repeat; sleep
//! until a commit of this process wakes it (or the poll) when the outbox is drained; back off while something is down.

use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use backon::{BackoffBuilder, ExponentialBuilder};
use minizon_common::db::PgPool;
use minizon_common::kafka::{
    HEADER_EVENT_ID, HEADER_EVENT_TYPE, HEADER_SCHEMA_VERSION, HEADER_TRACEPARENT, idempotent_producer_config,
};
use opentelemetry::trace::TraceContextExt as _;
use rdkafka::{
    error::{KafkaError, RDKafkaErrorCode},
    message::{Header, OwnedHeaders},
    producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer},
};
use tokio::{sync::watch, task::JoinHandle, time::Instant};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use super::{
    RelayConfig,
    source::{OutboxLag, OutboxRow, OutboxSource, Parked},
};
use crate::events::{EVENT_TYPE, SCHEMA_VERSION};

/// How often the lag is measured (and published through [`RelayHandle::status`]).
const LAG_EVERY: Duration = Duration::from_secs(10);

/// How often the lag is logged while events are waiting.
const LAG_LOG_EVERY: Duration = Duration::from_secs(60);

/// A lag beyond this is logged as a warning: the relay is not keeping up, or cannot publish.
const LAG_WARN_AFTER: Duration = Duration::from_secs(60);

/// How often sent rows past the retention are deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(600);

/// An outbox whose oldest unsent event is older than this is reported NOT_SERVING in health.
pub const HEALTHY_LAG: Duration = Duration::from_secs(60);

/// What the relay last knew about itself, for health and metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RelayStatus {
    /// The lag at the last measurement (every 10 s).
    pub lag: OutboxLag,
    /// The error of the last round when it failed (broker or database unreachable); `None` while publishing works.
    pub last_error: Option<String>,
}

impl RelayStatus {
    /// Publishing works, nothing is parked, and nothing waits longer than [`HEALTHY_LAG`].
    pub fn is_healthy(&self) -> bool {
        self.last_error.is_none()
            && self.lag.parked == 0
            && self.lag.oldest_unsent_age.is_none_or(|age| age <= HEALTHY_LAG)
    }
}

/// Measures the outbox lag of a PostgreSQL database now. Works whether or not a relay runs in this process.
pub async fn lag(pool: &PgPool) -> Result<OutboxLag, sqlx::Error> {
    OutboxSource::Postgres { pool: pool.clone(), written: Default::default() }.lag().await
}

/// A running relay. Dropping it stops the relay without the final flush; [`RelayHandle::shutdown`] flushes.
#[derive(Debug)]
pub struct RelayHandle {
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
    status: watch::Receiver<RelayStatus>,
}

impl RelayHandle {
    /// The relay's last known lag and error.
    pub fn status(&self) -> RelayStatus {
        self.status.borrow().clone()
    }

    /// Follows the relay's status as it changes.
    pub fn watch(&self) -> watch::Receiver<RelayStatus> {
        self.status.clone()
    }

    /// Stops the relay after it published what is left (bounded by the flush timeout). Call it after the gRPC
    /// server drained, so the events of the last requests go out too.
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        let Some(task) = self.task.take() else { return };
        if let Err(error) = task.await {
            tracing::error!(%error, "the outbox relay task failed");
        }
    }
}

impl Drop for RelayHandle {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Starts the relay on `source`. Fails only on producer settings librdkafka rejects; the broker need not be
/// reachable.
pub fn spawn(source: OutboxSource, config: &RelayConfig) -> Result<RelayHandle, KafkaError> {
    let (status_tx, status) = watch::channel(RelayStatus::default());
    let relay = Relay::new(source, config.clone(), status_tx)?;
    let stop = CancellationToken::new();
    let task = tokio::spawn(relay.run(stop.clone()));
    Ok(RelayHandle { stop, task: Some(task), status })
}

/// Why a round failed.
#[derive(Debug, thiserror::Error)]
enum RoundError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("broker: {0}")]
    Kafka(#[from] KafkaError),
}

struct Relay {
    source: OutboxSource,
    producer: FutureProducer,
    config: RelayConfig,
    status: watch::Sender<RelayStatus>,
    next_lag_check: Instant,
    next_lag_log: Instant,
    next_prune: Instant,
    /// Set when the broker refused a record it had been sent: the next round starts with a new producer.
    producer_suspect: AtomicBool,
}

impl Relay {
    fn new(source: OutboxSource, config: RelayConfig, status: watch::Sender<RelayStatus>) -> Result<Self, KafkaError> {
        let producer = producer(&config)?;
        let now = Instant::now();
        Ok(Self {
            source,
            producer,
            config,
            status,
            next_lag_check: now,
            next_lag_log: now,
            next_prune: now,
            producer_suspect: AtomicBool::new(false),
        })
    }

    async fn run(mut self, stop: CancellationToken) {
        tracing::info!(brokers = %self.config.kafka_brokers, topic = %self.config.topic, "outbox relay started");
        let mut failures = backoff(&self.config);
        while !stop.is_cancelled() {
            let round = self.round(true).await;
            if self.producer_suspect.swap(false, Ordering::Relaxed) {
                self.replace_producer();
            }
            self.housekeeping().await;
            match round {
                Ok(0) => {
                    failures = backoff(&self.config);
                    self.status.send_if_modified(|status| status.last_error.take().is_some());
                    self.source.wait(self.config.poll_interval, &stop).await;
                }
                // A full round or a partial one: an order's next event may be waiting behind the one just sent.
                Ok(_) => {
                    failures = backoff(&self.config);
                    self.status.send_if_modified(|status| status.last_error.take().is_some());
                }
                Err(error) => {
                    let delay = failures.next().unwrap_or(self.config.max_backoff);
                    tracing::warn!(%error, ?delay, "outbox relay round failed: backing off");
                    self.status.send_modify(|status| status.last_error = Some(error.to_string()));
                    if matches!(error, RoundError::Kafka(_)) {
                        self.replace_producer();
                    }
                    tokio::select! {
                        () = stop.cancelled() => {}
                        () = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
        self.flush().await;
    }

    /// Claims a round, publishes it, waits for every acknowledgement, marks what was acknowledged and sets aside
    /// what the broker refuses for good (when `mark`; otherwise rolls back, which only the crash test hook
    /// wants). Returns the number of rows claimed. A transient failure of any row fails the round (after the
    /// others were marked); a permanent refusal of a row does not: that row is parked with its reason, and the
    /// later events of its order wait behind it.
    async fn round(&self, mark: bool) -> Result<usize, RoundError> {
        let claim = self.source.claim(self.config.batch_size).await?;
        let rows = claim.rows.clone();
        if rows.is_empty() {
            self.source.finish(claim, &[], &[], false).await?;
            return Ok(0);
        }
        // The relay's own trace: one per round that found events. Each event's publish span continues the trace of
        // the request that wrote it, linked to this round.
        let round_span = tracing::info_span!(parent: None, "outbox relay round", events = rows.len(), trace_id = tracing::field::Empty);
        minizon_common::telemetry::record_trace_id(&round_span);
        // Enqueue everything first, then wait: librdkafka batches the round into few produce requests.
        let pending: Vec<(&OutboxRow, tracing::Span, Result<DeliveryFuture, KafkaError>)> = rows
            .iter()
            .map(|row| {
                let span = self.publish_span(row, &round_span);
                let delivery = self.enqueue(row, &span);
                (row, span, delivery)
            })
            .collect();
        let mut acknowledged = Vec::with_capacity(rows.len());
        let mut parked = Vec::new();
        let mut first_error = None;
        for (row, span, delivery) in pending {
            let refused_locally = delivery.is_err();
            match acknowledgement(delivery).instrument(span.clone()).await {
                Ok(()) => {
                    acknowledged.push(row.id);
                    crate::series::transition_published(&row.payload);
                }
                Err(error) if is_permanent(&error) => {
                    tracing::error!(
                        event_id = %row.event_id,
                        order_id = row.order_id,
                        bytes = row.payload.len(),
                        %error,
                        "the broker refuses this outbox event for good: it is set aside (the order's later events \
                         wait behind it); fix the cause, then `loms outbox republish --event-id {}`",
                        row.event_id
                    );
                    if !refused_locally {
                        self.producer_suspect.store(true, Ordering::Relaxed);
                    }
                    parked.push(Parked { id: row.id, reason: error.to_string() });
                }
                Err(error) => {
                    span.record("otel.status_code", "ERROR");
                    metrics::counter!(crate::series::PUBLISH_FAILURES).increment(1);
                    first_error.get_or_insert(error);
                }
            }
        }
        metrics::counter!(crate::series::EVENTS_PUBLISHED).increment(acknowledged.len() as u64);
        self.source.finish(claim, &acknowledged, &parked, mark).instrument(round_span).await?;
        if mark && !parked.is_empty() {
            let count = i64::try_from(parked.len()).unwrap_or(i64::MAX);
            self.status.send_modify(|status| status.lag.parked = status.lag.parked.saturating_add(count));
        }
        tracing::debug!(claimed = rows.len(), acknowledged = acknowledged.len(), parked = parked.len(), "outbox round");
        match first_error {
            // Acknowledged rows are marked either way; the others are claimed again after the back-off.
            Some(error) => Err(error.into()),
            None => Ok(rows.len()),
        }
    }

    /// The span of one event's publication: a child of the request that wrote the event (its `traceparent`), or
    /// of the round when it has none; it lasts until the broker's acknowledgement.
    fn publish_span(&self, row: &OutboxRow, round: &tracing::Span) -> tracing::Span {
        let span = tracing::info_span!(
            parent: round,
            "outbox publish",
            otel.name = format!("{} publish", self.config.topic),
            otel.kind = "producer",
            otel.status_code = tracing::field::Empty,
            messaging.system = "kafka",
            messaging.destination.name = %self.config.topic,
            messaging.message.id = %row.event_id,
            order_id = row.order_id,
        );
        if let Some(parent) = &row.traceparent {
            let parent = minizon_common::telemetry::propagation::context_from_traceparent(parent);
            if parent.has_active_span() {
                let _ = span.set_parent(parent);
                span.add_link(round.context().span().span_context().clone());
            }
        }
        span
    }

    fn enqueue(&self, row: &OutboxRow, span: &tracing::Span) -> Result<DeliveryFuture, KafkaError> {
        let key = row.order_id.to_string();
        let event_id = &row.event_id;
        // The rows of one deployment carry the schema version that deployment writes.
        let schema_version = SCHEMA_VERSION.to_string();
        let mut headers = OwnedHeaders::new_with_capacity(4)
            .insert(Header { key: HEADER_EVENT_ID, value: Some(event_id) })
            .insert(Header { key: HEADER_EVENT_TYPE, value: Some(EVENT_TYPE) })
            .insert(Header { key: HEADER_SCHEMA_VERSION, value: Some(&schema_version) });
        // The consumer continues from the publish span, itself a child of the request that made the change.
        let traceparent = minizon_common::telemetry::propagation::traceparent_of(&span.context());
        if let Some(traceparent) = traceparent.as_ref().or(row.traceparent.as_ref()) {
            headers = headers.insert(Header { key: HEADER_TRACEPARENT, value: Some(traceparent) });
        }
        let record = FutureRecord::to(&self.config.topic).key(&key).payload(&row.payload).headers(headers);
        self.producer.send_result(record).map_err(|(error, _)| error)
    }

    /// Starts the next round with a new producer (a new producer id) after a round the broker failed.
    ///
    /// The unacknowledged rows are still unsent, so dropping the old producer loses nothing, and a new producer
    /// id sidesteps what an idempotent producer otherwise has to sort out with the broker after timed-out
    /// records: its sequence numbers are in doubt, so librdkafka bumps the producer epoch, or gives up with a
    /// fatal error after which the producer refuses every send. Brokers differ in how well they handle the
    /// bump (tansu 0.6 panics on it and stops serving); a fresh producer id is plain for all of them. Records of
    /// the old producer that the broker did write are published again by the next round: consumers
    /// de-duplicate by event id.
    fn replace_producer(&mut self) {
        match producer(&self.config) {
            Ok(fresh) => {
                let old = std::mem::replace(&mut self.producer, fresh);
                // Dropping purges and briefly flushes: off the async threads.
                tokio::task::spawn_blocking(move || drop(old));
            }
            Err(error) => tracing::error!(%error, "cannot create a new Kafka producer"),
        }
    }

    /// Measures and logs the lag, and prunes sent rows, each when due.
    async fn housekeeping(&mut self) {
        let now = Instant::now();
        if now >= self.next_lag_check {
            self.next_lag_check = now + LAG_EVERY;
            match self.source.lag().await {
                Ok(lag) => {
                    crate::series::outbox_lag(lag.unsent, lag.oldest_unsent_age);
                    self.status.send_if_modified(|status| std::mem::replace(&mut status.lag, lag) != lag);
                    if lag.unsent > 0 && now >= self.next_lag_log {
                        self.next_lag_log = now + LAG_LOG_EVERY;
                        let age = lag.oldest_unsent_age.unwrap_or_default();
                        if age > LAG_WARN_AFTER {
                            tracing::warn!(unsent = lag.unsent, oldest_unsent_age = ?age, "outbox lag");
                        } else {
                            tracing::info!(unsent = lag.unsent, oldest_unsent_age = ?age, "outbox lag");
                        }
                    }
                }
                Err(error) => tracing::debug!(%error, "cannot measure the outbox lag"),
            }
        }
        if now >= self.next_prune {
            self.next_prune = now + PRUNE_EVERY;
            match self.source.prune(self.config.retention).await {
                Ok(0) => {}
                Ok(deleted) => tracing::info!(deleted, "pruned sent outbox rows past the retention"),
                Err(error) => tracing::warn!(%error, "cannot prune the outbox"),
            }
        }
    }

    /// Publishes what is left before the process exits, for at most the flush timeout.
    async fn flush(&self) {
        let deadline = Instant::now() + self.config.flush_timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.round(true)).await {
                Ok(Ok(0)) => break,
                Ok(Ok(_)) => {}
                Ok(Err(error)) => {
                    tracing::warn!(%error, "outbox flush failed: the rest is published after the next start");
                    break;
                }
                Err(_) => {
                    tracing::warn!("outbox flush timed out: the rest is published after the next start");
                    break;
                }
            }
        }
        // librdkafka's flush blocks its thread for up to its timeout: off the async threads, as a producer's drop is.
        let producer = self.producer.clone();
        match tokio::task::spawn_blocking(move || producer.flush(Duration::from_secs(1))).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(%error, "Kafka producer not flushed"),
            Err(error) => tracing::warn!(%error, "Kafka producer flush did not finish"),
        }
        tracing::info!("outbox relay stopped");
    }
}

fn producer(config: &RelayConfig) -> Result<FutureProducer, KafkaError> {
    idempotent_producer_config(&config.kafka_brokers, "loms-outbox-relay", config.delivery_timeout)
        // Java's default partitioner: an order's events land on the partition any Kafka client would pick.
        .set("partitioner", "murmur2_random")
        .set("message.max.bytes", config.max_message_bytes.to_string())
        .create()
}

/// Whether the broker (or librdkafka on its behalf) refuses this one record whatever is retried: the record
/// itself is wrong for the broker (too large, malformed). Everything else — the broker or the network down, time-
/// outs, leader changes, authorisation or topic errors that concern every record alike — fails the round and is
/// retried with back-off.
fn is_permanent(error: &KafkaError) -> bool {
    matches!(
        error,
        KafkaError::MessageProduction(
            RDKafkaErrorCode::MessageSizeTooLarge
                | RDKafkaErrorCode::InvalidMessageSize
                | RDKafkaErrorCode::InvalidMessage
                | RDKafkaErrorCode::InvalidRecord
                | RDKafkaErrorCode::PolicyViolation
        )
    )
}

fn backoff(config: &RelayConfig) -> backon::ExponentialBackoff {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(config.max_backoff)
        .without_max_times()
        .with_jitter()
        .build()
}

async fn acknowledgement(delivery: Result<DeliveryFuture, KafkaError>) -> Result<(), KafkaError> {
    match delivery?.await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err((error, _message))) => Err(error),
        // The producer went away with the record in flight: treat as not acknowledged.
        Err(_canceled) => Err(KafkaError::Canceled),
    }
}

/// Test hooks, not part of the service's behaviour.
pub mod testing {
    use super::*;

    /// **Test hook only — never call it in production code.** Simulates a relay that crashed after the broker
    /// acknowledged a round but before it marked the rows: claims a round, publishes it, waits for the
    /// acknowledgements, then rolls back instead of marking. Returns how many events were published.
    pub async fn publish_round_without_marking(source: OutboxSource, config: &RelayConfig) -> anyhow::Result<usize> {
        let (status, _) = watch::channel(RelayStatus::default());
        let relay = Relay::new(source, config.clone(), status)?;
        let published = relay.round(false).await?;
        relay.producer.flush(Duration::from_secs(5))?;
        Ok(published)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_round_is_retried_sooner_than_the_longest_back_off() {
        let config = RelayConfig {
            enabled: true,
            kafka_brokers: "127.0.0.1:9".into(),
            topic: "t".into(),
            batch_size: 1,
            poll_interval: Duration::from_secs(5),
            delivery_timeout: Duration::from_secs(1),
            max_backoff: Duration::from_secs(3),
            retention: Duration::from_secs(60),
            flush_timeout: Duration::from_secs(1),
            max_message_bytes: 1_000_000,
        };
        let delays: Vec<Duration> = backoff(&config).take(20).collect();
        assert!(delays[0] < Duration::from_millis(250), "{delays:?}");
        assert!(delays.iter().all(|delay| *delay <= Duration::from_secs(6)), "{delays:?}");
    }

    #[test]
    fn a_record_the_broker_cannot_take_is_permanent_and_an_outage_is_not() {
        assert!(is_permanent(&KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge)));
        assert!(is_permanent(&KafkaError::MessageProduction(RDKafkaErrorCode::InvalidRecord)));
        for transient in [
            RDKafkaErrorCode::MessageTimedOut,
            RDKafkaErrorCode::NotLeaderForPartition,
            RDKafkaErrorCode::BrokerTransportFailure,
            RDKafkaErrorCode::QueueFull,
            RDKafkaErrorCode::TopicAuthorizationFailed,
        ] {
            assert!(!is_permanent(&KafkaError::MessageProduction(transient)), "{transient:?}");
        }
        assert!(!is_permanent(&KafkaError::Canceled));
    }
}
