//! Stock files: CSV with the header `warehouse_id,sku,count`, one (warehouse, sku) level per row.

use std::path::Path;

use anyhow::Context as _;
use minizon_proto::loms::SetStockRequest;

#[derive(Debug, serde::Deserialize)]
struct Row {
    warehouse_id: i64,
    sku: u32,
    count: u64,
}

/// Reads every row of a stock file; errors name the line that is wrong.
pub fn read(path: &Path) -> anyhow::Result<Vec<SetStockRequest>> {
    let file = std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
    parse(file).with_context(|| format!("read {}", path.display()))
}

/// Parses stock CSV from any reader.
pub fn parse(input: impl std::io::Read) -> anyhow::Result<Vec<SetStockRequest>> {
    let mut reader = csv::ReaderBuilder::new().trim(csv::Trim::All).from_reader(input);
    let headers = reader.headers().context("read the header line")?.clone();
    anyhow::ensure!(
        headers.iter().collect::<Vec<_>>() == ["warehouse_id", "sku", "count"],
        "the header must be `warehouse_id,sku,count`, found `{}`",
        headers.iter().collect::<Vec<_>>().join(",")
    );
    reader
        .deserialize::<Row>()
        .enumerate()
        .map(|(index, row)| {
            let row = row.with_context(|| format!("line {}", index + 2))?;
            Ok(SetStockRequest { warehouse_id: row.warehouse_id, sku: row.sku, on_hand: row.count })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_read_with_surrounding_spaces_trimmed() {
        let rows = parse("warehouse_id,sku,count\n1, 1001, 5\n2,1001,0\n".as_bytes()).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!((rows[0].warehouse_id, rows[0].sku, rows[0].on_hand), (1, 1001, 5));
    }

    #[test]
    fn a_wrong_header_is_refused() {
        let error = parse("sku,warehouse,count\n1,2,3\n".as_bytes()).unwrap_err();
        assert!(error.to_string().contains("warehouse_id,sku,count"), "{error}");
    }

    #[test]
    fn a_bad_row_names_its_line() {
        let error = parse("warehouse_id,sku,count\n1,2,3\n1,x,3\n".as_bytes()).unwrap_err();
        assert!(format!("{error:#}").contains("line 3"), "{error:#}");
    }
}
