//! The engine and the bridge together: sealed segments go up, the Tier1 budget evicts what
//! Tier2 holds, reads hydrate evicted segments byte-identical, retention deletes reach Tier2,
//! and a killed bridge or a killed engine loses nothing.
//!
//! `file://` stores keep these fast; `engine_s3.rs` runs the same flow against the real
//! gateway.

mod common;

use aof_engine::{Durability, Engine, OwnedRecord, Retention, SegmentState};
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
    let mut i = 0u64;
    let err = loop {
        let recs: Vec<OwnedRecord> = (i..i + 16).map(|k| OwnedRecord::new(body(k))).collect();
        match h.append_batch("r", recs, Durability::Written).wait_timeout(T) {
            Ok(_) => i += 16,
            Err(e) => break e,
        }
        if i % 512 == 0 {
            h.tiering_idle(0).wait_timeout(T).unwrap();
            h.housekeeping(0).wait_timeout(T).unwrap();
        }
        assert!(i < 100_000, "no backpressure without Tier2");
    };
    assert!(matches!(err, aof_engine::Error::DiskBudget { .. }), "{err}");
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
