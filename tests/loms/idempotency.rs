//! CreateOrder's `idempotency-key`: the same key returns the first result, without a second order.

use std::{sync::Arc, time::Duration};

use futures::future::join_all;
use minizon_proto::loms::{CreateOrderRequest, OrderStatus};
use minizon_tests::{db::TestDb, loms::TestLoms};
use tonic::{Code, Request};

use crate::support::{assert_status, available, order, status_of};

fn keyed(request: CreateOrderRequest, key: &str) -> Request<CreateOrderRequest> {
    let mut request = Request::new(request);
    request.metadata_mut().insert("idempotency-key", key.parse().unwrap());
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_key_sent_concurrently_creates_one_order() {
    let loms = Arc::new(TestLoms::start().await);
    loms.set_stock(1, 1001, 100).await;

    let calls = (0..32).map(|_| {
        let loms = loms.clone();
        tokio::spawn(async move {
            let mut client = loms.client().await;
            client.create_order(keyed(order(7, &[(1001, 2)]), "purchase-42")).await.unwrap().into_inner().order_id
        })
    });
    let ids: Vec<i64> = join_all(calls).await.into_iter().map(|r| r.unwrap()).collect();

    assert!(ids.iter().all(|&id| id == ids[0]), "every call returned the same order: {ids:?}");
    let mut client = loms.client().await;
    assert_eq!(available(&mut client, 1001).await, 98, "reserved once");
    let orders = loms.db.scalar("select count(*) from orders").await;
    assert_eq!(orders, 1);
}

/// Two replicas cannot see each other's batches: the batch that writes the key second fails on its unique index
/// (on PostgreSQL a write refused with its COMMIT in flight) and its calls run one by one, as replays.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_key_sent_concurrently_to_two_replicas_creates_one_order() {
    same_key_on_two_replicas(1).await;
}

/// The same with two committers per replica (PostgreSQL; SQLite always runs one), batches gathering for a few
/// milliseconds so that both replicas write the key in batches at once, while plain orders keep each replica's
/// batches coming: the refused batch's successor, gathered while the refused COMMIT was in flight, commits on its
/// own connection; the refused calls then run one by one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_key_sent_concurrently_to_two_replicas_of_two_committers_creates_one_order() {
    same_key_on_two_replicas(2).await;
}

/// 32 calls with one key and 32 plain orders, alternating between two replicas of `committers` committers (with
/// more than one, a batch gathers calls for 5 ms).
async fn same_key_on_two_replicas(committers: u8) {
    let db = TestDb::new().await;
    let gather = if committers > 1 { Duration::from_millis(5) } else { Duration::ZERO };
    let start = || {
        TestLoms::start_with(db.clone(), |config| {
            config.write_batch.committers = committers;
            config.write_batch.max_wait = gather;
        })
    };
    let replicas = Arc::new([start().await, start().await]);
    replicas[0].set_stock(1, 1001, 100).await;

    let keyed_calls = (0..32).map(|call| create_on(&replicas, call, keyed(order(7, &[(1001, 2)]), "purchase-42")));
    let plain_calls = (0..32).map(|call| create_on(&replicas, call, order(100 + call as i64, &[(1001, 1)])));
    let (ids, plain) = futures::future::join(join_all(keyed_calls), join_all(plain_calls)).await;
    let ids: Vec<i64> = ids.into_iter().map(|r| r.unwrap()).collect();
    let plain: std::collections::BTreeSet<i64> = plain.into_iter().map(|r| r.unwrap()).collect();

    assert!(ids.iter().all(|&id| id == ids[0]), "every call returned the same order: {ids:?}");
    assert_eq!(plain.len(), 32, "one order per plain call");
    assert!(!plain.contains(&ids[0]));
    assert_eq!(replicas[0].db.scalar("select count(*) from orders").await, 1 + 32);
    // Both replicas write on: a refused batch left no connection behind in a transaction.
    for replica in replicas.iter() {
        replica.client().await.create_order(order(8, &[(1001, 1)])).await.expect("a new order after the race");
    }
    let mut client = replicas[1].client().await;
    assert_eq!(available(&mut client, 1001).await, 100 - 2 - 32 - 2, "the key reserved once, one unit per plain order");
    assert_eq!(
        replicas[0].db.scalar("select cast(sum(reserved) as bigint) from stocks where sku = 1001").await,
        2 + 32 + 2,
        "what the orders hold is reserved"
    );
}

/// Sends `request` to replica `call % 2` on a task of its own; the task returns the created order's id.
fn create_on(
    replicas: &Arc<[TestLoms; 2]>,
    call: usize,
    request: impl tonic::IntoRequest<CreateOrderRequest> + Send + 'static,
) -> tokio::task::JoinHandle<i64> {
    let replicas = replicas.clone();
    tokio::spawn(async move {
        let mut client = replicas[call % 2].client().await;
        client.create_order(request).await.unwrap().into_inner().order_id
    })
}

/// On PostgreSQL a batch whose skus' levels LOMS knows goes out in one flight and takes its keys as new: a retried
/// key is refused there by the orders' unique key, and the batch runs the locking way, which answers it from the
/// stored order (SQLite: always the locking way).
#[tokio::test]
async fn a_key_retried_once_its_skus_levels_are_known_replays_the_first_order() {
    let loms = TestLoms::start().await;
    loms.set_stock(1, 1001, 10).await;
    let mut client = loms.client().await;
    // A first order, so that LOMS knows the sku's levels.
    client.create_order(order(6, &[(1001, 1)])).await.unwrap();

    let mut create =
        async |key: &str| client.create_order(keyed(order(7, &[(1001, 2)]), key)).await.unwrap().into_inner().order_id;
    let first = create("purchase-43").await;
    let again = create("purchase-43").await;
    let other = create("purchase-44").await;

    assert_eq!(again, first, "the retry answered with the first order");
    assert_ne!(other, first, "a new key, a new order");
    assert_eq!(loms.db.scalar("select count(*) from orders").await, 3);
    let mut client = loms.client().await;
    assert_eq!(available(&mut client, 1001).await, 10 - 1 - 2 - 2, "each order reserved once");
}

#[tokio::test]
async fn the_same_key_with_a_different_request_is_refused() {
    let loms = TestLoms::start().await;
    loms.set_stock(1, 1001, 100).await;
    let mut client = loms.client().await;
    client.create_order(keyed(order(7, &[(1001, 2)]), "k1")).await.unwrap();

    assert_status(
        client.create_order(keyed(order(7, &[(1001, 3)]), "k1")).await,
        Code::InvalidArgument,
        "already used",
    );
}

#[tokio::test]
async fn keys_belong_to_one_user() {
    let loms = TestLoms::start().await;
    loms.set_stock(1, 1001, 100).await;
    let mut client = loms.client().await;

    let first = client.create_order(keyed(order(7, &[(1001, 2)]), "k1")).await.unwrap().into_inner().order_id;
    let second = client.create_order(keyed(order(8, &[(1001, 2)]), "k1")).await.unwrap().into_inner().order_id;

    assert_ne!(first, second);
}

#[tokio::test]
async fn a_retried_failed_order_replays_the_failure_without_a_second_order() {
    let loms = TestLoms::start().await;
    loms.set_stock(1, 1001, 1).await;
    let mut client = loms.client().await;

    let first = client.create_order(keyed(order(7, &[(1001, 2)]), "k1")).await.unwrap_err();
    let second = client.create_order(keyed(order(7, &[(1001, 2)]), "k1")).await.unwrap_err();

    assert_eq!((first.code(), second.code()), (Code::FailedPrecondition, Code::FailedPrecondition));
    assert_eq!(first.metadata().get("order-id"), second.metadata().get("order-id"));
    let id: i64 = first.metadata().get("order-id").unwrap().to_str().unwrap().parse().unwrap();
    assert_eq!(status_of(&mut client, id).await, OrderStatus::Failed);
}

#[tokio::test]
async fn an_empty_or_oversized_key_is_an_invalid_argument() {
    let loms = TestLoms::start().await;
    let mut client = loms.client().await;

    assert_status(
        client.create_order(keyed(order(7, &[(1001, 2)]), "")).await,
        Code::InvalidArgument,
        "idempotency-key",
    );
    let long = "k".repeat(201);
    assert_status(
        client.create_order(keyed(order(7, &[(1001, 2)]), &long)).await,
        Code::InvalidArgument,
        "idempotency-key",
    );
}
