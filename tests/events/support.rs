//! The system under test and the assertions the event tests share.

use std::{collections::HashMap, time::Duration};

use minizon_proto::{
    events::OrderStatusChanged,
    loms::{CreateOrderRequest, Item, ListOrderHistoryRequest, OrderStatus, TransitionReason},
};
use minizon_tests::{
    db::TestDb,
    kafka::{EVENTS_TOPIC, Record, TestBroker},
    loms::TestLoms,
    notifications::{SinkStandIn, TestNotifications},
    poll,
};
use uuid::Uuid;

/// Generous bound for anything that crosses the broker: the tests must not depend on the machine's speed.
pub(crate) const LIMIT: Duration = Duration::from_secs(90);

/// Broker, LOMS (relay on), Notifications (log, Telegram and webhook sinks) and the sinks' stand-in.
#[derive(Debug)]
pub(crate) struct System {
    pub(crate) broker: TestBroker,
    pub(crate) loms: TestLoms,
    pub(crate) notifications: TestNotifications,
    pub(crate) sinks: SinkStandIn,
}

impl System {
    /// Starts everything on fresh storage.
    pub(crate) async fn start() -> Self {
        let broker = TestBroker::start().await;
        let loms = start_loms(TestDb::new().await, &broker).await;
        let sinks = SinkStandIn::start().await;
        let notifications = TestNotifications::start(&broker.bootstrap(), &sinks, |_| {}).await;
        Self { broker, loms, notifications, sinks }
    }

    /// Waits until every event LOMS committed is published and every record on the topic handled by
    /// Notifications.
    pub(crate) async fn settle(&self) {
        wait_until_outbox_drained(&self.loms.db).await;
        self.broker.wait_until_consumed(&self.notifications.config.group_id, EVENTS_TOPIC, LIMIT).await;
    }
}

/// LOMS with its relay publishing to `broker`, backing off at most a second so that recoveries are quick.
pub(crate) async fn start_loms(db: TestDb, broker: &TestBroker) -> TestLoms {
    let brokers = broker.bootstrap();
    TestLoms::start_with(db, move |config| enable_relay(config, &brokers)).await
}

/// Turns the relay on, towards `brokers`.
pub(crate) fn enable_relay(config: &mut loms::Config, brokers: &str) {
    config.outbox.enabled = true;
    config.outbox.kafka_brokers = brokers.to_owned();
    config.outbox.max_backoff = Duration::from_secs(1);
    config.outbox.delivery_timeout = Duration::from_secs(5);
}

/// A CreateOrder request.
pub(crate) fn order(user: i64, items: &[(u32, u32)]) -> CreateOrderRequest {
    CreateOrderRequest { user, items: items.iter().map(|&(sku, count)| Item { sku, count }).collect() }
}

/// An outbox row, as the assertions need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OutboxRow {
    pub(crate) event_id: Uuid,
    pub(crate) order_id: i64,
}

/// Every outbox row, in id order.
pub(crate) async fn outbox(db: &TestDb) -> Vec<OutboxRow> {
    let mut conn = db.connect_any().await;
    let rows: Vec<(String, i64)> = sqlx::query_as("select cast(event_id as text), order_id from outbox order by id")
        .fetch_all(&mut conn)
        .await
        .expect("outbox");
    rows.into_iter()
        .map(|(event_id, order_id)| OutboxRow { event_id: Uuid::parse_str(&event_id).expect("a UUID"), order_id })
        .collect()
}

/// Waits until the relay has published (and marked) every outbox row.
pub(crate) async fn wait_until_outbox_drained(db: &TestDb) {
    poll::until("the outbox to be drained", LIMIT, || async {
        (db.scalar("select count(*) from outbox where sent_at is null").await == 0).then_some(())
    })
    .await;
}

/// How many times each event id occurs on the topic.
pub(crate) fn occurrences(records: &[Record]) -> HashMap<Uuid, usize> {
    let mut counts = HashMap::new();
    for record in records {
        *counts.entry(event_id(record)).or_default() += 1;
    }
    counts
}

/// The event id of a record, checked against its `event-id` header.
pub(crate) fn event_id(record: &Record) -> Uuid {
    let event = record.event();
    assert_eq!(record.header("event-id").as_deref(), Some(event.event_id.as_str()), "event-id header");
    Uuid::parse_str(&event.event_id).expect("a UUID event id")
}

/// The events of each order in the order a consumer sees them (one partition per order, so offset order),
/// first occurrences only.
pub(crate) fn events_by_order(records: &[Record]) -> HashMap<i64, Vec<OrderStatusChanged>> {
    let mut seen = std::collections::HashSet::new();
    let mut by_order: HashMap<i64, Vec<OrderStatusChanged>> = HashMap::new();
    for record in records {
        let event = record.event();
        assert_eq!(record.key.as_deref(), Some(event.order_id.to_string().as_str()), "the key is the order id");
        if seen.insert(event.event_id.clone()) {
            by_order.entry(event.order_id).or_default().push(event);
        }
    }
    by_order
}

/// Asserts that the sinks received exactly one notification per outbox event: one webhook call per event id
/// and one Telegram message per event, each order's in its events' order.
pub(crate) fn assert_one_notification_per_event(sinks: &SinkStandIn, rows: &[OutboxRow]) {
    let webhook = sinks.webhook_calls();
    let mut per_event: HashMap<String, usize> = HashMap::new();
    for call in &webhook {
        *per_event.entry(call.body["eventId"].as_str().unwrap_or_default().to_owned()).or_default() += 1;
    }
    for row in rows {
        assert_eq!(per_event.get(&row.event_id.to_string()), Some(&1), "webhook calls for event {}", row.event_id);
    }
    assert_eq!(webhook.len(), rows.len(), "webhook calls: one per event, no other");
    // Per order, the webhook saw the events in the order LOMS wrote them.
    let mut order_of_calls: HashMap<i64, Vec<String>> = HashMap::new();
    for call in &webhook {
        let order_id = call.body["orderId"].as_i64().expect("orderId");
        order_of_calls.entry(order_id).or_default().push(call.body["eventId"].as_str().unwrap_or_default().to_owned());
    }
    let mut order_of_rows: HashMap<i64, Vec<String>> = HashMap::new();
    for row in rows {
        order_of_rows.entry(row.order_id).or_default().push(row.event_id.to_string());
    }
    assert_eq!(order_of_calls, order_of_rows, "webhook calls per order, in order");

    let telegram = sinks.telegram_calls();
    assert_eq!(telegram.len(), rows.len(), "Telegram messages: one per event");
    for (order_id, events) in &order_of_rows {
        let prefix = format!("Order #{order_id} ");
        let messages =
            telegram.iter().filter(|call| call.body["text"].as_str().is_some_and(|t| t.starts_with(&prefix)));
        assert_eq!(messages.count(), events.len(), "Telegram messages about order {order_id}");
    }
}

/// Asserts that the events of `order_id` on the topic are exactly its recorded history, in order.
pub(crate) async fn assert_events_match_history(
    loms: &TestLoms,
    order_id: i64,
    events: &[OrderStatusChanged],
) -> Vec<(Option<OrderStatus>, OrderStatus, TransitionReason)> {
    let history = loms
        .client()
        .await
        .list_order_history(ListOrderHistoryRequest { order_id })
        .await
        .expect("order history")
        .into_inner()
        .transitions;
    let expected: Vec<_> = history.iter().map(|t| (t.from.map(|_| t.from()), t.to(), t.reason())).collect();
    let published: Vec<_> =
        events.iter().map(|e| (e.old_status.map(|_| e.old_status()), e.new_status(), e.reason())).collect();
    assert_eq!(published, expected, "events of order {order_id} against its history");
    published
}

/// An event of `order_id` as LOMS would publish it, with a fresh event id and two lines.
pub(crate) fn lifecycle_event(
    order_id: i64,
    old: Option<OrderStatus>,
    new: OrderStatus,
    reason: TransitionReason,
) -> OrderStatusChanged {
    OrderStatusChanged {
        event_id: Uuid::now_v7().to_string(),
        schema_version: 1,
        order_id,
        user: 7,
        old_status: old.map(Into::into),
        new_status: new.into(),
        reason: reason.into(),
        items: vec![
            minizon_proto::loms::Item { sku: 1001, count: 2 },
            minizon_proto::loms::Item { sku: 1002, count: 1 },
        ],
        ..OrderStatusChanged::default()
    }
}

/// Publishes `event` to the event topic the way the relay does: keyed by the order id, with the event headers.
pub(crate) async fn publish_event(broker: &TestBroker, event: &OrderStatusChanged) {
    let json = serde_json::to_string(event).expect("an event encodes");
    let headers = [("event-id", event.event_id.as_str()), ("event-type", "minizon.events.v1.OrderStatusChanged")];
    broker.produce(EVENTS_TOPIC, &event.order_id.to_string(), json.as_bytes(), &headers).await;
}

/// The event ids of the calls, in arrival order.
pub(crate) fn event_ids(calls: &[minizon_tests::notifications::Received]) -> Vec<String> {
    calls.iter().map(|call| call.body["eventId"].as_str().unwrap_or_default().to_owned()).collect()
}
