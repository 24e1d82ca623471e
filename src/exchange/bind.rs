//! Bind: the typed query, the body and the people the call asks about.
//! Every subject the call names — `MConnect-Subject`, the id-typed query
//! parameters, the catalog's body locations — is collected into the trace
//! (the audit record lists them all), and `MConnect-Subject`, when given,
//! must be one of the ids the service binds (PROTOCOL.md section 2).
//!
//! Invariant: a subject header that is not the person the data is about is
//! refused before any authorisation or forwarding.

use super::call::CallHeaders;
use super::error::{ErrorKind, ExchangeError};
use super::record::Trace;
use crate::catalog::Service;
use crate::catalog::params::QueryValue;

/// The call's parameters, typed and bound to its subjects.
pub struct Bound<'q> {
    /// The query parameters, typed by the catalog.
    pub query: Vec<QueryValue<'q>>,
    /// The body as JSON, when the service takes one.
    pub body: Option<serde_json::Value>,
}

/// Types the query, parses the body and binds the subjects.
pub(super) fn bind<'q>(
    trace: &mut Trace,
    call: &CallHeaders,
    service: &'q Service,
    query: Option<&'q str>,
    body: &bytes::Bytes,
    max_json_values: usize,
) -> Result<Bound<'q>, ExchangeError> {
    let query = crate::catalog::params::parse_query(query, &service.query)
        .map_err(|p| ExchangeError::new(ErrorKind::Malformed, p.0))?;
    let body = super::body::parse_json(service, body, max_json_values)?;
    bind_subjects(trace, call, service, &query, body.as_ref())?;
    Ok(Bound { query, body })
}

/// Collects the people a call asks about into the trace and checks that
/// `MConnect-Subject`, when given, is one of them (PROTOCOL.md section 2).
fn bind_subjects(
    trace: &mut Trace,
    call: &CallHeaders,
    service: &Service,
    query: &[QueryValue<'_>],
    body: Option<&serde_json::Value>,
) -> Result<(), ExchangeError> {
    let found = service.subjects_of(query, body).map_err(|p| {
        ExchangeError::new(
            ErrorKind::Malformed,
            format!(
                "body field {} must be an IDNP or IDNO (13 digits with a valid control digit)",
                p.pointer
            ),
        )
    })?;
    trace.subjects = call.subject.iter().cloned().collect();
    for id in found.ids {
        if !trace.subjects.contains(&id) {
            trace.subjects.push(id);
        }
    }
    if let (Some(header), Some(bound)) = (call.subject.as_deref(), found.bound.as_ref())
        && !bound.iter().any(|id| id == header)
    {
        return Err(ExchangeError::new(
            ErrorKind::SubjectMismatch,
            format!(
                "MConnect-Subject {header} is not the person this call asks about; for {} it must be {}",
                service.key,
                describe_locations(service)
            ),
        ));
    }
    Ok(())
}

/// Where a service's request names its subject, for refusals.
fn describe_locations(service: &Service) -> String {
    use crate::catalog::params::SubjectLocation;
    let named: Vec<String> = if service.subject_ids.is_empty() {
        service
            .query
            .iter()
            .filter(|q| q.format.is_person_id())
            .map(|q| format!("the `{}` query parameter", q.name))
            .collect()
    } else {
        service
            .subject_ids
            .iter()
            .map(|l| match l {
                SubjectLocation::Query(name) => format!("the `{name}` query parameter"),
                SubjectLocation::Body(pointer) => format!("an id at {pointer} in the body"),
            })
            .collect()
    };
    format!("the id given as {}", named.join(" or "))
}
