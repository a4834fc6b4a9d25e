//! What `minizon dev` prints once everything listens: the addresses, and commands to paste.

use crate::dev::Addresses;

/// The banner with addresses and a grpcurl session.
pub fn render(addresses: &Addresses) -> String {
    let Addresses { loms, checkout, product, kafka } = addresses;
    format!(
        r#"
miniZON is running.

  LOMS            {loms}   (loms_v1.LomsV1, loms_v1.LomsAdminV1 — admin token: dev-admin-token)
  Checkout        {checkout}   (checkout_v1.CheckoutV1)
  ProductService  {product}   (route256.product.ProductService — token: testtoken)
  Kafka           {kafka}   (topic loms.order-status-changed)

Try it (grpcurl):
  grpcurl -plaintext {checkout} list
  grpcurl -plaintext -d '{{"user": 1, "sku": 1016, "count": 2}}' {checkout} checkout_v1.CheckoutV1/AddToCart
  grpcurl -plaintext -d '{{"user": 1}}' {checkout} checkout_v1.CheckoutV1/ListCart
  grpcurl -plaintext -d '{{"user": 1}}' {checkout} checkout_v1.CheckoutV1/Purchase
  grpcurl -plaintext -d '{{"order_id": 1}}' {loms} loms_v1.LomsV1/ListOrder
  grpcurl -plaintext -d '{{"order_id": 1}}' {loms} loms_v1.LomsV1/OrderPayed
  kcat -b {kafka} -t loms.order-status-changed -C -f '%k %s\n'

Ctrl-C stops everything.
"#
    )
}
