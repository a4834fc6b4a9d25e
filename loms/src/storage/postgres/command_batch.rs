//! Group commit of OrderPayed and CancelOrder on PostgreSQL: one transaction for a batch of commands on distinct
//! orders (docs/architecture.md, "Group commit"; [`crate::storage::batch::rounds`] keeps the orders distinct), on a
//! pipelining connection ([`super::pipelined`]). One statement, sent with BEGIN, locks every order of the batch in
//! id order and then every stock row they hold; [`decide`](crate::domain::decide) runs for each call on its order,
//! every plan is settled over one [`crate::domain::Ledger`] and written in one more statement ([`WRITE_PLANS`], as
//! the sweep does), sent with COMMIT: two round trips for the batch. Locks are taken in the global order — orders
//! by id, then stock rows by `(sku, warehouse_id)` — as by every other transaction, so a batch cannot deadlock with
//! another batch, a single call or the sweep.
//!
//! The calls are decided by [`DecidedCommands`]. A deadlock or serialization failure runs the batch again; any
//! other failure before COMMIT runs its calls one by one on the per-call path; a failed COMMIT answers every call
//! UNAVAILABLE.

use super::{HeldStock, PgStore, PlanColumns, WRITE_PLANS, order_state, settle};
use crate::{
    domain::{LomsError, OrderState},
    storage::{
        batch::{BatchKind, CommandAnswer, CommandBatch, CommandCall},
        command_batches::{DecidedCommands, distinct_orders},
        decode::{stored_level, stored_order_id, stored_reservation},
    },
};

#[async_trait::async_trait]
impl CommandBatch for PgStore {
    async fn try_command_batch(&self, calls: &[CommandCall]) -> Result<Vec<CommandAnswer>, LomsError> {
        Self::with_retry(|| self.attempt_command_batch(calls)).await
    }

    async fn command_alone(&self, call: &CommandCall) -> CommandAnswer {
        Self::with_retry(|| self.try_command(call.order, &call.command, call.traceparent.as_deref())).await
    }
}

impl PgStore {
    /// One attempt at the batch. `Err` only when nothing was committed; a failed COMMIT (whose outcome is unknown)
    /// answers every call with the failure instead, so no call is run twice.
    async fn attempt_command_batch(&self, calls: &[CommandCall]) -> Result<Vec<CommandAnswer>, LomsError> {
        let ids: Vec<i64> = distinct_orders(calls)?.iter().map(|id| id.get()).collect();
        let (tx, rows) = self.pipelined.begin_with(LOCK_ORDERS_AND_THEIR_STOCK, &[&ids]).await?;
        let (orders, stock) = orders_and_their_stock(&rows)?;
        let decided = DecidedCommands::decide(calls, orders)?;
        if decided.writes_nothing() {
            tx.rollback().await?;
            return Ok(decided.answers());
        }
        let plans = decided.plans();
        let ledger = settle(&plans, stock)?;
        let columns = PlanColumns::of(&plans, &ledger);
        let committed = tx.write_and_commit(WRITE_PLANS, &columns.params()).await;
        // The rows it locked, as it left them, refresh the known levels: after a cancellation too, the next batch of
        // new orders on its skus goes in one flight.
        self.batch_ended(committed, BatchKind::Command, calls.len(), (&ledger, &[]), || decided.answers())
    }
}

/// Locks the existing orders among `$1` in id order, then every stock row they hold in the global order, and reads
/// both: one statement. It locks the held rows of every order, not only of those whose plans will settle (which are
/// decided after it): a step that moves no stock holds its rows a little longer, and the batch saves a round trip.
/// The stock rows' sort consumes every order row first, so no stock row is locked before the last order.
const LOCK_ORDERS_AND_THEIR_STOCK: &str = "with locked_orders as materialized (
         select id, user_id, status, coalesce(payment_deadline <= now(), false) as overdue, refund_state,
                item_skus, item_counts, held_skus, held_warehouses, held_counts
         from orders where id = any($1) order by id for update
     ), locked_stock as materialized (
         select s.sku, s.warehouse_id, s.on_hand, s.reserved from stocks s
         where (s.sku, s.warehouse_id) in (
             select h.sku, h.warehouse_id
             from locked_orders o cross join lateral unnest(o.held_skus, o.held_warehouses) as h(sku, warehouse_id))
         order by s.sku, s.warehouse_id
         for update of s
     )
     select o.*, l.skus, l.warehouses, l.on_hands, l.reserveds
     from locked_orders o cross join (
         select array_agg(sku order by sku, warehouse_id) as skus,
                array_agg(warehouse_id order by sku, warehouse_id) as warehouses,
                array_agg(on_hand order by sku, warehouse_id) as on_hands,
                array_agg(reserved order by sku, warehouse_id) as reserveds
         from locked_stock
     ) l
     order by o.id";

/// The orders of [`LOCK_ORDERS_AND_THEIR_STOCK`]'s rows, and what they hold with the levels of its stock rows.
fn orders_and_their_stock(rows: &[tokio_postgres::Row]) -> Result<(Vec<OrderState>, HeldStock), LomsError> {
    let mut orders = Vec::with_capacity(rows.len());
    let mut stock = HeldStock::default();
    for row in rows {
        let id = stored_order_id(row.try_get("id")?)?;
        let (skus, warehouses, counts): (Vec<i64>, Vec<i64>, Vec<i64>) =
            (row.try_get("held_skus")?, row.try_get("held_warehouses")?, row.try_get("held_counts")?);
        for ((sku, warehouse), count) in skus.into_iter().zip(warehouses).zip(counts) {
            stock.held.push((id, stored_reservation(sku, warehouse, count)?));
        }
        orders.push(order_state(
            row.try_get("id")?,
            row.try_get("user_id")?,
            row.try_get("status")?,
            row.try_get("overdue")?,
            row.try_get("refund_state")?,
            row.try_get("item_skus")?,
            row.try_get("item_counts")?,
        )?);
    }
    if let Some(row) = rows.first() {
        // The same aggregates on every row; null when the orders hold nothing.
        let column = |name: &str| -> Result<Vec<i64>, LomsError> {
            Ok(row.try_get::<_, Option<Vec<i64>>>(name)?.unwrap_or_default())
        };
        let (skus, warehouses) = (column("skus")?, column("warehouses")?);
        let (on_hands, reserveds) = (column("on_hands")?, column("reserveds")?);
        for (((sku, warehouse), on_hand), reserved) in skus.into_iter().zip(warehouses).zip(on_hands).zip(reserveds) {
            stock.levels.push(stored_level(warehouse, sku, on_hand, reserved)?);
        }
    }
    Ok((orders, stock))
}
