//! The active segment's bytes that no write has taken yet, held in the DMA buffers the writes
//! will send. An append encodes its frames straight into the last buffer, and a write takes
//! the first buffer whole, so no byte is copied between an append and the device.
//!
//! Why: copying staged bytes into each write's own DMA buffer was 44-45 % of the shard
//! thread at full Synced bandwidth (perf with dwarf call graphs, `docs/flamegraphs/`). Those
//! bytes had left the cache since they were staged, so the copy ran at memory speed. Now a
//! write copies only the partial block it leaves behind (under one block), into the next
//! buffer, which rewrites that block.
//!
//! The buffers ("chunks") come from glommio's registered DMA memory (`Config::
//! io_memory_bytes`), so a write goes out as `WRITE_FIXED`; past it, from the heap. A chunk
//! is sized by what the log's writes have been taking, from 16 KiB up to the largest write
//! (`flush_threshold_bytes`): a chunk that fills before a write takes it makes the next one
//! twice as large; a write that takes a part-filled chunk sizes the next one to twice what it
//! took, but at least half its size. So a depth-1 writer holds small chunks and a fast one
//! writes whole `flush_threshold_bytes` chunks.

use crate::format::segment::{align_down, align_up};
use crate::limits::BLOCK_SIZE;
use glommio::io::{DmaBuffer, DmaFile};
use std::collections::VecDeque;

/// The smallest chunk made (unless the largest write is smaller). A log holds its last chunk
/// between writes, so this is what an idle or slow log keeps of DMA memory (64 KiB kept 4x as
/// much for a shard of many slow logs, for no measurable gain).
pub const MIN_CHUNK: usize = 16 << 10;

/// One DMA buffer of staged bytes, for file positions `[pos, pos + len)`.
pub struct Chunk {
    /// Block-aligned.
    pub pos: u64,
    pub len: usize,
    /// Its length is the chunk's capacity, a whole number of blocks.
    pub buf: DmaBuffer,
    /// It holds only the block that a write left partly written, in a file with fresh blocks:
    /// that block is rewritten by a write of its own (see `ActiveSegment::take_write`).
    pub head: bool,
}

impl Chunk {
    fn cap(&self) -> usize {
        self.buf.len()
    }

    fn room(&self) -> usize {
        self.cap() - self.len
    }

    pub fn end(&self) -> u64 {
        self.pos + self.len as u64
    }

    pub fn is_full(&self) -> bool {
        self.len == self.cap()
    }

    /// The staged bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.buf.as_bytes()[..self.len]
    }

    /// Makes it what a write sends: trimmed to whole blocks, the tail of its last block zeroed
    /// (the buffer's memory held an earlier write's bytes, and recovery must find zeros past
    /// the last frame, never stale frames).
    pub fn into_write_buffer(self) -> DmaBuffer {
        let mut buf = self.buf;
        let padded = align_up(self.len as u64) as usize;
        buf.trim_to_size(padded);
        buf.as_bytes_mut()[self.len..].fill(0);
        buf
    }
}

/// Staged bytes as a run of chunks, contiguous in the file: each chunk starts where the one
/// before it ends, and every chunk but the last is full.
pub struct Staging {
    chunks: VecDeque<Chunk>,
    /// Capacity of the next chunk made.
    next_cap: usize,
    /// The largest chunk: the largest write.
    max_cap: usize,
    /// A frame that does not fit in the last chunk's room is encoded here and copied across.
    scratch: Vec<u8>,
}

impl Staging {
    /// `max_cap`, the largest write, is a whole number of blocks.
    pub fn new(max_cap: u64) -> Staging {
        let max_cap = max_cap as usize;
        debug_assert!(max_cap >= BLOCK_SIZE as usize && (max_cap as u64).is_multiple_of(BLOCK_SIZE));
        Staging {
            chunks: VecDeque::new(),
            next_cap: MIN_CHUNK.min(max_cap),
            max_cap,
            scratch: Vec::new(),
        }
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    pub fn front(&self) -> Option<&Chunk> {
        self.chunks.front()
    }

    /// True if the first chunk is full (a write of it takes a whole chunk).
    pub fn front_is_full(&self) -> bool {
        self.chunks.front().is_some_and(Chunk::is_full)
    }

    /// Bytes held, padding of no kind included.
    pub fn len(&self) -> u64 {
        self.chunks.iter().map(|c| c.len as u64).sum()
    }

    /// DMA memory held: every chunk's capacity.
    pub fn capacity(&self) -> u64 {
        self.chunks.iter().map(|c| c.cap() as u64).sum()
    }

    /// True if the staging holds or would next make a chunk larger than the smallest, while
    /// holding no more than the partial block a write left (see `release_idle`).
    pub fn holds_more_than_idle(&self) -> bool {
        let min = MIN_CHUNK.min(self.max_cap);
        let lone_big = self.chunks.len() == 1
            && self
                .chunks
                .front()
                .is_some_and(|c| !c.head && c.cap() > min && c.len < BLOCK_SIZE as usize);
        lone_big || self.next_cap > min
    }

    /// For a log gone idle: a lone chunk holding only the partial block a write left is moved
    /// into one of the smallest size, and the next chunk made is the smallest. Without it an
    /// idle log keeps the chunk sized for its last burst (up to the largest write) for as long
    /// as it stays idle. Returns the bytes of DMA memory given back.
    pub fn release_idle(&mut self, file: &DmaFile) -> u64 {
        let min = MIN_CHUNK.min(self.max_cap);
        self.next_cap = min;
        self.scratch = Vec::new();
        let lone_big = self.chunks.len() == 1 && self.holds_more_than_idle();
        if !lone_big {
            return 0;
        }
        let c = self.chunks.pop_front().expect("one chunk");
        self.push_chunk(file, c.pos, min, false);
        let n = self.chunks.back_mut().expect("just made");
        n.buf.as_bytes_mut()[..c.len].copy_from_slice(c.bytes());
        n.len = c.len;
        debug_assert!(!self.holds_more_than_idle());
        (c.cap() - min) as u64
    }

    /// One past the last staged byte, if any is staged.
    pub fn end(&self) -> Option<u64> {
        self.chunks.back().map(Chunk::end)
    }

    fn push_chunk(&mut self, file: &DmaFile, pos: u64, cap: usize, head: bool) {
        debug_assert_eq!(pos % BLOCK_SIZE, 0);
        debug_assert_eq!(cap as u64 % BLOCK_SIZE, 0);
        debug_assert!(self.end().is_none_or(|e| e == pos), "chunks are contiguous");
        self.chunks.push_back(Chunk {
            pos,
            len: 0,
            buf: file.alloc_dma_buffer(cap),
            head,
        });
    }

    /// Makes the chunk after a full last one (or the first, at `at`).
    fn grow(&mut self, file: &DmaFile, at: u64) {
        let cap = self.next_cap;
        if self.chunks.back().is_some_and(|c| !c.head) {
            // Appends outran the writes: the next chunk is larger.
            self.next_cap = (self.next_cap * 2).min(self.max_cap);
        }
        self.push_chunk(file, at, cap, false);
    }

    /// Room for `len` bytes at file position `at` (the end of the staged bytes, or a block
    /// boundary when none are staged) in one chunk, or `None` if they would straddle two
    /// (then use `push`).
    pub fn slot(&mut self, file: &DmaFile, at: u64, len: usize) -> Option<&mut [u8]> {
        debug_assert!(self.end().is_none_or(|e| e == at));
        if self.chunks.back().is_none_or(Chunk::is_full) {
            self.grow(file, at);
        }
        let c = self.chunks.back_mut()?;
        if c.room() < len {
            return None;
        }
        let start = c.len;
        c.len += len;
        Some(&mut c.buf.as_bytes_mut()[start..start + len])
    }

    /// Appends `bytes` at file position `at`, across as many chunks as they need.
    pub fn push(&mut self, file: &DmaFile, at: u64, mut bytes: &[u8]) {
        let mut at = at;
        while !bytes.is_empty() {
            if self.chunks.back().is_none_or(Chunk::is_full) {
                self.grow(file, at);
            }
            let Some(c) = self.chunks.back_mut() else { return };
            let n = c.room().min(bytes.len());
            c.buf.as_bytes_mut()[c.len..c.len + n].copy_from_slice(&bytes[..n]);
            c.len += n;
            at += n as u64;
            bytes = &bytes[n..];
        }
    }

    /// Appends a frame that `fill` encodes into a buffer of `len` bytes, and returns `fill`'s
    /// result: in place when it fits in one chunk, else through the scratch buffer.
    pub fn append<R>(&mut self, file: &DmaFile, at: u64, len: usize, fill: impl FnOnce(&mut [u8]) -> R) -> R {
        if let Some(out) = self.slot(file, at, len) {
            return fill(out);
        }
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        scratch.resize(len, 0);
        let r = fill(&mut scratch);
        self.push(file, at, &scratch);
        self.scratch = scratch;
        r
    }

    /// Takes the first chunk for a write. If it was the last and ends mid-block, a new chunk
    /// starts with a copy of that partial block, which the next write rewrites; in a file
    /// with `fresh` blocks, it holds that block alone (`Chunk::head`).
    pub fn take_front(&mut self, file: &DmaFile, fresh: bool) -> Option<Chunk> {
        let c = self.chunks.pop_front()?;
        if !self.chunks.is_empty() {
            debug_assert!(c.is_full(), "only the last chunk is part-filled");
            return Some(c);
        }
        if !c.is_full() && !c.head {
            // A write took a part-filled chunk: the next is sized for twice what it took,
            // shrinking by at most half at a time, so one early write (an age flush of a fast
            // stream) costs a few smaller writes, not a climb back from the smallest.
            // Powers of two: the pool's buddy allocator rounds every buffer up to one.
            let want = (2 * c.len).next_power_of_two().max(c.cap() / 2);
            let want = align_down(want as u64) as usize;
            self.next_cap = want.clamp(MIN_CHUNK.min(self.max_cap), self.max_cap);
            debug_assert_eq!(self.next_cap as u64 % BLOCK_SIZE, 0);
        }
        let tail_pos = align_down(c.end());
        if tail_pos < c.end() {
            let from = (tail_pos - c.pos) as usize;
            self.resume(file, tail_pos, &c.bytes()[from..], fresh);
        }
        Some(c)
    }

    /// Starts staging again at `pos` with the partial block `tail` that is already on disk
    /// (or in a write), so the next write rewrites it (a write taking the staged front, or
    /// recovery reopening a segment).
    pub fn resume(&mut self, file: &DmaFile, pos: u64, tail: &[u8], fresh: bool) {
        debug_assert!(self.chunks.is_empty());
        debug_assert!(tail.len() < BLOCK_SIZE as usize);
        let cap = if fresh { BLOCK_SIZE as usize } else { self.next_cap };
        self.push_chunk(file, pos, cap, fresh);
        if let Some(c) = self.chunks.back_mut() {
            c.buf.as_bytes_mut()[..tail.len()].copy_from_slice(tail);
            c.len = tail.len();
        }
    }

    /// Appends the staged bytes in `[at, end)` to `out`; the range must be staged.
    pub fn read(&self, mut at: u64, end: u64, out: &mut Vec<u8>) {
        for c in &self.chunks {
            if at >= end {
                break;
            }
            if c.end() <= at {
                continue;
            }
            debug_assert!(c.pos <= at);
            let upto = end.min(c.end());
            out.extend_from_slice(&c.bytes()[(at - c.pos) as usize..(upto - c.pos) as usize]);
            at = upto;
        }
        debug_assert_eq!(at, end, "the range was staged");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A slow writer's chunks shrink to the smallest size, and a fast one's grow to the
    /// largest write: what a log holds between writes follows what its writes take.
    #[test]
    fn chunk_sizes_follow_the_writes() {
        crate::startup::with_dma_file("staging-sizes", |file, _| async move {
            let max = 1u64 << 20;
            let mut st = Staging::new(max);
            let mut at = 0u64;
            let take = |st: &mut Staging| st.take_front(&file, false).expect("a chunk").buf.len();
            // A fast writer: 8 MiB staged before any write.
            for _ in 0..2048 {
                st.push(&file, at, &[7u8; 4096]);
                at += 4096;
            }
            let mut caps = Vec::new();
            while !st.is_empty() {
                caps.push(take(&mut st));
            }
            assert_eq!(caps[0], MIN_CHUNK, "a new log starts small");
            assert!(caps.windows(2).all(|w| w[1] >= w[0]), "sizes only grow: {caps:?}");
            assert_eq!(caps.iter().filter(|&&c| c == max as usize).count(), caps.len() - 7);
            // Then a slow one: a write per 5 KiB record. It ends mid-block, so the next chunk
            // holds the partial block; its size halves per write down to the smallest.
            let mut held = Vec::new();
            for _ in 0..12 {
                st.push(&file, at, &[9u8; 5000]);
                at += 5000;
                take(&mut st);
                held.push(st.front().map(|c| c.buf.len()));
            }
            assert_eq!(held[0], Some(max as usize / 2), "at most half at once: {held:?}");
            assert_eq!(held.last(), Some(&Some(MIN_CHUNK)), "down to the smallest: {held:?}");
        });
    }

    /// A log gone idle after a burst keeps one smallest chunk with its partial block, byte
    /// for byte, and its next chunk is the smallest.
    #[test]
    fn an_idle_log_releases_all_but_the_smallest_chunk() {
        crate::startup::with_dma_file("staging-idle", |file, _| async move {
            let max = 1u64 << 20;
            let mut st = Staging::new(max);
            let mut at = 0u64;
            for _ in 0..1024 {
                st.push(&file, at, &[5u8; 4096]);
                at += 4096;
            }
            while st.front_is_full() {
                st.take_front(&file, false);
            }
            // The burst's last write ends mid-block: the chunk after it holds that block.
            st.push(&file, at, &[6u8; 5000]);
            at += 5000;
            while !st.is_empty() && st.len() >= BLOCK_SIZE {
                st.take_front(&file, false);
            }
            let tail_pos = align_down(at);
            let mut before = Vec::new();
            st.read(tail_pos, at, &mut before);
            assert!(st.holds_more_than_idle(), "cap {} after the burst", st.capacity());
            let held = st.capacity();
            assert!(held > MIN_CHUNK as u64);
            assert_eq!(st.release_idle(&file), held - MIN_CHUNK as u64);
            assert_eq!(st.capacity(), MIN_CHUNK as u64);
            assert!(!st.holds_more_than_idle());
            assert_eq!(st.release_idle(&file), 0, "nothing more to give back");
            let mut after = Vec::new();
            st.read(tail_pos, at, &mut after);
            assert_eq!(after, before, "the partial block moved intact");
            // Staging goes on from there, and grows again from the smallest.
            st.push(&file, at, &[7u8; 20000]);
            assert_eq!(st.front().map(|c| c.buf.len()), Some(MIN_CHUNK));
            assert_eq!(st.front().map(|c| c.pos), Some(tail_pos));
        });
    }

    /// A small deterministic generator: the test needs varied sizes, not a dependency.
    struct Rng(u64);
    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    /// Appends of every size (in place, straddling, larger than a chunk) and writes taken at
    /// random points: the writes and what stays staged hold exactly the bytes appended, in
    /// file order, every write but the last partial one is whole blocks, only a partial block
    /// is ever written twice, and chunk sizes stay within their bounds.
    #[test]
    fn writes_and_staged_bytes_are_exactly_the_appended_bytes() {
        crate::startup::with_dma_file("staging", |file, _| async move {
            // Largest writes of a power of two, of an odd number of blocks, and of one block.
            let cases = [
                (1, false, 1 << 20),
                (2, true, 1 << 20),
                (3, false, 300 << 10),
                (4, true, 300 << 10),
                (5, false, 12 << 10),
                (6, true, 4096),
            ];
            for (seed, fresh, max_cap) in cases {
                let mut rng = Rng(0x9E37_79B9_7F4A_7C15u64.wrapping_mul(seed));
                let mut st = Staging::new(max_cap);
                let mut all: Vec<u8> = Vec::new();
                // What the disk would hold after every write so far.
                let mut disk: Vec<u8> = Vec::new();
                let mut stage_pos = 0u64;
                let mut writes = 0;
                for step in 0..3000 {
                    let len = match rng.below(10) {
                        0 => rng.below(3 * max_cap) as usize + 1,
                        1..=3 => 4096,
                        _ => rng.below(600) as usize + 1,
                    };
                    let bytes: Vec<u8> = (0..len).map(|i| (i as u64 * 7 + step) as u8).collect();
                    let at = all.len() as u64;
                    if step % 2 == 0 {
                        st.append(&file, at, len, |out| out.copy_from_slice(&bytes));
                    } else {
                        st.push(&file, at, &bytes);
                    }
                    all.extend_from_slice(&bytes);
                    assert_eq!(st.end(), Some(all.len() as u64));
                    while rng.below(3) == 0 && !st.is_empty() {
                        let c = st.take_front(&file, fresh).expect("a chunk");
                        assert_eq!(c.pos, align_down(stage_pos), "writes follow each other");
                        assert!(c.buf.len() <= max_cap as usize);
                        assert_eq!(c.buf.len() as u64 % BLOCK_SIZE, 0, "capacity in whole blocks");
                        if c.head {
                            assert!(fresh && c.buf.len() == BLOCK_SIZE as usize);
                        }
                        let (c_pos, end) = (c.pos, c.end());
                        let buf = c.into_write_buffer();
                        assert_eq!(buf.len() as u64 % BLOCK_SIZE, 0);
                        // The write lands on the disk image, rewriting at most the partial
                        // block the last one left, with the same bytes.
                        let pos = c_pos as usize;
                        assert!(disk.len() - pos < BLOCK_SIZE as usize);
                        assert_eq!(&disk[pos..], &buf.as_bytes()[..disk.len() - pos]);
                        disk.truncate(pos);
                        disk.extend_from_slice(buf.as_bytes());
                        assert!(disk[end as usize..].iter().all(|&b| b == 0), "zero padding");
                        disk.truncate(end as usize);
                        stage_pos = end;
                        writes += 1;
                        if st.is_empty() {
                            assert_eq!(end % BLOCK_SIZE, 0, "a partial block stays staged");
                        }
                    }
                    let mut staged = Vec::new();
                    if let Some(f) = st.front() {
                        st.read(f.pos, all.len() as u64, &mut staged);
                        assert_eq!(&staged[..], &all[f.pos as usize..], "seed {seed} step {step}");
                    }
                }
                assert_eq!(&disk[..], &all[..disk.len()]);
                assert!(writes > 100);
            }
        });
    }
}
