//! PostgreSQL's migration 0006 moves an order's items and reservations into its own row: orders written under the
//! old tables must read, pay and cancel exactly as before once LOMS has migrated them. (SQLite keeps the tables.)

use std::path::{Path, PathBuf};

use minizon_proto::loms::{
    CancelOrderRequest, Item, ListOrderRequest, ListStockRequest, OrderPayedRequest, OrderStatus,
};
use minizon_tests::{
    db::{Backend, TestDb, backend},
    loms::TestLoms,
};
use sqlx::Executor;

const MIGRATIONS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../migrations/loms/postgres");

/// A copy of the migrations before `version`, as a deployment that has not seen it yet has applied them.
fn migrations_before(version: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("minizon-migrations-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("create the migrations copy");
    for entry in std::fs::read_dir(MIGRATIONS).expect("read the migrations") {
        let path = entry.expect("a migration").path();
        let name = path.file_name().and_then(|name| name.to_str()).expect("a migration's name").to_owned();
        if name.as_str() < version {
            std::fs::copy(&path, dir.join(&name)).expect("copy a migration");
        }
    }
    dir
}

#[tokio::test]
async fn orders_written_before_their_lines_moved_into_the_order_row_read_pay_and_cancel_the_same() {
    if backend() != Backend::Postgres {
        return;
    }
    let db = TestDb::postgres().await;
    let old = migrations_before("0006");
    let mut conn = db.connect().await;
    sqlx::migrate::Migrator::new(Path::new(&old)).await.unwrap().run(&mut conn).await.expect("the old migrations");
    std::fs::remove_dir_all(&old).ok();
    // Under the old tables: order 1 holds sku 1001 in two warehouses and sku 1002 in one, order 2 holds both skus in
    // warehouse 1, order 3 failed and holds nothing.
    conn.execute(
        "insert into stocks (warehouse_id, sku, on_hand, reserved) values (1, 1001, 10, 5), (2, 1001, 5, 1), (1, 1002, 4, 4);
         insert into orders (id, user_id, status, payment_deadline) values
             (1, 7, 1, now() + interval '1 hour'), (2, 8, 1, now() + interval '1 hour'), (3, 9, 2, null);
         select setval('orders_id_seq', 3);
         insert into order_items (order_id, sku, count) values (1, 1002, 2), (1, 1001, 4), (2, 1001, 2), (2, 1002, 2), (3, 1001, 100);
         insert into reservations (order_id, sku, warehouse_id, count) values
             (1, 1001, 1, 3), (1, 1001, 2, 1), (1, 1002, 1, 2), (2, 1001, 1, 2), (2, 1002, 1, 2);",
    )
    .await
    .expect("write orders under the old tables");
    drop(conn);

    let loms = TestLoms::start_with(db, |_| {}).await;
    let mut client = loms.client().await;
    let read = |order_id| {
        let mut client = client.clone();
        async move { client.list_order(ListOrderRequest { order_id }).await.expect("list order").into_inner() }
    };
    let first = read(1).await;
    assert_eq!((first.status(), first.user), (OrderStatus::AwaitingPayment, 7));
    assert_eq!(first.items, [Item { sku: 1001, count: 4 }, Item { sku: 1002, count: 2 }], "items in sku order");
    let failed = read(3).await;
    assert_eq!((failed.status(), failed.items), (OrderStatus::Failed, vec![Item { sku: 1001, count: 100 }]));
    assert_eq!(loms.db.scalar("select count(*) from reservations").await, 5, "the view shows every old reservation");

    client.order_payed(OrderPayedRequest { order_id: 1 }).await.expect("pay the old order");
    client.cancel_order(CancelOrderRequest { order_id: 2 }).await.expect("cancel the other old order");

    let mut admin = loms.admin().await;
    let mut levels = Vec::new();
    for sku in [1001, 1002] {
        let stock = admin.list_stock(ListStockRequest { sku }).await.expect("list stock").into_inner().levels;
        levels.extend(stock.into_iter().map(|level| (level.warehouse_id, level.sku, level.on_hand, level.reserved)));
    }
    levels.sort();
    // Paying order 1 took its units off the shelves they were reserved on; cancelling order 2 freed its own.
    assert_eq!(levels, [(1, 1001, 7, 0), (1, 1002, 2, 0), (2, 1001, 4, 0)]);
    let next = client
        .create_order(minizon_proto::loms::CreateOrderRequest { user: 7, items: vec![Item { sku: 1001, count: 9 }] })
        .await
        .expect("a new order after the migration")
        .into_inner()
        .order_id;
    assert_eq!(next, 4, "new orders continue the old ids");
    assert_eq!(
        loms.db.scalar(&format!("select cast(sum(count) as bigint) from reservations where order_id = {next}")).await,
        9
    );
}
