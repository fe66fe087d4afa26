//! Test support: the real RADOS Gateway (started through `scripts/rgw.sh`), stores wired to it,
//! and a fault-injecting TCP proxy.
//!
//! Nothing is skipped: if the gateway cannot be installed or started, every test that needs it
//! fails with the script's output.

#![allow(dead_code)] // each test binary uses a different part of this module

pub mod engine;
pub mod proxy;

use aof_s3_bridge::config::{BreakerConfig, BridgeConfig, Credentials, RetryConfig, TransferConfig};
use aof_s3_bridge::{Metrics, S3Store};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};

/// Where the gateway listens and how to sign for it (from `rgw.sh env`).
#[derive(Debug, Clone)]
pub struct Rgw {
    pub endpoint: String,
    pub access_key: String,
    pub secret_key: String,
    pub region: String,
}

impl Rgw {
    pub fn port(&self) -> u16 {
        self.endpoint
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("endpoint has a port")
    }
}

pub fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/rgw.sh")
}

/// Runs `rgw.sh ARGS`, panicking with its output on failure.
pub fn rgw_sh(args: &[&str]) -> String {
    let out = Command::new("bash")
        .arg(script())
        .args(args)
        .output()
        .expect("running scripts/rgw.sh");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "scripts/rgw.sh {} failed ({}): the S3 tests need a real RADOS Gateway on 127.0.0.1.\n{text}",
        args.join(" "),
        out.status
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The running gateway, installed and started on first use (idempotent: a healthy one is
/// reused, a dead radosgw is restarted).
pub fn rgw() -> &'static Rgw {
    static RGW: OnceLock<Rgw> = OnceLock::new();
    RGW.get_or_init(|| {
        let start = std::time::Instant::now();
        rgw_sh(&["install"]);
        let env = rgw_sh(&["start"]);
        eprintln!("rgw ready in {:?}", start.elapsed());
        let get = |name: &str| {
            env.lines()
                .find_map(|l| l.strip_prefix(&format!("{name}=")))
                .unwrap_or_else(|| panic!("rgw.sh start printed no {name}:\n{env}"))
                .to_string()
        };
        Rgw {
            endpoint: get("AOF_S3_ENDPOINT"),
            access_key: get("AOF_S3_ACCESS_KEY"),
            secret_key: get("AOF_S3_SECRET_KEY"),
            region: get("AOF_S3_REGION"),
        }
    })
}

/// A bucket name no other test (or earlier run) uses.
pub fn unique_bucket(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "aof-{tag}-{}-{}-{:08x}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        fastrand::u32(..)
    )
}

/// A config for the gateway at `endpoint` with test-sized settings: 5 MiB parts so a ~20 MiB
/// file is a real multipart upload, quick backoff so failure tests finish in seconds.
pub fn s3_config(endpoint: &str, bucket: &str) -> BridgeConfig {
    let rgw = rgw();
    let mut cfg = BridgeConfig {
        target: "s3".into(),
        prefix: "tier2".into(),
        metrics_addr: None,
        ..Default::default()
    };
    cfg.s3.endpoint = Some(endpoint.to_string());
    cfg.s3.bucket = bucket.to_string();
    cfg.s3.region = rgw.region.clone();
    cfg.s3.credentials = Credentials::Static {
        access_key_id: rgw.access_key.clone(),
        secret_access_key: rgw.secret_key.clone(),
        session_token: None,
    };
    cfg.transfer = TransferConfig {
        part_size_bytes: 5 << 20,
        multipart_threshold_bytes: 5 << 20,
        ..TransferConfig::default()
    };
    cfg.retry = RetryConfig {
        call_timeout_ms: 10_000,
        max_attempts: 6,
        base_backoff_ms: 20,
        max_backoff_ms: 500,
    };
    cfg.breaker = BreakerConfig {
        failure_threshold: 5,
        open_duration_ms: 500,
        half_open_probes: 1,
    };
    cfg
}

/// A store on a fresh bucket of the real gateway.
pub async fn s3_store(tag: &str) -> (S3Store, BridgeConfig) {
    let cfg = s3_config(&rgw().endpoint, &unique_bucket(tag));
    let store = connect(&cfg).await;
    (store, cfg)
}

pub async fn connect(cfg: &BridgeConfig) -> S3Store {
    cfg.validate().expect("test config is valid");
    let store = S3Store::connect(cfg, Arc::new(Metrics::default())).await;
    static SWEPT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if !SWEPT.swap(true, Ordering::SeqCst) {
        sweep_dead_test_buckets(store.client()).await;
    }
    store.ensure_bucket().await.expect("create test bucket");
    store
}

/// Deletes the buckets of test processes that have exited (their names carry the pid), so the
/// gateway's 20 GiB sparse OSD does not fill up over many runs. Buckets of live processes
/// (a concurrent run) are left alone. Best effort: failures only print.
async fn sweep_dead_test_buckets(client: &aws_sdk_s3::Client) {
    let Ok(listed) = client.list_buckets().send().await else {
        return;
    };
    for name in listed.buckets().iter().filter_map(|b| b.name()) {
        let pid = name
            .strip_prefix("aof-")
            .and_then(|rest| rest.split('-').nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        let Some(pid) = pid else { continue };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        if let Err(e) = empty_and_delete(client, name).await {
            eprintln!("could not delete old test bucket {name}: {e}");
        }
    }
}

async fn empty_and_delete(client: &aws_sdk_s3::Client, bucket: &str) -> Result<(), Box<dyn std::error::Error>> {
    let uploads = client.list_multipart_uploads().bucket(bucket).send().await?;
    for u in uploads.uploads() {
        let (Some(key), Some(id)) = (u.key(), u.upload_id()) else {
            continue;
        };
        client
            .abort_multipart_upload()
            .bucket(bucket)
            .key(key)
            .upload_id(id)
            .send()
            .await?;
    }
    loop {
        let page = client.list_objects_v2().bucket(bucket).send().await?;
        if page.contents().is_empty() {
            break;
        }
        for o in page.contents().iter().filter_map(|o| o.key()) {
            client.delete_object().bucket(bucket).key(o).send().await?;
        }
    }
    client.delete_bucket().bucket(bucket).send().await?;
    Ok(())
}

/// A file of `len` pseudo-random bytes (seeded, so failures reproduce); returns its crc32c.
pub fn random_file(dir: &Path, name: &str, len: usize, seed: u64) -> (PathBuf, Vec<u8>, u32) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut data = vec![0u8; len];
    rng.fill(&mut data);
    let path = dir.join(name);
    std::fs::write(&path, &data).expect("write test file");
    let crc = crc32c::crc32c(&data);
    (path, data, crc)
}
