//! The exchange: one consumer call, from an accepted mTLS connection to the
//! sealed answer. This is the one place where the phases are put in order;
//! each phase lives in its own module.
//!
//! ```text
//!  identify ─► read call ─► catalog ─► read body ─► verify ─► replay ─► authorise
//!  (cert →      (path,       (service   (limits)     (RFC 9421  (request  (policy,
//!  participant)  headers)     active)                 + digest)  id)       rate, MPower)
//!      ─► validate ─► route ─► check answer ─► minimise ─► audit ─► seal
//!         (request    (mTLS,    (provider sig,  (grant      (durable  (receipt)
//!          schema)     timeout)  schema)         fields)     record)
//! ```
//!
//! Architecture invariants:
//! - every call, accepted or refused, produces exactly one audit record, and
//!   the answer leaves only after that record is durable; if it cannot be made
//!   durable the consumer gets 503 `audit.unavailable` instead (fail closed);
//! - identification and signature checks come before anything that costs the
//!   provider or reveals whether data exists;
//! - the replay store is touched only by authenticated requests, so a stranger
//!   cannot burn another client's request ids; the ids an exchange used up are
//!   listed in its audit record, which is durable before the answer leaves,
//!   so they stay used up across restarts (see `replay_store`);
//! - nothing from the consumer's request reaches the provider except the
//!   method, subpath, query, body and the protocol headers: the forwarded
//!   request is built from a whitelist, which is the hop-by-hop hygiene.

pub mod call;
pub mod error;
pub mod internal;
pub mod refusals;
pub mod replay_store;
mod represent;
pub mod route;
pub mod seal;
pub mod verify;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};

use crate::audit::{AuditLog, AuditRecord, Decision as AuditDecision};
use crate::catalog::Service;
use crate::config::Limits;
use crate::httpsig::{self, MessageView, RequestView, SignatureParams};
use crate::policy::{Decision, DecisionRequest, RateLimiter};
use crate::registry::{ParticipantEntry, Registry};
use crate::rules::LiveRules;
pub use crate::rules::Rules;
use call::{CallHeaders, Route, headers, labels};
use error::{ErrorKind, ExchangeError};
use replay_store::{EmbeddedReplayStore, ReplayRefusal, ReplayStore, Settled};
use route::ProviderClient;

pub use mconnect_sdk::protocol::unix_now;
pub use mconnect_sdk::server::Peer;
use seal::{Answer, Sealer};

/// Everything one broker needs to run exchanges.
pub struct Broker {
    registry: Arc<Registry>,
    rules: LiveRules,
    rate: RateLimiter,
    replay: Arc<dyn ReplayStore>,
    /// Seconds added to the system clock (see [`Broker::shift_clock`]).
    clock_shift: std::sync::atomic::AtomicI64,
    audit: AuditLog,
    providers: ProviderClient,
    sealer: Sealer,
    limits: Limits,
    /// The base URL clients address and sign `@target-uri` for: configured,
    /// or `https://{bound address}` once the data listener is bound.
    public_data_url: std::sync::OnceLock<String>,
    default_timeout: Duration,
    refusals: refusals::Refusals,
}

/// The parts a broker is made of.
pub struct BrokerParts {
    /// The participant registry.
    pub registry: Arc<Registry>,
    /// Catalog and policies.
    pub rules: Rules,
    /// The audit log.
    pub audit: AuditLog,
    /// The client towards providers.
    pub providers: ProviderClient,
    /// The broker's signing identity.
    pub sealer: Sealer,
    /// Limits.
    pub limits: Limits,
    /// The public base URL clients address, when it differs from the Host they send.
    pub public_data_url: Option<String>,
    /// Timeout for services whose catalog entry names none.
    pub default_timeout: Duration,
}

/// What the audit record of one exchange collects along the way.
#[derive(Default)]
struct Trace {
    exchange_id: String,
    received_at: Option<SystemTime>,
    forwarded_at: Option<SystemTime>,
    consumer: Option<String>,
    consumer_idno: Option<String>,
    call: Option<CallHeaders>,
    provider: Option<String>,
    service: Option<String>,
    service_version: Option<String>,
    grant_id: Option<String>,
    request_bytes: u64,
    request_sha256: Option<String>,
    keyids_checked: Vec<String>,
    keyids_made: Vec<String>,
    /// The request body and retention when the service opts in to body storage.
    store_bodies: Option<(Bytes, Duration)>,
    /// Every person the call asks about (header, id-typed query parameters,
    /// the catalog's body locations), each once.
    subjects: Vec<String>,
    /// The single-use ids this exchange used up (listed in its record).
    replay_ids: Vec<String>,
    /// Tells the replay store how the exchange ended, even if it is dropped.
    claim: Option<Claim>,
}

/// Ids claimed by a running exchange; settles as unrecorded if dropped
/// before its audit record was made, so the store never waits forever.
struct Claim {
    store: Arc<dyn ReplayStore>,
    client: String,
    ids: Vec<String>,
    /// The broker's clock when the ids were claimed.
    now: i64,
    settled: bool,
}

impl Claim {
    fn settle(mut self, outcome: Settled) {
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

/// A successful exchange's answer before sealing.
struct Delivered {
    status: StatusCode,
    body: Bytes,
    content_type: String,
}

impl Broker {
    /// Assembles a broker.
    pub fn new(parts: BrokerParts) -> Broker {
        Broker {
            registry: parts.registry,
            rules: LiveRules::new(parts.rules),
            rate: RateLimiter::new(),
            replay: Arc::new(EmbeddedReplayStore::new(
                parts.audit.clone(),
                parts.limits.replay_capacity,
            )),
            clock_shift: std::sync::atomic::AtomicI64::new(0),
            audit: parts.audit,
            refusals: refusals::Refusals::new(
                std::num::NonZeroU32::new(parts.limits.refusals_per_second)
                    .unwrap_or(std::num::NonZeroU32::MIN),
                std::num::NonZeroU32::new(parts.limits.refusals_burst)
                    .unwrap_or(std::num::NonZeroU32::MIN),
            ),
            providers: parts.providers,
            sealer: parts.sealer,
            limits: parts.limits,
            public_data_url: parts
                .public_data_url
                .map(std::sync::OnceLock::from)
                .unwrap_or_default(),
            default_timeout: parts.default_timeout,
        }
    }

    /// The participant registry.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// The audit log.
    pub fn audit(&self) -> &AuditLog {
        &self.audit
    }

    /// The current catalog and policies.
    pub fn rules(&self) -> Arc<Rules> {
        self.rules.current()
    }

    /// The rules in force and their writers' lock: every change to the
    /// rules loads and swaps through [`LiveRules::writer`].
    pub fn live_rules(&self) -> &LiveRules {
        &self.rules
    }

    /// The broker's signer (for the admin API's signed answers).
    pub fn sealer(&self) -> &Sealer {
        &self.sealer
    }

    /// The refusal budget and the aggregates over it (flushed by the maintenance task).
    pub fn refusals(&self) -> &refusals::Refusals {
        &self.refusals
    }

    /// Moves the broker's data-plane clock (signature window, replay window,
    /// grant dates, rate limits; not the receipts' `created`) `secs` further from the system
    /// clock. For tests that need hours to pass through the real broker; a
    /// broker in service never calls it.
    pub fn shift_clock(&self, secs: i64) {
        self.clock_shift
            .fetch_add(secs, std::sync::atomic::Ordering::Relaxed);
    }

    /// The data plane's clock: unix seconds.
    fn now(&self) -> i64 {
        unix_now() + self.clock_shift.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The rate limiter (the admin API evicts idle keys periodically).
    pub fn rate_limiter(&self) -> &RateLimiter {
        &self.rate
    }

    /// Runs one exchange. Never fails: every refusal is a signed problem+json answer.
    pub async fn handle<B>(&self, peer: &Peer, request: Request<B>) -> Response<Full<Bytes>>
    where
        B: http_body::Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let mut trace = Trace {
            exchange_id: uuid::Uuid::now_v7().to_string(),
            received_at: Some(SystemTime::now()),
            ..Trace::default()
        };
        let started = std::time::Instant::now();
        // No new work while the audit log cannot take it (failed closed, or its
        // filesystem below the watermark): refused at once, counted in the
        // refusal aggregates (see `refusals`), no seq.
        if !self.audit.accepts_work() {
            let refusal = ExchangeError::new(
                ErrorKind::AuditUnavailable,
                "the audit log cannot take new exchanges now (its disk is full or failing); try again later",
            );
            self.refusals.count(
                peer,
                &self.registry,
                refusal.code(),
                refusal.status().as_u16(),
            );
            return self.seal_unrecorded(&trace, None, &refusal);
        }
        let outcome = self.exchange(&mut trace, peer, request).await;
        let (status, body, content_type, problem) = match outcome {
            Ok(d) => (d.status, d.body, d.content_type, None),
            Err(e) => (
                e.status(),
                Bytes::from(e.to_problem_json(Some(&trace.exchange_id))),
                "application/problem+json".to_string(),
                Some(e),
            ),
        };
        trace.keyids_made.push(self.sealer.keyid().to_string());
        let record = trace.record(status, &body, problem.as_ref(), started.elapsed());
        let request_id = trace.call.as_ref().map(|c| c.request_id.to_string());
        let now = unix_now();
        // Over its client's refusal budget: answered, counted in the aggregate
        // of its (certificate, code, second), no record of its own, no seq.
        if let Some(p) = &problem
            && self
                .refusals
                .over_budget(peer, &self.registry, p.code(), status.as_u16())
        {
            return self.seal_unrecorded(&trace, request_id.as_deref(), p);
        }
        // Bodies are kept only for a delivered answer of a service that opted
        // in, and only after the record is durable (`append_with_bodies`).
        let appended = match trace.store_bodies.take().filter(|_| problem.is_none()) {
            Some((request, retention)) => {
                let bodies = crate::audit::ExchangeBodies {
                    request: request.to_vec(),
                    response: body.to_vec(),
                    retention,
                };
                self.audit.append_with_bodies(record, bodies).await
            }
            None => self.audit.append(record).await,
        };
        if let Some(claim) = trace.claim.take() {
            claim.settle(match &appended {
                Ok(seq) => Settled::Recorded(*seq),
                Err(_) => Settled::Unrecorded,
            });
        }
        match appended {
            Ok(seq) => self.sealer.seal(
                Answer {
                    status,
                    body,
                    content_type: &content_type,
                    exchange_id: &trace.exchange_id,
                    request_id: request_id.as_deref(),
                    audit_seq: Some(seq),
                    retry_after_secs: problem.as_ref().and_then(|p| p.retry_after_secs()),
                },
                now,
            ),
            Err(e) => {
                tracing::error!(exchange_id = %trace.exchange_id, error = %e, "audit record not durable; refusing the exchange");
                let refusal = ExchangeError::new(
                    ErrorKind::AuditUnavailable,
                    "the exchange could not be recorded in the audit log and was not delivered; try again later",
                );
                self.seal_unrecorded(&trace, request_id.as_deref(), &refusal)
            }
        }
    }

    /// Seals a refusal that has no audit record of its own (counted in a
    /// refusal aggregate, or refused because no record could be made): the
    /// answer carries no `MConnect-Audit-Seq`.
    fn seal_unrecorded(
        &self,
        trace: &Trace,
        request_id: Option<&str>,
        refusal: &ExchangeError,
    ) -> Response<Full<Bytes>> {
        self.sealer.seal(
            Answer {
                status: refusal.status(),
                body: Bytes::from(refusal.to_problem_json(Some(&trace.exchange_id))),
                content_type: "application/problem+json",
                exchange_id: &trace.exchange_id,
                request_id,
                audit_seq: None,
                retry_after_secs: refusal.retry_after_secs(),
            },
            unix_now(),
        )
    }

    async fn exchange<B>(
        &self,
        trace: &mut Trace,
        peer: &Peer,
        request: Request<B>,
    ) -> Result<Delivered, ExchangeError>
    where
        B: http_body::Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (head, body) = request.into_parts();

        // Identify: the certificate names the participant; the header must agree.
        let registry = self.registry.snapshot();
        let consumer = identify(&registry, peer, &head.headers, unix_now())?;
        trace.consumer = Some(consumer.participant.id.clone());
        trace.consumer_idno = Some(consumer.participant.organisation.idno.clone());

        // Read the call: path and protocol headers, for form only.
        let route = call::parse_route(head.uri.path(), head.uri.query())?;
        trace.provider = Some(route.provider.to_string());
        trace.service = Some(format!("{}/{}", route.provider, route.code));
        let call = CallHeaders::parse(&head.headers)?;
        trace.call = Some(call.clone());

        // Catalog: the service must exist and be callable with this method.
        let rules = self.rules.current();
        let service = rules
            .catalog
            .service(route.provider, route.code)
            .filter(|s| s.is_callable())
            .ok_or_else(|| {
                ExchangeError::new(
                    ErrorKind::UnknownService,
                    format!(
                        "no active service {}/{} in the catalog; see GET /v1/services on the admin API",
                        route.provider, route.code
                    ),
                )
            })?
            .clone();
        trace.service_version = Some(service.version.clone());
        if head.method != service.method {
            return Err(ExchangeError::new(
                ErrorKind::Malformed,
                format!("service {} is called with {}", service.key, service.method),
            ));
        }

        // Body: bounded by the service's and the broker's limit.
        let limit = service.body_limit.min(self.limits.max_body_bytes);
        let body = read_body(&head.headers, body, limit).await?;
        trace.request_bytes = body.len() as u64;
        trace.request_sha256 = Some(hex::encode(crate::crypto::sha256(&body)));
        trace.store_bodies = service.store_bodies.map(|s| (body.clone(), s.retention()));

        // Verify: signature by a key of this participant, window, digest.
        let target_uri = self.target_uri(&head)?;
        let now = self.now();
        let verified = verify::verify_request(
            &verify::SignedRequest {
                method: head.method.as_str(),
                target_uri: &target_uri,
                headers: &head.headers,
                body: &body,
            },
            &consumer,
            now,
            self.limits.created_skew.as_secs() as i64,
        )?;
        trace.keyids_checked.push(verified.keyid.clone());

        // Replay: only now, so that unauthenticated requests cannot burn ids.
        self.check_replay(trace, &call, &verified, now)?;

        // Bind: the typed query, the body parsed once, and the people the
        // call asks about; MConnect-Subject must be one of them.
        let query = crate::catalog::params::parse_query(route.query, &service.query)
            .map_err(|p| ExchangeError::new(ErrorKind::Malformed, p.0))?;
        let body_value = self.body_value(&service, &body)?;
        bind_subjects(trace, &call, &service, &query, body_value.as_ref())?;

        // Authorise: grant, purpose, basis, subject, rate; then representation.
        let grant = match rules.policy.decide(
            &DecisionRequest {
                consumer: &consumer.participant.id,
                service: &service,
                basis: &call.basis,
                reason: &call.reason,
                subject_present: call.subject.is_some(),
            },
            now,
        ) {
            Decision::Allow(grant) => grant,
            Decision::Deny(denial) => {
                trace.grant_id = denial.grant.map(|g| g.id.clone());
                return Err(ExchangeError::new(
                    denial_kind(denial.code.code()),
                    format!(
                        "{} (service {}, basis `{}`, reason `{}`)",
                        denial.rule, service.key, call.basis, call.reason
                    ),
                ));
            }
        };
        trace.grant_id = Some(grant.id.clone());
        if let Err(limited) = self.rate.check(grant, &service.key, now) {
            return Err(ExchangeError::rate_limited(
                limited.retry_after,
                format!(
                    "grant {} allows no more calls to {} now; retry later",
                    grant.id, service.key
                ),
            ));
        }
        // Representation: MPower must confirm the calling user's authorisation
        // of the grant's type from the represented party (fail closed).
        if let Some(party) = represent::party_to_confirm(grant, &call)? {
            let keyid = self
                .confirm_representation(
                    trace,
                    &head,
                    &call,
                    grant,
                    party,
                    &registry,
                    &rules.catalog,
                )
                .await?;
            trace.keyids_checked.push(keyid);
        }

        // Validate the request body against the service's schema.
        if let Some(value) = &body_value {
            service
                .validate_request(value)
                .map_err(|v| ExchangeError::new(ErrorKind::RequestSchemaInvalid, v.to_string()))?;
        }

        // Route: the broker's own services (provider `mconnect`) are answered
        // here from the audit log; everything else is forwarded over mTLS,
        // signed by the broker.
        if route.provider == internal::PROVIDER {
            let own = internal::InternalCall {
                query: route.query,
                subject: call.subject.as_deref(),
            };
            return internal::answer(
                &self.audit,
                &registry,
                &rules.catalog,
                &service,
                grant,
                &own,
            )
            .await;
        }
        // Forward over mTLS, signed by the broker.
        let provider = registry.get(route.provider).ok_or_else(|| {
            ExchangeError::new(
                ErrorKind::ProviderUnavailable,
                format!("provider `{}` is not registered", route.provider),
            )
        })?;
        let forward =
            self.forward_request(trace, &head, &route, &service, &call, provider, body)?;
        trace.forwarded_at = Some(SystemTime::now());
        let timeout = if service.timeout.is_zero() {
            self.default_timeout
        } else {
            service.timeout
        };
        let answer = self
            .providers
            .send(forward, timeout, self.limits.max_response_bytes)
            .await?;

        // Check the answer: provider signature, then schema, then minimise.
        let provider_keyid = check_provider_answer(&answer, provider, &trace.exchange_id)?;
        trace.keyids_checked.push(provider_keyid);
        deliver(answer, &service, grant, self.limits.max_json_values)
    }

    /// The request body as JSON, parsed strictly: a service without a request
    /// schema takes no body, and one with a schema needs one.
    fn body_value(
        &self,
        service: &Service,
        body: &Bytes,
    ) -> Result<Option<serde_json::Value>, ExchangeError> {
        match (service.accepts_body(), body.is_empty()) {
            (false, false) => Err(ExchangeError::new(
                ErrorKind::RequestSchemaInvalid,
                format!("service {} takes no request body", service.key),
            )),
            (true, true) => Err(ExchangeError::new(
                ErrorKind::RequestSchemaInvalid,
                format!(
                    "service {} needs a JSON body matching its request schema (GET /v1/services on the admin API)",
                    service.key
                ),
            )),
            (true, false) => crate::json::parse(body, self.limits.max_json_values)
                .map(Some)
                .map_err(|e| {
                    ExchangeError::new(
                        ErrorKind::RequestSchemaInvalid,
                        format!("body is not acceptable JSON: {e}"),
                    )
                }),
            (false, true) => Ok(None),
        }
    }

    fn check_replay(
        &self,
        trace: &mut Trace,
        call: &CallHeaders,
        verified: &verify::VerifiedSignature,
        now: i64,
    ) -> Result<(), ExchangeError> {
        let mut ids = vec![replay_store::replay_id_of_request(&call.request_id)];
        if let Some(nonce) = &verified.nonce {
            // A signature nonce is honoured as a second single-use id.
            ids.push(replay_store::replay_id_of_nonce(nonce));
        }
        match self.replay.claim(&call.client, &ids, now) {
            Ok(()) => {
                trace.replay_ids = ids.clone();
                trace.claim = Some(Claim {
                    store: self.replay.clone(),
                    client: call.client.clone(),
                    ids,
                    now,
                    settled: false,
                });
                Ok(())
            }
            Err(ReplayRefusal::Replayed) => Err(ExchangeError::new(
                ErrorKind::Replayed,
                format!(
                    "request id {} (or signature nonce) was already used by `{}` in the last 24 hours; use a fresh UUID per request",
                    call.request_id, call.client
                ),
            )),
            Err(ReplayRefusal::Unavailable(why)) => {
                tracing::warn!(reason = %why, "replay check cannot answer; refusing the exchange");
                Err(ExchangeError::new(
                    ErrorKind::AuditUnavailable,
                    "the broker cannot check this request id against the ones already used; try again later",
                ))
            }
        }
    }

    /// Sets the public base URL when the configuration named none; the first
    /// value set stays (called once the data listener is bound).
    pub fn default_public_data_url(&self, url: String) {
        let _ = self.public_data_url.set(url);
    }

    /// The public base URL clients sign `@target-uri` for.
    pub fn public_data_url(&self) -> Option<&str> {
        self.public_data_url.get().map(String::as_str)
    }

    /// The absolute URI the client addressed, as its signature must cover it:
    /// always the broker's own public authority, never the `Host` the client
    /// sent, so a request signed for another host does not verify here.
    fn target_uri(&self, head: &http::request::Parts) -> Result<String, ExchangeError> {
        let path_and_query = head.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let base = self.public_data_url.get().ok_or_else(|| {
            ExchangeError::new(
                ErrorKind::Internal,
                "the broker's public data URL is not known yet",
            )
        })?;
        Ok(format!("{base}{path_and_query}"))
    }

    #[allow(clippy::too_many_arguments)]
    fn forward_request(
        &self,
        trace: &mut Trace,
        head: &http::request::Parts,
        route: &Route<'_>,
        service: &Service,
        call: &CallHeaders,
        provider: &ParticipantEntry,
        body: Bytes,
    ) -> Result<Request<Full<Bytes>>, ExchangeError> {
        let base = provider
            .participant
            .endpoint_for(route.code)
            .ok_or_else(|| {
                ExchangeError::new(
                    ErrorKind::ProviderUnavailable,
                    format!("provider `{}` has registered no endpoint", route.provider),
                )
            })?;
        let mut url = format!("{base}{}{}", service.path, route.subpath);
        if let Some(q) = route.query {
            url.push('?');
            url.push_str(q);
        }
        let mut h = HeaderMap::new();
        for name in [
            headers::CLIENT,
            headers::CALLING_USER,
            headers::CALL_BASIS,
            headers::CALL_REASON,
            headers::SUBJECT,
            headers::REPRESENTED_PARTY,
            headers::REQUEST_ID,
            http::header::CONTENT_TYPE.as_str(),
            http::header::ACCEPT.as_str(),
        ] {
            if let Some(v) = head.headers.get(name) {
                h.insert(name, v.clone());
            }
        }
        h.insert(
            headers::EXCHANGE_ID,
            HeaderValue::from_str(&trace.exchange_id)
                .map_err(|_| ExchangeError::new(ErrorKind::Internal, "exchange id unusable"))?,
        );
        let mut covered = vec![
            "@method",
            "@target-uri",
            headers::CLIENT,
            headers::CALLING_USER,
            headers::CALL_BASIS,
            headers::CALL_REASON,
            headers::REQUEST_ID,
            headers::EXCHANGE_ID,
        ];
        if call.subject.is_some() {
            covered.push(headers::SUBJECT);
        }
        if call.represented_party.is_some() {
            covered.push(headers::REPRESENTED_PARTY);
        }
        if !body.is_empty() {
            h.insert(
                headers::CONTENT_DIGEST,
                httpsig::digest::content_digest_header(&body),
            );
            covered.push(headers::CONTENT_DIGEST);
        }
        let mut params = SignatureParams::new(&covered);
        params.created = Some(unix_now());
        params.keyid = Some(self.sealer.keyid().to_string());
        params.alg = Some(self.sealer.key().algorithm().as_str().to_string());
        let sig = httpsig::sign(
            &MessageView::Request(RequestView {
                method: head.method.as_str(),
                target_uri: &url,
                headers: &h,
            }),
            labels::REQUEST,
            &params,
            self.sealer.key(),
        )
        .map_err(|e| {
            ExchangeError::new(
                ErrorKind::Internal,
                format!("signing the forwarded request failed: {e}"),
            )
        })?;
        httpsig::attach(&mut h, sig);
        trace.keyids_made.push(self.sealer.keyid().to_string());
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = head.method.clone();
        *request.uri_mut() = url.parse().map_err(|_| {
            ExchangeError::new(
                ErrorKind::ProviderUnavailable,
                format!("provider endpoint URL {url} is not a valid URI"),
            )
        })?;
        *request.headers_mut() = h;
        Ok(request)
    }
}

/// Collects the people a call asks about into the trace and checks that
/// `MConnect-Subject`, when given, is one of them (PROTOCOL.md section 2).
fn bind_subjects(
    trace: &mut Trace,
    call: &CallHeaders,
    service: &Service,
    query: &[crate::catalog::params::QueryValue<'_>],
    body: Option<&serde_json::Value>,
) -> Result<(), ExchangeError> {
    let found = service.subjects_of(query, body).map_err(|p| {
        ExchangeError::new(
            ErrorKind::Malformed,
            format!(
                "body field {} must be an IDNP or IDNO (13 digits with a valid control digit)",
                p.pointer
            ),
        )
    })?;
    trace.subjects = call.subject.iter().cloned().collect();
    for id in found.ids {
        if !trace.subjects.contains(&id) {
            trace.subjects.push(id);
        }
    }
    if let (Some(header), Some(bound)) = (call.subject.as_deref(), found.bound.as_ref())
        && !bound.iter().any(|id| id == header)
    {
        return Err(ExchangeError::new(
            ErrorKind::SubjectMismatch,
            format!(
                "MConnect-Subject {header} is not the person this call asks about; for {} it must be {}",
                service.key,
                describe_locations(service)
            ),
        ));
    }
    Ok(())
}

/// Where a service's request names its subject, for refusals.
fn describe_locations(service: &Service) -> String {
    use crate::catalog::params::SubjectLocation;
    let named: Vec<String> = if service.subject_ids.is_empty() {
        service
            .query
            .iter()
            .filter(|q| q.format.is_person_id())
            .map(|q| format!("the `{}` query parameter", q.name))
            .collect()
    } else {
        service
            .subject_ids
            .iter()
            .map(|l| match l {
                SubjectLocation::Query(name) => format!("the `{name}` query parameter"),
                SubjectLocation::Body(pointer) => format!("an id at {pointer} in the body"),
            })
            .collect()
    };
    format!("the id given as {}", named.join(" or "))
}

/// Maps the policy's refusal code onto the exchange error kind.
fn denial_kind(code: &str) -> ErrorKind {
    match code {
        "policy.purpose_not_allowed" => ErrorKind::PurposeNotAllowed,
        "policy.basis_not_allowed" => ErrorKind::BasisNotAllowed,
        "policy.grant_expired" => ErrorKind::GrantExpired,
        "policy.grant_suspended" => ErrorKind::GrantSuspended,
        "policy.subject_required" => ErrorKind::SubjectRequired,
        _ => ErrorKind::PolicyDenied,
    }
}

/// Certificate → participant, and the `MConnect-Client` header must name the
/// same one. The certificate's dates are checked again here, at `now`: the
/// handshake checked them, but a kept-alive connection can outlive them.
fn identify(
    registry: &crate::registry::RegistrySnapshot,
    peer: &Peer,
    headers: &HeaderMap,
    now: i64,
) -> Result<Arc<ParticipantEntry>, ExchangeError> {
    let claimed = CallHeaders::client(headers)?;
    let fingerprint = peer.fingerprint.as_deref().ok_or_else(|| {
        ExchangeError::new(
            ErrorKind::ClientUnknown,
            "present your participant certificate",
        )
    })?;
    let owner = registry.by_fingerprint(fingerprint).ok_or_else(|| {
        ExchangeError::new(
            ErrorKind::ClientUnknown,
            format!("certificate {fingerprint} is not registered to any participant"),
        )
    })?;
    if owner.participant.id != claimed {
        return Err(match registry.get(claimed) {
            Some(_) => ExchangeError::new(
                ErrorKind::CertificateMismatch,
                format!(
                    "the TLS certificate belongs to `{}`, not to `{claimed}` named in MConnect-Client",
                    owner.participant.id
                ),
            ),
            None => ExchangeError::new(
                ErrorKind::ClientUnknown,
                format!("no participant `{claimed}` is registered"),
            ),
        });
    }
    owner.certificate_at(fingerprint, now).map_err(|refusal| {
        ExchangeError::new(
            ErrorKind::ClientUnknown,
            format!("the TLS client certificate identifies no one: {refusal}"),
        )
    })?;
    Ok(owner.clone())
}

async fn read_body<B>(headers: &HeaderMap, body: B, limit: usize) -> Result<Bytes, ExchangeError>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let too_large = || {
        ExchangeError::new(
            ErrorKind::TooLarge,
            format!("the body exceeds this service's limit of {limit} bytes"),
        )
    };
    if let Some(len) = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && len > limit as u64
    {
        return Err(too_large());
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(e) => Err(ExchangeError::new(
            ErrorKind::Malformed,
            format!("request body unreadable: {e}"),
        )),
    }
}

/// Checks the provider's `mconnect-provider` signature and digest; returns the keyid used.
fn check_provider_answer(
    answer: &route::ProviderAnswer,
    provider: &ParticipantEntry,
    exchange_id: &str,
) -> Result<String, ExchangeError> {
    let bad = |detail: String| ExchangeError::new(ErrorKind::ProviderSignatureInvalid, detail);
    let h = &answer.head.headers;
    // The answer must belong to this exchange before its signature matters.
    if h.get(headers::EXCHANGE_ID).and_then(|v| v.to_str().ok()) != Some(exchange_id) {
        return Err(bad("provider answer names another exchange id".into()));
    }
    // A key whose certificate expired, was removed or no longer chains
    // signs nothing; the refusal is kept to say so instead of "untrusted".
    let now = unix_now();
    let refused = std::cell::RefCell::new(None);
    mconnect_sdk::verify_signed_response(
        answer.head.status,
        h,
        &answer.body,
        labels::PROVIDER,
        &[],
        |keyid| match provider.key_at(keyid, now) {
            Ok(key) => Some(key),
            Err(refusal) => {
                *refused.borrow_mut() = Some(refusal);
                None
            }
        },
    )
    .map_err(|e| match refused.take() {
        Some(refusal) => bad(format!(
            "provider answer signed by a key that signs nothing: {refusal}"
        )),
        None => bad(format!(
            "provider `{}` answer unusable: {e}",
            provider.participant.id
        )),
    })
}

/// Turns a verified provider answer into what the consumer may see: a
/// success is schema-checked and minimised to the grant's fields; an error
/// (any non-2xx) must be problem+json and is cut to the problem members
/// (PROTOCOL.md section 4), so an error body cannot carry data the grant does
/// not allow. Anything else is 502 `provider.bad_response`, body dropped.
fn deliver(
    answer: route::ProviderAnswer,
    service: &Service,
    grant: &crate::policy::Grant,
    max_json_values: usize,
) -> Result<Delivered, ExchangeError> {
    let status = answer.head.status;
    let media_type = answer
        .head
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default();
    let bad = |detail: String| ExchangeError::new(ErrorKind::ProviderBadResponse, detail);
    if !status.is_success() {
        return problem_answer(status, &media_type, &answer.body, max_json_values);
    }
    if status == StatusCode::NO_CONTENT {
        if !answer.body.is_empty() {
            return Err(bad("provider answered 204 with a body".into()));
        }
        return Ok(Delivered {
            status,
            body: answer.body,
            content_type: "application/json".to_string(),
        });
    }
    if media_type != "application/json" {
        return Err(bad(format!(
            "provider answered {status} as {media_type:?}; services on this bus answer application/json"
        )));
    }
    let mut value = crate::json::parse(&answer.body, max_json_values)
        .map_err(|e| bad(format!("provider answer is not acceptable JSON: {e}")))?;
    service
        .validate_response(&value)
        .map_err(|v| ExchangeError::new(ErrorKind::ResponseSchemaInvalid, v.to_string()))?;
    crate::policy::minimise(&mut value, grant.fields_for(&service.key));
    let body = serde_json::to_vec(&value)
        .map_err(|e| ExchangeError::new(ErrorKind::Internal, format!("re-encoding failed: {e}")))?;
    Ok(Delivered {
        status,
        body: Bytes::from(body),
        content_type: "application/json".to_string(),
    })
}

/// Largest problem member a provider may send (a `detail` is a sentence, not a record).
const MAX_PROBLEM_MEMBER: usize = 1024;

/// A provider's error answer cut to the RFC 9457 members the protocol passes on.
fn problem_answer(
    status: StatusCode,
    media_type: &str,
    body: &[u8],
    max_json_values: usize,
) -> Result<Delivered, ExchangeError> {
    let bad = |detail: String| ExchangeError::new(ErrorKind::ProviderBadResponse, detail);
    if !(status.is_client_error() || status.is_server_error()) {
        return Err(bad(format!(
            "provider answered {status}; only 2xx answers and 4xx/5xx problems pass"
        )));
    }
    if media_type != "application/problem+json" {
        return Err(bad(format!(
            "provider answered {status} as {media_type:?}; error answers must be application/problem+json"
        )));
    }
    let value = crate::json::parse(body, max_json_values)
        .map_err(|e| bad(format!("provider problem is not acceptable JSON: {e}")))?;
    let serde_json::Value::Object(members) = value else {
        return Err(bad("provider problem is not a JSON object".into()));
    };
    let mut kept = serde_json::Map::new();
    for name in ["type", "title", "detail", "code"] {
        match members.get(name) {
            None => {}
            Some(serde_json::Value::String(text)) if text.len() <= MAX_PROBLEM_MEMBER => {
                kept.insert(name.to_string(), serde_json::Value::String(text.clone()));
            }
            Some(_) => {
                return Err(bad(format!(
                    "provider problem member `{name}` must be a string of at most {MAX_PROBLEM_MEMBER} bytes"
                )));
            }
        }
    }
    match members.get("status") {
        None => {}
        Some(v) if v.as_u64() == Some(u64::from(status.as_u16())) => {}
        Some(_) => {
            return Err(bad(format!(
                "provider problem `status` does not match the HTTP status {status}"
            )));
        }
    }
    kept.insert(
        "status".to_string(),
        serde_json::Value::from(status.as_u16()),
    );
    let body = serde_json::to_vec(&kept)
        .map_err(|e| ExchangeError::new(ErrorKind::Internal, format!("re-encoding failed: {e}")))?;
    Ok(Delivered {
        status,
        body: Bytes::from(body),
        content_type: "application/problem+json".to_string(),
    })
}

impl Trace {
    fn record(
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
        }
    }
}

/// A time as audit records carry it (RFC 3339 UTC, six fractional digits):
/// the audit log's own formatter, so every record has the one exact form the
/// log accepts.
pub fn rfc3339(t: SystemTime) -> String {
    crate::audit::format_timestamp(time::OffsetDateTime::from(t))
}
