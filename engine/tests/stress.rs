//! Reads anywhere in a log while it is written as fast as it goes: every read must return
//! records some writer appended, intact, at dense offsets, and the same record every time an
//! offset is read, whether the bytes are staged, in one of several writes in flight, on disk
//! in an open or a sealed segment, in a Tier1 frame or in the hot cache.
//!
//! A read that spanned two writes in flight once failed with "segment vanished during a read"
//! (found by CI, once in many runs of `concurrent_writes_retire_in_order_and_lose_nothing`);
//! this test reads ranges of every length from every place at once to find such boundaries.

mod common;

use aof_engine::{Durability, Error, OwnedRecord, Record, Retention};
use common::*;
use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const WRITERS: usize = 4;
/// Appended after the writers: where the follower stops.
const END: &[u8] = b"end of the stress run";
const END_ID: (usize, u64) = (WRITERS, u64::MAX);
const BATCHES: u64 = 400;

/// Per writer: each acknowledged batch's offsets and the record numbers it carried.
type Acks = Vec<(usize, Vec<(Range<u64>, Range<u64>)>)>;

/// xorshift64*: a seeded stream, so a failure names the seed that reproduces its workload.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn len_of(t: usize, i: u64) -> usize {
    // Mostly small, sometimes several blocks: frames straddle write and block boundaries.
    let x = (i.wrapping_mul(2654435761) ^ (t as u64 * 97)) % 100;
    match x {
        0..=69 => 1 + (x as usize * 37 + t) % 300,
        70..=94 => 300 + (i as usize * 131) % 3000,
        _ => 4000 + (i as usize * 17) % 9000,
    }
}

/// Record `i` of writer `t`: who wrote it, then a payload only that record has.
fn record(t: usize, i: u64) -> Vec<u8> {
    let mut v = vec![t as u8];
    v.extend_from_slice(&i.to_le_bytes());
    v.extend_from_slice(&payload(t, i, len_of(t, i)));
    v
}

/// Checks a read's records: dense from `from`, each one intact; returns `(offset, (t, i))`.
fn identify(from: u64, recs: &[Record]) -> Vec<(u64, (usize, u64))> {
    recs.iter()
        .enumerate()
        .map(|(k, r)| {
            assert_eq!(r.offset, from + k as u64, "offsets are dense from {from}");
            if r.payload == END {
                return (r.offset, END_ID);
            }
            assert!(r.payload.len() >= 9, "record {} too short to be ours", r.offset);
            let t = r.payload[0] as usize;
            let i = u64::from_le_bytes(r.payload[1..9].try_into().unwrap());
            assert!(t < WRITERS, "record {} names writer {t}", r.offset);
            assert!(
                r.payload == record(t, i),
                "record {} (writer {t}, #{i}) is damaged",
                r.offset
            );
            (r.offset, (t, i))
        })
        .collect()
}

/// Which record each offset held when it was read.
type Seen = Mutex<HashMap<u64, (usize, u64)>>;

/// Notes what a read returned; an offset read before must hold the same record (`who` names
/// the reader in the failure).
fn remember(seen: &Seen, ids: Vec<(u64, (usize, u64))>, who: &str) {
    let mut seen = seen.lock().unwrap();
    for (off, id) in ids {
        let prev = *seen.entry(off).or_insert(id);
        assert_eq!(prev, id, "offset {off} read as two different records ({who})");
    }
}

/// Small writes, many in flight, small segments: reads meet every boundary often.
fn stress_config(dir: &std::path::Path) -> aof_engine::Config {
    let mut c = small_config(dir, 1);
    c.flush_threshold_bytes = 8 << 10;
    c.flush_writes_in_flight = 8;
    c.segment_size_bytes = 192 << 10;
    c.shard_memory_budget_bytes = 2 << 20;
    c
}

/// WRITERS threads each append BATCHES batches of 1-24 records to `log`, cycling through the
/// durabilities; returns when all are acknowledged.
fn write_concurrently(h: &aof_engine::Handle, log: &str, seed: u64) -> Acks {
    std::thread::scope(|sc| {
        let writers: Vec<_> = (0..WRITERS)
            .map(|t| {
                sc.spawn(move || {
                    let mut rng = Rng(seed.wrapping_add(t as u64) | 1);
                    let mut i = 0u64;
                    let mut acks = Vec::new();
                    for b in 0..BATCHES {
                        let n = 1 + rng.below(24);
                        let batch: Vec<OwnedRecord> = (i..i + n).map(|k| OwnedRecord::new(record(t, k))).collect();
                        let d =
                            [Durability::Memory, Durability::Written, Durability::Synced][(b + t as u64) as usize % 3];
                        let offs = h.append_batch(log, batch, d).wait_timeout(T).unwrap();
                        assert_eq!(offs.end - offs.start, n);
                        acks.push((offs, i..i + n));
                        i += n;
                    }
                    (t, acks)
                })
            })
            .collect();
        writers.into_iter().map(|w| w.join().unwrap()).collect()
    })
}

/// Which record each acknowledged offset holds.
fn expected(acks: &Acks) -> HashMap<u64, (usize, u64)> {
    let mut expect = HashMap::new();
    for (t, list) in acks {
        for (offs, ids) in list {
            for (off, i) in offs.clone().zip(ids.clone()) {
                assert!(expect.insert(off, (*t, i)).is_none(), "offset {off} acknowledged twice");
            }
        }
    }
    expect
}

/// Reads `[from, to)` of `log`, every record intact and the one `expect` names.
fn check_range(h: &aof_engine::Handle, log: &str, from: u64, to: u64, expect: &HashMap<u64, (usize, u64)>) {
    let mut at = from;
    while at < to {
        let recs = h.read_from(log, at, 500, usize::MAX).wait_timeout(T).unwrap();
        for (off, id) in identify(at, &recs) {
            assert_eq!(expect.get(&off), Some(&id), "offset {off} holds another record");
        }
        at += recs.len() as u64;
    }
}

/// One reader of log "s" until `done`: ranges and point reads (with `point_reads`), near the
/// tail mostly; every record is checked and remembered. Returns how many reads it made.
fn read_anywhere(h: &aof_engine::Handle, seed: u64, point_reads: bool, done: &AtomicBool, seen: &Seen) -> u64 {
    let mut rng = Rng(seed);
    let mut reads = 0u64;
    while !done.load(Ordering::Relaxed) {
        let (first, _, visible) = h.offsets("s").wait_timeout(T).unwrap();
        if visible == first {
            std::thread::yield_now();
            continue;
        }
        // Near the tail most of the time (memory), anywhere otherwise.
        let span = visible - first;
        let from = if rng.below(4) > 0 {
            visible - 1 - rng.below(span.min(600))
        } else {
            first + rng.below(span)
        };
        let got: Vec<Record> = if point_reads && rng.below(2) == 0 {
            match h.read("s", from).wait_timeout(T) {
                Ok(rec) => vec![rec],
                Err(err) => panic!("point read of {from} (seed {seed}): {err}"),
            }
        } else {
            let n = 1 + rng.below(400) as usize;
            let bytes = if rng.below(3) == 0 {
                1 + rng.below(64 << 10) as usize
            } else {
                usize::MAX
            };
            match h.read_from("s", from, n, bytes).wait_timeout(T) {
                Ok(v) => v,
                Err(Error::OffsetOutOfRange { .. }) if from < visible => {
                    panic!("offset {from} below visible {visible} reported out of range (seed {seed})")
                }
                Err(err) => panic!("read_from({from}, {n}) (seed {seed}): {err}"),
            }
        };
        assert!(!got.is_empty(), "a read of visible offset {from} returned nothing");
        remember(seen, identify(from, &got), &format!("seed {seed}"));
        reads += 1;
    }
    reads
}

#[test]
fn reads_anywhere_under_load_return_only_appended_records() {
    let dir = tempdir("stress-reads");
    let e = start(stress_config(&dir));
    let h = e.handle();
    h.create_log("s").wait_timeout(T).unwrap();
    let done = AtomicBool::new(false);
    // Every offset any reader saw, and whose record it was: a second read of an offset must
    // find the same record.
    let seen: Seen = Mutex::new(HashMap::new());
    let seed0 = std::process::id() as u64 ^ 0x5eed;
    let started = Instant::now();
    let (acks, (reads, followed)) = std::thread::scope(|sc| {
        let readers: Vec<_> = (0..3u64)
            .map(|r| {
                let (h, done, seen) = (&h, &done, &seen);
                sc.spawn(move || read_anywhere(h, seed0.wrapping_add(r * 0x9E37_79B9) | 1, r == 2, done, seen))
            })
            .collect();
        // A follower takes every record once, in order, as it becomes readable, until the
        // end marker appended after the writers.
        let follower = {
            let (h, seen) = (h.clone(), &seen);
            sc.spawn(move || {
                let mut f = h.follow("s", 0);
                let mut at = 0u64;
                loop {
                    let r = f.next_record().unwrap();
                    assert_eq!(r.offset, at, "the follower skipped or repeated a record");
                    let ids = identify(at, std::slice::from_ref(&r));
                    if ids[0].1 == END_ID {
                        return at;
                    }
                    remember(seen, ids, "the follower");
                    at += 1;
                }
            })
        };
        let acks = write_concurrently(&h, "s", seed0.wrapping_mul(31));
        h.append("s", END.to_vec(), Durability::Synced).wait_timeout(T).unwrap();
        let followed = follower.join().unwrap();
        // Keep reading a little after the last append: seals and compression still run.
        std::thread::sleep(Duration::from_millis(300));
        done.store(true, Ordering::Relaxed);
        let reads: u64 = readers.into_iter().map(|r| r.join().unwrap()).sum();
        (acks, (reads, followed))
    });
    let st = h.stats(0).wait_timeout(T).unwrap();
    eprintln!("{reads} reads in {:?}; {st:?}", started.elapsed());
    assert!(reads > 100, "the readers hardly ran: {reads} reads");
    assert!(st.overlapped_writes > 0, "never two writes in flight: {st:?}");
    assert!(st.segments_sealed >= 3, "segments did not roll: {st:?}");

    // Every acknowledged record is where its append said, and what readers saw agrees.
    let mut expect = expected(&acks);
    let total = expect.len() as u64;
    assert_eq!(followed, total, "the follower saw every record before the end marker");
    expect.insert(total, END_ID);
    check_range(&h, "s", 0, total, &expect);
    for (off, id) in seen.lock().unwrap().iter() {
        assert_eq!(expect.get(off), Some(id), "a reader saw offset {off} as another record");
    }
    e.close().unwrap();
    let e = start(stress_config(&dir));
    let (_, next, _) = e.handle().offsets("s").wait_timeout(T).unwrap();
    assert_eq!(next, total + 1, "records (and the end marker) after restart");
    check_range(&e.handle(), "s", 0, total, &expect);
    e.close().unwrap();
}

/// The same readers while retention removes the oldest segments every few milliseconds: a read
/// may find its offset gone (`OffsetOutOfRange`, with `first` past it), never another error,
/// and never a damaged or different record.
#[test]
fn reads_racing_retention_see_only_appended_records_or_out_of_range() {
    let dir = tempdir("stress-retention");
    let mut c = stress_config(&dir);
    c.housekeeping_interval = Duration::from_millis(10);
    c.retention.max_bytes = Some(1 << 20);
    let e = start(c);
    let h = e.handle();
    h.create_log("r").wait_timeout(T).unwrap();
    let done = AtomicBool::new(false);
    let seen: Seen = Mutex::new(HashMap::new());
    let seed0 = std::process::id() as u64 ^ 0x7e7e;
    let (acks, (reads, gone)) = std::thread::scope(|sc| {
        let readers: Vec<_> = (0..2u64)
            .map(|r| {
                let (h, done, seen) = (h.clone(), &done, &seen);
                sc.spawn(move || {
                    let seed = seed0.wrapping_add(r * 0x9E37_79B9) | 1;
                    let mut rng = Rng(seed);
                    let (mut reads, mut gone) = (0u64, 0u64);
                    while !done.load(Ordering::Relaxed) {
                        let (first, _, visible) = h.offsets("r").wait_timeout(T).unwrap();
                        if visible == first {
                            std::thread::yield_now();
                            continue;
                        }
                        // Mostly the oldest records, which retention is about to remove.
                        let span = visible - first;
                        let from = if rng.below(3) > 0 {
                            first + rng.below(span.min(300))
                        } else {
                            first + rng.below(span)
                        };
                        let n = 1 + rng.below(300) as usize;
                        match h.read_from("r", from, n, usize::MAX).wait_timeout(T) {
                            Ok(got) => {
                                assert!(!got.is_empty(), "a read of {from} returned nothing (seed {seed})");
                                remember(seen, identify(from, &got), &format!("seed {seed}"));
                                reads += 1;
                            }
                            Err(Error::OffsetOutOfRange { first, .. }) if first > from => gone += 1,
                            Err(err) => panic!("read_from({from}, {n}) (seed {seed}): {err:?}"),
                        }
                    }
                    (reads, gone)
                })
            })
            .collect();
        let acks = write_concurrently(&h, "r", seed0.wrapping_mul(17));
        std::thread::sleep(Duration::from_millis(300));
        done.store(true, Ordering::Relaxed);
        let counts = readers
            .into_iter()
            .map(|r| r.join().unwrap())
            .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
        (acks, counts)
    });
    let st = h.stats(0).wait_timeout(T).unwrap();
    eprintln!("{reads} reads, {gone} found their offset removed; {st:?}");
    assert!(st.retention_deleted_segments >= 3, "retention hardly ran: {st:?}");
    assert!(reads > 50, "the readers hardly ran: {reads}");
    let expect = expected(&acks);
    for (off, id) in seen.lock().unwrap().iter() {
        assert_eq!(expect.get(off), Some(id), "a reader saw offset {off} as another record");
    }
    // What retention kept is intact and in place (once it has stopped removing).
    h.set_retention("r", Retention::default()).wait_timeout(T).unwrap();
    h.tiering_idle(0).wait_timeout(T).unwrap();
    let (first, next, _) = h.offsets("r").wait_timeout(T).unwrap();
    assert!(first > 0 && next == expect.len() as u64, "first {first}, next {next}");
    check_range(&h, "r", first, next, &expect);
    e.close().unwrap();
}
