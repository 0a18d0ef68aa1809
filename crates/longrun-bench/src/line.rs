//! The one JSON line a run prints on stdout (WORKLOADS.md): rates with 1 decimal, seconds and
//! milliseconds with 3, `null` where a figure does not apply; plus nearest-rank percentiles.

use serde::Serialize;
use serde_json::{Map, Value};

/// One run's result, in the field order of WORKLOADS.md; `extra` follows (what was run).
#[derive(Debug, Serialize)]
pub struct Line {
    /// `longrun-sqlite`, `longrun-postgres` or `longrun-postgres-http`.
    pub system: String,
    /// longrun's version.
    pub version: &'static str,
    /// `throughput`, `latency`, `submit` or `status`.
    pub workload: &'static str,
    /// Jobs (or requests) the figures are over.
    pub n: u64,
    /// Jobs accepted per second while enqueuing.
    pub enqueue_jobs_per_s: Option<f64>,
    /// Jobs completed per second once the worker was told to start.
    pub drain_jobs_per_s: Option<f64>,
    /// First enqueue until all seen completed.
    pub wall_s: Option<f64>,
    /// Median latency.
    pub p50_ms: Option<f64>,
    /// 95th percentile latency.
    pub p95_ms: Option<f64>,
    /// 99th percentile latency.
    pub p99_ms: Option<f64>,
    /// Workload-specific fields and the configuration.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Line {
    /// A line with every figure `null`.
    pub fn new(system: &str, workload: &'static str, n: u64) -> Self {
        Self {
            system: system.to_owned(),
            version: env!("CARGO_PKG_VERSION"),
            workload,
            n,
            enqueue_jobs_per_s: None,
            drain_jobs_per_s: None,
            wall_s: None,
            p50_ms: None,
            p95_ms: None,
            p99_ms: None,
            extra: Map::new(),
        }
    }

    /// Sets p50/p95/p99 (3 decimals) from unsorted latencies in milliseconds.
    pub fn percentiles(&mut self, latencies: &mut [f64]) {
        latencies.sort_by(f64::total_cmp);
        self.p50_ms = percentile(latencies, 50.0).map(round3);
        self.p95_ms = percentile(latencies, 95.0).map(round3);
        self.p99_ms = percentile(latencies, 99.0).map(round3);
    }

    /// Adds a workload-specific field.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.extra.insert(key.to_owned(), value.into());
        self
    }

    /// Prints the line on stdout.
    pub fn print(&self) {
        println!(
            "{}",
            serde_json::to_string(self).expect("a result line serializes")
        );
    }
}

/// Nearest rank: the element `ceil(p/100 · n)` (1-based) of ascending `sorted`.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// A rate: 1 decimal.
pub fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// Seconds or milliseconds: 3 decimals.
pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_picks_the_ceiling_element() {
        let sorted: Vec<f64> = (1..=2000).map(f64::from).collect();
        assert_eq!(percentile(&sorted, 50.0), Some(1000.0));
        assert_eq!(percentile(&sorted, 95.0), Some(1900.0));
        assert_eq!(percentile(&sorted, 99.0), Some(1980.0));
        assert_eq!(percentile(&[3.0, 7.0, 9.0], 50.0), Some(7.0));
        assert_eq!(percentile(&[3.0], 99.0), Some(3.0));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn the_line_has_the_yardstick_fields_in_order_then_the_extras() {
        let mut line = Line::new("longrun-sqlite", "latency", 3).with("store", "sqlite");
        line.percentiles(&mut [2.0004, 1.0, 3.0]);
        line.wall_s = Some(round3(10.12345));
        let text = serde_json::to_string(&line).unwrap();
        assert_eq!(
            text,
            format!(
                r#"{{"system":"longrun-sqlite","version":"{}","workload":"latency","n":3,"enqueue_jobs_per_s":null,"drain_jobs_per_s":null,"wall_s":10.123,"p50_ms":2.0,"p95_ms":3.0,"p99_ms":3.0,"store":"sqlite"}}"#,
                env!("CARGO_PKG_VERSION")
            )
        );
        assert_eq!(round1(5463.649), 5463.6);
    }
}
