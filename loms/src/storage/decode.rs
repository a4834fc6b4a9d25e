//! Turning what a backend stored back into domain values, and database errors into [`LomsError`]. A stored value
//! no domain value has is a bug (the database's own checks keep them out), never a user error.

use chrono::{DateTime, Utc};

use crate::domain::{
    Count, LomsError, OrderId, OrderLines, OrderStatus, RecordedTransition, Reservation, Sku, StockLevel, Transition,
    TransitionReason, UserId, WarehouseId, ids::InvalidInput,
};

impl From<sqlx::Error> for LomsError {
    fn from(error: sqlx::Error) -> Self {
        if minizon_common::db::is_unavailable(&error) {
            Self::Unavailable(error.to_string())
        } else if minizon_common::db::is_retryable_conflict(&error) {
            Self::Contention
        } else {
            Self::Internal(Box::new(error))
        }
    }
}

/// A stored value that no domain value has.
pub(super) fn corrupt(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> LomsError {
    LomsError::Internal(error.into())
}

/// An order status as a backend stores it.
pub(super) fn stored_status(code: i64) -> Result<OrderStatus, LomsError> {
    i16::try_from(code)
        .ok()
        .and_then(OrderStatus::from_code)
        .ok_or_else(|| corrupt(format!("unknown order status {code}")))
}

/// A history row as a backend stores it (statuses and reason as numbers).
pub(super) fn stored_transition(
    from: Option<i64>,
    to: i64,
    reason: i64,
    detail: String,
    at: DateTime<Utc>,
) -> Result<RecordedTransition, LomsError> {
    let reason = i16::try_from(reason)
        .ok()
        .and_then(TransitionReason::from_code)
        .ok_or_else(|| corrupt(format!("unknown transition reason {reason}")))?;
    let from = from.map(stored_status).transpose()?;
    Ok(RecordedTransition { transition: Transition { from, to: stored_status(to)?, reason, detail }, at })
}

/// A stock level as a backend stores it (four integer columns).
pub(super) fn stored_level(warehouse_id: i64, sku: i64, on_hand: i64, reserved: i64) -> Result<StockLevel, LomsError> {
    Ok(StockLevel {
        warehouse: WarehouseId::try_from(warehouse_id).map_err(corrupt)?,
        sku: Sku::try_from(sku).map_err(corrupt)?,
        on_hand: u64::try_from(on_hand).map_err(corrupt)?,
        reserved: u64::try_from(reserved).map_err(corrupt)?,
    })
}

/// A reservation row.
pub(super) fn stored_reservation(sku: i64, warehouse_id: i64, count: i64) -> Result<Reservation, LomsError> {
    Ok(Reservation {
        sku: Sku::try_from(sku).map_err(corrupt)?,
        warehouse: WarehouseId::try_from(warehouse_id).map_err(corrupt)?,
        count: u64::try_from(count).map_err(corrupt)?,
    })
}

/// An order's items, from (sku, count) pairs.
pub(super) fn stored_lines(rows: impl IntoIterator<Item = (i64, i64)>) -> Result<OrderLines, LomsError> {
    rows.into_iter()
        .map(|(sku, count)| Ok((Sku::try_from(sku)?, Count::try_from(count)?)))
        .collect::<Result<Vec<_>, InvalidInput>>()
        .and_then(OrderLines::new)
        .map_err(corrupt)
}

/// A stored order id.
pub(super) fn stored_order_id(raw: i64) -> Result<OrderId, LomsError> {
    OrderId::try_from(raw).map_err(corrupt)
}

/// A stored user id.
pub(super) fn stored_user(raw: i64) -> Result<UserId, LomsError> {
    UserId::try_from(raw).map_err(corrupt)
}
