//! Timeouts, retries and the circuit breaker, exercised through a fault-injecting proxy
//! between the client and the real gateway.

mod common;

use aof_s3_bridge::config::{BreakerConfig, RetryConfig};
use aof_s3_bridge::store::ObjectStore;
use aof_s3_bridge::{BreakerState, FailureKind, Metrics, Op, S3Store};
use common::proxy::{Fault, Proxy};
use common::{connect, random_file, rgw, s3_config, unique_bucket};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

const CALL_TIMEOUT_MS: u64 = 400;
const OPEN_MS: u64 = 600;
/// For tests that are not about the breaker: high enough that it stays closed.
const RELAXED_THRESHOLD: u32 = 10;

/// A store that reaches the gateway through a fresh proxy; fast timeouts and backoff.
/// The bucket and the object every test reads are made directly with the normal settings:
/// on a fresh cluster the first bucket takes seconds (RGW creates its pools), which is not
/// what these tests measure.
async fn through_proxy(tag: &str, max_attempts: u32, failure_threshold: u32) -> (S3Store, Proxy, String) {
    let bucket = unique_bucket(tag);
    let direct_cfg = s3_config(&rgw().endpoint, &bucket);
    let direct = connect(&direct_cfg).await;
    let dir = tempfile::tempdir().unwrap();
    let (path, _, crc) = random_file(dir.path(), "obj", 64 * 1024, 9);
    let key = format!("{}/obj", direct_cfg.prefix);
    direct.put_file(&key, &path, crc).await.unwrap();

    let upstream: SocketAddr = format!("127.0.0.1:{}", rgw().port()).parse().unwrap();
    let proxy = Proxy::start(upstream).await;
    let mut cfg = s3_config(&proxy.endpoint(), &bucket);
    cfg.retry = RetryConfig {
        call_timeout_ms: CALL_TIMEOUT_MS,
        max_attempts,
        base_backoff_ms: 10,
        max_backoff_ms: 100,
    };
    cfg.breaker = BreakerConfig {
        failure_threshold,
        open_duration_ms: OPEN_MS,
        half_open_probes: 1,
    };
    let store = S3Store::connect(&cfg, Arc::new(Metrics::default())).await;
    (store, proxy, key)
}

/// 503 SlowDown is retried with backoff and the call then succeeds; each refusal is counted
/// as `throttled`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowdown_is_retried() {
    let (store, proxy, key) = through_proxy("slow", 5, RELAXED_THRESHOLD).await;
    proxy.set_for(Fault::SlowDown, 2).await;
    store.get(&key).await.unwrap();
    assert_eq!(proxy.connections(Fault::SlowDown), 2);
    assert_eq!(store.metrics().error_count(Op::Get, FailureKind::Throttled), 2);
    assert!(store.metrics().retry_count(Op::Get) >= 2);
}

/// Connection resets are retried (a PUT here: bodies must be re-sent from the file).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_reset_is_retried() {
    let (store, proxy, key) = through_proxy("reset", 5, RELAXED_THRESHOLD).await;
    let dir = tempfile::tempdir().unwrap();
    let (path, data, crc) = random_file(dir.path(), "obj2", 300_000, 10);
    proxy.set_for(Fault::Reset, 2).await;
    store.put_file(&format!("{key}2"), &path, crc).await.unwrap();
    assert_eq!(proxy.connections(Fault::Reset), 2);
    assert!(store.metrics().error_count(Op::Put, FailureKind::Connect) >= 1);
    assert!(store.get(&format!("{key}2")).await.unwrap() == data);
}

/// A stalled connection is cut by the per-call timeout and the retry succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stall_hits_the_timeout_then_retries() {
    let (store, proxy, key) = through_proxy("stall", 5, RELAXED_THRESHOLD).await;
    proxy.set_for(Fault::Stall, 1).await;
    let t = Instant::now();
    store.head(&key).await.unwrap();
    assert!(
        t.elapsed() >= Duration::from_millis(CALL_TIMEOUT_MS),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(store.metrics().error_count(Op::Head, FailureKind::Timeout), 1);
}

/// A persistently failing endpoint opens the breaker; while open, calls fail at once without
/// touching the network; after the cool-down one half-open probe succeeds and closes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn breaker_opens_then_closes_through_half_open() {
    let (store, proxy, key) = through_proxy("breaker", 2, 3).await;
    proxy.set(Fault::Reset).await;
    // Two calls of two attempts: the third consecutive failure opens the breaker.
    for _ in 0..2 {
        let e = store.head(&key).await.unwrap_err();
        assert!(e.kind.retryable(), "{e}");
    }
    assert_eq!(store.breaker().state(), BreakerState::Open);
    assert!(store
        .metrics()
        .render()
        .contains("aof_s3_breaker_state{state=\"open\"} 1"));

    let resets = proxy.connections(Fault::Reset);
    let t = Instant::now();
    let e = store.head(&key).await.unwrap_err();
    assert_eq!(e.kind, FailureKind::BreakerOpen, "{e}");
    assert_eq!(
        proxy.connections(Fault::Reset),
        resets,
        "an open breaker does not hammer the endpoint"
    );
    assert!(
        t.elapsed() < Duration::from_millis(OPEN_MS),
        "refused without waiting out the cool-down twice"
    );

    // Endpoint healthy again: after the cool-down a probe goes through and closes the breaker.
    proxy.set(Fault::Pass).await;
    tokio::time::sleep(Duration::from_millis(OPEN_MS + 50)).await;
    store.head(&key).await.unwrap();
    assert_eq!(store.breaker().state(), BreakerState::Closed);
    let text = store.metrics().render();
    assert!(text.contains("aof_s3_breaker_state{state=\"closed\"} 1"), "{text}");
    assert!(text.contains("aof_s3_breaker_opened_total 1"), "{text}");
}

/// While the breaker is open, a call with retries left waits out the cool-down and then
/// succeeds as the probe: a short outage costs latency, not an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_ride_through_a_short_outage() {
    let (store, proxy, key) = through_proxy("ride", 20, 3).await;
    proxy.set(Fault::Reset).await;
    let healer = {
        let proxy_ok = tokio::time::sleep(Duration::from_millis(300));
        async move {
            proxy_ok.await;
            proxy.set(Fault::Pass).await;
            proxy
        }
    };
    let (got, proxy) = tokio::join!(store.get(&key), healer);
    got.unwrap();
    assert!(proxy.connections(Fault::Reset) >= 3);
    assert!(
        store.metrics().error_count(Op::Get, FailureKind::BreakerOpen) >= 1,
        "the call waited on the breaker"
    );
    assert_eq!(store.metrics().breaker_opened_count(), 1);
    assert_eq!(store.breaker().state(), BreakerState::Closed);
}
