//! A sink outage is waited out: nothing lost, order per order kept, nothing dead-lettered unless the sink refuses
//! for good or stays down past the outage budget; dead letters can be replayed.

use std::time::Duration;

use axum::http::StatusCode;
use minizon_proto::{
    events::OrderStatusChanged,
    loms::{OrderStatus, TransitionReason},
};
use minizon_tests::{
    kafka::{DEAD_LETTER_TOPIC, EVENTS_TOPIC, TestBroker},
    notifications::{SinkStandIn, TestNotifications},
    poll,
};
use notifications::config::ReplayArgs;

use crate::support::{LIMIT, event_ids, lifecycle_event, publish_event};

/// An order's life up to delivery: four events.
fn order_events(order_id: i64) -> Vec<OrderStatusChanged> {
    use OrderStatus::{AwaitingPayment, Delivered, New, Payed, Shipped};
    use TransitionReason as R;
    vec![
        lifecycle_event(order_id, Some(New), AwaitingPayment, R::Reserved),
        lifecycle_event(order_id, Some(AwaitingPayment), Payed, R::Payment),
        lifecycle_event(order_id, Some(Payed), Shipped, R::Shipped),
        lifecycle_event(order_id, Some(Shipped), Delivered, R::Delivered),
    ]
}

fn ids(events: &[OrderStatusChanged]) -> Vec<String> {
    events.iter().map(|event| event.event_id.clone()).collect()
}

/// Webhook calls about `order_id`, as event ids in arrival order.
fn webhook_ids_of(sinks: &SinkStandIn, order_id: i64) -> Vec<String> {
    let calls: Vec<_> = sinks.webhook_calls().into_iter().filter(|call| call.body["orderId"] == order_id).collect();
    event_ids(&calls)
}

#[tokio::test]
async fn an_outage_of_the_sinks_loses_nothing_and_keeps_the_order_per_order() {
    // Arrange: the receiver is down before the events arrive.
    let broker = TestBroker::start().await;
    let sinks = SinkStandIn::start().await;
    let notifications = TestNotifications::start(&broker.bootstrap(), &sinks, |c| {
        c.sink_outage_budget = Duration::from_secs(600);
    })
    .await;
    sinks.go_down();
    let (first, second) = (order_events(31), order_events(32));

    // Act: both orders' events while the sinks are down; the outage is felt (retries) for a while; then it ends.
    for (a, b) in first.iter().zip(&second) {
        publish_event(&broker, a).await;
        publish_event(&broker, b).await;
    }
    poll::until("the worker to keep retrying through the outage", LIMIT, || async {
        (sinks.failed_attempts() >= 10).then_some(())
    })
    .await;
    let delivered_during_outage = sinks.webhook_calls().len();
    sinks.recover();
    broker.wait_until_consumed(&notifications.config.group_id, EVENTS_TOPIC, LIMIT).await;

    // Assert: nothing went through during the outage, everything after it, once, in order per order.
    assert_eq!(delivered_during_outage, 0);
    assert_eq!(webhook_ids_of(&sinks, 31), ids(&first));
    assert_eq!(webhook_ids_of(&sinks, 32), ids(&second));
    assert_eq!(sinks.telegram_calls().len(), first.len() + second.len(), "one Telegram message per event");
    assert_eq!(broker.count(DEAD_LETTER_TOPIC).await, 0, "an outage within the budget dead-letters nothing");
    assert!(notifications.is_running());
}

#[tokio::test]
async fn an_outage_longer_than_the_budget_dead_letters_the_event_with_the_reason_and_the_next_ones_go_on() {
    // Arrange: a budget of half a second.
    let broker = TestBroker::start().await;
    let sinks = SinkStandIn::start().await;
    let notifications = TestNotifications::start(&broker.bootstrap(), &sinks, |c| {
        c.sink_outage_budget = Duration::from_millis(500);
    })
    .await;
    sinks.go_down();
    let events = order_events(41);

    // Act: the first event outlasts the budget; the outage ends; the rest of the order follows.
    publish_event(&broker, &events[0]).await;
    poll::until("the first event to be dead-lettered", LIMIT, || async {
        (broker.count(DEAD_LETTER_TOPIC).await == 1).then_some(())
    })
    .await;
    sinks.recover();
    for event in &events[1..] {
        publish_event(&broker, event).await;
    }
    broker.wait_until_consumed(&notifications.config.group_id, EVENTS_TOPIC, LIMIT).await;

    // Assert
    let dead = broker.read_all(DEAD_LETTER_TOPIC).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].event().event_id, events[0].event_id);
    let reason = dead[0].header("dead-letter-reason").unwrap_or_default();
    assert!(reason.contains("outage budget") && reason.contains("503"), "{reason}");
    assert_eq!(webhook_ids_of(&sinks, 41), ids(&events[1..]), "the events behind it, in order");
}

#[tokio::test]
async fn a_permanent_refusal_is_dead_lettered_at_once_the_order_goes_on_and_a_replay_delivers_it_once() {
    // Arrange: both HTTP sinks refuse one event for good (400), however long the budget.
    let broker = TestBroker::start().await;
    let sinks = SinkStandIn::start().await;
    let notifications = TestNotifications::start(&broker.bootstrap(), &sinks, |c| {
        c.sink_outage_budget = Duration::from_secs(3600);
    })
    .await;
    let mut events = order_events(51);
    events[1].detail = "refuse-this-one".into();
    sinks.refuse_requests_containing("refuse-this-one", StatusCode::BAD_REQUEST);

    // Act
    for event in &events {
        publish_event(&broker, event).await;
    }
    broker.wait_until_consumed(&notifications.config.group_id, EVENTS_TOPIC, LIMIT).await;
    let before_replay = webhook_ids_of(&sinks, 51);
    let refused_attempts = sinks.failed_attempts();
    let dead = broker.read_all(DEAD_LETTER_TOPIC).await;

    // Assert: dead-lettered without retrying, with the reason; the events behind it delivered in order.
    assert_eq!(refused_attempts, 2, "one attempt per HTTP sink: a refusal is not retried");
    assert_eq!(dead.len(), 1);
    let reason = dead[0].header("dead-letter-reason").unwrap_or_default();
    assert!(reason.contains("400") && reason.contains("refused on purpose"), "{reason}");
    let channels = dead[0].header("dead-letter-sink").unwrap_or_default();
    assert!(channels.contains("telegram") && channels.contains("webhook") && !channels.contains("log"), "{channels}");
    let others: Vec<String> = [0, 2, 3].iter().map(|&i| events[i].event_id.clone()).collect();
    assert_eq!(before_replay, others);

    // Act: the cause is fixed; the dead letters are replayed, twice.
    sinks.stop_refusing();
    let args = ReplayArgs { replay_group_id: "replay-test".into(), dry_run: false };
    let replayed = notifications::replay::replay(&notifications.config, &args).await.expect("replay");
    broker.wait_until_consumed(&notifications.config.group_id, EVENTS_TOPIC, LIMIT).await;
    let replayed_again = notifications::replay::replay(&notifications.config, &args).await.expect("second replay");

    // Assert: the refused event arrived once, on the channels that had refused it; a second replay has nothing.
    assert_eq!(replayed.replayed, 1, "{:?}", replayed.letters);
    assert!(replayed.letters[0].contains("refused on purpose"), "{:?}", replayed.letters);
    assert_eq!(replayed_again.replayed, 0, "what was replayed is not replayed again");
    let mut after_replay = others;
    after_replay.push(events[1].event_id.clone());
    assert_eq!(webhook_ids_of(&sinks, 51), after_replay);
    let telegram = sinks.telegram_calls();
    assert_eq!(
        telegram
            .iter()
            .filter(|call| call.body["text"].as_str().is_some_and(|t| t.contains("refuse-this-one")))
            .count(),
        1
    );
    let on_topic = broker.read_all(EVENTS_TOPIC).await;
    let replayed_records: Vec<_> =
        on_topic.iter().filter(|record| record.header("dead-letter-replayed-from").is_some()).collect();
    assert_eq!(replayed_records.len(), 1, "one record replayed");
    let replayed_record = replayed_records[0];
    assert_eq!(replayed_record.event().event_id, events[1].event_id);
    assert!(
        replayed_record.header("dead-letter-replayed-from").is_some_and(|from| from.starts_with(DEAD_LETTER_TOPIC))
    );
    assert!(replayed_record.header("dead-letter-reason").is_none(), "dead-letter headers are dropped");
}
