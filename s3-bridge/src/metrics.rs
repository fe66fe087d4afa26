//! Bridge metrics: lock-free counters, rendered in Prometheus text format.
//!
//! Everything is a fixed array of atomics indexed by enum, so recording never allocates or
//! locks, and every series exists (at zero) from start-up: a dashboard can tell "no uploads yet"
//! from "metric missing".

use crate::failure::FailureKind;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// One kind of object-store operation, as seen by metrics and errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    Put,
    CreateMultipart,
    PutPart,
    CompleteMultipart,
    AbortMultipart,
    ListMultipart,
    List,
    Get,
    GetRange,
    Head,
    Delete,
    CreateBucket,
}

impl Op {
    pub const ALL: [Op; 12] = [
        Op::Put,
        Op::CreateMultipart,
        Op::PutPart,
        Op::CompleteMultipart,
        Op::AbortMultipart,
        Op::ListMultipart,
        Op::List,
        Op::Get,
        Op::GetRange,
        Op::Head,
        Op::Delete,
        Op::CreateBucket,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Op::Put => "put",
            Op::CreateMultipart => "create_multipart",
            Op::PutPart => "put_part",
            Op::CompleteMultipart => "complete_multipart",
            Op::AbortMultipart => "abort_multipart",
            Op::ListMultipart => "list_multipart",
            Op::List => "list",
            Op::Get => "get",
            Op::GetRange => "get_range",
            Op::Head => "head",
            Op::Delete => "delete",
            Op::CreateBucket => "create_bucket",
        }
    }

    fn index(self) -> usize {
        Op::ALL.iter().position(|o| *o == self).unwrap_or(0)
    }
}

impl std::fmt::Display for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Latency bucket upper bounds in microseconds: 1 ms .. 60 s, roughly x2.5 apart, which covers
/// a loopback HEAD and a slow multi-GiB upload with one layout.
const LATENCY_BOUNDS_US: [u64; 14] = [
    1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000, 5_000_000,
    10_000_000, 60_000_000,
];

#[derive(Default)]
struct Histogram {
    /// Non-cumulative counts; the last slot is "above every bound" (+Inf).
    buckets: [AtomicU64; LATENCY_BOUNDS_US.len() + 1],
    sum_us: AtomicU64,
}

impl Histogram {
    fn observe(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let i = LATENCY_BOUNDS_US
            .iter()
            .position(|b| us <= *b)
            .unwrap_or(LATENCY_BOUNDS_US.len());
        self.buckets[i].fetch_add(1, Relaxed);
        self.sum_us.fetch_add(us, Relaxed);
    }
}

#[derive(Default)]
struct OpStats {
    ok: AtomicU64,
    failed: AtomicU64,
    retries: AtomicU64,
    bytes: AtomicU64,
    latency: Histogram,
    errors: [AtomicU64; FailureKind::ALL.len()],
}

/// Queues whose depth is reported (filled in by the work loop once it exists).
#[derive(Debug, Clone, Copy)]
pub enum Queue {
    Upload,
    Download,
    Delete,
}

const QUEUES: [(Queue, &str); 3] = [
    (Queue::Upload, "upload"),
    (Queue::Download, "download"),
    (Queue::Delete, "delete"),
];

/// All bridge metrics. Share it as `Arc<Metrics>`.
#[derive(Default)]
pub struct Metrics {
    ops: [OpStats; Op::ALL.len()],
    breaker_state: AtomicU64,
    breaker_opened: AtomicU64,
    queue_depth: [AtomicI64; QUEUES.len()],
}

impl Metrics {
    /// A finished operation (after its retries): outcome, bytes moved, total latency.
    pub fn op_done(&self, op: Op, ok: bool, bytes: u64, elapsed: Duration) {
        let s = &self.ops[op.index()];
        if ok {
            s.ok.fetch_add(1, Relaxed);
            s.bytes.fetch_add(bytes, Relaxed);
        } else {
            s.failed.fetch_add(1, Relaxed);
        }
        s.latency.observe(elapsed);
    }

    /// One failed attempt, by kind (counted whether or not it is retried).
    pub fn attempt_failed(&self, op: Op, kind: FailureKind) {
        let i = FailureKind::ALL.iter().position(|k| *k == kind).unwrap_or(0);
        self.ops[op.index()].errors[i].fetch_add(1, Relaxed);
    }

    pub fn retried(&self, op: Op) {
        self.ops[op.index()].retries.fetch_add(1, Relaxed);
    }

    /// Breaker state as 0 closed, 1 open, 2 half-open (set by the breaker on every transition).
    pub fn set_breaker_state(&self, code: u64, opened: bool) {
        self.breaker_state.store(code, Relaxed);
        if opened {
            self.breaker_opened.fetch_add(1, Relaxed);
        }
    }

    pub fn set_queue_depth(&self, q: Queue, depth: i64) {
        self.queue_depth[q as usize].store(depth, Relaxed);
    }

    /// Successful operations of `op` so far (for tests and status).
    pub fn ok_count(&self, op: Op) -> u64 {
        self.ops[op.index()].ok.load(Relaxed)
    }

    /// Failed attempts of `op` with `kind` so far.
    pub fn error_count(&self, op: Op, kind: FailureKind) -> u64 {
        let i = FailureKind::ALL.iter().position(|k| *k == kind).unwrap_or(0);
        self.ops[op.index()].errors[i].load(Relaxed)
    }

    pub fn retry_count(&self, op: Op) -> u64 {
        self.ops[op.index()].retries.load(Relaxed)
    }

    pub fn breaker_opened_count(&self) -> u64 {
        self.breaker_opened.load(Relaxed)
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        self.render_ops(&mut out);
        self.render_latency(&mut out);
        let state = self.breaker_state.load(Relaxed);
        header(
            &mut out,
            "aof_s3_breaker_state",
            "gauge",
            "Circuit breaker state: 1 for the current one.",
        );
        for (code, name) in [(0, "closed"), (1, "open"), (2, "half_open")] {
            let _ = writeln!(
                out,
                "aof_s3_breaker_state{{state=\"{name}\"}} {}",
                u64::from(state == code)
            );
        }
        header(
            &mut out,
            "aof_s3_breaker_opened_total",
            "counter",
            "Times the breaker opened.",
        );
        let _ = writeln!(out, "aof_s3_breaker_opened_total {}", self.breaker_opened.load(Relaxed));
        header(
            &mut out,
            "aof_s3_queue_depth",
            "gauge",
            "Requests waiting in the bridge, by queue.",
        );
        for (q, name) in QUEUES {
            let _ = writeln!(
                out,
                "aof_s3_queue_depth{{queue=\"{name}\"}} {}",
                self.queue_depth[q as usize].load(Relaxed)
            );
        }
        out
    }

    fn render_ops(&self, out: &mut String) {
        type Field = fn(&OpStats) -> u64;
        let series: [(&str, &str, Field); 4] = [
            (
                "aof_s3_ops_ok_total",
                "Operations that succeeded (objects moved for put/get).",
                |s| s.ok.load(Relaxed),
            ),
            (
                "aof_s3_ops_failed_total",
                "Operations that failed after retries.",
                |s| s.failed.load(Relaxed),
            ),
            (
                "aof_s3_retries_total",
                "Attempts repeated after a retryable failure.",
                |s| s.retries.load(Relaxed),
            ),
            (
                "aof_s3_bytes_total",
                "Payload bytes moved by successful operations.",
                |s| s.bytes.load(Relaxed),
            ),
        ];
        for (name, help, field) in series {
            header(out, name, "counter", help);
            for op in Op::ALL {
                let _ = writeln!(out, "{name}{{op=\"{op}\"}} {}", field(&self.ops[op.index()]));
            }
        }
        header(
            out,
            "aof_s3_errors_total",
            "counter",
            "Failed attempts by operation and failure kind.",
        );
        for op in Op::ALL {
            for (i, kind) in FailureKind::ALL.iter().enumerate() {
                let n = self.ops[op.index()].errors[i].load(Relaxed);
                let _ = writeln!(out, "aof_s3_errors_total{{op=\"{op}\",kind=\"{kind}\"}} {n}");
            }
        }
    }

    fn render_latency(&self, out: &mut String) {
        let name = "aof_s3_op_duration_seconds";
        header(out, name, "histogram", "Operation latency including retries.");
        for op in Op::ALL {
            let h = &self.ops[op.index()].latency;
            let mut cumulative = 0;
            for (i, bound) in LATENCY_BOUNDS_US.iter().enumerate() {
                cumulative += h.buckets[i].load(Relaxed);
                let le = *bound as f64 / 1e6;
                let _ = writeln!(out, "{name}_bucket{{op=\"{op}\",le=\"{le}\"}} {cumulative}");
            }
            cumulative += h.buckets[LATENCY_BOUNDS_US.len()].load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{op=\"{op}\",le=\"+Inf\"}} {cumulative}");
            let sum = h.sum_us.load(Relaxed) as f64 / 1e6;
            let _ = writeln!(out, "{name}_sum{{op=\"{op}\"}} {sum}");
            let _ = writeln!(out, "{name}_count{{op=\"{op}\"}} {cumulative}");
        }
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_series_and_cumulative_buckets() {
        let m = Metrics::default();
        m.op_done(Op::Put, true, 100, Duration::from_millis(3));
        m.op_done(Op::Put, true, 50, Duration::from_secs(100));
        m.attempt_failed(Op::Get, FailureKind::Timeout);
        m.set_breaker_state(1, true);
        let text = m.render();
        assert!(text.contains("aof_s3_bytes_total{op=\"put\"} 150"));
        assert!(text.contains("aof_s3_ops_ok_total{op=\"put\"} 2"));
        assert!(text.contains("aof_s3_op_duration_seconds_bucket{op=\"put\",le=\"0.005\"} 1"));
        assert!(text.contains("aof_s3_op_duration_seconds_bucket{op=\"put\",le=\"60\"} 1"));
        assert!(text.contains("aof_s3_op_duration_seconds_bucket{op=\"put\",le=\"+Inf\"} 2"));
        assert!(text.contains("aof_s3_errors_total{op=\"get\",kind=\"timeout\"} 1"));
        assert!(text.contains("aof_s3_breaker_state{state=\"open\"} 1"));
        assert!(text.contains("aof_s3_breaker_state{state=\"closed\"} 0"));
        assert!(text.contains("aof_s3_queue_depth{queue=\"upload\"} 0"));
        // Every line is a comment or `name{labels} value`.
        for line in text.lines() {
            assert!(
                line.starts_with('#') || line.rsplit_once(' ').is_some_and(|(_, v)| v.parse::<f64>().is_ok()),
                "{line}"
            );
        }
    }
}
