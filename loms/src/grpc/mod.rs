//! The gRPC boundary: requests are parsed into domain types here, results encoded back; no rule lives here.

pub mod admin;
pub mod convert;
pub mod orders;
pub mod status;

pub use admin::{AdminService, AdminToken};
pub use orders::OrdersService;
