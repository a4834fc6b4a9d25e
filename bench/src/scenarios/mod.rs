//! The traffic the load generator sends: one type per kind of iteration, each a [`crate::runner::Scenario`].

pub mod checkout;
pub mod health;
pub mod loms;

pub use checkout::ListCart;
pub use health::HealthCheck;
pub use loms::{OrderFlow, Stocks};
