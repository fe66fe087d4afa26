//! Every S3 call goes through [`Resilience::call`]: breaker admission, a per-call timeout,
//! and retries with exponential backoff and full jitter for retryable failures.
//!
//! Full jitter (sleep uniform in [0, min(cap, base·2^n)]) spreads the retries of many transfers
//! that failed together, instead of having them return in lock-step and fail together again.

use crate::breaker::Breaker;
use crate::config::RetryConfig;
use crate::error::StoreError;
use crate::failure::FailureKind;
use crate::metrics::{Metrics, Op};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Timeout + retry + breaker, shared by every call of one store.
#[derive(Clone)]
pub struct Resilience {
    cfg: RetryConfig,
    breaker: Breaker,
    metrics: Arc<Metrics>,
}

/// Whether a call is subject to the breaker. Cleanup (aborting a failed multipart upload) is
/// not: it is one call per failed upload, and skipping it would leave parts to accumulate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Guarded,
    Cleanup,
}

impl Resilience {
    pub fn new(cfg: RetryConfig, breaker: Breaker, metrics: Arc<Metrics>) -> Resilience {
        Resilience { cfg, breaker, metrics }
    }

    pub fn breaker(&self) -> &Breaker {
        &self.breaker
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Runs `attempt` until it succeeds, fails with a non-retryable kind, or `max_attempts` is
    /// spent. Each attempt is bounded by `call_timeout_ms`. Records per-attempt errors and the
    /// whole call's latency; `bytes` is what a success moved (for the bytes counter).
    pub async fn call<T, F, Fut>(
        &self,
        op: Op,
        key: &str,
        admission: Admission,
        mut attempt: F,
    ) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<(T, u64), StoreError>>,
    {
        let started = Instant::now();
        let mut n = 0;
        loop {
            n += 1;
            let (result, breaker_wait) = self.attempt_once(op, key, admission, &mut attempt).await;
            let err = match result {
                Ok((value, bytes)) => {
                    self.metrics.op_done(op, true, bytes, started.elapsed());
                    return Ok(value);
                }
                Err(e) => e,
            };
            self.metrics.attempt_failed(op, err.kind);
            if !err.retryable() || n >= self.cfg.max_attempts {
                self.metrics.op_done(op, false, 0, started.elapsed());
                if err.retryable() {
                    tracing::warn!(%err, attempts = n, "giving up");
                } else {
                    // A definite answer (404, 403, corrupt): the caller decides how loud it is.
                    tracing::debug!(%err, "not retryable");
                }
                return Err(StoreError { attempts: n, ..err });
            }
            self.metrics.retried(op);
            let delay = self.backoff(n).max(breaker_wait.unwrap_or_default());
            tracing::debug!(%err, delay_ms = delay.as_millis() as u64, "retrying");
            tokio::time::sleep(delay).await;
        }
    }

    /// One attempt; on a refused admission, also how long the breaker stays open.
    async fn attempt_once<T, F, Fut>(
        &self,
        op: Op,
        key: &str,
        admission: Admission,
        attempt: &mut F,
    ) -> (Result<(T, u64), StoreError>, Option<Duration>)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<(T, u64), StoreError>>,
    {
        let permit = match admission {
            Admission::Cleanup => None,
            Admission::Guarded => match self.breaker.acquire() {
                Ok(p) => Some(p),
                Err(wait) => {
                    let e = StoreError::new(op, key, FailureKind::BreakerOpen, "circuit breaker open");
                    // Wait out the cool-down (capped) rather than spin through attempts.
                    return (Err(e), Some(wait.min(Duration::from_millis(self.cfg.max_backoff_ms))));
                }
            },
        };
        let result = match tokio::time::timeout(self.cfg.call_timeout(), attempt()).await {
            Ok(r) => r,
            Err(_) => Err(StoreError::new(
                op,
                key,
                FailureKind::Timeout,
                format!("no answer within {} ms", self.cfg.call_timeout_ms),
            )),
        };
        if let Some(p) = permit {
            p.record(result.as_ref().err().map(|e| e.kind));
        }
        (result, None)
    }

    /// Full-jitter backoff before retry `n` (n >= 1).
    fn backoff(&self, n: u32) -> Duration {
        let exp = self
            .cfg
            .base_backoff_ms
            .saturating_mul(1u64 << n.saturating_sub(1).min(32));
        let cap = exp.min(self.cfg.max_backoff_ms);
        Duration::from_millis(fastrand::u64(0..=cap))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BreakerConfig;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn resilience(max_attempts: u32, call_timeout_ms: u64, threshold: u32) -> Resilience {
        let metrics = Arc::new(Metrics::default());
        let cfg = RetryConfig {
            call_timeout_ms,
            max_attempts,
            base_backoff_ms: 1,
            max_backoff_ms: 5,
        };
        let b = BreakerConfig {
            failure_threshold: threshold,
            open_duration_ms: 50,
            half_open_probes: 1,
        };
        Resilience::new(cfg, Breaker::new(b, metrics.clone()), metrics)
    }

    #[tokio::test]
    async fn retries_retryable_until_success() {
        let r = resilience(5, 1000, 100);
        let calls = AtomicU32::new(0);
        let v = r
            .call(Op::Get, "k", Admission::Guarded, || async {
                if calls.fetch_add(1, Ordering::SeqCst) < 2 {
                    Err(StoreError::new(Op::Get, "k", FailureKind::Throttled, "slow down"))
                } else {
                    Ok((7, 10))
                }
            })
            .await
            .unwrap();
        assert_eq!((v, calls.load(Ordering::SeqCst)), (7, 3));
        assert_eq!(r.metrics.retry_count(Op::Get), 2);
    }

    #[tokio::test]
    async fn non_retryable_fails_at_once() {
        let r = resilience(5, 1000, 100);
        let calls = AtomicU32::new(0);
        let e = r
            .call(Op::Get, "k", Admission::Guarded, || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err::<((), u64), _>(StoreError::new(Op::Get, "k", FailureKind::NotFound, "no such key"))
            })
            .await
            .unwrap_err();
        assert_eq!(
            (e.kind, e.attempts, calls.load(Ordering::SeqCst)),
            (FailureKind::NotFound, 1, 1)
        );
    }

    #[tokio::test]
    async fn timeout_is_a_retryable_failure() {
        let r = resilience(2, 20, 100);
        let e = r
            .call(Op::Head, "k", Admission::Guarded, || async {
                tokio::time::sleep(Duration::from_secs(10)).await;
                Ok(((), 0))
            })
            .await
            .unwrap_err();
        assert_eq!((e.kind, e.attempts), (FailureKind::Timeout, 2));
    }

    #[tokio::test]
    async fn open_breaker_refuses_then_probe_closes_it() {
        let r = resilience(1, 1000, 2);
        for _ in 0..2 {
            let fail = || async { Err::<((), u64), _>(StoreError::new(Op::Put, "k", FailureKind::Connect, "reset")) };
            r.call(Op::Put, "k", Admission::Guarded, fail).await.unwrap_err();
        }
        let e = r
            .call(Op::Put, "k", Admission::Guarded, || async { Ok(((), 0)) })
            .await
            .unwrap_err();
        assert_eq!(e.kind, FailureKind::BreakerOpen);
        // Cleanup calls are not refused.
        r.call(Op::AbortMultipart, "k", Admission::Cleanup, || async { Ok(((), 0)) })
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(60)).await;
        r.call(Op::Put, "k", Admission::Guarded, || async { Ok(((), 0)) })
            .await
            .unwrap();
        assert_eq!(r.breaker.state(), crate::breaker::BreakerState::Closed);
    }
}
