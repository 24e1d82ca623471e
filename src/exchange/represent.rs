//! Representation: a call carrying `MConnect-Represented-Party` passes only
//! when MPower confirms that the calling user holds, today, a valid
//! authorisation of the type the grant requires from the represented party.
//!
//! The broker asks the registered `mpower` participant through its catalogued
//! service `mpower/authorisation-check`, exactly as it forwards any call: a
//! request built by `Broker::forward_request` (whitelisted headers, signed as
//! the broker, same exchange id), sent by the pooled provider client, and an
//! answer whose `mconnect-provider` signature is checked against MPower's
//! registered certificate before it is believed.
//!
//! Architecture invariant: fail closed. Only an answer that verifies, has
//! status 200, says `"valid": true` and names the same authorised person,
//! authorising party and authorisation type lets the call pass. A grant
//! without `representation`, an unregistered or unreachable MPower, an
//! unsigned or wrongly signed answer, or anything else is 403
//! `representation.denied` with a detail saying which.

use bytes::Bytes;
use http::{Method, Request};

use super::call::{CallHeaders, Route};
use super::error::{ErrorKind, ExchangeError};
use super::{Broker, Trace, check_provider_answer};
use crate::catalog::Catalog;
use crate::policy::Grant;
use crate::registry::RegistrySnapshot;

/// The participant id MPower is registered under.
pub const MPOWER: &str = "mpower";
/// Its service that answers "does X hold a valid authorisation of type T from Y".
pub const CHECK: &str = "authorisation-check";

fn denied(detail: String) -> ExchangeError {
    ExchangeError::new(ErrorKind::RepresentationDenied, detail)
}

impl Broker {
    /// Asks MPower whether the calling user may act for `party` under
    /// `grant`; returns the keyid that signed MPower's confirmation.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn confirm_representation(
        &self,
        trace: &mut Trace,
        head: &http::request::Parts,
        call: &CallHeaders,
        grant: &Grant,
        party: &str,
        registry: &RegistrySnapshot,
        catalog: &Catalog,
    ) -> Result<String, ExchangeError> {
        let Some(required) = grant.representation.as_ref() else {
            return Err(denied(format!(
                "grant {} does not allow calls on behalf of a represented party (it names no MPower authorisation type); call without MConnect-Represented-Party or under a grant that names one",
                grant.id
            )));
        };
        let kind = required.authorisation_type.as_str();
        let service = catalog
            .service(MPOWER, CHECK)
            .filter(|s| s.is_callable())
            .ok_or_else(|| {
                denied(format!(
                    "the catalog has no active {MPOWER}/{CHECK} service, so representation cannot be confirmed"
                ))
            })?;
        let provider = registry.get(MPOWER).ok_or_else(|| {
            denied(format!(
                "MPower (participant `{MPOWER}`) is not registered on this broker, so representation cannot be confirmed"
            ))
        })?;
        // Both ids were checked as IDNP/IDNO when the call was read, and the
        // type code by the grant schema: no percent-encoding is needed.
        let user = call.calling_user.as_str();
        let query = format!("authorising={party}&authorised={user}&type={kind}");
        let route = Route {
            provider: MPOWER,
            code: CHECK,
            subpath: "",
            query: Some(&query),
        };
        // The question carries the call's protocol headers (client, user,
        // basis, reason, request id, represented party) so MPower's own log
        // says on whose call it was asked; the body stays behind.
        let mut ask = Request::new(());
        *ask.method_mut() = Method::GET;
        *ask.headers_mut() = head.headers.clone();
        ask.headers_mut().remove(http::header::CONTENT_TYPE);
        let (mut ask, ()) = ask.into_parts();
        let mut asked = call.clone();
        asked.subject = Some(party.to_string());
        // The check is about the represented party's authorisations, and
        // MPower's catalog entry requires a subject: name that person.
        let subject = http::HeaderValue::from_str(party)
            .map_err(|_| ExchangeError::new(ErrorKind::Internal, "represented party unusable"))?;
        ask.headers.insert(super::call::headers::SUBJECT, subject);
        let request =
            self.forward_request(trace, &ask, &route, service, &asked, provider, Bytes::new())?;
        let timeout = if service.timeout.is_zero() {
            self.default_timeout
        } else {
            service.timeout
        };
        let answer = self
            .providers
            .send(request, timeout, self.limits.max_response_bytes)
            .await
            .map_err(|e| {
                denied(format!(
                    "MPower could not be asked ({}: {}), so representation cannot be confirmed",
                    e.code(),
                    e.detail()
                ))
            })?;
        let keyid = check_provider_answer(&answer, provider, &trace.exchange_id).map_err(|e| {
            denied(format!(
                "MPower's answer is not trustworthy: {}",
                e.detail()
            ))
        })?;
        if answer.head.status != http::StatusCode::OK {
            return Err(denied(format!(
                "MPower answered {} to the check, so representation cannot be confirmed",
                answer.head.status
            )));
        }
        let verdict: serde_json::Value = serde_json::from_slice(&answer.body)
            .map_err(|_| denied("MPower's answer is not JSON".to_string()))?;
        let confirmed = confirms(&verdict, user, party, kind);
        if !confirmed {
            return Err(denied(format!(
                "MPower does not confirm that {user} holds a valid {kind} authorisation from {party}; the represented party can grant one in MPower"
            )));
        }
        Ok(keyid)
    }
}

/// Whether MPower's answer confirms exactly what was asked: `valid` is the
/// JSON `true` and the answer names the same authorised person, authorising
/// party and type. Anything else (a missing field, `"true"` as text, another
/// person) is no.
fn confirms(verdict: &serde_json::Value, user: &str, party: &str, kind: &str) -> bool {
    verdict["valid"] == true
        && verdict["authorised"] == user
        && verdict["authorising"] == party
        && verdict["authorisation_type"] == kind
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::confirms;

    #[test]
    fn only_an_exact_yes_confirms() {
        let yes = json!({"valid": true, "authorised": "2003000000027",
            "authorising": "2000000000015", "authorisation_type": "AT-SOCIAL-AID"});
        let cases = [
            (yes.clone(), true),
            (json!({"valid": false}), false),
            (
                json!({"valid": "true", "authorised": "2003000000027",
                "authorising": "2000000000015", "authorisation_type": "AT-SOCIAL-AID"}),
                false,
            ),
            (
                json!({"valid": true, "authorised": "2004000000035",
                "authorising": "2000000000015", "authorisation_type": "AT-SOCIAL-AID"}),
                false,
            ),
            (
                json!({"valid": true, "authorised": "2003000000027",
                "authorising": "2000000000015", "authorisation_type": "AT-OTHER"}),
                false,
            ),
            (json!({"valid": true}), false),
            (json!(null), false),
        ];
        for (i, (verdict, expected)) in cases.into_iter().enumerate() {
            assert_eq!(
                confirms(&verdict, "2003000000027", "2000000000015", "AT-SOCIAL-AID"),
                expected,
                "case {i}"
            );
        }
    }
}
