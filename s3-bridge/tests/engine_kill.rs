//! The engine killed with SIGKILL while the bridge uploads to the real S3 server (the RADOS
//! Gateway started by `scripts/rgw.sh`) and evicts: after the restarts each acknowledged record
//! reads back (from local tiers or hydrated from Tier2), byte-identical, and every uploaded
//! segment has exactly one object.

mod common;

use aof_engine::{Durability, Engine, OwnedRecord, SegmentState};
use aof_s3_bridge::AnyStore;
use common::engine::*;
use std::io::BufRead;
use std::time::Duration;

/// The child: appends forever, printing `ack <offset>` for each acknowledged (Synced) batch end.
#[test]
#[ignore = "run by the engine_killed_during_uploads test as a child process"]
fn engine_kill_child() {
    let Ok(dir) = std::env::var("AOF_KILL_DIR") else {
        return;
    };
    let e = Engine::open(engine_config(std::path::Path::new(&dir))).unwrap();
    let h = e.handle();
    let _ = h.create_log("k").wait();
    let mut next = h.offsets("k").wait().unwrap().1;
    loop {
        let recs: Vec<OwnedRecord> = (next..next + 8).map(|i| OwnedRecord::new(body(i))).collect();
        match h.append_batch("k", recs, Durability::Synced).wait() {
            Ok(r) => {
                next = r.end;
                println!("ack {}", r.end);
            }
            Err(aof_engine::Error::DiskBudget { .. }) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => panic!("append: {e}"),
        }
    }
}

#[test]
fn engine_killed_during_uploads() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (s3, bcfg) = rt.block_on(common::s3_store("killengine"));
    let root = tempdir("kill-engine-data");
    let bridge = Bridge::start(&root, AnyStore::S3(s3.clone()), &bcfg);
    let mut acked = 0u64;
    for round in 0..6u64 {
        let mut child = KillOnDrop(
            std::process::Command::new(std::env::current_exe().unwrap())
                .args(["--exact", "engine_kill_child", "--ignored", "--nocapture"])
                .env("AOF_KILL_DIR", &root)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap(),
        );
        let out = child.0.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut last = 0;
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                if let Some(v) = line.strip_prefix("ack ") {
                    last = v.parse().unwrap();
                }
            }
            last
        });
        std::thread::sleep(Duration::from_millis(400 + 150 * round));
        drop(child); // SIGKILL, and reaped
        acked = acked.max(reader.join().unwrap());
    }
    assert!(acked > 100, "the child acknowledged too little: {acked}");
    let e = Engine::open(engine_config(&root)).unwrap();
    let h = e.handle();
    let next = h.offsets("k").wait_timeout(T).unwrap().1;
    assert!(next >= acked, "recovered to {next}, but {acked} were acknowledged");
    wait_all_uploaded(&h, "k");
    h.housekeeping(0).wait_timeout(T).unwrap();
    let evicted = h
        .segments("k")
        .wait_timeout(T)
        .unwrap()
        .iter()
        .filter(|s| s.state == SegmentState::Tier2Only)
        .count();
    verify_all(&h, "k", 0..next);
    // The kills landed on an engine that had evicted segments; reading them hydrated them.
    assert!(evicted > 0, "nothing was evicted: the test did not exercise Tier2");
    assert!(h.stats(0).wait_timeout(T).unwrap().tier2_hydrations > 0);
    let segs = h.segments("k").wait_timeout(T).unwrap();
    assert!(assert_one_object_per_uploaded_segment(&rt, &s3, &bcfg, &segs) > 0);
    e.close().unwrap();
    bridge.stop();
}
