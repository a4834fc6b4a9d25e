//! The write batches LOMS committed while a scenario ran, from the `loms_write_batch_size` histogram on its
//! `/metrics` endpoint (`--loms-metrics-url`): how many calls each commit carried, per kind of call.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The histogram LOMS records each committed batch's size in, labelled by `kind` (`create`, `command`).
const SERIES: &str = "loms_write_batch_size";

/// The batches of one kind committed during a scenario.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BatchStat {
    /// Commits.
    pub batches: u64,
    /// Calls they carried.
    pub calls: u64,
}

impl BatchStat {
    /// Calls per commit.
    pub fn mean(&self) -> f64 {
        if self.batches == 0 { 0.0 } else { self.calls as f64 / self.batches as f64 }
    }
}

/// The histogram's running totals at one moment: per kind, (sum of sizes, number of batches).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Totals(BTreeMap<String, (f64, f64)>);

impl Totals {
    /// Reads the totals from a Prometheus text exposition.
    pub fn parse(text: &str) -> Self {
        let mut totals: BTreeMap<String, (f64, f64)> = BTreeMap::new();
        for line in text.lines().filter(|line| !line.starts_with('#')) {
            let Some((series, value)) = line.rsplit_once(' ') else { continue };
            let Ok(value) = value.parse::<f64>() else { continue };
            let (name, labels) = series.split_once('{').unwrap_or((series, ""));
            let Some(kind) = labels.split(',').find_map(|label| label.trim_end_matches('}').strip_prefix("kind=\""))
            else {
                continue;
            };
            let kind = kind.trim_end_matches('"').to_owned();
            match name.strip_prefix(SERIES) {
                Some("_sum") => totals.entry(kind).or_default().0 = value,
                Some("_count") => totals.entry(kind).or_default().1 = value,
                _ => {}
            }
        }
        Self(totals)
    }

    /// The batches committed between `earlier` and these totals.
    pub fn since(&self, earlier: &Self) -> BTreeMap<String, BatchStat> {
        self.0
            .iter()
            .filter_map(|(kind, &(sum, count))| {
                let (sum_before, count_before) = earlier.0.get(kind).copied().unwrap_or_default();
                let batches = (count - count_before).max(0.0) as u64;
                (batches > 0).then(|| (kind.clone(), BatchStat { batches, calls: (sum - sum_before).max(0.0) as u64 }))
            })
            .collect()
    }
}

/// Scrapes LOMS's metrics endpoint; `None` (logged) when it cannot be read, so a run never fails for it.
pub async fn scrape(client: &reqwest::Client, url: &str) -> Option<Totals> {
    let text = async { client.get(url).send().await?.error_for_status()?.text().await };
    match text.await {
        Ok(text) => Some(Totals::parse(&text)),
        Err(error) => {
            tracing::warn!(%error, url, "cannot read LOMS's metrics: batch sizes are left out");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_batches_of_a_scenario_are_the_difference_of_two_scrapes() {
        let before = Totals::parse(
            "# TYPE loms_write_batch_size histogram\n\
             loms_write_batch_size_bucket{kind=\"create\",le=\"1\"} 3\n\
             loms_write_batch_size_sum{kind=\"create\"} 10\n\
             loms_write_batch_size_count{kind=\"create\"} 4\n",
        );
        let after = Totals::parse(
            "loms_write_batch_size_sum{kind=\"create\"} 110\n\
             loms_write_batch_size_count{kind=\"create\"} 14\n\
             loms_write_batch_size_sum{kind=\"command\"} 6\n\
             loms_write_batch_size_count{kind=\"command\"} 2\n\
             other_sum{kind=\"create\"} 99\n",
        );
        let batches = after.since(&before);
        assert_eq!(batches["create"], BatchStat { batches: 10, calls: 100 });
        assert_eq!(batches["create"].mean(), 10.0);
        assert_eq!(batches["command"], BatchStat { batches: 2, calls: 6 });
        assert!(after.since(&after).is_empty(), "no batches between two equal scrapes");
    }
}
