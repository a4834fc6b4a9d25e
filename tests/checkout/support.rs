//! Small helpers shared by the Checkout tests.

use minizon_proto::checkout::{
    AddToCartRequest, DeleteFromCartRequest, ListCartRequest, ListCartResponse, PurchaseRequest,
    checkout_v1_client::CheckoutV1Client,
};
use minizon_tests::loms::TestLoms;
use tonic::{Status, transport::Channel};

/// The Checkout client type.
pub(crate) type Client = CheckoutV1Client<Channel>;

/// AddToCart.
pub(crate) async fn add(client: &mut Client, user: i64, sku: u32, count: u32) -> Result<(), Status> {
    client.add_to_cart(AddToCartRequest { user, sku, count }).await.map(drop)
}

/// DeleteFromCart.
pub(crate) async fn delete(client: &mut Client, user: i64, sku: u32, count: u32) -> Result<(), Status> {
    client.delete_from_cart(DeleteFromCartRequest { user, sku, count }).await.map(drop)
}

/// ListCart, which must succeed.
pub(crate) async fn list(client: &mut Client, user: i64) -> ListCartResponse {
    client.list_cart(ListCartRequest { user }).await.expect("list the cart").into_inner()
}

/// The cart's (sku, count) lines.
pub(crate) async fn lines(client: &mut Client, user: i64) -> Vec<(u32, u32)> {
    list(client, user).await.items.iter().map(|item| (item.sku, item.count)).collect()
}

/// Purchase; the order id.
pub(crate) async fn purchase(client: &mut Client, user: i64) -> Result<i64, Status> {
    client.purchase(PurchaseRequest { user }).await.map(|response| response.into_inner().order_id)
}

pub(crate) use minizon_tests::assert_status;

/// The ids of every order LOMS holds for `user`, read from its database of either backend (no RPC lists a user's
/// orders).
pub(crate) async fn orders_of(loms: &TestLoms, user: i64) -> Vec<i64> {
    let mut conn = loms.db.connect_any().await;
    // Inlined rather than bound: placeholders differ between the backends, and `user` is the test's own number.
    sqlx::query_scalar(&format!("select id from orders where user_id = {user} order by id"))
        .fetch_all(&mut conn)
        .await
        .expect("read LOMS orders")
}
