//! Every error LOMS can answer, each with the status code and a message a person can act on.

use std::time::Duration;

use minizon_proto::loms::{
    AddStockRequest, CancelOrderRequest, ImportStockRequest, ListOrderHistoryRequest, ListOrderRequest,
    ListStockRequest, OrderPayedRequest, SetStockRequest, StocksRequest, loms_admin_v1_client::LomsAdminV1Client,
};
use minizon_tests::{
    db::TestDb,
    loms::{BearerToken, TestLoms},
    poll,
    proxy::TcpProxy,
};
use tonic::{Code, Request, transport::Channel};
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

use crate::support::{assert_status, order};

#[tokio::test]
async fn malformed_orders_are_invalid_arguments() {
    let loms = TestLoms::start().await;
    let mut client = loms.client().await;

    assert_status(client.create_order(order(0, &[(1, 1)])).await, Code::InvalidArgument, "user must be a positive");
    assert_status(client.create_order(order(-3, &[(1, 1)])).await, Code::InvalidArgument, "user must be a positive");
    assert_status(client.create_order(order(1, &[])).await, Code::InvalidArgument, "at least one item");
    assert_status(client.create_order(order(1, &[(0, 1)])).await, Code::InvalidArgument, "items[0]: sku must not be 0");
    assert_status(client.create_order(order(1, &[(5, 0)])).await, Code::InvalidArgument, "count must be at least 1");
    assert_status(client.create_order(order(1, &[(5, 65_536)])).await, Code::InvalidArgument, "at most 65535");
    assert_status(
        client.create_order(order(1, &[(5, 40_000), (5, 40_000)])).await,
        Code::InvalidArgument,
        "exceed the limit",
    );
    // Enough full lines of one sku that a plain u32 sum wraps (to a tiny order) or panics: refused, not reserved.
    let wrapping: Vec<(u32, u32)> = std::iter::repeat_n((5, 65_535), 65_538).collect();
    assert_status(client.create_order(order(1, &wrapping)).await, Code::InvalidArgument, "sku 5: units in one order");
    let too_many_skus: Vec<(u32, u32)> = (1..=1_001).map(|sku| (sku, 1)).collect();
    assert_status(client.create_order(order(1, &too_many_skus)).await, Code::InvalidArgument, "at most 1000 distinct");
}

#[tokio::test]
async fn non_positive_order_ids_and_sku_zero_are_invalid_arguments() {
    let loms = TestLoms::start().await;
    let mut client = loms.client().await;

    assert_status(client.list_order(ListOrderRequest { order_id: 0 }).await, Code::InvalidArgument, "order_id");
    assert_status(client.order_payed(OrderPayedRequest { order_id: -1 }).await, Code::InvalidArgument, "order_id");
    assert_status(client.cancel_order(CancelOrderRequest { order_id: 0 }).await, Code::InvalidArgument, "order_id");
    assert_status(
        client.list_order_history(ListOrderHistoryRequest { order_id: 0 }).await,
        Code::InvalidArgument,
        "order_id",
    );
    assert_status(client.stocks(StocksRequest { sku: 0 }).await, Code::InvalidArgument, "sku must not be 0");
}

#[tokio::test]
async fn unknown_orders_are_not_found() {
    let loms = TestLoms::start().await;
    let mut client = loms.client().await;

    assert_status(client.list_order(ListOrderRequest { order_id: 999 }).await, Code::NotFound, "order 999 not found");
    assert_status(client.order_payed(OrderPayedRequest { order_id: 999 }).await, Code::NotFound, "order 999");
    assert_status(client.cancel_order(CancelOrderRequest { order_id: 999 }).await, Code::NotFound, "order 999");
    assert_status(
        client.list_order_history(ListOrderHistoryRequest { order_id: 999 }).await,
        Code::NotFound,
        "order 999",
    );
}

#[tokio::test]
async fn an_unknown_sku_has_no_stock_rather_than_an_error() {
    let loms = TestLoms::start().await;
    let stocks = loms.client().await.stocks(StocksRequest { sku: 424_242 }).await.unwrap().into_inner();
    assert!(stocks.stocks.is_empty());
}

#[tokio::test]
async fn the_admin_service_needs_the_right_token() {
    let loms = TestLoms::start().await;
    let channel = Channel::from_shared(loms.url()).unwrap().connect().await.unwrap();
    let mut anonymous = LomsAdminV1Client::new(channel.clone());
    let mut impostor = LomsAdminV1Client::with_interceptor(channel, BearerToken("guess".into()));

    assert_status(anonymous.list_stock(ListStockRequest { sku: 1 }).await, Code::Unauthenticated, "authorization");
    assert_status(impostor.list_stock(ListStockRequest { sku: 1 }).await, Code::Unauthenticated, "not valid");
}

#[tokio::test]
async fn the_admin_service_is_off_without_a_configured_token() {
    let loms = TestLoms::start_with(TestDb::new().await, |config| config.admin_token = None).await;
    assert_status(loms.admin().await.list_stock(ListStockRequest { sku: 1 }).await, Code::Unauthenticated, "disabled");
}

#[tokio::test]
async fn malformed_stock_changes_are_invalid_arguments() {
    let loms = TestLoms::start().await;
    let mut admin = loms.admin().await;

    let bad_warehouse = SetStockRequest { warehouse_id: 0, sku: 1, on_hand: 1 };
    assert_status(admin.set_stock(bad_warehouse).await, Code::InvalidArgument, "warehouse_id");
    let bad_sku = AddStockRequest { warehouse_id: 1, sku: 0, delta: 1 };
    assert_status(admin.add_stock(bad_sku).await, Code::InvalidArgument, "sku");
    let conflicting = ImportStockRequest {
        levels: vec![
            SetStockRequest { warehouse_id: 1, sku: 1, on_hand: 1 },
            SetStockRequest { warehouse_id: 1, sku: 1, on_hand: 2 },
        ],
    };
    assert_status(admin.import_stock(conflicting).await, Code::InvalidArgument, "given twice");
}

#[tokio::test]
async fn units_cannot_be_removed_from_a_shelf_that_was_never_stocked() {
    let loms = TestLoms::start().await;
    let remove = AddStockRequest { warehouse_id: 1, sku: 1001, delta: -1 };
    assert_status(loms.admin().await.add_stock(remove).await, Code::FailedPrecondition, "leave -1 units");
}

#[tokio::test]
async fn stock_cannot_fall_below_what_unpaid_orders_reserved() {
    let loms = TestLoms::start().await;
    loms.set_stock(1, 1001, 10).await;
    loms.client().await.create_order(order(7, &[(1001, 6)])).await.unwrap();
    let mut admin = loms.admin().await;

    let set = SetStockRequest { warehouse_id: 1, sku: 1001, on_hand: 5 };
    assert_status(admin.set_stock(set).await, Code::FailedPrecondition, "below the 6 reserved");
    let remove = AddStockRequest { warehouse_id: 1, sku: 1001, delta: -5 };
    assert_status(admin.add_stock(remove).await, Code::FailedPrecondition, "below the 6 reserved");
    let import = ImportStockRequest { levels: vec![SetStockRequest { warehouse_id: 1, sku: 1001, on_hand: 0 }] };
    assert_status(admin.import_stock(import).await, Code::FailedPrecondition, "reserved");
    let level = admin.list_stock(ListStockRequest { sku: 1001 }).await.unwrap().into_inner().levels;
    assert_eq!((level[0].on_hand, level[0].reserved), (10, 6), "nothing was half-written");
}

#[tokio::test]
async fn a_database_outage_is_unavailable_and_health_says_not_serving_until_it_returns() {
    // A server that can go away is a PostgreSQL concern: this runs on PostgreSQL whichever backend the suite uses.
    let db = TestDb::postgres().await;
    let proxy = TcpProxy::start(minizon_tests::db::server_addr()).await;
    let through_proxy = TestDb { url: db.url_via(proxy.addr()), schema: db.schema.clone() };
    let loms = TestLoms::start_with(through_proxy, |_| {}).await;
    loms.set_stock(1, 1001, 10).await;
    let mut client = loms.client().await;
    let mut health = HealthClient::new(Channel::from_shared(loms.url()).unwrap().connect().await.unwrap());
    let check = || HealthCheckRequest { service: "loms_v1.LomsV1".into() };

    proxy.cut();

    assert_status(client.create_order(order(7, &[(1001, 1)])).await, Code::Unavailable, "database is unavailable");
    poll::until("health NOT_SERVING", Duration::from_secs(15), || {
        let mut health = health.clone();
        async move {
            let status = health.check(check()).await.ok()?.into_inner().status();
            (status == ServingStatus::NotServing).then_some(())
        }
    })
    .await;

    proxy.restore();

    poll::until("health SERVING", Duration::from_secs(15), || {
        let mut health = health.clone();
        async move {
            let status = health.check(check()).await.ok()?.into_inner().status();
            (status == ServingStatus::Serving).then_some(())
        }
    })
    .await;
    client.create_order(order(7, &[(1001, 1)])).await.expect("orders work again after the outage");
    let _ = health.check(check()).await;
}

#[tokio::test]
async fn a_client_deadline_is_honoured_when_the_database_hangs() {
    let db = TestDb::postgres().await;
    let proxy = TcpProxy::start(minizon_tests::db::server_addr()).await;
    let through_proxy = TestDb { url: db.url_via(proxy.addr()), schema: db.schema.clone() };
    let loms = TestLoms::start_with(through_proxy, |_| {}).await;
    let mut client = loms.client().await;
    proxy.hang();

    let mut request = Request::new(order(7, &[(1001, 1)]));
    request.set_timeout(Duration::from_millis(300));
    let status = client.create_order(request).await.unwrap_err();

    assert!(
        matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled),
        "the caller's deadline ends the call: {status:?}"
    );
}

#[tokio::test]
async fn a_sqlite_database_busy_with_another_writer_is_unavailable_not_internal() {
    use sqlx::{Connection as _, SqliteConnection};
    // Another process's write lock is a SQLite concern: this runs on SQLite whichever backend the suite uses.
    let db = TestDb::sqlite();
    let path = db.url.strip_prefix("sqlite://").expect("a SQLite URL").to_owned();
    let short_wait = format!("{}?busy_timeout=200ms", db.url);
    let loms = TestLoms::start_with(db, |config| config.database_url = short_wait).await;
    loms.set_stock(1, 1001, 10).await;
    let mut client = loms.client().await;
    let mut admin = loms.admin().await;

    let mut other_writer = SqliteConnection::connect(&format!("sqlite://{path}")).await.unwrap();
    sqlx::query("begin immediate").execute(&mut other_writer).await.expect("take the write lock");

    assert_status(client.create_order(order(7, &[(1001, 1)])).await, Code::Unavailable, "database is unavailable");
    let set = SetStockRequest { warehouse_id: 1, sku: 1001, on_hand: 20 };
    assert_status(admin.set_stock(set).await, Code::Unavailable, "database is unavailable");

    sqlx::query("rollback").execute(&mut other_writer).await.unwrap();
    client.create_order(order(7, &[(1001, 1)])).await.expect("orders work again once the lock is released");
}

#[tokio::test]
async fn stock_arithmetic_beyond_the_stored_range_is_an_invalid_argument_on_every_backend() {
    let loms = TestLoms::start().await;
    let mut admin = loms.admin().await;
    let max = i64::MAX as u64;

    let too_many = SetStockRequest { warehouse_id: 1, sku: 1001, on_hand: max + 1 };
    assert_status(admin.set_stock(too_many).await, Code::InvalidArgument, "too large");
    loms.set_stock(1, 1001, max).await;
    let overflow = AddStockRequest { warehouse_id: 1, sku: 1001, delta: 1 };
    assert_status(admin.add_stock(overflow).await, Code::InvalidArgument, "overflows");
    let import = ImportStockRequest { levels: vec![SetStockRequest { warehouse_id: 2, sku: 1001, on_hand: u64::MAX }] };
    assert_status(admin.import_stock(import).await, Code::InvalidArgument, "too large");
    let level = admin.list_stock(ListStockRequest { sku: 1001 }).await.unwrap().into_inner().levels;
    assert_eq!(level.iter().map(|l| l.on_hand).collect::<Vec<_>>(), vec![max], "nothing was written");
}
