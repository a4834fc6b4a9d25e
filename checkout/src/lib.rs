//! Checkout: users' carts in PostgreSQL or SQLite, listed with live names and prices from ProductService (cached,
//! and rate-limited to the external service's quota), and bought through LOMS with an idempotency key so that a
//! retried purchase never creates a second order.

pub mod clients;
pub mod config;
pub mod domain;
pub mod error;
pub mod grpc;
pub mod products;
pub mod series;
pub mod service;
pub mod startup;
pub mod storage;

pub use config::Config;
pub use error::Error;
pub use products::CacheStats;
pub use startup::Application;
