//! The bus face of MPower: one broker-forwarded request (signature already
//! checked by the SDK) to one backend operation, and the answer as JSON or
//! an RFC 9457 problem with a stable code.
//!
//! | Method and path                 | Catalog service                    | Operation |
//! | ------------------------------- | ---------------------------------- | --------- |
//! | `POST /authorisations`          | `mpower/authorisation-grant`       | register  |
//! | `POST /authorisations/revoke`   | `mpower/authorisation-revoke`      | revoke    |
//! | `GET /authorisations/by-code`   | `mpower/authorisation-by-code`     | by code   |
//! | `GET /authorisations/check`     | `mpower/authorisation-check`       | X from Y of type T? |
//! | `GET /authorisations/by-person` | `mpower/authorisations-by-person`  | list      |
//!
//! Problem codes: `request.malformed` (400), `mpower.invalid` (422),
//! `mpower.not_authorising_party` (403), `mpower.unknown_code` (404),
//! `mpower.conflict` (409), `mpower.unavailable` (503), `route.unknown` (404).
//!
//! Invariant: a natural person's authorisation is registered or revoked only
//! when the calling user (`MConnect-Calling-User`, authenticated by the
//! broker's signature) is that person: an institution cannot give away a
//! citizen's power on its own.

use http::{Method, StatusCode};
use mconnect::sdk::{ProviderRequest, ProviderResponse};
use serde::Deserialize;
use serde_json::json;

use crate::backend::{
    self, Authorisation, GrantRequest, PartyType, PowerBackend, PowerError, is_code, is_person_id,
    is_type_code,
};

/// The body of a revocation.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeRequest {
    code: String,
    #[serde(default)]
    reason: Option<String>,
}

/// Answers one request.
pub async fn handle<B: PowerBackend>(backend: &B, request: &ProviderRequest) -> ProviderResponse {
    let path = request.uri.path().trim_end_matches('/');
    let outcome = match (&request.method, path) {
        (&Method::POST, "/authorisations") => grant(backend, request).await,
        (&Method::POST, "/authorisations/revoke") => revoke(backend, request).await,
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

fn view(a: &Authorisation) -> serde_json::Value {
    let mut v = serde_json::to_value(a).unwrap_or_default();
    v["valid_now"] = json!(a.is_valid_on(&backend::today()));
    v
}

fn calling_user_must_be(
    request: &ProviderRequest,
    authorising: &backend::Party,
) -> Result<(), ProviderResponse> {
    if authorising.party_type == PartyType::Natural
        && request.header("mconnect-calling-user") != Some(authorising.id.as_str())
    {
        return Err(ProviderResponse::problem(
            StatusCode::FORBIDDEN,
            "mpower.not_authorising_party",
            "a natural person's power of attorney is given or revoked only by that person: MConnect-Calling-User must be the authorising IDNP",
        ));
    }
    Ok(())
}

async fn grant<B: PowerBackend>(backend: &B, request: &ProviderRequest) -> Answer {
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
    calling_user_must_be(request, &body.authorising)?;
    let client = request
        .header("mconnect-client")
        .unwrap_or("unknown")
        .to_string();
    let a = backend
        .grant(body, &client)
        .await
        .map_err(|e| problem(&e))?;
    Ok(ProviderResponse::json(StatusCode::CREATED, &view(&a)))
}

async fn revoke<B: PowerBackend>(backend: &B, request: &ProviderRequest) -> Answer {
    let body: RevokeRequest = serde_json::from_slice(&request.body)
        .map_err(|e| malformed(&format!("body is not a revocation: {e}")))?;
    if !is_code(&body.code) {
        return Err(malformed("code must be 16 digits"));
    }
    let existing = backend.by_code(&body.code).await.map_err(|e| problem(&e))?;
    calling_user_must_be(request, &existing.authorising)?;
    let a = backend
        .revoke(&body.code, body.reason)
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
