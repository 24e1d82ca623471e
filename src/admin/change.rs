//! Registry changes on the admin API, in the one order that keeps the audit
//! log truthful: validate, make the record durable, then apply.
//!
//! 1. The change runs on a scratch registry ([`Registry::stage`]): the same
//!    validation as the real thing, nothing visible. An invalid change is
//!    audited as refused (400 `admin.invalid`) and changes nothing.
//! 2. The `admin.change` record is appended and made durable. If it cannot be,
//!    the answer is 503 `audit.unavailable` and **nothing changed**.
//! 3. Only then is the staged change applied ([`Registry::commit`]: one store
//!    batch, one snapshot swap). If that fails after the record is durable
//!    (the store refused the write), a second record with the same action,
//!    refused, status 500, code `admin.apply_failed`, says the change did not
//!    take effect, and the caller gets that 500. (If even that record cannot
//!    be written the log shows an accepted change that did not happen; the
//!    error is logged. The record is never *missing* for a change that did.)
//!
//! Invariant: admin changes run one at a time, from staging to applying, so
//! the order of their records is the order in which they took effect.

use http::StatusCode;

use super::{AdminError, AdminState, off_worker, refuse};
use crate::audit::{AuditRecord, Decision};
use crate::registry::{Participant, Registry, RegistryError};

/// Orders admin registry changes (see the module invariant). A tokio mutex:
/// it is held across the audit append.
static ORDER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Validates, audits, then applies one registry change (see the module docs).
pub(crate) async fn audited<T>(
    state: &AdminState,
    caller: &Participant,
    action: &str,
    change: impl FnOnce(&Registry) -> Result<T, RegistryError>,
) -> Result<T, AdminError> {
    let started = std::time::Instant::now();
    let received = std::time::SystemTime::now();
    let _order = ORDER.lock().await;
    let registry = state.broker.registry();
    let record = |decision, status: u16, code: Option<&str>| AuditRecord {
        consumer: Some(caller.id.clone()),
        consumer_idno: Some(caller.organisation.idno.clone()),
        decision,
        problem_code: code.map(str::to_string),
        http_status: status,
        ..AuditRecord::management("admin.change", action, received, started)
    };
    let unavailable = |e: crate::audit::AuditError| {
        refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "audit.unavailable",
            format!("the change could not be audited, so nothing changed: {e}"),
        )
    };
    let staged = match off_worker(|| registry.stage(change)) {
        Ok(staged) => staged,
        Err(e) => {
            state
                .broker
                .audit()
                .append(record(Decision::Refused, 400, Some("admin.invalid")))
                .await
                .map_err(unavailable)?;
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "admin.invalid",
                e.to_string(),
            ));
        }
    };
    state
        .broker
        .audit()
        .append(record(Decision::Accepted, 200, None))
        .await
        .map_err(unavailable)?;
    match off_worker(|| registry.commit(staged)) {
        Ok(value) => Ok(value),
        Err(e) => {
            // Still under the order lock, so this record directly follows
            // its accepted record for the same action.
            let failed = record(Decision::Refused, 500, Some("admin.apply_failed"));
            if let Err(a) = state.broker.audit().append(failed).await {
                tracing::error!(%action, error = %a, "admin change audited as accepted but not applied, and its failure could not be recorded");
            }
            Err(refuse(
                StatusCode::INTERNAL_SERVER_ERROR,
                "admin.apply_failed",
                format!(
                    "the change was audited but could not be applied, so it did not take effect (the audit log records that too): {e}"
                ),
            ))
        }
    }
}
