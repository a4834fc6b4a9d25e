//! A LOMS server on a free port, on its own schema, with generated clients.

use std::net::SocketAddr;

use loms::{Application, Config};
use minizon_proto::loms::{
    CreateOrderRequest, SetStockRequest, loms_admin_v1_client::LomsAdminV1Client, loms_v1_client::LomsV1Client,
};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Status, service::Interceptor, service::interceptor::InterceptedService, transport::Channel};

use crate::db::TestDb;

/// The admin token every test LOMS is started with.
pub const ADMIN_TOKEN: &str = "test-admin-token";

/// Adds `authorization: Bearer <token>` to every request.
#[derive(Debug, Clone)]
pub struct BearerToken(pub String);

impl Interceptor for BearerToken {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let value = format!("Bearer {}", self.0).parse().map_err(|_| Status::internal("token is not ASCII"))?;
        request.metadata_mut().insert("authorization", value);
        Ok(request)
    }
}

/// The admin client type.
pub type AdminClient = LomsAdminV1Client<InterceptedService<Channel, BearerToken>>;

/// A running LOMS.
#[derive(Debug)]
pub struct TestLoms {
    pub addr: SocketAddr,
    /// The `/metrics` endpoint, when the settings asked for one.
    pub metrics: Option<SocketAddr>,
    pub db: TestDb,
    pub config: Config,
    shutdown: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

impl TestLoms {
    /// LOMS with default settings on a fresh schema.
    pub async fn start() -> Self {
        Self::start_with(TestDb::new().await, |_| {}).await
    }

    /// LOMS on `db`, with settings adjusted by `configure` (the listen address defaults to a free port).
    pub async fn start_with(db: TestDb, configure: impl FnOnce(&mut Config)) -> Self {
        let mut config = Config::for_database(db.url.clone());
        config.admin_token = Some(ADMIN_TOKEN.to_owned().into());
        configure(&mut config);
        Self::launch(db, config).await
    }

    async fn launch(db: TestDb, config: Config) -> Self {
        let app = Application::build(config.clone()).await.expect("LOMS starts");
        let addr = app.local_addr();
        let metrics = app.metrics_addr();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(app.run_until_stopped(shutdown.clone()));
        Self { addr, metrics, db, config, shutdown, task }
    }

    /// `http://addr`, for clients.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A client of the public service.
    pub async fn client(&self) -> LomsV1Client<Channel> {
        LomsV1Client::connect(self.url()).await.expect("connect to LOMS")
    }

    /// A client of the admin service, with the right token.
    pub async fn admin(&self) -> AdminClient {
        let channel = Channel::from_shared(self.url()).unwrap().connect().await.expect("connect to LOMS");
        LomsAdminV1Client::with_interceptor(channel, BearerToken(ADMIN_TOKEN.into()))
    }

    /// Sets the units on hand of `sku` in `warehouse`.
    pub async fn set_stock(&self, warehouse: i64, sku: u32, on_hand: u64) {
        self.admin()
            .await
            .set_stock(SetStockRequest { warehouse_id: warehouse, sku, on_hand })
            .await
            .expect("set stock");
    }

    /// Places an order: its id, and whether it was created (`false`: short of stock, it was kept as failed and
    /// answered FAILED_PRECONDITION with its id). Any other answer fails the test.
    pub async fn place(&self, request: CreateOrderRequest) -> (i64, bool) {
        match self.client().await.create_order(request).await {
            Ok(created) => (created.into_inner().order_id, true),
            Err(status) if status.code() == tonic::Code::FailedPrecondition => {
                let id = status.metadata().get("order-id").expect("a failed order names itself");
                (id.to_str().expect("ASCII").parse().expect("an order id"), false)
            }
            Err(status) => panic!("CreateOrder: {status:?}"),
        }
    }

    /// Shuts the server down gracefully and waits until it has stopped.
    pub async fn stop(self) -> (TestDb, Config) {
        self.shutdown.cancel();
        self.task.await.expect("LOMS task").expect("LOMS stops cleanly");
        (self.db, self.config)
    }

    /// Stops the server and starts it again on the same database and address.
    pub async fn restart(self) -> Self {
        let addr = self.addr;
        let (db, mut config) = self.stop().await;
        config.listen = addr;
        Self::launch(db, config).await
    }
}
