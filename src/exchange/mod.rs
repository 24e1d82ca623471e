//! The exchange: one consumer call, from an accepted mTLS connection to the
//! sealed answer. This is the one place where the phases are put in order
//! ([`Broker::exchange`]); each phase is a module with one function and a
//! typed result, so the order is read here and each step is read and tested
//! on its own (pingora's phases, linkerd's stack assembled in one place).
//!
//! ```text
//!  identify ──► body ──► verify ──► bind ──► authorise ──► validate
//!  Identified   Bytes    Verified-  Bound    Permitted     Validated
//!  (cert →      (limits) Signature  (typed   (policy,      (request
//!  participant,          + replay   query,   rate,         schema)
//!  call, service)        claim      subjects) MPower)
//!      ──► upstream ──► answer ──► record ──► seal
//!          Upstream-    Answered   audit seq  signed response
//!          Answer       (schema,   (durable
//!          (provider    minimise,  record)
//!          or own)      problem cut)
//! ```
//!
//! Architecture invariants:
//! - every call, accepted or refused, produces exactly one audit record (or
//!   is counted in a refusal aggregate), and the answer leaves only after
//!   that record is durable; if it cannot be made durable the consumer gets
//!   503 `audit.unavailable` instead (fail closed);
//! - identification and signature checks come before anything that costs the
//!   provider or reveals whether data exists;
//! - the replay store is touched only by authenticated requests, so a stranger
//!   cannot burn another client's request ids; the ids an exchange used up are
//!   listed in its audit record, which is durable before the answer leaves,
//!   so they stay used up across restarts (see `replay_store`);
//! - a provider's answer and the broker's own services' pass the same answer
//!   checks: both come through the [`upstream`] seam;
//! - nothing from the consumer's request reaches the provider except the
//!   method, subpath, query, body and the protocol headers: the forwarded
//!   request is built from a whitelist, which is the hop-by-hop hygiene.

pub mod answer;
pub mod authorise;
pub mod bind;
mod body;
pub mod call;
pub mod error;
pub mod identify;
pub mod internal;
mod record;
pub mod refusals;
pub mod replay_store;
mod represent;
pub mod route;
pub mod seal;
pub mod upstream;
pub mod validate;
pub mod verify;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;

use crate::audit::AuditLog;
use crate::config::Limits;
use crate::metrics::{Metrics, Observed};
use crate::policy::RateLimiter;
use crate::registry::Registry;
use crate::rules::LiveRules;
use crate::store::SharedState;
use answer::Answered;
use error::{ErrorKind, ExchangeError};
use internal::OwnServices;
use mconnect_sdk::protocol::PROBLEM_JSON;
use mconnect_sdk::trace::TraceContext;
use record::Trace;
use replay_store::{EmbeddedReplayStore, ReplayStore, Settled};
use seal::{Answer, Sealer};
use tracing::Instrument;
use upstream::{Upstream, UpstreamCall, UpstreamTrace};

pub use crate::rules::Rules;
pub use mconnect_sdk::protocol::unix_now;
pub use mconnect_sdk::server::Peer;
pub use record::rfc3339;

/// Everything one broker needs to run exchanges.
pub struct Broker {
    registry: Arc<Registry>,
    rules: LiveRules,
    rate: RateLimiter,
    replay: Arc<dyn ReplayStore>,
    /// The checks brokers of a cluster make together (replay ids, quotas,
    /// live brokers for the rate), when the state is in PostgreSQL.
    shared: Option<Arc<SharedState>>,
    /// Seconds added to the system clock (see [`Broker::shift_clock`]).
    clock_shift: std::sync::atomic::AtomicI64,
    audit: AuditLog,
    /// Where forwarded calls go: the providers, over mTLS.
    upstream: Arc<dyn Upstream>,
    /// Where calls to the broker's own services go.
    own: OwnServices,
    sealer: Arc<Sealer>,
    limits: Limits,
    /// The base URL clients address and sign `@target-uri` for: configured,
    /// or `https://{bound address}` once the data listener is bound.
    public_data_url: std::sync::OnceLock<String>,
    refusals: refusals::Refusals,
    /// What `/metrics` reports of the exchanges (`crate::metrics`).
    metrics: Metrics,
}

/// The registry snapshot and the rules an exchange is decided on.
type InForce<'a> = (&'a Arc<crate::registry::RegistrySnapshot>, &'a Arc<Rules>);

/// How an exchange ended, for its metrics.
struct Outcome {
    /// A problem code, or `metrics::OK`.
    code: &'static str,
    /// Whether it has an audit record of its own.
    recorded: bool,
    /// How long it waited for that record to be durable.
    audit_wait: Option<Duration>,
    /// The record's sequence number in the audit log, once durable.
    audit_seq: Option<u64>,
}

/// The parts a broker is made of.
pub struct BrokerParts {
    /// The participant registry.
    pub registry: Arc<Registry>,
    /// Catalog and policies.
    pub rules: Rules,
    /// The audit log.
    pub audit: AuditLog,
    /// Where forwarded calls go ([`upstream::ProviderUpstream`] in service).
    pub upstream: Arc<dyn Upstream>,
    /// The broker's signing identity.
    pub sealer: Arc<Sealer>,
    /// Limits.
    pub limits: Limits,
    /// The public base URL clients address, when it differs from the Host they send.
    pub public_data_url: Option<String>,
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
            shared: None,
            clock_shift: std::sync::atomic::AtomicI64::new(0),
            metrics: Metrics::new(parts.audit.fsync_seconds().clone()),
            own: OwnServices::new(parts.audit.clone()),
            audit: parts.audit,
            refusals: refusals::Refusals::new(
                std::num::NonZeroU32::new(parts.limits.refusals_per_second)
                    .unwrap_or(std::num::NonZeroU32::MIN),
                std::num::NonZeroU32::new(parts.limits.refusals_burst)
                    .unwrap_or(std::num::NonZeroU32::MIN),
            ),
            upstream: parts.upstream,
            sealer: parts.sealer,
            limits: parts.limits,
            public_data_url: parts
                .public_data_url
                .map(std::sync::OnceLock::from)
                .unwrap_or_default(),
        }
    }

    /// Makes the replay check, quotas and rates cluster-wide through the
    /// shared state (brokers side by side on one PostgreSQL database).
    pub fn with_shared_state(mut self, shared: Arc<SharedState>) -> Broker {
        self.metrics.register_shared(shared.metrics());
        self.shared = Some(shared);
        self
    }

    /// The cluster's shared checks, if this broker is in one.
    pub fn shared_state(&self) -> Option<&Arc<SharedState>> {
        self.shared.as_ref()
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

    /// What the broker counts for `/metrics`.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// How many single-use ids the replay store holds in memory, if it
    /// keeps them there (`/metrics`).
    pub fn replay_ids_held(&self) -> Option<usize> {
        self.replay.held_in_memory()
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
        // Trace context first, before anything can refuse the call, so that
        // every exchange has a trace id: the consumer's, or a new one when it
        // sent none or an invalid one (never a refusal: W3C's rule).
        let context = TraceContext::continue_from(request.headers());
        let mut trace = Trace {
            exchange_id: uuid::Uuid::now_v7().to_string(),
            received_at: Some(SystemTime::now()),
            ..Trace::default()
        };
        // Whatever the exchange logs on its way (a replay check that cannot
        // answer, an audit failure) names it and its trace.
        let span = tracing::info_span!(
            "exchange",
            exchange_id = %trace.exchange_id,
            trace_id = %context.span.trace_id()
        );
        let traceparent = context.span.header_value();
        trace.context = Some(context);
        let started = Instant::now();
        let mut outcome = Outcome {
            code: crate::metrics::OK,
            recorded: false,
            audit_wait: None,
            audit_seq: None,
        };
        // The registry and rules in force when the call arrived: the call is
        // decided on them, and its metrics' labels are bounded by them.
        let registry = self.registry.snapshot();
        let rules = self.rules.current();
        let in_force = (&registry, &rules);
        let mut response = self
            .answer(&mut trace, &mut outcome, peer, request, started, in_force)
            .instrument(span)
            .await;
        // The consumer learns the trace id (and the broker's span) even when
        // it sent none; outside the receipt, like the context it answers.
        response
            .headers_mut()
            .insert(mconnect_sdk::trace::TRACEPARENT, traceparent);
        self.observe(
            &trace,
            &outcome,
            peer,
            &response,
            started.elapsed(),
            in_force,
        );
        response
    }

    /// Answers one exchange: the phases, the audit record, the seal; says
    /// in `outcome` how it ended.
    async fn answer<B>(
        &self,
        trace: &mut Trace,
        outcome: &mut Outcome,
        peer: &Peer,
        request: Request<B>,
        started: Instant,
        in_force: InForce<'_>,
    ) -> Response<Full<Bytes>>
    where
        B: http_body::Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
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
            outcome.code = refusal.code();
            return self.seal_unrecorded(trace, None, &refusal);
        }
        let answered = self.exchange(trace, peer, request, in_force).await;
        let (status, body, content_type, problem) = match answered {
            Ok(d) => (d.status, d.body, d.content_type, None),
            Err(e) => (
                e.status(),
                Bytes::from(e.to_problem_json(Some(&trace.exchange_id))),
                PROBLEM_JSON,
                Some(e),
            ),
        };
        trace.keyids_made.push(self.sealer.keyid().to_string());
        let record = trace.record(status, &body, problem.as_ref(), started.elapsed());
        let request_id = trace.call.as_ref().map(|c| c.request_id.to_string());
        let now = unix_now();
        // Over its client's refusal budget: answered, counted in the aggregate
        // of its (certificate, code, second), no record of its own, no seq.
        if let Some(p) = &problem {
            outcome.code = p.code();
            if self
                .refusals
                .over_budget(peer, &self.registry, p.code(), status.as_u16())
            {
                return self.seal_unrecorded(trace, request_id.as_deref(), p);
            }
        }
        // Bodies are kept only for a delivered answer of a service that opted
        // in, and only after the record is durable (`append_with_bodies`).
        let waited = Instant::now();
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
        outcome.audit_wait = Some(waited.elapsed());
        if let Some(claim) = trace.claim.take() {
            claim.settle(match &appended {
                Ok(seq) => Settled::Recorded(*seq),
                Err(_) => Settled::Unrecorded,
            });
        }
        match appended {
            Ok(seq) => {
                outcome.recorded = true;
                outcome.audit_seq = Some(seq);
                self.sealer.seal(
                    Answer {
                        status,
                        body,
                        content_type,
                        exchange_id: &trace.exchange_id,
                        request_id: request_id.as_deref(),
                        audit_seq: Some(seq),
                        retry_after_secs: problem.as_ref().and_then(|p| p.retry_after_secs()),
                    },
                    now,
                )
            }
            Err(e) => {
                tracing::error!(exchange_id = %trace.exchange_id, error = %e, "audit record not durable; refusing the exchange");
                let refusal = ExchangeError::new(
                    ErrorKind::AuditUnavailable,
                    "the exchange could not be recorded in the audit log and was not delivered; try again later",
                );
                outcome.code = refusal.code();
                self.seal_unrecorded(trace, request_id.as_deref(), &refusal)
            }
        }
    }

    /// Counts the exchange for `/metrics`, under labels the registry and
    /// catalog in force bound (`crate::metrics`), and logs its one event
    /// (the access log): ids, trace, outcome and timings, never a person's
    /// id, the query or a body.
    fn observe(
        &self,
        trace: &Trace,
        outcome: &Outcome,
        peer: &Peer,
        response: &Response<Full<Bytes>>,
        elapsed: Duration,
        (registry, rules): InForce<'_>,
    ) {
        // Refused before identification: the certificate's owner, if any.
        let consumer = trace.consumer.as_deref().or_else(|| {
            let fingerprint = peer.fingerprint.as_deref()?;
            registry
                .by_fingerprint(fingerprint)
                .map(|e| e.participant.id.as_str())
        });
        let observed = Observed {
            provider: trace.provider.as_deref(),
            service: trace.service.as_deref(),
            consumer,
            code: outcome.code,
            elapsed,
            provider_elapsed: trace.provider_elapsed,
            audit_wait: outcome.audit_wait,
            request_bytes: trace
                .request_sha256
                .is_some()
                .then_some(trace.request_bytes),
            response_bytes: http_body::Body::size_hint(response.body())
                .exact()
                .unwrap_or(0),
            recorded: outcome.recorded,
        };
        self.metrics.exchange(&observed, registry, rules);
        log_exchange(trace, outcome, consumer, response.status(), elapsed);
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
                content_type: PROBLEM_JSON,
                exchange_id: &trace.exchange_id,
                request_id,
                audit_seq: None,
                retry_after_secs: refusal.retry_after_secs(),
            },
            unix_now(),
        )
    }

    /// The phases of one exchange, in order. Each phase writes what it
    /// learns to `trace` as it learns it, so a refusal at any step is
    /// recorded with everything known by then.
    async fn exchange<B>(
        &self,
        trace: &mut Trace,
        peer: &Peer,
        request: Request<B>,
        (registry, rules): InForce<'_>,
    ) -> Result<Answered, ExchangeError>
    where
        B: http_body::Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (head, body) = request.into_parts();

        // Identify: certificate → participant (MConnect-Client must agree),
        // path and protocol headers, and an active catalogued service.
        let identified =
            identify::identify(trace, registry, &rules.catalog, peer, &head, unix_now())?;
        let identify::Identified {
            consumer,
            route,
            call,
            service,
        } = &identified;

        // Body: bounded by the service's and the broker's limit.
        let limit = service.body_limit.min(self.limits.max_body_bytes);
        let body = body::read_body(&head.headers, body, limit).await?;
        trace.request_bytes = body.len() as u64;
        trace.request_sha256 = Some(hex::encode(crate::crypto::sha256(&body)));
        trace.store_bodies = service.store_bodies.map(|s| (body.clone(), s.retention()));

        // Verify: signature by a key of this participant, window, digest;
        // only then claim the request id, so strangers cannot burn ids.
        let now = self.now();
        let target_uri = self.target_uri(&head)?;
        let verified = verify::verify_request(
            &verify::SignedRequest {
                method: head.method.as_str(),
                target_uri: &target_uri,
                headers: &head.headers,
                body: &body,
            },
            consumer,
            now,
            self.limits.created_skew.as_secs() as i64,
        )?;
        trace.keyids_checked.push(verified.keyid.clone());
        verify::claim_ids(
            &self.replay,
            self.shared.as_deref(),
            trace,
            call,
            &verified,
            now,
        )
        .await?;

        // Bind: the typed query, the body parsed once, and the people the
        // call asks about; MConnect-Subject must be one of them.
        let bound = bind::bind(
            trace,
            call,
            service,
            route.query,
            &body,
            self.limits.max_json_values,
        )?;

        // Authorise: grant, purpose, basis, subject, rate; then representation.
        let permitted = self
            .authorise(
                trace,
                authorise::Asking {
                    head: &head,
                    consumer: &consumer.participant.id,
                    call,
                    service,
                    registry,
                },
                rules,
                now,
            )
            .await?;

        // Validate the request body against the service's schema.
        validate::validate(service, bound.body.as_ref())?;

        // Upstream: the broker's own services (provider `mconnect`) are
        // answered from the audit log; everything else is forwarded over
        // mTLS, signed by the broker, and the provider's signature checked.
        let upstream: &dyn Upstream = if route.provider == internal::PROVIDER {
            &self.own
        } else {
            self.upstream.as_ref()
        };
        let mut sink = UpstreamTrace::default();
        let leg = Instant::now();
        let answered = upstream
            .call(
                UpstreamCall {
                    exchange_id: &trace.exchange_id,
                    head: &head,
                    route,
                    call,
                    service,
                    body,
                    registry,
                    catalog: &rules.catalog,
                    trace: trace.context.as_ref(),
                },
                &mut sink,
            )
            .await;
        trace.provider_elapsed = Some(leg.elapsed());
        trace.forwarded_at = sink.forwarded_at;
        trace.keyids_made.append(&mut sink.keyids_made);
        trace.keyids_checked.append(&mut sink.keyids_checked);

        // Answer: the same checks for both: schema, minimise, problem cut.
        answer::deliver(
            answered?,
            service,
            permitted.grant,
            self.limits.max_json_values,
        )
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
}

/// The one log event of an exchange, at info (target `mconnect::exchange`):
/// what an operator needs to find it in the audit log, the provider's logs
/// and the consumer's trace, and how long each leg took. Its fields are
/// ids, codes, registered participant ids, catalogued service keys and
/// numbers only: never the subject, the calling user, the represented
/// party, the query or a body, so the log holds no personal data.
fn log_exchange(
    trace: &Trace,
    outcome: &Outcome,
    client: Option<&str>,
    status: http::StatusCode,
    elapsed: Duration,
) {
    let ms = |d: Duration| d.as_micros() as f64 / 1000.0;
    let context = trace.context.as_ref();
    let request_id = trace.call.as_ref().map(|c| c.request_id.to_string());
    let trace_id = context.map(TraceContext::trace_id);
    let span_id = context.map(|c| c.span.parent_id());
    let parent_span_id = context.and_then(|c| c.caller).map(|c| c.parent_id());
    tracing::info!(
        exchange_id = %trace.exchange_id,
        request_id = request_id.as_deref(),
        trace_id = trace_id.as_deref(),
        span_id = span_id.as_deref(),
        parent_span_id = parent_span_id.as_deref(),
        trace_origin = context.map(|c| c.origin.as_str()),
        client,
        provider = trace.provider.as_deref(),
        service = trace.service.as_deref(),
        code = outcome.code,
        http_status = status.as_u16(),
        audit_seq = outcome.audit_seq,
        total_ms = ms(elapsed),
        provider_ms = trace.provider_elapsed.map(ms),
        audit_wait_ms = outcome.audit_wait.map(ms),
        "exchange"
    );
}

#[cfg(test)]
mod tests;
