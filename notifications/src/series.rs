//! The worker's Prometheus series; docs/operations.md lists them all.

use rdkafka::Statistics;

/// Events handled to the end: every sink has them (now or before), or they were dead-lettered.
pub const HANDLED: &str = "notifications_events_handled_total";
/// Deliveries skipped because the sink already had the event (a redelivery), by `sink`.
pub const DEDUPLICATED: &str = "notifications_events_deduplicated_total";
/// Sink calls retried after a transient failure, by `sink`.
pub const RETRIED: &str = "notifications_sink_retries_total";
/// Events put on the dead-letter topic.
pub const DEAD_LETTERED: &str = "notifications_events_dead_lettered_total";
/// Records between this consumer's position and the end of its partition, by `topic` and `partition`.
pub const CONSUMER_LAG: &str = "notifications_consumer_lag";
/// Times the worker dropped its consumer and joined its group again after being out of it too long.
pub const REJOINS: &str = "notifications_consumer_rejoins_total";

/// Registers the help texts (a no-op until the recorder is installed, so call it after binding the endpoint).
pub fn describe() {
    use metrics::{describe_counter, describe_gauge};
    describe_counter!(HANDLED, "Order events handled: notified, already notified, or dead-lettered.");
    describe_counter!(DEDUPLICATED, "Deliveries skipped because the sink already had the event.");
    describe_counter!(RETRIED, "Sink calls retried after a transient failure.");
    describe_counter!(DEAD_LETTERED, "Order events put on the dead-letter topic.");
    describe_counter!(
        REJOINS,
        "Times the worker joined its consumer group again with a new consumer after being out of it too long."
    );
    describe_gauge!(
        CONSUMER_LAG,
        "Records of a partition this consumer has not read yet (from librdkafka statistics)."
    );
    minizon_common::metrics::counters_from_zero(&[HANDLED, DEAD_LETTERED, REJOINS]);
    minizon_common::db::describe_metrics();
}

/// Sets the lag of every assigned partition from librdkafka's periodic statistics.
pub(crate) fn consumer_lag(statistics: &Statistics) {
    for (topic, partitions) in &statistics.topics {
        for (partition, stats) in &partitions.partitions {
            // -1 is librdkafka's internal "unassigned" partition; a negative lag means "not known yet".
            if *partition >= 0 && stats.consumer_lag >= 0 {
                metrics::gauge!(CONSUMER_LAG, "topic" => topic.clone(), "partition" => partition.to_string())
                    .set(stats.consumer_lag as f64);
            }
        }
    }
}
