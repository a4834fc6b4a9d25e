//! One bad outbox row does not stop the rest: an event the broker refuses for good is set aside with its reason
//! (health says so), the later events of its order wait behind it, other orders' events keep flowing, and
//! `loms outbox republish` returns it once the cause is fixed.

use std::time::Duration;

use loms::outbox::{OutboxSource, Republish};
use minizon_tests::{
    db::TestDb,
    kafka::{EVENTS_TOPIC, TestBroker},
    loms::TestLoms,
    poll,
};
use tonic_health::pb::health_check_response::ServingStatus;
use uuid::Uuid;

use crate::{
    outage::relay_health,
    support::{LIMIT, enable_relay, order},
};

/// An order no request made: its events are written straight into the outbox by the test.
const STUCK_ORDER: i64 = 9_000_001;

/// Writes an event of [`STUCK_ORDER`] whose `detail` is `detail_bytes` long.
async fn insert_event(db: &TestDb, event_id: Uuid, detail_bytes: usize) {
    let payload = format!(
        r#"{{"eventId":"{event_id}","schemaVersion":1,"orderId":"{STUCK_ORDER}","user":"7","newStatus":"ORDER_STATUS_CANCELLED","reason":"TRANSITION_REASON_USER_CANCEL","detail":"{}"}}"#,
        "x".repeat(detail_bytes)
    );
    let now = db.now_sql(0);
    db.execute(&format!(
        "insert into outbox (event_id, order_id, payload, created_at) values ('{event_id}', {STUCK_ORDER}, '{payload}', {now})"
    ))
    .await;
}

/// The events on the topic of `order_id`, by their `event-id` header, in the order a consumer sees them.
async fn events_on_topic(broker: &TestBroker, order_id: i64) -> Vec<String> {
    let key = order_id.to_string();
    let records = broker.read_all(EVENTS_TOPIC).await;
    records.iter().filter(|r| r.key.as_deref() == Some(&key)).filter_map(|r| r.header("event-id")).collect()
}

#[tokio::test]
async fn an_event_the_broker_refuses_for_good_is_set_aside_while_the_rest_flows_until_it_is_republished() {
    // Arrange: a relay whose message limit the first event of one order exceeds, and a later event of that order.
    let broker = TestBroker::start().await;
    let brokers = broker.bootstrap();
    let db = TestDb::new().await;
    let url = db.url.clone();
    let small_limit = brokers.clone();
    let loms = TestLoms::start_with(db, move |config| {
        enable_relay(config, &small_limit);
        config.outbox.max_message_bytes = 10_000;
    })
    .await;
    loms.set_stock(1, 1001, 100).await;
    let (too_large, held) = (Uuid::now_v7(), Uuid::now_v7());
    insert_event(&loms.db, too_large, 20_000).await;
    insert_event(&loms.db, held, 10).await;

    // Act: orders made after the bad row.
    let mut client = loms.client().await;
    let mut later_orders = Vec::new();
    for user in 1..=3 {
        later_orders.push(client.create_order(order(user, &[(1001, 1)])).await.unwrap().into_inner().order_id);
    }

    // Assert: the bad row is parked with its reason, the later orders' events are published, the stuck order's
    // later event waits behind its first, and health says something is set aside.
    let db = &loms.db;
    let parked = format!(
        "select count(*) from outbox where event_id = '{too_large}' and sent_at is null and parked_at is not null \
         and park_reason like '%MessageSizeTooLarge%'"
    );
    poll::until("the too-large event to be parked", LIMIT, || async { (db.scalar(&parked).await == 1).then_some(()) })
        .await;
    let published_later = format!("select count(*) from outbox where order_id <> {STUCK_ORDER} and sent_at is null");
    poll::until("the later orders' events to be published", LIMIT, || async {
        (db.scalar(&published_later).await == 0).then_some(())
    })
    .await;
    for order_id in &later_orders {
        assert_eq!(events_on_topic(&broker, *order_id).await.len(), 2, "order {order_id}: created and reserved");
    }
    let waiting =
        format!("select count(*) from outbox where event_id = '{held}' and sent_at is null and parked_at is null");
    assert_eq!(db.scalar(&waiting).await, 1, "the stuck order's next event waits behind the parked one");
    assert!(events_on_topic(&broker, STUCK_ORDER).await.is_empty(), "nothing of the stuck order went out");
    poll::until("the relay to report NOT_SERVING", Duration::from_secs(30), || async {
        (relay_health(&loms).await == Some(ServingStatus::NotServing)).then_some(())
    })
    .await;

    // Act: the cause is fixed (the relay's limit raised) and the event republished from the command's code path.
    let (db, _config) = loms.stop().await;
    let loms = TestLoms::start_with(db, move |config| enable_relay(config, &brokers)).await;
    let source = OutboxSource::connect(&url).await.unwrap();
    assert_eq!(source.republish(&Republish::Event(too_large)).await.unwrap(), 1);
    assert_eq!(source.republish(&Republish::All).await.unwrap(), 0, "nothing else is parked");

    // Assert: both events of the stuck order go out, in order, and health recovers.
    crate::support::wait_until_outbox_drained(&loms.db).await;
    assert_eq!(events_on_topic(&broker, STUCK_ORDER).await, vec![too_large.to_string(), held.to_string()]);
    poll::until("the relay to report SERVING", Duration::from_secs(30), || async {
        (relay_health(&loms).await == Some(ServingStatus::Serving)).then_some(())
    })
    .await;
}
