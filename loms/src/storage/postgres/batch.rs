//! Group commit of CreateOrder on PostgreSQL: one transaction for a whole batch of calls (docs/architecture.md,
//! "Group commit"), sorted and answered by [`NewOrders`]. It takes an order id for every new order and locks the
//! union of the batch's stock rows in the global order in one statement, places the new orders over one
//! [`Ledger`], writes every order in one statement and commits once.
//!
//! A deadlock or serialization failure runs the batch again; any other failure before COMMIT runs the calls one by
//! one on the per-call path, so a call that cannot be written fails alone.

use chrono::Utc;
use sqlx::Row;

use super::{PgStore, Tx, bind_deltas, bind_events};
use crate::{
    domain::{CreateOrder, Ledger, LomsError, OrderId, StockLevel},
    storage::{
        batch::{BatchKind, CreateAnswer, CreateBatch, commit_failed},
        decode::{stored_level, stored_order_id, stored_status},
        new_orders::{NewOrders, StoredKey, StoredKeys},
        records::EventRows,
    },
};

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
        let mut batch = NewOrders::new(calls);
        let mut tx = self.pool.begin().await?;
        let stored = stored_keys(&mut tx, &batch.keys_to_look_up()).await?;
        let new = batch.sort(stored);
        if new == 0 {
            tx.rollback().await?;
            return Ok(batch.answers());
        }
        let skus: Vec<i64> = batch.skus().into_iter().map(|sku| i64::from(sku.get())).collect();
        let (ids, stock) = lock_stock_for_new_orders(&mut tx, &skus, new).await?;
        let mut ledger = Ledger::new(stock);
        batch.place(ids, &mut ledger);
        write_new_orders(&mut tx, &batch, &ledger).await?;
        if let Err(error) = self.after_commit.commit(tx, batch.skus()).await {
            return Ok(commit_failed(BatchKind::Create, calls.len(), &error));
        }
        Ok(batch.answers())
    }
}

/// The stored orders of `keys` ((user, key) pairs). A key stored concurrently by another replica after this read
/// makes the batch's write fail on the unique index, and its calls run one by one.
async fn stored_keys(tx: &mut Tx, keys: &[(i64, &str)]) -> Result<StoredKeys, LomsError> {
    if keys.is_empty() {
        return Ok(StoredKeys::new());
    }
    let (users, keys): (Vec<i64>, Vec<&str>) = keys.iter().copied().unzip();
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

/// Writes the batch's new orders in one statement: the order rows with their final statuses, their items and their
/// reservations (gathered per order from the flat arrays of the whole batch), the ledger's stock deltas (on rows
/// locked by [`lock_stock_for_new_orders`]), history and events.
async fn write_new_orders(tx: &mut Tx, batch: &NewOrders<'_>, ledger: &Ledger) -> Result<(), LomsError> {
    let (mut item_orders, mut item_skus, mut item_counts) = (Vec::new(), Vec::new(), Vec::<i32>::new());
    let (mut held_orders, mut held_skus, mut held_warehouses, mut held_counts) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::<i64>::new());
    let (mut ids, mut users, mut statuses, mut timeouts, mut keys, mut hashes) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::<Option<f64>>::new(), Vec::new(), Vec::new());
    for (call, order_id, placement) in batch.placed() {
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
        batch.placed().map(|(call, order_id, placement)| (order_id, call, placement.steps.as_slice())),
        Utc::now(),
    );
    let query = sqlx::query(concat!(
        "with ",
        record_ctes!(),
        ", ",
        stock_cte!(),
        ", items as (
             select order_id, array_agg(sku order by n) as skus, array_agg(count order by n) as counts
             from unnest($14::bigint[], $15::bigint[], $16::int[]) with ordinality as i(order_id, sku, count, n)
             group by order_id
         ), held as (
             select order_id, array_agg(sku order by n) as skus, array_agg(warehouse_id order by n) as warehouses,
                    array_agg(count order by n) as counts
             from unnest($17::bigint[], $18::bigint[], $19::bigint[], $20::bigint[])
                  with ordinality as r(order_id, sku, warehouse_id, count, n)
             group by order_id
         )
         insert into orders (id, user_id, status, payment_deadline, idempotency_key, request_hash,
                             item_skus, item_counts, held_skus, held_warehouses, held_counts)
         select o.id, o.user_id, o.status, now() + make_interval(secs => o.timeout), o.key, o.hash,
                coalesce(i.skus, '{}'), coalesce(i.counts, '{}'),
                coalesce(h.skus, '{}'), coalesce(h.warehouses, '{}'), coalesce(h.counts, '{}')
         from unnest($21::bigint[], $22::bigint[], $23::smallint[], $24::float8[], $25::text[], $26::text[])
              as o(id, user_id, status, timeout, key, hash)
         left join items i on i.order_id = o.id
         left join held h on h.order_id = o.id"
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
