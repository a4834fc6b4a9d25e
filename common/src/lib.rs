//! Plumbing shared by every miniZON service, so that no service carries its own copy: logs, traces and metrics,
//! graceful shutdown, the gRPC server scaffold (health and reflection included), database connections and deadlines.

pub mod db;
pub mod deadline;
pub mod grpc;
pub mod grpc_telemetry;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod metrics;
pub mod shutdown;
pub mod telemetry;
