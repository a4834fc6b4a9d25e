//! Invariants under real concurrency, counted: no oversell, one winner per order.

use std::{sync::Arc, time::Duration};

use futures::future::join_all;
use minizon_proto::loms::{
    AddStockRequest, CancelOrderRequest, ListStockRequest, OrderPayedRequest, OrderStatus, StocksRequest,
};
use minizon_tests::{db::TestDb, loms::TestLoms};
use tonic::Code;

use crate::support::{order, status_of, wait_until_overdue};

const SKU: u32 = 5005;
const OTHER_SKU: u32 = 5006;
const STOCKED_BY_REPLICA: u32 = 5007;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_orders_and_cancels_never_oversell_across_warehouses() {
    // Arrange: 60 units of the hot sku over 3 warehouses, 200 units of a second sku; 96 buyers want 1-3 each.
    let loms = Arc::new(TestLoms::start().await);
    for (warehouse, units) in [(1, 25), (2, 20), (3, 15)] {
        loms.set_stock(warehouse, SKU, units).await;
    }
    loms.set_stock(2, OTHER_SKU, 200).await;
    let stocked: u64 = 60;

    // Act: 96 concurrent CreateOrders; every third successful buyer cancels right away, every other third pays.
    let buyers = (0..96u32).map(|n| {
        let loms = loms.clone();
        tokio::spawn(async move {
            let mut client = loms.client().await;
            let count = n % 3 + 1;
            match client.create_order(order(i64::from(n) + 1, &[(OTHER_SKU, 1), (SKU, count)])).await {
                Ok(created) => {
                    let order_id = created.into_inner().order_id;
                    match n % 3 {
                        0 => client.cancel_order(CancelOrderRequest { order_id }).await.map(|_| ()).unwrap(),
                        1 => client.order_payed(OrderPayedRequest { order_id }).await.map(|_| ()).unwrap(),
                        _ => {}
                    }
                    Some(order_id)
                }
                Err(status) => {
                    assert_eq!(status.code(), Code::FailedPrecondition, "only a shortage may fail: {status:?}");
                    None
                }
            }
        })
    });
    let outcomes: Vec<Option<i64>> = join_all(buyers).await.into_iter().map(|r| r.unwrap()).collect();

    // Assert: count every unit from the database's own records.
    let created = outcomes.iter().flatten().count();
    assert!(created > 0 && created < 96, "the hot sku runs out part-way ({created} orders reserved)");
    let db = &loms.db;
    let on_hand = db.scalar(&format!("select cast(sum(on_hand) as bigint) from stocks where sku = {SKU}")).await;
    let reserved = db.scalar(&format!("select cast(sum(reserved) as bigint) from stocks where sku = {SKU}")).await;
    let units_of_orders_in = |status: i32| {
        format!(
            "select cast(coalesce(sum(r.count), 0) as bigint) from reservations r join orders o on o.id = r.order_id
             where r.sku = {SKU} and o.status = {status}"
        )
    };
    let sold = db.scalar(&units_of_orders_in(3)).await;
    let held = db.scalar(&units_of_orders_in(1)).await;
    assert_eq!(on_hand + sold, stocked as i64, "every unit is either on hand or sold");
    assert!(reserved <= on_hand, "never more reserved than on hand");
    assert_eq!(held, reserved, "the reservations of unpaid orders are exactly what is reserved");
    let mut client = loms.client().await;
    let buyable: u64 =
        client.stocks(StocksRequest { sku: SKU }).await.unwrap().into_inner().stocks.iter().map(|s| s.count).sum();
    assert_eq!(buyable as i64, on_hand - reserved, "Stocks reports exactly what is neither sold nor reserved");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pay_cancel_and_timeout_racing_on_one_order_have_exactly_one_winner() {
    // A short payment timeout and a sweep every second make the timeout a real contender.
    let loms = Arc::new(
        TestLoms::start_with(TestDb::new().await, |config| {
            config.payment_timeout = Duration::from_millis(900);
        })
        .await,
    );
    loms.set_stock(1, SKU, 1_000).await;

    for round in 0..12 {
        let mut client = loms.client().await;
        let order_id = client.create_order(order(round + 1, &[(SKU, 2)])).await.unwrap().into_inner().order_id;
        // Let a few rounds reach the deadline so that pay, cancel and the sweep all contend.
        if round % 3 == 2 {
            wait_until_overdue(&loms.db, order_id).await;
        }

        let (paid, cancelled) = tokio::join!(
            {
                let mut c = client.clone();
                async move { c.order_payed(OrderPayedRequest { order_id }).await }
            },
            {
                let mut c = client.clone();
                async move { c.cancel_order(CancelOrderRequest { order_id }).await }
            },
        );

        let status = status_of(&mut client, order_id).await;
        match status {
            OrderStatus::Payed => {
                assert!(paid.is_ok(), "payment won, so it succeeded");
                assert_eq!(cancelled.unwrap_err().code(), Code::FailedPrecondition);
            }
            OrderStatus::Cancelled => {
                assert!(paid.is_err(), "the order was cancelled, so payment failed: {paid:?}");
            }
            other => panic!("round {round}: the order ended {other:?}"),
        }
    }

    // Whatever won each round, stock adds up: sold + reserved + free = stocked, nothing reserved remains.
    let levels = loms.admin().await.list_stock(ListStockRequest { sku: SKU }).await.unwrap().into_inner().levels;
    let sold = loms
        .db
        .scalar("select cast(coalesce(sum(count), 0) as bigint) from order_items i join orders o on o.id = i.order_id where o.status = 3")
        .await;
    assert_eq!(levels[0].reserved, 0, "no reservation is stuck");
    assert_eq!(levels[0].on_hand as i64 + sold, 1_000);
    let transitions = loms.db.scalar("select count(*) from order_status_history where to_status in (3, 4)").await;
    assert_eq!(transitions, 12, "exactly one final transition per order");
}

/// Orders through one LOMS while a replica on the same database keeps changing the stock under them (a unit in and
/// a unit out of each warehouse, a third warehouse stocked part-way): whatever the interleaving, nothing is
/// oversold and every row's reserved units are exactly what unpaid orders hold there.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_orders_racing_a_replicas_stock_changes_oversell_nothing_and_hold_what_they_ordered() {
    // Arrange: 40 units in two warehouses; 120 orders of 1–2 units will ask for about 180.
    let db = TestDb::new().await;
    let (loms, replica) = (TestLoms::start_with(db.clone(), |_| {}).await, TestLoms::start_with(db, |_| {}).await);
    loms.set_stock(1, STOCKED_BY_REPLICA, 25).await;
    loms.set_stock(2, STOCKED_BY_REPLICA, 15).await;
    let loms = Arc::new(loms);

    // Act: the orders, all at once through LOMS, while the replica keeps moving the stock under them.
    let orders = (0..120).map(|n| {
        let loms = loms.clone();
        tokio::spawn(async move { loms.place(order(n + 1, &[(STOCKED_BY_REPLICA, (n % 2 + 1) as u32)])).await.1 })
    });
    let mut admin = replica.admin().await;
    let mut changes = Vec::new();
    for round in 0..30 {
        for warehouse_id in [1, 2] {
            let delta = if round % 2 == 0 { 1 } else { -1 };
            changes.push(
                admin.add_stock(AddStockRequest { warehouse_id, sku: STOCKED_BY_REPLICA, delta }).await.map(|_| ()),
            );
        }
        if round == 10 {
            replica.set_stock(3, STOCKED_BY_REPLICA, 10).await;
        }
    }
    let created: Vec<bool> = join_all(orders).await.into_iter().map(|created| created.unwrap()).collect();

    // Assert: every order was created or kept as failed (`place` says so); an operator's unit out was refused
    // only when it was held.
    for change in &changes {
        if let Err(status) = change {
            assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
        }
    }
    let db = &loms.db;
    let rows_off = format!(
        "select count(*) from stocks s
         where s.sku = {STOCKED_BY_REPLICA} and s.reserved <> (
             select coalesce(sum(r.count), 0) from reservations r join orders o on o.id = r.order_id
             where o.status = 1 and r.sku = s.sku and r.warehouse_id = s.warehouse_id)"
    );
    assert_eq!(db.scalar(&rows_off).await, 0, "every row's reserved units are exactly what unpaid orders hold there");
    assert_eq!(
        db.scalar(&format!("select count(*) from stocks where sku = {STOCKED_BY_REPLICA} and reserved > on_hand"))
            .await,
        0
    );
    assert_eq!(
        db.scalar(
            "select count(*) from orders o where o.status = 1 and
                 (select coalesce(sum(r.count), 0) from reservations r where r.order_id = o.id)
                 <> (select sum(i.count) from order_items i where i.order_id = o.id)"
        )
        .await,
        0,
        "every unpaid order holds all it ordered"
    );
    assert_eq!(
        db.scalar("select count(*) from reservations r join orders o on o.id = r.order_id where o.status = 2").await,
        0
    );
    let failed = created.iter().filter(|created| !**created).count();
    let created = created.len() - failed;
    assert!(created > 0 && failed > 0, "the stock runs out part-way ({created} created, {failed} failed)");
    assert_eq!(db.scalar("select count(*) from orders").await, 120);
}
