//! The whole miniZON system in one process, for development and demos: `minizon dev`.

pub mod broker;
pub mod cheat_sheet;
pub mod dev;
pub mod redelivery;
