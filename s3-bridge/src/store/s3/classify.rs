//! The AWS SDK's errors reduced to a `StoreError` with a `FailureKind`.

use crate::error::StoreError;
use crate::failure::FailureKind;
use crate::metrics::Op;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStreamError;

/// Classifies a failed SDK call.
pub fn sdk_error<E>(op: Op, key: &str, err: SdkError<E>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let kind = match &err {
        SdkError::TimeoutError(_) => FailureKind::Timeout,
        SdkError::DispatchFailure(d) if d.is_timeout() => FailureKind::Timeout,
        // "User" dispatch errors are ours (e.g. the request body could not be read).
        SdkError::DispatchFailure(d) if d.is_user() => FailureKind::Client,
        SdkError::DispatchFailure(_) => FailureKind::Connect,
        SdkError::ServiceError(s) => FailureKind::from_http(s.raw().status().as_u16(), s.err().code()),
        // A response that could not be parsed: a 5xx/429 page from a proxy, or a body cut off
        // mid-way (the connection broke), which a retry can fix.
        SdkError::ResponseError(r) => match r.raw().status().as_u16() {
            s @ (429 | 500..=599) => FailureKind::from_http(s, None),
            _ => FailureKind::Connect,
        },
        _ => FailureKind::Client,
    };
    StoreError::new(op, key, kind, DisplayErrorContext(&err).to_string())
}

/// HTTP status of a failed call's response, if one arrived.
pub fn status<E>(err: &SdkError<E>) -> Option<u16> {
    err.raw_response().map(|r| r.status().as_u16())
}

/// A response body that broke while being read: the connection failed mid-transfer.
pub fn body_error(op: Op, key: &str, err: ByteStreamError) -> StoreError {
    StoreError::new(
        op,
        key,
        FailureKind::Connect,
        format!("reading response body: {}", DisplayErrorContext(&err)),
    )
}

/// A local file that could not be opened as a request body.
pub fn local_body_error(op: Op, key: &str, path: &std::path::Path, err: ByteStreamError) -> StoreError {
    let detail = format!("reading {}: {}", path.display(), DisplayErrorContext(&err));
    StoreError::new(op, key, FailureKind::LocalIo, detail)
}

/// ETags arrive quoted (`"abc"`); an empty one (RGW's CompleteMultipartUpload) is none.
pub fn clean_etag(etag: Option<&str>) -> Option<String> {
    etag.map(|e| e.trim_matches('"').to_string()).filter(|e| !e.is_empty())
}
