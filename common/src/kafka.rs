//! Kafka plumbing shared by the outbox relay (LOMS) and Notifications: the producer settings that make a
//! publish safe to retry, the header names of the order-event contract, and header look-ups.
//!
//! Only compiled with the `kafka` feature, so that services without Kafka do not build librdkafka.

use std::time::Duration;

use rdkafka::{
    ClientConfig,
    message::{Headers, Message},
};

/// Header carrying the event's unique id (a UUID); consumers de-duplicate on it.
pub const HEADER_EVENT_ID: &str = "event-id";
/// Header carrying the fully qualified protobuf name of the payload's message.
pub const HEADER_EVENT_TYPE: &str = "event-type";
/// Header carrying the payload's schema version (decimal).
pub const HEADER_SCHEMA_VERSION: &str = "schema-version";
/// Header carrying the W3C trace context of the change that produced the event.
pub const HEADER_TRACEPARENT: &str = "traceparent";
/// Header a dead-lettered record carries: why it could not be handled.
pub const HEADER_DEAD_LETTER_REASON: &str = "dead-letter-reason";
/// Header a dead-lettered record carries when a sink failed: which one(s), comma-separated.
pub const HEADER_DEAD_LETTER_SINK: &str = "dead-letter-sink";
/// Header a dead-lettered record carries: where it came from, as `topic/partition/offset`.
pub const HEADER_DEAD_LETTER_SOURCE: &str = "dead-letter-source";

/// Settings of a producer whose acknowledged records are durable and never duplicated or reordered by its own
/// retries: idempotence on, every in-sync replica acknowledges (`acks=all`).
///
/// `delivery_timeout` bounds how long one record may wait for the broker (queueing and retries included) before
/// its send fails; callers back off and try again later, so it only needs to cover a short broker hiccup.
pub fn idempotent_producer_config(brokers: &str, client_id: &str, delivery_timeout: Duration) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("client.id", client_id)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("message.timeout.ms", millis(delivery_timeout))
        // A few milliseconds of lingering batches the records of one relay round into few requests.
        .set("linger.ms", "5")
        // Reconnect quickly after a broker restart, but do not hammer a broker that stays down.
        .set("reconnect.backoff.ms", "100")
        .set("reconnect.backoff.max.ms", "2000");
    config
}

/// The value of header `key` as UTF-8, if the message has it.
pub fn header_str<'a, M: Message>(message: &'a M, key: &str) -> Option<&'a str> {
    let headers = message.headers()?;
    headers.iter().find(|header| header.key == key).and_then(|header| std::str::from_utf8(header.value?).ok())
}

/// Milliseconds as librdkafka wants them: a decimal string, at least 1.
pub fn millis(duration: Duration) -> String {
    duration.as_millis().max(1).to_string()
}
