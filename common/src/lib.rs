//! Plumbing shared by every miniZON service, so that no service carries its own copy: logs, traces and metrics,
//! graceful shutdown, the gRPC server scaffold (health and reflection included), database connections and deadlines;
//! and the shop's identifiers and quantities ([`ids`]), which LOMS and Checkout both parse requests into.

pub mod db;
pub mod deadline;
pub mod grpc;
pub mod grpc_telemetry;
pub mod ids;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod metrics;
pub mod shutdown;
pub mod telemetry;
