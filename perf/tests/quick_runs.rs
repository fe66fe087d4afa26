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
    // The machine's own scaling, alone and with the runs' disk writes going on beside it.
    let machine = &report["machine"];
    assert!(
        machine["scaling_2_cores"].as_f64().is_some_and(|r| r > 0.0),
        "{machine}"
    );
    let under = &machine["scaling_2_cores_under_writes"];
    for k in ["ratio", "mb_per_s_1", "mb_per_s_2"] {
        assert!(under[k].as_f64().is_some_and(|v| v > 0.0), "{k}: {machine}");
    }
    let left: Vec<_> = std::fs::read_dir(&data)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "scratch data left behind: {left:?}");
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
