//! A dependency that is down or slow: Checkout answers UNAVAILABLE (or DEADLINE_EXCEEDED) naming it, and recovers
//! by itself when it is back.

use std::time::Duration;

use minizon_proto::checkout::ListCartRequest;
use minizon_tests::{
    checkout::{TestCheckout, checkout_db},
    db::TestDb,
    loms::TestLoms,
    poll,
    product::{TestProductService, test_catalog},
    proxy::TcpProxy,
};
use tonic::{Code, transport::Channel};
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

use crate::support::{add, assert_status, lines, orders_of, purchase};

const USER: i64 = 11;
const KETTLE: u32 = 1001;
const COFFEE: u32 = 1002;

#[tokio::test]
async fn with_loms_stopped_checkout_answers_unavailable_and_recovers_when_it_is_back() {
    let loms = TestLoms::start().await;
    let products = TestProductService::start(test_catalog()).await;
    let checkout = TestCheckout::start(loms.url(), products.url()).await;
    loms.set_stock(1, KETTLE, 10).await;
    loms.set_stock(1, COFFEE, 10).await;
    let mut client = checkout.client().await;
    add(&mut client, USER, KETTLE, 2).await.unwrap();
    let addr = loms.addr;
    let (db, config) = loms.stop().await;

    let added = add(&mut client, USER, COFFEE, 1).await;
    let bought = purchase(&mut client, USER).await;

    assert_status(added, Code::Unavailable, "LOMS");
    assert_status(bought, Code::Unavailable, "LOMS");
    assert_eq!(lines(&mut client, USER).await, vec![(KETTLE, 2)], "listing needs no LOMS");

    let loms = TestLoms::start_with(db, |restarted| {
        *restarted = config;
        restarted.listen = addr;
    })
    .await;
    let order_id = poll::until("Checkout to reach LOMS again", Duration::from_secs(15), || {
        let mut client = client.clone();
        async move { purchase(&mut client, USER).await.ok() }
    })
    .await;
    assert_eq!(orders_of(&loms, USER).await, vec![order_id]);
    assert!(lines(&mut client, USER).await.is_empty());
}

#[tokio::test]
async fn with_product_service_stopped_checkout_answers_unavailable_naming_it() {
    let loms = TestLoms::start().await;
    let products = TestProductService::start(test_catalog()).await;
    let checkout = TestCheckout::start_with(checkout_db().await, loms.url(), products.url(), |config| {
        config.product_cache_ttl = Duration::ZERO;
    })
    .await;
    loms.set_stock(1, KETTLE, 10).await;
    let mut client = checkout.client().await;
    add(&mut client, USER, KETTLE, 2).await.unwrap();
    products.stop().await;

    let listed = client.list_cart(ListCartRequest { user: USER }).await;
    let added = add(&mut client, USER, KETTLE, 1).await;

    assert_status(listed, Code::Unavailable, "ProductService");
    assert_status(added, Code::Unavailable, "ProductService");
}

#[tokio::test]
async fn a_product_service_slower_than_the_deadline_is_deadline_exceeded_naming_it() {
    let loms = TestLoms::start().await;
    let products = TestProductService::start_with(test_catalog(), |config| {
        config.latency = Duration::from_secs(5);
    })
    .await;
    let checkout = TestCheckout::start_with(checkout_db().await, loms.url(), products.url(), |config| {
        config.request_timeout = Duration::from_millis(500);
    })
    .await;
    loms.set_stock(1, KETTLE, 10).await;
    let mut client = checkout.client().await;

    let added = add(&mut client, USER, KETTLE, 1).await;

    assert_status(added, Code::DeadlineExceeded, "ProductService");
}

#[tokio::test]
async fn a_wrong_product_service_token_is_reported_as_unavailable_not_internal() {
    let loms = TestLoms::start().await;
    let products = TestProductService::start(test_catalog()).await;
    let checkout = TestCheckout::start_with(checkout_db().await, loms.url(), products.url(), |config| {
        config.product_token = "not-the-token".into();
    })
    .await;
    loms.set_stock(1, KETTLE, 10).await;
    let mut client = checkout.client().await;

    let added = add(&mut client, USER, KETTLE, 1).await;

    assert_status(added, Code::Unavailable, "token");
}

/// Polls Checkout's health until it reports `wanted` for the Checkout contract.
async fn wait_for_health(checkout: &TestCheckout, wanted: ServingStatus) {
    let channel = Channel::from_shared(checkout.url()).unwrap().connect().await.unwrap();
    let health = HealthClient::new(channel);
    poll::until(&format!("health {wanted:?}"), Duration::from_secs(20), || {
        let mut health = health.clone();
        async move {
            let request = HealthCheckRequest { service: checkout::startup::SERVICE_NAME.into() };
            let status = health.check(request).await.ok()?.into_inner().status();
            (status == wanted).then_some(())
        }
    })
    .await;
}

#[tokio::test]
async fn health_says_serving_while_the_cart_database_answers() {
    let loms = TestLoms::start().await;
    let products = TestProductService::start(test_catalog()).await;

    let checkout = TestCheckout::start(loms.url(), products.url()).await;

    wait_for_health(&checkout, ServingStatus::Serving).await;
}

#[tokio::test]
async fn with_its_database_unreachable_checkout_answers_unavailable_and_recovers_when_it_is_back() {
    // A database server that can go away is a PostgreSQL concern: this runs on PostgreSQL whichever backend the
    // suite uses (an SQLite file cannot become unreachable while its process runs).
    let db = TestDb::postgres().await;
    let proxy = TcpProxy::start(minizon_tests::db::server_addr()).await;
    let through_proxy = TestDb { url: db.url_via(proxy.addr()), schema: db.schema.clone() };
    let loms = TestLoms::start().await;
    let products = TestProductService::start(test_catalog()).await;
    let checkout = TestCheckout::start_with(through_proxy, loms.url(), products.url(), |_| {}).await;
    loms.set_stock(1, KETTLE, 10).await;
    let mut client = checkout.client().await;
    add(&mut client, USER, KETTLE, 2).await.unwrap();

    proxy.cut();

    assert_status(client.list_cart(ListCartRequest { user: USER }).await, Code::Unavailable, "cart database");
    wait_for_health(&checkout, ServingStatus::NotServing).await;

    proxy.restore();

    wait_for_health(&checkout, ServingStatus::Serving).await;
    let lines = poll::until("ListCart to work again", Duration::from_secs(15), || {
        let mut client = client.clone();
        async move { client.list_cart(ListCartRequest { user: USER }).await.ok() }
    })
    .await;
    let lines: Vec<_> = lines.into_inner().items.iter().map(|item| (item.sku, item.count)).collect();
    assert_eq!(lines, vec![(KETTLE, 2)], "the cart was kept through the outage");
}
