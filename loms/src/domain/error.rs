//! Everything that can go wrong in LOMS, in terms a caller can act on. The gRPC layer maps each variant to one
//! status code (see `grpc::status`).

use super::{
    ids::{InvalidInput, OrderId, Sku, WarehouseId},
    order::OrderStatus,
};

/// One error type for every LOMS operation.
#[derive(Debug, thiserror::Error)]
pub enum LomsError {
    /// The request is malformed; retrying it unchanged cannot help.
    #[error(transparent)]
    InvalidInput(#[from] InvalidInput),

    #[error("order {0} not found")]
    OrderNotFound(OrderId),

    /// Some sku was short. The order exists, with status `failed`.
    #[error("not enough stock: {detail}; order {order_id} was kept with status failed")]
    InsufficientStock { order_id: OrderId, detail: String },

    /// ChangeOrder's new lines cannot be reserved; the order keeps its old lines and reservation.
    #[error("order {order_id} cannot be changed: not enough stock: {detail}; it keeps its lines and reservation")]
    ChangeShort { order_id: OrderId, detail: String },

    /// The order's status forbids the action.
    #[error("order {order_id} is {} and cannot be {action}", status.name())]
    IllegalTransition { order_id: OrderId, status: OrderStatus, action: &'static str },

    /// OrderPayed came after the payment deadline: the order has been cancelled instead.
    #[error("order {0} was not paid before its payment deadline and has been cancelled")]
    PaymentDeadlinePassed(OrderId),

    /// The same user sent the same idempotency key with a different request.
    #[error(
        "idempotency key {key:?} was already used by this user for a different order; send a new key for a new order"
    )]
    IdempotencyKeyReused { key: String },

    /// A stock change would leave fewer units on hand than are reserved (or fewer than zero).
    #[error(
        "warehouse {warehouse} sku {sku}: the change would leave {on_hand} units on hand, below zero or below the {reserved} reserved by unpaid orders"
    )]
    StockBelowReserved { warehouse: WarehouseId, sku: Sku, on_hand: i128, reserved: u64 },

    /// The database is unreachable; the call can be retried.
    #[error("the order database is unavailable: {0}")]
    Unavailable(String),

    /// Concurrent transactions collided and retries were exhausted; the call can be retried.
    #[error("the request collided with concurrent changes; retry it")]
    Contention,

    /// A bug or an unexpected state. Details go to the log, not to the caller.
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl LomsError {
    /// Whether running the same transaction again may succeed.
    pub fn is_contention(&self) -> bool {
        matches!(self, Self::Contention)
    }
}
