//! Authorise: a grant must allow this consumer to call this service for this
//! purpose under this legal basis (the policy index decides, pure and
//! allocation-free), within the grant's rate; a call on someone's behalf
//! needs MPower's confirmation (`represent`).
//!
//! Invariant: fail closed. Only an `Allow` from the policy, a rate token and,
//! for representation, MPower's exact confirmation let a call on; each
//! refusal keeps the policy's own stable code (`From<DenyCode>`).

use super::Broker;
use super::call::CallHeaders;
use super::error::{ErrorKind, ExchangeError};
use super::record::Trace;
use super::represent;
use crate::catalog::Service;
use crate::policy::{Decision, DecisionRequest, Grant, RateLimited, quota_reached, quota_windows};
use crate::registry::RegistrySnapshot;
use crate::rules::Rules;
use crate::store::{QuotaRefusal, QuotaWindow};

/// A call the rules permit, under this grant.
pub struct Permitted<'r> {
    /// The grant that allows it (its fields bound what the answer may show).
    pub grant: &'r Grant,
}

/// What authorisation looks at.
pub(super) struct Asking<'a> {
    /// The consumer's request head (representation asks MPower with it).
    pub head: &'a http::request::Parts,
    /// The calling participant.
    pub consumer: &'a str,
    /// The protocol headers.
    pub call: &'a CallHeaders,
    /// The service.
    pub service: &'a Service,
    /// The registry as this exchange sees it.
    pub registry: &'a RegistrySnapshot,
}

impl Broker {
    /// Decides, counts the rate, and confirms representation.
    pub(super) async fn authorise<'r>(
        &self,
        trace: &mut Trace,
        asking: Asking<'_>,
        rules: &'r Rules,
        now: i64,
    ) -> Result<Permitted<'r>, ExchangeError> {
        let Asking {
            head,
            consumer,
            call,
            service,
            registry,
        } = asking;
        let grant = match rules.policy.decide(
            &DecisionRequest {
                consumer,
                service,
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
                    ErrorKind::from(denial.code),
                    format!(
                        "{} (service {}, basis `{}`, reason `{}`)",
                        denial.rule, service.key, call.basis, call.reason
                    ),
                ));
            }
        };
        trace.grant_id = Some(grant.id.clone());
        self.count_call(grant, &service.key, now).await?;
        // Representation: MPower must confirm the calling user's authorisation
        // of the grant's type from the represented party (fail closed).
        if let Some(party) = represent::party_to_confirm(grant, call)? {
            self.confirm_representation(trace, head, call, grant, party, registry, &rules.catalog)
                .await?;
        }
        Ok(Permitted { grant })
    }

    /// Counts the call against the grant's quota and rate. On one broker
    /// both are counted in memory (`policy::rate`). In a cluster the quota
    /// counts are leased from the counts every broker shares and this
    /// broker enforces its share of the rate (`store::SharedState`); a
    /// lease that cannot be taken refuses the call (503 `state.unavailable`).
    /// A call the rate refuses does not count against the quota.
    async fn count_call(
        &self,
        grant: &Grant,
        service_key: &str,
        now: i64,
    ) -> Result<(), ExchangeError> {
        let limited = |l: RateLimited| {
            ExchangeError::rate_limited(
                l.retry_after,
                format!(
                    "grant {} allows no more calls to {service_key} now ({}); retry later",
                    grant.id,
                    l.kind.as_str()
                ),
            )
        };
        let Some(shared) = self.shared.as_deref() else {
            return self.rate.check(grant, service_key, now).map_err(limited);
        };
        let consumer = grant.consumer.as_str();
        let quota = grant
            .quota
            .filter(|q| q.per_day.is_some() || q.per_month.is_some())
            .map(|q| {
                let (day, month) = quota_windows(now);
                QuotaWindow {
                    per_day: q.per_day,
                    per_month: q.per_month,
                    day,
                    month,
                }
            });
        if let Some(window) = quota {
            match shared.take_quota(consumer, service_key, window).await {
                Ok(()) => {}
                Err(QuotaRefusal::Exhausted { day }) => {
                    return Err(limited(quota_reached(day, now)));
                }
                Err(QuotaRefusal::Unavailable(why)) => {
                    tracing::warn!(reason = %why, "the cluster's quota counts cannot be reached; refusing the exchange");
                    return Err(ExchangeError::new(
                        ErrorKind::StateUnavailable,
                        "the broker cannot count this call against the grant's quota, which the brokers of the cluster share; try again later",
                    ));
                }
            }
        }
        if let Err(l) = self
            .rate
            .check_rate(grant, service_key, shared.live_brokers())
        {
            if let Some(window) = quota {
                shared.return_quota(consumer, service_key, window);
            }
            return Err(limited(l));
        }
        Ok(())
    }
}
