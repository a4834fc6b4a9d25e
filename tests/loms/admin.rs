//! Stock administration: set, add, import, list.

use minizon_proto::loms::{AddStockRequest, ImportStockRequest, ListStockRequest, SetStockRequest};
use minizon_tests::loms::TestLoms;

use crate::support::{available, order};

#[tokio::test]
async fn stock_can_be_set_added_removed_and_listed_per_warehouse() {
    let loms = TestLoms::start().await;
    let mut admin = loms.admin().await;

    admin.set_stock(SetStockRequest { warehouse_id: 2, sku: 77, on_hand: 10 }).await.unwrap();
    admin.add_stock(AddStockRequest { warehouse_id: 2, sku: 77, delta: 5 }).await.unwrap();
    let removed = admin.add_stock(AddStockRequest { warehouse_id: 2, sku: 77, delta: -3 }).await.unwrap().into_inner();
    admin.add_stock(AddStockRequest { warehouse_id: 1, sku: 77, delta: 4 }).await.unwrap();
    loms.client().await.create_order(order(1, &[(77, 13)])).await.unwrap();

    assert_eq!((removed.on_hand, removed.available), (12, 12));
    let levels = admin.list_stock(ListStockRequest { sku: 77 }).await.unwrap().into_inner().levels;
    let seen: Vec<(i64, u64, u64, u64)> =
        levels.iter().map(|l| (l.warehouse_id, l.on_hand, l.reserved, l.available)).collect();
    assert_eq!(seen, vec![(1, 4, 1, 3), (2, 12, 12, 0)]);
}

#[tokio::test]
async fn an_import_sets_every_level_of_a_stock_file() {
    let loms = TestLoms::start().await;
    let rows = loms::stock_file::parse("warehouse_id,sku,count\n1,501,10\n2,501,5\n3,502,7\n".as_bytes()).unwrap();

    let imported = loms.admin().await.import_stock(ImportStockRequest { levels: rows }).await.unwrap().into_inner();

    assert_eq!(imported.imported, 3);
    let mut client = loms.client().await;
    assert_eq!(available(&mut client, 501).await, 15);
    assert_eq!(available(&mut client, 502).await, 7);
}
