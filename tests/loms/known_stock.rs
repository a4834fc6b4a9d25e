//! Concurrent orders through one LOMS, while a replica on the same database keeps changing the stock under them
//! (PostgreSQL: the first LOMS decides most batches on the levels it last committed, written in one flight, and
//! every batch whose rows the replica changed runs again under locks; SQLite: one writer, always under its lock).
//! Counted in the database after: nothing oversold, every row's reserved units exactly what unpaid orders hold
//! there. The same with no race, one order at a time and counted through LOMS's metrics: `tests/one_flight`.

use std::sync::Arc;

use futures::future::join_all;
use minizon_proto::loms::AddStockRequest;
use minizon_tests::{db::TestDb, loms::TestLoms};
use tonic::Code;

use crate::support::order;

const SKU: u32 = 7101;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_orders_racing_a_replicas_stock_changes_oversell_nothing_and_hold_what_they_ordered() {
    // Arrange: 40 units in two warehouses; 120 orders of 1–2 units will ask for about 180.
    let db = TestDb::new().await;
    let (loms, replica) = (TestLoms::start_with(db.clone(), |_| {}).await, TestLoms::start_with(db, |_| {}).await);
    loms.set_stock(1, SKU, 25).await;
    loms.set_stock(2, SKU, 15).await;
    let loms = Arc::new(loms);

    // Act: the orders, all at once through LOMS, while the replica keeps moving the stock under them (a unit in
    // and a unit out of each warehouse, and a third warehouse stocked part-way).
    let orders = (0..120).map(|n| {
        let loms = loms.clone();
        tokio::spawn(async move { loms.place(order(n + 1, &[(SKU, (n % 2 + 1) as u32)])).await.1 })
    });
    let mut admin = replica.admin().await;
    let mut changes = Vec::new();
    for round in 0..30 {
        for warehouse_id in [1, 2] {
            let delta = if round % 2 == 0 { 1 } else { -1 };
            changes.push(admin.add_stock(AddStockRequest { warehouse_id, sku: SKU, delta }).await.map(|_| ()));
        }
        if round == 10 {
            replica.set_stock(3, SKU, 10).await;
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
         where s.sku = {SKU} and s.reserved <> (
             select coalesce(sum(r.count), 0) from reservations r join orders o on o.id = r.order_id
             where o.status = 1 and r.sku = s.sku and r.warehouse_id = s.warehouse_id)"
    );
    assert_eq!(db.scalar(&rows_off).await, 0, "every row's reserved units are exactly what unpaid orders hold there");
    assert_eq!(db.scalar(&format!("select count(*) from stocks where sku = {SKU} and reserved > on_hand")).await, 0);
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
