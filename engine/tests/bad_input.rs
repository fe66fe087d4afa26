//! Bad input and hostile environments: every typed error is produced for real, and each test
//! shows the failed request changed nothing (offsets unchanged, earlier records read back,
//! the next good request gets the next offset).

mod common;
use aof_engine::{Config, Durability, Engine, Error, Handle, NewRecord, OwnedRecord};
use common::loop_mount::{running_as_root, LoopMount};
use common::*;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Appends `n` records of varied sizes to `log` and returns their payloads (offset = index).
fn fill(h: &Handle, log: &str, li: usize, n: u64) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for i in 0..n {
        let p = payload(li, i, 1 + (i as usize * 37) % 300);
        let off = h.append(log, p.clone(), ALL[(i % 3) as usize]).wait_timeout(T).unwrap();
        assert_eq!(off, i);
        out.push(p);
    }
    out
}

/// The log holds exactly `expect` (offsets 0..len), all visible, all byte-identical.
fn assert_intact(h: &Handle, log: &str, expect: &[Vec<u8>]) {
    let n = expect.len() as u64;
    assert_eq!(h.offsets(log).wait_timeout(T).unwrap(), (0, n, n), "offsets of {log:?}");
    let got = h.read_from(log, 0, usize::MAX, usize::MAX).wait_timeout(T).unwrap();
    assert_eq!(got.len(), expect.len(), "record count of {log:?}");
    for (i, (r, p)) in got.iter().zip(expect).enumerate() {
        assert_eq!(r.offset, i as u64);
        assert_eq!(&r.payload, p, "payload of {log:?} at {i}");
    }
}

/// Log directories (`shard-NNN/log-<id>`) under a data directory.
fn log_dirs(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(root) else { return out };
    for s in rd.flatten() {
        if !s.file_name().to_string_lossy().starts_with("shard-") {
            continue;
        }
        for l in std::fs::read_dir(s.path()).unwrap().flatten() {
            if l.path().is_dir() {
                out.push(l.path());
            }
        }
    }
    out.sort();
    out
}

/// The log name stored in `dir/log.meta` (layout documented in `format::logmeta`).
fn meta_name(dir: &Path) -> String {
    let b = std::fs::read(dir.join("log.meta")).unwrap();
    let len = u32::from_le_bytes(b[12..16].try_into().unwrap()) as usize;
    String::from_utf8(b[32..32 + len].to_vec()).unwrap()
}

#[test]
fn record_too_large_is_refused_and_changes_nothing() {
    let dir = tempdir("too-large");
    let cfg = small_config(&dir, 1);
    let max = cfg.max_record_bytes as usize;
    let e = start(cfg.clone());
    let h = e.handle();
    h.create_log("l").wait_timeout(T).unwrap();
    let mut expect = fill(&h, "l", 0, 5);

    for d in ALL {
        let err = h.append("l", vec![7u8; max + 1], d).wait_timeout(T).unwrap_err();
        assert!(
            matches!(err, Error::RecordTooLarge { size, max: m } if size == max + 1 && m as usize == max),
            "{err}"
        );
        let err = h.try_append("l", vec![7u8; max + 1], d).wait_timeout(T).unwrap_err();
        assert!(matches!(err, Error::RecordTooLarge { .. }), "{err}");
    }
    // One oversized record anywhere in a batch refuses the whole batch.
    let batch = vec![
        OwnedRecord::new(vec![1u8; 10]),
        OwnedRecord::new(vec![2u8; max + 1]),
        OwnedRecord::new(vec![3u8; 10]),
    ];
    let err = h
        .append_batch("l", batch, Durability::Synced)
        .wait_timeout(T)
        .unwrap_err();
    assert!(
        matches!(err, Error::RecordTooLarge { size, .. } if size == max + 1),
        "{err}"
    );
    // The same on the shard itself, including the never-awaiting path.
    let on_shard = e
        .spawn_on(h.shard_of("l"), move |s| async move {
            let log = s.log("l")?;
            let big = vec![9u8; max + 1];
            let a = log.append(&big, Durability::Written).await.unwrap_err();
            let b = log.append_buffered(NewRecord::new(&big)).unwrap_err();
            let c = log
                .try_append(NewRecord::new(&big), Durability::Memory)
                .await
                .unwrap_err();
            Ok(vec![a, b, c])
        })
        .wait_timeout(T)
        .unwrap();
    for err in on_shard {
        assert!(matches!(err, Error::RecordTooLarge { .. }), "on shard: {err}");
    }
    assert_intact(&h, "l", &expect);

    // Exactly the maximum is accepted, at the next offset, and reads back.
    let p = payload(0, 99, max);
    assert_eq!(h.append("l", p.clone(), Durability::Synced).wait_timeout(T).unwrap(), 5);
    expect.push(p);
    let p = b"after".to_vec();
    assert_eq!(
        h.append("l", p.clone(), Durability::Written).wait_timeout(T).unwrap(),
        6
    );
    expect.push(p);
    assert_intact(&h, "l", &expect);
    e.close().unwrap();

    let e = start(cfg);
    assert_intact(&e.handle(), "l", &expect);
    e.close().unwrap();
}

#[test]
fn bad_batch_is_refused_and_changes_nothing() {
    let dir = tempdir("bad-batch");
    let cfg = small_config(&dir, 1);
    let e = start(cfg.clone());
    let h = e.handle();
    h.create_log("b").wait_timeout(T).unwrap();
    let mut expect = fill(&h, "b", 1, 4);

    for d in ALL {
        let err = h.append_batch("b", Vec::new(), d).wait_timeout(T).unwrap_err();
        assert!(matches!(err, Error::BadBatch { count: 0, .. }), "{err}");
    }
    // A batch is written contiguously into one segment: one larger than a segment is refused.
    let seg = cfg.segment_size_bytes as usize;
    let big: Vec<OwnedRecord> = (0..5)
        .map(|i| OwnedRecord::new(payload(1, 1000 + i, 60 << 10)))
        .collect();
    assert!(big.iter().map(|r| r.payload.len()).sum::<usize>() > seg);
    let err = h
        .append_batch("b", big, Durability::Written)
        .wait_timeout(T)
        .unwrap_err();
    assert!(matches!(err, Error::BatchTooLarge { .. }), "{err}");
    let err = e
        .spawn_on(h.shard_of("b"), |s| async move {
            let log = s.log("b")?;
            Ok(log.append_batch(&[], Durability::Synced).await.unwrap_err())
        })
        .wait_timeout(T)
        .unwrap();
    assert!(matches!(err, Error::BadBatch { count: 0, .. }), "on shard: {err}");
    assert_intact(&h, "b", &expect);

    // A good batch gets the next contiguous range.
    let good: Vec<OwnedRecord> = (0..3).map(|i| OwnedRecord::new(payload(1, 500 + i, 33))).collect();
    let r = h
        .append_batch("b", good.clone(), Durability::Synced)
        .wait_timeout(T)
        .unwrap();
    assert_eq!(r, 4..7);
    expect.extend(good.into_iter().map(|r| r.payload));
    assert_intact(&h, "b", &expect);
    e.close().unwrap();
    let e = start(cfg);
    assert_intact(&e.handle(), "b", &expect);
    e.close().unwrap();
}

#[test]
fn unknown_log_is_reported_for_every_request() {
    let dir = tempdir("unknown");
    let e = start(small_config(&dir, 2));
    let h = e.handle();
    h.create_log("real").wait_timeout(T).unwrap();
    let expect = fill(&h, "real", 2, 6);
    let dirs_before = log_dirs(&dir);

    let ghost = "never-created";
    let is_unknown = |r: Result<(), Error>, what: &str| match r {
        Err(Error::UnknownLog { name }) => assert_eq!(name, ghost, "{what}"),
        other => panic!("{what}: expected UnknownLog, got {other:?}"),
    };
    for d in ALL {
        is_unknown(h.append(ghost, b"x".to_vec(), d).wait_timeout(T).map(|_| ()), "append");
        is_unknown(
            h.try_append(ghost, b"x".to_vec(), d).wait_timeout(T).map(|_| ()),
            "try_append",
        );
        is_unknown(
            h.append_batch(ghost, vec![OwnedRecord::new(b"x".to_vec())], d)
                .wait_timeout(T)
                .map(|_| ()),
            "append_batch",
        );
    }
    is_unknown(h.read(ghost, 0).wait_timeout(T).map(|_| ()), "read");
    is_unknown(
        h.read_from(ghost, 0, 10, 1 << 20).wait_timeout(T).map(|_| ()),
        "read_from",
    );
    is_unknown(h.sync(ghost).wait_timeout(T), "sync");
    is_unknown(h.roll(ghost).wait_timeout(T), "roll");
    is_unknown(h.offsets(ghost).wait_timeout(T).map(|_| ()), "offsets");
    is_unknown(h.wait_for(ghost, 0).wait_timeout(T), "wait_for");
    // Follow blocks without a timeout: run it on a thread and bound the wait.
    let (tx, rx) = std::sync::mpsc::channel();
    let hf = h.clone();
    std::thread::spawn(move || {
        let _ = tx.send(hf.follow(ghost, 0).next_record().map(|_| ()));
    });
    is_unknown(rx.recv_timeout(T).expect("follow of an unknown log hung"), "follow");
    let on_shard = e
        .spawn_on(h.shard_of(ghost), move |s| async move { Ok(s.log(ghost).map(|_| ())) })
        .wait_timeout(T)
        .unwrap();
    is_unknown(on_shard, "Shard::log");

    // Nothing was created on disk or in the engine for the ghost name; the real log is intact.
    assert_eq!(log_dirs(&dir), dirs_before);
    assert_intact(&h, "real", &expect);
    // The name is still free: creating it now gives an empty log starting at offset 0.
    h.create_log(ghost).wait_timeout(T).unwrap();
    assert_eq!(h.offsets(ghost).wait_timeout(T).unwrap(), (0, 0, 0));
    assert_eq!(
        h.append(ghost, b"first".to_vec(), Durability::Synced)
            .wait_timeout(T)
            .unwrap(),
        0
    );
    e.close().unwrap();
}

#[test]
fn log_exists_on_second_create_and_after_reopen() {
    let dir = tempdir("exists");
    let cfg = small_config(&dir, 2);
    let e = start(cfg.clone());
    let h = e.handle();
    h.create_log("dup").wait_timeout(T).unwrap();
    let mut expect = fill(&h, "dup", 3, 7);
    let err = h.create_log("dup").wait_timeout(T).unwrap_err();
    assert!(matches!(&err, Error::LogExists { name } if name == "dup"), "{err}");
    assert_intact(&h, "dup", &expect);
    // Concurrent creates of one new name: exactly one wins, and exactly one directory exists.
    let results: Vec<Result<(), Error>> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..8)
            .map(|_| {
                let h = h.clone();
                sc.spawn(move || h.create_log("race").wait_timeout(T))
            })
            .collect();
        hs.into_iter().map(|t| t.join().unwrap()).collect()
    });
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1, "{results:?}");
    for r in &results {
        assert!(matches!(r, Ok(()) | Err(Error::LogExists { .. })), "{r:?}");
    }
    let dirs = log_dirs(&dir);
    assert_eq!(dirs.iter().filter(|d| meta_name(d) == "race").count(), 1, "{dirs:?}");
    assert_eq!(dirs.len(), 2, "{dirs:?}");
    assert_eq!(
        h.append("race", b"r".to_vec(), Durability::Synced)
            .wait_timeout(T)
            .unwrap(),
        0
    );
    e.close().unwrap();

    let e = start(cfg);
    let h = e.handle();
    let err = h.create_log("dup").wait_timeout(T).unwrap_err();
    assert!(matches!(err, Error::LogExists { .. }), "after reopen: {err}");
    assert_intact(&h, "dup", &expect);
    expect.push(b"more".to_vec());
    assert_eq!(
        h.append("dup", b"more".to_vec(), Durability::Written)
            .wait_timeout(T)
            .unwrap(),
        7
    );
    assert_intact(&h, "dup", &expect);
    assert_eq!(log_dirs(&dir).len(), 2);
    e.close().unwrap();
}

#[test]
fn bad_log_names_are_refused_and_create_nothing() {
    let dir = tempdir("badname");
    let e = start(small_config(&dir, 2));
    let h = e.handle();
    h.create_log("ok").wait_timeout(T).unwrap();
    let expect = fill(&h, "ok", 4, 3);
    let before = log_dirs(&dir);
    let long = "x".repeat(1025);
    for name in ["", "a\nb", "\n", "tab\there", "nul\0", long.as_str()] {
        let err = h.create_log(name).wait_timeout(T).unwrap_err();
        assert!(matches!(err, Error::BadLogName { .. }), "{name:?}: {err}");
        let n = name.to_owned();
        let err = e
            .spawn_on(h.shard_of(name), move |s| async move {
                Ok(s.create_log(&n).await.unwrap_err())
            })
            .wait_timeout(T)
            .unwrap();
        assert!(matches!(err, Error::BadLogName { .. }), "on shard {name:?}: {err}");
        // Never created, so never found.
        let err = h
            .append(name, b"x".to_vec(), Durability::Memory)
            .wait_timeout(T)
            .unwrap_err();
        assert!(matches!(err, Error::UnknownLog { .. }), "{name:?}: {err}");
    }
    assert_eq!(log_dirs(&dir), before, "a refused name left a directory behind");
    assert_intact(&h, "ok", &expect);
    // The limits themselves are fine: exactly 1024 bytes, multi-byte UTF-8, spaces and slashes.
    let edge = "y".repeat(1024);
    let names = [edge.as_str(), "журнал событий", "a/b/../c", " spaced "];
    for name in names {
        h.create_log(name).wait_timeout(T).unwrap();
        assert_eq!(
            h.append(name, name.as_bytes().to_vec(), Durability::Synced)
                .wait_timeout(T)
                .unwrap(),
            0
        );
    }
    e.close().unwrap();
    let e = start(small_config(&dir, 2));
    let h = e.handle();
    for name in names {
        assert_eq!(h.read(name, 0).wait_timeout(T).unwrap().payload, name.as_bytes());
    }
    assert_intact(&h, "ok", &expect);
    e.close().unwrap();
}

fn assert_out_of_range(r: Result<aof_engine::Record, Error>, at: u64, next: u64, what: &str) {
    match r {
        Err(Error::OffsetOutOfRange {
            offset, first, next: n, ..
        }) => {
            assert_eq!((offset, first, n), (at, 0, next), "{what}: fields of the error");
        }
        other => panic!("{what}: read at {at} (next {next}) should be OffsetOutOfRange, got {other:?}"),
    }
}

#[test]
fn reads_past_the_end_are_offset_out_of_range_through_the_handle() {
    let dir = tempdir("oor");
    let e = start(small_config(&dir, 1));
    let h = e.handle();
    h.create_log("empty").wait_timeout(T).unwrap();
    assert_out_of_range(h.read("empty", 0).wait_timeout(T), 0, 0, "empty log");
    h.create_log("r").wait_timeout(T).unwrap();
    let mut expect = fill(&h, "r", 5, 5);
    for at in [5, 6, 1000, u64::MAX] {
        assert_out_of_range(h.read("r", at).wait_timeout(T), at, 5, "Handle::read");
        // A scan from past the end returns nothing or says it is out of range, never records.
        match h.read_from("r", at, 10, 1 << 20).wait_timeout(T) {
            Ok(v) => assert!(v.is_empty(), "read_from({at}) returned {} records", v.len()),
            Err(Error::OffsetOutOfRange { .. }) => {}
            Err(e) => panic!("read_from({at}): {e}"),
        }
    }
    assert_intact(&h, "r", &expect);
    assert_eq!(
        h.append("r", b"five".to_vec(), Durability::Memory)
            .wait_timeout(T)
            .unwrap(),
        5
    );
    expect.push(b"five".to_vec());
    assert_eq!(h.read("r", 5).wait_timeout(T).unwrap().payload, b"five");
    assert_out_of_range(h.read("r", 6).wait_timeout(T), 6, 6, "Handle::read after append");
    assert_intact(&h, "r", &expect);
    e.close().unwrap();
}

#[test]
fn reads_past_the_end_are_offset_out_of_range_on_the_shard() {
    let dir = tempdir("oor-local");
    let e = start(small_config(&dir, 1));
    let h = e.handle();
    h.create_log("r").wait_timeout(T).unwrap();
    let expect = fill(&h, "r", 6, 5);
    let got = e
        .spawn_on(0, |s| async move {
            let log = s.log("r")?;
            let mut v = Vec::new();
            for at in [5u64, 6, 1000, u64::MAX] {
                v.push((at, log.read(at).await));
            }
            Ok(v)
        })
        .wait_timeout(T)
        .unwrap();
    for (at, r) in got {
        assert_out_of_range(r, at, 5, "LocalLog::read");
    }
    assert_intact(&h, "r", &expect);
    e.close().unwrap();
}

#[test]
fn wrong_shard_is_reported_with_the_owner() {
    let dir = tempdir("wrongshard");
    let e = start(small_config(&dir, 2));
    let h = e.handle();
    h.create_log("events").wait_timeout(T).unwrap();
    let expect = fill(&h, "events", 7, 4);
    let owner = h.shard_of("events");
    let other = 1 - owner;
    // A name that would be created on `owner`, created from the other shard.
    let fresh = (0..)
        .map(|i| format!("fresh-{i}"))
        .find(|n| h.shard_of(n) == owner)
        .unwrap();
    let f2 = fresh.clone();
    let (a, b) = e
        .spawn_on(other, move |s| async move {
            let a = s.log("events").map(|_| ()).unwrap_err();
            let b = s.create_log(&f2).await.unwrap_err();
            Ok((a, b))
        })
        .wait_timeout(T)
        .unwrap();
    assert!(
        matches!(&a, Error::WrongShard { log, owner: o, this } if log == "events" && *o == owner && *this == other),
        "{a}"
    );
    assert!(
        matches!(&b, Error::WrongShard { owner: o, this, .. } if *o == owner && *this == other),
        "{b}"
    );
    // Nothing was created; the owner still works.
    let err = h.offsets(&fresh).wait_timeout(T).unwrap_err();
    assert!(matches!(err, Error::UnknownLog { .. }), "{err}");
    let n = e
        .spawn_on(owner, |s| async move {
            let log = s.log("events")?;
            log.append(b"local", Durability::Synced).await
        })
        .wait_timeout(T)
        .unwrap();
    assert_eq!(n, 4);
    let mut expect = expect;
    expect.push(b"local".to_vec());
    assert_intact(&h, "events", &expect);
    // A shard that does not exist is a configuration error, not a panic or a hang.
    let err = h.spawn_on(5, |_s| async move { Ok(()) }).wait_timeout(T).unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err}");
    e.close().unwrap();
}

#[test]
fn config_errors_touch_nothing_on_disk() {
    let parent = tempdir("config");
    let root = parent.join("data");
    let base = small_config(&root, 1);
    let mut bad: Vec<(&str, Config)> = Vec::new();
    let mut c = base.clone();
    c.segment_size_bytes = (256 << 10) + 512;
    bad.push(("segment size not a multiple of 4096", c));
    let mut c = base.clone();
    c.segment_size_bytes = 128 << 10; // cannot hold two 64 KiB records and a header
    bad.push(("segment too small for two max records", c));
    let mut c = base.clone();
    c.max_record_bytes = 0;
    bad.push(("max_record_bytes 0", c));
    let mut c = base.clone();
    c.max_record_bytes = (64 << 20) + 1;
    bad.push(("max_record_bytes above the ceiling", c));
    let mut c = base.clone();
    c.flush_interval = Duration::ZERO;
    bad.push(("flush_interval zero", c));
    let mut c = base.clone();
    c.shard_memory_budget_bytes = 64 << 10;
    bad.push(("budget smaller than two max records", c));
    let mut c = base.clone();
    c.flush_threshold_bytes = 0;
    bad.push(("flush threshold 0", c));
    let mut c = base.clone();
    c.index_interval_bytes = 100;
    bad.push(("index interval 100", c));
    let mut c = base.clone();
    c.inbox_capacity = 1;
    bad.push(("inbox capacity 1", c));
    let mut c = base.clone();
    c.ring_depth = 0;
    bad.push(("ring depth 0", c));
    let mut c = base.clone();
    c.shards = 2000;
    bad.push(("2000 shards", c));
    let mut c = base.clone();
    c.segment_max_age = Some(Duration::ZERO);
    bad.push(("segment_max_age zero", c));
    let mut c = base.clone();
    c.reply_spin = Some(Duration::from_millis(11));
    bad.push(("reply_spin above 10 ms", c));
    for (what, c) in bad {
        match Engine::open(c) {
            Err(Error::Config(msg)) => assert!(!msg.is_empty()),
            Err(e) => panic!("{what}: expected Config error, got {e}"),
            Ok(_) => panic!("{what}: engine opened"),
        }
        assert!(!root.exists(), "{what}: a config error created {}", root.display());
    }
    assert_eq!(std::fs::read_dir(&parent).unwrap().count(), 0);
    // The base configuration itself is fine.
    let e = start(base);
    let h = e.handle();
    h.create_log("c").wait_timeout(T).unwrap();
    assert_eq!(
        h.append("c", b"x".to_vec(), Durability::Synced)
            .wait_timeout(T)
            .unwrap(),
        0
    );
    e.close().unwrap();
}

#[test]
fn missing_directory_is_reported_and_not_created() {
    let parent = tempdir("missing");
    let root = parent.join("data");
    let mut c = small_config(&root, 1);
    c.create_if_missing = false;
    let err = Engine::open(c).map(|_| ()).unwrap_err();
    assert!(
        matches!(&err, Error::MissingDirectory { path } if path == &root),
        "{err}"
    );
    assert!(!root.exists());

    // create_if_missing creates the directory, not its parents.
    let deep = parent.join("no-such-parent").join("data");
    let c = small_config(&deep, 1);
    assert!(c.create_if_missing);
    let err = Engine::open(c).map(|_| ()).unwrap_err();
    assert!(
        matches!(&err, Error::MissingDirectory { path } if path == &deep),
        "{err}"
    );
    assert!(!parent.join("no-such-parent").exists());
    assert_eq!(std::fs::read_dir(&parent).unwrap().count(), 0);

    // And with create_if_missing the plain missing directory is created and usable.
    let e = start(small_config(&root, 1));
    e.handle().create_log("m").wait_timeout(T).unwrap();
    e.close().unwrap();
    assert!(root.is_dir());
}

#[test]
fn shard_count_too_small_is_refused_and_more_shards_work() {
    let dir = tempdir("shardcount");
    let e = start(small_config(&dir, 2));
    let h = e.handle();
    let on0 = (0..).map(|i| format!("log-{i}")).find(|n| h.shard_of(n) == 0).unwrap();
    let on1 = (0..).map(|i| format!("log-{i}")).find(|n| h.shard_of(n) == 1).unwrap();
    h.create_log(&on0).wait_timeout(T).unwrap();
    h.create_log(&on1).wait_timeout(T).unwrap();
    let mut e0 = fill(&h, &on0, 10, 20);
    let mut e1 = fill(&h, &on1, 11, 20);
    e.close().unwrap();

    match Engine::open(small_config(&dir, 1)) {
        Err(Error::ShardCountTooSmall {
            found,
            configured,
            need,
            path,
        }) => {
            assert_eq!((found, configured, need), (1, 1, 2));
            assert_eq!(path, dir);
        }
        Err(e) => panic!("expected ShardCountTooSmall, got {e}"),
        Ok(_) => panic!("opened a 2-shard directory with 1 shard"),
    }

    // Same count: everything is there.
    let e = start(small_config(&dir, 2));
    let h = e.handle();
    assert_eq!((h.shard_of(&on0), h.shard_of(&on1)), (0, 1));
    assert_intact(&h, &on0, &e0);
    assert_intact(&h, &on1, &e1);
    e.close().unwrap();

    // More shards: the logs stay where they were created and keep their data.
    let e = start(small_config(&dir, 3));
    let h = e.handle();
    assert_eq!((h.shard_of(&on0), h.shard_of(&on1)), (0, 1));
    assert_intact(&h, &on0, &e0);
    assert_intact(&h, &on1, &e1);
    for (name, exp) in [(&on0, &mut e0), (&on1, &mut e1)] {
        let p = format!("{name} with 3 shards").into_bytes();
        assert_eq!(
            h.append(name, p.clone(), Durability::Synced).wait_timeout(T).unwrap(),
            exp.len() as u64
        );
        exp.push(p);
    }
    let found = e
        .spawn_on(1, {
            let n = on1.clone();
            move |s| async move { Ok(s.log(&n)?.next_offset()) }
        })
        .wait_timeout(T)
        .unwrap();
    assert_eq!(found, 21);
    // A log created under 3 shards on shard 2 then needs 3 shards.
    let on2 = (0..)
        .map(|i| format!("three-{i}"))
        .find(|n| h.shard_of(n) == 2)
        .unwrap();
    h.create_log(&on2).wait_timeout(T).unwrap();
    h.append(&on2, b"two".to_vec(), Durability::Synced)
        .wait_timeout(T)
        .unwrap();
    e.close().unwrap();

    let err = Engine::open(small_config(&dir, 2)).map(|_| ()).unwrap_err();
    assert!(
        matches!(
            err,
            Error::ShardCountTooSmall {
                found: 2,
                configured: 2,
                need: 3,
                ..
            }
        ),
        "{err}"
    );
    let e = start(small_config(&dir, 3));
    let h = e.handle();
    assert_intact(&h, &on0, &e0);
    assert_intact(&h, &on1, &e1);
    assert_intact(&h, &on2, &[b"two".to_vec()]);
    e.close().unwrap();
}

#[test]
fn second_engine_on_one_directory_is_locked_out() {
    let dir = tempdir("locked");
    let e = start(small_config(&dir, 1));
    let h = e.handle();
    h.create_log("l").wait_timeout(T).unwrap();
    let mut expect = fill(&h, "l", 12, 10);
    for _ in 0..2 {
        match Engine::open(small_config(&dir, 1)) {
            Err(Error::Locked { path }) => assert_eq!(path, dir),
            Err(e) => panic!("expected Locked, got {e}"),
            Ok(_) => panic!("two engines opened one directory"),
        }
    }
    // The first engine is unaffected.
    assert_intact(&h, "l", &expect);
    assert_eq!(
        h.append("l", b"still mine".to_vec(), Durability::Synced)
            .wait_timeout(T)
            .unwrap(),
        10
    );
    expect.push(b"still mine".to_vec());
    e.close().unwrap();
    // Once closed, the directory opens again.
    let e = start(small_config(&dir, 1));
    assert_intact(&e.handle(), "l", &expect);
    e.close().unwrap();
}

#[test]
fn handle_used_after_close_says_shutting_down() {
    let dir = tempdir("shutdown");
    let e = start(small_config(&dir, 2));
    let h = e.handle();
    h.create_log("s").wait_timeout(T).unwrap();
    let mut expect = fill(&h, "s", 13, 9);
    let h2 = h.clone();
    // A request issued before close is sent at once, so close finishes it (and syncs it).
    let early = h.append("s", b"late".to_vec(), Durability::Synced);
    expect.push(b"late".to_vec());
    e.close().unwrap();
    assert_eq!(
        early.wait_timeout(Duration::from_secs(5)).unwrap(),
        9,
        "request issued before close"
    );

    let t = Duration::from_secs(5);
    let is_down = |r: Result<(), Error>, what: &str| {
        assert!(
            matches!(r, Err(Error::ShuttingDown)),
            "{what}: expected ShuttingDown, got {r:?}"
        );
    };
    for d in ALL {
        is_down(h2.append("s", b"x".to_vec(), d).wait_timeout(t).map(|_| ()), "append");
        is_down(
            h2.try_append("s", b"x".to_vec(), d).wait_timeout(t).map(|_| ()),
            "try_append",
        );
    }
    is_down(
        h2.append_batch("s", vec![OwnedRecord::new(b"x".to_vec())], Durability::Memory)
            .wait_timeout(t)
            .map(|_| ()),
        "batch",
    );
    is_down(h2.create_log("new").wait_timeout(t), "create_log");
    is_down(h2.read("s", 0).wait_timeout(t).map(|_| ()), "read");
    is_down(
        h2.read_from("s", 0, 10, 1 << 20).wait_timeout(t).map(|_| ()),
        "read_from",
    );
    is_down(h2.sync("s").wait_timeout(t), "sync");
    is_down(h2.roll("s").wait_timeout(t), "roll");
    is_down(h2.offsets("s").wait_timeout(t).map(|_| ()), "offsets");
    is_down(h2.wait_for("s", 100).wait_timeout(t), "wait_for");
    is_down(h2.spawn_on(0, |_s| async move { Ok(()) }).wait_timeout(t), "spawn_on");
    // Follow blocks without a timeout: run it on a thread and bound the wait.
    let (tx, rx) = std::sync::mpsc::channel();
    let h3 = h2.clone();
    std::thread::spawn(move || {
        let _ = tx.send(h3.follow("s", 0).next_record().map(|_| ()));
    });
    is_down(rx.recv_timeout(t).expect("follow hung after close"), "follow");

    // Nothing after close reached the log.
    let e = start(small_config(&dir, 2));
    assert_intact(&e.handle(), "s", &expect);
    e.close().unwrap();
}

#[test]
fn memory_file_system_is_refused_at_open() {
    let shm = Path::new("/dev/shm");
    let on_tmpfs = std::process::Command::new("stat")
        .args(["-f", "-c", "%T", "/dev/shm"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "tmpfs")
        .unwrap_or(false);
    if !shm.is_dir() || !on_tmpfs {
        eprintln!("SKIPPED memory_file_system_is_refused_at_open: /dev/shm is missing or not tmpfs");
        return;
    }
    let root = shm.join(format!("aof-bad-input-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir(&root).unwrap();
    struct Rm(PathBuf);
    impl Drop for Rm {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _rm = Rm(root.clone());
    match Engine::open(small_config(&root, 1)) {
        Err(Error::Environment { problem, remedy }) => {
            assert!(
                problem.contains("memory file system") || problem.contains("O_DIRECT"),
                "{problem}"
            );
            assert!(!remedy.is_empty());
        }
        Err(e) => panic!("expected Environment, got {e}"),
        Ok(_) => panic!("opened an engine on tmpfs"),
    }
    // Refused before anything was laid out there.
    let left: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "left behind on tmpfs: {left:?}");
}

fn is_no_space(e: &Error) -> bool {
    e.is_storage_full()
        || matches!(e, Error::Io { source, .. } if source.raw_os_error() == Some(28) || source.to_string().to_lowercase().contains("no space"))
}

#[test]
fn full_disk_gives_a_clear_error_and_keeps_acknowledged_records() {
    if !running_as_root() {
        eprintln!(
            "SKIPPED full_disk_gives_a_clear_error_and_keeps_acknowledged_records: needs root to mount a loop device"
        );
        return;
    }
    let base = tempdir("fulldisk");
    let mount = match LoopMount::new(&base, "24M") {
        Ok(m) => m,
        Err(why) => {
            eprintln!("SKIPPED full_disk_gives_a_clear_error_and_keeps_acknowledged_records: cannot mount a loop device: {why}");
            return;
        }
    };
    let root = mount.mnt.join("data");
    let mut cfg = Config::new(&root);
    cfg.shards = 1;
    cfg.segment_size_bytes = 1 << 20;
    cfg.max_record_bytes = 64 << 10;
    cfg.index_interval_bytes = 4096;
    cfg.flush_threshold_bytes = 256 << 10;
    cfg.shard_memory_budget_bytes = 2 << 20;
    cfg.io_memory_bytes = 1 << 20;
    let e = start(cfg.clone());
    let h = e.handle();
    h.create_log("fill").wait_timeout(T).unwrap();
    let mut acked: Vec<Vec<u8>> = Vec::new();
    let mut failure = None;
    for i in 0..2000u64 {
        let p = payload(20, i, 60 << 10);
        match h.append("fill", p.clone(), Durability::Synced).wait_timeout(T) {
            Ok(off) => {
                assert_eq!(off, acked.len() as u64);
                acked.push(p);
            }
            Err(err) => {
                failure = Some(err);
                break;
            }
        }
    }
    let err = failure.expect("2000 x 60 KiB never filled a 24 MiB file system");
    assert!(!matches!(err, Error::Timeout(_)), "append hung on a full disk");
    assert!(is_no_space(&err), "a full disk should say so: {err} ({err:?})");
    if matches!(&err, Error::Io { source, .. } if source.raw_os_error() == Some(28)) {
        assert!(
            err.is_storage_full(),
            "ENOSPC not recognised by is_storage_full: {err:?}"
        );
    }
    assert!(acked.len() > 100, "only {} records fit before the error", acked.len());
    eprintln!("full disk after {} acknowledged 60 KiB records: {err}", acked.len());

    // Everything acknowledged is intact, and the log still answers.
    assert_intact(&h, "fill", &acked);
    // Retrying does not hang and does not pretend to succeed silently: it fails again or
    // (if space was found) is acknowledged at the next offset.
    match h.append("fill", b"retry".to_vec(), Durability::Synced).wait_timeout(T) {
        Ok(off) => {
            assert_eq!(off, acked.len() as u64);
            acked.push(b"retry".to_vec());
        }
        Err(e) => assert!(is_no_space(&e) || matches!(e, Error::LogFailed { .. }), "retry: {e}"),
    }
    e.close().expect("close after a full disk");
    // A restart on the still-full disk finds every acknowledged record.
    let e = Eng(Some(
        Engine::open(cfg).unwrap_or_else(|e| panic!("reopen on a full disk: {e}")),
    ));
    assert_intact(&e.handle(), "fill", &acked);
    e.close().unwrap();
    drop(mount);
}
