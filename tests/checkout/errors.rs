//! What Checkout refuses, and with which status: never a panic, never INTERNAL for a user's mistake.

use minizon_proto::checkout::{AddToCartRequest, DeleteFromCartRequest, ListCartRequest, PurchaseRequest};
use minizon_tests::checkout::TestShop;
use tonic::Code;

use crate::support::{add, assert_status, lines};

const USER: i64 = 7;
const KETTLE: u32 = 1001;

#[tokio::test]
async fn adding_beyond_the_stock_is_a_failed_precondition_and_changes_nothing() {
    let shop = TestShop::start().await;
    shop.loms.set_stock(1, KETTLE, 3).await;
    let mut client = shop.checkout.client().await;
    add(&mut client, USER, KETTLE, 2).await.unwrap();

    let again = add(&mut client, USER, KETTLE, 2).await;
    let at_once = add(&mut client, USER + 1, KETTLE, 4).await;

    assert_status(again, Code::FailedPrecondition, "not enough stock");
    assert_status(at_once, Code::FailedPrecondition, "not enough stock");
    assert_eq!(lines(&mut client, USER).await, vec![(KETTLE, 2)]);
    assert!(lines(&mut client, USER + 1).await.is_empty());
}

#[tokio::test]
async fn the_stock_check_sums_every_warehouse() {
    let shop = TestShop::start().await;
    shop.loms.set_stock(1, KETTLE, 2).await;
    shop.loms.set_stock(2, KETTLE, 3).await;
    let mut client = shop.checkout.client().await;

    add(&mut client, USER, KETTLE, 5).await.unwrap();

    assert_eq!(lines(&mut client, USER).await, vec![(KETTLE, 5)]);
}

#[tokio::test]
async fn concurrent_adds_never_put_more_in_a_cart_than_the_stock() {
    let shop = TestShop::start().await;
    shop.loms.set_stock(1, KETTLE, 10).await;
    let client = shop.checkout.client().await;

    let attempts = (0..25).map(|_| {
        let mut client = client.clone();
        async move { add(&mut client, USER, KETTLE, 1).await }
    });
    let results = futures::future::join_all(attempts).await;

    let added = results.iter().filter(|result| result.is_ok()).count();
    for refused in results.iter().filter_map(|result| result.as_ref().err()) {
        assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    }
    assert_eq!(added, 10);
    assert_eq!(lines(&mut client.clone(), USER).await, vec![(KETTLE, 10)]);
}

#[tokio::test]
async fn an_unknown_sku_is_not_found() {
    let shop = TestShop::start().await;
    // LOMS has stock of it, but ProductService does not know it.
    shop.loms.set_stock(1, 999_999, 10).await;
    let mut client = shop.checkout.client().await;

    let added = add(&mut client, USER, 999_999, 1).await;

    assert_status(added, Code::NotFound, "999999");
    assert!(lines(&mut client, USER).await.is_empty());
}

#[tokio::test]
async fn every_invalid_argument_is_refused_with_invalid_argument() {
    let shop = TestShop::start().await;
    shop.loms.set_stock(1, KETTLE, 10).await;
    let mut client = shop.checkout.client().await;
    let bad_lines = [
        (0, KETTLE, 1, "user"),
        (-5, KETTLE, 1, "user"),
        (USER, 0, 1, "sku"),
        (USER, KETTLE, 0, "count"),
        (USER, KETTLE, 65_536, "count"),
    ];

    for (user, sku, count, field) in bad_lines {
        let added = client.add_to_cart(AddToCartRequest { user, sku, count }).await;
        assert_status(added, Code::InvalidArgument, field);
        let deleted = client.delete_from_cart(DeleteFromCartRequest { user, sku, count }).await;
        assert_status(deleted, Code::InvalidArgument, field);
    }
    for user in [0, -1] {
        assert_status(client.list_cart(ListCartRequest { user }).await, Code::InvalidArgument, "user");
        assert_status(client.purchase(PurchaseRequest { user }).await, Code::InvalidArgument, "user");
    }
    assert!(lines(&mut client, USER).await.is_empty());
}

#[tokio::test]
async fn a_cart_line_cannot_grow_beyond_the_uint16_limit() {
    let shop = TestShop::start().await;
    shop.loms.set_stock(1, KETTLE, 100_000).await;
    let mut client = shop.checkout.client().await;
    add(&mut client, USER, KETTLE, 65_535).await.unwrap();

    let more = add(&mut client, USER, KETTLE, 1).await;

    assert_status(more, Code::FailedPrecondition, "65535");
    assert_eq!(lines(&mut client, USER).await, vec![(KETTLE, 65_535)]);
}
