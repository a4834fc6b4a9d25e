//! The product catalog: products by sku, loaded once at start from a JSON file (or the bundled sample).
//!
//! File format: a JSON array of `{"sku": <uint32 > 0>, "name": <non-empty string>, "price": <uint32>}` objects,
//! skus unique. Prices are whole units of the shop's currency, as the contract's `uint32 price` carries them.

use std::{collections::BTreeMap, ops::Bound, path::Path};

use serde::Deserialize;

/// The sample catalog shipped in `samples/catalog.json`, compiled in so that the binary runs from any directory.
pub const BUNDLED_CATALOG: &str = include_str!("../../samples/catalog.json");

/// One product as the catalog lists it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Product {
    /// Stock-keeping unit; never zero.
    pub sku: u32,
    /// Display name.
    pub name: String,
    /// Price of one unit.
    pub price: u32,
}

/// Why a catalog was refused.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The file is not a JSON array of products.
    #[error("the catalog is not a JSON array of {{sku, name, price}} objects: {0}")]
    Json(#[from] serde_json::Error),
    /// The file could not be read.
    #[error("cannot read the catalog file: {0}")]
    Io(#[from] std::io::Error),
    /// A product breaks a rule of the format.
    #[error("catalog entry {index} (sku {sku}): {problem}")]
    InvalidProduct { index: usize, sku: u32, problem: &'static str },
}

/// Products by sku, in sku order (ListSkus pages through them).
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    products: BTreeMap<u32, Product>,
}

impl Catalog {
    /// A catalog of `products`; refuses sku 0, empty names and duplicate skus.
    pub fn new(products: impl IntoIterator<Item = Product>) -> Result<Self, CatalogError> {
        let mut by_sku = BTreeMap::new();
        for (index, product) in products.into_iter().enumerate() {
            let sku = product.sku;
            let invalid = |problem| CatalogError::InvalidProduct { index, sku, problem };
            if sku == 0 {
                return Err(invalid("sku must not be 0"));
            }
            if product.name.trim().is_empty() {
                return Err(invalid("name must not be empty"));
            }
            if by_sku.insert(sku, product).is_some() {
                return Err(invalid("sku appears more than once"));
            }
        }
        Ok(Self { products: by_sku })
    }

    /// Parses the JSON format described in the module documentation.
    pub fn from_json(text: &str) -> Result<Self, CatalogError> {
        Self::new(serde_json::from_str::<Vec<Product>>(text)?)
    }

    /// Reads and parses a catalog file.
    pub fn load(path: &Path) -> Result<Self, CatalogError> {
        Self::from_json(&std::fs::read_to_string(path)?)
    }

    /// The sample catalog compiled into the binary.
    pub fn bundled() -> Result<Self, CatalogError> {
        Self::from_json(BUNDLED_CATALOG)
    }

    /// The product with this sku.
    pub fn get(&self, sku: u32) -> Option<&Product> {
        self.products.get(&sku)
    }

    /// Up to `count` skus greater than `start_after`, ascending: one page of ListSkus.
    pub fn skus_after(&self, start_after: u32, count: usize) -> Vec<u32> {
        self.products.range((Bound::Excluded(start_after), Bound::Unbounded)).take(count).map(|(sku, _)| *sku).collect()
    }

    /// How many products the catalog holds.
    pub fn len(&self) -> usize {
        self.products.len()
    }

    /// Whether the catalog holds no product.
    pub fn is_empty(&self) -> bool {
        self.products.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn product(sku: u32, name: &str, price: u32) -> Product {
        Product { sku, name: name.into(), price }
    }

    #[test]
    fn the_bundled_catalog_is_large_and_valid() {
        let catalog = Catalog::bundled().expect("the bundled catalog parses");
        assert!(catalog.len() >= 1_000, "only {} products", catalog.len());
        assert!(catalog.products.values().all(|p| p.price > 0));
    }

    #[test]
    fn the_sample_stock_file_only_names_catalog_skus_in_at_least_three_warehouses() {
        let catalog = Catalog::bundled().unwrap();
        let mut reader = csv::Reader::from_reader(include_str!("../../samples/stock.csv").as_bytes());
        assert_eq!(reader.headers().unwrap(), vec!["warehouse_id", "sku", "count"]);
        let mut warehouses = HashSet::new();
        for record in reader.records() {
            let record = record.unwrap();
            let warehouse: i64 = record[0].parse().unwrap();
            let sku: u32 = record[1].parse().unwrap();
            let _count: u64 = record[2].parse().unwrap();
            assert!(catalog.get(sku).is_some(), "stock row for sku {sku}, which the catalog lacks");
            warehouses.insert(warehouse);
        }
        assert!(warehouses.len() >= 3);
    }

    #[test]
    fn pages_continue_after_the_given_sku() {
        let catalog = Catalog::new([product(5, "e", 1), product(1, "a", 1), product(3, "c", 1)]).unwrap();
        assert_eq!(catalog.skus_after(0, 2), vec![1, 3]);
        assert_eq!(catalog.skus_after(3, 2), vec![5]);
        assert_eq!(catalog.skus_after(2, 10), vec![3, 5]);
        assert!(catalog.skus_after(5, 10).is_empty());
    }

    #[test]
    fn duplicate_skus_zero_skus_and_empty_names_are_refused() {
        assert!(Catalog::new([product(1, "a", 1), product(1, "b", 2)]).is_err());
        assert!(Catalog::new([product(0, "a", 1)]).is_err());
        assert!(Catalog::new([product(1, " ", 1)]).is_err());
    }

    #[test]
    fn unknown_fields_are_refused_so_typos_are_caught() {
        assert!(Catalog::from_json(r#"[{"sku": 1, "name": "a", "prise": 3}]"#).is_err());
    }
}
