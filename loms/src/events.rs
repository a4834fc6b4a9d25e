//! The order-status-changed event LOMS writes to its outbox with every transition (same transaction), encoded
//! with the proto3 JSON mapping so that `kcat` shows it readably.

use chrono::{DateTime, Utc};
use minizon_proto::{events::OrderStatusChanged, loms as pb};
use uuid::Uuid;

use crate::domain::{OrderId, OrderLines, Step, UserId};

/// Version of the event schema; bumped on incompatible changes.
pub const SCHEMA_VERSION: u32 = 1;

/// The value of the `event-type` header.
pub const EVENT_TYPE: &str = "minizon.events.v1.OrderStatusChanged";

/// An event ready for the outbox table.
#[derive(Debug, Clone)]
pub struct OutboxEvent {
    pub event_id: Uuid,
    pub order_id: OrderId,
    pub payload: String,
    /// The W3C trace parent of the request (or job) that made the change, for the event's `traceparent` header.
    pub traceparent: Option<String>,
}

/// Builds the event for one step of an order; `lines` are the order's items after it.
pub fn order_status_changed(
    order_id: OrderId,
    user: UserId,
    lines: &OrderLines,
    step: &Step,
    at: DateTime<Utc>,
) -> OutboxEvent {
    let transition = &step.transition;
    // v7 ids sort by time, which keeps the consumer's de-duplication index append-mostly.
    let event_id = Uuid::now_v7();
    let event = OrderStatusChanged {
        event_id: event_id.to_string(),
        schema_version: SCHEMA_VERSION,
        order_id: order_id.get(),
        user: user.get(),
        old_status: transition.from.map(|status| i32::from(status.code())),
        new_status: i32::from(transition.to.code()),
        reason: i32::from(transition.reason.code()),
        detail: transition.detail.clone(),
        occurred_at: Some(at.into()),
        items: items(lines),
        return_requested: step.return_requested,
        previous_items: step.previous_lines.as_ref().map(items).unwrap_or_default(),
    };
    let payload = serde_json::to_string(&event).expect("a generated message always serialises to JSON");
    OutboxEvent { event_id, order_id, payload, traceparent: minizon_common::telemetry::current_traceparent() }
}

fn items(lines: &OrderLines) -> Vec<pb::Item> {
    lines.iter().map(|(sku, count)| pb::Item { sku: sku.get(), count: count.get() }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Count, OrderStatus, Sku, Transition, TransitionReason};

    #[test]
    fn the_payload_uses_the_proto3_json_mapping() {
        let lines = OrderLines::new([(Sku::try_from(7u32).unwrap(), Count::try_from(2u32).unwrap())]).unwrap();
        let transition =
            Transition::new(Some(OrderStatus::AwaitingPayment), OrderStatus::Payed, TransitionReason::Payment);
        let event = order_status_changed(
            OrderId::try_from(42).unwrap(),
            UserId::try_from(9).unwrap(),
            &lines,
            &transition.into(),
            DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
        );
        let json: serde_json::Value = serde_json::from_str(&event.payload).unwrap();
        assert_eq!(json["orderId"], "42", "int64 is a JSON string in proto3 JSON");
        assert_eq!(json["oldStatus"], "ORDER_STATUS_AWAITING_PAYMENT");
        assert_eq!(json["newStatus"], "ORDER_STATUS_PAYED");
        assert_eq!(json["reason"], "TRANSITION_REASON_PAYMENT");
        assert_eq!(json["occurredAt"], "2023-11-14T22:13:20+00:00");
        assert_eq!(json["items"][0]["sku"], 7);
        assert_eq!(json["schemaVersion"], 1);
    }
}
