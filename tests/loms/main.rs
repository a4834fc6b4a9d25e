//! LOMS end to end: a real server on a free port, its own PostgreSQL schema, the generated gRPC client.

mod admin;
mod after_payment;
mod batching;
mod concurrency;
mod errors;
mod idempotency;
mod lifecycle;
mod migration;
mod stocks;
mod support;
mod timeout;
