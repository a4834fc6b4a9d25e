//! The dead-letter topic: where a record goes when it cannot be handled, with the reason in its headers, so
//! that the consumer can move on and a person can look at it (and re-publish it once the cause is fixed).

use std::time::Duration;

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
#[derive(Clone)]
pub struct DeadLetters {
    producer: FutureProducer,
    topic: String,
}

impl std::fmt::Debug for DeadLetters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadLetters").field("topic", &self.topic).finish_non_exhaustive()
    }
}

impl DeadLetters {
    /// A producer for `topic` on `brokers`.
    pub fn new(brokers: &str, topic: &str, delivery_timeout: Duration) -> Result<Self, KafkaError> {
        let producer = idempotent_producer_config(brokers, "notifications-dead-letter", delivery_timeout).create()?;
        Ok(Self { producer, topic: topic.to_owned() })
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
        self.producer.send(record, Timeout::Never).await.map(|_| ()).map_err(|(error, _)| error)
    }

    /// Waits up to `timeout` for records still in flight.
    pub fn flush(&self, timeout: Duration) {
        if let Err(error) = self.producer.flush(timeout) {
            tracing::warn!(%error, "dead-letter records still unacknowledged at shutdown");
        }
    }
}
