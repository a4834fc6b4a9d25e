//! Group commit: calls committed together in one batch answer as if they had run one by one. Many concurrent
//! CreateOrders mix winners, short-stock losers, a key sent several times and a key reused for a different
//! request; many concurrent OrderPayed and CancelOrder calls mix unknown orders, refused steps, repeats and a
//! payment racing a cancellation of one order; the stock and the orders are counted after.

use std::{collections::HashMap, sync::Arc, time::Duration};

use futures::future::join_all;
use minizon_proto::loms::{CancelOrderRequest, CreateOrderRequest, OrderPayedRequest};
use minizon_tests::{db::TestDb, loms::TestLoms};
use tonic::{Code, Request};

use crate::support::{order, wait_until_overdue};

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
    mixed_creates(1).await;
}

/// Two committers (PostgreSQL; SQLite always runs one): the next batch takes its locks while the one before
/// commits, and the answers and the stock are the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_two_committers_a_mixed_batch_answers_the_same() {
    mixed_creates(2).await;
}

/// 120 concurrent CreateOrder calls of every kind, batched by `committers` committers, counted.
async fn mixed_creates(committers: u8) {
    // Arrange: a short wait lets batches gather many calls, so they mix in one transaction.
    let loms = Arc::new(
        TestLoms::start_with(TestDb::new().await, |config| {
            config.write_batch.max_batch = 32;
            config.write_batch.max_wait = Duration::from_millis(10);
            config.write_batch.committers = committers;
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

    // Each order has its history and its events: one pair of steps per order, and none of an order that is not
    // there (PostgreSQL's history has no foreign key to hold that: migration 0007).
    assert_eq!(db.scalar("select count(*) from order_status_history").await, 2 * (80 + 8 + 1));
    assert_eq!(db.scalar("select count(*) from outbox").await, 2 * (80 + 8 + 1));
    assert_eq!(
        db.scalar(
            "select count(*) from orders o
             where (select count(*) from order_status_history h where h.order_id = o.id) = 2
               and (select count(*) from outbox e where e.order_id = o.id) = 2"
        )
        .await,
        80 + 8 + 1,
    );

    // The calls really shared transactions (on PostgreSQL a batch's orders share the writing transaction's id).
    if db.is_postgres() {
        let largest = db
            .scalar("select cast(max(n) as bigint) from (select count(*) as n from orders group by xmin::text) as t")
            .await;
        assert!(largest > 1, "some transaction committed several orders");
    }
}

const BOUGHT: u32 = 7009;

/// A command sent in a batching test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Pay,
    Cancel,
}

/// Sends `step` for `order_id`: its status code (`Ok` is `Code::Ok`).
async fn send(loms: &TestLoms, step: Step, order_id: i64) -> Code {
    let mut client = loms.client().await;
    let answer = match step {
        Step::Pay => client.order_payed(OrderPayedRequest { order_id }).await.map(|_| ()),
        Step::Cancel => client.cancel_order(CancelOrderRequest { order_id }).await.map(|_| ()),
    };
    answer.err().map_or(Code::Ok, |status| status.code())
}

/// Sends every `(step, order)` at once, each from its own task: the answers in the calls' order.
async fn send_all(loms: &Arc<TestLoms>, calls: &[(Step, i64)]) -> Vec<Code> {
    let tasks = calls.iter().map(|&(step, order_id)| {
        let loms = loms.clone();
        tokio::spawn(async move { send(&loms, step, order_id).await })
    });
    join_all(tasks).await.into_iter().map(|answer| answer.unwrap()).collect()
}

/// How many history rows of `order_id` end in `status`.
async fn transitions_to(db: &TestDb, order_id: i64, status: i32) -> i64 {
    db.scalar(&format!(
        "select count(*) from order_status_history where order_id = {order_id} and to_status = {status}"
    ))
    .await
}

async fn stored_status(db: &TestDb, order_id: i64) -> i64 {
    db.scalar(&format!("select cast(status as bigint) from orders where id = {order_id}")).await
}

/// What an order of [`a_batch_of_payments_and_cancellations_answers_each_call_as_if_alone`] is put through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Case {
    /// Paid once.
    Paid,
    /// Paid twice: the repeat is a step already done.
    PaidTwice,
    /// Cancelled once.
    Cancelled,
    /// Cancelled twice.
    CancelledTwice,
    /// Paid and cancelled at once: one of them wins.
    Raced,
    /// Cancelled before, then paid (refused) and cancelled (done already).
    CancelledBefore,
    /// Paid before, then cancelled (refused: a paid order is refunded) and paid (done already).
    PaidBefore,
}

impl Case {
    const ALL: [Case; 7] = [
        Case::Paid,
        Case::PaidTwice,
        Case::Cancelled,
        Case::CancelledTwice,
        Case::Raced,
        Case::CancelledBefore,
        Case::PaidBefore,
    ];

    /// The calls sent concurrently.
    fn steps(self) -> &'static [Step] {
        match self {
            Case::Paid => &[Step::Pay],
            Case::PaidTwice => &[Step::Pay, Step::Pay],
            Case::Cancelled => &[Step::Cancel],
            Case::CancelledTwice => &[Step::Cancel, Step::Cancel],
            Case::Raced | Case::CancelledBefore | Case::PaidBefore => &[Step::Pay, Step::Cancel],
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_of_payments_and_cancellations_answers_each_call_as_if_alone() {
    payments_and_cancellations(32, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_batching_off_payments_and_cancellations_answer_the_same() {
    payments_and_cancellations(1, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_two_committers_payments_and_cancellations_answer_the_same() {
    payments_and_cancellations(32, 2).await;
}

/// Many concurrent OrderPayed and CancelOrder calls, batched up to `max_batch` by `committers` committers, counted.
async fn payments_and_cancellations(max_batch: u16, committers: u8) {
    // Arrange: a short wait lets batches gather many calls, so they mix in one transaction. Each order takes 3
    // units of a sku stocked in two warehouses (split across both for some orders), 6 orders per case.
    let loms = Arc::new(
        TestLoms::start_with(TestDb::new().await, |config| {
            config.write_batch.max_batch = max_batch;
            config.write_batch.max_wait = Duration::from_millis(10);
            config.write_batch.committers = committers;
        })
        .await,
    );
    loms.set_stock(1, BOUGHT, 100).await;
    loms.set_stock(2, BOUGHT, 100).await;
    let stocked = 200;
    let mut client = loms.client().await;
    let mut orders: Vec<(Case, i64)> = Vec::new();
    for (n, case) in Case::ALL.iter().flat_map(|case| [*case; 6]).enumerate() {
        let created = client.create_order(order(n as i64 + 1, &[(BOUGHT, 3)])).await.unwrap().into_inner();
        orders.push((case, created.order_id));
    }
    for &(case, order_id) in &orders {
        let before = match case {
            Case::CancelledBefore => Step::Cancel,
            Case::PaidBefore => Step::Pay,
            _ => continue,
        };
        assert_eq!(send(&loms, before, order_id).await, Code::Ok);
    }
    let unknown: Vec<i64> = (1..=4).map(|n| orders.iter().map(|(_, id)| id).max().unwrap() + 1_000 * n).collect();
    let mut calls: Vec<(Step, i64)> =
        orders.iter().flat_map(|&(case, order_id)| case.steps().iter().map(move |&step| (step, order_id))).collect();
    calls.extend(unknown.iter().flat_map(|&order_id| [(Step::Pay, order_id), (Step::Cancel, order_id)]));
    // Interleave (61 is coprime with the number of calls), so each batch mixes the cases; the two calls of an
    // order then usually land in one batch, and sometimes in two.
    assert_eq!(calls.len(), 6 * 12 + 8);
    let calls: Vec<(Step, i64)> = (0..calls.len()).map(|n| calls[n * 61 % calls.len()]).collect();

    // Act: every call at once.
    let answers = send_all(&loms, &calls).await;

    // Assert: each call got the answer it would have got alone.
    let answer_of = |wanted: (Step, i64)| -> Vec<Code> {
        calls.iter().zip(&answers).filter(|(call, _)| **call == wanted).map(|(_, code)| *code).collect()
    };
    let db = &loms.db;
    for &order_id in &unknown {
        assert_eq!(answer_of((Step::Pay, order_id)), [Code::NotFound], "an unknown order, paid");
        assert_eq!(answer_of((Step::Cancel, order_id)), [Code::NotFound], "an unknown order, cancelled");
    }
    for &(case, order_id) in &orders {
        let (paid, cancelled) = (answer_of((Step::Pay, order_id)), answer_of((Step::Cancel, order_id)));
        let status = stored_status(db, order_id).await;
        match case {
            Case::Paid | Case::PaidTwice => {
                assert!(paid.iter().all(|code| *code == Code::Ok), "{case:?} {order_id}: {paid:?}");
                assert_eq!(status, 3, "{case:?} {order_id}");
            }
            Case::Cancelled | Case::CancelledTwice => {
                assert!(cancelled.iter().all(|code| *code == Code::Ok), "{case:?} {order_id}: {cancelled:?}");
                assert_eq!(status, 4, "{case:?} {order_id}");
            }
            Case::Raced => match status {
                3 => assert_eq!((paid, cancelled), (vec![Code::Ok], vec![Code::FailedPrecondition]), "{order_id}"),
                4 => assert_eq!((paid, cancelled), (vec![Code::FailedPrecondition], vec![Code::Ok]), "{order_id}"),
                other => panic!("raced order {order_id} ended with status {other}"),
            },
            Case::CancelledBefore => {
                assert_eq!((paid, cancelled), (vec![Code::FailedPrecondition], vec![Code::Ok]), "{order_id}");
                assert_eq!(status, 4, "{order_id}");
            }
            Case::PaidBefore => {
                assert_eq!((paid, cancelled), (vec![Code::Ok], vec![Code::FailedPrecondition]), "{order_id}");
                assert_eq!(status, 3, "{order_id}");
            }
        }
        // Exactly one final transition per order, whatever won.
        let finals = transitions_to(db, order_id, 3).await + transitions_to(db, order_id, 4).await;
        assert_eq!(finals, 1, "{case:?} {order_id}: one final transition");
    }

    // The stock: every unit of a paid order left, every unit of a cancelled one is free again; nothing reserved.
    let sum = |column: &str| format!("select cast(sum({column}) as bigint) from stocks where sku = {BOUGHT}");
    let sold = db
        .scalar(&format!(
            "select cast(coalesce(sum(i.count), 0) as bigint) from order_items i join orders o on o.id = i.order_id
             where i.sku = {BOUGHT} and o.status = 3"
        ))
        .await;
    let paid_orders = db.scalar("select count(*) from orders where status = 3").await;
    assert_eq!(sold, 3 * paid_orders);
    assert_eq!(db.scalar(&sum("on_hand")).await, stocked - sold, "every paid unit left the warehouses");
    assert_eq!(db.scalar(&sum("reserved")).await, 0, "no order holds stock any more");

    // One history row and one event per step: two at creation, one final.
    let order_count = orders.len() as i64;
    assert_eq!(db.scalar("select count(*) from order_status_history").await, 3 * order_count);
    assert_eq!(db.scalar("select count(*) from outbox").await, 3 * order_count);

    // The calls really shared transactions when batched, and did not when not (on PostgreSQL a transaction's rows
    // share its id).
    if db.is_postgres() {
        let largest = db
            .scalar(
                "select cast(max(n) as bigint) from (select count(*) as n from order_status_history
                 where to_status in (3, 4) group by xmin::text) as t",
            )
            .await;
        if max_batch > 1 {
            assert!(largest > 1, "some transaction paid or cancelled several orders");
        } else {
            assert_eq!(largest, 1, "with batching off every call has its own transaction");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn late_payments_in_a_batch_are_written_as_timeouts_and_refused() {
    // Arrange: orders past their payment deadline; the sweep (every second) races the calls.
    let loms = Arc::new(
        TestLoms::start_with(TestDb::new().await, |config| {
            config.payment_timeout = Duration::from_millis(300);
            config.write_batch.max_batch = 32;
            config.write_batch.max_wait = Duration::from_millis(10);
        })
        .await,
    );
    loms.set_stock(1, BOUGHT, 100).await;
    let mut client = loms.client().await;
    let mut orders = Vec::new();
    for user in 1..=12 {
        orders.push(client.create_order(order(user, &[(BOUGHT, 2)])).await.unwrap().into_inner().order_id);
    }
    for &order_id in &orders {
        wait_until_overdue(&loms.db, order_id).await;
    }

    // Act: pay the first half, cancel the second half, and pay one late order twice.
    let (to_pay, to_cancel) = orders.split_at(6);
    let mut calls: Vec<(Step, i64)> = to_pay.iter().map(|&id| (Step::Pay, id)).collect();
    calls.extend(to_cancel.iter().map(|&id| (Step::Cancel, id)));
    calls.push((Step::Pay, to_pay[0]));
    let answers = send_all(&loms, &calls).await;

    // Assert: a late payment is refused, whether it or the sweep cancelled the order; a user may cancel after the
    // deadline (or finds it cancelled already, which is the step done).
    for (&(step, order_id), code) in calls.iter().zip(&answers) {
        let wanted = if step == Step::Pay { Code::FailedPrecondition } else { Code::Ok };
        assert_eq!(*code, wanted, "{step:?} {order_id}");
    }
    let db = &loms.db;
    for &order_id in &orders {
        assert_eq!(stored_status(db, order_id).await, 4, "order {order_id} is cancelled");
        assert_eq!(transitions_to(db, order_id, 4).await, 1, "order {order_id}: one cancellation");
        assert_eq!(transitions_to(db, order_id, 3).await, 0, "order {order_id}: never paid");
    }
    let level = |column: &str| format!("select cast({column} as bigint) from stocks where sku = {BOUGHT}");
    assert_eq!(db.scalar(&level("on_hand")).await, 100, "nothing sold");
    assert_eq!(db.scalar(&level("reserved")).await, 0, "nothing held");
    // A late payment is written as the timeout it is (reason 6), whether it or the sweep cancelled the order.
    let paid_late = to_pay.iter().map(i64::to_string).collect::<Vec<_>>().join(", ");
    assert_eq!(
        db.scalar(&format!(
            "select count(*) from order_status_history where order_id in ({paid_late}) and to_status = 4 and reason = 6"
        ))
        .await,
        to_pay.len() as i64,
    );
}
