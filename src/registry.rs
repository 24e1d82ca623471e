//! The participant registry: who is on the bus, their organisation, roles,
//! certificates and provider endpoints.
//!
//! Documents live in the [`StateStore`]; the broker reads an immutable
//! in-memory [`RegistrySnapshot`] (indexed by id and by certificate
//! fingerprint, with each certificate's public key parsed once) that every
//! change replaces atomically.
//!
//! Invariants: a change is durable before it is visible; a certificate
//! fingerprint belongs to at most one participant; several certificates per
//! participant may be active at once, so keys rotate without downtime.
//!
//! *Certificate invariant* (PROTOCOL.md section 1, `crate::trust`): a
//! certificate enters the registry (add, operator upsert, sandbox
//! registration) only if it chains to the bus CA and is in date; a stored one
//! that no longer chains (checked at every snapshot build, so at start-up)
//! stays listed but yields no key; and every use of a key or of a TLS
//! identity goes through [`ParticipantEntry::key_at`] or
//! [`ParticipantEntry::certificate_at`], which compare the dates kept as
//! integers with the time of use. The raw keys are private to this module so
//! that no caller can skip those checks.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use http::StatusCode;
use serde::{Deserialize, Serialize};

use crate::crypto::{VerifyingKey, certificate_fingerprint};
use crate::ids::{is_valid_idno, is_valid_participant_id};
use crate::store::{ChangeFeed, Collection, StateStore, StoreError};
use crate::trust::{CertificateRefusal, ParsedCertificate, TrustAnchors, check_dates};

mod stage;
pub use stage::StagedChange;

pub use mconnect_sdk::protocol::Role;

/// The organisation a participant system belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Organisation {
    /// IDNO, 13 digits with control digit.
    #[schemars(regex(pattern = r"^[0-9]{13}$"), extend("format" = "idno"))]
    pub idno: String,
    /// Official name.
    pub name: String,
}

/// A registered certificate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisteredCertificate {
    /// The certificate as PEM.
    #[schemars(extend("format" = "pem-certificate"))]
    pub pem: String,
    /// Lowercase hex SHA-256 of the DER: the keyid signatures name.
    #[schemars(regex(pattern = r"^[0-9a-f]{64}$"))]
    pub fingerprint: String,
    /// When it stops being valid (unix seconds), from the certificate itself.
    pub not_after: i64,
}

/// A provider endpoint: where the broker forwards calls.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    /// The service code this endpoint serves (one the catalog lists for the
    /// provider); left out for the provider's default endpoint.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    #[schemars(regex(pattern = r"^[a-z0-9][a-z0-9.-]{0,127}$"), with = "String")]
    pub service: Option<String>,
    /// Base URL, `https://host:port[/prefix]`, no trailing slash.
    #[schemars(regex(pattern = ENDPOINT_URL_PATTERN))]
    pub url: String,
}

/// An endpoint base URL as [`validate_endpoint`] takes it: https, a host,
/// an optional port and path, no credentials, query, fragment or trailing
/// slash.
pub const ENDPOINT_URL_PATTERN: &str =
    r"^https://[A-Za-z0-9]([A-Za-z0-9.-]{0,252})(:[0-9]{1,4})?(/[A-Za-z0-9._~%!$&'()*+,;=:-]+)*$";

/// An optional member that, when present, must hold a value: `null` is
/// refused like any other wrong type (serde's `Option` would take it as
/// absent).
fn present<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

/// A registered participant system.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
// Only providers have endpoints.
#[schemars(extend(
    "if" = {"properties": {"roles": {"not": {"contains": {"const": "provider"}}}}},
    "then" = {"properties": {"endpoints": {"maxItems": 0}}}
))]
pub struct Participant {
    /// Participant id.
    #[schemars(regex(pattern = r"^[a-z0-9][a-z0-9-]{0,62}$"))]
    pub id: String,
    /// Its organisation.
    pub organisation: Organisation,
    /// Its roles.
    #[schemars(length(min = 1))]
    pub roles: Vec<Role>,
    /// Its certificates (several during rotation).
    pub certificates: Vec<RegisteredCertificate>,
    /// Its endpoints (providers only).
    #[serde(default)]
    pub endpoints: Vec<Endpoint>,
    /// Confidential consumers (security services) are left out of citizens' access history.
    #[serde(default)]
    pub confidential: bool,
}

impl Participant {
    /// Whether it has the role.
    pub fn has_role(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    /// The endpoint for a service: its own, else the provider's default.
    pub fn endpoint_for(&self, service_code: &str) -> Option<&str> {
        self.endpoints
            .iter()
            .find(|e| e.service.as_deref() == Some(service_code))
            .or_else(|| self.endpoints.iter().find(|e| e.service.is_none()))
            .map(|e| e.url.as_str())
    }
}

/// Why a registry change was refused.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The participant document is invalid.
    #[error("invalid participant: {0}")]
    Invalid(String),
    /// No such participant.
    #[error("no participant `{0}` is registered")]
    Unknown(String),
    /// Endpoints for a registered participant that is not a provider (a
    /// conflict with its registered roles).
    #[error("participant `{0}` is not a provider, so it has no endpoints")]
    NotAProvider(String),
    /// An endpoint names a service the catalog does not list for the
    /// provider (a conflict with the catalog in force, not a malformed body).
    #[error("{0}")]
    NotCatalogued(String),
    /// A certificate is already registered to another participant.
    #[error("certificate {fingerprint} is already registered to participant `{owner}`")]
    CertificateTaken {
        /// The certificate's fingerprint.
        fingerprint: String,
        /// Who has it.
        owner: String,
    },
    /// A certificate does not chain to the bus CA, is out of date or unreadable.
    #[error("certificate {fingerprint}: {refusal}")]
    Certificate {
        /// Its fingerprint, when it could be read.
        fingerprint: String,
        /// Why it is refused.
        refusal: CertificateRefusal,
    },
    /// The fingerprint is not one of the participant's certificates.
    #[error("certificate {fingerprint} is not registered to participant `{participant}`")]
    UnknownCertificate {
        /// The participant.
        participant: String,
        /// The fingerprint asked for.
        fingerprint: String,
    },
    /// Removing it would leave the participant without a usable certificate.
    #[error(
        "certificate {fingerprint} is the last usable certificate of `{participant}`; register its successor first (the operator may remove it regardless)"
    )]
    LastCertificate {
        /// The participant.
        participant: String,
        /// The fingerprint asked for.
        fingerprint: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl RegistryError {
    /// The HTTP status and problem `code` the admin API answers with.
    pub fn problem(&self) -> (StatusCode, &'static str) {
        match self {
            RegistryError::Certificate { refusal, .. } => (StatusCode::BAD_REQUEST, refusal.code()),
            RegistryError::UnknownCertificate { .. } => {
                (StatusCode::NOT_FOUND, "certificate.unknown")
            }
            RegistryError::LastCertificate { .. } => (StatusCode::CONFLICT, "certificate.last"),
            RegistryError::Unknown(_) => (StatusCode::NOT_FOUND, "participant.unknown"),
            RegistryError::CertificateTaken { .. } => (StatusCode::CONFLICT, "certificate.taken"),
            RegistryError::NotCatalogued(_) => (StatusCode::CONFLICT, "endpoint.not_catalogued"),
            RegistryError::NotAProvider(_) => (StatusCode::CONFLICT, "participant.not_provider"),
            RegistryError::Invalid(_) | RegistryError::Store(_) => {
                (StatusCode::BAD_REQUEST, "admin.invalid")
            }
        }
    }
}

/// A registered certificate's public key with what every use checks: its
/// dates as integers, and whether it chains to the bus CA at all.
struct CertificateKey {
    key: VerifyingKey,
    not_before: i64,
    not_after: i64,
    /// Set when the chain check failed at the snapshot build: such a key is
    /// kept only so that its refusal can say why.
    untrusted: Option<CertificateRefusal>,
}

/// A participant with its parsed public keys, ready for the hot path.
pub struct ParticipantEntry {
    /// The document.
    pub participant: Participant,
    /// Its certificates' public keys, by fingerprint; reached only through
    /// the checked accessors below.
    keys: HashMap<String, CertificateKey>,
}

/// Why a certificate of a participant may not be used now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRefusal {
    /// The participant.
    pub participant: String,
    /// The certificate fingerprint asked for.
    pub fingerprint: String,
    /// Why; `None` when no such certificate is registered to the participant
    /// (never was, or was removed).
    pub reason: Option<CertificateRefusal>,
}

impl std::fmt::Display for KeyRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.reason {
            None => write!(
                f,
                "certificate {} is not registered to participant `{}` (never registered, or removed)",
                self.fingerprint, self.participant
            ),
            Some(reason) => write!(
                f,
                "certificate {} of participant `{}` is not accepted: {reason}",
                self.fingerprint, self.participant
            ),
        }
    }
}

impl ParticipantEntry {
    /// Parses the participant's certificates once: keys, dates, and the
    /// chain checked against `anchors` at `now` (within each certificate's
    /// own validity; the dates are left to each use).
    pub fn new(
        participant: Participant,
        anchors: &TrustAnchors,
        now: i64,
    ) -> Result<ParticipantEntry, RegistryError> {
        let mut keys = HashMap::new();
        for cert in &participant.certificates {
            let unusable = |e: &dyn std::fmt::Display| {
                RegistryError::Invalid(format!(
                    "certificate {} of `{}`: {e}",
                    cert.fingerprint, participant.id
                ))
            };
            let parsed = ParsedCertificate::from_pem(&cert.pem).map_err(|e| unusable(&e))?;
            if certificate_fingerprint(parsed.leaf()) != cert.fingerprint {
                return Err(unusable(&"the fingerprint does not match the certificate"));
            }
            let key =
                VerifyingKey::from_certificate_der(parsed.leaf()).map_err(|e| unusable(&e))?;
            keys.insert(
                cert.fingerprint.clone(),
                CertificateKey {
                    key,
                    not_before: parsed.not_before,
                    not_after: anchors.chain_not_after(&parsed),
                    untrusted: anchors.check_chain(&parsed, now).err(),
                },
            );
        }
        Ok(ParticipantEntry { participant, keys })
    }

    /// The public key of a registered certificate, only if that certificate
    /// chains to the bus CA and is in date at `now` (unix seconds). Two
    /// integer comparisons and a hash lookup: no parsing.
    pub fn key_at(&self, fingerprint: &str, now: i64) -> Result<&VerifyingKey, KeyRefusal> {
        let refuse = |reason| KeyRefusal {
            participant: self.participant.id.clone(),
            fingerprint: fingerprint.to_string(),
            reason,
        };
        let entry = self.keys.get(fingerprint).ok_or_else(|| refuse(None))?;
        if let Some(untrusted) = &entry.untrusted {
            return Err(refuse(Some(untrusted.clone())));
        }
        check_dates(entry.not_before, entry.not_after, now).map_err(|r| refuse(Some(r)))?;
        Ok(&entry.key)
    }

    /// Whether a registered certificate may identify the participant at
    /// `now` (the TLS client identity, checked at each request because a
    /// connection can outlive its certificate).
    pub fn certificate_at(&self, fingerprint: &str, now: i64) -> Result<(), KeyRefusal> {
        self.key_at(fingerprint, now).map(|_| ())
    }

    /// How many of its certificates are usable at `now`.
    pub fn usable_certificates(&self, now: i64) -> usize {
        self.keys
            .keys()
            .filter(|fp| self.key_at(fp, now).is_ok())
            .count()
    }

    /// How many certificates it has registered, usable or not.
    pub fn registered_certificates(&self) -> usize {
        self.keys.len()
    }
}

/// An immutable view of the registry.
#[derive(Default)]
pub struct RegistrySnapshot {
    by_id: HashMap<String, Arc<ParticipantEntry>>,
    by_fingerprint: HashMap<String, Arc<ParticipantEntry>>,
}

impl RegistrySnapshot {
    /// A participant by id.
    pub fn get(&self, id: &str) -> Option<&Arc<ParticipantEntry>> {
        self.by_id.get(id)
    }

    /// The participant owning a certificate.
    pub fn by_fingerprint(&self, fingerprint: &str) -> Option<&Arc<ParticipantEntry>> {
        self.by_fingerprint.get(fingerprint)
    }

    /// Every participant, in id order.
    pub fn participants(&self) -> Vec<&Participant> {
        let mut all: Vec<&Participant> = self.by_id.values().map(|e| &e.participant).collect();
        all.sort_by(|a, b| a.id.cmp(&b.id));
        all
    }

    /// Indexes the participants; each certificate's chain is checked at
    /// `now` (within its own validity), its dates kept for every use.
    fn build(
        participants: Vec<Participant>,
        anchors: &TrustAnchors,
        now: i64,
    ) -> Result<RegistrySnapshot, RegistryError> {
        let mut snapshot = RegistrySnapshot::default();
        for participant in participants {
            let entry = Arc::new(ParticipantEntry::new(participant, anchors, now)?);
            for fp in entry.keys.keys() {
                if let Some(other) = snapshot.by_fingerprint.insert(fp.clone(), entry.clone()) {
                    return Err(RegistryError::CertificateTaken {
                        fingerprint: fp.clone(),
                        owner: other.participant.id.clone(),
                    });
                }
            }
            snapshot
                .by_id
                .insert(entry.participant.id.clone(), entry.clone());
        }
        Ok(snapshot)
    }
}

/// The registry: durable documents plus the current snapshot.
pub struct Registry {
    store: Arc<dyn StateStore>,
    anchors: TrustAnchors,
    snapshot: ArcSwap<RegistrySnapshot>,
    /// Serialises writers so each change is computed from the latest state.
    write_lock: Mutex<()>,
    /// What other brokers on a shared store commit (`None` on redb).
    feed: Option<ChangeFeed>,
}

impl Registry {
    /// Loads every participant from the store. Certificates are checked
    /// against `anchors` (the bus CA of the broker's `tls.ca`): a stored one
    /// that no longer chains or is out of date stays listed but signs nothing.
    pub fn open(
        store: Arc<dyn StateStore>,
        anchors: TrustAnchors,
    ) -> Result<Registry, RegistryError> {
        // Subscribed before the first read: a commit by another broker after
        // it is announced, none falls in between.
        let feed = store.subscribe();
        let participants = stored_participants(store.as_ref())?;
        let now = unix_now();
        let snapshot = RegistrySnapshot::build(participants, &anchors, now)?;
        for entry in snapshot.by_id.values() {
            for fp in entry.keys.keys() {
                if let Err(refusal) = entry.key_at(fp, now) {
                    tracing::warn!(%refusal, "stored certificate will sign nothing; remove it or register a current one");
                }
            }
        }
        Ok(Registry {
            snapshot: ArcSwap::from_pointee(snapshot),
            store,
            anchors,
            write_lock: Mutex::new(()),
            feed,
        })
    }

    /// The change feed of a store shared with other brokers (`None` when
    /// this broker is its only writer): what `state_sync` follows, and what
    /// says whether this broker's view is current enough to change it.
    pub fn feed(&self) -> Option<&ChangeFeed> {
        self.feed.as_ref()
    }

    /// Reads every participant from the store again (another broker changed
    /// them) and swaps the snapshot if anything differs, under the writers'
    /// lock, so it never swaps out a change committed meanwhile. Says
    /// whether it swapped. Not audited: the broker that made the change
    /// audited it.
    pub fn refresh(&self) -> Result<bool, RegistryError> {
        let _guard = self
            .write_lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let participants = stored_participants(self.store.as_ref())?;
        let current = self.snapshot.load();
        if current.participants().into_iter().eq(participants.iter()) {
            // Unchanged (this broker's own write, or a write undone): keep
            // the snapshot, so that a change staged on it still commits.
            return Ok(false);
        }
        let next = RegistrySnapshot::build(participants, &self.anchors, unix_now())?;
        self.snapshot.store(Arc::new(next));
        Ok(true)
    }

    /// The bus CA certificates are checked against.
    pub fn anchors(&self) -> &TrustAnchors {
        &self.anchors
    }

    /// Reads a certificate offered for registration and checks it against
    /// the bus CA at the current time.
    pub fn check_new_certificate(&self, pem: &str) -> Result<RegisteredCertificate, RegistryError> {
        admit(&self.anchors, pem, unix_now())
    }

    /// The state store the registry lives in, shared with the broker's other
    /// durable collections (connection requests and the grants they made).
    pub fn store(&self) -> &Arc<dyn StateStore> {
        &self.store
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<RegistrySnapshot> {
        self.snapshot.load_full()
    }

    /// Registers or replaces a participant (an operator's act). A
    /// certificate the participant does not already hold must chain to the
    /// bus CA and be in date now; one it holds is kept as it is (its use is
    /// checked at every use anyway), so an operator can edit a participant
    /// whose old certificate has since expired.
    pub fn upsert(&self, mut participant: Participant) -> Result<(), RegistryError> {
        validate(&participant)?;
        let now = unix_now();
        let current = self.snapshot();
        let held = current.get(&participant.id);
        for cert in &mut participant.certificates {
            if !held.is_some_and(|e| e.participant.certificates.contains(cert)) {
                // The document's fingerprint and expiry are recomputed from
                // the PEM, never taken from the caller.
                let admitted = admit(&self.anchors, &cert.pem, now)?;
                if admitted.fingerprint != cert.fingerprint {
                    return Err(RegistryError::Invalid(format!(
                        "fingerprint {} does not match its certificate ({})",
                        cert.fingerprint, admitted.fingerprint
                    )));
                }
                *cert = admitted;
            }
        }
        self.change(|all| {
            all.retain(|p| p.id != participant.id);
            all.push(participant.clone());
            Ok(())
        })
    }

    /// Replaces a provider's endpoints. Only providers have endpoints; each
    /// service is named at most once. Which services the catalog lists for
    /// the provider, and who may ask, is the admin API's check.
    pub fn set_endpoints(&self, id: &str, endpoints: Vec<Endpoint>) -> Result<(), RegistryError> {
        validate_endpoints(id, &endpoints)?;
        self.change(|all| {
            let p = all
                .iter_mut()
                .find(|p| p.id == id)
                .ok_or_else(|| RegistryError::Unknown(id.to_string()))?;
            if !endpoints.is_empty() && !p.has_role(Role::Provider) {
                return Err(RegistryError::NotAProvider(id.to_string()));
            }
            p.endpoints = endpoints.clone();
            Ok(())
        })
    }

    /// Adds a certificate to a participant (rotation: the old one stays
    /// until removed). It must chain to the bus CA and be in date now.
    pub fn add_certificate(&self, id: &str, pem: &str) -> Result<String, RegistryError> {
        let cert = admit(&self.anchors, pem, unix_now())?;
        let fp = cert.fingerprint.clone();
        self.change(|all| {
            let p = all
                .iter_mut()
                .find(|p| p.id == id)
                .ok_or_else(|| RegistryError::Unknown(id.to_string()))?;
            if !p
                .certificates
                .iter()
                .any(|c| c.fingerprint == cert.fingerprint)
            {
                p.certificates.push(cert.clone());
            }
            Ok(())
        })?;
        Ok(fp)
    }

    /// Removes a certificate from a participant; its key signs nothing from
    /// the moment the new snapshot is published. Unless `allow_last`, a
    /// removal that would leave the participant without a usable certificate
    /// is refused: it could then not even reach the admin API to add one.
    pub fn remove_certificate(
        &self,
        id: &str,
        fingerprint: &str,
        allow_last: bool,
    ) -> Result<(), RegistryError> {
        let now = unix_now();
        let anchors = &self.anchors;
        self.change(|all| {
            let p = all
                .iter_mut()
                .find(|p| p.id == id)
                .ok_or_else(|| RegistryError::Unknown(id.to_string()))?;
            if !p.certificates.iter().any(|c| c.fingerprint == fingerprint) {
                return Err(RegistryError::UnknownCertificate {
                    participant: id.to_string(),
                    fingerprint: fingerprint.to_string(),
                });
            }
            p.certificates.retain(|c| c.fingerprint != fingerprint);
            // Counted here, under the write lock, so that two concurrent
            // removals cannot each leave the other's certificate as the last.
            let usable = p
                .certificates
                .iter()
                .filter(|c| {
                    ParsedCertificate::from_pem(&c.pem)
                        .is_ok_and(|parsed| anchors.check(&parsed, now).is_ok())
                })
                .count();
            if usable == 0 && !allow_last {
                return Err(RegistryError::LastCertificate {
                    participant: id.to_string(),
                    fingerprint: fingerprint.to_string(),
                });
            }
            Ok(())
        })
    }

    /// Applies a change to a copy of all participants, stores what changed,
    /// then publishes the new snapshot.
    fn change(
        &self,
        f: impl FnOnce(&mut Vec<Participant>) -> Result<(), RegistryError>,
    ) -> Result<(), RegistryError> {
        let _guard = match self.write_lock.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let current = self.snapshot.load();
        let before: Vec<Participant> = current.participants().into_iter().cloned().collect();
        let mut after = before.clone();
        f(&mut after)?;
        let next = RegistrySnapshot::build(after.clone(), &self.anchors, unix_now())?;
        let mut docs = Vec::new();
        for p in &after {
            if !before.contains(p) {
                let bytes =
                    serde_json::to_vec(p).map_err(|e| RegistryError::Invalid(e.to_string()))?;
                docs.push((p.id.clone(), bytes));
            }
        }
        let removed: Vec<&str> = before
            .iter()
            .filter(|b| !after.iter().any(|a| a.id == b.id))
            .map(|b| b.id.as_str())
            .collect();
        let mut writes: Vec<crate::store::Write<'_>> = docs
            .iter()
            .map(|(k, v)| crate::store::Write::Put(Collection::Participants, k, v))
            .collect();
        writes.extend(
            removed
                .iter()
                .map(|k| crate::store::Write::Delete(Collection::Participants, k)),
        );
        self.store.apply(&writes)?;
        self.snapshot.store(Arc::new(next));
        Ok(())
    }
}

/// Every stored participant, in id order.
fn stored_participants(store: &dyn StateStore) -> Result<Vec<Participant>, RegistryError> {
    store
        .scan(Collection::Participants)?
        .into_iter()
        .map(|(key, bytes)| {
            serde_json::from_slice(&bytes).map_err(|e| {
                RegistryError::Invalid(format!("stored participant `{key}` is unreadable: {e}"))
            })
        })
        .collect()
}

/// Builds a registered certificate from PEM, reading its fingerprint and
/// expiry. It does not judge the certificate: the registry does, with
/// [`admit`], when the certificate enters.
pub fn registered_certificate(pem: &str) -> Result<RegisteredCertificate, RegistryError> {
    let parsed =
        ParsedCertificate::from_pem(pem).map_err(|refusal| RegistryError::Certificate {
            fingerprint: "(unreadable)".into(),
            refusal,
        })?;
    let fingerprint = certificate_fingerprint(parsed.leaf());
    VerifyingKey::from_certificate_der(parsed.leaf()).map_err(|e| RegistryError::Certificate {
        fingerprint: fingerprint.clone(),
        refusal: CertificateRefusal::Unreadable(format!("key unusable: {e}")),
    })?;
    Ok(RegisteredCertificate {
        pem: pem.trim().to_string() + "\n",
        fingerprint,
        not_after: parsed.not_after,
    })
}

/// A certificate entering the registry: readable, with a usable key,
/// chained to the bus CA and in date at `now`.
pub fn admit(
    anchors: &TrustAnchors,
    pem: &str,
    now: i64,
) -> Result<RegisteredCertificate, RegistryError> {
    let cert = registered_certificate(pem)?;
    let parsed =
        ParsedCertificate::from_pem(&cert.pem).map_err(|refusal| RegistryError::Certificate {
            fingerprint: cert.fingerprint.clone(),
            refusal,
        })?;
    anchors
        .check(&parsed, now)
        .map_err(|refusal| RegistryError::Certificate {
            fingerprint: cert.fingerprint.clone(),
            refusal,
        })?;
    Ok(cert)
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn validate(p: &Participant) -> Result<(), RegistryError> {
    if !is_valid_participant_id(&p.id) {
        return Err(RegistryError::Invalid(format!(
            "id `{}` must match [a-z0-9][a-z0-9-]{{0,62}}",
            p.id
        )));
    }
    if !is_valid_idno(&p.organisation.idno) {
        return Err(RegistryError::Invalid(format!(
            "organisation IDNO `{}` is not 13 digits with a valid control digit",
            p.organisation.idno
        )));
    }
    if p.roles.is_empty() {
        return Err(RegistryError::Invalid(format!(
            "participant `{}` needs at least one role",
            p.id
        )));
    }
    for c in &p.certificates {
        let fresh = registered_certificate(&c.pem)?;
        if fresh.fingerprint != c.fingerprint {
            return Err(RegistryError::Invalid(format!(
                "fingerprint {} does not match its certificate",
                c.fingerprint
            )));
        }
    }
    if !p.endpoints.is_empty() && !p.has_role(Role::Provider) {
        return Err(RegistryError::Invalid(format!(
            "participant `{}` is not a provider, so it has no endpoints",
            p.id
        )));
    }
    validate_endpoints(&p.id, &p.endpoints)
}

fn validate_endpoints(id: &str, endpoints: &[Endpoint]) -> Result<(), RegistryError> {
    for (i, e) in endpoints.iter().enumerate() {
        validate_endpoint(e)?;
        if endpoints[..i].iter().any(|o| o.service == e.service) {
            return Err(RegistryError::Invalid(format!(
                "participant `{id}` names {} twice among its endpoints; give each service one endpoint",
                e.service
                    .as_deref()
                    .map_or("the default endpoint".to_string(), |s| format!(
                        "service `{s}`"
                    ))
            )));
        }
    }
    Ok(())
}

fn validate_endpoint(e: &Endpoint) -> Result<(), RegistryError> {
    // The broker appends the service path, subpath and query to this base,
    // so it may carry no query, fragment or credentials of its own.
    let ok = e.url.starts_with("https://")
        && !e.url.ends_with('/')
        && !e.url.contains(['?', '#', '@', '\\'])
        && e.url.parse::<http::Uri>().is_ok_and(|u| u.host().is_some());
    if ok {
        Ok(())
    } else {
        Err(RegistryError::Invalid(format!(
            "endpoint `{}` must be an https:// URL with a host, no credentials, query or fragment, and no trailing slash",
            e.url
        )))
    }
}

#[cfg(test)]
mod tests;
