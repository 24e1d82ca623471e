//! The request body: read within the service's and the broker's limit, and
//! parsed as strict JSON once, for the phases after it.
//!
//! Invariant: no more than the limit is ever held; a `Content-Length` over
//! it is refused before a byte of the body is read.

use bytes::Bytes;
use http::HeaderMap;
use http_body_util::{BodyExt, Limited};

use super::error::{ErrorKind, ExchangeError};
use crate::catalog::Service;

/// Reads the body, at most `limit` bytes.
pub(super) async fn read_body<B>(
    headers: &HeaderMap,
    body: B,
    limit: usize,
) -> Result<Bytes, ExchangeError>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let too_large = || {
        ExchangeError::new(
            ErrorKind::TooLarge,
            format!("the body exceeds this service's limit of {limit} bytes"),
        )
    };
    if let Some(len) = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && len > limit as u64
    {
        return Err(too_large());
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(e) => Err(ExchangeError::new(
            ErrorKind::Malformed,
            format!("request body unreadable: {e}"),
        )),
    }
}

/// The request body as JSON, parsed strictly: a service without a request
/// schema takes no body, and one with a schema needs one.
pub(super) fn parse_json(
    service: &Service,
    body: &Bytes,
    max_json_values: usize,
) -> Result<Option<serde_json::Value>, ExchangeError> {
    match (service.accepts_body(), body.is_empty()) {
        (false, false) => Err(ExchangeError::new(
            ErrorKind::RequestSchemaInvalid,
            format!("service {} takes no request body", service.key),
        )),
        (true, true) => Err(ExchangeError::new(
            ErrorKind::RequestSchemaInvalid,
            format!(
                "service {} needs a JSON body matching its request schema (GET /v1/services on the admin API)",
                service.key
            ),
        )),
        (true, false) => crate::json::parse(body, max_json_values)
            .map(Some)
            .map_err(|e| {
                ExchangeError::new(
                    ErrorKind::RequestSchemaInvalid,
                    format!("body is not acceptable JSON: {e}"),
                )
            }),
        (false, true) => Ok(None),
    }
}
