//! `loms_v1.LomsV1`: decode, call the store, encode.

use std::{sync::Arc, time::Duration};

use minizon_proto::{loms as pb, well_known::Empty};
use tonic::{Request, Response, Status};

use super::convert;
use crate::domain::{Command, CreateOrder, OrderId, OrderStore, RefundReason, Sku, UserId};

/// The public LOMS service.
#[derive(Debug, Clone)]
pub struct OrdersService {
    store: Arc<dyn OrderStore>,
    payment_timeout: Duration,
}

impl OrdersService {
    /// A service over `store`; reserved orders stay unpaid at most `payment_timeout`.
    pub fn new(store: Arc<dyn OrderStore>, payment_timeout: Duration) -> Self {
        Self { store, payment_timeout }
    }
}

/// The request's order id, or INVALID_ARGUMENT.
pub(super) fn order_id(raw: i64) -> Result<OrderId, Status> {
    OrderId::try_from(raw).map_err(|e| Status::invalid_argument(e.to_string()))
}

#[tonic::async_trait]
impl pb::loms_v1_server::LomsV1 for OrdersService {
    #[tracing::instrument(skip_all, fields(user = request.get_ref().user, order_id))]
    async fn create_order(
        &self,
        request: Request<pb::CreateOrderRequest>,
    ) -> Result<Response<pb::CreateOrderResponse>, Status> {
        let user = UserId::try_from(request.get_ref().user).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let lines =
            convert::order_lines(&request.get_ref().items).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let idempotency = convert::idempotency_key(request.metadata(), user, &lines)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let outcome = self
            .store
            .create_order(CreateOrder {
                user,
                lines,
                idempotency,
                payment_timeout: self.payment_timeout,
                traceparent: minizon_common::telemetry::current_traceparent(),
            })
            .await?;
        tracing::Span::current().record("order_id", outcome.order_id.get());
        tracing::info!(replayed = outcome.replayed, "order awaiting payment");
        let mut response = Response::new(pb::CreateOrderResponse { order_id: outcome.order_id.get() });
        if outcome.replayed {
            // Tells the caller the order is an earlier call's, which may have moved on since (paid, cancelled):
            // Checkout looks at it before it reports a purchase.
            response.metadata_mut().insert(
                minizon_common::grpc::metadata::IDEMPOTENT_REPLAY,
                tonic::metadata::MetadataValue::from_static("true"),
            );
        }
        Ok(response)
    }

    #[tracing::instrument(skip_all, fields(order_id = request.get_ref().order_id))]
    async fn list_order(
        &self,
        request: Request<pb::ListOrderRequest>,
    ) -> Result<Response<pb::ListOrderResponse>, Status> {
        let order = self.store.order(order_id(request.get_ref().order_id)?).await?;
        Ok(Response::new(convert::list_order_response(&order)))
    }

    #[tracing::instrument(skip_all, fields(order_id = request.get_ref().order_id))]
    async fn order_payed(&self, request: Request<pb::OrderPayedRequest>) -> Result<Response<Empty>, Status> {
        self.store.pay(order_id(request.get_ref().order_id)?).await?;
        Ok(Response::new(Empty {}))
    }

    #[tracing::instrument(skip_all, fields(order_id = request.get_ref().order_id))]
    async fn cancel_order(&self, request: Request<pb::CancelOrderRequest>) -> Result<Response<Empty>, Status> {
        self.store.cancel(order_id(request.get_ref().order_id)?).await?;
        Ok(Response::new(Empty {}))
    }

    #[tracing::instrument(skip_all, fields(sku = request.get_ref().sku))]
    async fn stocks(&self, request: Request<pb::StocksRequest>) -> Result<Response<pb::StocksResponse>, Status> {
        let sku = Sku::try_from(request.get_ref().sku).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let stocks = self
            .store
            .available_stock(sku)
            .await?
            .into_iter()
            .map(|(warehouse, count)| pb::Stock { warehouse_id: warehouse.get(), count })
            .collect();
        Ok(Response::new(pb::StocksResponse { stocks }))
    }

    #[tracing::instrument(skip_all, fields(order_id = request.get_ref().order_id))]
    async fn list_order_history(
        &self,
        request: Request<pb::ListOrderHistoryRequest>,
    ) -> Result<Response<pb::ListOrderHistoryResponse>, Status> {
        let history = self.store.history(order_id(request.get_ref().order_id)?).await?;
        Ok(Response::new(pb::ListOrderHistoryResponse {
            transitions: history.iter().map(convert::transition).collect(),
        }))
    }

    #[tracing::instrument(skip_all, fields(order_id = request.get_ref().order_id))]
    async fn ship_order(&self, request: Request<pb::ShipOrderRequest>) -> Result<Response<Empty>, Status> {
        self.store.run(order_id(request.get_ref().order_id)?, Command::Ship).await?;
        Ok(Response::new(Empty {}))
    }

    #[tracing::instrument(skip_all, fields(order_id = request.get_ref().order_id))]
    async fn deliver_order(&self, request: Request<pb::DeliverOrderRequest>) -> Result<Response<Empty>, Status> {
        self.store.run(order_id(request.get_ref().order_id)?, Command::Deliver).await?;
        Ok(Response::new(Empty {}))
    }

    #[tracing::instrument(skip_all, fields(order_id = request.get_ref().order_id))]
    async fn refund_order(&self, request: Request<pb::RefundOrderRequest>) -> Result<Response<Empty>, Status> {
        let pb::RefundOrderRequest { order_id: raw, reason } = request.into_inner();
        let id = order_id(raw)?;
        let reason = RefundReason::try_from(reason).map_err(|e| Status::invalid_argument(e.to_string()))?;
        self.store.run(id, Command::Refund(reason)).await?;
        Ok(Response::new(Empty {}))
    }

    #[tracing::instrument(skip_all, fields(order_id = request.get_ref().order_id))]
    async fn change_order(&self, request: Request<pb::ChangeOrderRequest>) -> Result<Response<Empty>, Status> {
        let id = order_id(request.get_ref().order_id)?;
        let lines =
            convert::order_lines(&request.get_ref().items).map_err(|e| Status::invalid_argument(e.to_string()))?;
        self.store.run(id, Command::Change(lines)).await?;
        Ok(Response::new(Empty {}))
    }
}
