//! The grants an approved connection request becomes, in the policy-file
//! shape (`policies/schema/grants.schema.json`), and reading them back from
//! the state store for the policy index.
//!
//! One grant per requested service (`{request id}.{n}`), because each
//! service carries its own legal bases, purpose and fields. Every grant's
//! origin is `{"kind": "connection_request", "request_id": ...}`.
//!
//! Invariant: the documents built here go through the same loader as the
//! policy files (`PolicyIndex::from_documents`), so a stored grant is checked
//! against the catalog and registry on every load, like any other.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::policy::GrantStatus;
use crate::store::{Collection, StateStore};

use super::application::{Application, RequestedService};
use super::{ConnectionRequest, State};

/// The period of a rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Per {
    /// Per second.
    Second,
    /// Per minute.
    Minute,
    /// Per hour.
    Hour,
}

/// The rate limit the operator sets on approval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSpec {
    /// Requests per period.
    #[schemars(range(min = 1, max = 1_000_000))]
    pub requests: u32,
    /// The period.
    pub per: Per,
    /// Largest burst.
    #[schemars(range(min = 1))]
    pub burst: u32,
}

impl RateLimitSpec {
    /// What an approval without a rate limit gives: 10 per second, bursts of 20.
    pub const DEFAULT: RateLimitSpec = RateLimitSpec {
        requests: 10,
        per: Per::Second,
        burst: 20,
    };

    /// Checks the bounds the grant schema sets.
    pub fn check(&self) -> Result<(), String> {
        if self.requests == 0 || self.burst == 0 {
            return Err("rate_limit: requests and burst must be at least 1".into());
        }
        if self.requests > 1_000_000 {
            return Err("rate_limit: at most 1000000 requests per period".into());
        }
        Ok(())
    }
}

/// The store path the grants of one request are named by in load errors.
pub fn document_path(request_id: &str) -> PathBuf {
    PathBuf::from(format!("state/connection-requests/{request_id}"))
}

/// One grant, in the policy-file shape.
pub(crate) fn grant_value(
    grant_id: &str,
    request_id: &str,
    application: &Application,
    asked: &RequestedService,
    status: GrantStatus,
    rate: &RateLimitSpec,
) -> Value {
    let mut grant = json!({
        "id": grant_id,
        "consumer": application.applicant.system,
        "services": [asked.service],
        "purposes": [asked.purpose],
        "legal_bases": asked.legal_bases,
        "fields": { asked.service.clone(): asked.fields },
        "valid_from": application.validity.from,
        "rate_limit": rate,
        "status": status.as_str(),
        "origin": {"kind": "connection_request", "request_id": request_id},
        "note": format!("From connection request {request_id}: {}", asked.use_case),
    });
    if let Some(until) = &application.validity.until {
        grant["valid_until"] = json!(until);
    }
    if let Some(number) = &application.controller_register_no {
        grant["controller_register_no"] = json!(number);
    }
    grant
}

/// The grants of a request with the status its state gives them, by grant
/// id. Empty before approval.
pub fn grant_values(request: &ConnectionRequest) -> Vec<(String, Value)> {
    let status = match request.state {
        State::Suspended => GrantStatus::Suspended,
        State::Revoked => GrantStatus::Revoked,
        _ => GrantStatus::Active,
    };
    let rate = request.rate_limit.unwrap_or(RateLimitSpec::DEFAULT);
    request
        .grants
        .iter()
        .zip(&request.application.services)
        .map(|(id, asked)| {
            (
                id.clone(),
                grant_value(id, &request.id, &request.application, asked, status, &rate),
            )
        })
        .collect()
}

/// Every grant in the store, as policy documents (one per connection
/// request, named `state/connection-requests/{id}`), for
/// `PolicyIndex::from_documents` next to the policy files.
pub fn stored_grant_documents(store: &dyn StateStore) -> Result<Vec<(PathBuf, Value)>, String> {
    let mut by_request: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for (id, bytes) in store.scan(Collection::Grants).map_err(|e| e.to_string())? {
        let grant: Value = serde_json::from_slice(&bytes)
            .map_err(|e| format!("stored grant {id} is unreadable: {e}"))?;
        let request = grant["origin"]["request_id"]
            .as_str()
            .unwrap_or("unknown")
            .to_string();
        by_request.entry(request).or_default().push(grant);
    }
    Ok(by_request
        .into_iter()
        .map(|(request, grants)| (document_path(&request), json!({ "grants": grants })))
        .collect())
}
