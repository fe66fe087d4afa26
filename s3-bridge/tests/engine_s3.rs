//! The engine and the bridge against the real S3 server (the RADOS Gateway started by
//! `scripts/rgw.sh`): upload, eviction, hydration on read, retention deletes; and the bridge
//! binary killed with SIGKILL mid-work and started again.

mod common;

use aof_engine::{Engine, Retention, SegmentState};
use aof_s3_bridge::{AnyStore, ObjectStore};
use common::engine::*;
use std::time::Duration;

#[test]
fn engine_round_trip_through_real_s3() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (s3, bcfg) = rt.block_on(common::s3_store("engine"));
    let root = tempdir("s3-e2e-data");
    let bridge = Bridge::start(&root, AnyStore::S3(s3.clone()), &bcfg);
    let e = Engine::open(engine_config(&root)).unwrap();
    let h = e.handle();
    h.create_log("s").wait_timeout(T).unwrap();
    let n = fill(&h, "s", 0, 8);
    wait_all_uploaded(&h, "s");
    h.housekeeping(0).wait_timeout(T).unwrap();
    let segs = h.segments("s").wait_timeout(T).unwrap();
    assert!(segs.iter().any(|s| s.state == SegmentState::Tier2Only), "{segs:?}");
    // Every uploaded object is there under its deterministic key, with its crc and ETag.
    for s in segs.iter().filter(|s| s.uploaded.is_some()) {
        let o = s.uploaded.as_ref().unwrap();
        let key = format!("{}/{}", bcfg.prefix, o.key);
        let meta = rt.block_on(s3.head(&key)).unwrap();
        assert_eq!(meta.crc32c, Some(o.crc32c), "{key}");
        assert_eq!(meta.size, o.size);
        assert!(!o.etag.is_empty());
    }
    // A point read of an evicted segment is one ranged GET of its frame.
    point_reads_of_evicted(&h, "s");
    // After a restart the frame index is read back from the object (header, trailer, index).
    e.close().unwrap();
    let e = Engine::open(engine_config(&root)).unwrap();
    let h = e.handle();
    point_reads_of_evicted(&h, "s");
    // Scans bring evicted segments back from S3, byte-identical.
    verify_all(&h, "s", 0..n);
    assert!(h.stats(0).wait_timeout(T).unwrap().tier2_hydrations >= 1);
    // Retention deletes reach S3.
    let oldest = segs[0].uploaded.clone().unwrap();
    h.set_retention(
        "s",
        Retention {
            max_age: None,
            max_bytes: Some(500 << 10),
        },
    )
    .wait_timeout(T)
    .unwrap();
    eventually("tier2 deletes", || {
        h.stats(0).wait().unwrap().tier2_pending_deletes == 0
    });
    let gone = rt.block_on(s3.head(&format!("{}/{}", bcfg.prefix, oldest.key)));
    assert!(gone.is_err(), "object of a deleted segment still there");
    let first = h.offsets("s").wait_timeout(T).unwrap().0;
    verify_all(&h, "s", first..n);
    e.close().unwrap();
    bridge.stop();
}

/// The bridge as its own process, against the real gateway, killed with SIGKILL while it works
/// and started again: the shard re-asks from its manifest, and every segment ends up under
/// exactly one key, with no multipart upload left behind.
#[test]
fn bridge_process_killed_and_restarted() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (s3, bcfg) = rt.block_on(common::s3_store("killbridge"));
    let rgw = common::rgw();
    let root = tempdir("kill-bridge-data");
    let spawn = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_aof-s3-bridge"))
            .args([
                "--endpoint",
                &rgw.endpoint,
                "--bucket",
                &bcfg.s3.bucket,
                "--prefix",
                &bcfg.prefix,
            ])
            .args([
                "--access-key",
                &rgw.access_key,
                "--secret-key",
                &rgw.secret_key,
                "--no-metrics",
            ])
            .args(["run", root.to_str().unwrap(), "--ring-capacity", "256"])
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map(KillOnDrop)
            .unwrap()
    };
    let e = Engine::open(engine_config(&root)).unwrap();
    let h = e.handle();
    h.create_log("k").wait_timeout(T).unwrap();
    let mut bridge = spawn();
    let mut n = 0;
    for round in 0..3 {
        n = fill(&h, "k", n, 4 + 3 * round);
        std::thread::sleep(Duration::from_millis(300));
        drop(bridge); // SIGKILL, and reaped
        bridge = spawn();
    }
    wait_all_uploaded(&h, "k");
    let segs = h.segments("k").wait_timeout(T).unwrap();
    assert_one_object_per_uploaded_segment(&rt, &s3, &bcfg, &segs);
    verify_all(&h, "k", 0..n);
    e.close().unwrap();
    drop(bridge);
    // A killed bridge's multipart uploads are swept when the next one starts: none older than
    // a fresh start remain once the last bridge ran.
    let pending = rt
        .block_on(s3.list_pending_uploads(&format!("{}/", bcfg.prefix), Duration::ZERO))
        .unwrap();
    assert!(pending.is_empty(), "stale multipart uploads left: {pending:?}");
}

/// An S3 outage with the bridge running: every upload fails (connection refused, retried,
/// breaker open), the engine keeps accepting appends until its Tier1 budget is full and then
/// answers `DiskBudget`, and nothing local is deleted. Reads of a segment that lives only in
/// Tier2 fail with `Tier2Unavailable` instead of hanging. When S3 is back, the uploads owed by
/// the manifest go up, the budget is met by eviction and appends are accepted again.
#[test]
fn s3_outage_gives_backpressure_not_deletion_then_recovers() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (s3, bcfg) = rt.block_on(common::s3_store("outage"));
    // The same bucket and prefix, behind an endpoint nobody listens on.
    let dead_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut dead_cfg = bcfg.clone();
    dead_cfg.s3.endpoint = Some(format!("http://127.0.0.1:{dead_port}"));
    dead_cfg.retry.call_timeout_ms = 1_000;
    dead_cfg.retry.max_attempts = 2;
    let dead = || AnyStore::S3(rt.block_on(aof_s3_bridge::S3Store::connect(&dead_cfg, Default::default())));

    let root = tempdir("s3-outage-data");
    let e = Engine::open(engine_config(&root)).unwrap();
    let h = e.handle();
    h.create_log("o").wait_timeout(T).unwrap();
    let bridge = Bridge::start(&root, dead(), &dead_cfg);
    let mut i = fill_until_disk_budget(&h, "o", 0);
    // The shard asks for the owed uploads (at its next rescan) and the bridge answers failed.
    eventually("failed uploads reported", || {
        h.stats(0).wait().unwrap().tier2_failures > 0
    });
    let st = h.stats(0).wait_timeout(T).unwrap();
    assert_eq!(st.tier2_uploads, 0);
    let still = h.append("o", body(i), aof_engine::Durability::Written).wait_timeout(T);
    assert!(matches!(still, Err(aof_engine::Error::DiskBudget { .. })), "{still:?}");
    let segs = h.segments("o").wait_timeout(T).unwrap();
    assert!(segs
        .iter()
        .all(|s| s.uploaded.is_none() && s.state != SegmentState::Tier2Only));
    verify_all(&h, "o", 0..i);
    assert!(rt.block_on(s3_keys(&s3, &bcfg.s3.bucket, &bcfg.prefix)).is_empty());
    bridge.stop();
    // S3 is back: the owed uploads go up, eviction meets the budget, appends resume.
    let bridge = Bridge::start(&root, AnyStore::S3(s3.clone()), &bcfg);
    eventually("appends accepted again", || {
        h.append("o", body(i), aof_engine::Durability::Written).wait().is_ok()
    });
    i += 1;
    let n = fill(&h, "o", i, 10);
    wait_all_uploaded(&h, "o");
    h.housekeeping(0).wait_timeout(T).unwrap();
    let segs = h.segments("o").wait_timeout(T).unwrap();
    assert!(
        segs.iter().any(|s| s.state == SegmentState::Tier2Only),
        "nothing evicted: {segs:?}"
    );
    assert_one_object_per_uploaded_segment(&rt, &s3, &bcfg, &segs);
    verify_all(&h, "o", 0..n);
    bridge.stop();
    // A second outage: a read that needs Tier2 fails with a clear, typed error, in bounded time.
    h.housekeeping(0).wait_timeout(T).unwrap();
    let bridge = Bridge::start(&root, dead(), &dead_cfg);
    let started = std::time::Instant::now();
    // The oldest evicted segment: the verification read it first, so none of its frames is
    // still among the recently read ones kept in memory (Tier0).
    let segs = h.segments("o").wait_timeout(T).unwrap();
    let oldest = segs
        .iter()
        .find(|s| s.state == SegmentState::Tier2Only)
        .expect("evicted");
    let evicted = oldest.base_offset;
    let err = h
        .read("o", evicted)
        .wait_timeout(T)
        .expect_err("read of a Tier2-only segment during an outage");
    assert!(matches!(err, aof_engine::Error::Tier2Unavailable { .. }), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "bounded by read_timeout: {:?}",
        started.elapsed()
    );
    e.close().unwrap();
    bridge.stop();
}
