//! LOMS — Logistics and Order Management System: orders, stock per warehouse, all-or-nothing reservations,
//! payment, cancellation, the unpaid-order timeout, and the transactional outbox of order events.
//!
//! Layout: `domain/` holds the types and rules (no I/O) and the storage traits; `storage/` implements them per
//! database; `grpc/` is the boundary; `jobs/` the background work; `startup` wires it together.

pub mod config;
pub mod domain;
pub mod events;
pub mod grpc;
pub mod jobs;
pub mod outbox;
pub mod series;
pub mod startup;
pub mod stock_file;
pub mod storage;

pub use config::Config;
pub use startup::Application;
