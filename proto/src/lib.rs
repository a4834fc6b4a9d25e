//! Every miniZON gRPC contract, generated once and shared by the services, their clients and the tests.
//!
//! Nothing but generated code and the descriptor set lives here: business rules belong to the services.
//! Modules mirror the proto packages, because generated code refers across packages by relative paths.

#![allow(missing_docs, unreachable_pub, missing_debug_implementations, clippy::all)]

/// LOMS: orders, stock and reservations, and its stock administration service (`loms_v1`).
pub mod loms_v1 {
    include!(concat!(env!("OUT_DIR"), "/loms_v1.rs"));
    include!(concat!(env!("OUT_DIR"), "/loms_v1.serde.rs"));
}

/// Checkout: carts and purchase (`checkout_v1`).
pub mod checkout_v1 {
    include!(concat!(env!("OUT_DIR"), "/checkout_v1.rs"));
}

pub mod route256 {
    /// The product catalog of the route256 design (`route256.product`).
    pub mod product {
        include!(concat!(env!("OUT_DIR"), "/route256.product.rs"));
    }
}

pub mod minizon {
    pub mod events {
        /// Events published by LOMS through its outbox (`minizon.events.v1`).
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/minizon.events.v1.rs"));
            include!(concat!(env!("OUT_DIR"), "/minizon.events.v1.serde.rs"));
        }
    }
}

pub use checkout_v1 as checkout;
pub use loms_v1 as loms;
pub use minizon::events::v1 as events;
pub use pbjson_types as well_known;
pub use route256::product;

/// The encoded descriptor set of every contract above, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/minizon_descriptor.bin"));
