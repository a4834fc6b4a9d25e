//! What Checkout needs from a database. Each backend (PostgreSQL; SQLite for the embedded mode) implements this
//! trait so that the guarantees below hold whichever backend runs.

use async_trait::async_trait;

use super::{
    cart::{Cart, CartVersion},
    ids::{Count, Sku, UserId},
};
use crate::error::Error;

/// What adding units to a cart line did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddOutcome {
    /// The line now holds `count` units.
    Added { count: Count },
    /// Nothing changed: the line (holding `current` units) would have gone beyond the limit.
    Refused { current: u32 },
    /// Nothing changed: the sku is not in the cart yet, and the cart already holds [`Cart::MAX_LINES`] lines.
    CartFull,
}

/// Users' carts.
#[async_trait]
pub trait CartStore: Send + Sync + std::fmt::Debug + 'static {
    /// The user's cart with its version; an unknown user has an empty cart at version 0.
    async fn cart(&self, user: UserId) -> Result<Cart, Error>;

    /// Atomically adds `count` units to the line of `sku`, unless the line would then hold more than `limit`
    /// units, or the line is new and the cart already holds [`Cart::MAX_LINES`] lines, however many requests race;
    /// bumps the version when the line changed.
    async fn add(&self, user: UserId, sku: Sku, count: Count, limit: u32) -> Result<AddOutcome, Error>;

    /// Removes up to `count` units of `sku`; the line disappears at zero. Removing what is not there changes
    /// nothing (and is no error). Bumps the version when the line changed.
    async fn remove(&self, user: UserId, sku: Sku, count: Count) -> Result<(), Error>;

    /// Empties the cart and bumps its version, only if the version is still `version` (the cart that was
    /// bought); returns whether it did.
    async fn clear_purchased(&self, user: UserId, version: CartVersion) -> Result<bool, Error>;

    /// Bumps the version if it is still `version`, leaving the lines; returns whether it did.
    async fn bump_version(&self, user: UserId, version: CartVersion) -> Result<bool, Error>;
}
