//! Background jobs LOMS runs beside its gRPC server.

pub mod unpaid_timeout;
