//! The consumer loop: one record at a time, in partition order (so in order per order, the key being the order
//! id), each either handled or dead-lettered before its offset is stored for commit.
//!
//! Offsets: auto-commit is on but `enable.auto.offset.store` is off, so librdkafka commits (periodically, on a
//! rebalance and at close) only offsets this loop stored, and it stores one only after the record was handled or
//! dead-lettered. A crash therefore replays the records in hand, never skips one; the processed-events table
//! makes the replay harmless.
//!
//! A failing sink holds the loop on its event: transient failures are retried with capped exponential backoff
//! for up to the outage budget (one hour by default), and nothing behind the event is committed meanwhile. Only a
//! permanent refusal, or a failure outlasting the budget, sends the event to the dead-letter topic; the events
//! behind it then go on in order.

use std::{
    fmt::Display,
    future::Future,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use backon::{BackoffBuilder, ExponentialBuilder};
use minizon_common::kafka::HEADER_TRACEPARENT;
use rdkafka::{
    ClientConfig, ClientContext,
    consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer},
    error::{KafkaError, KafkaResult, RDKafkaErrorCode},
    message::{BorrowedMessage, Message},
};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::{
    config::Config,
    dead_letter::DeadLetters,
    event,
    message::{audiences, render},
    sinks::{Channel, Notification, SinkError},
    store::{Handled, ProcessedEvents},
};

/// Logs partition assignments, so that an operator can see which replica owns what, and keeps the worker's
/// [`Membership`] up to date.
#[derive(Debug, Clone, Default)]
pub struct LoggingContext {
    membership: Arc<Membership>,
}

/// Whether the worker is in its consumer group: out from its creation until the first assignment, and from a
/// revocation until the next one. An assignment of no partitions counts as in (a group with more replicas than
/// partitions gives some replicas nothing).
#[derive(Debug)]
pub struct Membership {
    out_since: Mutex<Option<Instant>>,
}

impl Default for Membership {
    fn default() -> Self {
        Self { out_since: Mutex::new(Some(Instant::now())) }
    }
}

impl Membership {
    fn assigned(&self) {
        *self.out_since.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }

    fn revoked(&self) {
        self.out_since.lock().unwrap_or_else(PoisonError::into_inner).get_or_insert_with(Instant::now);
    }

    /// How long the worker has been out of its group, `None` while it is in.
    fn out_for(&self) -> Option<Duration> {
        self.out_since.lock().unwrap_or_else(PoisonError::into_inner).map(|since| since.elapsed())
    }
}

impl ClientContext for LoggingContext {
    fn stats(&self, statistics: rdkafka::Statistics) {
        crate::series::consumer_lag(&statistics);
    }
}

impl ConsumerContext for LoggingContext {
    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(partitions) => {
                self.membership.assigned();
                tracing::info!(count = partitions.count(), "partitions assigned");
            }
            Rebalance::Revoke(partitions) => {
                self.membership.revoked();
                tracing::info!(count = partitions.count(), "partitions revoked");
            }
            Rebalance::Error(error) => tracing::warn!(%error, "rebalance failed"),
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, _offsets: &rdkafka::TopicPartitionList) {
        match result {
            // Nothing new was stored since the last commit: not an error.
            Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            Err(error) => tracing::warn!(%error, "offset commit failed; it is retried with the next one"),
        }
    }
}

/// How long a graceful stop waits for the final commit and the group exit before it leaves them unfinished (the
/// broker is unreachable; the next owner of the partitions starts from the last commit and de-duplicates).
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

type RawConsumer = StreamConsumer<LoggingContext>;

/// The worker's group member. Closing a librdkafka consumer (final commit, leaving the group) blocks until the
/// broker answers, however long that takes; so the consumer is never dropped on an async thread, but handed to a
/// thread of its own, whatever the way it goes (graceful stop, task abort, panic).
pub struct EventConsumer(Option<RawConsumer>);

impl std::fmt::Debug for EventConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EventConsumer")
    }
}

impl EventConsumer {
    /// Whether this consumer is in its group, as its rebalance callbacks last said.
    fn membership(&self) -> &Membership {
        &self.get().context().membership
    }

    fn get(&self) -> &RawConsumer {
        // Only `close` and `drop` take it out, and both consume the wrapper.
        self.0.as_ref().expect("the consumer is present until closed")
    }

    /// Commits the stored offsets and leaves the group on a thread of its own; flushes `dead_letters` there too.
    /// Returns once done, or after [`CLOSE_TIMEOUT`].
    async fn close(mut self, dead_letters: DeadLetters) {
        let Some(consumer) = self.0.take() else { return };
        let (done, finished) = tokio::sync::oneshot::channel();
        let closing = std::thread::Builder::new().name("kafka-close".into()).spawn(move || {
            match consumer.commit_consumer_state(CommitMode::Sync) {
                Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
                Err(error) => tracing::warn!(%error, "final offset commit failed; the last events will be seen again"),
            }
            dead_letters.flush(Duration::from_secs(5));
            // Both clients are gone before the caller goes on: a client outliving its broker (the embedded one of
            // `minizon dev` stops right after) logs every broker as down.
            drop(dead_letters);
            drop(consumer);
            let _ = done.send(());
        });
        if let Err(error) = closing {
            tracing::error!(%error, "cannot start the thread that closes the consumer");
            return;
        }
        if tokio::time::timeout(CLOSE_TIMEOUT, finished).await.is_err() {
            tracing::warn!("the broker did not answer the consumer's close in time: leaving without it");
        }
    }
}

impl Drop for EventConsumer {
    fn drop(&mut self) {
        if let Some(consumer) = self.0.take() {
            let spawned = std::thread::Builder::new().name("kafka-close".into()).spawn(move || drop(consumer));
            if let Err(error) = spawned {
                tracing::error!(%error, "cannot start the thread that closes the consumer");
            }
        }
    }
}

/// Creates the group member and subscribes it to the topic.
pub fn consumer(config: &Config) -> KafkaResult<EventConsumer> {
    let mut client = ClientConfig::new();
    // Static membership: a restarted replica rejoins as the member it was and gets its partitions back at once.
    // Without it, tansu 0.6.0 can hand the restarted process an empty assignment for good when the killed
    // member's session expires mid-join (docs/events.md, "Consumer group membership").
    if let Some(instance) = config.static_member_id() {
        client.set("group.instance.id", instance);
    }
    let consumer: RawConsumer = client
        .set("bootstrap.servers", &config.kafka_brokers)
        .set("group.id", &config.group_id)
        .set("client.id", "notifications")
        // A new group starts from the oldest retained event: nothing committed before it came up is missed.
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "true")
        .set("enable.auto.offset.store", "false")
        .set("auto.commit.interval.ms", "1000")
        // A sink outage is waited out inside the event (up to the outage budget) without polling: the group must
        // not evict the worker meanwhile. Pausing the partitions and polling on was the alternative; this keeps
        // the loop one record at a time (see docs/operations.md, "Sink outages").
        .set("max.poll.interval.ms", max_poll_interval(config.sink_outage_budget).as_millis().to_string())
        .set("reconnect.backoff.ms", "100")
        .set("reconnect.backoff.max.ms", "2000")
        // The consumer lag gauge comes from librdkafka's statistics.
        .set("statistics.interval.ms", "5000")
        .create_with_context(LoggingContext::default())?;
    consumer.subscribe(&[&config.topic])?;
    Ok(EventConsumer(Some(consumer)))
}

/// What became of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Every channel has it (now or before), or it is on the dead-letter topic: its offset may be committed.
    Done,
    /// Shutdown came while a dependency (database, broker) or a sink was unavailable: the record stays uncommitted
    /// and is handled again after the restart.
    Interrupted,
}

/// What became of one channel's notification.
#[derive(Debug)]
enum Delivery {
    /// The channel has it (now or before).
    Done,
    /// The channel refused it for good, or kept failing past the outage budget: the reason.
    Refused(String),
    /// Shutdown came first.
    Interrupted,
}

/// What became of one attempt at a channel.
#[derive(Debug)]
enum Attempt {
    /// The channel has it (now or before).
    Done,
    /// The sink failed; the claim was dropped, so a later attempt sends again.
    Failed(SinkError),
    /// Shutdown came while the database was unavailable.
    Interrupted,
}

/// How often the loop checks that the worker is in its consumer group (see [`Config::rejoin_after`]).
const MEMBERSHIP_CHECK_EVERY: Duration = Duration::from_secs(5);

/// How long the worker may go without polling the consumer beyond the outage budget (the sink calls in hand,
/// database round trips) before librdkafka counts it as stuck and takes its partitions away.
const POLL_INTERVAL_MARGIN: Duration = Duration::from_secs(300);

/// librdkafka's ceiling for `max.poll.interval.ms`.
const MAX_POLL_INTERVAL_CEILING: Duration = Duration::from_secs(24 * 3600);

/// The longest outage budget the consumer can be configured for.
pub const MAX_OUTAGE_BUDGET: Duration = Duration::from_secs(23 * 3600);

/// `max.poll.interval.ms` for an outage budget: while a sink is down the worker waits inside one event and does not
/// poll, so the group must not evict it before the budget is spent (see `docs/operations.md`).
fn max_poll_interval(outage_budget: Duration) -> Duration {
    (outage_budget + POLL_INTERVAL_MARGIN).clamp(Duration::from_secs(300), MAX_POLL_INTERVAL_CEILING)
}

/// The consumer loop and everything it needs.
pub struct Worker {
    consumer: EventConsumer,
    /// What a new consumer is made from, when this one is dropped for being out of its group too long.
    config: Config,
    dead_letters: DeadLetters,
    store: ProcessedEvents,
    channels: Vec<Channel>,
    sink_backoff: ExponentialBuilder,
    outage_budget: Duration,
    dependency_backoff: ExponentialBuilder,
    shutdown: CancellationToken,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("channels", &self.channels)
            .field("dead_letters", &self.dead_letters)
            .finish_non_exhaustive()
    }
}

impl Worker {
    /// Assembles a worker; `shutdown` ends [`Worker::run`] once the record in hand is done.
    pub fn new(
        config: &Config,
        consumer: EventConsumer,
        dead_letters: DeadLetters,
        store: ProcessedEvents,
        channels: Vec<Channel>,
        shutdown: CancellationToken,
    ) -> Self {
        let sink_backoff = ExponentialBuilder::default()
            .with_min_delay(config.retry_min_delay)
            .with_max_delay(config.retry_max_delay)
            .without_max_times()
            .with_jitter();
        let dependency_backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(100))
            .with_max_delay(config.retry_max_delay)
            .without_max_times()
            .with_jitter();
        Self {
            consumer,
            config: config.clone(),
            dead_letters,
            store,
            channels,
            sink_backoff,
            outage_budget: config.sink_outage_budget,
            dependency_backoff,
            shutdown,
        }
    }

    /// Consumes until shutdown, then commits the stored offsets and leaves the group.
    pub async fn run(mut self) {
        let mut errors = self.dependency_backoff.build();
        let mut membership_check = tokio::time::interval(MEMBERSHIP_CHECK_EVERY);
        loop {
            let received = tokio::select! {
                biased;
                () = self.shutdown.cancelled() => break,
                _ = membership_check.tick() => {
                    self.rejoin_if_out_too_long();
                    continue;
                }
                received = self.consumer.get().recv() => received,
            };
            let message = match received {
                Ok(message) => message,
                Err(error) => {
                    // librdkafka reconnects by itself; this only paces the log while the broker is away.
                    let delay = errors.next().unwrap_or(Duration::from_secs(1));
                    tracing::warn!(%error, ?delay, "consumer error");
                    tokio::select! {
                        () = self.shutdown.cancelled() => break,
                        () = tokio::time::sleep(delay) => continue,
                    }
                }
            };
            errors = self.dependency_backoff.build();
            let traceparent = minizon_common::kafka::header_str(&message, HEADER_TRACEPARENT);
            let span = tracing::info_span!(
                "event",
                otel.name = format!("{} process", message.topic()),
                otel.kind = "consumer",
                messaging.system = "kafka",
                partition = message.partition(),
                offset = message.offset(),
                traceparent = traceparent.unwrap_or(""),
                trace_id = tracing::field::Empty,
            );
            // The handling continues the trace of the change (the relay's publish span names it in the header).
            if let Some(traceparent) = traceparent {
                use tracing_opentelemetry::OpenTelemetrySpanExt as _;
                let _ = span.set_parent(minizon_common::telemetry::propagation::context_from_traceparent(traceparent));
            }
            minizon_common::telemetry::record_trace_id(&span);
            // The record in hand is finished even when shutdown arrives meanwhile: only an unavailable
            // dependency or sink makes `handle` give up early.
            if self.handle(&message).instrument(span).await == Outcome::Interrupted {
                break;
            }
            metrics::counter!(crate::series::HANDLED).increment(1);
            if let Err(error) = self.consumer.get().store_offset_from_message(&message) {
                // The partition was revoked meanwhile; its new owner will see the record again and de-duplicate.
                tracing::warn!(%error, "cannot store the offset");
            }
        }
        // Commit what was handled and leave the group at once, rather than after a session time-out.
        self.consumer.close(self.dead_letters).await;
        tracing::info!("notifications worker stopped");
    }

    /// Replaces the consumer with a new one when this one has been out of its group for longer than
    /// `rejoin_after`: its join went unanswered. What it had handled but not committed is seen again by the new
    /// member and de-duplicated.
    fn rejoin_if_out_too_long(&mut self) {
        let rejoin_after = self.config.rejoin_after;
        let Some(out_for) = self.consumer.membership().out_for() else { return };
        if rejoin_after.is_zero() || out_for < rejoin_after {
            return;
        }
        match consumer(&self.config) {
            Ok(fresh) => {
                tracing::warn!(
                    ?out_for,
                    "out of the consumer group too long (the join went unanswered): joining again with a new consumer"
                );
                metrics::counter!(crate::series::REJOINS).increment(1);
                // Dropping closes the old consumer on a thread of its own (EventConsumer's Drop).
                drop(std::mem::replace(&mut self.consumer, fresh));
            }
            Err(error) => tracing::error!(%error, "cannot create a new Kafka consumer to rejoin the group"),
        }
    }

    /// Decodes a record, gives it to every channel of every audience it concerns, dead-letters it when a channel
    /// refused it, and records it as handled.
    async fn handle(&self, message: &BorrowedMessage<'_>) -> Outcome {
        let received = match event::decode(message) {
            Ok(received) => received,
            Err(malformed) => {
                tracing::warn!(reason = %malformed, "malformed record: dead-lettering it");
                return self.dead_letter(message, &malformed.to_string(), None).await;
            }
        };
        let (event_id, order_id) = (received.event_id, received.event.order_id);
        // One budget for the whole event: however many channels are down, the consumer is not held up longer.
        let deadline = Instant::now() + self.outage_budget;
        let mut refused = Vec::new();
        for &audience in audiences(&received.event) {
            let text = render(&received.event, audience);
            let notification = Notification { event_id, event: &received.event, text: &text, audience };
            for channel in self.channels.iter().filter(|channel| channel.audience() == audience) {
                match self.deliver(channel, notification, deadline).await {
                    Delivery::Done => {}
                    Delivery::Interrupted => return Outcome::Interrupted,
                    Delivery::Refused(reason) => {
                        tracing::warn!(channel = channel.name(), %reason, %event_id, "channel refused the event");
                        refused.push((channel.name(), reason));
                    }
                }
            }
        }
        let handled = if refused.is_empty() {
            Handled::Notified
        } else {
            let channels: Vec<&str> = refused.iter().map(|(channel, _)| *channel).collect();
            let reasons: Vec<String> = refused.iter().map(|(channel, reason)| format!("{channel}: {reason}")).collect();
            if self.dead_letter(message, &reasons.join("; "), Some(&channels.join(","))).await == Outcome::Interrupted {
                return Outcome::Interrupted;
            }
            Handled::DeadLettered
        };
        let recorded =
            self.until_ok("record the event as handled", || self.store.mark_handled(event_id, order_id, handled));
        match recorded.await {
            Some(()) => Outcome::Done,
            None => Outcome::Interrupted,
        }
    }

    /// Gives the notification to one channel unless it had it already. A transient failure is retried with
    /// capped exponential backoff until `deadline`; nothing behind the event is committed meanwhile, so the
    /// outage loses nothing and keeps the order per order. A permanent refusal, or a failure outlasting the
    /// deadline, is `Refused`.
    async fn deliver(&self, channel: &Channel, notification: Notification<'_>, deadline: Instant) -> Delivery {
        let mut delays = self.sink_backoff.build();
        loop {
            let error = match self.attempt(channel, notification).await {
                Attempt::Done => return Delivery::Done,
                Attempt::Interrupted => return Delivery::Interrupted,
                Attempt::Failed(error) if !error.is_transient() => return Delivery::Refused(error.to_string()),
                Attempt::Failed(error) => error,
            };
            let now = Instant::now();
            if now >= deadline {
                let budget = humantime::format_duration(self.outage_budget);
                return Delivery::Refused(format!("still failing after the outage budget of {budget}: {error}"));
            }
            let delay = delays.next().unwrap_or(self.outage_budget).min(deadline - now);
            tracing::info!(channel = channel.name(), %error, ?delay, "sink failed: retrying");
            metrics::counter!(crate::series::RETRIED, "sink" => channel.name()).increment(1);
            tokio::select! {
                () = self.shutdown.cancelled() => {
                    tracing::warn!(channel = channel.name(), "shutdown while a sink fails: the event stays uncommitted");
                    return Delivery::Interrupted;
                }
                () = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// One attempt: claim `(event, channel)`, call the sink, record the delivery. The claim is held only for the
    /// call, never across a back-off, so a long outage keeps no transaction open.
    async fn attempt(&self, channel: &Channel, notification: Notification<'_>) -> Attempt {
        let (event_id, order_id) = (notification.event_id, notification.event.order_id);
        let claim = self.until_ok("claim the event", || self.store.claim(event_id, channel.name(), order_id)).await;
        let claim = match claim {
            None => return Attempt::Interrupted,
            Some(None) => {
                tracing::debug!(channel = channel.name(), %event_id, "already notified: skipping the duplicate");
                metrics::counter!(crate::series::DEDUPLICATED, "sink" => channel.name()).increment(1);
                return Attempt::Done;
            }
            Some(Some(claim)) => claim,
        };
        let span = tracing::info_span!("sink", otel.name = format!("notify {}", channel.name()), otel.kind = "client");
        if let Err(error) = channel.send(notification).instrument(span).await {
            // Dropping the claim rolls it back, so the next attempt (or a redelivery) sends again.
            drop(claim);
            return Attempt::Failed(error);
        }
        if let Err(error) = claim.commit().await {
            tracing::warn!(%error, "recording the delivery failed: retrying without the claim");
            let recorded =
                self.until_ok("record the delivery", || self.store.record(event_id, channel.name(), order_id));
            if recorded.await.is_none() {
                return Attempt::Interrupted;
            }
        }
        tracing::debug!(channel = channel.name(), %event_id, "notified");
        Attempt::Done
    }

    async fn dead_letter(&self, message: &BorrowedMessage<'_>, reason: &str, sinks: Option<&str>) -> Outcome {
        let published = self
            .until_ok("publish to the dead-letter topic", || self.dead_letters.publish(message, reason, sinks))
            .await;
        match published {
            Some(()) => {
                tracing::info!(topic = self.dead_letters.topic(), reason, "dead-lettered");
                metrics::counter!(crate::series::DEAD_LETTERED).increment(1);
                Outcome::Done
            }
            None => Outcome::Interrupted,
        }
    }

    /// Runs `operation` until it succeeds, backing off between attempts; `None` if shutdown came first. For the
    /// worker's own dependencies: their outage is no fault of the event, so it is waited out, not dead-lettered.
    async fn until_ok<T, E, F, Fut>(&self, what: &str, mut operation: F) -> Option<T>
    where
        E: Display,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let mut delays = self.dependency_backoff.build();
        loop {
            match operation().await {
                Ok(value) => return Some(value),
                Err(error) => {
                    let delay = delays.next().unwrap_or(Duration::from_secs(1));
                    tracing::warn!(%error, ?delay, "cannot {what}: retrying");
                    tokio::select! {
                        () = self.shutdown.cancelled() => {
                            tracing::warn!("shutdown while unable to {what}: the event stays uncommitted");
                            return None;
                        }
                        () = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_group_waits_for_the_whole_outage_budget_before_it_evicts_the_worker() {
        assert_eq!(max_poll_interval(Duration::from_secs(3600)), Duration::from_secs(3900));
        assert_eq!(max_poll_interval(Duration::ZERO), Duration::from_secs(300), "librdkafka's default at least");
        assert_eq!(max_poll_interval(MAX_OUTAGE_BUDGET), Duration::from_secs(23 * 3600 + 300));
        assert_eq!(max_poll_interval(Duration::from_secs(48 * 3600)), MAX_POLL_INTERVAL_CEILING);
    }

    #[test]
    fn a_worker_is_out_of_its_group_until_assigned_and_from_a_revocation_until_the_next_assignment() {
        let membership = Membership::default();
        assert!(membership.out_for().is_some(), "out before the first assignment");
        membership.assigned();
        assert_eq!(membership.out_for(), None);
        membership.revoked();
        let first = membership.out_for().expect("out after a revocation");
        membership.revoked();
        assert!(membership.out_for().expect("still out") >= first, "a second revocation keeps the first moment");
        membership.assigned();
        assert_eq!(membership.out_for(), None, "an assignment (even of no partitions) is in");
    }
}
