//! Damaged files: truncation at every byte of the last frames, bit flips, zeroed tails, torn
//! batches, and damage inside sealed segments. Recovery must keep exactly the valid prefix,
//! never return a damaged record, and accept appends afterwards.

mod common;
use aof_engine::format::frame::frame_len;
use aof_engine::{Durability, Error, OwnedRecord};
use common::*;
use std::path::{Path, PathBuf};

fn size(i: u64) -> usize {
    1 + (i as usize * 37) % 211
}

/// `raw_config` without zero-filled spares: these tests build, and then damage, states inside
/// a log's first segment file, in new blocks (so partly written blocks are rewritten alone),
/// and a new Synced log would otherwise roll early onto its first zero-filled spare
/// (`ShardStats::early_rolls`).
fn one_segment_config(dir: &Path) -> aof_engine::Config {
    let mut c = raw_config(dir, 1);
    c.zero_fill_spares_bytes_per_sec = None;
    c
}

/// Writes `n` records of odd sizes to log "t" on one shard and closes. Returns the segment
/// file, its bytes, and the start position of each frame (plus the end).
fn prepare(dir: &Path, n: u64) -> (PathBuf, Vec<u8>, Vec<u64>) {
    let e = open(one_segment_config(dir));
    let h = e.handle();
    h.create_log("t").wait().unwrap();
    for i in 0..n {
        h.append("t", payload(0, i, size(i)), ALL[i as usize % 3])
            .wait()
            .unwrap();
    }
    e.close().unwrap();
    let segs = seg_files(dir);
    assert_eq!(segs.len(), 1);
    let bytes = std::fs::read(&segs[0]).unwrap();
    let mut pos = vec![4096u64];
    for i in 0..n {
        let p = *pos.last().unwrap();
        pos.push(p + frame_len(size(i)) as u64);
    }
    (segs[0].clone(), bytes, pos)
}

/// Reopens and checks that exactly `expect` records survive, intact, and that appends work.
fn check(dir: &Path, expect: u64, what: &str) {
    let e = open(one_segment_config(dir));
    let h = e.handle();
    let (_, next, _) = h.offsets("t").wait().unwrap();
    assert_eq!(next, expect, "{what}: wrong number of records recovered");
    let all = if expect == 0 {
        assert!(matches!(
            h.read_from("t", 0, 10, usize::MAX).wait(),
            Err(Error::OffsetOutOfRange { .. })
        ));
        Vec::new()
    } else {
        h.read_from("t", 0, usize::MAX, usize::MAX).wait().unwrap()
    };
    assert_eq!(all.len() as u64, expect, "{what}");
    for r in &all {
        assert_eq!(
            r.payload,
            payload(0, r.offset, size(r.offset)),
            "{what}: record {} differs",
            r.offset
        );
    }
    let o = h
        .append("t", payload(0, next, size(next)), Durability::Synced)
        .wait()
        .unwrap();
    assert_eq!(o, next, "{what}: append after recovery");
    let beyond = h.read("t", next + 1).wait();
    assert!(
        matches!(beyond, Err(Error::OffsetOutOfRange { .. })),
        "{what}: {beyond:?}"
    );
    e.close().unwrap();
}

#[test]
fn truncation_at_every_byte_of_the_last_frames() {
    let dir = tempdir("truncate");
    let n = 40;
    let (seg, bytes, pos) = prepare(&dir, n);
    let from = pos[(n - 4) as usize];
    let to = pos[n as usize] + 16;
    for cut in from..=to {
        std::fs::write(&seg, &bytes[..cut as usize]).unwrap();
        let expect = pos.iter().skip(1).filter(|&&end| end <= cut).count() as u64;
        check(&dir, expect.min(n), &format!("cut at {cut}"));
    }
}

#[test]
fn bit_flips_keep_exactly_the_frames_before_the_damage() {
    let dir = tempdir("flip");
    let n = 40;
    let (seg, bytes, pos) = prepare(&dir, n);
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    for trial in 0..60 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let lo = pos[(n - 12) as usize];
        let at = lo + rng % (pos[n as usize] - lo);
        let bit = (rng >> 32) % 8;
        let mut d = bytes.clone();
        d[at as usize] ^= 1 << bit;
        std::fs::write(&seg, &d).unwrap();
        // The frame holding the byte, and whether the byte is covered by its crc or is padding.
        let k = pos.iter().rposition(|&p| p <= at).unwrap() as u64;
        let covered = at < pos[k as usize] + 40 + size(k) as u64;
        let expect = if covered { k } else { n };
        check(
            &dir,
            expect,
            &format!("trial {trial}: flip bit {bit} at byte {at} (frame {k})"),
        );
    }
}

#[test]
fn zeroed_tail_is_cut_off() {
    let dir = tempdir("zero");
    let n = 40;
    let (seg, bytes, pos) = prepare(&dir, n);
    for k in [n - 1, n - 3, n - 10, 1, 0] {
        for extra in [0u64, 1, 17] {
            let at = pos[k as usize] + extra;
            let mut d = bytes.clone();
            d[at as usize..].fill(0);
            std::fs::write(&seg, &d).unwrap();
            let expect = pos.iter().skip(1).filter(|&&end| end <= at).count() as u64;
            check(&dir, expect, &format!("zeroed from {at}"));
        }
    }
}

#[test]
fn torn_batch_vanishes_whole() {
    let dir = tempdir("batch");
    let e = open(one_segment_config(&dir));
    let h = e.handle();
    h.create_log("t").wait().unwrap();
    for i in 0..5 {
        h.append("t", payload(0, i, size(i)), Durability::Synced)
            .wait()
            .unwrap();
    }
    let recs = (5..10).map(|i| OwnedRecord::new(payload(0, i, size(i)))).collect();
    assert_eq!(h.append_batch("t", recs, Durability::Synced).wait().unwrap(), 5..10);
    e.close().unwrap();
    let seg = seg_files(&dir).remove(0);
    let bytes = std::fs::read(&seg).unwrap();
    let mut pos = vec![4096u64];
    for i in 0..10 {
        let p = *pos.last().unwrap();
        pos.push(p + frame_len(size(i)) as u64);
    }
    // Cut anywhere inside the batch: the batch is gone, the five singles stay.
    for cut in [pos[6], pos[7] + 3, pos[9], pos[10] - 1] {
        std::fs::write(&seg, &bytes[..cut as usize]).unwrap();
        check(&dir, 5, &format!("batch cut at {cut}"));
    }
    std::fs::write(&seg, &bytes).unwrap();
    check(&dir, 10, "whole batch");
}

/// Writes records until at least three segments are sealed.
fn prepare_sealed(dir: &Path) -> (u64, Vec<PathBuf>) {
    let e = open(one_segment_config(dir));
    let h = e.handle();
    h.create_log("t").wait().unwrap();
    let mut i = 0u64;
    while seg_files(dir).len() < 4 {
        h.append("t", payload(0, i, 3000 + size(i)), Durability::Written)
            .wait()
            .unwrap();
        i += 1;
    }
    h.sync("t").wait().unwrap();
    e.close().unwrap();
    (i, seg_files(dir))
}

fn base_of(p: &Path) -> u64 {
    let name = p.file_name().unwrap().to_str().unwrap();
    name[17..37].parse().unwrap()
}

#[test]
fn damage_in_sealed_segments_is_reported_never_returned() {
    let dir = tempdir("sealed");
    let (n, segs) = prepare_sealed(&dir);
    let first = &segs[0];
    let pristine = std::fs::read(first).unwrap();
    let next_base = base_of(&segs[1]);
    let rec_size = |i: u64| 3000 + size(i);

    // 1. A flipped payload bit in a sealed segment: that record reads as corruption, its
    //    neighbours and every other segment read fine.
    let victim = 3u64;
    let mut p = 4096u64;
    for i in 0..victim {
        p += frame_len(rec_size(i)) as u64;
    }
    let mut d = pristine.clone();
    d[(p + 40 + 100) as usize] ^= 0x04;
    std::fs::write(first, &d).unwrap();
    {
        let e = open(one_segment_config(&dir));
        // Sealed segments open from their trailer and index alone: only the unsealed tail is
        // scanned, which is why the damaged payload is still found (and refused) at read time.
        assert_eq!(e.recovery_reports()[0].scanned, 1, "{:?}", e.recovery_reports()[0]);
        let h = e.handle();
        let err = h.read("t", victim).wait().unwrap_err();
        assert!(matches!(err, Error::Corruption { .. }), "{err}");
        assert_eq!(
            h.read("t", victim - 1).wait().unwrap().payload,
            payload(0, victim - 1, rec_size(victim - 1))
        );
        assert_eq!(
            h.read("t", victim + 1).wait().unwrap().payload,
            payload(0, victim + 1, rec_size(victim + 1))
        );
        // A scan stops before the damaged record: it returns the records before it, then the
        // next call starting at the victim reports the corruption.
        let prefix = h.read_from("t", 0, usize::MAX, usize::MAX).wait().unwrap();
        assert_eq!(prefix.len() as u64, victim);
        assert!(matches!(
            h.read_from("t", victim, 10, usize::MAX).wait(),
            Err(Error::Corruption { .. })
        ));
        e.close().unwrap();
    }

    // 2. A damaged trailer: the segment is scanned instead, and everything is still there.
    let mut d = pristine.clone();
    let len = d.len();
    d[len - 50] ^= 0xff;
    std::fs::write(first, &d).unwrap();
    {
        let e = open(one_segment_config(&dir));
        assert!(e.recovery_reports()[0].scanned >= 1);
        let all = e.handle().read_from("t", 0, usize::MAX, usize::MAX).wait().unwrap();
        assert_eq!(all.len() as u64, n);
        assert!(all
            .iter()
            .all(|r| r.payload == payload(0, r.offset, rec_size(r.offset))));
        e.close().unwrap();
    }

    // 3. Trailer and a frame damaged: the valid prefix stays readable, the lost range is
    //    reported and reads in it fail with corruption, later segments are untouched.
    let mut d = pristine.clone();
    d[len - 50] ^= 0xff;
    d[(p + 10) as usize] ^= 0x01;
    std::fs::write(first, &d).unwrap();
    {
        let e = open(one_segment_config(&dir));
        let rep = &e.recovery_reports()[0];
        assert_eq!(rep.lost_ranges, vec![(victim, next_base)], "{rep:?}");
        let h = e.handle();
        for i in 0..victim {
            assert_eq!(h.read("t", i).wait().unwrap().payload, payload(0, i, rec_size(i)));
        }
        for i in victim..next_base {
            assert!(matches!(h.read("t", i).wait(), Err(Error::Corruption { .. })));
        }
        for i in next_base..n {
            assert_eq!(h.read("t", i).wait().unwrap().payload, payload(0, i, rec_size(i)));
        }
        let o = h
            .append("t", b"still appendable".to_vec(), Durability::Synced)
            .wait()
            .unwrap();
        assert_eq!(o, n);
        e.close().unwrap();
    }
    std::fs::write(first, &pristine).unwrap();
}

#[test]
fn damaged_log_meta_is_reported_with_its_path() {
    let dir = tempdir("meta");
    let (_seg, _bytes, _pos) = prepare(&dir, 3);
    let meta = walk(&dir)
        .into_iter()
        .find(|p| p.file_name().is_some_and(|n| n == "log.meta"))
        .unwrap();
    let mut b = std::fs::read(&meta).unwrap();
    b[20] ^= 0x40;
    std::fs::write(&meta, &b).unwrap();
    match aof_engine::Engine::open(one_segment_config(&dir)) {
        Err(Error::Corruption { path, .. }) => assert_eq!(path, meta),
        Err(e) => panic!("expected Corruption naming log.meta, got {e}"),
        Ok(_) => panic!("opened with a damaged log.meta"),
    }
    // Nothing was changed by the failed open: restoring the byte restores the log.
    b[20] ^= 0x40;
    std::fs::write(&meta, &b).unwrap();
    check(&dir, 3, "after restoring log.meta");
}

/// The last segment's file under another name: `base` replaced by `new_base` in its name.
fn renamed(p: &Path, new_base: u64) -> PathBuf {
    let name = p.file_name().unwrap().to_str().unwrap();
    p.with_file_name(format!("{}{new_base:020}.seg", &name[..17]))
}

/// A gap in front of the last (unsealed) segment is reported once, as lost; a last segment
/// with nothing in it (no header, no records) is removed and the log goes on from the segment
/// before it, with nothing reported lost.
#[test]
fn a_gap_before_the_last_segment_is_reported_once_and_only_if_it_stays() {
    let dir = tempdir("gap-tail");
    let (_, segs) = prepare_sealed(&dir);
    let last = segs.last().unwrap().clone();
    let base = base_of(&last);

    // 0. The last segment renamed 10 offsets further on, its header unchanged: the header and
    //    the name disagree, and cutting "its" tail would destroy the frames, which are another
    //    segment's. The open is refused and no file changes.
    let bytes = std::fs::read(&last).unwrap();
    let moved = renamed(&last, base + 10);
    std::fs::rename(&last, &moved).unwrap();
    let before: Vec<(PathBuf, Vec<u8>)> = seg_files(&dir)
        .into_iter()
        .map(|p| (p.clone(), std::fs::read(&p).unwrap()))
        .collect();
    match aof_engine::Engine::open(one_segment_config(&dir)) {
        Err(Error::Corruption { path, .. }) => assert_eq!(path, moved),
        other => panic!("opened over a renamed last segment: {:?}", other.map(|_| ())),
    }
    for (p, b) in &before {
        assert_eq!(&std::fs::read(p).unwrap(), b, "{} changed", p.display());
    }

    // 1. The same file with a header that agrees with its new name: its frames carry offsets
    //    the name does not expect, so it holds no records, and the 10 offsets in front of it
    //    are lost.
    let header = aof_engine::format::segment::SegmentHeader::decode(&bytes).unwrap();
    let mut rewritten = aof_engine::format::segment::SegmentHeader {
        base_offset: base + 10,
        ..header
    }
    .encode();
    rewritten.extend_from_slice(&bytes[rewritten.len()..]);
    std::fs::write(&moved, &rewritten).unwrap();
    let e = open(one_segment_config(&dir));
    let r = &e.recovery_reports()[0];
    assert_eq!(r.lost_ranges, vec![(base, base + 10)], "{r:?}");
    assert_eq!(r.next_offset, base + 10, "{r:?}");
    let h = e.handle();
    assert!(matches!(h.read("t", base + 3).wait(), Err(Error::Corruption { .. })));
    e.close().unwrap();

    // 2. Put back as a file that never got its header: removed, and the log resumes at `base`.
    for p in seg_files(&dir) {
        if base_of(&p) >= base {
            std::fs::remove_file(p).unwrap();
        }
    }
    std::fs::write(renamed(&last, base + 10), vec![0u8; bytes.len()]).unwrap();
    let e = open(one_segment_config(&dir));
    let r = &e.recovery_reports()[0];
    assert!(r.lost_ranges.is_empty(), "nothing is lost: {r:?}");
    assert_eq!(r.next_offset, base, "{r:?}");
    assert!(r.notes.iter().any(|n| n.contains("removed empty segment")), "{r:?}");
    let h = e.handle();
    assert_eq!(h.append("t", vec![7; 10], Durability::Synced).wait().unwrap(), base);
    e.close().unwrap();
}

/// A crash in a roll after the new segment's rename but before its first write, and before
/// the rolled segment's tail was written: a torn (zeroed) tail in front of a file with the next
/// segment's name and nothing in it. Nothing acknowledged is in either part, so recovery keeps
/// the records before the tear, removes the empty file, reports nothing lost, and the log goes
/// on from the tear, in a new segment.
#[test]
fn a_roll_cut_short_after_the_rename_loses_nothing() {
    let dir = tempdir("roll-rename");
    let n = 40;
    let (seg, bytes, pos) = prepare(&dir, n);
    for (k, next_len) in [(n, 0usize), (n - 3, 64 << 10), (n - 10, 4096), (1, 64 << 10)] {
        for p in seg_files(&dir) {
            std::fs::remove_file(p).unwrap();
        }
        let mut d = bytes.clone();
        d[pos[k as usize] as usize..].fill(0);
        std::fs::write(&seg, &d).unwrap();
        std::fs::write(renamed(&seg, n), vec![0u8; next_len]).unwrap();
        let e = open(one_segment_config(&dir));
        let r = &e.recovery_reports()[0];
        assert!(r.lost_ranges.is_empty(), "torn at record {k}: nothing is lost: {r:?}");
        assert_eq!(r.next_offset, k, "{r:?}");
        assert!(r.notes.iter().any(|n| n.contains("removed empty segment")), "{r:?}");
        e.close().unwrap();
        let mut expect = vec![seg.clone(), renamed(&seg, k)];
        expect.dedup();
        assert_eq!(seg_files(&dir), expect, "the empty file is replaced by one at the tear");
        check(&dir, k, &format!("torn at record {k}, next file of {next_len} bytes"));
    }
}

/// Files of segments that retention removed come back as the log's next segments, with their
/// earlier life's frames still in them behind the new ones. A restart finds exactly the
/// records appended and reports nothing cut or lost; and a torn write over a reused file (its
/// first blocks new, the rest still the earlier life's) gives back exactly the new records
/// wholly before the tear, never an earlier life's record, also under the earlier segment's
/// base (the frames' offsets say whose they are).
#[test]
fn reused_segment_files_never_return_an_earlier_lifes_records() {
    let dir = tempdir("reuse");
    let mut c = one_segment_config(&dir);
    c.retention = aof_engine::Retention {
        max_age: None,
        max_bytes: Some(600 << 10),
    };
    let e = open(c.clone());
    let h = e.handle();
    h.create_log("t").wait().unwrap();
    let mut i = 0u64;
    let mut reused = 0;
    while reused < 3 {
        let recs = (i..i + 16)
            .map(|k| OwnedRecord::new(payload(0, k, 3000 + size(k))))
            .collect();
        h.append_batch("t", recs, Durability::Written).wait().unwrap();
        i += 16;
        reused = h.stats(0).wait().unwrap().spares_reused;
        assert!(i < 100_000, "no spare was ever reused");
    }
    // Single-record batches in the (reused) active segment, so any record can end the data.
    let segs = h.segments("t").wait().unwrap();
    let active = segs.last().unwrap().clone();
    // An earlier segment's bytes, to stand for an earlier life's. Retention runs meanwhile and
    // removes the oldest first (it once removed `segs[0]` between the listing and this read),
    // so take the newest sealed segment whose file is still there.
    let old_bytes = segs[..segs.len() - 1]
        .iter()
        .rev()
        .find_map(|s| std::fs::read(s.path.as_ref()?).ok())
        .expect("a sealed segment's file");
    let tail_from = i;
    for k in i..i + 300 {
        assert_eq!(
            h.append("t", payload(0, k, size(k)), Durability::Written)
                .wait()
                .unwrap(),
            k
        );
    }
    let n = i + 300;
    let active_base = h.segments("t").wait().unwrap().last().unwrap().base_offset;
    assert_eq!(active_base, active.base_offset, "no roll during the tail");
    assert!(active.base_offset < tail_from);
    h.sync("t").wait().unwrap();
    let (first, next, _) = h.offsets("t").wait().unwrap();
    assert_eq!(next, n);
    assert!(first > 0, "retention removed segments");
    e.close().unwrap();
    let seg = active.path.clone().unwrap();
    let bytes = std::fs::read(&seg).unwrap();

    // Reopened without retention: it would remove the oldest segment again at start-up (the
    // tail grew past the limit), racing the reads below.
    let mut reopen = c.clone();
    reopen.retention = aof_engine::Retention::default();
    let reads_back = |upto: u64, what: &str| {
        let e = open(reopen.clone());
        let r = e.recovery_reports()[0].clone();
        let h = e.handle();
        assert_eq!(h.offsets("t").wait().unwrap().1, upto, "{what}: {r:?}");
        assert!(r.lost_ranges.is_empty(), "{what}: {r:?}");
        let all = h.read_from("t", first, usize::MAX, usize::MAX).wait().unwrap();
        assert_eq!(all.len() as u64, upto - first, "{what}");
        for rec in &all {
            let k = rec.offset;
            let len = if k >= tail_from { size(k) } else { 3000 + size(k) };
            assert_eq!(rec.payload, payload(0, k, len), "{what}: record {k}");
        }
        assert!(
            matches!(h.read("t", upto).wait(), Err(Error::OffsetOutOfRange { .. })),
            "{what}"
        );
        e.close().unwrap();
        r
    };
    // 1. As closed: every record, nothing cut.
    let r = reads_back(n, "as closed");
    assert_eq!(r.truncated_bytes, 0, "{r:?}");

    // 2. Torn writes: the file's first blocks as written, the rest from an earlier segment.
    //    Frames of the tail records are found by walking from the segment's first tail record.
    let mut ends = Vec::new(); // (end position, records up to and including this one)
    let tail_start;
    {
        // The tail records start where the segment's batches end: find the first by its bytes.
        let f0 = payload(0, tail_from, size(tail_from));
        let at = bytes.windows(f0.len()).position(|w| w == f0.as_slice()).unwrap();
        let mut pos = (at - 40) as u64; // the frame header precedes the payload
        tail_start = pos;
        assert_eq!(frame_len(0), 40, "frame header size assumed by this test");
        for k in tail_from..n {
            pos += frame_len(size(k)) as u64;
            ends.push((pos, k + 1));
        }
    }
    let last_end = ends.last().unwrap().0;
    let first_cut = tail_start.div_ceil(4096) * 4096;
    assert!(first_cut + 3 * 4096 < last_end, "the tail spans several blocks");
    for cut in [first_cut, first_cut + 4096, first_cut + 3 * 4096] {
        let mut d = bytes.clone();
        let len = d.len().min(old_bytes.len());
        d[cut as usize..len].copy_from_slice(&old_bytes[cut as usize..len]);
        std::fs::write(&seg, &d).unwrap();
        let upto = ends
            .iter()
            .filter(|(end, _)| *end <= cut)
            .map(|&(_, k)| k)
            .max()
            .unwrap_or(tail_from);
        assert!(upto > tail_from, "the cut keeps some tail records");
        reads_back(upto, &format!("torn at block {}", cut / 4096));
        // Put the file back as it was (the open above cut the torn part away for good).
        std::fs::write(&seg, &bytes).unwrap();
    }
}

/// In a new segment file, the block a write left partly filled is rewritten by a write of its
/// own, beside the write of the blocks after it (`ActiveSegment::plan_write`), so a crash can
/// leave either one without the other. The rewrite lost: the block's older version (the first
/// records, then zeros) followed by newer blocks; recovery keeps exactly the records before
/// it. The blocks after it lost: recovery keeps the records wholly inside the block.
#[test]
fn a_lost_rewrite_of_a_partial_block_keeps_exactly_the_records_before_it() {
    let dir = tempdir("split-rewrite");
    let e = open(one_segment_config(&dir));
    let h = e.handle();
    h.create_log("t").wait().unwrap();
    let mut pos = vec![4096u64];
    let append = |pos: &mut Vec<u64>, i: u64| {
        h.append("t", payload(0, i, size(i)), Durability::Synced)
            .wait()
            .unwrap();
        let p = *pos.last().unwrap();
        pos.push(p + frame_len(size(i)) as u64);
    };
    // The first records end mid-block.
    let mut first = 0;
    while first < 20 || pos[first as usize] % 4096 == 0 {
        append(&mut pos, first);
        first += 1;
    }
    let seg = seg_files(&dir).remove(0);
    let older = std::fs::read(&seg).unwrap();
    // Enough more to run several blocks past it.
    let total = first + 120;
    for i in first..total {
        append(&mut pos, i);
    }
    let st = h.stats(0).wait().unwrap();
    assert!(
        st.head_block_writes > 0,
        "no partly written block was rewritten alone: {st:?}"
    );
    e.close().unwrap();
    let newer = std::fs::read(&seg).unwrap();
    let block = (pos[first as usize] / 4096) as usize * 4096;
    assert!(
        pos[total as usize] > block as u64 + 2 * 4096,
        "the later records reach past the block"
    );

    // The rewrite lost, the blocks after it on disk.
    let mut torn = newer.clone();
    torn[block..block + 4096].copy_from_slice(&older[block..block + 4096]);
    assert_ne!(torn, newer);
    std::fs::write(&seg, &torn).unwrap();
    check(&dir, first, "partial block's rewrite lost");

    // The rewrite on disk, the blocks after it lost (zeros, as preallocated).
    let mut torn = newer.clone();
    torn[block + 4096..].fill(0);
    std::fs::write(&seg, &torn).unwrap();
    let inside = pos
        .iter()
        .skip(1)
        .take_while(|&&end| end <= block as u64 + 4096)
        .count() as u64;
    assert!(inside > first, "some later records end inside the block");
    check(&dir, inside, "blocks after the rewrite lost");
}
