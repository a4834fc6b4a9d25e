//! Stock levels and the one rule every change of them obeys: units on hand never fall below zero or below what
//! orders awaiting payment have reserved. Both backends load and lock the rows a transaction touches, let a
//! [`Ledger`] decide every change on them (reserve, sell, release, restock, set, add), and write its deltas; the
//! database's check constraints stay as the last line of defence.

use std::collections::BTreeMap;

use super::{
    allocation::{Reservation, Shortage, StockRow, allocate},
    error::LomsError,
    ids::{Count, InvalidInput, Sku, WarehouseId},
};

/// One warehouse's stock of one sku.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StockLevel {
    pub warehouse: WarehouseId,
    pub sku: Sku,
    pub on_hand: u64,
    pub reserved: u64,
}

impl StockLevel {
    /// A shelf never stocked: nothing on hand, nothing reserved.
    pub fn empty(warehouse: WarehouseId, sku: Sku) -> Self {
        Self { warehouse, sku, on_hand: 0, reserved: 0 }
    }

    /// Units that can still be bought.
    pub fn available(&self) -> u64 {
        self.on_hand.saturating_sub(self.reserved)
    }

    /// The level with `on_hand` units on hand: refused below zero or below what is reserved (the operator's
    /// error, [`LomsError::StockBelowReserved`]), and beyond what a database integer holds.
    pub fn with_on_hand(self, on_hand: i128) -> Result<Self, LomsError> {
        if on_hand > i128::from(i64::MAX) {
            return Err(InvalidInput(format!(
                "{on_hand} units on hand is too large: the stock count overflows its limit of {}",
                i64::MAX
            ))
            .into());
        }
        match u64::try_from(on_hand) {
            Ok(units) if units >= self.reserved => Ok(Self { on_hand: units, ..self }),
            _ => Err(LomsError::StockBelowReserved {
                warehouse: self.warehouse,
                sku: self.sku,
                on_hand,
                reserved: self.reserved,
            }),
        }
    }

    /// The level with `delta` (which may be negative) added on hand, under the rule of [`Self::with_on_hand`].
    pub fn with_added(self, delta: i64) -> Result<Self, LomsError> {
        self.with_on_hand(i128::from(self.on_hand) + i128::from(delta))
    }

    /// The level after `delta`, or the broken rule. A transition that breaks it is a bug (its units were
    /// counted when reserved), never a caller's error.
    fn apply(self, delta: Delta) -> Result<Self, LomsError> {
        let on_hand = i128::from(self.on_hand) + delta.on_hand;
        let reserved = i128::from(self.reserved) + delta.reserved;
        if reserved < 0 || reserved > on_hand || on_hand > i128::from(i64::MAX) {
            return Err(LomsError::Internal(
                format!(
                    "warehouse {} sku {}: {on_hand} on hand with {reserved} reserved breaks the stock rule",
                    self.warehouse, self.sku
                )
                .into(),
            ));
        }
        // Both are within 0..=i64::MAX here.
        Ok(Self { on_hand: on_hand as u64, reserved: reserved as u64, ..self })
    }
}

/// A change of units on hand and reserved, as signed amounts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Delta {
    on_hand: i128,
    reserved: i128,
}

/// A change to write to one (warehouse, sku): add `on_hand` and `reserved` (either may be negative).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StockDelta {
    pub warehouse: WarehouseId,
    pub sku: Sku,
    pub on_hand: i64,
    pub reserved: i64,
}

/// What ending (or undoing) an order's hold on stock does to the rows it was taken from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settlement {
    /// Payment: the reserved units leave the warehouse.
    Sell,
    /// Cancellation before payment: the reserved units are free again.
    Release,
    /// A refund of a paid order, or a received return: the units taken come back on hand.
    Restock,
}

/// The stock rows one transaction locked, and the changes decided on them so far. Every change is checked
/// against the rule as it is made, so a ledger never holds a level the rule forbids.
#[derive(Debug, Clone, Default)]
pub struct Ledger {
    /// Per row: the level as locked (`None`: the row does not exist yet), and the level now.
    rows: BTreeMap<(Sku, WarehouseId), (Option<StockLevel>, StockLevel)>,
}

impl Ledger {
    /// A ledger over the locked rows.
    pub fn new(levels: impl IntoIterator<Item = StockLevel>) -> Self {
        Self { rows: levels.into_iter().map(|level| ((level.sku, level.warehouse), (Some(level), level))).collect() }
    }

    /// The current level of one row (an empty one if it was never stocked, or not locked).
    pub fn level(&self, warehouse: WarehouseId, sku: Sku) -> StockLevel {
        self.rows.get(&(sku, warehouse)).map_or(StockLevel::empty(warehouse, sku), |(_, now)| *now)
    }

    /// Reserves every line across warehouses from the free units, all or nothing (see [`allocate`]); on a
    /// shortage nothing is reserved.
    pub fn reserve(&mut self, lines: impl IntoIterator<Item = (Sku, Count)>) -> Result<Vec<Reservation>, Shortage> {
        let free: Vec<StockRow> = self
            .rows
            .values()
            .map(|(_, now)| StockRow { sku: now.sku, warehouse: now.warehouse, available: now.available() })
            .collect();
        let reservations = allocate(lines, &free)?;
        for reservation in &reservations {
            // Taken from free units, so the rule holds by construction.
            self.change(
                reservation.warehouse,
                reservation.sku,
                Delta { on_hand: 0, reserved: reservation.count.into() },
            )
            .expect("an allocation only takes free units");
        }
        Ok(reservations)
    }

    /// Ends or undoes the hold of `held` (an order's reservations, as stored) the way `settlement` says.
    pub fn settle(&mut self, settlement: Settlement, held: &[Reservation]) -> Result<(), LomsError> {
        for r in held {
            let count = i128::from(r.count);
            let delta = match settlement {
                Settlement::Sell => Delta { on_hand: -count, reserved: -count },
                Settlement::Release => Delta { on_hand: 0, reserved: -count },
                Settlement::Restock => Delta { on_hand: count, reserved: 0 },
            };
            self.change(r.warehouse, r.sku, delta)?;
        }
        Ok(())
    }

    /// Sets the units on hand of one row, under the rule.
    pub fn set_on_hand(&mut self, warehouse: WarehouseId, sku: Sku, on_hand: i128) -> Result<StockLevel, LomsError> {
        let current = self.level(warehouse, sku);
        let next = current.with_on_hand(on_hand)?;
        self.put(next);
        Ok(next)
    }

    /// Adds `delta` on hand to one row, under the rule.
    pub fn add_on_hand(&mut self, warehouse: WarehouseId, sku: Sku, delta: i64) -> Result<StockLevel, LomsError> {
        let current = self.level(warehouse, sku);
        let next = current.with_added(delta)?;
        self.put(next);
        Ok(next)
    }

    /// The changes to write to existing rows, one per changed row, in the global lock order (sku, warehouse).
    pub fn deltas(&self) -> Vec<StockDelta> {
        self.rows
            .values()
            .filter_map(|(before, now)| Some((before.as_ref()?, now)))
            .filter(|(before, now)| before != now)
            .map(|(before, now)| StockDelta {
                warehouse: now.warehouse,
                sku: now.sku,
                // Both levels are within 0..=i64::MAX (the rule), so the differences fit.
                on_hand: now.on_hand as i64 - before.on_hand as i64,
                reserved: now.reserved as i64 - before.reserved as i64,
            })
            .collect()
    }

    /// The skus of the rows whose free units (on hand − reserved) the changes moved, in order. A sale moves on hand
    /// and reserved alike and leaves them as they were, and free units are all that allocation reads and all that
    /// Stocks answers: what a process keeps of them stays true across a sale.
    pub fn skus_with_free_units_moved(&self) -> Vec<Sku> {
        let mut skus: Vec<Sku> =
            self.deltas().into_iter().filter(|delta| delta.on_hand != delta.reserved).map(|delta| delta.sku).collect();
        // The deltas come in (sku, warehouse) order, so a sku's rows are adjacent.
        skus.dedup();
        skus
    }

    /// The levels after the changes of the rows that changed or are new (an operator may stock a shelf with zero
    /// units), in the global lock order.
    pub fn changed(&self) -> Vec<StockLevel> {
        self.rows.values().filter(|(before, now)| *before != Some(*now)).map(|(_, now)| *now).collect()
    }

    /// Every row's level now, in the global lock order.
    pub fn levels(&self) -> Vec<StockLevel> {
        self.rows.values().map(|(_, now)| *now).collect()
    }

    /// Applies `delta` to a row the transaction locked (reservations are only ever of existing rows).
    fn change(&mut self, warehouse: WarehouseId, sku: Sku, delta: Delta) -> Result<(), LomsError> {
        let Some((Some(_), current)) = self.rows.get(&(sku, warehouse)) else {
            return Err(LomsError::Internal(
                format!("warehouse {warehouse} sku {sku} was changed without its lock").into(),
            ));
        };
        let next = current.apply(delta)?;
        self.put(next);
        Ok(())
    }

    fn put(&mut self, next: StockLevel) {
        self.rows.entry((next.sku, next.warehouse)).or_insert((None, next)).1 = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sku(n: u32) -> Sku {
        Sku::try_from(n).unwrap()
    }
    fn wh(n: i64) -> WarehouseId {
        WarehouseId::try_from(n).unwrap()
    }
    fn level(w: i64, s: u32, on_hand: u64, reserved: u64) -> StockLevel {
        StockLevel { warehouse: wh(w), sku: sku(s), on_hand, reserved }
    }

    #[test]
    fn on_hand_cannot_fall_below_reserved_or_zero() {
        let l = level(1, 1, 10, 4);
        assert!(l.with_on_hand(4).is_ok());
        assert!(matches!(l.with_on_hand(3), Err(LomsError::StockBelowReserved { on_hand: 3, reserved: 4, .. })));
        assert!(matches!(level(1, 1, 0, 0).with_added(-1), Err(LomsError::StockBelowReserved { .. })));
        assert!(matches!(l.with_added(i64::MAX), Err(LomsError::InvalidInput(_))));
    }

    #[test]
    fn a_reservation_then_a_sale_leaves_the_warehouse_and_the_deltas_say_so() {
        let mut ledger = Ledger::new([level(1, 1, 10, 0), level(2, 1, 3, 0)]);
        let reserved = ledger.reserve([(sku(1), Count::try_from(12u32).unwrap())]).unwrap();
        assert_eq!(ledger.level(wh(1), sku(1)).reserved, 10);
        ledger.settle(Settlement::Sell, &reserved).unwrap();
        assert_eq!(
            ledger.deltas(),
            vec![
                StockDelta { warehouse: wh(1), sku: sku(1), on_hand: -10, reserved: 0 },
                StockDelta { warehouse: wh(2), sku: sku(1), on_hand: -2, reserved: 0 },
            ]
        );
    }

    #[test]
    fn a_sale_leaves_the_free_units_as_they_were_and_a_release_or_a_restock_moves_them() {
        let held = |s: u32| [Reservation { sku: sku(s), warehouse: wh(1), count: 2 }];
        let rows = [level(1, 1, 10, 4), level(2, 1, 5, 0), level(1, 2, 10, 4), level(1, 3, 10, 4)];
        let mut ledger = Ledger::new(rows);
        ledger.settle(Settlement::Sell, &held(1)).unwrap();
        assert_eq!(ledger.skus_with_free_units_moved(), Vec::<Sku>::new(), "2 sold: 8 on hand, 2 reserved, 6 free");

        ledger.settle(Settlement::Release, &held(2)).unwrap();
        ledger.settle(Settlement::Restock, &held(3)).unwrap();
        assert_eq!(ledger.skus_with_free_units_moved(), vec![sku(2), sku(3)]);
    }

    #[test]
    fn releasing_more_than_is_reserved_is_a_bug_not_a_new_level() {
        let mut ledger = Ledger::new([level(1, 1, 10, 1)]);
        let held = [Reservation { sku: sku(1), warehouse: wh(1), count: 2 }];
        assert!(matches!(ledger.settle(Settlement::Release, &held), Err(LomsError::Internal(_))));
    }
}
