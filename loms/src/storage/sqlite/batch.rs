//! Group commit of CreateOrder on SQLite: one `BEGIN IMMEDIATE` on the one writer for a whole batch of calls,
//! sorted and answered by [`NewOrders`] (docs/architecture.md, "Group commit"). Set-based, as on PostgreSQL: the
//! stored keys, the next order ids and the stock rows are read with one statement each, the new orders are placed
//! over one [`Ledger`], and every table is written with one statement for the whole batch. A batch costs about ten
//! statements however many calls it holds, where running the calls in turn cost ten each: every statement is a
//! hop to the writer's worker thread while the one writer is held. A lone call is a batch of one.
//!
//! The write lock is held from `BEGIN IMMEDIATE` to the commit, so nothing else can store a key or take an order
//! id in between. Any failure before the commit runs the calls one by one, each a batch of its own, so a call that
//! cannot be written fails alone.

use chrono::Utc;
use sqlx::Row;

use super::{SqliteStore, Tx, apply_deltas, json, millis, record, stock_of_skus, write_items, write_reservations};
use crate::{
    domain::{CreateOrder, Ledger, LomsError, OrderId},
    storage::{
        batch::{BatchKind, CreateAnswer, CreateBatch, commit_failed},
        decode::{corrupt, stored_order_id, stored_status, stored_user},
        new_orders::{NewOrders, StoredKey, StoredKeys},
        records::EventRows,
    },
};

#[async_trait::async_trait]
impl CreateBatch for SqliteStore {
    async fn try_create_batch(&self, calls: &[CreateOrder]) -> Result<Vec<CreateAnswer>, LomsError> {
        let mut batch = NewOrders::new(calls);
        let mut tx = self.write().await?;
        let stored = stored_keys(&mut tx, &batch.keys_to_look_up()).await?;
        let new = batch.sort(stored);
        if new == 0 {
            tx.rollback().await?;
            return Ok(batch.answers());
        }
        let ids = next_order_ids(&mut tx, new).await?;
        let mut ledger = Ledger::new(stock_of_skus(&mut tx, batch.skus()).await?);
        batch.place(ids, &mut ledger);
        write_new_orders(&mut tx, &batch, &ledger).await?;
        if let Err(error) = self.after_commit.commit(tx, batch.skus()).await {
            return Ok(commit_failed(BatchKind::Create, calls.len(), &error));
        }
        Ok(batch.answers())
    }
}

/// The stored orders of `keys` ((user, key) pairs), through the unique (user, key) index: one statement.
async fn stored_keys(tx: &mut Tx, keys: &[(i64, &str)]) -> Result<StoredKeys, LomsError> {
    if keys.is_empty() {
        return Ok(StoredKeys::new());
    }
    let rows = sqlx::query(
        "select o.user_id, o.idempotency_key, o.id, o.status, o.request_hash,
                (select detail from order_status_history h where h.order_id = o.id order by h.id desc limit 1) as detail
         from (select json_extract(value, '$[0]') as user_id, json_extract(value, '$[1]') as key from json_each(?1)) k
         join orders o on o.user_id = k.user_id and o.idempotency_key = k.key",
    )
    .bind(json(&keys)?)
    .fetch_all(&mut **tx)
    .await?;
    rows.iter()
        .map(|row| {
            Ok((
                (stored_user(row.get("user_id"))?, row.get::<String, _>("idempotency_key")),
                StoredKey {
                    order_id: stored_order_id(row.get("id"))?,
                    status: stored_status(row.get("status"))?,
                    request_hash: row.get("request_hash"),
                    last_detail: row.get::<Option<String>, _>("detail").unwrap_or_default(),
                },
            ))
        })
        .collect()
}

/// `count` new order ids, the ones AUTOINCREMENT would give next (above every id ever used, deleted ones too).
/// Safe only under the write lock, which keeps any other writer from taking them meanwhile.
async fn next_order_ids(tx: &mut Tx, count: usize) -> Result<Vec<OrderId>, LomsError> {
    let last: i64 = sqlx::query_scalar(
        "select max(coalesce((select seq from sqlite_sequence where name = 'orders'), 0),
                    coalesce((select max(id) from orders), 0))",
    )
    .fetch_one(&mut **tx)
    .await?;
    let count = i64::try_from(count).map_err(|_| corrupt("a batch too large"))?;
    (1..=count)
        .map(|offset| {
            last.checked_add(offset).ok_or_else(|| corrupt("the order ids ran out")).and_then(stored_order_id)
        })
        .collect()
}

/// Writes the batch's placed orders: the order rows with their final statuses and deadlines, their items and
/// reservations, the ledger's stock deltas, history and events; one statement per table.
async fn write_new_orders(tx: &mut Tx, batch: &NewOrders<'_>, ledger: &Ledger) -> Result<(), LomsError> {
    let now = Utc::now();
    let mut orders = Vec::new();
    for (call, order_id, placement) in batch.placed() {
        let deadline = match placement.payment_timeout {
            Some(timeout) => Some(millis(now + chrono::Duration::from_std(timeout).map_err(corrupt)?)),
            None => None,
        };
        let idempotency = call.idempotency.as_ref();
        orders.push((
            order_id.get(),
            call.user.get(),
            placement.status.code(),
            deadline,
            idempotency.map(|key| key.key.as_str()),
            idempotency.map(|key| key.request_hash.as_str()),
        ));
    }
    sqlx::query(
        "insert into orders (id, user_id, status, payment_deadline, idempotency_key, request_hash, created_at, updated_at)
         select json_extract(value, '$[0]'), json_extract(value, '$[1]'), json_extract(value, '$[2]'),
                json_extract(value, '$[3]'), json_extract(value, '$[4]'), json_extract(value, '$[5]'), ?2, ?2
         from json_each(?1) order by key",
    )
    .bind(json(&orders)?)
    .bind(millis(now))
    .execute(&mut **tx)
    .await?;
    write_items(tx, batch.placed().map(|(call, order_id, _)| (order_id, &call.lines))).await?;
    write_reservations(
        tx,
        batch.placed().map(|(_, order_id, placement)| (order_id, placement.reservations.as_slice())),
    )
    .await?;
    apply_deltas(tx, ledger).await?;
    record(
        tx,
        EventRows::of_requests(
            batch.placed().map(|(call, order_id, placement)| (order_id, call, placement.steps.as_slice())),
            now,
        ),
    )
    .await
}
