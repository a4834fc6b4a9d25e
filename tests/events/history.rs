//! A full order history, through the relay, the broker and Notifications.

use std::time::Duration;

use minizon_proto::loms::{CancelOrderRequest, ListOrderRequest, OrderPayedRequest, OrderStatus, TransitionReason};
use minizon_tests::{kafka::EVENTS_TOPIC, poll};
use tonic::Code;

use crate::support::{
    System, assert_events_match_history, assert_one_notification_per_event, event_id, events_by_order, order, outbox,
};

#[tokio::test]
async fn a_full_order_history_is_published_in_order_and_notified_once_per_event() {
    // Arrange
    let system = System::start().await;
    system.loms.set_stock(1, 1001, 10).await;
    let mut client = system.loms.client().await;

    // Act: create and pay; create and cancel; create failing; create and let it time out.
    let paid = client.create_order(order(1, &[(1001, 2)])).await.unwrap().into_inner().order_id;
    client.order_payed(OrderPayedRequest { order_id: paid }).await.unwrap();
    let cancelled = client.create_order(order(2, &[(1001, 1)])).await.unwrap().into_inner().order_id;
    client.cancel_order(CancelOrderRequest { order_id: cancelled }).await.unwrap();
    let refused = client.create_order(order(3, &[(1001, 100)])).await.expect_err("not enough stock");
    assert_eq!(refused.code(), Code::FailedPrecondition);
    let timed_out = client.create_order(order(4, &[(1001, 3)])).await.unwrap().into_inner().order_id;
    // Bring the deadline forward rather than wait ten minutes; the sweep (every second) does the rest.
    let db = &system.loms.db;
    db.execute(&format!("update orders set payment_deadline = {} where id = {timed_out}", db.now_sql(-1_000))).await;
    poll::until("the unpaid order to time out", Duration::from_secs(30), || {
        let mut client = client.clone();
        async move {
            let status = client.list_order(ListOrderRequest { order_id: timed_out }).await.ok()?.into_inner().status();
            (status == OrderStatus::Cancelled).then_some(())
        }
    })
    .await;
    system.settle().await;

    // Assert: the topic holds each outbox event exactly once, with its headers.
    let rows = outbox(&system.loms.db).await;
    let records = system.broker.read_all(EVENTS_TOPIC).await;
    assert_eq!(records.len(), rows.len(), "one record per event");
    for record in &records {
        assert_eq!(record.header("event-type").as_deref(), Some("minizon.events.v1.OrderStatusChanged"));
        assert_eq!(record.header("schema-version").as_deref(), Some("1"));
        assert!(rows.iter().any(|r| r.event_id == event_id(record)), "a record that is not in the outbox");
    }
    // Per order: exactly the recorded history, in order, ending where each story ends.
    let by_order = events_by_order(&records);
    let failed: Vec<i64> = by_order.keys().copied().filter(|id| ![paid, cancelled, timed_out].contains(id)).collect();
    assert_eq!(failed.len(), 1, "one more order: the failed one");
    let ends = [
        (paid, OrderStatus::Payed, TransitionReason::Payment),
        (cancelled, OrderStatus::Cancelled, TransitionReason::UserCancel),
        (failed[0], OrderStatus::Failed, TransitionReason::InsufficientStock),
        (timed_out, OrderStatus::Cancelled, TransitionReason::UnpaidTimeout),
    ];
    for (order_id, status, reason) in ends {
        let published = assert_events_match_history(&system.loms, order_id, &by_order[&order_id]).await;
        let last = published.last().expect("at least one event");
        assert_eq!((last.1, last.2), (status, reason), "last event of order {order_id}");
    }
    // And the people were told once per event.
    assert_one_notification_per_event(&system.sinks, &rows);
}
