//! CI runs the harness's quick suite once, in a shortened form, and checks that it finishes and
//! writes its reports. Timings are never checked here: they live in the reports.

mod common;

#[test]
fn quick_suite_runs_and_writes_its_reports() {
    let base = common::base("quick");
    let (data, out) = (base.join("data"), base.join("out"));
    let o = common::aof_perf(&data, &out, &["quick", "--secs", "0.3"]);
    assert!(
        o.status.success(),
        "aof-perf quick failed: {}: {}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    for f in [
        "report.md",
        "report.json",
        "device.json",
        "latency-vs-load.svg",
        "throughput-vs-shards.svg",
    ] {
        let p = out.join(f);
        let len = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
        assert!(len > 100, "{} missing or empty", p.display());
    }
    let report = common::read_json(&out.join("report.json"));
    let runs = report["runs"].as_array().expect("runs array");
    assert!(runs.len() >= 10, "only {} scenarios ran", runs.len());
    assert!(
        runs.iter().all(|r| r["records"].as_u64().unwrap_or(0) > 0),
        "a scenario appended nothing"
    );
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        md.contains("| target |") && md.contains("Synced"),
        "report.md lacks the targets table"
    );
    assert!(std::fs::read_to_string(out.join("latency-vs-load.svg"))
        .unwrap()
        .starts_with("<svg"));
    let _ = std::fs::remove_dir_all(&base);
}
