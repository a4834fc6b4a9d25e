//! Adding, deleting and listing: counts add up, lines disappear at zero, names and prices are live, the total is
//! exact.

use minizon_tests::{
    checkout::TestShop,
    product::{TestProductService, numbered_catalog},
};
use product_service::{Catalog, Product};
use tonic::Code;

use crate::support::{add, assert_status, delete, lines, list};

const USER: i64 = 42;
const KETTLE: u32 = 1001;
const COFFEE: u32 = 1002;

#[tokio::test]
async fn adding_a_sku_twice_adds_up_the_counts() {
    let shop = TestShop::start().await;
    shop.loms.set_stock(1, KETTLE, 10).await;
    let mut client = shop.checkout.client().await;

    add(&mut client, USER, KETTLE, 2).await.unwrap();
    add(&mut client, USER, KETTLE, 3).await.unwrap();

    assert_eq!(lines(&mut client, USER).await, vec![(KETTLE, 5)]);
}

#[tokio::test]
async fn deleting_part_of_a_line_leaves_the_rest() {
    let shop = TestShop::start().await;
    shop.loms.set_stock(1, KETTLE, 10).await;
    let mut client = shop.checkout.client().await;
    add(&mut client, USER, KETTLE, 5).await.unwrap();

    delete(&mut client, USER, KETTLE, 2).await.unwrap();

    assert_eq!(lines(&mut client, USER).await, vec![(KETTLE, 3)]);
}

#[tokio::test]
async fn deleting_a_whole_line_or_more_removes_it() {
    let shop = TestShop::start().await;
    shop.loms.set_stock(1, KETTLE, 10).await;
    shop.loms.set_stock(1, COFFEE, 10).await;
    let mut client = shop.checkout.client().await;
    add(&mut client, USER, KETTLE, 3).await.unwrap();
    add(&mut client, USER, COFFEE, 3).await.unwrap();

    delete(&mut client, USER, KETTLE, 3).await.unwrap();
    delete(&mut client, USER, COFFEE, 100).await.unwrap();

    assert!(lines(&mut client, USER).await.is_empty());
}

#[tokio::test]
async fn deleting_what_is_not_in_the_cart_succeeds_and_changes_nothing() {
    let shop = TestShop::start().await;
    shop.loms.set_stock(1, KETTLE, 10).await;
    let mut client = shop.checkout.client().await;
    delete(&mut client, USER, KETTLE, 1).await.unwrap();
    add(&mut client, USER, KETTLE, 2).await.unwrap();

    delete(&mut client, USER, COFFEE, 1).await.unwrap();

    assert_eq!(lines(&mut client, USER).await, vec![(KETTLE, 2)]);
}

#[tokio::test]
async fn the_cart_lists_live_names_and_prices_and_their_total() {
    let shop = TestShop::start().await;
    shop.loms.set_stock(1, KETTLE, 10).await;
    shop.loms.set_stock(2, COFFEE, 10).await;
    let mut client = shop.checkout.client().await;
    add(&mut client, USER, COFFEE, 3).await.unwrap();
    add(&mut client, USER, KETTLE, 2).await.unwrap();

    let cart = list(&mut client, USER).await;

    let items: Vec<_> = cart.items.iter().map(|i| (i.sku, i.count, i.name.as_str(), i.price)).collect();
    assert_eq!(
        items,
        vec![(KETTLE, 2, "Acme Electric Kettle 1.7 L", 2490), (COFFEE, 3, "Northwind Coffee Beans Arabica 250 g", 690)]
    );
    assert_eq!(cart.total_price, 2 * 2490 + 3 * 690);
}

#[tokio::test]
async fn an_empty_cart_lists_as_empty_with_a_zero_total() {
    let shop = TestShop::start().await;
    let mut client = shop.checkout.client().await;

    let cart = list(&mut client, USER).await;

    assert!(cart.items.is_empty());
    assert_eq!(cart.total_price, 0);
}

#[tokio::test]
async fn carts_of_different_users_are_separate() {
    let shop = TestShop::start().await;
    shop.loms.set_stock(1, KETTLE, 10).await;
    let mut client = shop.checkout.client().await;

    add(&mut client, 1, KETTLE, 1).await.unwrap();
    add(&mut client, 2, KETTLE, 4).await.unwrap();

    assert_eq!(lines(&mut client, 1).await, vec![(KETTLE, 1)]);
    assert_eq!(lines(&mut client, 2).await, vec![(KETTLE, 4)]);
}

#[tokio::test]
async fn a_total_beyond_uint32_is_a_failed_precondition_not_a_wrapped_number() {
    let expensive = Product { sku: 7, name: "Gold-plated server rack".into(), price: 3_000_000_000 };
    let shop = TestShop::start_with(Catalog::new([expensive]).unwrap(), |_| {}).await;
    shop.loms.set_stock(1, 7, 5).await;
    let mut client = shop.checkout.client().await;
    add(&mut client, USER, 7, 2).await.unwrap();

    let listed = client.list_cart(minizon_proto::checkout::ListCartRequest { user: USER }).await;

    assert_status(listed, Code::FailedPrecondition, "total price");
}

#[tokio::test]
async fn listing_again_is_served_from_the_cache_without_asking_product_service() {
    let shop = TestShop::start().await;
    shop.loms.set_stock(1, KETTLE, 10).await;
    shop.loms.set_stock(1, COFFEE, 10).await;
    let mut client = shop.checkout.client().await;
    add(&mut client, USER, KETTLE, 1).await.unwrap();
    add(&mut client, USER, COFFEE, 1).await.unwrap();
    let first = list(&mut client, USER).await;
    let requests_before = shop.products.requests.total();
    let hits_before = shop.checkout.cache.hits();

    let second = list(&mut client, USER).await;

    assert_eq!(second, first);
    assert_eq!(shop.products.requests.total(), requests_before, "the second listing asked ProductService");
    assert_eq!(shop.checkout.cache.hits(), hits_before + 2);
}

#[tokio::test]
async fn one_listing_runs_at_most_five_look_ups_at_once() {
    // Slow answers and no cache make every look-up overlap with the others that may run.
    let products = TestProductService::start_with(numbered_catalog(1, 12), |config| {
        config.latency = std::time::Duration::from_millis(100);
    })
    .await;
    let loms = minizon_tests::loms::TestLoms::start().await;
    let checkout = minizon_tests::checkout::TestCheckout::start_with(
        minizon_tests::checkout::checkout_db().await,
        loms.url(),
        products.url(),
        |config| {
            config.product_cache_ttl = std::time::Duration::ZERO;
            config.product_rate_limit = 1_000.try_into().unwrap();
        },
    )
    .await;
    let mut client = checkout.client().await;
    for sku in 1..=12 {
        loms.set_stock(1, sku, 1).await;
        add(&mut client, USER, sku, 1).await.unwrap();
    }

    let cart = list(&mut client, USER).await;

    assert_eq!(cart.items.len(), 12);
    let most = products.requests.max_in_flight();
    assert!(most <= 5, "{most} look-ups ran at once");
    assert!(most >= 2, "look-ups did not run concurrently (at most {most} at once)");
}

#[tokio::test]
async fn carts_survive_a_restart_of_checkout_on_the_same_database() {
    let shop = TestShop::start().await;
    shop.loms.set_stock(1, KETTLE, 10).await;
    shop.loms.set_stock(1, COFFEE, 10).await;
    let mut client = shop.checkout.client().await;
    add(&mut client, USER, KETTLE, 2).await.unwrap();
    add(&mut client, USER, COFFEE, 1).await.unwrap();
    let TestShop { loms, products, checkout } = shop;
    let (db, config) = checkout.stop().await;

    let restarted = minizon_tests::checkout::TestCheckout::start_with(db, loms.url(), products.url(), |restarted| {
        *restarted = config;
    })
    .await;

    let mut client = restarted.client().await;
    assert_eq!(lines(&mut client, USER).await, vec![(KETTLE, 2), (COFFEE, 1)]);
    // Two changes, two versions: the store counts what the purchase key is derived from, on either backend.
    assert_eq!(restarted.db.scalar(&format!("select version from carts where user_id = {USER}")).await, 2);
}

#[tokio::test]
async fn a_cart_holds_at_most_the_line_limit_and_a_full_cart_can_still_be_listed_and_bought() {
    use minizon_proto::loms::{ImportStockRequest, SetStockRequest};
    const LIMIT: u32 = checkout::domain::Cart::MAX_LINES as u32;
    let shop = TestShop::start_with(numbered_catalog(1, LIMIT + 1), |config| {
        config.product_rate_limit = 100_000.try_into().unwrap();
    })
    .await;
    let levels = (1..=LIMIT + 1).map(|sku| SetStockRequest { warehouse_id: 1, sku, on_hand: 10 }).collect();
    shop.loms.admin().await.import_stock(ImportStockRequest { levels }).await.unwrap();
    let mut client = shop.checkout.client().await;
    for sku in 1..=LIMIT {
        add(&mut client, USER, sku, 1).await.unwrap();
    }

    // The line after the limit is refused with the limit in the message; the cart is unchanged.
    assert_status(add(&mut client, USER, LIMIT + 1, 1).await, Code::FailedPrecondition, "at most 100 distinct skus");
    assert_eq!(lines(&mut client, USER).await.len(), LIMIT as usize);
    // More units of a line already there are still fine, and a freed line can be taken.
    add(&mut client, USER, 1, 1).await.expect("an existing line grows in a full cart");
    delete(&mut client, USER, 2, 1).await.unwrap();
    add(&mut client, USER, LIMIT + 1, 1).await.expect("a freed line can be taken");

    // LOMS accepts what a full cart holds: the limits agree.
    let order_id = crate::support::purchase(&mut client, USER).await.expect("a full cart can be bought");
    assert!(order_id > 0);
    assert!(lines(&mut client, USER).await.is_empty());
}

#[tokio::test]
async fn racing_additions_of_new_skus_never_grow_a_cart_past_the_line_limit() {
    use minizon_proto::loms::{ImportStockRequest, SetStockRequest};
    const LIMIT: u32 = checkout::domain::Cart::MAX_LINES as u32;
    const RACERS: u32 = 20;
    let shop = TestShop::start_with(numbered_catalog(1, LIMIT + RACERS), |config| {
        config.product_rate_limit = 100_000.try_into().unwrap();
    })
    .await;
    let levels = (1..=LIMIT + RACERS).map(|sku| SetStockRequest { warehouse_id: 1, sku, on_hand: 10 }).collect();
    shop.loms.admin().await.import_stock(ImportStockRequest { levels }).await.unwrap();
    let mut client = shop.checkout.client().await;
    for sku in 1..LIMIT - 2 {
        add(&mut client, USER, sku, 1).await.unwrap();
    }

    // Three lines are left; twenty new skus race for them.
    let racers: Vec<_> = (LIMIT - 2..LIMIT - 2 + RACERS)
        .map(|sku| {
            let mut client = client.clone();
            tokio::spawn(async move { add(&mut client, USER, sku, 1).await })
        })
        .collect();
    let mut added = 0;
    for racer in racers {
        match racer.await.unwrap() {
            Ok(()) => added += 1,
            Err(status) => assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}"),
        }
    }

    assert_eq!(added, 3, "exactly the free lines were taken");
    assert_eq!(lines(&mut client, USER).await.len(), LIMIT as usize);
}
