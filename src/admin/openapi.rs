//! The OpenAPI 3.1 document of the admin API, assembled from the paths each
//! route module describes, so a module's endpoints and their description
//! live side by side.
//!
//! Invariants (how the document is kept honest):
//! - every request body's schema is generated (schemars) from the type that
//!   parses it, with that type's serde attributes, so a member added,
//!   renamed or retyped in the type changes the document with it; what JSON
//!   Schema cannot say (an IDNO's control digit, the path's id repeated in
//!   the body, the catalog's services) is said in the descriptions, the
//!   custom formats `idno` and `pem-certificate` (a PEM that reads as an
//!   X.509 certificate), and the documented 400 and 409 answers;
//! - the document is the router's table of methods: a request to a
//!   documented path with a method the document does not list is answered
//!   405 with `Allow` from here (`mod.rs`), and a documented operation the
//!   router does not handle is a 500, never a silent 404;
//! - the application schema is embedded in `components` with its `$defs`
//!   beside it, so every `$ref` resolves inside this document (a unit test
//!   walks them), and `tests/openapi_conformance.rs` runs schemathesis
//!   against a sandbox with no failure allowed.

use std::sync::LazyLock;

use serde_json::{Value, json};

/// A response object for RFC 9457 problems.
pub(crate) fn problem() -> Value {
    json!({"description": "RFC 9457 problem", "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}})
}

/// The schema of a type that parses a request body, as its serde derive
/// reads it, self-contained (no `$ref`s).
pub(crate) fn schema_of<T: schemars::JsonSchema>() -> Value {
    let mut settings = schemars::generate::SchemaSettings::draft2020_12();
    settings.inline_subschemas = true;
    settings.meta_schema = None;
    let mut value = settings
        .into_generator()
        .into_root_schema_for::<T>()
        .to_value();
    if let Some(object) = value.as_object_mut() {
        object.remove("$schema");
    }
    value
}

/// The OpenAPI 3.1 description of this API.
pub fn openapi() -> Value {
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
    if let Some(schemas) = doc["components"]["schemas"].as_object_mut() {
        for (name, schema) in application_schemas() {
            schemas.insert(name, schema);
        }
    }
    add_common_answers(&mut doc);
    doc
}

/// The document, built once: the router reads its methods at every request.
static DOCUMENT: LazyLock<Value> = LazyLock::new(openapi);

/// A path of the document as segments (`None` for a `{parameter}`), with
/// its methods, upper case.
type Route = (Vec<Option<String>>, Vec<String>);

/// The paths of the document.
static ROUTES: LazyLock<Vec<Route>> = LazyLock::new(|| {
    let methods = [
        "get", "put", "post", "delete", "patch", "head", "options", "trace",
    ];
    DOCUMENT["paths"]
        .as_object()
        .map(|paths| {
            paths
                .iter()
                .map(|(path, item)| {
                    let segments = path
                        .trim_matches('/')
                        .split('/')
                        .map(|s| (!s.starts_with('{')).then(|| s.to_string()))
                        .collect();
                    let allowed = methods
                        .iter()
                        .filter(|m| item.get(**m).is_some())
                        .map(|m| m.to_uppercase())
                        .collect();
                    (segments, allowed)
                })
                .collect()
        })
        .unwrap_or_default()
});

/// The methods the document lists for a request path (over every path
/// template it matches), or `None` when it documents no such path.
pub(crate) fn documented_methods(path: &str) -> Option<Vec<&'static str>> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let mut found: Option<Vec<&'static str>> = None;
    for (template, methods) in ROUTES.iter() {
        let matches = template.len() == segments.len()
            && template
                .iter()
                .zip(&segments)
                .all(|(t, s)| t.as_deref().map_or(!s.is_empty(), |literal| literal == *s));
        if matches {
            let all = found.get_or_insert_with(Vec::new);
            for m in methods {
                if !all.contains(&m.as_str()) {
                    all.push(m.as_str());
                }
            }
        }
    }
    found
}

/// The connection application's schema (the file the broker validates
/// submissions with) as the component `Application`, its `$defs` beside it
/// as `Application.{name}` so that its references resolve in this document.
fn application_schemas() -> Vec<(String, Value)> {
    let mut schema: Value = serde_json::from_str(crate::connect::application::APPLICATION_SCHEMA)
        .unwrap_or_else(|_| json!({"type": "object"}));
    let mut out = Vec::new();
    if let Some(object) = schema.as_object_mut() {
        object.remove("$id");
        object.remove("$schema");
        if let Some(Value::Object(defs)) = object.remove("$defs") {
            for (name, def) in defs {
                out.push((format!("Application.{name}"), def));
            }
        }
    }
    out.push(("Application".to_string(), schema));
    for (_, schema) in &mut out {
        rewrite_refs(schema);
    }
    out
}

fn rewrite_refs(value: &mut Value) {
    match value {
        Value::Object(object) => {
            if let Some(Value::String(target)) = object.get_mut("$ref")
                && let Some(name) = target.strip_prefix("#/$defs/")
            {
                *target = format!("#/components/schemas/Application.{name}");
            }
            object.values_mut().for_each(rewrite_refs);
        }
        Value::Array(items) => items.iter_mut().for_each(rewrite_refs),
        _ => {}
    }
}

/// What every authenticated operation can answer besides its own: 401
/// (`client.unknown`: no registered, in-date certificate), and 413
/// (`request.too_large`) where it takes a body.
fn add_common_answers(doc: &mut Value) {
    let open = ["/healthz", "/readyz", "/metrics", "/v1/openapi.json"];
    let Some(paths) = doc["paths"].as_object_mut() else {
        return;
    };
    for (path, item) in paths.iter_mut() {
        if open.contains(&path.as_str()) {
            continue;
        }
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        for (method, operation) in item.iter_mut() {
            if method == "parameters" {
                continue;
            }
            let has_body = operation.get("requestBody").is_some();
            let Some(responses) = operation["responses"].as_object_mut() else {
                continue;
            };
            responses.entry("401").or_insert_with(problem);
            if has_body {
                responses.entry("413").or_insert_with(problem);
            }
        }
    }
}

/// The endpoints of `admin/mod.rs` itself, and the shared components.
fn core() -> Value {
    let problem = problem();
    let id = json!({"name": "id", "in": "path", "required": true, "schema": {"type": "string"}});
    let change = |ok: &str, description: &str, codes: &[&str]| {
        let mut responses = json!({ok: {"description": description}});
        for code in codes {
            responses[*code] = problem.clone();
        }
        responses["503"] = json!({"description": "the change could not be audited, so nothing changed (audit.unavailable)", "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}});
        responses
    };

    json!({
        "openapi": "3.1.0",
        "info": {"title": "MConnect admin and metadata API", "version": "1"},
        "paths": {
            "/healthz": {"get": {"summary": "Liveness", "responses": {"200": {"description": "alive"}}}},
            "/readyz": {"get": {"summary": "Readiness: probes the store, the audit log (not failed closed, signs a tree head) and the broker key and certificate; each probe reported", "responses": {"200": {"description": "ready"}, "503": {"description": "not ready"}}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "text format 0.0.4"}}}},
            "/v1/openapi.json": {"get": {"summary": "This document", "responses": {"200": {"description": "OpenAPI 3.1", "content": {"application/json": {"schema": {"type": "object"}}}}}}},
            "/v1/participants": {"get": {"summary": "List participants", "responses": {"200": {"description": "participants"}}}},
            "/v1/participants/{id}": {
                "parameters": [id],
                "get": {"summary": "One participant", "responses": {"200": {"description": "participant"}, "404": problem}},
                "put": {
                    "summary": "Register or replace a participant (operator); audited",
                    "description": "The body's `id` must be the path's (400 request.malformed). Besides its schema: the IDNO has a valid control digit (format `idno`; 400 admin.invalid); each certificate not already held reads, chains to the bus CA and is in date, and its fingerprint is the SHA-256 of its DER (400 certificate.invalid, certificate.untrusted, certificate.expired, certificate.not_yet_valid, admin.invalid), and belongs to no other participant (409 certificate.taken); an operator replacing itself keeps the operator role and a certificate it holds (409 participant.self_lockout); each endpoint is for a service the catalog lists for this participant (409 endpoint.not_catalogued), each service at most once (400 admin.invalid).",
                    "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Participant"}}}},
                    "responses": change("200", "stored", &["400", "403", "409"])
                }
            },
            "/v1/participants/{id}/endpoints": {
                "parameters": [id],
                "put": {
                    "summary": "Replace a provider's endpoints (the provider itself or an operator); audited",
                    "description": "Each endpoint names a service the catalog lists for that provider (409 endpoint.not_catalogued; without `service`, the default endpoint, the catalog must list at least one), each service at most once (400 admin.invalid); only a participant registered as a provider has endpoints (409 participant.not_provider).",
                    "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "array", "items": {"$ref": "#/components/schemas/Endpoint"}}}}},
                    "responses": change("200", "stored", &["400", "403", "404", "409"])
                }
            },
            "/v1/participants/{id}/certificates": {
                "parameters": [id],
                "post": {
                    "summary": "Add a certificate (rotation); audited",
                    "description": "The PEM must read as a certificate that chains to the bus CA and is in date (400 certificate.invalid, certificate.untrusted, certificate.expired, certificate.not_yet_valid) and belongs to no other participant (409 certificate.taken).",
                    "requestBody": {"required": true, "content": {"application/json": {"schema": schema_of::<super::NewCertificate>()}}},
                    "responses": change("201", "added", &["400", "403", "404", "409"])
                }
            },
            "/v1/participants/{id}/certificates/{fingerprint}": {
                "parameters": [id, {"name": "fingerprint", "in": "path", "required": true, "schema": {"type": "string"}}],
                "delete": {"summary": "Remove a certificate; its key signs nothing from then on. A participant cannot remove its own last usable certificate (409 certificate.last)", "responses": change("200", "removed", &["403", "404", "409"])}
            },
            "/v1/reload": {"post": {"summary": "Reload catalog and policies atomically (operator)", "responses": {"200": {"description": "reloaded"}, "400": problem}}}
        },
        "components": {"schemas": {
            "Problem": {"type": "object", "required": ["type", "title", "status", "detail", "code"], "properties": {"type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"}, "detail": {"type": "string"}, "code": {"type": "string"}, "exchange_id": {"type": "string"}}},
            "Endpoint": schema_of::<crate::registry::Endpoint>(),
            "Participant": schema_of::<crate::registry::Participant>()
        }}
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `$ref` of the document points at something in it.
    #[test]
    fn every_reference_resolves() {
        fn walk(doc: &Value, value: &Value, at: &str, bad: &mut Vec<String>) {
            match value {
                Value::Object(object) => {
                    if let Some(Value::String(target)) = object.get("$ref") {
                        let found = target
                            .strip_prefix('#')
                            .and_then(|pointer| doc.pointer(pointer));
                        if found.is_none() {
                            bad.push(format!("{at}: {target}"));
                        }
                    }
                    for (k, v) in object {
                        walk(doc, v, &format!("{at}/{k}"), bad);
                    }
                }
                Value::Array(items) => {
                    for (i, v) in items.iter().enumerate() {
                        walk(doc, v, &format!("{at}/{i}"), bad);
                    }
                }
                _ => {}
            }
        }
        let doc = openapi();
        let mut bad = Vec::new();
        walk(&doc, &doc, "", &mut bad);
        assert!(bad.is_empty(), "dangling references: {bad:?}");
    }

    /// The request bodies are the parsing types' own schemas: what serde
    /// refuses, the document calls invalid, and the other way round.
    #[test]
    fn request_bodies_follow_the_parsing_types() {
        let doc = openapi();
        let participant = &doc["components"]["schemas"]["Participant"];
        let validator = jsonschema::validator_for(participant).unwrap();
        let good = json!({"id": "apl-x", "organisation": {"idno": "1003600000017", "name": "X"},
            "roles": ["consumer"], "certificates": []});
        assert!(validator.is_valid(&good));
        assert!(serde_json::from_value::<crate::registry::Participant>(good.clone()).is_ok());
        for (member, value) in [
            ("roles", json!([])),
            ("roles", json!(["nobody"])),
            ("id", json!("Not An Id")),
            ("extra", json!(1)),
            ("endpoints", json!([{"url": "https://a.example"}])),
        ] {
            let mut bad = good.clone();
            bad[member] = value;
            assert!(!validator.is_valid(&bad), "{member}: {bad}");
        }
        let endpoint =
            jsonschema::validator_for(&doc["components"]["schemas"]["Endpoint"]).unwrap();
        for body in [
            json!({"service": null, "url": "https://a.example"}),
            json!({"service": 1, "url": "https://a.example"}),
            json!({"url": "https://a.example", "x": 1}),
        ] {
            assert!(!endpoint.is_valid(&body), "{body}");
            assert!(
                serde_json::from_value::<crate::registry::Endpoint>(body.clone()).is_err(),
                "{body}"
            );
        }
        let ok = json!({"service": "person-by-idnp", "url": "https://a.example:8443/p"});
        assert!(endpoint.is_valid(&ok));
        assert!(serde_json::from_value::<crate::registry::Endpoint>(ok).is_ok());
    }

    #[test]
    fn methods_come_from_the_document() {
        assert_eq!(
            documented_methods("/v1/participants/x"),
            Some(vec!["GET", "PUT"])
        );
        assert_eq!(documented_methods("/v1/reload"), Some(vec!["POST"]));
        assert_eq!(
            documented_methods("/v1/connection-requests"),
            Some(vec!["GET", "POST"])
        );
        assert_eq!(documented_methods("/v1/nothing"), None);
        assert_eq!(documented_methods("/v1/participants//endpoints"), None);
    }
}
