//! What LOMS needs from a database. Each backend (PostgreSQL, and SQLite for the embedded mode) implements these
//! traits: it loads and locks, lets the deciders of [`super::placement`], [`super::lifecycle`] and
//! [`super::stock`] decide, and writes what they decided, so the guarantees (all-or-nothing reservation, one
//! winner per order, no oversell) hold whichever backend runs.

use std::time::Duration;

use super::{
    error::LomsError,
    ids::{OrderId, Sku, UserId, WarehouseId},
    lifecycle::Command,
    order::{Order, OrderLines, OrderStatus, RecordedTransition},
    stock::StockLevel,
};
use async_trait::async_trait;

/// A client's `idempotency-key` and a fingerprint of the request it came with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey {
    pub key: String,
    pub request_hash: String,
}

impl IdempotencyKey {
    /// The answer to a repeated key, from the order the first call stored: the same result for the same request
    /// (the failure again for a failed order, whose `last_detail` names the short sku), a refusal for another.
    pub fn replay(
        &self,
        stored_hash: Option<&str>,
        order_id: OrderId,
        status: OrderStatus,
        last_detail: String,
    ) -> Result<CreateOutcome, LomsError> {
        if stored_hash != Some(self.request_hash.as_str()) {
            return Err(LomsError::IdempotencyKeyReused { key: self.key.clone() });
        }
        match status {
            OrderStatus::Failed => Err(LomsError::InsufficientStock { order_id, detail: last_detail }),
            _ => Ok(CreateOutcome { order_id, replayed: true }),
        }
    }
}

/// Everything CreateOrder needs.
#[derive(Debug, Clone)]
pub struct CreateOrder {
    pub user: UserId,
    pub lines: OrderLines,
    pub idempotency: Option<IdempotencyKey>,
    /// How long a reserved order may stay unpaid.
    pub payment_timeout: Duration,
    /// The W3C trace context of the request, for its events: a batch writes them in the committer's task, where
    /// the request's own span is not current.
    pub traceparent: Option<String>,
}

/// What CreateOrder returns on success (a short stock is [`LomsError::InsufficientStock`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CreateOutcome {
    pub order_id: OrderId,
    /// True when an earlier call with the same idempotency key created the order.
    pub replayed: bool,
}

/// Orders, their reservations and their history.
#[async_trait]
pub trait OrderStore: Send + Sync + std::fmt::Debug + 'static {
    /// Stores the order and reserves every unit in one transaction: `awaiting payment`, or `failed` (kept, and
    /// reported as [`LomsError::InsufficientStock`]) when a sku is short.
    async fn create_order(&self, order: CreateOrder) -> Result<CreateOutcome, LomsError>;

    /// The order with its items.
    async fn order(&self, id: OrderId) -> Result<Order, LomsError>;

    /// Every transition of the order, oldest first.
    async fn history(&self, id: OrderId) -> Result<Vec<RecordedTransition>, LomsError>;

    /// `awaiting payment` → `payed`: reserved units leave the warehouse. Paying a payed order changes nothing.
    async fn pay(&self, id: OrderId) -> Result<(), LomsError>;

    /// Unpaid → `cancelled`, reservation freed. Cancelling a cancelled order changes nothing.
    async fn cancel(&self, id: OrderId) -> Result<(), LomsError>;

    /// Runs any other command on an existing order (ship, deliver, refund, change, receive a return): the
    /// decision of [`super::lifecycle::decide`] under the order's row lock, written in one transaction.
    async fn run(&self, id: OrderId, command: Command) -> Result<(), LomsError>;

    /// Cancels up to `limit` orders whose payment deadline has passed (a backend may take fewer per call),
    /// skipping orders another transaction holds; returns the ids it cancelled, none when none are due.
    async fn cancel_overdue(&self, limit: u32) -> Result<Vec<OrderId>, LomsError>;

    /// Units that can be bought now, per warehouse (warehouses with none are left out).
    async fn available_stock(&self, sku: Sku) -> Result<Vec<(WarehouseId, u64)>, LomsError>;
}

/// Operators' stock administration.
#[async_trait]
pub trait StockStore: Send + Sync + std::fmt::Debug + 'static {
    /// Sets the units on hand; refused below what is reserved.
    async fn set_stock(&self, warehouse: WarehouseId, sku: Sku, on_hand: u64) -> Result<StockLevel, LomsError>;

    /// Adds `delta` (which may be negative) to the units on hand; refused below what is reserved.
    async fn add_stock(&self, warehouse: WarehouseId, sku: Sku, delta: i64) -> Result<StockLevel, LomsError>;

    /// Sets many levels in one transaction, all or nothing. Pairs must be distinct.
    async fn import_stock(&self, levels: &[(WarehouseId, Sku, u64)]) -> Result<usize, LomsError>;

    /// Every warehouse's level of the sku.
    async fn stock_levels(&self, sku: Sku) -> Result<Vec<StockLevel>, LomsError>;
}
