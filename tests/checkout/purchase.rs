//! Purchase: the cart becomes an order awaiting payment, once, whatever is retried; a failed reservation keeps
//! the cart.

use std::time::Duration;

use minizon_proto::{
    checkout::PurchaseRequest,
    loms::{Item, ListOrderRequest, OrderStatus, StocksRequest},
};
use minizon_tests::{
    checkout::{ResponseGate, TestCheckout, checkout_db},
    loms::TestLoms,
    poll,
    product::{TestProductService, test_catalog},
};
use tonic::Code;

use crate::support::{add, assert_status, lines, orders_of, purchase};

const USER: i64 = 5;
const KETTLE: u32 = 1001;
const COFFEE: u32 = 1002;

#[tokio::test]
async fn a_purchase_creates_an_order_awaiting_payment_and_empties_the_cart() {
    let shop = minizon_tests::checkout::TestShop::start().await;
    shop.loms.set_stock(1, KETTLE, 10).await;
    shop.loms.set_stock(1, COFFEE, 10).await;
    let mut client = shop.checkout.client().await;
    add(&mut client, USER, KETTLE, 2).await.unwrap();
    add(&mut client, USER, COFFEE, 3).await.unwrap();

    let order_id = purchase(&mut client, USER).await.unwrap();

    let mut loms = shop.loms.client().await;
    let order = loms.list_order(ListOrderRequest { order_id }).await.unwrap().into_inner();
    assert_eq!(order.status(), OrderStatus::AwaitingPayment);
    assert_eq!(order.user, USER);
    assert_eq!(order.items, vec![Item { sku: KETTLE, count: 2 }, Item { sku: COFFEE, count: 3 }]);
    assert!(lines(&mut client, USER).await.is_empty());
    let kettles = loms.stocks(StocksRequest { sku: KETTLE }).await.unwrap().into_inner();
    assert_eq!(kettles.stocks.iter().map(|s| s.count).sum::<u64>(), 8);
}

#[tokio::test]
async fn purchasing_an_empty_cart_is_a_failed_precondition() {
    let shop = minizon_tests::checkout::TestShop::start().await;
    let mut client = shop.checkout.client().await;

    let bought = purchase(&mut client, USER).await;

    assert_status(bought, Code::FailedPrecondition, "empty");
    assert!(orders_of(&shop.loms, USER).await.is_empty());
}

#[tokio::test]
async fn a_purchase_with_too_little_stock_is_a_failed_precondition_and_keeps_the_cart() {
    let shop = minizon_tests::checkout::TestShop::start().await;
    shop.loms.set_stock(1, KETTLE, 3).await;
    shop.loms.set_stock(1, COFFEE, 10).await;
    let mut client = shop.checkout.client().await;
    add(&mut client, USER, KETTLE, 3).await.unwrap();
    add(&mut client, USER, COFFEE, 1).await.unwrap();
    // Someone else's sale since: only one kettle is left.
    shop.loms.set_stock(1, KETTLE, 1).await;

    let bought = purchase(&mut client, USER).await;

    assert_status(bought, Code::FailedPrecondition, &KETTLE.to_string());
    assert_eq!(lines(&mut client, USER).await, vec![(KETTLE, 3), (COFFEE, 1)]);
    let mut loms = shop.loms.client().await;
    let coffee = loms.stocks(StocksRequest { sku: COFFEE }).await.unwrap().into_inner();
    assert_eq!(coffee.stocks.iter().map(|s| s.count).sum::<u64>(), 10, "a failed order must reserve nothing");
}

#[tokio::test]
async fn after_a_failed_purchase_and_a_restock_the_same_cart_can_be_bought() {
    let shop = minizon_tests::checkout::TestShop::start().await;
    shop.loms.set_stock(1, KETTLE, 3).await;
    let mut client = shop.checkout.client().await;
    add(&mut client, USER, KETTLE, 3).await.unwrap();
    shop.loms.set_stock(1, KETTLE, 1).await;
    assert_status(purchase(&mut client, USER).await, Code::FailedPrecondition, "stock");
    shop.loms.set_stock(1, KETTLE, 5).await;

    let order_id = purchase(&mut client, USER).await.unwrap();

    let mut loms = shop.loms.client().await;
    let order = loms.list_order(ListOrderRequest { order_id }).await.unwrap().into_inner();
    assert_eq!(order.status(), OrderStatus::AwaitingPayment, "the earlier failure must not be replayed");
    assert!(lines(&mut client, USER).await.is_empty());
}

#[tokio::test]
async fn buying_the_same_content_again_later_is_a_new_order() {
    let shop = minizon_tests::checkout::TestShop::start().await;
    shop.loms.set_stock(1, KETTLE, 10).await;
    let mut client = shop.checkout.client().await;
    add(&mut client, USER, KETTLE, 1).await.unwrap();
    let first = purchase(&mut client, USER).await.unwrap();
    add(&mut client, USER, KETTLE, 1).await.unwrap();

    let second = purchase(&mut client, USER).await.unwrap();

    assert_ne!(first, second);
    assert_eq!(orders_of(&shop.loms, USER).await, vec![first, second]);
}

#[tokio::test]
async fn a_purchase_retried_after_its_answer_was_lost_yields_one_order() {
    // Checkout reaches LOMS through a gate that held LOMS's answer back until the client's deadline passed.
    let (loms, _gate, _products, checkout, created) = a_purchase_whose_answer_was_lost().await;
    let mut client = checkout.client().await;

    let order_id = purchase(&mut client, USER).await.unwrap();

    assert_eq!(order_id, created);
    assert_eq!(orders_of(&loms, USER).await, vec![created]);
    assert!(lines(&mut client, USER).await.is_empty());
    let mut loms_client = loms.client().await;
    let order = loms_client.list_order(ListOrderRequest { order_id }).await.unwrap().into_inner();
    assert_eq!(order.status(), OrderStatus::AwaitingPayment);
    assert_eq!(order.items, vec![Item { sku: KETTLE, count: 2 }]);
}

#[tokio::test]
async fn concurrent_purchases_of_one_cart_create_one_order() {
    let shop = minizon_tests::checkout::TestShop::start().await;
    shop.loms.set_stock(1, KETTLE, 100).await;
    let mut client = shop.checkout.client().await;
    add(&mut client, USER, KETTLE, 3).await.unwrap();

    let attempts = (0..8).map(|_| {
        let mut client = client.clone();
        async move { purchase(&mut client, USER).await }
    });
    let results = futures::future::join_all(attempts).await;

    let orders = orders_of(&shop.loms, USER).await;
    assert_eq!(orders.len(), 1, "one cart, one order: {orders:?}");
    assert!(results.iter().any(Result::is_ok), "no purchase succeeded: {results:?}");
    for result in results {
        match result {
            Ok(order_id) => assert_eq!(order_id, orders[0]),
            // A purchase that read the cart after another one emptied it.
            Err(status) => assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}"),
        }
    }
    assert!(lines(&mut client, USER).await.is_empty());
    let mut loms = shop.loms.client().await;
    let kettles = loms.stocks(StocksRequest { sku: KETTLE }).await.unwrap().into_inner();
    assert_eq!(kettles.stocks.iter().map(|s| s.count).sum::<u64>(), 97);
}

/// LOMS, a gate in front of it, ProductService and Checkout; `USER`'s cart holds two kettles, and its first
/// purchase created an order whose answer was lost. Returns the servers and that order's id.
async fn a_purchase_whose_answer_was_lost() -> (TestLoms, ResponseGate, TestProductService, TestCheckout, i64) {
    let loms = TestLoms::start().await;
    let gate = ResponseGate::start(loms.addr).await;
    let products = TestProductService::start(test_catalog()).await;
    let checkout = TestCheckout::start_with(checkout_db().await, gate.url(), products.url(), |_| {}).await;
    loms.set_stock(1, KETTLE, 10).await;
    let mut client = checkout.client().await;
    add(&mut client, USER, KETTLE, 2).await.unwrap();
    gate.hold_answers();
    let mut lost = tonic::Request::new(PurchaseRequest { user: USER });
    lost.set_timeout(Duration::from_secs(3));
    let first_try = tokio::spawn({
        let mut client = client.clone();
        async move { client.purchase(lost).await }
    });
    let created = poll::until("LOMS to commit the order", Duration::from_secs(10), || async {
        orders_of(&loms, USER).await.first().copied()
    })
    .await;
    assert!(first_try.await.unwrap().is_err(), "the first try should have lost its answer");
    gate.release();
    (loms, gate, products, checkout, created)
}

#[tokio::test]
async fn a_retried_purchase_whose_order_timed_out_meanwhile_buys_the_cart_as_a_new_order() {
    let (loms, _gate, _products, checkout, timed_out) = a_purchase_whose_answer_was_lost().await;
    // Its payment deadline passes (moved into the past rather than waited for): the unpaid timeout cancels it.
    let past = loms.db.now_sql(-1_000);
    loms.db.execute(&format!("update orders set payment_deadline = {past} where id = {timed_out}")).await;
    let mut loms_client = loms.client().await;
    poll::until("the unpaid timeout to cancel the order", Duration::from_secs(15), || {
        let mut loms_client = loms_client.clone();
        async move {
            let order = loms_client.list_order(ListOrderRequest { order_id: timed_out }).await.ok()?.into_inner();
            (order.status() == OrderStatus::Cancelled).then_some(())
        }
    })
    .await;
    let mut client = checkout.client().await;

    let order_id = purchase(&mut client, USER).await.expect("the retried purchase buys the cart");

    assert_ne!(order_id, timed_out, "the cancelled order is not handed out as a purchase");
    assert_eq!(orders_of(&loms, USER).await, vec![timed_out, order_id]);
    let order = loms_client.list_order(ListOrderRequest { order_id }).await.unwrap().into_inner();
    assert_eq!(order.status(), OrderStatus::AwaitingPayment);
    assert_eq!(order.items, vec![Item { sku: KETTLE, count: 2 }]);
    assert!(lines(&mut client, USER).await.is_empty(), "the cart was bought");
    let kettles = loms_client.stocks(StocksRequest { sku: KETTLE }).await.unwrap().into_inner();
    assert_eq!(kettles.stocks.iter().map(|s| s.count).sum::<u64>(), 8, "only the new order holds kettles");
}

#[tokio::test]
async fn a_retried_purchase_whose_order_was_paid_meanwhile_says_so_and_empties_the_cart() {
    use minizon_proto::loms::OrderPayedRequest;
    let (loms, _gate, _products, checkout, paid) = a_purchase_whose_answer_was_lost().await;
    let mut loms_client = loms.client().await;
    loms_client.order_payed(OrderPayedRequest { order_id: paid }).await.unwrap();
    let mut client = checkout.client().await;

    let retried = purchase(&mut client, USER).await;

    assert_status(retried, Code::FailedPrecondition, &format!("already bought as order {paid}, which is now payed"));
    assert_eq!(orders_of(&loms, USER).await, vec![paid], "no second order");
    assert!(lines(&mut client, USER).await.is_empty(), "the cart was bought, so it is emptied");
    assert_status(purchase(&mut client, USER).await, Code::FailedPrecondition, "empty");
}
