//! Engine configuration: every tunable with its default and its reason, validated as a whole
//! before anything touches the disk.

use crate::error::{Error, Result};
use crate::format::frame::frame_len;
use crate::format::segment::align_down;
use crate::limits::{BLOCK_SIZE, RECORD_BYTES_CEILING, SEGMENT_HEADER_BYTES};
use std::path::PathBuf;
use std::time::Duration;

/// How far an append must get before it is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Durability {
    /// Acknowledged once copied into the shard's write buffer. Lost on a crash that happens
    /// before the next flush (at most `flush_interval` later, or sooner under load).
    Memory,
    /// Acknowledged once written to the device with O_DIRECT. Survives a process crash; a power
    /// loss may still lose it if the device has a volatile cache.
    Written,
    /// Acknowledged once fdatasync'ed. Concurrent `Synced` appends share one fdatasync.
    Synced,
}

/// Where a pinned shard's io_uring workers run (`Config::io_worker_cpus`). Linux runs them on
/// the CPUs of the thread that owns the rings, that is on the shard's own core, where each one
/// preempts the shard. Measured on this 2-core VM, one shard, spare core idle:
///
/// | | `Own` | `Spare` |
/// |---|---|---|
/// | Memory 256 B at half load, p90 / p99 | 6.2-7.6 / 37-77 µs | 2.6-3.2 / 27-41 µs |
/// | Synced 1 KiB depth 1, p50 | 157-167 µs | 188-199 µs |
/// | Synced 1 KiB x 16 producers | 58-59k rec/s | 52-53k rec/s |
///
/// With `Own` the workers preempted a busy shard ~1,700 times a second (37 ms of every
/// second, up to 177 µs each). With `Spare` every completion an appender waits for has to wake
/// a worker on the other, idle core, which costs ~30 µs on this VM. `Own` is the default because
/// Synced appends matter most. Choose `Spare` for Memory or Written appends that need a short
/// tail on a shard that is kept busy, on a host with cores to spare.
///
/// With the workers on other CPUs, I/O no append waits for (Memory data flushed by size or age,
/// Tier1 recompression's reads and writes) is also handed to them at once (`IOSQE_ASYNC`), so
/// the shard does not spend the 20-40 µs an inline submission costs on this VM
/// (`ShardStats::punted_writes`, `punted_tier1_ios`).
///
/// `Spare` with `Config::spin_before_park` at 200 µs recovers the Synced cost and more: the
/// shard spins while its fdatasync runs on the other core instead of halting its vCPU, so the
/// completion needs no wake-up. Synced 4 KiB depth 1, p50 / p99: 275-284 / 394-457 µs with the
/// defaults, 180-202 / 307-363 µs so (three alternating rounds). Never spin with `Own`: the
/// spin holds off the very workers the shard waits for (depth 1 fell to 2,165-2,382 rec/s
/// from 3,368-3,560).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum IoWorkerCpus {
    /// The shard's own core (the kernel's behaviour).
    #[default]
    Own,
    /// The allowed CPUs no shard is pinned to; all allowed CPUs when every one has a shard.
    Spare,
    /// These CPUs (each must be one the process may run on).
    Cpus(Vec<usize>),
}

/// Where a shard runs zstd when it recompresses sealed segments into Tier1.
///
/// On the shard, compression runs in 16 KiB steps of ~28 µs between which appends run, and at
/// the default pace it keeps the core ~11 % busy: a `Memory` producer at half load then has a
/// p99 of tens of µs. On a thread of its own on a CPU no shard uses, the shard only hands
/// frames over. Measured on this 2-core VM, one shard; `docs/perf-history.md` has the figures.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum CompressionCpus {
    /// On the shard's own executor, in steps.
    Shard,
    /// On a thread of the shard's own on the allowed CPUs no shard is pinned to; on the shard
    /// when every allowed CPU has a shard or `pin_cores` is off (a thread sharing a shard's
    /// core would preempt it for a scheduler slice, milliseconds, at a time).
    #[default]
    Spare,
    /// On a thread of the shard's own, on these CPUs (each must be one the process may run
    /// on), whether or not shards are pinned.
    Cpus(Vec<usize>),
}

/// How sealed segments are recompressed into Tier1. Each is one zstd setting; the metrics
/// (`ShardStats::compress_*`) show what each buys on your data. Changeable at run time per
/// shard with `Handle::set_compression`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub enum Profile {
    /// Frames stored as they are: no CPU spent, no space saved. Reads still decode one frame.
    None,
    /// zstd level 1: about the cheapest compression there is.
    Fast,
    /// zstd level 3 (zstd's own default).
    #[default]
    Balanced,
    /// zstd level 9: smaller files for several times the CPU of `Balanced`.
    Compact,
}

impl Profile {
    /// The zstd level, or `None` for stored frames.
    pub fn zstd_level(self) -> Option<i32> {
        match self {
            Profile::None => None,
            Profile::Fast => Some(1),
            Profile::Balanced => Some(3),
            Profile::Compact => Some(9),
        }
    }

    pub fn parse(s: &str) -> Option<Profile> {
        match s {
            "none" => Some(Profile::None),
            "fast" => Some(Profile::Fast),
            "balanced" => Some(Profile::Balanced),
            "compact" => Some(Profile::Compact),
            _ => None,
        }
    }
}

/// How long a log keeps its records. Whole sealed segments are removed, oldest first, from
/// every tier; the active segment is never removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    /// Remove a sealed segment once its newest record is older than this.
    pub max_age: Option<Duration>,
    /// Remove the oldest sealed segments while the log's records (uncompressed frame bytes)
    /// exceed this.
    pub max_bytes: Option<u64>,
}

/// How a shard talks to the Tier2 bridge (`s3-bridge/`, a separate process).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tier2Config {
    /// Slots in each of the shard's two rings (a power of two). Default 1024.
    pub ring_capacity: u64,
    /// How long a read of a segment that lives only in Tier2 waits for the bridge to bring it
    /// back before failing with `Tier2Unavailable`. Default 30 s.
    pub read_timeout: Duration,
    /// Uploads and deletes the manifest says are owed and that got no answer are asked again
    /// after this long. Default 5 s.
    pub retry_interval: Duration,
}

impl Default for Tier2Config {
    fn default() -> Self {
        Tier2Config {
            ring_capacity: 1024,
            read_timeout: Duration::from_secs(30),
            retry_interval: Duration::from_secs(5),
        }
    }
}

/// The longest `Config::reply_spin`: past this a spin costs more CPU than the wake-up it saves.
pub(crate) const MAX_REPLY_SPIN: Duration = Duration::from_millis(10);

#[derive(Debug, Clone)]
pub struct Config {
    /// Data directory. Each shard keeps its logs under `root/shard-NNN/`.
    pub root: PathBuf,
    /// Create `root` (not its parents) if it is missing. Default `true`.
    pub create_if_missing: bool,
    /// Number of shards, one executor thread each. `0` means one per available core.
    pub shards: usize,
    /// Pin each shard's thread to its own core. More shards than cores wrap around.
    pub pin_cores: bool,
    /// A segment is rolled when its frames would pass this size. Default 64 MiB.
    pub segment_size_bytes: u64,
    /// A segment with records older than this is rolled at the next flush. `None`: never.
    pub segment_max_age: Option<Duration>,
    /// Largest record payload accepted. Default 1 MiB.
    pub max_record_bytes: u32,
    /// Per-shard budget for bytes appended but not yet written (write buffers and writes in
    /// flight). Past it, `try_append` returns `Backpressure` and `append` waits. Default 64 MiB.
    pub shard_memory_budget_bytes: u64,
    /// A log with this many unflushed bytes is flushed without waiting for the interval, so
    /// writes are large but memory stays bounded. Default 1 MiB.
    pub flush_threshold_bytes: u64,
    /// Writes of one log that may be in flight at once, each at most `flush_threshold_bytes`
    /// (each holds its staging chunk in memory until it completes). More keep a fast device
    /// busy while the shard stages the next write; a write that ends mid-block still waits
    /// for its predecessor, so small flushes gain nothing. Default 8: with 4, 128 producers of
    /// 64 KiB Synced batches staged faster than four writes drained, and the next write
    /// waited for the shard's next trip through its reactor to reap a completion; the disk
    /// had nothing in flight 33 % of the time (block-layer trace), 1 % with 8 or 16.
    pub flush_writes_in_flight: usize,
    /// `Memory`-mode data is flushed at least this often. Default 10 ms.
    pub flush_interval: Duration,
    /// Sparse index granularity: one entry per this many bytes of frames. Default 16 KiB.
    pub index_interval_bytes: u64,
    /// Space reserved ahead of the write head with fallocate, so block allocation does not
    /// turn into latency spikes. Default: the whole segment at creation.
    pub preallocate: bool,
    /// Keep the files of raw segments that retention removes, or that Tier1 recompression
    /// replaces, as the log's next spare segments (at most two per log) instead of deleting
    /// them: writes over blocks the file already used are faster than first writes to new
    /// ones (on the VM measured here, where freed blocks are discarded, most likely because
    /// the host allocates them again; see `tiering::retire_raw`; measured:
    /// Synced 4 KiB batched appends at a retention limit, see `docs/perf-history.md`).
    /// Default `true`; `false` frees their space at once.
    pub recycle_segments: bool,
    /// Write zeros through a new spare segment file, at most this fast (per shard, whatever the
    /// number of logs zeroing), before it becomes the next segment, in logs that take `Synced`
    /// appends (or `sync` calls). An fdatasync after writes into preallocated (unwritten)
    /// blocks must also make their conversion to written blocks durable; over zeroed blocks it
    /// only flushes the data. Measured here, Synced 4 KiB depth 1 with 4 MiB segments (so most
    /// appends are past the first segment, which is created with the log and never zeroed),
    /// p50 / p99: 234-281 / 371-462 µs without, 164-187 / 325-364 µs with, and 40 % more
    /// appends a second; Synced 1 KiB x16 on-shard with the defaults, 39-51k rec/s without,
    /// 58-73k with. Zeroing stops, and the spare is taken as far as it got, once a roll wants
    /// it; paced, so a fast writer hardly notices it (a segment written at 1.5 GB/s is
    /// replaced after ~40 ms, of which the default pace zeroes ~2.5 MiB). Costs one write of
    /// every segment's bytes for a log that grows slowly enough to be zeroed ahead. The
    /// segment a log is created with, or restarts in, is in new blocks: such a log makes its
    /// spare at once and, once it is zeroed whole, rolls onto it if the segment is not yet
    /// half full (`ShardStats::early_rolls`; a new 64 MiB-segment log at depth 1 then leaves
    /// its first segment after ~1 s: 4,981-5,509 against 3,767-4,272 rec/s over its first
    /// 4 s). Default 64 MiB/s; `None` turns it off. Only with `preallocate`.
    pub zero_fill_spares_bytes_per_sec: Option<u64>,
    /// Capacity of each shard's cross-thread request queue. Default 4096.
    pub inbox_capacity: usize,
    /// Each shard's pool of DMA buffers, which glommio also registers with io_uring (locked
    /// memory) when `RLIMIT_MEMLOCK` allows. Write and read buffers that do not fit come
    /// from the heap instead: a 1 MiB buffer is then mapped, faulted in and unmapped for every
    /// write, which was measured as stalls of up to 1-2 ms on the shard (Memory appends at
    /// half load: p99.9 320-1300 µs with a 2 MiB pool, 116-140 µs with 8 MiB). Records are
    /// staged in these buffers too (see `flush_pool_bytes`). Keep it above
    /// (`flush_writes_in_flight` + 1) x `flush_threshold_bytes` (rounded up to a power of two)
    /// for each log that writes at full speed, and above what many producers keep staged at
    /// once: 128 producers of 64 KiB Synced batches stage 8 MiB while the writes before
    /// them run, and with an 8 MiB pool the shard spent 25-29 % of its time in the kernel
    /// (mapping and faulting heap buffers) against 9-11 % with 32 or 64 MiB. Default 32 MiB.
    pub io_memory_bytes: usize,
    /// io_uring submission depth per ring. Default 128.
    pub ring_depth: usize,
    /// Busy-poll this long before an idle shard parks, trading CPU for cross-thread latency.
    /// Default `None` (park at once). Only with the io workers off the shard's core (see
    /// `IoWorkerCpus`, which has the measurements).
    pub spin_before_park: Option<Duration>,
    /// How long `Reply::wait` on another thread polls for the shard's answer before the
    /// thread parks (`Reply::wait_spinning` sets it per call). Default `None` (park at once).
    /// Parking costs each round trip a wake-up of the caller on its (virtual) CPU: Memory
    /// appends from one foreign thread here, p50 / p99: parked 66-69 / 106-135 µs at 15k
    /// round trips a second; spinning 100 µs, 28-30 / 68-81 µs at 30k; with the shard also
    /// spinning (`spin_before_park` 200 µs), 2.7-2.8 / 12.5-13.1 µs at 300k. The spin holds
    /// the caller's CPU, so it suits callers with a core of their own and requests that
    /// answer quickly; a Synced append's fdatasync outlasts any spin worth its CPU (16
    /// foreign threads of Synced 1 KiB appends on 2 cores, 50 µs spin: 17-18k against
    /// 32-35k rec/s parked). At most 10 ms.
    pub reply_spin: Option<Duration>,
    /// Let a Synced append that finds nothing else to write or sync go to the device as one
    /// write with `RWF_DSYNC` (durable when it completes) instead of a write and then an
    /// fdatasync: one trip through the kernel instead of two, with no wake-up of the shard
    /// between them. Only a write that is alone, with no sync running and every byte before
    /// it already durable, is sent so; everything else keeps the group commit (writes, then
    /// one fdatasync for all of them). Default `true`.
    pub dsync_writes: bool,
    /// How long a shard runs tasks before it returns to its io_uring: submitting queued I/O,
    /// reaping completions, and letting `yield_if_needed` in a long task give the core to
    /// others (glommio's preemption timer, 100 ms by default there). Default 250 µs: measured
    /// against 100 ms, a `Memory` producer at half load had p99 0.1 ms instead of 6 ms, a
    /// foreign request to a shard busy with CPU work waited 0.5 ms instead of 200 ms, and
    /// maximum throughput did not change. The period was a kernel timeout armed on every
    /// return to the ring, which cost Synced appends 5-15 %; with the vendored glommio's
    /// clock deadline (`third_party/README.md`, patch 2) that cost is gone (16 producers of
    /// 1 KiB: 58k rec/s on-shard, 34k from foreign threads, against 57-58k and 31k at 100 ms).
    /// Above 2 ms a `Memory` producer that is ahead of the flusher sleeps 1 µs instead of
    /// yielding (see `Log::append`).
    pub preempt_interval: Duration,
    /// Where the kernel's io_uring workers of a pinned shard run: the threads that carry out
    /// the writes into preallocated space, fdatasyncs and fallocates that cannot complete
    /// inline. Default `Own` (see `IoWorkerCpus` for the trade-off). Ignored when `pin_cores`
    /// is off.
    pub io_worker_cpus: IoWorkerCpus,
    /// Recompress sealed segments into Tier1 files. Default `true`. With `false` sealed
    /// segments stay as they were written.
    pub tier1_compress: bool,
    /// Profile used for new Tier1 files until changed at run time. Default `Balanced`.
    pub compression: Profile,
    /// Where compression runs. Default `Spare` (see `CompressionCpus`).
    pub compression_cpus: CompressionCpus,
    /// Uncompressed bytes per Tier1 frame (whole records; a larger record makes a larger
    /// frame). A point read decodes one frame. Default 64 KiB.
    pub tier1_frame_bytes: u32,
    /// Ceiling on the device traffic (bytes read plus written) of Tier1 recompression, per
    /// shard, so background work leaves the device to appends. `None`: unpaced. Default
    /// 64 MiB/s; at sustained ingest above about twice that, sealed segments wait longer in
    /// raw form (they are counted against `tier1_budget_bytes` either way).
    pub tier1_io_bytes_per_sec: Option<u64>,
    /// Per-shard budget for sealed segment files on local disk (raw and Tier1). Past it, the
    /// least recently read segments already safe in Tier2 are evicted; if none can be, appends
    /// get `Error::DiskBudget` until space is freed. Default `None`: no budget.
    pub tier1_budget_bytes: Option<u64>,
    /// Retention for logs that have none of their own (`Handle::set_retention`). Default: keep
    /// everything.
    pub retention: Retention,
    /// How often each shard checks retention and its Tier1 budget. Default 1 s.
    pub housekeeping_interval: Duration,
    /// Scheduler shares of the shard's background tiering work (compression, eviction,
    /// retention) against 1000 for appends and reads. Default 20.
    pub tiering_shares: usize,
    /// The manifest is compacted into a snapshot after this many records. Default 1024.
    pub manifest_compact_records: u64,
    /// A Tier2 bridge serves this data directory: Tier1 segments are uploaded, reads of
    /// evicted segments hydrate them, retention deletes reach Tier2. Default `None`.
    pub tier2: Option<Tier2Config>,
}

/// The explicit CPU list of an `IoWorkerCpus`, if it has one.
fn io_worker_list(c: &IoWorkerCpus) -> Option<&[usize]> {
    match c {
        IoWorkerCpus::Cpus(list) => Some(list),
        _ => None,
    }
}

/// The explicit CPU list of a `CompressionCpus`, if it has one.
fn compression_list(c: &CompressionCpus) -> Option<&[usize]> {
    match c {
        CompressionCpus::Cpus(list) => Some(list),
        _ => None,
    }
}

impl Config {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Config {
            root: root.into(),
            create_if_missing: true,
            shards: 0,
            pin_cores: true,
            segment_size_bytes: 64 << 20,
            segment_max_age: None,
            max_record_bytes: 1 << 20,
            shard_memory_budget_bytes: 64 << 20,
            flush_threshold_bytes: 1 << 20,
            flush_writes_in_flight: 8,
            flush_interval: Duration::from_millis(10),
            index_interval_bytes: 16 << 10,
            preallocate: true,
            recycle_segments: true,
            zero_fill_spares_bytes_per_sec: Some(64 << 20),
            inbox_capacity: 4096,
            io_memory_bytes: 32 << 20,
            ring_depth: 128,
            spin_before_park: None,
            reply_spin: None,
            dsync_writes: true,
            preempt_interval: Duration::from_micros(250),
            io_worker_cpus: IoWorkerCpus::Own,
            tier1_compress: true,
            compression: Profile::Balanced,
            compression_cpus: CompressionCpus::Spare,
            tier1_frame_bytes: 64 << 10,
            tier1_io_bytes_per_sec: Some(64 << 20),
            tier1_budget_bytes: None,
            retention: Retention::default(),
            housekeeping_interval: Duration::from_secs(1),
            tiering_shares: 20,
            manifest_compact_records: 1024,
            tier2: None,
        }
    }

    /// DMA pool memory one busy log takes: `flush_writes_in_flight` writes of
    /// `flush_threshold_bytes` and the chunk being appended to (records are staged in the
    /// buffers their writes send), each rounded up to a power of two by the pool's buddy
    /// allocator. `io_memory_bytes` should be at least this (see there). Bytes staged or in
    /// flight are unflushed, and appends wait once a shard's unflushed bytes reach
    /// `shard_memory_budget_bytes`, so past that budget (and the chunk being filled) more
    /// writes in flight never happen: with a 64 MiB threshold and the default budget, 128 MiB
    /// rather than 9 x 64.
    pub fn flush_pool_bytes(&self) -> u64 {
        let chunk = self.flush_threshold_bytes.next_power_of_two();
        let writes = chunk * self.flush_writes_in_flight as u64;
        writes.min(self.shard_memory_budget_bytes.next_power_of_two()) + chunk
    }

    /// The largest write of a segment, and the largest staging chunk (see `staging`).
    pub fn write_max_bytes(&self) -> u64 {
        align_down(self.flush_threshold_bytes).max(BLOCK_SIZE)
    }

    /// The zero-filling pace of new spares, if they are zero-filled at all: only preallocated
    /// files have unwritten blocks to fill (`zero_fill_spares_bytes_per_sec`).
    pub fn zero_fill_pace(&self) -> Option<u64> {
        self.zero_fill_spares_bytes_per_sec.filter(|_| self.preallocate)
    }

    /// The shard count after resolving `0` to the number of available cores.
    pub fn effective_shards(&self) -> usize {
        if self.shards == 0 {
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
        } else {
            self.shards
        }
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        if self.effective_shards() > 1024 {
            return bad(format!("shards = {} exceeds 1024", self.effective_shards()));
        }
        if self.max_record_bytes == 0 || self.max_record_bytes > RECORD_BYTES_CEILING {
            return bad(format!(
                "max_record_bytes = {} must be in 1..={RECORD_BYTES_CEILING}",
                self.max_record_bytes
            ));
        }
        let max_frame = frame_len(self.max_record_bytes as usize) as u64;
        if !self.segment_size_bytes.is_multiple_of(BLOCK_SIZE)
            || self.segment_size_bytes < SEGMENT_HEADER_BYTES + 2 * max_frame
        {
            return bad(format!(
                "segment_size_bytes = {} must be a multiple of {BLOCK_SIZE} and hold a header and two maximum-size records ({} bytes)",
                self.segment_size_bytes,
                SEGMENT_HEADER_BYTES + 2 * max_frame
            ));
        }
        if self.shard_memory_budget_bytes < 2 * max_frame + 2 * BLOCK_SIZE {
            return bad(format!(
                "shard_memory_budget_bytes = {} must hold at least two maximum-size records ({} bytes)",
                self.shard_memory_budget_bytes,
                2 * max_frame + 2 * BLOCK_SIZE
            ));
        }
        if self.flush_threshold_bytes == 0 || self.flush_threshold_bytes > self.shard_memory_budget_bytes {
            return bad(format!(
                "flush_threshold_bytes = {} must be in 1..=shard_memory_budget_bytes",
                self.flush_threshold_bytes
            ));
        }
        if self.flush_writes_in_flight == 0 || self.flush_writes_in_flight > 64 {
            return bad(format!(
                "flush_writes_in_flight = {} must be in 1..=64",
                self.flush_writes_in_flight
            ));
        }
        if self.reply_spin.is_some_and(|s| s > MAX_REPLY_SPIN) {
            return bad(format!(
                "reply_spin = {:?} exceeds {MAX_REPLY_SPIN:?}: a reply that takes longer is better waited for parked",
                self.reply_spin
            ));
        }
        if self.preempt_interval < Duration::from_micros(50) || self.preempt_interval > Duration::from_millis(100) {
            return bad(format!(
                "preempt_interval = {:?} must be in [50 µs, 100 ms]",
                self.preempt_interval
            ));
        }
        let cpu_lists = [
            ("io_worker_cpus", io_worker_list(&self.io_worker_cpus)),
            ("compression_cpus", compression_list(&self.compression_cpus)),
        ];
        for (name, list) in cpu_lists {
            let Some(list) = list else { continue };
            let allowed = crate::engine::allowed_cpus();
            if list.is_empty() || list.iter().any(|c| !allowed.contains(c)) {
                return bad(format!(
                    "{name} = {list:?} must be a non-empty list of CPUs this process may run on ({allowed:?})"
                ));
            }
        }
        if self.flush_interval.is_zero() || self.flush_interval > Duration::from_secs(60) {
            return bad(format!(
                "flush_interval = {:?} must be in (0, 60 s]",
                self.flush_interval
            ));
        }
        if self.index_interval_bytes < 512 || self.index_interval_bytes > self.segment_size_bytes {
            return bad(format!(
                "index_interval_bytes = {} must be in 512..=segment_size_bytes",
                self.index_interval_bytes
            ));
        }
        if self.inbox_capacity < 2 || self.inbox_capacity > 1 << 20 {
            return bad(format!(
                "inbox_capacity = {} must be in 2..=1048576",
                self.inbox_capacity
            ));
        }
        if self.ring_depth == 0 || self.ring_depth > 32768 {
            return bad(format!("ring_depth = {} must be in 1..=32768", self.ring_depth));
        }
        if !(4096..=16 << 20).contains(&self.tier1_frame_bytes) {
            return bad(format!(
                "tier1_frame_bytes = {} must be in 4096..=16777216",
                self.tier1_frame_bytes
            ));
        }
        if matches!(self.zero_fill_spares_bytes_per_sec, Some(r) if r < 1 << 20) {
            return bad(format!(
                "zero_fill_spares_bytes_per_sec = {:?} must be at least 1 MiB/s (or None)",
                self.zero_fill_spares_bytes_per_sec
            ));
        }
        if matches!(self.tier1_io_bytes_per_sec, Some(r) if r < 1 << 20) {
            return bad(format!(
                "tier1_io_bytes_per_sec = {:?} must be at least 1 MiB/s (or None)",
                self.tier1_io_bytes_per_sec
            ));
        }
        if matches!(self.tier1_budget_bytes, Some(b) if b < self.segment_size_bytes) {
            return bad(format!(
                "tier1_budget_bytes = {:?} must hold at least one segment ({} bytes)",
                self.tier1_budget_bytes, self.segment_size_bytes
            ));
        }
        if matches!(self.retention.max_age, Some(d) if d.is_zero()) || self.retention.max_bytes == Some(0) {
            return bad("retention limits must be positive (use None for no limit)".into());
        }
        if self.housekeeping_interval < Duration::from_millis(1)
            || self.housekeeping_interval > Duration::from_secs(3600)
        {
            return bad(format!(
                "housekeeping_interval = {:?} must be in [1 ms, 1 h]",
                self.housekeeping_interval
            ));
        }
        if !(1..=1000).contains(&self.tiering_shares) {
            return bad(format!("tiering_shares = {} must be in 1..=1000", self.tiering_shares));
        }
        if let Some(t) = &self.tier2 {
            if !t.ring_capacity.is_power_of_two() || t.ring_capacity < 16 || t.ring_capacity > 1 << 20 {
                return bad(format!(
                    "tier2.ring_capacity = {} must be a power of two in 16..=1048576",
                    t.ring_capacity
                ));
            }
            if t.read_timeout.is_zero() || t.retry_interval.is_zero() {
                return bad("tier2.read_timeout and tier2.retry_interval must be positive".into());
            }
        }
        if self.manifest_compact_records == 0 {
            return bad("manifest_compact_records must be positive".into());
        }
        if matches!(self.segment_max_age, Some(d) if d.is_zero()) {
            return bad("segment_max_age must be positive".into());
        }
        Ok(())
    }
}
