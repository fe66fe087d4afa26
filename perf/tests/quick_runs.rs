//! CI runs the harness's quick suite once, in a shortened form, and checks that it finishes and
//! writes its reports. Timings are never checked here: they live in the reports.

use std::path::PathBuf;
use std::process::Command;

#[test]
fn quick_suite_runs_and_writes_its_reports() {
    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("aof-perf-quick-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let (data, out) = (base.join("data"), base.join("out"));
    let status = Command::new(env!("CARGO_BIN_EXE_aof-perf"))
        .arg("--dir")
        .arg(&data)
        .arg("--out")
        .arg(&out)
        .args(["quick", "--secs", "0.3"])
        .status()
        .expect("run aof-perf");
    assert!(status.success(), "aof-perf quick failed: {status}");
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
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
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
