//! The engine and the bridge together: sealed segments go up, the Tier1 budget evicts what
//! Tier2 holds, reads hydrate evicted segments byte-identical, retention deletes reach Tier2,
//! and a killed bridge or a killed engine loses nothing.
//!
//! `file://` stores keep these fast; `engine_s3.rs` runs the same flow against the real
//! gateway.

mod common;

use aof_engine::{Durability, Engine, Retention, SegmentState};
use aof_s3_bridge::ring::Body;
use common::engine::*;

#[test]
fn upload_evict_hydrate_and_retention_through_the_bridge() {
    let root = tempdir("e2e-data");
    let store_dir = tempdir("e2e-store");
    let (store, bcfg) = file_store(&store_dir);
    let bridge = Bridge::start(&root, store, &bcfg);
    let e = Engine::open(engine_config(&root)).unwrap();
    let h = e.handle();
    h.create_log("x").wait_timeout(T).unwrap();
    let n = fill(&h, "x", 0, 10);
    // Every sealed segment ends up in Tier2; the budget then evicts the least recently read.
    wait_all_uploaded(&h, "x");
    h.housekeeping(0).wait_timeout(T).unwrap();
    let segs = h.segments("x").wait_timeout(T).unwrap();
    let evicted: Vec<u64> = segs
        .iter()
        .filter(|s| s.state == SegmentState::Tier2Only)
        .map(|s| s.base_offset)
        .collect();
    assert!(!evicted.is_empty(), "{segs:?}");
    let st = h.stats(0).wait_timeout(T).unwrap();
    assert!(st.tier1_bytes <= 4 * (256 << 10), "{st:?}");
    // Keys are deterministic: one object per uploaded segment, named by id, base and crc.
    let objs = objects(&store_dir);
    for s in segs.iter().filter(|s| s.uploaded.is_some()) {
        let key = &s.uploaded.as_ref().unwrap().key;
        assert!(objs.iter().any(|o| o.ends_with(key.as_str())), "{key} not in {objs:?}");
        assert!(key.ends_with(&format!("-{:08x}.t1", s.tier1_crc.unwrap())));
    }
    // A point read of an evicted segment fetches one frame by a ranged read: no hydration.
    point_reads_of_evicted(&h, "x");
    // Scans of evicted segments hydrate them through the bridge, byte-identical.
    verify_all(&h, "x", 0..n);
    let st = h.stats(0).wait_timeout(T).unwrap();
    assert!(st.tier2_hydrations >= 1, "{st:?}");
    // Retention removes segments everywhere, Tier2 included.
    let before = objects(&store_dir).len();
    h.set_retention(
        "x",
        Retention {
            max_age: None,
            max_bytes: Some(600 << 10),
        },
    )
    .wait_timeout(T)
    .unwrap();
    let first = h.offsets("x").wait_timeout(T).unwrap().0;
    assert!(first > 0);
    eventually("tier2 deletes", || {
        h.stats(0).wait().unwrap().tier2_pending_deletes == 0 && objects(&store_dir).len() < before
    });
    verify_all(&h, "x", first..n);
    e.close().unwrap();
    bridge.stop();
}

#[test]
fn a_restarted_bridge_and_a_restarted_engine_resume_from_the_manifest() {
    let root = tempdir("resume-data");
    let store_dir = tempdir("resume-store");
    let (store, bcfg) = file_store(&store_dir);
    // The engine seals segments while no bridge runs: nothing is uploaded, nothing evicted,
    // and appends are refused once the Tier1 budget is full (never data deleted).
    let e = Engine::open(engine_config(&root)).unwrap();
    let h = e.handle();
    h.create_log("r").wait_timeout(T).unwrap();
    let mut i = fill_until_disk_budget(&h, "r", 0);
    assert!(objects(&store_dir).is_empty());
    verify_all(&h, "r", 0..i);
    // The engine restarts (kill-like: the requests it queued are lost with it) ...
    e.close().unwrap();
    let e = Engine::open(engine_config(&root)).unwrap();
    let h = e.handle();
    // ... and a bridge starts: the shard re-asks from its manifest, uploads happen, the
    // budget is met by eviction and appends are accepted again.
    let bridge = Bridge::start(&root, store, &bcfg);
    eventually("appends accepted again", || {
        h.append("r", body(i), Durability::Written).wait().is_ok()
    });
    i += 1;
    // Stop the bridge mid-flight and start another: every object key stays unique per segment.
    bridge.stop();
    let (store, bcfg) = file_store(&store_dir);
    let bridge = Bridge::start(&root, store, &bcfg);
    let n = fill(&h, "r", i, 12);
    wait_all_uploaded(&h, "r");
    let segs = h.segments("r").wait_timeout(T).unwrap();
    let objs = objects(&store_dir);
    let uploaded = segs.iter().filter(|s| s.uploaded.is_some()).count();
    assert_eq!(objs.len(), uploaded, "one object per segment, no duplicates: {objs:?}");
    verify_all(&h, "r", 0..n);
    e.close().unwrap();
    bridge.stop();
}

/// Uploads slower than the shard's `retry_interval` (a slow pace here; a big segment or an
/// outage in production): the shard's re-asks do not cancel the first ask, back off, and
/// the bridge runs one upload per key at a time, so every segment is put exactly once and
/// every answer lands.
#[test]
fn slow_uploads_are_not_duplicated_by_re_asks() {
    let root = tempdir("slow-data");
    let store_dir = tempdir("slow-store");
    let (_, mut bcfg) = file_store(&store_dir);
    // ~100 KiB Tier1 files at 128 KiB/s shared by 4 transfers: each upload takes several 200 ms
    // retry intervals, and a re-ask could start a second copy beside the first.
    bcfg.transfer.upload_bytes_per_sec = 128 << 10;
    bcfg.transfer.concurrency = 4;
    let metrics = std::sync::Arc::new(aof_s3_bridge::Metrics::default());
    let store = aof_s3_bridge::AnyStore::File(
        aof_s3_bridge::FileStore::new(&store_dir, metrics.clone())
            .paced(aof_s3_bridge::pace::Pacer::new(bcfg.transfer.upload_bytes_per_sec)),
    );
    let bridge = Bridge::start(&root, store, &bcfg);
    let mut cfg = engine_config(&root);
    cfg.tier1_budget_bytes = None; // no eviction: this is about uploads only
    let e = Engine::open(cfg).unwrap();
    let h = e.handle();
    h.create_log("s").wait_timeout(T).unwrap();
    let n = fill(&h, "s", 0, 4);
    let started = std::time::Instant::now();
    wait_all_uploaded(&h, "s");
    let took = started.elapsed();
    let segs = h.segments("s").wait_timeout(T).unwrap();
    let uploaded = segs.iter().filter(|s| s.uploaded.is_some()).count() as u64;
    assert!(uploaded >= 4, "{segs:?}");
    assert!(
        took > std::time::Duration::from_millis(600),
        "uploads were not slow ({took:?}): the test proves nothing"
    );
    assert_eq!(
        metrics.ok_count(aof_s3_bridge::Op::Put),
        uploaded,
        "one put per segment"
    );
    assert_eq!(objects(&store_dir).len() as u64, uploaded);
    let st = h.stats(0).wait_timeout(T).unwrap();
    assert_eq!(st.tier2_uploads, uploaded, "every upload's answer was applied once");
    // Asks are bounded by the backoff: far fewer than one per segment per retry interval.
    let per_interval = took.as_millis() as u64 / 200 * uploaded;
    eprintln!("{} requests for {uploaded} uploads in {took:?}", st.tier2_requests);
    assert!(
        st.tier2_requests * 2 < per_interval,
        "{} requests for {uploaded} uploads in {took:?}",
        st.tier2_requests
    );
    verify_all(&h, "s", 0..n);
    e.close().unwrap();
    bridge.stop();
}

/// The bridge outlives engine restarts and may answer requests of an earlier run. Such an
/// answer must never be applied, least of all to another segment: request ids do not repeat
/// across runs, and a reply about another segment than its id names is ignored. Here a fake
/// bridge holds run 1's upload requests and answers them "done" during run 2, and also
/// answers run 2's requests with the wrong segments: no segment may count as uploaded. A real
/// bridge then uploads everything, and it all reads back.
#[test]
fn answers_from_an_earlier_run_or_about_another_segment_are_ignored() {
    use aof_s3_bridge::ring::{BridgeEnd, Message};
    let root = tempdir("stale-data");
    let store_dir = tempdir("stale-store");
    let shard_dir = root.join("shard-000");
    let pop_uploads = |b: &mut BridgeEnd| {
        let mut got = Vec::new();
        eventually("upload requests from the shard", || {
            while let Some(m) = b.requests.pop().unwrap() {
                if matches!(m.body, Body::Upload { .. }) {
                    got.push(m);
                }
            }
            got.len() >= 2
        });
        got
    };
    let done = |id: u64, about: &Message| {
        let seg = *about.body.seg();
        Message {
            id,
            body: Body::Done {
                seg,
                size: 1,
                etag: "stale".into(),
            },
        }
    };
    let e = Engine::open(engine_config(&root)).unwrap();
    let h = e.handle();
    h.create_log("z").wait_timeout(T).unwrap();
    let n = fill(&h, "z", 0, 3);
    let mut fake = BridgeEnd::open(&shard_dir, 0, 256).unwrap();
    let run1 = pop_uploads(&mut fake);
    e.close().unwrap();

    let e = Engine::open(engine_config(&root)).unwrap();
    let h = e.handle();
    let run2 = pop_uploads(&mut fake);
    assert!(
        run2.iter().all(|m| run1.iter().all(|o| o.id != m.id)),
        "ids repeat across runs"
    );
    // Run 1's requests answered now, and run 2's ids answered about the wrong segments.
    for m in &run1 {
        fake.replies.push(&done(m.id, m)).unwrap().unwrap();
    }
    for (m, other) in run2.iter().zip(run2.iter().rev()) {
        if m.body.seg() != other.body.seg() {
            fake.replies.push(&done(m.id, other)).unwrap().unwrap();
        }
    }
    eventually("the fake replies are consumed", || fake.replies.ring().is_empty());
    h.tiering_idle(0).wait_timeout(T).unwrap();
    let segs = h.segments("z").wait_timeout(T).unwrap();
    assert!(
        segs.iter().all(|s| s.uploaded.is_none()),
        "a stale or misdirected answer was applied: {segs:?}"
    );
    assert_eq!(h.stats(0).wait_timeout(T).unwrap().tier2_uploads, 0);
    drop(fake);

    let (store, bcfg) = file_store(&store_dir);
    let bridge = Bridge::start(&root, store, &bcfg);
    wait_all_uploaded(&h, "z");
    let segs = h.segments("z").wait_timeout(T).unwrap();
    let uploaded = segs.iter().filter(|s| s.uploaded.is_some()).count();
    assert_eq!(objects(&store_dir).len(), uploaded);
    verify_all(&h, "z", 0..n);
    e.close().unwrap();
    bridge.stop();
}
