//! Connection requests: from a signed application to an active grant
//! (DOMAIN.md, "The connection procedure"; Law 142/2018, GD 211/2019).
//!
//! An authority files an [`Application`] (schema
//! `policies/schema/application.schema.json`) as an RFC 9421-signed admin
//! request; the broker keeps the exact bytes and the signature as
//! [`Evidence`], the operator (AGE) reviews it within 30 days, may ask for
//! changes, approves or rejects it; once the provider of every requested
//! service confirms, the request is active and its grants are enforced. An
//! authority not yet on the bus applies with `applicant.registration` (its
//! system's certificate), filed by an intermediary ([`filer`]); approval
//! registers the system.
//!
//! ```text
//!  submit ─► submitted ─review─► under_review ─approve─► approved ─confirm (all providers)─► active
//!                                 │    ▲    └─reject─► rejected                              │  ▲
//!                    request_changes    review                                       suspend │  │ resume
//!                                 ▼    │                                                     ▼  │
//!                       changes_requested ─resubmit─► resubmitted                        suspended
//!  revoke: from every state but rejected and revoked, to revoked
//! ```
//!
//! Invariants:
//! - a request changes only through [`ConnectionRequest::apply`], which
//!   checks the actor's right and the state machine before touching
//!   anything; a refused transition leaves the request as it was;
//! - every transition appends one [`HistoryEntry`] (who, when, why) and
//!   history is never rewritten;
//! - evidence is append-only: each submission and resubmission adds its own
//!   signed bytes, and earlier versions stay re-verifiable;
//! - grants reach the policy index only while the request is active
//!   (status `active`), suspended (`suspended`) or revoked after being in
//!   force (`revoked`, which the index leaves out): an approved request
//!   whose providers have not all confirmed grants nothing yet;
//! - the request and its grant documents are written in one atomic store
//!   batch ([`persist`]), so the store never holds grants that disagree with
//!   the request's state.
//!
//! This module does no network I/O; the admin API (`admin/connect.rs`)
//! verifies signatures, writes, swaps the rules and audits.

pub mod application;
pub mod client;
pub mod evidence;
pub mod filer;
mod grants;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::registry::{Participant, Role};
use crate::store::{Collection, StateStore, Write};

pub use application::{Application, ApplicationProblem, validate_application};
pub use evidence::{Evidence, SignatureRefusal, verify_submission};
pub use filer::{Filer, FilerRefusal, may_file};
pub use grants::{RateLimitSpec, document_path, grant_values, stored_grant_documents};

/// How long the operator has to answer, from submission or resubmission
/// (GD 211/2019: 30 days).
pub const REVIEW_PERIOD_SECS: i64 = 30 * 86_400;

/// The state of a connection request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Filed and signed; waiting for the operator to take it up.
    Submitted,
    /// The operator is reviewing it.
    UnderReview,
    /// The operator asked the applicant for changes; the review clock stops.
    ChangesRequested,
    /// The applicant filed a changed, newly signed version.
    Resubmitted,
    /// Approved; waiting for the providers to confirm.
    Approved,
    /// Refused by the operator (final).
    Rejected,
    /// In force: its grants are active.
    Active,
    /// Temporarily not in force: its grants are suspended.
    Suspended,
    /// Ended (final): its grants behave as if never granted.
    Revoked,
}

impl State {
    /// Every state, in the order of the procedure.
    pub const ALL: [State; 9] = [
        State::Submitted,
        State::UnderReview,
        State::ChangesRequested,
        State::Resubmitted,
        State::Approved,
        State::Rejected,
        State::Active,
        State::Suspended,
        State::Revoked,
    ];

    /// The snake_case name used in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Submitted => "submitted",
            State::UnderReview => "under_review",
            State::ChangesRequested => "changes_requested",
            State::Resubmitted => "resubmitted",
            State::Approved => "approved",
            State::Rejected => "rejected",
            State::Active => "active",
            State::Suspended => "suspended",
            State::Revoked => "revoked",
        }
    }

    /// Parses the snake_case name.
    pub fn parse(text: &str) -> Option<State> {
        State::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// The transitions allowed from this state: the state machine in one
    /// table. `revoke` ends everything that is not already final.
    pub fn allowed(self) -> &'static [Transition] {
        use Transition as T;
        match self {
            State::Submitted | State::Resubmitted => &[T::Review, T::Revoke],
            State::UnderReview => &[T::RequestChanges, T::Approve, T::Reject, T::Revoke],
            State::ChangesRequested => &[T::Resubmit, T::Revoke],
            State::Approved => &[T::Confirm, T::Revoke],
            State::Active => &[T::Suspend, T::Revoke],
            State::Suspended => &[T::Resume, T::Revoke],
            State::Rejected | State::Revoked => &[],
        }
    }

    /// Whether the operator's 30-day clock runs in this state: it runs while
    /// the application waits on the operator, and stops while it waits on
    /// the applicant or once decided.
    pub fn awaits_operator(self) -> bool {
        matches!(
            self,
            State::Submitted | State::UnderReview | State::Resubmitted
        )
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A transition of the state machine (what an actor does).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transition {
    /// The applicant files the application (creates the request).
    Submit,
    /// The operator takes it up.
    Review,
    /// The operator asks for changes.
    RequestChanges,
    /// The applicant files a changed version.
    Resubmit,
    /// The operator approves.
    Approve,
    /// The operator refuses.
    Reject,
    /// A provider confirms for its services; the last one makes it active.
    Confirm,
    /// The operator suspends an active request.
    Suspend,
    /// The operator reinstates a suspended request.
    Resume,
    /// The operator ends the request.
    Revoke,
}

impl Transition {
    /// Every transition.
    pub const ALL: [Transition; 10] = [
        Transition::Submit,
        Transition::Review,
        Transition::RequestChanges,
        Transition::Resubmit,
        Transition::Approve,
        Transition::Reject,
        Transition::Confirm,
        Transition::Suspend,
        Transition::Resume,
        Transition::Revoke,
    ];

    /// The snake_case name used in history and audit records.
    pub fn as_str(self) -> &'static str {
        match self {
            Transition::Submit => "submit",
            Transition::Review => "review",
            Transition::RequestChanges => "request_changes",
            Transition::Resubmit => "resubmit",
            Transition::Approve => "approve",
            Transition::Reject => "reject",
            Transition::Confirm => "confirm",
            Transition::Suspend => "suspend",
            Transition::Resume => "resume",
            Transition::Revoke => "revoke",
        }
    }

    /// The kebab-case path segment of the admin API
    /// (`POST /v1/connection-requests/{id}/request-changes`).
    pub fn path_segment(self) -> &'static str {
        match self {
            Transition::RequestChanges => "request-changes",
            other => other.as_str(),
        }
    }

    /// The transition named by an admin API path segment.
    pub fn from_path_segment(segment: &str) -> Option<Transition> {
        Transition::ALL
            .into_iter()
            .find(|t| t.path_segment() == segment)
    }

    /// Who may perform it.
    pub fn performer(self) -> Performer {
        match self {
            Transition::Submit | Transition::Resubmit => Performer::Applicant,
            Transition::Confirm => Performer::Provider,
            _ => Performer::Operator,
        }
    }

    /// Whether a reason (the "why" of the history) is required: every
    /// decision against the applicant must say why.
    pub fn needs_reason(self) -> bool {
        matches!(
            self,
            Transition::RequestChanges
                | Transition::Reject
                | Transition::Suspend
                | Transition::Revoke
        )
    }
}

impl fmt::Display for Transition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who performs a transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Performer {
    /// The applicant organisation (a participant with the applicant's IDNO).
    Applicant,
    /// A participant with the operator role (AGE).
    Operator,
    /// The provider participant of a requested service.
    Provider,
}

/// Who did something, as history records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    /// Participant id (from its certificate).
    pub participant: String,
    /// Its organisation's IDNO.
    pub idno: String,
}

impl Actor {
    /// The actor a participant is.
    pub fn of(participant: &Participant) -> Actor {
        Actor {
            participant: participant.id.clone(),
            idno: participant.organisation.idno.clone(),
        }
    }
}

/// One transition as it happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// What was done.
    pub transition: Transition,
    /// The state before (`None` for the submission that created the request).
    pub from: Option<State>,
    /// The state after.
    pub to: State,
    /// Who did it.
    pub by: Actor,
    /// When (Unix seconds).
    pub at: i64,
    /// Why, in the actor's words.
    pub reason: Option<String>,
}

/// A provider's confirmation that it is ready to serve the applicant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confirmation {
    /// The provider participant's actor.
    pub by: Actor,
    /// When (Unix seconds).
    pub at: i64,
}

/// A connection request as the broker stores it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionRequest {
    /// Its id (`cr-2025-000001`); the origin of its grants.
    pub id: String,
    /// Current state.
    pub state: State,
    /// The current version of the application (the last one filed).
    pub application: Application,
    /// When it was first submitted (Unix seconds).
    pub submitted_at: i64,
    /// When the operator's 30-day clock last started: the last submission or
    /// resubmission (Unix seconds).
    pub clock_started_at: i64,
    /// Signed evidence of every version filed, oldest first.
    pub evidence: Vec<Evidence>,
    /// Every transition, oldest first.
    pub history: Vec<HistoryEntry>,
    /// Confirmations, by provider participant id.
    #[serde(default)]
    pub confirmations: BTreeMap<String, Confirmation>,
    /// The rate limit set on approval.
    #[serde(default)]
    pub rate_limit: Option<RateLimitSpec>,
    /// Ids of the grants made on approval (empty before).
    #[serde(default)]
    pub grants: Vec<String>,
}

/// What an actor asks of a request (the inputs of [`ConnectionRequest::apply`]).
#[derive(Debug, Clone)]
pub enum Act {
    /// A plain transition with an optional reason.
    Plain(Transition, Option<String>),
    /// An approval, optionally with the rate limit of the grants.
    Approve {
        /// Why.
        reason: Option<String>,
        /// The rate limit (default [`RateLimitSpec::DEFAULT`]).
        rate_limit: Option<RateLimitSpec>,
    },
    /// A resubmission with a new, signed version.
    Resubmit {
        /// The validated application.
        application: Box<Application>,
        /// Its signed evidence.
        evidence: Box<Evidence>,
        /// Why (what changed).
        reason: Option<String>,
    },
}

impl Act {
    /// The transition asked for.
    pub fn transition(&self) -> Transition {
        match self {
            Act::Plain(t, _) => *t,
            Act::Approve { .. } => Transition::Approve,
            Act::Resubmit { .. } => Transition::Resubmit,
        }
    }

    fn reason(&self) -> Option<&str> {
        match self {
            Act::Plain(_, reason) | Act::Approve { reason, .. } | Act::Resubmit { reason, .. } => {
                reason.as_deref()
            }
        }
    }
}

/// Why a connection-request operation was refused. Each variant knows its
/// HTTP status and stable code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectError {
    /// The transition is not allowed from the current state (409).
    #[error(
        "cannot {transition} connection request {id}: it is {state}; from {state} the allowed transitions are: {}",
        allowed_list(*state)
    )]
    IllegalTransition {
        /// The request.
        id: String,
        /// Its state.
        state: State,
        /// What was asked.
        transition: Transition,
    },
    /// The actor may not perform this transition (403).
    #[error("{0}")]
    Forbidden(String),
    /// A required reason is missing (400).
    #[error("{transition} needs a reason: send {{\"reason\": \"...\"}} saying why")]
    ReasonRequired {
        /// What was asked.
        transition: Transition,
    },
    /// The provider already confirmed (409).
    #[error("provider `{provider}` already confirmed connection request {id}")]
    AlreadyConfirmed {
        /// The request.
        id: String,
        /// The provider.
        provider: String,
    },
    /// A rate limit outside its bounds (400).
    #[error("{0}")]
    BadRateLimit(String),
    /// The store failed or holds something unreadable (500).
    #[error("connection requests store: {0}")]
    Store(String),
}

impl ConnectError {
    /// The HTTP status.
    pub fn status(&self) -> http::StatusCode {
        use http::StatusCode as S;
        match self {
            ConnectError::IllegalTransition { .. } | ConnectError::AlreadyConfirmed { .. } => {
                S::CONFLICT
            }
            ConnectError::Forbidden(_) => S::FORBIDDEN,
            ConnectError::ReasonRequired { .. } | ConnectError::BadRateLimit(_) => S::BAD_REQUEST,
            ConnectError::Store(_) => S::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable machine code.
    pub fn code(&self) -> &'static str {
        match self {
            ConnectError::IllegalTransition { .. } => "connect.illegal_transition",
            ConnectError::Forbidden(_) => "admin.forbidden",
            ConnectError::ReasonRequired { .. } => "connect.reason_required",
            ConnectError::AlreadyConfirmed { .. } => "connect.already_confirmed",
            ConnectError::BadRateLimit(_) => "request.malformed",
            ConnectError::Store(_) => "connect.store_failed",
        }
    }
}

fn allowed_list(state: State) -> String {
    let allowed = state.allowed();
    if allowed.is_empty() {
        "none (it is final)".into()
    } else {
        allowed
            .iter()
            .map(|t| t.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl ConnectionRequest {
    /// A new request from a validated, signed application (the `submit`
    /// transition).
    pub fn submitted(
        id: String,
        application: Application,
        evidence: Evidence,
        by: &Participant,
        now: i64,
    ) -> ConnectionRequest {
        ConnectionRequest {
            id,
            state: State::Submitted,
            application,
            submitted_at: now,
            clock_started_at: now,
            evidence: vec![evidence],
            history: vec![HistoryEntry {
                transition: Transition::Submit,
                from: None,
                to: State::Submitted,
                by: Actor::of(by),
                at: now,
                reason: None,
            }],
            confirmations: BTreeMap::new(),
            rate_limit: None,
            grants: Vec::new(),
        }
    }

    /// When the operator must have answered (Unix seconds).
    pub fn due_at(&self) -> i64 {
        self.clock_started_at.saturating_add(REVIEW_PERIOD_SECS)
    }

    /// Whether the 30-day deadline has passed with the application still
    /// waiting on the operator.
    pub fn overdue(&self, now: i64) -> bool {
        self.state.awaits_operator() && now > self.due_at()
    }

    /// The distinct providers of the requested services, which must all
    /// confirm before the request is active.
    pub fn providers(&self) -> BTreeSet<&str> {
        self.application
            .services
            .iter()
            .filter_map(|s| s.service.split_once('/').map(|(provider, _)| provider))
            .collect()
    }

    /// Whether `participant` may see this request: operators, the applicant
    /// organisation (and the intermediary that filed for it), and the
    /// providers it names.
    pub fn visible_to(&self, participant: &Participant) -> bool {
        participant.has_role(Role::Operator)
            || self.is_applicant(participant)
            || self.is_filer(participant)
            || self.providers().contains(participant.id.as_str())
    }

    /// The participant that filed the request (its first submission), which
    /// is the applicant or an intermediary that filed for it
    /// ([`filer::may_file`]).
    pub fn filer(&self) -> Option<&str> {
        self.history
            .first()
            .filter(|h| h.transition == Transition::Submit)
            .map(|h| h.by.participant.as_str())
    }

    /// Whether `participant` filed the request.
    pub fn is_filer(&self, participant: &Participant) -> bool {
        self.filer() == Some(participant.id.as_str())
    }

    /// Whether `participant` belongs to the applicant: the applicant system
    /// itself or another system of the applicant organisation.
    pub fn is_applicant(&self, participant: &Participant) -> bool {
        participant.id == self.application.applicant.system
            || participant.organisation.idno == self.application.applicant.idno
    }

    /// The transitions `participant` could perform now (for `show`).
    pub fn actions_for(&self, participant: &Participant) -> Vec<Transition> {
        self.state
            .allowed()
            .iter()
            .copied()
            .filter(|t| self.authorise(*t, participant).is_ok())
            .filter(|t| {
                *t != Transition::Confirm || !self.confirmations.contains_key(&participant.id)
            })
            .collect()
    }

    /// Checks that `participant` may perform `transition` on this request
    /// (whatever the state).
    pub fn authorise(
        &self,
        transition: Transition,
        participant: &Participant,
    ) -> Result<(), ConnectError> {
        let ok = match transition.performer() {
            Performer::Operator => participant.has_role(Role::Operator),
            Performer::Applicant => self.is_applicant(participant) || self.is_filer(participant),
            Performer::Provider => {
                participant.has_role(Role::Provider)
                    && self.providers().contains(participant.id.as_str())
            }
        };
        if ok {
            return Ok(());
        }
        Err(ConnectError::Forbidden(match transition.performer() {
            Performer::Operator => format!(
                "{transition} is an operator's decision; `{}` lacks the operator role",
                participant.id
            ),
            Performer::Applicant => format!(
                "only the applicant organisation (IDNO {}) may {transition}; `{}` is not part of it",
                self.application.applicant.idno, participant.id
            ),
            Performer::Provider => format!(
                "only the providers of the requested services ({}) confirm; `{}` is not one of them",
                self.providers().into_iter().collect::<Vec<_>>().join(", "),
                participant.id
            ),
        }))
    }

    /// Applies one act by `by` at `now`: checks the right, the state
    /// machine and the reason, then changes the request and records the
    /// transition. On `Err` nothing has changed.
    pub fn apply(&mut self, act: Act, by: &Participant, now: i64) -> Result<(), ConnectError> {
        let transition = act.transition();
        self.authorise(transition, by)?;
        if !self.state.allowed().contains(&transition) {
            return Err(ConnectError::IllegalTransition {
                id: self.id.clone(),
                state: self.state,
                transition,
            });
        }
        let reason = act
            .reason()
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .map(str::to_string);
        if transition.needs_reason() && reason.is_none() {
            return Err(ConnectError::ReasonRequired { transition });
        }
        let from = self.state;
        let to = match act {
            Act::Plain(Transition::Confirm, _) => {
                if self.confirmations.contains_key(&by.id) {
                    return Err(ConnectError::AlreadyConfirmed {
                        id: self.id.clone(),
                        provider: by.id.clone(),
                    });
                }
                self.confirmations.insert(
                    by.id.clone(),
                    Confirmation {
                        by: Actor::of(by),
                        at: now,
                    },
                );
                let all = self
                    .providers()
                    .iter()
                    .all(|p| self.confirmations.contains_key(*p));
                if all { State::Active } else { State::Approved }
            }
            Act::Approve { rate_limit, .. } => {
                let limit = rate_limit.unwrap_or(RateLimitSpec::DEFAULT);
                limit.check().map_err(ConnectError::BadRateLimit)?;
                self.rate_limit = Some(limit);
                self.grants = (1..=self.application.services.len())
                    .map(|n| format!("{}.{n}", self.id))
                    .collect();
                State::Approved
            }
            Act::Resubmit {
                application,
                evidence,
                ..
            } => {
                self.application = *application;
                self.evidence.push(*evidence);
                self.clock_started_at = now;
                State::Resubmitted
            }
            Act::Plain(Transition::Review, _) => State::UnderReview,
            Act::Plain(Transition::RequestChanges, _) => State::ChangesRequested,
            Act::Plain(Transition::Reject, _) => State::Rejected,
            Act::Plain(Transition::Suspend, _) => State::Suspended,
            Act::Plain(Transition::Resume, _) => State::Active,
            Act::Plain(Transition::Revoke, _) => State::Revoked,
            // Submit creates a request (see `submitted`) and is never in an
            // `allowed` list; approve and resubmit carry their own data.
            Act::Plain(
                t @ (Transition::Submit | Transition::Approve | Transition::Resubmit),
                _,
            ) => {
                return Err(ConnectError::IllegalTransition {
                    id: self.id.clone(),
                    state: self.state,
                    transition: t,
                });
            }
        };
        self.state = to;
        self.history.push(HistoryEntry {
            transition,
            from: Some(from),
            to,
            by: Actor::of(by),
            at: now,
            reason,
        });
        Ok(())
    }

    /// Whether the request's grants are (or were) in force, so they belong
    /// in the policy store.
    pub fn grants_in_store(&self) -> bool {
        match self.state {
            State::Active | State::Suspended => true,
            // Revoked grants stay listable, but only if they ever existed.
            State::Revoked => self.history.iter().any(|h| h.to == State::Active),
            _ => false,
        }
    }
}

/// Reads one request.
pub fn load(store: &dyn StateStore, id: &str) -> Result<Option<ConnectionRequest>, ConnectError> {
    let Some(bytes) = store
        .get(Collection::ConnectionRequests, id)
        .map_err(|e| ConnectError::Store(e.to_string()))?
    else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| ConnectError::Store(format!("stored request {id} is unreadable: {e}")))
}

/// Reads every request, by id.
pub fn load_all(store: &dyn StateStore) -> Result<Vec<ConnectionRequest>, ConnectError> {
    store
        .scan(Collection::ConnectionRequests)
        .map_err(|e| ConnectError::Store(e.to_string()))?
        .into_iter()
        .map(|(id, bytes)| {
            serde_json::from_slice(&bytes)
                .map_err(|e| ConnectError::Store(format!("stored request {id} is unreadable: {e}")))
        })
        .collect()
}

/// The next request id for `year`: `cr-{year}-{n:06}`, one more than the
/// highest id of that year in `existing`.
pub fn next_id<'a>(existing: impl IntoIterator<Item = &'a str>, year: i32) -> String {
    let prefix = format!("cr-{year}-");
    let highest = existing
        .into_iter()
        .filter_map(|id| id.strip_prefix(&prefix)?.parse::<u64>().ok())
        .max()
        .unwrap_or(0);
    format!("{prefix}{:06}", highest + 1)
}

/// What storing a request writes: the request and its grant documents, put
/// with the status the request's state gives them, or removed when the
/// request has none in the store. Built once, so that a change that also
/// registers a participant writes both in one batch
/// (`Registry::commit_with`).
pub struct RequestWrites {
    id: String,
    doc: Vec<u8>,
    grants: Vec<(String, Vec<u8>)>,
    removed: Vec<String>,
}

impl RequestWrites {
    /// The writes that store `request`.
    pub fn of(request: &ConnectionRequest) -> Result<RequestWrites, ConnectError> {
        let doc = serde_json::to_vec(request).map_err(|e| ConnectError::Store(e.to_string()))?;
        let grants: Vec<(String, Vec<u8>)> = if request.grants_in_store() {
            grant_values(request)
                .into_iter()
                .map(|(id, value)| Ok((id, serde_json::to_vec(&value)?)))
                .collect::<Result<_, serde_json::Error>>()
                .map_err(|e| ConnectError::Store(e.to_string()))?
        } else {
            Vec::new()
        };
        let removed = if grants.is_empty() {
            request.grants.clone()
        } else {
            Vec::new()
        };
        Ok(RequestWrites {
            id: request.id.clone(),
            doc,
            grants,
            removed,
        })
    }

    /// The store writes, borrowed.
    pub fn writes(&self) -> Vec<Write<'_>> {
        let mut writes = vec![Write::Put(
            Collection::ConnectionRequests,
            &self.id,
            &self.doc,
        )];
        for (id, bytes) in &self.grants {
            writes.push(Write::Put(Collection::Grants, id, bytes));
        }
        for id in &self.removed {
            writes.push(Write::Delete(Collection::Grants, id));
        }
        writes
    }
}

/// Writes a request and its grant documents in one atomic, durable batch
/// ([`RequestWrites`]).
pub fn persist(store: &dyn StateStore, request: &ConnectionRequest) -> Result<(), ConnectError> {
    store
        .apply(&RequestWrites::of(request)?.writes())
        .map_err(|e| ConnectError::Store(e.to_string()))
}

/// Restores a request exactly as it was before a change that the rules
/// refused (undoing [`persist`]); `None` removes a request that did not
/// exist. Grant ids never change after approval, so persisting the old
/// version puts back (or removes) exactly the grants the change touched.
pub fn restore(
    store: &dyn StateStore,
    id: &str,
    before: Option<&ConnectionRequest>,
) -> Result<(), ConnectError> {
    match before {
        Some(request) => persist(store, request),
        None => store
            .delete(Collection::ConnectionRequests, id)
            .map_err(|e| ConnectError::Store(e.to_string())),
    }
}
