//! Stocks is served from a per-process cache: exact for the process's own writes, within the TTL for the writes
//! of other replicas.

use std::time::Duration;

use minizon_proto::loms::{
    AddStockRequest, CancelOrderRequest, ImportStockRequest, OrderPayedRequest, SetStockRequest,
};
use minizon_tests::{db::TestDb, loms::TestLoms, poll};

use crate::support::{available, order};

const SKU: u32 = 1001;

/// A TTL far longer than any test: whatever Stocks shows fresh below, the cache did not just expire.
const FOREVER: Duration = Duration::from_secs(3600);

#[tokio::test]
async fn every_write_of_the_process_shows_in_its_next_stocks_answer_whatever_the_ttl() {
    let loms = TestLoms::start_with(TestDb::new().await, |c| c.stock_cache_ttl = FOREVER).await;
    let mut client = loms.client().await;
    let mut admin = loms.admin().await;
    loms.set_stock(1, SKU, 10).await;
    assert_eq!(available(&mut client, SKU).await, 10, "read once, so the answer is cached");

    let first = client.create_order(order(7, &[(SKU, 3)])).await.unwrap().into_inner().order_id;
    assert_eq!(available(&mut client, SKU).await, 7, "after a reservation");
    client.cancel_order(CancelOrderRequest { order_id: first }).await.unwrap();
    assert_eq!(available(&mut client, SKU).await, 10, "after a cancellation");
    let second = client.create_order(order(7, &[(SKU, 4)])).await.unwrap().into_inner().order_id;
    client.order_payed(OrderPayedRequest { order_id: second }).await.unwrap();
    assert_eq!(available(&mut client, SKU).await, 6, "after a payment");
    admin.add_stock(AddStockRequest { warehouse_id: 1, sku: SKU, delta: 5 }).await.unwrap();
    assert_eq!(available(&mut client, SKU).await, 11, "after AddStock");
    loms.set_stock(1, SKU, 2).await;
    assert_eq!(available(&mut client, SKU).await, 2, "after SetStock");
    let levels = vec![SetStockRequest { warehouse_id: 2, sku: SKU, on_hand: 8 }];
    admin.import_stock(ImportStockRequest { levels }).await.unwrap();
    assert_eq!(available(&mut client, SKU).await, 10, "after ImportStock");
}

#[tokio::test]
async fn the_unpaid_order_sweep_drops_what_it_freed_from_the_cache() {
    let loms = TestLoms::start_with(TestDb::new().await, |c| {
        c.stock_cache_ttl = FOREVER;
        c.payment_timeout = Duration::from_secs(1);
    })
    .await;
    let mut client = loms.client().await;
    loms.set_stock(1, SKU, 5).await;
    client.create_order(order(7, &[(SKU, 5)])).await.unwrap();
    assert_eq!(available(&mut client, SKU).await, 0, "reserved, and cached");

    poll::until("the sweep to free the reservation", Duration::from_secs(20), || async {
        let mut client = loms.client().await;
        (available(&mut client, SKU).await == 5).then_some(())
    })
    .await;
}

#[tokio::test]
async fn another_replicas_writes_show_within_the_ttl() {
    let db = TestDb::new().await;
    let writer = TestLoms::start_with(db.clone(), |_| {}).await;
    let reader = TestLoms::start_with(db, |c| c.stock_cache_ttl = Duration::from_millis(300)).await;
    writer.set_stock(1, SKU, 10).await;
    let mut reading = reader.client().await;
    assert_eq!(available(&mut reading, SKU).await, 10);

    writer.client().await.create_order(order(7, &[(SKU, 4)])).await.unwrap();

    // Bounded: well past the reader's 300 ms TTL, never the cache's hour-long default of a forgotten entry.
    poll::until("the other replica's reservation to show", Duration::from_secs(5), || async {
        let mut reading = reader.client().await;
        (available(&mut reading, SKU).await == 6).then_some(())
    })
    .await;
}
