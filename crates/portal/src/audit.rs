//! What the portal itself decides is audited in a log of its own: every
//! sign-in (and every refused one), sign-out, change of who may use which
//! grant, every action an official takes on a connection application
//! (recorded with the broker's answer, once the broker has recorded and
//! applied it), and every refusal the portal makes before anything reaches the
//! broker (a resident on an official's page, a form without its token). The
//! lookups and the history reads are exchanges, audited by the broker.
//!
//! The log is the broker's own tamper-evident log (`mconnect::audit`:
//! append-only segments, group commit, fsync before the answer, a Merkle
//! tree whose heads the portal signs with its own participant key), opened
//! in the portal's state directory, so an auditor verifies it with the same
//! tools as the broker's.
//!
//! Invariants:
//! - a sign-in or a change is recorded before it takes effect: when the
//!   record cannot be written the sign-in is refused and the change is not
//!   made (nothing happens that the log does not show);
//! - refusals of people not signed in (a forged sign-in form, a bad
//!   assertion) are recorded at most [`REFUSALS_PER_SECOND`] a second, so
//!   nobody can fill the disk with them; those over the budget are not lost
//!   but counted, in the `refusal_count` of the next one recorded;
//! - a record names the person acting (`calling_user`), their organisation
//!   (`consumer`) and, for a change to an official's rights, that official
//!   (`subject`).

use std::num::NonZeroU32;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use mconnect::audit::{AuditConfig, AuditError, AuditLog, AuditRecord, Decision, TreeHeadSigner};
use mconnect_sdk::crypto::{SigningKey, certificate_fingerprint};

/// How often the portal publishes a signed tree head when its log grew.
const TREE_HEAD_INTERVAL: Duration = Duration::from_secs(60);
/// Refused sign-ins recorded one by one per second, at most (burst twice).
pub const REFUSALS_PER_SECOND: u32 = 20;

/// Something the portal did or refused, as its audit log records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortalEvent {
    /// A person signed in (`method`: `development`, `mpass`).
    SignIn {
        /// The person's IDNP.
        idnp: String,
        /// Their organisation's participant id, for an official.
        organisation: Option<String>,
        /// How they signed in.
        method: &'static str,
    },
    /// A sign-in was refused (a tampered or expired assertion, a form
    /// without its token, an unknown official).
    SignInRefused {
        /// How the sign-in was tried.
        method: &'static str,
        /// The stable reason (`portal.csrf`, `saml.expired`, ...).
        code: String,
    },
    /// A person signed out.
    SignOut {
        /// The person's IDNP.
        idnp: String,
    },
    /// An administrator changed which grants an official may use.
    Assignments {
        /// The administrator's IDNP.
        administrator: String,
        /// Their organisation's participant id.
        organisation: String,
        /// The official whose rights changed.
        official: String,
        /// The grants the official may use from now on.
        grants: Vec<String>,
    },
    /// An official acted on a connection request through the portal
    /// (submitted, resubmitted, reviewed, asked for changes, approved,
    /// rejected, confirmed), with the broker's answer.
    ConnectionRequest {
        /// The official's IDNP.
        idnp: String,
        /// Their organisation's participant id (the system that acted).
        organisation: String,
        /// The request id (`(new)` for a submission the broker refused).
        request: String,
        /// The transition (`submit`, `resubmit`, `review`, `approve`, ...).
        action: String,
        /// The broker's status.
        status: u16,
        /// The broker's problem code, when it refused.
        problem: Option<String>,
    },
    /// The portal refused a signed-in person something itself.
    Refused {
        /// The person's IDNP.
        idnp: String,
        /// Their organisation's participant id, for an official.
        organisation: Option<String>,
        /// What they asked for (the path).
        path: String,
        /// The stable reason (`portal.officials_only`, `portal.csrf`, ...).
        code: String,
        /// The status answered.
        status: u16,
    },
}

impl PortalEvent {
    /// The audit record of the event, received at `received`.
    fn record(&self, received: SystemTime, started: Instant) -> AuditRecord {
        match self {
            PortalEvent::SignIn {
                idnp,
                organisation,
                method,
            } => AuditRecord {
                calling_user: Some(idnp.clone()),
                consumer: organisation.clone(),
                subject: Some(idnp.clone()),
                ..AuditRecord::management("portal.sign_in", *method, received, started)
            },
            PortalEvent::SignInRefused { method, code } => AuditRecord {
                decision: Decision::Refused,
                problem_code: Some(code.clone()),
                http_status: 403,
                ..AuditRecord::management("portal.sign_in", *method, received, started)
            },
            PortalEvent::SignOut { idnp } => AuditRecord {
                calling_user: Some(idnp.clone()),
                subject: Some(idnp.clone()),
                ..AuditRecord::management("portal.sign_out", "sign-out", received, started)
            },
            PortalEvent::Assignments {
                administrator,
                organisation,
                official,
                grants,
            } => AuditRecord {
                calling_user: Some(administrator.clone()),
                consumer: Some(organisation.clone()),
                subject: Some(official.clone()),
                // The grants the official holds from now on, in the field
                // that names grants.
                grant_id: Some(grants.join(",")),
                ..AuditRecord::management("portal.assignments", "assign", received, started)
            },
            PortalEvent::ConnectionRequest {
                idnp,
                organisation,
                request,
                action,
                status,
                problem,
            } => AuditRecord {
                calling_user: Some(idnp.clone()),
                consumer: Some(organisation.clone()),
                decision: if problem.is_some() {
                    Decision::Refused
                } else {
                    Decision::Accepted
                },
                problem_code: problem.clone(),
                http_status: *status,
                ..AuditRecord::management(
                    "portal.connection_request",
                    format!("{request} {action}"),
                    received,
                    started,
                )
            },
            PortalEvent::Refused {
                idnp,
                organisation,
                path,
                code,
                status,
            } => AuditRecord {
                calling_user: Some(idnp.clone()),
                consumer: organisation.clone(),
                decision: Decision::Refused,
                problem_code: Some(code.clone()),
                http_status: *status,
                ..AuditRecord::management("portal.refusal", path.clone(), received, started)
            },
        }
    }
}

/// The portal's audit log.
#[derive(Clone)]
pub struct PortalAudit {
    log: AuditLog,
    /// The budget of refused sign-ins recorded one by one.
    refusals: Arc<governor::DefaultDirectRateLimiter>,
    /// Refused sign-ins over the budget since the last one recorded.
    uncounted: Arc<AtomicU64>,
}

/// The portal's participant key as the log's tree-head signer.
struct PortalTreeSigner {
    key: SigningKey,
    keyid: String,
}

impl TreeHeadSigner for PortalTreeSigner {
    fn keyid(&self) -> String {
        self.keyid.clone()
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, String> {
        self.key.sign(message).map_err(|e| e.to_string())
    }
}

impl PortalAudit {
    /// Opens (or creates) the log in `dir`, its tree heads signed with the
    /// key in `key_pem` and named by the certificate in `cert_pem`. Needs a
    /// tokio runtime (tree heads are published from a task).
    pub fn open(dir: &Path, cert_pem: &str, key_pem: &str) -> Result<PortalAudit, String> {
        let key = SigningKey::from_pem(key_pem).map_err(|e| format!("audit signing key: {e}"))?;
        let certificate = mconnect_sdk::keys::parse_certs(cert_pem)
            .map_err(|e| format!("audit certificate: {e}"))?
            .into_iter()
            .next()
            .ok_or("audit certificate: the file holds no certificate")?;
        let signer = PortalTreeSigner {
            key,
            keyid: certificate_fingerprint(&certificate),
        };
        let mut config = AuditConfig::new(dir);
        config.tree_head_interval = Some(TREE_HEAD_INTERVAL);
        let (log, _recovery) = AuditLog::open(config, Arc::new(signer))
            .map_err(|e| format!("audit log {}: {e}", dir.display()))?;
        let per_second = NonZeroU32::new(REFUSALS_PER_SECOND).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(2 * REFUSALS_PER_SECOND).unwrap_or(NonZeroU32::MIN);
        Ok(PortalAudit {
            log,
            refusals: Arc::new(governor::RateLimiter::direct(
                governor::Quota::per_second(per_second).allow_burst(burst),
            )),
            uncounted: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Records `event` durably; returns its sequence number, or `None` for
    /// a refused sign-in over the budget (counted into the next one).
    pub async fn record(&self, event: &PortalEvent) -> Result<Option<u64>, AuditError> {
        let mut record = event.record(SystemTime::now(), Instant::now());
        if let PortalEvent::SignInRefused { .. } = event {
            if self.refusals.check().is_err() {
                self.uncounted.fetch_add(1, Ordering::Relaxed);
                return Ok(None);
            }
            let earlier = self.uncounted.swap(0, Ordering::Relaxed);
            if earlier > 0 {
                record.refusal_count = Some(earlier + 1);
            }
        }
        self.log.append(record).await.map(Some)
    }

    /// The underlying log (tests read it back).
    pub fn log(&self) -> &AuditLog {
        &self.log
    }

    /// Publishes a last tree head and closes the log.
    pub async fn close(self) -> Result<(), AuditError> {
        self.log.close().await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[tokio::test]
    async fn refused_sign_ins_over_the_budget_are_counted_not_lost() {
        let dir = tempfile::tempdir().unwrap();
        let ca = mconnect::pki::DevCa::generate("test CA").unwrap();
        let own = ca
            .issue(
                "mconnect-portal",
                "1003600000017",
                mconnect::pki::KeyType::Ed25519,
            )
            .unwrap();
        let audit = PortalAudit::open(dir.path(), &own.cert_pem, &own.key_pem).unwrap();
        let refused = PortalEvent::SignInRefused {
            method: "mpass",
            code: "saml.signature".into(),
        };
        let tries = 3 * REFUSALS_PER_SECOND as usize;
        let mut recorded = 0;
        for _ in 0..tries {
            if audit.record(&refused).await.unwrap().is_some() {
                recorded += 1;
            }
        }
        assert!(recorded < tries, "a flood is not recorded one by one");
        let counted: u64 = (0..audit.log().tree_size())
            .map(|seq| audit.log().record(seq).unwrap().unwrap().0)
            .map(|r| r.refusal_count.unwrap_or(1))
            .sum();
        // Those over the budget are counted into the next one recorded.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(audit.record(&refused).await.unwrap().is_some());
        let last = audit.log().tree_size() - 1;
        let total = counted
            + audit
                .log()
                .record(last)
                .unwrap()
                .unwrap()
                .0
                .refusal_count
                .unwrap_or(1);
        assert_eq!(total, tries as u64 + 1);
        // A sign-in is never held back by the refusals' budget.
        let sign_in = PortalEvent::SignIn {
            idnp: "2000000000015".into(),
            organisation: None,
            method: "mpass",
        };
        for _ in 0..tries {
            assert!(audit.record(&sign_in).await.unwrap().is_some());
        }
        audit.close().await.unwrap();
    }

    #[test]
    fn records_name_who_acted_and_about_whom() {
        let now = (SystemTime::now(), Instant::now());
        let change = PortalEvent::Assignments {
            administrator: "2000000000048".into(),
            organisation: "apl-cahul".into(),
            official: "2000000000015".into(),
            grants: vec!["a".into(), "b".into()],
        }
        .record(now.0, now.1);
        assert_eq!(change.event, "portal.assignments");
        assert_eq!(change.calling_user.as_deref(), Some("2000000000048"));
        assert_eq!(change.subject.as_deref(), Some("2000000000015"));
        assert_eq!(change.consumer.as_deref(), Some("apl-cahul"));
        assert_eq!(change.grant_id.as_deref(), Some("a,b"));
        let refused = PortalEvent::SignInRefused {
            method: "mpass",
            code: "saml.expired".into(),
        }
        .record(now.0, now.1);
        assert_eq!(refused.decision, Decision::Refused);
        assert_eq!(refused.problem_code.as_deref(), Some("saml.expired"));
        assert!(refused.is_management());
    }
}
