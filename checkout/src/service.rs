//! The use cases of Checkout: the domain's rules around the cart store and the LOMS and ProductService clients.

use std::{num::NonZeroUsize, sync::Arc};

use futures::{StreamExt, TryStreamExt, stream};

use crate::{
    clients::{Deadline, LomsClient, loms::OrderStanding},
    domain::{AddOutcome, CartStore, Count, LineChange, OrderId, PricedLine, UserId, total_price},
    error::Error,
    products::ProductCatalog,
};

/// A cart with live names and prices, and its total.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PricedCart {
    pub lines: Vec<PricedLine>,
    pub total_price: u32,
}

/// Carts and purchase.
#[derive(Debug, Clone)]
pub struct Checkout {
    store: Arc<dyn CartStore>,
    loms: LomsClient,
    products: ProductCatalog,
    lookups_per_request: NonZeroUsize,
}

impl Checkout {
    /// The use cases over `store`, with at most `lookups_per_request` product look-ups in flight per ListCart.
    pub fn new(
        store: Arc<dyn CartStore>,
        loms: LomsClient,
        products: ProductCatalog,
        lookups_per_request: NonZeroUsize,
    ) -> Self {
        Self { store, loms, products, lookups_per_request }
    }

    /// Adds units to a cart line, if ProductService knows the sku and the warehouses hold the new line quantity.
    pub async fn add_to_cart(&self, change: LineChange, deadline: Deadline) -> Result<(), Error> {
        let LineChange { user, sku, count } = change;
        // Both checks are independent: ask both services at once.
        let ((), available) = tokio::try_join!(
            async { self.products.product(sku, deadline).await.map(drop) },
            self.loms.available(sku, deadline),
        )?;
        // The store checks the new line quantity against the stock in the statement that adds, so racing requests
        // cannot together go beyond what was checked (nor beyond a line's limit).
        let limit = u32::try_from(available.min(u64::from(Count::MAX))).unwrap_or(Count::MAX);
        match self.store.add(user, sku, count, limit).await? {
            AddOutcome::Added { count } => {
                tracing::debug!(%user, %sku, %count, "added to cart");
                Ok(())
            }
            AddOutcome::CartFull => Err(Error::CartFull { sku }),
            AddOutcome::Refused { current } => {
                let requested = current.saturating_add(count.get());
                Err(if requested > Count::MAX {
                    Error::CartLineFull { sku, requested }
                } else {
                    Error::InsufficientStock { sku, requested, available }
                })
            }
        }
    }

    /// Removes units from a cart line; removing what is not there succeeds.
    pub async fn delete_from_cart(&self, change: LineChange) -> Result<(), Error> {
        self.store.remove(change.user, change.sku, change.count).await
    }

    /// The cart with live names and prices: look-ups run concurrently, a bounded number at a time.
    pub async fn list_cart(&self, user: UserId, deadline: Deadline) -> Result<PricedCart, Error> {
        let cart = self.store.cart(user).await?;
        // `buffered` keeps the sku order and stops at the first failure (dropping the look-ups still running).
        let lines: Vec<PricedLine> = stream::iter(cart.lines().iter().copied())
            .map(|line| async move {
                let product = self.products.product(line.sku, deadline).await?;
                Ok::<_, Error>(PricedLine { sku: line.sku, count: line.count, product })
            })
            .buffered(self.lookups_per_request.get())
            .try_collect()
            .await?;
        let total_price = total_price(&lines)?;
        Ok(PricedCart { lines, total_price })
    }

    /// Turns the cart into an order awaiting payment and empties the cart.
    ///
    /// Retry-safe: the idempotency key comes from the cart's version and content, so a purchase repeated after a
    /// lost answer gets the order LOMS already created. The cart is emptied only once LOMS has answered with an
    /// order (which LOMS does only after reserving it: the order awaits payment), and only if it is still the
    /// cart that was bought; a cart changed meanwhile is left alone. A failed reservation keeps the cart but bumps
    /// its version, so that the next attempt (say, after a restock) is a new order rather than a replay of the
    /// failure.
    ///
    /// A replayed order is looked at before it is handed out, since it may have moved on after its answer was
    /// lost: one cancelled (the unpaid timeout, say) is not a purchase, so the cart's version is bumped and the
    /// cart is bought again as a new order; one already paid means the cart was bought, so the cart is emptied and
    /// the purchase says so ([`Error::AlreadyPurchased`]) instead of reporting it as new.
    pub async fn purchase(&self, user: UserId, deadline: Deadline) -> Result<OrderId, Error> {
        let mut cart = self.store.cart(user).await?;
        // A second round only follows a stale replay, with a new version and so a new key: it cannot replay.
        for _round in 0..2 {
            if cart.is_empty() {
                return Err(Error::EmptyCart);
            }
            let key = cart.purchase_key(user);
            let created = match self.loms.create_order(user, cart.lines(), &key, deadline).await {
                Ok(created) => created,
                Err(Error::ReservationFailed(reason)) => {
                    // The failure is the answer; a failed bump only means the next attempt replays it until the
                    // cart changes, so it is logged rather than reported.
                    if let Err(error) = self.store.bump_version(user, cart.version()).await {
                        tracing::warn!(%user, %error, "cannot bump the cart version after a failed reservation");
                    }
                    return Err(Error::ReservationFailed(reason));
                }
                Err(error) => return Err(error),
            };
            let order_id = created.order_id;
            let standing = if created.replayed {
                self.loms.order_standing(order_id, deadline).await?
            } else {
                OrderStanding::AwaitingPayment
            };
            match standing {
                OrderStanding::AwaitingPayment => {
                    if self.store.clear_purchased(user, cart.version()).await? {
                        tracing::info!(%user, %order_id, "cart purchased");
                    } else {
                        tracing::warn!(%user, %order_id, "the cart changed during its purchase; it was left as it is");
                    }
                    return Ok(order_id);
                }
                OrderStanding::Bought { status } => {
                    let emptied = self.store.clear_purchased(user, cart.version()).await?;
                    tracing::info!(%user, %order_id, status, emptied, "the cart was already bought");
                    return Err(Error::AlreadyPurchased { order_id, status, emptied });
                }
                OrderStanding::Ended => {
                    tracing::info!(%user, %order_id, "the cart's earlier order ended unpaid: buying it as a new order");
                    self.store.bump_version(user, cart.version()).await?;
                    cart = self.store.cart(user).await?;
                }
            }
        }
        Err(Error::internal(std::io::Error::other("a purchase replayed an ended order twice")))
    }
}
