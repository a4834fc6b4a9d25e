//! A relay that dies after the broker acknowledged a round but before it marked the rows.

use minizon_proto::loms::OrderPayedRequest;
use minizon_tests::{
    db::TestDb,
    kafka::{EVENTS_TOPIC, TestBroker},
    loms::TestLoms,
    notifications::{SinkStandIn, TestNotifications},
};

use crate::support::{
    LIMIT, assert_one_notification_per_event, enable_relay, occurrences, order, outbox, wait_until_outbox_drained,
};

#[tokio::test]
async fn events_published_but_not_marked_before_a_crash_are_published_again_and_notified_once() {
    // Arrange: an order's events in the outbox, published by a relay that "crashed" before marking them.
    let broker = TestBroker::start().await;
    let sinks = SinkStandIn::start().await;
    let notifications = TestNotifications::start(&broker.bootstrap(), &sinks, |_| {}).await;
    let loms = TestLoms::start_with(TestDb::new().await, |_| {}).await; // relay off
    loms.set_stock(1, 1001, 10).await;
    let mut client = loms.client().await;
    let order_id = client.create_order(order(1, &[(1001, 2)])).await.unwrap().into_inner().order_id;
    client.order_payed(OrderPayedRequest { order_id }).await.unwrap();
    let mut relay_config = loms.config.outbox.clone();
    enable_relay_settings(&mut relay_config, &broker);
    let source = loms.db.outbox_source().await;
    let published = loms::outbox::testing::publish_round_without_marking(source, &relay_config).await.unwrap();
    assert_eq!(published, 1, "a round publishes an order's earliest unsent event only");
    assert_eq!(broker.count(EVENTS_TOPIC).await, 1, "the broker has the event");
    let rows = outbox(&loms.db).await;
    assert!(rows.len() >= 2, "create and pay wrote several events");

    // Act: LOMS restarts with its relay on.
    let (db, mut config) = loms.stop().await;
    enable_relay(&mut config, &broker.bootstrap());
    let loms = TestLoms::start_with(db, move |c| *c = loms::Config { listen: c.listen, ..config }).await;
    wait_until_outbox_drained(&loms.db).await;
    broker.wait_until_consumed(&notifications.config.group_id, EVENTS_TOPIC, LIMIT).await;

    // Assert: the first event was published twice, the others once; each notified exactly once.
    let on_topic = occurrences(&broker.read_all(EVENTS_TOPIC).await);
    assert_eq!(on_topic[&rows[0].event_id], 2, "the unmarked event is published again");
    for row in &rows[1..] {
        assert_eq!(on_topic[&row.event_id], 1, "event {} once", row.event_id);
    }
    assert_one_notification_per_event(&sinks, &rows);
}

fn enable_relay_settings(config: &mut loms::outbox::RelayConfig, broker: &TestBroker) {
    config.enabled = true;
    config.kafka_brokers = broker.bootstrap();
}
