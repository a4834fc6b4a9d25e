//! The stock levels this process last committed, per sku: every warehouse row of the sku, as a CreateOrder batch
//! left them. With them a batch of new orders can be decided before anything is locked, and sent as BEGIN, one
//! write and COMMIT in one flight (docs/architecture.md, "Group commit").
//!
//! Never trusted: that write locks the rows itself and compares their free units (on hand − reserved, all that
//! allocation reads) with these levels' free units, and when they differ it fails and the batch runs the locking
//! way, which reads the levels afresh. Keeping the free units exact only saves that second attempt: every other write of stock in
//! this process that moved them forgets its skus after its commit (another replica's writes, and this process's
//! writes that race a batch, are caught by the comparison). A payment does not move them (on hand and reserved
//! fall alike) and keeps its skus known; their on-hand and reserved here are then above the rows' by the units
//! sold, which nothing reads.

use std::sync::Arc;

use crate::domain::{Ledger, Sku, StockLevel};

/// At most this many skus are kept; beyond it the least used go first.
const CAPACITY: u64 = 200_000;

/// Every warehouse row of each known sku (none: the sku has no stock row at all).
#[derive(Debug, Clone)]
pub(super) struct KnownLevels(moka::sync::Cache<u32, Arc<[StockLevel]>>);

impl Default for KnownLevels {
    fn default() -> Self {
        Self(moka::sync::Cache::builder().max_capacity(CAPACITY).build())
    }
}

impl KnownLevels {
    /// The rows of every sku of `skus`, or `None` when one of them is not known.
    pub(super) fn of(&self, skus: impl IntoIterator<Item = Sku>) -> Option<Vec<StockLevel>> {
        let mut levels = Vec::new();
        for sku in skus {
            levels.extend_from_slice(&self.0.get(&sku.get())?);
        }
        Some(levels)
    }

    /// The levels of `ledger` once committed, for every sku of `skus`: a ledger of new orders holds every
    /// warehouse row of their skus (what allocation reads), so a sku without a row in it has none.
    pub(super) fn remember(&self, skus: impl IntoIterator<Item = Sku>, ledger: &Ledger) {
        let levels = ledger.levels();
        for sku in skus {
            let rows: Arc<[StockLevel]> = levels.iter().filter(|level| level.sku == sku).copied().collect();
            self.0.insert(sku.get(), rows);
        }
    }

    /// Forgets `skus`, whose free units a write other than a batch of new orders moved (or may have moved).
    pub(super) fn forget(&self, skus: impl IntoIterator<Item = Sku>) {
        for sku in skus {
            self.0.invalidate(&sku.get());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Count, WarehouseId};

    fn sku(n: u32) -> Sku {
        Sku::try_from(n).unwrap()
    }

    fn level(warehouse: i64, s: u32, on_hand: u64, reserved: u64) -> StockLevel {
        StockLevel { warehouse: WarehouseId::try_from(warehouse).unwrap(), sku: sku(s), on_hand, reserved }
    }

    #[test]
    fn a_batch_is_known_only_when_every_sku_is() {
        let known = KnownLevels::default();
        let mut ledger = Ledger::new([level(1, 1, 10, 0), level(2, 1, 5, 0), level(1, 2, 3, 0)]);
        ledger.reserve([(sku(1), Count::try_from(4u32).unwrap())]).unwrap();
        // Sku 3 has no row at all: known as empty.
        known.remember([sku(1), sku(3)], &ledger);

        assert_eq!(known.of([sku(1)]), Some(vec![level(1, 1, 10, 4), level(2, 1, 5, 0)]));
        assert_eq!(known.of([sku(3)]), Some(vec![]));
        assert_eq!(known.of([sku(1), sku(2)]), None, "sku 2 was not remembered");

        known.forget([sku(1)]);
        assert_eq!(known.of([sku(1), sku(3)]), None);
        assert_eq!(known.of([sku(3)]), Some(vec![]));
    }
}
