//! Several LOMS replicas relaying from one database.

use minizon_proto::loms::{CancelOrderRequest, OrderPayedRequest};
use minizon_tests::{
    db::TestDb,
    kafka::{EVENTS_TOPIC, TestBroker},
};

use crate::support::{events_by_order, occurrences, order, outbox, start_loms, wait_until_outbox_drained};

#[tokio::test]
async fn two_replicas_relaying_one_database_publish_each_event_once_and_in_order() {
    // Arrange
    let broker = TestBroker::start().await;
    // Replicas sharing one database is the production topology: PostgreSQL whichever backend the suite runs on.
    let db = TestDb::postgres().await;
    let replicas = [start_loms(db.clone(), &broker).await, start_loms(db.clone(), &broker).await];
    replicas[0].set_stock(1, 1001, 10_000).await;

    // Act: many orders change at once, through both replicas, so both relays have work at the same time.
    let mut tasks = Vec::new();
    for i in 0..40_i64 {
        let mut client = replicas[usize::try_from(i % 2).unwrap()].client().await;
        tasks.push(tokio::spawn(async move {
            let order_id = client.create_order(order(i + 1, &[(1001, 1)])).await.unwrap().into_inner().order_id;
            if i % 3 == 0 {
                client.cancel_order(CancelOrderRequest { order_id }).await.unwrap();
            } else {
                client.order_payed(OrderPayedRequest { order_id }).await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    wait_until_outbox_drained(&db).await;

    // Assert: every event exactly once on the topic, and each order's events in the order they were written.
    let rows = outbox(&db).await;
    let records = broker.read_all(EVENTS_TOPIC).await;
    let on_topic = occurrences(&records);
    assert_eq!(records.len(), rows.len(), "as many records as events");
    for row in &rows {
        assert_eq!(on_topic.get(&row.event_id), Some(&1), "event {} once", row.event_id);
    }
    let by_order = events_by_order(&records);
    for (order_id, events) in &by_order {
        let published: Vec<String> = events.iter().map(|e| e.event_id.clone()).collect();
        let written: Vec<String> =
            rows.iter().filter(|r| r.order_id == *order_id).map(|r| r.event_id.to_string()).collect();
        assert_eq!(published, written, "events of order {order_id} in order");
    }
}
