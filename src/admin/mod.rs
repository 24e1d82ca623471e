//! The management (admin) API of PROTOCOL.md section 8: a separate mTLS
//! listener, JSON over HTTP, roles from the client certificate's participant.
//!
//! - operators register participants and reload catalog and policies;
//! - providers replace their own endpoints and rotate their own certificates;
//! - every participant may read the participant list, the catalog and its own grants;
//! - `/healthz`, `/readyz`, `/metrics` and `/v1/openapi.json`.
//!
//! Invariants: every change is validated, then written durably to the audit
//! log (event `admin.change`), and only then applied (`change.rs`), so a 503
//! `audit.unavailable` means nothing changed; a refused change leaves nothing
//! behind; errors are RFC 9457 problem+json.

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};

use crate::exchange::{Broker, Peer};
use crate::registry::{Endpoint, Participant, Role};

mod audit;
mod catalog;
mod change;
mod connect;
mod openapi;
mod participants;

pub use openapi::openapi;

/// One authenticated admin request, as the route handlers see it.
pub(crate) struct AdminRequest<'a> {
    /// The calling participant (from its certificate).
    pub(crate) caller: &'a Participant,
    /// HTTP method.
    pub(crate) method: &'a Method,
    /// Path segments, e.g. `["v1", "audit", "tree-head"]`.
    pub(crate) segments: &'a [&'a str],
    /// The raw query string.
    pub(crate) query: Option<&'a str>,
    /// Request headers.
    pub(crate) headers: &'a http::HeaderMap,
    /// The body (bounded).
    pub(crate) body: &'a [u8],
}

impl AdminRequest<'_> {
    /// A query parameter, percent-decoded.
    pub(crate) fn query_param(&self, name: &str) -> Option<String> {
        mconnect_sdk::query_param(self.query?, name)
    }
}

/// The body of `POST /v1/participants/{id}/certificates`.
#[derive(serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewCertificate {
    /// The certificate as PEM.
    #[schemars(extend("format" = "pem-certificate"))]
    pem: String,
}

/// A 405 answer naming the methods the path takes.
fn method_not_allowed(method: &Method, allowed: &[&str]) -> Response<Full<Bytes>> {
    let mut response = problem_response(&mconnect_sdk::protocol::Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "request.method_not_allowed",
        format!(
            "{method} is not allowed here; use {} (see /v1/openapi.json)",
            allowed.join(" or ")
        ),
    ));
    if let Ok(value) = http::HeaderValue::from_str(&allowed.join(", ")) {
        response.headers_mut().insert(http::header::ALLOW, value);
    }
    response
}

/// Largest admin request body.
const MAX_ADMIN_BODY: usize = 1024 * 1024;

/// State of the admin listener.
pub struct AdminState {
    pub(crate) broker: Arc<Broker>,
    /// `/healthz`, `/readyz`, `/metrics`: the same answers as the operations listener.
    ops: Arc<crate::ops::Operations>,
    catalog_dir: PathBuf,
    policies_dir: PathBuf,
}

/// An admin refusal.
pub(crate) struct AdminError {
    pub(crate) status: StatusCode,
    pub(crate) code: &'static str,
    pub(crate) detail: String,
}

pub(crate) type AdminResult = Result<Response<Full<Bytes>>, AdminError>;

pub(crate) fn refuse(
    status: StatusCode,
    code: &'static str,
    detail: impl Into<String>,
) -> AdminError {
    AdminError {
        status,
        code,
        detail: detail.into(),
    }
}

/// A problem+json answer.
pub(crate) fn problem_response(problem: &mconnect_sdk::protocol::Problem) -> Response<Full<Bytes>> {
    let mut r = json(problem.status(), &problem.to_value());
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(mconnect_sdk::protocol::PROBLEM_JSON),
    );
    r
}

pub(crate) fn json(status: StatusCode, value: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(
        serde_json::to_vec_pretty(value).unwrap_or_default(),
    )));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

impl AdminState {
    /// The admin API over a broker.
    pub fn new(
        broker: Arc<Broker>,
        catalog_dir: PathBuf,
        policies_dir: PathBuf,
        ops: Arc<crate::ops::Operations>,
    ) -> Self {
        AdminState {
            broker,
            ops,
            catalog_dir,
            policies_dir,
        }
    }

    /// Serves one admin request. Never fails: errors become problem+json.
    pub async fn handle<B>(&self, peer: &Peer, request: Request<B>) -> Response<Full<Bytes>>
    where
        B: http_body::Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let method = request.method().clone();
        let path = request.uri().path().to_string();
        match self.route(peer, request).await {
            Ok(r) => r,
            Err(mut e) => {
                // The document promises this operation: a 404 here would
                // hide a route that went missing.
                if e.code == "admin.unknown_endpoint"
                    && openapi::documented_methods(&path)
                        .is_some_and(|m| m.contains(&method.as_str()))
                {
                    e = refuse(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "internal.error",
                        format!("{method} {path} is documented but not routed"),
                    );
                }
                problem_response(&mconnect_sdk::protocol::Problem::new(
                    e.status, e.code, e.detail,
                ))
            }
        }
    }

    async fn route<B>(&self, peer: &Peer, request: Request<B>) -> AdminResult
    where
        B: http_body::Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (head, body) = request.into_parts();
        if let Some(answer) = self.ops.respond(&head.method, head.uri.path()).await {
            return Ok(answer);
        }
        let path = head.uri.path().to_string();
        // A documented path with a method the document does not list: 405,
        // with the methods it does list (RFC 9110 section 15.5.6).
        if let Some(allowed) = openapi::documented_methods(&path)
            && !allowed.contains(&head.method.as_str())
        {
            return Ok(method_not_allowed(&head.method, &allowed));
        }
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        let method = head.method.clone();
        match (method.clone(), segments.as_slice()) {
            (Method::GET, ["v1", "openapi.json"]) => Ok(json(StatusCode::OK, &openapi())),
            _ => {
                let caller = self.caller(peer)?;
                let body = read(body).await?;
                let request = AdminRequest {
                    caller: &caller,
                    method: &method,
                    segments: &segments,
                    query: head.uri.query(),
                    headers: &head.headers,
                    body: &body,
                };
                self.route_authenticated(&request).await
            }
        }
    }

    async fn route_authenticated(&self, request: &AdminRequest<'_>) -> AdminResult {
        let (caller, body) = (request.caller, request.body);
        if !matches!(*request.method, Method::GET | Method::HEAD) {
            self.state_current()?;
        }
        match (request.method.clone(), request.segments) {
            (
                _,
                ["v1", "services", ..]
                | ["v1", "registers", ..]
                | ["v1", "catalog", ..]
                | ["v1", "grants", ..]
                | ["v1", "reload"],
            ) => catalog::route(self, request).await,
            (_, ["v1", "connection-requests", ..]) => connect::route(self, request).await,
            (_, ["v1", "audit", ..]) => audit::route(self, request).await,
            (Method::GET, ["v1", "participants"]) => {
                let snapshot = self.broker.registry().snapshot();
                let list: Vec<serde_json::Value> = snapshot
                    .participants()
                    .into_iter()
                    .map(public_view)
                    .collect();
                Ok(json(
                    StatusCode::OK,
                    &serde_json::json!({ "participants": list }),
                ))
            }
            (Method::GET, ["v1", "participants", id]) => {
                let participant = self.known(id)?;
                Ok(json(StatusCode::OK, &public_view(&participant)))
            }
            (Method::PUT, ["v1", "participants", id]) => {
                require_role(caller, Role::Operator)?;
                let participant: Participant = parse(body)?;
                if participant.id != *id {
                    return Err(refuse(
                        StatusCode::BAD_REQUEST,
                        "request.malformed",
                        "the id in the body must match the path",
                    ));
                }
                // Like a participant's removal of its own last certificate,
                // an operator's replacement of itself may not lock it out.
                if caller.id == *id {
                    let keeps_certificate = participant.certificates.iter().any(|c| {
                        caller
                            .certificates
                            .iter()
                            .any(|held| held.fingerprint == c.fingerprint)
                    });
                    if !keeps_certificate || !participant.has_role(Role::Operator) {
                        return Err(refuse(
                            StatusCode::CONFLICT,
                            "participant.self_lockout",
                            "an operator's replacement of itself must keep the operator role and a certificate it holds; another operator may change it",
                        ));
                    }
                }
                let rules = self.broker.rules();
                let mut why = None;
                let upserted = self
                    .audited(caller, &format!("participant.upsert {id}"), |r| {
                        // The document's own checks first (400), then the
                        // catalog's (409); on the scratch registry either way.
                        let checked = r.upsert(participant.clone()).and_then(|()| {
                            participants::check_endpoints(
                                &rules.catalog,
                                id,
                                &participant.endpoints,
                            )
                        });
                        participants::note(&mut why, checked)
                    })
                    .await;
                participants::with_registry_problem(upserted, why)?;
                // What was stored: expiry dates are read from the PEM, not
                // taken from the body.
                let snapshot = self.broker.registry().snapshot();
                let stored = snapshot.get(id).map_or(&participant, |e| &e.participant);
                Ok(json(StatusCode::OK, &public_view(stored)))
            }
            (Method::PUT, ["v1", "participants", id, "endpoints"]) => {
                participants::may_set_endpoints(caller, id)?;
                self.known(id)?;
                let endpoints: Vec<Endpoint> = parse(body)?;
                let rules = self.broker.rules();
                let mut why = None;
                let set = self
                    .audited(caller, &format!("participant.endpoints {id}"), |r| {
                        let checked = r.set_endpoints(id, endpoints.clone()).and_then(|()| {
                            participants::check_endpoints(&rules.catalog, id, &endpoints)
                        });
                        participants::note(&mut why, checked)
                    })
                    .await;
                participants::with_registry_problem(set, why)?;
                Ok(json(
                    StatusCode::OK,
                    &serde_json::json!({ "endpoints": endpoints }),
                ))
            }
            (Method::POST, ["v1", "participants", id, "certificates"]) => {
                if caller.id != *id && !caller.has_role(Role::Operator) {
                    return Err(refuse(
                        StatusCode::FORBIDDEN,
                        "admin.forbidden",
                        "participants may add certificates only to themselves",
                    ));
                }
                self.known(id)?;
                let new: NewCertificate = parse(body)?;
                let mut why = None;
                let added = self
                    .audited(caller, &format!("participant.certificate.add {id}"), |r| {
                        participants::note(&mut why, r.add_certificate(id, &new.pem))
                    })
                    .await;
                let fp = participants::with_registry_problem(added, why)?;
                Ok(json(
                    StatusCode::CREATED,
                    &serde_json::json!({ "fingerprint": fp }),
                ))
            }
            (Method::DELETE, ["v1", "participants", id, "certificates", fp]) => {
                if caller.id != *id && !caller.has_role(Role::Operator) {
                    return Err(refuse(
                        StatusCode::FORBIDDEN,
                        "admin.forbidden",
                        "participants may remove certificates only from themselves",
                    ));
                }
                // A participant may not lock itself out by removing its last
                // usable certificate; an operator may (a compromised key).
                let allow_last = caller.has_role(Role::Operator) && caller.id != *id;
                let mut why = None;
                let removed = self
                    .audited(
                        caller,
                        &format!("participant.certificate.remove {id} {fp}"),
                        |r| participants::note(&mut why, r.remove_certificate(id, fp, allow_last)),
                    )
                    .await;
                participants::with_registry_problem(removed, why)?;
                Ok(json(StatusCode::OK, &serde_json::json!({ "removed": fp })))
            }
            _ => Err(refuse(
                StatusCode::NOT_FOUND,
                "admin.unknown_endpoint",
                "no such admin endpoint; see /v1/openapi.json",
            )),
        }
    }

    /// The registered participant `id`, or 404 `participant.unknown`.
    fn known(&self, id: &str) -> Result<Participant, AdminError> {
        let snapshot = self.broker.registry().snapshot();
        snapshot
            .get(id)
            .map(|entry| entry.participant.clone())
            .ok_or_else(|| {
                refuse(
                    StatusCode::NOT_FOUND,
                    "participant.unknown",
                    format!("no participant `{id}`; list them at /v1/participants"),
                )
            })
    }

    /// Every change (any method but GET and HEAD) waits for a current view
    /// of the state shared with other brokers: while the store's change feed
    /// has lost PostgreSQL, or has not caught up since it came back, a change
    /// is refused with 503 `state.unavailable` before it is validated or
    /// audited, so nothing changed. Reads and the data plane go on from the
    /// snapshot and rules in force. A store nobody else writes (redb) has no
    /// feed and is always current.
    fn state_current(&self) -> Result<(), AdminError> {
        match self.broker.registry().feed().map(|feed| feed.health()) {
            Some(Err(reason)) => Err(refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "state.unavailable",
                format!(
                    "{reason}; this broker keeps serving exchanges from the participants and rules it has, but takes no change until it is back in step with the shared state: nothing changed, try again later"
                ),
            )),
            _ => Ok(()),
        }
    }

    fn caller(&self, peer: &Peer) -> Result<Participant, AdminError> {
        let fp = peer.fingerprint.as_deref().ok_or_else(|| {
            refuse(
                StatusCode::UNAUTHORIZED,
                "client.unknown",
                "present your participant certificate",
            )
        })?;
        let snapshot = self.broker.registry().snapshot();
        let entry = snapshot.by_fingerprint(fp).ok_or_else(|| {
            refuse(
                StatusCode::UNAUTHORIZED,
                "client.unknown",
                format!("certificate {fp} is not registered to any participant"),
            )
        })?;
        // The handshake checked the dates; a kept-alive connection can
        // outlive them, so they are checked again at each request.
        entry
            .certificate_at(fp, crate::exchange::unix_now())
            .map_err(|refusal| {
                refuse(
                    StatusCode::UNAUTHORIZED,
                    "client.unknown",
                    format!("the TLS client certificate identifies no one: {refusal}"),
                )
            })?;
        Ok(entry.participant.clone())
    }

    /// Validates a registry change, makes its audit record durable, and only
    /// then applies it (see `change`): a 503 means nothing changed.
    async fn audited<T>(
        &self,
        caller: &Participant,
        action: &str,
        change: impl FnOnce(&crate::registry::Registry) -> Result<T, crate::registry::RegistryError>,
    ) -> Result<T, AdminError> {
        change::audited(self, caller, action, change).await
    }
}

/// Runs a call that reads or writes the state store (an fsync with redb, a
/// round trip with PostgreSQL) without stalling an async worker that serves
/// exchanges: moved off the worker on a multi-threaded runtime, run in place
/// otherwise (`block_in_place` is not available on a current-thread runtime;
/// the store never needs the caller's runtime, so that is safe, only slower).
pub(crate) fn off_worker<T>(work: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(work),
        _ => work(),
    }
}

pub(crate) fn require_role(caller: &Participant, role: Role) -> Result<(), AdminError> {
    if caller.has_role(role) {
        Ok(())
    } else {
        Err(refuse(
            StatusCode::FORBIDDEN,
            "admin.forbidden",
            format!(
                "this action needs the {role:?} role; `{}` lacks it",
                caller.id
            )
            .to_lowercase(),
        ))
    }
}

/// A participant as other participants may see it (certificates by fingerprint only).
fn public_view(p: &Participant) -> serde_json::Value {
    serde_json::json!({
        "id": p.id,
        "organisation": p.organisation,
        "roles": p.roles,
        "certificates": p.certificates.iter().map(|c| serde_json::json!({"fingerprint": c.fingerprint, "not_after": c.not_after})).collect::<Vec<_>>(),
        "endpoints": p.endpoints,
    })
}

async fn read<B>(body: B) -> Result<Bytes, AdminError>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    Limited::new(body, MAX_ADMIN_BODY)
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|e| {
            refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                "request.too_large",
                format!("admin bodies are limited to {MAX_ADMIN_BODY} bytes: {e}"),
            )
        })
}

pub(crate) fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, AdminError> {
    serde_json::from_slice(body).map_err(|e| {
        refuse(
            StatusCode::BAD_REQUEST,
            "request.malformed",
            format!("body is not the expected JSON: {e}"),
        )
    })
}
