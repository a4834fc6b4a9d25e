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
        let available: u64 = candidates.iter().map(|row| row.available).sum();
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
}
