//! The OpenAPI 3.1 document of the admin API, assembled from the paths each
//! route module describes, so a module's endpoints and their description
//! live side by side.

/// A response object for RFC 9457 problems.
pub(crate) fn problem() -> serde_json::Value {
    serde_json::json!({"description": "RFC 9457 problem", "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}})
}

/// The OpenAPI 3.1 description of this API.
pub fn openapi() -> serde_json::Value {
    let mut doc = core();
    for paths in [
        super::catalog::openapi_paths(),
        super::connect::openapi_paths(),
        super::audit::openapi_paths(),
    ] {
        if let (Some(target), Some(extra)) = (doc["paths"].as_object_mut(), paths.as_object()) {
            for (path, item) in extra {
                target.insert(path.clone(), item.clone());
            }
        }
    }
    doc
}

/// The endpoints of `admin/mod.rs` itself, and the shared components.
fn core() -> serde_json::Value {
    let problem = problem();

    serde_json::json!({
        "openapi": "3.1.0",
        "info": {"title": "MConnect admin and metadata API", "version": "1"},
        "paths": {
            "/healthz": {"get": {"summary": "Liveness", "responses": {"200": {"description": "alive"}}}},
            "/readyz": {"get": {"summary": "Readiness: probes the store, the audit log (not failed closed, signs a tree head) and the broker key and certificate; each probe reported", "responses": {"200": {"description": "ready"}, "503": {"description": "not ready"}}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "text format 0.0.4"}}}},
            "/v1/participants": {"get": {"summary": "List participants", "responses": {"200": {"description": "participants"}}}},
            "/v1/participants/{id}": {
                "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}],
                "get": {"summary": "One participant", "responses": {"200": {"description": "participant"}, "404": problem}},
                "put": {"summary": "Register or replace a participant (operator)", "requestBody": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Participant"}}}}, "responses": {"200": {"description": "stored"}, "400": problem, "403": problem}}
            },
            "/v1/participants/{id}/endpoints": {
                "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}],
                "put": {"summary": "Replace a provider's endpoints (the provider itself or an operator); each names a service the catalog lists for that provider, https only", "requestBody": {"content": {"application/json": {"schema": {"type": "array", "items": {"$ref": "#/components/schemas/Endpoint"}}}}}, "responses": {"200": {"description": "stored"}, "400": problem, "403": problem}}
            },
            "/v1/participants/{id}/certificates": {
                "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}],
                "post": {"summary": "Add a certificate (rotation); it must chain to the bus CA and be in date (400 certificate.expired, certificate.not_yet_valid, certificate.untrusted, certificate.invalid)", "requestBody": {"content": {"application/json": {"schema": {"type": "object", "properties": {"pem": {"type": "string"}}, "required": ["pem"]}}}}, "responses": {"201": {"description": "added"}, "400": problem, "403": problem}}
            },
            "/v1/participants/{id}/certificates/{fingerprint}": {
                "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}, {"name": "fingerprint", "in": "path", "required": true, "schema": {"type": "string"}}],
                "delete": {"summary": "Remove a certificate; its key signs nothing from then on. A participant cannot remove its own last usable certificate (409 certificate.last)", "responses": {"200": {"description": "removed"}, "403": problem, "404": problem, "409": problem}}
            },
            "/v1/reload": {"post": {"summary": "Reload catalog and policies atomically (operator)", "responses": {"200": {"description": "reloaded"}, "400": problem}}}
        },
        "components": {"schemas": {
            "Problem": {"type": "object", "required": ["type", "title", "status", "detail", "code"], "properties": {"type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"}, "detail": {"type": "string"}, "code": {"type": "string"}, "exchange_id": {"type": "string"}}},
            "Endpoint": {"type": "object", "required": ["url"], "properties": {"service": {"type": "string"}, "url": {"type": "string", "format": "uri"}}},
            "Participant": {"type": "object", "required": ["id", "organisation", "roles", "certificates"], "properties": {
                "id": {"type": "string", "pattern": "^[a-z0-9][a-z0-9-]{0,62}$"},
                "organisation": {"type": "object", "required": ["idno", "name"], "properties": {"idno": {"type": "string", "pattern": "^[0-9]{13}$"}, "name": {"type": "string"}}},
                "roles": {"type": "array", "items": {"enum": ["consumer", "provider", "operator", "auditor"]}},
                "certificates": {"type": "array", "items": {"type": "object", "required": ["pem", "fingerprint", "not_after"], "properties": {"pem": {"type": "string"}, "fingerprint": {"type": "string"}, "not_after": {"type": "integer"}}}},
                "endpoints": {"type": "array", "items": {"$ref": "#/components/schemas/Endpoint"}},
                "confidential": {"type": "boolean"}
            }}
        }}
    })
}
