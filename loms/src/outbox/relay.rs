//! The relay task: claim a round of rows, publish them, wait for the acknowledgements, mark them, repeat; sleep
//! until a commit notifies it (or a slow poll) when the outbox is drained; back off while something is down.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use minizon_common::kafka::{
    HEADER_EVENT_ID, HEADER_EVENT_TYPE, HEADER_SCHEMA_VERSION, HEADER_TRACEPARENT, idempotent_producer_config,
};
use rdkafka::{
    error::KafkaError,
    message::{Header, OwnedHeaders},
    producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer},
};
use sqlx::{PgPool, postgres::PgListener};
use tokio::{sync::watch, task::JoinHandle, time::Instant};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::RelayConfig;
use crate::events::{EVENT_TYPE, SCHEMA_VERSION};

/// The channel the outbox trigger notifies (migration 0002).
const CHANNEL: &str = "loms_outbox";

/// How often the lag is measured (and published through [`RelayHandle::status`]).
const LAG_EVERY: Duration = Duration::from_secs(10);

/// How often the lag is logged while events are waiting.
const LAG_LOG_EVERY: Duration = Duration::from_secs(60);

/// A lag beyond this is logged as a warning: the relay is not keeping up, or cannot publish.
const LAG_WARN_AFTER: Duration = Duration::from_secs(60);

/// How often sent rows past the retention are deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(600);

/// Rows deleted per statement when pruning, so that no statement holds locks for long.
const PRUNE_CHUNK: i64 = 10_000;

/// Claims, in id order, the earliest unsent event of each order whose earliest unsent event no other relay
/// holds. The `not exists` is what keeps the order per order across replicas: an order's second event is not a
/// candidate while its first one is unsent, even when the first one is locked (skipped) by another relay.
const CLAIM: &str = "
    select o.id, o.event_id, o.order_id, o.payload, o.traceparent
    from outbox o
    where o.sent_at is null
      and not exists (
          select 1 from outbox earlier
          where earlier.order_id = o.order_id and earlier.sent_at is null and earlier.id < o.id)
    order by o.id
    limit $1
    for update of o skip locked";

/// How far behind the relay is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxLag {
    /// Events written but not yet acknowledged by the broker.
    pub unsent: i64,
    /// Age of the oldest of them; `None` when there is none.
    pub oldest_unsent_age: Option<Duration>,
}

/// What the relay last knew about itself, for health and metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RelayStatus {
    /// The lag at the last measurement (every 10 s).
    pub lag: OutboxLag,
    /// The error of the last round when it failed (broker or database unreachable); `None` while publishing works.
    pub last_error: Option<String>,
}

/// Measures the outbox lag now. Works whether or not a relay runs in this process.
pub async fn lag(pool: &PgPool) -> Result<OutboxLag, sqlx::Error> {
    let (unsent, age): (i64, Option<f64>) = sqlx::query_as(
        "select count(*), extract(epoch from now() - min(created_at))::float8 from outbox where sent_at is null",
    )
    .fetch_one(pool)
    .await?;
    let oldest_unsent_age = age.map(|seconds| Duration::try_from_secs_f64(seconds.max(0.0)).unwrap_or_default());
    Ok(OutboxLag { unsent, oldest_unsent_age })
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

/// Starts the relay on `pool`'s database. Fails only on producer settings librdkafka rejects; the broker need not
/// be reachable.
pub fn spawn(pool: PgPool, config: &RelayConfig) -> Result<RelayHandle, KafkaError> {
    let (status_tx, status) = watch::channel(RelayStatus::default());
    let relay = Relay::new(pool, config.clone(), status_tx)?;
    let stop = CancellationToken::new();
    let task = tokio::spawn(relay.run(stop.clone()));
    Ok(RelayHandle { stop, task: Some(task), status })
}

/// One claimed row.
#[derive(Debug, sqlx::FromRow)]
struct OutboxRow {
    id: i64,
    event_id: Uuid,
    order_id: i64,
    payload: String,
    traceparent: Option<String>,
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
    pool: PgPool,
    producer: FutureProducer,
    config: RelayConfig,
    status: watch::Sender<RelayStatus>,
    next_lag_check: Instant,
    next_lag_log: Instant,
    next_prune: Instant,
}

impl Relay {
    fn new(pool: PgPool, config: RelayConfig, status: watch::Sender<RelayStatus>) -> Result<Self, KafkaError> {
        let producer = producer(&config)?;
        let now = Instant::now();
        Ok(Self { pool, producer, config, status, next_lag_check: now, next_lag_log: now, next_prune: now })
    }

    async fn run(mut self, stop: CancellationToken) {
        tracing::info!(brokers = %self.config.kafka_brokers, topic = %self.config.topic, "outbox relay started");
        let mut listener = None;
        let mut failures = backoff(&self.config);
        while !stop.is_cancelled() {
            // Notifications that came during the last round are covered by the round about to run.
            if let Some(listener) = listener.as_mut() {
                drain(listener);
            }
            let round = self.round(true).await;
            self.housekeeping().await;
            match round {
                Ok(0) => {
                    failures = backoff(&self.config);
                    self.status.send_if_modified(|status| status.last_error.take().is_some());
                    if listener.is_none() {
                        listener = listen(&self.pool).await;
                    }
                    wait_for_work(&mut listener, self.config.poll_interval, &stop).await;
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
                    self.recreate_producer_if_fatal();
                    tokio::select! {
                        () = stop.cancelled() => {}
                        () = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
        self.flush().await;
    }

    /// Claims a round, publishes it, waits for every acknowledgement, and marks what was acknowledged (when
    /// `mark`; otherwise rolls back, which only the crash test hook wants). Returns the number of rows claimed.
    async fn round(&self, mark: bool) -> Result<usize, RoundError> {
        let mut tx = self.pool.begin().await?;
        let rows: Vec<OutboxRow> =
            sqlx::query_as(CLAIM).bind(i64::from(self.config.batch_size)).fetch_all(&mut *tx).await?;
        if rows.is_empty() {
            tx.rollback().await?;
            return Ok(0);
        }
        // Enqueue everything first, then wait: librdkafka batches the round into few produce requests.
        let pending: Vec<(i64, Result<DeliveryFuture, KafkaError>)> =
            rows.iter().map(|row| (row.id, self.enqueue(row))).collect();
        let mut acknowledged = Vec::with_capacity(rows.len());
        let mut first_error = None;
        for (id, delivery) in pending {
            match acknowledgement(delivery).await {
                Ok(()) => acknowledged.push(id),
                Err(error) => {
                    first_error.get_or_insert(error);
                }
            }
        }
        if mark {
            if !acknowledged.is_empty() {
                sqlx::query("update outbox set sent_at = now() where id = any($1)")
                    .bind(&acknowledged)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
        } else {
            tx.rollback().await?;
        }
        tracing::debug!(claimed = rows.len(), acknowledged = acknowledged.len(), "outbox round");
        match first_error {
            // Acknowledged rows are marked either way; the others are claimed again after the back-off.
            Some(error) => Err(error.into()),
            None => Ok(rows.len()),
        }
    }

    fn enqueue(&self, row: &OutboxRow) -> Result<DeliveryFuture, KafkaError> {
        let key = row.order_id.to_string();
        let event_id = row.event_id.to_string();
        // The rows of one deployment carry the schema version that deployment writes.
        let schema_version = SCHEMA_VERSION.to_string();
        let mut headers = OwnedHeaders::new_with_capacity(4)
            .insert(Header { key: HEADER_EVENT_ID, value: Some(&event_id) })
            .insert(Header { key: HEADER_EVENT_TYPE, value: Some(EVENT_TYPE) })
            .insert(Header { key: HEADER_SCHEMA_VERSION, value: Some(&schema_version) });
        if let Some(traceparent) = &row.traceparent {
            headers = headers.insert(Header { key: HEADER_TRACEPARENT, value: Some(traceparent) });
        }
        let record = FutureRecord::to(&self.config.topic).key(&key).payload(&row.payload).headers(headers);
        self.producer.send_result(record).map_err(|(error, _)| error)
    }

    /// After a fatal error an idempotent producer refuses every send; only a new one can publish again. The
    /// unacknowledged rows are still unsent, so nothing is lost by dropping the old one.
    fn recreate_producer_if_fatal(&mut self) {
        let Some((code, reason)) = self.producer.client().fatal_error() else { return };
        tracing::error!(?code, %reason, "the Kafka producer hit a fatal error: replacing it");
        match producer(&self.config) {
            Ok(producer) => self.producer = producer,
            Err(error) => tracing::error!(%error, "cannot create a new Kafka producer"),
        }
    }

    /// Measures and logs the lag, and prunes sent rows, each when due.
    async fn housekeeping(&mut self) {
        let now = Instant::now();
        if now >= self.next_lag_check {
            self.next_lag_check = now + LAG_EVERY;
            match lag(&self.pool).await {
                Ok(lag) => {
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
            match prune(&self.pool, self.config.retention).await {
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
        if let Err(error) = self.producer.flush(Duration::from_secs(1)) {
            tracing::warn!(%error, "Kafka producer not flushed");
        }
        tracing::info!("outbox relay stopped");
    }
}

fn producer(config: &RelayConfig) -> Result<FutureProducer, KafkaError> {
    idempotent_producer_config(&config.kafka_brokers, "loms-outbox-relay", config.delivery_timeout)
        // Java's default partitioner: an order's events land on the partition any Kafka client would pick.
        .set("partitioner", "murmur2_random")
        .create()
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

/// Deletes sent rows older than `retention`, chunk by chunk.
async fn prune(pool: &PgPool, retention: Duration) -> Result<u64, sqlx::Error> {
    let mut total = 0;
    loop {
        let deleted = sqlx::query(
            "delete from outbox where id in (
                 select id from outbox where sent_at < now() - make_interval(secs => $1) order by id limit $2)",
        )
        .bind(retention.as_secs_f64())
        .bind(PRUNE_CHUNK)
        .execute(pool)
        .await?
        .rows_affected();
        total += deleted;
        if deleted < PRUNE_CHUNK.unsigned_abs() {
            return Ok(total);
        }
    }
}

/// Subscribes to the trigger's notifications; `None` (and polling only) when that fails, retried next time.
async fn listen(pool: &PgPool) -> Option<PgListener> {
    let result = async {
        let mut listener = PgListener::connect_with(pool).await?;
        listener.listen(CHANNEL).await?;
        Ok::<_, sqlx::Error>(listener)
    }
    .await;
    match result {
        Ok(listener) => Some(listener),
        Err(error) => {
            tracing::warn!(%error, "cannot LISTEN for outbox commits: polling only for now");
            None
        }
    }
}

fn drain(listener: &mut PgListener) {
    while listener.next_buffered().is_some() {}
}

/// Waits for a commit notification, the poll interval, or shutdown, whichever comes first.
async fn wait_for_work(listener: &mut Option<PgListener>, poll_interval: Duration, stop: &CancellationToken) {
    let Some(active) = listener.as_mut() else {
        tokio::select! {
            () = stop.cancelled() => {}
            () = tokio::time::sleep(poll_interval) => {}
        }
        return;
    };
    tokio::select! {
        () = stop.cancelled() => {}
        () = tokio::time::sleep(poll_interval) => {}
        received = active.try_recv() => match received {
            // A notification from this database (possibly for another schema: a spurious round is cheap), or
            // `None`: the connection was lost and re-established, and notifications may have been missed.
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(%error, "lost the LISTEN connection: polling until it is back");
                *listener = None;
            }
        },
    }
}

/// Test hooks, not part of the service's behaviour.
pub mod testing {
    use super::*;

    /// **Test hook only — never call it in production code.** Simulates a relay that crashed after the broker
    /// acknowledged a round but before it marked the rows: claims a round, publishes it, waits for the
    /// acknowledgements, then rolls back instead of marking. Returns how many events were published.
    pub async fn publish_round_without_marking(pool: &PgPool, config: &RelayConfig) -> anyhow::Result<usize> {
        let (status, _) = watch::channel(RelayStatus::default());
        let relay = Relay::new(pool.clone(), config.clone(), status)?;
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
        };
        let delays: Vec<Duration> = backoff(&config).take(20).collect();
        assert!(delays[0] < Duration::from_millis(250), "{delays:?}");
        assert!(delays.iter().all(|delay| *delay <= Duration::from_secs(6)), "{delays:?}");
    }
}
