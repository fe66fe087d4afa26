//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod loop_mount;

use aof_engine::{Config, Durability, Engine, Error};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A fresh data directory on a real (O_DIRECT-capable) file system under the target dir.
/// Directories stay after the test for inspection; those of test processes that have exited
/// are removed by the next run's first call, so they never pile up (a full workspace run
/// leaves over a GiB).
pub fn tempdir(name: &str) -> PathBuf {
    static SWEPT: std::sync::Once = std::sync::Once::new();
    SWEPT.call_once(sweep_exited);
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "{name}-{}-{}",
        std::process::id(),
        aof_engine_test_serial()
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Removes `<name>-<pid>-<serial>` directories whose process is gone.
fn sweep_exited() {
    let Ok(entries) = std::fs::read_dir(env!("CARGO_TARGET_TMPDIR")) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        let mut parts = name.rsplitn(3, '-');
        let (Some(serial), Some(pid), Some(_)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let (Ok(_), Ok(pid)) = (serial.parse::<u64>(), pid.parse::<u32>()) else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

fn aof_engine_test_serial() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// Small segments and budgets so tests roll segments and feel backpressure quickly.
pub fn small_config(root: &std::path::Path, shards: usize) -> Config {
    let mut c = Config::new(root);
    c.shards = shards;
    c.segment_size_bytes = 256 << 10;
    c.max_record_bytes = 64 << 10;
    c.index_interval_bytes = 2048;
    c.flush_threshold_bytes = 64 << 10;
    c.shard_memory_budget_bytes = 1 << 20;
    c.io_memory_bytes = 1 << 20;
    c
}

/// `small_config` with sealed segments left raw (no Tier1 recompression): for tests that
/// inspect or damage sealed `.seg` files themselves.
pub fn raw_config(root: &std::path::Path, shards: usize) -> Config {
    let mut c = small_config(root, shards);
    c.tier1_compress = false;
    c
}

/// Deterministic payload for record `i` of log `log` with length `len`.
pub fn payload(log: usize, i: u64, len: usize) -> Vec<u8> {
    let mut x = (log as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ i.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

pub fn open(c: Config) -> Engine {
    Engine::open(c).expect("engine opens")
}

pub const ALL: [Durability; 3] = [Durability::Memory, Durability::Written, Durability::Synced];

/// Every file below `d`, sorted.
pub fn walk(d: &Path) -> Vec<PathBuf> {
    fn go(d: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                go(&p, out);
            } else {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    go(d, &mut out);
    out.sort();
    out
}

/// Every segment file below `d`, sorted.
pub fn seg_files(d: &Path) -> Vec<PathBuf> {
    walk(d)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect()
}

/// Every file holding a segment in any local tier (`.seg` raw or active, `.t1` Tier1).
pub fn segment_files(d: &Path) -> Vec<PathBuf> {
    walk(d)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|x| x == "seg" || x == "t1"))
        .collect()
}

/// Generous bound that only proves "does not hang".
pub const T: Duration = Duration::from_secs(30);

/// An engine that cannot hang its test: `close` is bounded, and an engine dropped while the
/// test panics (say, after a request timed out) is leaked instead of joined, so the failure is
/// reported instead of the test binary hanging on a stuck shard.
pub struct Eng(pub Option<Engine>);

pub fn start(c: Config) -> Eng {
    Eng(Some(open(c)))
}

impl std::ops::Deref for Eng {
    type Target = Engine;
    fn deref(&self) -> &Engine {
        self.0.as_ref().expect("engine already closed")
    }
}

impl Eng {
    pub fn close(mut self) -> Result<(), Error> {
        close_within(self.0.take().expect("engine already closed"), T)
    }
}

impl Drop for Eng {
    fn drop(&mut self) {
        if let Some(e) = self.0.take() {
            if std::thread::panicking() {
                std::mem::forget(e);
            } else {
                let _ = close_within(e, T);
            }
        }
    }
}

pub fn close_within(e: Engine, t: Duration) -> Result<(), Error> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(e.close());
    });
    rx.recv_timeout(t)
        .unwrap_or_else(|_| panic!("Engine::close did not finish within {t:?}"))
}
