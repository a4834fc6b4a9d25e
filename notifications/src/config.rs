//! Notifications settings, from flags and environment variables; the defaults run against a local PostgreSQL and
//! the broker of `make kafka`, logging every notification.

use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use secrecy::SecretString;

/// Where notifications are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ValueEnum)]
pub enum SinkKind {
    /// A structured log line per notification.
    Log,
    /// A Telegram chat, through the Bot API's `sendMessage`.
    Telegram,
    /// An HTTP endpoint that receives each notification as a JSON `POST`.
    Webhook,
}

/// Notifications worker settings.
#[derive(Debug, Clone, Parser)]
#[command(name = "notifications", about = "Notifications: order events from Kafka to people, once each")]
pub struct Config {
    /// Kafka bootstrap servers, comma-separated `host:port`.
    #[arg(long, env = "NOTIFICATIONS_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    pub kafka_brokers: String,

    /// Topic of the order events LOMS publishes.
    #[arg(long, env = "NOTIFICATIONS_TOPIC", default_value = "loms.order-status-changed")]
    pub topic: String,

    /// Consumer group; every replica of the worker uses the same one, and the partitions are shared among them.
    #[arg(long, env = "NOTIFICATIONS_GROUP_ID", default_value = "notifications")]
    pub group_id: String,

    /// This replica's static group membership (`group.instance.id`): a restarted process with the same id takes
    /// back its predecessor's partitions at once instead of waiting out its session (and, on tansu, instead of
    /// the group stalling: see docs/events.md, "Consumer group membership"). Keep it stable across restarts and
    /// different for every replica. Unset: `notifications-<hostname>`, right for one replica per host; `none`:
    /// dynamic membership.
    #[arg(long, env = "NOTIFICATIONS_GROUP_INSTANCE_ID")]
    pub group_instance_id: Option<String>,

    /// Topic where events that cannot be handled go, with the reason in the `dead-letter-reason` header.
    #[arg(long, env = "NOTIFICATIONS_DEAD_LETTER_TOPIC", default_value = "loms.order-status-changed.dead-letter")]
    pub dead_letter_topic: String,

    /// Database URL (de-duplication): `postgres://user@host:port/db` (the production topology, replicas
    /// sharing one database) or `sqlite://path/to/file.db` / `sqlite::memory:` (the embedded mode, one process
    /// per file). The database (or file) is created if it does not exist, and migrated at start.
    #[arg(
        long,
        env = "NOTIFICATIONS_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/notifications"
    )]
    pub database_url: String,

    /// Most database connections this process keeps open on PostgreSQL. On SQLite, where every operation of the
    /// store is a write, one writer connection does it all.
    #[arg(long, env = "NOTIFICATIONS_DB_MAX_CONNECTIONS", default_value_t = 4)]
    pub db_max_connections: u32,

    /// How long an event id is remembered; a redelivery older than this would notify again. Keep it above the
    /// topic's retention.
    #[arg(long, env = "NOTIFICATIONS_DEDUP_RETENTION", default_value = "30days", value_parser = humantime::parse_duration)]
    pub dedup_retention: Duration,

    /// Sinks of the customer channel: every notification goes to each of them, comma-separated.
    #[arg(long = "sinks", env = "NOTIFICATIONS_SINKS", value_enum, value_delimiter = ',', default_value = "log")]
    pub sinks: Vec<SinkKind>,

    /// Base URL of the Telegram Bot API (tests point it at a local server).
    #[arg(long, env = "NOTIFICATIONS_TELEGRAM_BASE_URL", default_value = "https://api.telegram.org")]
    pub telegram_base_url: String,

    /// Telegram bot token; required by the telegram sink.
    #[arg(long, env = "NOTIFICATIONS_TELEGRAM_TOKEN", hide_env_values = true)]
    pub telegram_token: Option<SecretString>,

    /// Telegram chat that receives the messages (numeric id or `@channel`); required by the telegram sink.
    #[arg(long, env = "NOTIFICATIONS_TELEGRAM_CHAT_ID")]
    pub telegram_chat_id: Option<String>,

    /// URL the webhook sink posts each notification to; required by the webhook sink.
    #[arg(long, env = "NOTIFICATIONS_WEBHOOK_URL")]
    pub webhook_url: Option<String>,

    /// Sinks of the staff channel (pickers and the shop: new orders, changes, cancellations before hand-over),
    /// comma-separated; empty (the default) turns the channel off. The staff's telegram sink uses the same bot as
    /// the customers' one (`--telegram-token`, `--telegram-base-url`) and its own chat.
    #[arg(long = "staff-sinks", env = "NOTIFICATIONS_STAFF_SINKS", value_enum, value_delimiter = ',')]
    pub staff_sinks: Vec<SinkKind>,

    /// Telegram chat of the staff channel; required by its telegram sink.
    #[arg(long, env = "NOTIFICATIONS_STAFF_TELEGRAM_CHAT_ID")]
    pub staff_telegram_chat_id: Option<String>,

    /// URL the staff channel's webhook sink posts to; required by its webhook sink.
    #[arg(long, env = "NOTIFICATIONS_STAFF_WEBHOOK_URL")]
    pub staff_webhook_url: Option<String>,

    /// How long the worker may be out of its consumer group — before its first assignment, or after its partitions
    /// were revoked — before it drops its consumer and joins again with a new one. A join answered within a
    /// rebalance never waits this long; tansu 0.6 was seen leaving a member's join unanswered for good after its
    /// session timed out (docs/events.md, "Consumer group membership"). 0s turns the rejoin off.
    #[arg(long, env = "NOTIFICATIONS_REJOIN_AFTER", default_value = "2m", value_parser = humantime::parse_duration)]
    pub rejoin_after: Duration,

    /// Longest one sink call may take before it counts as failed (and is retried).
    #[arg(long, env = "NOTIFICATIONS_SINK_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub sink_timeout: Duration,

    /// How long a sink may keep failing transiently (unreachable, timing out, 5xx, 408, 429) before the event it
    /// holds up goes to the dead-letter topic. Until then the worker retries with capped exponential backoff and
    /// commits nothing past the event, so an outage this long loses nothing and keeps the order per order. At most
    /// 23 hours (the consumer's `max.poll.interval.ms` is derived from it and librdkafka caps that at 24 hours).
    #[arg(long, env = "NOTIFICATIONS_SINK_OUTAGE_BUDGET", default_value = "1h", value_parser = humantime::parse_duration)]
    pub sink_outage_budget: Duration,

    /// Wait before the first retry of a failing sink; it doubles with every attempt (with jitter), up to
    /// `--retry-max-delay`.
    #[arg(long, env = "NOTIFICATIONS_RETRY_MIN_DELAY", default_value = "200ms", value_parser = humantime::parse_duration)]
    pub retry_min_delay: Duration,

    /// Longest wait between two attempts, for a sink and for the worker's own dependencies (database, broker).
    #[arg(long, env = "NOTIFICATIONS_RETRY_MAX_DELAY", default_value = "10s", value_parser = humantime::parse_duration)]
    pub retry_max_delay: Duration,

    /// Address of the Prometheus `/metrics` endpoint (port 0 picks a free port); `off` serves none.
    #[arg(long, env = "NOTIFICATIONS_METRICS_ADDR", default_value = "127.0.0.1:9463")]
    pub metrics_addr: minizon_common::metrics::MetricsAddr,

    #[command(flatten)]
    pub log: minizon_common::telemetry::LogArgs,

    /// A one-off command instead of the worker.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The one-off commands of the binary.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// The dead-letter topic.
    #[command(subcommand)]
    DeadLetter(DeadLetterCommand),
}

/// What can be done with the dead-letter topic.
#[derive(Debug, Clone, Subcommand)]
pub enum DeadLetterCommand {
    /// Publishes every dead letter not replayed before back to the event topic (original key, value and headers,
    /// without the dead-letter ones), then remembers how far it got; the worker handles them again, and sinks that
    /// already had an event skip it. Run it once the cause (a sink's refusal, an outdated worker) is fixed.
    Replay(ReplayArgs),
}

/// Settings of `notifications dead-letter replay`.
#[derive(Debug, Clone, Args)]
pub struct ReplayArgs {
    /// Consumer group that remembers how far the replays got, so that a second replay publishes only newer
    /// dead letters.
    #[arg(long, env = "NOTIFICATIONS_REPLAY_GROUP_ID", default_value = "notifications-dead-letter-replay")]
    pub replay_group_id: String,

    /// Only list what would be replayed (event id, order, reason); publish nothing and remember nothing.
    #[arg(long)]
    pub dry_run: bool,
}

impl Config {
    /// The `group.instance.id` this process joins with, if any (see [`Config::group_instance_id`]).
    pub fn static_member_id(&self) -> Option<String> {
        match self.group_instance_id.as_deref().map(str::trim) {
            Some("" | "none") => None,
            Some(id) => Some(id.to_owned()),
            None => Some(format!("notifications-{}", rustix::system::uname().nodename().to_string_lossy())),
        }
    }

    /// The defaults, for a given database and broker: what tests and embedders start from.
    pub fn for_database(database_url: impl Into<String>, kafka_brokers: impl Into<String>) -> Self {
        let mut config = Self::parse_from(["notifications"]);
        config.database_url = database_url.into();
        config.kafka_brokers = kafka_brokers.into();
        // One process may host several workers (tests, the embedded mode): it serves its metrics once, itself.
        config.metrics_addr = minizon_common::metrics::MetricsAddr::OFF;
        config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_instance(id: Option<&str>) -> Config {
        let mut config = Config::for_database("sqlite::memory:", "127.0.0.1:9092");
        config.group_instance_id = id.map(str::to_owned);
        config
    }

    #[test]
    fn a_replica_joins_as_a_static_member_named_after_its_host_unless_told_otherwise() {
        let host = rustix::system::uname().nodename().to_string_lossy().into_owned();
        assert_eq!(with_instance(None).static_member_id(), Some(format!("notifications-{host}")));
        assert_eq!(with_instance(Some("notifications-2")).static_member_id().as_deref(), Some("notifications-2"));
        assert_eq!(with_instance(Some("none")).static_member_id(), None, "`none`: dynamic membership");
        assert_eq!(with_instance(Some(" ")).static_member_id(), None, "blank: dynamic membership");
    }
}
