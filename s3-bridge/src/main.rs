//! `aof-s3-bridge`: for now, a smoke tool (put/get/head/delete a file, sweep stale uploads) and
//! the metrics server. The ring-driven work loop comes with the engine integration.

use aof_s3_bridge::config::{BridgeConfig, Credentials};
use aof_s3_bridge::server::{self, Status};
use aof_s3_bridge::{open_store, AnyStore, Metrics, ObjectStore};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser)]
#[command(version, about = "aof Tier2 bridge: moves sealed segments between local disk and S3")]
struct Cli {
    /// TOML config file (see the `config` module docs); flags below override it.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// "s3" or "file://DIR".
    #[arg(long)]
    target: Option<String>,
    /// S3 endpoint, e.g. http://127.0.0.1:7480 (sets target to s3).
    #[arg(long)]
    endpoint: Option<String>,
    #[arg(long)]
    bucket: Option<String>,
    #[arg(long)]
    prefix: Option<String>,
    /// Explicit access key (with --secret-key); otherwise the standard AWS chain.
    #[arg(long, env = "AOF_S3_ACCESS_KEY")]
    access_key: Option<String>,
    #[arg(long, env = "AOF_S3_SECRET_KEY", hide_env_values = true)]
    secret_key: Option<String>,
    /// Cap on upload bandwidth in MiB/s (`transfer.upload_bytes_per_sec`; 0 = unpaced).
    #[arg(long)]
    upload_mib_per_sec: Option<u64>,
    /// Do not serve /metrics and /health (for `run` and `serve`'s default address).
    #[arg(long)]
    no_metrics: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Upload FILE under KEY (its crc32c is computed and stored with it).
    Put {
        file: PathBuf,
        key: String,
    },
    /// Download KEY (verified) to FILE.
    Get {
        key: String,
        file: PathBuf,
    },
    /// Print size, ETag and crc32c of KEY.
    Head {
        key: String,
    },
    Delete {
        key: String,
    },
    /// Create the bucket if it does not exist (S3 targets only).
    MakeBucket,
    /// Abort unfinished multipart uploads under the prefix older than AGE seconds.
    Sweep {
        #[arg(long, default_value_t = 3600)]
        age_s: u64,
    },
    /// The bridge itself: serve the shards of the engine data directory DATA_DIR (upload,
    /// hydrate, delete) and /metrics, /health, until interrupted.
    Run {
        data_dir: PathBuf,
        /// Slots per ring; must match the engine's `Tier2Config::ring_capacity`.
        #[arg(long, default_value_t = 1024)]
        ring_capacity: u64,
        /// Unfinished multipart uploads under the prefix older than this are aborted at start
        /// (a killed bridge leaves its own behind; each is redone from the manifests).
        #[arg(long, default_value_t = 0)]
        stale_upload_age_s: u64,
    },
    /// Serve /metrics and /health until interrupted.
    Serve {
        #[arg(long)]
        addr: Option<std::net::SocketAddr>,
    },
}

fn config(cli: &Cli) -> Result<BridgeConfig, Box<dyn std::error::Error>> {
    let mut cfg = match &cli.config {
        Some(p) => BridgeConfig::from_file(p)?,
        None => BridgeConfig::default(),
    };
    if let Some(ep) = &cli.endpoint {
        cfg.s3.endpoint = Some(ep.clone());
        cfg.target = "s3".into();
    }
    if let Some(t) = &cli.target {
        cfg.target = t.clone();
    }
    if let Some(b) = &cli.bucket {
        cfg.s3.bucket = b.clone();
    }
    if let Some(p) = &cli.prefix {
        cfg.prefix = p.clone();
    }
    if let Some(m) = cli.upload_mib_per_sec {
        cfg.transfer.upload_bytes_per_sec = m << 20;
    }
    if cli.no_metrics {
        cfg.metrics_addr = None;
    }
    if let (Some(a), Some(s)) = (&cli.access_key, &cli.secret_key) {
        cfg.s3.credentials = Credentials::Static {
            access_key_id: a.clone(),
            secret_access_key: s.clone(),
            session_token: None,
        };
    }
    cfg.validate()?;
    Ok(cfg)
}

async fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    let cfg = config(&cli)?;
    let metrics = Arc::new(Metrics::default());
    let store = open_store(&cfg, metrics.clone()).await?;
    let key = |k: &str| format!("{}{k}", aof_s3_bridge::keys::dir_prefix(&cfg.prefix));
    match cli.cmd {
        Cmd::Put { file, key: k } => {
            let crc = file_crc32c(&file)?;
            let info = store.put_file(&key(&k), &file, crc).await?;
            println!("{} {info:?}", key(&k));
        }
        Cmd::Get { key: k, file } => {
            let meta = store.download_to_file(&key(&k), &file).await?;
            println!("{} {meta:?}", file.display());
        }
        Cmd::Head { key: k } => println!("{:?}", store.head(&key(&k)).await?),
        Cmd::Delete { key: k } => store.delete(&key(&k)).await?,
        Cmd::MakeBucket => match &store {
            AnyStore::S3(s) => s.ensure_bucket().await?,
            AnyStore::File(_) => return Err("make-bucket needs an S3 target".into()),
        },
        Cmd::Sweep { age_s } => {
            let n = aof_s3_bridge::abort_stale_uploads(&store, &key(""), Duration::from_secs(age_s)).await?;
            println!("aborted {n} stale uploads");
        }
        Cmd::Run {
            data_dir,
            ring_capacity,
            stale_upload_age_s,
        } => {
            let swept =
                aof_s3_bridge::abort_stale_uploads(&store, &key(""), Duration::from_secs(stale_upload_age_s)).await;
            match swept {
                Ok(n) => tracing::info!(aborted = n, "stale multipart uploads swept"),
                Err(e) => tracing::warn!(error = %e, "could not sweep stale uploads; retried at the next start"),
            }
            if let Some(addr) = cfg.metrics_addr {
                let breaker = match &store {
                    AnyStore::S3(s) => Some(s.breaker().clone()),
                    AnyStore::File(_) => None,
                };
                let (bound, _task) = server::serve(
                    addr,
                    Status {
                        metrics: metrics.clone(),
                        breaker,
                    },
                )
                .await?;
                eprintln!("aof-s3-bridge: serving http://{bound}/metrics and /health");
            }
            let worker = aof_s3_bridge::worker::Worker::new(data_dir, store, &cfg, ring_capacity, metrics);
            let (stop, rx) = tokio::sync::watch::channel(false);
            let task = tokio::spawn(worker.run(rx));
            tokio::signal::ctrl_c().await?;
            let _ = stop.send(true);
            let _ = task.await;
        }
        Cmd::Serve { addr } => {
            let addr = addr.or(cfg.metrics_addr).ok_or("no metrics address configured")?;
            let breaker = match &store {
                AnyStore::S3(s) => Some(s.breaker().clone()),
                AnyStore::File(_) => None,
            };
            let (bound, _task) = server::serve(addr, Status { metrics, breaker }).await?;
            println!("serving http://{bound}/metrics and /health");
            tokio::signal::ctrl_c().await?;
        }
    }
    Ok(())
}

/// crc32c of a file, read in chunks (segments can be larger than we want in memory).
fn file_crc32c(path: &std::path::Path) -> std::io::Result<u32> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let (mut crc, mut buf) = (0u32, vec![0u8; 1 << 20]);
    loop {
        match f.read(&mut buf)? {
            0 => return Ok(crc),
            n => crc = crc32c::crc32c_append(crc, &buf[..n]),
        }
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("aof-s3-bridge: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
