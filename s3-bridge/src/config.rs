//! Bridge configuration: every tunable, its default and the reason for it.
//!
//! Loaded from a TOML file (every field optional) and/or built in code; `validate()` checks how
//! the values relate before anything talks to a store. Units are last in names.
//!
//! ```toml
//! target = "s3"                     # or "file:///var/lib/aof/tier2" (the default is file://)
//! prefix = "tier2"
//! metrics_addr = "127.0.0.1:9464"
//! [s3]
//! endpoint = "http://127.0.0.1:7480"
//! region = "us-east-1"
//! bucket = "aof"
//! force_path_style = true
//! credentials = { kind = "static", access_key_id = "...", secret_access_key = "..." }
//! [transfer]
//! part_size_bytes = 8388608
//! [retry]
//! max_attempts = 6
//! [breaker]
//! failure_threshold = 5
//! ```

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// S3's floor for every multipart part but the last.
pub const S3_MIN_PART_BYTES: u64 = 5 * 1024 * 1024;
/// S3's ceiling for one part (and for a single PUT).
pub const S3_MAX_PART_BYTES: u64 = 5 * 1024 * 1024 * 1024;
/// S3's ceiling on the number of parts of one upload.
pub const S3_MAX_PARTS: u64 = 10_000;

/// The default upload pace: 8 MiB/s (~700 GB of compressed segments a day). Measured with
/// `aof-perf bridge` against a gateway on the shards' own disk (the worst case: every uploaded
/// byte is read from and written back to that disk), the shards' Synced append p99 with the
/// bridge busy / idle was 1.02 and 1.02 at 8 MiB/s; 0.98-1.21 over four runs at 16 MiB/s;
/// 1.10-1.34 at 32 MiB/s; 3.3-4.6 unpaced (78 MB/s). With S3 off the host the bridge only
/// reads, and a higher pace (or 0) is usually safe: measure with `aof-perf bridge --pace-mib`.
pub const DEFAULT_UPLOAD_BYTES_PER_SEC: u64 = 8 * 1024 * 1024;

/// Typed configuration errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("reading config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("parsing config file {path}: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("target {0:?}: expected \"s3\" or \"file://DIR\"")]
    BadTarget(String),
    #[error("target is s3 but the [s3] section has no bucket")]
    MissingBucket,
    #[error("endpoint {0:?} must start with http:// or https://")]
    BadEndpoint(String),
    #[error("{field} = {value}: {reason}")]
    OutOfRange {
        field: &'static str,
        value: u64,
        reason: &'static str,
    },
}

/// Where objects go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A local directory: the embedded default for demos and first runs without S3.
    File(PathBuf),
    /// The S3-compatible service described by [`S3Config`].
    S3,
}

impl Target {
    /// Parses `"s3"` or `"file://DIR"` (`file:///abs` or `file://relative`).
    pub fn parse(s: &str) -> Result<Target, ConfigError> {
        if s == "s3" {
            return Ok(Target::S3);
        }
        match s.strip_prefix("file://") {
            Some(dir) if !dir.is_empty() => Ok(Target::File(PathBuf::from(dir))),
            _ => Err(ConfigError::BadTarget(s.to_string())),
        }
    }
}

/// Credentials for S3.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Credentials {
    /// The standard AWS chain: environment, shared profile files, web identity, ECS, IMDS.
    #[default]
    Chain,
    /// Explicit keys (e.g. a local gateway's test user).
    Static {
        access_key_id: String,
        secret_access_key: String,
        session_token: Option<String>,
    },
}

/// The S3 service. Defaults suit AWS itself except `force_path_style`, which is on because
/// self-hosted gateways (RGW, MinIO) rarely have wildcard DNS for virtual-host buckets.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct S3Config {
    /// `http(s)://host:port`; `None` = the region's AWS endpoint.
    pub endpoint: Option<String>,
    /// Signing region. Default `us-east-1` (what RGW accepts by default).
    pub region: String,
    /// Bucket holding every object of this bridge. Required when the target is S3.
    pub bucket: String,
    /// Path-style (`endpoint/bucket/key`) instead of virtual-host addressing. Default true.
    pub force_path_style: bool,
    /// Default: the standard chain.
    pub credentials: Credentials,
}

impl Default for S3Config {
    fn default() -> Self {
        S3Config {
            endpoint: None,
            region: "us-east-1".into(),
            bucket: String::new(),
            force_path_style: true,
            credentials: Credentials::Chain,
        }
    }
}

/// Transfer sizing and parallelism.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct TransferConfig {
    /// Transfers (whole objects) in flight at once. Default 4: two cores, and S3 throughput
    /// comes from parallel connections, not one fast one.
    pub concurrency: usize,
    /// Parts of one multipart upload in flight at once. Default 4.
    pub part_concurrency: usize,
    /// Multipart part size. Default 8 MiB: S3's 5 MiB floor plus headroom, small enough that a
    /// retried part repeats little work. Memory is not held per part (parts stream from file).
    pub part_size_bytes: u64,
    /// Files at least this big go up as multipart uploads; smaller ones as one PUT.
    /// Default 16 MiB (two parts' worth: below that, multipart only adds round trips).
    pub multipart_threshold_bytes: u64,
    /// Cap on the bytes per second all uploads together send, paced chunk by chunk inside each
    /// transfer; 0 = unpaced. Every uploaded byte is first read from the shards' disk (and, with
    /// a store on the same host, written to it again), so an unpaced bridge draining a backlog
    /// competes with the shards' fdatasyncs. Downloads are never paced (a reader waits on them).
    /// Default: see [`DEFAULT_UPLOAD_BYTES_PER_SEC`].
    pub upload_bytes_per_sec: u64,
}

impl Default for TransferConfig {
    fn default() -> Self {
        TransferConfig {
            concurrency: 4,
            part_concurrency: 4,
            part_size_bytes: 8 * 1024 * 1024,
            multipart_threshold_bytes: 16 * 1024 * 1024,
            upload_bytes_per_sec: DEFAULT_UPLOAD_BYTES_PER_SEC,
        }
    }
}

/// Per-call timeout and retry with exponential backoff and full jitter.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct RetryConfig {
    /// Upper bound on one S3 call (one PUT, one part, one GET...). Default 30 s: an 8 MiB part
    /// at a poor 1 MB/s still fits; a stalled connection is cut well before a human notices.
    pub call_timeout_ms: u64,
    /// Attempts per call including the first. Default 6 (~0.1+0.2+0.4+0.8+1.6 s of waiting at
    /// most: rides through a gateway restart, gives up before a caller's own deadline).
    pub max_attempts: u32,
    /// Backoff before retry n is uniform in [0, min(max, base * 2^n)] ("full jitter").
    pub base_backoff_ms: u64,
    /// Cap on one backoff. Default 5 s.
    pub max_backoff_ms: u64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            call_timeout_ms: 30_000,
            max_attempts: 6,
            base_backoff_ms: 100,
            max_backoff_ms: 5_000,
        }
    }
}

impl RetryConfig {
    pub fn call_timeout(&self) -> Duration {
        Duration::from_millis(self.call_timeout_ms)
    }
}

/// Circuit breaker: stop hammering an endpoint that keeps failing.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerConfig {
    /// Consecutive endpoint failures (timeouts, connection errors, 5xx, throttling) that open
    /// the breaker. Default 5: one retried call's worth, so a single blip does not open it.
    pub failure_threshold: u32,
    /// How long the breaker stays open before letting probes through. Default 10 s.
    pub open_duration_ms: u64,
    /// Calls let through at once while half-open; their success closes the breaker, any
    /// failure re-opens it. Default 1.
    pub half_open_probes: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failure_threshold: 5,
            open_duration_ms: 10_000,
            half_open_probes: 1,
        }
    }
}

/// Everything the bridge needs.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct BridgeConfig {
    /// `"s3"` or `"file://DIR"`. Default `file://aof-tier2` (relative to the working dir).
    pub target: String,
    /// Key prefix for every object (see `keys`). Default `aof`.
    pub prefix: String,
    /// Where `/metrics` and `/health` are served; `None` = not served. Default 127.0.0.1:9464.
    pub metrics_addr: Option<SocketAddr>,
    pub s3: S3Config,
    pub transfer: TransferConfig,
    pub retry: RetryConfig,
    pub breaker: BreakerConfig,
}

impl Default for BridgeConfig {
    fn default() -> Self {
        BridgeConfig {
            target: "file://aof-tier2".into(),
            prefix: "aof".into(),
            metrics_addr: Some(SocketAddr::from(([127, 0, 0, 1], 9464))),
            s3: S3Config::default(),
            transfer: TransferConfig::default(),
            retry: RetryConfig::default(),
            breaker: BreakerConfig::default(),
        }
    }
}

impl BridgeConfig {
    /// Reads a TOML file; fields it leaves out keep their defaults. Validates.
    pub fn from_file(path: &Path) -> Result<BridgeConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        let cfg: BridgeConfig = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.into(),
            source: Box::new(e),
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The parsed target.
    pub fn target(&self) -> Result<Target, ConfigError> {
        Target::parse(&self.target)
    }

    /// Checks every value and how values relate.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.target()? == Target::S3 {
            if self.s3.bucket.is_empty() {
                return Err(ConfigError::MissingBucket);
            }
            if let Some(ep) = &self.s3.endpoint {
                if !(ep.starts_with("http://") || ep.starts_with("https://")) {
                    return Err(ConfigError::BadEndpoint(ep.clone()));
                }
            }
        }
        let t = &self.transfer;
        at_least("transfer.concurrency", t.concurrency as u64, 1)?;
        at_least("transfer.part_concurrency", t.part_concurrency as u64, 1)?;
        if t.part_size_bytes < S3_MIN_PART_BYTES || t.part_size_bytes > S3_MAX_PART_BYTES {
            return Err(range(
                "transfer.part_size_bytes",
                t.part_size_bytes,
                "S3 parts are 5 MiB..5 GiB",
            ));
        }
        if t.multipart_threshold_bytes < t.part_size_bytes {
            return Err(range(
                "transfer.multipart_threshold_bytes",
                t.multipart_threshold_bytes,
                "must be >= part_size_bytes (a smaller file has only one part)",
            ));
        }
        if t.multipart_threshold_bytes > S3_MAX_PART_BYTES {
            return Err(range(
                "transfer.multipart_threshold_bytes",
                t.multipart_threshold_bytes,
                "a single PUT is at most 5 GiB",
            ));
        }
        let r = &self.retry;
        at_least("retry.call_timeout_ms", r.call_timeout_ms, 1)?;
        if t.upload_bytes_per_sec > 0 {
            // Every stream in flight shares the pace; the slowest call must still fit in its
            // timeout, or a paced upload could never finish. Worst cases: all transfers
            // multipart, every stream a part; or one single PUT of threshold size beside the
            // other transfers' parts.
            let (c, pc) = (t.concurrency as u128, t.part_concurrency as u128);
            let parts = t.part_size_bytes as u128 * c * pc;
            let single = t.multipart_threshold_bytes as u128 * ((c - 1) * pc + 1);
            let worst_ms = parts.max(single) * 1000 / t.upload_bytes_per_sec as u128;
            if worst_ms > r.call_timeout_ms as u128 {
                return Err(range(
                    "transfer.upload_bytes_per_sec",
                    t.upload_bytes_per_sec,
                    "too slow: with transfer.concurrency x part_concurrency streams sharing this pace, \
                     a part or single PUT would not fit in retry.call_timeout_ms \
                     (lower the concurrency or raise the timeout)",
                ));
            }
        }
        at_least("retry.max_attempts", r.max_attempts as u64, 1)?;
        at_least("retry.base_backoff_ms", r.base_backoff_ms, 1)?;
        if r.max_backoff_ms < r.base_backoff_ms {
            return Err(range(
                "retry.max_backoff_ms",
                r.max_backoff_ms,
                "must be >= base_backoff_ms",
            ));
        }
        let b = &self.breaker;
        at_least("breaker.failure_threshold", b.failure_threshold as u64, 1)?;
        at_least("breaker.open_duration_ms", b.open_duration_ms, 1)?;
        at_least("breaker.half_open_probes", b.half_open_probes as u64, 1)?;
        Ok(())
    }
}

fn range(field: &'static str, value: u64, reason: &'static str) -> ConfigError {
    ConfigError::OutOfRange { field, value, reason }
}

fn at_least(field: &'static str, value: u64, min: u64) -> Result<(), ConfigError> {
    if value < min {
        return Err(range(field, value, "must be at least 1"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_file_target() {
        let c = BridgeConfig::default();
        c.validate().unwrap();
        assert_eq!(c.target().unwrap(), Target::File("aof-tier2".into()));
    }

    #[test]
    fn toml_overrides_only_what_it_names() {
        let c: BridgeConfig = toml::from_str(
            r#"
            target = "s3"
            [s3]
            bucket = "b"
            endpoint = "http://127.0.0.1:7480"
            credentials = { kind = "static", access_key_id = "a", secret_access_key = "s" }
            [retry]
            max_attempts = 3
            "#,
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.retry.max_attempts, 3);
        assert_eq!(c.retry.base_backoff_ms, RetryConfig::default().base_backoff_ms);
        assert!(matches!(c.s3.credentials, Credentials::Static { .. }));
    }

    /// The shipped example parses and, apart from the fields it marks "example", shows the
    /// defaults (so the file and the code cannot drift apart silently).
    #[test]
    fn example_file_shows_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("bridge.example.toml");
        let mut c = BridgeConfig::from_file(&path).unwrap();
        assert_eq!(c.s3.bucket, "aof");
        c.s3.endpoint = None;
        c.s3.bucket = String::new();
        assert_eq!(c, BridgeConfig::default());
    }

    /// A pace so slow that a full set of concurrent transfers could not finish inside the call
    /// timeout is refused, naming the field; 0 (unpaced) always passes.
    #[test]
    fn rejects_a_pace_too_slow_for_the_call_timeout() {
        let mut c = BridgeConfig::default();
        c.validate().unwrap();
        c.transfer.upload_bytes_per_sec = 1 << 20;
        assert!(matches!(
            c.validate(),
            Err(ConfigError::OutOfRange {
                field: "transfer.upload_bytes_per_sec",
                ..
            })
        ));
        c.transfer.concurrency = 1;
        c.transfer.part_concurrency = 1;
        c.validate().unwrap(); // one 16 MiB PUT at 1 MiB/s = 16 s < 30 s
        c.transfer.upload_bytes_per_sec = 512 << 10; // 32 s
        assert!(c.validate().is_err());
        // The defaults at the default pace: 4 transfers x 4 parts of 8 MiB = 16 s, or a 16 MiB
        // PUT beside 3 x 4 parts (13 streams) = 26 s, both within 30 s.
        let mut d = BridgeConfig::default();
        d.transfer.upload_bytes_per_sec = 8 << 20;
        d.validate().unwrap();
        d.transfer.upload_bytes_per_sec = 6 << 20;
        assert!(d.validate().is_err());
        c.transfer.upload_bytes_per_sec = 0;
        c.retry.call_timeout_ms = 1;
        c.validate().unwrap();
    }

    #[test]
    fn rejects_bad_values() {
        let mut c = BridgeConfig {
            target: "s3".into(),
            ..Default::default()
        };
        assert!(matches!(c.validate(), Err(ConfigError::MissingBucket)));
        c.s3.bucket = "b".into();
        c.s3.endpoint = Some("127.0.0.1:7480".into());
        assert!(matches!(c.validate(), Err(ConfigError::BadEndpoint(_))));
        c.s3.endpoint = None;
        c.transfer.part_size_bytes = 1024;
        assert!(matches!(
            c.validate(),
            Err(ConfigError::OutOfRange {
                field: "transfer.part_size_bytes",
                ..
            })
        ));
        c.transfer = TransferConfig {
            multipart_threshold_bytes: 6 << 20,
            ..Default::default()
        };
        assert!(matches!(c.validate(), Err(ConfigError::OutOfRange { .. })));
        assert!(matches!(Target::parse("ftp://x"), Err(ConfigError::BadTarget(_))));
        assert!(toml::from_str::<BridgeConfig>("bogus = 1").is_err());
    }
}
