//! Reading the audit log on the admin API (PROTOCOL.md section 7): signed tree
//! heads, records with their exact leaf bytes, inclusion and consistency
//! proofs, and searches, newest first.
//!
//! Invariants:
//! - reading the log is a call like any other: the caller's certificate must
//!   belong to an auditor or an operator, and `MConnect-Call-Basis` and
//!   `MConnect-Call-Reason` must be allowed by an active grant on
//!   `mconnect/audit-log` (the policy index decides, as on the data plane;
//!   refusals carry the `policy.*` codes), within the grant's rate limit;
//! - every read, answered or refused, leaves one `audit.read` record (consumer
//!   = caller, basis, purpose, the subject when the search filters by one, the
//!   digest of the answer), appended **before** the answer leaves; if that
//!   record cannot be made durable the caller gets 503 `audit.unavailable` and
//!   nothing read;
//! - hashes, signatures and leaf bytes are standard base64; leaves are served
//!   exactly as hashed;
//! - log reads (segments, redb) are blocking I/O and run on the blocking pool.

use std::time::{Instant, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::{HeaderValue, Method, Response, StatusCode};
use http_body_util::Full;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::{AdminError, AdminRequest, AdminResult, AdminState, refuse};
use crate::audit::{AuditError, AuditLog, AuditQuery, AuditRecord, Decision as AuditDecision};
use crate::exchange::call::headers;
use crate::exchange::unix_now;
use crate::policy::{Decision, DecisionRequest};
use crate::registry::{Participant, Role};

/// The catalogued service every log read is decided and audited under.
pub(crate) const AUDIT_LOG_PROVIDER: &str = "mconnect";
/// Code of that service.
pub(crate) const AUDIT_LOG_CODE: &str = "audit-log";
/// Event type of the record each read leaves.
pub(crate) const READ_EVENT: &str = "audit.read";

/// One of the endpoints, with its parameters parsed.
#[derive(Debug)]
enum Read {
    TreeHead,
    Record(u64),
    Inclusion {
        seq: u64,
        tree_size: Option<u64>,
    },
    Consistency {
        first: u64,
        second: u64,
    },
    /// A search; `true` for this broker's own log only (`scope=local`).
    Search(Box<AuditQuery>, bool),
}

/// What a granted read is done under, for its audit record.
struct Granted {
    basis: String,
    reason: String,
    grant_id: Option<String>,
    service_version: Option<String>,
}

/// Routes `/v1/audit/...`.
pub(crate) async fn route(state: &AdminState, request: &AdminRequest<'_>) -> AdminResult {
    let started = Instant::now();
    let received = SystemTime::now();
    // An unknown endpoint reads nothing and needs no record; every other
    // refusal is recorded. The caller's right to read comes first, so a
    // participant without it learns nothing from parameter checks.
    let parsed = match parse(request) {
        Err(e) if e.status == StatusCode::NOT_FOUND => return Err(e),
        other => other,
    };
    let subject = match &parsed {
        Ok(Read::Search(query, _)) => query.subject.clone(),
        _ => request.query_param("subject"),
    };
    let granted = match authorise(state, request) {
        Ok(granted) => granted,
        Err(refusal) => {
            let (e, partial) = *refusal;
            return refused(state, request, partial, subject, e, received, started).await;
        }
    };
    let read = match parsed {
        Ok(read) => read,
        Err(e) => {
            return refused(state, request, Some(granted), subject, e, received, started).await;
        }
    };
    let log = state.broker.audit().clone();
    let answer = tokio::task::spawn_blocking(move || perform(&log, read))
        .await
        .map_err(|e| {
            refuse(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal.error",
                format!("the audit read did not finish: {e}"),
            )
        })
        .and_then(|r| r);
    let value = match answer {
        Ok(value) => value,
        Err(e) => {
            return refused(state, request, Some(granted), subject, e, received, started).await;
        }
    };
    let body = Bytes::from(serde_json::to_vec_pretty(&value).unwrap_or_default());
    let record = read_record(
        request,
        Some(&granted),
        subject,
        (StatusCode::OK, None),
        &body,
        received,
        started,
    );
    let exchange_id = record.exchange_id.clone();
    let seq = append(state.broker.audit(), record).await?;
    let mut response = Response::new(Full::new(body));
    let h = response.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Ok(v) = HeaderValue::from_str(&exchange_id) {
        h.insert(headers::EXCHANGE_ID, v);
    }
    h.insert(headers::AUDIT_SEQ, HeaderValue::from(seq));
    Ok(response)
}

/// Records a refused read and returns the refusal, or 503 when even that
/// record cannot be made durable.
async fn refused(
    state: &AdminState,
    request: &AdminRequest<'_>,
    granted: Option<Granted>,
    subject: Option<String>,
    error: AdminError,
    received: SystemTime,
    started: Instant,
) -> AdminResult {
    let record = read_record(
        request,
        granted.as_ref(),
        subject,
        (error.status, Some(error.code)),
        error.detail.as_bytes(),
        received,
        started,
    );
    append(state.broker.audit(), record).await?;
    Err(error)
}

async fn append(log: &AuditLog, record: AuditRecord) -> Result<u64, AdminError> {
    log.append(record).await.map_err(|e| {
        tracing::error!(error = %e, "audit read not recorded; refusing it");
        refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "audit.unavailable",
            format!("this read of the audit log could not itself be recorded, so it is refused; try again later ({e})"),
        )
    })
}

/// Parses the path and query into a read; 404 for an unknown endpoint.
fn parse(request: &AdminRequest<'_>) -> Result<Read, AdminError> {
    let unknown = || {
        refuse(
            StatusCode::NOT_FOUND,
            "admin.unknown_endpoint",
            "no such audit endpoint; see /v1/openapi.json",
        )
    };
    let read = match request.segments {
        ["v1", "audit", "tree-head"] => Read::TreeHead,
        ["v1", "audit", "records", seq] => Read::Record(number("seq", Some(seq.to_string()))?),
        ["v1", "audit", "records"] => {
            let local = match request.query_param("scope").as_deref() {
                None | Some("cluster") => false,
                Some("local") => true,
                Some(_) => return Err(malformed("`scope` must be `cluster` or `local`")),
            };
            Read::Search(Box::new(search(request)?), local)
        }
        ["v1", "audit", "proof", "inclusion"] => Read::Inclusion {
            seq: number("seq", request.query_param("seq"))?,
            tree_size: request
                .query_param("tree_size")
                .map(|v| number("tree_size", Some(v)))
                .transpose()?,
        },
        ["v1", "audit", "proof", "consistency"] => Read::Consistency {
            first: number("first", request.query_param("first"))?,
            second: number("second", request.query_param("second"))?,
        },
        _ => return Err(unknown()),
    };
    if *request.method != Method::GET {
        return Err(refuse(
            StatusCode::METHOD_NOT_ALLOWED,
            "request.malformed",
            "the audit log is read with GET only",
        ));
    }
    Ok(read)
}

fn malformed(detail: impl Into<String>) -> AdminError {
    refuse(StatusCode::BAD_REQUEST, "request.malformed", detail)
}

fn number(name: &str, value: Option<String>) -> Result<u64, AdminError> {
    let value = value.ok_or_else(|| malformed(format!("give `{name}`")))?;
    value
        .parse()
        .map_err(|_| malformed(format!("`{name}` must be a non-negative integer")))
}

fn search(request: &AdminRequest<'_>) -> Result<AuditQuery, AdminError> {
    let time = |name: &str| -> Result<Option<OffsetDateTime>, AdminError> {
        request
            .query_param(name)
            .map(|text| {
                parse_instant(&text).ok_or_else(|| {
                    malformed(format!(
                        "`{name}` must be an RFC 3339 date-time or a date (YYYY-MM-DD)"
                    ))
                })
            })
            .transpose()
    };
    let limit = match request.query_param("limit") {
        None => 0,
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=crate::audit::index::MAX_LIMIT).contains(&n) => n,
            _ => {
                return Err(malformed(format!(
                    "`limit` must be 1 to {}",
                    crate::audit::index::MAX_LIMIT
                )));
            }
        },
    };
    Ok(AuditQuery {
        subject: request.query_param("subject"),
        consumer: request.query_param("client"),
        provider: request.query_param("provider"),
        service: request.query_param("service"),
        event: request.query_param("event"),
        from: time("from")?,
        to: time("to")?,
        limit,
        cursor: request.query_param("cursor"),
    })
}

/// An RFC 3339 date-time, or a calendar date meaning its start (UTC).
fn parse_instant(text: &str) -> Option<OffsetDateTime> {
    if let Ok(t) = OffsetDateTime::parse(text, &Rfc3339) {
        return Some(t);
    }
    let format = time::macros::format_description!("[year]-[month]-[day]");
    time::Date::parse(text, &format)
        .ok()
        .map(|d| d.midnight().assume_utc())
}

/// A refused authorisation, with the grant the policy came closest to.
type Refusal = (AdminError, Option<Granted>);

/// Role, headers, policy and rate limit. A refusal after the policy found a
/// grant still names it in the record.
fn authorise(state: &AdminState, request: &AdminRequest<'_>) -> Result<Granted, Box<Refusal>> {
    let caller = request.caller;
    if !caller.has_role(Role::Auditor) && !caller.has_role(Role::Operator) {
        return Err(Box::new((
            refuse(
                StatusCode::FORBIDDEN,
                "admin.forbidden",
                format!(
                    "reading the audit log needs the auditor or operator role; `{}` has neither",
                    caller.id
                ),
            ),
            None,
        )));
    }
    let header = |name: &str| {
        request
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    };
    let (Some(basis), Some(reason)) = (header(headers::CALL_BASIS), header(headers::CALL_REASON))
    else {
        return Err(Box::new((
            malformed(
                "reading the audit log needs a legal basis and a purpose: send MConnect-Call-Basis and MConnect-Call-Reason",
            ),
            None,
        )));
    };
    let rules = state.broker.rules();
    let Some(service) = rules
        .catalog
        .service(AUDIT_LOG_PROVIDER, AUDIT_LOG_CODE)
        .filter(|s| s.is_callable())
    else {
        return Err(Box::new((
            refuse(
                StatusCode::NOT_FOUND,
                "catalog.unknown_service",
                "mconnect/audit-log is not in the catalog, so no grant can allow reading the log; add catalog/mconnect.json",
            ),
            None,
        )));
    };
    let now = unix_now();
    let granted = |grant_id: Option<String>| Granted {
        basis: basis.clone(),
        reason: reason.clone(),
        grant_id,
        service_version: Some(service.version.clone()),
    };
    let decision = rules.policy.decide(
        &DecisionRequest {
            consumer: &caller.id,
            service,
            basis: &basis,
            reason: &reason,
            subject_present: request.query_param("subject").is_some(),
        },
        now,
    );
    let grant = match decision {
        Decision::Allow(grant) => grant,
        Decision::Deny(denial) => {
            return Err(Box::new((
                refuse(
                    denial.code.status(),
                    denial.code.code(),
                    format!(
                        "{} (service mconnect/audit-log, basis `{basis}`, reason `{reason}`)",
                        denial.rule
                    ),
                ),
                Some(granted(denial.grant.map(|g| g.id.clone()))),
            )));
        }
    };
    if let Err(limited) = state.broker.rate_limiter().check(grant, &service.key, now) {
        return Err(Box::new((
            refuse(
                StatusCode::TOO_MANY_REQUESTS,
                "rate.limited",
                format!(
                    "grant {} allows no more reads of the log now; retry in {} s",
                    grant.id,
                    limited.retry_after.as_secs().max(1)
                ),
            ),
            Some(granted(Some(grant.id.clone()))),
        )));
    }
    Ok(granted(Some(grant.id.clone())))
}

/// Does the read; blocking.
fn perform(log: &AuditLog, read: Read) -> Result<Value, AdminError> {
    match read {
        Read::TreeHead => {
            // Published, not only signed: every head the broker hands out is in
            // tree-heads.jsonl, where `mconnect audit verify` checks it.
            let sth = log.publish_tree_head().map_err(unavailable)?;
            serde_json::to_value(&sth).map_err(|e| internal(e.to_string()))
        }
        Read::Record(seq) => {
            let (record, leaf) = log.record(seq).map_err(unavailable)?.ok_or_else(|| {
                refuse(
                    StatusCode::NOT_FOUND,
                    "audit.not_found",
                    format!("no audit record {seq}; the log holds {}", log.tree_size()),
                )
            })?;
            Ok(json!({"seq": seq, "record": record, "leaf": STANDARD.encode(&leaf)}))
        }
        Read::Inclusion { seq, tree_size } => {
            let tree_size = tree_size.unwrap_or_else(|| log.tree_size());
            if seq >= tree_size {
                return Err(out_of_range(format!(
                    "seq {seq} is not in a tree of {tree_size} leaves"
                )));
            }
            let path = log.inclusion_proof(seq, tree_size).map_err(proof_error)?;
            Ok(json!({"leaf_index": seq, "tree_size": tree_size, "audit_path": b64_all(&path)}))
        }
        Read::Consistency { first, second } => {
            if first > second {
                return Err(out_of_range(format!(
                    "first ({first}) must not exceed second ({second})"
                )));
            }
            let proof = log.consistency_proof(first, second).map_err(proof_error)?;
            Ok(json!({"first": first, "second": second, "proof": b64_all(&proof)}))
        }
        Read::Search(query, local) => {
            // A search must see what was just appended (its own earlier reads
            // included): `search` brings the index up to the log first, or,
            // on a cluster, waits for this broker's records to be shipped
            // and searches every broker's in the shared copy.
            let shipping = log.shipping().filter(|_| !local);
            let found = match shipping {
                Some(_) => log.search(&query),
                None => log
                    .sync_index()
                    .and_then(|()| log.query(&query))
                    .or_else(|e| {
                        tracing::warn!(error = %e, "audit index catch-up failed; search may lag");
                        log.query(&query)
                    }),
            };
            let page = found.map_err(|e| match e {
                AuditError::InvalidQuery(detail) => malformed(detail),
                other => unavailable(other),
            })?;
            let items: Vec<Value> = page
                .items
                .iter()
                .map(|e| {
                    let mut item =
                        json!({"seq": e.seq, "record": e.record, "leaf": STANDARD.encode(&e.leaf)});
                    if let Some(broker) = &e.broker {
                        item["broker"] = json!(broker);
                    }
                    item
                })
                .collect();
            let mut answer =
                json!({"items": items, "next_cursor": page.next_cursor, "indexed": page.indexed});
            if let Some(own) = log.shipping() {
                // Proofs of a record come from the broker named with it.
                answer["broker"] = json!(own.broker_id());
                answer["scope"] = json!(if shipping.is_some() {
                    "cluster"
                } else {
                    "local"
                });
            }
            Ok(answer)
        }
    }
}

fn b64_all(hashes: &[crate::audit::Hash]) -> Vec<String> {
    hashes.iter().map(|h| STANDARD.encode(h)).collect()
}

fn out_of_range(detail: String) -> AdminError {
    refuse(StatusCode::BAD_REQUEST, "audit.out_of_range", detail)
}

fn proof_error(e: AuditError) -> AdminError {
    match e {
        AuditError::OutOfRange(detail) => out_of_range(detail),
        other => unavailable(other),
    }
}

fn internal(detail: String) -> AdminError {
    refuse(StatusCode::INTERNAL_SERVER_ERROR, "internal.error", detail)
}

fn unavailable(e: AuditError) -> AdminError {
    match e {
        AuditError::Corrupt { .. } => refuse(
            StatusCode::INTERNAL_SERVER_ERROR,
            "audit.corrupt",
            format!("{e}"),
        ),
        // Gone for good under the retention policy; its leaf hash is still in
        // the tree, so proofs about it keep working.
        AuditError::Pruned(seq) => refuse(
            StatusCode::GONE,
            "audit.pruned",
            format!(
                "record {seq} was pruned under the retention policy; its leaf hash remains in the tree"
            ),
        ),
        other => refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "audit.unavailable",
            format!("the audit log cannot be read now: {other}"),
        ),
    }
}

/// The `audit.read` record of one read.
fn read_record(
    request: &AdminRequest<'_>,
    granted: Option<&Granted>,
    subject: Option<String>,
    (status, problem): (StatusCode, Option<&str>),
    answer: &[u8],
    received: SystemTime,
    started: Instant,
) -> AuditRecord {
    let caller: &Participant = request.caller;
    let header = |name: &str| {
        request
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty() && v.len() <= 256)
            .map(str::to_string)
    };
    AuditRecord {
        request_id: header(headers::REQUEST_ID),
        consumer: Some(caller.id.clone()),
        consumer_idno: Some(caller.organisation.idno.clone()),
        calling_user: header(headers::CALLING_USER),
        provider: Some(AUDIT_LOG_PROVIDER.to_string()),
        service_version: granted.and_then(|g| g.service_version.clone()),
        purpose: granted
            .map(|g| g.reason.clone())
            .or_else(|| header(headers::CALL_REASON)),
        legal_basis: granted
            .map(|g| g.basis.clone())
            .or_else(|| header(headers::CALL_BASIS)),
        grant_id: granted.and_then(|g| g.grant_id.clone()),
        subject: subject.filter(|s| !s.is_empty() && s.len() <= 64),
        decision: if problem.is_none() {
            AuditDecision::Accepted
        } else {
            AuditDecision::Refused
        },
        problem_code: problem.map(str::to_string),
        http_status: status.as_u16(),
        request_bytes: request.body.len() as u64,
        request_sha256: (!request.body.is_empty())
            .then(|| hex::encode(crate::crypto::sha256(request.body))),
        response_bytes: answer.len() as u64,
        response_sha256: Some(hex::encode(crate::crypto::sha256(answer))),
        ..AuditRecord::management(
            READ_EVENT,
            format!("{AUDIT_LOG_PROVIDER}/{AUDIT_LOG_CODE}"),
            received,
            started,
        )
    }
}

/// The OpenAPI paths of these endpoints.
pub(crate) fn openapi_paths() -> Value {
    let problem = super::openapi::problem();
    let call_headers = json!([
        {"name": "MConnect-Call-Basis", "in": "header", "required": true, "schema": {"type": "string", "pattern": "\\S"}, "description": "Legal basis id of a grant on mconnect/audit-log"},
        {"name": "MConnect-Call-Reason", "in": "header", "required": true, "schema": {"type": "string", "pattern": "\\S"}, "description": "Purpose code of that grant"},
        {"name": "MConnect-Calling-User", "in": "header", "required": false, "schema": {"type": "string"}, "description": "IDNP of the official reading the log, recorded"}
    ]);
    let with = |extra: Value| -> Value {
        let mut all = call_headers.as_array().cloned().unwrap_or_default();
        all.extend(extra.as_array().cloned().unwrap_or_default());
        Value::Array(all)
    };
    // Numbers the server reads as u64; kept to what JSON numbers hold exactly.
    let int = |name: &str, required: bool, what: &str| json!({"name": name, "in": "query", "required": required, "schema": {"type": "integer", "minimum": 0, "maximum": 9_007_199_254_740_991_u64}, "description": what});
    let text = |name: &str, what: &str| json!({"name": name, "in": "query", "required": false, "schema": {"type": "string"}, "description": what});
    let refusals = json!({
        "400": problem, "403": problem, "404": problem, "429": problem,
        "410": {"description": "the record was pruned under the retention policy (audit.pruned); its leaf hash remains in the tree", "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}},
        "500": {"description": "the log is corrupt (audit.corrupt)", "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}},
        "503": {"description": "the read could not itself be audited (audit.unavailable)", "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}}
    });
    let answer = |description: &str, schema: Value| {
        let mut responses = refusals.clone();
        responses["200"] = json!({"description": description, "content": {"application/json": {"schema": schema}}});
        responses
    };
    let b64 = json!({"type": "string", "contentEncoding": "base64"});
    let entry = json!({"type": "object", "required": ["seq", "record", "leaf"], "properties": {
        "seq": {"type": "integer"}, "record": {"type": "object"}, "leaf": b64,
        "broker": {"type": "string", "description": "in a cluster search: the broker whose log holds the record; its seq, proofs and tree heads are that broker's (ask its admin API)"}}});
    json!({
        "/v1/audit/tree-head": {"get": {
            "summary": "A signed tree head of the audit log (published to tree-heads.jsonl); auditor or operator",
            "parameters": with(json!([])),
            "responses": answer("signed tree head", json!({"type": "object", "required": ["tree_size", "root_hash", "timestamp", "keyid", "signature"], "properties": {
                "tree_size": {"type": "integer"}, "root_hash": b64, "timestamp": {"type": "integer", "description": "ms since the Unix epoch"},
                "keyid": {"type": "string"}, "signature": b64}}))
        }},
        "/v1/audit/records/{seq}": {"get": {
            "summary": "One record and its exact leaf bytes",
            "parameters": with(json!([{"name": "seq", "in": "path", "required": true, "schema": {"type": "integer", "minimum": 0, "maximum": 9_007_199_254_740_991_u64}}])),
            "responses": answer("the record", entry.clone())
        }},
        "/v1/audit/proof/inclusion": {"get": {
            "summary": "RFC 9162 inclusion proof of leaf `seq` in the tree of `tree_size` leaves (default: the current size)",
            "parameters": with(json!([int("seq", true, "leaf index"), int("tree_size", false, "tree size")])),
            "responses": answer("audit path", json!({"type": "object", "required": ["leaf_index", "tree_size", "audit_path"], "properties": {
                "leaf_index": {"type": "integer"}, "tree_size": {"type": "integer"}, "audit_path": {"type": "array", "items": b64}}}))
        }},
        "/v1/audit/proof/consistency": {"get": {
            "summary": "RFC 9162 consistency proof between tree sizes `first` and `second`",
            "parameters": with(json!([int("first", true, "older tree size"), int("second", true, "newer tree size")])),
            "responses": answer("consistency proof", json!({"type": "object", "required": ["first", "second", "proof"], "properties": {
                "first": {"type": "integer"}, "second": {"type": "integer"}, "proof": {"type": "array", "items": b64}}}))
        }},
        "/v1/audit/records": {"get": {
            "summary": "Search the log, newest first, one page at a time",
            "parameters": with(json!([
                text("subject", "IDNP/IDNO the data is about"), text("client", "consumer participant"),
                text("service", "provider/code"), text("provider", "provider participant"),
                text("event", "event type, e.g. exchange or audit.read"),
                text("from", "RFC 3339 or date, inclusive"), text("to", "RFC 3339 or date, exclusive"),
                json!({"name": "scope", "in": "query", "required": false, "schema": {"type": "string", "enum": ["cluster", "local"]}, "description": "on brokers sharing PostgreSQL: `cluster` (default) searches every broker's shipped records, `local` this broker's own log; elsewhere only the own log exists"}),
                json!({"name": "limit", "in": "query", "required": false, "schema": {"type": "integer", "minimum": 1, "maximum": crate::audit::index::MAX_LIMIT}, "description": "page size, default 50"}), text("cursor", "next_cursor of the previous page")
            ])),
            "responses": answer("one page", json!({"type": "object", "required": ["items", "next_cursor", "indexed"], "properties": {
                "items": {"type": "array", "items": entry}, "next_cursor": {"type": ["string", "null"]}, "indexed": {"type": "integer"},
                "broker": {"type": "string", "description": "this broker's id, on a cluster"}, "scope": {"type": "string", "enum": ["cluster", "local"]}}}))
        }}
    })
}
