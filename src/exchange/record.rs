//! What an exchange records: the [`Trace`] each phase fills as it goes, and
//! the audit record made from it once the answer is known. The ids the
//! exchange claimed as single-use ([`Claim`]) are settled with the record.
//!
//! Invariant: the record names everything the exchange got to — a refusal
//! half-way is recorded with the consumer, service, subjects and keys known
//! by then — and a claim dropped without a record settles as unrecorded, so
//! the replay store never waits for it.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::StatusCode;

use super::call::CallHeaders;
use super::error::ExchangeError;
use super::replay_store::{ReplayStore, Settled};
use crate::audit::{AuditRecord, Decision as AuditDecision};
use mconnect_sdk::trace::TraceContext;

/// What the audit record of one exchange collects along the way.
#[derive(Default)]
pub(super) struct Trace {
    pub(super) exchange_id: String,
    pub(super) received_at: Option<SystemTime>,
    pub(super) forwarded_at: Option<SystemTime>,
    /// How long the upstream call took (the provider leg), once made.
    pub(super) provider_elapsed: Option<Duration>,
    pub(super) consumer: Option<String>,
    pub(super) consumer_idno: Option<String>,
    pub(super) call: Option<CallHeaders>,
    pub(super) provider: Option<String>,
    pub(super) service: Option<String>,
    pub(super) service_version: Option<String>,
    pub(super) grant_id: Option<String>,
    pub(super) request_bytes: u64,
    pub(super) request_sha256: Option<String>,
    pub(super) keyids_checked: Vec<String>,
    pub(super) keyids_made: Vec<String>,
    /// The request body and retention when the service opts in to body storage.
    pub(super) store_bodies: Option<(Bytes, Duration)>,
    /// Every person the call asks about (header, id-typed query parameters,
    /// the catalog's body locations), each once.
    pub(super) subjects: Vec<String>,
    /// The single-use ids this exchange used up (listed in its record).
    pub(super) replay_ids: Vec<String>,
    /// Tells the replay store how the exchange ended, even if it is dropped.
    pub(super) claim: Option<Claim>,
    /// The exchange's W3C trace context, read from the request head before
    /// anything else (`None` only before that): the trace id it records and
    /// logs, the broker's span it forwards and answers with.
    pub(super) context: Option<TraceContext>,
}

/// Ids claimed by a running exchange; settles as unrecorded if dropped
/// before its audit record was made, so the store never waits forever.
pub(super) struct Claim {
    pub(super) store: Arc<dyn ReplayStore>,
    pub(super) client: String,
    pub(super) ids: Vec<String>,
    /// The broker's clock when the ids were claimed.
    pub(super) now: i64,
    pub(super) settled: bool,
}

impl Claim {
    /// Takes the claim back: nothing used its ids (see
    /// `ReplayStore::release`).
    pub(super) fn release(mut self) {
        self.store.release(&self.client, &self.ids);
        self.settled = true;
    }

    pub(super) fn settle(mut self, outcome: Settled) {
        self.store
            .settle(&self.client, &self.ids, outcome, self.now);
        self.settled = true;
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if !self.settled {
            self.store
                .settle(&self.client, &self.ids, Settled::Unrecorded, self.now);
        }
    }
}

impl Trace {
    /// The audit record of this exchange, answered with `status` and `body`.
    pub(super) fn record(
        &self,
        status: StatusCode,
        body: &[u8],
        problem: Option<&ExchangeError>,
        elapsed: Duration,
    ) -> AuditRecord {
        let call = self.call.as_ref();
        AuditRecord {
            exchange_id: self.exchange_id.clone(),
            request_id: call.map(|c| c.request_id.to_string()),
            event: "exchange".to_string(),
            received_at: rfc3339(self.received_at.unwrap_or_else(SystemTime::now)),
            forwarded_at: self.forwarded_at.map(rfc3339),
            answered_at: rfc3339(SystemTime::now()),
            consumer: self.consumer.clone(),
            consumer_idno: self.consumer_idno.clone(),
            calling_user: call.map(|c| c.calling_user.clone()),
            provider: self.provider.clone(),
            service: self.service.clone(),
            service_version: self.service_version.clone(),
            purpose: call.map(|c| c.reason.clone()),
            legal_basis: call.map(|c| c.basis.clone()),
            grant_id: self.grant_id.clone(),
            subject: call.and_then(|c| c.subject.clone()),
            subjects: self.subjects.clone(),
            represented_party: call.and_then(|c| c.represented_party.clone()),
            decision: if problem.is_none() {
                AuditDecision::Accepted
            } else {
                AuditDecision::Refused
            },
            problem_code: problem.map(|p| p.code().to_string()),
            http_status: status.as_u16(),
            request_bytes: self.request_bytes,
            request_sha256: self.request_sha256.clone(),
            response_bytes: body.len() as u64,
            response_sha256: Some(hex::encode(crate::crypto::sha256(body))),
            keyids_checked: self.keyids_checked.clone(),
            keyids_made: self.keyids_made.clone(),
            duration_us: elapsed.as_micros() as u64,
            refusal_count: None,
            replay_ids: self.replay_ids.clone(),
            trace_id: self.context.as_ref().map(TraceContext::trace_id),
        }
    }
}

/// A time as audit records carry it (RFC 3339 UTC, six fractional digits):
/// the audit log's own formatter, so every record has the one exact form the
/// log accepts.
pub fn rfc3339(t: SystemTime) -> String {
    crate::audit::format_timestamp(time::OffsetDateTime::from(t))
}
