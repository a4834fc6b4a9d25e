//! Observability end to end: a real Prometheus scrapes a running LOMS, and an OTLP receiver in the test process
//! collects the spans of one purchase across Checkout, LOMS, the outbox relay and Notifications.
//!
//! The metrics recorder and the tracer provider are process-wide. The suite relies on nextest running every test
//! in a process of its own (`cargo nextest run -p minizon-tests --test observability`): each test installs what it
//! needs, first thing, and the in-process services all report to it.

mod metrics;
mod traces;
