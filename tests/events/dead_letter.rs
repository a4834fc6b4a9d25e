//! What Notifications cannot handle goes to the dead-letter topic, and the consumer moves on.

use minizon_proto::{
    events::OrderStatusChanged,
    loms::{Item, OrderStatus, TransitionReason},
};
use minizon_tests::{
    kafka::{DEAD_LETTER_TOPIC, EVENTS_TOPIC, TestBroker},
    notifications::{SinkStandIn, TestNotifications},
};
use uuid::Uuid;

use crate::support::LIMIT;

/// A valid event of `order_id`, as LOMS would publish it: (event id, proto3 JSON).
fn event(order_id: i64) -> (String, String) {
    let event_id = Uuid::now_v7().to_string();
    let event = OrderStatusChanged {
        event_id: event_id.clone(),
        schema_version: 1,
        order_id,
        user: 7,
        old_status: Some(OrderStatus::AwaitingPayment.into()),
        new_status: OrderStatus::Payed.into(),
        reason: TransitionReason::Payment.into(),
        items: vec![Item { sku: 1001, count: 1 }],
        ..OrderStatusChanged::default()
    };
    (event_id.clone(), serde_json::to_string(&event).unwrap())
}

async fn publish(broker: &TestBroker, order_id: i64) -> String {
    let (event_id, json) = event(order_id);
    let headers = [("event-id", event_id.as_str()), ("event-type", "minizon.events.v1.OrderStatusChanged")];
    broker.produce(EVENTS_TOPIC, &order_id.to_string(), json.as_bytes(), &headers).await;
    event_id
}

fn webhook_calls_for(sinks: &SinkStandIn, event_id: &str) -> usize {
    sinks.webhook_calls().iter().filter(|call| call.body["eventId"] == event_id).count()
}

#[tokio::test]
async fn an_event_whose_sink_keeps_failing_is_dead_lettered_and_the_next_one_is_delivered() {
    // Arrange: the sinks fail everything about order 900001, longer than the outage budget.
    let broker = TestBroker::start().await;
    let sinks = SinkStandIn::start().await;
    sinks.fail_requests_containing("900001");
    let notifications = TestNotifications::start(&broker.bootstrap(), &sinks, |c| {
        c.sink_outage_budget = std::time::Duration::from_millis(300);
    })
    .await;

    // Act: an event the sinks refuse, then one they take, on the same partition (same key).
    let refused = publish(&broker, 900_001).await;
    let (next_id, next_json) = event(900_002);
    // Keyed like the refused one, so that it waits behind it on the same partition.
    broker.produce(EVENTS_TOPIC, "900001", next_json.as_bytes(), &[]).await;
    broker.wait_until_consumed(&notifications.config.group_id, EVENTS_TOPIC, LIMIT).await;

    // Assert: the refused event is on the dead-letter topic with the reason and the failed sinks.
    let dead = broker.read_all(DEAD_LETTER_TOPIC).await;
    assert_eq!(dead.len(), 1, "one dead letter: {dead:?}");
    let letter = &dead[0];
    assert_eq!(letter.header("event-id").as_deref(), Some(refused.as_str()), "original headers are kept");
    assert_eq!(letter.key.as_deref(), Some("900001"));
    let reason = letter.header("dead-letter-reason").unwrap_or_default();
    assert!(reason.contains("503") && reason.contains("outage budget"), "the reason names the failure: {reason}");
    let failed_sinks = letter.header("dead-letter-sink").unwrap_or_default();
    assert!(failed_sinks.contains("telegram") && failed_sinks.contains("webhook"), "{failed_sinks}");
    assert_eq!(letter.event().event_id, refused, "the payload is the original event");
    assert!(sinks.failed_attempts() >= 3, "each failing sink was retried: {}", sinks.failed_attempts());
    // And the consumer moved on: the next event on the same partition was delivered.
    assert_eq!(webhook_calls_for(&sinks, &next_id), 1);
    assert_eq!(webhook_calls_for(&sinks, &refused), 0);
    assert!(notifications.is_running());
}

#[tokio::test]
async fn a_malformed_record_is_dead_lettered_with_its_reason_and_the_next_event_is_delivered() {
    // Arrange
    let broker = TestBroker::start().await;
    let sinks = SinkStandIn::start().await;
    let notifications = TestNotifications::start(&broker.bootstrap(), &sinks, |_| {}).await;

    // Act: garbage, then a valid event behind it on the same partition.
    broker.produce(EVENTS_TOPIC, "42", b"this is not an event", &[]).await;
    let valid = publish(&broker, 42).await;
    broker.wait_until_consumed(&notifications.config.group_id, EVENTS_TOPIC, LIMIT).await;

    // Assert
    let dead = broker.read_all(DEAD_LETTER_TOPIC).await;
    assert_eq!(dead.len(), 1, "one dead letter: {dead:?}");
    assert_eq!(dead[0].payload, b"this is not an event");
    let reason = dead[0].header("dead-letter-reason").unwrap_or_default();
    assert!(reason.contains("not an OrderStatusChanged"), "the reason says what is wrong: {reason}");
    assert!(dead[0].header("dead-letter-source").is_some_and(|source| source.starts_with(EVENTS_TOPIC)));
    assert_eq!(webhook_calls_for(&sinks, &valid), 1, "the event behind it is delivered");
    assert!(notifications.is_running(), "no crash loop");
}
