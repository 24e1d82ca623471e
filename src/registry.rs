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

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};

use crate::crypto::{VerifyingKey, certificate_fingerprint};
use crate::ids::{is_valid_idno, is_valid_participant_id};
use crate::store::{Collection, StateStore, StoreError};

mod stage;
pub use stage::StagedChange;

/// A participant's role on the bus.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Calls services.
    Consumer,
    /// Offers services.
    Provider,
    /// The platform owner (AGE): manages participants, grants and connection requests.
    Operator,
    /// Reads the audit log under a legal basis.
    Auditor,
}

/// The organisation a participant system belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Organisation {
    /// IDNO, 13 digits with control digit.
    pub idno: String,
    /// Official name.
    pub name: String,
}

/// A registered certificate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisteredCertificate {
    /// The certificate as PEM.
    pub pem: String,
    /// Lowercase hex SHA-256 of the DER: the keyid signatures name.
    pub fingerprint: String,
    /// When it stops being valid (unix seconds), from the certificate itself.
    pub not_after: i64,
}

/// A provider endpoint: where the broker forwards calls.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    /// The service code this endpoint serves; `None` for the provider's default endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Base URL, `https://host:port[/prefix]`, no trailing slash.
    pub url: String,
}

/// A registered participant system.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Participant {
    /// Participant id.
    pub id: String,
    /// Its organisation.
    pub organisation: Organisation,
    /// Its roles.
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
    /// A certificate is already registered to another participant.
    #[error("certificate {fingerprint} is already registered to participant `{owner}`")]
    CertificateTaken {
        /// The certificate's fingerprint.
        fingerprint: String,
        /// Who has it.
        owner: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A participant with its parsed public keys, ready for the hot path.
pub struct ParticipantEntry {
    /// The document.
    pub participant: Participant,
    /// Its certificates' public keys, by fingerprint.
    pub keys: HashMap<String, VerifyingKey>,
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

    fn build(participants: Vec<Participant>) -> Result<RegistrySnapshot, RegistryError> {
        let mut snapshot = RegistrySnapshot::default();
        for participant in participants {
            let mut keys = HashMap::new();
            for cert in &participant.certificates {
                let der = pem_to_der(&cert.pem)?;
                let key = VerifyingKey::from_certificate_der(&der).map_err(|e| {
                    RegistryError::Invalid(format!(
                        "certificate {} of `{}`: {e}",
                        cert.fingerprint, participant.id
                    ))
                })?;
                keys.insert(cert.fingerprint.clone(), key);
            }
            let entry = Arc::new(ParticipantEntry { participant, keys });
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
    snapshot: ArcSwap<RegistrySnapshot>,
    /// Serialises writers so each change is computed from the latest state.
    write_lock: Mutex<()>,
}

impl Registry {
    /// Loads every participant from the store.
    pub fn open(store: Arc<dyn StateStore>) -> Result<Registry, RegistryError> {
        let mut participants = Vec::new();
        for (key, bytes) in store.scan(Collection::Participants)? {
            let p: Participant = serde_json::from_slice(&bytes).map_err(|e| {
                RegistryError::Invalid(format!("stored participant `{key}` is unreadable: {e}"))
            })?;
            participants.push(p);
        }
        Ok(Registry {
            snapshot: ArcSwap::from_pointee(RegistrySnapshot::build(participants)?),
            store,
            write_lock: Mutex::new(()),
        })
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

    /// Registers or replaces a participant (an operator's act).
    pub fn upsert(&self, participant: Participant) -> Result<(), RegistryError> {
        validate(&participant)?;
        self.change(|all| {
            all.retain(|p| p.id != participant.id);
            all.push(participant.clone());
            Ok(())
        })
    }

    /// Replaces a provider's endpoints (the provider's own act).
    pub fn set_endpoints(&self, id: &str, endpoints: Vec<Endpoint>) -> Result<(), RegistryError> {
        for e in &endpoints {
            validate_endpoint(e)?;
        }
        self.change(|all| {
            let p = all
                .iter_mut()
                .find(|p| p.id == id)
                .ok_or_else(|| RegistryError::Unknown(id.to_string()))?;
            p.endpoints = endpoints.clone();
            Ok(())
        })
    }

    /// Adds a certificate to a participant (rotation: the old one stays until removed).
    pub fn add_certificate(&self, id: &str, pem: &str) -> Result<String, RegistryError> {
        let cert = registered_certificate(pem)?;
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

    /// Removes a certificate from a participant.
    pub fn remove_certificate(&self, id: &str, fingerprint: &str) -> Result<(), RegistryError> {
        self.change(|all| {
            let p = all
                .iter_mut()
                .find(|p| p.id == id)
                .ok_or_else(|| RegistryError::Unknown(id.to_string()))?;
            p.certificates.retain(|c| c.fingerprint != fingerprint);
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
        let next = RegistrySnapshot::build(after.clone())?;
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

/// Builds a registered certificate from PEM, reading its fingerprint and expiry.
pub fn registered_certificate(pem: &str) -> Result<RegisteredCertificate, RegistryError> {
    let der = pem_to_der(pem)?;
    let (_, not_after) = crate::tls::validity(&der)
        .ok_or_else(|| RegistryError::Invalid("certificate is not valid X.509".into()))?;
    VerifyingKey::from_certificate_der(&der)
        .map_err(|e| RegistryError::Invalid(format!("certificate key unusable: {e}")))?;
    Ok(RegisteredCertificate {
        pem: pem.trim().to_string() + "\n",
        fingerprint: certificate_fingerprint(&der),
        not_after,
    })
}

fn pem_to_der(pem: &str) -> Result<Vec<u8>, RegistryError> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    CertificateDer::from_pem_slice(pem.as_bytes())
        .map(|c| c.to_vec())
        .map_err(|e| RegistryError::Invalid(format!("certificate PEM unreadable: {e}")))
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
    for e in &p.endpoints {
        validate_endpoint(e)?;
    }
    Ok(())
}

fn validate_endpoint(e: &Endpoint) -> Result<(), RegistryError> {
    let ok = e.url.starts_with("https://")
        && !e.url.ends_with('/')
        && e.url.parse::<http::Uri>().is_ok_and(|u| u.host().is_some());
    if ok {
        Ok(())
    } else {
        Err(RegistryError::Invalid(format!(
            "endpoint `{}` must be an https:// URL with a host and no trailing slash",
            e.url
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{DevCa, KeyType};
    use crate::store::RedbStore;

    fn participant(ca: &DevCa, id: &str) -> Participant {
        let issued = ca.issue(id, "Org", KeyType::Ed25519).unwrap();
        Participant {
            id: id.into(),
            organisation: Organisation {
                idno: "1003600000017".into(),
                name: "Org".into(),
            },
            roles: vec![Role::Provider],
            certificates: vec![registered_certificate(&issued.cert_pem).unwrap()],
            endpoints: vec![Endpoint {
                service: None,
                url: "https://127.0.0.1:9000".into(),
            }],
            confidential: false,
        }
    }

    #[test]
    fn registry_survives_restart_and_indexes_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        let ca = DevCa::generate("ca").unwrap();
        let p = participant(&ca, "asp-rsp");
        let fp = p.certificates[0].fingerprint.clone();
        {
            let reg = Registry::open(Arc::new(RedbStore::open(&path).unwrap())).unwrap();
            reg.upsert(p.clone()).unwrap();
            let rotated = ca.issue("asp-rsp", "Org", KeyType::EcdsaP256).unwrap();
            reg.add_certificate("asp-rsp", &rotated.cert_pem).unwrap();
            reg.set_endpoints(
                "asp-rsp",
                vec![Endpoint {
                    service: Some("person-by-idnp".into()),
                    url: "https://127.0.0.1:9001".into(),
                }],
            )
            .unwrap();
        }
        let reg = Registry::open(Arc::new(RedbStore::open(&path).unwrap())).unwrap();
        let snap = reg.snapshot();
        let entry = snap.by_fingerprint(&fp).unwrap();
        assert_eq!(entry.participant.id, "asp-rsp");
        assert_eq!(
            entry.keys.len(),
            2,
            "both certificates active during rotation"
        );
        assert_eq!(
            entry.participant.endpoint_for("person-by-idnp"),
            Some("https://127.0.0.1:9001")
        );
        assert_eq!(entry.participant.endpoint_for("other"), None);
    }

    #[test]
    fn a_staged_change_is_invisible_until_committed_and_never_overwrites_a_newer_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        let ca = DevCa::generate("ca").unwrap();
        let reg = Registry::open(Arc::new(RedbStore::open(&path).unwrap())).unwrap();
        reg.upsert(participant(&ca, "asp-rsp")).unwrap();
        let moved = vec![Endpoint {
            service: None,
            url: "https://127.0.0.1:9100".into(),
        }];
        let url = |reg: &Registry| {
            reg.snapshot().get("asp-rsp").unwrap().participant.endpoints[0]
                .url
                .clone()
        };
        // Invalid: refused at staging, nothing written.
        let bad = vec![Endpoint {
            service: None,
            url: "ftp://nowhere".into(),
        }];
        assert!(
            reg.stage(|r| r.set_endpoints("asp-rsp", bad.clone()))
                .is_err()
        );
        // Valid: nothing visible, nothing stored until commit.
        let staged = reg
            .stage(|r| r.set_endpoints("asp-rsp", moved.clone()))
            .unwrap();
        assert_eq!(url(&reg), "https://127.0.0.1:9000");
        let reopened =
            |path: &std::path::Path| Registry::open(Arc::new(RedbStore::open(path).unwrap()));
        drop(reg);
        let reg = reopened(&path).unwrap();
        assert_eq!(
            url(&reg),
            "https://127.0.0.1:9000",
            "staging stored nothing"
        );
        // A stage taken on another registry value is refused on this one.
        assert!(reg.commit(staged).is_err());
        let staged = reg
            .stage(|r| r.set_endpoints("asp-rsp", moved.clone()))
            .unwrap();
        // Something else changed the registry meanwhile: refused.
        reg.add_certificate(
            "asp-rsp",
            &ca.issue("asp-rsp", "Org", KeyType::EcdsaP256)
                .unwrap()
                .cert_pem,
        )
        .unwrap();
        assert!(reg.commit(staged).is_err());
        assert_eq!(url(&reg), "https://127.0.0.1:9000");
        let staged = reg
            .stage(|r| r.set_endpoints("asp-rsp", moved.clone()))
            .unwrap();
        reg.commit(staged).unwrap();
        assert_eq!(url(&reg), "https://127.0.0.1:9100");
        drop(reg);
        assert_eq!(url(&reopened(&path).unwrap()), "https://127.0.0.1:9100");
    }

    #[test]
    fn refuses_invalid_documents_and_shared_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let reg = Registry::open(Arc::new(
            RedbStore::open(&dir.path().join("s.redb")).unwrap(),
        ))
        .unwrap();
        let ca = DevCa::generate("ca").unwrap();
        let mut bad = participant(&ca, "asp-rsp");
        bad.organisation.idno = "1003600000018".into();
        assert!(matches!(reg.upsert(bad), Err(RegistryError::Invalid(_))));
        let a = participant(&ca, "a");
        let mut b = participant(&ca, "b");
        b.certificates = a.certificates.clone();
        reg.upsert(a).unwrap();
        assert!(matches!(
            reg.upsert(b),
            Err(RegistryError::CertificateTaken { .. })
        ));
        assert!(matches!(
            reg.set_endpoints("nobody", vec![]),
            Err(RegistryError::Unknown(_))
        ));
    }
}
