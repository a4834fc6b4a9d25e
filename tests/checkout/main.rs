//! Checkout and the local ProductService end to end: real servers on free ports (Checkout, LOMS, ProductService),
//! their own databases (PostgreSQL schemas or SQLite files, as `TEST_BACKEND` says), the generated gRPC clients.

mod cart;
mod errors;
mod outage;
mod product_service;
mod purchase;
mod rate_limit;
mod support;
