//! The order life cycle: reserve, pay, cancel, fail, and the history it leaves.

use minizon_proto::loms::{
    CancelOrderRequest, ListOrderHistoryRequest, ListOrderRequest, ListStockRequest, OrderPayedRequest, OrderStatus,
    TransitionReason,
};
use minizon_tests::loms::TestLoms;
use tonic::Code;

use crate::support::{assert_status, available, order, status_of};

#[tokio::test]
async fn a_paid_order_leaves_the_warehouse() {
    let loms = TestLoms::start().await;
    loms.set_stock(1, 1001, 10).await;
    let mut client = loms.client().await;

    let id = client.create_order(order(7, &[(1001, 3)])).await.unwrap().into_inner().order_id;
    assert_eq!(status_of(&mut client, id).await, OrderStatus::AwaitingPayment);
    assert_eq!(available(&mut client, 1001).await, 7, "reserved units cannot be bought by anyone else");

    client.order_payed(OrderPayedRequest { order_id: id }).await.unwrap();

    assert_eq!(status_of(&mut client, id).await, OrderStatus::Payed);
    let levels = loms.admin().await.list_stock(ListStockRequest { sku: 1001 }).await.unwrap().into_inner().levels;
    assert_eq!((levels[0].on_hand, levels[0].reserved, levels[0].available), (7, 0, 7));
}

#[tokio::test]
async fn a_cancelled_order_gives_its_stock_back() {
    let loms = TestLoms::start().await;
    loms.set_stock(1, 1001, 10).await;
    let mut client = loms.client().await;
    let id = client.create_order(order(7, &[(1001, 10)])).await.unwrap().into_inner().order_id;
    assert_eq!(available(&mut client, 1001).await, 0);

    client.cancel_order(CancelOrderRequest { order_id: id }).await.unwrap();

    assert_eq!(status_of(&mut client, id).await, OrderStatus::Cancelled);
    assert_eq!(available(&mut client, 1001).await, 10);
}

#[tokio::test]
async fn an_order_with_too_little_stock_is_kept_as_failed_and_reserves_nothing() {
    let loms = TestLoms::start().await;
    loms.set_stock(1, 1001, 10).await;
    loms.set_stock(1, 1002, 1).await;
    let mut client = loms.client().await;

    let status = client.create_order(order(7, &[(1001, 2), (1002, 2)])).await.unwrap_err();

    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(status.message().contains("sku 1002"), "names the short sku: {}", status.message());
    let failed_id: i64 = status.metadata().get("order-id").unwrap().to_str().unwrap().parse().unwrap();
    assert!(status.message().contains(&format!("order {failed_id}")), "names the order: {}", status.message());
    assert_eq!(status_of(&mut client, failed_id).await, OrderStatus::Failed);
    assert_eq!(available(&mut client, 1001).await, 10, "all or nothing: sku 1001 was not reserved either");
    assert_eq!(available(&mut client, 1002).await, 1);
}

#[tokio::test]
async fn an_order_spanning_warehouses_takes_the_fullest_first() {
    let loms = TestLoms::start().await;
    loms.set_stock(1, 1001, 2).await;
    loms.set_stock(2, 1001, 5).await;
    loms.set_stock(3, 1001, 4).await;
    let mut client = loms.client().await;

    client.create_order(order(7, &[(1001, 8)])).await.unwrap();

    let levels = loms.admin().await.list_stock(ListStockRequest { sku: 1001 }).await.unwrap().into_inner().levels;
    let reserved: Vec<(i64, u64)> = levels.iter().map(|l| (l.warehouse_id, l.reserved)).collect();
    assert_eq!(reserved, vec![(1, 0), (2, 5), (3, 3)]);
}

#[tokio::test]
async fn duplicate_skus_in_one_order_are_merged() {
    let loms = TestLoms::start().await;
    loms.set_stock(1, 1001, 10).await;
    let mut client = loms.client().await;

    let id = client.create_order(order(7, &[(1001, 2), (1001, 3)])).await.unwrap().into_inner().order_id;

    let listed = client.list_order(ListOrderRequest { order_id: id }).await.unwrap().into_inner();
    assert_eq!(listed.user, 7);
    assert_eq!(listed.items.len(), 1);
    assert_eq!((listed.items[0].sku, listed.items[0].count), (1001, 5));
}

#[tokio::test]
async fn paying_twice_and_cancelling_twice_succeed_without_changing_anything() {
    let loms = TestLoms::start().await;
    loms.set_stock(1, 1001, 10).await;
    let mut client = loms.client().await;
    let paid = client.create_order(order(7, &[(1001, 1)])).await.unwrap().into_inner().order_id;
    let cancelled = client.create_order(order(7, &[(1001, 1)])).await.unwrap().into_inner().order_id;

    for _ in 0..2 {
        client.order_payed(OrderPayedRequest { order_id: paid }).await.unwrap();
        client.cancel_order(CancelOrderRequest { order_id: cancelled }).await.unwrap();
    }

    let levels = loms.admin().await.list_stock(ListStockRequest { sku: 1001 }).await.unwrap().into_inner().levels;
    assert_eq!((levels[0].on_hand, levels[0].reserved), (9, 0), "one unit sold once, one freed once");
}

#[tokio::test]
async fn paying_a_cancelled_order_is_a_failed_precondition() {
    let loms = TestLoms::start().await;
    loms.set_stock(1, 1001, 10).await;
    let mut client = loms.client().await;
    let id = client.create_order(order(7, &[(1001, 1)])).await.unwrap().into_inner().order_id;
    client.cancel_order(CancelOrderRequest { order_id: id }).await.unwrap();

    assert_status(
        client.order_payed(OrderPayedRequest { order_id: id }).await,
        Code::FailedPrecondition,
        "is cancelled",
    );
}

#[tokio::test]
async fn paying_a_failed_order_is_a_failed_precondition() {
    let loms = TestLoms::start().await;
    let mut client = loms.client().await;
    let status = client.create_order(order(7, &[(1001, 1)])).await.unwrap_err();
    let id: i64 = status.metadata().get("order-id").unwrap().to_str().unwrap().parse().unwrap();

    assert_status(client.order_payed(OrderPayedRequest { order_id: id }).await, Code::FailedPrecondition, "is failed");
}

#[tokio::test]
async fn cancelling_a_paid_order_is_a_failed_precondition() {
    let loms = TestLoms::start().await;
    loms.set_stock(1, 1001, 10).await;
    let mut client = loms.client().await;
    let id = client.create_order(order(7, &[(1001, 1)])).await.unwrap().into_inner().order_id;
    client.order_payed(OrderPayedRequest { order_id: id }).await.unwrap();

    assert_status(client.cancel_order(CancelOrderRequest { order_id: id }).await, Code::FailedPrecondition, "is payed");
}

#[tokio::test]
async fn cancelling_a_failed_order_is_a_failed_precondition() {
    let loms = TestLoms::start().await;
    let mut client = loms.client().await;
    let status = client.create_order(order(7, &[(1001, 1)])).await.unwrap_err();
    let id: i64 = status.metadata().get("order-id").unwrap().to_str().unwrap().parse().unwrap();

    assert_status(
        client.cancel_order(CancelOrderRequest { order_id: id }).await,
        Code::FailedPrecondition,
        "is failed",
    );
}

#[tokio::test]
async fn the_history_records_every_transition_with_its_reason() {
    let loms = TestLoms::start().await;
    loms.set_stock(1, 1001, 10).await;
    let mut client = loms.client().await;
    let id = client.create_order(order(7, &[(1001, 1)])).await.unwrap().into_inner().order_id;
    client.order_payed(OrderPayedRequest { order_id: id }).await.unwrap();

    let history = client.list_order_history(ListOrderHistoryRequest { order_id: id }).await.unwrap().into_inner();

    let steps: Vec<(Option<OrderStatus>, OrderStatus, TransitionReason)> = history
        .transitions
        .iter()
        .map(|t| (t.from.map(|f| OrderStatus::try_from(f).unwrap()), t.to(), t.reason()))
        .collect();
    assert_eq!(
        steps,
        vec![
            (None, OrderStatus::New, TransitionReason::Created),
            (Some(OrderStatus::New), OrderStatus::AwaitingPayment, TransitionReason::Reserved),
            (Some(OrderStatus::AwaitingPayment), OrderStatus::Payed, TransitionReason::Payment),
        ]
    );
    assert!(history.transitions.iter().all(|t| t.at.is_some()));
}
