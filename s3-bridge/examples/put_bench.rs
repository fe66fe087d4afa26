//! Times one 32 MiB PUT from memory and one from a file against an S3 endpoint, to see what
//! the dependency opt-level does to signing and hashing. Not a benchmark suite: a measurement
//! with the command that reproduces it:
//!
//! ```text
//! eval "$(scripts/rgw.sh env)"; export AOF_S3_ENDPOINT AOF_S3_ACCESS_KEY AOF_S3_SECRET_KEY
//! cargo run --example put_bench
//! ```

use aof_s3_bridge::config::{BridgeConfig, Credentials};
use aof_s3_bridge::{Metrics, ObjectStore, S3Store};
use aws_sdk_s3::primitives::ByteStream;
use std::time::Instant;

const LEN: usize = 32 << 20;

fn env(name: &str) -> Result<String, String> {
    std::env::var(name).map_err(|_| format!("{name} is not set (see the doc comment)"))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut cfg = BridgeConfig {
        target: "s3".into(),
        ..Default::default()
    };
    cfg.s3.endpoint = Some(env("AOF_S3_ENDPOINT")?);
    cfg.s3.bucket = "aof-put-bench".into();
    cfg.s3.credentials = Credentials::Static {
        access_key_id: env("AOF_S3_ACCESS_KEY")?,
        secret_access_key: env("AOF_S3_SECRET_KEY")?,
        session_token: None,
    };
    cfg.transfer.multipart_threshold_bytes = 2 * LEN as u64; // one PUT
    let store = S3Store::connect(&cfg, std::sync::Arc::new(Metrics::default())).await;
    store.ensure_bucket().await?;
    let mut data = vec![0u8; LEN];
    fastrand::Rng::with_seed(1).fill(&mut data);
    let path = std::env::temp_dir().join("aof-put-bench.bin");
    std::fs::write(&path, &data)?;
    let crc = crc32c::crc32c(&data);
    for round in 0..3 {
        let t = Instant::now();
        let req = store.client().put_object().bucket(store.bucket()).key("mem");
        req.body(ByteStream::from(data.clone())).send().await?;
        let mem = t.elapsed();
        let t = Instant::now();
        store.put_file("file", &path, crc).await?;
        println!(
            "round {round}: 32 MiB PUT from memory {mem:?}, from file {:?}",
            t.elapsed()
        );
    }
    std::fs::remove_file(&path)?;
    Ok(())
}
