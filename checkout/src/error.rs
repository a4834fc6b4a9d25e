//! Everything that can go wrong in Checkout, in terms a caller can act on. The gRPC layer maps each variant to one
//! status code (see `grpc::status`).

use std::{fmt, sync::Arc};

use crate::domain::{Count, InvalidInput, Sku, TotalPriceOverflow};

/// A service Checkout depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dependency {
    /// Orders and stock.
    Loms,
    /// Product names and prices.
    ProductService,
    /// Checkout's own database.
    Database,
}

impl fmt::Display for Dependency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Loms => "LOMS",
            Self::ProductService => "ProductService",
            Self::Database => "the cart database",
        })
    }
}

/// One error type for every Checkout operation. Clone, so that one failed product look-up can be handed to every
/// request that waited on it in the cache.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The request is malformed; retrying it unchanged cannot help.
    #[error(transparent)]
    InvalidInput(#[from] InvalidInput),

    /// ProductService does not know the sku.
    #[error("sku {0} is not in the product catalog")]
    ProductNotFound(Sku),

    /// The warehouses do not hold what the cart would contain.
    #[error(
        "not enough stock of sku {sku}: the cart would hold {requested} units, the warehouses have {available} available"
    )]
    InsufficientStock { sku: Sku, requested: u32, available: u64 },

    /// The cart line would exceed the per-line limit.
    #[error("a cart holds at most {} units of one sku; sku {sku} would reach {requested}", Count::MAX)]
    CartLineFull { sku: Sku, requested: u32 },

    /// Purchase of an empty cart.
    #[error("the cart is empty: add items before purchasing")]
    EmptyCart,

    /// LOMS could not reserve the order (its message names the short sku and the failed order); the cart was kept.
    #[error("the order could not be reserved and the cart was kept: {0}")]
    ReservationFailed(String),

    /// ListCart's total does not fit the contract.
    #[error("{0}; remove some items")]
    TotalPriceOverflow(#[from] TotalPriceOverflow),

    /// A dependency cannot be reached or refuses to work now; the call can be retried.
    #[error("{dependency} is unavailable: {detail}")]
    Unavailable { dependency: Dependency, detail: String },

    /// The caller's deadline (or Checkout's own limit) passed while waiting for a dependency.
    #[error("deadline exceeded while waiting for {dependency}")]
    DeadlineExceeded { dependency: Dependency },

    /// A bug or an unexpected answer. Details go to the log, not to the caller.
    #[error("internal error")]
    Internal(#[source] Arc<dyn std::error::Error + Send + Sync>),
}

impl Error {
    /// An unexpected failure, kept for the log.
    pub fn internal(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Internal(Arc::new(error))
    }
}

impl From<sqlx::Error> for Error {
    fn from(error: sqlx::Error) -> Self {
        if minizon_common::db::is_unavailable(&error) {
            Self::Unavailable { dependency: Dependency::Database, detail: error.to_string() }
        } else {
            Self::internal(error)
        }
    }
}
