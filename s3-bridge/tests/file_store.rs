//! `FileStore` (file://DIR): the same contract as S3, on a local directory.

use aof_s3_bridge::store::ObjectStore;
use aof_s3_bridge::{abort_stale_uploads, FailureKind, FileStore, Metrics, Op, SegmentId};
use std::sync::Arc;
use std::time::Duration;

fn store() -> (FileStore, tempfile::TempDir, tempfile::TempDir) {
    let root = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    (FileStore::new(root.path(), Arc::new(Metrics::default())), root, work)
}

fn file(dir: &std::path::Path, len: usize, seed: u64) -> (std::path::PathBuf, Vec<u8>, u32) {
    let mut data = vec![0u8; len];
    fastrand::Rng::with_seed(seed).fill(&mut data);
    let p = dir.join(format!("f{seed}"));
    std::fs::write(&p, &data).unwrap();
    let crc = crc32c::crc32c(&data);
    (p, data, crc)
}

#[tokio::test]
async fn round_trip_range_head_delete() {
    let (s, root, work) = store();
    let (path, data, crc) = file(work.path(), 3 << 20, 1);
    let key = SegmentId {
        log_id: 1,
        base: 0,
        crc32c: crc,
    }
    .key("tier2");
    let info = s.put_file(&key, &path, crc).await.unwrap();
    assert_eq!((info.size, info.crc32c), (data.len() as u64, crc));
    assert!(root.path().join(&key).exists());

    assert!(s.get(&key).await.unwrap() == data);
    assert!(s.get_range(&key, 10..1000).await.unwrap()[..] == data[10..1000]);
    assert!(s.get_range(&key, (data.len() - 3) as u64..u64::MAX).await.unwrap()[..] == data[data.len() - 3..]);
    let meta = s.head(&key).await.unwrap();
    assert_eq!((meta.size, meta.crc32c), (data.len() as u64, Some(crc)));
    let dest = work.path().join("out/hydrated");
    s.download_to_file(&key, &dest).await.unwrap();
    assert!(std::fs::read(&dest).unwrap() == data);

    s.delete(&key).await.unwrap();
    s.delete(&key).await.unwrap();
    assert_eq!(s.get(&key).await.unwrap_err().kind, FailureKind::NotFound);
    assert_eq!(s.head(&key).await.unwrap_err().kind, FailureKind::NotFound);
    assert_eq!(s.metrics_ok(Op::Put), 1);
}

#[tokio::test]
async fn wrong_crc_is_corruption_and_nothing_is_written() {
    let (s, _root, work) = store();
    let (path, _, crc) = file(work.path(), 10_000, 2);
    s.put_file("k", &path, crc ^ 0x100).await.unwrap();
    let e = s.get("k").await.unwrap_err();
    assert_eq!(e.kind, FailureKind::Corrupt, "{e}");
    let dest = work.path().join("d");
    assert_eq!(
        s.download_to_file("k", &dest).await.unwrap_err().kind,
        FailureKind::Corrupt
    );
    assert!(!dest.exists());
}

/// An object modified on disk after upload (bit rot) is caught on the next whole read.
#[tokio::test]
async fn bit_flip_on_disk_is_caught() {
    let (s, root, work) = store();
    let (path, mut data, crc) = file(work.path(), 5000, 3);
    s.put_file("a/b", &path, crc).await.unwrap();
    data[4321] ^= 0x04;
    std::fs::write(root.path().join("a/b"), &data).unwrap();
    assert_eq!(s.get("a/b").await.unwrap_err().kind, FailureKind::Corrupt);
}

#[tokio::test]
async fn keys_cannot_escape_the_root() {
    let (s, _root, work) = store();
    let (path, _, crc) = file(work.path(), 10, 4);
    for bad in ["../x", "/etc/x", "a/../../x", "", "x.meta", "x.tmp-1"] {
        assert_eq!(
            s.put_file(bad, &path, crc).await.unwrap_err().kind,
            FailureKind::Client,
            "{bad}"
        );
    }
}

/// A temp file left by a crash mid-write is an unfinished upload: invisible to readers,
/// listed once old enough, and removed by the sweep.
#[tokio::test]
async fn crash_leftovers_are_swept() {
    let (s, root, _work) = store();
    std::fs::create_dir_all(root.path().join("tier2/0001")).unwrap();
    std::fs::write(root.path().join("tier2/0001/seg.t1.tmp-123-00ff"), b"partial").unwrap();
    assert_eq!(
        s.head("tier2/0001/seg.t1").await.unwrap_err().kind,
        FailureKind::NotFound
    );
    assert!(s
        .list_pending_uploads("tier2", Duration::from_secs(3600))
        .await
        .unwrap()
        .is_empty());
    let pending = s.list_pending_uploads("tier2", Duration::ZERO).await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].key, "tier2/0001/seg.t1");
    assert_eq!(abort_stale_uploads(&s, "tier2", Duration::ZERO).await.unwrap(), 1);
    assert!(!root.path().join("tier2/0001/seg.t1.tmp-123-00ff").exists());
}

trait OkCount {
    fn metrics_ok(&self, op: Op) -> u64;
}

impl OkCount for FileStore {
    fn metrics_ok(&self, op: Op) -> u64 {
        self.metrics().ok_count(op)
    }
}

/// Listing a folder gives its objects at any depth, and nothing else: no sidecars, no temp
/// files of unfinished uploads, no sibling folder sharing the name's start.
#[tokio::test]
async fn listing_finds_exactly_the_objects_under_a_prefix() {
    let (s, root, work) = store();
    let (p, _, crc) = file(work.path(), 10, 9);
    for k in ["run-7/a", "run-7/sub/b", "run-70/c", "top"] {
        s.put_file(k, &p, crc).await.unwrap();
    }
    std::fs::write(root.path().join("run-7/sub/d.tmp-1-00ff"), b"partial").unwrap();
    for prefix in ["run-7", "run-7/", "/run-7/"] {
        let mut got = s.list_keys(prefix).await.unwrap();
        got.sort();
        assert_eq!(got, ["run-7/a", "run-7/sub/b"], "{prefix}");
    }
    let mut all = s.list_keys("").await.unwrap();
    all.sort();
    assert_eq!(all, ["run-7/a", "run-7/sub/b", "run-70/c", "top"]);
    assert!(s.list_keys("absent").await.unwrap().is_empty());
    // Every listed key reads back: the listing names objects, not files.
    for k in all {
        s.head(&k).await.unwrap();
    }
}
