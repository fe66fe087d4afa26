//! A record-size range is drawn uniformly over the whole range, and MB/s counts the bytes
//! actually appended. (Sizes were the record number modulo the range, a ramp that a short run
//! never took past its lower part, while MB/s multiplied records by the range's mean: a run of
//! `--size 1..1048000` reported 15-17 GB/s where the engine took ~1.6 GB/s.)

mod common;

#[test]
fn a_size_range_is_drawn_over_its_whole_span_and_reported_by_its_bytes() {
    let base = common::base("sizes");
    let (data, out) = (base.join("data"), base.join("out"));
    let (min, max) = (1u64, 400_000u64);
    let range = format!("{min}..{max}");
    let o = common::aof_perf(
        &data,
        &out,
        &[
            "run",
            "--mode",
            "memory",
            "--secs",
            "0.5",
            "--warmup-secs",
            "0.1",
            "--size",
            &range,
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let run = common::read_json(&out.join("run.json"));
    let records = run["records"].as_u64().expect("records");
    let mb_per_s = run["mb_per_s"].as_f64().expect("mb_per_s");
    let records_per_s = run["records_per_s"].as_f64().expect("records_per_s");
    assert!(records > 200, "too few records to judge: {records}");
    // What the engine stored, warm-up included: its payload bytes per record.
    let engine = &run["engine"][0];
    let stored =
        engine["payload_bytes"].as_f64().expect("payload_bytes") / engine["records"].as_f64().expect("records");
    let mean = (min + max) as f64 / 2.0;
    assert!(
        (stored / mean - 1.0).abs() < 0.15,
        "records average {stored:.0} B stored, the range's mean is {mean:.0} B"
    );
    // The report's bytes per record are the measured window's own.
    let reported = mb_per_s * 1e6 / records_per_s;
    assert!(
        (reported / stored - 1.0).abs() < 0.15,
        "MB/s says {reported:.0} B per record, the engine stored {stored:.0}"
    );
    let _ = std::fs::remove_dir_all(&base);
}

/// Records/s and MB/s are reported per shard as well, and add up to the totals; each shard's
/// MB/s is its own logs' bytes (two shards, logs of different sizes would show it).
#[test]
fn per_shard_rates_add_up_to_the_totals() {
    let base = common::base("per-shard");
    let o = common::aof_perf(
        &base.join("data"),
        &base.join("out"),
        &[
            "run",
            "--shards",
            "2",
            "--logs",
            "4",
            "--size",
            "100..3000",
            "--secs",
            "0.4",
            "--warmup-secs",
            "0.1",
        ],
    );
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(stdout.contains("rec/s (MB/s) per shard"), "{stdout}");
    let run = common::read_json(&base.join("out/run.json"));
    let sum = |k: &str| -> (f64, usize) {
        let v = run[k].as_array().unwrap_or_else(|| panic!("{k} missing: {run}"));
        (v.iter().map(|x| x.as_f64().unwrap()).sum(), v.len())
    };
    let (mb, n) = sum("per_shard_mb_per_s");
    let (recs, m) = sum("per_shard_records_per_s");
    assert_eq!((n, m), (2, 2));
    let total_mb = run["mb_per_s"].as_f64().unwrap();
    let total_recs = run["records_per_s"].as_f64().unwrap();
    assert!(
        total_mb > 0.0 && (mb / total_mb - 1.0).abs() < 1e-9,
        "{mb} vs {total_mb}"
    );
    assert!(
        total_recs > 0.0 && (recs / total_recs - 1.0).abs() < 1e-9,
        "{recs} vs {total_recs}"
    );
    let _ = std::fs::remove_dir_all(&base);
}
