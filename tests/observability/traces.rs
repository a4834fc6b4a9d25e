//! One purchase with a known `traceparent`, followed through Checkout, LOMS, the outbox relay, Kafka and
//! Notifications by the spans an OTLP receiver in this process collects; then its payment, whose event a batch's
//! committer writes, in the same trace.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use minizon_common::telemetry::LogArgs;
use minizon_proto::checkout::{AddToCartRequest, PurchaseRequest, checkout_v1_client::CheckoutV1Client};
use minizon_tests::{
    checkout::TestCheckout,
    db::TestDb,
    kafka::TestBroker,
    loms::TestLoms,
    notifications::{SinkStandIn, TestNotifications},
    poll,
    product::{TestProductService, test_catalog},
};
use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    trace::v1::{Span, span::SpanKind},
};

/// Bound for anything that crosses the broker.
const LIMIT: Duration = Duration::from_secs(90);

/// The caller's trace: its id and the span the purchase is a child of.
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

/// An OTLP/gRPC trace receiver that keeps every span it is sent.
#[derive(Debug, Clone, Default)]
struct Receiver(Arc<Mutex<Vec<Span>>>);

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let spans = request.into_inner().resource_spans.into_iter().flat_map(|resource| resource.scope_spans);
        self.0.lock().unwrap().extend(spans.flat_map(|scope| scope.spans));
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

impl Receiver {
    /// Serves on a free port; returns its address.
    async fn start(&self) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the receiver");
        let addr = listener.local_addr().expect("its address");
        let service = TraceServiceServer::new(self.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        addr
    }

    /// The spans of trace `TRACE_ID` received so far.
    fn trace(&self) -> Vec<Span> {
        self.0.lock().unwrap().iter().filter(|span| hex(&span.trace_id) == TRACE_ID).cloned().collect()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// The one span of `spans` named `name` with `kind` (the first when several).
fn find<'a>(spans: &'a [Span], name: &str, kind: SpanKind) -> Option<&'a Span> {
    spans.iter().find(|span| span.name == name && span.kind == kind as i32)
}

/// Whether `ancestor` is `span`'s parent or a parent of its parent, within `spans`.
fn descends_from(spans: &[Span], span: &Span, ancestor: &Span) -> bool {
    let mut parent = span.parent_span_id.clone();
    for _ in 0..spans.len() {
        if parent == ancestor.span_id {
            return true;
        }
        match spans.iter().find(|candidate| candidate.span_id == parent) {
            Some(next) => parent = next.parent_span_id.clone(),
            None => return false,
        }
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_purchase_is_one_trace_from_checkout_through_kafka_to_notifications() {
    let receiver = Receiver::default();
    let endpoint = format!("http://{}", receiver.start().await);
    let telemetry = minizon_common::telemetry::init(
        "minizon-tests",
        &LogArgs { otlp_endpoint: Some(endpoint), log_filter: "warn".into(), ..Default::default() },
    );

    let broker = TestBroker::start().await;
    let brokers = broker.bootstrap();
    let loms = TestLoms::start_with(TestDb::new().await, |config| {
        config.outbox.enabled = true;
        config.outbox.kafka_brokers = brokers.clone();
        config.outbox.max_backoff = Duration::from_secs(1);
    })
    .await;
    loms.set_stock(1, 1001, 10).await;
    let products = TestProductService::start(test_catalog()).await;
    let checkout = TestCheckout::start(loms.url(), products.url()).await;
    let sinks = SinkStandIn::start().await;
    let _notifications = TestNotifications::start(&broker.bootstrap(), &sinks, |_| {}).await;

    let mut client: CheckoutV1Client<_> = checkout.client().await;
    client.add_to_cart(AddToCartRequest { user: 1, sku: 1001, count: 2 }).await.expect("add to the cart");
    let mut purchase = tonic::Request::new(PurchaseRequest { user: 1 });
    let traceparent = format!("00-{TRACE_ID}-{CALLER_SPAN}-01");
    purchase.metadata_mut().insert("traceparent", traceparent.parse().unwrap());
    let order_id = client.purchase(purchase).await.expect("the purchase").into_inner().order_id;

    // Checkout → LOMS → relay → Kafka → Notifications → its sinks, all in the caller's trace.
    let spans = poll::until("the purchase's spans in every service", LIMIT, || {
        tokio::task::block_in_place(|| telemetry.flush());
        let spans = receiver.trace();
        // Notifications' handling span ends (and is exported) after its sink calls, so wait for it too.
        let complete = find(&spans, "notify webhook", SpanKind::Client).is_some()
            && find(&spans, "checkout_v1.CheckoutV1/Purchase", SpanKind::Server).is_some()
            && spans.iter().any(|span| span.kind == SpanKind::Consumer as i32);
        std::future::ready(complete.then_some(spans))
    })
    .await;
    let names = || spans.iter().map(|span| format!("{} ({})", span.name, span.kind)).collect::<Vec<_>>();

    let purchase = find(&spans, "checkout_v1.CheckoutV1/Purchase", SpanKind::Server).expect("Checkout's span");
    assert_eq!(hex(&purchase.parent_span_id), CALLER_SPAN, "Checkout continues the caller's span");
    let call = find(&spans, "loms_v1.LomsV1/CreateOrder", SpanKind::Client).unwrap_or_else(|| panic!("{:?}", names()));
    assert!(descends_from(&spans, call, purchase), "the LOMS call is inside the purchase");
    let create =
        find(&spans, "loms_v1.LomsV1/CreateOrder", SpanKind::Server).unwrap_or_else(|| panic!("{:?}", names()));
    assert_eq!(create.parent_span_id, call.span_id, "LOMS's span is the child of Checkout's call");
    let publish = spans
        .iter()
        .find(|span| span.kind == SpanKind::Producer as i32)
        .unwrap_or_else(|| panic!("no relay span in {:?}", names()));
    assert!(descends_from(&spans, publish, create), "the relay publishes in the trace of the order's creation");
    let handled = spans
        .iter()
        .find(|span| span.kind == SpanKind::Consumer as i32)
        .unwrap_or_else(|| panic!("no Notifications span in {:?}", names()));
    assert!(
        spans.iter().filter(|span| span.kind == SpanKind::Producer as i32).any(|p| p.span_id == handled.parent_span_id),
        "Notifications continues from the relay's publish span"
    );
    let sink = find(&spans, "notify webhook", SpanKind::Client).expect("the sink call");
    assert!(
        spans.iter().any(|span| span.kind == SpanKind::Consumer as i32 && descends_from(&spans, sink, span)),
        "the sink call is inside Notifications' handling"
    );

    // The payment's event is written by the command batch's committer, in another task than the request's: it
    // still carries the request's trace (as do the order's two events from its creation).
    let mut payment = tonic::Request::new(minizon_proto::loms::OrderPayedRequest { order_id });
    payment.metadata_mut().insert("traceparent", traceparent.parse().unwrap());
    loms.client().await.order_payed(payment).await.expect("the payment");
    let in_trace = loms
        .db
        .scalar(&format!(
            "select count(*) from outbox where order_id = {order_id} and traceparent like '00-{TRACE_ID}-%'"
        ))
        .await;
    assert_eq!(in_trace, 3, "created, awaiting payment and payed: every event of the order is in the caller's trace");
    telemetry.shutdown();
}
