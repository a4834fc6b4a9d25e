//! LOMS's Prometheus series (besides the gRPC ones every server has); docs/operations.md lists them all.

use std::time::Duration;

/// Outbox events the broker acknowledged.
pub const EVENTS_PUBLISHED: &str = "loms_outbox_events_published_total";
/// Outbox events whose publication failed (they stay unsent and are retried).
pub const PUBLISH_FAILURES: &str = "loms_outbox_publish_failures_total";
/// Outbox events not yet acknowledged by the broker, at the last measurement.
pub const OUTBOX_UNSENT: &str = "loms_outbox_unsent_events";
/// Age of the oldest unsent outbox event at the last measurement (0 when there is none).
pub const OUTBOX_OLDEST_AGE: &str = "loms_outbox_oldest_unsent_age_seconds";
/// Order status transitions, by `from`, `to` and `reason`, counted as their events are published.
pub const TRANSITIONS: &str = "loms_order_transitions_total";
/// Orders the unpaid-order sweep cancelled.
pub const SWEEP_CANCELLED: &str = "loms_unpaid_sweep_cancelled_orders_total";
/// How long one sweep took.
pub const SWEEP_DURATION: &str = "loms_unpaid_sweep_duration_seconds";
/// Sweeps that failed (the next tick retries).
pub const SWEEP_FAILURES: &str = "loms_unpaid_sweep_failures_total";
/// Calls per committed write batch (group commit), by kind (`create`, `command`).
pub const WRITE_BATCH_SIZE: &str = "loms_write_batch_size";

/// Batches of new orders decided on the levels this process last committed whose rows' free units had changed
/// since (another replica, an operator, a racing write): nothing was written, and they ran again the locking way.
pub const STOCK_NOT_AS_KNOWN: &str = "loms_write_batch_stock_not_as_known_total";
/// Batches of new orders written in one flight on the levels this process knew (one round trip); beside the count
/// of `loms_write_batch_size{kind="create"}`, the share of batches that took it.
pub const ONE_FLIGHT: &str = "loms_write_batch_one_flight_total";

/// Registers the help texts (a no-op until the recorder is installed, so call it after binding the endpoint).
pub fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(EVENTS_PUBLISHED, "Order events the broker acknowledged.");
    describe_counter!(PUBLISH_FAILURES, "Order events whose publication failed; they stay in the outbox.");
    describe_gauge!(OUTBOX_UNSENT, "Outbox events not yet acknowledged by the broker (measured every 10 s).");
    describe_gauge!(OUTBOX_OLDEST_AGE, Unit::Seconds, "Age of the oldest unsent outbox event (measured every 10 s).");
    describe_counter!(TRANSITIONS, "Order status transitions by from, to and reason, counted as published.");
    describe_counter!(SWEEP_CANCELLED, "Orders the unpaid-order sweep cancelled past their payment deadline.");
    describe_histogram!(SWEEP_DURATION, Unit::Seconds, "Time one unpaid-order sweep took.");
    describe_histogram!(WRITE_BATCH_SIZE, "Calls one committed write batch carried (group commit), by kind of call.");
    describe_counter!(
        STOCK_NOT_AS_KNOWN,
        "Batches of new orders whose rows' free units had changed since this process last wrote them; run again under \
         locks."
    );
    describe_counter!(ONE_FLIGHT, "Batches of new orders written in one flight on the stock levels this process knew.");
    describe_counter!(SWEEP_FAILURES, "Unpaid-order sweeps that failed (the next tick retries).");
    minizon_common::metrics::counters_from_zero(&[
        EVENTS_PUBLISHED,
        PUBLISH_FAILURES,
        SWEEP_CANCELLED,
        SWEEP_FAILURES,
        STOCK_NOT_AS_KNOWN,
        ONE_FLIGHT,
    ]);
    minizon_common::db::describe_metrics();
}

/// Records the outbox lag measured now.
pub(crate) fn outbox_lag(unsent: i64, oldest: Option<Duration>) {
    metrics::gauge!(OUTBOX_UNSENT).set(unsent as f64);
    metrics::gauge!(OUTBOX_OLDEST_AGE).set(oldest.unwrap_or_default().as_secs_f64());
}

/// Counts the transition an acknowledged event payload (proto3 JSON) describes.
pub(crate) fn transition_published(payload: &str) {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Labels<'a> {
        #[serde(borrow)]
        old_status: Option<&'a str>,
        #[serde(borrow)]
        new_status: Option<&'a str>,
        #[serde(borrow)]
        reason: Option<&'a str>,
    }
    let Ok(labels) = serde_json::from_str::<Labels<'_>>(payload) else { return };
    // proto3 JSON leaves out enum zeros: no new status is `new`; no old one is the order's creation.
    let label = |value: Option<&str>, prefix: &str, zero: &str| {
        value.map_or(zero.to_owned(), |value| value.strip_prefix(prefix).unwrap_or(value).to_lowercase())
    };
    metrics::counter!(TRANSITIONS,
        "from" => label(labels.old_status, "ORDER_STATUS_", "none"),
        "to" => label(labels.new_status, "ORDER_STATUS_", "new"),
        "reason" => label(labels.reason, "TRANSITION_REASON_", "unspecified"))
    .increment(1);
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_payload_that_is_not_an_event_counts_nothing_and_does_not_panic() {
        super::transition_published("not json");
        super::transition_published(r#"{"oldStatus":"ORDER_STATUS_NEW","newStatus":"ORDER_STATUS_PAYED"}"#);
    }
}
