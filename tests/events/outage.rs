//! Broker outages: LOMS keeps serving, and every event arrives once the broker is back.

use minizon_proto::loms::{CancelOrderRequest, OrderPayedRequest, loms_v1_client::LomsV1Client};
use std::time::Duration;

use minizon_tests::{db::TestDb, kafka::EVENTS_TOPIC, poll};
use tonic::transport::Channel;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

use crate::support::{System, assert_one_notification_per_event, occurrences, order, outbox};

/// Creates `count` orders for `user`, paying every other one and cancelling the rest; every call must succeed.
async fn change_orders(client: &mut LomsV1Client<Channel>, user: i64, count: usize) {
    for i in 0..count {
        let order_id = client
            .create_order(order(user, &[(1001, 1)]))
            .await
            .expect("CreateOrder does not depend on Kafka")
            .into_inner()
            .order_id;
        if i % 2 == 0 {
            client.order_payed(OrderPayedRequest { order_id }).await.expect("OrderPayed does not depend on Kafka");
        } else {
            client.cancel_order(CancelOrderRequest { order_id }).await.expect("CancelOrder does not depend on Kafka");
        }
    }
}

/// Waits until even the newest unsent event has waited longer than the relay's delivery timeout (5 s in these
/// tests): then a relay round holding this phase's events has failed, and the outage really was felt. While the
/// broker is away no event can be acknowledged, so the wait is bound to end.
async fn wait_until_a_round_timed_out(db: &TestDb) {
    poll::until("an event to wait longer than the delivery timeout", Duration::from_secs(60), || async {
        let sql = format!(
            "select count(*) from outbox where sent_at is null having max(created_at) < {}",
            db.now_sql(-6_000)
        );
        let mut conn = db.connect_any().await;
        let timed_out: Option<i64> = sqlx::query_scalar(&sql).fetch_optional(&mut conn).await.ok()?;
        timed_out.map(|_| ())
    })
    .await;
}

#[tokio::test]
async fn orders_keep_changing_through_a_broker_outage_and_every_event_is_notified_once() {
    // Arrange
    let mut system = System::start().await;
    system.loms.set_stock(1, 1001, 1000).await;
    let mut client = system.loms.client().await;
    change_orders(&mut client, 1, 2).await;

    // Act: the broker hangs (frozen process) while orders change, comes back; then it dies, orders change,
    // and it restarts on the same storage.
    system.broker.pause();
    change_orders(&mut client, 2, 6).await;
    wait_until_a_round_timed_out(&system.loms.db).await;
    system.broker.resume();
    system.broker.kill().await;
    change_orders(&mut client, 3, 6).await;
    wait_until_a_round_timed_out(&system.loms.db).await;
    system.broker.restart().await;
    system.settle().await;

    // Assert: nothing lost on the topic (a retry after an outage may publish an event twice; the consumer's
    // de-duplication is what makes that harmless), and exactly one notification per event.
    let rows = outbox(&system.loms.db).await;
    let on_topic = occurrences(&system.broker.read_all(EVENTS_TOPIC).await);
    for row in &rows {
        assert!(on_topic.contains_key(&row.event_id), "event {} was lost", row.event_id);
    }
    assert_eq!(on_topic.len(), rows.len(), "no record that is not an outbox event");
    assert_one_notification_per_event(&system.sinks, &rows);
    assert!(system.notifications.is_running());
}

/// The relay's own health entry, as a readiness probe or an operator sees it.
pub(crate) async fn relay_health(loms: &minizon_tests::loms::TestLoms) -> Option<ServingStatus> {
    let channel = Channel::from_shared(loms.url()).ok()?.connect().await.ok()?;
    let request = HealthCheckRequest { service: loms::startup::OUTBOX_HEALTH.into() };
    Some(HealthClient::new(channel).check(request).await.ok()?.into_inner().status())
}

#[tokio::test]
async fn the_relay_reports_not_serving_while_the_broker_is_down_and_serving_once_it_is_back() {
    // Arrange
    let mut broker = minizon_tests::kafka::TestBroker::start().await;
    let loms = crate::support::start_loms(TestDb::new().await, &broker).await;
    loms.set_stock(1, 1001, 100).await;
    let mut client = loms.client().await;
    client.create_order(order(1, &[(1001, 1)])).await.unwrap();
    poll::until("the relay to report SERVING", Duration::from_secs(30), || async {
        (relay_health(&loms).await == Some(ServingStatus::Serving)).then_some(())
    })
    .await;

    // Act: the broker goes away while events keep coming.
    broker.kill().await;
    client.create_order(order(2, &[(1001, 1)])).await.expect("requests do not need Kafka");

    // Assert: the relay says so, LOMS itself keeps serving, and the relay recovers with the broker.
    poll::until("the relay to report NOT_SERVING", Duration::from_secs(60), || async {
        (relay_health(&loms).await == Some(ServingStatus::NotServing)).then_some(())
    })
    .await;
    client.create_order(order(3, &[(1001, 1)])).await.expect("LOMS keeps serving");
    broker.restart().await;
    poll::until("the relay to report SERVING again", Duration::from_secs(60), || async {
        (relay_health(&loms).await == Some(ServingStatus::Serving)).then_some(())
    })
    .await;
}
