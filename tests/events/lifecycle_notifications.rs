//! A notification for each step of an order's life, to the customer and — for new orders, changes and
//! cancellations before hand-over — to the store's staff, each once per channel even when redelivered.

use std::collections::BTreeMap;

use minizon_proto::{
    events::OrderStatusChanged,
    loms::{Item, OrderStatus, TransitionReason},
};
use minizon_tests::{
    kafka::{DEAD_LETTER_TOPIC, EVENTS_TOPIC, TestBroker},
    notifications::{Received, SinkStandIn, TELEGRAM_TOKEN, TestNotifications},
};
use notifications::SinkKind;

use crate::support::{LIMIT, event_ids, lifecycle_event, publish_event};

const STAFF_CHAT: &str = "-100999";

#[tokio::test]
async fn every_step_is_told_to_the_customer_and_the_staff_hear_what_concerns_the_warehouse_once_each() {
    // Arrange: customer sinks (log, Telegram, webhook) and a staff channel (its own Telegram chat and webhook).
    let broker = TestBroker::start().await;
    let sinks = SinkStandIn::start().await;
    let staff_url = format!("{}/staff", sinks.url());
    let notifications = TestNotifications::start(&broker.bootstrap(), &sinks, |c| {
        c.staff_sinks = vec![SinkKind::Telegram, SinkKind::Webhook];
        c.staff_telegram_chat_id = Some(STAFF_CHAT.to_owned());
        c.staff_webhook_url = Some(staff_url.clone());
    })
    .await;
    use OrderStatus::{AwaitingPayment, Cancelled, Delivered, New, Payed, Shipped};
    use TransitionReason as R;
    // Order 1: created, changed, paid, shipped, delivered. Order 2: paid, refunded before shipping. Order 3:
    // shipped, refunded with a return, return received. Order 4: cancelled by the timeout.
    let mut changed = lifecycle_event(1, Some(AwaitingPayment), AwaitingPayment, R::Changed);
    changed.previous_items = vec![Item { sku: 1001, count: 5 }];
    let mut refund_payed = lifecycle_event(2, Some(Payed), Cancelled, R::Refund);
    refund_payed.detail = "changed my mind".into();
    let mut refund_shipped = lifecycle_event(3, Some(Shipped), Cancelled, R::Refund);
    refund_shipped.return_requested = true;
    let events = vec![
        lifecycle_event(1, Some(New), AwaitingPayment, R::Reserved),
        changed,
        lifecycle_event(1, Some(AwaitingPayment), Payed, R::Payment),
        lifecycle_event(1, Some(Payed), Shipped, R::Shipped),
        lifecycle_event(1, Some(Shipped), Delivered, R::Delivered),
        lifecycle_event(2, Some(AwaitingPayment), Payed, R::Payment),
        refund_payed,
        lifecycle_event(3, Some(Payed), Shipped, R::Shipped),
        refund_shipped,
        lifecycle_event(3, Some(Cancelled), Cancelled, R::ReturnReceived),
        lifecycle_event(4, Some(AwaitingPayment), Cancelled, R::UnpaidTimeout),
    ];

    // Act: every event, then each of them again (a redelivery, or a republish by the relay).
    for event in &events {
        publish_event(&broker, event).await;
    }
    for event in &events {
        publish_event(&broker, event).await;
    }
    broker.wait_until_consumed(&notifications.config.group_id, EVENTS_TOPIC, LIMIT).await;

    // Assert: the customer's webhook got every event once, in order per order, with its words.
    let customer = sinks.webhook_calls();
    assert_eq!(per_order(&customer), per_order_of(&events.iter().collect::<Vec<_>>()), "one call per event");
    let text_of = |event: &OrderStatusChanged| -> String {
        let call = customer.iter().find(|call| call.body["eventId"] == event.event_id.as_str()).expect("a call");
        call.body["text"].as_str().unwrap_or_default().to_owned()
    };
    assert_eq!(
        text_of(&events[1]),
        "Order #1 was changed and now holds 2 × sku 1001, 1 × sku 1002 (before: 5 × sku 1001). It still awaits \
         payment."
    );
    assert_eq!(text_of(&events[3]), "Order #1 was handed to the courier and is on its way.");
    assert_eq!(text_of(&events[4]), "Order #1 was delivered. Enjoy!");
    assert_eq!(
        text_of(&events[6]),
        "Order #2 was cancelled and will be refunded; nothing was shipped. (changed my mind)"
    );
    assert!(text_of(&events[8]).contains("the courier brings the goods back"), "{}", text_of(&events[8]));
    assert_eq!(text_of(&events[9]), "The goods of order #3 are back in our warehouse: the return is complete.");
    assert!(customer.iter().all(|call| call.body["audience"] == "customer"));

    // The staff heard of the new order, its change, the refund before shipping and the timeout — once each, on
    // both of their channels; not of payments, shipping, delivery, nor the refund of what the courier had.
    let for_staff = [&events[0], &events[1], &events[6], &events[10]];
    let staff_webhook = sinks.calls_to("/staff");
    assert_eq!(per_order(&staff_webhook), per_order_of(&for_staff), "one staff call per event that concerns them");
    assert!(staff_webhook.iter().all(|call| call.body["audience"] == "staff"));
    let first_staff_texts: Vec<&str> = staff_webhook
        .iter()
        .filter(|call| call.body["orderId"] == 1)
        .map(|call| call.body["text"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        first_staff_texts,
        [
            "New order #1 to pick: 2 × sku 1001, 1 × sku 1002.",
            "Order #1 changed: pick 2 × sku 1001, 1 × sku 1002 instead of 5 × sku 1001."
        ]
    );
    let telegram = sinks.calls_to(&format!("/bot{TELEGRAM_TOKEN}/sendMessage"));
    let staff_chat = telegram.iter().filter(|call| call.body["chat_id"] == STAFF_CHAT).count();
    assert_eq!(staff_chat, for_staff.len(), "one staff Telegram message per event that concerns them");
    assert_eq!(telegram.len() - staff_chat, events.len(), "one customer Telegram message per event");
    assert_eq!(broker.count(DEAD_LETTER_TOPIC).await, 0);
}

/// Event ids of the calls, per order, in arrival order.
fn per_order(calls: &[Received]) -> BTreeMap<i64, Vec<String>> {
    let mut by_order: BTreeMap<i64, Vec<String>> = BTreeMap::new();
    for (call, id) in calls.iter().zip(event_ids(calls)) {
        by_order.entry(call.body["orderId"].as_i64().unwrap_or_default()).or_default().push(id);
    }
    by_order
}

/// Event ids of the events, per order, in publishing order.
fn per_order_of(events: &[&OrderStatusChanged]) -> BTreeMap<i64, Vec<String>> {
    let mut by_order: BTreeMap<i64, Vec<String>> = BTreeMap::new();
    for event in events {
        by_order.entry(event.order_id).or_default().push(event.event_id.clone());
    }
    by_order
}

#[tokio::test]
async fn a_message_longer_than_telegram_accepts_is_shortened_not_refused() {
    // Arrange: a change to a thousand lines, whose message is far beyond Telegram's 4 096 characters.
    let broker = TestBroker::start().await;
    let sinks = SinkStandIn::start().await;
    let notifications = TestNotifications::start(&broker.bootstrap(), &sinks, |_| {}).await;
    let mut event =
        lifecycle_event(5, Some(OrderStatus::AwaitingPayment), OrderStatus::AwaitingPayment, TransitionReason::Changed);
    event.items = (1..=1000).map(|sku| Item { sku, count: 3 }).collect();

    // Act
    publish_event(&broker, &event).await;
    broker.wait_until_consumed(&notifications.config.group_id, EVENTS_TOPIC, LIMIT).await;

    // Assert: Telegram got it shortened to the limit; the webhook, which has none, got all of it.
    let telegram = sinks.telegram_calls();
    assert_eq!(telegram.len(), 1);
    let text = telegram[0].body["text"].as_str().unwrap_or_default();
    assert_eq!(text.encode_utf16().count(), 4096, "cut to the limit");
    assert!(text.starts_with("Order #5 was changed and now holds 3 × sku 1, ") && text.ends_with('…'));
    let full = sinks.webhook_calls()[0].body["text"].as_str().unwrap_or_default().to_owned();
    assert!(full.chars().count() > 4096 && full.contains("3 × sku 1000"), "the webhook text is whole");
    assert_eq!(broker.count(DEAD_LETTER_TOPIC).await, 0, "shortened, not refused");
}
