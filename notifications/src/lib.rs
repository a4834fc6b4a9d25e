//! Notifications: a consumer-group member on the order-event topic that tells people about their orders.
//!
//! Every event reaches every channel it concerns (the customer's sinks; the staff's for new orders, changes and
//! cancellations before hand-over) once in effect: offsets are committed only after an event was handled or
//! dead-lettered (at-least-once delivery), and the processed-events table, keyed by event and channel, turns
//! redeliveries into no-ops. A sink outage is waited out (up to the outage budget) without committing past the
//! event; a permanent refusal, and a record that is not an event, go to the dead-letter topic with the reason, so
//! one bad event never stops the ones behind it. `notifications dead-letter replay` puts dead letters back.

pub mod config;
pub mod dead_letter;
pub mod event;
pub mod message;
pub mod replay;
pub mod series;
pub mod sinks;
pub mod startup;
pub mod store;
pub mod worker;

pub use config::{Config, SinkKind};
pub use startup::Application;
