//! Cart storage backends, each implementing [`crate::domain::CartStore`].

pub mod postgres;

pub use postgres::PostgresCartStore;
