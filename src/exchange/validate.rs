//! Validate: the request body against the service's request schema,
//! compiled once at load (no remote `$ref` is ever fetched).
//!
//! Invariant: a body that breaks the schema never reaches a provider; the
//! refusal names the JSON pointer and the rule, never the value.

use super::error::{ErrorKind, ExchangeError};
use crate::catalog::Service;

/// A call whose body (if any) matches its service's request schema.
#[derive(Debug, Clone, Copy)]
pub struct Validated;

/// Checks the body against the request schema.
pub(super) fn validate(
    service: &Service,
    body: Option<&serde_json::Value>,
) -> Result<Validated, ExchangeError> {
    if let Some(value) = body {
        service
            .validate_request(value)
            .map_err(|v| ExchangeError::new(ErrorKind::RequestSchemaInvalid, v.to_string()))?;
    }
    Ok(Validated)
}
