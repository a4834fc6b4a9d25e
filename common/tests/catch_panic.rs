//! A handler that panics answers INTERNAL through the shared server scaffold, and the server keeps serving.

use minizon_common::grpc::GrpcServer;
use minizon_proto::product::{
    GetProductRequest, GetProductResponse, ListSkusRequest, ListSkusResponse,
    product_service_client::ProductServiceClient,
    product_service_server::{ProductService, ProductServiceServer},
};
use tokio_util::sync::CancellationToken;
use tonic::{Code, Request, Response, Status};

/// GetProduct panics (a bug); ListSkus works.
#[derive(Debug)]
struct Buggy;

#[tonic::async_trait]
impl ProductService for Buggy {
    async fn get_product(&self, _request: Request<GetProductRequest>) -> Result<Response<GetProductResponse>, Status> {
        panic!("a bug in a handler");
    }

    async fn list_skus(&self, _request: Request<ListSkusRequest>) -> Result<Response<ListSkusResponse>, Status> {
        Ok(Response::new(ListSkusResponse { skus: vec![7] }))
    }
}

#[tokio::test]
async fn a_panicking_handler_answers_internal_and_the_server_keeps_serving() {
    let mut server = GrpcServer::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    server.routes().add_service(ProductServiceServer::new(Buggy));
    let url = format!("http://{}", server.local_addr());
    let shutdown = CancellationToken::new();
    let serving = tokio::spawn(server.serve(shutdown.clone()));
    let mut client = ProductServiceClient::connect(url).await.unwrap();

    let status = client.get_product(GetProductRequest { token: "t".into(), sku: 1 }).await.unwrap_err();
    assert_eq!(status.code(), Code::Internal, "{status:?}");
    assert_eq!(status.message(), "internal error", "the panic's text stays in the log");

    let skus = client.list_skus(ListSkusRequest { token: "t".into(), start_after_sku: 0, count: 1 }).await.unwrap();
    assert_eq!(skus.into_inner().skus, vec![7], "the same connection still serves");

    shutdown.cancel();
    serving.await.unwrap().unwrap();
}
