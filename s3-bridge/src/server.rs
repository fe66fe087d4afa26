//! The bridge's HTTP endpoint: `GET /metrics` (Prometheus text) and `GET /health`.
//!
//! hyper 1 directly rather than a web framework: two fixed routes do not need a router, and
//! hyper is already in the build through the SDK.

use crate::breaker::Breaker;
use crate::metrics::Metrics;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;

/// What the endpoint reports.
#[derive(Clone)]
pub struct Status {
    pub metrics: Arc<Metrics>,
    /// `None` for stores without a breaker (file://).
    pub breaker: Option<Breaker>,
}

/// Binds `addr` and serves until the returned task is aborted. Returns the bound address
/// (useful with port 0).
pub async fn serve(addr: SocketAddr, status: Status) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let task = tokio::spawn(async move {
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning on the error.
                    tracing::warn!(%e, "metrics accept");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let status = status.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| respond(req, status.clone()));
                let conn = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc);
                if let Err(e) = conn.await {
                    tracing::debug!(%e, "metrics connection");
                }
            });
        }
    });
    Ok((local, task))
}

async fn respond(req: Request<Incoming>, status: Status) -> Result<Response<Full<Bytes>>, Infallible> {
    let (code, ctype, body) = match req.uri().path() {
        "/metrics" => (StatusCode::OK, "text/plain; version=0.0.4", status.metrics.render()),
        "/health" => {
            // The process is up and serving; the breaker state says whether Tier2 is reachable.
            // Still 200 when open: a load balancer must not restart a bridge for an S3 outage.
            let breaker = status.breaker.as_ref().map_or("none", |b| b.state().as_str());
            (
                StatusCode::OK,
                "application/json",
                format!("{{\"status\":\"ok\",\"breaker\":\"{breaker}\"}}\n"),
            )
        }
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: try /metrics or /health\n".to_string(),
        ),
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = code;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(ctype),
    );
    Ok(resp)
}
