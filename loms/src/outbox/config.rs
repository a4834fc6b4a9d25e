//! Settings of the outbox relay, flattened into LOMS's own settings.

use std::time::Duration;

use clap::{ArgAction, Args};

/// Outbox relay settings.
#[derive(Debug, Clone, Args)]
pub struct RelayConfig {
    /// Whether this process publishes the outbox. Off, events still accumulate in the outbox (every replica
    /// writes them); some other replica, or a later start, publishes them.
    #[arg(long = "outbox-relay", env = "LOMS_OUTBOX_RELAY", action = ArgAction::Set, default_value_t = true)]
    pub enabled: bool,

    /// Kafka bootstrap servers, comma-separated `host:port`.
    #[arg(long, env = "LOMS_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    pub kafka_brokers: String,

    /// Topic the order events are published to.
    #[arg(long = "outbox-topic", env = "LOMS_OUTBOX_TOPIC", default_value = "loms.order-status-changed")]
    pub topic: String,

    /// Most events one relay round claims (one per order: an order's next event waits for the previous one's
    /// acknowledgement).
    #[arg(long = "outbox-batch", env = "LOMS_OUTBOX_BATCH", default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..))]
    pub batch_size: u32,

    /// How often the relay looks for events when no commit of its own process woke it (events written by
    /// replicas that run no relay).
    #[arg(long = "outbox-poll-interval", env = "LOMS_OUTBOX_POLL_INTERVAL", default_value = "1s", value_parser = humantime::parse_duration)]
    pub poll_interval: Duration,

    /// How long one event may wait for the broker's acknowledgement before the round fails and backs off.
    #[arg(long = "outbox-delivery-timeout", env = "LOMS_OUTBOX_DELIVERY_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub delivery_timeout: Duration,

    /// Longest pause between rounds while the broker or the database is unreachable (the pause doubles from
    /// 100 ms up to this).
    #[arg(long = "outbox-max-backoff", env = "LOMS_OUTBOX_MAX_BACKOFF", default_value = "10s", value_parser = humantime::parse_duration)]
    pub max_backoff: Duration,

    /// How long sent events stay in the outbox (for inspection and replay) before they are deleted.
    #[arg(long = "outbox-retention", env = "LOMS_OUTBOX_RETENTION", default_value = "7days", value_parser = humantime::parse_duration)]
    pub retention: Duration,

    /// Largest event (in bytes, as librdkafka counts them) the relay sends; a larger one is set aside (parked)
    /// rather than blocking the rest. Keep it at or below the broker's `message.max.bytes`.
    #[arg(long = "outbox-max-message-bytes", env = "LOMS_OUTBOX_MAX_MESSAGE_BYTES", default_value_t = 1_000_000, value_parser = clap::value_parser!(u32).range(1_000..=1_000_000_000))]
    pub max_message_bytes: u32,

    /// On graceful shutdown, how long the relay keeps publishing what is left before it stops.
    #[arg(long = "outbox-flush-timeout", env = "LOMS_OUTBOX_FLUSH_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub flush_timeout: Duration,
}
