//! Regression tests for the failures of the mutex/mmap predecessor (see `/work/shared/brief.md`,
//! "What the previous generation got wrong"). Each test opens with the bug it pins.

mod common;
use aof_engine::{Durability, Engine, Error, Handle, IoWorkerCpus, LocalLog, NewRecord, OwnedRecord};
use common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Reads the whole log and checks it equals `expect` byte for byte, offset for offset.
fn assert_log(h: &Handle, log: &str, expect: &[Vec<u8>]) {
    let n = expect.len() as u64;
    assert_eq!(h.offsets(log).wait_timeout(T).unwrap(), (0, n, n), "offsets of {log:?}");
    let got = h.read_from(log, 0, usize::MAX, usize::MAX).wait_timeout(T).unwrap();
    assert_eq!(got.len(), expect.len(), "records in {log:?}");
    for (i, (r, p)) in got.iter().zip(expect).enumerate() {
        assert_eq!(r.offset, i as u64, "{log:?}");
        assert_eq!(&r.payload, p, "{log:?} record {i} (len {})", p.len());
    }
}

/// `log` holds `expect`, and holds it again after a clean close and a restart with `cfg` that
/// recovers without complaint.
fn assert_log_survives_restart(e: Eng, cfg: aof_engine::Config, log: &str, expect: &[Vec<u8>]) {
    assert_log(&e.handle(), log, expect);
    e.close().unwrap();
    let e = start(cfg);
    assert_clean_recovery(&e);
    assert_log(&e.handle(), log, expect);
    e.close().unwrap();
}

/// Checks that recovery after a clean close found nothing to repair.
fn assert_clean_recovery(e: &Engine) {
    for r in e.recovery_reports() {
        assert_eq!(r.truncated_bytes, 0, "{r:?}");
        assert_eq!(r.dropped_batch_records, 0, "{r:?}");
        assert!(r.lost_ranges.is_empty(), "{r:?}");
        assert!(r.notes.is_empty(), "{r:?}");
    }
}

// Bug pinned: restart silently destroyed acknowledged records because the recovery scan
// miscounted frame padding. Odd payload lengths (every padding amount 0..7, many times over)
// are written in Memory mode, then the engine restarts twice with appends in between.
#[test]
fn odd_lengths_and_padding_survive_restarts() {
    let dir = tempdir("reg-padding");
    let logs = ["pad-a", "pad-b", "pad-c"];
    let mut expect: Vec<Vec<Vec<u8>>> = vec![Vec::new(); logs.len()];
    let mut seq = 0u64;
    let mut add = |h: &Handle, expect: &mut Vec<Vec<Vec<u8>>>, round: usize| {
        for (li, l) in logs.iter().enumerate() {
            for len in 1..=67usize {
                let p = payload(li + 10 * round, seq, len);
                seq += 1;
                let off = h.append(l, p.clone(), Durability::Memory).wait_timeout(T).unwrap();
                assert_eq!(off, expect[li].len() as u64);
                expect[li].push(p);
            }
            // A batch of odd lengths too (its records are framed back to back).
            let batch: Vec<OwnedRecord> = [3usize, 1, 5, 7, 9, 2]
                .iter()
                .map(|&len| OwnedRecord::new(payload(li, seq + len as u64, len)))
                .collect();
            seq += 10;
            let r = h
                .append_batch(l, batch.clone(), Durability::Memory)
                .wait_timeout(T)
                .unwrap();
            assert_eq!(r.start, expect[li].len() as u64);
            expect[li].extend(batch.into_iter().map(|b| b.payload));
        }
    };

    let e = start(small_config(&dir, 2));
    let h = e.handle();
    for l in logs {
        h.create_log(l).wait_timeout(T).unwrap();
    }
    add(&h, &mut expect, 0);
    e.close().unwrap();

    let e = start(small_config(&dir, 2));
    assert_clean_recovery(&e);
    let h = e.handle();
    for (li, l) in logs.iter().enumerate() {
        assert_log(&h, l, &expect[li]);
    }
    add(&h, &mut expect, 1);
    e.close().unwrap();

    let e = start(small_config(&dir, 2));
    assert_clean_recovery(&e);
    let h = e.handle();
    for (li, l) in logs.iter().enumerate() {
        assert_log(&h, l, &expect[li]);
        // Point reads go through the sparse index, so a padding error would land mid-frame.
        for (o, p) in expect[li].iter().enumerate() {
            assert_eq!(
                &h.read(l, o as u64).wait_timeout(T).unwrap().payload,
                p,
                "{l} point read {o}"
            );
        }
        let next = h
            .append(l, b"tail".to_vec(), Durability::Synced)
            .wait_timeout(T)
            .unwrap();
        assert_eq!(next, expect[li].len() as u64);
    }
    e.close().unwrap();
}

// Bug pinned: full segments were never sealed, so writes stalled forever once the first
// segment filled. ~2 MiB of Written appends into 256 KiB segments must complete, seal
// segments on their own, and reopen from their seals.
#[test]
fn full_segments_are_sealed_automatically() {
    let dir = tempdir("reg-seal");
    let cfg = small_config(&dir, 2);
    let e = start(cfg.clone());
    let h = e.handle();
    h.create_log("big").wait_timeout(T).unwrap();
    let mut expect = Vec::new();
    let mut total = 0usize;
    let mut i = 0u64;
    while total < 2 << 20 {
        let len = 1 + (i as usize * 7919) % 20_000;
        let p = payload(1, i, len);
        let off = h
            .append("big", p.clone(), Durability::Written)
            .wait_timeout(T)
            .unwrap_or_else(|e| panic!("append {i} after {total} bytes: {e}"));
        assert_eq!(off, i);
        expect.push(p);
        total += len;
        i += 1;
    }
    let sealed = e
        .spawn_on(
            h.shard_of("big"),
            |s| async move { Ok(s.log("big")?.sealed_segments()) },
        )
        .wait_timeout(T)
        .unwrap();
    // 2 MiB of frames in 256 KiB segments: at least 7 full segments, all but the active one
    // (and possibly one being sealed right now) already sealed.
    assert!(sealed >= 6, "only {sealed} sealed segments after {total} bytes");
    assert_log(&h, "big", &expect);
    e.close().unwrap();

    let e = start(cfg);
    let report = e.recovery_reports().iter().find(|r| r.log == "big").unwrap().clone();
    assert!(report.segments >= 8, "{report:?}");
    // Sealed segments are opened through their verified seal, only the active one is scanned.
    assert!(report.scanned <= 1, "sealed segments needed a scan: {report:?}");
    assert_clean_recovery(&e);
    let h = e.handle();
    assert_log(&h, "big", &expect);
    assert_eq!(
        h.append("big", b"more".to_vec(), Durability::Synced)
            .wait_timeout(T)
            .unwrap(),
        expect.len() as u64
    );
    e.close().unwrap();
}

// Bug pinned: a flush-wait that hung. Many threads waiting on group-commit syncs at once must
// all be answered, with dense and unique offsets per log.
#[test]
fn sync_waits_never_hang_under_many_concurrent_writers() {
    let dir = tempdir("reg-sync");
    let e = start(small_config(&dir, 2));
    let h = e.handle();
    let logs = ["s0", "s1", "s2", "s3"];
    for l in logs {
        h.create_log(l).wait_timeout(T).unwrap();
    }
    let acks: Vec<(usize, u64, usize, u64)> = std::thread::scope(|sc| {
        let threads: Vec<_> = (0..8usize)
            .map(|t| {
                let h = h.clone();
                sc.spawn(move || {
                    let mut v = Vec::new();
                    for i in 0..200u64 {
                        let li = (t + i as usize) % logs.len();
                        let p = payload(t, i, 1 + (i as usize * 13 + t) % 700);
                        let off = h
                            .append(logs[li], p, Durability::Synced)
                            .wait_timeout(Duration::from_secs(20))
                            .unwrap_or_else(|e| panic!("thread {t} append {i}: {e}"));
                        v.push((li, off, t, i));
                    }
                    v
                })
            })
            .collect();
        threads.into_iter().flat_map(|t| t.join().unwrap()).collect()
    });
    assert_eq!(acks.len(), 1600);
    let mut per_log: BTreeMap<usize, BTreeMap<u64, (usize, u64)>> = BTreeMap::new();
    for (li, off, t, i) in acks {
        let prev = per_log.entry(li).or_default().insert(off, (t, i));
        assert!(prev.is_none(), "offset {off} of {} acknowledged twice", logs[li]);
    }
    for (li, m) in &per_log {
        let n = m.len() as u64;
        assert_eq!(
            m.keys().copied().collect::<Vec<_>>(),
            (0..n).collect::<Vec<_>>(),
            "dense"
        );
        assert_eq!(h.offsets(logs[*li]).wait_timeout(T).unwrap(), (0, n, n));
        let got = h
            .read_from(logs[*li], 0, usize::MAX, usize::MAX)
            .wait_timeout(T)
            .unwrap();
        for r in got {
            let (t, i) = m[&r.offset];
            assert_eq!(r.payload, payload(t, i, 1 + (i as usize * 13 + t) % 700));
        }
    }
    e.close().unwrap();
}

/// Many Synced writers on one log: the flusher writes group n+1 while group n's fdatasync runs
/// in its own task. Every acknowledgment is for a dense, correct record, and all of them are
/// there after a restart. A sync overlaps only writes still in flight, and a write that ends
/// mid-block holds the next one back, so every record here frames to exactly one block.
#[test]
fn pipelined_syncs_acknowledge_every_record_exactly_once() {
    const BLOCK_PAYLOAD: usize = 4096 - 40;
    assert_eq!(aof_engine::format::frame::frame_len(BLOCK_PAYLOAD), 4096);
    let dir = tempdir("reg-pipelined");
    let e = start(small_config(&dir, 1));
    let h = e.handle();
    h.create_log("p").wait_timeout(T).unwrap();
    let acks: Vec<(u64, usize, u64)> = std::thread::scope(|sc| {
        let threads: Vec<_> = (0..32usize)
            .map(|t| {
                let h = h.clone();
                sc.spawn(move || {
                    (0..150u64)
                        .map(|i| {
                            let p = payload(t, i, BLOCK_PAYLOAD);
                            let off = h.append("p", p, Durability::Synced).wait_timeout(T).unwrap();
                            (off, t, i)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        threads.into_iter().flat_map(|t| t.join().unwrap()).collect()
    });
    let st = h.stats(0).wait_timeout(T).unwrap();
    assert!(st.overlapped_syncs > 0, "the pipelined path never ran: {st:?}");
    let mut by_off = BTreeMap::new();
    for (off, t, i) in acks {
        assert!(by_off.insert(off, (t, i)).is_none(), "offset {off} acknowledged twice");
    }
    assert_eq!(
        by_off.keys().copied().collect::<Vec<_>>(),
        (0..32 * 150).collect::<Vec<_>>()
    );
    e.close().unwrap();
    let e = start(small_config(&dir, 1));
    let h = e.handle();
    let got = h.read_from("p", 0, usize::MAX, usize::MAX).wait_timeout(T).unwrap();
    assert_eq!(got.len(), by_off.len());
    for r in got {
        let (t, i) = by_off[&r.offset];
        assert_eq!(r.payload, payload(t, i, BLOCK_PAYLOAD));
    }
    e.close().unwrap();
}

/// Group commit holds a sync for producers on other threads that the last one released
/// (`group`). Producers that leave must not strand the one that stays: seven threads stop
/// after a few appends and one carries on alone; every append of every thread is answered,
/// dense and intact. Tasks on the shard are never held.
#[test]
fn held_syncs_never_strand_the_producers_that_stay() {
    let dir = tempdir("reg-held-syncs");
    let e = start(small_config(&dir, 1));
    let h = e.handle();
    h.create_log("g").wait_timeout(T).unwrap();
    let acks: Vec<(u64, usize, u64)> = std::thread::scope(|sc| {
        let threads: Vec<_> = (0..8usize)
            .map(|t| {
                let h = h.clone();
                let n = if t == 0 { 400 } else { 20 };
                sc.spawn(move || {
                    (0..n)
                        .map(|i| {
                            let p = payload(t, i, 100 + t);
                            let off = h
                                .append("g", p, Durability::Synced)
                                .wait_timeout(T)
                                .unwrap_or_else(|e| panic!("thread {t} append {i}: {e}"));
                            (off, t, i)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        threads.into_iter().flat_map(|t| t.join().unwrap()).collect()
    });
    let st = h.stats(0).wait_timeout(T).unwrap();
    assert!(st.held_syncs > 0, "no sync was ever held: {st:?}");
    let mut by_off = BTreeMap::new();
    for (off, t, i) in acks {
        assert!(by_off.insert(off, (t, i)).is_none(), "offset {off} acknowledged twice");
    }
    assert_eq!(
        by_off.keys().copied().collect::<Vec<_>>(),
        (0..400 + 7 * 20).collect::<Vec<_>>()
    );
    let got = h.read_from("g", 0, usize::MAX, usize::MAX).wait_timeout(T).unwrap();
    assert_eq!(got.len(), by_off.len());
    for r in got {
        let (t, i) = by_off[&r.offset];
        assert_eq!(r.payload, payload(t, i, 100 + t));
    }

    // The same from 8 tasks on the shard: no hold.
    let before = st.held_syncs;
    e.handle()
        .spawn_on(0, |s| async move {
            let log = s.log("g")?;
            let tasks: Vec<_> = (0..8)
                .map(|t| {
                    let log = log.clone();
                    glommio::spawn_local(async move {
                        for i in 0..50u64 {
                            log.append(&payload(t, i, 64), Durability::Synced).await?;
                        }
                        Ok::<(), aof_engine::Error>(())
                    })
                })
                .collect();
            for t in tasks {
                t.await?;
            }
            Ok(())
        })
        .wait_timeout(T)
        .unwrap();
    let st = h.stats(0).wait_timeout(T).unwrap();
    assert_eq!(st.held_syncs, before, "a task on the shard was held");
    assert_eq!(h.offsets("g").wait_timeout(T).unwrap().1, 400 + 7 * 20 + 8 * 50);
    e.close().unwrap();
}

/// A Synced append that leaves a whole write's worth unflushed issues that write itself
/// (`flusher::issue_full_write`), beside the flusher's own writes and syncs. Batched producers
/// on the shard, segments rolling under them: every acknowledged batch is dense and intact,
/// before and after a restart.
#[test]
fn producer_issued_writes_lose_nothing() {
    let dir = tempdir("reg-producer-writes");
    let e = start(small_config(&dir, 1));
    e.handle().create_log("w").wait_timeout(T).unwrap();
    let acks: Vec<(u64, usize, u64)> = e
        .handle()
        .spawn_on(0, |s| async move {
            let log = s.log("w")?;
            let tasks: Vec<_> = (0..8usize)
                .map(|t| {
                    let log = log.clone();
                    glommio::spawn_local(async move {
                        let mut acks = Vec::new();
                        for b in 0..40u64 {
                            let recs: Vec<Vec<u8>> = (0..16).map(|k| payload(t, b * 16 + k, 700 + t * 40)).collect();
                            let new: Vec<NewRecord<'_>> = recs.iter().map(|r| NewRecord::new(r)).collect();
                            let r = log.append_batch(&new, Durability::Synced).await?;
                            assert_eq!(r.end - r.start, 16);
                            acks.push((r.start, t, b));
                        }
                        Ok::<_, Error>(acks)
                    })
                })
                .collect();
            let mut all = Vec::new();
            for t in tasks {
                all.extend(t.await?);
            }
            Ok(all)
        })
        .wait_timeout(T)
        .unwrap();
    let st = e.handle().stats(0).wait_timeout(T).unwrap();
    assert!(st.producer_writes > 0, "no producer issued a write: {st:?}");
    // New files: each partly written block was rewritten apart from the blocks behind it.
    assert!(
        st.head_block_writes > 0,
        "no rewrite of a partial block went alone: {st:?}"
    );
    assert!(st.segments_sealed > 0, "no roll happened under the producers: {st:?}");
    let check = |h: &Handle| {
        let got = h.read_from("w", 0, usize::MAX, usize::MAX).wait_timeout(T).unwrap();
        assert_eq!(got.len(), 8 * 40 * 16);
        for &(start, t, b) in &acks {
            for k in 0..16 {
                let r = &got[(start + k) as usize];
                assert_eq!(r.offset, start + k);
                assert_eq!(
                    r.payload,
                    payload(t, b * 16 + k, 700 + t * 40),
                    "batch {b} of task {t}, record {k}"
                );
            }
        }
    };
    check(&e.handle());
    e.close().unwrap();
    let e = start(small_config(&dir, 1));
    assert_clean_recovery(&e);
    check(&e.handle());
    e.close().unwrap();
}

/// Several bounded writes of one log in flight at once (`flush_writes_in_flight`): they may
/// complete in any order, but records are acknowledged only once every write below them has
/// completed. Readers running meanwhile see every record, byte for byte, whether it is staged,
/// in a write in flight, or on disk; segments roll mid-stream; all of it is there after a
/// restart.
#[test]
fn concurrent_writes_retire_in_order_and_lose_nothing() {
    let dir = tempdir("reg-concurrent-writes");
    let cfg = || {
        let mut c = small_config(&dir, 1);
        c.flush_threshold_bytes = 16 << 10;
        c.flush_writes_in_flight = 8;
        c.segment_size_bytes = 512 << 10;
        c
    };
    let len = |t: usize, i: u64| 200 + (i as usize * 31 + t * 7) % 3000;
    let e = start(cfg());
    let h = e.handle();
    h.create_log("c").wait_timeout(T).unwrap();
    let done = AtomicBool::new(false);
    let acks: Vec<(Range<u64>, usize, u64)> = std::thread::scope(|sc| {
        let reader = sc.spawn(|| {
            // Re-reads what is visible while writes are in flight; every record returned must
            // be one some writer appended, intact. Offsets are checked after the writers.
            let mut seen = 0usize;
            while !done.load(Ordering::Relaxed) {
                let (_, _, visible) = h.offsets("c").wait_timeout(T).unwrap();
                if visible == 0 {
                    continue;
                }
                // The newest records, and a longer stretch that reaches back across every
                // write in flight (a read may span several of them and the staged tail).
                let short = h.read_from("c", visible.saturating_sub(64), 64, usize::MAX);
                let long = h.read_from("c", visible.saturating_sub(400), 400, usize::MAX);
                let short = short.wait_timeout(T).unwrap();
                for r in short.into_iter().chain(long.wait_timeout(T).unwrap()) {
                    let (t, i) = (
                        r.payload[0] as usize,
                        u64::from_le_bytes(r.payload[1..9].try_into().unwrap()),
                    );
                    assert_eq!(
                        r.payload,
                        tagged(t, i, len(t, i)),
                        "record {} read mid-flight",
                        r.offset
                    );
                    seen += 1;
                }
            }
            seen
        });
        let writers: Vec<_> = (0..6usize)
            .map(|t| {
                let h = h.clone();
                sc.spawn(move || {
                    (0..60u64)
                        .map(|b| {
                            let batch: Vec<OwnedRecord> = (0..16u64)
                                .map(|k| OwnedRecord::new(tagged(t, b * 16 + k, len(t, b * 16 + k))))
                                .collect();
                            let d = [Durability::Synced, Durability::Written, Durability::Memory][b as usize % 3];
                            (h.append_batch("c", batch, d).wait_timeout(T).unwrap(), t, b)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let acks = writers.into_iter().flat_map(|w| w.join().unwrap()).collect();
        done.store(true, Ordering::Relaxed);
        assert!(reader.join().unwrap() > 0, "the reader saw nothing");
        acks
    });
    let st = h.stats(0).wait_timeout(T).unwrap();
    assert!(
        st.overlapped_writes > 0,
        "no two writes were ever in flight together: {st:?}"
    );
    assert!(st.segments_sealed >= 2, "segments did not roll: {st:?}");
    let mut expect = BTreeMap::new();
    for (range, t, b) in acks {
        assert_eq!(range.end - range.start, 16);
        for (k, off) in range.enumerate() {
            let i = b * 16 + k as u64;
            assert!(
                expect.insert(off, tagged(t, i, len(t, i))).is_none(),
                "offset {off} acknowledged twice"
            );
        }
    }
    let expect: Vec<Vec<u8>> = expect.into_values().collect();
    assert_eq!(expect.len(), 6 * 60 * 16);
    assert_log_survives_restart(e, cfg(), "c", &expect);
}

/// A payload that names its writer and index in its first 9 bytes, then `payload` bytes.
fn tagged(t: usize, i: u64, len: usize) -> Vec<u8> {
    let mut v = vec![t as u8];
    v.extend_from_slice(&i.to_le_bytes());
    v.extend_from_slice(&payload(t, i, len));
    v
}

// Bug pinned: an append waiting for Written or Synced was only completed by later traffic
// (the flush ran when the next append arrived). A lone append must complete on its own.
#[test]
fn a_lone_pending_append_completes_without_further_traffic() {
    let dir = tempdir("reg-lone");
    let e = start(small_config(&dir, 1));
    let h = e.handle();
    let t = Duration::from_secs(5);
    h.create_log("w").wait_timeout(T).unwrap();
    assert_eq!(
        h.append("w", b"written".to_vec(), Durability::Written)
            .wait_timeout(t)
            .unwrap(),
        0
    );
    h.create_log("s").wait_timeout(T).unwrap();
    assert_eq!(
        h.append("s", b"synced".to_vec(), Durability::Synced)
            .wait_timeout(t)
            .unwrap(),
        0
    );
    // A Synced append behind an unflushed Memory one, and a sync after a Memory append.
    assert_eq!(
        h.append("s", b"mem".to_vec(), Durability::Memory)
            .wait_timeout(t)
            .unwrap(),
        1
    );
    assert_eq!(
        h.append("s", b"synced2".to_vec(), Durability::Synced)
            .wait_timeout(t)
            .unwrap(),
        2
    );
    assert_eq!(
        h.append("w", b"mem".to_vec(), Durability::Memory)
            .wait_timeout(t)
            .unwrap(),
        1
    );
    h.sync("w").wait_timeout(t).unwrap();
    // And on the shard itself.
    let r = e
        .spawn_on(0, |s| async move {
            let log = s.log("w")?;
            let a = log.append(b"local written", Durability::Written).await?;
            let b = log.append(b"local synced", Durability::Synced).await?;
            log.append_buffered(NewRecord::new(b"buffered"))?;
            log.sync().await?;
            Ok((a, b, log.visible_upto()))
        })
        .wait_timeout(t)
        .unwrap();
    assert_eq!(r, (2, 3, 5));
    e.close().unwrap();
}

// Bug pinned: "interval flush" had no timer, so Memory-mode data sat in memory until some
// other write came along. With no traffic at all, the bytes must reach the segment file.
#[test]
fn memory_mode_data_reaches_disk_by_the_flush_timer() {
    let dir = tempdir("reg-timer");
    let e = start(small_config(&dir, 1));
    let h = e.handle();
    h.create_log("m").wait_timeout(T).unwrap();
    let mut p = format!("flush-timer-probe-{}-", std::process::id()).into_bytes();
    p.extend((0..64 - p.len()).map(|i| b'A' + (i % 26) as u8));
    assert_eq!(p.len(), 64);
    let on_disk = |p: &[u8]| {
        seg_files(&dir)
            .iter()
            .any(|f| std::fs::read(f).unwrap().windows(p.len()).any(|w| w == p))
    };
    assert!(!on_disk(&p));
    h.append("m", p.clone(), Durability::Memory).wait_timeout(T).unwrap();
    // flush_interval is 10 ms; give it 500 ms, then (only for a loaded machine) up to 5 s more.
    std::thread::sleep(Duration::from_millis(500));
    let mut found = on_disk(&p);
    for _ in 0..50 {
        if found {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        found = on_disk(&p);
    }
    assert!(
        found,
        "a Memory-mode record never reached its segment file without further traffic"
    );
    e.close().unwrap();
}

// Bug pinned: the age of the unflushed bytes was counted from the first append after the log
// was last wholly flushed. Under a steady Memory stream that never happens again, so 10 ms in,
// the flush interval had always passed and every write completion flushed whatever had
// arrived meanwhile: writes a fraction of `flush_threshold_bytes`, several times as many
// submissions (traced at half load: ~270 KiB instead of 1 MiB). The stream here reaches the
// threshold in well under the interval, so writes should be about threshold-sized.
#[test]
fn a_steady_memory_stream_is_written_in_threshold_sized_writes() {
    let dir = tempdir("reg-memory-write-size");
    let mut c = raw_config(&dir, 1);
    c.segment_size_bytes = 32 << 20;
    c.flush_threshold_bytes = 512 << 10;
    c.shard_memory_budget_bytes = 16 << 20;
    // (flush_writes_in_flight 8 + 1) x 512 KiB: buffers from the pool, not the heap.
    c.io_memory_bytes = 8 << 20;
    let e = start(c);
    e.handle().create_log("m").wait_timeout(T).unwrap();
    let appended = e
        .handle()
        .spawn_on(0, |s| async move {
            let log = s.log("m")?;
            let rec = vec![0x5Au8; 4096];
            let started = std::time::Instant::now();
            let mut n = 0u64;
            // 128 KiB a millisecond, one record at a time and yielding when ahead, so bytes
            // arrive while the flusher copies a write: the threshold every ~2 ms, never the
            // 10 ms interval.
            loop {
                let us = started.elapsed().as_micros() as u64;
                if us >= 600_000 {
                    break;
                }
                if n < us * 32 / 1000 {
                    log.append(&rec, Durability::Memory).await?;
                    n += 1;
                } else {
                    futures_lite::future::yield_now().await;
                }
            }
            Ok::<_, Error>(n)
        })
        .wait_timeout(T)
        .unwrap();
    let st = e.handle().stats(0).wait_timeout(T).unwrap();
    assert_eq!(st.records, appended);
    let threshold = 512u64 << 10;
    let full = st.written_bytes / threshold;
    assert!(st.writes >= 4, "too few writes to judge: {st:?}");
    // A write of the stream's tail, the rewrite of a partial block, and the last write of a
    // segment may be short; most are at the threshold.
    assert!(
        st.writes <= full * 3 / 2 + st.head_block_writes + 4,
        "{} writes for {} bytes, {} of them partial-block rewrites: expected about {} writes of          {} KiB",
        st.writes,
        st.written_bytes,
        st.head_block_writes,
        full,
        threshold >> 10
    );
    e.close().unwrap();
}

/// With one write in flight at a time, the rewrite of a partly written block and the new
/// blocks behind it (two writes in a new file) go one after the other: appends of every
/// durability still complete, and every record is back after a restart.
#[test]
fn split_writes_complete_with_one_write_in_flight() {
    let dir = tempdir("reg-split-one-in-flight");
    let cfg = || {
        let mut c = raw_config(&dir, 1);
        c.flush_writes_in_flight = 1;
        c
    };
    let e = start(cfg());
    let h = e.handle();
    h.create_log("s").wait_timeout(T).unwrap();
    let mut expect = Vec::new();
    for i in 0..600u64 {
        let p = payload(4, i, 1000 + (i % 13) as usize * 97);
        let d = ALL[i as usize % 3];
        h.append("s", p.clone(), d).wait_timeout(T).unwrap();
        expect.push(p);
    }
    h.sync("s").wait_timeout(T).unwrap();
    let st = h.stats(0).wait_timeout(T).unwrap();
    assert!(st.head_block_writes > 0, "no partial block was rewritten alone: {st:?}");
    assert!(st.segments_sealed > 0, "no roll: {st:?}");
    assert_log_survives_restart(e, cfg(), "s", &expect);
}

/// Memory data no append waits for is handed to io_uring's workers when they run on another
/// CPU (`IoWorkerCpus::Spare` with a core to spare); the writes of Synced appends never are.
/// Either way every record is on disk, byte for byte, after a restart.
#[test]
fn writes_nobody_waits_for_go_to_io_workers_on_other_cpus() {
    let dir = tempdir("reg-punted-writes");
    let cfg = || {
        let mut c = raw_config(&dir, 1);
        c.io_worker_cpus = IoWorkerCpus::Spare;
        c
    };
    let spare_cpu = std::thread::available_parallelism().map_or(1, |n| n.get()) > 1;
    let e = start(cfg());
    let h = e.handle();
    h.create_log("p").wait_timeout(T).unwrap();
    let mut expect = Vec::new();
    for i in 0..3000u64 {
        let p = payload(9, i, 900 + (i % 7) as usize * 50);
        h.append("p", p.clone(), Durability::Memory).wait_timeout(T).unwrap();
        expect.push(p);
    }
    // Wait for the flusher to write it all (by size and then by age), without asking for it.
    let deadline = std::time::Instant::now() + T;
    let st = loop {
        let st = h.stats(0).wait_timeout(T).unwrap();
        if st.unflushed_bytes == 0 && st.writes > 0 {
            break st;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "Memory data never flushed: {st:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    if spare_cpu {
        assert!(st.punted_writes > 0, "no background write was punted: {st:?}");
    } else {
        assert_eq!(st.punted_writes, 0, "punted with no CPU to spare: {st:?}");
    }
    // Nobody waits on Memory data: its writes go with the reactor's next batch (`rush`).
    assert_eq!(st.rushed_io, 0, "a background write was rushed: {st:?}");
    let punted = st.punted_writes;
    for i in 3000..3300u64 {
        let p = payload(9, i, 700);
        h.append("p", p.clone(), Durability::Synced).wait_timeout(T).unwrap();
        expect.push(p);
    }
    let st = h.stats(0).wait_timeout(T).unwrap();
    assert_eq!(
        st.punted_writes, punted,
        "a write a Synced append waited for was punted: {st:?}"
    );
    // Each Synced append waited on a write and an fdatasync, both rushed to the kernel.
    assert!(
        st.rushed_io >= 2,
        "nothing a Synced append waited on was rushed: {st:?}"
    );
    assert_log_survives_restart(e, cfg(), "p", &expect);
}

/// `(log dir name, log id from log.meta, log name)` for every log under `root`.
fn log_identities(root: &Path) -> BTreeMap<String, (PathBuf, u64)> {
    let mut out = BTreeMap::new();
    for p in walk(root) {
        if p.file_name().is_some_and(|n| n == "log.meta") {
            let b = std::fs::read(&p).unwrap();
            let len = u32::from_le_bytes(b[12..16].try_into().unwrap()) as usize;
            let id = u64::from_le_bytes(b[16..24].try_into().unwrap());
            let name = String::from_utf8(b[32..32 + len].to_vec()).unwrap();
            out.insert(name, (p.parent().unwrap().to_path_buf(), id));
        }
    }
    out
}

/// Segment file names without their tier's extension (`.seg` raw, `.t1` recompressed): a
/// segment keeps its name when it moves between tiers.
fn file_names(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter_map(|n| n.strip_suffix(".seg").or(n.strip_suffix(".t1")).map(str::to_owned))
        .collect()
}

// Bug pinned: file and object names were derived from a registration-order counter, so two
// data directories with the same logs created in a different order named their files
// differently, and a name could point at another log's data. Names must come from the log's
// persistent identity (the id in log.meta, also its directory name) and never change.
#[test]
fn file_names_derive_from_the_persistent_log_id() {
    let d1 = tempdir("reg-names-1");
    let d2 = tempdir("reg-names-2");
    let mut before = Vec::new();
    for (dir, order) in [(&d1, ["a", "b"]), (&d2, ["b", "a"])] {
        let e = start(small_config(dir, 1));
        let h = e.handle();
        for l in order {
            h.create_log(l).wait_timeout(T).unwrap();
        }
        for round in 0..3u64 {
            for l in order {
                h.append(l, payload(0, round, 5000), Durability::Written)
                    .wait_timeout(T)
                    .unwrap();
                h.roll(l).wait_timeout(T).unwrap();
            }
        }
        e.close().unwrap();
        let ids = log_identities(dir);
        assert_eq!(ids.keys().collect::<Vec<_>>(), ["a", "b"]);
        for (name, (ldir, id)) in &ids {
            let dname = ldir.file_name().unwrap().to_string_lossy().into_owned();
            assert_eq!(dname, format!("log-{id:016x}"), "directory of {name}");
            let files = file_names(ldir);
            assert!(files.len() >= 3, "{name}: {files:?}");
            for f in &files {
                assert!(
                    f.starts_with(&format!("{id:016x}-")),
                    "{name}: {f} does not carry id {id:016x}"
                );
            }
        }
        before.push(ids);
    }
    // Identity is not the creation order: all four logs have distinct ids.
    let all: BTreeSet<u64> = before.iter().flat_map(|m| m.values().map(|v| v.1)).collect();
    assert_eq!(all.len(), 4, "{before:?}");

    for (k, dir) in [&d1, &d2].into_iter().enumerate() {
        let old: BTreeMap<&String, BTreeSet<String>> =
            before[k].iter().map(|(n, (ldir, _))| (n, file_names(ldir))).collect();
        let e = start(small_config(dir, 1));
        let h = e.handle();
        for l in ["a", "b"] {
            assert_eq!(h.offsets(l).wait_timeout(T).unwrap().1, 3);
            h.append(l, b"after reopen".to_vec(), Durability::Synced)
                .wait_timeout(T)
                .unwrap();
            h.roll(l).wait_timeout(T).unwrap();
        }
        e.close().unwrap();
        let ids = log_identities(dir);
        assert_eq!(ids, before[k], "log directories or ids changed across reopen");
        for (name, (ldir, id)) in &ids {
            let now = file_names(ldir);
            assert!(
                now.is_superset(&old[name]),
                "{name}: names changed: {:?} -> {now:?}",
                old[name]
            );
            assert!(now.len() > old[name].len());
            assert!(now.iter().all(|f| f.starts_with(&format!("{id:016x}-"))), "{now:?}");
        }
    }
}

/// Several engines in one process (as in a test suite, or a service with two data
/// directories), each served by requests from its own thread: every request must be answered.
fn round_trips_on_parallel_engines() {
    std::thread::scope(|sc| {
        let threads: Vec<_> = (0..4)
            .map(|t| {
                sc.spawn(move || {
                    for k in 0..15 {
                        let dir = tempdir("reg-wake");
                        let e = start(small_config(&dir, 1));
                        let h = e.handle();
                        let t5 = Duration::from_secs(5);
                        h.create_log("w")
                            .wait_timeout(t5)
                            .unwrap_or_else(|err| panic!("thread {t} engine {k}: create_log: {err}"));
                        for i in 0..300u64 {
                            let d = if i % 50 == 49 {
                                Durability::Synced
                            } else {
                                Durability::Memory
                            };
                            let off = h
                                .append("w", b"x".to_vec(), d)
                                .wait_timeout(t5)
                                .unwrap_or_else(|err| panic!("thread {t} engine {k}: append {i}: {err}"));
                            assert_eq!(off, i);
                        }
                        e.close().unwrap();
                        let _ = std::fs::remove_dir_all(&dir);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
    });
}

// Bug pinned: a wait that hung. A request sent to an idle shard from another thread was
// sometimes never run (a lost wake-up of the shard's inbox), so its caller, and then
// `Engine::close`, waited forever. Default configuration.
#[test]
fn requests_to_idle_shards_are_always_served() {
    round_trips_on_parallel_engines();
}

// Bug pinned: writes stalled forever at a full segment. Here several appends arrive while the
// active segment is full and no spare file is ready yet; the first one to find the new spare
// rolls the segment, and every other one must then go on into the new segment (which has
// room) instead of waiting for yet another spare that nothing will create.
#[test]
fn concurrent_appends_blocked_at_a_roll_all_complete() {
    let dir = tempdir("reg-roll-wait");
    let e = start(small_config(&dir, 1));
    let h = e.handle();
    h.create_log("r").wait_timeout(T).unwrap();
    let rec = 8 << 10;
    let reply = e.spawn_on(0, move |s| async move {
        let log = s.log("r")?;
        let buf = vec![0x5Au8; rec];
        // Fill the first segment without yielding: the flusher never runs, so no spare exists.
        let mut filled = 0u64;
        loop {
            match log.append_buffered(NewRecord::new(&buf)) {
                Ok(_) => filled += 1,
                Err(Error::Backpressure { .. }) => break,
                Err(e) => return Err(e),
            }
        }
        // Four appends that do not fit the full segment, all waiting at once.
        let tasks: Vec<_> = (0..4u8)
            .map(|k| {
                let log = log.clone();
                glommio::spawn_local(async move {
                    let p = vec![k; rec];
                    log.append(&p, Durability::Memory).await
                })
            })
            .collect();
        let mut offsets = Vec::new();
        for t in tasks {
            offsets.push(t.await?);
        }
        Ok((filled, offsets))
    });
    let (filled, mut offsets) = reply
        .wait_timeout(Duration::from_secs(10))
        .expect("appends waiting at a segment roll never completed");
    offsets.sort_unstable();
    assert_eq!(offsets, (filled..filled + 4).collect::<Vec<_>>());
    e.close().unwrap();
}

// Bug pinned: the predecessor had no memory bound: writers grew buffers without limit instead
// of being pushed back. Unflushed bytes on a shard must never pass its budget, the
// non-waiting paths must say `Backpressure`, and the awaiting paths must wait and complete.
#[test]
fn backpressure_bounds_unflushed_memory() {
    let dir = tempdir("reg-bp");
    let cfg = small_config(&dir, 1);
    let budget = cfg.shard_memory_budget_bytes;
    assert_eq!(budget, 1 << 20);
    let e = start(cfg);
    let h = e.handle();
    // Six logs on the shard: their active segments together (6 x 256 KiB) exceed the budget,
    // so the budget, not the segment size, is what stops a writer that never yields.
    let names: Vec<String> = (0..6).map(|i| format!("bp-{i}")).collect();
    for n in &names {
        h.create_log(n).wait_timeout(T).unwrap();
    }
    let rec = 8 << 10;
    let frame = (40 + rec + 7) & !7;
    let ns = names.clone();
    let (hit_at, used, reported_budget, max_tight, max_await, appended) = e
        .spawn_on(0, move |s| async move {
            let logs: Vec<LocalLog> = ns.iter().map(|n| s.log(n)).collect::<Result<_, _>>()?;
            let buf = vec![0xA5u8; rec];
            let mut max_tight = s.unflushed_bytes();
            let mut hit = None;
            for i in 0..10_000usize {
                match logs[i % logs.len()].append_buffered(NewRecord::new(&buf)) {
                    Ok(_) => max_tight = max_tight.max(s.unflushed_bytes()),
                    Err(Error::Backpressure { used, budget: b, .. }) => {
                        hit = Some((i, used, b));
                        break;
                    }
                    Err(e) => return Err(e),
                }
            }
            let Some((hit_at, used, reported_budget)) = hit else {
                return Ok(None);
            };
            // The awaiting path: 4 MiB more, never above the budget, all completing.
            let mut max_await = s.unflushed_bytes();
            for i in 0..(4usize << 20) / rec {
                let p = payload(i % 6, i as u64, rec);
                logs[i % logs.len()].append(&p, Durability::Memory).await?;
                max_await = max_await.max(s.unflushed_bytes());
            }
            let appended: Vec<u64> = logs.iter().map(|l| l.next_offset()).collect();
            Ok(Some((hit_at, used, reported_budget, max_tight, max_await, appended)))
        })
        .wait_timeout(Duration::from_secs(60))
        .unwrap()
        .expect("append_buffered never pushed back in 10_000 x 8 KiB");
    assert_eq!(reported_budget, budget);
    assert!(max_tight <= budget, "tight loop reached {max_tight} of {budget}");
    assert!(
        used <= budget && used + frame as u64 > budget,
        "pushed back at {used} of {budget}"
    );
    assert!(hit_at > 0);
    assert!(max_await <= budget, "awaiting appends reached {max_await} of {budget}");
    let total: u64 = appended.iter().sum();
    assert_eq!(total, hit_at as u64 + (4 << 20) / rec as u64);

    // From a foreign thread: try_append in a tight loop without waiting for answers. Each
    // answer is an offset or Backpressure; memory stays within the budget meanwhile.
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let sampler = h.spawn_on(0, move |s| async move {
        let mut max = 0;
        while !stop2.load(Ordering::Acquire) {
            max = max.max(s.unflushed_bytes());
            glommio::timer::sleep(Duration::from_micros(200)).await;
        }
        Ok(max)
    });
    let log = names[0].clone();
    let before = h.offsets(&log).wait_timeout(T).unwrap().1;
    let replies: Vec<_> = (0..3000u64)
        .map(|i| h.try_append(&log, payload(9, i, rec), Durability::Memory))
        .collect();
    let mut ok = Vec::new();
    let mut pushed_back = 0;
    for r in replies {
        match r.wait_timeout(T) {
            Ok(off) => ok.push(off),
            Err(Error::Backpressure { .. } | Error::InboxFull { .. }) => pushed_back += 1,
            Err(e) => panic!("try_append: expected an offset or Backpressure, got {e}"),
        }
    }
    // Once the shard has caught up, try_append succeeds again.
    let mut retry = None;
    for _ in 0..1000 {
        match h
            .try_append(&log, b"again".to_vec(), Durability::Memory)
            .wait_timeout(T)
        {
            Ok(off) => {
                retry = Some(off);
                break;
            }
            Err(Error::Backpressure { .. } | Error::InboxFull { .. }) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => panic!("retry: {e}"),
        }
    }
    stop.store(true, Ordering::Release);
    let max_foreign = sampler.wait_timeout(T).unwrap();
    assert!(
        max_foreign <= budget,
        "foreign try_append reached {max_foreign} of {budget}"
    );
    let retry = retry.expect("try_append never succeeded again");
    // Accepted appends got dense, unique offsets; refused ones took none.
    ok.sort_unstable();
    let n_ok = ok.len() as u64;
    assert_eq!(ok, (before..before + n_ok).collect::<Vec<_>>());
    assert_eq!(retry, before + n_ok);
    assert_eq!(h.offsets(&log).wait_timeout(T).unwrap().1, before + n_ok + 1);
    eprintln!("foreign try_append: {n_ok} accepted, {pushed_back} pushed back, max unflushed {max_foreign}");
    e.close().unwrap();
}

fn open_fds_under(root: &Path) -> Vec<PathBuf> {
    let root = std::fs::canonicalize(root).unwrap();
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter(|t| t.starts_with(&root))
        .collect()
}

fn mappings_under(root: &Path) -> Vec<String> {
    let root = std::fs::canonicalize(root).unwrap();
    let root = root.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .filter(|l| l.contains(&root))
        .map(str::to_owned)
        .collect()
}

// Bug pinned: local files and maps were never freed: closed segments kept their descriptors
// and mappings, and deleted files kept their disk space, for the life of the process. After
// `Engine::close` nothing under the data directory may stay open or mapped.
#[test]
fn close_releases_every_file_descriptor_and_mapping() {
    let dir = tempdir("reg-fds");
    for cycle in 0..3u64 {
        let e = start(small_config(&dir, 2));
        let h = e.handle();
        if cycle == 0 {
            h.create_log("f0").wait_timeout(T).unwrap();
            h.create_log("f1").wait_timeout(T).unwrap();
        }
        for i in 0..60u64 {
            for l in ["f0", "f1"] {
                h.append(l, payload(0, i, 20_000), Durability::Written)
                    .wait_timeout(T)
                    .unwrap();
            }
        }
        assert!(
            !open_fds_under(&dir).is_empty(),
            "the open engine holds its segment files"
        );
        e.close().unwrap();
        let fds = open_fds_under(&dir);
        assert!(
            fds.is_empty(),
            "cycle {cycle}: {} descriptors still open after close: {fds:?}",
            fds.len()
        );
        let maps = mappings_under(&dir);
        assert!(maps.is_empty(), "cycle {cycle}: mappings left after close: {maps:?}");
    }
}

// Bug pinned: a shard that slept with work to do. glommio 0.9 parked the executor when the
// preemption timer had fired before the first task queue ran, so a shard that lost its core
// for longer than `preempt_interval` at that moment slept with runnable tasks until an
// unrelated event woke it: `Engine::open` hung in recovery about half the time with the
// 250 µs default on a busy 2-core machine (fixed in `third_party/glommio`). Here threads that
// spin on every core take the shards' cores away again and again while engines open, recover,
// read, append and close with the shortest preemption interval; every round must finish.
#[test]
fn a_preempted_executor_never_parks_with_work() {
    const WORKERS: usize = 3;
    const ROUNDS: u64 = 80;
    let stall = Duration::from_secs(20);
    let cfgs: Vec<_> = (0..WORKERS)
        .map(|w| {
            let mut cfg = small_config(&tempdir(&format!("reg-preempt-{w}")), 1);
            cfg.preempt_interval = Duration::from_micros(50);
            cfg
        })
        .collect();
    let mut expect = Vec::new();
    for i in 0..600u64 {
        expect.push(payload(0, i, 1000 + (i as usize % 700)));
    }
    for cfg in &cfgs {
        let e = start(cfg.clone());
        let h = e.handle();
        h.create_log("p").wait_timeout(T).unwrap();
        for p in &expect {
            h.append("p", p.clone(), Durability::Written).wait_timeout(T).unwrap();
        }
        e.close().unwrap();
    }

    let stop = Arc::new(AtomicBool::new(false));
    let hogs: Vec<_> = (0..std::thread::available_parallelism().map_or(2, |n| n.get()))
        .map(|cpu| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                // One spinner pinned to each core, so the shards' cores are always contended.
                // SAFETY: `set` is a plain bit set on a zeroed cpu_set_t owned by this frame,
                // and sched_setaffinity(0, ..) only reads it; failure just leaves it unpinned.
                unsafe {
                    let mut set: libc::cpu_set_t = std::mem::zeroed();
                    libc::CPU_SET(cpu, &mut set);
                    libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
                }
                let mut x = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            })
        })
        .collect();

    let (tx, rx) = std::sync::mpsc::channel();
    let workers: Vec<_> = cfgs
        .into_iter()
        .enumerate()
        .map(|(w, cfg)| {
            let (tx, mut expect) = (tx.clone(), expect.clone());
            std::thread::spawn(move || {
                for round in 0..ROUNDS {
                    let e = Engine::open(cfg.clone()).expect("engine opens");
                    let h = e.handle();
                    let got = h.read_from("p", 0, usize::MAX, usize::MAX).wait_timeout(T).unwrap();
                    assert_eq!(got.len(), expect.len(), "worker {w} round {round}");
                    assert!(
                        got.iter().zip(&expect).all(|(r, p)| &r.payload == p),
                        "worker {w} round {round}"
                    );
                    for i in 0..8u64 {
                        let p = payload(1, round * 8 + i, 500);
                        h.append("p", p.clone(), Durability::Synced).wait_timeout(T).unwrap();
                        expect.push(p);
                    }
                    e.close().unwrap();
                    tx.send(w).unwrap();
                }
            })
        })
        .collect();
    drop(tx);
    // Each worker must finish a round at least every `stall`; a worker that panicked drops
    // its sender and is joined below, one that hangs is reported and leaked.
    let mut done = [0u64; WORKERS];
    let mut last = [std::time::Instant::now(); WORKERS];
    let mut hung = None;
    while done.iter().any(|&d| d < ROUNDS) {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(w) => {
                done[w] += 1;
                last[w] = std::time::Instant::now();
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
        }
        if let Some(w) = (0..WORKERS).find(|&w| done[w] < ROUNDS && last[w].elapsed() > stall) {
            hung = Some(w);
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for h in hogs {
        h.join().unwrap();
    }
    if let Some(w) = hung {
        panic!(
            "worker {w}: round {} of {ROUNDS} made no progress for {stall:?}: a shard slept with work",
            done[w]
        );
    }
    for w in workers {
        w.join().unwrap();
    }
    assert_eq!(done, [ROUNDS; WORKERS]);
}

/// A log that takes Synced appends gets its new spares zero-filled before they become
/// segments (`Config::zero_fill_spares_bytes_per_sec`), so its fdatasyncs run over written
/// blocks. A slow writer gets them zeroed whole; every record is intact before and after a
/// restart, across the zeroed segments' tails of zeros.
#[test]
fn spares_of_a_synced_log_are_zero_filled_before_use() {
    let dir = tempdir("reg-zero-fill");
    let cfg = || {
        let mut c = raw_config(&dir, 1);
        c.zero_fill_spares_bytes_per_sec = Some(256 << 20);
        c
    };
    let e = start(cfg());
    let h = e.handle();
    h.create_log("z").wait_timeout(T).unwrap();
    let mut expect = Vec::new();
    // ~1.3 MiB in single Synced appends: five 256 KiB segments, each taking far longer to
    // fill than its spare (16 ms at this pace) takes to zero.
    for i in 0..1300u64 {
        let p = payload(5, i, 600 + (i % 11) as usize * 83);
        h.append("z", p.clone(), Durability::Synced).wait_timeout(T).unwrap();
        expect.push(p);
    }
    let st = h.stats(0).wait_timeout(T).unwrap();
    assert!(st.segments_sealed >= 3, "too few rolls to judge: {st:?}");
    assert!(st.spares_zeroed >= 2, "spares were not zero-filled whole: {st:?}");
    assert!(
        st.spare_zeroed_bytes >= st.spares_zeroed * (256 << 10),
        "a whole spare counts its bytes: {st:?}"
    );
    assert_log(&h, "z", &expect);
    e.close().unwrap();
    let e = start(cfg());
    assert_clean_recovery(&e);
    assert_log(&e.handle(), "z", &expect);
    // More appends go on after the restart, over the zeroed blocks of the recovered segment.
    for i in 1300..1400u64 {
        let p = payload(5, i, 900);
        e.handle()
            .append("z", p.clone(), Durability::Synced)
            .wait_timeout(T)
            .unwrap();
        expect.push(p);
    }
    assert_log(&e.handle(), "z", &expect);
    e.close().unwrap();
}

/// Zero-filling never holds up a roll: a writer that fills segments faster than the pace
/// zeroes them takes each spare as far as it got, and no spare is ever zeroed whole (at 1
/// MiB/s a 1 MiB spare takes a second; the writer below fills a segment in tens of ms, so
/// only a host stall of most of a second could let one finish). A log that only takes Memory
/// appends gets no zero-filling at all.
#[test]
fn zero_filling_stops_when_a_roll_wants_the_spare_and_skips_memory_logs() {
    let dir = tempdir("reg-zero-fill-abort");
    let cfg = |pace: u64| {
        let mut c = raw_config(&dir, 1);
        c.segment_size_bytes = 1 << 20;
        c.zero_fill_spares_bytes_per_sec = Some(pace);
        c
    };
    let e = start(cfg(1 << 20));
    e.handle().create_log("f").wait_timeout(T).unwrap();
    let batches = e
        .handle()
        .spawn_on(0, |s| async move {
            let log = s.log("f")?;
            let mut acked = Vec::new();
            for b in 0..256u64 {
                let recs: Vec<Vec<u8>> = (0..16).map(|k| payload(6, b * 16 + k, 1500)).collect();
                let new: Vec<NewRecord<'_>> = recs.iter().map(|r| NewRecord::new(r)).collect();
                let r = log.append_batch(&new, Durability::Synced).await?;
                acked.push(r);
            }
            Ok::<_, Error>(acked)
        })
        .wait_timeout(T)
        .unwrap();
    assert_eq!(batches.last().map(|r| r.end), Some(256 * 16));
    let st = e.handle().stats(0).wait_timeout(T).unwrap();
    assert!(st.segments_sealed >= 4, "too few rolls to judge: {st:?}");
    assert!(st.spare_zeroed_bytes > 0, "no spare was zero-filled at all: {st:?}");
    assert_eq!(st.spares_zeroed, 0, "a roll waited for a whole zero-fill: {st:?}");
    let expect: Vec<Vec<u8>> = (0..256 * 16).map(|i| payload(6, i, 1500)).collect();
    assert_log(&e.handle(), "f", &expect);
    e.close().unwrap();
    let e = start(cfg(1 << 20));
    assert_clean_recovery(&e);
    assert_log(&e.handle(), "f", &expect);
    e.close().unwrap();

    let dir = tempdir("reg-zero-fill-memory");
    let mut c = raw_config(&dir, 1);
    c.zero_fill_spares_bytes_per_sec = Some(256 << 20);
    let e = start(c);
    let h = e.handle();
    h.create_log("m").wait_timeout(T).unwrap();
    let mut expect = Vec::new();
    for i in 0..1300u64 {
        let p = payload(7, i, 1000);
        h.append("m", p.clone(), Durability::Memory).wait_timeout(T).unwrap();
        expect.push(p);
    }
    // Rolled segments are sealed once their Memory data is written: wait for three.
    let deadline = std::time::Instant::now() + T;
    let st = loop {
        let st = h.stats(0).wait_timeout(T).unwrap();
        if st.segments_sealed >= 3 {
            break st;
        }
        assert!(std::time::Instant::now() < deadline, "too few rolls to judge: {st:?}");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(st.spare_zeroed_bytes, 0, "a Memory-only log was zero-filled: {st:?}");
    assert_eq!(st.early_rolls, 0, "a Memory-only log was rolled early: {st:?}");
    assert_log(&h, "m", &expect);
    e.close().unwrap();
}

/// The zero-filling pace is the shard's, not each log's: four Synced logs on one shard making
/// spares at the same time zero at most the one pace between them. (A bound on work done in
/// the time taken, so a slow host can only make it easier to meet.)
#[test]
fn the_zero_filling_pace_is_shared_by_the_logs_of_a_shard() {
    let dir = tempdir("reg-zero-fill-shared-pace");
    let mut c = raw_config(&dir, 1);
    let pace: u64 = 2 << 20;
    c.zero_fill_spares_bytes_per_sec = Some(pace);
    let e = start(c);
    let h = e.handle();
    let names = ["a", "b", "c", "d"];
    for n in names {
        h.create_log(n).wait_timeout(T).unwrap();
    }
    let started = std::time::Instant::now();
    // Each log rolls into a spare every 32 appends: with per-log pacing four spares would
    // zero at once, at four times the pace.
    let mut expect: Vec<Vec<Vec<u8>>> = vec![Vec::new(); names.len()];
    for i in 0..200u64 {
        for (l, n) in names.iter().enumerate() {
            let p = payload(l, i, 8000);
            h.append(n, p.clone(), Durability::Synced).wait_timeout(T).unwrap();
            expect[l].push(p);
        }
    }
    let st = h.stats(0).wait_timeout(T).unwrap();
    let elapsed = started.elapsed().as_secs_f64();
    assert!(st.segments_sealed >= 8, "too few rolls to judge: {st:?}");
    assert!(st.spare_zeroed_bytes > 0, "nothing was zero-filled: {st:?}");
    // One step may start at once on an idle shard; every later one waits for its slot.
    let bound = pace as f64 * elapsed + (64 << 10) as f64;
    assert!(
        (st.spare_zeroed_bytes as f64) <= bound,
        "{} bytes zeroed in {elapsed:.2} s: over the shard's pace of {pace} B/s ({bound:.0}): {st:?}",
        st.spare_zeroed_bytes
    );
    for (l, n) in names.iter().enumerate() {
        assert_log(&h, n, &expect[l]);
    }
    e.close().unwrap();
}

/// A roll by age (`segment_max_age`) does not wait for a spare's zero-filling to finish: it
/// takes the spare as far as it got. At 1 MiB/s a 256 KiB spare takes 250 ms to zero; the
/// segments here are due every 40 ms, and their spares start after ~3 appends (an eighth of
/// the segment), so each spare is zero-filled in part and none whole.
#[test]
fn a_roll_by_age_takes_a_spare_that_is_still_being_zero_filled() {
    let dir = tempdir("reg-zero-fill-age");
    let cfg = || {
        let mut c = raw_config(&dir, 1);
        c.zero_fill_spares_bytes_per_sec = Some(1 << 20);
        c.segment_max_age = Some(Duration::from_millis(40));
        c
    };
    let e = start(cfg());
    let h = e.handle();
    h.create_log("t").wait_timeout(T).unwrap();
    let mut expect = Vec::new();
    for i in 0..60u64 {
        let p = payload(8, i, 12_000);
        h.append("t", p.clone(), Durability::Synced).wait_timeout(T).unwrap();
        expect.push(p);
        std::thread::sleep(Duration::from_millis(10));
    }
    let st = h.stats(0).wait_timeout(T).unwrap();
    assert!(st.segments_sealed >= 3, "too few rolls by age to judge: {st:?}");
    assert!(st.spare_zeroed_bytes > 0, "no spare was zero-filled at all: {st:?}");
    assert_eq!(
        st.spares_zeroed, 0,
        "a roll by age waited for a whole zero-fill: {st:?}"
    );
    assert_log_survives_restart(e, cfg(), "t", &expect);
}

/// A new Synced log leaves the new blocks of the segment it was created with as soon as a
/// spare is zero-filled whole: that segment is rolled early (`ShardStats::early_rolls`), and
/// a restarted one too, since the segment it recovers into is treated as new blocks. The
/// segments after that are not rolled early. Every record survives, in order.
#[test]
fn a_new_synced_log_rolls_early_onto_a_zero_filled_spare() {
    let dir = tempdir("reg-early-roll");
    let cfg = || {
        let mut c = raw_config(&dir, 1);
        c.segment_size_bytes = 1 << 20;
        c.zero_fill_spares_bytes_per_sec = Some(256 << 20);
        c
    };
    let e = start(cfg());
    let h = e.handle();
    h.create_log("n").wait_timeout(T).unwrap();
    let mut expect = Vec::new();
    let append = |h: &Handle, expect: &mut Vec<Vec<u8>>, n: u64| {
        for _ in 0..n {
            let i = expect.len() as u64;
            let p = payload(9, i, 1000);
            h.append("n", p.clone(), Durability::Synced).wait_timeout(T).unwrap();
            expect.push(p);
        }
    };
    // The spare starts with the first Synced append and is zeroed in a few ms; the first
    // segment is rolled long before it is half full (512 appends of ~1 KiB).
    let deadline = std::time::Instant::now() + T;
    loop {
        append(&h, &mut expect, 10);
        let st = h.stats(0).wait_timeout(T).unwrap();
        if st.early_rolls > 0 && st.segments_sealed >= 1 {
            break;
        }
        assert!(
            expect.len() < 400,
            "no early roll within {} appends: {st:?}",
            expect.len()
        );
        assert!(std::time::Instant::now() < deadline, "no early roll in time: {st:?}");
    }
    // ~2.5 more segments: each rolls when full, none early.
    append(&h, &mut expect, 2500);
    let st = h.stats(0).wait_timeout(T).unwrap();
    assert_eq!(st.early_rolls, 1, "a segment past the first was rolled early: {st:?}");
    assert!(st.segments_sealed >= 3, "{st:?}");
    assert_log(&h, "n", &expect);
    e.close().unwrap();

    let e = start(cfg());
    assert_clean_recovery(&e);
    let h = e.handle();
    assert_log(&h, "n", &expect);
    let deadline = std::time::Instant::now() + T;
    while h.stats(0).wait_timeout(T).unwrap().early_rolls == 0 {
        assert!(std::time::Instant::now() < deadline, "no early roll after the restart");
        append(&h, &mut expect, 10);
    }
    assert_log(&h, "n", &expect);
    e.close().unwrap();

    // Without zero-filling nothing is rolled early.
    let dir = tempdir("reg-early-roll-off");
    let mut c = raw_config(&dir, 1);
    c.segment_size_bytes = 1 << 20;
    c.zero_fill_spares_bytes_per_sec = None;
    let e = start(c);
    let h = e.handle();
    h.create_log("n").wait_timeout(T).unwrap();
    let mut expect = Vec::new();
    append(&h, &mut expect, 300);
    let st = h.stats(0).wait_timeout(T).unwrap();
    assert_eq!((st.early_rolls, st.segments_sealed), (0, 0), "{st:?}");
    e.close().unwrap();
}

/// A log that goes idle after a burst gives back its staging chunk: the chunk was sized for
/// the burst's writes (up to `flush_threshold_bytes`) and used to stay held for as long as the
/// log stayed idle. The logs run at a retention limit, so their segments are written over
/// reused files: in a file's fresh blocks, the block a write leaves partial is held in a
/// one-block chunk of its own anyway. The records kept are intact afterwards, and across a
/// restart.
#[test]
fn idle_logs_give_back_their_staging_chunks() {
    const LOGS: usize = 4;
    let dir = tempdir("reg-idle-staging");
    let cfg = || {
        let mut c = raw_config(&dir, 1);
        c.flush_threshold_bytes = 1 << 20;
        c.segment_size_bytes = 2 << 20;
        c.shard_memory_budget_bytes = 32 << 20;
        c.recycle_segments = true;
        c.retention = aof_engine::Retention {
            max_age: None,
            max_bytes: Some(4 << 20),
        };
        c
    };
    let e = start(cfg());
    let h = e.handle();
    let names: Vec<String> = (0..LOGS).map(|l| format!("idle{l}")).collect();
    let mut expect = vec![Vec::new(); LOGS];
    for n in &names {
        h.create_log(n).wait_timeout(T).unwrap();
    }
    // A burst: batches of 64 records of ~1 KiB, 16 MiB per log.
    for b in 0..256u64 {
        for (l, n) in names.iter().enumerate() {
            let batch: Vec<OwnedRecord> = (0..64u64)
                .map(|k| OwnedRecord::new(payload(l, b * 64 + k, 1000 + (k % 5) as usize * 7)))
                .collect();
            h.append_batch(n, batch.clone(), Durability::Memory)
                .wait_timeout(T)
                .unwrap();
            expect[l].extend(batch.into_iter().map(|r| r.payload));
        }
    }
    // Idle now: within a few release periods every log is down to one smallest chunk.
    let smallest = 16u64 << 10;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let st = loop {
        let st = h.stats(0).wait_timeout(T).unwrap();
        if st.unflushed_bytes == 0 && st.staging_capacity_bytes <= LOGS as u64 * smallest {
            break st;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "idle logs still hold their staging chunks: {st:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(st.segments_recycled > 0, "no segment file was reused: {st:?}");
    assert!(
        st.idle_staging_released_bytes >= LOGS as u64 * smallest,
        "no log released a chunk larger than the smallest: {st:?}"
    );
    // They stage and write as before.
    for (l, n) in names.iter().enumerate() {
        let p = payload(l, 1 << 20, 3000);
        h.append(n, p.clone(), Durability::Synced).wait_timeout(T).unwrap();
        expect[l].push(p);
    }
    let check = |h: &Handle, expect: &[Vec<Vec<u8>>]| {
        for (n, expect) in names.iter().zip(expect) {
            let (first, next, _) = h.offsets(n).wait_timeout(T).unwrap();
            assert_eq!(next, expect.len() as u64, "{n}");
            assert!(first > 0 && first < next, "{n}: retention kept {first}..{next}");
            // A read ends at a segment's end; read on from there.
            let (mut at, mut read) = (first, 0);
            while at < next {
                match h.read_from(n, at, usize::MAX, usize::MAX).wait_timeout(T) {
                    Ok(got) => {
                        assert!(!got.is_empty(), "{n}: nothing read at {at} of {next}");
                        for r in got {
                            assert_eq!(r.offset, at, "{n}");
                            assert_eq!(&r.payload, &expect[at as usize], "{n} record {at}");
                            at += 1;
                            read += 1;
                        }
                    }
                    // Retention, still running, removed that segment meanwhile.
                    Err(Error::OffsetOutOfRange { first, .. }) if first > at => at = first,
                    Err(e) => panic!("{n}: reading at {at}: {e}"),
                }
            }
            assert!(read > 0, "{n}: nothing read");
        }
    };
    check(&h, &expect);
    e.close().unwrap();
    let e = start(cfg());
    assert_clean_recovery(&e);
    check(&e.handle(), &expect);
    e.close().unwrap();
}

/// Cache flushes the block device holding `dir` has completed (`/sys/dev/block/*/stat`), if it
/// has a volatile write cache; `None` where it has none (no flushes are sent) or `/sys` does
/// not say.
fn device_flushes(dir: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata(dir).ok()?.dev();
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    let mut sys = PathBuf::from(format!("/sys/dev/block/{major}:{minor}"));
    // A partition's flushes are counted on its disk.
    if sys.join("partition").exists() {
        sys = sys.join("..");
    }
    let cache = std::fs::read_to_string(sys.join("queue/write_cache")).ok()?;
    if cache.trim() != "write back" {
        return None;
    }
    // Field 16 of the disk's stat: flush requests completed (Documentation/block/stat.rst).
    std::fs::read_to_string(sys.join("stat"))
        .ok()?
        .split_whitespace()
        .nth(15)?
        .parse()
        .ok()
}

/// A lone Synced append goes to the device as one `RWF_DSYNC` write (`Config::dsync_writes`)
/// only when every byte before that write is already durable; a record spread over several
/// writes needs an fdatasync, since the flag covers only the write it is on. The device's own
/// count of cache flushes shows the flag reached it. Records are intact either way, before and
/// after a restart, and the same with the flag turned off.
#[test]
fn a_lone_synced_write_goes_with_dsync_only_over_durable_bytes() {
    for dsync in [true, false] {
        let dir = tempdir("reg-dsync");
        let cfg = || {
            let mut c = raw_config(&dir, 1);
            // Writes of at most 8 KiB, one at a time: a 30 KiB record takes four, the
            // first issued by its producer, each of the others alone.
            c.flush_threshold_bytes = 8 << 10;
            c.flush_writes_in_flight = 1;
            c.dsync_writes = dsync;
            c
        };
        let e = start(cfg());
        let h = e.handle();
        h.create_log("d").wait_timeout(T).unwrap();
        let mut expect = Vec::new();
        let before = h.stats(0).wait_timeout(T).unwrap();
        let flushes_before = device_flushes(&dir);
        // One at a time, small: each is alone, and what came before it is durable.
        for i in 0..200u64 {
            let p = payload(7, i, 300 + (i % 13) as usize * 61);
            h.append("d", p.clone(), Durability::Synced).wait_timeout(T).unwrap();
            expect.push(p);
        }
        let small = h.stats(0).wait_timeout(T).unwrap();
        let flushed = device_flushes(&dir).zip(flushes_before).map(|(a, b)| a - b);
        let (dsyncs, syncs) = (
            small.dsync_writes - before.dsync_writes,
            small.fdatasyncs - before.fdatasyncs,
        );
        if dsync {
            // Rolls (a segment holds ~300 of them) may take an fdatasync instead.
            assert!(dsyncs >= 150, "lone Synced writes did not go with RWF_DSYNC: {small:?}");
            assert!(syncs < 50, "fdatasyncs where RWF_DSYNC writes did: {small:?}");
            // The flag reached the device: each such write flushed its cache (or went with
            // FUA, which a device without it gets as a flush), where a plain write would not.
            // Other writers on the device only add flushes, so this is a lower bound.
            if let Some(n) = flushed {
                assert!(n >= 150, "{n} cache flushes for {dsyncs} RWF_DSYNC writes: {small:?}");
            }
        } else {
            assert_eq!(dsyncs, 0, "{small:?}");
            assert!(syncs >= 200, "each Synced append needs a sync: {small:?}");
        }
        // Records of four writes each: the producer's write of the first piece goes without
        // the flag, so the lone writes after it do not start on durable bytes and the record
        // needs an fdatasync.
        for i in 200..240u64 {
            let p = payload(7, i, 30 << 10);
            h.append("d", p.clone(), Durability::Synced).wait_timeout(T).unwrap();
            expect.push(p);
        }
        let large = h.stats(0).wait_timeout(T).unwrap();
        assert!(
            large.fdatasyncs - small.fdatasyncs >= 40,
            "a record over several writes was acknowledged without an fdatasync: {large:?}"
        );
        assert_log_survives_restart(e, cfg(), "d", &expect);
    }
}

// Bug pinned: a task given to `spawn_on` that panicked took its shard's thread down, and every
// later request to that shard waited forever, queued in a mailbox no one drained any more.
// Now the requests fail at once with the shard named, the other shard goes on serving, close
// reports the failure, and a reopen recovers every acknowledged record of both shards.
#[test]
fn a_shard_whose_thread_panicked_refuses_requests_instead_of_hanging() {
    let dir = tempdir("reg-shard-panic");
    let cfg = small_config(&dir, 2);
    let e = start(cfg.clone());
    let h = e.handle();
    let on = |shard: usize| {
        (0..)
            .map(|i| format!("log-{i}"))
            .find(|n| h.shard_of(n) == shard)
            .unwrap()
    };
    let (a, b) = (on(0), on(1));
    let mut expect: BTreeMap<&str, Vec<Vec<u8>>> = BTreeMap::new();
    for (k, log) in [&a, &b].into_iter().enumerate() {
        h.create_log(log).wait_timeout(T).unwrap();
        for i in 0..40u64 {
            let p = payload(k, i, 1 + (i as usize * 97) % 5000);
            assert_eq!(h.append(log, p.clone(), Durability::Synced).wait_timeout(T).unwrap(), i);
            expect.entry(log.as_str()).or_default().push(p);
        }
    }

    let died = h.spawn_on(0, |_| async move {
        panic!("a bug in a task given to spawn_on (this panic is the test's)");
        #[allow(unreachable_code)]
        Ok(())
    });
    // The request in flight ends (its reply went with the shard's tasks) ...
    assert!(matches!(died.wait_timeout(T), Err(Error::ShuttingDown)));
    // ... as do requests sent while the thread is still unwinding (queued, then dropped) ...
    let t0 = std::time::Instant::now();
    loop {
        match h.offsets(&a).wait_timeout(T) {
            Err(Error::ShuttingDown) if t0.elapsed() < T => std::thread::yield_now(),
            Err(Error::ShardFailed { shard: 0 }) => break,
            r => panic!("{r:?}"),
        }
    }
    // ... and every later one to that shard is refused at once, naming it, whatever it is.
    let refused = [
        h.append(&a, vec![1u8; 10], Durability::Synced)
            .wait_timeout(T)
            .map(|_| ()),
        h.read(&a, 0).wait_timeout(T).map(|_| ()),
        h.sync(&a).wait_timeout(T).map(|_| ()),
        h.create_log(&on(0).replace("log", "new")).wait_timeout(T).map(|_| ()),
    ];
    for r in refused {
        assert!(matches!(r, Err(Error::ShardFailed { shard: 0 })), "{r:?}");
    }
    // The other shard serves on.
    let p = payload(1, 40, 123);
    assert_eq!(h.append(&b, p.clone(), Durability::Synced).wait_timeout(T).unwrap(), 40);
    expect.get_mut(b.as_str()).unwrap().push(p);
    assert_log(&h, &b, &expect[b.as_str()]);
    let closed = e.close();
    assert!(closed.is_err(), "close hid a shard's panic: {closed:?}");

    let e = start(cfg);
    for (log, records) in &expect {
        assert_log(&e.handle(), log, records);
    }
    e.close().unwrap();
}
