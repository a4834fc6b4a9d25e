//! What LOMS needs from a database. Each backend (PostgreSQL now; SQLite for the embedded mode) implements these
//! traits and applies the rules of [`super::order`] and [`super::allocation`] inside its transactions, so the
//! guarantees (all-or-nothing reservation, one winner per order, no oversell) hold whichever backend runs.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{
    error::LomsError,
    ids::{OrderId, Sku, UserId, WarehouseId},
    order::{Order, OrderLines, OrderStatus, RecordedTransition, Transition, TransitionReason},
};

/// An order status as a backend stores it; a number no status has is a bug, not a user error.
pub fn stored_status(code: i64) -> Result<OrderStatus, LomsError> {
    i16::try_from(code)
        .ok()
        .and_then(OrderStatus::from_code)
        .ok_or_else(|| LomsError::Internal(format!("unknown order status {code}").into()))
}

/// A history row as a backend stores it (statuses and reason as numbers).
pub fn stored_transition(
    from: Option<i64>,
    to: i64,
    reason: i64,
    detail: String,
    at: DateTime<Utc>,
) -> Result<RecordedTransition, LomsError> {
    let reason = i16::try_from(reason)
        .ok()
        .and_then(TransitionReason::from_code)
        .ok_or_else(|| LomsError::Internal(format!("unknown transition reason {reason}").into()))?;
    let from = from.map(stored_status).transpose()?;
    Ok(RecordedTransition { transition: Transition { from, to: stored_status(to)?, reason, detail }, at })
}

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
}

/// What CreateOrder returns on success (a short stock is [`LomsError::InsufficientStock`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CreateOutcome {
    pub order_id: OrderId,
    /// True when an earlier call with the same idempotency key created the order.
    pub replayed: bool,
}

/// One warehouse's stock of one sku.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StockLevel {
    pub warehouse: WarehouseId,
    pub sku: Sku,
    pub on_hand: u64,
    pub reserved: u64,
}

impl StockLevel {
    /// A level as a backend stores it (four integer columns); a value out of range is a bug, not a user error.
    pub fn from_stored(warehouse_id: i64, sku: i64, on_hand: i64, reserved: i64) -> Result<Self, LomsError> {
        let internal = |e: super::ids::InvalidInput| LomsError::Internal(e.into());
        Ok(Self {
            warehouse: WarehouseId::try_from(warehouse_id).map_err(internal)?,
            sku: Sku::try_from(sku).map_err(internal)?,
            on_hand: u64::try_from(on_hand).unwrap_or(0),
            reserved: u64::try_from(reserved).unwrap_or(0),
        })
    }

    /// Units that can still be bought.
    pub fn available(&self) -> u64 {
        self.on_hand.saturating_sub(self.reserved)
    }
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
