//! Checkout traffic: ListCart of carts with a fixed number of lines, with Checkout's product cache warm.
//!
//! Preparation, before any clock starts: the first `lines` skus of the ProductService catalog get stock in LOMS
//! (AddToCart checks it), every client's user gets a cart with one unit of each, and every client lists its cart
//! once so that the product cache holds every sku. Checkout limits ProductService calls to its quota (10/s by
//! default), so a cold cache would measure the quota, not Checkout.

use anyhow::Context as _;
use minizon_proto::{
    checkout::{AddToCartRequest, ListCartRequest, checkout_v1_client::CheckoutV1Client},
    product::{ListSkusRequest, product_service_client::ProductServiceClient},
};
use tonic::transport::Channel;

use crate::{
    runner::{Probe, Scenario},
    target::{AdminClient, Channels, endpoint, seed_stock},
};

/// Units per (warehouse, sku) seeded for the cart skus: carts only check stock, they never take it.
const CART_STOCK: u64 = 1_000_000;

/// ListCart of prepared carts.
#[derive(Debug, Clone)]
pub struct ListCart {
    channels: Channels,
    skus: Vec<u32>,
    first_user: i64,
}

impl ListCart {
    /// Finds `lines` catalog skus through ProductService at `product_url` and stocks them in LOMS (warehouse 1).
    /// Carts belong to users `first_user + client index`; use a fresh range for each run so carts start empty.
    pub async fn prepare(
        channels: Channels,
        product_url: &str,
        product_token: &str,
        admin: &mut AdminClient,
        lines: usize,
        first_user: i64,
    ) -> anyhow::Result<Self> {
        let channel = endpoint(product_url, std::time::Duration::from_secs(10))?
            .connect()
            .await
            .with_context(|| format!("connect to ProductService at {product_url}"))?;
        let count = u32::try_from(lines).context("too many cart lines")?;
        let skus = ProductServiceClient::new(channel)
            .list_skus(ListSkusRequest { token: product_token.to_owned(), start_after_sku: 0, count })
            .await
            .context("ProductService ListSkus")?
            .into_inner()
            .skus;
        anyhow::ensure!(skus.len() == lines, "the catalog has {} skus, the carts need {lines}", skus.len());
        seed_stock(admin, skus.iter().copied(), 1, CART_STOCK).await?;
        Ok(Self { channels, skus, first_user })
    }
}

impl Scenario for ListCart {
    type Client = (CheckoutV1Client<Channel>, i64);

    async fn connect(&self, index: usize) -> anyhow::Result<Self::Client> {
        let mut client = CheckoutV1Client::new(self.channels.for_client(index));
        let user = self.first_user + index as i64;
        for &sku in &self.skus {
            client.add_to_cart(AddToCartRequest { user, sku, count: 1 }).await.context("Checkout AddToCart")?;
        }
        // Warms the product cache (and checks the cart is what the scenario expects).
        let listed = client.list_cart(ListCartRequest { user }).await.context("Checkout ListCart")?.into_inner();
        anyhow::ensure!(listed.items.len() == self.skus.len(), "cart of user {user} has {} lines", listed.items.len());
        Ok((client, user))
    }

    async fn iteration(&self, (client, user): &mut Self::Client, probe: &mut Probe) {
        let _ = probe.call("ListCart", client.list_cart(ListCartRequest { user: *user })).await;
    }
}
