//! Latency recording and the summary every workload prints (and can write as JSON).

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Latencies in microseconds, 1 µs to 60 s at 3 significant digits.
pub struct Recorder {
    hist: Histogram<u64>,
    pub errors: u64,
}

impl Default for Recorder {
    fn default() -> Self {
        // Constant, valid bounds: construction cannot fail.
        Recorder { hist: Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds"), errors: 0 }
    }
}

impl Recorder {
    pub fn record(&mut self, d: Duration) {
        let us = (d.as_micros() as u64).clamp(1, 60_000_000);
        let _ = self.hist.record(us);
    }

    pub fn merge(&mut self, other: &Recorder) {
        let _ = self.hist.add(&other.hist);
        self.errors += other.errors;
    }

    pub fn count(&self) -> u64 {
        self.hist.len()
    }

    pub fn summary(&self, name: &str, elapsed: Duration) -> Summary {
        let ms = |q: f64| self.hist.value_at_quantile(q) as f64 / 1000.0;
        let curve = [0.0, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9999, 1.0].iter().map(|q| (*q, ms(*q))).collect();
        Summary {
            name: name.to_string(),
            count: self.count(),
            errors: self.errors,
            seconds: elapsed.as_secs_f64(),
            throughput: self.count() as f64 / elapsed.as_secs_f64().max(1e-9),
            p50_ms: ms(0.5),
            p90_ms: ms(0.9),
            p99_ms: ms(0.99),
            p999_ms: ms(0.999),
            max_ms: self.hist.max() as f64 / 1000.0,
            mean_ms: self.hist.mean() / 1000.0,
            percentiles: curve,
            extra: Default::default(),
        }
    }
}

/// What a run measured.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Summary {
    pub name: String,
    pub count: u64,
    pub errors: u64,
    pub seconds: f64,
    /// Operations (or delivered events) per second.
    pub throughput: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
    /// (quantile, latency ms) points for plotting the distribution.
    pub percentiles: Vec<(f64, f64)>,
    /// Workload-specific figures (missed events, RSS, ...).
    pub extra: std::collections::BTreeMap<String, f64>,
}

impl Summary {
    pub fn print(&self) {
        println!("{}", self.name);
        println!("  {} ops in {:.2}s: {:.0} ops/s, {} errors", self.count, self.seconds, self.throughput, self.errors);
        println!(
            "  latency ms: p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}  mean {:.3}",
            self.p50_ms, self.p90_ms, self.p99_ms, self.p999_ms, self.max_ms, self.mean_ms
        );
        for (k, v) in &self.extra {
            println!("  {k}: {v:.2}");
        }
    }
}
