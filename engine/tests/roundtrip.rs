//! Round trips across sizes, segment rolls, shards and restarts, through both ways in.

mod common;
use aof_engine::{Durability, Error, NewRecord, OwnedRecord};
use common::*;

#[test]
fn handle_round_trip_across_sizes_rolls_and_reopen() {
    let dir = tempdir("roundtrip");
    let sizes: Vec<usize> = vec![
        1, 2, 3, 7, 8, 9, 15, 17, 31, 33, 63, 100, 255, 4095, 4096, 4097, 10_001, 65_535, 65_536,
    ];
    let logs = ["alpha", "beta", "gamma", "delta"];
    let mut expect: Vec<Vec<(u64, Vec<u8>)>> = vec![Vec::new(); logs.len()];
    {
        let e = open(small_config(&dir, 2));
        let h = e.handle();
        for l in logs {
            h.create_log(l).wait().unwrap();
        }
        let mut i = 0u64;
        for round in 0..12 {
            for (li, l) in logs.iter().enumerate() {
                for &s in &sizes {
                    let p = payload(li, i, s);
                    let d = ALL[(i % 3) as usize];
                    let off = h.append(l, p.clone(), d).wait().unwrap();
                    assert_eq!(off, expect[li].len() as u64, "dense offsets (round {round})");
                    expect[li].push((off, p));
                    i += 1;
                }
            }
        }
        for l in logs {
            h.sync(l).wait().unwrap();
        }
        // Everything reads back before the restart, including from write buffers.
        for (li, l) in logs.iter().enumerate() {
            let got = h.read_from(l, 0, usize::MAX, usize::MAX).wait().unwrap();
            assert_eq!(got.len(), expect[li].len());
            for (r, (o, p)) in got.iter().zip(&expect[li]) {
                assert_eq!(r.offset, *o);
                assert_eq!(&r.payload, p);
            }
        }
        e.close().unwrap();
    }
    // The 256 KiB segments must have rolled many times.
    let segs = segment_files(&dir).len();
    assert!(segs > 8, "only {segs} segment files");
    let e = open(small_config(&dir, 2));
    let h = e.handle();
    for (li, l) in logs.iter().enumerate() {
        for (o, p) in expect[li].iter().step_by(7) {
            let r = h.read(l, *o).wait().unwrap();
            assert_eq!(&r.payload, p, "log {l} offset {o} after reopen");
        }
        let got = h.read_from(l, 0, usize::MAX, usize::MAX).wait().unwrap();
        assert_eq!(got.len(), expect[li].len());
        assert!(got
            .iter()
            .zip(&expect[li])
            .all(|(r, (o, p))| r.offset == *o && &r.payload == p));
        let next = h.append(l, b"after".to_vec(), Durability::Synced).wait().unwrap();
        assert_eq!(next, expect[li].len() as u64);
    }
    e.close().unwrap();
}

#[test]
fn on_shard_appends_tags_timestamps_batches_and_tail() {
    let dir = tempdir("onshard");
    let e = open(small_config(&dir, 2));
    let h = e.handle();
    let shard = h.shard_of("events");
    h.create_log("events").wait().unwrap();
    let got = e
        .spawn_on(shard, |s| async move {
            let log = s.log("events")?;
            let a = log
                .append_record(
                    NewRecord::new(b"x").with_tag(42).with_timestamp_ns(7),
                    Durability::Written,
                )
                .await?;
            let recs: Vec<Vec<u8>> = (0..50u8).map(|i| vec![i; i as usize + 1]).collect();
            let batch: Vec<NewRecord<'_>> = recs.iter().map(|r| NewRecord::new(r)).collect();
            let range = log.append_batch(&batch, Durability::Synced).await?;
            let b = log.append_buffered(NewRecord::new(b"buffered"))?;
            let mut tail = log.tail(0);
            let mut seen = Vec::new();
            for _ in 0..52 {
                seen.push(tail.next().await?);
            }
            Ok((a, range, b, seen, log.read(0).await?))
        })
        .wait()
        .unwrap();
    let (a, range, b, seen, first) = got;
    assert_eq!(a, 0);
    assert_eq!(range, 1..51);
    assert_eq!(b, 51);
    assert_eq!(first.tag, Some(42));
    assert_eq!(first.timestamp_ns, 7);
    assert_eq!(seen.len(), 52);
    assert_eq!(seen[51].payload, b"buffered");
    assert!(seen[1..51]
        .iter()
        .enumerate()
        .all(|(i, r)| r.payload == vec![i as u8; i + 1] && r.tag.is_none()));
    // Auto timestamps are wall-clock nanoseconds.
    assert!(seen[1].timestamp_ns > 1_600_000_000_000_000_000);
    // A log used from the wrong shard says which shard owns it.
    let other = 1 - shard;
    let err = e
        .spawn_on(other, |s| async move { s.log("events").map(|_| ()) })
        .wait()
        .unwrap_err();
    assert!(
        matches!(err, Error::WrongShard { owner, .. } if owner == shard),
        "{err}"
    );
    // Batches from another thread too.
    let r = h
        .append_batch(
            "events",
            vec![OwnedRecord::new(b"p".to_vec()).with_tag(1); 3],
            Durability::Synced,
        )
        .wait()
        .unwrap();
    assert_eq!(r, 52..55);
    e.close().unwrap();
}

#[test]
fn explicit_and_age_based_rolls_seal_segments() {
    let dir = tempdir("rolls");
    let mut c = small_config(&dir, 1);
    c.segment_max_age = Some(std::time::Duration::from_millis(200));
    let e = open(c.clone());
    let h = e.handle();
    h.create_log("r").wait().unwrap();
    h.append("r", b"one".to_vec(), Durability::Written).wait().unwrap();
    // On demand: returns once the old segment's seal is durable.
    h.roll("r").wait_timeout(std::time::Duration::from_secs(10)).unwrap();
    let sealed = |e: &aof_engine::Engine| {
        e.spawn_on(0, |s| async move { Ok(s.log("r")?.sealed_segments()) })
            .wait()
            .unwrap()
    };
    assert_eq!(sealed(&e), 1);
    // A roll of an empty active segment is a no-op.
    h.roll("r").wait().unwrap();
    assert_eq!(sealed(&e), 1);
    // By age, with no further traffic.
    h.append("r", b"two".to_vec(), Durability::Memory).wait().unwrap();
    let start = std::time::Instant::now();
    while sealed(&e) < 2 {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(10),
            "age-based roll never happened"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    e.close().unwrap();
    let e = open(c);
    let h = e.handle();
    assert_eq!(h.read("r", 0).wait().unwrap().payload, b"one");
    assert_eq!(h.read("r", 1).wait().unwrap().payload, b"two");
    e.close().unwrap();
}

/// The seal trailer's `data_crc` (kept as a running checksum while appending, for end-to-end
/// integrity checks of whole segments) equals a crc32c over the frames actually on disk.
#[test]
fn sealed_trailers_checksum_exactly_the_bytes_on_disk() {
    use aof_engine::format::segment::{decode_index, decode_trailer, TRAILER_BYTES};
    let dir = tempdir("datacrc");
    let e = open(raw_config(&dir, 1));
    let h = e.handle();
    h.create_log("c").wait().unwrap();
    let mut i = 0u64;
    while seg_files(&dir).len() < 4 {
        // Runs of 4 KiB records, whose crc the append path extends by arithmetic from each
        // frame's own (`format::crc`), between runs of mixed sizes, which take a second pass.
        let size = |k: u64| match (i / 3) % 4 {
            0 | 1 => 4096,
            _ => 1 + ((i + k) as usize * 131) % 5000,
        };
        let recs = (0..3).map(|k| OwnedRecord::new(payload(0, i + k, size(k)))).collect();
        h.append_batch("c", recs, ALL[(i % 3) as usize]).wait().unwrap();
        i += 3;
    }
    h.roll("c").wait().unwrap();
    e.close().unwrap();
    let mut sealed = 0;
    for p in seg_files(&dir) {
        let b = std::fs::read(&p).unwrap();
        let Ok(t) = decode_trailer(&b[b.len() - TRAILER_BYTES..], b.len() as u64) else {
            continue;
        };
        decode_index(&b[t.index_pos as usize..], &t).unwrap();
        assert_eq!(
            t.data_crc,
            crc32c::crc32c(&b[4096..t.data_end as usize]),
            "{}",
            p.display()
        );
        sealed += 1;
    }
    assert!(sealed >= 3, "only {sealed} sealed segments");
}

/// Dropping the engine without `close` is no worse than a crash: it syncs and joins like
/// close, so even `Memory` appends acknowledged before the drop are there after reopening.
#[test]
fn drop_without_close_keeps_everything() {
    let dir = tempdir("drop");
    {
        let e = open(small_config(&dir, 2));
        let h = e.handle();
        h.create_log("d").wait().unwrap();
        for i in 0..500u64 {
            h.append("d", payload(3, i, 1 + i as usize % 700), ALL[i as usize % 3])
                .wait()
                .unwrap();
        }
        drop(e);
        // Handles that outlive the engine fail cleanly instead of hanging.
        assert!(matches!(
            h.append("d", b"x".to_vec(), Durability::Memory).wait(),
            Err(Error::ShuttingDown)
        ));
    }
    let e = open(small_config(&dir, 2));
    let all = e.handle().read_from("d", 0, usize::MAX, usize::MAX).wait().unwrap();
    assert_eq!(all.len(), 500);
    assert!(all
        .iter()
        .all(|r| r.payload == payload(3, r.offset, 1 + r.offset as usize % 700)));
    e.close().unwrap();
}

/// Readers racing the writer: a follower on another thread and a tail on the shard read every
/// record while segments roll, seal and leave memory underneath them.
#[test]
fn followers_read_everything_while_segments_roll() {
    let dir = tempdir("follow");
    let e = open(small_config(&dir, 1));
    let h = e.handle();
    h.create_log("f").wait().unwrap();
    const N: u64 = 6000;
    let size = |i: u64| 1 + (i as usize * 97) % 900;
    let follower = {
        let h = h.clone();
        std::thread::spawn(move || {
            let mut f = h.follow("f", 0);
            for i in 0..N {
                let r = f.next_record().unwrap();
                assert_eq!(r.offset, i);
                assert_eq!(r.payload, payload(5, i, size(i)), "follower at {i}");
            }
        })
    };
    let tail = e.spawn_on(0, move |s| async move {
        let log = s.log("f")?;
        let mut t = log.tail(0);
        for i in 0..N {
            let r = t.next().await?;
            assert_eq!(r.offset, i);
            assert_eq!(r.payload, payload(5, i, size(i)), "tail at {i}");
        }
        Ok(())
    });
    for i in 0..N {
        let d = if i % 100 == 0 {
            Durability::Synced
        } else {
            Durability::Memory
        };
        assert_eq!(h.append("f", payload(5, i, size(i)), d).wait().unwrap(), i);
    }
    follower.join().unwrap();
    tail.wait().unwrap();
    let sealed = e
        .spawn_on(0, |s| async move { Ok(s.log("f")?.sealed_segments()) })
        .wait()
        .unwrap();
    assert!(
        sealed >= 5,
        "segments should have rolled underneath the readers ({sealed})"
    );
    e.close().unwrap();
}
