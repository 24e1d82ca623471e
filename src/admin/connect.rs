//! Connection requests on the admin API (`/v1/connection-requests…`): the
//! signed submission and resubmission, the operator's decisions, the
//! providers' confirmations, listings and the kept evidence.
//!
//! Invariants:
//! - submissions and resubmissions are accepted only with a verified
//!   RFC 9421 signature by a certificate of the applicant (its system or
//!   another system of its organisation), or of an intermediary filing for
//!   an authority not yet on the bus with the official's own signature
//!   (`connect::may_file` decides); the signature is kept as evidence;
//! - an approval that registers the applicant's system writes the
//!   participant and the request in one store batch, after the one record
//!   of the approval; if the registry refuses it, the approval is refused;
//! - a transition is validated first (state machine, and when it changes
//!   what is granted, that the rules load with it), then its record (event
//!   `connect.transition`) is made durable, and only then is it stored and
//!   put in force in the policy index; a 503 `audit.unavailable` means
//!   nothing changed. If storing or reloading fails after the record is
//!   durable, the stored request is put back and a second record (refused,
//!   500, `admin.apply_failed`) says the transition did not take effect;
//! - one writer at a time: validation, audit, store write, rules reload and
//!   swap happen under one lock, so records follow the order of changes and
//!   a slower writer never swaps in rules older than the store;
//! - refused transitions are audited too; reads are not changes and are not;
//! - whoever cannot see a request gets 404, as if it did not exist.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http::{Method, StatusCode};
use serde_json::{Value, json};

use super::{
    AdminError, AdminRequest, AdminResult, AdminState, json as json_response, off_worker, refuse,
};
use crate::audit::{AuditRecord, Decision};
use crate::connect::application::refusal_code;
use crate::connect::evidence::Submission;
use crate::connect::{
    self, Act, ConnectError, ConnectionRequest, Evidence, RateLimitSpec, State, Transition,
};
use crate::exchange::call::headers as h;
use crate::exchange::{rfc3339, unix_now};
use crate::registry::Participant;

/// Serialises writers of connection requests, from validation through the
/// audit record to the store write and the rules swap. Process-wide because
/// the admin state is built by `app.rs`; one broker per process is the norm,
/// and a second one only waits longer. A tokio mutex: it is held across the
/// audit append.
static WRITE_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Routes `/v1/connection-requests…`.
pub(crate) async fn route(state: &AdminState, request: &AdminRequest<'_>) -> AdminResult {
    match (request.method.clone(), request.segments) {
        (Method::POST, ["v1", "connection-requests"]) => submit(state, request).await,
        (Method::GET, ["v1", "connection-requests"]) => list(state, request),
        (Method::GET, ["v1", "connection-requests", id]) => show(state, request, id),
        (Method::GET, ["v1", "connection-requests", id, "evidence"]) => {
            evidence(state, request, id)
        }
        (Method::POST, ["v1", "connection-requests", id, "resubmit"]) => {
            resubmit(state, request, id).await
        }
        (Method::POST, ["v1", "connection-requests", id, action]) => {
            match Transition::from_path_segment(action) {
                Some(t) if !matches!(t, Transition::Submit | Transition::Resubmit) => {
                    decide(state, request, id, t).await
                }
                _ => Err(unknown_endpoint()),
            }
        }
        _ => Err(unknown_endpoint()),
    }
}

fn unknown_endpoint() -> AdminError {
    refuse(
        StatusCode::NOT_FOUND,
        "admin.unknown_endpoint",
        "no such admin endpoint; see /v1/openapi.json",
    )
}

fn unknown_request(id: &str) -> AdminError {
    refuse(
        StatusCode::NOT_FOUND,
        "connect.unknown_request",
        format!("no connection request `{id}` that you may see"),
    )
}

fn from_connect(e: &ConnectError) -> AdminError {
    refuse(e.status(), e.code(), e.to_string())
}

/// What one attempt leaves in the audit log besides who and what.
#[derive(Default, Clone)]
struct AuditExtras<'a> {
    evidence: Option<&'a Evidence>,
    request_id: Option<String>,
    body: &'a [u8],
}

/// Writes the `connect.transition` record of one attempt; the answer waits
/// for it. `target` is `"{request id} {transition}"`.
async fn audit(
    state: &AdminState,
    caller: &Participant,
    target: &str,
    outcome: Result<StatusCode, &AdminError>,
    extras: AuditExtras<'_>,
    received: SystemTime,
    started: Instant,
) -> Result<(), AdminError> {
    let (decision, status, problem) = match outcome {
        Ok(status) => (Decision::Accepted, status.as_u16(), None),
        Err(e) => (
            Decision::Refused,
            e.status.as_u16(),
            Some(e.code.to_string()),
        ),
    };
    let record = AuditRecord {
        request_id: extras.request_id,
        consumer: Some(caller.id.clone()),
        consumer_idno: Some(caller.organisation.idno.clone()),
        calling_user: extras.evidence.and_then(|e| e.calling_user.clone()),
        decision,
        problem_code: problem,
        http_status: status,
        request_bytes: extras.body.len() as u64,
        request_sha256: (!extras.body.is_empty())
            .then(|| hex::encode(crate::crypto::sha256(extras.body))),
        keyids_checked: extras
            .evidence
            .map(|e| {
                std::iter::once(e.keyid.clone())
                    .chain(
                        e.user_signature
                            .as_ref()
                            .map(|u| u.certificate_fingerprint.clone()),
                    )
                    .collect()
            })
            .unwrap_or_default(),
        ..AuditRecord::management("connect.transition", target.to_string(), received, started)
    };
    state.broker.audit().append(record).await.map_err(|e| {
        refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "audit.unavailable",
            format!("the transition could not be audited: {e}"),
        )
    })?;
    Ok(())
}

/// A validated change of one connection request, not yet stored.
struct Staged {
    /// The request as stored now (`None` for a new submission).
    before: Option<ConnectionRequest>,
    /// The request as the change leaves it.
    after: ConnectionRequest,
    /// Whether the grants in force change, so the rules must be reloaded.
    reload: bool,
    /// The registration of the applicant's system, when an approval
    /// registers it: committed in the same batch as the request.
    registration: Option<crate::registry::StagedChange<()>>,
    /// The answer's status and body.
    status: StatusCode,
    body: Value,
}

/// Audits an attempt and turns it into the answer: a refusal is audited and
/// stays a refusal (unless the audit itself fails); a staged change is
/// audited, and only once its record is durable stored and put in force.
/// Runs under the write lock (the caller holds it).
#[allow(clippy::too_many_arguments)]
async fn finish(
    state: &AdminState,
    caller: &Participant,
    target: &str,
    staged: Result<Staged, AdminError>,
    extras: AuditExtras<'_>,
    received: SystemTime,
    started: Instant,
) -> AdminResult {
    let mut staged = match staged {
        Ok(staged) => staged,
        Err(e) => {
            audit(state, caller, target, Err(&e), extras, received, started).await?;
            return Err(e);
        }
    };
    audit(
        state,
        caller,
        target,
        Ok(staged.status),
        extras.clone(),
        received,
        started,
    )
    .await?;
    match off_worker(|| commit(state, &mut staged)) {
        Ok(()) => Ok(json_response(staged.status, &staged.body)),
        Err(e) => {
            if let Err(a) = audit(state, caller, target, Err(&e), extras, received, started).await {
                tracing::error!(%target, error = %a.detail, "transition audited as accepted but not applied, and its failure could not be recorded");
            }
            Err(e)
        }
    }
}

/// Stores a staged change and, when grants change, reloads and swaps the
/// rules; if the rules no longer load (the files changed since the change was
/// validated), the stored request is put back. An error means nothing changed
/// (unless even putting it back failed, which the detail says).
fn commit(state: &AdminState, staged: &mut Staged) -> Result<(), AdminError> {
    let store = state.broker.registry().store().clone();
    let failed = |detail: String| {
        refuse(
            StatusCode::INTERNAL_SERVER_ERROR,
            "admin.apply_failed",
            format!(
                "the transition was audited but could not be applied, so it did not take effect (the audit log records that too): {detail}"
            ),
        )
    };
    match staged.registration.take() {
        // The participant and the request in one batch: both or neither.
        Some(registration) => {
            let writes =
                connect::RequestWrites::of(&staged.after).map_err(|e| failed(e.to_string()))?;
            state
                .broker
                .registry()
                .commit_with(registration, &writes.writes())
                .map_err(|e| failed(format!("registering the applicant's system: {e}")))?;
        }
        None => {
            connect::persist(store.as_ref(), &staged.after).map_err(|e| failed(e.to_string()))?;
        }
    }
    if !staged.reload {
        return Ok(());
    }
    // The rules lock orders this load and swap with SIGHUP and `/v1/reload`,
    // so nobody swaps in rules older than the store.
    let writer = state.broker.live_rules().writer();
    match crate::rules::load(
        &state.catalog_dir,
        &state.policies_dir,
        state.broker.registry(),
    ) {
        Ok(rules) => {
            writer.swap(rules);
            Ok(())
        }
        Err(problems) => {
            let e = crate::rules::summarise(&problems);
            let undone = connect::restore(store.as_ref(), &staged.after.id, staged.before.as_ref());
            Err(failed(format!(
                "the rules no longer load with it: {e}{}",
                match undone {
                    Ok(()) => String::new(),
                    Err(u) => format!(" (undoing the stored change failed too: {u})"),
                }
            )))
        }
    }
}

/// The absolute URI the client addressed, as its signature covers it.
fn target_uri(request: &AdminRequest<'_>) -> Result<String, AdminError> {
    let host = request
        .headers
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            refuse(
                StatusCode::BAD_REQUEST,
                "request.malformed",
                "a signed submission needs a Host header (send it over HTTP/1.1)",
            )
        })?;
    let mut uri = format!("https://{host}/{}", request.segments.join("/"));
    if let Some(query) = request.query {
        uri.push('?');
        uri.push_str(query);
    }
    Ok(uri)
}

/// A refused submission, with its evidence when the signature verified (the
/// audit record names the key that signed).
type Refusal = (AdminError, Option<Box<Evidence>>);

/// Checks the signature, the application and that the signer is the
/// applicant; returns both.
fn verified_application(
    state: &AdminState,
    request: &AdminRequest<'_>,
    now: i64,
) -> Result<(connect::Application, Evidence), Refusal> {
    let uri = target_uri(request).map_err(|e| (e, None))?;
    let snapshot = state.broker.registry().snapshot();
    let submission = Submission {
        method: request.method.as_str(),
        target_uri: &uri,
        headers: request.headers,
        body: request.body,
    };
    let mut evidence = connect::verify_submission(&submission, &snapshot, now)
        .map_err(|e| (refuse(e.status, e.code, e.detail), None))?;
    // The official's own signature (MSign), when the submission carries
    // one: verified, or the submission is refused.
    evidence.user_signature = connect::evidence::verify_user_signature(
        &submission,
        &evidence,
        state.broker.registry().anchors(),
        now,
    )
    .map_err(|e| {
        (
            refuse(e.status, e.code, e.detail),
            Some(Box::new(evidence.clone())),
        )
    })?;
    let rules = state.broker.rules();
    let application = connect::validate_application(request.body, &rules.catalog, &snapshot)
        .map_err(|problems| {
            let detail = problems
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ");
            (
                refuse(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    refusal_code(&problems),
                    detail,
                ),
                Some(Box::new(evidence.clone())),
            )
        })?;
    // The signature verified with a key of the signer, so it is registered.
    let Some(signer) = snapshot.get(&evidence.signer) else {
        let e = refuse(
            StatusCode::UNAUTHORIZED,
            "signature.invalid",
            format!("`{}` is no longer registered", evidence.signer),
        );
        return Err((e, Some(Box::new(evidence))));
    };
    if let Err(refusal) = connect::may_file(
        &application,
        &signer.participant,
        &request.caller.id,
        evidence.user_signature.is_some(),
    ) {
        let e = refuse(StatusCode::FORBIDDEN, refusal.code, refusal.detail);
        return Err((e, Some(Box::new(evidence))));
    }
    // A system registered on approval must hold a certificate the bus CA
    // issued, in date now: checked on arrival as the registry checks it.
    if let Some(registration) = &application.applicant.registration
        && let Err(e) = crate::registry::admit(
            state.broker.registry().anchors(),
            &registration.certificate,
            now,
        )
    {
        let (status, code) = e.problem();
        let e = refuse(
            if status == StatusCode::BAD_REQUEST {
                StatusCode::UNPROCESSABLE_ENTITY
            } else {
                status
            },
            code,
            format!("at /applicant/registration/certificate: {e}"),
        );
        return Err((e, Some(Box::new(evidence))));
    }
    Ok((application, evidence))
}

/// Refuses a signature already used for an earlier submission.
fn check_replay(all: &[ConnectionRequest], evidence: &Evidence) -> Result<(), AdminError> {
    let used = all
        .iter()
        .flat_map(|r| r.evidence.iter())
        .any(|e| e.signature == evidence.signature);
    if used {
        Err(refuse(
            StatusCode::CONFLICT,
            "request.replayed",
            "this signed submission was already received; sign the application again to file it anew",
        ))
    } else {
        Ok(())
    }
}

async fn submit(state: &AdminState, request: &AdminRequest<'_>) -> AdminResult {
    let (received, started, now) = (SystemTime::now(), Instant::now(), unix_now());
    let caller = request.caller;
    let request_id = header(request, h::REQUEST_ID);
    let _guard = WRITE_LOCK.lock().await;
    let (result, evidence, target) = match verified_application(state, request, now) {
        Err((e, evidence)) => (Err(e), evidence.map(|b| *b), "(new) submit".to_string()),
        Ok((application, mut evidence)) => {
            evidence.version = 1;
            let created = off_worker(|| create(state, application, evidence.clone(), caller, now));
            let target = match &created {
                Ok(r) => format!("{} submit", r.id),
                Err(_) => "(new) submit".to_string(),
            };
            let result = created.map(|r| Staged {
                before: None,
                status: StatusCode::CREATED,
                body: full_view(state, &r, caller, now),
                reload: false,
                registration: None,
                after: r,
            });
            (result, Some(evidence), target)
        }
    };
    let extras = AuditExtras {
        evidence: evidence.as_ref(),
        request_id,
        body: request.body,
    };
    finish(state, caller, &target, result, extras, received, started).await
}

fn create(
    state: &AdminState,
    application: connect::Application,
    evidence: Evidence,
    caller: &Participant,
    now: i64,
) -> Result<ConnectionRequest, AdminError> {
    // Not stored here: `finish` stores it once its record is durable.
    let store = state.broker.registry().store().clone();
    let all = connect::load_all(store.as_ref()).map_err(|e| from_connect(&e))?;
    check_replay(&all, &evidence)?;
    let year = time::OffsetDateTime::from_unix_timestamp(now)
        .map(|t| t.year())
        .unwrap_or(1970);
    let id = connect::next_id(all.iter().map(|r| r.id.as_str()), year);
    Ok(ConnectionRequest::submitted(
        id,
        application,
        evidence,
        caller,
        now,
    ))
}

async fn resubmit(state: &AdminState, request: &AdminRequest<'_>, id: &str) -> AdminResult {
    let (received, started, now) = (SystemTime::now(), Instant::now(), unix_now());
    let caller = request.caller;
    let target = format!("{id} resubmit");
    let request_id = header(request, h::REQUEST_ID);
    let _guard = WRITE_LOCK.lock().await;
    // Visibility first, so strangers learn nothing about the request.
    let current = visible(state, request, id)?;
    let (result, evidence) = match verified_application(state, request, now) {
        Err((e, evidence)) => (Err(e), evidence.map(|b| *b)),
        Ok((application, mut evidence)) => {
            evidence.version = u32::try_from(current.evidence.len() + 1).unwrap_or(u32::MAX);
            let (new, old) = (&application.applicant, &current.application.applicant);
            let result = if (&new.idno, &new.system) != (&old.idno, &old.system) {
                Err(refuse(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "connect.application_invalid",
                    format!(
                        "at /applicant: a resubmission keeps the applicant of {id} ({} `{}`); file a new application for another applicant",
                        current.application.applicant.idno, current.application.applicant.system
                    ),
                ))
            } else {
                let act = Act::Resubmit {
                    application: Box::new(application),
                    evidence: Box::new(evidence.clone()),
                    reason: request.query_param("reason"),
                };
                off_worker(|| transition(state, id, act, caller, now, Some(&evidence)))
            };
            (result, Some(evidence))
        }
    };
    let extras = AuditExtras {
        evidence: evidence.as_ref(),
        request_id,
        body: request.body,
    };
    finish(state, caller, &target, result, extras, received, started).await
}

/// The body of a decision: a reason, and on approval a rate limit.
#[derive(serde::Deserialize, Default, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct DecisionBody {
    /// Why; required for request-changes, reject, suspend and revoke.
    #[serde(default)]
    reason: Option<String>,
    /// On approve only; default 10 per second, bursts of 20.
    #[serde(default)]
    rate_limit: Option<RateLimitSpec>,
}

async fn decide(
    state: &AdminState,
    request: &AdminRequest<'_>,
    id: &str,
    t: Transition,
) -> AdminResult {
    let (received, started, now) = (SystemTime::now(), Instant::now(), unix_now());
    let caller = request.caller;
    let _guard = WRITE_LOCK.lock().await;
    let current = visible(state, request, id)?;
    // An approval that registers the applicant's system says so in its
    // record, which is the registration's record too.
    let registers = (t == Transition::Approve)
        .then_some(&current.application.applicant)
        .filter(|a| a.registration.is_some())
        .map(|a| format!(", registering participant {}", a.system))
        .unwrap_or_default();
    let body: Result<DecisionBody, AdminError> = if request.body.iter().all(u8::is_ascii_whitespace)
    {
        Ok(DecisionBody::default())
    } else {
        super::parse(request.body)
    };
    let result = body.and_then(|body| {
        if body.rate_limit.is_some() && t != Transition::Approve {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "request.malformed",
                "rate_limit is set on approval only",
            ));
        }
        let act = if t == Transition::Approve {
            Act::Approve {
                reason: body.reason,
                rate_limit: body.rate_limit,
            }
        } else {
            Act::Plain(t, body.reason)
        };
        off_worker(|| transition(state, id, act, caller, now, None))
    });
    let extras = AuditExtras {
        body: request.body,
        ..AuditExtras::default()
    };
    finish(
        state,
        caller,
        &format!("{id} {}{registers}", t.as_str()),
        result,
        extras,
        received,
        started,
    )
    .await
}

/// Validates one act (the caller holds the write lock): the state machine
/// on a copy of the stored request and, when grants change, that the rules
/// load with the changed grants. Nothing is stored: see [`finish`].
fn transition(
    state: &AdminState,
    id: &str,
    act: Act,
    caller: &Participant,
    now: i64,
    evidence: Option<&Evidence>,
) -> Result<Staged, AdminError> {
    let store = state.broker.registry().store().clone();
    if let Some(evidence) = evidence {
        let all = connect::load_all(store.as_ref()).map_err(|e| from_connect(&e))?;
        check_replay(&all, evidence)?;
    }
    let before = connect::load(store.as_ref(), id)
        .map_err(|e| from_connect(&e))?
        .filter(|r| r.visible_to(caller))
        .ok_or_else(|| unknown_request(id))?;
    let approving = act.transition() == Transition::Approve;
    let mut after = before.clone();
    after
        .apply(act, caller, now)
        .map_err(|e| from_connect(&e))?;
    let registration = match &after.application.applicant.registration {
        Some(registration) if approving => Some(stage_registration(
            state,
            &after.application.applicant,
            registration,
        )?),
        _ => None,
    };
    let reload = before.grants_in_store() || after.grants_in_store();
    if reload {
        // The stored grant documents as they would be with this change.
        let path = connect::document_path(id);
        let mut stored = connect::stored_grant_documents(store.as_ref())
            .map_err(|e| refuse(StatusCode::INTERNAL_SERVER_ERROR, "connect.store", e))?;
        stored.retain(|(p, _)| *p != path);
        if after.grants_in_store() {
            let grants: Vec<Value> = connect::grant_values(&after)
                .into_iter()
                .map(|(_, v)| v)
                .collect();
            stored.push((path, json!({ "grants": grants })));
        }
        crate::rules::load_with(
            &state.catalog_dir,
            &state.policies_dir,
            state.broker.registry(),
            stored,
        )
        .map_err(|problems| {
            refuse(
                StatusCode::CONFLICT,
                "connect.rules_refused",
                format!(
                    "the grants of {id} do not load with the current catalog, policies and registry, so nothing changed: {}",
                    crate::rules::summarise(&problems)
                ),
            )
        })?;
    }
    Ok(Staged {
        status: StatusCode::OK,
        body: full_view(state, &after, caller, now),
        before: Some(before),
        after,
        reload,
        registration,
    })
}

/// Stages the registration of an approved applicant's system: its
/// organisation, the certificate of the application (which must still chain
/// to the bus CA and be in date, and belong to no one else) and the role
/// `consumer`. Nothing is registered here; [`commit`] writes it with the
/// request. A registration the registry refuses refuses the approval.
fn stage_registration(
    state: &AdminState,
    applicant: &connect::application::Applicant,
    registration: &connect::application::Registration,
) -> Result<crate::registry::StagedChange<()>, AdminError> {
    let registry = state.broker.registry();
    let refused = |e: crate::registry::RegistryError| {
        refuse(
            StatusCode::CONFLICT,
            "connect.registration_refused",
            format!(
                "the applicant's system `{}` cannot be registered, so nothing changed: {e}",
                applicant.system
            ),
        )
    };
    if registry.snapshot().get(&applicant.system).is_some() {
        return Err(refused(crate::registry::RegistryError::Invalid(format!(
            "`{}` is registered already",
            applicant.system
        ))));
    }
    let certificate = registry
        .check_new_certificate(&registration.certificate)
        .map_err(refused)?;
    let participant = Participant {
        id: applicant.system.clone(),
        organisation: crate::registry::Organisation {
            idno: applicant.idno.clone(),
            name: applicant.name.clone(),
        },
        roles: vec![crate::registry::Role::Consumer],
        certificates: vec![certificate],
        endpoints: Vec::new(),
        confidential: false,
    };
    registry.stage(|r| r.upsert(participant)).map_err(refused)
}

/// The request if the caller may see it, else 404.
fn visible(
    state: &AdminState,
    request: &AdminRequest<'_>,
    id: &str,
) -> Result<ConnectionRequest, AdminError> {
    off_worker(|| connect::load(state.broker.registry().store().as_ref(), id))
        .map_err(|e| from_connect(&e))?
        .filter(|r| r.visible_to(request.caller))
        .ok_or_else(|| unknown_request(id))
}

fn header(request: &AdminRequest<'_>, name: &str) -> Option<String> {
    request
        .headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn list(state: &AdminState, request: &AdminRequest<'_>) -> AdminResult {
    let now = unix_now();
    let params = super::catalog::Params::parse(request, &["state", "overdue"])?;
    let wanted_state = match params.get("state").map(str::to_string) {
        None => None,
        Some(text) => Some(State::parse(&text).ok_or_else(|| {
            refuse(
                StatusCode::BAD_REQUEST,
                "request.malformed",
                format!(
                    "state {text:?} is not one of: {}",
                    State::ALL.map(State::as_str).join(", ")
                ),
            )
        })?),
    };
    let only_overdue = match params.get("overdue") {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "request.malformed",
                format!(
                    "overdue {:?} is not true or false",
                    other.chars().take(64).collect::<String>()
                ),
            ));
        }
    };
    let all = off_worker(|| connect::load_all(state.broker.registry().store().as_ref()))
        .map_err(|e| from_connect(&e))?;
    let items: Vec<Value> = all
        .iter()
        .filter(|r| r.visible_to(request.caller))
        .filter(|r| wanted_state.is_none_or(|s| r.state == s))
        .filter(|r| !only_overdue || r.overdue(now))
        .map(|r| summary_view(r, now))
        .collect();
    let overdue = all
        .iter()
        .filter(|r| r.visible_to(request.caller) && r.overdue(now))
        .count();
    Ok(json_response(
        StatusCode::OK,
        &json!({ "connection_requests": items, "overdue": overdue }),
    ))
}

fn show(state: &AdminState, request: &AdminRequest<'_>, id: &str) -> AdminResult {
    let found = visible(state, request, id)?;
    Ok(json_response(
        StatusCode::OK,
        &full_view(state, &found, request.caller, unix_now()),
    ))
}

fn evidence(state: &AdminState, request: &AdminRequest<'_>, id: &str) -> AdminResult {
    let found = visible(state, request, id)?;
    let items: Vec<Value> = found
        .evidence
        .iter()
        .map(|e| {
            let mut value = serde_json::to_value(e).unwrap_or(Value::Null);
            value["verification"] = verification(e);
            value
        })
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({ "id": found.id, "evidence": items }),
    ))
}

fn verification(e: &Evidence) -> Value {
    match e.reverify() {
        Ok(()) => json!({"verified": true}),
        Err(problem) => json!({"verified": false, "problem": problem}),
    }
}

/// What the operator reads of a registration: the certificate's subject,
/// fingerprint and expiry, whether it chains to the bus CA and is in date
/// now (and if not, why), the endpoint, and whether the system is
/// registered (after approval it is).
fn registration_view(
    state: &AdminState,
    system: &str,
    registration: &connect::application::Registration,
    now: i64,
) -> Value {
    let registry = state.broker.registry();
    let registered = registry.snapshot().get(system).is_some();
    let mut view = json!({"endpoint": registration.endpoint, "registered": registered});
    match crate::registry::registered_certificate(&registration.certificate) {
        Ok(cert) => {
            view["fingerprint"] = json!(cert.fingerprint);
            view["not_after"] = json!(time_text(cert.not_after));
            view["subject"] = json!(certificate_subject(&cert.pem));
            view["chain"] = match crate::registry::admit(registry.anchors(), &cert.pem, now) {
                Ok(_) => json!({"verified": true}),
                Err(e) => json!({"verified": false, "problem": e.to_string()}),
            };
        }
        Err(e) => view["chain"] = json!({"verified": false, "problem": e.to_string()}),
    }
    view
}

/// A certificate's subject (RFC 4514 text), or empty when unreadable.
fn certificate_subject(pem: &str) -> String {
    crate::trust::ParsedCertificate::from_pem(pem)
        .ok()
        .and_then(|parsed| {
            x509_parser::parse_x509_certificate(parsed.leaf())
                .ok()
                .map(|(_, cert)| cert.subject().to_string())
        })
        .unwrap_or_default()
}

fn time_text(unix: i64) -> String {
    rfc3339(UNIX_EPOCH + Duration::from_secs(u64::try_from(unix).unwrap_or(0)))
}

fn summary_view(r: &ConnectionRequest, now: i64) -> Value {
    json!({
        "id": r.id,
        "state": r.state,
        "applicant": r.application.applicant,
        "services": r.application.services.iter().map(|s| &s.service).collect::<Vec<_>>(),
        "version": r.evidence.len(),
        "submitted_at": time_text(r.submitted_at),
        "updated_at": r.history.last().map(|h| time_text(h.at)),
        "due_at": time_text(r.due_at()),
        "overdue": r.overdue(now),
        "filed_by": r.filer(),
    })
}

fn full_view(state: &AdminState, r: &ConnectionRequest, viewer: &Participant, now: i64) -> Value {
    let mut view = summary_view(r, now);
    if let Some(registration) = &r.application.applicant.registration {
        view["registration"] =
            registration_view(state, &r.application.applicant.system, registration, now);
    }
    let providers = r.providers();
    view["application"] = serde_json::to_value(&r.application).unwrap_or(Value::Null);
    view["history"] = r
        .history
        .iter()
        .map(|h| {
            json!({
                "transition": h.transition, "from": h.from, "to": h.to,
                "by": h.by, "at": time_text(h.at), "reason": h.reason,
            })
        })
        .collect();
    view["providers"] = providers
        .iter()
        .map(|p| {
            json!({
                "provider": p,
                "confirmed_at": r.confirmations.get(*p).map(|c| time_text(c.at)),
            })
        })
        .collect();
    let grant_status = match r.state {
        State::Active => "active",
        State::Suspended => "suspended",
        State::Revoked if r.grants_in_store() => "revoked",
        State::Revoked => "never in force",
        _ => "pending provider confirmation",
    };
    view["grants"] = r
        .grants
        .iter()
        .zip(&r.application.services)
        .map(|(g, s)| json!({"id": g, "service": s.service, "status": grant_status}))
        .collect();
    view["rate_limit"] = serde_json::to_value(r.rate_limit).unwrap_or(Value::Null);
    view["allowed_transitions"] = r
        .actions_for(viewer)
        .into_iter()
        .map(|t| t.path_segment())
        .collect();
    view["evidence"] = r
        .evidence
        .iter()
        .map(|e| {
            json!({
                "version": e.version, "signer": e.signer, "keyid": e.keyid,
                "calling_user": e.calling_user, "created": time_text(e.created),
                "received_at": time_text(e.received_at), "body_sha256": e.body_sha256,
                "user_signature": e.user_signature.as_ref().map(|u| json!({
                    "idnp": u.idnp, "subject": u.subject, "algorithm": u.algorithm,
                    "certificate_fingerprint": u.certificate_fingerprint,
                })),
                "verification": verification(e),
            })
        })
        .collect();
    view
}

/// The OpenAPI paths of these endpoints.
pub(crate) fn openapi_paths() -> Value {
    let problem = super::openapi::problem();
    let id = json!([{"name": "id", "in": "path", "required": true, "schema": {"type": "string", "pattern": "^cr-[0-9]{4}-[0-9]{6}$"}}]);
    let signed = "RFC 9421-signed (label `mconnect`, covering @method, @target-uri, content-digest, with created and keyid = the fingerprint of a certificate registered to the applicant; `mconnect_sdk::sign_request` does this). The exact body and signature are kept as evidence. Optionally the official's own signature too: `MConnect-User-Signature` (MSign's detached signature over the SHA-256 of the exact body, base64) and `MConnect-User-Certificate` (the signing certificate's DER, base64), both covered by the RFC 9421 signature; the certificate must chain to the bus CA, be in date and name the signed `MConnect-Calling-User` in its subject serialNumber, and the signature must verify, or the submission is refused (401 `connect.user_signature_invalid`). A participant with the `intermediary` role (the data-access portal) may sign for an authority not yet on the bus: only with `applicant.registration` and with the official's own signature, sent over its own connection (else 403 `connect.signer_not_applicant` or `connect.user_signature_required`); it may then follow and resubmit what it filed. The registration's certificate must chain to the bus CA and be in date (else 422 with the certificate's code); on approval the system is registered (role `consumer`) in the same change as the request.";
    // The application schema is a component, its `$defs` beside it, so its
    // references resolve in the document (openapi.rs).
    let application = json!({"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Application"}}}});
    // Generated from the type that parses it.
    let decision = json!({"required": false, "content": {"application/json": {"schema": super::openapi::schema_of::<DecisionBody>()}}});
    let mut paths = serde_json::Map::new();
    paths.insert("/v1/connection-requests".into(), json!({
        "get": {"summary": "List the connection requests you may see (operators: all; applicants: their own; providers: those naming them), with the 30-day deadline and the overdue flag",
                "parameters": [{"name": "state", "in": "query", "schema": {"enum": State::ALL.map(State::as_str)}}, {"name": "overdue", "in": "query", "schema": {"type": "boolean"}, "description": "true: only the overdue ones"}],
                "responses": {"200": {"description": "connection_requests and the count overdue"}, "400": problem}},
        "post": {"summary": format!("Submit an application. {signed}"), "requestBody": application,
                 "responses": {"201": {"description": "submitted"}, "400": problem, "401": problem, "403": problem, "409": problem, "422": problem}}
    }));
    paths.insert("/v1/connection-requests/{id}".into(), json!({
        "parameters": id,
        "get": {"summary": "One connection request: application, history (who, when, why), providers' confirmations, grants, the transitions you may make, evidence with its re-verification", "responses": {"200": {"description": "the request"}, "404": problem}}
    }));
    paths.insert("/v1/connection-requests/{id}/evidence".into(), json!({
        "parameters": id,
        "get": {"summary": "The kept evidence of every version filed (exact body in base64, covered fields, Signature-Input, Signature, keyid, signer certificate), verified again", "responses": {"200": {"description": "evidence"}, "404": problem}}
    }));
    paths.insert("/v1/connection-requests/{id}/resubmit".into(), json!({
        "parameters": id,
        "post": {"summary": format!("Resubmit a changed application after changes were requested (applicant). {signed} Optional query `reason`."), "requestBody": application,
                 "responses": {"200": {"description": "resubmitted"}, "401": problem, "403": problem, "404": problem, "409": problem, "422": problem}}
    }));
    for (t, who) in [
        (
            Transition::Review,
            "operator: take up a submitted or resubmitted request",
        ),
        (
            Transition::RequestChanges,
            "operator: ask the applicant for changes (reason required)",
        ),
        (
            Transition::Approve,
            "operator: approve; grants are made and wait for the providers",
        ),
        (Transition::Reject, "operator: refuse (reason required)"),
        (
            Transition::Confirm,
            "provider: confirm for your services; the last confirmation makes the grants active",
        ),
        (
            Transition::Suspend,
            "operator: suspend an active request; its grants are suspended at once (reason required)",
        ),
        (
            Transition::Resume,
            "operator: reinstate a suspended request",
        ),
        (
            Transition::Revoke,
            "operator: end the request; its grants are withdrawn at once (reason required)",
        ),
    ] {
        paths.insert(
            format!("/v1/connection-requests/{{id}}/{}", t.path_segment()),
            json!({"parameters": id, "post": {"summary": who, "requestBody": decision,
                "responses": {"200": {"description": "the request after the transition"}, "400": problem, "403": problem, "404": problem,
                              "409": {"description": "connect.illegal_transition (names the current state and the allowed transitions), connect.already_confirmed or connect.rules_refused", "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}}}}}),
        );
    }
    Value::Object(paths)
}
