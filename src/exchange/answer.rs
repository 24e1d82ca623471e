//! The answer checks, the same for a provider's answer and the broker's own
//! services: a success is schema-checked and minimised to the grant's
//! fields; an error must be problem+json and is cut to the problem members.
//!
//! Invariant: nothing reaches the consumer that the service's response
//! schema and the grant's fields do not allow; an answer that cannot be
//! checked is dropped for 502 `provider.bad_response`.

use bytes::Bytes;
use http::StatusCode;

use super::error::{ErrorKind, ExchangeError};
use super::upstream::UpstreamAnswer;
use crate::catalog::Service;
use crate::policy::Grant;

/// What the consumer will see, before it is recorded and sealed.
#[derive(Debug)]
pub struct Answered {
    /// The status.
    pub status: StatusCode,
    /// The body.
    pub body: Bytes,
    /// Its media type.
    pub content_type: &'static str,
}

/// Turns an upstream's answer into what the consumer may see: a
/// success is schema-checked and minimised to the grant's fields; an error
/// (any non-2xx) must be problem+json and is cut to the problem members
/// (PROTOCOL.md section 4), so an error body cannot carry data the grant does
/// not allow. Anything else is 502 `provider.bad_response`, body dropped.
pub(super) fn deliver(
    answer: UpstreamAnswer,
    service: &Service,
    grant: &Grant,
    max_json_values: usize,
) -> Result<Answered, ExchangeError> {
    let (status, media_type) = (answer.status, answer.media_type.as_str());
    let bad = |detail: String| ExchangeError::new(ErrorKind::ProviderBadResponse, detail);
    if !status.is_success() {
        return problem_answer(status, media_type, &answer.body, max_json_values);
    }
    if status == StatusCode::NO_CONTENT {
        if !answer.body.is_empty() {
            return Err(bad("provider answered 204 with a body".into()));
        }
        return Ok(Answered {
            status,
            body: answer.body,
            content_type: "application/json",
        });
    }
    if media_type != "application/json" {
        return Err(bad(format!(
            "provider answered {status} as {media_type:?}; services on this bus answer application/json"
        )));
    }
    let mut value = crate::json::parse(&answer.body, max_json_values).map_err(|e| {
        bad(format!(
            "provider answer is not acceptable JSON: {}",
            e.content_free()
        ))
    })?;
    service
        .validate_response(&value)
        .map_err(|v| ExchangeError::new(ErrorKind::ResponseSchemaInvalid, v.to_string()))?;
    crate::policy::minimise(&mut value, grant.fields_for(&service.key));
    let body = serde_json::to_vec(&value)
        .map_err(|e| ExchangeError::new(ErrorKind::Internal, format!("re-encoding failed: {e}")))?;
    Ok(Answered {
        status,
        body: Bytes::from(body),
        content_type: "application/json",
    })
}

/// Largest problem member a provider may send (a `detail` is a sentence, not a record).
const MAX_PROBLEM_MEMBER: usize = 1024;

/// A provider's error answer cut to the RFC 9457 members the protocol passes on.
fn problem_answer(
    status: StatusCode,
    media_type: &str,
    body: &[u8],
    max_json_values: usize,
) -> Result<Answered, ExchangeError> {
    let bad = |detail: String| ExchangeError::new(ErrorKind::ProviderBadResponse, detail);
    if !(status.is_client_error() || status.is_server_error()) {
        return Err(bad(format!(
            "provider answered {status}; only 2xx answers and 4xx/5xx problems pass"
        )));
    }
    if media_type != "application/problem+json" {
        return Err(bad(format!(
            "provider answered {status} as {media_type:?}; error answers must be application/problem+json"
        )));
    }
    let value = crate::json::parse(body, max_json_values).map_err(|e| {
        bad(format!(
            "provider problem is not acceptable JSON: {}",
            e.content_free()
        ))
    })?;
    let serde_json::Value::Object(members) = value else {
        return Err(bad("provider problem is not a JSON object".into()));
    };
    let mut kept = serde_json::Map::new();
    for name in ["type", "title", "detail", "code"] {
        match members.get(name) {
            None => {}
            Some(serde_json::Value::String(text)) if text.len() <= MAX_PROBLEM_MEMBER => {
                kept.insert(name.to_string(), serde_json::Value::String(text.clone()));
            }
            Some(_) => {
                return Err(bad(format!(
                    "provider problem member `{name}` must be a string of at most {MAX_PROBLEM_MEMBER} bytes"
                )));
            }
        }
    }
    match members.get("status") {
        None => {}
        Some(v) if v.as_u64() == Some(u64::from(status.as_u16())) => {}
        Some(_) => {
            return Err(bad(format!(
                "provider problem `status` does not match the HTTP status {status}"
            )));
        }
    }
    kept.insert(
        "status".to_string(),
        serde_json::Value::from(status.as_u16()),
    );
    let body = serde_json::to_vec(&kept)
        .map_err(|e| ExchangeError::new(ErrorKind::Internal, format!("re-encoding failed: {e}")))?;
    Ok(Answered {
        status,
        body: Bytes::from(body),
        content_type: mconnect_sdk::protocol::PROBLEM_JSON,
    })
}
