//! Checkout types and rules. No I/O here: the use cases in [`crate::service`] apply these rules around the
//! storage trait and the clients of LOMS and ProductService.

pub mod cart;
pub mod storage;

pub use cart::{Cart, CartLine, CartVersion, LineChange, PricedLine, Product, TotalPriceOverflow, total_price};
pub use ids::{Count, InvalidInput, OrderId, Sku, UserId};
pub use minizon_common::ids;
pub use storage::{AddOutcome, CartStore};
