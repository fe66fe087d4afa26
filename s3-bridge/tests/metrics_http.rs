//! The metrics endpoint speaks HTTP: /metrics in Prometheus text, /health as JSON, 404 else.

use aof_s3_bridge::config::BreakerConfig;
use aof_s3_bridge::server::{serve, Status};
use aof_s3_bridge::{Breaker, Metrics, Op};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test]
async fn serves_metrics_and_health() {
    let metrics = Arc::new(Metrics::default());
    let breaker = Breaker::new(BreakerConfig::default(), metrics.clone());
    metrics.op_done(Op::Put, true, 1234, std::time::Duration::from_millis(20));
    let status = Status {
        metrics: metrics.clone(),
        breaker: Some(breaker),
    };
    let (addr, task) = serve("127.0.0.1:0".parse().unwrap(), status).await.unwrap();

    let m = http_get(addr, "/metrics").await;
    assert!(m.starts_with("HTTP/1.1 200"), "{m}");
    assert!(m.contains("text/plain; version=0.0.4"));
    assert!(m.contains("aof_s3_bytes_total{op=\"put\"} 1234"));
    assert!(m.contains("aof_s3_breaker_state{state=\"closed\"} 1"));
    let h = http_get(addr, "/health").await;
    assert!(
        h.starts_with("HTTP/1.1 200") && h.contains("\"breaker\":\"closed\""),
        "{h}"
    );
    assert!(http_get(addr, "/nope").await.starts_with("HTTP/1.1 404"));
    task.abort();
}
