//! The process-wide limit on ProductService requests holds however many listings run at once, counted where it
//! matters: at ProductService.

use std::time::{Duration, Instant};

use minizon_proto::loms::{ImportStockRequest, SetStockRequest};
use minizon_tests::{
    checkout::{TestCheckout, checkout_db},
    loms::TestLoms,
    product::{TestProductService, numbered_catalog},
};

use crate::support::{add, list};

const USERS: i64 = 5;
const LINES_PER_CART: u32 = 10;
const RATE: u32 = 5;

#[tokio::test]
async fn concurrent_listings_never_make_product_service_see_more_than_the_rate_limit() {
    let skus = u32::try_from(USERS).unwrap() * LINES_PER_CART;
    let products = TestProductService::start(numbered_catalog(1, skus)).await;
    let loms = TestLoms::start().await;
    let levels = (1..=skus).map(|sku| SetStockRequest { warehouse_id: 1, sku, on_hand: 100 }).collect();
    loms.admin().await.import_stock(ImportStockRequest { levels }).await.unwrap();
    let db = checkout_db().await;
    // The carts are filled through an unlimited Checkout on the same database, so that only the listings below
    // go through the limited one.
    let filler = TestCheckout::start_with(db.clone(), loms.url(), products.url(), |config| {
        config.product_rate_limit = 100_000.try_into().unwrap();
    })
    .await;
    let fills = (1..=USERS).flat_map(|user| {
        let first = u32::try_from(user - 1).unwrap() * LINES_PER_CART + 1;
        (first..first + LINES_PER_CART).map(move |sku| (user, sku))
    });
    let mut client = filler.client().await;
    futures::future::try_join_all(fills.map(|(user, sku)| {
        let mut client = client.clone();
        async move { add(&mut client, user, sku, 1).await }
    }))
    .await
    .unwrap();
    let limited = TestCheckout::start_with(db, loms.url(), products.url(), |config| {
        config.product_rate_limit = RATE.try_into().unwrap();
        // No cache: every line of every listing is a ProductService request.
        config.product_cache_ttl = Duration::ZERO;
    })
    .await;
    client = limited.client().await;
    let started = Instant::now();

    let listings = futures::future::join_all((1..=USERS).map(|user| {
        let mut client = client.clone();
        async move { list(&mut client, user).await }
    }))
    .await;

    for cart in &listings {
        assert_eq!(cart.items.len(), LINES_PER_CART as usize, "every listing completes in full");
    }
    let arrivals: Vec<Instant> =
        products.requests.arrivals().into_iter().filter(|arrival| *arrival >= started).collect();
    assert_eq!(arrivals.len(), USERS as usize * LINES_PER_CART as usize, "one request per line, no retries");
    // GCRA lets at most `burst + rate × window` requests start in any window (the burst defaults to the rate);
    // two more are allowed for transit-time jitter between Checkout and ProductService. Without the limiter all 50
    // requests arrive within a fraction of a second.
    let window = Duration::from_secs(1);
    let allowed = RATE + RATE + 2;
    for (i, start) in arrivals.iter().enumerate() {
        let in_window = arrivals[i..].iter().take_while(|arrival| arrival.duration_since(*start) < window).count();
        assert!(
            in_window <= allowed as usize,
            "{in_window} requests reached ProductService within {window:?} of request {i} (limit {RATE}/s, at most \
             {allowed} allowed in a window)"
        );
    }
}
