//! How an order's units are spread over warehouses.
//!
//! Rule (deterministic, documented in docs/architecture.md): per sku, take the warehouses with the most free
//! units first (ties: the lower warehouse id), so an order touches as few warehouses as possible. Taking the
//! largest first is optimal for "fewest warehouses that cover n units".

use super::ids::{Count, Sku, WarehouseId};

/// Free units of one sku in one warehouse, as read under lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StockRow {
    pub sku: Sku,
    pub warehouse: WarehouseId,
    pub available: u64,
}

/// Units of one sku held for an order in one warehouse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reservation {
    pub sku: Sku,
    pub warehouse: WarehouseId,
    pub count: u64,
}

/// The first sku (in sku order) whose free units do not cover the order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shortage {
    pub sku: Sku,
    pub requested: u32,
    pub available: u64,
}

impl std::fmt::Display for Shortage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "sku {}: {} requested, {} available", self.sku, self.requested, self.available)
    }
}

/// Reserves every line across warehouses, all or nothing.
pub fn allocate(
    lines: impl IntoIterator<Item = (Sku, Count)>,
    stock: &[StockRow],
) -> Result<Vec<Reservation>, Shortage> {
    let mut reservations = Vec::new();
    for (sku, count) in lines {
        let mut candidates: Vec<&StockRow> = stock.iter().filter(|row| row.sku == sku && row.available > 0).collect();
        candidates.sort_by(|a, b| b.available.cmp(&a.available).then(a.warehouse.cmp(&b.warehouse)));
        // Saturating: a sum past u64 is "more than any order can ask for", never a wrapped small number.
        let available = candidates.iter().fold(0u64, |total, row| total.saturating_add(row.available));
        let mut missing = u64::from(count.get());
        if available < missing {
            return Err(Shortage { sku, requested: count.get(), available });
        }
        for row in candidates {
            if missing == 0 {
                break;
            }
            let take = row.available.min(missing);
            reservations.push(Reservation { sku, warehouse: row.warehouse, count: take });
            missing -= take;
        }
    }
    Ok(reservations)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn sku(n: u32) -> Sku {
        Sku::try_from(n).unwrap()
    }
    fn wh(n: i64) -> WarehouseId {
        WarehouseId::try_from(n).unwrap()
    }
    fn row(s: u32, w: i64, available: u64) -> StockRow {
        StockRow { sku: sku(s), warehouse: wh(w), available }
    }
    fn count(n: u32) -> Count {
        Count::try_from(n).unwrap()
    }

    #[test]
    fn the_fullest_warehouse_is_used_first() {
        let stock = [row(1, 1, 3), row(1, 2, 10), row(1, 3, 5)];
        let got = allocate([(sku(1), count(4))], &stock).unwrap();
        assert_eq!(got, vec![Reservation { sku: sku(1), warehouse: wh(2), count: 4 }]);
    }

    #[test]
    fn an_order_larger_than_any_warehouse_spans_the_fewest() {
        let stock = [row(1, 1, 3), row(1, 2, 10), row(1, 3, 5)];
        let got = allocate([(sku(1), count(14))], &stock).unwrap();
        assert_eq!(
            got,
            vec![
                Reservation { sku: sku(1), warehouse: wh(2), count: 10 },
                Reservation { sku: sku(1), warehouse: wh(3), count: 4 },
            ]
        );
    }

    #[test]
    fn ties_go_to_the_lower_warehouse_id() {
        let stock = [row(1, 7, 5), row(1, 4, 5)];
        let got = allocate([(sku(1), count(2))], &stock).unwrap();
        assert_eq!(got[0].warehouse, wh(4));
    }

    #[test]
    fn a_short_sku_fails_the_whole_order_and_is_named() {
        let stock = [row(1, 1, 5), row(2, 1, 1), row(2, 2, 1)];
        let got = allocate([(sku(1), count(5)), (sku(2), count(3))], &stock);
        assert_eq!(got, Err(Shortage { sku: sku(2), requested: 3, available: 2 }));
    }

    #[test]
    fn an_unknown_sku_is_short_with_nothing_available() {
        assert_eq!(allocate([(sku(9), count(1))], &[]), Err(Shortage { sku: sku(9), requested: 1, available: 0 }));
    }

    #[test]
    fn free_units_beyond_u64_in_total_do_not_wrap() {
        let stock = [row(1, 1, u64::MAX), row(1, 2, u64::MAX), row(1, 3, 2)];
        let got = allocate([(sku(1), count(3))], &stock).unwrap();
        assert_eq!(got, vec![Reservation { sku: sku(1), warehouse: wh(1), count: 3 }]);
    }

    /// Lines of distinct skus in 1..=4, as an order has them after merging (sorted by sku).
    fn lines_strategy() -> impl Strategy<Value = Vec<(Sku, Count)>> {
        proptest::collection::btree_map(1u32..=4, 1u32..=40, 1..=4)
            .prop_map(|lines| lines.into_iter().map(|(s, n)| (sku(s), count(n))).collect())
    }

    /// Free stock of skus 1..=5 (sku 5 is never ordered) in warehouses 1..=5, each (sku, warehouse) once.
    fn stock_strategy() -> impl Strategy<Value = Vec<StockRow>> {
        proptest::collection::btree_map((1u32..=5, 1i64..=5), 0u64..=30, 0..=20)
            .prop_map(|rows| rows.into_iter().map(|((s, w), available)| row(s, w, available)).collect())
    }

    /// The fewest warehouses whose free units of `sku` cover `wanted` (brute force over every subset).
    fn fewest_warehouses(stock: &[StockRow], sku: Sku, wanted: u64) -> Option<usize> {
        let rows: Vec<u64> = stock.iter().filter(|r| r.sku == sku && r.available > 0).map(|r| r.available).collect();
        (0u32..(1 << rows.len()))
            .filter(|subset| (0..rows.len()).filter(|i| subset & (1 << i) != 0).map(|i| rows[i]).sum::<u64>() >= wanted)
            .map(|subset| subset.count_ones() as usize)
            .min()
    }

    proptest! {
        /// All or nothing, never more than is free, exactly what was asked, in the fewest warehouses, and the same
        /// answer for the same input whatever order the stock rows were read in.
        #[test]
        fn allocation_is_exact_bounded_minimal_and_deterministic(
            lines in lines_strategy(),
            (stock, shuffled) in stock_strategy().prop_flat_map(|stock| (Just(stock.clone()), Just(stock).prop_shuffle())),
        ) {
            let free = |s: Sku| stock.iter().filter(|r| r.sku == s).map(|r| r.available).sum::<u64>();
            let result = allocate(lines.iter().copied(), &stock);

            prop_assert_eq!(&allocate(lines.iter().copied(), &shuffled), &result, "deterministic");

            match result {
                Ok(reservations) => {
                    for &(s, n) in &lines {
                        let taken: Vec<&Reservation> = reservations.iter().filter(|r| r.sku == s).collect();
                        prop_assert_eq!(taken.iter().map(|r| r.count).sum::<u64>(), u64::from(n.get()), "exact");
                        prop_assert_eq!(Some(taken.len()), fewest_warehouses(&stock, s, u64::from(n.get())));
                    }
                    for r in &reservations {
                        prop_assert!(r.count > 0, "no empty reservation");
                        prop_assert!(lines.iter().any(|&(s, _)| s == r.sku), "only ordered skus");
                        let row = stock.iter().find(|row| row.sku == r.sku && row.warehouse == r.warehouse);
                        prop_assert!(row.is_some_and(|row| r.count <= row.available), "never over-allocates");
                        let same = reservations.iter().filter(|o| o.sku == r.sku && o.warehouse == r.warehouse);
                        prop_assert_eq!(same.count(), 1, "one reservation per warehouse and sku");
                    }
                }
                Err(shortage) => {
                    // The named sku is the first short one; every sku before it was coverable.
                    let first_short = lines.iter().find(|&&(s, n)| free(s) < u64::from(n.get()));
                    prop_assert_eq!(first_short.map(|&(s, _)| s), Some(shortage.sku));
                    prop_assert_eq!(shortage.available, free(shortage.sku));
                }
            }
        }
    }
}
