//! Adversarial tests: damage to files and at places the other suites do not touch, recovery
//! run twice, appends after a repair, readers blocked at close, reads at segment boundaries,
//! batches at their size limit. Every test checks that what comes back is exactly what was
//! acknowledged, or a typed error.

mod common;
use aof_engine::{Config, Durability, Error, OwnedRecord, RecoveryReport, SegmentState};
use common::*;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn len_of(i: u64) -> usize {
    // Sizes from 1 byte to ~9 KiB, so frames straddle block boundaries in every way.
    1 + ((i * 7919) % 9000) as usize
}

fn rec(i: u64) -> Vec<u8> {
    payload(3, i, len_of(i))
}

/// Raw sealed segments, no zero-filled spares (their early roll would make the first segment
/// small), one shard.
fn raw_cfg(dir: &Path) -> Config {
    let mut c = raw_config(dir, 1);
    c.zero_fill_spares_bytes_per_sec = None;
    c
}

fn tier_cfg(dir: &Path) -> Config {
    let mut c = small_config(dir, 1);
    c.zero_fill_spares_bytes_per_sec = None;
    c.tier1_frame_bytes = 8192;
    c
}

fn with_base(p: &Path, base: u64) -> PathBuf {
    let name = p.file_name().unwrap().to_str().unwrap();
    let ext = p.extension().unwrap().to_str().unwrap();
    p.with_file_name(format!("{}{base:020}.{ext}", &name[..17]))
}

/// Appends records `rec(i)` to log "c" (mixed durability) until `sealed` segments are sealed
/// (and recompressed when the config says so), then closes. Returns the record count and the
/// segment list as the engine saw it (sealed ones first, the active one last).
fn build(cfg: &Config, sealed: usize) -> (u64, Vec<aof_engine::SegmentInfo>) {
    let e = start(cfg.clone());
    let h = e.handle();
    h.create_log("c").wait_timeout(T).unwrap();
    let mut i = 0u64;
    loop {
        let d = ALL[(i % 3) as usize];
        assert_eq!(h.append("c", rec(i), d).wait_timeout(T).unwrap(), i);
        i += 1;
        if i.is_multiple_of(8) {
            let segs = h.segments("c").wait_timeout(T).unwrap();
            let done = segs
                .iter()
                .filter(|s| matches!(s.state, SegmentState::Sealed | SegmentState::Tier1))
                .count();
            if done >= sealed {
                break;
            }
        }
    }
    h.sync("c").wait_timeout(T).unwrap();
    h.tiering_idle(0).wait_timeout(T).unwrap();
    let segs = h.segments("c").wait_timeout(T).unwrap();
    e.close().unwrap();
    (i, segs)
}

/// Every offset below `n` reads back exactly (point read), or, if it lies in one of `lost`,
/// fails with `Corruption`. A scan from 0 returns exactly the records before the first loss.
fn check_log(h: &aof_engine::Handle, n: u64, lost: &[(u64, u64)], what: &str) {
    let is_lost = |o: u64| lost.iter().any(|&(a, b)| (a..b).contains(&o));
    for o in 0..n {
        match h.read("c", o).wait_timeout(T) {
            Ok(r) => {
                assert!(!is_lost(o), "{what}: offset {o} is reported lost but was returned");
                assert_eq!(r.offset, o, "{what}");
                assert_eq!(r.payload, rec(o), "{what}: record {o} differs");
            }
            Err(Error::Corruption { .. }) if is_lost(o) => {}
            Err(e) => panic!("{what}: read {o}: {e}"),
        }
    }
    let first_lost = lost.iter().map(|l| l.0).min().unwrap_or(n).min(n);
    if first_lost > 0 {
        let all = h.read_from("c", 0, usize::MAX, usize::MAX).wait_timeout(T).unwrap();
        assert_eq!(all.len() as u64, first_lost, "{what}: scan length");
        for r in all {
            assert_eq!(r.payload, rec(r.offset), "{what}: scanned {}", r.offset);
        }
    }
}

/// Number of whole frames in a segment file's bytes from 4096 up to `cut`.
fn frames_before(bytes: &[u8], cut: usize) -> u64 {
    let mut p = 4096usize;
    let mut n = 0;
    loop {
        if p + 40 > bytes.len() {
            return n;
        }
        let len = u32::from_le_bytes(bytes[p + 4..p + 8].try_into().unwrap()) as usize;
        let magic = u32::from_le_bytes(bytes[p + 36..p + 40].try_into().unwrap());
        if magic != 0xA0F1_F7A3 {
            return n;
        }
        let end = p + ((40 + len + 7) & !7);
        if end > cut {
            return n;
        }
        n += 1;
        p = end;
    }
}

fn report(e: &Eng) -> RecoveryReport {
    e.recovery_reports()
        .iter()
        .find(|r| r.log == "c")
        .expect("log c reported")
        .clone()
}

fn path_of(s: &aof_engine::SegmentInfo) -> PathBuf {
    s.path.clone().expect("local segment")
}

// ---------------------------------------------------------------------------------------------
// Raw sealed segments: truncated, deleted, swapped, duplicated.
// ---------------------------------------------------------------------------------------------

/// A sealed segment in the middle of the log cut short mid-file (not at a block boundary):
/// its whole frames stay readable, the rest up to the next segment is reported lost and reads
/// there fail with `Corruption`; later segments are untouched; appends go on; a second and a
/// third open report exactly the same and keep the appended records.
#[test]
fn a_middle_sealed_segment_cut_short_keeps_its_prefix_at_every_open() {
    let dir = tempdir("chaos-midcut");
    let cfg = raw_cfg(&dir);
    let (n, segs) = build(&cfg, 3);
    let victim = path_of(&segs[1]);
    let bytes = std::fs::read(&victim).unwrap();
    let cut = bytes.len() / 2 + 123;
    std::fs::write(&victim, &bytes[..cut]).unwrap();
    let kept = frames_before(&bytes, cut);
    let lost = vec![(segs[1].base_offset + kept, segs[2].base_offset)];
    assert!(kept > 0 && lost[0].0 < lost[0].1);

    let mut extra = Vec::new();
    for round in 0..3 {
        let e = start(cfg.clone());
        let r = report(&e);
        assert_eq!(r.lost_ranges, lost, "round {round}: {r:?}");
        assert_eq!(r.next_offset, n + extra.len() as u64, "round {round}: {r:?}");
        let h = e.handle();
        check_log(&h, n, &lost, &format!("round {round}"));
        for (k, p) in extra.iter().enumerate() {
            assert_eq!(&h.read("c", n + k as u64).wait_timeout(T).unwrap().payload, p);
        }
        let p = format!("after repair {round}").into_bytes();
        assert_eq!(
            h.append("c", p.clone(), Durability::Synced).wait_timeout(T).unwrap(),
            n + extra.len() as u64
        );
        extra.push(p);
        e.close().unwrap();
    }
}

/// A middle raw segment file deleted: the manifest knows it, so it is reported missing
/// (state "sealed") and its range lost, at every open, and appends go on.
#[test]
fn a_deleted_middle_segment_is_reported_missing_at_every_open() {
    let dir = tempdir("chaos-middel");
    let cfg = raw_cfg(&dir);
    let (n, segs) = build(&cfg, 3);
    std::fs::remove_file(path_of(&segs[1])).unwrap();
    let lost = vec![(segs[1].base_offset, segs[2].base_offset)];
    for round in 0..2u64 {
        let e = start(cfg.clone());
        let r = report(&e);
        assert_eq!(r.lost_ranges, lost, "round {round}: {r:?}");
        assert_eq!(r.missing.len(), 1, "{r:?}");
        assert_eq!(r.missing[0].base, segs[1].base_offset);
        assert_eq!(r.missing[0].state, "sealed");
        let h = e.handle();
        check_log(&h, n, &lost, &format!("round {round}"));
        assert_eq!(
            h.append("c", b"x".to_vec(), Durability::Synced)
                .wait_timeout(T)
                .unwrap(),
            n + round
        );
        e.close().unwrap();
    }
}

/// Two sealed segment files swapped: neither is trusted (their trailers name other bases and
/// their frames other offsets), nothing wrong is returned, and recovery changes neither file:
/// swapped back, every record reads back.
#[test]
fn swapped_sealed_segments_return_nothing_wrong_and_are_left_intact() {
    let dir = tempdir("chaos-swap");
    let cfg = raw_cfg(&dir);
    let (n, segs) = build(&cfg, 3);
    let (a, b) = (path_of(&segs[0]), path_of(&segs[1]));
    let (ba, bb) = (std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    std::fs::write(&a, &bb).unwrap();
    std::fs::write(&b, &ba).unwrap();
    let lost = vec![(segs[0].base_offset, segs[2].base_offset)];
    for round in 0..2 {
        let e = start(cfg.clone());
        let r = report(&e);
        let h = e.handle();
        // Whatever is reported, nothing of the swapped range may come back as a record.
        for o in 0..segs[2].base_offset {
            let got = h.read("c", o).wait_timeout(T);
            assert!(
                matches!(got, Err(Error::Corruption { .. })),
                "round {round}: {o}: {got:?} {r:?}"
            );
        }
        check_log(&h, n, &lost, "swapped");
        e.close().unwrap();
    }
    assert_eq!(std::fs::read(&a).unwrap(), bb, "recovery changed a damaged file");
    assert_eq!(std::fs::read(&b).unwrap(), ba, "recovery changed a damaged file");
    std::fs::write(&a, &ba).unwrap();
    std::fs::write(&b, &bb).unwrap();
    let e = start(cfg.clone());
    let r = report(&e);
    assert!(r.lost_ranges.is_empty(), "{r:?}");
    check_log(&e.handle(), n, &[], "swapped back");
    e.close().unwrap();
}

/// A sealed segment copied under a base inside the next segment's range: the overlap stops
/// the open with `Corruption` naming a file, and the open changes nothing; removing the copy
/// restores the log.
#[test]
fn a_segment_duplicated_under_an_overlapping_base_is_refused() {
    let dir = tempdir("chaos-dup");
    let cfg = raw_cfg(&dir);
    let (n, segs) = build(&cfg, 3);
    let copy = with_base(&path_of(&segs[0]), segs[1].base_offset + 1);
    std::fs::copy(path_of(&segs[0]), &copy).unwrap();
    let before: Vec<(PathBuf, Vec<u8>)> = walk(&dir)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .map(|p| {
            let b = std::fs::read(&p).unwrap();
            (p, b)
        })
        .collect();
    for _ in 0..2 {
        match aof_engine::Engine::open(cfg.clone()) {
            Err(Error::Corruption { path, .. }) => assert!(path.starts_with(&dir), "{path:?}"),
            Err(e) => panic!("expected Corruption, got {e}"),
            Ok(e) => {
                let r = e.recovery_reports().to_vec();
                let _ = e.close();
                panic!("opened with overlapping segments: {r:?}");
            }
        }
    }
    for (p, b) in &before {
        assert_eq!(&std::fs::read(p).unwrap(), b, "a refused open changed {p:?}");
    }
    std::fs::remove_file(&copy).unwrap();
    let e = start(cfg);
    assert!(report(&e).lost_ranges.is_empty());
    check_log(&e.handle(), n, &[], "copy removed");
    e.close().unwrap();
}

/// A whole block zeroed in the middle of the active segment: the records wholly before it
/// survive, the cut is reported, appends resume right after them, and the next open finds
/// exactly those records and the new ones with nothing more cut.
#[test]
fn a_zeroed_block_in_the_middle_of_the_active_segment() {
    let dir = tempdir("chaos-zeroblock");
    let cfg = raw_cfg(&dir);
    let (n0, _) = build(&cfg, 1);
    // Fill the active segment well past a few blocks, without a roll.
    let e = start(cfg.clone());
    let h = e.handle();
    let mut n = n0;
    loop {
        let segs = h.segments("c").wait_timeout(T).unwrap();
        let a = segs.last().unwrap();
        let bytes: usize = (a.base_offset..n).map(|o| len_of(o) + 48).sum();
        if bytes > 40_000 {
            break;
        }
        h.append("c", rec(n), ALL[(n % 3) as usize]).wait_timeout(T).unwrap();
        n += 1;
    }
    let segs = h.segments("c").wait_timeout(T).unwrap();
    assert_eq!(segs.len(), 2, "no roll: {segs:?}");
    e.close().unwrap();
    let active = segs.last().unwrap();
    assert_eq!(active.state, SegmentState::Active);
    let path = path_of(active);
    let mut bytes = std::fs::read(&path).unwrap();
    let data_end = {
        let mut p = 4096usize;
        for _ in active.base_offset..n {
            let len = u32::from_le_bytes(bytes[p + 4..p + 8].try_into().unwrap()) as usize;
            p += (40 + len + 7) & !7;
        }
        p
    };
    assert!(data_end > 4 * 4096, "the active segment holds several blocks");
    let blk = (data_end / 4096 / 2) * 4096;
    bytes[blk..blk + 4096].fill(0);
    std::fs::write(&path, &bytes).unwrap();
    let kept = active.base_offset + frames_before(&bytes, blk);
    let e = start(cfg.clone());
    let r = report(&e);
    assert_eq!(r.next_offset, kept, "{r:?}");
    assert!(r.truncated_bytes > 0, "{r:?}");
    let h = e.handle();
    for o in 0..kept {
        assert_eq!(h.read("c", o).wait_timeout(T).unwrap().payload, rec(o));
    }
    assert!(matches!(
        h.read("c", kept).wait_timeout(T),
        Err(Error::OffsetOutOfRange { .. })
    ));
    // A few new records, fewer bytes than were cut: nothing stale may reappear behind them.
    for k in 0..3 {
        assert_eq!(
            h.append("c", vec![0xEE; 10 + k], Durability::Written)
                .wait_timeout(T)
                .unwrap(),
            kept + k as u64
        );
    }
    e.close().unwrap();
    for round in 0..2 {
        let e = start(cfg.clone());
        let r = report(&e);
        assert_eq!(r.next_offset, kept + 3, "round {round}: {r:?}");
        assert_eq!(r.truncated_bytes, 0, "round {round}: {r:?}");
        let h = e.handle();
        let all = h.read_from("c", 0, usize::MAX, usize::MAX).wait_timeout(T).unwrap();
        assert_eq!(all.len() as u64, kept + 3);
        for r in &all[..kept as usize] {
            assert_eq!(r.payload, rec(r.offset));
        }
        for (k, r) in all[kept as usize..].iter().enumerate() {
            assert_eq!(r.payload, vec![0xEE; 10 + k]);
        }
        e.close().unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// Tier1 files.
// ---------------------------------------------------------------------------------------------

fn t1_damage_cases(b: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
    let len = b.len();
    let mut v = Vec::new();
    let mut d = b.to_vec();
    d[len - 64..].fill(0);
    v.push(("trailer zeroed", d));
    // The trailer's index_pos (bytes 16..24): flip a byte of the first index entry.
    let index_pos = u64::from_le_bytes(b[len - 64 + 16..len - 64 + 24].try_into().unwrap()) as usize;
    let mut d = b.to_vec();
    d[index_pos + 5] ^= 0x01;
    v.push(("index byte flipped", d));
    v.push(("cut mid-file", b[..len / 2 + 100].to_vec()));
    v.push(("cut at a block", b[..(len / 2) & !4095].to_vec()));
    let mut d = b.to_vec();
    d[30] ^= 0x80;
    v.push(("header byte flipped", d));
    v
}

/// A Tier1 file (the only copy: its raw segment is gone) damaged in its trailer, index or
/// header, or cut short: reported missing (state "tier1") with its range lost, reads there
/// fail with `Corruption`, the rest of the log is intact, appends go on, and the second open
/// says the same.
#[test]
fn damaged_tier1_footer_index_or_header_is_reported_at_every_open() {
    let src = tempdir("chaos-t1-src");
    let (n, segs) = build(&tier_cfg(&src), 3);
    assert!(segs[..3].iter().all(|s| s.state == SegmentState::Tier1), "{segs:?}");
    let rel = path_of(&segs[1]).strip_prefix(&src).unwrap().to_path_buf();
    let pristine = std::fs::read(path_of(&segs[1])).unwrap();
    let lost = vec![(segs[1].base_offset, segs[2].base_offset)];
    for (k, (what, bytes)) in t1_damage_cases(&pristine).into_iter().enumerate() {
        let d = tempdir(&format!("chaos-t1-{k}"));
        copy_tree(&src, &d);
        std::fs::write(d.join(&rel), &bytes).unwrap();
        for round in 0..2u64 {
            let e = start(tier_cfg(&d));
            let r = report(&e);
            assert_eq!(r.lost_ranges, lost, "{what}, round {round}: {r:?}");
            assert_eq!(r.missing.len(), 1, "{what}: {r:?}");
            assert_eq!(r.missing[0].state, "tier1", "{what}: {r:?}");
            let h = e.handle();
            check_log(&h, n, &lost, what);
            assert_eq!(
                h.append("c", b"more".to_vec(), Durability::Synced)
                    .wait_timeout(T)
                    .unwrap(),
                n + round,
                "{what}"
            );
            e.close().unwrap();
        }
    }
}

/// A damaged Tier1 file while the raw segment is still there (a crash before the raw file's
/// removal, then media damage): the raw file is the copy again, nothing is lost, it is
/// recompressed, and the next open reads it from a good Tier1 file.
#[test]
fn damaged_tier1_file_falls_back_to_the_raw_segment_left_beside_it() {
    let dir = tempdir("chaos-t1-fallback");
    let raw = raw_cfg(&dir);
    let (n, segs) = build(&raw, 3);
    let seg1 = path_of(&segs[1]);
    let raw_bytes = std::fs::read(&seg1).unwrap();
    // Recompress everything.
    let e = start(tier_cfg(&dir));
    e.handle().tiering_idle(0).wait_timeout(T).unwrap();
    let segs = e.handle().segments("c").wait_timeout(T).unwrap();
    assert_eq!(segs[1].state, SegmentState::Tier1, "{segs:?}");
    e.close().unwrap();
    let t1 = path_of(&segs[1]);
    let mut b = std::fs::read(&t1).unwrap();
    let l = b.len();
    b[l - 10] ^= 0x55;
    std::fs::write(&t1, &b).unwrap();
    std::fs::write(&seg1, &raw_bytes).unwrap();
    let e = start(tier_cfg(&dir));
    let r = report(&e);
    assert!(r.lost_ranges.is_empty(), "{r:?}");
    let h = e.handle();
    check_log(&h, n, &[], "raw fallback");
    h.tiering_idle(0).wait_timeout(T).unwrap();
    check_log(&h, n, &[], "raw fallback, recompressed");
    e.close().unwrap();
    let e = start(tier_cfg(&dir));
    let r = report(&e);
    assert!(r.lost_ranges.is_empty() && r.missing.is_empty(), "{r:?}");
    let h = e.handle();
    assert!(h.segments("c").wait_timeout(T).unwrap()[..3]
        .iter()
        .all(|s| s.state == SegmentState::Tier1));
    check_log(&h, n, &[], "second open");
    e.close().unwrap();
}

/// Two Tier1 files swapped: neither verifies under the other's name, nothing wrong is
/// returned, the files are kept, and swapped back they serve every record again.
#[test]
fn swapped_tier1_files_return_nothing_wrong_and_survive() {
    let dir = tempdir("chaos-t1-swap");
    let (n, segs) = build(&tier_cfg(&dir), 3);
    let (a, b) = (path_of(&segs[0]), path_of(&segs[1]));
    let (ba, bb) = (std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    std::fs::write(&a, &bb).unwrap();
    std::fs::write(&b, &ba).unwrap();
    let lost = vec![(segs[0].base_offset, segs[2].base_offset)];
    for _ in 0..2 {
        let e = start(tier_cfg(&dir));
        let r = report(&e);
        assert_eq!(r.missing.len(), 2, "{r:?}");
        check_log(&e.handle(), n, &lost, "t1 swapped");
        e.close().unwrap();
    }
    std::fs::write(&a, &ba).unwrap();
    std::fs::write(&b, &bb).unwrap();
    let e = start(tier_cfg(&dir));
    let r = report(&e);
    assert!(r.lost_ranges.is_empty() && r.missing.is_empty(), "{r:?}");
    check_log(&e.handle(), n, &[], "t1 swapped back");
    e.close().unwrap();
}

// Bug pinned (fixed), as it was: records 0..b1 of a damaged first Tier1 file (no manifest entry) are not reported
// lost: `lost_ranges` is empty and `read(0)` says `OffsetOutOfRange` (first = b1), as if
// retention had removed them. recovery.rs `open_log` only reports gaps between segments,
// never the gap from the log's watermark (`deleted_below`) up to its first segment.
/// The manifest gone and the first Tier1 file (base 0) damaged: its records cannot be served,
/// and that must be said (a lost range, `Corruption` on read), not turned into a log that
/// silently starts later (`OffsetOutOfRange`, as after retention).
#[test]
fn a_damaged_first_tier1_file_without_manifest_is_reported_lost() {
    let dir = tempdir("chaos-t1-first");
    let (n, segs) = build(&tier_cfg(&dir), 3);
    assert_eq!(segs[0].base_offset, 0);
    let t1 = path_of(&segs[0]);
    let mut b = std::fs::read(&t1).unwrap();
    let l = b.len();
    b[l - 10] ^= 0x55;
    std::fs::write(&t1, &b).unwrap();
    for p in walk(&dir) {
        let name = p.file_name().unwrap().to_str().unwrap().to_owned();
        if name.starts_with("manifest.") {
            std::fs::remove_file(p).unwrap();
        }
    }
    let lost = vec![(0, segs[1].base_offset)];
    let e = start(tier_cfg(&dir));
    let r = report(&e);
    let h = e.handle();
    let got = h.read("c", 0).wait_timeout(T);
    assert!(
        matches!(got, Err(Error::Corruption { .. })),
        "record 0 is lost to damage; got {got:?}, report {r:?}"
    );
    assert_eq!(r.lost_ranges, lost, "{r:?}");
    check_log(&h, n, &lost, "first t1 damaged");
    e.close().unwrap();
}

fn copy_tree(from: &Path, to: &Path) {
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&dst).unwrap();
            copy_tree(&e.path(), &dst);
        } else if e.file_name() != "LOCK" {
            std::fs::copy(e.path(), &dst).unwrap();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Readers blocked at close.
// ---------------------------------------------------------------------------------------------

/// A `Follow` on another thread and a `Tail` on the shard, both waiting past the end of the
/// log, and a `wait_for`: closing the engine makes each return an error instead of hanging.
#[test]
fn readers_waiting_past_the_end_return_when_the_engine_closes() {
    let dir = tempdir("chaos-close-readers");
    let e = start(small_config(&dir, 1));
    let h = e.handle();
    h.create_log("c").wait_timeout(T).unwrap();
    for i in 0..5 {
        h.append("c", rec(i), Durability::Memory).wait_timeout(T).unwrap();
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let mut f = h.follow("c", 0);
    let tx1 = tx.clone();
    std::thread::spawn(move || {
        let mut got = Vec::new();
        let end = loop {
            match f.next_record() {
                Ok(r) => got.push(r.offset),
                Err(e) => break e,
            }
        };
        let _ = tx1.send(("follow", got, format!("{end:?}")));
    });
    let tail = h.spawn_on(0, |s| async move {
        let log = s.log("c")?;
        let mut t = log.tail(0);
        let mut got = Vec::new();
        loop {
            match t.next().await {
                Ok(r) => got.push(r.offset),
                Err(e) => return Ok((got, format!("{e:?}"))),
            }
        }
    });
    let waiter = h.wait_for("c", 1000);
    // Let both readers reach the end of the log (the follower proves it by its 5 records).
    h.append("c", rec(5), Durability::Synced).wait_timeout(T).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    e.close().unwrap();
    let (who, got, end) = rx.recv_timeout(T).expect("Follow returns after close");
    assert_eq!(who, "follow");
    assert_eq!(got, (0..6).collect::<Vec<_>>(), "follow: {end}");
    assert!(end.contains("ShuttingDown"), "follow ended with {end}");
    let r = tail.wait_timeout(T);
    match r {
        Ok((got, end)) => {
            assert_eq!(got, (0..6).collect::<Vec<_>>(), "tail: {end}");
            assert!(end.contains("ShuttingDown"), "tail ended with {end}");
        }
        Err(Error::ShuttingDown) => {}
        Err(e) => panic!("tail: {e}"),
    }
    assert!(matches!(waiter.wait_timeout(T), Err(Error::ShuttingDown)));
}

// ---------------------------------------------------------------------------------------------
// Reads at segment boundaries, across tiers, and batches at their size limit.
// ---------------------------------------------------------------------------------------------

/// Point reads and short scans starting at, just before and just after every segment boundary
/// and at the last offset, with Tier1, raw and active segments, before and after a restart.
#[test]
fn reads_at_every_segment_boundary_and_the_last_offset() {
    let dir = tempdir("chaos-bounds");
    let cfg = tier_cfg(&dir);
    let (n, _) = build(&cfg, 3);
    // One more raw sealed segment next to the Tier1 ones.
    let mut raw = cfg.clone();
    raw.tier1_compress = false;
    let e = start(raw);
    let h = e.handle();
    h.roll("c").wait_timeout(T).unwrap();
    let m = n + 10;
    for i in n..m {
        h.append("c", rec(i), Durability::Written).wait_timeout(T).unwrap();
    }
    h.roll("c").wait_timeout(T).unwrap();
    h.append("c", rec(m), Durability::Synced).wait_timeout(T).unwrap();
    let n = m + 1;
    e.close().unwrap();
    for round in 0..2 {
        let e = start(if round == 0 { cfg.clone() } else { raw_cfg(&dir) });
        let h = e.handle();
        let segs = h.segments("c").wait_timeout(T).unwrap();
        let states: Vec<_> = segs.iter().map(|s| s.state).collect();
        if round == 0 {
            assert!(states.contains(&SegmentState::Tier1), "{states:?}");
        }
        let mut points: Vec<u64> = vec![0, n - 1];
        for s in &segs {
            for d in [-1i64, 0, 1] {
                let o = s.base_offset as i64 + d;
                if o >= 0 && (o as u64) < n {
                    points.push(o as u64);
                }
            }
            if s.next_offset > 0 {
                points.push(s.next_offset - 1);
            }
        }
        for &o in &points {
            let r = h.read("c", o).wait_timeout(T).unwrap();
            assert_eq!((r.offset, &r.payload), (o, &rec(o)), "round {round}");
            for k in [1usize, 2, 3, 1000] {
                let v = h.read_from("c", o, k, usize::MAX).wait_timeout(T).unwrap();
                assert_eq!(v.len(), k.min((n - o) as usize), "round {round}: from {o}, {k}");
                for (j, r) in v.iter().enumerate() {
                    assert_eq!(r.offset, o + j as u64);
                    assert_eq!(r.payload, rec(r.offset));
                }
            }
            // max_bytes smaller than the record: still exactly one record.
            let v = h.read_from("c", o, 10, 1).wait_timeout(T).unwrap();
            assert_eq!(v.len(), 1);
            assert_eq!(v[0].payload, rec(o));
        }
        for o in [n, n + 1, u64::MAX] {
            assert!(matches!(
                h.read("c", o).wait_timeout(T),
                Err(Error::OffsetOutOfRange { .. })
            ));
        }
        e.close().unwrap();
    }
}

/// A batch exactly at the size limit (frame bytes = segment − header block) is accepted into
/// a segment of its own, one 8 bytes larger is refused with `BatchTooLarge`, and batches of
/// many sizes with mixed durability around it read back exactly, also after a drop without
/// close and a restart.
#[test]
fn batches_at_the_size_limit_and_of_many_sizes_across_rolls() {
    use aof_engine::format::frame::frame_len;
    let dir = tempdir("chaos-batches");
    let cfg = raw_cfg(&dir);
    let limit = (cfg.segment_size_bytes - 4096).min(cfg.shard_memory_budget_bytes / 2) as usize;
    let mut expect: Vec<Vec<u8>> = Vec::new();
    let e = start(cfg.clone());
    let h = e.handle();
    h.create_log("c").wait_timeout(T).unwrap();
    // Records of 64 KiB - 40 frame to exactly 64 KiB; fill the limit with them plus one.
    let big = cfg.max_record_bytes as usize - 40;
    assert_eq!(frame_len(big), 64 << 10);
    let whole = limit / frame_len(big);
    let rest = limit - whole * frame_len(big);
    assert!(rest >= 48, "{limit} {rest}");
    let make = |extra: usize, seed: u64| {
        let mut v: Vec<Vec<u8>> = (0..whole as u64).map(|k| payload(9, seed + k, big)).collect();
        v.push(payload(9, seed + 99, rest - 40 + extra));
        v
    };
    let mut i = 0u64;
    let mut rng = 0x1234_5678u64;
    for step in 0..60u64 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let d = ALL[(rng % 3) as usize];
        if step % 20 == 7 {
            // Over the limit by one 8-byte word: refused, nothing changes.
            let recs = make(8, i);
            assert_eq!(recs.iter().map(|r| frame_len(r.len())).sum::<usize>(), limit + 8);
            let err = h
                .append_batch("c", recs.into_iter().map(OwnedRecord::new).collect(), d)
                .wait_timeout(T)
                .unwrap_err();
            assert!(matches!(err, Error::BatchTooLarge { .. }), "{err}");
            // Exactly at the limit: accepted.
            let recs = make(0, i);
            assert_eq!(recs.iter().map(|r| frame_len(r.len())).sum::<usize>(), limit);
            let r = h
                .append_batch("c", recs.iter().cloned().map(OwnedRecord::new).collect(), d)
                .wait_timeout(T)
                .unwrap();
            assert_eq!(r, expect.len() as u64..(expect.len() + recs.len()) as u64);
            expect.extend(recs);
            continue;
        }
        let count = 1 + (rng >> 8) % 40;
        let recs: Vec<Vec<u8>> = (0..count)
            .map(|k| payload(9, 10_000 + i + k, ((rng >> 16) as usize + k as usize * 997) % 7000))
            .collect();
        let r = h
            .append_batch("c", recs.iter().cloned().map(OwnedRecord::new).collect(), d)
            .wait_timeout(T)
            .unwrap();
        assert_eq!(r, expect.len() as u64..(expect.len() + recs.len()) as u64);
        expect.extend(recs);
        i += 1000;
    }
    h.sync("c").wait_timeout(T).unwrap();
    let verify = |h: &aof_engine::Handle, what: &str| {
        let all = h.read_from("c", 0, usize::MAX, usize::MAX).wait_timeout(T).unwrap();
        assert_eq!(all.len(), expect.len(), "{what}");
        for r in all {
            assert_eq!(r.payload, expect[r.offset as usize], "{what}: record {}", r.offset);
        }
    };
    verify(&h, "live");
    drop(e);
    let e = start(cfg.clone());
    let r = report(&e);
    assert!(r.lost_ranges.is_empty() && r.truncated_bytes == 0, "{r:?}");
    verify(&e.handle(), "after drop and restart");
    e.close().unwrap();
}

// ---------------------------------------------------------------------------------------------
// Offsets must never be handed out twice.
// ---------------------------------------------------------------------------------------------

/// Every acknowledged offset below `n` reads back exactly or fails with `Corruption`, and the
/// next append gets an offset at or past `n`: an offset once acknowledged is never given to
/// another record.
fn assert_no_offset_reused(h: &aof_engine::Handle, n: u64, r: &RecoveryReport, what: &str) {
    for o in 0..n {
        match h.read("c", o).wait_timeout(T) {
            Ok(got) => assert_eq!(got.payload, rec(o), "{what}: record {o} differs"),
            Err(Error::Corruption { .. }) => {}
            Err(e) => panic!("{what}: acknowledged record {o}: {e}; report {r:?}"),
        }
    }
    let o = h
        .append("c", b"new record".to_vec(), Durability::Synced)
        .wait_timeout(T)
        .unwrap();
    assert!(
        o >= n,
        "{what}: new record got offset {o}, below {n} acknowledged before; report {r:?}"
    );
}

// Bug pinned (fixed), as it was: recovery gives acknowledged offsets to new records. The last sealed segment's
// trailer and one frame are damaged, and the active segment is a header-less file (the state a
// crash leaves right after a roll's rename, before the new segment's first write; recovery rule
// 9). The scan keeps the damaged segment's prefix up to the bad frame (k records), and the fresh
// segment starts right there, although the manifest's `Sealed` record says the segment held
// offsets up to its next_offset: offsets base+k.. are not in `lost_ranges`, read as
// `OffsetOutOfRange`, and the next append reuses them. recovery.rs `open_log`: the fresh
// segment's base is `sealed.last().next_offset` (the scan's), never the manifest entry's
// `next_offset`, and the scan branch for a manifest-known segment does not report
// `[scan.next_offset, entry.next_offset)` lost.
#[test]
fn a_damaged_last_sealed_segment_before_an_empty_new_segment_keeps_its_offsets() {
    let dir = tempdir("chaos-lastsealed");
    let cfg = raw_cfg(&dir);
    let (_, segs) = build(&cfg, 3);
    // Roll, so the active segment is empty; a crash then leaves it header-less.
    let e = start(cfg.clone());
    let h = e.handle();
    h.roll("c").wait_timeout(T).unwrap();
    h.tiering_idle(0).wait_timeout(T).unwrap();
    let segs2 = h.segments("c").wait_timeout(T).unwrap();
    e.close().unwrap();
    let last_sealed = &segs2[segs2.len() - 2];
    assert_eq!(last_sealed.state, SegmentState::Sealed, "{segs2:?}");
    assert_eq!(last_sealed.base_offset, segs.last().unwrap().base_offset);
    let n = last_sealed.next_offset;
    let active = path_of(segs2.last().unwrap());
    let len = std::fs::metadata(&active).unwrap().len() as usize;
    std::fs::write(&active, vec![0u8; len]).unwrap();
    // Media damage in the last sealed segment: its trailer and one frame in its middle.
    let p = path_of(last_sealed);
    let mut b = std::fs::read(&p).unwrap();
    let l = b.len();
    b[l - 50] ^= 0xff;
    let k = (n - last_sealed.base_offset) / 2;
    let mut pos = 4096usize;
    for _ in 0..k {
        let plen = u32::from_le_bytes(b[pos + 4..pos + 8].try_into().unwrap()) as usize;
        pos += (40 + plen + 7) & !7;
    }
    b[pos + 45] ^= 0x01;
    std::fs::write(&p, &b).unwrap();
    let e = start(cfg.clone());
    let r = report(&e);
    assert_no_offset_reused(&e.handle(), n, &r, "damaged last sealed segment");
    assert!(
        r.lost_ranges.contains(&(last_sealed.base_offset + k, n)),
        "the damaged records are not reported lost: {r:?}"
    );
    e.close().unwrap();
}

/// The active segment's file and the last sealed segment's file swapped (by hand). The
/// active-named file then holds a sealed segment of an earlier base, whose frames recovery
/// once took for "an earlier life" of a reused file: it cut the file to its header block
/// (destroying the only copy of that segment's records) and gave the old active segment's
/// acknowledged offsets to new records. Now the open is refused, naming the file, and no file
/// is changed; swapped back, every record reads again.
#[test]
fn swapping_the_active_segment_with_the_last_sealed_one_is_refused_and_changes_nothing() {
    let dir = tempdir("chaos-swap-active");
    let cfg = raw_cfg(&dir);
    let (n, segs) = build(&cfg, 3);
    let (a, b) = (path_of(&segs[2]), path_of(segs.last().unwrap()));
    assert_eq!(segs.last().unwrap().state, SegmentState::Active);
    let (ba, bb) = (std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    std::fs::write(&a, &bb).unwrap();
    std::fs::write(&b, &ba).unwrap();
    match aof_engine::Engine::open(cfg.clone()) {
        Err(Error::Corruption { path, .. }) => assert_eq!(path, b),
        Err(e) => panic!("unexpected error {e}"),
        Ok(e) => {
            let e = Eng(Some(e));
            let r = report(&e);
            assert_no_offset_reused(&e.handle(), n, &r, "active swapped with last sealed");
            panic!("opened over swapped files: {r:?}");
        }
    }
    assert_eq!(std::fs::read(&a).unwrap(), bb, "the sealed-named file was changed");
    assert_eq!(std::fs::read(&b).unwrap(), ba, "the active-named file was changed");
    std::fs::write(&a, &ba).unwrap();
    std::fs::write(&b, &bb).unwrap();
    let e = start(cfg.clone());
    let r = report(&e);
    assert_no_offset_reused(&e.handle(), n, &r, "swapped back");
    for o in 0..n {
        assert_eq!(e.handle().read("c", o).wait_timeout(T).unwrap().payload, rec(o));
    }
    e.close().unwrap();
}

/// A damaged header of `manifest.log` (written once, atomically: only media damage does
/// this). Its records are the only place that says a segment was evicted to Tier2 and under
/// which object; they must not be dropped silently (a damaged snapshot stops the open).
// Bug pinned (fixed), as it was: manifest.rs `Manifest::replay` treats an unusable log header as "starting a new
// log": every record in it is discarded and the file replaced, so Tier2-only segments are
// forgotten (their records reported lost instead of `NotLocal`), as are retention settings
// and pending Tier2 deletes.
#[test]
fn a_damaged_manifest_log_header_does_not_forget_tier2_segments() {
    let dir = tempdir("chaos-mhdr");
    let cfg = tier_cfg(&dir);
    let (n, segs) = build(&cfg, 3);
    let e = start(cfg.clone());
    let h = e.handle();
    for s in &segs[..2] {
        let obj = aof_engine::ObjectRef {
            key: format!("test/{:020}", s.base_offset),
            size: 1,
            crc32c: 0,
            etag: "\"t\"".into(),
        };
        h.mark_uploaded("c", s.base_offset, obj).wait_timeout(T).unwrap();
    }
    e.close().unwrap();
    let mut small = cfg.clone();
    small.tier1_budget_bytes = Some(cfg.segment_size_bytes);
    let e = start(small);
    let h = e.handle();
    h.housekeeping(0).wait_timeout(T).unwrap();
    h.tiering_idle(0).wait_timeout(T).unwrap();
    let evicted: Vec<(u64, u64)> = h
        .segments("c")
        .wait_timeout(T)
        .unwrap()
        .iter()
        .filter(|s| s.state == SegmentState::Tier2Only)
        .map(|s| (s.base_offset, s.next_offset))
        .collect();
    assert!(!evicted.is_empty(), "nothing was evicted");
    e.close().unwrap();
    assert!(!dir.join("shard-000/manifest.snap").exists());
    let mlog = dir.join("shard-000/manifest.log");
    let mut b = std::fs::read(&mlog).unwrap();
    b[20] ^= 0x01; // generation field; the header crc no longer matches
    std::fs::write(&mlog, &b).unwrap();
    match aof_engine::Engine::open(cfg.clone()) {
        Err(Error::Corruption { path, .. }) => assert!(path.ends_with("manifest.log"), "{path:?}"),
        Err(e) => panic!("unexpected error {e}"),
        Ok(e) => {
            let e = Eng(Some(e));
            let r = report(&e);
            let h = e.handle();
            let segs = h.segments("c").wait_timeout(T).unwrap();
            for &(base, next) in &evicted {
                let got = h.read("c", base).wait_timeout(T);
                assert!(
                    matches!(got, Err(Error::NotLocal { .. })),
                    "Tier2-only segment {base}..{next} forgotten: read gave {got:?}; segments {segs:?}; report {r:?}; warnings {:?}",
                    e.warnings()
                );
            }
            check_log(&h, n, &evicted, "after manifest header damage");
            e.close().unwrap();
        }
    }
}

/// `log.meta` deleted from a log directory that holds segments (no crash leaves this: the
/// first segment is created after `log.meta`). The log's records must not silently vanish:
/// the open fails or says so, and the name cannot be created again over them.
// Bug pinned (fixed), as it was: catalog.rs `Placement::load` and shard.rs `ShardCore::recover` skip every directory
// without a `log.meta` with no note or warning; the log is `UnknownLog`, and `create_log`
// makes a second, empty log of the same name beside the old directory.
#[test]
fn a_log_directory_without_log_meta_is_not_silently_dropped() {
    let dir = tempdir("chaos-nometa");
    let cfg = raw_cfg(&dir);
    let (_, segs) = build(&cfg, 1);
    let log_dir = path_of(&segs[0]).parent().unwrap().to_path_buf();
    std::fs::remove_file(log_dir.join("log.meta")).unwrap();
    match aof_engine::Engine::open(cfg.clone()) {
        Err(e) => assert!(matches!(e, Error::Corruption { .. }), "{e}"),
        Ok(e) => {
            let e = Eng(Some(e));
            let said = e
                .warnings()
                .iter()
                .chain(e.recovery_reports().iter().flat_map(|r| r.notes.iter()))
                .any(|w| w.contains(log_dir.file_name().unwrap().to_str().unwrap()));
            let h = e.handle();
            let read = h.read("c", 0).wait_timeout(T);
            let created = h.create_log("c").wait_timeout(T);
            assert!(
                said,
                "a log directory with segments and no log.meta was dropped silently: read {read:?}, create_log {created:?}, warnings {:?}",
                e.warnings()
            );
            e.close().unwrap();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Limits and configuration changes between opens.
// ---------------------------------------------------------------------------------------------

/// Records of exactly the maximum size (one frame of exactly 64 KiB) through rolls and Tier1
/// (each makes a Tier1 frame larger than `tier1_frame_bytes`), one byte over refused; then
/// reopened with segments four times smaller than the recovered active segment's data and a
/// maximum record size far below the records on disk: everything still reads back, appends
/// roll into the smaller segments, and a third open with the first config reads it all.
#[test]
fn max_size_records_survive_tiers_and_a_reopen_with_smaller_limits() {
    let dir = tempdir("chaos-limits");
    let cfg = tier_cfg(&dir);
    let max = cfg.max_record_bytes as usize;
    let e = start(cfg.clone());
    let h = e.handle();
    h.create_log("c").wait_timeout(T).unwrap();
    let mut expect: Vec<Vec<u8>> = Vec::new();
    for i in 0..20u64 {
        let p = if i % 3 == 0 {
            payload(5, i, 17)
        } else {
            payload(5, i, max)
        };
        assert_eq!(
            h.append("c", p.clone(), ALL[(i % 3) as usize]).wait_timeout(T).unwrap(),
            i
        );
        expect.push(p);
        let err = h
            .append("c", vec![1u8; max + 1], Durability::Synced)
            .wait_timeout(T)
            .unwrap_err();
        assert!(matches!(err, Error::RecordTooLarge { .. }), "{err}");
    }
    h.tiering_idle(0).wait_timeout(T).unwrap();
    let states: Vec<_> = h
        .segments("c")
        .wait_timeout(T)
        .unwrap()
        .iter()
        .map(|s| s.state)
        .collect();
    assert!(states.contains(&SegmentState::Tier1), "{states:?}");
    // Fill the active segment past what the smaller segments will hold.
    let active_base = h.segments("c").wait_timeout(T).unwrap().last().unwrap().base_offset;
    while (active_base..expect.len() as u64).count() < 3 {
        let p = payload(5, expect.len() as u64, max);
        h.append("c", p.clone(), Durability::Written).wait_timeout(T).unwrap();
        expect.push(p);
    }
    let verify = |h: &aof_engine::Handle, expect: &[Vec<u8>], what: &str| {
        for (o, p) in expect.iter().enumerate() {
            let r = h
                .read("c", o as u64)
                .wait_timeout(T)
                .unwrap_or_else(|e| panic!("{what}: {o}: {e}"));
            assert_eq!(&r.payload, p, "{what}: record {o}");
        }
        let all = h.read_from("c", 0, usize::MAX, usize::MAX).wait_timeout(T).unwrap();
        assert_eq!(all.len(), expect.len(), "{what}");
    };
    verify(&h, &expect, "live");
    e.close().unwrap();

    let mut smaller = cfg.clone();
    smaller.segment_size_bytes = 64 << 10;
    smaller.max_record_bytes = 1 << 10;
    smaller.flush_threshold_bytes = 16 << 10;
    smaller.index_interval_bytes = 4096;
    let e = start(smaller.clone());
    let r = report(&e);
    // After a clean close nothing is cut. Bug pinned: when the active segment was a recycled
    // file, the tail of an earlier life's 64 KiB frame whose header this life overwrote lay
    // past the data, and the report counted it as cut (2 runs of 4); close now cuts the file
    // at the end of its data.
    assert!(
        r.lost_ranges.is_empty() && r.missing.is_empty() && r.truncated_bytes == 0,
        "{r:?}"
    );
    let h = e.handle();
    verify(&h, &expect, "smaller limits");
    let err = h
        .append("c", vec![1u8; 1025], Durability::Synced)
        .wait_timeout(T)
        .unwrap_err();
    assert!(matches!(err, Error::RecordTooLarge { .. }), "{err}");
    for i in 0..200u64 {
        let p = payload(6, i, 1 + (i as usize * 131) % 1024);
        assert_eq!(
            h.append("c", p.clone(), ALL[(i % 3) as usize]).wait_timeout(T).unwrap(),
            expect.len() as u64
        );
        expect.push(p);
    }
    h.tiering_idle(0).wait_timeout(T).unwrap();
    verify(&h, &expect, "smaller limits, appended");
    e.close().unwrap();
    for c in [smaller, cfg] {
        let e = start(c);
        let r = report(&e);
        assert!(r.lost_ranges.is_empty() && r.truncated_bytes == 0, "{r:?}");
        verify(&e.handle(), &expect, "reopened");
        e.close().unwrap();
    }
}

/// A log on shard 1 of 2, reopened with 3 shards and then with 2 again, with appends and a
/// damaged (cut) active segment in between: it stays where it is, its data is intact, and a
/// log created under 3 shards on shard 2 makes the 2-shard open fail with
/// `ShardCountTooSmall` and change nothing.
#[test]
fn reopen_with_other_shard_counts_after_a_torn_tail() {
    let dir = tempdir("chaos-shards");
    let mk = |shards: usize| {
        let mut c = raw_config(&dir, shards);
        c.zero_fill_spares_bytes_per_sec = None;
        c
    };
    // A name that hashes to shard 1 of 2 and a name that hashes to shard 2 of 3.
    let e = start(mk(3));
    let h3 = e.handle();
    let on2 = (0..1000)
        .map(|i| format!("z{i}"))
        .find(|n| h3.shard_of(n) == 2)
        .unwrap();
    e.close().unwrap();
    let e = start(mk(2));
    let h = e.handle();
    let name = (0..1000).map(|i| format!("l{i}")).find(|n| h.shard_of(n) == 1).unwrap();
    h.create_log(&name).wait_timeout(T).unwrap();
    let mut expect = Vec::new();
    for i in 0..30u64 {
        let p = payload(8, i, 500 + i as usize * 37);
        h.append(&name, p.clone(), ALL[(i % 3) as usize])
            .wait_timeout(T)
            .unwrap();
        expect.push(p);
    }
    e.close().unwrap();
    // Tear the tail: cut the active segment inside its last frame.
    let seg = seg_files(&dir).into_iter().last().unwrap();
    assert!(seg.to_str().unwrap().contains("shard-001"), "{seg:?}");
    let b = std::fs::read(&seg).unwrap();
    let end = frames_before(&b, b.len());
    assert_eq!(end, 30);
    let last_start = {
        let mut p = 4096usize;
        for _ in 0..29 {
            let len = u32::from_le_bytes(b[p + 4..p + 8].try_into().unwrap()) as usize;
            p += (40 + len + 7) & !7;
        }
        p
    };
    let mut d = b.clone();
    d[last_start + 50..].fill(0);
    std::fs::write(&seg, &d).unwrap();
    expect.pop();
    let e = start(mk(3));
    let h = e.handle();
    assert_eq!(h.shard_of(&name), 1);
    assert_eq!(h.offsets(&name).wait_timeout(T).unwrap().1, 29);
    for (o, p) in expect.iter().enumerate() {
        assert_eq!(&h.read(&name, o as u64).wait_timeout(T).unwrap().payload, p);
    }
    let p = b"after three".to_vec();
    assert_eq!(
        h.append(&name, p.clone(), Durability::Synced).wait_timeout(T).unwrap(),
        29
    );
    expect.push(p);
    h.create_log(&on2).wait_timeout(T).unwrap();
    h.append(&on2, b"x".to_vec(), Durability::Synced)
        .wait_timeout(T)
        .unwrap();
    e.close().unwrap();
    let files_before: Vec<(PathBuf, Vec<u8>)> = walk(&dir)
        .into_iter()
        .filter(|p| !p.ends_with("LOCK"))
        .map(|p| {
            let b = std::fs::read(&p).unwrap();
            (p, b)
        })
        .collect();
    match aof_engine::Engine::open(mk(2)) {
        Err(Error::ShardCountTooSmall { need, .. }) => assert_eq!(need, 3),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("opened with too few shards"),
    }
    let files_after: Vec<(PathBuf, Vec<u8>)> = walk(&dir)
        .into_iter()
        .filter(|p| !p.ends_with("LOCK"))
        .map(|p| {
            let b = std::fs::read(&p).unwrap();
            (p, b)
        })
        .collect();
    assert!(files_before == files_after, "a refused open changed files");
    let e = start(mk(4));
    let h = e.handle();
    for (o, p) in expect.iter().enumerate() {
        assert_eq!(&h.read(&name, o as u64).wait_timeout(T).unwrap().payload, p);
    }
    assert_eq!(h.read(&on2, 0).wait_timeout(T).unwrap().payload, b"x");
    let r = e.recovery_reports().iter().find(|r| r.log == name).unwrap().clone();
    assert!(r.truncated_bytes == 0 && r.lost_ranges.is_empty(), "{r:?}");
    e.close().unwrap();
}

/// Closing while a (very slowly paced) Tier1 compression is under way: the close returns,
/// the half-written `.t1.tmp` is removed at the next open, every record reads back, and the
/// compression is redone; a third open sees only Tier1 files and no leftovers.
#[test]
fn close_during_a_slow_compression_leaves_nothing_behind() {
    let dir = tempdir("chaos-slowtier");
    let mut cfg = tier_cfg(&dir);
    cfg.tier1_io_bytes_per_sec = Some(1 << 20);
    cfg.segment_size_bytes = 4 << 20;
    let e = start(cfg.clone());
    let h = e.handle();
    h.create_log("c").wait_timeout(T).unwrap();
    let mut n = 0u64;
    while h.stats(0).wait_timeout(T).unwrap().segments_sealed < 2 {
        h.append("c", rec(n), ALL[(n % 3) as usize]).wait_timeout(T).unwrap();
        n += 1;
    }
    // Not idle: the compression of a 4 MiB segment takes seconds at this pace. (If it is
    // done anyway, the checks below still hold.)
    std::thread::sleep(Duration::from_millis(300));
    let mid = walk(&dir).iter().any(|p| p.to_str().unwrap().ends_with(".t1.tmp"));
    eprintln!("closing with a .t1.tmp present: {mid}");
    e.close().unwrap();
    let mut cfg = tier_cfg(&dir);
    cfg.segment_size_bytes = 4 << 20;
    let tier_cfg = |_: &Path| cfg.clone();
    let e = start(tier_cfg(&dir));
    let r = report(&e);
    assert!(r.lost_ranges.is_empty() && r.missing.is_empty(), "{r:?}");
    eprintln!("second open: {:?}", r.notes);
    let h = e.handle();
    check_log(&h, n, &[], "after close mid-compression");
    h.tiering_idle(0).wait_timeout(T).unwrap();
    check_log(&h, n, &[], "recompressed");
    e.close().unwrap();
    let e = start(tier_cfg(&dir));
    let h = e.handle();
    let segs = h.segments("c").wait_timeout(T).unwrap();
    assert!(
        segs[..segs.len() - 1].iter().all(|s| s.state == SegmentState::Tier1),
        "{segs:?}"
    );
    assert!(
        !walk(&dir).iter().any(|p| p.to_str().unwrap().ends_with(".tmp")),
        "{:?}",
        walk(&dir)
    );
    check_log(&h, n, &[], "third open");
    e.close().unwrap();
}
