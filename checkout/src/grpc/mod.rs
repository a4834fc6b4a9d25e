//! The gRPC boundary: requests are parsed into domain types, the use case runs, the answer is encoded, and errors
//! become statuses in one place.

pub mod checkout;
pub mod status;

pub use checkout::CheckoutHandler;
