//! Notifications: a consumer-group member on the order-event topic that tells people about their orders.
//!
//! Every event reaches every configured sink once in effect: offsets are committed only after an event was
//! handled or dead-lettered (at-least-once delivery), and the processed-events table turns redeliveries into
//! no-ops. A sink that keeps failing, and a record that is not an event, go to the dead-letter topic with the
//! reason, so one bad event never stops the ones behind it.

pub mod config;
pub mod dead_letter;
pub mod event;
pub mod message;
pub mod series;
pub mod sinks;
pub mod startup;
pub mod store;
pub mod worker;

pub use config::{Config, SinkKind};
pub use startup::Application;
