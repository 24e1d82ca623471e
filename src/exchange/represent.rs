//! Representation: a call carrying `MConnect-Represented-Party` passes only
//! when MPower confirms that the calling user holds, today, a valid
//! authorisation of the type the grant requires from the represented party.
//!
//! The broker asks the registered `mpower` participant through its catalogued
//! service `mpower/authorisation-check`, exactly as it forwards any call:
//! through the same upstream (`upstream::ProviderUpstream`: whitelisted
//! headers, signed as the broker, same exchange id, pooled mTLS client), and
//! an answer whose `mconnect-provider` signature is checked against MPower's
//! registered certificate before it is believed.
//!
//! Before MPower is asked, [`party_to_confirm`] settles what the grant and
//! the headers alone decide: a grant that names an authorisation type is for
//! acting on someone's behalf, so a call under it without
//! `MConnect-Represented-Party` is 403 `representation.required` (otherwise
//! the representative would skip MPower by leaving the header out); a
//! represented party under a grant without a type, a represented party that
//! is the calling user, or a subject other than the represented party is 403
//! `representation.denied`.
//!
//! Architecture invariant: fail closed. Only an answer that verifies, has
//! status 200, says `"valid": true` and names the same authorised person,
//! authorising party and authorisation type lets the call pass. A grant
//! without `representation`, an unregistered or unreachable MPower, an
//! unsigned or wrongly signed answer, or anything else is 403
//! `representation.denied` with a detail saying which.

use bytes::Bytes;
use http::{Method, Request};

use super::Broker;
use super::call::{CallHeaders, Route};
use super::error::{ErrorKind, ExchangeError};
use super::record::Trace;
use super::upstream::{UpstreamCall, UpstreamTrace};
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

/// The represented party MPower must confirm for this call under `grant`,
/// `None` when the call is not made on anyone's behalf; the refusals the
/// grant and the headers decide on their own come first, before any
/// question leaves the broker.
pub(super) fn party_to_confirm<'c>(
    grant: &Grant,
    call: &'c CallHeaders,
) -> Result<Option<&'c str>, ExchangeError> {
    let party = call.represented_party.as_deref();
    match (grant.representation.as_ref(), party) {
        (None, None) => Ok(None),
        (None, Some(_)) => Err(denied(format!(
            "grant {} does not allow calls on behalf of a represented party (it names no MPower authorisation type); call without MConnect-Represented-Party or under a grant that names one",
            grant.id
        ))),
        (Some(required), None) => Err(ExchangeError::new(
            ErrorKind::RepresentationRequired,
            format!(
                "grant {} is for acting on someone's behalf: name them in MConnect-Represented-Party (the calling user must hold their {} authorisation in MPower), or call under a grant for acting on your own",
                grant.id, required.authorisation_type
            ),
        )),
        (Some(_), Some(party)) if party == call.calling_user => Err(denied(format!(
            "the represented party {party} is the calling user: nobody represents themselves; call under a grant for acting on your own"
        ))),
        (Some(_), Some(party)) => match call.subject.as_deref() {
            // Acting for one person gives no right to another's data.
            Some(subject) if subject != party => Err(denied(format!(
                "the call is about {subject} but made on behalf of {party}: under a representation grant the subject must be the represented party"
            ))),
            _ => Ok(Some(party)),
        },
    }
}

impl Broker {
    /// Asks MPower whether the calling user may act for `party` under
    /// `grant`; the keys used are added to the trace.
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
    ) -> Result<(), ExchangeError> {
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
        registry.get(MPOWER).ok_or_else(|| {
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
        let mut sink = UpstreamTrace::default();
        let asked_at = self.upstream.call(
            UpstreamCall {
                exchange_id: &trace.exchange_id,
                head: &ask,
                route: &route,
                call: &asked,
                service,
                body: Bytes::new(),
                registry,
                catalog,
                trace: trace.context.as_ref(),
            },
            &mut sink,
        );
        let answer = asked_at.await;
        trace.keyids_made.append(&mut sink.keyids_made);
        trace.keyids_checked.append(&mut sink.keyids_checked);
        let answer = answer.map_err(|e| match e.kind() {
            ErrorKind::ProviderSignatureInvalid => denied(format!(
                "MPower's answer is not trustworthy: {}",
                e.detail()
            )),
            // The question could not even be built (no endpoint registered):
            // said as it is, as for any provider.
            _ if sink.forwarded_at.is_none() => e,
            _ => denied(format!(
                "MPower could not be asked ({}: {}), so representation cannot be confirmed",
                e.code(),
                e.detail()
            )),
        })?;
        if answer.status != http::StatusCode::OK {
            return Err(denied(format!(
                "MPower answered {} to the check, so representation cannot be confirmed",
                answer.status
            )));
        }
        let verdict =
            crate::json::parse(&answer.body, self.limits.max_json_values).map_err(|e| {
                denied(format!(
                    "MPower's answer is not acceptable JSON: {}",
                    e.content_free()
                ))
            })?;
        let confirmed = confirms(&verdict, user, party, kind);
        if !confirmed {
            return Err(denied(format!(
                "MPower does not confirm that {user} holds a valid {kind} authorisation from {party}; the represented party can grant one in MPower"
            )));
        }
        Ok(())
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
    use std::collections::BTreeMap;

    use serde_json::json;

    use super::{CallHeaders, ErrorKind, Grant, confirms, party_to_confirm};
    use crate::policy::{GrantOrigin, GrantStatus, RateLimit, RatePeriod, Representation};

    fn grant(kind: Option<&str>) -> Grant {
        Grant {
            id: "g".into(),
            consumer: "apl-a".into(),
            services: vec!["reg/person".into()],
            purposes: Vec::new(),
            legal_bases: Vec::new(),
            fields: BTreeMap::new(),
            valid_from: 0,
            valid_until: None,
            rate_limit: RateLimit {
                requests: 1,
                per: RatePeriod::Second,
                burst: 1,
            },
            quota: None,
            status: GrantStatus::Active,
            origin: GrantOrigin::File,
            controller_register_no: None,
            representation: kind.map(|k| Representation {
                authorisation_type: k.into(),
            }),
            note: None,
        }
    }

    fn call(user: &str, subject: Option<&str>, party: Option<&str>) -> CallHeaders {
        CallHeaders {
            client: "apl-a".into(),
            calling_user: user.into(),
            basis: "b".into(),
            reason: "r".into(),
            subject: subject.map(str::to_string),
            represented_party: party.map(str::to_string),
            request_id: uuid::Uuid::nil(),
        }
    }

    /// (grant type, subject, represented party) → the party to confirm, or
    /// the refusal; the calling user is always REP.
    #[test]
    fn what_the_grant_and_headers_decide_before_mpower_is_asked() {
        const REP: &str = "2003000000027";
        const CITIZEN: &str = "2000000000015";
        const OTHER: &str = "2004000000035";
        let t = Some("AT-SOCIAL-AID");
        type Case<'a> = (
            Option<&'a str>,
            Option<&'a str>,
            Option<&'a str>,
            Result<Option<&'a str>, ErrorKind>,
        );
        let cases: [Case; 8] = [
            (None, Some(CITIZEN), None, Ok(None)),
            (None, None, None, Ok(None)),
            (
                None,
                Some(CITIZEN),
                Some(CITIZEN),
                Err(ErrorKind::RepresentationDenied),
            ),
            (
                t,
                Some(CITIZEN),
                None,
                Err(ErrorKind::RepresentationRequired),
            ),
            (t, None, None, Err(ErrorKind::RepresentationRequired)),
            (t, Some(CITIZEN), Some(CITIZEN), Ok(Some(CITIZEN))),
            (t, None, Some(REP), Err(ErrorKind::RepresentationDenied)),
            (
                t,
                Some(OTHER),
                Some(CITIZEN),
                Err(ErrorKind::RepresentationDenied),
            ),
        ];
        for (i, (kind, subject, party, expected)) in cases.into_iter().enumerate() {
            let g = grant(kind);
            let c = call(REP, subject, party);
            let got = party_to_confirm(&g, &c).map_err(|e| e.kind());
            assert_eq!(got, expected, "case {i}");
        }
    }

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
