//! The `checkout_v1.CheckoutV1` handlers.

use std::time::Duration;

use minizon_proto::{
    checkout::{
        AddToCartRequest, DeleteFromCartRequest, Item, ListCartRequest, ListCartResponse, PurchaseRequest,
        PurchaseResponse, checkout_v1_server::CheckoutV1,
    },
    well_known::Empty,
};
use tonic::{Request, Response, Status};

use crate::{
    clients::Deadline,
    domain::{Count, InvalidInput, LineChange, Sku, UserId},
    service::{Checkout, PricedCart},
};

/// Serves CheckoutV1 over the use cases.
#[derive(Debug, Clone)]
pub struct CheckoutHandler {
    checkout: Checkout,
    request_timeout: Duration,
}

impl CheckoutHandler {
    /// Handlers over `checkout`; no request runs longer than `request_timeout`, whatever its caller's deadline.
    pub fn new(checkout: Checkout, request_timeout: Duration) -> Self {
        Self { checkout, request_timeout }
    }

    fn deadline<T>(&self, request: &Request<T>) -> Deadline {
        Deadline::from_metadata(request.metadata(), self.request_timeout)
    }
}

impl TryFrom<AddToCartRequest> for LineChange {
    type Error = InvalidInput;

    fn try_from(request: AddToCartRequest) -> Result<Self, Self::Error> {
        line_change(request.user, request.sku, request.count)
    }
}

impl TryFrom<DeleteFromCartRequest> for LineChange {
    type Error = InvalidInput;

    fn try_from(request: DeleteFromCartRequest) -> Result<Self, Self::Error> {
        line_change(request.user, request.sku, request.count)
    }
}

fn line_change(user: i64, sku: u32, count: u32) -> Result<LineChange, InvalidInput> {
    Ok(LineChange { user: UserId::try_from(user)?, sku: Sku::try_from(sku)?, count: Count::try_from(count)? })
}

impl From<PricedCart> for ListCartResponse {
    fn from(cart: PricedCart) -> Self {
        Self {
            items: cart
                .lines
                .into_iter()
                .map(|line| Item {
                    sku: line.sku.get(),
                    count: line.count.get(),
                    name: line.product.name,
                    price: line.product.price,
                })
                .collect(),
            total_price: cart.total_price,
        }
    }
}

#[tonic::async_trait]
impl CheckoutV1 for CheckoutHandler {
    #[tracing::instrument(skip_all, fields(user = request.get_ref().user, sku = request.get_ref().sku))]
    async fn add_to_cart(&self, request: Request<AddToCartRequest>) -> Result<Response<Empty>, Status> {
        let deadline = self.deadline(&request);
        let change = LineChange::try_from(request.into_inner()).map_err(crate::Error::from)?;
        self.checkout.add_to_cart(change, deadline).await?;
        Ok(Response::new(Empty {}))
    }

    #[tracing::instrument(skip_all, fields(user = request.get_ref().user, sku = request.get_ref().sku))]
    async fn delete_from_cart(&self, request: Request<DeleteFromCartRequest>) -> Result<Response<Empty>, Status> {
        let change = LineChange::try_from(request.into_inner()).map_err(crate::Error::from)?;
        self.checkout.delete_from_cart(change).await?;
        Ok(Response::new(Empty {}))
    }

    #[tracing::instrument(skip_all, fields(user = request.get_ref().user))]
    async fn list_cart(&self, request: Request<ListCartRequest>) -> Result<Response<ListCartResponse>, Status> {
        let deadline = self.deadline(&request);
        let user = UserId::try_from(request.into_inner().user).map_err(crate::Error::from)?;
        let cart = self.checkout.list_cart(user, deadline).await?;
        Ok(Response::new(cart.into()))
    }

    #[tracing::instrument(skip_all, fields(user = request.get_ref().user))]
    async fn purchase(&self, request: Request<PurchaseRequest>) -> Result<Response<PurchaseResponse>, Status> {
        let deadline = self.deadline(&request);
        let user = UserId::try_from(request.into_inner().user).map_err(crate::Error::from)?;
        let order_id = self.checkout.purchase(user, deadline).await?;
        Ok(Response::new(PurchaseResponse { order_id: order_id.get() }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_valid_request_parses() {
        let change = LineChange::try_from(AddToCartRequest { user: 1, sku: 2, count: 3 }).unwrap();
        assert_eq!((change.user.get(), change.sku.get(), change.count.get()), (1, 2, 3));
    }

    #[test]
    fn every_invalid_field_is_refused() {
        for (user, sku, count) in [(0, 1, 1), (-1, 1, 1), (1, 0, 1), (1, 1, 0), (1, 1, 65_536)] {
            assert!(LineChange::try_from(DeleteFromCartRequest { user, sku, count }).is_err(), "{user} {sku} {count}");
        }
    }
}
