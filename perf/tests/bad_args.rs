//! A bad knob gets a clear error naming the flag, and nothing runs: no data directory is
//! created, no report written. (`--rate 0` once panicked inside the schedule arithmetic, and
//! `--concurrency 0` or `--secs 0` ran and reported a workload that measured nothing.)

mod common;

#[test]
fn bad_knobs_are_refused_before_anything_runs() {
    let base = common::base("bad");
    let (data, out) = (base.join("data"), base.join("out"));
    let cases: &[(&[&str], &str)] = &[
        (&["run", "--shards", "0"], "--shards"),
        (&["run", "--logs", "0"], "--logs"),
        (&["run", "--batch", "0"], "--batch"),
        (&["run", "--concurrency", "0"], "--concurrency"),
        (&["run", "--secs", "0"], "--secs"),
        (&["run", "--secs", "NaN"], "--secs"),
        (&["run", "--warmup-secs", "inf"], "--warmup-secs"),
        // Once panicked in the schedule's Instant arithmetic.
        (&["run", "--secs", "1e30"], "--secs"),
        (&["run", "--warmup-secs", "1e30"], "--warmup-secs"),
        (&["quick", "--secs", "1e12"], "--secs"),
        (&["run", "--rate", "0"], "--rate"),
        (&["run", "--rate", "1e-300"], "--rate"),
        (&["run", "--writes-in-flight", "0"], "--writes-in-flight"),
        (&["run", "--flush-threshold-kib", "0"], "--flush-threshold-kib"),
        (&["run", "--segment-mib", "0"], "--segment-mib"),
        (&["run", "--retention-mib", "0"], "--retention-mib"),
        (&["run", "--io-memory-kib", "0"], "--io-memory-kib"),
        (&["baseline", "--concurrency", "0"], "--concurrency"),
        (&["sweep-shards", "--max-shards", "0"], "--max-shards"),
        (&["sweep-shards", "--repeat", "0"], "--repeat"),
        (&["sweep-shards", "--slo-p999-us=-5"], "--slo-p999-us"),
        (&["ratio", "--pairs", "0"], "--pairs"),
        (&["ratio", "--device-bytes", "4096"], "--device-bytes"),
        (&["ratio", "--concurrency", "0"], "--concurrency"),
        (&["sweep-shards", "--batch", "0"], "--batch"),
        (&["quick", "--secs", "0"], "--secs"),
        (&["device", "--bytes", "4096"], "--bytes"),
        (&["device", "--ops", "0"], "--ops"),
        (&["bridge", "--secs", "0"], "--secs"),
        (&["bridge", "--backlog-mib", "0"], "--backlog-mib"),
    ];
    for (args, flag) in cases {
        let o = common::aof_perf(&data, &out, args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{args:?} was accepted");
        assert!(err.contains(flag), "{args:?}: the error does not name {flag}: {err}");
        assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
        assert!(!data.exists() && !out.exists(), "{args:?} created files before failing");
    }
    let _ = std::fs::remove_dir_all(&base);
}
