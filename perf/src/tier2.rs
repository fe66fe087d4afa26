//! The Tier2 scenario: does a bridge uploading at full speed slow the shards down?
//!
//! One run measures, against the same object store: (1) the store's own raw PUT rate (objects
//! of Tier1-file size, `transfer.concurrency` at once), (2) append latency with a backlog of
//! Tier1 segments and the bridge not running (idle), (3) the same with the bridge running and
//! uploading that backlog meanwhile, and the rate at which it uploaded. Targets: (3)'s p99
//! within 10 % of (2)'s; the upload rate is reported next to (1).

use crate::report::Table;
use crate::workload::{self, Mode, Producer, Size, Spec};
use crate::Res;
use aof_s3_bridge::config::Credentials;
use aof_s3_bridge::worker::{InProcess, Worker};
use aof_s3_bridge::{open_store, AnyStore, BridgeConfig, Metrics, ObjectStore};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(clap::Args, Clone)]
pub struct BridgeArgs {
    /// Object store: `file://DIR` (default: a directory under --dir), or an S3 endpoint below.
    #[arg(long)]
    target: Option<String>,
    /// S3 endpoint, e.g. http://127.0.0.1:7480 (`s3-bridge/scripts/rgw.sh start` prints it).
    #[arg(long)]
    endpoint: Option<String>,
    #[arg(long, default_value = "aof-perf")]
    bucket: String,
    #[arg(long, default_value = "us-east-1")]
    region: String,
    #[arg(long, env = "AOF_S3_ACCESS_KEY")]
    access_key: Option<String>,
    #[arg(long, env = "AOF_S3_SECRET_KEY", hide_env_values = true)]
    secret_key: Option<String>,
    /// Seconds measured per run (after 0.5 s of warm-up).
    #[arg(long, default_value_t = 3.0)]
    secs: f64,
    /// MiB of compressed Tier1 segments waiting for upload when the runs start.
    #[arg(long, default_value_t = 256)]
    backlog_mib: u64,
    /// Upload paces to measure, in MiB/s (`transfer.upload_bytes_per_sec`; 0 = unpaced). One
    /// busy run per pace. Default: unpaced and the bridge's default pace.
    #[arg(long, value_delimiter = ',')]
    pace_mib: Vec<u64>,
}

impl BridgeArgs {
    /// Refuses knobs that would measure nothing, before anything runs.
    pub fn check(&self) -> Result<(), String> {
        crate::check_secs("--secs", self.secs)?;
        if self.backlog_mib == 0 {
            return Err("--backlog-mib must be at least 1: the busy run uploads that backlog".into());
        }
        Ok(())
    }
}

fn config(a: &BridgeArgs, dir: &Path) -> BridgeConfig {
    let mut cfg = BridgeConfig {
        prefix: format!("perf-{}", std::process::id()),
        metrics_addr: None,
        ..Default::default()
    };
    match (&a.endpoint, &a.target) {
        (Some(ep), _) => {
            cfg.target = "s3".into();
            cfg.s3.endpoint = Some(ep.clone());
            cfg.s3.bucket = a.bucket.clone();
            cfg.s3.region = a.region.clone();
            if let (Some(k), Some(s)) = (&a.access_key, &a.secret_key) {
                cfg.s3.credentials = Credentials::Static {
                    access_key_id: k.clone(),
                    secret_access_key: s.clone(),
                    session_token: None,
                };
            }
        }
        (None, Some(t)) => cfg.target = t.clone(),
        (None, None) => cfg.target = format!("file://{}", dir.join("tier2-store").display()),
    }
    cfg
}

/// The bridge on tokio threads of its own, serving one data directory until dropped.
struct Running {
    /// Set to the paced bytes released so far when the run's window ends (the guard drops),
    /// before in-flight uploads are waited for (by `_bridge`'s drop, after this one's).
    sent_at_stop: Option<(Arc<aof_s3_bridge::pace::Pacer>, Arc<std::sync::atomic::AtomicU64>)>,
    _bridge: InProcess,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some((p, at_stop)) = &self.sent_at_stop {
            at_stop.store(p.released_bytes(), std::sync::atomic::Ordering::Relaxed);
        }
    }
}

fn start(root: &Path, store: AnyStore, cfg: &BridgeConfig, sent_at_stop: Arc<std::sync::atomic::AtomicU64>) -> Running {
    let sent_at_stop = store.upload_pacer().map(|p| (p.clone(), sent_at_stop));
    let w = Worker::new(
        root.to_path_buf(),
        store,
        cfg,
        aof_engine::Tier2Config::default().ring_capacity,
        Arc::new(Metrics::default()),
    );
    Running {
        sent_at_stop,
        _bridge: InProcess::start(w, 2).expect("tokio runtime"),
    }
}

/// Raw PUT rate of the store: `concurrency` uploads at once of an `object_bytes` file, for
/// `secs`. Returns MB/s.
async fn raw_put_rate(store: &AnyStore, dir: &Path, prefix: &str, concurrency: usize, secs: f64) -> Res<f64> {
    let object_bytes = 8usize << 20;
    // Named for this process (concurrent runs on one --dir once shared one file) and removed
    // however the measurement ends.
    let scratch = crate::scratch::Scratch::new(dir, crate::scratch::RAW_PUT);
    let path = scratch.path().to_path_buf();
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let data: Vec<u8> = (0..object_bytes)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(&path, &data)?;
    let crc = crc32c::crc32c(&data);
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..concurrency {
        let (store, path, prefix) = (store.clone(), path.clone(), prefix.to_owned());
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < deadline {
                let key = format!("{prefix}/raw/{t}-{n}");
                store.put_file(&key, &path, crc).await?;
                let _ = store.delete(&key).await;
                n += 1;
            }
            Ok::<u64, aof_s3_bridge::StoreError>(n)
        }));
    }
    let mut objects = 0;
    for t in tasks {
        objects += t.await??;
    }
    drop(scratch);
    Ok(objects as f64 * object_bytes as f64 / started.elapsed().as_secs_f64() / 1e6)
}

pub fn bridge(dir: &Path, out: &Path, a: &BridgeArgs) -> Res<()> {
    let cfg = config(a, dir);
    cfg.validate()?;
    // The default file:// store keeps this run's objects under `tier2-store/perf-<pid>`
    // (the bridge's key prefix): removed when the run ends, as the engine's data is (other
    // stores are emptied under that prefix through the store, below). The store's directory itself goes too once no run uses it (the last run leaves it
    // empty); declared first, so dropped after the objects are.
    struct RemoveIfEmpty(PathBuf);
    impl Drop for RemoveIfEmpty {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir(&self.0);
        }
    }
    let _store_dir = RemoveIfEmpty(dir.join("tier2-store"));
    let _objects = (a.endpoint.is_none() && a.target.is_none())
        .then(|| crate::scratch::Scratch::new(&_store_dir.0, crate::scratch::BRIDGE_OBJECTS));
    let rt = tokio::runtime::Runtime::new()?;
    // The raw PUT rate is the store's, not the pace's: measured unpaced.
    let mut raw_cfg = cfg.clone();
    raw_cfg.transfer.upload_bytes_per_sec = 0;
    let store = rt.block_on(async {
        let s = open_store(&raw_cfg, Arc::new(Metrics::default())).await?;
        if let AnyStore::S3(s3) = &s {
            s3.ensure_bucket().await?;
        }
        Ok::<_, Box<dyn std::error::Error>>(s)
    })?;
    let measured = measure(&rt, &store, dir, out, a, &cfg);
    // The default store's directory goes with `_objects`; any other store (a bucket or a
    // directory the user named) loses what this run put under its prefix, whether the runs
    // succeeded or not. A cleanup that fails names what is left: the figures still stand.
    if _objects.is_none() {
        match rt.block_on(remove_prefix(&store, &cfg.prefix)) {
            Ok(n) => eprintln!(
                "removed this run's {n} objects under {}/ from {}",
                cfg.prefix, cfg.target
            ),
            Err(e) => eprintln!(
                "warning: could not remove this run's objects under {}/ from {}: {e}; remove them by hand",
                cfg.prefix, cfg.target
            ),
        }
    }
    measured
}

/// Deletes every object and aborts every unfinished upload under `prefix/`; returns how many
/// objects went.
async fn remove_prefix(store: &AnyStore, prefix: &str) -> Res<usize> {
    aof_s3_bridge::abort_stale_uploads(store, prefix, Duration::ZERO).await?;
    let keys = store.list_keys(prefix).await?;
    for k in &keys {
        store.delete(k).await?;
    }
    // A directory store keeps the folders its objects were in; the run is over, so nothing
    // races their removal (the store itself never removes folders: a put may be making one).
    if let AnyStore::File(f) = store {
        remove_empty_dirs(&f.root().join(prefix));
    }
    Ok(keys.len())
}

/// Removes `dir` and the directories under it that hold nothing but empty directories.
fn remove_empty_dirs(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_empty_dirs(&e.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

fn measure(
    rt: &tokio::runtime::Runtime,
    store: &AnyStore,
    dir: &Path,
    out: &Path,
    a: &BridgeArgs,
    cfg: &BridgeConfig,
) -> Res<()> {
    let default_pace = aof_s3_bridge::config::DEFAULT_UPLOAD_BYTES_PER_SEC >> 20;
    let paces = if a.pace_mib.is_empty() {
        let mut p = vec![0, default_pace];
        p.dedup();
        p
    } else {
        a.pace_mib.clone()
    };
    let steps = paces.len() + 2;
    eprintln!("[1/{steps}] raw PUT rate of {}", cfg.target);
    let raw = rt.block_on(raw_put_rate(store, dir, &cfg.prefix, cfg.transfer.concurrency, a.secs))?;
    let spec = |label: &str| Spec {
        label: label.into(),
        shards: 1,
        logs: 1,
        size: Size { min: 1024, max: 1024 },
        batch: 1,
        mode: Mode::Synced,
        producer: Producer::Shard,
        concurrency: 16,
        duration: Duration::from_secs_f64(a.secs),
        warmup: Duration::from_millis(500),
        rate: None,
        busy_shards: false,
        spin_before_park_us: 0,
        reply_spin_us: 0,
        backlog_mib: a.backlog_mib,
        compress: true,
        // Stored frames: the backlog uploads at its full size, so the upload rate means
        // something (log-like records shrink ~13x with zstd).
        compression: aof_engine::Profile::None,
        backlog_compressed: true,
        tier2: true,
        flush_threshold_kib: None,
        writes_in_flight: None,
        preempt_us: None,
        io_workers_spare: false,
        no_dsync: false,
        io_memory_kib: None,
        segment_mib: None,
        retention_mib: None,
        no_recycle: false,
        no_zero_fill: false,
        compress_on_shard: false,
    };
    eprintln!("[2/{steps}] appends, bridge idle");
    let idle = workload::run(dir, &spec("synced 1 KiB x16, Tier1 backlog, bridge idle"))?;
    let mut t = Table::new(&[
        "run",
        "rec/s",
        "p50 µs",
        "p99 µs",
        "p99.9 µs",
        "p99 / idle",
        "uploaded",
        "upload MB/s",
    ]);
    t.row(vec![
        idle.spec.label.clone(),
        format!("{:.0}", idle.records_per_s),
        format!("{:.0}", idle.latency.p50_us),
        format!("{:.0}", idle.latency.p99_us),
        format!("{:.0}", idle.latency.p999_us),
        "1.00".into(),
        "0 MiB".into(),
        "-".into(),
    ]);
    let mut busy_runs = Vec::new();
    let mut verdicts = Vec::new();
    for (i, &pace) in paces.iter().enumerate() {
        let mut pace_label = if pace == 0 {
            "unpaced".to_string()
        } else {
            format!("paced {pace} MiB/s")
        };
        eprintln!(
            "[{}/{steps}] appends, bridge uploading the backlog, {pace_label}",
            i + 3
        );
        let mut cfg2 = cfg.clone();
        cfg2.transfer.upload_bytes_per_sec = pace << 20;
        // A slow pace needs fewer streams sharing it (see `validate`): halve them until valid.
        while cfg2.validate().is_err() && cfg2.transfer.concurrency * cfg2.transfer.part_concurrency > 1 {
            let t = &mut cfg2.transfer;
            if t.part_concurrency > 1 {
                t.part_concurrency /= 2;
            } else {
                t.concurrency /= 2;
            }
        }
        cfg2.validate()?;
        if (cfg2.transfer.concurrency, cfg2.transfer.part_concurrency)
            != (cfg.transfer.concurrency, cfg.transfer.part_concurrency)
        {
            let t = &cfg2.transfer;
            pace_label += &format!(" ({}x{} streams)", t.concurrency, t.part_concurrency);
        }
        let store2 = rt.block_on(open_store(&cfg2, Arc::new(Metrics::default())))?;
        let sent = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let sent2 = sent.clone();
        let label = format!("bridge uploading, {pace_label}");
        let busy = workload::run_with(dir, &spec(&label), &move |root| {
            Some(Box::new(start(root, store2.clone(), &cfg2, sent2.clone())) as Box<dyn std::any::Any>)
        })?;
        let uploaded: u64 = busy.engine.iter().map(|s| s.tier2_uploaded_bytes).sum();
        // Paced uploads of big files may not finish within the run: count the bytes sent.
        let uploaded = uploaded.max(sent.load(std::sync::atomic::Ordering::Relaxed));
        let run_secs = (busy.spec.duration + busy.spec.warmup).as_secs_f64();
        let upload_rate = uploaded as f64 / run_secs / 1e6;
        let ratio = busy.latency.p99_us / idle.latency.p99_us;
        let whole = uploaded >= (a.backlog_mib << 20) * 9 / 10;
        t.row(vec![
            label,
            format!("{:.0}", busy.records_per_s),
            format!("{:.0}", busy.latency.p50_us),
            format!("{:.0}", busy.latency.p99_us),
            format!("{:.0}", busy.latency.p999_us),
            format!("{ratio:.2}"),
            format!("{:.0} MiB", uploaded as f64 / (1 << 20) as f64),
            format!("{upload_rate:.0}{}", if whole { " (≥; whole backlog)" } else { "" }),
        ]);
        verdicts.push(format!(
            "- {pace_label}: p99 ratio **{ratio:.2}** ({}), upload rate {upload_rate:.0} MB/s = {:.2} of the raw PUT rate{}",
            if ratio <= 1.10 { "met" } else { "missed" },
            upload_rate / raw,
            if pace == default_pace { " (the bridge's default pace)" } else { "" },
        ));
        busy_runs.push(serde_json::json!({
            "upload_bytes_per_sec": pace << 20, "p99_ratio": ratio, "upload_mb_per_s": upload_rate,
            "whole_backlog_uploaded": whole, "run": busy,
        }));
    }
    let md = format!(
        "# aof-perf bridge ({})\n\n{}\nAppend p99 with the bridge uploading / idle (goal ≤ 1.10):\n{}\n\n\
         The store's raw PUT rate (8 MiB objects, {} at once, unpaced) measured in this run: **{raw:.0} MB/s**. \
         A rate marked ≥ means the whole backlog went up within the run.\n",
        cfg.target,
        t.markdown(),
        verdicts.join("\n"),
        cfg.transfer.concurrency,
    );
    print!("{md}");
    std::fs::write(out.join("bridge.md"), &md)?;
    let json = serde_json::json!({
        "target": cfg.target, "raw_put_mb_per_s": raw, "idle": idle, "busy": busy_runs,
    });
    std::fs::write(out.join("bridge.json"), serde_json::to_string_pretty(&json)?)?;
    Ok(())
}
