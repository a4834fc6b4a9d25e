//! The dead-letter topic: where a record goes when it cannot be handled, with the reason in its headers, so
//! that the consumer can move on and a person can look at it (and re-publish it once the cause is fixed).

use std::{sync::Mutex, time::Duration};

use minizon_common::kafka::{
    HEADER_DEAD_LETTER_REASON, HEADER_DEAD_LETTER_SINK, HEADER_DEAD_LETTER_SOURCE, idempotent_producer_config,
};
use rdkafka::{
    error::KafkaError,
    message::{Header, Headers, Message, OwnedHeaders},
    producer::{FutureProducer, FutureRecord, Producer},
    util::Timeout,
};

/// Writes records to the dead-letter topic.
pub struct DeadLetters {
    /// Replaced after a failed send; see [`DeadLetters::publish`].
    producer: Mutex<FutureProducer>,
    brokers: String,
    topic: String,
    delivery_timeout: Duration,
}

impl std::fmt::Debug for DeadLetters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadLetters").field("topic", &self.topic).finish_non_exhaustive()
    }
}

impl DeadLetters {
    /// A producer for `topic` on `brokers`.
    pub fn new(brokers: &str, topic: &str, delivery_timeout: Duration) -> Result<Self, KafkaError> {
        let producer = Mutex::new(create_producer(brokers, delivery_timeout)?);
        Ok(Self { producer, brokers: brokers.to_owned(), topic: topic.to_owned(), delivery_timeout })
    }

    fn producer(&self) -> FutureProducer {
        self.producer.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Publishes a copy of `original` (key, value, headers) with the reason, the failed sinks if any and the
    /// source position added as headers, and waits for the broker's acknowledgement.
    pub async fn publish<M: Message>(&self, original: &M, reason: &str, sinks: Option<&str>) -> Result<(), KafkaError> {
        let source = format!("{}/{}/{}", original.topic(), original.partition(), original.offset());
        let mut headers = OwnedHeaders::new();
        if let Some(original_headers) = original.headers() {
            for header in original_headers.iter() {
                headers = headers.insert(Header { key: header.key, value: header.value });
            }
        }
        headers = headers
            .insert(Header { key: HEADER_DEAD_LETTER_REASON, value: Some(reason) })
            .insert(Header { key: HEADER_DEAD_LETTER_SOURCE, value: Some(&source) });
        if let Some(sinks) = sinks {
            headers = headers.insert(Header { key: HEADER_DEAD_LETTER_SINK, value: Some(sinks) });
        }
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&self.topic).headers(headers);
        if let Some(key) = original.key() {
            record = record.key(key);
        }
        if let Some(payload) = original.payload() {
            record = record.payload(payload);
        }
        let producer = self.producer();
        let sent = producer.send(record, Timeout::Never).await.map(|_| ()).map_err(|(error, _)| error);
        drop(producer);
        if sent.is_err() {
            self.replace_producer();
        }
        sent
    }

    /// After a failed send the next attempt uses a new producer id, for the reasons the outbox relay of LOMS
    /// gives (`loms::outbox`): an idempotent producer whose records timed out has to bump its epoch with the
    /// broker, which not every Kafka-compatible broker survives. A record the old producer did write is
    /// dead-lettered twice at worst.
    fn replace_producer(&self) {
        match create_producer(&self.brokers, self.delivery_timeout) {
            Ok(fresh) => {
                let old = std::mem::replace(
                    &mut *self.producer.lock().unwrap_or_else(std::sync::PoisonError::into_inner),
                    fresh,
                );
                // Dropping purges and briefly flushes: off the async threads.
                tokio::task::spawn_blocking(move || drop(old));
            }
            Err(error) => tracing::error!(%error, "cannot create a new dead-letter producer"),
        }
    }

    /// Waits up to `timeout` for records still in flight.
    pub fn flush(&self, timeout: Duration) {
        if let Err(error) = self.producer().flush(timeout) {
            tracing::warn!(%error, "dead-letter records still unacknowledged at shutdown");
        }
    }
}

fn create_producer(brokers: &str, delivery_timeout: Duration) -> Result<FutureProducer, KafkaError> {
    idempotent_producer_config(brokers, "notifications-dead-letter", delivery_timeout).create()
}
