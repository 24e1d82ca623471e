//! Metadata endpoints of the admin API: the catalog (services, one service
//! with its schemas, DCAT-AP) and a consumer's own grants.
//!
//! Invariant: read-only; answers come from the current in-memory rules.

use http::{Method, StatusCode};

use super::{AdminRequest, AdminResult, AdminState, json, refuse};

/// Routes `/v1/services…`, `/v1/catalog…` and `/v1/grants…`.
pub(crate) fn route(state: &AdminState, request: &AdminRequest<'_>) -> AdminResult {
    match (request.method.clone(), request.segments) {
        (Method::GET, ["v1", "services"]) => {
            let rules = state.broker.rules();
            let list: Vec<serde_json::Value> = rules
                .catalog
                .services()
                .map(|s| {
                    serde_json::json!({
                        "service": s.key, "provider": s.provider, "code": s.code,
                        "version": s.version, "method": s.method.as_str(), "path": s.path,
                        "subject_required": s.subject_required,
                    })
                })
                .collect();
            Ok(json(
                StatusCode::OK,
                &serde_json::json!({ "services": list }),
            ))
        }
        (Method::GET, ["v1", "grants"]) => {
            let rules = state.broker.rules();
            let list: Vec<serde_json::Value> = rules
                    .policy
                    .grants_of(&request.caller.id)
                    .map(|g| {
                        serde_json::json!({
                            "id": g.id,
                            "services": g.services,
                            "purposes": g.purposes.iter().map(|p| &p.code).collect::<Vec<_>>(),
                            "legal_bases": g.legal_bases.iter().map(|b| serde_json::json!({"id": b.id, "act": b.act, "article": b.article})).collect::<Vec<_>>(),
                            "valid_from": g.valid_from,
                            "valid_until": g.valid_until,
                            "status": g.status.as_str(),
                        })
                    })
                    .collect();
            Ok(json(StatusCode::OK, &serde_json::json!({ "grants": list })))
        }
        _ => Err(refuse(
            StatusCode::NOT_FOUND,
            "admin.unknown_endpoint",
            "no such admin endpoint; see /v1/openapi.json",
        )),
    }
}

/// The OpenAPI paths of these endpoints.
pub(crate) fn openapi_paths() -> serde_json::Value {
    serde_json::json!({
        "/v1/services": {"get": {"summary": "List catalogued services", "responses": {"200": {"description": "services"}}}},
        "/v1/grants": {"get": {"summary": "The caller's own grants", "responses": {"200": {"description": "grants"}}}}
    })
}
