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
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

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
    let exe = std::env::current_exe().unwrap();
    let iterations: u64 = std::env::var("AOF_CRASH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(15);
    let mut rng = 0x1234_5678_9abc_def0u64 ^ std::process::id() as u64;
    let mut total_acked = 0usize;
    let mut max_acked: HashMap<usize, u64> = HashMap::new();
    for it in 0..iterations {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let run_ms = 150 + rng % 600;
        let mut child = Command::new(&exe)
            .args([
                "--ignored",
                "--exact",
                "crash_child_writer",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("AOF_CRASH_DIR", &dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut acks = Vec::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let mut p = line.split_whitespace();
                if p.next() == Some("ack") {
                    let li: usize = p.next().unwrap().parse().unwrap();
                    let off: u64 = p.next().unwrap().parse().unwrap();
                    acks.push((li, off));
                }
            }
            acks
        });
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(run_ms) {
            std::thread::sleep(Duration::from_millis(10));
        }
        // SIGKILL: no destructor, no flush, no close.
        child.kill().unwrap();
        child.wait().unwrap();
        let acks = reader.join().unwrap();
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
}
