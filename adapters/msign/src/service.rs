//! The bus face of MSign: one broker-forwarded request (signature already
//! checked by the SDK) to one backend operation, answered as JSON or an
//! RFC 9457 problem with a stable code.
//!
//! | Method and path               | Catalog service            | Operation |
//! | ----------------------------- | -------------------------- | --------- |
//! | `POST /sign-requests`         | `msign/sign-request`       | post a sign request → request id |
//! | `GET /sign-requests/result`   | `msign/sign-result`        | status, signature, certificate |
//! | `POST /signatures/verify`     | `msign/signature-verify`   | verify a detached signature |
//!
//! Problem codes: `request.malformed` (400), `msign.invalid` (422),
//! `msign.unknown_request` (404), `msign.unavailable` (503),
//! `route.unknown` (404).

use http::{Method, StatusCode};
use mconnect_sdk::{ProviderRequest, ProviderResponse};
use serde_json::json;

use crate::backend::{SignBackend, SignError, SignRequest, VerifyRequest};

type Answer = Result<ProviderResponse, ProviderResponse>;

/// Answers one request.
pub async fn handle<B: SignBackend>(backend: &B, request: &ProviderRequest) -> ProviderResponse {
    let path = request.uri.path().trim_end_matches('/');
    let outcome = match (&request.method, path) {
        (&Method::POST, "/sign-requests") => post(backend, request).await,
        (&Method::GET, "/sign-requests/result") => result(backend, request).await,
        (&Method::POST, "/signatures/verify") => verify(backend, request).await,
        _ => Err(ProviderResponse::problem(
            StatusCode::NOT_FOUND,
            "route.unknown",
            &format!("MSign has no operation {} {path}", request.method),
        )),
    };
    outcome.unwrap_or_else(|problem| problem)
}

fn malformed(detail: &str) -> ProviderResponse {
    ProviderResponse::problem(StatusCode::BAD_REQUEST, "request.malformed", detail)
}

fn problem(e: &SignError) -> ProviderResponse {
    match e {
        SignError::Invalid(d) => {
            ProviderResponse::problem(StatusCode::UNPROCESSABLE_ENTITY, "msign.invalid", d)
        }
        SignError::UnknownRequest(_) => ProviderResponse::problem(
            StatusCode::NOT_FOUND,
            "msign.unknown_request",
            &e.to_string(),
        ),
        SignError::Unavailable(_) => {
            tracing::error!(error = %e, "MSign backend unavailable");
            ProviderResponse::problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "msign.unavailable",
                "the signature service is unavailable; try again later",
            )
        }
    }
}

async fn post<B: SignBackend>(backend: &B, request: &ProviderRequest) -> Answer {
    let body: SignRequest = serde_json::from_slice(&request.body)
        .map_err(|e| malformed(&format!("body is not a sign request: {e}")))?;
    let id = backend
        .post_sign_request(body)
        .await
        .map_err(|e| problem(&e))?;
    Ok(ProviderResponse::json(
        StatusCode::CREATED,
        &json!({ "request_id": id, "status": "Pending" }),
    ))
}

async fn result<B: SignBackend>(backend: &B, request: &ProviderRequest) -> Answer {
    let id = request
        .query_param("request_id")
        .filter(|id| uuid::Uuid::parse_str(id).is_ok())
        .ok_or_else(|| malformed("query parameter `request_id` (a UUID) is required"))?;
    let answer = backend
        .get_sign_response(&id)
        .await
        .map_err(|e| problem(&e))?;
    Ok(ProviderResponse::json(
        StatusCode::OK,
        &serde_json::to_value(answer).unwrap_or_default(),
    ))
}

async fn verify<B: SignBackend>(backend: &B, request: &ProviderRequest) -> Answer {
    let body: VerifyRequest = serde_json::from_slice(&request.body)
        .map_err(|e| malformed(&format!("body is not a verification request: {e}")))?;
    let verdict = backend.verify(body).await.map_err(|e| problem(&e))?;
    Ok(ProviderResponse::json(
        StatusCode::OK,
        &serde_json::to_value(verdict).unwrap_or_default(),
    ))
}
