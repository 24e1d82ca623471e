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
use crate::policy::{Decision, DecisionRequest, Grant};
use crate::registry::RegistrySnapshot;
use crate::rules::Rules;

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
        if let Some(party) = represent::party_to_confirm(grant, call)? {
            self.confirm_representation(trace, head, call, grant, party, registry, &rules.catalog)
                .await?;
        }
        Ok(Permitted { grant })
    }
}
