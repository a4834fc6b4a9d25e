//! The stock levels this process last committed, per sku: every warehouse row of the sku, as its writes left them.
//! With them a batch of new orders can be decided before anything is locked, and sent as BEGIN, one write and
//! COMMIT in one flight (docs/architecture.md, "Group commit").
//!
//! Never trusted: that write locks the rows itself and compares their free units (on hand − reserved, all that
//! allocation reads) with these levels' free units, and when they differ it fails and the batch runs the locking
//! way, which reads the levels afresh. Keeping the free units exact only saves that second attempt. So every other
//! write of orders in this process (payments, cancellations, refunds, the unpaid sweep) refreshes the known rows it
//! locked with the levels it left ([`KnownLevels::refresh`]), and an operator's change of stock forgets its skus;
//! another replica's writes, and this process's writes that race a batch, are caught by the comparison.
//! A payment on another replica does not move free units (on hand and reserved fall alike): the rows' on hand and
//! reserved are then below those known here by the units sold, which nothing reads.

use std::sync::Arc;

use moka::ops::compute::Op;

use crate::domain::{Sku, StockLevel};

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

    /// Every warehouse row of each sku of `skus` as committed, from `rows` (in (sku, warehouse) order), which hold
    /// every row of those skus: a sku without a row in them has none.
    pub(super) fn remember(&self, skus: &[Sku], rows: &[StockLevel]) {
        for &sku in skus {
            let of_sku: Arc<[StockLevel]> = rows.iter().filter(|level| level.sku == sku).copied().collect();
            self.0.insert(sku.get(), of_sku);
        }
    }

    /// Takes the rows `left`, as a committed write left them (read under its locks, its changes applied; in (sku,
    /// warehouse) order), for the skus known: a cancellation's released units stay known, and the next batch of new
    /// orders on its skus still goes in one flight. A sku not known stays unknown (a payment or a cancellation reads
    /// only the rows its orders hold, not every warehouse row of a sku); a known sku with a row it did not know
    /// (stocked since) is forgotten.
    pub(super) fn refresh(&self, left: &[StockLevel]) {
        for rows in left.chunk_by(|a, b| a.sku == b.sku) {
            self.0.entry(rows[0].sku.get()).and_compute_with(|known| {
                let Some(known) = known else { return Op::Nop };
                let mut levels = known.into_value().to_vec();
                for row in rows {
                    match levels.iter_mut().find(|level| level.warehouse == row.warehouse) {
                        Some(level) => *level = *row,
                        None => return Op::Remove,
                    }
                }
                Op::Put(levels.into())
            });
        }
    }

    /// Forgets `skus`, whose free units a write moved without reading them (an operator's change of stock), or a
    /// write whose commit's outcome is unknown may have moved.
    pub(super) fn forget(&self, skus: impl IntoIterator<Item = Sku>) {
        for sku in skus {
            self.0.invalidate(&sku.get());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Count, Ledger, WarehouseId};

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
        known.remember(&[sku(1), sku(3)], &ledger.levels());

        assert_eq!(known.of([sku(1)]), Some(vec![level(1, 1, 10, 4), level(2, 1, 5, 0)]));
        assert_eq!(known.of([sku(3)]), Some(vec![]));
        assert_eq!(known.of([sku(1), sku(2)]), None, "sku 2 was not remembered");

        known.forget([sku(1)]);
        assert_eq!(known.of([sku(1), sku(3)]), None);
        assert_eq!(known.of([sku(3)]), Some(vec![]));
    }

    #[test]
    fn a_write_refreshes_the_rows_of_known_skus_only() {
        let known = KnownLevels::default();
        let ledger = Ledger::new([level(1, 1, 10, 4), level(2, 1, 5, 0), level(1, 2, 3, 0)]);
        known.remember(&[sku(1), sku(2)], &ledger.levels());

        // A cancellation released 3 of sku 1's units in warehouse 1; sku 4 (never known) was read too.
        known.refresh(&[level(1, 1, 10, 1), level(1, 4, 8, 8)]);
        assert_eq!(known.of([sku(1)]), Some(vec![level(1, 1, 10, 1), level(2, 1, 5, 0)]), "warehouse 2 kept");
        assert_eq!(known.of([sku(4)]), None, "one row is not every row of a sku");

        // Sku 2 has a row in a warehouse it was not known in: forgotten, not half known.
        known.refresh(&[level(1, 2, 3, 0), level(3, 2, 7, 0)]);
        assert_eq!(known.of([sku(2)]), None);
        assert_eq!(known.of([sku(1)]), Some(vec![level(1, 1, 10, 1), level(2, 1, 5, 0)]));
    }
}
