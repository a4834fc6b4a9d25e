//! A local ProductService on a free port, serving a catalog the test chooses, with the generated client.

use std::{net::SocketAddr, sync::Arc};

use minizon_proto::product::product_service_client::ProductServiceClient;
use product_service::{Application, Catalog, Config, Product, RequestLog};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

/// The token every test ProductService is started with.
pub const TOKEN: &str = "test-product-token";

/// A small catalog with known names and prices, for tests that check them.
pub fn test_catalog() -> Catalog {
    let products = [
        (1001, "Acme Electric Kettle 1.7 L", 2490),
        (1002, "Northwind Coffee Beans Arabica 250 g", 690),
        (1003, "Polaris Yoga Mat 6 mm", 1290),
        (1004, "Sever Wireless Mouse Silent", 990),
        (1005, "Orbita Paperback: The Rust Programming Language", 1490),
    ];
    Catalog::new(products.map(|(sku, name, price)| Product { sku, name: name.into(), price }))
        .expect("the test catalog is valid")
}

/// A catalog of `count` products numbered from `first_sku`, each priced at its sku: for tests that need many.
pub fn numbered_catalog(first_sku: u32, count: u32) -> Catalog {
    Catalog::new((first_sku..first_sku + count).map(|sku| Product { sku, name: format!("Product {sku}"), price: sku }))
        .expect("the numbered catalog is valid")
}

/// A running ProductService.
#[derive(Debug)]
pub struct TestProductService {
    pub addr: SocketAddr,
    /// Every request the server received, with arrival times.
    pub requests: Arc<RequestLog>,
    shutdown: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

impl TestProductService {
    /// Serves `catalog` with the test token and no latency or rate limit.
    pub async fn start(catalog: Catalog) -> Self {
        Self::start_with(catalog, |_| {}).await
    }

    /// Serves `catalog` with settings adjusted by `configure` (the token defaults to [`TOKEN`], the listen address
    /// to a free port).
    pub async fn start_with(catalog: Catalog, configure: impl FnOnce(&mut Config)) -> Self {
        let mut config = Config::on_free_port();
        config.token = TOKEN.into();
        configure(&mut config);
        let app = Application::with_catalog(config, catalog).await.expect("ProductService starts");
        let addr = app.local_addr();
        let requests = app.requests();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(app.run_until_stopped(shutdown.clone()));
        Self { addr, requests, shutdown, task }
    }

    /// `http://addr`, for clients.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A client of the service.
    pub async fn client(&self) -> ProductServiceClient<Channel> {
        ProductServiceClient::connect(self.url()).await.expect("connect to ProductService")
    }

    /// Shuts the server down gracefully and waits until it has stopped.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.expect("ProductService task").expect("ProductService stops cleanly");
    }
}
