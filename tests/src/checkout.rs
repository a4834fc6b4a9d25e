//! A Checkout server on a free port, on its own database, wired to a LOMS and a ProductService; the whole buying path
//! in one call; and a proxy that can hold back a dependency's answers, to lose a response after it was sent.

use std::{net::SocketAddr, sync::Arc};

use checkout::{Application, CacheStats, Config};
use minizon_proto::checkout::checkout_v1_client::CheckoutV1Client;
use product_service::Catalog;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::watch,
    task::JoinHandle,
};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use crate::{db::TestDb, loms::TestLoms, product::TestProductService};

/// A fresh database for Checkout, of the backend `TEST_BACKEND` chooses (a PostgreSQL schema or an SQLite file).
pub async fn checkout_db() -> TestDb {
    TestDb::new().await
}

/// A running Checkout.
#[derive(Debug)]
pub struct TestCheckout {
    pub addr: SocketAddr,
    pub db: TestDb,
    pub config: Config,
    /// The product cache's hit and miss counters.
    pub cache: Arc<CacheStats>,
    shutdown: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

impl TestCheckout {
    /// Checkout with default settings on a fresh database, using the LOMS and ProductService at these URLs.
    pub async fn start(loms_url: String, product_url: String) -> Self {
        Self::start_with(checkout_db().await, loms_url, product_url, |_| {}).await
    }

    /// Checkout on `db`, with settings adjusted by `configure` (the listen address defaults to a free port, the
    /// ProductService token to the test one).
    pub async fn start_with(
        db: TestDb,
        loms_url: String,
        product_url: String,
        configure: impl FnOnce(&mut Config),
    ) -> Self {
        let mut config = Config::for_database(db.url.clone());
        config.loms_url = loms_url;
        config.product_url = product_url;
        config.product_token = crate::product::TOKEN.into();
        configure(&mut config);
        let app = Application::build(config.clone()).await.expect("Checkout starts");
        let addr = app.local_addr();
        let cache = app.cache_stats();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(app.run_until_stopped(shutdown.clone()));
        Self { addr, db, config, cache, shutdown, task }
    }

    /// `http://addr`, for clients.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A client of the service.
    pub async fn client(&self) -> CheckoutV1Client<Channel> {
        CheckoutV1Client::connect(self.url()).await.expect("connect to Checkout")
    }

    /// Shuts the server down gracefully and waits until it has stopped.
    pub async fn stop(self) -> (TestDb, Config) {
        self.shutdown.cancel();
        self.task.await.expect("Checkout task").expect("Checkout stops cleanly");
        (self.db, self.config)
    }
}

/// The buying path: LOMS, ProductService and Checkout, each on a free port, Checkout using the other two.
#[derive(Debug)]
pub struct TestShop {
    pub loms: TestLoms,
    pub products: TestProductService,
    pub checkout: TestCheckout,
}

impl TestShop {
    /// The three servers with default settings; ProductService serves [`crate::product::test_catalog`].
    pub async fn start() -> Self {
        Self::start_with(crate::product::test_catalog(), |_| {}).await
    }

    /// The three servers, ProductService serving `catalog`, Checkout's settings adjusted by `configure`.
    pub async fn start_with(catalog: Catalog, configure: impl FnOnce(&mut Config)) -> Self {
        let loms = TestLoms::start().await;
        let products = TestProductService::start(catalog).await;
        let checkout = TestCheckout::start_with(checkout_db().await, loms.url(), products.url(), configure).await;
        Self { loms, products, checkout }
    }
}

/// A TCP proxy that forwards requests to its target and can hold back the target's answers: the target does the
/// work, the caller never hears of it (until released). This is how a response gets lost after the server
/// committed.
#[derive(Debug)]
pub struct ResponseGate {
    addr: SocketAddr,
    open: watch::Sender<bool>,
}

impl ResponseGate {
    /// Listens on a free port and forwards to `target`, answers flowing.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the gate");
        let addr = listener.local_addr().expect("the gate's address");
        let (open, _) = watch::channel(true);
        let gates = open.clone();
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let gate = gates.subscribe();
                tokio::spawn(async move {
                    let Ok(outbound) = TcpStream::connect(target).await else { return };
                    let (mut from_client, to_client) = inbound.into_split();
                    let (from_server, mut to_server) = outbound.into_split();
                    tokio::select! {
                        _ = tokio::io::copy(&mut from_client, &mut to_server) => {}
                        () = answers(from_server, to_client, gate) => {}
                    }
                });
            }
        });
        Self { addr, open }
    }

    /// `http://addr`, for clients.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests still reach the target; its answers are held back from now on.
    pub fn hold_answers(&self) {
        self.open.send_replace(false);
    }

    /// Held answers are delivered (late) and new ones flow again.
    pub fn release(&self) {
        self.open.send_replace(true);
    }
}

/// Copies the target's bytes to the client, waiting while the gate is closed.
async fn answers(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut gate: watch::Receiver<bool>,
) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if gate.wait_for(|open| *open).await.is_err() || to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
}
