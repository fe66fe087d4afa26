//! The work loop's request handling, without a shard: the same upload asked for twice while
//! the first is still on the wire goes up once, and both asks get its answer.

use aof_s3_bridge::ring::{Body, Message};
use aof_s3_bridge::worker::Worker;
use aof_s3_bridge::{AnyStore, BridgeConfig, FileStore, Metrics, Op, SegmentId};
use std::sync::Arc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_ask_for_an_upload_in_flight_does_not_upload_twice() {
    let root = tempfile::tempdir().unwrap();
    let store_dir = tempfile::tempdir().unwrap();
    let data: Vec<u8> = (0..512 * 1024u32).map(|i| (i * 31 + 7) as u8).collect();
    let seg = SegmentId {
        log_id: 7,
        base: 1000,
        crc32c: crc32c::crc32c(&data),
    };
    let path = aof_engine::tier2::tier1_path(root.path(), 0, seg.log_id, seg.base);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, &data).unwrap();
    // 512 KiB at 1 MiB/s: the first upload is on the wire for ~0.5 s.
    let metrics = Arc::new(Metrics::default());
    let store = FileStore::new(store_dir.path(), metrics.clone()).paced(aof_s3_bridge::pace::Pacer::new(1 << 20));
    let cfg = BridgeConfig {
        prefix: "t".into(),
        ..Default::default()
    };
    let w = Worker::new(
        root.path().to_path_buf(),
        AnyStore::File(store),
        &cfg,
        64,
        Arc::new(Metrics::default()),
    );
    let ask = |id| Message {
        id,
        body: Body::Upload {
            seg,
            file_id: 0,
            size: data.len() as u64,
        },
    };
    let first = tokio::spawn({
        let w = w.clone();
        let m = ask(1);
        async move { w.handle(0, m).await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let second = w.handle(0, ask(2)).await;
    let first = first.await.unwrap();
    for (reply, id) in [(&first, 1), (&second, 2)] {
        assert_eq!(reply.id, id);
        assert!(
            matches!(reply.body, Body::Done { size, .. } if size == data.len() as u64),
            "{reply:?}"
        );
    }
    assert_eq!(metrics.ok_count(Op::Put), 1, "the bytes went up once");
}
