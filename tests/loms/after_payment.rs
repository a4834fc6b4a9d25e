//! The order's life after payment (ship, deliver, refund, return) and ChangeOrder: every transition and refusal,
//! with stock counted before and after and the outbox rows checked; the races, with real concurrency, counted.

use std::sync::Arc;

use futures::future::join_all;
use minizon_proto::loms::{
    CancelOrderRequest, ChangeOrderRequest, DeliverOrderRequest, Item, ListOrderHistoryRequest, ListOrderRequest,
    ListStockRequest, OrderPayedRequest, OrderStatus, ReceiveReturnRequest, RefundOrderRequest, ShipOrderRequest,
    TransitionReason, loms_v1_client::LomsV1Client,
};
use minizon_tests::loms::TestLoms;
use serde_json::Value;
use tonic::{Code, transport::Channel};

use crate::support::{assert_status, order, status_of};

const SKU: u32 = 7001;
const OTHER_SKU: u32 = 7002;

/// One sku's stock summed over warehouses: (on hand, reserved, sold to orders that are paid, shipped or delivered).
async fn counts(loms: &TestLoms, sku: u32) -> (u64, u64, i64) {
    let levels = loms.admin().await.list_stock(ListStockRequest { sku }).await.unwrap().into_inner().levels;
    let sold = loms
        .db
        .scalar(&format!(
            "select cast(coalesce(sum(r.count), 0) as bigint) from reservations r join orders o on o.id = r.order_id
             where r.sku = {sku} and o.status in (3, 5, 6)"
        ))
        .await;
    (levels.iter().map(|l| l.on_hand).sum(), levels.iter().map(|l| l.reserved).sum(), sold)
}

/// The order's outbox events, oldest first, as proto3 JSON.
async fn events(loms: &TestLoms, order_id: i64) -> Vec<Value> {
    loms.db
        .texts(&format!("select payload from outbox where order_id = {order_id} order by id"))
        .await
        .iter()
        .map(|payload| serde_json::from_str(payload).expect("an event is JSON"))
        .collect()
}

/// The reason of an event, as its proto3 JSON name.
fn reason(event: &Value) -> &str {
    event["reason"].as_str().unwrap_or_default()
}

/// An event's items (`field` = "items" or "previousItems") as (sku, count), absent = none.
fn lines(event: &Value, field: &str) -> Vec<(u64, u64)> {
    event[field]
        .as_array()
        .map(|items| {
            items.iter().map(|i| (i["sku"].as_u64().unwrap(), i["count"].as_u64().unwrap_or_default())).collect()
        })
        .unwrap_or_default()
}

/// The order's history as (from, to, reason, detail).
async fn history(
    client: &mut LomsV1Client<Channel>,
    order_id: i64,
) -> Vec<(Option<OrderStatus>, OrderStatus, TransitionReason, String)> {
    let history = client.list_order_history(ListOrderHistoryRequest { order_id }).await.unwrap().into_inner();
    history
        .transitions
        .iter()
        .map(|t| (t.from.map(|f| OrderStatus::try_from(f).unwrap()), t.to(), t.reason(), t.detail.clone()))
        .collect()
}

/// An order of `count` units of [`SKU`], paid.
async fn paid_order(client: &mut LomsV1Client<Channel>, count: u32) -> i64 {
    let id = client.create_order(order(7, &[(SKU, count)])).await.unwrap().into_inner().order_id;
    client.order_payed(OrderPayedRequest { order_id: id }).await.unwrap();
    id
}

fn refund(order_id: i64, reason: &str) -> RefundOrderRequest {
    RefundOrderRequest { order_id, reason: reason.to_owned() }
}

#[tokio::test]
async fn a_paid_order_is_shipped_then_delivered_once_each_without_touching_stock() {
    let loms = TestLoms::start().await;
    loms.set_stock(1, SKU, 10).await;
    let mut client = loms.client().await;
    let id = paid_order(&mut client, 3).await;
    assert_eq!(counts(&loms, SKU).await, (7, 0, 3));

    for _ in 0..2 {
        client.ship_order(ShipOrderRequest { order_id: id }).await.unwrap();
    }
    assert_eq!(status_of(&mut client, id).await, OrderStatus::Shipped);
    for _ in 0..2 {
        client.deliver_order(DeliverOrderRequest { order_id: id }).await.unwrap();
    }
    client.ship_order(ShipOrderRequest { order_id: id }).await.expect("a delivered order was shipped: a retry");

    assert_eq!(status_of(&mut client, id).await, OrderStatus::Delivered);
    assert_eq!(counts(&loms, SKU).await, (7, 0, 3), "shipping and delivering move no stock");
    let steps: Vec<_> = history(&mut client, id).await.into_iter().skip(3).map(|(f, t, r, _)| (f, t, r)).collect();
    assert_eq!(
        steps,
        vec![
            (Some(OrderStatus::Payed), OrderStatus::Shipped, TransitionReason::Shipped),
            (Some(OrderStatus::Shipped), OrderStatus::Delivered, TransitionReason::Delivered),
        ],
        "each step once, however often it was asked for"
    );
    let events = events(&loms, id).await;
    let reasons: Vec<&str> = events.iter().map(reason).collect();
    assert_eq!(
        reasons,
        [
            "TRANSITION_REASON_CREATED",
            "TRANSITION_REASON_RESERVED",
            "TRANSITION_REASON_PAYMENT",
            "TRANSITION_REASON_SHIPPED",
            "TRANSITION_REASON_DELIVERED"
        ]
    );
    assert_eq!(events[4]["newStatus"], "ORDER_STATUS_DELIVERED");
    assert_eq!(lines(&events[4], "items"), vec![(u64::from(SKU), 3)]);
}

#[tokio::test]
async fn delivering_a_paid_order_records_both_steps() {
    let loms = TestLoms::start().await;
    loms.set_stock(1, SKU, 10).await;
    let mut client = loms.client().await;
    let id = paid_order(&mut client, 2).await;

    client.deliver_order(DeliverOrderRequest { order_id: id }).await.unwrap();

    assert_eq!(status_of(&mut client, id).await, OrderStatus::Delivered);
    assert_eq!(counts(&loms, SKU).await, (8, 0, 2));
    let steps: Vec<_> = history(&mut client, id).await.into_iter().skip(3).map(|(f, t, r, _)| (f, t, r)).collect();
    assert_eq!(
        steps,
        vec![
            (Some(OrderStatus::Payed), OrderStatus::Shipped, TransitionReason::Shipped),
            (Some(OrderStatus::Shipped), OrderStatus::Delivered, TransitionReason::Delivered),
        ]
    );
    let events = events(&loms, id).await;
    let reasons: Vec<&str> = events.iter().skip(3).map(reason).collect();
    assert_eq!(reasons, ["TRANSITION_REASON_SHIPPED", "TRANSITION_REASON_DELIVERED"]);
}

#[tokio::test]
async fn refunding_a_paid_order_puts_its_units_back_in_the_warehouses_they_came_from() {
    let loms = TestLoms::start().await;
    loms.set_stock(1, SKU, 2).await;
    loms.set_stock(2, SKU, 5).await;
    let mut client = loms.client().await;
    let id = paid_order(&mut client, 6).await;
    let on_hand = |levels: Vec<minizon_proto::loms::StockLevel>| -> Vec<(i64, u64)> {
        levels.iter().map(|l| (l.warehouse_id, l.on_hand)).collect()
    };
    let mut admin = loms.admin().await;
    assert_eq!(
        on_hand(admin.list_stock(ListStockRequest { sku: SKU }).await.unwrap().into_inner().levels),
        vec![(1, 1), (2, 0)]
    );

    for _ in 0..2 {
        client.refund_order(refund(id, "  parcel lost  ")).await.unwrap();
    }

    assert_eq!(status_of(&mut client, id).await, OrderStatus::Cancelled);
    assert_eq!(
        on_hand(admin.list_stock(ListStockRequest { sku: SKU }).await.unwrap().into_inner().levels),
        vec![(1, 2), (2, 5)],
        "back where they were taken, once"
    );
    assert_eq!(counts(&loms, SKU).await, (7, 0, 0));
    let last = history(&mut client, id).await.pop().unwrap();
    assert_eq!(
        last,
        (Some(OrderStatus::Payed), OrderStatus::Cancelled, TransitionReason::Refund, "parcel lost".to_owned())
    );
    let events = events(&loms, id).await;
    assert_eq!(events.len(), 4, "one refund event however often it was asked for");
    assert_eq!(reason(&events[3]), "TRANSITION_REASON_REFUND");
    assert_eq!(events[3]["detail"], "parcel lost");
    assert_eq!(lines(&events[3], "items"), vec![(u64::from(SKU), 6)], "the compensation request carries the lines");
    assert!(!events[3]["returnRequested"].as_bool().unwrap_or(false), "nothing to bring back from delivery");
    assert_status(
        admin.receive_return(ReceiveReturnRequest { order_id: id }).await,
        Code::FailedPrecondition,
        "received back",
    );
    assert_eq!(counts(&loms, SKU).await, (7, 0, 0));
}

#[tokio::test]
async fn a_refunded_shipped_order_restocks_only_when_its_return_is_received_and_only_once() {
    let loms = TestLoms::start().await;
    loms.set_stock(1, SKU, 10).await;
    let mut client = loms.client().await;
    let id = paid_order(&mut client, 4).await;
    client.ship_order(ShipOrderRequest { order_id: id }).await.unwrap();

    client.refund_order(refund(id, "changed my mind")).await.unwrap();

    assert_eq!(status_of(&mut client, id).await, OrderStatus::Cancelled);
    assert_eq!(counts(&loms, SKU).await, (6, 0, 0), "the goods are still with the courier");
    let refund_event = events(&loms, id).await.pop().unwrap();
    assert_eq!(reason(&refund_event), "TRANSITION_REASON_REFUND");
    assert_eq!(refund_event["returnRequested"], true);
    assert_eq!(refund_event["oldStatus"], "ORDER_STATUS_SHIPPED");

    let mut admin = loms.admin().await;
    for _ in 0..3 {
        admin.receive_return(ReceiveReturnRequest { order_id: id }).await.unwrap();
    }

    assert_eq!(counts(&loms, SKU).await, (10, 0, 0), "back on hand exactly once");
    let last = history(&mut client, id).await.pop().unwrap();
    assert_eq!(
        (last.0, last.1, last.2),
        (Some(OrderStatus::Cancelled), OrderStatus::Cancelled, TransitionReason::ReturnReceived)
    );
    let reasons: Vec<String> = events(&loms, id).await.iter().map(|e| reason(e).to_owned()).collect();
    assert_eq!(reasons.iter().filter(|r| *r == "TRANSITION_REASON_RETURN_RECEIVED").count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_receive_returns_restock_exactly_once() {
    let loms = Arc::new(TestLoms::start().await);
    loms.set_stock(1, SKU, 10).await;
    loms.set_stock(2, SKU, 10).await;
    let mut client = loms.client().await;
    let id = paid_order(&mut client, 15).await;
    client.ship_order(ShipOrderRequest { order_id: id }).await.unwrap();
    client.refund_order(refund(id, "")).await.unwrap();
    assert_eq!(counts(&loms, SKU).await, (5, 0, 0));

    let receivers = (0..12).map(|_| {
        let loms = loms.clone();
        tokio::spawn(async move { loms.admin().await.receive_return(ReceiveReturnRequest { order_id: id }).await })
    });
    for outcome in join_all(receivers).await {
        outcome.unwrap().expect("every receiver succeeds: one restocks, the rest find it done");
    }

    assert_eq!(counts(&loms, SKU).await, (20, 0, 0));
    let received = events(&loms, id).await.iter().filter(|e| reason(e) == "TRANSITION_REASON_RETURN_RECEIVED").count();
    assert_eq!(received, 1);
}

#[tokio::test]
async fn forbidden_steps_are_refused_naming_the_status_and_change_nothing() {
    let loms = TestLoms::start().await;
    loms.set_stock(1, SKU, 20).await;
    let mut client = loms.client().await;
    let mut admin = loms.admin().await;
    let awaiting = client.create_order(order(7, &[(SKU, 1)])).await.unwrap().into_inner().order_id;
    let paid = paid_order(&mut client, 1).await;
    let shipped = paid_order(&mut client, 1).await;
    client.ship_order(ShipOrderRequest { order_id: shipped }).await.unwrap();
    let delivered = paid_order(&mut client, 1).await;
    client.deliver_order(DeliverOrderRequest { order_id: delivered }).await.unwrap();
    let cancelled = client.create_order(order(7, &[(SKU, 1)])).await.unwrap().into_inner().order_id;
    client.cancel_order(CancelOrderRequest { order_id: cancelled }).await.unwrap();
    let before = counts(&loms, SKU).await;
    let outbox = loms.db.scalar("select count(*) from outbox").await;

    let change = |order_id| ChangeOrderRequest { order_id, items: vec![Item { sku: SKU, count: 2 }] };
    let refusals = [
        (client.ship_order(ShipOrderRequest { order_id: awaiting }).await, "awaiting payment"),
        (client.ship_order(ShipOrderRequest { order_id: cancelled }).await, "cancelled"),
        (client.deliver_order(DeliverOrderRequest { order_id: awaiting }).await, "awaiting payment"),
        (client.deliver_order(DeliverOrderRequest { order_id: cancelled }).await, "cancelled"),
        (client.refund_order(refund(delivered, "late")).await, "delivered"),
        (client.refund_order(refund(awaiting, "x")).await, "CancelOrder"),
        (client.refund_order(refund(cancelled, "x")).await, "cancelled"),
        (client.cancel_order(CancelOrderRequest { order_id: paid }).await, "RefundOrder"),
        (client.cancel_order(CancelOrderRequest { order_id: shipped }).await, "RefundOrder"),
        (client.cancel_order(CancelOrderRequest { order_id: delivered }).await, "delivered"),
        (client.change_order(change(paid)).await, "payed"),
        (client.change_order(change(shipped)).await, "shipped"),
        (client.change_order(change(cancelled)).await, "cancelled"),
    ];
    for (outcome, names) in refusals {
        assert_status(outcome, Code::FailedPrecondition, names);
    }
    for id in [awaiting, paid, shipped, delivered, cancelled] {
        assert_status(
            admin.receive_return(ReceiveReturnRequest { order_id: id }).await,
            Code::FailedPrecondition,
            "received back",
        );
    }

    assert_eq!(counts(&loms, SKU).await, before, "a refusal moves no stock");
    assert_eq!(loms.db.scalar("select count(*) from outbox").await, outbox, "a refusal writes no event");
    for (id, status) in [
        (awaiting, OrderStatus::AwaitingPayment),
        (paid, OrderStatus::Payed),
        (shipped, OrderStatus::Shipped),
        (delivered, OrderStatus::Delivered),
        (cancelled, OrderStatus::Cancelled),
    ] {
        assert_eq!(status_of(&mut client, id).await, status);
    }
}

#[tokio::test]
async fn unknown_orders_bad_ids_and_long_reasons_are_refused() {
    let loms = TestLoms::start().await;
    loms.set_stock(1, SKU, 5).await;
    let mut client = loms.client().await;
    let mut admin = loms.admin().await;
    let paid = paid_order(&mut client, 1).await;
    let unknown = paid + 1000;

    assert_status(client.ship_order(ShipOrderRequest { order_id: unknown }).await, Code::NotFound, "");
    assert_status(client.deliver_order(DeliverOrderRequest { order_id: unknown }).await, Code::NotFound, "");
    assert_status(client.refund_order(refund(unknown, "")).await, Code::NotFound, "");
    assert_status(
        client.change_order(ChangeOrderRequest { order_id: unknown, items: vec![Item { sku: SKU, count: 1 }] }).await,
        Code::NotFound,
        "",
    );
    assert_status(admin.receive_return(ReceiveReturnRequest { order_id: unknown }).await, Code::NotFound, "");
    assert_status(client.ship_order(ShipOrderRequest { order_id: 0 }).await, Code::InvalidArgument, "");
    assert_status(client.refund_order(refund(-1, "")).await, Code::InvalidArgument, "");
    assert_status(admin.receive_return(ReceiveReturnRequest { order_id: 0 }).await, Code::InvalidArgument, "");
    assert_status(client.refund_order(refund(paid, &"x".repeat(501))).await, Code::InvalidArgument, "at most 500");
    assert_status(
        client.change_order(ChangeOrderRequest { order_id: paid, items: vec![] }).await,
        Code::InvalidArgument,
        "",
    );
    let unauthenticated = minizon_proto::loms::loms_admin_v1_client::LomsAdminV1Client::connect(loms.url()).await;
    assert_status(
        unauthenticated.unwrap().receive_return(ReceiveReturnRequest { order_id: paid }).await,
        Code::Unauthenticated,
        "",
    );

    assert_eq!(status_of(&mut client, paid).await, OrderStatus::Payed);
    assert_eq!(counts(&loms, SKU).await, (4, 0, 1));
}

/// The order's payment deadline, as a number comparable across reads (ms since the epoch on both backends).
async fn deadline(loms: &TestLoms, order_id: i64) -> i64 {
    let column = if loms.db.is_postgres() {
        "cast(extract(epoch from payment_deadline) * 1000000 as bigint)"
    } else {
        "payment_deadline"
    };
    loms.db.scalar(&format!("select {column} from orders where id = {order_id}")).await
}

#[tokio::test]
async fn changing_an_unpaid_order_moves_its_reservation_to_the_new_lines() {
    let loms = TestLoms::start().await;
    loms.set_stock(1, SKU, 10).await;
    loms.set_stock(1, OTHER_SKU, 5).await;
    let mut client = loms.client().await;
    let id = client.create_order(order(7, &[(SKU, 3)])).await.unwrap().into_inner().order_id;
    let due = deadline(&loms, id).await;
    let new_items = vec![Item { sku: OTHER_SKU, count: 4 }, Item { sku: SKU, count: 1 }];

    for _ in 0..2 {
        client.change_order(ChangeOrderRequest { order_id: id, items: new_items.clone() }).await.unwrap();
    }

    assert_eq!(counts(&loms, SKU).await, (10, 1, 0));
    assert_eq!(counts(&loms, OTHER_SKU).await, (5, 4, 0));
    let listed = client.list_order(ListOrderRequest { order_id: id }).await.unwrap().into_inner();
    assert_eq!(listed.status(), OrderStatus::AwaitingPayment);
    let items: Vec<(u32, u32)> = listed.items.iter().map(|i| (i.sku, i.count)).collect();
    assert_eq!(items, vec![(SKU, 1), (OTHER_SKU, 4)]);
    assert_eq!(deadline(&loms, id).await, due, "the payment deadline does not move");
    let last = history(&mut client, id).await.pop().unwrap();
    assert_eq!(
        (last.0, last.1, last.2),
        (Some(OrderStatus::AwaitingPayment), OrderStatus::AwaitingPayment, TransitionReason::Changed)
    );
    let events = events(&loms, id).await;
    assert_eq!(events.len(), 3, "the repeated change wrote nothing");
    assert_eq!(reason(&events[2]), "TRANSITION_REASON_CHANGED");
    assert_eq!(lines(&events[2], "items"), vec![(u64::from(SKU), 1), (u64::from(OTHER_SKU), 4)]);
    assert_eq!(lines(&events[2], "previousItems"), vec![(u64::from(SKU), 3)]);

    client.order_payed(OrderPayedRequest { order_id: id }).await.unwrap();
    assert_eq!(counts(&loms, SKU).await, (9, 0, 1), "payment sells the new lines");
    assert_eq!(counts(&loms, OTHER_SKU).await, (1, 0, 4));
}

#[tokio::test]
async fn a_change_that_cannot_be_reserved_keeps_the_old_lines_and_reservation() {
    let loms = TestLoms::start().await;
    loms.set_stock(1, SKU, 10).await;
    loms.set_stock(1, OTHER_SKU, 5).await;
    let mut client = loms.client().await;
    let id = client.create_order(order(7, &[(SKU, 3), (OTHER_SKU, 1)])).await.unwrap().into_inner().order_id;
    let outbox = loms.db.scalar("select count(*) from outbox").await;

    let refused = client
        .change_order(ChangeOrderRequest {
            order_id: id,
            items: vec![Item { sku: SKU, count: 8 }, Item { sku: OTHER_SKU, count: 6 }],
        })
        .await;

    assert_status(refused, Code::FailedPrecondition, &format!("sku {OTHER_SKU}"));
    assert_eq!(counts(&loms, SKU).await, (10, 3, 0));
    assert_eq!(counts(&loms, OTHER_SKU).await, (5, 1, 0));
    let listed = client.list_order(ListOrderRequest { order_id: id }).await.unwrap().into_inner();
    let items: Vec<(u32, u32)> = listed.items.iter().map(|i| (i.sku, i.count)).collect();
    assert_eq!(items, vec![(SKU, 3), (OTHER_SKU, 1)]);
    assert_eq!(loms.db.scalar("select count(*) from outbox").await, outbox);
    assert_eq!(status_of(&mut client, id).await, OrderStatus::AwaitingPayment);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn changes_racing_new_orders_on_the_same_skus_never_oversell_nor_lose_a_reservation() {
    // Arrange: 30 units; 6 orders hold 2 each (12), then they grow to 5 each while 24 buyers want 1 each.
    let loms = Arc::new(TestLoms::start().await);
    loms.set_stock(1, SKU, 18).await;
    loms.set_stock(2, SKU, 12).await;
    let mut client = loms.client().await;
    let mut changing = Vec::new();
    for user in 1..=6 {
        changing.push(client.create_order(order(user, &[(SKU, 2)])).await.unwrap().into_inner().order_id);
    }

    // Act
    let changes = changing.iter().map(|&order_id| {
        let loms = loms.clone();
        tokio::spawn(async move {
            let items = vec![Item { sku: SKU, count: 5 }];
            match loms.client().await.change_order(ChangeOrderRequest { order_id, items }).await {
                Ok(_) => true,
                Err(status) => {
                    assert_eq!(status.code(), Code::FailedPrecondition, "only a shortage may refuse: {status:?}");
                    false
                }
            }
        })
    });
    let buyers = (0..24).map(|n| {
        let loms = loms.clone();
        tokio::spawn(async move {
            match loms.client().await.create_order(order(100 + n, &[(SKU, 1)])).await {
                Ok(_) => true,
                Err(status) => {
                    assert_eq!(status.code(), Code::FailedPrecondition, "only a shortage may fail: {status:?}");
                    false
                }
            }
        })
    });
    let (changed, bought) = futures::join!(join_all(changes), join_all(buyers));
    let changed = changed.into_iter().map(|r| r.unwrap()).filter(|&ok| ok).count() as u64;
    let bought = bought.into_iter().map(|r| r.unwrap()).filter(|&ok| ok).count() as u64;

    // Assert: every unit accounted for, from the stock rows, the reservations and the orders' lines alike.
    let (on_hand, reserved, sold) = counts(&loms, SKU).await;
    assert_eq!((on_hand, sold), (30, 0));
    assert_eq!(reserved, changed * 5 + (6 - changed) * 2 + bought, "no lost reservation");
    assert!(reserved <= 30, "no oversell: {reserved} of 30 reserved");
    let held = loms
        .db
        .scalar(&format!(
            "select cast(coalesce(sum(r.count), 0) as bigint) from reservations r join orders o on o.id = r.order_id
             where r.sku = {SKU} and o.status = 1"
        ))
        .await;
    let ordered = loms
        .db
        .scalar(&format!(
            "select cast(coalesce(sum(i.count), 0) as bigint) from order_items i join orders o on o.id = i.order_id
             where i.sku = {SKU} and o.status = 1"
        ))
        .await;
    assert_eq!((held, ordered), (reserved as i64, reserved as i64), "each awaiting order holds exactly its lines");
    for &id in &changing {
        let listed = loms.client().await.list_order(ListOrderRequest { order_id: id }).await.unwrap().into_inner();
        assert_eq!(listed.status(), OrderStatus::AwaitingPayment);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ship_refund_and_deliver_racing_on_one_order_leave_one_consistent_outcome() {
    let loms = Arc::new(TestLoms::start().await);
    loms.set_stock(1, SKU, 40).await;
    let mut client = loms.client().await;
    let mut orders = Vec::new();
    for _ in 0..8 {
        orders.push(paid_order(&mut client, 2).await);
    }

    // Act: for every order, a ship, a deliver and a refund at once.
    let racers = orders.iter().flat_map(|&order_id| (0..3).map(move |kind| (order_id, kind)).collect::<Vec<_>>());
    let racers = racers.map(|(order_id, kind)| {
        let loms = loms.clone();
        tokio::spawn(async move {
            let mut client = loms.client().await;
            let outcome = match kind {
                0 => client.ship_order(ShipOrderRequest { order_id }).await.map(|_| ()),
                1 => client.deliver_order(DeliverOrderRequest { order_id }).await.map(|_| ()),
                _ => client.refund_order(refund(order_id, "race")).await.map(|_| ()),
            };
            (order_id, kind, outcome.map_err(|status| status.code()))
        })
    });
    let outcomes: Vec<(i64, i32, Result<(), Code>)> = join_all(racers).await.into_iter().map(|r| r.unwrap()).collect();

    // Assert: each order ended delivered or refunded, its history is one path, and the stock adds up.
    let mut admin = loms.admin().await;
    let mut delivered_units = 0;
    for &id in &orders {
        let mine: Vec<_> = outcomes.iter().filter(|(order, ..)| *order == id).collect();
        for (_, _, outcome) in &mine {
            assert!(matches!(outcome, Ok(()) | Err(Code::FailedPrecondition)), "{id}: {outcome:?}");
        }
        let refunded = mine.iter().any(|(_, kind, outcome)| *kind == 2 && outcome.is_ok());
        let status = status_of(&mut client, id).await;
        let path: Vec<_> =
            history(&mut client, id).await.into_iter().skip(3).map(|(_, to, reason, _)| (to, reason)).collect();
        if refunded {
            assert_eq!(status, OrderStatus::Cancelled, "{id}: refund won");
            assert!(
                path == [(OrderStatus::Cancelled, TransitionReason::Refund)]
                    || path
                        == [
                            (OrderStatus::Shipped, TransitionReason::Shipped),
                            (OrderStatus::Cancelled, TransitionReason::Refund)
                        ],
                "{id}: {path:?}"
            );
            // The return (if one was requested) comes back now; one refunded from payed has none.
            let _ = admin.receive_return(ReceiveReturnRequest { order_id: id }).await;
        } else {
            assert_eq!(status, OrderStatus::Delivered, "{id}: deliver won");
            assert_eq!(
                path,
                [
                    (OrderStatus::Shipped, TransitionReason::Shipped),
                    (OrderStatus::Delivered, TransitionReason::Delivered)
                ],
                "{id}"
            );
            delivered_units += 2;
        }
        let events = events(&loms, id).await;
        let history = history(&mut client, id).await;
        assert_eq!(events.len(), history.len(), "{id}: one event per recorded step");
    }
    let (on_hand, reserved, sold) = counts(&loms, SKU).await;
    assert_eq!((on_hand, reserved, sold), (40 - delivered_units as u64, 0, delivered_units));
}
