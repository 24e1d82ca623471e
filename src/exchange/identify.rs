//! Identify: who is calling (the TLS certificate → a registered
//! participant, which `MConnect-Client` must name), what they call (the path
//! and the protocol headers, for form), and whether the catalog has that
//! service, active, for this method.
//!
//! Invariant: nothing here costs a provider anything or reveals data; every
//! refusal names what to fix. What is learnt is written to the trace as it
//! is learnt, so a refusal half-way is recorded with it.

use std::sync::Arc;

use http::HeaderMap;

use super::Peer;
use super::call::{self, CallHeaders, Route};
use super::error::{ErrorKind, ExchangeError};
use super::record::Trace;
use crate::catalog::{Catalog, Service};
use crate::registry::{ParticipantEntry, RegistrySnapshot};

/// A caller known by certificate, calling a catalogued service.
pub struct Identified<'h> {
    /// The calling participant.
    pub consumer: Arc<ParticipantEntry>,
    /// The service addressed and what follows it.
    pub route: Route<'h>,
    /// The protocol headers, read for form.
    pub call: CallHeaders,
    /// The service, active and called with its method.
    pub service: Arc<Service>,
}

/// Identifies the caller and the service of a call.
pub(super) fn identify<'h>(
    trace: &mut Trace,
    registry: &RegistrySnapshot,
    catalog: &Catalog,
    peer: &Peer,
    head: &'h http::request::Parts,
    now: i64,
) -> Result<Identified<'h>, ExchangeError> {
    let consumer = participant(registry, peer, &head.headers, now)?;
    trace.consumer = Some(consumer.participant.id.clone());
    trace.consumer_idno = Some(consumer.participant.organisation.idno.clone());

    let route = call::parse_route(head.uri.path(), head.uri.query())?;
    trace.provider = Some(route.provider.to_string());
    trace.service = Some(format!("{}/{}", route.provider, route.code));
    let call = CallHeaders::parse(&head.headers)?;
    trace.call = Some(call.clone());

    let service = catalog
        .service(route.provider, route.code)
        .filter(|s| s.is_callable())
        .ok_or_else(|| {
            ExchangeError::new(
                ErrorKind::UnknownService,
                format!(
                    "no active service {}/{} in the catalog; see GET /v1/services on the admin API",
                    route.provider, route.code
                ),
            )
        })?
        .clone();
    trace.service_version = Some(service.version.clone());
    if head.method != service.method {
        return Err(ExchangeError::new(
            ErrorKind::Malformed,
            format!("service {} is called with {}", service.key, service.method),
        ));
    }
    Ok(Identified {
        consumer,
        route,
        call,
        service,
    })
}

/// Certificate → participant, and the `MConnect-Client` header must name the
/// same one. The certificate's dates are checked again here, at `now`: the
/// handshake checked them, but a kept-alive connection can outlive them.
fn participant(
    registry: &crate::registry::RegistrySnapshot,
    peer: &Peer,
    headers: &HeaderMap,
    now: i64,
) -> Result<Arc<ParticipantEntry>, ExchangeError> {
    let claimed = CallHeaders::client(headers)?;
    let fingerprint = peer.fingerprint.as_deref().ok_or_else(|| {
        ExchangeError::new(
            ErrorKind::ClientUnknown,
            "present your participant certificate",
        )
    })?;
    let owner = registry.by_fingerprint(fingerprint).ok_or_else(|| {
        ExchangeError::new(
            ErrorKind::ClientUnknown,
            format!("certificate {fingerprint} is not registered to any participant"),
        )
    })?;
    if owner.participant.id != claimed {
        return Err(match registry.get(claimed) {
            Some(_) => ExchangeError::new(
                ErrorKind::CertificateMismatch,
                format!(
                    "the TLS certificate belongs to `{}`, not to `{claimed}` named in MConnect-Client",
                    owner.participant.id
                ),
            ),
            None => ExchangeError::new(
                ErrorKind::ClientUnknown,
                format!("no participant `{claimed}` is registered"),
            ),
        });
    }
    owner.certificate_at(fingerprint, now).map_err(|refusal| {
        ExchangeError::new(
            ErrorKind::ClientUnknown,
            format!("the TLS client certificate identifies no one: {refusal}"),
        )
    })?;
    Ok(owner.clone())
}
