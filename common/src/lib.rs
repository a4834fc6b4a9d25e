//! Plumbing shared by every miniZON service, so that no service carries its own copy: logging, graceful
//! shutdown, the gRPC server scaffold (health and reflection included), database connections and deadlines.

pub mod db;
pub mod deadline;
pub mod grpc;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod shutdown;
pub mod telemetry;
