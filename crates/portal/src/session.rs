//! Who is signed in: officials and their sessions, and the CSRF tokens that
//! tie each form to the browser that was given it.
//!
//! Invariants:
//! - a session id is 244 random bits, lives only in a `__Host-` cookie
//!   (`Secure`, `HttpOnly`, `SameSite=Strict`, `Path=/`, no `Domain`), and
//!   is replaced at sign-in, so an id planted before sign-in is worthless;
//! - a session ends after [`IDLE_TIMEOUT`] without a request or
//!   [`MAX_AGE`] after sign-in, whichever comes first, and at sign-out;
//! - every form carries a token compared in constant time with the one the
//!   server holds (the session's, or before sign-in the `__Host-` CSRF
//!   cookie's, double-submit); the store holds at most [`MAX_SESSIONS`].

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Deserialize;

/// A session ends after this long without a request.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// A session ends this long after sign-in, however active.
pub const MAX_AGE: Duration = Duration::from_secs(8 * 3600);
/// Sessions held at most; past it, sign-in is refused until some expire.
pub const MAX_SESSIONS: usize = 10_000;

/// The session cookie.
pub const SESSION_COOKIE: &str = "__Host-mconnect_session";
/// The pre-sign-in CSRF cookie (double-submit).
pub const CSRF_COOKIE: &str = "__Host-mconnect_csrf";

/// A local-authority official who may sign in.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Official {
    /// The official's IDNP (`MConnect-Calling-User` of their lookups).
    pub idnp: String,
    /// Full name.
    pub name: String,
    /// The organisation's name.
    pub organisation: String,
    /// The organisation's participant id on the bus.
    pub participant: String,
    /// What they may do in the portal: see [`ROLES`].
    pub roles: Vec<String>,
}

/// The roles an official may have in the portal: `official` (looks people
/// up under the organisation's grants), `administrator` (decides which
/// official may use which grant, and files the organisation's connection
/// applications), `operator` (reviews applications for the platform's
/// owner), `auditor` (reads the audit log for a supervisory authority),
/// `provider` (confirms applications for the organisation's services). The
/// portal offers pages by role; the broker decides every call by the
/// organisation's participant roles and grants.
pub const ROLES: [&str; 5] = [
    "official",
    "administrator",
    "operator",
    "auditor",
    "provider",
];

impl Official {
    /// Whether the official has `role`.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }
}

/// The officials of the development sign-in.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OfficialsFile {
    officials: Vec<Official>,
}

/// Reads and checks the development sign-in's officials.
pub fn load_officials(path: &Path) -> Result<Vec<Official>, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    let file: OfficialsFile =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    for (i, o) in file.officials.iter().enumerate() {
        if !mconnect_sdk::ids::is_valid_idnp(&o.idnp) {
            return Err(format!(
                "{}: officials/{i}/idnp is not a valid IDNP",
                path.display()
            ));
        }
        if !mconnect_sdk::ids::is_valid_participant_id(&o.participant) {
            return Err(format!(
                "{}: officials/{i}/participant is not a participant id",
                path.display()
            ));
        }
        if let Some(role) = o.roles.iter().find(|r| !ROLES.contains(&r.as_str())) {
            return Err(format!(
                "{}: officials/{i}/roles: `{role}` is not one of {}",
                path.display(),
                ROLES.join(", ")
            ));
        }
        if file.officials[..i]
            .iter()
            .any(|earlier| earlier.idnp == o.idnp)
        {
            return Err(format!(
                "{}: officials/{i}/idnp is listed twice",
                path.display()
            ));
        }
    }
    Ok(file.officials)
}

/// A lookup filled in and not yet confirmed: what the check page shows and
/// the confirmation sends. It lives in its session, so it ends with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingLookup {
    /// The grant's id.
    pub grant: String,
    /// The service's key.
    pub service: String,
    /// The purpose code, one of the grant's.
    pub purpose: String,
    /// The legal basis id, one of the grant's.
    pub basis: String,
    /// The IDNP of the person asked about.
    pub person: String,
}

/// A resident signed in to see their own page (who accessed my data): they
/// reach nothing an official does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resident {
    /// The person's IDNP.
    pub idnp: String,
    /// Their name, when the sign-in said it.
    pub name: String,
}

/// Who a session is for. The kinds never mix: the lookup and administration
/// pages take an [`Official`], which a resident's session does not have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Person {
    /// An official of a local authority, with their organisation and roles.
    Official(Official),
    /// A resident, for their own data only.
    Resident(Resident),
}

impl Person {
    /// The person's IDNP.
    pub fn idnp(&self) -> &str {
        match self {
            Person::Official(o) => &o.idnp,
            Person::Resident(r) => &r.idnp,
        }
    }

    /// The person's name.
    pub fn name(&self) -> &str {
        match self {
            Person::Official(o) => &o.name,
            Person::Resident(r) => &r.name,
        }
    }
}

/// One signed-in person's session.
#[derive(Debug, Clone)]
pub struct Session {
    /// Who.
    pub person: Person,
    /// The token every form of this session carries.
    pub csrf: String,
    /// The lookup awaiting confirmation, if any.
    pub pending: Option<PendingLookup>,
    /// An auditor's declared legal basis and purpose, `(basis, purpose)`,
    /// from their organisation's grant for the audit log: every read of
    /// the log in this session is made under it.
    pub audit_declaration: Option<(String, String)>,
    signed_in: Instant,
    last_seen: Instant,
}

/// The sessions of this portal process.
#[derive(Default)]
pub struct Sessions {
    by_id: Mutex<HashMap<String, Session>>,
}

/// Why a session could not be opened.
#[derive(Debug, PartialEq, Eq)]
pub enum SessionError {
    /// [`MAX_SESSIONS`] are open.
    Full,
}

impl Sessions {
    /// Opens a session for `person`; returns its id.
    pub fn open(&self, person: Person) -> Result<String, SessionError> {
        let now = Instant::now();
        let mut map = self.by_id.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_SESSIONS {
            map.retain(|_, s| live(s, now));
            if map.len() >= MAX_SESSIONS {
                return Err(SessionError::Full);
            }
        }
        let id = random_token();
        map.insert(
            id.clone(),
            Session {
                person,
                csrf: random_token(),
                pending: None,
                audit_declaration: None,
                signed_in: now,
                last_seen: now,
            },
        );
        Ok(id)
    }

    /// The live session `id`, its idle clock restarted; an expired one is
    /// removed.
    pub fn touch(&self, id: &str) -> Option<Session> {
        let now = Instant::now();
        let mut map = self.by_id.lock().unwrap_or_else(|e| e.into_inner());
        let session = map.get_mut(id)?;
        if !live(session, now) {
            map.remove(id);
            return None;
        }
        session.last_seen = now;
        Some(session.clone())
    }

    /// Sets the lookup awaiting confirmation in live session `id`.
    pub fn set_pending(&self, id: &str, lookup: PendingLookup) {
        let mut map = self.by_id.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(session) = map.get_mut(id) {
            session.pending = Some(lookup);
        }
    }

    /// Sets the legal basis and purpose, `(basis, purpose)`, an auditor
    /// declared in live session `id`.
    pub fn set_audit_declaration(&self, id: &str, declaration: (String, String)) {
        let mut map = self.by_id.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(session) = map.get_mut(id) {
            session.audit_declaration = Some(declaration);
        }
    }

    /// Takes the lookup awaiting confirmation out of session `id`: whoever
    /// takes it sends it, once.
    pub fn take_pending(&self, id: &str) -> Option<PendingLookup> {
        let mut map = self.by_id.lock().unwrap_or_else(|e| e.into_inner());
        map.get_mut(id)?.pending.take()
    }

    /// Ends session `id`.
    pub fn close(&self, id: &str) {
        let mut map = self.by_id.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(id);
    }

    /// Ages every session by `by` (tests of the timeouts).
    #[doc(hidden)]
    pub fn age_all(&self, by: Duration) {
        let mut map = self.by_id.lock().unwrap_or_else(|e| e.into_inner());
        for session in map.values_mut() {
            session.last_seen = session
                .last_seen
                .checked_sub(by)
                .unwrap_or(session.last_seen);
            session.signed_in = session
                .signed_in
                .checked_sub(by)
                .unwrap_or(session.signed_in);
        }
    }
}

impl Session {
    /// The official this session is for; `None` for a resident.
    pub fn official(&self) -> Option<&Official> {
        match &self.person {
            Person::Official(o) => Some(o),
            Person::Resident(_) => None,
        }
    }
}

fn live(session: &Session, now: Instant) -> bool {
    now.duration_since(session.last_seen) < IDLE_TIMEOUT
        && now.duration_since(session.signed_in) < MAX_AGE
}

/// 244 random bits as 64 hexadecimal digits (two version-4 UUIDs).
pub fn random_token() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// Compares two tokens in time that does not depend on where they differ.
pub fn same_token(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() || a.is_empty() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn official() -> Official {
        Official {
            idnp: "2000000000015".into(),
            name: "Ion Popescu".into(),
            organisation: "Primăria municipiului Cahul".into(),
            participant: "apl-cahul".into(),
            roles: vec!["official".into()],
        }
    }

    #[test]
    fn sessions_end_when_idle_when_old_and_at_sign_out() {
        let sessions = Sessions::default();
        let id = sessions.open(Person::Official(official())).unwrap();
        assert_eq!(id.len(), 64);
        assert!(sessions.touch(&id).is_some());
        sessions.age_all(IDLE_TIMEOUT + Duration::from_secs(1));
        assert!(sessions.touch(&id).is_none(), "idle too long");
        assert!(sessions.touch(&id).is_none(), "and removed");

        let id = sessions.open(Person::Official(official())).unwrap();
        for _ in 0..(MAX_AGE.as_secs() / IDLE_TIMEOUT.as_secs() + 3) {
            sessions.age_all(IDLE_TIMEOUT - Duration::from_secs(60));
            // Active all along, but past its maximum age in the end.
            let _ = sessions.touch(&id);
        }
        assert!(sessions.touch(&id).is_none(), "older than MAX_AGE");

        let id = sessions.open(Person::Official(official())).unwrap();
        sessions.close(&id);
        assert!(sessions.touch(&id).is_none());
        assert!(sessions.touch("").is_none());
    }

    #[test]
    fn a_pending_lookup_is_taken_once_and_ends_with_its_session() {
        let sessions = Sessions::default();
        let id = sessions.open(Person::Official(official())).unwrap();
        let lookup = PendingLookup {
            grant: "g".into(),
            service: "p/s".into(),
            purpose: "x".into(),
            basis: "y".into(),
            person: "2000000000037".into(),
        };
        sessions.set_pending(&id, lookup.clone());
        assert_eq!(sessions.touch(&id).unwrap().pending, Some(lookup.clone()));
        assert_eq!(sessions.take_pending(&id), Some(lookup.clone()));
        assert_eq!(sessions.take_pending(&id), None, "taken once");
        sessions.set_pending(&id, lookup);
        sessions.close(&id);
        assert_eq!(sessions.take_pending(&id), None, "gone with the session");
        sessions.set_pending(
            "nobody",
            PendingLookup {
                grant: String::new(),
                service: String::new(),
                purpose: String::new(),
                basis: String::new(),
                person: String::new(),
            },
        );
        assert!(
            sessions.touch("nobody").is_none(),
            "no session is made by it"
        );
    }

    #[test]
    fn an_audit_declaration_holds_for_its_session_only() {
        let sessions = Sessions::default();
        let id = sessions.open(Person::Official(official())).unwrap();
        assert_eq!(sessions.touch(&id).unwrap().audit_declaration, None);
        let declared = (
            "md-law-133-2011-art-27".to_owned(),
            "supervision".to_owned(),
        );
        sessions.set_audit_declaration(&id, declared.clone());
        assert_eq!(
            sessions.touch(&id).unwrap().audit_declaration,
            Some(declared.clone())
        );
        let other = sessions.open(Person::Official(official())).unwrap();
        assert_eq!(sessions.touch(&other).unwrap().audit_declaration, None);
        sessions.close(&id);
        sessions.set_audit_declaration(&id, declared);
        assert!(sessions.touch(&id).is_none(), "no session is made by it");
    }

    #[test]
    fn tokens_are_random_and_compared_exactly() {
        let (a, b) = (random_token(), random_token());
        assert_ne!(a, b);
        assert!(same_token(&a, &a.clone()));
        assert!(!same_token(&a, &b));
        assert!(!same_token(&a, &a[..63]));
        assert!(!same_token("", ""));
    }
}
