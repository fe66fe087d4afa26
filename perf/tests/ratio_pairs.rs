//! `aof-perf ratio` alternates the device's limit with the workload and reports every pair and
//! their median. Checked on what it writes, never on timings: each pair has a device figure
//! and an engine figure of its own, the ratio is theirs, and the median lies within the pairs.

mod common;

#[test]
fn every_pair_measures_the_device_and_the_engine_and_the_median_lies_among_them() {
    let base = common::base("ratio");
    let (data, out) = (base.join("data"), base.join("out"));
    let o = common::aof_perf(
        &data,
        &out,
        &[
            "ratio",
            "--pairs",
            "3",
            "--device-bytes",
            "16777216",
            "--mode",
            "written",
            "--size",
            "4096",
            "--batch",
            "4",
            "--concurrency",
            "4",
            "--secs",
            "0.3",
            "--warmup-secs",
            "0.1",
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("| pair | device MB/s | engine MB/s | engine / device |"),
        "{stdout}"
    );
    assert!(stdout.contains("over 3 pairs: median"), "{stdout}");
    let r = common::read_json(&out.join("ratio.json"));
    let pairs = r["pairs"].as_array().expect("pairs");
    assert_eq!(pairs.len(), 3);
    let mut ratios = Vec::new();
    for p in pairs {
        let (d, e, q) = (
            p["device_mb_per_s"].as_f64().expect("device"),
            p["engine_mb_per_s"].as_f64().expect("engine"),
            p["ratio"].as_f64().expect("ratio"),
        );
        assert!(d > 0.0 && e > 0.0, "{p}");
        assert!((q - e / d).abs() < 1e-9, "{p}");
        ratios.push(q);
    }
    ratios.sort_by(f64::total_cmp);
    assert_eq!(r["median"].as_f64(), Some(ratios[1]));
    assert_eq!(r["min"].as_f64(), Some(ratios[0]));
    assert_eq!(r["max"].as_f64(), Some(ratios[2]));
    let _ = std::fs::remove_dir_all(&base);
}
