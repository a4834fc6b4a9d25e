//! Carts and the rules on them: what a line change is, how a cart is priced, and which idempotency key a purchase
//! of a cart carries.

use sha2::{Digest, Sha256};

use super::ids::{Count, Sku, UserId};

/// A request to add or remove units of one sku in one user's cart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineChange {
    pub user: UserId,
    pub sku: Sku,
    pub count: Count,
}

/// One line of a cart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CartLine {
    pub sku: Sku,
    pub count: Count,
}

/// A cart's version: bumped by every change of its lines and by every finished purchase attempt, so that a
/// purchase can tell whether the cart is still the one it bought, and the next attempt gets a fresh key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CartVersion(pub i64);

/// A user's cart as stored: its lines by ascending sku, and its version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cart {
    version: CartVersion,
    lines: Vec<CartLine>,
}

impl Cart {
    /// Most distinct skus one cart may hold. Within LOMS's limit per order (1,000), so that every cart can be
    /// purchased; and small enough that ListCart of a full cart with nothing cached (one ProductService look-up a
    /// line, at the default quota of 10 per second) finishes within the default request timeout (30 s).
    pub const MAX_LINES: usize = 100;

    /// A cart of `lines` (sorted here by sku; skus must be distinct) at `version`.
    pub fn new(version: CartVersion, mut lines: Vec<CartLine>) -> Self {
        lines.sort_by_key(|line| line.sku);
        Self { version, lines }
    }

    /// The version the lines were read at.
    pub fn version(&self) -> CartVersion {
        self.version
    }

    /// The lines, by ascending sku.
    pub fn lines(&self) -> &[CartLine] {
        &self.lines
    }

    /// Whether the cart holds nothing.
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// The `idempotency-key` of a purchase of this cart.
    ///
    /// Derived from the user, the version and the content, so that:
    /// * a retried purchase of an unchanged cart (its answer was lost) sends the same key, and LOMS answers with
    ///   the order it already created instead of creating a second one;
    /// * any change of the cart, a cleared cart, or a failed reservation bumps the version, so the next purchase
    ///   is a new order with a new key (and never replays an old failure);
    /// * the key can never come back with different items, which LOMS would refuse.
    ///
    /// 128 bits of SHA-256 keep the key short and collisions out of reach.
    pub fn purchase_key(&self, user: UserId) -> String {
        let mut hash = Sha256::new();
        hash.update(format!("minizon.checkout.purchase.v1\nuser={user}\nversion={}\n", self.version.0));
        for line in &self.lines {
            hash.update(format!("{}x{}\n", line.sku, line.count));
        }
        let digest = hash.finalize();
        format!("cart-v1-{}", hex::encode(&digest[..16]))
    }
}

/// A product's live name and price, as ProductService tells them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Product {
    pub name: String,
    pub price: u32,
}

/// A cart line with its product's name and price.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PricedLine {
    pub sku: Sku,
    pub count: Count,
    pub product: Product,
}

/// The cart's total does not fit the contract's uint32 `total_price`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the cart's total price exceeds {}, the most the contract's total_price can carry", u32::MAX)]
pub struct TotalPriceOverflow;

/// `Σ price × count`, never wrapping: a total beyond uint32 is an error, not a wrong number.
pub fn total_price(lines: &[PricedLine]) -> Result<u32, TotalPriceOverflow> {
    lines
        .iter()
        .try_fold(0u32, |total, line| {
            line.product.price.checked_mul(line.count.get()).and_then(|subtotal| total.checked_add(subtotal))
        })
        .ok_or(TotalPriceOverflow)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(sku: u32, count: u32) -> CartLine {
        CartLine { sku: Sku::try_from(sku).unwrap(), count: Count::try_from(count).unwrap() }
    }

    fn priced(count: u32, price: u32) -> PricedLine {
        PricedLine {
            sku: Sku::try_from(1u32).unwrap(),
            count: Count::try_from(count).unwrap(),
            product: Product { name: "x".into(), price },
        }
    }

    fn user(id: i64) -> UserId {
        UserId::try_from(id).unwrap()
    }

    #[test]
    fn the_total_is_the_sum_of_price_times_count() {
        assert_eq!(total_price(&[priced(2, 100), priced(3, 7)]), Ok(221));
        assert_eq!(total_price(&[]), Ok(0));
    }

    #[test]
    fn a_total_beyond_uint32_is_an_error_not_a_wrapped_number() {
        assert_eq!(total_price(&[priced(2, u32::MAX / 2 + 1)]), Err(TotalPriceOverflow));
        assert_eq!(total_price(&[priced(1, u32::MAX), priced(1, 1)]), Err(TotalPriceOverflow));
        assert_eq!(total_price(&[priced(1, u32::MAX)]), Ok(u32::MAX));
    }

    #[test]
    fn the_same_cart_gets_the_same_purchase_key() {
        let cart = Cart::new(CartVersion(3), vec![line(2, 1), line(1, 5)]);
        let same = Cart::new(CartVersion(3), vec![line(1, 5), line(2, 1)]);
        assert_eq!(cart.purchase_key(user(1)), same.purchase_key(user(1)));
        assert!(cart.purchase_key(user(1)).len() <= 64);
    }

    #[test]
    fn another_version_content_or_user_gets_another_key() {
        let cart = Cart::new(CartVersion(3), vec![line(1, 5)]);
        let key = cart.purchase_key(user(1));
        assert_ne!(key, Cart::new(CartVersion(4), vec![line(1, 5)]).purchase_key(user(1)));
        assert_ne!(key, Cart::new(CartVersion(3), vec![line(1, 6)]).purchase_key(user(1)));
        assert_ne!(key, cart.purchase_key(user(2)));
    }
}
