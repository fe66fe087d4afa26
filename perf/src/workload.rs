//! The workload generator shared by every engine run and by the baseline: who produces, how
//! much, how fast (closed loop or open loop at a target rate), and the latency it saw.
//!
//! Open-loop latency is measured from each record's *intended* send time, so a stall delays
//! every record scheduled behind it and shows up in the percentiles (no coordinated omission).

use aof_engine::{Config, Durability, Engine, NewRecord, OwnedRecord, ShardStats};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
pub enum Producer {
    /// Tasks on the shards' own executors (thread-per-core, no hop).
    Shard,
    /// Threads outside the engine, through the Handle's lock-free queues.
    Foreign,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
pub enum Mode {
    Memory,
    Written,
    Synced,
}

impl Mode {
    pub fn durability(self) -> Durability {
        match self {
            Mode::Memory => Durability::Memory,
            Mode::Written => Durability::Written,
            Mode::Synced => Durability::Synced,
        }
    }
}

/// Record size: fixed, or uniform in a range (`64..4096`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Size {
    pub min: usize,
    pub max: usize,
}

impl std::str::FromStr for Size {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let parse = |x: &str| x.trim().parse::<usize>().map_err(|e| format!("bad size {x:?}: {e}"));
        match s.split_once("..") {
            Some((a, b)) => {
                let (min, max) = (parse(a)?, parse(b)?);
                if min > max {
                    return Err(format!("empty range {s}"));
                }
                Ok(Size { min, max })
            }
            None => {
                let v = parse(s)?;
                Ok(Size { min: v, max: v })
            }
        }
    }
}

impl Size {
    /// The size of producer `seed`'s record number `k`: uniform over the range, from a hash of
    /// both. (It was `k` modulo the range, a ramp: a run shorter than the range never reached
    /// its upper part.)
    pub(crate) fn pick(&self, seed: u64, k: u64) -> usize {
        if self.min == self.max {
            return self.min;
        }
        // splitmix64's finalizer.
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ k.wrapping_add(0xD1B5_4A32_D192_ED03);
        x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        x ^= x >> 31;
        self.min + (x % (self.max - self.min + 1) as u64) as usize
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Spec {
    pub label: String,
    pub shards: usize,
    pub logs: usize,
    pub size: Size,
    pub batch: usize,
    pub mode: Mode,
    pub producer: Producer,
    /// Concurrent producers per log (tasks or threads).
    pub concurrency: usize,
    pub duration: Duration,
    pub warmup: Duration,
    /// Total target records/s for an open-loop run; `None` = closed loop, as fast as it goes.
    /// Records, not appends: with `batch` records an append, appends go at `rate / batch`.
    pub rate: Option<f64>,
    /// Keep each shard busy with a CPU-bound background task (to measure foreign-request
    /// latency against a loaded shard).
    pub busy_shards: bool,
    /// `Config::spin_before_park` in µs (0 = park at once, the default).
    pub spin_before_park_us: u64,
    /// Foreign producers poll each reply this many µs before parking (`Config::reply_spin`;
    /// 0 = park at once).
    pub reply_spin_us: u64,
    /// MiB of raw sealed segments written to each shard before the run (by an engine with
    /// Tier1 compression off), so that at the run's start every shard has a compression
    /// backlog to work through while the producers append.
    pub backlog_mib: u64,
    /// Tier1 compression on during the run (`Config::tier1_compress`).
    pub compress: bool,
    pub compression: aof_engine::Profile,
    /// The backlog is recompressed into Tier1 before the run starts (for Tier2 scenarios:
    /// a backlog ready to upload), instead of left raw.
    pub backlog_compressed: bool,
    /// The engine links to a Tier2 bridge (`Config::tier2`).
    pub tier2: bool,
    /// `Config::flush_threshold_bytes` (the largest single write) in KiB; `None` = default.
    pub flush_threshold_kib: Option<u64>,
    /// `Config::flush_writes_in_flight`; `None` = default.
    #[serde(default)]
    pub writes_in_flight: Option<usize>,
    /// `Config::preempt_interval` in µs; `None` = default.
    #[serde(default)]
    pub preempt_us: Option<u64>,
    /// `Config::io_worker_cpus = Spare` instead of the default `Own`.
    #[serde(default)]
    pub io_workers_spare: bool,
    /// `Config::dsync_writes = false`.
    #[serde(default)]
    pub no_dsync: bool,
    /// `Config::io_memory_bytes` in KiB; `None` = default.
    #[serde(default)]
    pub io_memory_kib: Option<u64>,
    /// `Config::segment_size_bytes` in MiB; `None` = default.
    #[serde(default)]
    pub segment_mib: Option<u64>,
    /// `Config::retention` by size, in MiB; `None` = no retention.
    #[serde(default)]
    pub retention_mib: Option<u64>,
    /// `Config::recycle_segments = false`.
    #[serde(default)]
    pub no_recycle: bool,
    /// `Config::zero_fill_spares_bytes_per_sec = None`.
    #[serde(default)]
    pub no_zero_fill: bool,
    /// `Config::compression_cpus = Shard`.
    #[serde(default)]
    pub compress_on_shard: bool,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Latency {
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub p9999_us: f64,
    pub max_us: f64,
    pub samples: u64,
}

impl Latency {
    pub fn from_hist(h: &Histogram<u64>) -> Self {
        let q = |x: f64| h.value_at_quantile(x) as f64 / 1000.0;
        Latency {
            p50_us: q(0.5),
            p90_us: q(0.9),
            p99_us: q(0.99),
            p999_us: q(0.999),
            p9999_us: q(0.9999),
            max_us: h.max() as f64 / 1000.0,
            samples: h.len(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    pub spec: Spec,
    pub records: u64,
    pub records_per_s: f64,
    pub mb_per_s: f64,
    pub per_shard_records_per_s: Vec<f64>,
    pub per_shard_mb_per_s: Vec<f64>,
    pub latency: Latency,
    /// Process CPU time (user + system) over wall time, in cores.
    pub cpu_cores: f64,
    /// The engine's own counters, per shard.
    pub engine: Vec<ShardStats>,
    /// An open-loop run whose producers could not keep to the schedule: the offered rate is
    /// beyond what the setup sustains (rates and latencies are then those of an overload).
    pub behind_schedule: bool,
    /// Appends an open loop that fell behind never sent: it stops at the window's end plus
    /// the window's length again. Their latency is not in the percentiles.
    pub unsent_appends: u64,
}

pub fn new_hist() -> Histogram<u64> {
    Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).expect("histogram bounds")
}

pub fn cpu_time() -> Duration {
    let mut u: libc::rusage = unsafe_zeroed_rusage();
    // SAFETY: getrusage fills the struct we own.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(u.ru_utime) + tv(u.ru_stime)
}

fn unsafe_zeroed_rusage() -> libc::rusage {
    // SAFETY: rusage is plain old data; all-zero is a valid value.
    unsafe { std::mem::zeroed() }
}

pub fn progress(label: &str, total: Duration) -> ProgressBar {
    let pb = ProgressBar::new(total.as_millis() as u64);
    pb.set_style(
        ProgressStyle::with_template("{prefix:>28} [{bar:30}] {elapsed:>4} {msg}")
            .expect("template")
            .progress_chars("=> "),
    );
    pb.set_prefix(label.to_owned());
    pb
}

/// Drives a progress bar for `total` while `work` runs on this thread's caller.
pub fn with_progress<T>(label: &str, total: Duration, counter: Arc<AtomicU64>, work: impl FnOnce() -> T) -> T {
    let pb = progress(label, total);
    let done = Arc::new(AtomicBool::new(false));
    let (d, p, c) = (done.clone(), pb.clone(), counter);
    let ticker = std::thread::spawn(move || {
        let start = Instant::now();
        while !d.load(Ordering::Relaxed) {
            p.set_position(start.elapsed().as_millis() as u64);
            p.set_message(format!("{} records", c.load(Ordering::Relaxed)));
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    let r = work();
    done.store(true, Ordering::Relaxed);
    let _ = ticker.join();
    pb.finish_and_clear();
    r
}

pub fn engine_config(dir: &Path, spec: &Spec) -> Config {
    let mut c = Config::new(dir);
    c.shards = spec.shards;
    c.max_record_bytes = c.max_record_bytes.max(spec.size.max as u32);
    c.spin_before_park = (spec.spin_before_park_us > 0).then(|| Duration::from_micros(spec.spin_before_park_us));
    c.reply_spin = (spec.reply_spin_us > 0).then(|| Duration::from_micros(spec.reply_spin_us));
    c.tier1_compress = spec.compress;
    c.compression = spec.compression;
    c.tier2 = spec.tier2.then(aof_engine::Tier2Config::default);
    if let Some(n) = spec.writes_in_flight {
        c.flush_writes_in_flight = n;
    }
    if let Some(kib) = spec.flush_threshold_kib {
        c.flush_threshold_bytes = kib << 10;
    }
    // Room in the DMA pool for the writes in flight, as `Config::io_memory_bytes` advises:
    // buffers that do not fit come from the heap, which costs ~10 % of batched Synced
    // bandwidth and most of the Memory append tail here.
    c.io_memory_bytes = c.io_memory_bytes.max(c.flush_pool_bytes() as usize + (2 << 20));
    if spec.io_workers_spare {
        c.io_worker_cpus = aof_engine::IoWorkerCpus::Spare;
    }
    c.dsync_writes = !spec.no_dsync;
    if let Some(kib) = spec.io_memory_kib {
        c.io_memory_bytes = (kib as usize) << 10;
    }
    if let Some(mib) = spec.segment_mib {
        c.segment_size_bytes = mib << 20;
        // A segment must hold two records of the largest size allowed: allowing only the
        // workload's own lets small segments (`--segment-mib 1`) run records of small sizes.
        c.max_record_bytes = (spec.size.max as u32).max(1);
    }
    c.recycle_segments = !spec.no_recycle;
    if spec.no_zero_fill {
        c.zero_fill_spares_bytes_per_sec = None;
    }
    if spec.compress_on_shard {
        c.compression_cpus = aof_engine::CompressionCpus::Shard;
    }
    if let Some(mib) = spec.retention_mib {
        c.retention = aof_engine::Retention {
            max_age: None,
            max_bytes: Some(mib << 20),
        };
    }
    if let Some(us) = spec.preempt_us {
        c.preempt_interval = Duration::from_micros(us);
    }
    c
}

/// Writes `spec.backlog_mib` MiB of compressible records to one log per shard and seals them,
/// with compression off, so the next engine opened on `root` starts with that backlog.
fn prefill_backlog(root: &Path, spec: &Spec) -> Result<(), aof_engine::Error> {
    let mut c = engine_config(root, spec);
    c.tier1_compress = spec.backlog_compressed;
    let engine = Engine::open(c)?;
    let h = engine.handle();
    let mut names: Vec<Option<String>> = vec![None; engine.shards()];
    let mut k = 0;
    while names.iter().any(Option::is_none) {
        let n = format!("backlog-{k}");
        let s = h.shard_of(&n);
        if names[s].is_none() {
            h.create_log(&n).wait()?;
            names[s] = Some(n);
        }
        k += 1;
    }
    let bytes = spec.backlog_mib << 20;
    let mut replies = Vec::new();
    for (s, n) in names.into_iter().enumerate() {
        let n = n.expect("every shard got a log");
        replies.push(engine.spawn_on(s, move |shard| async move {
            let log = shard.log(&n)?;
            let mut written = 0u64;
            let mut i = 0u64;
            while written < bytes {
                // Log-like text: compresses about 4:1 at the balanced profile.
                let rec = format!(
                    "{i:012} level=info svc=ingest msg=\"accepted batch\" size={} ",
                    i * 7919 % 100_000
                )
                .repeat(48);
                log.append(rec.as_bytes(), Durability::Memory).await?;
                written += rec.len() as u64;
                i += 1;
            }
            log.roll().await
        }));
    }
    for r in replies {
        r.wait()?;
    }
    if spec.backlog_compressed {
        for s in 0..engine.shards() {
            h.tiering_idle(s).wait()?;
        }
    }
    engine.close()
}

/// Names `logs` logs so they spread evenly over the shards.
pub fn log_names(h: &aof_engine::Handle, logs: usize) -> Vec<String> {
    let shards = h.shards();
    let per = logs.div_ceil(shards);
    let mut count = vec![0usize; shards];
    let mut names = Vec::new();
    let mut i = 0;
    while names.len() < logs {
        let n = format!("perf-{i}");
        let s = h.shard_of(&n);
        if count[s] < per {
            count[s] += 1;
            names.push(n);
        }
        i += 1;
    }
    names
}

/// When a producer should send its record `k`: on schedule (`start + k / rate`) in an open
/// loop, at once in a closed loop; `None` once that time is past `end`.
pub fn send_time(start: Instant, end: Instant, rate: Option<f64>, k: u64) -> Option<Instant> {
    let at = match rate {
        Some(r) => start + Duration::from_secs_f64(k as f64 / r),
        None => Instant::now(),
    };
    (at < end).then_some(at)
}

struct Shared {
    start: Instant,
    measure_from: Instant,
    end: Instant,
    /// An open loop that has fallen this far behind stops sending (at the window's end plus
    /// its length again), so an overload ends rather than queueing for hours.
    give_up: Instant,
    /// Appends due in the window that were never sent because of `give_up`.
    unsent: AtomicU64,
    counter: Arc<AtomicU64>,
}

impl Shared {
    /// True if an open-loop producer about to send its append `k` is past `give_up`; the
    /// appends it still owed the window are then counted in `unsent`.
    fn gave_up(&self, rate: Option<f64>, k: u64) -> bool {
        let Some(r) = rate else { return false };
        // A clock read per record would add to the latency the open loop measures; every
        // 64th append is soon enough to stop.
        if !k.is_multiple_of(64) || Instant::now() < self.give_up {
            return false;
        }
        let due = (self.end.duration_since(self.start).as_secs_f64() * r).ceil() as u64;
        self.unsent.fetch_add(due.saturating_sub(k), Ordering::Relaxed);
        true
    }
}

/// A producer's count of measured records, published to the progress counter in steps: one
/// atomic shared by producers on different cores, added to per record, moved its cache line
/// between the cores millions of times a second and cost two Memory shards ~20 % of their
/// throughput (2 shards / 1 shard 1.55-1.64 with it).
struct Tally<'a> {
    shared: &'a AtomicU64,
    unpublished: u64,
}

impl<'a> Tally<'a> {
    const STEP: u64 = 4096;

    fn new(shared: &'a AtomicU64) -> Self {
        Tally { shared, unpublished: 0 }
    }

    fn add(&mut self, n: u64) {
        self.unpublished += n;
        if self.unpublished >= Self::STEP {
            self.shared
                .fetch_add(std::mem::take(&mut self.unpublished), Ordering::Relaxed);
        }
    }
}

impl Drop for Tally<'_> {
    fn drop(&mut self) {
        self.shared.fetch_add(self.unpublished, Ordering::Relaxed);
    }
}

/// Runs one workload against a fresh engine in `dir`.
pub fn run(dir: &Path, spec: &Spec) -> Result<RunResult, aof_engine::Error> {
    run_with(dir, spec, &|_| None)
}

/// `run`, with `beside(root)` called once the engine is open (before the producers start);
/// what it returns (say, a Tier2 bridge serving `root`) lives until the producers are done.
pub fn run_with(
    dir: &Path,
    spec: &Spec,
    beside: &dyn Fn(&Path) -> Option<Box<dyn std::any::Any>>,
) -> Result<RunResult, aof_engine::Error> {
    // Declared before the engine, so dropped after it: the directory goes once the engine
    // has closed, on the error paths too.
    let scratch = crate::scratch::Scratch::new(dir, crate::scratch::RUN);
    let root: PathBuf = scratch.path().to_path_buf();
    if spec.backlog_mib > 0 {
        prefill_backlog(&root, spec)?;
    }
    let engine = Engine::open(engine_config(&root, spec))?;
    let guard = beside(&root);
    let h = engine.handle();
    let names = log_names(&h, spec.logs);
    for n in &names {
        h.create_log(n).wait()?;
    }
    let producers = (names.len() * spec.concurrency) as f64;
    // Each scheduled send is one append of `batch` records (the rate once counted appends,
    // so `--rate 20000 --batch 4` offered 80k records/s).
    let per_producer_rate = spec.rate.map(|r| r / producers / spec.batch.max(1) as f64);
    let counter = Arc::new(AtomicU64::new(0));
    let busy_stop = Arc::new(AtomicBool::new(false));
    let mut busy = Vec::new();
    if spec.busy_shards {
        for s in 0..engine.shards() {
            let stop = busy_stop.clone();
            busy.push(engine.spawn_on(s, move |_| async move {
                let mut x = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    for i in 0..20_000u64 {
                        x = x.wrapping_mul(6364136223846793005).wrapping_add(i);
                    }
                    glommio::yield_if_needed().await;
                }
                Ok(x)
            }));
        }
    }
    let cpu0 = cpu_time();
    let start = Instant::now();
    let shared = Arc::new(Shared {
        start,
        measure_from: start + spec.warmup,
        end: start + spec.warmup + spec.duration,
        give_up: start + spec.warmup + spec.duration * 2,
        unsent: AtomicU64::new(0),
        counter: counter.clone(),
    });
    let total = spec.warmup + spec.duration;
    let trace = std::env::var_os("AOF_PERF_TRACE").is_some().then(|| {
        let (h, stop) = (h.clone(), busy_stop.clone());
        std::thread::spawn(move || {
            let t0 = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                if let Ok(st) = h.stats(0).wait() {
                    eprintln!(
                        "{:>6} ms unflushed {:>9} writes {:>6} bp {:>4} spare_waits {}",
                        t0.elapsed().as_millis(),
                        st.unflushed_bytes,
                        st.writes,
                        st.backpressure_events,
                        st.spare_waits
                    );
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    });
    // The end is taken when the producers are done: the progress thread's join after that
    // waits up to one of its 100 ms ticks, which counted as lag and as time.
    let ((hist, per_log), finished) = with_progress(&spec.label, total, counter, || {
        let r = match spec.producer {
            Producer::Shard => run_on_shards(&engine, &names, spec, per_producer_rate, &shared),
            Producer::Foreign => run_foreign(&h, &names, spec, per_producer_rate, &shared),
        };
        r.map(|r| (r, Instant::now()))
    })?;
    let cpu = (cpu_time() - cpu0).as_secs_f64() / start.elapsed().as_secs_f64();
    busy_stop.store(true, Ordering::Relaxed);
    if let Some(t) = trace {
        let _ = t.join();
    }
    for b in busy {
        let _ = b.wait();
    }
    let mut per_shard = vec![Counted::default(); engine.shards()];
    for (i, n) in names.iter().enumerate() {
        per_shard[h.shard_of(n)].merge(per_log[i]);
    }
    let mut stats = Vec::new();
    for s in 0..engine.shards() {
        stats.push(h.stats(s).wait()?);
    }
    drop(guard);
    engine.close()?;
    drop(scratch);
    // An open loop that could not keep up sends its last scheduled appends late and finishes
    // after the window: its records took until then, so that is the time they are counted
    // over (the offered rate would otherwise be reported as the achieved one).
    let lag = finished.saturating_duration_since(shared.end);
    let mut secs = spec.duration.as_secs_f64();
    if spec.rate.is_some() {
        secs = secs.max(finished.saturating_duration_since(shared.measure_from).as_secs_f64());
    }
    let behind = spec.rate.is_some() && lag > (spec.duration / 20).max(Duration::from_millis(50));
    let unsent = shared.unsent.load(Ordering::Relaxed);
    if behind {
        eprintln!(
            "aof-perf: warning: {}: the open loop fell behind its schedule (its last append completed \
             {:.2} s after the window{}): this setup does not sustain the offered {} records/s; \
             latencies include the queue, and rec/s is what was achieved",
            spec.label,
            lag.as_secs_f64(),
            if unsent > 0 {
                format!("; {unsent} appends due in it were never sent")
            } else {
                String::new()
            },
            spec.rate.unwrap_or_default()
        );
    }
    let records: u64 = per_log.iter().map(|t| t.records).sum();
    let bytes: u64 = per_log.iter().map(|t| t.bytes).sum();
    Ok(RunResult {
        behind_schedule: behind,
        unsent_appends: unsent,
        spec: spec.clone(),
        records,
        records_per_s: records as f64 / secs,
        mb_per_s: bytes as f64 / secs / 1e6,
        per_shard_records_per_s: per_shard.iter().map(|c| c.records as f64 / secs).collect(),
        per_shard_mb_per_s: per_shard.iter().map(|c| c.bytes as f64 / secs / 1e6).collect(),
        latency: Latency::from_hist(&hist),
        cpu_cores: cpu,
        engine: stats,
    })
}

/// Waits until `at` on a shard: timer for long waits, yielding spin for the last stretch.
async fn sleep_until(at: Instant) {
    loop {
        let now = Instant::now();
        if now >= at {
            return;
        }
        let left = at - now;
        if left > Duration::from_micros(200) {
            glommio::timer::Timer::new(left - Duration::from_micros(100)).await;
        } else {
            glommio::executor().yield_task_queue_now().await;
        }
    }
}

type Outcome = Result<(Histogram<u64>, Vec<Counted>), aof_engine::Error>;

/// Records acknowledged inside the measured window, and their payload bytes.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Counted {
    pub records: u64,
    pub bytes: u64,
}

impl Counted {
    pub(crate) fn add(&mut self, records: u64, record_len: usize) {
        self.records += records;
        self.bytes += records * record_len as u64;
    }

    pub(crate) fn merge(&mut self, other: Counted) {
        self.records += other.records;
        self.bytes += other.bytes;
    }
}

fn run_on_shards(engine: &Engine, names: &[String], spec: &Spec, rate: Option<f64>, sh: &Arc<Shared>) -> Outcome {
    let mut replies = Vec::new();
    for (li, name) in names.iter().enumerate() {
        let (name, spec, sh) = (name.clone(), spec.clone(), sh.clone());
        let shard = engine.handle().shard_of(&name);
        replies.push(engine.spawn_on(shard, move |s| async move {
            let log = s.log(&name)?;
            let hist = Rc::new(RefCell::new(new_hist()));
            let count = Rc::new(RefCell::new(Counted::default()));
            let mut tasks = Vec::new();
            for p in 0..spec.concurrency {
                let (log, hist, count, spec, sh) = (log.clone(), hist.clone(), count.clone(), spec.clone(), sh.clone());
                tasks.push(glommio::spawn_local(async move {
                    let seed = (li * 1000 + p) as u64;
                    let mut buf = vec![0xA5u8; spec.size.max];
                    let mut k = 0u64;
                    let mut tally = Tally::new(&sh.counter);
                    while let Some(intended) = send_time(sh.start, sh.end, rate, k) {
                        if sh.gave_up(rate, k) {
                            break;
                        }
                        if rate.is_some() {
                            sleep_until(intended).await;
                        }
                        let len = spec.size.pick(seed, k);
                        buf[0..8.min(len)].copy_from_slice(&k.to_le_bytes()[..8.min(len)]);
                        if spec.batch <= 1 {
                            log.append_record(NewRecord::new(&buf[..len]), spec.mode.durability())
                                .await?;
                        } else {
                            let recs: Vec<NewRecord<'_>> =
                                (0..spec.batch).map(|_| NewRecord::new(&buf[..len])).collect();
                            log.append_batch(&recs, spec.mode.durability()).await?;
                        }
                        let done = Instant::now();
                        if done >= sh.measure_from && intended < sh.end {
                            hist.borrow_mut()
                                .saturating_record(done.duration_since(intended).as_nanos() as u64);
                            count.borrow_mut().add(spec.batch.max(1) as u64, len);
                            tally.add(spec.batch.max(1) as u64);
                        }
                        k += 1;
                        if rate.is_none() && k.is_multiple_of(64) {
                            glommio::yield_if_needed().await;
                        }
                    }
                    Ok::<(), aof_engine::Error>(())
                }));
            }
            for t in tasks {
                t.await?;
            }
            let h = hist.borrow().clone();
            let c = *count.borrow();
            Ok((h, c))
        }));
    }
    let mut hist = new_hist();
    let mut per_log = Vec::new();
    for r in replies {
        let (h, c) = r.wait()?;
        hist.add(&h).ok();
        per_log.push(c);
    }
    Ok((hist, per_log))
}

fn run_foreign(h: &aof_engine::Handle, names: &[String], spec: &Spec, rate: Option<f64>, sh: &Arc<Shared>) -> Outcome {
    let mut threads = Vec::new();
    for (li, name) in names.iter().enumerate() {
        for p in 0..spec.concurrency {
            let (h, name, spec, sh) = (h.clone(), name.clone(), spec.clone(), sh.clone());
            threads.push((
                li,
                std::thread::spawn(move || -> Result<(Histogram<u64>, Counted), aof_engine::Error> {
                    let mut hist = new_hist();
                    let mut count = Counted::default();
                    let seed = (li * 1000 + p) as u64;
                    let mut k = 0u64;
                    let mut tally = Tally::new(&sh.counter);
                    while let Some(intended) = send_time(sh.start, sh.end, rate, k) {
                        if sh.gave_up(rate, k) {
                            break;
                        }
                        while Instant::now() < intended {
                            let left = intended - Instant::now();
                            if left > Duration::from_micros(200) {
                                std::thread::sleep(left - Duration::from_micros(100));
                            } else {
                                std::hint::spin_loop();
                            }
                        }
                        let len = spec.size.pick(seed, k);
                        let d = spec.mode.durability();
                        if spec.batch <= 1 {
                            h.append(&name, vec![0xA5u8; len], d).wait()?;
                        } else {
                            let recs = (0..spec.batch).map(|_| OwnedRecord::new(vec![0xA5u8; len])).collect();
                            h.append_batch(&name, recs, d).wait()?;
                        }
                        let done = Instant::now();
                        if done >= sh.measure_from && intended < sh.end {
                            hist.saturating_record(done.duration_since(intended).as_nanos() as u64);
                            count.add(spec.batch.max(1) as u64, len);
                            tally.add(spec.batch.max(1) as u64);
                        }
                        k += 1;
                    }
                    Ok((hist, count))
                }),
            ));
        }
    }
    let mut hist = new_hist();
    let mut per_log = vec![Counted::default(); names.len()];
    for (li, t) in threads {
        let (hh, c) = t.join().expect("producer thread")?;
        hist.add(&hh).ok();
        per_log[li].merge(c);
    }
    Ok((hist, per_log))
}
