//! An open loop offers `--rate` records a second, counting every record of a batch, and says
//! when the setup could not keep to that schedule. (`--rate` once counted appends: `--rate
//! 2000 --batch 10` offered 20,000 records a second. And an overloaded open loop reported the
//! offered rate as the achieved one, with no word that it had fallen behind.)

mod common;

fn run(name: &str, args: &[&str]) -> (serde_json::Value, String) {
    let base = common::base(name);
    let o = common::aof_perf(&base.join("data"), &base.join("out"), &[&["run"], args].concat());
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{args:?}: {err}");
    let json = common::read_json(&base.join("out/run.json"));
    let _ = std::fs::remove_dir_all(&base);
    (json, err)
}

#[test]
fn the_rate_counts_records_of_batches() {
    // 2,000 records/s in batches of 10: 200 appends a second, an easy schedule.
    let (r, err) = run(
        "rate-batch",
        &[
            "--rate",
            "2000",
            "--batch",
            "10",
            "--secs",
            "1",
            "--warmup-secs",
            "0.2",
            "--size",
            "128",
        ],
    );
    let records = r["records"].as_u64().unwrap();
    // The appends due in the 1 s window: 200 of 10 records (one more or less at each edge).
    assert!(
        (1_980..=2_020).contains(&records),
        "{records} records measured, 2,000 offered: {r}"
    );
    assert_eq!(r["behind_schedule"], false, "{err}");
    assert!(!err.contains("fell behind"), "{err}");
}

#[test]
fn an_open_loop_that_falls_behind_says_so_and_reports_what_it_achieved() {
    // One foreign thread waiting for each fdatasync cannot do 200,000 appends a second (a
    // round trip alone takes tens of µs; the device's sync ~100 µs or more).
    let t0 = std::time::Instant::now();
    let (r, err) = run(
        "behind",
        &[
            "--rate",
            "200000",
            "--mode",
            "synced",
            "--producer",
            "foreign",
            "--secs",
            "0.5",
            "--warmup-secs",
            "0",
        ],
    );
    // It gives up at the window's end plus its length again, with 100,000 appends due; it
    // once went on sending them all (40 s here).
    assert!(
        t0.elapsed() < std::time::Duration::from_secs(10),
        "took {:?}",
        t0.elapsed()
    );
    assert!(r["unsent_appends"].as_u64().unwrap() > 10_000, "{r}");
    assert!(err.contains("never sent"), "{err}");
    assert_eq!(r["behind_schedule"], true, "{r}");
    assert!(err.contains("fell behind"), "no warning: {err}");
    let rate = r["records_per_s"].as_f64().unwrap();
    let records = r["records"].as_u64().unwrap() as f64;
    assert!(rate < 100_000.0, "reported {rate} rec/s, as offered, not as achieved");
    // The achieved rate is the records over the time they took, longer than the window.
    assert!(
        rate < records / 0.5,
        "{rate} rec/s for {records} records: counted over the window only"
    );
}

/// An open loop that keeps up is not called behind for the progress bar's sake: the end of a
/// run was once taken after the progress thread's last 100 ms sleep, which with a window
/// not a multiple of 100 ms added up to 100 ms of "lag" (over the 50 ms allowed) and of time.
#[test]
fn an_easy_schedule_is_never_behind_whatever_the_window() {
    for (secs, warm) in [("0.35", "0.13"), ("0.27", "0.05"), ("0.41", "0.02")] {
        let (r, err) = run(
            "easy",
            &["--rate", "2000", "--secs", secs, "--warmup-secs", warm, "--size", "128"],
        );
        assert_eq!(r["behind_schedule"], false, "--secs {secs}: {err}");
        let rate = r["records_per_s"].as_f64().unwrap();
        assert!(
            (1_800.0..=2_200.0).contains(&rate),
            "--secs {secs}: {rate} rec/s for 2,000 offered"
        );
    }
}
