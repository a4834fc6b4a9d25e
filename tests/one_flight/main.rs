//! A batch of new orders decided on the stock levels its LOMS last committed, and written in one flight (PostgreSQL;
//! docs/architecture.md, "Group commit"): when another replica changed those rows in between, the batch writes
//! nothing that way and runs again under locks, so its orders are decided on the stock as it is; and LOMS counts
//! it in `loms_write_batch_stock_not_as_known_total`, and a batch written in one flight in
//! `loms_write_batch_one_flight_total`, which is how this test knows which way each order went.
//!
//! A binary of its own, with one test: the metrics recorder is process-wide, and any other LOMS of the process
//! would count into the same series. (Concurrent orders racing a replica's stock changes, counted in the database:
//! `tests/loms/concurrency.rs`.)

use std::net::SocketAddr;

use minizon_proto::loms::{CancelOrderRequest, CreateOrderRequest, Item, OrderPayedRequest};
use minizon_tests::{db::TestDb, loms::TestLoms};

const SKU: u32 = 7101;

/// The series a batch whose stock rows had changed counts itself in.
const NOT_AS_KNOWN: &str = "loms_write_batch_stock_not_as_known_total";
/// The series a batch written in one flight counts itself in.
const ONE_FLIGHT: &str = "loms_write_batch_one_flight_total";

fn order(user: i64, count: u32) -> CreateOrderRequest {
    CreateOrderRequest { user, items: vec![Item { sku: SKU, count }] }
}

/// The value of the counter `name` on LOMS's `/metrics` (0 before its first increment).
async fn counter(loms: &TestLoms, name: &str) -> f64 {
    let addr = loms.metrics.expect("the metrics endpoint is on");
    let text = reqwest::get(format!("http://{addr}/metrics")).await.expect("scrape").text().await.expect("text");
    text.lines().find_map(|line| line.strip_prefix(name)?.trim().parse().ok()).unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_order_after_a_replica_changed_the_stock_is_decided_on_the_stock_as_it_is() {
    // Arrange: LOMS (with its metrics endpoint) and a replica on the same database. Two orders through LOMS, so
    // that it knows the sku's levels (the first one read them under locks, the second was written in one flight
    // on them): 4 units held in each warehouse, 6 free in each.
    let db = TestDb::new().await;
    let loms = TestLoms::start_with(db.clone(), |config| {
        config.metrics_addr = minizon_common::metrics::MetricsAddr::at(SocketAddr::from(([127, 0, 0, 1], 0)));
    })
    .await;
    let replica = TestLoms::start_with(db, |_| {}).await;
    loms.set_stock(1, SKU, 10).await;
    loms.set_stock(2, SKU, 10).await;
    assert!(loms.place(order(1, 4)).await.1);
    assert!(loms.place(order(2, 4)).await.1);
    let postgres = loms.db.is_postgres();
    let not_as_known = || counter(&loms, NOT_AS_KNOWN);
    let one_flight = || counter(&loms, ONE_FLIGHT);
    if postgres {
        assert_eq!(not_as_known().await, 0.0, "nothing changed behind LOMS's back yet");
        assert_eq!(one_flight().await, 1.0, "the second order went in one flight");
    }

    // Act 1: the replica takes every free unit off the shelves; LOMS still knows the old levels.
    replica.set_stock(1, SKU, 4).await;
    replica.set_stock(2, SKU, 4).await;
    let (short, created) = loms.place(order(3, 1)).await;

    // Assert 1: decided on the stock as it is: nothing was free, so the order failed.
    assert!(!created, "order {short} was decided on levels that no longer held");
    if postgres {
        assert_eq!(not_as_known().await, 1.0, "the one-flight write found the rows changed");
    }

    // Act 2: the replica restocks one warehouse and stocks a new one, which LOMS has never seen.
    replica.set_stock(2, SKU, 54).await;
    replica.set_stock(3, SKU, 7).await;
    let (large, created) = loms.place(order(4, 57)).await;

    // Assert 2: the 57 units come from both free shelves, the new one included; nothing oversold.
    assert!(created, "order {large}: 50 + 7 units were free");
    let reserved =
        |warehouse: i64| format!("select reserved from stocks where sku = {SKU} and warehouse_id = {warehouse}");
    assert_eq!(loms.db.scalar(&reserved(1)).await, 4);
    assert_eq!(loms.db.scalar(&reserved(2)).await, 54);
    assert_eq!(loms.db.scalar(&reserved(3)).await, 7);
    if postgres {
        assert_eq!(not_as_known().await, 2.0, "a warehouse LOMS did not know of changes the rows too");
    }

    // Act 3: one more unit on the new shelf; two orders of one unit, one after the other.
    replica.set_stock(3, SKU, 8).await;
    let (_, first) = loms.place(order(5, 1)).await;
    let (_, second) = loms.place(order(6, 1)).await;

    // Assert 3: the first takes the unit (after one try on the old levels), the second finds none, decided in one
    // flight on the levels the first one committed.
    assert!(first && !second);
    if postgres {
        assert_eq!(not_as_known().await, 3.0, "only the first of the two found the rows changed");
        assert_eq!(one_flight().await, 2.0, "the second of the two went in one flight");
    }

    // Act 4: the replica restocks the first shelf (10 free) and LOMS learns it with an order of 2.
    replica.set_stock(1, SKU, 14).await;
    let (paid, created) = loms.place(order(7, 2)).await;
    assert!(created);
    let on_hand =
        |warehouse: i64| format!("select on_hand from stocks where sku = {SKU} and warehouse_id = {warehouse}");
    if postgres {
        assert_eq!(not_as_known().await, 4.0, "the restock changed the rows");
    }

    // Act 5: the replica takes the payment for it, which sells its 2 units: 12 on hand, 4 reserved, still 8 free.
    let mut on_replica = replica.client().await;
    on_replica.order_payed(OrderPayedRequest { order_id: paid }).await.expect("the payment");
    let (released, created) = loms.place(order(8, 1)).await;

    // Assert 5: a sale leaves the free units, all that allocation reads, as LOMS knew them: the order is written
    // on them in one flight, and the rows are right.
    assert!(created);
    assert_eq!((loms.db.scalar(&on_hand(1)).await, loms.db.scalar(&reserved(1)).await), (12, 5));
    if postgres {
        assert_eq!(not_as_known().await, 4.0, "a sale is not a change of the free units");
        assert_eq!(one_flight().await, 3.0, "written in one flight on the levels LOMS knew");
    }

    // Act 6: the replica cancels that order, which frees its unit (8 free where LOMS knows 7); one more order.
    on_replica.cancel_order(CancelOrderRequest { order_id: released }).await.expect("the cancellation");
    let (held, created) = loms.place(order(9, 8)).await;

    // Assert 6: a release changes the free units: found, and the order decided on the 8 free units there are.
    assert!(created, "8 units were free again");
    assert_eq!((loms.db.scalar(&on_hand(1)).await, loms.db.scalar(&reserved(1)).await), (12, 12));
    if postgres {
        assert_eq!(not_as_known().await, 5.0, "the release changed the rows");
        assert_eq!(one_flight().await, 3.0, "that order went the locking way");
    }

    // Act 7: LOMS itself cancels that order (8 units free again) and takes one more order of 8.
    let mut on_loms = loms.client().await;
    on_loms.cancel_order(CancelOrderRequest { order_id: held }).await.expect("the cancellation");
    let (_, created) = loms.place(order(10, 8)).await;

    // Assert 7: LOMS's own cancellation left it knowing the units it freed: the order is written on them in one
    // flight, and nothing is oversold.
    assert!(created, "8 units were free again");
    assert_eq!((loms.db.scalar(&on_hand(1)).await, loms.db.scalar(&reserved(1)).await), (12, 12));
    if postgres {
        assert_eq!(not_as_known().await, 5.0, "LOMS knew the levels its cancellation left");
        assert_eq!(one_flight().await, 4.0, "written in one flight on them");
    }
}
