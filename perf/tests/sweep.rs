//! The shard-count tuning workflow: `sweep-shards` runs 1..=N shards and recommends the count
//! with the highest throughput whose p99.9 meets the objective, or says that none did; it
//! writes its table, JSON and both charts.

use std::path::PathBuf;
use std::process::Command;

fn sweep(name: &str, slo: &str) -> (String, serde_json::Value, PathBuf) {
    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("aof-perf-sweep-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let out = base.join("out");
    let o = Command::new(env!("CARGO_BIN_EXE_aof-perf"))
        .arg("--dir")
        .arg(base.join("data"))
        .arg("--out")
        .arg(&out)
        .args([
            "sweep-shards",
            "--max-shards",
            "2",
            "--secs",
            "0.3",
            "--warmup-secs",
            "0.1",
            "--size",
            "256",
        ])
        .args(["--slo-p999-us", slo])
        .output()
        .expect("run aof-perf");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let json =
        serde_json::from_str(&std::fs::read_to_string(out.join("sweep.json")).expect("sweep.json")).expect("json");
    (String::from_utf8_lossy(&o.stdout).into_owned(), json, base)
}

#[test]
fn the_sweep_recommends_the_fastest_count_that_meets_the_objective() {
    let (stdout, j, base) = sweep("met", "1e9");
    let runs = j["runs"].as_array().expect("runs");
    let shards: Vec<u64> = runs.iter().map(|r| r["spec"]["shards"].as_u64().unwrap()).collect();
    assert_eq!(shards, vec![1, 2]);
    // Every run meets an objective of 1e9 µs, so the pick is the highest throughput.
    let fastest = runs
        .iter()
        .max_by(|a, b| {
            a["records_per_s"]
                .as_f64()
                .unwrap()
                .total_cmp(&b["records_per_s"].as_f64().unwrap())
        })
        .unwrap()["spec"]["shards"]
        .as_u64()
        .unwrap();
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
