//! The bus face of MPower: one broker-forwarded request (signature already
//! checked by the SDK) to one backend operation, and the answer as JSON or
//! an RFC 9457 problem with a stable code.
//!
//! | Method and path                 | Catalog service                    | Operation |
//! | ------------------------------- | ---------------------------------- | --------- |
//! | `POST /authorisations`          | `mpower/authorisation-grant`       | register  |
//! | `POST /authorisations/revoke`   | `mpower/authorisation-revoke`      | revoke    |
//! | `POST /authorisations/transition` | `mpower/authorisation-transition` | submit, accept, suspend, resume, revoke |
//! | `GET /authorisations/by-code`   | `mpower/authorisation-by-code`     | by code   |
//! | `GET /authorisations/check`     | `mpower/authorisation-check`       | X from Y of type T? |
//! | `GET /authorisations/by-person` | `mpower/authorisations-by-person`  | list      |
//!
//! Problem codes: `request.malformed` (400), `mpower.invalid` (422),
//! `mpower.not_authorising_party` (403: the step needs the grantor's
//! consent), `mpower.consent_invalid` (403: the MSign evidence does not prove
//! it), `mpower.unknown_code` (404), `mpower.conflict` (409),
//! `mpower.unavailable` (503), `route.unknown` (404).
//!
//! Invariant: `MConnect-Calling-User` is the consumer's claim, not proof.
//! Anyone with a grant may file an authorisation, but it is in force only
//! with the grantor's consent as `consent.rs` verifies it (the citizen
//! portal for its signed-in grantor, or the grantor's MSign signature);
//! otherwise it waits in PendingAcceptance. Every later step is decided by
//! `backend::lifecycle::next`.

use http::{Method, StatusCode};
use mconnect_sdk::{ProviderRequest, ProviderResponse};
use serde::Deserialize;
use serde_json::json;

use crate::backend::lifecycle::{self, Action, Actor};
use crate::backend::{
    self, Authorisation, GrantRequest, PartyType, PowerBackend, PowerError, is_code, is_person_id,
    is_type_code,
};
use crate::consent::{ConsentChecker, ConsentError};

/// The body of a revocation.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeRequest {
    code: String,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    msign_request_id: Option<String>,
}

/// The body of a lifecycle step.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TransitionRequest {
    code: String,
    action: Action,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    msign_request_id: Option<String>,
}

/// Answers one request.
pub async fn handle<B: PowerBackend>(
    backend: &B,
    consent: &ConsentChecker,
    request: &ProviderRequest,
) -> ProviderResponse {
    let path = request.uri.path().trim_end_matches('/');
    let outcome = match (&request.method, path) {
        (&Method::POST, "/authorisations") => grant(backend, consent, request).await,
        (&Method::POST, "/authorisations/revoke") => {
            match serde_json::from_slice::<RevokeRequest>(&request.body) {
                Ok(r) => {
                    let step = TransitionRequest {
                        code: r.code,
                        action: Action::Revoke,
                        reason: r.reason,
                        msign_request_id: r.msign_request_id,
                    };
                    transition(backend, consent, request, step).await
                }
                Err(e) => Err(malformed(&format!("body is not a revocation: {e}"))),
            }
        }
        (&Method::POST, "/authorisations/transition") => {
            match serde_json::from_slice::<TransitionRequest>(&request.body) {
                Ok(step) => transition(backend, consent, request, step).await,
                Err(e) => Err(malformed(&format!("body is not a lifecycle step: {e}"))),
            }
        }
        (&Method::GET, "/authorisations/by-code") => by_code(backend, request).await,
        (&Method::GET, "/authorisations/check") => check(backend, request).await,
        (&Method::GET, "/authorisations/by-person") => by_person(backend, request).await,
        _ => Err(ProviderResponse::problem(
            StatusCode::NOT_FOUND,
            "route.unknown",
            &format!("MPower has no operation {} {path}", request.method),
        )),
    };
    outcome.unwrap_or_else(|problem| problem)
}

type Answer = Result<ProviderResponse, ProviderResponse>;

fn malformed(detail: &str) -> ProviderResponse {
    ProviderResponse::problem(StatusCode::BAD_REQUEST, "request.malformed", detail)
}

fn problem(e: &PowerError) -> ProviderResponse {
    let (status, code) = match e {
        PowerError::Invalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, "mpower.invalid"),
        PowerError::NotGrantor(_) => (StatusCode::FORBIDDEN, "mpower.not_authorising_party"),
        PowerError::UnknownCode(_) => (StatusCode::NOT_FOUND, "mpower.unknown_code"),
        PowerError::Conflict(_) => (StatusCode::CONFLICT, "mpower.conflict"),
        PowerError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "mpower.unavailable"),
    };
    if matches!(e, PowerError::Unavailable(_)) {
        tracing::error!(error = %e, "MPower backend unavailable");
        // The detail stays generic: paths and causes are for the log only.
        return ProviderResponse::problem(
            status,
            code,
            "the power-of-attorney store is unavailable; try again later",
        );
    }
    ProviderResponse::problem(status, code, &e.to_string())
}

/// An authorisation as answered: its status as of today, whether it is in
/// force today, and for each step the grantor may take now the hash of the
/// consent statement to sign through MSign.
fn view(a: &Authorisation) -> serde_json::Value {
    let day = backend::today();
    let mut a = a.clone();
    a.status = lifecycle::effective(&a, &day);
    let hashes: serde_json::Map<String, serde_json::Value> = Action::ALL
        .into_iter()
        .filter(|action| lifecycle::next(a.status, *action, &Actor::Grantor(String::new())).is_ok())
        .map(|action| {
            (
                action.as_str().to_string(),
                json!(lifecycle::consent_hash(&a, action)),
            )
        })
        .collect();
    let mut v = serde_json::to_value(&a).unwrap_or_default();
    v["valid_now"] = json!(a.is_valid_on(&day));
    v["consent_hashes"] = serde_json::Value::Object(hashes);
    v
}

fn consent_problem(e: &ConsentError) -> ProviderResponse {
    match e {
        ConsentError::Invalid(d) => {
            ProviderResponse::problem(StatusCode::FORBIDDEN, "mpower.consent_invalid", d)
        }
        ConsentError::Unavailable(d) => {
            tracing::warn!(detail = %d, "MSign consent could not be checked");
            ProviderResponse::problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "mpower.unavailable",
                "the grantor's MSign signature could not be checked now; try again later",
            )
        }
    }
}

async fn grant<B: PowerBackend>(
    backend: &B,
    consent: &ConsentChecker,
    request: &ProviderRequest,
) -> Answer {
    let body: GrantRequest = serde_json::from_slice(&request.body)
        .map_err(|e| malformed(&format!("body is not a grant request: {e}")))?;
    if body.authorising.party_type == PartyType::Natural
        && !body.authorising.id.starts_with('2')
        && !body.authorising.id.starts_with('0')
    {
        // IDNPs start with 0 or 2, IDNOs with 1: a mismatch is a mistake.
        return Err(problem(&PowerError::Invalid(
            "authorising.party_type is natural but the id is not an IDNP".into(),
        )));
    }
    // Filed by the portal for its signed-in grantor: that is consent. Filed
    // by anyone else: it waits for the grantor.
    let given = consent.portal_consent(request, &body.authorising);
    let client = request
        .header("mconnect-client")
        .unwrap_or("unknown")
        .to_string();
    let a = backend
        .grant(body, &client, given)
        .await
        .map_err(|e| problem(&e))?;
    Ok(ProviderResponse::json(StatusCode::CREATED, &view(&a)))
}

async fn transition<B: PowerBackend>(
    backend: &B,
    consent: &ConsentChecker,
    request: &ProviderRequest,
    step: TransitionRequest,
) -> Answer {
    if !is_code(&step.code) {
        return Err(malformed("code must be 16 digits"));
    }
    if step
        .reason
        .as_ref()
        .is_some_and(|r| r.chars().count() > 500)
    {
        return Err(malformed("reason must be at most 500 characters"));
    }
    let current = backend.by_code(&step.code).await.map_err(|e| problem(&e))?;
    // The consent is checked against the authorisation as it is now; the
    // backend applies the step only if it is still at this revision.
    let actor = match step.msign_request_id.as_deref() {
        Some(id) => Actor::Grantor(
            consent
                .msign_consent(request, &current, step.action, id)
                .await
                .map_err(|e| consent_problem(&e))?,
        ),
        None => match consent.portal_consent(request, &current.authorising) {
            Some(how) => Actor::Grantor(how),
            None if request.header("mconnect-client") == Some(current.granted_via.as_str()) => {
                Actor::Filer
            }
            None => Actor::Other,
        },
    };
    let a = backend
        .transition(
            &step.code,
            current.revision,
            step.action,
            actor,
            step.reason,
        )
        .await
        .map_err(|e| problem(&e))?;
    Ok(ProviderResponse::json(StatusCode::OK, &view(&a)))
}

async fn by_code<B: PowerBackend>(backend: &B, request: &ProviderRequest) -> Answer {
    let code = request
        .query_param("code")
        .filter(|c| is_code(c))
        .ok_or_else(|| malformed("query parameter `code` (16 digits) is required"))?;
    let a = backend.by_code(&code).await.map_err(|e| problem(&e))?;
    Ok(ProviderResponse::json(StatusCode::OK, &view(&a)))
}

async fn check<B: PowerBackend>(backend: &B, request: &ProviderRequest) -> Answer {
    let person = |name: &str| {
        request
            .query_param(name)
            .filter(|id| is_person_id(id))
            .ok_or_else(|| malformed(&format!("query parameter `{name}` (IDNP/IDNO) is required")))
    };
    let authorised = person("authorised")?;
    let authorising = person("authorising")?;
    let kind = request
        .query_param("type")
        .filter(|t| is_type_code(t))
        .ok_or_else(|| malformed("query parameter `type` (AT-…) is required"))?;
    let day = backend::today();
    let found = backend
        .check(&authorised, &authorising, &kind, &day)
        .await
        .map_err(|e| problem(&e))?;
    Ok(ProviderResponse::json(
        StatusCode::OK,
        &json!({
            "authorised": authorised,
            "authorising": authorising,
            "authorisation_type": kind,
            "checked_on": day,
            "valid": found.is_some(),
            "code": found.as_ref().map(|a| a.code.clone()),
            "valid_until": found.as_ref().map(|a| a.valid_until.clone()),
        }),
    ))
}

async fn by_person<B: PowerBackend>(backend: &B, request: &ProviderRequest) -> Answer {
    let id = request
        .query_param("idnp")
        .filter(|id| is_person_id(id))
        .ok_or_else(|| malformed("query parameter `idnp` (IDNP/IDNO) is required"))?;
    let list = backend.of_person(&id).await.map_err(|e| problem(&e))?;
    let list: Vec<serde_json::Value> = list.iter().map(view).collect();
    Ok(ProviderResponse::json(
        StatusCode::OK,
        &json!({ "person": id, "authorisations": list }),
    ))
}
