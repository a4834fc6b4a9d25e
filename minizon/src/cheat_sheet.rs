//! What `minizon dev` prints once everything listens: the addresses, and commands to paste.

use crate::dev::Addresses;

/// The banner with addresses and a grpcurl session.
pub fn render(addresses: &Addresses) -> String {
    let Addresses { loms, checkout, product, kafka, metrics } = addresses;
    let metrics = metrics.map_or_else(|| "off".to_owned(), |addr| format!("http://{addr}/metrics"));
    format!(
        r#"
miniZON is running.

  LOMS            {loms}   (loms_v1.LomsV1, loms_v1.LomsAdminV1 — admin token: dev-admin-token)
  Checkout        {checkout}   (checkout_v1.CheckoutV1)
  ProductService  {product}   (route256.product.ProductService — token: testtoken)
  Kafka           {kafka}   (topic loms.order-status-changed)
  Metrics         {metrics}   (Prometheus, every service of this process)

Try it (grpcurl):
  grpcurl -plaintext {checkout} list
  grpcurl -plaintext -d '{{"user": 1, "sku": 1016, "count": 2}}' {checkout} checkout_v1.CheckoutV1/AddToCart
  grpcurl -plaintext -d '{{"user": 1}}' {checkout} checkout_v1.CheckoutV1/ListCart
  grpcurl -plaintext -H 'traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01' \
    -d '{{"user": 1}}' {checkout} checkout_v1.CheckoutV1/Purchase
  grpcurl -plaintext -d '{{"order_id": 1}}' {loms} loms_v1.LomsV1/ListOrder
  grpcurl -plaintext -d '{{"order_id": 1}}' {loms} loms_v1.LomsV1/OrderPayed
  kcat -b {kafka} -t loms.order-status-changed -C -f '%k %h %s\n'
  curl -s {metrics}

Ctrl-C stops everything.
"#
    )
}
