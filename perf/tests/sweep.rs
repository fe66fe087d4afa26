//! The shard-count tuning workflow: `sweep-shards` runs 1..=N shards and recommends the count
//! with the highest throughput whose p99.9 meets the objective, or says that none did; it
//! writes its table, JSON and both charts.

mod common;

use std::path::PathBuf;

fn sweep(name: &str, slo: &str) -> (String, serde_json::Value, PathBuf) {
    sweep_with(name, slo, &[])
}

fn sweep_with(name: &str, slo: &str, more: &[&str]) -> (String, serde_json::Value, PathBuf) {
    let base = common::base(&format!("sweep-{name}"));
    let out = base.join("out");
    let args = [
        &[
            "sweep-shards",
            "--max-shards",
            "2",
            "--secs",
            "0.3",
            "--warmup-secs",
            "0.1",
            "--size",
            "256",
            "--slo-p999-us",
            slo,
        ][..],
        more,
    ]
    .concat();
    let o = common::aof_perf(&base.join("data"), &out, &args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let json = common::read_json(&out.join("sweep.json"));
    (String::from_utf8_lossy(&o.stdout).into_owned(), json, base)
}

/// The run or point with the most records a second.
fn fastest(of: &[serde_json::Value]) -> &serde_json::Value {
    let rate = |v: &serde_json::Value| v["records_per_s"].as_f64().unwrap();
    of.iter()
        .max_by(|a, b| rate(a).total_cmp(&rate(b)))
        .expect("something measured")
}

#[test]
fn the_sweep_recommends_the_fastest_count_that_meets_the_objective() {
    let (stdout, j, base) = sweep("met", "1e9");
    let runs = j["runs"].as_array().expect("runs");
    let shards: Vec<u64> = runs.iter().map(|r| r["spec"]["shards"].as_u64().unwrap()).collect();
    assert_eq!(shards, vec![1, 2]);
    // Every run meets an objective of 1e9 µs, so the pick is the highest throughput.
    let fastest = fastest(runs)["spec"]["shards"].as_u64().unwrap();
    assert_eq!(j["recommended"].as_u64(), Some(fastest), "{j}");
    assert!(
        stdout.contains(&format!("recommendation: {fastest} shard(s)")),
        "{stdout}"
    );
    for chart in ["sweep-throughput.svg", "sweep-latency.svg"] {
        let svg = std::fs::read_to_string(base.join("out").join(chart)).expect(chart);
        assert!(svg.starts_with("<svg") && svg.contains("polyline"), "{chart}");
    }
    let _ = std::fs::remove_dir_all(&base);
}

#[test]
fn an_objective_nothing_meets_is_said_plainly() {
    let (stdout, j, base) = sweep("unmet", "0.001");
    assert!(j["recommended"].is_null(), "{j}");
    assert!(stdout.contains("no shard count met"), "{stdout}");
    let svg = std::fs::read_to_string(base.join("out/sweep-latency.svg")).expect("chart");
    assert!(svg.contains("none met the objective"));
    let _ = std::fs::remove_dir_all(&base);
}

/// With `--repeat`, every count runs that many times, in rounds, and the recommendation is
/// made from each count's medians.
#[test]
fn repeated_sweeps_recommend_from_the_medians() {
    let (stdout, j, base) = sweep_with("repeat", "1e9", &["--repeat", "3"]);
    let runs = j["runs"].as_array().expect("runs");
    let order: Vec<u64> = runs.iter().map(|r| r["spec"]["shards"].as_u64().unwrap()).collect();
    assert_eq!(order, vec![1, 2, 1, 2, 1, 2], "rounds over the counts");
    let points = j["points"].as_array().expect("points");
    assert_eq!(points.len(), 2);
    for p in points {
        let n = p["shards"].as_u64().unwrap();
        let mut rates: Vec<f64> = runs
            .iter()
            .filter(|r| r["spec"]["shards"].as_u64() == Some(n))
            .map(|r| r["records_per_s"].as_f64().unwrap())
            .collect();
        rates.sort_by(f64::total_cmp);
        assert_eq!(p["runs"].as_u64(), Some(3));
        assert_eq!(
            p["records_per_s"].as_f64(),
            Some(rates[1]),
            "not the median of {rates:?}"
        );
    }
    let best = fastest(points)["shards"].as_u64();
    assert_eq!(j["recommended"].as_u64(), best);
    assert!(
        stdout.contains("median rec/s") && stdout.contains("(medians of 3 runs)"),
        "{stdout}"
    );
    let _ = std::fs::remove_dir_all(&base);
}
