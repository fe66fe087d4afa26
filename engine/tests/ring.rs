//! The shard ↔ bridge rings: wraparound, full, restart of either side, damage, cross-thread
//! stress through two separate mappings, and two processes sharing one file.

use aof_engine::tier2::ring::{
    open_ring, ring_path, Body, BridgeEnd, Consumer, Direction, Full, Geometry, Message, Producer, RingError, RingFile,
    ShardEnd,
};
use aof_engine::tier2::{failure::FailureKind, keys::SegmentId};
use std::path::Path;

fn upload(i: u64) -> Message {
    let seg = SegmentId {
        log_id: i % 7,
        base: i * 4096,
        crc32c: (i as u32).wrapping_mul(0x9e37_79b9),
    };
    Message {
        id: i,
        body: Body::Upload {
            seg,
            file_id: i + 1,
            size: i * 3,
        },
    }
}

fn pair(dir: &Path, capacity: u64) -> (Producer, Consumer) {
    // Two separate mappings of one file, as two processes would have.
    let p = open_ring(dir, 0, Direction::Requests, capacity).unwrap();
    let c = open_ring(dir, 0, Direction::Requests, capacity).unwrap();
    (Producer::new(p), Consumer::new(c))
}

#[test]
fn wraps_around_many_times_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let (mut p, mut c) = pair(dir.path(), 4);
    let (mut sent, mut got) = (0u64, 0u64);
    // Uneven batches so the ends chase each other around the ring at different phases.
    for round in 0..200u64 {
        for _ in 0..(round % 4 + 1) {
            p.push(&upload(sent)).unwrap().unwrap();
            sent += 1;
        }
        while let Some(m) = c.pop().unwrap() {
            assert_eq!(m, upload(got));
            got += 1;
        }
    }
    assert_eq!((sent, got), (500, 500));
    assert!(c.ring().is_empty());
}

#[test]
fn full_ring_refuses_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let (mut p, mut c) = pair(dir.path(), 8);
    for i in 0..8 {
        assert_eq!(p.push(&upload(i)).unwrap(), Ok(()));
    }
    assert_eq!(p.push(&upload(8)).unwrap(), Err(Full));
    assert_eq!(p.ring().len(), 8);
    assert_eq!(c.pop().unwrap(), Some(upload(0)));
    assert_eq!(p.push(&upload(8)).unwrap(), Ok(()));
    assert_eq!(p.push(&upload(9)).unwrap(), Err(Full));
}

#[test]
fn either_side_restarts_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let (mut p, mut c) = pair(dir.path(), 16);
    for i in 0..10 {
        p.push(&upload(i)).unwrap().unwrap();
    }
    for i in 0..3 {
        assert_eq!(c.pop().unwrap(), Some(upload(i)));
    }
    drop((p, c)); // both "crash"
    let (mut p, mut c) = pair(dir.path(), 16);
    assert_eq!(c.pop().unwrap(), Some(upload(3)), "consumer resumes at its head");
    p.push(&upload(10)).unwrap().unwrap();
    assert_eq!(
        c.reset(),
        7,
        "a consumer may instead drop the backlog (the manifest is the truth)"
    );
    assert_eq!(c.pop().unwrap(), None);
    p.push(&upload(11)).unwrap().unwrap();
    assert_eq!(c.pop().unwrap(), Some(upload(11)));
}

#[test]
fn replies_round_trip_and_direction_is_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let seg = SegmentId {
        log_id: 1,
        base: 2,
        crc32c: 3,
    };
    let mut p = Producer::new(open_ring(dir.path(), 5, Direction::Replies, 4).unwrap());
    let mut c = Consumer::new(open_ring(dir.path(), 5, Direction::Replies, 4).unwrap());
    let done = Message {
        id: 9,
        body: Body::Done {
            seg,
            size: 10,
            etag: "abc-2".into(),
        },
    };
    let failed = Message {
        id: 10,
        body: Body::Failed {
            seg,
            kind: FailureKind::Forbidden,
            retryable: false,
        },
    };
    p.push(&done).unwrap().unwrap();
    p.push(&failed).unwrap().unwrap();
    assert_eq!(c.pop().unwrap(), Some(done));
    assert_eq!(c.pop().unwrap(), Some(failed));
    assert!(matches!(p.push(&upload(0)), Err(RingError::WrongDirection { .. })));
}

#[test]
fn damaged_slot_is_reported_and_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let (mut p, mut c) = pair(dir.path(), 4);
    for i in 0..3 {
        p.push(&upload(i)).unwrap().unwrap();
    }
    // Flip one payload byte of slot 1 through the file, as a stray write would.
    let path = c.ring().path().to_path_buf();
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[384 + 128 + 40] ^= 0xff;
    std::os::unix::fs::FileExt::write_all_at(
        &std::fs::File::options().write(true).open(&path).unwrap(),
        &bytes[384 + 128..384 + 256],
        384 + 128,
    )
    .unwrap();
    assert_eq!(c.pop().unwrap(), Some(upload(0)));
    assert!(matches!(c.pop(), Err(RingError::Message { seq: 1, .. })));
    assert_eq!(c.pop().unwrap(), Some(upload(2)));
}

#[test]
fn wrong_or_damaged_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let g = Geometry {
        capacity: 8,
        direction: Direction::Requests,
        shard: 1,
    };
    let path = dir.path().join("r");
    drop(RingFile::open(&path, g).unwrap());
    let other = Geometry { capacity: 16, ..g };
    assert!(matches!(RingFile::open(&path, other), Err(RingError::Size { .. })));
    let other = Geometry { shard: 2, ..g };
    assert!(matches!(RingFile::open(&path, other), Err(RingError::Header { .. })));
    assert!(matches!(
        RingFile::open(&path, Geometry { capacity: 3, ..g }),
        Err(RingError::Geometry(_))
    ));
    // Counters that cannot be (tail behind head) are refused rather than trusted.
    let f = std::fs::File::options().write(true).open(&path).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &5u64.to_le_bytes(), 128).unwrap();
    assert!(matches!(
        RingFile::open(&path, g),
        Err(RingError::Counters { head: 5, tail: 0, .. })
    ));
    std::fs::write(&path, vec![0u8; g.file_bytes() as usize]).unwrap();
    assert!(matches!(RingFile::open(&path, g), Err(RingError::Header { .. })));
}

/// A producer and a consumer on two threads, each with its own mapping, a small ring so it is
/// full and empty constantly; every message's crc and sequence are checked by `pop`, and the
/// content against what was sent.
#[test]
fn cross_thread_stress() {
    const N: u64 = 200_000;
    let dir = tempfile::tempdir().unwrap();
    let (mut p, mut c) = pair(dir.path(), 16);
    let producer = std::thread::spawn(move || {
        let mut fulls = 0u64;
        for i in 0..N {
            while p.push(&upload(i)).unwrap().is_err() {
                fulls += 1;
                std::hint::spin_loop();
                if fulls.is_multiple_of(64) {
                    std::thread::yield_now();
                }
            }
        }
        fulls
    });
    // A third party (a restarting peer) opens the file while both ends race: its consistency
    // check must never mistake the moving counters for damage.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let opener = {
        let (stop, dir) = (stop.clone(), dir.path().to_path_buf());
        std::thread::spawn(move || {
            let mut opens = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                open_ring(&dir, 0, Direction::Requests, 16).unwrap();
                opens += 1;
            }
            opens
        })
    };
    let mut next = 0;
    while next < N {
        match c.pop().unwrap() {
            Some(m) => {
                assert_eq!(m, upload(next));
                next += 1;
            }
            None => std::thread::yield_now(),
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(opener.join().unwrap() > 0);
    let fulls = producer.join().unwrap();
    assert_eq!(c.pop().unwrap(), None);
    eprintln!("{N} messages, producer found the ring full {fulls} times");
}

/// Env var that turns `ring_peer_process` into the producer half of `two_processes_share_a_ring`.
const PEER_ENV: &str = "AOF_RING_PEER_DIR";
const PEER_MESSAGES: u64 = 50_000;

/// Helper entry point, not a test of its own: it does nothing unless started by
/// `two_processes_share_a_ring` (which re-runs this test binary with `PEER_ENV` set).
#[test]
fn ring_peer_process() {
    let Ok(dir) = std::env::var(PEER_ENV) else { return };
    let mut p = Producer::new(open_ring(Path::new(&dir), 3, Direction::Requests, 32).unwrap());
    for i in 0..PEER_MESSAGES {
        while p.push(&upload(i)).unwrap().is_err() {
            std::thread::yield_now();
        }
    }
}

#[test]
fn two_processes_share_a_ring() {
    let dir = tempfile::tempdir().unwrap();
    // The consumer creates the file first; the child process maps the same file.
    let mut c = Consumer::new(open_ring(dir.path(), 3, Direction::Requests, 32).unwrap());
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "ring_peer_process", "--nocapture", "--test-threads=1"])
        .env(PEER_ENV, dir.path())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    let mut next = 0;
    while next < PEER_MESSAGES {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "peer stalled at {next}"
        );
        match c.pop().unwrap() {
            Some(m) => {
                assert_eq!(m, upload(next));
                next += 1;
            }
            None => std::thread::yield_now(),
        }
    }
    assert!(child.wait().unwrap().success());
    assert_eq!(c.pop().unwrap(), None);
}

/// A request from the shard end and its reply from the bridge end, on one shard's pair of
/// rings; other shards' rings are separate files.
#[test]
fn shard_and_bridge_ends_talk() {
    let dir = tempfile::tempdir().unwrap();
    let mut shard = ShardEnd::open(dir.path(), 2, 8).unwrap();
    let mut bridge = BridgeEnd::open(dir.path(), 2, 8).unwrap();
    let req = upload(5);
    shard.requests.push(&req).unwrap().unwrap();
    let got = bridge.requests.pop().unwrap().unwrap();
    let Body::Upload { seg, size, .. } = got.body else {
        panic!("{got:?}")
    };
    let reply = Message {
        id: got.id,
        body: Body::Done {
            seg,
            size,
            etag: "e-1".into(),
        },
    };
    bridge.replies.push(&reply).unwrap().unwrap();
    assert_eq!(shard.replies.pop().unwrap(), Some(reply));
    assert!(ring_path(dir.path(), 2, Direction::Requests).exists());
    assert!(ring_path(dir.path(), 2, Direction::Replies).exists());
    assert!(!ring_path(dir.path(), 3, Direction::Requests).exists());
}
