//! Small helpers shared by the LOMS tests.

use minizon_proto::loms::{CreateOrderRequest, Item, ListOrderRequest, OrderStatus, StocksRequest, loms_v1_client::LomsV1Client};
use tonic::{Code, transport::Channel};

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

/// Asserts that `result` failed with `code` and that its message mentions `needle`.
#[track_caller]
pub(crate) fn assert_status<T: std::fmt::Debug>(result: Result<T, tonic::Status>, code: Code, needle: &str) {
    let status = result.expect_err("the call should fail");
    assert_eq!(status.code(), code, "unexpected status: {status:?}");
    assert!(
        status.message().to_lowercase().contains(&needle.to_lowercase()),
        "message {:?} should mention {needle:?}",
        status.message()
    );
}

/// Waits (bounded) until the order's payment deadline has passed by the database's clock.
pub(crate) async fn wait_until_overdue(db: &minizon_tests::db::TestDb, order_id: i64) {
    minizon_tests::poll::until("the payment deadline to pass", std::time::Duration::from_secs(10), || async {
        let mut conn = db.connect().await;
        let due: Option<bool> = sqlx::query_scalar("select payment_deadline <= now() from orders where id = $1")
            .bind(order_id)
            .fetch_one(&mut conn)
            .await
            .ok()?;
        // A null deadline means the order no longer awaits payment: nothing left to wait for.
        due.unwrap_or(true).then_some(())
    })
    .await;
}
