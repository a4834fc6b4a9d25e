//! Storage backends. Each implements the traits of [`crate::domain::storage`]; which one runs is chosen by the
//! database URL at start.

pub mod postgres;

pub use postgres::PgStore;
