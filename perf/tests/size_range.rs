//! A record-size range is drawn uniformly over the whole range, and MB/s counts the bytes
//! actually appended. (Sizes were the record number modulo the range, a ramp that a short run
//! never took past its lower part, while MB/s multiplied records by the range's mean: a run of
//! `--size 1..1048000` reported 15-17 GB/s where the engine took ~1.6 GB/s.)

use std::path::PathBuf;
use std::process::Command;

#[test]
fn a_size_range_is_drawn_over_its_whole_span_and_reported_by_its_bytes() {
    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("aof-perf-sizes-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let (data, out) = (base.join("data"), base.join("out"));
    let (min, max) = (1u64, 400_000u64);
    let o = Command::new(env!("CARGO_BIN_EXE_aof-perf"))
        .arg("--dir")
        .arg(&data)
        .arg("--out")
        .arg(&out)
        .args(["run", "--mode", "memory", "--secs", "0.5", "--warmup-secs", "0.1"])
        .args(["--size", &format!("{min}..{max}")])
        .output()
        .expect("run aof-perf");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let run: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("run.json")).expect("run.json")).expect("json");
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
