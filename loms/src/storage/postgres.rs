//! LOMS on PostgreSQL. This module loads and locks, calls the deciders of [`crate::domain`], and writes what they
//! decided; it decides nothing itself.
//!
//! Concurrency design: every transaction locks rows in one global order — an existing order's row first, then
//! stock rows by `(sku, warehouse_id)` — so concurrent orders, payments, cancellations and the sweep cannot
//! deadlock. A new order locks only stock rows: its own row is invisible to everyone else until it commits (a
//! call with the same idempotency key waits on the unique index, after it has taken all of its own locks). Every
//! stock change is decided by a [`Ledger`] over the locked rows; the stock check constraints (`0 <= reserved <=
//! on_hand`) are the last line of defence behind it.
//!
//! Round trips (counted in docs/benchmarks.md): CreateOrder is 4 (BEGIN, lock, one statement that writes everything,
//! COMMIT); OrderPayed, CancelOrder and a sweep batch are 5 (one more lock step). Batched (group commit), those
//! counts are per batch of calls, not per call: `batch` (CreateOrder) and `command_batch` (OrderPayed, CancelOrder).

use std::{collections::HashMap, sync::Arc, time::Duration};

use tokio::sync::Notify;

use async_trait::async_trait;
use backon::{ExponentialBuilder, Retryable};
use chrono::{DateTime, Utc};
use minizon_common::db::PgPool;
use sqlx::{Postgres, Row, Transaction, postgres::PgRow};

use super::{
    after_commit::AfterCommit,
    batch::{BatchKind, commit_failed},
    decode::{
        corrupt, stored_level, stored_lines, stored_order_id, stored_reservation, stored_status, stored_transition,
        stored_user,
    },
    records::{EventRows, Traced},
    stock_cache::StockCache,
};
use crate::domain::{
    Command, CreateOrder, CreateOutcome, IdempotencyKey, Ledger, LomsError, Order, OrderId, OrderLines, OrderState,
    OrderStore, Placement, RecordedTransition, RefundState, Reservation, Sku, StockDelta, StockLevel, StockStore,
    UserId, WarehouseId, decide, place,
};

type Tx = Transaction<'static, Postgres>;

/// The common table expressions that append steps to the history and their events to the outbox, from the arrays
/// [`bind_events`] binds as `$1`–`$9`. Every order write ends with them, in its one last statement.
macro_rules! record_ctes {
    () => {
        "history as (
             insert into order_status_history (order_id, from_status, to_status, reason, detail, at)
             select order_id, from_status, to_status, reason, detail, $9
             from unnest($1::bigint[], $2::smallint[], $3::smallint[], $4::smallint[], $5::text[])
                  with ordinality as t(order_id, from_status, to_status, reason, detail, n)
             order by n
         ), events as (
             insert into outbox (event_id, order_id, payload, traceparent, created_at)
             select event_id, order_id, payload, traceparent, $9
             from unnest($6::uuid[], $1::bigint[], $7::text[], $8::text[])
                  with ordinality as e(event_id, order_id, payload, traceparent, n)
             order by n
         )"
    };
}

/// The common table expression that applies a [`Ledger`]'s deltas to the (already locked) stock rows, from the
/// arrays [`bind_deltas`] binds as `$10`–`$13`; `stock_cte!(" and …")` adds a condition on every row it writes.
macro_rules! stock_cte {
    () => {
        stock_cte!("")
    };
    ($also:literal) => {
        concat!(
            "stock as (
             update stocks s set on_hand = s.on_hand + d.on_hand, reserved = s.reserved + d.reserved
             from unnest($10::bigint[], $11::bigint[], $12::bigint[], $13::bigint[])
                  as d(sku, warehouse_id, on_hand, reserved)
             where s.sku = d.sku and s.warehouse_id = d.warehouse_id",
            $also,
            "
         )"
        )
    };
}

// After the macros above, which they use.
mod batch;
mod command_batch;
mod order_ids;
mod pipelined;

use pipelined::Param;

/// LOMS storage on a PostgreSQL pool.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    /// The write batches' connections, which pipeline.
    pipelined: pipelined::Pipelined,
    /// Wakes this process's relay and drops changed skus from the Stocks cache and the known levels.
    after_commit: AfterCommit,
    /// Whether a batch of new orders may be decided on the known levels and written in one flight.
    one_flight: bool,
    /// Ids for the batches written in one flight.
    order_ids: Arc<order_ids::OrderIds>,
}

impl PgStore {
    /// Creates the database if it does not exist, connects, and applies migrations. `batches_in_flight` is how
    /// many write batches may run at once (their connections are opened on demand, next to the pool's);
    /// `one_flight` lets a batch of new orders be decided on the levels the batch before it committed and be
    /// written in one flight, which only pays with one batch of new orders in flight at a time (a second one would
    /// be decided before the first one's levels are known, and find its rows changed).
    pub async fn connect(
        url: &str,
        max_connections: u32,
        batches_in_flight: usize,
        one_flight: bool,
        stock_cache: StockCache,
    ) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        minizon_common::db::ensure_postgres_database(url).await.context("create the LOMS database")?;
        let pool =
            minizon_common::db::connect_postgres(url, max_connections).await.context("connect to the LOMS database")?;
        sqlx::migrate!("../migrations/loms/postgres")
            .run(&mut pool.acquire().await?)
            .await
            .context("migrate the LOMS database")?;
        let pipelined = pipelined::Pipelined::new(url, batches_in_flight).context("the write batches' connections")?;
        Ok(Self { pool, pipelined, after_commit: AfterCommit::new(stock_cache), one_flight, order_ids: Arc::default() })
    }

    /// Signalled after every commit that wrote outbox events (a permit is kept if the relay is busy).
    pub fn outbox_written(&self) -> Arc<Notify> {
        self.after_commit.outbox_written()
    }

    /// The Stocks cache this store keeps exact for its own writes.
    pub fn stock_cache(&self) -> &StockCache {
        &self.after_commit.stock
    }

    /// The pool, for the parts of LOMS that run their own queries (health, outbox relay).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Closes every connection, the write batches' too.
    pub async fn close(&self) {
        self.pipelined.close();
        self.pool.close().await;
    }

    /// The answers of a write batch whose write went out with its COMMIT ([`pipelined::Transaction::write_and_commit`])
    /// and ended `committed`, the batch of `calls` calls having settled its stock over `ledger` (the rows it locked
    /// or knew; every row of the skus of `whole`): `answers` once committed; `Err` (nothing written: the batch may
    /// run again, or call by call) when PostgreSQL refused the write; every call answered UNAVAILABLE when the
    /// outcome is unknown, so that none is run twice. What this process keeps of the stock follows the ledger
    /// ([`AfterCommit::after_ledger`]).
    fn batch_ended<T>(
        &self,
        committed: pipelined::Committed,
        kind: BatchKind,
        calls: usize,
        (ledger, whole): (&Ledger, &[Sku]),
        answers: impl FnOnce() -> Vec<Result<T, LomsError>>,
    ) -> Result<Vec<Result<T, LomsError>>, LomsError> {
        match committed {
            pipelined::Committed::Yes => {
                self.after_commit.after_ledger(ledger, whole, true);
                Ok(answers())
            }
            pipelined::Committed::No(error) | pipelined::Committed::Duplicate(_, error) => Err(error),
            pipelined::Committed::Unknown(error) => {
                self.after_commit.after_ledger(ledger, whole, false);
                Ok(commit_failed(kind, calls, &error))
            }
        }
    }

    /// Runs `attempt` again when PostgreSQL aborted it for a deadlock or serialization conflict.
    async fn with_retry<T, F, Fut>(attempt: F) -> Result<T, LomsError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, LomsError>>,
    {
        attempt
            .retry(ExponentialBuilder::default().with_min_delay(Duration::from_millis(5)).with_max_times(4))
            .when(LomsError::is_contention)
            .await
    }

    async fn try_create(&self, request: &CreateOrder) -> Result<CreateOutcome, LomsError> {
        let mut tx = self.pool.begin().await?;
        let skus: Vec<i64> = request.lines.iter().map(|(sku, _)| i64::from(sku.get())).collect();
        // The batch's statement with a batch of one: one id, the call's stock rows locked in the global order.
        let (ids, stock) = batch::lock_stock_for_new_orders(&mut tx, &skus, 1).await?;
        let order_id = ids[0];
        let mut ledger = Ledger::new(stock);
        let placement = place(order_id, request, &mut ledger);
        match write_new_order(&mut tx, order_id, request, &placement, &ledger.deltas()).await {
            // A concurrent call with the same key waited on the unique index until the first one ended: its
            // statement wrote nothing, and the first call's result is the answer.
            Err(error) if conflicts_on_idempotency_key(&error) => {
                tx.rollback().await?;
                let idempotency = request.idempotency.as_ref().expect("only a keyed insert can conflict");
                return self.replay(request.user, idempotency).await;
            }
            written => written?,
        }
        self.after_commit.commit_ledger(tx, &ledger).await?;
        placement.reply
    }

    /// The first call's result for a (user, key) pair.
    async fn replay(&self, user: UserId, idempotency: &IdempotencyKey) -> Result<CreateOutcome, LomsError> {
        let row = sqlx::query(
            "select o.id, o.status, o.request_hash,
                    (select detail from order_status_history h where h.order_id = o.id order by h.id desc limit 1) as detail
             from orders o where o.user_id = $1 and o.idempotency_key = $2",
        )
        .bind(user.get())
        .bind(&idempotency.key)
        .fetch_optional(&mut *self.pool.acquire().await?)
        .await?
        .ok_or_else(|| corrupt("an idempotency key conflicted but its order is gone"))?;
        idempotency.replay(
            row.get::<Option<String>, _>("request_hash").as_deref(),
            stored_order_id(row.get("id"))?,
            stored_status(row.get::<i16, _>("status").into())?,
            row.get::<Option<String>, _>("detail").unwrap_or_default(),
        )
    }

    /// Runs one command on one order: lock it, decide, lock the stock the decision touches, write (its events in
    /// the trace `traceparent` names).
    async fn try_command(&self, id: OrderId, command: &Command, traceparent: Option<&str>) -> Result<(), LomsError> {
        let mut tx = self.pool.begin().await?;
        let order = lock_order(&mut tx, id).await?;
        let Some(plan) = decide(&order, command)? else {
            return Ok(());
        };
        if let Some(new_lines) = &plan.new_lines {
            let skus: Vec<i64> =
                order.lines.iter().chain(new_lines.iter()).map(|(sku, _)| i64::from(sku.get())).collect();
            let (held, levels) = lock_stock_of_skus(&mut tx, id, &skus).await?;
            let mut ledger = Ledger::new(levels);
            let reservations = plan.apply_stock(&order, &held, &mut ledger)?.unwrap_or_default();
            write_change(&mut tx, (&order, &plan, traceparent), &ledger, new_lines, &reservations).await?;
            self.after_commit.commit_ledger(tx, &ledger).await?;
            return plan.reply;
        }
        let ledger = settle_and_write(&mut tx, &[(&order, &plan, traceparent)]).await?;
        self.after_commit.commit_ledger(tx, &ledger).await?;
        plan.reply
    }

    async fn try_cancel_overdue(&self, limit: u32) -> Result<Vec<OrderId>, LomsError> {
        let mut tx = self.pool.begin().await?;
        // SKIP LOCKED: an order another replica's sweep, a payment or a cancel holds is left to that transaction.
        let due: Vec<DueRow> = sqlx::query_as(
            "with due as (
                 select id, user_id, status, item_skus, item_counts from orders
                 where status = 1 and payment_deadline <= now()
                 order by payment_deadline
                 limit $1
                 for update skip locked
             )
             select id, user_id, status, item_skus, item_counts from due",
        )
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await?;
        let mut orders = Vec::with_capacity(due.len());
        for (id, user, status, skus, counts) in due {
            let order = order_state(id, user, status, true, 0, skus, counts)?;
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
        let ledger = settle_and_write(&mut tx, &batch).await?;
        self.after_commit.commit_ledger(tx, &ledger).await?;
        Ok(orders.iter().map(|(order, _)| order.id).collect())
    }
}

/// Settles and writes the plans [`decide`] made for orders this transaction has locked: locks, in one statement
/// and in the global order, the stock rows held by the orders whose plans settle their reservations, then
/// [`write_settled`]. A command alone and the sweep end with it. A change of lines is not for it (it locks other
/// rows: [`write_change`]).
async fn settle_and_write(tx: &mut Tx, batch: &[Traced<'_>]) -> Result<Ledger, LomsError> {
    let settling: Vec<OrderId> =
        batch.iter().filter(|(_, plan, _)| plan.settlement.is_some()).map(|(order, ..)| order.id).collect();
    let held = if settling.is_empty() { HeldStock::default() } else { lock_held_stock(tx, &settling).await? };
    write_settled(tx, batch, held).await
}

/// What some locked orders hold, per order, with the levels of the stock rows it is held in (locked too).
#[derive(Debug, Default)]
struct HeldStock {
    held: Vec<(OrderId, Reservation)>,
    levels: Vec<StockLevel>,
}

/// Applies every plan over one [`Ledger`] of `stock` (which holds at least the stock of every order whose plan
/// settles), writes them all in one statement, and returns the ledger.
async fn write_settled(tx: &mut Tx, batch: &[Traced<'_>], stock: HeldStock) -> Result<Ledger, LomsError> {
    let ledger = settle(batch, stock)?;
    write_plans(tx, batch, &ledger).await?;
    Ok(ledger)
}

/// The [`Ledger`] of `stock` (which holds at least the stock of every order whose plan settles) once every plan of
/// `batch` was applied to it.
fn settle(batch: &[Traced<'_>], stock: HeldStock) -> Result<Ledger, LomsError> {
    if batch.iter().any(|(_, plan, _)| plan.new_lines.is_some()) {
        return Err(LomsError::Internal("a change of lines was to be written as a plain plan".into()));
    }
    let mut ledger = Ledger::new(stock.levels);
    let mut by_order: HashMap<OrderId, Vec<Reservation>> = HashMap::new();
    for (order_id, reservation) in stock.held {
        by_order.entry(order_id).or_default().push(reservation);
    }
    for (order, plan, _) in batch {
        plan.apply_stock(order, by_order.get(&order.id).map_or(&[], Vec::as_slice), &mut ledger)?;
    }
    Ok(ledger)
}

/// A due order as the sweep's claiming query reads it: id, user, status, item skus and counts.
type DueRow = (i64, i64, i16, Vec<i64>, Vec<i32>);

/// An order as [`decide`] sees it, from the columns the locking queries read.
fn order_state(
    id: i64,
    user: i64,
    status: i16,
    overdue: bool,
    refund: i16,
    skus: Vec<i64>,
    counts: Vec<i32>,
) -> Result<OrderState, LomsError> {
    Ok(OrderState {
        refund: RefundState::from_code(refund).ok_or_else(|| corrupt(format!("unknown refund state {refund}")))?,
        id: stored_order_id(id)?,
        user: stored_user(user)?,
        status: stored_status(status.into())?,
        lines: stored_lines(skus.into_iter().zip(counts.into_iter().map(i64::from)))?,
        overdue,
    })
}

/// Locks an existing order's row (the first lock of every transaction on it) and reads it with its items.
async fn lock_order(tx: &mut Tx, id: OrderId) -> Result<OrderState, LomsError> {
    lock_orders(tx, &[id]).await?.pop().ok_or(LomsError::OrderNotFound(id))
}

/// Locks the rows of the existing orders among `ids` in one statement, in id order (so two transactions locking
/// several orders, or one and a single order's, take them in the same order and cannot deadlock), and reads them
/// with their items, in id order; unknown ids are left out.
async fn lock_orders(tx: &mut Tx, ids: &[OrderId]) -> Result<Vec<OrderState>, LomsError> {
    let ids: Vec<i64> = ids.iter().map(|id| id.get()).collect();
    let rows = sqlx::query(
        "select o.id, o.user_id, o.status, coalesce(o.payment_deadline <= now(), false) as overdue, o.refund_state,
                o.item_skus, o.item_counts
         from orders o where o.id = any($1) order by o.id for update",
    )
    .bind(&ids)
    .fetch_all(&mut **tx)
    .await?;
    rows.iter().map(locked_order).collect()
}

/// An order as [`decide`] sees it, from a row of a locking query that reads `id`, `user_id`, `status`, `overdue`,
/// `refund_state`, `item_skus` and `item_counts`.
fn locked_order(row: &PgRow) -> Result<OrderState, LomsError> {
    order_state(
        row.get("id"),
        row.get("user_id"),
        row.get("status"),
        row.get("overdue"),
        row.get("refund_state"),
        row.get("item_skus"),
        row.get("item_counts"),
    )
}

/// Locks, in the global order, the stock rows the stored reservations of `orders` were taken from, and reads the
/// reservations (per order) with the rows' levels: one round trip.
async fn lock_held_stock(tx: &mut Tx, orders: &[OrderId]) -> Result<HeldStock, LomsError> {
    let ids: Vec<i64> = orders.iter().map(|id| id.get()).collect();
    // Lock first, in the global order: an UPDATE … FROM join would lock rows in whatever order the plan visits.
    let rows: Vec<(i64, i64, i64, i64, i64, i64)> = sqlx::query_as(
        "select r.order_id, r.sku, r.warehouse_id, r.count, s.on_hand, s.reserved
         from reservations r
         join stocks s on s.sku = r.sku and s.warehouse_id = r.warehouse_id
         where r.order_id = any($1)
         order by s.sku, s.warehouse_id
         for update of s",
    )
    .bind(&ids)
    .fetch_all(&mut **tx)
    .await?;
    let mut held = Vec::with_capacity(rows.len());
    let mut levels = Vec::with_capacity(rows.len());
    for (order_id, sku, warehouse, count, on_hand, reserved) in rows {
        held.push((stored_order_id(order_id)?, stored_reservation(sku, warehouse, count)?));
        levels.push(stored_level(warehouse, sku, on_hand, reserved)?);
    }
    Ok(HeldStock { held, levels })
}

/// Locks, in the global order, every stock row of `skus` (an order's old and new lines, for ChangeOrder), and reads
/// their levels with what the order holds in each: one round trip.
async fn lock_stock_of_skus(
    tx: &mut Tx,
    order: OrderId,
    skus: &[i64],
) -> Result<(Vec<Reservation>, Vec<StockLevel>), LomsError> {
    let rows: Vec<(i64, i64, i64, i64, Option<i64>)> = sqlx::query_as(
        "select s.warehouse_id, s.sku, s.on_hand, s.reserved, r.count
         from stocks s
         left join reservations r on r.order_id = $1 and r.sku = s.sku and r.warehouse_id = s.warehouse_id
         where s.sku = any($2)
         order by s.sku, s.warehouse_id
         for update of s",
    )
    .bind(order.get())
    .bind(skus)
    .fetch_all(&mut **tx)
    .await?;
    let mut held = Vec::new();
    let mut levels = Vec::with_capacity(rows.len());
    for (warehouse, sku, on_hand, reserved, count) in rows {
        if let Some(count) = count {
            held.push(stored_reservation(sku, warehouse, count)?);
        }
        levels.push(stored_level(warehouse, sku, on_hand, reserved)?);
    }
    Ok((held, levels))
}

/// Writes a change of lines in one statement: the new items and reservations replace the old ones in the order's row,
/// with the ledger's deltas, the history row and the event.
async fn write_change(
    tx: &mut Tx,
    decided: Traced<'_>,
    ledger: &Ledger,
    lines: &OrderLines,
    reservations: &[Reservation],
) -> Result<(), LomsError> {
    let order = decided.0;
    // The plan's lines are the new ones: its events carry them.
    let events = EventRows::of_plans(&[decided], Utc::now());
    let query = sqlx::query(concat!(
        "with ",
        record_ctes!(),
        ", ",
        stock_cte!(),
        " update orders set updated_at = now(), item_skus = $15, item_counts = $16,
                held_skus = $17, held_warehouses = $18, held_counts = $19
         where id = $14"
    ));
    bind_deltas(bind_events(query, events), &ledger.deltas())
        .bind(order.id.get())
        .bind(lines.iter().map(|(sku, _)| i64::from(sku.get())).collect::<Vec<_>>())
        .bind(lines.iter().map(|(_, count)| count.get() as i32).collect::<Vec<_>>())
        .bind(reservations.iter().map(|r| i64::from(r.sku.get())).collect::<Vec<_>>())
        .bind(reservations.iter().map(|r| r.warehouse.get()).collect::<Vec<_>>())
        .bind(reservations.iter().map(|r| r.count as i64).collect::<Vec<_>>())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Writes a new order with the batch's statement ([`batch::WRITE_NEW_ORDERS`]), as a batch of one: the order row
/// with its final status, its items and its reservations (units move from free to reserved in rows already locked
/// by [`batch::lock_stock_for_new_orders`]), its history and its events.
/// A second order with the same (user, idempotency key) makes the whole statement fail and write nothing.
async fn write_new_order(
    tx: &mut Tx,
    order_id: OrderId,
    request: &CreateOrder,
    placement: &Placement,
    deltas: &[StockDelta],
) -> Result<(), sqlx::Error> {
    let lines = &request.lines;
    let item_skus: Vec<i64> = lines.iter().map(|(sku, _)| i64::from(sku.get())).collect();
    let item_counts: Vec<i32> = lines.iter().map(|(_, count)| count.get() as i32).collect();
    let reservations = &placement.reservations;
    let skus: Vec<i64> = reservations.iter().map(|r| i64::from(r.sku.get())).collect();
    let warehouses: Vec<i64> = reservations.iter().map(|r| r.warehouse.get()).collect();
    let counts: Vec<i64> = reservations.iter().map(|r| r.count as i64).collect();
    let (key, hash) = match &request.idempotency {
        Some(idempotency) => (Some(idempotency.key.as_str()), Some(idempotency.request_hash.as_str())),
        None => (None, None),
    };
    // The order's runs are the whole arrays: at most 1,000 lines (`OrderLines::MAX_LINES`) and one hold per line
    // and warehouse, far below i32::MAX.
    let (items_to, held_to) = (item_skus.len() as i32, skus.len() as i32);
    let events = EventRows::of_requests([(order_id, request, placement.steps.as_slice())], Utc::now());
    bind_deltas(bind_events(sqlx::query(batch::WRITE_NEW_ORDERS), events), deltas)
        .bind(&item_skus)
        .bind(&item_counts)
        .bind(&skus)
        .bind(&warehouses)
        .bind(&counts)
        .bind([order_id.get()])
        .bind([request.user.get()])
        .bind([placement.status.code()])
        .bind([placement.payment_timeout.map(|timeout| timeout.as_secs_f64())])
        .bind([key])
        .bind([hash])
        .bind([1i32])
        .bind([items_to])
        .bind([1i32])
        .bind([held_to])
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Writes the plans of locked orders in one statement: the ledger's stock deltas (on rows locked with the orders),
/// each order's new status and refund state (a deadline only while awaiting payment), history and events. Its
/// parameters are [`PlanColumns`].
const WRITE_PLANS: &str = concat!(
    "with ",
    record_ctes!(),
    ", ",
    stock_cte!(),
    "update orders o set status = u.status, refund_state = u.refund_state, updated_at = now(),
            payment_deadline = case when u.status = 1 then o.payment_deadline end
     from unnest($14::bigint[], $15::smallint[], $16::smallint[]) as u(id, status, refund_state)
     where o.id = u.id"
);

/// The parameters of [`WRITE_PLANS`]: the plans' history and events, the ledger's deltas, and each order's new
/// status and refund state.
struct PlanColumns {
    events: EventRows,
    deltas: [Vec<i64>; 4],
    ids: Vec<i64>,
    statuses: Vec<i16>,
    refunds: Vec<i16>,
}

impl PlanColumns {
    fn of(batch: &[Traced<'_>], ledger: &Ledger) -> Self {
        Self {
            events: EventRows::of_plans(batch, Utc::now()),
            deltas: delta_params(&ledger.deltas()),
            ids: batch.iter().map(|(order, ..)| order.id.get()).collect(),
            statuses: batch.iter().map(|(_, plan, _)| plan.status.code()).collect(),
            refunds: batch.iter().map(|(_, plan, _)| plan.refund.code()).collect(),
        }
    }

    /// `$1`–`$16`, in order, for a pipelined statement.
    fn params(&self) -> Vec<Param<'_>> {
        let mut params = record_params(&self.events, &self.deltas);
        params.extend([&self.ids as Param<'_>, &self.statuses, &self.refunds]);
        params
    }
}

/// Writes the plans of orders this transaction has locked ([`WRITE_PLANS`]), their stock changes decided by
/// `ledger`.
async fn write_plans(tx: &mut Tx, batch: &[Traced<'_>], ledger: &Ledger) -> Result<(), LomsError> {
    let PlanColumns { events, deltas, ids, statuses, refunds } = PlanColumns::of(batch, ledger);
    bind_delta_columns(bind_events(sqlx::query(WRITE_PLANS), events), deltas)
        .bind(ids)
        .bind(statuses)
        .bind(refunds)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Whether a statement failed because another order already holds its (user, idempotency key).
fn conflicts_on_idempotency_key(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.constraint() == Some(ONE_ORDER_PER_IDEMPOTENCY_KEY))
}

/// The unique constraint that holds one order per (user, idempotency key) (migration 0001).
const ONE_ORDER_PER_IDEMPOTENCY_KEY: &str = "orders_one_per_idempotency_key";

/// Binds `$1`–`$9` of [`record_ctes`].
fn bind_events(query: PgQuery<'_>, rows: EventRows) -> PgQuery<'_> {
    query
        .bind(rows.order_ids)
        .bind(rows.from)
        .bind(rows.to)
        .bind(rows.reasons)
        .bind(rows.details)
        .bind(rows.event_ids)
        .bind(rows.payloads)
        .bind(rows.traceparents)
        .bind(rows.at)
}

/// `$1`–`$13` of a pipelined statement (tokio-postgres) that ends with [`record_ctes`] and [`stock_cte`]: the
/// history and events of `rows`, then the columns of [`delta_params`]. [`bind_events`] and [`bind_deltas`] bind
/// the same for sqlx.
fn record_params<'a>(rows: &'a EventRows, deltas: &'a [Vec<i64>; 4]) -> Vec<Param<'a>> {
    let mut params: Vec<Param<'a>> = vec![
        &rows.order_ids,
        &rows.from,
        &rows.to,
        &rows.reasons,
        &rows.details,
        &rows.event_ids,
        &rows.payloads,
        &rows.traceparents,
        &rows.at,
    ];
    params.extend(deltas.iter().map(|column| column as Param<'a>));
    params
}

/// The columns of `$10`–`$13` of [`stock_cte`]: sku, warehouse, on-hand and reserved deltas.
fn delta_params(deltas: &[StockDelta]) -> [Vec<i64>; 4] {
    [
        deltas.iter().map(|d| i64::from(d.sku.get())).collect(),
        deltas.iter().map(|d| d.warehouse.get()).collect(),
        deltas.iter().map(|d| d.on_hand).collect(),
        deltas.iter().map(|d| d.reserved).collect(),
    ]
}

/// Binds `$10`–`$13` of [`stock_cte`]; the statement's own parameters follow from `$14`.
fn bind_deltas<'q>(query: PgQuery<'q>, deltas: &[StockDelta]) -> PgQuery<'q> {
    bind_delta_columns(query, delta_params(deltas))
}

/// Binds the columns of [`delta_params`] as `$10`–`$13`.
fn bind_delta_columns(query: PgQuery<'_>, [skus, warehouses, on_hands, reserveds]: [Vec<i64>; 4]) -> PgQuery<'_> {
    query.bind(skus).bind(warehouses).bind(on_hands).bind(reserveds)
}

type PgQuery<'q> = sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>;

fn stock_level(row: &PgRow) -> Result<StockLevel, LomsError> {
    stored_level(row.get("warehouse_id"), row.get("sku"), row.get("on_hand"), row.get("reserved"))
}

#[async_trait]
impl OrderStore for PgStore {
    async fn create_order(&self, order: CreateOrder) -> Result<CreateOutcome, LomsError> {
        Self::with_retry(|| self.try_create(&order)).await
    }

    async fn order(&self, id: OrderId) -> Result<Order, LomsError> {
        let row: Option<(i64, i16, Vec<i64>, Vec<i32>)> =
            sqlx::query_as("select user_id, status, item_skus, item_counts from orders where id = $1")
                .bind(id.get())
                .fetch_optional(&mut *self.pool.acquire().await?)
                .await?;
        let (user, status, skus, counts) = row.ok_or(LomsError::OrderNotFound(id))?;
        Ok(Order {
            id,
            user: stored_user(user)?,
            status: stored_status(status.into())?,
            lines: stored_lines(skus.into_iter().zip(counts.into_iter().map(i64::from)))?,
        })
    }

    async fn history(&self, id: OrderId) -> Result<Vec<RecordedTransition>, LomsError> {
        let rows: Vec<(Option<i16>, i16, i16, String, DateTime<Utc>)> = sqlx::query_as(
            "select from_status, to_status, reason, detail, at from order_status_history where order_id = $1 order by id",
        )
        .bind(id.get())
        .fetch_all(&mut *self.pool.acquire().await?)
        .await?;
        if rows.is_empty() {
            return Err(LomsError::OrderNotFound(id));
        }
        rows.into_iter()
            .map(|(from, to, reason, detail, at)| {
                stored_transition(from.map(i64::from), i64::from(to), i64::from(reason), detail, at)
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
        let traceparent = minizon_common::telemetry::current_traceparent();
        Self::with_retry(|| self.try_command(id, &command, traceparent.as_deref())).await
    }

    async fn cancel_overdue(&self, limit: u32) -> Result<Vec<OrderId>, LomsError> {
        Self::with_retry(|| self.try_cancel_overdue(limit)).await
    }

    async fn available_stock(&self, sku: Sku) -> Result<Vec<(WarehouseId, u64)>, LomsError> {
        self.after_commit.stock.read_through(sku, || self.load_available_stock(sku)).await
    }
}

#[async_trait]
impl StockStore for PgStore {
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
            sqlx::query("select warehouse_id, sku, on_hand, reserved from stocks where sku = $1 order by warehouse_id")
                .bind(i64::from(sku.get()))
                .fetch_all(&mut *self.pool.acquire().await?)
                .await?;
        rows.iter().map(stock_level).collect()
    }
}

impl PgStore {
    async fn load_available_stock(&self, sku: Sku) -> Result<Vec<(WarehouseId, u64)>, LomsError> {
        let rows: Vec<(i64, i64)> = sqlx::query_as(
            "select warehouse_id, on_hand - reserved from stocks
             where sku = $1 and on_hand > reserved order by warehouse_id",
        )
        .bind(i64::from(sku.get()))
        .fetch_all(&mut *self.pool.acquire().await?)
        .await?;
        rows.into_iter()
            .map(|(warehouse, available)| {
                Ok((WarehouseId::try_from(warehouse).map_err(corrupt)?, u64::try_from(available).map_err(corrupt)?))
            })
            .collect()
    }

    /// An operator's stock change ([`Self::try_change_stock`], again on contention). Its skus leave the levels
    /// batches of new orders are decided on, whatever the outcome (a commit whose reply was lost may have
    /// happened).
    async fn change_stock<T>(
        &self,
        levels: &[(WarehouseId, Sku, u64)],
        change: impl Fn(&mut Ledger) -> Result<T, LomsError>,
    ) -> Result<T, LomsError> {
        let changed = Self::with_retry(|| self.try_change_stock(levels, &change)).await;
        self.after_commit.known.forget(levels.iter().map(|(_, sku, _)| *sku));
        changed
    }

    /// An operator's stock change: lock the rows of `levels` (those that exist) in the global order, let `change`
    /// decide on a ledger over them, write the levels it changed. A row created concurrently (unseen, unlocked)
    /// is caught by the check constraints and the change retried.
    async fn try_change_stock<T>(
        &self,
        levels: &[(WarehouseId, Sku, u64)],
        change: impl FnOnce(&mut Ledger) -> Result<T, LomsError>,
    ) -> Result<T, LomsError> {
        let warehouses: Vec<i64> = levels.iter().map(|(warehouse, ..)| warehouse.get()).collect();
        let skus: Vec<i64> = levels.iter().map(|(_, sku, _)| i64::from(sku.get())).collect();
        let mut tx = self.pool.begin().await?;
        let locked = sqlx::query(
            "select s.warehouse_id, s.sku, s.on_hand, s.reserved
             from stocks s join unnest($1::bigint[], $2::bigint[]) as n(warehouse_id, sku)
               on s.warehouse_id = n.warehouse_id and s.sku = n.sku
             order by s.sku, s.warehouse_id
             for update of s",
        )
        .bind(&warehouses)
        .bind(&skus)
        .fetch_all(&mut *tx)
        .await?;
        let mut ledger = Ledger::new(locked.iter().map(stock_level).collect::<Result<Vec<_>, _>>()?);
        let answer = change(&mut ledger)?;
        let changed = ledger.changed();
        let written = sqlx::query(
            "insert into stocks (warehouse_id, sku, on_hand)
             select * from unnest($1::bigint[], $2::bigint[], $3::bigint[])
             on conflict (sku, warehouse_id) do update set on_hand = excluded.on_hand",
        )
        .bind(changed.iter().map(|level| level.warehouse.get()).collect::<Vec<_>>())
        .bind(changed.iter().map(|level| i64::from(level.sku.get())).collect::<Vec<_>>())
        // The ledger keeps every level within 0..=i64::MAX.
        .bind(changed.iter().map(|level| level.on_hand as i64).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await;
        match written {
            Err(error) if violates_stock_rule(&error) => return Err(LomsError::Contention),
            written => written?,
        };
        // The Stocks cache is kept exact by the caller (`ForgetChangedStock`); no event was written.
        tx.commit().await?;
        Ok(answer)
    }
}

/// Whether a stock write was stopped by one of the stock check constraints.
fn violates_stock_rule(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db)
        if matches!(db.constraint(), Some("stocks_reserved_within_on_hand" | "stocks_on_hand_not_negative")))
}
