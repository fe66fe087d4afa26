//! `aof-perf ratio`: the device's limit and one workload, alternated pair after pair, with
//! each pair's ratio and the median of them.
//!
//! Every bandwidth target is a ratio to the device's limit measured in the same run, and on a
//! shared host that limit drifts while the run goes on: fio's 1 MiB writes alone ranged
//! 2264-3758 MB/s within minutes on the development VM, so one pair can be off by a third.
//! Measuring the device right before each run and taking the median over pairs gives a figure
//! that holds from one sitting to the next.

use crate::report::Table;
use crate::workload::{self, Spec};
use serde::Serialize;
use std::path::Path;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

#[derive(Debug, Clone, Serialize)]
pub struct Pair {
    pub device_mb_per_s: f64,
    pub engine_mb_per_s: f64,
    pub ratio: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Ratios {
    pub workload: String,
    pub pairs: Vec<Pair>,
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

/// Runs `pairs` pairs: `device()` (the device's limit in MB/s), then the workload.
pub fn run(dir: &Path, spec: &Spec, pairs: usize, device: impl Fn() -> Res<f64>) -> Res<Ratios> {
    let mut out = Vec::with_capacity(pairs);
    for i in 1..=pairs {
        eprintln!("[{i}/{pairs}] device limit");
        let device_mb_per_s = device()?;
        eprintln!("[{i}/{pairs}] {}", spec.label);
        let r = workload::run(dir, spec)?;
        out.push(Pair {
            device_mb_per_s,
            engine_mb_per_s: r.mb_per_s,
            ratio: r.mb_per_s / device_mb_per_s,
        });
    }
    Ok(summarize(&spec.label, out))
}

fn summarize(label: &str, pairs: Vec<Pair>) -> Ratios {
    let mut r: Vec<f64> = pairs.iter().map(|p| p.ratio).collect();
    r.sort_by(f64::total_cmp);
    Ratios {
        workload: label.to_string(),
        median: crate::report::median(&r),
        min: r.first().copied().unwrap_or(f64::NAN),
        max: r.last().copied().unwrap_or(f64::NAN),
        pairs,
    }
}

pub fn table(r: &Ratios) -> Table {
    let mut t = Table::new(&["pair", "device MB/s", "engine MB/s", "engine / device"]);
    for (i, p) in r.pairs.iter().enumerate() {
        t.row(vec![
            (i + 1).to_string(),
            format!("{:.0}", p.device_mb_per_s),
            format!("{:.0}", p.engine_mb_per_s),
            format!("{:.2}", p.ratio),
        ]);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(ratio: f64) -> Pair {
        Pair {
            device_mb_per_s: 1000.0,
            engine_mb_per_s: ratio * 1000.0,
            ratio,
        }
    }

    #[test]
    fn the_median_is_the_middle_pair_or_the_mean_of_the_two_middle_ones() {
        let r = summarize("w", [0.9, 0.5, 0.7].map(pair).to_vec());
        assert_eq!((r.median, r.min, r.max), (0.7, 0.5, 0.9));
        let r = summarize("w", [0.9, 0.5, 0.7, 0.6].map(pair).to_vec());
        assert!((r.median - 0.65).abs() < 1e-12, "{}", r.median);
        assert_eq!(r.pairs.len(), 4, "every pair is kept, in run order");
        assert_eq!(r.pairs[0].ratio, 0.9);
    }
}
