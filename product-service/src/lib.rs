//! A local ProductService: the `route256.product.ProductService` contract of the external catalog service, served
//! from a catalog file, with the external service's token check, and optionally its latency and rate limit, so that
//! development, tests and benchmarks need no access to the real one.

pub mod catalog;
pub mod config;
pub mod grpc;
pub mod requests;
pub mod startup;

pub use catalog::{Catalog, Product};
pub use config::Config;
pub use requests::RequestLog;
pub use startup::Application;
