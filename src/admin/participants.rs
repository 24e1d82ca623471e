//! Who may change a participant's endpoints and certificates through the
//! admin API, what an endpoint may name, and how a registry refusal becomes
//! its own problem code.
//!
//! Invariants: endpoints are set only by an operator, or by a provider on
//! itself, and each names a service the catalog lists for that provider (the
//! default endpoint only for a provider the catalog lists at all); a refused
//! certificate answers with its own code (`certificate.expired`,
//! `certificate.untrusted`, ...), never a generic one.

use http::StatusCode;

use super::{AdminError, refuse};
use crate::catalog::Catalog;
use crate::registry::{Endpoint, Participant, RegistryError, Role};

/// Whether `caller` may replace the endpoints of participant `id`.
pub(crate) fn may_set_endpoints(caller: &Participant, id: &str) -> Result<(), AdminError> {
    if caller.has_role(Role::Operator) || (caller.id == id && caller.has_role(Role::Provider)) {
        return Ok(());
    }
    Err(refuse(
        StatusCode::FORBIDDEN,
        "admin.forbidden",
        if caller.id == id {
            format!(
                "`{id}` is not a provider: only providers (for themselves) and operators set endpoints"
            )
        } else {
            "providers may change only their own endpoints".to_string()
        },
    ))
}

/// Each endpoint of provider `id` names a service the catalog lists for it;
/// a default endpoint (no service) needs the catalog to list at least one.
pub(crate) fn check_endpoints(
    catalog: &Catalog,
    id: &str,
    endpoints: &[Endpoint],
) -> Result<(), RegistryError> {
    for e in endpoints {
        let listed = match e.service.as_deref() {
            Some(code) => catalog.service(id, code).is_some(),
            None => catalog.services().any(|s| s.provider == id),
        };
        if !listed {
            return Err(RegistryError::NotCatalogued(match e.service.as_deref() {
                Some(code) => format!(
                    "the catalog lists no service {id}/{code}; name a service of GET /v1/services"
                ),
                None => format!(
                    "the catalog lists no service of `{id}`, so it needs no default endpoint"
                ),
            }));
        }
    }
    Ok(())
}

/// Gives a change refused by the registry its own status and code, noted by
/// the change itself in `why` (the audit wrapper only knows `admin.invalid`).
pub(crate) fn with_registry_problem<T>(
    result: Result<T, AdminError>,
    why: Option<(StatusCode, &'static str)>,
) -> Result<T, AdminError> {
    result.map_err(|mut e| {
        if let Some((status, code)) = why
            && e.code == "admin.invalid"
        {
            e.status = status;
            e.code = code;
        }
        e
    })
}

/// Notes a registry refusal's problem for [`with_registry_problem`].
pub(crate) fn note<T>(
    why: &mut Option<(StatusCode, &'static str)>,
    result: Result<T, RegistryError>,
) -> Result<T, RegistryError> {
    if let Err(e) = &result {
        *why = Some(e.problem());
    }
    result
}
