//! The operator's first participants: `mconnect serve --init-participants
//! FILE` registers them on an empty state store before any port is bound.
//!
//! The file has the shape of the admin API's participant documents (the body
//! of `PUT /v1/participants/{id}`), listed under one key:
//! `{"participants": [{"id", "organisation", "roles", "certificates",
//! "endpoints", "confidential"}, ...]}`.
//!
//! Invariants:
//!
//! - **All or nothing.** Every participant is validated first, on a scratch
//!   registry ([`Registry::stage`]: the same checks as the admin API, the
//!   certificates against the bus CA, endpoints against the catalog), and a
//!   single problem refuses the whole file; then the accepted changes are
//!   audited, then applied in one store batch.
//! - **Audited like an admin change**, in the admin API's order (the record is
//!   durable before the change is applied): one `admin.change` record per
//!   participant, action `participant.upsert {id}`, made by `broker` (the
//!   operator acting through the broker's own configuration, not through a
//!   certificate), carrying the SHA-256 of the file as `request_sha256`.
//! - **Only an empty store is initialised.** On a store that holds anything,
//!   the file is accepted only when every participant it lists is already
//!   stored exactly so (a re-run of the same first start changes nothing);
//!   otherwise the broker refuses to start (exit 64): later changes go
//!   through the admin API, which audits them under the operator's identity.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use crate::audit::{AuditLog, AuditRecord, Decision};
use crate::catalog::Catalog;
use crate::registry::{Participant, Registry, RegistryError, registered_certificate};
use crate::store::Collection;

/// The identity bootstrap records name as the one who made the change.
pub const BOOTSTRAP_ACTOR: &str = "broker";

/// The participants file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ParticipantsFile {
    participants: Vec<Participant>,
}

/// What initialising did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InitOutcome {
    /// The store was empty: these participants were registered, in the file's order.
    Registered(Vec<String>),
    /// The store already held every participant of the file, as the file
    /// gives it: nothing was changed (a re-run of the first start).
    AlreadyRegistered(usize),
}

/// Why the participants file was refused. Every variant is a problem with
/// the installation: `mconnect serve` exits with code 64.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// The file could not be read.
    #[error("cannot read the participants file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a participants document, or a participant in it is invalid.
    #[error("the participants file {path} is refused, nothing was registered: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What to fix.
        reason: String,
    },
    /// The store is not empty and does not hold the file's participants as given.
    #[error(
        "the state store is not empty ({held}), and {reason}: --init-participants only initialises an empty store; start without it and change participants through the admin API (PUT /v1/participants/{{id}})"
    )]
    NotEmpty {
        /// What the store holds.
        held: String,
        /// How it differs from the file.
        reason: String,
    },
    /// The store could not be read or written.
    #[error("the state store: {0}")]
    Store(String),
    /// A record could not be made durable: nothing was registered.
    #[error("the audit log could not record the registration, so nothing was registered: {0}")]
    Audit(String),
}

/// Reads and parses a participants file; returns its participants and the
/// lowercase hex SHA-256 of its bytes.
pub fn read_file(path: &Path) -> Result<(Vec<Participant>, String), InitError> {
    let bytes = std::fs::read(path).map_err(|source| InitError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let file: ParticipantsFile =
        serde_json::from_slice(&bytes).map_err(|e| InitError::Invalid {
            path: path.to_path_buf(),
            reason: format!(
                "{e} (expected {{\"participants\": [...]}}, each as PUT /v1/participants/{{id}} takes it)"
            ),
        })?;
    if file.participants.is_empty() {
        return Err(InitError::Invalid {
            path: path.to_path_buf(),
            reason: "it lists no participants".into(),
        });
    }
    for (i, p) in file.participants.iter().enumerate() {
        if file.participants[..i].iter().any(|o| o.id == p.id) {
            return Err(InitError::Invalid {
                path: path.to_path_buf(),
                reason: format!("participant `{}` is listed twice", p.id),
            });
        }
    }
    let sha = crate::crypto::sha256(&bytes);
    Ok((file.participants, hex(&sha)))
}

/// Registers the participants of `path` on an empty store (see the module
/// invariants), auditing each in `audit`. `catalog` checks endpoints.
pub async fn init_participants(
    path: &Path,
    registry: &Arc<Registry>,
    catalog: Arc<Catalog>,
    audit: &AuditLog,
) -> Result<InitOutcome, InitError> {
    let (participants, sha) = read_file(path)?;
    let held = {
        let registry = registry.clone();
        blocking(move || held(&registry)).await??
    };
    if let Some(held) = held {
        let snapshot = registry.snapshot();
        for p in &participants {
            let reason = match snapshot.get(&p.id) {
                None => Some(format!("it does not hold `{}` of the file", p.id)),
                Some(stored) if !same(&stored.participant, p) => Some(format!(
                    "it holds `{}` otherwise than the file gives it",
                    p.id
                )),
                Some(_) => None,
            };
            if let Some(reason) = reason {
                return Err(InitError::NotEmpty { held, reason });
            }
        }
        return Ok(InitOutcome::AlreadyRegistered(participants.len()));
    }

    // 1. Validate everything on a scratch registry; one problem refuses all.
    let staged = {
        let registry = registry.clone();
        let participants = participants.clone();
        let path = path.to_path_buf();
        blocking(move || {
            registry
                .stage(|scratch| {
                    for p in &participants {
                        check_endpoints(&catalog, p)
                            .and_then(|()| scratch.upsert(p.clone()))
                            .map_err(|e| RegistryError::Invalid(format!("`{}`: {e}", p.id)))?;
                    }
                    Ok(())
                })
                .map_err(|e| InitError::Invalid {
                    path,
                    reason: e.to_string(),
                })
        })
        .await??
    };
    // 2. Make the records durable, 3. then apply, as the admin API does.
    let received = std::time::SystemTime::now();
    let started = std::time::Instant::now();
    let record = |id: &str, decision, status, code: Option<&str>| AuditRecord {
        consumer: Some(BOOTSTRAP_ACTOR.to_string()),
        decision,
        http_status: status,
        problem_code: code.map(str::to_string),
        request_sha256: Some(sha.clone()),
        ..AuditRecord::management(
            "admin.change",
            format!("participant.upsert {id}"),
            received,
            started,
        )
    };
    for p in &participants {
        audit
            .append(record(&p.id, Decision::Accepted, 200, None))
            .await
            .map_err(|e| InitError::Audit(e.to_string()))?;
    }
    let applied = {
        let registry = registry.clone();
        blocking(move || registry.commit(staged)).await?
    };
    if let Err(e) = applied {
        for p in &participants {
            let failed = record(&p.id, Decision::Refused, 500, Some("admin.apply_failed"));
            if let Err(a) = audit.append(failed).await {
                tracing::error!(participant = %p.id, error = %a, "registration audited as accepted but not applied, and its failure could not be recorded");
            }
        }
        return Err(InitError::Store(format!(
            "the registration was audited but could not be applied, so it did not take effect (the audit log records that too): {e}"
        )));
    }
    Ok(InitOutcome::Registered(
        participants.into_iter().map(|p| p.id).collect(),
    ))
}

/// What a non-empty store holds, `None` when it is empty.
fn held(registry: &Registry) -> Result<Option<String>, InitError> {
    let mut held = Vec::new();
    for collection in Collection::ALL {
        let n = registry
            .store()
            .scan(collection)
            .map_err(|e| InitError::Store(e.to_string()))?
            .len();
        if n > 0 {
            held.push(format!("{n} {}", collection.name()));
        }
    }
    Ok((!held.is_empty()).then(|| held.join(", ")))
}

/// Whether the stored participant is the file's: the same fields and the
/// same certificates (by fingerprint, which the broker recomputes from the PEM).
fn same(stored: &Participant, file: &Participant) -> bool {
    let fingerprints = |p: &Participant| -> Option<Vec<String>> {
        let mut fps = p
            .certificates
            .iter()
            .map(|c| registered_certificate(&c.pem).ok().map(|c| c.fingerprint))
            .collect::<Option<Vec<_>>>()?;
        fps.sort();
        Some(fps)
    };
    stored.id == file.id
        && stored.organisation == file.organisation
        && stored.roles == file.roles
        && stored.endpoints == file.endpoints
        && stored.confidential == file.confidential
        && fingerprints(stored).is_some()
        && fingerprints(stored) == fingerprints(file)
}

/// The admin API's endpoint check (`admin::participants::check_endpoints`):
/// each endpoint names a service the catalog lists for the provider.
fn check_endpoints(catalog: &Catalog, p: &Participant) -> Result<(), RegistryError> {
    for e in &p.endpoints {
        let listed = match e.service.as_deref() {
            Some(code) => catalog.service(&p.id, code).is_some(),
            None => catalog.services().any(|s| s.provider == p.id),
        };
        if !listed {
            return Err(RegistryError::Invalid(match e.service.as_deref() {
                Some(code) => format!("the catalog lists no service {}/{code}", p.id),
                None => format!(
                    "the catalog lists no service of `{}`, so it needs no default endpoint",
                    p.id
                ),
            }));
        }
    }
    Ok(())
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, InitError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| InitError::Store(format!("the registration did not finish: {e}")))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
