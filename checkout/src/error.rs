//! Everything that can go wrong in Checkout, in terms a caller can act on. The gRPC layer maps each variant to one
//! status code (see `grpc::status`).

use std::{fmt, sync::Arc};

use crate::domain::{Cart, Count, InvalidInput, OrderId, Sku, TotalPriceOverflow};

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

    /// A new line in a cart that already holds the most lines a cart may hold.
    #[error(
        "a cart holds at most {} distinct skus: buy or empty the cart, or remove a line, before adding sku {sku}",
        Cart::MAX_LINES
    )]
    CartFull { sku: Sku },

    /// A purchase found that this very cart was already bought, and its order paid (the earlier answer was lost);
    /// the cart was emptied rather than bought twice.
    #[error(
        "this cart was already bought as order {order_id}, which is now {status}{}",
        if *emptied { "; the cart was emptied" } else { "" }
    )]
    AlreadyPurchased { order_id: OrderId, status: &'static str, emptied: bool },

    /// A dependency refused the request as it stands (what Checkout sent it, from the cart); retrying unchanged
    /// cannot help.
    #[error("{dependency} refused the request: {message}")]
    Refused { dependency: Dependency, message: String },

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
        // Unreachable, busy (SQLite's lock wait gave up) or overloaded: retryable, like any outage.
        if minizon_common::db::is_unavailable(&error) || minizon_common::db::is_retryable_conflict(&error) {
            Self::Unavailable { dependency: Dependency::Database, detail: error.to_string() }
        } else {
            Self::internal(error)
        }
    }
}

#[cfg(test)]
mod tests {
    use sqlx::{Connection as _, SqliteConnection, sqlite::SqliteConnectOptions};

    use super::*;

    #[tokio::test]
    async fn sqlite_giving_up_on_a_lock_is_unavailable_not_internal() {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        let path = std::env::temp_dir().join(format!("checkout-busy-{}-{nanos}.db", std::process::id()));
        let options = SqliteConnectOptions::new().filename(&path).create_if_missing(true);
        let mut holder = SqliteConnection::connect_with(&options).await.unwrap();
        // No busy timeout: the second writer fails at once instead of waiting.
        let mut other = SqliteConnection::connect_with(&options.busy_timeout(std::time::Duration::ZERO)).await.unwrap();
        sqlx::query("begin immediate").execute(&mut holder).await.unwrap();

        let busy = sqlx::query("begin immediate").execute(&mut other).await.unwrap_err();
        let bug = sqlx::query("select 1 from no_such_table").execute(&mut holder).await.unwrap_err();

        assert!(
            matches!(Error::from(busy), Error::Unavailable { dependency: Dependency::Database, .. }),
            "SQLITE_BUSY must be retryable"
        );
        assert!(matches!(Error::from(bug), Error::Internal(_)), "a bug is not a busy database");
        drop((holder, other));
        let _ = std::fs::remove_file(&path);
    }
}
