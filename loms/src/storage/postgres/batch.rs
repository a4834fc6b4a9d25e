//! Group commit of CreateOrder on PostgreSQL: one transaction for a whole batch of calls (docs/architecture.md,
//! "Group commit"). It takes an order id for every new order and locks the union of the batch's stock rows in the
//! global order in one statement, runs [`place`] for each call in turn over one [`Ledger`] (so a later call sees
//! the earlier calls' reservations: the answers are those of running the calls one by one in the batch's order),
//! writes every order in one statement and commits once.
//!
//! One call cannot fail its neighbours: a short stock is a failed order like any other; a key already stored is
//! answered from the stored order and a key repeated inside the batch from its first use, before anything is
//! written. A deadlock or serialization failure runs the batch again; any other failure before COMMIT runs the
//! calls one by one on the per-call path, so a call that cannot be written fails alone.

use std::collections::{BTreeSet, HashMap};

use chrono::Utc;
use sqlx::Row;

use super::{PgStore, Tx, bind_deltas, bind_events};
use crate::{
    domain::{CreateOrder, Ledger, LomsError, OrderId, OrderStatus, Placement, Sku, StockLevel, UserId, place},
    storage::{
        batch::{BatchKind, CreateAnswer, CreateBatch, commit_failed, first_with_same_key},
        decode::{stored_level, stored_order_id, stored_status},
        records::EventRows,
    },
};

/// How one call of a batch is answered.
enum Outcome {
    /// Its key was already stored: a replay of the stored order.
    Stored(StoredKey),
    /// It repeats the key of the batch's call at this index: a replay of that call's order.
    Repeats(usize),
    /// A new order, placed at this position of the batch's placements.
    New(usize),
}

/// The order a (user, key) names, as a replay needs it.
#[derive(Debug, Clone)]
struct StoredKey {
    order_id: OrderId,
    status: OrderStatus,
    request_hash: Option<String>,
    last_detail: String,
}

#[async_trait::async_trait]
impl CreateBatch for PgStore {
    async fn try_create_batch(&self, calls: &[CreateOrder]) -> Result<Vec<CreateAnswer>, LomsError> {
        Self::with_retry(|| self.attempt_batch(calls)).await
    }
}

impl PgStore {
    /// One attempt at the batch. `Err` only when nothing was committed; a failed COMMIT (whose outcome is unknown)
    /// answers every call with the failure instead, so no call is run twice.
    async fn attempt_batch(&self, calls: &[CreateOrder]) -> Result<Vec<CreateAnswer>, LomsError> {
        let repeats = first_with_same_key(calls);
        let mut tx = self.pool.begin().await?;
        let mut stored = stored_keys(&mut tx, calls, &repeats).await?;
        let mut outcomes = Vec::with_capacity(calls.len());
        let mut new = Vec::new();
        for (index, call) in calls.iter().enumerate() {
            let outcome = match (repeats[index], &call.idempotency) {
                (Some(first), _) => Outcome::Repeats(first),
                (None, Some(idempotency)) => match stored.remove(&(call.user, idempotency.key.clone())) {
                    Some(order) => Outcome::Stored(order),
                    None => Outcome::New(push(&mut new, index)),
                },
                (None, None) => Outcome::New(push(&mut new, index)),
            };
            outcomes.push(outcome);
        }
        let mut placements = Vec::with_capacity(new.len());
        if new.is_empty() {
            tx.rollback().await?;
        } else {
            let skus: BTreeSet<i64> =
                new.iter().flat_map(|&index| calls[index].lines.iter().map(|(sku, _)| i64::from(sku.get()))).collect();
            let (ids, stock) =
                lock_stock_for_new_orders(&mut tx, &skus.into_iter().collect::<Vec<_>>(), new.len()).await?;
            let mut ledger = Ledger::new(stock);
            for (&index, order_id) in new.iter().zip(ids) {
                placements.push((index, order_id, place(order_id, &calls[index], &mut ledger)));
            }
            write_new_orders(&mut tx, calls, &placements, &ledger).await?;
            let skus: Vec<Sku> = new.iter().flat_map(|&index| calls[index].lines.iter().map(|(sku, _)| sku)).collect();
            if let Err(error) = self.after_commit.commit(tx, skus).await {
                return Ok(commit_failed(BatchKind::Create, calls.len(), &error));
            }
        }
        Ok(answers(calls, outcomes, placements))
    }
}

/// Appends `index` to `new`, returning its position there.
fn push(new: &mut Vec<usize>, index: usize) -> usize {
    new.push(index);
    new.len() - 1
}

/// Every call's answer, once the batch committed. A repeated key, whether stored before or used earlier in the
/// batch, is answered by [`crate::domain::IdempotencyKey::replay`] of the order it names, exactly as a later call would be.
fn answers(
    calls: &[CreateOrder],
    outcomes: Vec<Outcome>,
    placements: Vec<(usize, OrderId, Placement)>,
) -> Vec<CreateAnswer> {
    let mut origins: Vec<Option<StoredKey>> = vec![None; calls.len()];
    let mut replies: Vec<Option<CreateAnswer>> = Vec::with_capacity(placements.len());
    for (index, order_id, placement) in placements {
        origins[index] = Some(StoredKey {
            order_id,
            status: placement.status,
            request_hash: calls[index].idempotency.as_ref().map(|key| key.request_hash.clone()),
            last_detail: placement.steps.last().map(|step| step.transition.detail.clone()).unwrap_or_default(),
        });
        replies.push(Some(placement.reply));
    }
    outcomes
        .into_iter()
        .enumerate()
        .map(|(index, outcome)| {
            let origin = match outcome {
                Outcome::New(position) => {
                    return replies[position].take().expect("each placement answers one call");
                }
                Outcome::Stored(stored) => stored,
                Outcome::Repeats(first) => match &origins[first] {
                    Some(origin) => origin.clone(),
                    None => return Err(LomsError::Internal("a repeated key's first use has no order".into())),
                },
            };
            let idempotency = calls[index].idempotency.as_ref().expect("only a keyed call replays");
            origins[index] = Some(origin.clone());
            idempotency.replay(origin.request_hash.as_deref(), origin.order_id, origin.status, origin.last_detail)
        })
        .collect()
}

/// The stored orders of the keys the batch's first uses carry. A key stored concurrently by another replica after
/// this read makes the batch's write fail on the unique index, and its calls run one by one.
async fn stored_keys(
    tx: &mut Tx,
    calls: &[CreateOrder],
    repeats: &[Option<usize>],
) -> Result<HashMap<(UserId, String), StoredKey>, LomsError> {
    let (users, keys): (Vec<i64>, Vec<&str>) = calls
        .iter()
        .zip(repeats)
        .filter(|(_, repeat)| repeat.is_none())
        .filter_map(|(call, _)| Some((call.user.get(), call.idempotency.as_ref()?.key.as_str())))
        .unzip();
    if users.is_empty() {
        return Ok(HashMap::new());
    }
    let rows = sqlx::query(
        "select o.user_id, o.idempotency_key, o.id, o.status, o.request_hash,
                (select detail from order_status_history h where h.order_id = o.id order by h.id desc limit 1) as detail
         from orders o join unnest($1::bigint[], $2::text[]) as k(user_id, key)
           on o.user_id = k.user_id and o.idempotency_key = k.key",
    )
    .bind(&users)
    .bind(&keys)
    .fetch_all(&mut **tx)
    .await?;
    rows.iter()
        .map(|row| {
            let user = crate::storage::decode::stored_user(row.get("user_id"))?;
            Ok((
                (user, row.get::<String, _>("idempotency_key")),
                StoredKey {
                    order_id: stored_order_id(row.get("id"))?,
                    status: stored_status(row.get::<i16, _>("status").into())?,
                    request_hash: row.get("request_hash"),
                    last_detail: row.get::<Option<String>, _>("detail").unwrap_or_default(),
                },
            ))
        })
        .collect()
}

/// Takes `count` new order ids and locks the stock rows of `skus` in the global lock order, returning their levels:
/// one round trip. The new order rows need no lock (nobody else can see them yet); a lone CreateOrder uses it with 1.
pub(super) async fn lock_stock_for_new_orders(
    tx: &mut Tx,
    skus: &[i64],
    count: usize,
) -> Result<(Vec<OrderId>, Vec<StockLevel>), LomsError> {
    type LockedRow = (Vec<i64>, Option<i64>, Option<i64>, Option<i64>, Option<i64>);
    let rows: Vec<LockedRow> = sqlx::query_as(
        "with new_orders as (select array(select nextval('orders_id_seq') from generate_series(1, $2)) as ids),
              locked as (
                  select sku, warehouse_id, on_hand, reserved from stocks
                  where sku = any($1)
                  order by sku, warehouse_id
                  for update
              )
         select n.ids, l.warehouse_id, l.sku, l.on_hand, l.reserved
         from new_orders n left join locked l on true
         order by l.sku, l.warehouse_id",
    )
    .bind(skus)
    .bind(i32::try_from(count).map_err(|_| LomsError::Internal("a batch too large".into()))?)
    .fetch_all(&mut **tx)
    .await?;
    let ids = rows.first().map(|(ids, ..)| ids.clone()).unwrap_or_default();
    if ids.len() != count {
        return Err(LomsError::Internal("the order id sequence gave too few ids".into()));
    }
    let ids = ids.into_iter().map(stored_order_id).collect::<Result<_, _>>()?;
    let stock = rows
        .into_iter()
        .filter_map(|(_, warehouse, sku, on_hand, reserved)| Some((warehouse?, sku?, on_hand?, reserved?)))
        .map(|(warehouse, sku, on_hand, reserved)| stored_level(warehouse, sku, on_hand, reserved))
        .collect::<Result<_, _>>()?;
    Ok((ids, stock))
}

/// Writes the batch's new orders in one statement: the order rows with their final statuses, their items, their
/// reservations and the ledger's stock deltas (on rows locked by [`lock_stock_for_new_orders`]), history and events.
async fn write_new_orders(
    tx: &mut Tx,
    calls: &[CreateOrder],
    placements: &[(usize, OrderId, Placement)],
    ledger: &Ledger,
) -> Result<(), LomsError> {
    let orders = || placements.iter().map(|(index, order_id, placement)| (&calls[*index], *order_id, placement));
    let (mut item_orders, mut item_skus, mut item_counts) = (Vec::new(), Vec::new(), Vec::<i32>::new());
    let (mut held_orders, mut held_skus, mut held_warehouses, mut held_counts) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::<i64>::new());
    let (mut ids, mut users, mut statuses, mut timeouts, mut keys, mut hashes) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::<Option<f64>>::new(), Vec::new(), Vec::new());
    for (call, order_id, placement) in orders() {
        let id = order_id.get();
        for (sku, count) in call.lines.iter() {
            item_orders.push(id);
            item_skus.push(i64::from(sku.get()));
            item_counts.push(count.get() as i32);
        }
        for r in &placement.reservations {
            held_orders.push(id);
            held_skus.push(i64::from(r.sku.get()));
            held_warehouses.push(r.warehouse.get());
            // Reserved units are counts of one order line, far below i64::MAX.
            held_counts.push(r.count as i64);
        }
        ids.push(id);
        users.push(call.user.get());
        statuses.push(placement.status.code());
        timeouts.push(placement.payment_timeout.map(|timeout| timeout.as_secs_f64()));
        keys.push(call.idempotency.as_ref().map(|key| key.key.as_str()));
        hashes.push(call.idempotency.as_ref().map(|key| key.request_hash.as_str()));
    }
    let events = EventRows::of_requests(
        orders().map(|(call, order_id, placement)| (order_id, call, placement.steps.as_slice())),
        Utc::now(),
    );
    let query = sqlx::query(concat!(
        "with ",
        record_ctes!(),
        ", ",
        stock_cte!(),
        ", items as (
             insert into order_items (order_id, sku, count)
             select * from unnest($14::bigint[], $15::bigint[], $16::int[])
         ), reserved as (
             insert into reservations (order_id, sku, warehouse_id, count)
             select * from unnest($17::bigint[], $18::bigint[], $19::bigint[], $20::bigint[])
         )
         insert into orders (id, user_id, status, payment_deadline, idempotency_key, request_hash)
         select id, user_id, status, now() + make_interval(secs => timeout), key, hash
         from unnest($21::bigint[], $22::bigint[], $23::smallint[], $24::float8[], $25::text[], $26::text[])
              as o(id, user_id, status, timeout, key, hash)"
    ));
    bind_deltas(bind_events(query, events), &ledger.deltas())
        .bind(&item_orders)
        .bind(&item_skus)
        .bind(&item_counts)
        .bind(&held_orders)
        .bind(&held_skus)
        .bind(&held_warehouses)
        .bind(&held_counts)
        .bind(&ids)
        .bind(&users)
        .bind(&statuses)
        .bind(&timeouts)
        .bind(&keys)
        .bind(&hashes)
        .execute(&mut **tx)
        .await?;
    Ok(())
}
