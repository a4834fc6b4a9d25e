//! Group commit: calls committed together in one batch answer as if they had run one by one. Many concurrent
//! CreateOrders mix winners, short-stock losers, a key sent several times and a key reused for a different
//! request; the stock and the orders are counted after.

use std::{collections::HashMap, sync::Arc, time::Duration};

use futures::future::join_all;
use minizon_proto::loms::CreateOrderRequest;
use minizon_tests::{db::TestDb, loms::TestLoms};
use tonic::{Code, Request};

use crate::support::order;

const HOT: u32 = 7007;
const PLENTY: u32 = 7008;

fn keyed(request: CreateOrderRequest, key: &str) -> Request<CreateOrderRequest> {
    let mut request = Request::new(request);
    request.metadata_mut().insert("idempotency-key", key.parse().unwrap());
    request
}

/// What one call asked for.
#[derive(Debug, Clone)]
enum Call {
    /// An unkeyed order of 1–2 hot units and one plentiful one.
    Plain { user: i64, hot: u32 },
    /// The same keyed request, sent by several callers at once.
    Repeated { key: usize },
    /// One key, one user, a different request each time: one order, the other calls refused.
    Reused { units: u32 },
}

/// A call's answer: the order id (of a created or of a failed order), or the refusal's code.
type Answer = Result<(bool, i64), Code>;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_mixing_winners_short_stock_and_repeated_keys_answers_each_call_as_if_alone() {
    // Arrange: a short wait lets batches gather many calls, so they mix in one transaction.
    let loms = Arc::new(
        TestLoms::start_with(TestDb::new().await, |config| {
            config.write_batch.max_batch = 32;
            config.write_batch.max_wait = Duration::from_millis(10);
        })
        .await,
    );
    loms.set_stock(1, HOT, 30).await;
    loms.set_stock(2, HOT, 20).await;
    loms.set_stock(1, PLENTY, 10_000).await;
    let mut calls: Vec<Call> = (0..80).map(|n| Call::Plain { user: n + 1, hot: (n % 2 + 1) as u32 }).collect();
    calls.extend((0..32).map(|n| Call::Repeated { key: n % 8 }));
    calls.extend((1..=8).map(|units| Call::Reused { units }));
    // Interleave the kinds (37 is coprime with 120), so each batch holds some of each.
    let calls: Vec<Call> = (0..calls.len()).map(|n| calls[n * 37 % calls.len()].clone()).collect();

    // Act: all 120 at once.
    let tasks = calls.iter().cloned().map(|call| {
        let loms = loms.clone();
        tokio::spawn(async move {
            let mut client = loms.client().await;
            let answer = match &call {
                Call::Plain { user, hot } => client.create_order(order(*user, &[(HOT, *hot), (PLENTY, 1)])).await,
                Call::Repeated { key } => {
                    let user = 1_000 + *key as i64;
                    client.create_order(keyed(order(user, &[(HOT, 1), (PLENTY, 2)]), &format!("repeat-{key}"))).await
                }
                Call::Reused { units } => client.create_order(keyed(order(2_000, &[(PLENTY, *units)]), "reused")).await,
            };
            let answer: Answer = match answer {
                Ok(created) => Ok((true, created.into_inner().order_id)),
                Err(status) if status.code() == Code::FailedPrecondition => {
                    let id = status.metadata().get("order-id").expect("a failed order names itself");
                    Ok((false, id.to_str().unwrap().parse().unwrap()))
                }
                Err(status) => Err(status.code()),
            };
            (call, answer)
        })
    });
    let answers: Vec<(Call, Answer)> = join_all(tasks).await.into_iter().map(|r| r.unwrap()).collect();

    // Assert: each kind of call got the answer it would have got alone.
    let db = &loms.db;
    let mut by_key: HashMap<usize, Vec<Answer>> = HashMap::new();
    let mut reused = Vec::new();
    for (call, answer) in &answers {
        match call {
            Call::Plain { .. } => assert!(answer.is_ok(), "a plain order is created or kept as failed: {answer:?}"),
            Call::Repeated { key } => by_key.entry(*key).or_default().push(*answer),
            Call::Reused { .. } => reused.push(*answer),
        }
    }
    for (key, answers) in &by_key {
        assert!(answers.iter().all(|answer| answer == &answers[0] && answer.is_ok()), "key {key}: {answers:?}");
    }
    let reused_orders: Vec<_> = reused.iter().filter_map(|answer| answer.ok()).collect();
    assert_eq!(reused_orders.len(), 1, "one call of a reused key wins: {reused:?}");
    assert!(reused_orders[0].0, "plenty of stock: the winner is created");
    assert!(
        reused.iter().filter(|answer| answer.is_err()).all(|answer| *answer == Err(Code::InvalidArgument)),
        "the others are refused as a reused key: {reused:?}"
    );

    // One order per key, one per plain call, and nothing else.
    let distinct_orders: std::collections::BTreeSet<i64> =
        answers.iter().filter_map(|(_, answer)| answer.ok().map(|(_, id)| id)).collect();
    assert_eq!(distinct_orders.len(), 80 + 8 + 1);
    assert_eq!(db.scalar("select count(*) from orders").await, 80 + 8 + 1);
    assert_eq!(
        db.scalar("select count(*) from (select 1 from orders where idempotency_key is not null group by user_id, idempotency_key having count(*) > 1) as t").await,
        0,
        "one order per (user, key)"
    );

    // The stock: 50 hot units, demand well over that, so some orders failed; nothing oversold.
    let created = answers.iter().filter(|(_, answer)| matches!(answer, Ok((true, _)))).count();
    let failed: std::collections::BTreeSet<i64> =
        answers.iter().filter_map(|(_, answer)| answer.ok().filter(|(ok, _)| !ok).map(|(_, id)| id)).collect();
    assert!(!failed.is_empty() && created > 0, "the hot sku runs out part-way ({created} created)");
    assert_eq!(db.scalar("select count(*) from orders where status = 2").await, failed.len() as i64);
    assert_eq!(
        db.scalar("select count(*) from reservations r join orders o on o.id = r.order_id where o.status = 2").await,
        0,
        "a failed order holds nothing"
    );
    let reserved_hot = db.scalar(&format!("select cast(sum(reserved) as bigint) from stocks where sku = {HOT}")).await;
    let on_hand_hot = db.scalar(&format!("select cast(sum(on_hand) as bigint) from stocks where sku = {HOT}")).await;
    let held_hot = db
        .scalar(&format!(
            "select cast(coalesce(sum(r.count), 0) as bigint) from reservations r join orders o on o.id = r.order_id
             where r.sku = {HOT} and o.status = 1"
        ))
        .await;
    let ordered_hot = db
        .scalar(&format!(
            "select cast(coalesce(sum(i.count), 0) as bigint) from order_items i join orders o on o.id = i.order_id
             where i.sku = {HOT} and o.status = 1"
        ))
        .await;
    assert_eq!(on_hand_hot, 50, "nothing was paid, so nothing left");
    assert!(reserved_hot <= on_hand_hot, "no oversell: {reserved_hot} reserved of {on_hand_hot}");
    assert_eq!(held_hot, reserved_hot, "the reservations of unpaid orders are exactly what is reserved");
    assert_eq!(ordered_hot, reserved_hot, "every unpaid order holds all its units");
    let reserved_plenty =
        db.scalar(&format!("select cast(sum(reserved) as bigint) from stocks where sku = {PLENTY}")).await;
    let ordered_plenty = db
        .scalar(&format!(
            "select cast(coalesce(sum(i.count), 0) as bigint) from order_items i join orders o on o.id = i.order_id
             where i.sku = {PLENTY} and o.status = 1"
        ))
        .await;
    assert_eq!(reserved_plenty, ordered_plenty);

    // Each order has its history and its events: one pair of steps per order.
    assert_eq!(db.scalar("select count(*) from order_status_history").await, 2 * (80 + 8 + 1));
    assert_eq!(db.scalar("select count(*) from outbox").await, 2 * (80 + 8 + 1));

    // The calls really shared transactions (on PostgreSQL a batch's orders share the writing transaction's id).
    if db.is_postgres() {
        let largest = db
            .scalar("select cast(max(n) as bigint) from (select count(*) as n from orders group by xmin::text) as t")
            .await;
        assert!(largest > 1, "some transaction committed several orders");
    }
}
