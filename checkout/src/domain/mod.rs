//! Checkout types and rules. No I/O here: the use cases in [`crate::service`] apply these rules around the
//! storage trait and the clients of LOMS and ProductService.

pub mod cart;
pub mod ids;
pub mod storage;

pub use cart::{Cart, CartLine, CartVersion, LineChange, PricedLine, Product, TotalPriceOverflow, total_price};
pub use ids::{Count, InvalidInput, OrderId, Sku, UserId};
pub use storage::{AddOutcome, CartStore};
