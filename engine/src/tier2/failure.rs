//! Coarse failure kinds: what went wrong, in terms that say whether a retry can help.
//!
//! Every layer above the object store (retry loop, breaker, the shard's reply ring, metrics)
//! needs only this: the SDK's error zoo is reduced to one small enum at the store boundary.

use std::fmt;

/// Why an object-store call failed. `retryable()` is the only policy question callers ask.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FailureKind {
    /// The call did not finish within the per-call timeout (or the server said RequestTimeout).
    Timeout,
    /// The connection could not be made, or broke mid-request (refused, reset, EOF).
    Connect,
    /// The server asked us to slow down (503 SlowDown, 429, Throttling).
    Throttled,
    /// The server failed (5xx other than throttling).
    Server,
    /// The object (or upload) does not exist.
    NotFound,
    /// Credentials or permissions were refused (401/403).
    Forbidden,
    /// Content does not match its checksum: the bytes are wrong, retrying the same read will not
    /// fix what is stored.
    Corrupt,
    /// The request itself is wrong (other 4xx, bad input, an SDK construction failure).
    Client,
    /// A local file could not be read or written.
    LocalIo,
    /// The circuit breaker is open: the call was not attempted.
    BreakerOpen,
}

impl FailureKind {
    /// All kinds, for metrics rendering (every series exists from the start, at zero).
    pub const ALL: [FailureKind; 10] = [
        FailureKind::Timeout,
        FailureKind::Connect,
        FailureKind::Throttled,
        FailureKind::Server,
        FailureKind::NotFound,
        FailureKind::Forbidden,
        FailureKind::Corrupt,
        FailureKind::Client,
        FailureKind::LocalIo,
        FailureKind::BreakerOpen,
    ];

    /// Whether the same call may succeed later. `BreakerOpen` is retryable *later* (after the
    /// cool-down); the retry loop waits for the breaker rather than hammering it.
    pub fn retryable(self) -> bool {
        matches!(
            self,
            FailureKind::Timeout
                | FailureKind::Connect
                | FailureKind::Throttled
                | FailureKind::Server
                | FailureKind::BreakerOpen
        )
    }

    /// Whether this failure says the endpoint is unhealthy (feeds the breaker). A 404 or a bad
    /// checksum is a healthy server giving a definite answer, so it must not open the breaker.
    pub fn endpoint_unhealthy(self) -> bool {
        matches!(
            self,
            FailureKind::Timeout | FailureKind::Connect | FailureKind::Throttled | FailureKind::Server
        )
    }

    /// Stable lower-case label for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Timeout => "timeout",
            FailureKind::Connect => "connect",
            FailureKind::Throttled => "throttled",
            FailureKind::Server => "server",
            FailureKind::NotFound => "not_found",
            FailureKind::Forbidden => "forbidden",
            FailureKind::Corrupt => "corrupt",
            FailureKind::Client => "client",
            FailureKind::LocalIo => "local_io",
            FailureKind::BreakerOpen => "breaker_open",
        }
    }

    /// Classify an HTTP status (and the S3 error code, when the body had one).
    pub fn from_http(status: u16, code: Option<&str>) -> FailureKind {
        match (status, code) {
            (_, Some("SlowDown" | "Throttling" | "ThrottlingException" | "RequestLimitExceeded")) => {
                FailureKind::Throttled
            }
            (_, Some("RequestTimeout")) => FailureKind::Timeout,
            (429 | 503, _) => FailureKind::Throttled,
            (401 | 403, _) => FailureKind::Forbidden,
            (404, _) => FailureKind::NotFound,
            (408, _) => FailureKind::Timeout,
            (500..=599, _) => FailureKind::Server,
            _ => FailureKind::Client,
        }
    }
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_classification() {
        assert_eq!(FailureKind::from_http(503, Some("SlowDown")), FailureKind::Throttled);
        assert_eq!(FailureKind::from_http(503, None), FailureKind::Throttled);
        assert_eq!(FailureKind::from_http(500, None), FailureKind::Server);
        assert_eq!(
            FailureKind::from_http(403, Some("AccessDenied")),
            FailureKind::Forbidden
        );
        assert_eq!(FailureKind::from_http(404, Some("NoSuchKey")), FailureKind::NotFound);
        assert_eq!(
            FailureKind::from_http(400, Some("RequestTimeout")),
            FailureKind::Timeout
        );
        assert_eq!(FailureKind::from_http(400, None), FailureKind::Client);
    }

    #[test]
    fn retry_policy() {
        for k in FailureKind::ALL {
            let expect = !matches!(
                k,
                FailureKind::NotFound
                    | FailureKind::Forbidden
                    | FailureKind::Corrupt
                    | FailureKind::Client
                    | FailureKind::LocalIo
            );
            assert_eq!(k.retryable(), expect, "{k}");
        }
    }
}
