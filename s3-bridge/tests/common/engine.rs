//! Test support for the engine and the bridge together: an engine config with a bridge link,
//! the bridge on its own tokio threads in this process, and record helpers.

use aof_engine::{Config, Durability, OwnedRecord, SegmentState, Tier2Config};
use aof_s3_bridge::worker::{InProcess, Worker};
use aof_s3_bridge::{AnyStore, BridgeConfig, FileStore, Metrics};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const T: Duration = Duration::from_secs(60);

pub fn body(i: u64) -> Vec<u8> {
    let len = 300 + (i as usize * 97) % 2500;
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|k| {
            if k % 3 == 0 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            } else {
                b"segment "[k % 8]
            }
        })
        .collect()
}

pub fn engine_config(root: &Path) -> Config {
    let mut c = Config::new(root);
    c.shards = 1;
    c.segment_size_bytes = 256 << 10;
    c.max_record_bytes = 64 << 10;
    c.index_interval_bytes = 2048;
    c.flush_threshold_bytes = 64 << 10;
    c.shard_memory_budget_bytes = 1 << 20;
    c.io_memory_bytes = 1 << 20;
    c.tier1_frame_bytes = 8192;
    c.tier1_budget_bytes = Some(4 * c.segment_size_bytes);
    c.housekeeping_interval = Duration::from_millis(100);
    c.tier2 = Some(Tier2Config {
        ring_capacity: 256,
        read_timeout: Duration::from_secs(20),
        retry_interval: Duration::from_millis(200),
    });
    c
}

/// The bridge on its own tokio threads in this process.
pub struct Bridge(InProcess);

impl Bridge {
    pub fn start(root: &Path, store: AnyStore, cfg: &BridgeConfig) -> Bridge {
        let w = Worker::new(root.to_path_buf(), store, cfg, 256, Arc::new(Metrics::default()));
        Bridge(InProcess::start(w, 2).unwrap())
    }

    pub fn stop(self) {
        self.0.stop();
    }
}

/// A fresh directory `<name>-<pid>` under the target dir. Those an exited test process left
/// under the same name are removed first, so runs do not pile up.
pub fn tempdir(name: &str) -> PathBuf {
    let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    for e in std::fs::read_dir(&root).into_iter().flatten().flatten() {
        let file = e.file_name();
        let Some(pid) = file
            .to_str()
            .and_then(|f| f.strip_prefix(name))
            .and_then(|f| f.strip_prefix('-'))
        else {
            continue;
        };
        if pid
            .parse::<u32>()
            .is_ok_and(|p| !Path::new(&format!("/proc/{p}")).exists())
        {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
    let d = root.join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub fn file_store(dir: &Path) -> (AnyStore, BridgeConfig) {
    let cfg = BridgeConfig {
        target: format!("file://{}", dir.display()),
        prefix: "t2".into(),
        metrics_addr: None,
        ..Default::default()
    };
    (
        AnyStore::File(FileStore::new(dir.to_path_buf(), Arc::new(Metrics::default()))),
        cfg,
    )
}

/// Waits until `f` holds, polling; panics with `what` after `T`.
pub fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < T, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Appends until the log has `segments` sealed segments; returns the record count.
pub fn fill(h: &aof_engine::Handle, log: &str, from: u64, segments: usize) -> u64 {
    fill_with(h, log, from, segments, body)
}

/// `fill` with the payload of record `k` made by `body`.
pub fn fill_with(h: &aof_engine::Handle, log: &str, from: u64, segments: usize, body: impl Fn(u64) -> Vec<u8>) -> u64 {
    let mut i = from;
    loop {
        let recs: Vec<OwnedRecord> = (i..i + 16).map(|k| OwnedRecord::new(body(k))).collect();
        match h.append_batch(log, recs, Durability::Written).wait_timeout(T) {
            Ok(_) => i += 16,
            // Over the Tier1 budget until Tier2 confirms uploads: wait and retry.
            Err(aof_engine::Error::DiskBudget { .. }) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => panic!("append: {e}"),
        }
        let sealed = h
            .segments(log)
            .wait_timeout(T)
            .unwrap()
            .iter()
            .filter(|s| !matches!(s.state, SegmentState::Active | SegmentState::Sealing))
            .count();
        if sealed >= segments {
            return i;
        }
    }
}

/// Appends batches of 16 until the shard refuses with `DiskBudget` (the Tier1 budget is full
/// and nothing is safe to evict); returns how many records were accepted. Panics on any other
/// error, or if 100,000 records go in without backpressure.
pub fn fill_until_disk_budget(h: &aof_engine::Handle, log: &str, from: u64) -> u64 {
    let mut i = from;
    let err = loop {
        let recs: Vec<OwnedRecord> = (i..i + 16).map(|k| OwnedRecord::new(body(k))).collect();
        match h.append_batch(log, recs, Durability::Written).wait_timeout(T) {
            Ok(_) => i += 16,
            Err(aof_engine::Error::DiskBudget { .. }) => {
                // Full for good only once the sealed segments are compressed: compressing a
                // raw one shrinks it and frees budget (on a compression thread, often between
                // this refusal and the next append).
                h.tiering_idle(0).wait_timeout(T).unwrap();
                h.housekeeping(0).wait_timeout(T).unwrap();
                let probe = OwnedRecord::new(body(i));
                match h.append_batch(log, vec![probe], Durability::Written).wait_timeout(T) {
                    Ok(_) => i += 1,
                    Err(e) => break e,
                }
            }
            Err(e) => break e,
        }
        if i % 512 == 0 {
            h.tiering_idle(0).wait_timeout(T).unwrap();
            h.housekeeping(0).wait_timeout(T).unwrap();
        }
        assert!(i < from + 100_000, "no backpressure from a full Tier1 budget");
    };
    assert!(matches!(err, aof_engine::Error::DiskBudget { .. }), "{err}");
    i
}

/// Scans the range (hydrating evicted segments whole), then point-reads a sample of it.
pub fn verify_all(h: &aof_engine::Handle, log: &str, range: std::ops::Range<u64>) {
    // A scan returns what it can read in one go (it stops before a segment it has to fetch
    // from Tier2); a reader continues from where it stopped.
    let mut at = range.start;
    while at < range.end {
        let v = h
            .read_from(log, at, (range.end - at) as usize, usize::MAX)
            .wait_timeout(T)
            .unwrap_or_else(|e| panic!("scan from {at}: {e}"));
        assert!(!v.is_empty());
        for r in &v {
            assert_eq!(r.offset, at);
            assert_eq!(r.payload, body(at), "scanned record {at}");
            at += 1;
        }
    }
    // Point reads of a sample (the scan saw every byte): on an evicted segment each one is a
    // ranged read through the bridge.
    for o in range.clone().step_by(7).chain([range.end - 1]) {
        let r = h
            .read(log, o)
            .wait_timeout(T)
            .unwrap_or_else(|e| panic!("read {o}: {e}"));
        assert_eq!(r.payload, body(o), "record {o}");
    }
}

/// Every `.t1` object file below a `file://` store directory.
pub fn objects(dir: &Path) -> Vec<String> {
    fn go(d: &Path, out: &mut Vec<String>) {
        if let Ok(rd) = std::fs::read_dir(d) {
            for e in rd.flatten() {
                let p = e.path();
                if p.is_dir() {
                    go(&p, out);
                } else if p.extension().is_some_and(|x| x == "t1") {
                    out.push(p.to_string_lossy().into_owned());
                }
            }
        }
    }
    let mut v = Vec::new();
    go(dir, &mut v);
    v
}

/// Point reads of records of every Tier2-only segment: each is served by a ranged read of one
/// frame, and the segment stays Tier2-only (nothing is hydrated).
pub fn point_reads_of_evicted(h: &aof_engine::Handle, log: &str) {
    let before = h.stats(0).wait_timeout(T).unwrap();
    let evicted: Vec<(u64, u64)> = h
        .segments(log)
        .wait_timeout(T)
        .unwrap()
        .iter()
        .filter(|s| s.state == SegmentState::Tier2Only)
        .map(|s| (s.base_offset, s.next_offset))
        .collect();
    assert!(!evicted.is_empty());
    for &(b, e) in &evicted {
        for o in [b, (b + e) / 2, e - 1] {
            let r = h
                .read(log, o)
                .wait_timeout(T)
                .unwrap_or_else(|err| panic!("read {o}: {err}"));
            assert_eq!(r.offset, o);
            assert_eq!(r.payload, body(o), "record {o}");
        }
    }
    let after = h.stats(0).wait_timeout(T).unwrap();
    assert_eq!(
        after.tier2_hydrations, before.tier2_hydrations,
        "a point read hydrated a segment"
    );
    assert!(after.tier2_range_reads >= before.tier2_range_reads + 3 * evicted.len() as u64);
    let still = h
        .segments(log)
        .wait_timeout(T)
        .unwrap()
        .iter()
        .filter(|s| s.state == SegmentState::Tier2Only)
        .count();
    assert_eq!(still, evicted.len());
}

/// Waits until every sealed segment of `log` in Tier1 (or beyond) is confirmed in Tier2.
pub fn wait_all_uploaded(h: &aof_engine::Handle, log: &str) {
    // Every segment but the active one: a sealed segment not yet recompressed into Tier1 is
    // still to be uploaded, and counting only Tier1 ones let this return before any was.
    eventually(&format!("every sealed segment of {log} uploaded"), || {
        h.segments(log)
            .wait()
            .unwrap()
            .iter()
            .filter(|s| s.state != SegmentState::Active)
            .all(|s| s.uploaded.is_some())
    });
}

/// Keys under `prefix/` in the bucket (the tests' prefixes hold well under one listing page).
pub async fn s3_keys(s3: &aof_s3_bridge::S3Store, bucket: &str, prefix: &str) -> Vec<String> {
    let out = s3
        .client()
        .list_objects_v2()
        .bucket(bucket)
        .prefix(format!("{prefix}/"))
        .send()
        .await
        .expect("list objects");
    assert!(!out.is_truncated().unwrap_or(false), "more keys than one page");
    out.contents()
        .iter()
        .filter_map(|o| o.key().map(str::to_owned))
        .collect()
}

/// The bucket holds exactly one object per uploaded segment of `segs`, under the key the
/// manifest recorded, and nothing else under the prefix. Returns how many there are.
pub fn assert_one_object_per_uploaded_segment(
    rt: &tokio::runtime::Runtime,
    s3: &aof_s3_bridge::S3Store,
    bcfg: &BridgeConfig,
    segs: &[aof_engine::SegmentInfo],
) -> usize {
    let mut keys = rt.block_on(s3_keys(s3, &bcfg.s3.bucket, &bcfg.prefix));
    keys.sort();
    let mut uploaded: Vec<String> = segs
        .iter()
        .filter_map(|s| s.uploaded.as_ref().map(|o| format!("{}/{}", bcfg.prefix, o.key)))
        .collect();
    uploaded.sort();
    assert_eq!(keys, uploaded, "exactly one object per uploaded segment");
    uploaded.len()
}

/// A child process that is SIGKILLed and reaped when dropped, so a failing test does not leave
/// it running.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
