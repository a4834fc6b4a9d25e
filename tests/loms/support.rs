//! Small helpers shared by the LOMS tests.

use minizon_proto::loms::{
    CreateOrderRequest, Item, ListOrderRequest, OrderStatus, StocksRequest, loms_v1_client::LomsV1Client,
};
use tonic::transport::Channel;

/// A CreateOrder request.
pub(crate) fn order(user: i64, items: &[(u32, u32)]) -> CreateOrderRequest {
    CreateOrderRequest { user, items: items.iter().map(|&(sku, count)| Item { sku, count }).collect() }
}

/// The order's status.
pub(crate) async fn status_of(client: &mut LomsV1Client<Channel>, order_id: i64) -> OrderStatus {
    client.list_order(ListOrderRequest { order_id }).await.expect("list order").into_inner().status()
}

/// Units of `sku` that can still be bought, summed over warehouses.
pub(crate) async fn available(client: &mut LomsV1Client<Channel>, sku: u32) -> u64 {
    client.stocks(StocksRequest { sku }).await.expect("stocks").into_inner().stocks.iter().map(|s| s.count).sum()
}

pub(crate) use minizon_tests::assert_status;

/// Waits (bounded) until the order's payment deadline has passed by the clock that wrote it (the database's on
/// PostgreSQL, LOMS's own on SQLite, where deadlines are Unix milliseconds).
pub(crate) async fn wait_until_overdue(db: &minizon_tests::db::TestDb, order_id: i64) {
    minizon_tests::poll::until("the payment deadline to pass", std::time::Duration::from_secs(10), || async {
        let deadline_passed = if db.is_postgres() {
            format!("select count(*) from orders where id = {order_id} and (payment_deadline is null or payment_deadline <= now())")
        } else {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis();
            format!("select count(*) from orders where id = {order_id} and (payment_deadline is null or payment_deadline <= {now})")
        };
        // A null deadline means the order no longer awaits payment: nothing left to wait for.
        (db.scalar(&deadline_passed).await == 1).then_some(())
    })
    .await;
}
