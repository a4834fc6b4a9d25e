//! The local ProductService speaks the route256 contract: token checked, unknown skus not found, skus paged.

use std::time::Duration;

use minizon_proto::product::{GetProductRequest, ListSkusRequest, product_service_client::ProductServiceClient};
use minizon_tests::product::{TOKEN, TestProductService, numbered_catalog, test_catalog};
use product_service::{Application, Catalog, Config};
use tokio_util::sync::CancellationToken;
use tonic::{Code, transport::Channel};
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

use crate::support::assert_status;

fn get(sku: u32) -> GetProductRequest {
    GetProductRequest { token: TOKEN.into(), sku }
}

#[tokio::test]
async fn a_known_sku_has_its_name_and_price() {
    let service = TestProductService::start(test_catalog()).await;
    let mut client = service.client().await;

    let product = client.get_product(get(1003)).await.unwrap().into_inner();

    assert_eq!((product.name.as_str(), product.price), ("Polaris Yoga Mat 6 mm", 1290));
}

#[tokio::test]
async fn an_unknown_sku_is_not_found() {
    let service = TestProductService::start(test_catalog()).await;
    let mut client = service.client().await;

    assert_status(client.get_product(get(4242)).await, Code::NotFound, "4242");
}

#[tokio::test]
async fn a_missing_or_wrong_token_is_unauthenticated() {
    let service = TestProductService::start(test_catalog()).await;
    let mut client = service.client().await;

    for token in ["", "guess"] {
        let got = client.get_product(GetProductRequest { token: token.into(), sku: 1001 }).await;
        assert_status(got, Code::Unauthenticated, "token");
        let listed = client.list_skus(ListSkusRequest { token: token.into(), start_after_sku: 0, count: 10 }).await;
        assert_status(listed, Code::Unauthenticated, "token");
    }
}

#[tokio::test]
async fn list_skus_pages_through_the_whole_catalog_in_order() {
    let service = TestProductService::start(numbered_catalog(100, 25)).await;
    let mut client = service.client().await;
    let mut seen = Vec::new();
    let mut pages = 0;

    let mut start_after_sku = 0;
    loop {
        let request = ListSkusRequest { token: TOKEN.into(), start_after_sku, count: 10 };
        let page = client.list_skus(request).await.unwrap().into_inner().skus;
        pages += 1;
        let Some(&last) = page.last() else { break };
        seen.extend(page);
        start_after_sku = last;
    }

    assert_eq!(seen, (100..125).collect::<Vec<_>>());
    assert_eq!(pages, 4, "10 + 10 + 5, then an empty page");
}

#[tokio::test]
async fn beyond_its_rate_limit_it_answers_resource_exhausted() {
    let service = TestProductService::start_with(test_catalog(), |config| {
        config.rate_limit = Some(1.try_into().unwrap());
    })
    .await;
    let mut client = service.client().await;

    let mut refused = 0;
    for _ in 0..20 {
        if let Err(status) = client.get_product(get(1001)).await {
            assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
            refused += 1;
        }
    }

    assert!(refused > 0, "20 requests at once passed a limit of 1 request/s");
}

#[tokio::test]
async fn by_default_it_serves_the_bundled_sample_catalog_and_reports_serving() {
    let mut config = Config::on_free_port();
    config.catalog = None;
    let app = Application::build(config).await.unwrap();
    let url = format!("http://{}", app.local_addr());
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(app.run_until_stopped(shutdown.clone()));
    let bundled = Catalog::bundled().unwrap();

    let channel = Channel::from_shared(url).unwrap().connect().await.unwrap();
    let mut client = ProductServiceClient::new(channel.clone());
    let request = GetProductRequest { token: product_service::config::DEFAULT_TOKEN.into(), sku: 1016 };
    let product = client.get_product(request).await.unwrap().into_inner();
    let mut health = HealthClient::new(channel);
    let status = health
        .check(HealthCheckRequest { service: "route256.product.ProductService".into() })
        .await
        .unwrap()
        .into_inner()
        .status();

    assert!(bundled.len() >= 1_000);
    assert_eq!(Some(product.name.as_str()), bundled.get(1016).map(|p| p.name.as_str()));
    assert_eq!(status, ServingStatus::Serving);
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), task).await.unwrap().unwrap().unwrap();
}
