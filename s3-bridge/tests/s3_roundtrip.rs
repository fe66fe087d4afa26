//! Round trips against the real RADOS Gateway started by `scripts/rgw.sh`.

mod common;

use aof_s3_bridge::config::Credentials;
use aof_s3_bridge::store::ObjectStore;
use aof_s3_bridge::{abort_stale_uploads, FailureKind, Op, S3Store, SegmentId};
use common::{connect, random_file, s3_store};
use std::time::Duration;

const MIB: usize = 1 << 20;

fn key(cfg_prefix: &str, base: u64, crc: u32) -> String {
    SegmentId {
        log_id: 0x42,
        base,
        crc32c: crc,
    }
    .key(cfg_prefix)
}

/// A ~20 MiB file goes up as a 5-part multipart upload (5 MiB parts) and comes back byte-identical, both
/// in memory and to a file; HEAD reports the size, a non-empty ETag and the crc metadata.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_round_trip_is_byte_identical() {
    let (store, cfg) = s3_store("mpu").await;
    let dir = tempfile::tempdir().unwrap();
    let (path, data, crc) = random_file(dir.path(), "seg", 20 * MIB + 12_345, 1);
    let k = key(&cfg.prefix, 0, crc);

    // The test config keeps the default upload pace, so the parts stream through the paced
    // body (chunked, signed as a stream) to the real gateway.
    let pacer = store.pacer().expect("s3_config keeps the default pace").clone();
    let t = std::time::Instant::now();
    let info = store.put_file(&k, &path, crc).await.unwrap();
    let took = t.elapsed();
    eprintln!("20 MiB multipart upload at {} B/s: {took:?}", pacer.bytes_per_sec());
    assert!(pacer.released_bytes() >= data.len() as u64);
    // The pace is a ceiling: the first chunk goes at once, every later byte waits its turn.
    let floor = (data.len() - aof_s3_bridge::pace::CHUNK_BYTES) as f64 / pacer.bytes_per_sec() as f64;
    assert!(took.as_secs_f64() >= floor, "{took:?} beat the pace ({floor:.2} s)");
    assert!(info.multipart);
    assert_eq!(info.size, data.len() as u64);
    assert!(
        info.etag.as_deref().is_some_and(|e| e.ends_with("-5")),
        "multipart ETag from HEAD: {:?}",
        info.etag
    );
    assert_eq!(store.metrics().ok_count(Op::PutPart), 5);

    let meta = store.head(&k).await.unwrap();
    assert_eq!((meta.size, meta.crc32c), (data.len() as u64, Some(crc)));

    let got = store.get(&k).await.unwrap();
    assert!(got == data, "whole GET differs");
    let dest = dir.path().join("hydrated");
    let m = store.download_to_file(&k, &dest).await.unwrap();
    assert_eq!(m.size, data.len() as u64);
    assert!(std::fs::read(&dest).unwrap() == data, "downloaded file differs");

    // A retried upload of the same segment is idempotent: same key, same content.
    store.put_file(&k, &path, crc).await.unwrap();
    assert!(store.get(&k).await.unwrap() == data);

    // Unpaced (upload_bytes_per_sec = 0), the parts stream straight from the file.
    let mut unpaced = cfg.clone();
    unpaced.transfer.upload_bytes_per_sec = 0;
    let fast = connect(&unpaced).await;
    assert!(fast.pacer().is_none());
    let k2 = key(&cfg.prefix, 1, crc);
    let info = fast.put_file(&k2, &path, crc).await.unwrap();
    assert!(info.multipart);
    assert!(fast.get(&k2).await.unwrap() == data);
}

/// A point read fetches exactly one slice; a range past the end is cut at the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranged_get_returns_exactly_the_slice() {
    let (store, cfg) = s3_store("range").await;
    let dir = tempfile::tempdir().unwrap();
    let (path, data, crc) = random_file(dir.path(), "seg", 3 * MIB, 2);
    let k = key(&cfg.prefix, 4096, crc);
    let info = store.put_file(&k, &path, crc).await.unwrap();
    assert!(!info.multipart, "below the threshold: one PUT");

    let slice = store.get_range(&k, 1_000_003..1_070_003).await.unwrap();
    assert!(slice[..] == data[1_000_003..1_070_003]);
    let tail = store
        .get_range(&k, (data.len() - 10) as u64..(data.len() + 100) as u64)
        .await
        .unwrap();
    assert!(tail[..] == data[data.len() - 10..]);
    assert!(store
        .get_range(&k, (data.len() + 5) as u64..(data.len() + 9) as u64)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(store.metrics().ok_count(Op::GetRange), 3);
}

/// Uploading with a crc that does not match the content is caught on download, as Corrupt,
/// without retries; nothing is written to the destination file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crc_mismatch_is_reported_as_corruption() {
    let (store, cfg) = s3_store("crc").await;
    let dir = tempfile::tempdir().unwrap();
    for (len, name) in [(MIB, "small"), (11 * MIB, "multipart")] {
        let (path, _, crc) = random_file(dir.path(), name, len, 3);
        let wrong = crc ^ 1;
        let k = key(&cfg.prefix, len as u64, wrong);
        store.put_file(&k, &path, wrong).await.unwrap();

        let e = store.get(&k).await.unwrap_err();
        assert_eq!((e.kind, e.attempts), (FailureKind::Corrupt, 1), "{e}");
        assert!(
            e.to_string()
                .contains(&format!("expected {wrong:08x}, found {crc:08x}")),
            "{e}"
        );
        let dest = dir.path().join(format!("{name}.out"));
        let e = store.download_to_file(&k, &dest).await.unwrap_err();
        assert_eq!(e.kind, FailureKind::Corrupt);
        assert!(!dest.exists());
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temp file left behind"
        );
        std::fs::remove_file(&path).unwrap();
    }
}

/// Retention delete removes the object; deleting again is fine; reads then say NotFound at
/// once (no retries: a 404 is a definite answer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_then_not_found() {
    let (store, cfg) = s3_store("del").await;
    let dir = tempfile::tempdir().unwrap();
    let (path, _, crc) = random_file(dir.path(), "seg", 100_000, 4);
    let k = key(&cfg.prefix, 7, crc);
    store.put_file(&k, &path, crc).await.unwrap();
    store.delete(&k).await.unwrap();
    store.delete(&k).await.unwrap();
    for e in [
        store.get(&k).await.unwrap_err(),
        store.head(&k).await.map(|_| ()).unwrap_err(),
    ] {
        assert_eq!((e.kind, e.attempts), (FailureKind::NotFound, 1), "{e}");
    }
}

/// An abandoned multipart upload (as a crashed bridge leaves) is listed and aborted; an age
/// filter keeps young uploads (someone may be finishing them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_multipart_upload_is_listed_and_aborted() {
    let (store, cfg) = s3_store("stale").await;
    let k = key(&cfg.prefix, 99, 0xabcd);
    let created = store
        .client()
        .create_multipart_upload()
        .bucket(store.bucket())
        .key(&k)
        .send()
        .await
        .unwrap();
    let id = created.upload_id().unwrap().to_string();
    let body = aws_sdk_s3::primitives::ByteStream::from(vec![7u8; 1000]);
    let req = store
        .client()
        .upload_part()
        .bucket(store.bucket())
        .key(&k)
        .upload_id(&id)
        .part_number(1);
    req.body(body).send().await.unwrap();

    let prefix = aof_s3_bridge::keys::dir_prefix(&cfg.prefix);
    assert!(store
        .list_pending_uploads(&prefix, Duration::from_secs(3600))
        .await
        .unwrap()
        .is_empty());
    let pending = store.list_pending_uploads(&prefix, Duration::ZERO).await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(
        (pending[0].key.as_str(), pending[0].upload_id.as_str()),
        (k.as_str(), id.as_str())
    );
    assert_eq!(abort_stale_uploads(&store, &prefix, Duration::ZERO).await.unwrap(), 1);
    assert!(store
        .list_pending_uploads(&prefix, Duration::ZERO)
        .await
        .unwrap()
        .is_empty());
}

/// Wrong credentials are Forbidden, not retried, and do not open the breaker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_credentials_fail_at_once() {
    let (_, mut cfg) = s3_store("auth").await;
    if let Credentials::Static { secret_access_key, .. } = &mut cfg.s3.credentials {
        secret_access_key.push('x');
    }
    let store = S3Store::connect(&cfg, Default::default()).await;
    let e = store.head("tier2/x").await.unwrap_err();
    assert_eq!((e.kind, e.attempts), (FailureKind::Forbidden, 1), "{e}");
    assert_eq!(store.breaker().state(), aof_s3_bridge::BreakerState::Closed);
    let _ = connect; // (shared helper, used by other binaries)
}

/// Listing finds exactly the objects under the folder, across more than one page (a listing
/// page holds 1,000 keys): not a sibling folder sharing the name's start, not an object named
/// like the folder itself, not an unfinished multipart upload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_pages_through_exactly_the_objects_under_a_prefix() {
    let (store, _cfg) = s3_store("list").await;
    let dir = tempfile::tempdir().unwrap();
    let (path, _, crc) = random_file(dir.path(), "tiny", 16, 5);
    const N: usize = 1_003;
    let mut want: Vec<String> = (0..N).map(|i| format!("run-7/obj-{i:05}")).collect();
    want.push("run-7/sub/deeper".into());
    let mut tasks = tokio::task::JoinSet::new();
    for chunk in want
        .iter()
        .cloned()
        .chain(["run-70/other".to_string(), "run-7".to_string()])
        .collect::<Vec<_>>()
        .chunks(64)
    {
        let (store, path, chunk) = (store.clone(), path.clone(), chunk.to_vec());
        tasks.spawn(async move {
            for k in chunk {
                store.put_file(&k, &path, crc).await.unwrap();
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    store
        .client()
        .create_multipart_upload()
        .bucket(store.bucket())
        .key("run-7/unfinished")
        .send()
        .await
        .unwrap();

    for prefix in ["run-7", "run-7/"] {
        let mut got = store.list_keys(prefix).await.unwrap();
        got.sort();
        want.sort();
        assert_eq!(got.len(), want.len(), "{prefix}");
        assert!(got == want, "{prefix}: listing differs");
    }
    assert_eq!(
        store.list_keys("run-70").await.unwrap(),
        vec!["run-70/other".to_string()]
    );
    assert!(store.list_keys("nothing-here").await.unwrap().is_empty());
    assert!(
        store.metrics().ok_count(Op::List) >= 2 * 2 + 2,
        "pages counted in metrics"
    );
}
