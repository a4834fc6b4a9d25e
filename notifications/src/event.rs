//! Decoding a record of the order-event topic into an event, or into the reason it cannot be one.

use minizon_common::kafka::{HEADER_EVENT_TYPE, header_str};
use minizon_proto::events::OrderStatusChanged;
use rdkafka::message::Message;
use uuid::Uuid;

/// The `event-type` this worker understands. The contract's name, repeated here rather than taken from LOMS, so
/// that the consumer does not depend on the producer's crate.
pub const EXPECTED_EVENT_TYPE: &str = "minizon.events.v1.OrderStatusChanged";

/// The newest schema version this worker understands; newer events are dead-lettered until it is upgraded.
pub const SUPPORTED_SCHEMA_VERSION: u32 = 1;

/// An order event, decoded and checked.
#[derive(Debug, Clone)]
pub struct ReceivedEvent {
    /// The event id, parsed.
    pub event_id: Uuid,
    /// The event itself.
    pub event: OrderStatusChanged,
}

/// Why a record is not an event this worker can handle. Such a record will never become valid by waiting, so it
/// is dead-lettered at once instead of being retried.
#[derive(Debug, thiserror::Error)]
pub enum Malformed {
    /// The record has no value.
    #[error("the record has no payload")]
    NoPayload,
    /// The `event-type` header names another message.
    #[error("unexpected event type {0:?}")]
    UnexpectedType(String),
    /// The value is not the proto3 JSON of the event message.
    #[error("the payload is not an OrderStatusChanged in proto3 JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The event id is not a UUID.
    #[error("the event id {0:?} is not a UUID")]
    EventId(String),
    /// The schema is newer than this worker.
    #[error("schema version {0} is newer than the supported version {SUPPORTED_SCHEMA_VERSION}")]
    SchemaVersion(u32),
    /// The order id is not a valid one.
    #[error("the order id {0} is not positive")]
    OrderId(i64),
}

/// Decodes a record.
pub fn decode<M: Message>(message: &M) -> Result<ReceivedEvent, Malformed> {
    match header_str(message, HEADER_EVENT_TYPE) {
        Some(event_type) if event_type != EXPECTED_EVENT_TYPE => {
            return Err(Malformed::UnexpectedType(event_type.to_owned()));
        }
        _ => {}
    }
    let payload = message.payload().ok_or(Malformed::NoPayload)?;
    decode_payload(payload)
}

/// Decodes the value of a record.
pub fn decode_payload(payload: &[u8]) -> Result<ReceivedEvent, Malformed> {
    let event: OrderStatusChanged = serde_json::from_slice(payload)?;
    let event_id = Uuid::parse_str(&event.event_id).map_err(|_| Malformed::EventId(event.event_id.clone()))?;
    if event.schema_version > SUPPORTED_SCHEMA_VERSION {
        return Err(Malformed::SchemaVersion(event.schema_version));
    }
    if event.order_id <= 0 {
        return Err(Malformed::OrderId(event.order_id));
    }
    Ok(ReceivedEvent { event_id, event })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid_json() -> serde_json::Value {
        serde_json::json!({
            "eventId": "0190b6a4-1a2b-7c3d-8e4f-5a6b7c8d9e0f",
            "schemaVersion": 1,
            "orderId": "42",
            "user": "7",
            "newStatus": "ORDER_STATUS_PAYED",
            "oldStatus": "ORDER_STATUS_AWAITING_PAYMENT",
            "reason": "TRANSITION_REASON_PAYMENT",
            "occurredAt": "2024-01-01T00:00:00Z",
            "items": [{"sku": 7, "count": 2}]
        })
    }

    #[test]
    fn a_proto3_json_event_decodes() {
        let event = decode_payload(valid_json().to_string().as_bytes()).unwrap();
        assert_eq!(event.event.order_id, 42);
        assert_eq!(event.event_id.to_string(), "0190b6a4-1a2b-7c3d-8e4f-5a6b7c8d9e0f");
    }

    #[test]
    fn text_that_is_not_json_is_malformed() {
        assert!(matches!(decode_payload(b"hello"), Err(Malformed::Json(_))));
    }

    #[test]
    fn an_event_id_that_is_not_a_uuid_is_malformed() {
        let mut json = valid_json();
        json["eventId"] = "abc".into();
        assert!(matches!(decode_payload(json.to_string().as_bytes()), Err(Malformed::EventId(_))));
    }

    #[test]
    fn a_newer_schema_is_malformed_for_this_worker() {
        let mut json = valid_json();
        json["schemaVersion"] = 2.into();
        assert!(matches!(decode_payload(json.to_string().as_bytes()), Err(Malformed::SchemaVersion(2))));
    }
}
