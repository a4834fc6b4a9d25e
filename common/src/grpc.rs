//! The gRPC server scaffold every service uses: a bound listener (port 0 works, and the real address is known
//! before serving), the standard health service, reflection over every miniZON contract, graceful shutdown, and a
//! handler that panics answering INTERNAL (logged) rather than resetting the caller's stream.

use std::{io, net::SocketAddr, time::Duration};

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::RoutesBuilder;
use tonic_health::{ServingStatus, server::HealthReporter};

/// The metadata entries LOMS's contract carries beside its messages, named once for the server and its clients.
pub mod metadata {
    /// Request entry that makes CreateOrder idempotent: a call repeating a key gets the first call's order.
    pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
    /// Response entry (`true`) on a CreateOrder answered with an earlier call's order.
    pub const IDEMPOTENT_REPLAY: &str = "idempotent-replay";
    /// Entry of a CreateOrder refused for short stock: the id of the order recorded as failed.
    pub const ORDER_ID: &str = "order-id";
}

/// A listening gRPC server that has not started serving yet.
#[derive(Debug)]
pub struct GrpcServer {
    listener: TcpListener,
    local_addr: SocketAddr,
    routes: RoutesBuilder,
    health: HealthReporter,
    advertised: Option<Vec<String>>,
}

impl GrpcServer {
    /// Binds `addr` (port 0 picks a free port) and registers health and reflection.
    pub async fn bind(addr: SocketAddr) -> io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let local_addr = listener.local_addr()?;
        let (health, health_service) = tonic_health::server::health_reporter();
        let mut routes = RoutesBuilder::default();
        routes.add_service(health_service);
        Ok(Self { listener, local_addr, routes, health, advertised: None })
    }

    /// Limits reflection to these services (full names, e.g. `loms_v1.LomsV1`), so that `grpcurl list` shows what
    /// this server serves rather than every miniZON contract. Without it, every contract is advertised.
    pub fn advertise(&mut self, services: &[&str]) -> &mut Self {
        self.advertised = Some(services.iter().map(|s| (*s).to_owned()).collect());
        self
    }

    /// The address the server actually listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The health reporter, to flip services between SERVING and NOT_SERVING.
    pub fn health(&self) -> HealthReporter {
        self.health.clone()
    }

    /// Where the service's own gRPC services are added.
    pub fn routes(&mut self) -> &mut RoutesBuilder {
        &mut self.routes
    }

    /// Serves until `shutdown` is cancelled, then stops accepting and drains in-flight requests.
    pub async fn serve(mut self, shutdown: CancellationToken) -> Result<(), tonic::transport::Error> {
        let descriptors = contracts(self.advertised.as_deref());
        // Both reflection versions: grpcurl before 1.8.8 and many other tools only speak v1alpha.
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_file_descriptor_set(descriptors.clone())
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        };
        match (reflection().build_v1(), reflection().build_v1alpha()) {
            (Ok(v1), Ok(v1alpha)) => {
                self.routes.add_service(v1).add_service(v1alpha);
            }
            (Err(error), _) | (_, Err(error)) => tracing::error!(%error, "gRPC reflection is off"),
        }
        tracing::info!(addr = %self.local_addr, "gRPC server listening");
        // serve_with_incoming ignores the builder's TCP settings: Nagle must be turned off on the incoming stream,
        // or small responses wait for the peer's delayed ACK (a constant ~40 ms on multi-frame answers).
        let incoming = tonic::transport::server::TcpIncoming::from(self.listener).with_nodelay(Some(true));
        tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .layer(tower_http::catch_panic::CatchPanicLayer::custom(panic_to_internal))
            .layer(crate::grpc_telemetry::GrpcTelemetryLayer::server())
            .add_routes(self.routes.routes())
            .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
            .await
    }
}

/// The answer to a request whose handler panicked: INTERNAL, as a well-formed gRPC response (HTTP 200 with
/// `grpc-status`), so the caller sees a status instead of a reset stream; the panic is logged here.
fn panic_to_internal(panic: Box<dyn std::any::Any + Send + 'static>) -> tonic::codegen::http::Response<String> {
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned());
    tracing::error!(panic = %message, "a gRPC handler panicked: answered INTERNAL");
    tonic::Status::internal("internal error").into_http()
}

/// Sets the health of the whole server (the empty service name) and of each named service.
pub async fn set_health(reporter: &HealthReporter, services: &[&str], serving: bool) {
    let status = if serving { ServingStatus::Serving } else { ServingStatus::NotServing };
    reporter.set_service_status("", status).await;
    for service in services {
        reporter.set_service_status(*service, status).await;
    }
}

/// The miniZON descriptor set with only the `advertised` services left in it (all of them for `None`); every
/// message type stays, so `describe` works for anything a service uses.
fn contracts(advertised: Option<&[String]>) -> prost_types::FileDescriptorSet {
    use prost::Message as _;
    let mut set = prost_types::FileDescriptorSet::decode(minizon_proto::FILE_DESCRIPTOR_SET)
        .expect("the descriptor set generated at build time decodes");
    if let Some(advertised) = advertised {
        for file in &mut set.file {
            let package = file.package().to_owned();
            file.service
                .retain(|service| advertised.iter().any(|name| *name == format!("{package}.{}", service.name())));
        }
    }
    set
}
