//! Circuit breaker: closed → open → half-open → closed.
//!
//! Closed: calls go through; `failure_threshold` consecutive endpoint failures open it.
//! Open: calls fail at once with `BreakerOpen` for `open_duration`, so a dead or throttling
//! endpoint is not hammered by every queued transfer's retries.
//! Half-open: after the cool-down, up to `half_open_probes` calls go through; one success
//! closes the breaker, one failure re-opens it for another cool-down.
//!
//! Only failures that say the *endpoint* is unhealthy count (see
//! `FailureKind::endpoint_unhealthy`); a 404 is a healthy server's definite answer and counts as
//! a success. The state is a small mutex-guarded struct: the bridge is a tokio process, not a
//! shard, and one lock per S3 call (microseconds against milliseconds) is not a bottleneck.

use crate::config::BreakerConfig;
use crate::failure::FailureKind;
use crate::metrics::Metrics;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The externally visible state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    /// Metric code: 0 closed, 1 open, 2 half-open.
    pub fn code(self) -> u64 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::Open => 1,
            BreakerState::HalfOpen => 2,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

#[derive(Debug)]
enum Inner {
    Closed { consecutive_failures: u32 },
    Open { until: Instant },
    HalfOpen { probes_in_flight: u32 },
}

/// A shared circuit breaker (cheap to clone).
#[derive(Clone)]
pub struct Breaker {
    cfg: BreakerConfig,
    inner: Arc<Mutex<Inner>>,
    metrics: Arc<Metrics>,
}

/// Permission to make one call. Report its outcome with [`Permit::record`]; dropping it
/// unrecorded (the caller was cancelled) frees a half-open probe slot without a verdict, so a
/// cancelled probe cannot wedge the breaker half-open.
pub struct Permit {
    breaker: Breaker,
    probe: bool,
    recorded: bool,
}

impl Breaker {
    pub fn new(cfg: BreakerConfig, metrics: Arc<Metrics>) -> Breaker {
        metrics.set_breaker_state(BreakerState::Closed.code(), false);
        Breaker {
            cfg,
            inner: Arc::new(Mutex::new(Inner::Closed {
                consecutive_failures: 0,
            })),
            metrics,
        }
    }

    pub fn state(&self) -> BreakerState {
        match *self.lock() {
            Inner::Closed { .. } => BreakerState::Closed,
            Inner::Open { .. } => BreakerState::Open,
            Inner::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// A permit, or how long until the breaker may let a call through.
    pub fn acquire(&self) -> Result<Permit, Duration> {
        let mut inner = self.lock();
        let now = Instant::now();
        let probe = match *inner {
            Inner::Closed { .. } => false,
            Inner::Open { until } if now < until => return Err(until - now),
            Inner::Open { .. } => {
                self.set(&mut inner, Inner::HalfOpen { probes_in_flight: 1 });
                true
            }
            Inner::HalfOpen {
                ref mut probes_in_flight,
            } => {
                if *probes_in_flight >= self.cfg.half_open_probes {
                    // Probes are out; their verdict is at most one call away.
                    return Err(Duration::from_millis(self.cfg.open_duration_ms.min(100)));
                }
                *probes_in_flight += 1;
                true
            }
        };
        Ok(Permit {
            breaker: self.clone(),
            probe,
            recorded: false,
        })
    }

    fn on_outcome(&self, probe: bool, failure: Option<FailureKind>) {
        let unhealthy = failure.is_some_and(FailureKind::endpoint_unhealthy);
        let mut inner = self.lock();
        let open = Inner::Open {
            until: Instant::now() + Duration::from_millis(self.cfg.open_duration_ms),
        };
        match *inner {
            Inner::Closed {
                ref mut consecutive_failures,
            } => {
                if !unhealthy {
                    *consecutive_failures = 0;
                } else {
                    *consecutive_failures += 1;
                    if *consecutive_failures >= self.cfg.failure_threshold {
                        self.set(&mut inner, open);
                    }
                }
            }
            Inner::HalfOpen { .. } if probe && unhealthy => self.set(&mut inner, open),
            Inner::HalfOpen { .. } if probe => self.set(
                &mut inner,
                Inner::Closed {
                    consecutive_failures: 0,
                },
            ),
            // A call admitted before the breaker opened reports late: its failure is already
            // counted in spirit (the breaker is open), and one late success proves little.
            Inner::HalfOpen { .. } | Inner::Open { .. } => {}
        }
    }

    fn release_probe(&self) {
        if let Inner::HalfOpen {
            ref mut probes_in_flight,
        } = *self.lock()
        {
            *probes_in_flight = probes_in_flight.saturating_sub(1);
        }
    }

    fn set(&self, inner: &mut Inner, next: Inner) {
        let opened = matches!(next, Inner::Open { .. });
        *inner = next;
        let state = match inner {
            Inner::Closed { .. } => BreakerState::Closed,
            Inner::Open { .. } => BreakerState::Open,
            Inner::HalfOpen { .. } => BreakerState::HalfOpen,
        };
        tracing::info!(state = state.as_str(), "circuit breaker");
        self.metrics.set_breaker_state(state.code(), opened);
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding this lock leaves a consistent enum; keep going.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Permit {
    /// Reports the call's outcome (`None` = success).
    pub fn record(mut self, failure: Option<FailureKind>) {
        self.recorded = true;
        self.breaker.on_outcome(self.probe, failure);
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if self.probe && !self.recorded {
            self.breaker.release_probe();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(threshold: u32, open_ms: u64) -> Breaker {
        let cfg = BreakerConfig {
            failure_threshold: threshold,
            open_duration_ms: open_ms,
            half_open_probes: 1,
        };
        Breaker::new(cfg, Arc::new(Metrics::default()))
    }

    fn fail(b: &Breaker, kind: FailureKind) {
        b.acquire().unwrap().record(Some(kind));
    }

    #[test]
    fn opens_after_threshold_consecutive_failures_only() {
        let b = breaker(3, 60_000);
        fail(&b, FailureKind::Timeout);
        fail(&b, FailureKind::Connect);
        b.acquire().unwrap().record(None); // a success resets the count
        fail(&b, FailureKind::Server);
        fail(&b, FailureKind::NotFound); // a definite answer is not an endpoint failure
        fail(&b, FailureKind::Throttled);
        fail(&b, FailureKind::Timeout);
        assert_eq!(b.state(), BreakerState::Closed);
        fail(&b, FailureKind::Timeout);
        assert_eq!(b.state(), BreakerState::Open);
        assert!(b.acquire().is_err());
        assert_eq!(b.metrics.breaker_opened_count(), 1);
    }

    #[test]
    fn half_open_probe_closes_or_reopens() {
        let b = breaker(1, 20);
        fail(&b, FailureKind::Timeout);
        assert!(b.acquire().is_err());
        std::thread::sleep(Duration::from_millis(30));
        let probe = b.acquire().unwrap();
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert!(b.acquire().is_err(), "only one probe at a time");
        probe.record(Some(FailureKind::Connect));
        assert_eq!(b.state(), BreakerState::Open);
        std::thread::sleep(Duration::from_millis(30));
        b.acquire().unwrap().record(None);
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.metrics.breaker_opened_count(), 2);
    }

    #[test]
    fn dropped_probe_frees_its_slot() {
        let b = breaker(1, 1);
        fail(&b, FailureKind::Timeout);
        std::thread::sleep(Duration::from_millis(5));
        drop(b.acquire().unwrap());
        assert_eq!(b.state(), BreakerState::HalfOpen);
        b.acquire().unwrap().record(None);
        assert_eq!(b.state(), BreakerState::Closed);
    }
}
