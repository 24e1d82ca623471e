//! The power-of-attorney backend: the [`PowerBackend`] trait, shaped after
//! the real MPower API (an authorisation has a 16-digit code, a type code
//! `AT-…`, an authorising party — natural or legal person — an authorised
//! natural person, validity dates and a status), and [`LocalBackend`], the
//! reference implementation persisted in one JSON file.
//!
//! [`lifecycle`] is a part of the backend, not of the bus side: it is the
//! authorisation's state machine, which the backend applies to every change
//! under its state lock (the real MPower enforces its own). The bus side
//! (`service.rs`, `consent.rs`) only decides who the actor is.
//!
//! Invariants:
//! - an authorisation is *valid* only when its status is `Valid` and the day
//!   asked about lies within `valid_from..=valid_until`; every other state
//!   answers "no" (fail closed);
//! - it becomes `Valid` only through the grantor's verified consent
//!   ([`lifecycle`] decides each transition; `consent.rs` verifies the
//!   consent); a record loaded from an older state file that is `Valid` or
//!   `Suspended` without a recorded consent is put back to
//!   `PendingAcceptance`, because its consent was never verified;
//! - a transition applies only to the revision its consent was verified
//!   against (compare and set under the state lock);
//! - [`LocalBackend`] acknowledges a change only after the whole state is on
//!   disk (`mconnect_sdk::adapter::write_atomic`: a temporary file, fsynced,
//!   renamed over the old one), so a crash leaves either the old or the new
//!   state, never half of one;
//! - codes are unique within a backend.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use mconnect_sdk::adapter::{now_rfc3339, write_atomic};
use serde::{Deserialize, Serialize};

use self::lifecycle::{Action, Actor};

pub mod lifecycle;

/// Whether the authorising party is a natural or a legal person.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PartyType {
    /// A natural person, identified by IDNP.
    Natural,
    /// A legal person, identified by IDNO.
    Legal,
}

/// The authorising party of an authorisation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Party {
    /// Natural (IDNP) or legal (IDNO) person.
    pub party_type: PartyType,
    /// The IDNP or IDNO.
    pub id: String,
}

/// The status of an authorisation, as MPower names them ([`lifecycle`]
/// says how one leads to another).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuthorisationStatus {
    /// Filed as a draft; not yet put to the grantor.
    Draft,
    /// Waiting for the grantor's consent. Older state files said `Pending`.
    #[serde(alias = "Pending")]
    PendingAcceptance,
    /// In force (within its dates).
    Valid,
    /// Suspended by the grantor; may be resumed.
    Suspended,
    /// Revoked by the grantor; final. Older state files said `Canceled`.
    #[serde(alias = "Canceled")]
    Revoked,
    /// Its last day has passed; final.
    Expired,
}

/// One power of attorney.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Authorisation {
    /// The 16-digit code that identifies it.
    pub code: String,
    /// The authorisation type code (`AT-…`): what the authorised person may do.
    pub authorisation_type: String,
    /// Who gives the power.
    pub authorising: Party,
    /// IDNP of the person who receives it.
    pub authorised_idnp: String,
    /// First day in force (`YYYY-MM-DD`).
    pub valid_from: String,
    /// Last day in force (`YYYY-MM-DD`, inclusive).
    pub valid_until: String,
    /// Status.
    pub status: AuthorisationStatus,
    /// Raised by every transition; a consent statement names the revision
    /// it consents to.
    #[serde(default)]
    pub revision: u64,
    /// When it was registered (RFC 3339).
    pub granted_at: String,
    /// The bus participant through which it was registered.
    pub granted_via: String,
    /// How the grantor's consent was verified when it last became Valid
    /// (`mcabinet:{idnp}` or `msign:{request id}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepted_via: Option<String>,
    /// When the status last changed (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changed_at: Option<String>,
    /// When it was revoked (RFC 3339), if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
    /// Why it was revoked, if given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revocation_reason: Option<String>,
}

impl Authorisation {
    /// Whether it is in force on `day` (`YYYY-MM-DD`). ISO dates compare as
    /// text, which is why they are kept in that one form.
    pub fn is_valid_on(&self, day: &str) -> bool {
        self.status == AuthorisationStatus::Valid
            && self.valid_from.as_str() <= day
            && day <= self.valid_until.as_str()
    }
}

/// What a caller asks MPower to register.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantRequest {
    /// Who gives the power.
    pub authorising: Party,
    /// IDNP of the person who receives it.
    pub authorised_idnp: String,
    /// Type code `AT-…`.
    pub authorisation_type: String,
    /// First day in force (`YYYY-MM-DD`).
    pub valid_from: String,
    /// Last day in force (`YYYY-MM-DD`).
    pub valid_until: String,
    /// File it as a Draft, to be submitted later.
    #[serde(default)]
    pub draft: bool,
}

/// Why a backend operation failed. Each variant maps onto one stable
/// problem code in `service.rs`.
#[derive(Debug, thiserror::Error)]
pub enum PowerError {
    /// The request breaks a rule (dates, type code, identifiers).
    #[error("{0}")]
    Invalid(String),
    /// The caller is not the grantor (or has no verifiable consent of theirs)
    /// and the action needs it.
    #[error("{0}")]
    NotGrantor(String),
    /// No authorisation has this code.
    #[error("no authorisation has code {0}")]
    UnknownCode(String),
    /// The state does not allow the operation (e.g. revoking twice).
    #[error("{0}")]
    Conflict(String),
    /// The backend could not read or write its state, or reach MPower.
    #[error("power-of-attorney store unavailable: {0}")]
    Unavailable(String),
}

/// The operations institutions use, after the real MPower integration guide:
/// register, revoke, get by code, check "does X hold a valid authorisation of
/// type T from Y", and list a person's authorisations. A deployment points an
/// implementation of this trait at the real service.
pub trait PowerBackend: Send + Sync + 'static {
    /// Registers an authorisation; `granted_via` is the calling participant,
    /// `consent` how the grantor's consent was verified (then it is Valid at
    /// once unless filed as a draft; without it, PendingAcceptance).
    fn grant(
        &self,
        request: GrantRequest,
        granted_via: &str,
        consent: Option<String>,
    ) -> impl Future<Output = Result<Authorisation, PowerError>> + Send;

    /// Takes one lifecycle step on the authorisation `code`, if it is still
    /// at `revision` (the one the actor's consent was checked against).
    fn transition(
        &self,
        code: &str,
        revision: u64,
        action: Action,
        actor: Actor,
        reason: Option<String>,
    ) -> impl Future<Output = Result<Authorisation, PowerError>> + Send;

    /// The authorisation with this code.
    fn by_code(&self, code: &str)
    -> impl Future<Output = Result<Authorisation, PowerError>> + Send;

    /// A valid authorisation of `authorisation_type` from `authorising` to
    /// `authorised` on `day`, if one exists.
    fn check(
        &self,
        authorised: &str,
        authorising: &str,
        authorisation_type: &str,
        day: &str,
    ) -> impl Future<Output = Result<Option<Authorisation>, PowerError>> + Send;

    /// Every authorisation a person gives or holds, newest first.
    fn of_person(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<Vec<Authorisation>, PowerError>> + Send;
}

/// The reference backend: authorisations kept in `{data}/authorisations.json`.
pub struct LocalBackend {
    path: PathBuf,
    state: Mutex<Vec<Authorisation>>,
}

#[derive(Serialize, Deserialize, Default)]
struct StateFile {
    authorisations: Vec<Authorisation>,
}

impl LocalBackend {
    /// Opens (or starts) the state in `data_dir`.
    pub fn open(data_dir: &Path) -> Result<LocalBackend, PowerError> {
        std::fs::create_dir_all(data_dir)
            .map_err(|e| PowerError::Unavailable(format!("{}: {e}", data_dir.display())))?;
        let path = data_dir.join("authorisations.json");
        let state = match std::fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice::<StateFile>(&bytes)
                    .map_err(|e| PowerError::Unavailable(format!("{}: {e}", path.display())))?
                    .authorisations
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => {
                return Err(PowerError::Unavailable(format!("{}: {e}", path.display())));
            }
        };
        let mut state = state;
        for a in &mut state {
            // Before consent was verified, anything filed was Valid at once:
            // such a record has no consent on file and must earn it again.
            if matches!(
                a.status,
                AuthorisationStatus::Valid | AuthorisationStatus::Suspended
            ) && a.accepted_via.is_none()
            {
                a.status = AuthorisationStatus::PendingAcceptance;
            }
        }
        Ok(LocalBackend {
            path,
            state: Mutex::new(state),
        })
    }

    /// Applies `change` to a copy of the state, makes the copy durable, and
    /// only then installs it: a failed write leaves memory and disk agreeing.
    fn update<T>(
        &self,
        change: impl FnOnce(&mut Vec<Authorisation>) -> Result<T, PowerError>,
    ) -> Result<T, PowerError> {
        let mut guard = self
            .state
            .lock()
            .map_err(|_| PowerError::Unavailable("state lock poisoned".into()))?;
        let mut next = guard.clone();
        // Expiry is by date: whatever is past its last day is recorded as
        // Expired with this change, so the file says what the answers say.
        let day = today();
        for a in &mut next {
            a.status = lifecycle::effective(a, &day);
        }
        let out = change(&mut next)?;
        save(&self.path, &next)?;
        *guard = next;
        Ok(out)
    }

    fn read<T>(&self, f: impl FnOnce(&[Authorisation]) -> T) -> Result<T, PowerError> {
        let guard = self
            .state
            .lock()
            .map_err(|_| PowerError::Unavailable("state lock poisoned".into()))?;
        Ok(f(&guard))
    }
}

/// Writes the whole state to `path`, durably ([`write_atomic`]).
fn save(path: &Path, authorisations: &[Authorisation]) -> Result<(), PowerError> {
    let bytes = serde_json::to_vec_pretty(&StateFile {
        authorisations: authorisations.to_vec(),
    })
    .map_err(|e| PowerError::Unavailable(e.to_string()))?;
    write_atomic(path, &bytes)
        .map_err(|e| PowerError::Unavailable(format!("{}: {e}", path.display())))
}

impl PowerBackend for LocalBackend {
    async fn grant(
        &self,
        request: GrantRequest,
        granted_via: &str,
        consent: Option<String>,
    ) -> Result<Authorisation, PowerError> {
        validate_grant(&request)?;
        let now = now_rfc3339();
        self.update(|all| {
            // A fresh random code; collisions are astronomically rare but a
            // duplicate would make "check by code" ambiguous, so retry.
            let mut code = new_code();
            for _ in 0..16 {
                if !all.iter().any(|a| a.code == code) {
                    break;
                }
                code = new_code();
            }
            if all.iter().any(|a| a.code == code) {
                return Err(PowerError::Unavailable("no free code found".into()));
            }
            // In force at once only with the grantor's verified consent.
            let (status, accepted_via) = match (request.draft, consent) {
                (true, _) => (AuthorisationStatus::Draft, None),
                (false, Some(how)) => (AuthorisationStatus::Valid, Some(how)),
                (false, None) => (AuthorisationStatus::PendingAcceptance, None),
            };
            let mut authorisation = Authorisation {
                code,
                authorisation_type: request.authorisation_type,
                authorising: request.authorising,
                authorised_idnp: request.authorised_idnp,
                valid_from: request.valid_from,
                valid_until: request.valid_until,
                status,
                revision: 0,
                granted_at: now,
                granted_via: granted_via.to_string(),
                accepted_via,
                changed_at: None,
                revoked_at: None,
                revocation_reason: None,
            };
            authorisation.status = lifecycle::effective(&authorisation, &today());
            all.push(authorisation.clone());
            Ok(authorisation)
        })
    }

    async fn transition(
        &self,
        code: &str,
        revision: u64,
        action: Action,
        actor: Actor,
        reason: Option<String>,
    ) -> Result<Authorisation, PowerError> {
        let now = now_rfc3339();
        self.update(|all| {
            let a = all
                .iter_mut()
                .find(|a| a.code == code)
                .ok_or_else(|| PowerError::UnknownCode(code.to_string()))?;
            if a.revision != revision {
                return Err(PowerError::Conflict(format!(
                    "authorisation {code} changed meanwhile (revision {} now); read it again and ask anew",
                    a.revision
                )));
            }
            let to = lifecycle::next(a.status, action, &actor)?;
            if to == a.status {
                // Already so: nothing changes, not even the revision, so a
                // retried request is answered alike and consents stay valid.
                return Ok(a.clone());
            }
            if let Actor::Grantor(how) = actor
                && to == AuthorisationStatus::Valid
            {
                a.accepted_via = Some(how);
            }
            if to == AuthorisationStatus::Revoked {
                a.revoked_at = Some(now.clone());
                a.revocation_reason = reason;
            }
            a.status = to;
            a.revision += 1;
            a.changed_at = Some(now);
            Ok(a.clone())
        })
    }

    async fn by_code(&self, code: &str) -> Result<Authorisation, PowerError> {
        let day = today();
        self.read(|all| all.iter().find(|a| a.code == code).cloned())?
            .map(|mut a| {
                a.status = lifecycle::effective(&a, &day);
                a
            })
            .ok_or_else(|| PowerError::UnknownCode(code.to_string()))
    }

    async fn check(
        &self,
        authorised: &str,
        authorising: &str,
        authorisation_type: &str,
        day: &str,
    ) -> Result<Option<Authorisation>, PowerError> {
        self.read(|all| {
            all.iter()
                .find(|a| {
                    a.authorised_idnp == authorised
                        && a.authorising.id == authorising
                        && a.authorisation_type == authorisation_type
                        && a.is_valid_on(day)
                })
                .cloned()
        })
    }

    async fn of_person(&self, id: &str) -> Result<Vec<Authorisation>, PowerError> {
        self.read(|all| {
            let day = today();
            let mut list: Vec<Authorisation> = all
                .iter()
                .filter(|a| a.authorised_idnp == id || a.authorising.id == id)
                .map(|a| {
                    let mut a = a.clone();
                    a.status = lifecycle::effective(&a, &day);
                    a
                })
                .collect();
            list.sort_by(|a, b| b.granted_at.cmp(&a.granted_at));
            list
        })
    }
}

/// Checks the rules MPower applies before registering.
pub fn validate_grant(request: &GrantRequest) -> Result<(), PowerError> {
    let invalid = |s: String| Err(PowerError::Invalid(s));
    if !is_person_id(&request.authorising.id) {
        return invalid(format!(
            "authorising.id {:?} is not a 13-digit IDNP/IDNO with a valid control digit",
            request.authorising.id
        ));
    }
    if !is_person_id(&request.authorised_idnp) {
        return invalid(format!(
            "authorised_idnp {:?} is not a 13-digit IDNP with a valid control digit",
            request.authorised_idnp
        ));
    }
    if request.authorised_idnp == request.authorising.id {
        return invalid("a person cannot authorise themselves".into());
    }
    if !is_type_code(&request.authorisation_type) {
        return invalid(format!(
            "authorisation_type {:?} must look like AT-<letters, digits or dashes>",
            request.authorisation_type
        ));
    }
    for (name, value) in [
        ("valid_from", &request.valid_from),
        ("valid_until", &request.valid_until),
    ] {
        if !is_date(value) {
            return invalid(format!("{name} {value:?} must be a date YYYY-MM-DD"));
        }
    }
    if request.valid_until < request.valid_from {
        return invalid("valid_until is before valid_from".into());
    }
    Ok(())
}

/// A 13-digit IDNP or IDNO with the Moldovan control digit (the SDK's one
/// check, as the broker applies it).
pub use mconnect_sdk::ids::is_valid_national_id as is_person_id;

/// `AT-` followed by 1 to 61 letters, digits or dashes.
pub fn is_type_code(code: &str) -> bool {
    code.strip_prefix("AT-").is_some_and(|rest| {
        !rest.is_empty()
            && rest.len() <= 61
            && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    })
}

/// A calendar date `YYYY-MM-DD`.
pub fn is_date(text: &str) -> bool {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    text.len() == 10 && time::Date::parse(text, &format).is_ok()
}

/// Whether `code` has the form of an authorisation code (16 digits).
pub fn is_code(code: &str) -> bool {
    code.len() == 16 && code.bytes().all(|b| b.is_ascii_digit())
}

/// Today in UTC, `YYYY-MM-DD`.
pub fn today() -> String {
    let d = time::OffsetDateTime::now_utc().date();
    format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
}

/// A random 16-digit code whose first digit is not 0 (so it survives being
/// read as a number by a careless client).
fn new_code() -> String {
    let n = uuid::Uuid::new_v4().as_u128();
    format!("{}{:015}", 1 + (n % 9), (n / 9) % 1_000_000_000_000_000)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn request() -> GrantRequest {
        GrantRequest {
            authorising: Party {
                party_type: PartyType::Natural,
                id: "2000000000015".into(),
            },
            authorised_idnp: "2003000000027".into(),
            authorisation_type: "AT-SOCIAL-AID".into(),
            valid_from: "2020-01-01".into(),
            valid_until: "2099-12-31".into(),
            draft: false,
        }
    }

    #[test]
    fn identifiers_and_codes() {
        for (id, ok) in [
            ("2000000000015", true),
            ("2003000000027", true),
            ("2000000000016", false),
            ("200000000001", false),
            ("20000000000a5", false),
        ] {
            assert_eq!(is_person_id(id), ok, "{id}");
        }
        for (code, ok) in [
            ("AT-SOCIAL-AID", true),
            ("AT-", false),
            ("at-x", false),
            ("AT-a b", false),
        ] {
            assert_eq!(is_type_code(code), ok, "{code}");
        }
        for _ in 0..100 {
            assert!(is_code(&new_code()));
        }
    }

    #[test]
    fn validation_table() {
        type Change = Box<dyn Fn(&mut GrantRequest)>;
        let cases: Vec<(Change, bool)> = vec![
            (Box::new(|_| {}), true),
            (
                Box::new(|r| r.authorised_idnp = "2000000000015".into()),
                false,
            ),
            (Box::new(|r| r.valid_until = "2019-12-31".into()), false),
            (Box::new(|r| r.valid_from = "2020-02-30".into()), false),
            (Box::new(|r| r.authorisation_type = "X".into()), false),
            (Box::new(|r| r.authorising.id = "1".into()), false),
        ];
        for (i, (change, ok)) in cases.into_iter().enumerate() {
            let mut r = request();
            change(&mut r);
            assert_eq!(validate_grant(&r).is_ok(), ok, "case {i}");
        }
    }

    #[tokio::test]
    async fn grant_check_revoke_and_restart() {
        let dir = tempfile::tempdir().unwrap();
        let backend = LocalBackend::open(dir.path()).unwrap();
        // Filed without the grantor's consent: it waits, and checks say no.
        let pending = backend.grant(request(), "apl-cahul", None).await.unwrap();
        assert_eq!(pending.status, AuthorisationStatus::PendingAcceptance);
        assert!(
            backend
                .check(
                    "2003000000027",
                    "2000000000015",
                    "AT-SOCIAL-AID",
                    "2026-06-01"
                )
                .await
                .unwrap()
                .is_none()
        );
        // A consent checked against another revision does not apply.
        assert!(matches!(
            backend
                .transition(
                    &pending.code,
                    7,
                    Action::Accept,
                    Actor::Grantor("t".into()),
                    None
                )
                .await,
            Err(PowerError::Conflict(_))
        ));
        let accepted = backend
            .transition(
                &pending.code,
                0,
                Action::Accept,
                Actor::Grantor("msign:x".into()),
                None,
            )
            .await
            .unwrap();
        assert_eq!(accepted.status, AuthorisationStatus::Valid);
        assert_eq!(accepted.revision, 1);
        assert_eq!(accepted.accepted_via.as_deref(), Some("msign:x"));
        backend
            .transition(
                &pending.code,
                1,
                Action::Revoke,
                Actor::Grantor("t".into()),
                None,
            )
            .await
            .unwrap();
        let a = backend
            .grant(request(), "mcabinet", Some("mcabinet:2000000000015".into()))
            .await
            .unwrap();
        assert_eq!(a.status, AuthorisationStatus::Valid);
        let day = "2026-06-01";
        let found = backend
            .check("2003000000027", "2000000000015", "AT-SOCIAL-AID", day)
            .await
            .unwrap();
        assert_eq!(found.as_ref().map(|f| &f.code), Some(&a.code));
        // Other type, other direction, out of dates: no.
        for (x, y, t, d) in [
            ("2003000000027", "2000000000015", "AT-OTHER", day),
            ("2000000000015", "2003000000027", "AT-SOCIAL-AID", day),
            (
                "2003000000027",
                "2000000000015",
                "AT-SOCIAL-AID",
                "2019-01-01",
            ),
        ] {
            assert!(backend.check(x, y, t, d).await.unwrap().is_none());
        }
        // Survives a restart.
        drop(backend);
        let backend = LocalBackend::open(dir.path()).unwrap();
        assert_eq!(backend.by_code(&a.code).await.unwrap(), a);
        let g = || Actor::Grantor("mcabinet:2000000000015".into());
        backend
            .transition(&a.code, 0, Action::Revoke, g(), None)
            .await
            .unwrap();
        // Revoking again changes nothing, not even the revision.
        let again = backend
            .transition(&a.code, 1, Action::Revoke, g(), None)
            .await
            .unwrap();
        assert_eq!(
            (again.status, again.revision),
            (AuthorisationStatus::Revoked, 1)
        );
        assert!(
            backend
                .check("2003000000027", "2000000000015", "AT-SOCIAL-AID", day)
                .await
                .unwrap()
                .is_none()
        );
        assert_eq!(backend.of_person("2000000000015").await.unwrap().len(), 2);
    }

    #[tokio::test]
    async fn unverified_valid_records_from_an_older_file_wait_for_consent() {
        let dir = tempfile::tempdir().unwrap();
        // As the previous version wrote them: Valid at once, no consent, and
        // the old status names.
        let old = r#"{"authorisations": [
          {"code": "1000000000000001", "authorisation_type": "AT-SOCIAL-AID",
           "authorising": {"party_type": "natural", "id": "2000000000015"},
           "authorised_idnp": "2003000000027", "valid_from": "2020-01-01",
           "valid_until": "2099-12-31", "status": "Valid",
           "granted_at": "2025-01-01T00:00:00.000000Z", "granted_via": "apl-cahul"},
          {"code": "1000000000000002", "authorisation_type": "AT-SOCIAL-AID",
           "authorising": {"party_type": "natural", "id": "2000000000015"},
           "authorised_idnp": "2003000000027", "valid_from": "2020-01-01",
           "valid_until": "2099-12-31", "status": "Canceled",
           "granted_at": "2025-01-01T00:00:00.000000Z", "granted_via": "apl-cahul"}]}"#;
        std::fs::write(dir.path().join("authorisations.json"), old).unwrap();
        let backend = LocalBackend::open(dir.path()).unwrap();
        let first = backend.by_code("1000000000000001").await.unwrap();
        assert_eq!(first.status, AuthorisationStatus::PendingAcceptance);
        let second = backend.by_code("1000000000000002").await.unwrap();
        assert_eq!(second.status, AuthorisationStatus::Revoked);
        assert!(
            backend
                .check(
                    "2003000000027",
                    "2000000000015",
                    "AT-SOCIAL-AID",
                    "2026-06-01"
                )
                .await
                .unwrap()
                .is_none()
        );
    }

    #[tokio::test]
    async fn past_its_last_day_it_is_expired_and_recorded_so() {
        let dir = tempfile::tempdir().unwrap();
        let backend = LocalBackend::open(dir.path()).unwrap();
        let mut r = request();
        r.valid_until = "2021-12-31".into();
        let a = backend
            .grant(r, "mcabinet", Some("mcabinet:2000000000015".into()))
            .await
            .unwrap();
        assert_eq!(a.status, AuthorisationStatus::Expired);
        let g = Actor::Grantor("mcabinet:2000000000015".into());
        assert!(matches!(
            backend
                .transition(&a.code, 0, Action::Suspend, g, None)
                .await,
            Err(PowerError::Conflict(_))
        ));
        drop(backend);
        let backend = LocalBackend::open(dir.path()).unwrap();
        assert_eq!(
            backend.by_code(&a.code).await.unwrap().status,
            AuthorisationStatus::Expired
        );
    }
}
