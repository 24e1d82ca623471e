//! Metadata endpoints of the admin API: the catalog (services, one service
//! with its schemas, registers, DCAT-AP), the caller's own grants, and the
//! operator's reload of catalog and policies.
//!
//! Invariants:
//! - Everything but `POST /v1/reload` is read-only and answers from one
//!   snapshot of the rules (`Broker::rules`), so one answer never mixes two
//!   versions of the catalog.
//! - A participant sees only its own grants; operators may name another
//!   consumer. Grants are the consumer's legal position, not a secret from
//!   the consumer itself.
//! - Query parameters are checked strictly: an unknown parameter, a repeated
//!   one or an unknown value is refused with 400 `request.malformed` naming
//!   it, because a filter silently ignored returns the wrong list.

use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::Full;
use serde_json::{Value, json};

use super::{AdminRequest, AdminResult, AdminState, json, refuse, require_role};
use crate::catalog::{
    Catalog, DataElement, LegalAct, Lifecycle, PersonalData, QueryParameter, Register, Service,
    ServiceFilter, Text,
};
use crate::registry::Role;

/// Routes `/v1/services…`, `/v1/registers…`, `/v1/catalog…`, `/v1/grants…`
/// and `POST /v1/reload`.
pub(crate) async fn route(state: &AdminState, request: &AdminRequest<'_>) -> AdminResult {
    match (request.method.clone(), request.segments) {
        (Method::GET, ["v1", "services"]) => list_services(state, request),
        (Method::GET, ["v1", "services", provider, code]) => {
            no_params(request)?;
            let rules = state.broker.rules();
            let service = rules.catalog.service(provider, code).ok_or_else(|| {
                refuse(
                    StatusCode::NOT_FOUND,
                    "catalog.unknown_service",
                    format!(
                        "no service {provider}/{code} in the catalog; list them at /v1/services"
                    ),
                )
            })?;
            Ok(json(
                StatusCode::OK,
                &service_detail(service, rules.catalog.register(&service.register)),
            ))
        }
        (Method::GET, ["v1", "registers"]) => {
            no_params(request)?;
            let rules = state.broker.rules();
            let list: Vec<Value> = rules.catalog.registers().map(register_view).collect();
            Ok(json(StatusCode::OK, &json!({ "registers": list })))
        }
        (Method::GET, ["v1", "registers", id]) => {
            no_params(request)?;
            let rules = state.broker.rules();
            let register = rules.catalog.register(id).ok_or_else(|| {
                refuse(
                    StatusCode::NOT_FOUND,
                    "catalog.unknown_register",
                    format!("no register `{id}` in the catalog; list them at /v1/registers"),
                )
            })?;
            Ok(json(
                StatusCode::OK,
                &register_detail(register, &rules.catalog),
            ))
        }
        (Method::GET, ["v1", "catalog", "dcat"]) => {
            no_params(request)?;
            let rules = state.broker.rules();
            Ok(json_ld(&crate::catalog::to_dcat_ap(&rules.catalog)))
        }
        (Method::GET, ["v1", "grants"]) => list_grants(state, request),
        (Method::POST, ["v1", "reload"]) => reload(state, request).await,
        _ => Err(refuse(
            StatusCode::NOT_FOUND,
            "admin.unknown_endpoint",
            "no such admin endpoint; see /v1/openapi.json",
        )),
    }
}

/// `GET /v1/services?provider=&status=&personal_data=&q=`.
fn list_services(state: &AdminState, request: &AdminRequest<'_>) -> AdminResult {
    let params = Params::parse(request, &["provider", "status", "personal_data", "q"])?;
    let status = params
        .get("status")
        .map(|text| {
            Lifecycle::parse(text).ok_or_else(|| {
                malformed("status", text, "one of draft, active, deprecated, retired")
            })
        })
        .transpose()?;
    let personal_data = params
        .get("personal_data")
        .map(|text| {
            PersonalData::parse(text)
                .ok_or_else(|| malformed("personal_data", text, "one of none, personal, special"))
        })
        .transpose()?;
    let provider = params.get("provider");
    if let Some(provider) = provider
        && !crate::ids::is_valid_participant_id(provider)
    {
        return Err(malformed("provider", provider, "a participant id"));
    }
    // An empty `q` filters nothing, like an empty search box.
    let text = params.get("q").map(str::trim).filter(|q| !q.is_empty());
    let filter = ServiceFilter {
        provider,
        status,
        personal_data,
        text,
    };
    let rules = state.broker.rules();
    let list: Vec<Value> = rules
        .catalog
        .search(&filter)
        .map(|s| service_summary(s))
        .collect();
    Ok(json(
        StatusCode::OK,
        &json!({ "count": list.len(), "services": list }),
    ))
}

/// `GET /v1/grants[?consumer=]`: the caller's grants; operators may name
/// another consumer.
fn list_grants(state: &AdminState, request: &AdminRequest<'_>) -> AdminResult {
    let params = Params::parse(request, &["consumer"])?;
    let caller = request.caller;
    let consumer = match params.get("consumer") {
        None => caller.id.as_str(),
        Some(id) if id == caller.id => id,
        Some(id) => {
            require_role(caller, Role::Operator).map_err(|_| {
                refuse(
                    StatusCode::FORBIDDEN,
                    "admin.forbidden",
                    "only operators may read another consumer's grants; leave out `consumer` to read your own",
                )
            })?;
            if !crate::ids::is_valid_participant_id(id) {
                return Err(malformed("consumer", id, "a participant id"));
            }
            id
        }
    };
    let rules = state.broker.rules();
    let now = crate::exchange::unix_now();
    let list: Vec<Value> = rules
        .policy
        .grants_of(consumer)
        .map(|grant| crate::policy::view::to_view(grant, now))
        .collect();
    Ok(json(
        StatusCode::OK,
        &json!({ "consumer": consumer, "count": list.len(), "grants": list }),
    ))
}

/// `POST /v1/reload` (operator): reload catalog and policies, or say which
/// file, where and why it was refused while the running version stays.
async fn reload(state: &AdminState, request: &AdminRequest<'_>) -> AdminResult {
    require_role(request.caller, Role::Operator)?;
    no_params(request)?;
    match crate::rules::reload(
        &state.broker,
        &state.catalog_dir,
        &state.policies_dir,
        Some(request.caller),
    )
    .await
    {
        Ok(summary) => Ok(json(
            StatusCode::OK,
            &json!({ "reloaded": true, "registers": summary.registers, "services": summary.services, "grants": summary.grants }),
        )),
        Err(crate::rules::ReloadError::Invalid(problems)) => {
            let detail = problems.first().map_or_else(
                || "the rules were refused".to_owned(),
                |first| {
                    format!(
                        "{first}; fix the file and reload again, the running rules stay in force"
                    )
                },
            );
            let first = problems.first();
            Ok(problem(
                StatusCode::BAD_REQUEST,
                "admin.invalid",
                &detail,
                json!({
                    "file": first.map(|p| p.file.to_string_lossy().into_owned()),
                    "pointer": first.map(|p| p.pointer.as_str()),
                    "reason": first.map(|p| p.reason.as_str()),
                    "problems": problems,
                }),
            ))
        }
        Err(e @ crate::rules::ReloadError::Audit(_)) => Err(refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "audit.unavailable",
            e.to_string(),
        )),
    }
}

/// The query parameters of one request, checked against the names an
/// endpoint takes.
pub(crate) struct Params {
    values: Vec<(&'static str, String)>,
}

impl Params {
    pub(crate) fn parse(
        request: &AdminRequest<'_>,
        allowed: &[&'static str],
    ) -> Result<Params, super::AdminError> {
        let mut values: Vec<(&'static str, String)> = Vec::new();
        for pair in request
            .query
            .unwrap_or("")
            .split('&')
            .filter(|p| !p.is_empty())
        {
            let name = pair.split_once('=').map_or(pair, |(name, _)| name);
            let Some(&known) = allowed.iter().find(|a| **a == name) else {
                return Err(refuse(
                    StatusCode::BAD_REQUEST,
                    "request.malformed",
                    format!(
                        "unknown query parameter `{}`; this endpoint takes {}",
                        name.chars().take(64).collect::<String>(),
                        if allowed.is_empty() {
                            "none".to_owned()
                        } else {
                            allowed.join(", ")
                        }
                    ),
                ));
            };
            if values.iter().any(|(n, _)| *n == known) {
                return Err(refuse(
                    StatusCode::BAD_REQUEST,
                    "request.malformed",
                    format!("query parameter `{known}` is given twice; give it once"),
                ));
            }
            let value = request.query_param(known).unwrap_or_default();
            values.push((known, value));
        }
        Ok(Params { values })
    }

    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.values
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}

fn no_params(request: &AdminRequest<'_>) -> Result<(), super::AdminError> {
    Params::parse(request, &[]).map(|_| ())
}

fn malformed(name: &str, value: &str, expected: &str) -> super::AdminError {
    refuse(
        StatusCode::BAD_REQUEST,
        "request.malformed",
        format!(
            "query parameter `{name}` has the unknown value {:?}; use {expected}",
            value.chars().take(64).collect::<String>()
        ),
    )
}

/// A problem+json answer with extension members (RFC 9457 section 3.2).
fn problem(
    status: StatusCode,
    code: &str,
    detail: &str,
    extra: Value,
) -> http::Response<Full<Bytes>> {
    let mut problem = mconnect_sdk::protocol::Problem::new(status, code, detail);
    if let Value::Object(extra) = extra {
        for (name, value) in extra {
            problem = problem.with(&name, value);
        }
    }
    super::problem_response(&problem)
}

/// A JSON-LD answer (`application/ld+json`), as DCAT-AP harvesters expect.
fn json_ld(value: &Value) -> http::Response<Full<Bytes>> {
    let mut response = json(StatusCode::OK, value);
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/ld+json"),
    );
    response
}

fn text(text: &Text) -> Value {
    json!({"ro": text.ro, "ru": text.ru, "en": text.en})
}

fn service_summary(service: &Service) -> Value {
    json!({
        "service": service.key,
        "provider": service.provider,
        "code": service.code,
        "register": service.register,
        "version": service.version,
        "status": service.status.as_str(),
        "name": text(&service.name),
        "method": service.method.as_str(),
        "personal_data": service.personal_data.as_str(),
        "subject_required": service.subject_required,
        "href": format!("/v1/services/{}", service.key),
    })
}

fn service_detail(service: &Service, register: Option<&Register>) -> Value {
    json!({
        "service": service.key,
        "provider": service.provider,
        "code": service.code,
        "version": service.version,
        "status": service.status.as_str(),
        "callable": service.is_callable(),
        "name": text(&service.name),
        "description": text(&service.description),
        "method": service.method.as_str(),
        "path": service.path,
        "query": service.query.iter().map(query_view).collect::<Vec<_>>(),
        "subject_required": service.subject_required,
        "personal_data": service.personal_data.as_str(),
        "timeout_ms": u64::try_from(service.timeout.as_millis()).unwrap_or(u64::MAX),
        "body_limit": service.body_limit,
        "request_schema": service.request_schema,
        "response_schema": service.response_schema,
        "data_elements": service.data_elements.iter().map(|e| element_view(e, service.personal_data)).collect::<Vec<_>>(),
        "register": register.map(|r| json!({
            "id": r.id,
            "name": text(&r.name),
            "owner": {"idno": r.owner.idno, "name": text(&r.owner.name)},
            "legal_acts": r.legal_acts.iter().map(legal_act_view).collect::<Vec<_>>(),
            "href": format!("/v1/registers/{}", r.id),
        })),
    })
}

fn query_view(query: &QueryParameter) -> Value {
    json!({
        "name": query.name,
        "required": query.required,
        "format": query.format,
        "meaning": text(&query.meaning),
    })
}

fn element_view(element: &DataElement, default: PersonalData) -> Value {
    json!({
        "path": element.path,
        "meaning": text(&element.meaning),
        "personal_data": element.personal_data.unwrap_or(default).as_str(),
    })
}

fn legal_act_view(act: &LegalAct) -> Value {
    json!({
        "id": act.id,
        "title": text(&act.title),
        "article": act.article,
        "link": act.link,
    })
}

fn register_view(register: &Register) -> Value {
    json!({
        "id": register.id,
        "name": text(&register.name),
        "owner": {"idno": register.owner.idno, "name": text(&register.owner.name)},
        "provider": register.provider,
        "services": register.services,
        "href": format!("/v1/registers/{}", register.id),
    })
}

fn register_detail(register: &Register, catalog: &Catalog) -> Value {
    json!({
        "id": register.id,
        "name": text(&register.name),
        "description": text(&register.description),
        "owner": {"idno": register.owner.idno, "name": text(&register.owner.name)},
        "provider": register.provider,
        "contact": {
            "name": register.contact.name,
            "email": register.contact.email,
            "phone": register.contact.phone,
            "url": register.contact.url,
        },
        "legal_acts": register.legal_acts.iter().map(legal_act_view).collect::<Vec<_>>(),
        "public_task": text(&register.public_task),
        "personal_data_categories": register.personal_data_categories,
        "services": register
            .services
            .iter()
            .filter_map(|key| catalog.service_by_key(key))
            .map(|s| service_summary(s))
            .collect::<Vec<_>>(),
    })
}

/// The OpenAPI paths of these endpoints.
pub(crate) fn openapi_paths() -> Value {
    let problem = super::openapi::problem();
    let text = json!({"type": "object", "required": ["ro", "ru", "en"], "properties": {
        "ro": {"type": "string"}, "ru": {"type": "string"}, "en": {"type": "string"}}});
    let summary = json!({"type": "object", "properties": {
        "service": {"type": "string", "description": "provider/code"},
        "provider": {"type": "string"}, "code": {"type": "string"}, "register": {"type": "string"},
        "version": {"type": "string"},
        "status": {"enum": ["draft", "active", "deprecated", "retired"]},
        "name": text,
        "method": {"type": "string"},
        "personal_data": {"enum": ["none", "personal", "special"]},
        "subject_required": {"type": "boolean"},
        "href": {"type": "string"}}});
    let legal_act = json!({"type": "object", "properties": {
        "id": {"type": "string"}, "title": text, "article": {"type": "string"},
        "link": {"type": ["string", "null"]}}});
    let param = |name: &str, description: &str, schema: Value| json!({"name": name, "in": "query", "required": false, "description": description, "schema": schema});
    let path_param = |name: &str| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}});
    json!({
        "/v1/services": {"get": {
            "summary": "List catalogued services, filtered",
            "description": "Unknown or repeated parameters and unknown values are refused with 400 request.malformed naming the parameter.",
            "parameters": [
                param("provider", "only this provider's services", json!({"type": "string", "pattern": "^[a-z0-9][a-z0-9-]{0,62}$"})),
                param("status", "only services in this lifecycle status", json!({"enum": ["draft", "active", "deprecated", "retired"]})),
                param("personal_data", "only services of this personal-data class", json!({"enum": ["none", "personal", "special"]})),
                param("q", "text searched, ignoring case and Romanian diacritics, in the key and the ro, ru and en names and descriptions", json!({"type": "string"})),
            ],
            "responses": {
                "200": {"description": "matching services, by key", "content": {"application/json": {"schema": {"type": "object", "properties": {
                    "count": {"type": "integer"}, "services": {"type": "array", "items": summary}}}}}},
                "400": problem
            }
        }},
        "/v1/services/{provider}/{code}": {
            "parameters": [path_param("provider"), path_param("code")],
            "get": {
                "summary": "One service with its request and response schemas, data elements, query parameters and the legal acts of its register",
                "responses": {"200": {"description": "the service", "content": {"application/json": {"schema": {"type": "object", "properties": {
                    "request_schema": {"description": "JSON Schema of the request body, or null when the service takes none"},
                    "response_schema": {"description": "JSON Schema of the response body"},
                    "data_elements": {"type": "array", "items": {"type": "object", "properties": {"path": {"type": "string"}, "meaning": text, "personal_data": {"enum": ["none", "personal", "special"]}}}},
                    "query": {"type": "array", "items": {"type": "object", "properties": {"name": {"type": "string"}, "required": {"type": "boolean"}, "format": {"type": ["string", "null"]}, "meaning": text}}},
                    "register": {"type": "object", "properties": {"legal_acts": {"type": "array", "items": legal_act}}}
                }}}}}, "404": problem}
            }
        },
        "/v1/registers": {"get": {"summary": "List catalogued registers", "responses": {"200": {"description": "registers"}, "400": problem}}},
        "/v1/registers/{id}": {
            "parameters": [path_param("id")],
            "get": {"summary": "One register: owner, contact, legal acts, public task, services", "responses": {"200": {"description": "the register"}, "404": problem}}
        },
        "/v1/catalog/dcat": {"get": {
            "summary": "The catalog as DCAT-AP 3 JSON-LD: a dcat:Catalog with a dcat:Dataset per register and a dcat:DataService per service; legal acts as dcatap:applicableLegislation",
            "responses": {"200": {"description": "DCAT-AP", "content": {"application/ld+json": {"schema": {"type": "object"}}}}}
        }},
        "/v1/grants": {"get": {
            "summary": "The caller's own grants (operators may name another consumer)",
            "parameters": [param("consumer", "operators only: whose grants", json!({"type": "string", "pattern": "^[a-z0-9][a-z0-9-]{0,62}$"}))],
            "responses": {"200": {"description": "grants with purposes, legal bases, fields, validity (valid_until is the exclusive end), rate limit, quota, status and origin"}, "400": problem, "403": problem}
        }},
        "/v1/reload": {"post": {
            "summary": "Reload catalog and policies atomically (operator); audited",
            "description": "A refused reload changes nothing: the running rules stay in force. The problem names the file, the JSON pointer and the reason of the first problem, and lists all of them under `problems`.",
            "responses": {
                "200": {"description": "reloaded", "content": {"application/json": {"schema": {"type": "object", "properties": {"reloaded": {"const": true}, "registers": {"type": "integer"}, "services": {"type": "integer"}, "grants": {"type": "integer"}}}}}},
                "400": {"description": "a file was refused", "content": {"application/problem+json": {"schema": {"allOf": [{"$ref": "#/components/schemas/Problem"}, {"type": "object", "properties": {
                    "file": {"type": "string"}, "pointer": {"type": "string"}, "reason": {"type": "string"},
                    "problems": {"type": "array", "items": {"type": "object", "properties": {"file": {"type": "string"}, "pointer": {"type": "string"}, "reason": {"type": "string"}}}}}}]}}}},
                "403": problem,
                "503": problem
            }
        }}
    })
}
