//! Tier1 at run time: recompressing a sealed segment into a `.t1` file of independently
//! decodable frames, loading one at start-up, and reading one frame back with its checksum
//! verified. The byte layout is in `format/tier1.rs`; when this runs and what it records in
//! the manifest is decided by `tiering.rs`.

use crate::compressor::{Compressor, Refused};
use crate::config::Profile;
use crate::error::{Error, Result};
use crate::format::frame::{frame_len, peek_len};
use crate::format::le_u64;
use crate::format::segment::{align_down, align_up};
use crate::format::tier1::{self as fmt, Codec, FrameEntry, Header};
use crate::fsops;
use crate::limits::{BLOCK_SIZE, FRAME_HEADER_BYTES, RECORD_BYTES_CEILING};
use crate::record::now_ns;
use glommio::io::{DmaFile, OpenOptions};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// Sealed segment bytes are read in pieces of this size while compressing, and output is
/// written in pieces of (at least) this size. Small on purpose: an append's write or
/// fdatasync queued behind one of these at the device waits for at most this much transfer
/// (measured: 1 MiB pieces quadrupled the p99 of Synced appends during compression).
const READ_CHUNK: usize = 128 << 10;
const WRITE_CHUNK: usize = 128 << 10;

/// zstd work done on the shard between yields, in bytes, so appends wait at most one step
/// behind compression. zstd is given blocks of this size (`MaxBlockSize`) and compresses one as soon
/// as it is whole. One call over a 64 KiB frame held the shard for ~100-200 µs, a large share
/// of the Memory append tail at half load. Measured on log text (dpkg.log, this repo's source)
/// at level 3, against one call per frame: a 16 KiB step takes ~45 µs, the ratio drops 1-2 %
/// (10.49 to 10.30, 3.30 to 3.27) and compression takes 3-25 % more CPU; 4 KiB blocks lost
/// 10 % of the ratio, 32 KiB blocks 0.3 % but twice as long a step.
const CPU_STEP: usize = 16 << 10;

/// Bytes checksummed or copied between yields (reading the segment, taking a frame out of the
/// read buffer, appending compressed bytes, filling a write buffer). The bytes are cold by then:
/// timing every poll of the tiering task at Memory half load, 16 KiB steps ran over 5 µs
/// 4,109-4,274 times a run (17-27 ms in all past 5 µs), 8 KiB steps 3,347-3,653 times (15-17 ms),
/// three alternating pairs. The zstd block size stays at `CPU_STEP`: smaller blocks cost ratio.
const COPY_STEP: usize = 8 << 10;

/// Lets other tasks on the shard run between two steps of background work.
async fn step_yield() {
    glommio::executor().yield_task_queue_now().await;
}

/// Calls `f` on `bytes` in `COPY_STEP` pieces, with each piece's offset, yielding between them.
async fn in_steps(bytes: &[u8], mut f: impl FnMut(usize, &[u8])) {
    for (i, piece) in bytes.chunks(COPY_STEP).enumerate() {
        if i > 0 {
            step_yield().await;
        }
        f(i * COPY_STEP, piece);
    }
}

/// Maps a zstd error code to an I/O error naming the operation and the file being written.
fn zstd_error<'a>(op: &'static str, path: &'a Path) -> impl Fn(usize) -> Error + Copy + 'a {
    move |code| Error::io(op, path, std::io::Error::other(zstd_safe::get_error_name(code)))
}

/// What the segment being compressed is, from its seal.
pub struct Source<'a> {
    pub file: &'a DmaFile,
    pub path: &'a Path,
    pub log_id: u64,
    pub base_offset: u64,
    pub next_offset: u64,
    pub data_end: u64,
    pub data_crc: u32,
}

pub struct Compressed {
    pub path: PathBuf,
    pub file: Rc<DmaFile>,
    pub frames: Vec<FrameEntry>,
    pub codec: Codec,
    pub level: i32,
    pub file_len: u64,
    /// crc32c of the whole file.
    pub file_crc: u32,
    /// Frames zstd compressed on the shard's compression thread (the rest ran on the shard).
    pub frames_off_shard: u64,
    /// Reads and writes submitted with `IOSQE_ASYNC` (`How::punt_io`).
    pub punted_ios: u64,
}

fn corrupt(path: &Path, pos: u64, detail: String) -> Error {
    Error::Corruption {
        path: path.to_path_buf(),
        pos,
        detail,
    }
}

/// Writes whole blocks at `pos`, folding them into the running crc of the file.
async fn write_dma(f: &DmaFile, path: &Path, bytes: &[u8], pos: u64, crc: &mut u32, punt: bool) -> Result<()> {
    debug_assert!(pos.is_multiple_of(BLOCK_SIZE) && (bytes.len() as u64).is_multiple_of(BLOCK_SIZE));
    let mut buf = f.alloc_dma_buffer(bytes.len());
    in_steps(bytes, |at, piece| {
        *crc = crc32c::crc32c_append(*crc, piece);
        buf.as_bytes_mut()[at..at + piece.len()].copy_from_slice(piece);
    })
    .await;
    let n = if punt {
        f.write_rc_at_punted(std::rc::Rc::new(buf), pos).await
    } else {
        f.write_at(buf, pos).await
    };
    let n = n.map_err(|e| Error::glommio("write tier1", path, e))?;
    if n != bytes.len() {
        return Err(Error::io(
            "write tier1",
            path,
            std::io::Error::from(std::io::ErrorKind::StorageFull),
        ));
    }
    Ok(())
}

/// Compresses `src` into `dir/<name>.t1`, writing a `.tmp` file with O_DIRECT, syncing it and
/// renaming it into place. The segment's `data_crc` is checked over every byte read, so a
/// segment damaged on disk is never recompressed into a file that looks healthy. Yields its
/// task queue after every frame; `stop()` true aborts (the temp file is removed) and returns
/// `None`.
pub async fn compress(
    src: Source<'_>,
    dir: &Path,
    how: How<'_>,
    io_rate: Option<u64>,
    stop: &dyn Fn() -> bool,
) -> Result<Option<Compressed>> {
    let name = fmt::file_name(src.log_id, src.base_offset);
    let tmp = dir.join(format!("{name}.tmp"));
    let dst = dir.join(&name);
    let out_file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .dma_open(&tmp)
        .await
        .map_err(|e| Error::glommio("create tier1", &tmp, e))?;
    let pace = Pace {
        rate: io_rate,
        started: std::time::Instant::now(),
        bytes: std::cell::Cell::new(0),
    };
    let profile = how.profile;
    let r = write_frames(&src, &out_file, &tmp, &how, &pace, stop).await;
    let Written {
        frames,
        file_len,
        file_crc,
        frames_off_shard,
        punted_ios,
    } = match r {
        Ok(Some(v)) => v,
        other => {
            let _ = out_file.close().await;
            let _ = fsops::remove(&tmp).await;
            return other.map(|_| None);
        }
    };
    fsops::rename(&tmp, &dst).await?;
    fsops::sync_dir(dir).await?;
    let level = profile.zstd_level();
    Ok(Some(Compressed {
        path: dst,
        file: Rc::new(out_file),
        frames,
        codec: if level.is_some() { Codec::Zstd } else { Codec::Stored },
        level: level.unwrap_or(0),
        file_len,
        file_crc,
        frames_off_shard,
        punted_ios,
    }))
}

/// Keeps a compression's device traffic (bytes read plus written) under `rate` bytes/s, so
/// the background work never takes the device away from appends.
struct Pace {
    rate: Option<u64>,
    started: std::time::Instant,
    bytes: std::cell::Cell<u64>,
}

impl Pace {
    async fn account(&self, n: usize) {
        self.bytes.set(self.bytes.get() + n as u64);
        let Some(rate) = self.rate else {
            return;
        };
        let due = self.started + std::time::Duration::from_secs_f64(self.bytes.get() as f64 / rate as f64);
        let now = std::time::Instant::now();
        if due > now {
            glommio::timer::Timer::new(due - now).await;
        }
    }
}

/// How a segment is recompressed: the profile, the frame size, the compression thread if the
/// shard has one, and whether its reads and writes go straight to io_uring's workers.
pub struct How<'a> {
    pub profile: Profile,
    pub frame_target: u32,
    pub worker: Option<&'a Compressor>,
    /// The shard's io_uring workers run on other CPUs: submit this background I/O with
    /// `IOSQE_ASYNC`, so the shard does not pay the 20-40 µs of an inline submission
    /// (`ShardCore::io_workers_elsewhere`).
    pub punt_io: bool,
}

/// A Tier1 file written and synced, under its temporary name.
struct Written {
    frames: Vec<FrameEntry>,
    file_len: u64,
    file_crc: u32,
    frames_off_shard: u64,
    punted_ios: u64,
}

async fn write_frames(
    src: &Source<'_>,
    out_file: &DmaFile,
    out_path: &Path,
    how: &How<'_>,
    pace: &Pace,
    stop: &dyn Fn() -> bool,
) -> Result<Option<Written>> {
    let How {
        profile,
        frame_target,
        worker,
        punt_io,
    } = *how;
    let level = profile.zstd_level();
    let header = Header {
        codec: if level.is_some() { Codec::Zstd } else { Codec::Stored },
        log_id: src.log_id,
        base_offset: src.base_offset,
        next_offset: src.next_offset,
        data_end: src.data_end,
        data_crc: src.data_crc,
        level: level.unwrap_or(0),
        frame_target,
        created_ns: now_ns(),
    };
    let mut cctx = zstd_safe::CCtx::create();
    if let Some(l) = level {
        let zerr = zstd_error("zstd parameters", out_path);
        cctx.set_parameter(zstd_safe::CParameter::CompressionLevel(l))
            .map_err(zerr)?;
        cctx.set_parameter(zstd_safe::CParameter::MaxBlockSize(CPU_STEP as u32))
            .map_err(zerr)?;
    }
    let mut out = header.encode();
    let mut written = 0u64;
    // Read but not yet framed. A deque: taking a frame off the front moves nothing, where a
    // `Vec` drain moved the rest down in one unbroken memmove of up to a read chunk.
    let mut raw: VecDeque<u8> = VecDeque::new();
    let mut head = [0u8; FRAME_HEADER_BYTES];
    let mut raw_pos = BLOCK_SIZE;
    let mut read_pos = BLOCK_SIZE;
    let mut crc = 0u32;
    let mut next = src.base_offset;
    let mut comp_pos = BLOCK_SIZE;
    let mut frames = Vec::new();
    let mut file_crc = 0u32;
    let mut off_shard = 0u64;
    let mut punted = 0u64;
    let target = frame_target as usize;
    loop {
        // Cut the next frame: whole records, at least one, up to the target size.
        let (mut cut, mut recs) = (0usize, 0u32);
        loop {
            if recs > 0 && cut >= target {
                break;
            }
            let avail = raw.len() - cut;
            let need = if avail < FRAME_HEADER_BYTES {
                FRAME_HEADER_BYTES
            } else {
                for (d, b) in head.iter_mut().zip(raw.range(cut..cut + FRAME_HEADER_BYTES)) {
                    *d = *b;
                }
                let Some(len) = peek_len(&head).filter(|&l| l <= RECORD_BYTES_CEILING) else {
                    return Err(corrupt(src.path, raw_pos + cut as u64, "bad frame header".into()));
                };
                frame_len(len as usize)
            };
            if avail >= need && avail >= FRAME_HEADER_BYTES {
                let off = le_u64(&head, 8);
                if off != next + recs as u64 {
                    return Err(corrupt(
                        src.path,
                        raw_pos + cut as u64,
                        format!("expected record {}, found {off}", next + recs as u64),
                    ));
                }
                cut += need;
                recs += 1;
                continue;
            }
            if read_pos >= src.data_end {
                if avail == 0 {
                    break;
                }
                return Err(corrupt(
                    src.path,
                    raw_pos + cut as u64,
                    "frame runs past data_end".into(),
                ));
            }
            let n = READ_CHUNK.min((src.data_end - read_pos) as usize);
            let chunk = if punt_io {
                punted += 1;
                src.file.read_at_punted(read_pos, n).await
            } else {
                src.file.read_at(read_pos, n).await
            };
            let chunk = chunk.map_err(|e| Error::glommio("read segment", src.path, e))?;
            if chunk.len() != n {
                return Err(corrupt(src.path, read_pos, "segment shorter than its seal says".into()));
            }
            in_steps(&chunk, |_, piece| {
                crc = crc32c::crc32c_append(crc, piece);
                raw.extend(piece);
            })
            .await;
            read_pos += n as u64;
            pace.account(n).await;
        }
        if recs == 0 {
            break;
        }
        // The frame's bytes are copied out in steps, so they can go to the compression thread.
        let mut frame = Vec::with_capacity(cut);
        let (a, b) = raw.as_slices();
        for part in [&a[..cut.min(a.len())], &b[..cut.saturating_sub(a.len())]] {
            in_steps(part, |_, piece| frame.extend_from_slice(piece)).await;
        }
        raw.drain(..cut);
        // To the compression thread if there is one; `Err` hands the frame back to be
        // compressed (or stored) here.
        let shipped = match (level, worker) {
            (Some(l), Some(w)) => match w.compress(frame, l).await {
                Ok(c) => {
                    off_shard += 1;
                    Ok(c)
                }
                // The thread is gone (it never is while the shard runs): compress here.
                Err(Refused::Gone(frame)) => Err(frame),
                Err(Refused::Lost) => {
                    let e = std::io::Error::other("the compression thread stopped with a frame in hand");
                    return Err(Error::io("zstd compress", out_path, e));
                }
                Err(Refused::Zstd(name)) => {
                    return Err(Error::io("zstd compress", out_path, std::io::Error::other(name)));
                }
            },
            _ => Err(frame),
        };
        let (comp, comp_crc) = match shipped {
            Ok(c) => (c.bytes, c.crc),
            Err(frame) => {
                let comp = match level {
                    Some(_) => compress_frame(&mut cctx, &frame, out_path).await?,
                    None => frame,
                };
                let crc = crc32c::crc32c(&comp);
                (comp, crc)
            }
        };
        frames.push(FrameEntry {
            first_offset: next,
            raw_pos,
            comp_pos,
            comp_len: comp.len() as u32,
            raw_len: cut as u32,
            comp_crc,
            records: recs,
        });
        comp_pos += comp.len() as u64;
        next += recs as u64;
        raw_pos += cut as u64;
        in_steps(&comp, |_, piece| out.extend_from_slice(piece)).await;
        if out.len() >= WRITE_CHUNK {
            let n = align_down(out.len() as u64) as usize;
            write_dma(out_file, out_path, &out[..n], written, &mut file_crc, punt_io).await?;
            punted += punt_io as u64;
            out.drain(..n);
            written += n as u64;
            pace.account(n).await;
        }
        // Let appends and reads run between frames: this task queue has few shares, and an
        // explicit yield hands the core back at once instead of at the next preemption tick.
        glommio::executor().yield_task_queue_now().await;
        if stop() {
            return Ok(None);
        }
    }
    if crc != src.data_crc || next != src.next_offset || raw_pos != src.data_end {
        return Err(corrupt(
            src.path,
            BLOCK_SIZE,
            format!(
                "segment data does not match its seal (crc {crc:08x} vs {:08x}, records to {next} vs {})",
                src.data_crc, src.next_offset
            ),
        ));
    }
    let comp_end = written + out.len() as u64;
    debug_assert_eq!(comp_end, comp_pos);
    out.resize(align_up(out.len() as u64) as usize, 0);
    out.extend_from_slice(&fmt::encode_tail(&frames, comp_end, src.base_offset, src.next_offset));
    write_dma(out_file, out_path, &out, written, &mut file_crc, punt_io).await?;
    punted += punt_io as u64;
    let file_len = written + out.len() as u64;
    out_file
        .fdatasync()
        .await
        .map_err(|e| Error::glommio("fdatasync tier1", out_path, e))?;
    Ok(Some(Written {
        frames,
        file_len,
        file_crc,
        frames_off_shard: off_shard,
        punted_ios: punted,
    }))
}

/// Compresses one frame as one zstd frame, fed `CPU_STEP` bytes at a time with a yield
/// between (the context's level and block size are set by the caller).
async fn compress_frame(cctx: &mut zstd_safe::CCtx<'static>, src: &[u8], out_path: &Path) -> Result<Vec<u8>> {
    use zstd_safe::zstd_sys::ZSTD_EndDirective::{ZSTD_e_continue, ZSTD_e_end};
    let zerr = zstd_error("zstd compress", out_path);
    cctx.set_pledged_src_size(Some(src.len() as u64)).map_err(zerr)?;
    // Room for the worst case, so every call consumes its whole input and `end` finishes.
    let mut v: Vec<u8> = Vec::with_capacity(zstd_safe::compress_bound(src.len()));
    let mut fed = 0;
    loop {
        let step = CPU_STEP.min(src.len() - fed);
        let last = fed + step == src.len();
        let mut input = zstd_safe::InBuffer::around(&src[fed..fed + step]);
        loop {
            let at = v.len();
            let mut output = zstd_safe::OutBuffer::around_pos(&mut v, at);
            let left = cctx
                .compress_stream2(&mut output, &mut input, if last { ZSTD_e_end } else { ZSTD_e_continue })
                .map_err(zerr)?;
            let consumed = input.pos() == step;
            if consumed && (!last || left == 0) {
                break;
            }
            if v.len() == v.capacity() {
                v.reserve(left.max(BLOCK_SIZE as usize));
            }
        }
        fed += step;
        if last {
            return Ok(v);
        }
        step_yield().await;
    }
}

/// A Tier1 file as found at start-up.
pub struct Loaded {
    pub header: Header,
    pub frames: Vec<FrameEntry>,
    pub file_len: u64,
}

/// Reads and checks a Tier1 file's header, trailer and frame index (blocking; start-up only).
/// `Err` carries why the file is unusable.
pub fn load(path: &Path, log_id: u64, base: u64) -> std::result::Result<Loaded, String> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let len = f.metadata().map_err(|e| e.to_string())?.len();
    if len < BLOCK_SIZE + fmt::TRAILER_BYTES as u64 {
        return Err("file too short".into());
    }
    let mut hb = vec![0u8; fmt::HEADER_USED_BYTES];
    f.read_exact_at(&mut hb, 0).map_err(|e| e.to_string())?;
    let header = Header::decode(&hb)?;
    if header.log_id != log_id || header.base_offset != base {
        return Err("header names another segment".into());
    }
    let mut tr = [0u8; fmt::TRAILER_BYTES];
    f.read_exact_at(&mut tr, len - fmt::TRAILER_BYTES as u64)
        .map_err(|e| e.to_string())?;
    let t = fmt::decode_trailer(&tr, len)?;
    if t.base_offset != base || t.next_offset != header.next_offset {
        return Err("trailer disagrees with the header".into());
    }
    let mut ib = vec![0u8; t.frame_count as usize * fmt::FRAME_ENTRY_BYTES];
    f.read_exact_at(&mut ib, t.index_pos).map_err(|e| e.to_string())?;
    let frames = fmt::decode_index(&ib, &t, header.data_end)?;
    Ok(Loaded {
        header,
        frames,
        file_len: len,
    })
}

/// crc32c of a whole file (blocking; start-up only, for a Tier1 file the manifest lost).
pub fn file_crc(path: &Path) -> std::result::Result<u32, String> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 1 << 20];
    let mut crc = 0u32;
    loop {
        let n = f.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            return Ok(crc);
        }
        crc = crc32c::crc32c_append(crc, &buf[..n]);
    }
}

/// Reads frame `f` of a Tier1 file and returns its decoded bytes (the segment bytes from
/// `f.raw_pos`). The compressed bytes are checked against their crc32c before decoding, and
/// the decoded length against the index; the records inside carry their own crc32c too.
pub async fn read_frame(file: &DmaFile, path: &Path, f: &FrameEntry, codec: Codec) -> Result<Vec<u8>> {
    let r = file
        .read_at(f.comp_pos, f.comp_len as usize)
        .await
        .map_err(|e| Error::glommio("read tier1 frame", path, e))?;
    decode_frame(&r, path, f, codec)
}

/// Checks and decodes the compressed bytes of frame `f` (from a local file or a ranged
/// Tier2 read).
pub fn decode_frame(comp: &[u8], path: &Path, f: &FrameEntry, codec: Codec) -> Result<Vec<u8>> {
    if comp.len() != f.comp_len as usize {
        return Err(corrupt(path, f.comp_pos, "tier1 frame truncated".into()));
    }
    if crc32c::crc32c(comp) != f.comp_crc {
        return Err(corrupt(path, f.comp_pos, "tier1 frame checksum mismatch".into()));
    }
    let raw = match codec {
        Codec::Stored => comp.to_vec(),
        Codec::Zstd => {
            let mut v = Vec::with_capacity(f.raw_len as usize);
            zstd_safe::decompress(&mut v, comp).map_err(|code| {
                corrupt(
                    path,
                    f.comp_pos,
                    format!("tier1 frame does not decode: {}", zstd_safe::get_error_name(code)),
                )
            })?;
            v
        }
    };
    if raw.len() != f.raw_len as usize {
        return Err(corrupt(
            path,
            f.comp_pos,
            "tier1 frame decodes to the wrong length".into(),
        ));
    }
    Ok(raw)
}
