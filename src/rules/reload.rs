//! Reloading the rules while the broker runs. Both triggers (SIGHUP and
//! `POST /v1/reload`) go through [`reload`], which uses [`super::load`], so
//! a reload checks exactly what a start checks.
//!
//! Invariants:
//! - *Reload without loss*: new rules are built off to the side, off the async
//!   workers; the running version is replaced in one atomic swap only when the
//!   whole catalog and every policy loaded. A bad file changes nothing.
//! - A reload that took effect is announced to the brokers sharing the
//!   state store, which reload their own files (`follow.rs`).
//! - Every reload attempt, accepted or refused, is audited (event
//!   `admin.change`, service `rules.reload`) before it takes effect or is
//!   answered; if the record cannot be made durable the new rules are not
//!   swapped in.

use std::path::Path;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use super::RuleProblem;
use crate::audit::{AuditRecord, Decision};
use crate::exchange::Broker;
use crate::registry::Participant;

/// The service name of reload records in the audit log.
const RELOAD_ACTION: &str = "rules.reload";

/// Why a reload did not take effect. In every case the running rules stay.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// A catalog or policy file was refused; every problem found is listed.
    #[error("rules refused: {}", .0.first().map(ToString::to_string).unwrap_or_default())]
    Invalid(Vec<RuleProblem>),
    /// The reload could not be audited, so it was not applied.
    #[error("the reload could not be audited: {0}")]
    Audit(String),
}

/// What a successful reload put in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct ReloadSummary {
    /// Registers catalogued.
    pub registers: usize,
    /// Services catalogued.
    pub services: usize,
    /// Grants loaded, revoked ones included.
    pub grants: usize,
}

/// Reloads catalog and policies from `catalog_dir` and `policies_dir` and,
/// when both load, swaps them in atomically. `actor` is the operator who
/// asked, or `None` for SIGHUP (the broker itself).
pub async fn reload(
    broker: &Arc<Broker>,
    catalog_dir: &Path,
    policies_dir: &Path,
    actor: Option<&Participant>,
) -> Result<ReloadSummary, ReloadError> {
    let metrics = Arc::clone(broker);
    let broker = Arc::clone(broker);
    let (catalog_dir, policies_dir) = (catalog_dir.to_path_buf(), policies_dir.to_path_buf());
    let actor = actor.cloned();
    let runtime = tokio::runtime::Handle::current();
    // Reading files and compiling schemas takes from milliseconds to seconds
    // (100k grants): it runs off the async workers serving exchanges, and so
    // may hold the rules lock and wait for the audit record there.
    let outcome = tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let received = SystemTime::now();
        // Load, audit and swap under one lock, so that a slower reload never
        // swaps in rules older than those another writer just put in force.
        let writer = broker.live_rules().writer();
        let loaded = super::load(&catalog_dir, &policies_dir, broker.registry());
        let record = reload_record(actor.as_ref(), received, started, loaded.as_ref().err());
        runtime
            .block_on(broker.audit().append(record))
            .map_err(|e| ReloadError::Audit(e.to_string()))?;
        let rules = loaded.map_err(ReloadError::Invalid)?;
        let summary = ReloadSummary {
            registers: rules.catalog.registers().count(),
            services: rules.catalog.services().count(),
            grants: rules.policy.len(),
        };
        writer.swap(rules);
        drop(writer);
        // Brokers sharing this one's state store reload their own files too
        // (`follow.rs`; a cluster's brokers have the same files). The reload
        // here took effect whatever the announcement's fate.
        if let Err(e) = broker.registry().store().announce_rules_reload() {
            tracing::warn!(error = %e, "rules reloaded here, but the other brokers could not be told; reload them too");
        }
        Ok(summary)
    })
    .await
    .unwrap_or_else(|join| {
        Err(ReloadError::Invalid(vec![RuleProblem::general(format!(
            "the reload task failed: {join}"
        ))]))
    });
    if let Err(e) = &outcome {
        metrics.metrics().rules_reload_failed(match e {
            ReloadError::Invalid(_) => "invalid",
            ReloadError::Audit(_) => "audit_unavailable",
        });
    }
    outcome
}

fn reload_record(
    actor: Option<&Participant>,
    received: SystemTime,
    started: Instant,
    problems: Option<&Vec<RuleProblem>>,
) -> AuditRecord {
    let (decision, http_status, problem_code) = match problems {
        None => (Decision::Accepted, 200, None),
        Some(_) => (Decision::Refused, 400, Some("admin.invalid".to_owned())),
    };
    AuditRecord {
        // SIGHUP has no participant behind it: the broker acts on its own
        // operator's signal, so the record names no consumer.
        consumer: actor.map(|p| p.id.clone()),
        consumer_idno: actor.map(|p| p.organisation.idno.clone()),
        decision,
        problem_code,
        http_status,
        ..AuditRecord::management("admin.change", RELOAD_ACTION, received, started)
    }
}
