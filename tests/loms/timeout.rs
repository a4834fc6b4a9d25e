//! The unpaid-order timeout: overdue orders are cancelled by LOMS itself, also across restarts.

use std::time::Duration;

use loms::Config;
use minizon_proto::loms::{ListOrderHistoryRequest, OrderPayedRequest, OrderStatus, TransitionReason};
use minizon_tests::{db::TestDb, loms::TestLoms, poll};
use tonic::Code;

use crate::support::{assert_status, available, order, status_of, wait_until_overdue};

async fn wait_for_status(loms: &TestLoms, order_id: i64, wanted: OrderStatus) {
    poll::until(&format!("order {order_id} to be {wanted:?}"), Duration::from_secs(20), || async {
        let mut client = loms.client().await;
        (status_of(&mut client, order_id).await == wanted).then_some(())
    })
    .await;
}

#[tokio::test]
async fn an_unpaid_order_is_cancelled_after_its_deadline_and_its_stock_freed() {
    let loms = TestLoms::start_with(TestDb::new().await, |c| c.payment_timeout = Duration::from_secs(1)).await;
    loms.set_stock(1, 1001, 5).await;
    let mut client = loms.client().await;
    let id = client.create_order(order(7, &[(1001, 5)])).await.unwrap().into_inner().order_id;

    wait_for_status(&loms, id, OrderStatus::Cancelled).await;

    assert_eq!(available(&mut client, 1001).await, 5);
    let history = client.list_order_history(ListOrderHistoryRequest { order_id: id }).await.unwrap().into_inner();
    let last = history.transitions.last().unwrap();
    assert_eq!(last.reason(), TransitionReason::UnpaidTimeout);
}

#[tokio::test]
async fn a_payment_after_the_deadline_is_refused_even_before_the_sweep_runs() {
    // A sweep schedule that never fires in the test's lifetime (yearly) isolates OrderPayed's own deadline check.
    let loms = TestLoms::start_with(TestDb::new().await, |c| {
        c.payment_timeout = Duration::from_millis(200);
        c.sweep_schedule = "0 0 0 1 1 *".into();
    })
    .await;
    loms.set_stock(1, 1001, 5).await;
    let mut client = loms.client().await;
    let id = client.create_order(order(7, &[(1001, 2)])).await.unwrap().into_inner().order_id;
    wait_until_overdue(&loms.db, id).await;

    assert_status(client.order_payed(OrderPayedRequest { order_id: id }).await, Code::FailedPrecondition, "deadline");

    assert_eq!(status_of(&mut client, id).await, OrderStatus::Cancelled);
    assert_eq!(available(&mut client, 1001).await, 5);
}

#[tokio::test]
async fn orders_that_fell_due_while_loms_was_down_are_cancelled_after_restart() {
    let loms = TestLoms::start_with(TestDb::new().await, |c| c.payment_timeout = Duration::from_secs(1)).await;
    loms.set_stock(1, 1001, 5).await;
    let id = loms.client().await.create_order(order(7, &[(1001, 3)])).await.unwrap().into_inner().order_id;
    let (db, config) = loms.stop().await;
    // While LOMS is down, the deadline passes.
    wait_until_overdue(&db, id).await;

    let loms = TestLoms::start_with(db, |c| *c = Config { listen: c.listen, ..config }).await;

    wait_for_status(&loms, id, OrderStatus::Cancelled).await;
    assert_eq!(available(&mut loms.client().await, 1001).await, 5);
}
