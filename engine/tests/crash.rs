//! Crash safety: a writer process appends and reports each acknowledged offset, is killed
//! with SIGKILL at a random moment, and the data directory is reopened and checked: every
//! acknowledged record reads back byte-identical, and every record that reads back at all is
//! exactly the one that was appended at that offset (nothing unacknowledged reads back as
//! garbage). Repeated many times over the same directory, so recovery also runs on files
//! that earlier recoveries repaired.

mod common;
use aof_engine::{Durability, OwnedRecord};
use common::*;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const LOGS: usize = 3;

fn size_of(log: usize, off: u64) -> usize {
    // Odd sizes, small and large, so frames straddle block boundaries in every way.
    let x = (off.wrapping_mul(2_654_435_761) ^ log as u64) % 1000;
    match x {
        0..=600 => 1 + (x as usize % 97),
        601..=950 => 100 + (x as usize * 37 % 4000),
        _ => 9000 + (x as usize * 101 % 30_000),
    }
}

fn config(dir: &std::path::Path) -> aof_engine::Config {
    let mut c = small_config(dir, 2);
    c.segment_size_bytes = 128 << 10;
    c.max_record_bytes = 48 << 10;
    // Kills land in Tier1 recompression and manifest compaction too.
    c.tier1_frame_bytes = 8192;
    c.manifest_compact_records = 8;
    c
}

/// How many kills a test runs: `AOF_CRASH_ITERATIONS`, or `default`.
fn iterations(default: u64) -> u64 {
    std::env::var("AOF_CRASH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The next value of a test's xorshift stream (seeded from the process id).
fn next(rng: &mut u64) -> u64 {
    *rng ^= *rng << 13;
    *rng ^= *rng >> 7;
    *rng ^= *rng << 17;
    *rng
}

/// Runs the ignored child test `child` (this binary) on `dir`, with `env` set, for `run`,
/// then kills it with SIGKILL: no destructor, no flush, no close. Returns each line it
/// printed before it died, split into words.
fn run_then_kill(child: &str, dir: &Path, env: Option<(&str, &str)>, run: Duration) -> Vec<Vec<String>> {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", child, "--nocapture", "--test-threads=1"])
        .env("AOF_CRASH_DIR", dir)
        .envs(env)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(|l| l.ok())
            .map(|l| l.split_whitespace().map(str::to_owned).collect())
            .collect()
    });
    std::thread::sleep(run);
    child.kill().unwrap();
    child.wait().unwrap();
    reader.join().unwrap()
}

/// The child: appends to LOGS logs from one thread each, printing `ack <log> <offset>` for
/// every acknowledged Synced/Written record. Never returns on its own.
#[test]
#[ignore = "run by kill9_writer_never_loses_acknowledged_records as a child process"]
fn crash_child_writer() {
    let Ok(dir) = std::env::var("AOF_CRASH_DIR") else {
        return;
    };
    let e = open(config(std::path::Path::new(&dir)));
    let h = e.handle();
    let mut threads = Vec::new();
    for li in 0..LOGS {
        let h = h.clone();
        threads.push(std::thread::spawn(move || {
            let name = format!("log-{li}");
            let _ = h.create_log(&name).wait();
            let (_, mut next, _) = h.offsets(&name).wait().unwrap();
            let mut out = std::io::stdout();
            let mut op = 0u64;
            loop {
                op += 1;
                if op.is_multiple_of(7) {
                    let recs: Vec<OwnedRecord> = (0..3)
                        .map(|k| OwnedRecord::new(payload(li, next + k, size_of(li, next + k))))
                        .collect();
                    let r = h.append_batch(&name, recs, Durability::Synced).wait().unwrap();
                    assert_eq!(r.start, next);
                    for o in r.clone() {
                        writeln!(out, "ack {li} {o}").unwrap();
                    }
                    next = r.end;
                } else {
                    let d = match op % 5 {
                        0 => Durability::Memory,
                        1 => Durability::Written,
                        _ => Durability::Synced,
                    };
                    let o = h.append(&name, payload(li, next, size_of(li, next)), d).wait().unwrap();
                    assert_eq!(o, next);
                    next += 1;
                    if d != Durability::Memory {
                        // Written survives a process crash too (the kernel has the data).
                        writeln!(out, "ack {li} {o}").unwrap();
                    }
                }
                // Log 0 goes idle now and then for longer than the flusher's idle period, so
                // its staging chunk is given back and its partial block moved to a small
                // chunk, which the next appends rewrite: kills land on that path too.
                if li == 0 && op.is_multiple_of(32) {
                    // First a burst, so the chunks grow past the smallest (single Synced
                    // appends keep them there): 96 KiB of Memory appends, more than a write.
                    let mut burst = 0;
                    while burst < 96 << 10 {
                        let len = size_of(li, next);
                        let o = h
                            .append(&name, payload(li, next, len), Durability::Memory)
                            .wait()
                            .unwrap();
                        assert_eq!(o, next);
                        next += 1;
                        burst += len;
                    }
                    out.flush().unwrap();
                    std::thread::sleep(Duration::from_millis(115));
                    let shard = h.shard_of(&name);
                    let st = h.stats(shard).wait().unwrap();
                    writeln!(out, "released {}", st.idle_staging_released_bytes).unwrap();
                }
                out.flush().unwrap();
            }
        }));
    }
    for t in threads {
        let _ = t.join();
    }
}

#[test]
fn kill9_writer_never_loses_acknowledged_records() {
    let dir = tempdir("crash");
    let iterations = iterations(15);
    let mut rng = 0x1234_5678_9abc_def0u64 ^ std::process::id() as u64;
    let mut total_acked = 0usize;
    let mut released = 0u64;
    let mut max_acked: HashMap<usize, u64> = HashMap::new();
    for it in 0..iterations {
        let run = Duration::from_millis(150 + next(&mut rng) % 600);
        let lines = run_then_kill("crash_child_writer", &dir, None, run);
        released += lines
            .iter()
            .filter(|w| w.len() == 2 && w[0] == "released")
            .map(|w| w[1].parse::<u64>().unwrap())
            .max()
            .unwrap_or(0);
        let acks: Vec<(usize, u64)> = lines
            .iter()
            .filter(|w| w.len() == 3 && w[0] == "ack")
            .map(|w| (w[1].parse().unwrap(), w[2].parse().unwrap()))
            .collect();
        total_acked += acks.len();
        for &(li, off) in &acks {
            let m = max_acked.entry(li).or_insert(0);
            *m = (*m).max(off + 1);
        }

        let e = open(config(&dir));
        let h = e.handle();
        for li in 0..LOGS {
            let name = format!("log-{li}");
            let Ok((first, next, _)) = h.offsets(&name).wait() else {
                assert!(
                    !acks.iter().any(|a| a.0 == li),
                    "log {li} lost after acknowledged appends"
                );
                continue;
            };
            assert_eq!(first, 0);
            let need = max_acked.get(&li).copied().unwrap_or(0);
            assert!(
                next >= need,
                "iteration {it}: log {li} recovered to {next} but offset {} was acknowledged",
                need - 1
            );
            let all = h.read_from(&name, 0, usize::MAX, usize::MAX).wait().unwrap();
            assert_eq!(all.len() as u64, next);
            for r in &all {
                assert_eq!(
                    r.payload,
                    payload(li, r.offset, size_of(li, r.offset)),
                    "iteration {it}: log {li} offset {} differs",
                    r.offset
                );
            }
        }
        e.close().unwrap();
        // What survived this round is now the floor for the next: reopen must never go back.
        let e = open(config(&dir));
        for li in 0..LOGS {
            if let Ok((_, next, _)) = e.handle().offsets(&format!("log-{li}")).wait() {
                max_acked.insert(li, next.max(max_acked.get(&li).copied().unwrap_or(0)));
            }
        }
        e.close().unwrap();
    }
    let files = walk(&dir);
    let t1 = files
        .iter()
        .filter(|p| p.extension().is_some_and(|x| x == "t1"))
        .count();
    let snaps = files.iter().filter(|p| p.ends_with("manifest.snap")).count();
    eprintln!(
        "{iterations} kills, {total_acked} acknowledged records checked, {t1} Tier1 files, {snaps} manifest snapshots"
    );
    // The kills must have landed on a tiering engine: sealed segments were recompressed and
    // manifests compacted along the way.
    assert!(
        t1 > 0 && snaps > 0,
        "tiering never ran: {t1} Tier1 files, {snaps} snapshots"
    );
    assert!(
        total_acked > 100,
        "the writer acknowledged too little to prove anything: {total_acked}"
    );
    assert!(
        released > 0,
        "no idle log ever gave back its staging chunk before a kill"
    );
}

const WRITERS: usize = 4;

fn concurrent_config(dir: &std::path::Path) -> aof_engine::Config {
    let mut c = small_config(dir, 1);
    // Small writes, many in flight at once, and batches that fill a whole write: kills land
    // between writes completing out of order, in producer-issued writes and in rolls.
    c.flush_threshold_bytes = 8 << 10;
    c.flush_writes_in_flight = 8;
    c.segment_size_bytes = 128 << 10;
    c.max_record_bytes = 16 << 10;
    c.tier1_frame_bytes = 8192;
    c
}

/// Writer `t`'s record number `i`: who wrote it, then bytes only that record has.
fn tagged(t: usize, i: u64) -> Vec<u8> {
    let mut v = vec![t as u8];
    v.extend_from_slice(&i.to_le_bytes());
    v.extend_from_slice(&payload(t, i, size_of(t, i) % 3000));
    v
}

/// The child: WRITERS threads append batches to one log, printing `ack <offset> <t> <i>` for
/// every record of each acknowledged Synced/Written batch. Never returns on its own.
#[test]
#[ignore = "run by kill9_concurrent_writers_never_lose_acknowledged_records as a child process"]
fn crash_child_concurrent_writers() {
    let Ok(dir) = std::env::var("AOF_CRASH_DIR") else {
        return;
    };
    // With AOF_CRASH_RETENTION, retention keeps the log at ~2 MiB, so kills also land in its
    // deletions (paced truncation of raw segments, Tier1 files removed). The parent checks
    // without it.
    let mut c = concurrent_config(std::path::Path::new(&dir));
    if std::env::var("AOF_CRASH_RETENTION").is_ok() {
        c.retention.max_bytes = Some(2 << 20);
        c.housekeeping_interval = Duration::from_millis(20);
    }
    let e = open(c);
    let h = e.handle();
    let _ = h.create_log("c").wait();
    // Each run starts its writers' numbering past every earlier run's: `i` stays unique.
    let (_, base, _) = h.offsets("c").wait().unwrap();
    let out = std::sync::Mutex::new(std::io::stdout());
    std::thread::scope(|s| {
        for t in 0..WRITERS {
            let (h, out) = (h.clone(), &out);
            s.spawn(move || {
                let mut i = base * WRITERS as u64 + t as u64;
                for b in 0u64.. {
                    let n = 1 + (b * 7 + t as u64) % 40;
                    let ids: Vec<u64> = (0..n).map(|k| i + k * WRITERS as u64).collect();
                    let recs: Vec<OwnedRecord> = ids.iter().map(|&x| OwnedRecord::new(tagged(t, x))).collect();
                    i += n * WRITERS as u64;
                    let d = [Durability::Synced, Durability::Written, Durability::Memory][(b % 3) as usize];
                    let r = h.append_batch("c", recs, d).wait().unwrap();
                    let stats = (t == 0 && b % 16 == 0).then(|| h.stats(0).wait().unwrap());
                    let mut o = out.lock().unwrap();
                    if d != Durability::Memory {
                        for (off, x) in r.zip(&ids) {
                            writeln!(o, "ack {off} {t} {x}").unwrap();
                        }
                    }
                    if let Some(st) = stats {
                        writeln!(
                            o,
                            "stats {} {} {}",
                            st.overlapped_writes, st.producer_writes, st.spares_reused
                        )
                        .unwrap();
                    }
                    o.flush().unwrap();
                }
            });
        }
    });
}

/// Like `kill9_writer_never_loses_acknowledged_records`, with several producers per log and
/// several writes in flight: every acknowledged record reads back as itself, and every record
/// that reads back at all is intact and was appended by some writer.
#[test]
fn kill9_concurrent_writers_never_lose_acknowledged_records() {
    concurrent_kills("crash-concurrent", false);
}

/// The same with retention removing segments while the writers append.
#[test]
fn kill9_concurrent_writers_under_retention_never_lose_acknowledged_records() {
    concurrent_kills("crash-retention", true);
}

fn concurrent_kills(name: &str, retention: bool) {
    let dir = tempdir(name);
    let iterations = iterations(20);
    let mut rng = 0x0bad_cafe_f00d_1234u64 ^ std::process::id() as u64;
    let mut acked: HashMap<u64, (usize, u64)> = HashMap::new();
    let (mut overlapped, mut producer_writes, mut reused) = (0u64, 0u64, 0u64);
    let (mut total_acked, mut last_first, mut verified) = (0usize, 0u64, 0u64);
    for it in 0..iterations {
        let run = Duration::from_millis(100 + next(&mut rng) % 400);
        let env = retention.then_some(("AOF_CRASH_RETENTION", "1"));
        let mut acks: Vec<(u64, usize, u64)> = Vec::new();
        let mut stats = (0u64, 0u64, 0u64);
        for w in run_then_kill("crash_child_concurrent_writers", &dir, env, run) {
            if w.len() == 4 && w[0] == "ack" {
                acks.push((w[1].parse().unwrap(), w[2].parse().unwrap(), w[3].parse().unwrap()));
            } else if w.len() == 4 && w[0] == "stats" {
                // The counters so far: the last line is the run's total.
                stats = (w[1].parse().unwrap(), w[2].parse().unwrap(), w[3].parse().unwrap());
            }
        }
        overlapped += stats.0;
        producer_writes += stats.1;
        reused += stats.2;
        total_acked += acks.len();
        for (off, t, i) in acks {
            assert!(acked.insert(off, (t, i)).is_none(), "offset {off} acknowledged twice");
        }

        let e = open(concurrent_config(&dir));
        // A crash cuts the tail of the log; it never leaves a hole in front of records that
        // survived (a segment written before an earlier one was wholly on disk would).
        for r in e.recovery_reports() {
            assert!(
                r.lost_ranges.is_empty() && r.missing.is_empty(),
                "iteration {it}: {r:?}"
            );
        }
        let h = e.handle();
        if let Ok((first, next, _)) = h.offsets("c").wait() {
            // Below `first`, retention removed records on purpose.
            acked.retain(|&off, _| off >= first);
            assert!(
                first >= last_first,
                "iteration {it}: the first offset went back to {first}"
            );
            last_first = first;
            let need = acked.keys().max().map_or(0, |m| m + 1);
            assert!(
                next >= need,
                "iteration {it}: recovered to {next}, offset {} was acknowledged",
                need - 1
            );
            // Records well below the last round's end were checked then; a crash only
            // touches the tail.
            let from = first.max(verified.saturating_sub(2000));
            let all = h.read_from("c", from, usize::MAX, usize::MAX).wait().unwrap();
            assert_eq!(
                all.len() as u64,
                next - from,
                "iteration {it}: offsets {:?}, a read from {} fails with {:?}; {:?}",
                h.offsets("c").wait(),
                all.len(),
                h.read_from("c", from + all.len() as u64, 1, usize::MAX)
                    .wait()
                    .map(|v| v.len()),
                e.recovery_reports()
            );
            for (k, r) in all.iter().enumerate() {
                assert_eq!(r.offset, from + k as u64, "iteration {it}: offsets are dense");
                let t = r.payload[0] as usize;
                let i = u64::from_le_bytes(r.payload[1..9].try_into().unwrap());
                assert!(
                    t < WRITERS && r.payload == tagged(t, i),
                    "iteration {it}: offset {} is damaged",
                    r.offset
                );
                if let Some(&want) = acked.get(&r.offset) {
                    assert_eq!((t, i), want, "iteration {it}: offset {} holds another record", r.offset);
                }
            }
            verified = next;
            // Records that survived are the floor for the next round, acknowledged or not.
            for r in &all {
                let t = r.payload[0] as usize;
                let i = u64::from_le_bytes(r.payload[1..9].try_into().unwrap());
                acked.insert(r.offset, (t, i));
            }
        } else {
            assert!(acked.is_empty(), "the log was lost after acknowledged appends");
        }
        e.close().unwrap();
    }
    eprintln!(
        "{iterations} kills, {total_acked} acknowledged records checked, {} held from offset {last_first}; the writers saw {overlapped} overlapped and {producer_writes} producer-issued writes, {reused} segments in reused files",
        acked.len()
    );
    assert!(
        total_acked > 1000,
        "too little was acknowledged to prove anything: {total_acked}"
    );
    assert_eq!(last_first > 0, retention, "retention removed records only if it was on");
    // Kills also land on segments written over reused files (of segments retention removed,
    // or that Tier1 files replaced).
    assert!(reused > 0, "no segment file was reused");
    // The kills must have landed on a log with several writes in flight.
    assert!(
        overlapped > 0 && producer_writes > 0,
        "no concurrent writes: {overlapped}, {producer_writes}"
    );
}
