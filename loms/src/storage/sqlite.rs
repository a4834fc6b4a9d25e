//! LOMS on SQLite, for the embedded mode. This module loads, calls the deciders of [`crate::domain`], and writes
//! what they decided; it decides nothing itself.
//!
//! Concurrency design: every write runs in a `BEGIN IMMEDIATE` transaction on the single writer connection, so
//! write transactions are serialised — the SQLite way to get what PostgreSQL's row locks give: no oversell, one
//! winner per order, one order per idempotency key. Reads go through reader connections (WAL). Statements cost no
//! network round trips here, but each still costs a hop to the connection's worker thread while the one writer is
//! held, so rows are written one statement per table (`json_each`), whatever their number. The stock check
//! constraints (`0 <= reserved <= on_hand`) are the last line of defence behind the [`Ledger`].

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use minizon_common::db::SqlitePools;
use sqlx::{Row, Sqlite, Transaction, sqlite::SqliteRow};
use tokio::sync::Notify;

use super::{
    after_commit::AfterCommit,
    decode::{
        corrupt, stored_level, stored_lines, stored_order_id, stored_reservation, stored_status, stored_transition,
        stored_user,
    },
    records::{EventRows, Traced},
    stock_cache::StockCache,
};
use crate::domain::{
    Command, CreateOrder, CreateOutcome, Ledger, LomsError, Order, OrderId, OrderLines, OrderState, OrderStore,
    RecordedTransition, RefundState, Reservation, Sku, StockLevel, StockStore, WarehouseId, decide,
};

type Tx = Transaction<'static, Sqlite>;

/// Most orders one sweep transaction cancels on SQLite. The sweep holds the one writer for its transaction, so a
/// short one lets requests' writes in between (500 at once made CreateOrder wait over a second:
/// docs/benchmarks-history.md).
const SWEEP_CHUNK: u32 = 50;

mod batch;
mod command_batch;

/// LOMS storage on an SQLite file (or in memory).
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pools: SqlitePools,
    /// Wakes this process's relay and drops changed skus from the Stocks cache.
    after_commit: AfterCommit,
}

fn millis(at: DateTime<Utc>) -> i64 {
    at.timestamp_millis()
}

impl SqliteStore {
    /// Opens (creating if missing) and migrates the database.
    pub async fn connect(url: &str, stock_cache: StockCache) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        let pools = minizon_common::db::connect_sqlite(url, 4).await.context("open the LOMS SQLite database")?;
        sqlx::migrate!("../migrations/loms/sqlite")
            .run(&mut pools.writer.acquire().await?)
            .await
            .context("migrate the LOMS database")?;
        Ok(Self { pools, after_commit: AfterCommit::new(stock_cache) })
    }

    /// Signalled after every commit that wrote outbox events (a permit is kept if the relay is busy).
    pub fn outbox_written(&self) -> Arc<Notify> {
        self.after_commit.outbox_written()
    }

    /// The Stocks cache this store keeps exact for its own writes.
    pub fn stock_cache(&self) -> &StockCache {
        &self.after_commit.stock
    }

    /// The pools, for the parts of LOMS that run their own queries (health, outbox relay).
    pub fn pools(&self) -> &SqlitePools {
        &self.pools
    }

    async fn write(&self) -> Result<Tx, LomsError> {
        Ok(self.pools.write().await?)
    }

    /// One CreateOrder: a batch of one ([`batch`]), so both paths share one set of statements.
    async fn try_create(&self, request: &CreateOrder) -> Result<CreateOutcome, LomsError> {
        use super::batch::CreateBatch as _;
        let calls = std::slice::from_ref(request);
        self.try_create_batch(calls)
            .await?
            .pop()
            .unwrap_or_else(|| Err(LomsError::Internal("a batch of one went unanswered".into())))
    }

    /// Runs one command on one order: decide on the order as stored, settle its stock, write (its events in the
    /// trace `traceparent` names).
    async fn try_command(&self, id: OrderId, command: &Command, traceparent: Option<&str>) -> Result<(), LomsError> {
        let mut tx = self.write().await?;
        // A refusal drops `tx`, rolling back (nothing was written).
        let Some(written) = command_in(&mut tx, id, command, traceparent).await? else {
            return Ok(());
        };
        self.after_commit.commit(tx, written.skus).await?;
        written.reply
    }

    async fn try_cancel_overdue(&self, limit: u32) -> Result<Vec<OrderId>, LomsError> {
        let mut tx = self.write().await?;
        let now = Utc::now();
        let due: Vec<i64> = sqlx::query_scalar(
            "select id from orders where status = 1 and payment_deadline <= ?1 order by payment_deadline limit ?2",
        )
        .bind(millis(now))
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await?;
        let ids = due.into_iter().map(stored_order_id).collect::<Result<Vec<_>, _>>()?;
        let mut orders = Vec::with_capacity(ids.len());
        for order in load_orders(&mut tx, &ids, now).await? {
            if let Some(plan) = decide(&order, &Command::Timeout)? {
                orders.push((order, plan));
            }
        }
        if orders.is_empty() {
            tx.rollback().await?;
            return Ok(Vec::new());
        }
        let traceparent = minizon_common::telemetry::current_traceparent();
        let batch: Vec<Traced<'_>> = orders.iter().map(|(order, plan)| (order, plan, traceparent.as_deref())).collect();
        let ledger = settle(&mut tx, &batch).await?;
        write_plans(&mut tx, &batch, &ledger, now).await?;
        let skus = orders.iter().flat_map(|(order, _)| order.lines.iter().map(|(sku, _)| sku));
        self.after_commit.commit(tx, skus).await?;
        Ok(orders.iter().map(|(order, _)| order.id).collect())
    }

    async fn load_available_stock(&self, sku: Sku) -> Result<Vec<(WarehouseId, u64)>, LomsError> {
        let rows: Vec<(i64, i64)> = sqlx::query_as(
            "select warehouse_id, on_hand - reserved from stocks
             where sku = ?1 and on_hand > reserved order by warehouse_id",
        )
        .bind(i64::from(sku.get()))
        .fetch_all(&mut *self.pools.reader.acquire().await?)
        .await?;
        rows.into_iter()
            .map(|(warehouse, available)| {
                Ok((WarehouseId::try_from(warehouse).map_err(corrupt)?, u64::try_from(available).map_err(corrupt)?))
            })
            .collect()
    }

    /// An operator's stock change: read the rows of `levels` (those that exist) in the write transaction, let
    /// `change` decide on a ledger over them, write the levels it changed.
    async fn change_stock<T>(
        &self,
        levels: &[(WarehouseId, Sku, u64)],
        change: impl FnOnce(&mut Ledger) -> Result<T, LomsError>,
    ) -> Result<T, LomsError> {
        let mut tx = self.write().await?;
        let pairs: Vec<(i64, u32)> = levels.iter().map(|(warehouse, sku, _)| (warehouse.get(), sku.get())).collect();
        let rows = sqlx::query(
            "select s.warehouse_id, s.sku, s.on_hand, s.reserved
             from (select json_extract(value, '$[0]') as warehouse_id, json_extract(value, '$[1]') as sku
                   from json_each(?1)) as n
             join stocks s on s.sku = n.sku and s.warehouse_id = n.warehouse_id",
        )
        .bind(json(&pairs)?)
        .fetch_all(&mut *tx)
        .await?;
        let mut ledger = Ledger::new(rows.iter().map(stock_level).collect::<Result<Vec<_>, _>>()?);
        let answer = change(&mut ledger)?;
        // The ledger keeps every level within 0..=i64::MAX.
        let changed: Vec<(i64, u32, i64)> = ledger
            .changed()
            .iter()
            .map(|level| (level.warehouse.get(), level.sku.get(), level.on_hand as i64))
            .collect();
        sqlx::query(
            "insert into stocks (warehouse_id, sku, on_hand)
             select json_extract(value, '$[0]'), json_extract(value, '$[1]'), json_extract(value, '$[2]')
             from json_each(?1) where true
             on conflict (sku, warehouse_id) do update set on_hand = excluded.on_hand",
        )
        .bind(json(&changed)?)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(answer)
    }
}

/// What a command wrote inside a write transaction.
struct Written {
    /// The caller's answer once the transaction commits (a late payment is written, then refused).
    reply: Result<(), LomsError>,
    /// The skus whose stock it changed.
    skus: Vec<Sku>,
}

/// A command on one order inside the write transaction `tx`: decide on the order as stored, settle its stock,
/// write (its events in the trace `traceparent` names). `Ok(None)`: nothing to change. `Err`: refused (an unknown
/// order, a forbidden step, a short change) or failed; what it may have written must not be committed.
async fn command_in(
    tx: &mut Tx,
    id: OrderId,
    command: &Command,
    traceparent: Option<&str>,
) -> Result<Option<Written>, LomsError> {
    let now = Utc::now();
    let order = load_orders(tx, &[id], now).await?.pop().ok_or(LomsError::OrderNotFound(id))?;
    let Some(plan) = decide(&order, command)? else {
        return Ok(None);
    };
    if let Some(new_lines) = &plan.new_lines {
        let both = order.lines.iter().chain(new_lines.iter()).map(|(sku, _)| sku).collect::<Vec<_>>();
        let mut ledger = Ledger::new(stock_of_skus(tx, both.iter().copied()).await?);
        let held: Vec<(i64, i64, i64)> =
            sqlx::query_as("select sku, warehouse_id, count from reservations where order_id = ?1")
                .bind(id.get())
                .fetch_all(&mut **tx)
                .await?;
        let held = held
            .into_iter()
            .map(|(sku, warehouse, count)| stored_reservation(sku, warehouse, count))
            .collect::<Result<Vec<_>, _>>()?;
        let reservations = plan.apply_stock(&order, &held, &mut ledger)?.unwrap_or_default();
        for table in ["order_items", "reservations"] {
            sqlx::query(&format!("delete from {table} where order_id = ?1")).bind(id.get()).execute(&mut **tx).await?;
        }
        write_items(tx, [(id, new_lines)]).await?;
        write_reservations(tx, [(id, reservations.as_slice())]).await?;
        write_plans(tx, &[(&order, &plan, traceparent)], &ledger, now).await?;
        return Ok(Some(Written { reply: plan.reply, skus: both }));
    }
    let decided = [(&order, &plan, traceparent)];
    let ledger = settle(tx, &decided).await?;
    write_plans(tx, &decided, &ledger, now).await?;
    Ok(Some(Written { reply: plan.reply, skus: order.lines.iter().map(|(sku, _)| sku).collect() }))
}

/// The orders `ids` as [`decide`] sees them, with their items (unknown ids are left out): two statements.
async fn load_orders(tx: &mut Tx, ids: &[OrderId], now: DateTime<Utc>) -> Result<Vec<OrderState>, LomsError> {
    let ids = json(&ids.iter().map(|id| id.get()).collect::<Vec<_>>())?;
    let heads: Vec<(i64, i64, i64, Option<i64>, i16)> = sqlx::query_as(
        "select id, user_id, status, payment_deadline, refund_state from orders where id in (select value from json_each(?1))
         order by id",
    )
    .bind(&ids)
    .fetch_all(&mut **tx)
    .await?;
    let items: Vec<(i64, i64, i64)> = sqlx::query_as(
        "select order_id, sku, count from order_items where order_id in (select value from json_each(?1))
         order by order_id, sku",
    )
    .bind(&ids)
    .fetch_all(&mut **tx)
    .await?;
    heads
        .into_iter()
        .map(|(id, user, status, deadline, refund)| {
            let lines = items.iter().filter(|(order, ..)| *order == id).map(|(_, sku, count)| (*sku, *count));
            Ok(OrderState {
                id: stored_order_id(id)?,
                user: stored_user(user)?,
                status: stored_status(status)?,
                lines: stored_lines(lines)?,
                overdue: deadline.is_some_and(|deadline| deadline <= millis(now)),
                refund: RefundState::from_code(refund)
                    .ok_or_else(|| corrupt(format!("unknown refund state {refund}")))?,
            })
        })
        .collect()
}

/// Levels of every warehouse's stock of `skus` (each row once, whatever the repeats).
async fn stock_of_skus(tx: &mut Tx, skus: impl IntoIterator<Item = Sku>) -> Result<Vec<StockLevel>, LomsError> {
    let skus = json(&skus.into_iter().map(Sku::get).collect::<Vec<_>>())?;
    sqlx::query(
        "select warehouse_id, sku, on_hand, reserved from stocks
         where sku in (select value from json_each(?1)) order by sku, warehouse_id",
    )
    .bind(skus)
    .fetch_all(&mut **tx)
    .await?
    .iter()
    .map(stock_level)
    .collect()
}

/// Reads the stored reservations of the batch's orders with the levels of their rows, and settles each order's
/// the way its plan says, on one ledger.
async fn settle(tx: &mut Tx, batch: &[Traced<'_>]) -> Result<Ledger, LomsError> {
    let settling: Vec<i64> =
        batch.iter().filter(|(_, plan, _)| plan.settlement.is_some()).map(|(order, ..)| order.id.get()).collect();
    if settling.is_empty() {
        return Ok(Ledger::default());
    }
    let rows: Vec<(i64, i64, i64, i64, i64, i64)> = sqlx::query_as(
        "select r.order_id, r.sku, r.warehouse_id, r.count, s.on_hand, s.reserved
         from reservations r join stocks s on s.sku = r.sku and s.warehouse_id = r.warehouse_id
         where r.order_id in (select value from json_each(?1))
         order by s.sku, s.warehouse_id",
    )
    .bind(json(&settling)?)
    .fetch_all(&mut **tx)
    .await?;
    let mut held = Vec::with_capacity(rows.len());
    let mut levels = Vec::with_capacity(rows.len());
    for (order_id, sku, warehouse, count, on_hand, reserved) in rows {
        held.push((order_id, stored_reservation(sku, warehouse, count)?));
        levels.push(stored_level(warehouse, sku, on_hand, reserved)?);
    }
    let mut ledger = Ledger::new(levels);
    for (order, plan, _) in batch {
        let of_order: Vec<Reservation> = held.iter().filter(|(id, _)| *id == order.id.get()).map(|(_, r)| *r).collect();
        plan.apply_stock(order, &of_order, &mut ledger)?;
    }
    Ok(ledger)
}

/// Writes the plans of the batch's orders: the ledger's stock deltas, each order's new status (a deadline only
/// while awaiting payment), history and events.
async fn write_plans(tx: &mut Tx, batch: &[Traced<'_>], ledger: &Ledger, now: DateTime<Utc>) -> Result<(), LomsError> {
    apply_deltas(tx, ledger).await?;
    let statuses: Vec<(i64, i16, i16)> =
        batch.iter().map(|(order, plan, _)| (order.id.get(), plan.status.code(), plan.refund.code())).collect();
    sqlx::query(
        "update orders set status = u.status, refund_state = u.refund_state, updated_at = ?2,
                payment_deadline = case when u.status = 1 then orders.payment_deadline end
         from (select json_extract(value, '$[0]') as id, json_extract(value, '$[1]') as status,
                      json_extract(value, '$[2]') as refund_state from json_each(?1)) as u
         where orders.id = u.id",
    )
    .bind(json(&statuses)?)
    .bind(millis(now))
    .execute(&mut **tx)
    .await?;
    record(tx, EventRows::of_plans(batch, now)).await
}

/// Orders' items, one statement whatever their number.
async fn write_items<'a>(
    tx: &mut Tx,
    orders: impl IntoIterator<Item = (OrderId, &'a OrderLines)>,
) -> Result<(), LomsError> {
    let items: Vec<(i64, u32, u32)> = orders
        .into_iter()
        .flat_map(|(order_id, lines)| lines.iter().map(move |(sku, count)| (order_id.get(), sku.get(), count.get())))
        .collect();
    sqlx::query(
        "insert into order_items (order_id, sku, count)
         select json_extract(value, '$[0]'), json_extract(value, '$[1]'), json_extract(value, '$[2]')
         from json_each(?1)",
    )
    .bind(json(&items)?)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Orders' reservations, one statement whatever their number (the ledger holds the matching stock deltas).
async fn write_reservations<'a>(
    tx: &mut Tx,
    orders: impl IntoIterator<Item = (OrderId, &'a [Reservation])>,
) -> Result<(), LomsError> {
    let rows: Vec<(i64, u32, i64, u64)> = orders
        .into_iter()
        .flat_map(|(order_id, held)| {
            held.iter().map(move |r| (order_id.get(), r.sku.get(), r.warehouse.get(), r.count))
        })
        .collect();
    if rows.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "insert into reservations (order_id, sku, warehouse_id, count)
         select json_extract(value, '$[0]'), json_extract(value, '$[1]'), json_extract(value, '$[2]'),
                json_extract(value, '$[3]')
         from json_each(?1)",
    )
    .bind(json(&rows)?)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Applies the ledger's deltas to their stock rows, one statement (one delta per row, so none is matched twice).
async fn apply_deltas(tx: &mut Tx, ledger: &Ledger) -> Result<(), LomsError> {
    let deltas: Vec<(u32, i64, i64, i64)> =
        ledger.deltas().iter().map(|d| (d.sku.get(), d.warehouse.get(), d.on_hand, d.reserved)).collect();
    if deltas.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "update stocks set on_hand = stocks.on_hand + d.on_hand, reserved = stocks.reserved + d.reserved
         from (select json_extract(value, '$[0]') as sku, json_extract(value, '$[1]') as warehouse_id,
                      json_extract(value, '$[2]') as on_hand, json_extract(value, '$[3]') as reserved
               from json_each(?1)) as d
         where stocks.sku = d.sku and stocks.warehouse_id = d.warehouse_id",
    )
    .bind(json(&deltas)?)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Rows as a JSON array of arrays, for `json_each`.
fn json(rows: &impl serde::Serialize) -> Result<String, LomsError> {
    serde_json::to_string(rows).map_err(corrupt)
}

/// Appends the rows' steps to the history and their events to the outbox: two statements.
async fn record(tx: &mut Tx, rows: EventRows) -> Result<(), LomsError> {
    let at = millis(rows.at);
    let history: Vec<_> = rows
        .order_ids
        .iter()
        .zip(&rows.from)
        .zip(&rows.to)
        .zip(&rows.reasons)
        .zip(&rows.details)
        .map(|((((order_id, from), to), reason), detail)| (order_id, from, to, reason, detail))
        .collect();
    sqlx::query(
        "insert into order_status_history (order_id, from_status, to_status, reason, detail, at)
         select json_extract(value, '$[0]'), json_extract(value, '$[1]'), json_extract(value, '$[2]'),
                json_extract(value, '$[3]'), json_extract(value, '$[4]'), ?2
         from json_each(?1) order by key",
    )
    .bind(json(&history)?)
    .bind(at)
    .execute(&mut **tx)
    .await?;
    let events: Vec<_> = rows
        .event_ids
        .iter()
        .map(uuid::Uuid::to_string)
        .zip(&rows.order_ids)
        .zip(&rows.payloads)
        .zip(&rows.traceparents)
        .map(|(((event_id, order_id), payload), traceparent)| (event_id, order_id, payload, traceparent))
        .collect();
    sqlx::query(
        "insert into outbox (event_id, order_id, payload, traceparent, created_at)
         select json_extract(value, '$[0]'), json_extract(value, '$[1]'), json_extract(value, '$[2]'),
                json_extract(value, '$[3]'), ?2
         from json_each(?1) order by key",
    )
    .bind(json(&events)?)
    .bind(at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

fn stock_level(row: &SqliteRow) -> Result<StockLevel, LomsError> {
    stored_level(row.get("warehouse_id"), row.get("sku"), row.get("on_hand"), row.get("reserved"))
}

#[async_trait]
impl OrderStore for SqliteStore {
    async fn create_order(&self, order: CreateOrder) -> Result<CreateOutcome, LomsError> {
        self.try_create(&order).await
    }

    async fn order(&self, id: OrderId) -> Result<Order, LomsError> {
        let mut conn = self.pools.reader.acquire().await?;
        let head: Option<(i64, i64)> = sqlx::query_as("select user_id, status from orders where id = ?1")
            .bind(id.get())
            .fetch_optional(&mut *conn)
            .await?;
        let (user, status) = head.ok_or(LomsError::OrderNotFound(id))?;
        let rows: Vec<(i64, i64)> =
            sqlx::query_as("select sku, count from order_items where order_id = ?1 order by sku")
                .bind(id.get())
                .fetch_all(&mut *conn)
                .await?;
        Ok(Order { id, user: stored_user(user)?, status: stored_status(status)?, lines: stored_lines(rows)? })
    }

    async fn history(&self, id: OrderId) -> Result<Vec<RecordedTransition>, LomsError> {
        let rows: Vec<(Option<i64>, i64, i64, String, i64)> = sqlx::query_as(
            "select from_status, to_status, reason, detail, at from order_status_history where order_id = ?1 order by id",
        )
        .bind(id.get())
        .fetch_all(&mut *self.pools.reader.acquire().await?)
        .await?;
        if rows.is_empty() {
            return Err(LomsError::OrderNotFound(id));
        }
        rows.into_iter()
            .map(|(from, to, reason, detail, at)| {
                let at = DateTime::from_timestamp_millis(at).ok_or_else(|| corrupt("history time out of range"))?;
                stored_transition(from, to, reason, detail, at)
            })
            .collect()
    }

    async fn pay(&self, id: OrderId) -> Result<(), LomsError> {
        self.run(id, Command::Pay).await
    }

    async fn cancel(&self, id: OrderId) -> Result<(), LomsError> {
        self.run(id, Command::Cancel).await
    }

    async fn run(&self, id: OrderId, command: Command) -> Result<(), LomsError> {
        self.try_command(id, &command, minizon_common::telemetry::current_traceparent().as_deref()).await
    }

    async fn cancel_overdue(&self, limit: u32) -> Result<Vec<OrderId>, LomsError> {
        self.try_cancel_overdue(limit.min(SWEEP_CHUNK)).await
    }

    async fn available_stock(&self, sku: Sku) -> Result<Vec<(WarehouseId, u64)>, LomsError> {
        self.after_commit.stock.read_through(sku, || self.load_available_stock(sku)).await
    }
}

#[async_trait]
impl StockStore for SqliteStore {
    async fn set_stock(&self, warehouse: WarehouseId, sku: Sku, on_hand: u64) -> Result<StockLevel, LomsError> {
        self.change_stock(&[(warehouse, sku, on_hand)], |ledger| ledger.set_on_hand(warehouse, sku, on_hand.into()))
            .await
    }

    async fn add_stock(&self, warehouse: WarehouseId, sku: Sku, delta: i64) -> Result<StockLevel, LomsError> {
        self.change_stock(&[(warehouse, sku, 0)], |ledger| ledger.add_on_hand(warehouse, sku, delta)).await
    }

    async fn import_stock(&self, levels: &[(WarehouseId, Sku, u64)]) -> Result<usize, LomsError> {
        self.change_stock(levels, |ledger| {
            for (warehouse, sku, on_hand) in levels {
                ledger.set_on_hand(*warehouse, *sku, (*on_hand).into())?;
            }
            Ok(levels.len())
        })
        .await
    }

    async fn stock_levels(&self, sku: Sku) -> Result<Vec<StockLevel>, LomsError> {
        let rows =
            sqlx::query("select warehouse_id, sku, on_hand, reserved from stocks where sku = ?1 order by warehouse_id")
                .bind(i64::from(sku.get()))
                .fetch_all(&mut *self.pools.reader.acquire().await?)
                .await?;
        rows.iter().map(stock_level).collect()
    }
}
