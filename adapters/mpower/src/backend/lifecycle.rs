//! The lifecycle of an authorisation: which action moves which status to
//! which, who may take it, and the exact statement a grantor signs (through
//! MSign) to consent to one action on one authorisation.
//!
//! ```text
//!            submit (filer or grantor)          accept (grantor)
//!   Draft ───────────────────────► PendingAcceptance ─────────────► Valid
//!     │ accept (grantor)                                            ▲  │ suspend (grantor)
//!     └──────────────────────────────────────────────────────────► │  ▼
//!                                                         resume (grantor) Suspended
//!   revoke (grantor): Draft | PendingAcceptance | Valid | Suspended → Revoked
//!   the date: any of those four after valid_until                  → Expired
//! ```
//!
//! Invariants:
//! - only the grantor's verified consent ([`Actor::Grantor`]) makes an
//!   authorisation Valid, keeps it so or ends it; the participant that filed
//!   it may only move its own draft to PendingAcceptance;
//! - Revoked and Expired are final;
//! - a consent statement names the action, the code and the revision the
//!   authorisation is at, and every transition raises the revision, so a
//!   signature consents to one step once and never to a later one.

use serde::{Deserialize, Serialize};

use super::{Authorisation, AuthorisationStatus, PartyType, PowerError};

/// A step of the lifecycle that a caller asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Draft → PendingAcceptance: the draft is put to the grantor.
    Submit,
    /// Draft or PendingAcceptance → Valid: the grantor consents.
    Accept,
    /// Valid → Suspended.
    Suspend,
    /// Suspended → Valid.
    Resume,
    /// Any living status → Revoked; final.
    Revoke,
}

impl Action {
    /// Every action, in the order the view lists their consent hashes.
    pub const ALL: [Action; 5] = [
        Action::Submit,
        Action::Accept,
        Action::Suspend,
        Action::Resume,
        Action::Revoke,
    ];

    /// The name used on the wire and in consent statements.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Submit => "submit",
            Action::Accept => "accept",
            Action::Suspend => "suspend",
            Action::Resume => "resume",
            Action::Revoke => "revoke",
        }
    }
}

/// Who asks for a transition, as far as MPower could verify it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Actor {
    /// The grantor, with consent MPower verified; the text says how
    /// (`mcabinet:{idnp}` or `msign:{request id}`) and is kept on the record.
    Grantor(String),
    /// The participant that filed the authorisation, without the grantor.
    Filer,
    /// Anyone else.
    Other,
}

/// The status `action` leads to from `from` when `actor` asks, or why not:
/// `NotGrantor` when the actor may not take this action, `Conflict` when the
/// status does not allow it.
pub fn next(
    from: AuthorisationStatus,
    action: Action,
    actor: &Actor,
) -> Result<AuthorisationStatus, PowerError> {
    use AuthorisationStatus::*;
    let grantor = matches!(actor, Actor::Grantor(_));
    let allowed = match action {
        Action::Submit => grantor || *actor == Actor::Filer,
        _ => grantor,
    };
    if !allowed {
        return Err(PowerError::NotGrantor(format!(
            "only the grantor's consent may {} an authorisation: file the request through the citizen portal as the grantor, or give an MSign signature of the grantor over consent_hashes.{}",
            action.as_str(),
            action.as_str()
        )));
    }
    let to = match (action, from) {
        // Asking for the status it already has changes nothing and is no
        // conflict: a repeated revocation (or acceptance, suspension,
        // resumption) by the grantor is answered with the authorisation as
        // it stands, so a retried request is safe.
        (Action::Submit, PendingAcceptance)
        | (Action::Accept, Valid)
        | (Action::Suspend, Suspended)
        | (Action::Resume, Valid)
        | (Action::Revoke, Revoked) => from,
        (Action::Submit, Draft) => PendingAcceptance,
        (Action::Accept, Draft | PendingAcceptance) => Valid,
        (Action::Suspend, Valid) => Suspended,
        (Action::Resume, Suspended) => Valid,
        (Action::Revoke, Draft | PendingAcceptance | Valid | Suspended) => Revoked,
        (action, from) => {
            return Err(PowerError::Conflict(format!(
                "an authorisation that is {from:?} cannot be {}",
                past(action)
            )));
        }
    };
    Ok(to)
}

fn past(action: Action) -> &'static str {
    match action {
        Action::Submit => "submitted",
        Action::Accept => "accepted",
        Action::Suspend => "suspended",
        Action::Resume => "resumed",
        Action::Revoke => "revoked",
    }
}

/// The status as of `day` (`YYYY-MM-DD`): a living authorisation whose last
/// day has passed is Expired, whatever the record still says.
pub fn effective(a: &Authorisation, day: &str) -> AuthorisationStatus {
    use AuthorisationStatus::*;
    match a.status {
        Draft | PendingAcceptance | Valid | Suspended if a.valid_until.as_str() < day => Expired,
        s => s,
    }
}

/// The exact text a grantor signs to consent to `action` on `a` as it is
/// now. Every value in it was validated (digits, dates, `AT-` codes), so the
/// lines cannot be forged by embedding a newline.
pub fn statement(a: &Authorisation, action: Action) -> String {
    let party = match a.authorising.party_type {
        PartyType::Natural => "natural",
        PartyType::Legal => "legal",
    };
    format!(
        "mpower-consent/1\naction={}\ncode={}\nrevision={}\nauthorising={party}:{}\nauthorised={}\ntype={}\nvalid_from={}\nvalid_until={}\n",
        action.as_str(),
        a.code,
        a.revision,
        a.authorising.id,
        a.authorised_idnp,
        a.authorisation_type,
        a.valid_from,
        a.valid_until,
    )
}

/// The SHA-256 (lowercase hex) of [`statement`]: what the grantor asks MSign
/// to sign, as a `hash` sign request.
pub fn consent_hash(a: &Authorisation, action: Action) -> String {
    hex::encode(mconnect_sdk::sha256(statement(a, action).as_bytes()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::backend::Party;
    use AuthorisationStatus::*;

    fn grantor() -> Actor {
        Actor::Grantor("mcabinet:2000000000015".into())
    }

    /// (from, action, actor) → the status reached, or the error's kind.
    #[test]
    fn transition_table() {
        #[derive(Debug, PartialEq)]
        enum Want {
            To(AuthorisationStatus),
            NotGrantor,
            Conflict,
        }
        use Want::*;
        let g = grantor();
        let cases: Vec<(AuthorisationStatus, Action, Actor, Want)> = vec![
            (Draft, Action::Submit, Actor::Filer, To(PendingAcceptance)),
            (Draft, Action::Submit, g.clone(), To(PendingAcceptance)),
            (Draft, Action::Submit, Actor::Other, NotGrantor),
            (Draft, Action::Accept, g.clone(), To(Valid)),
            (Draft, Action::Accept, Actor::Filer, NotGrantor),
            (PendingAcceptance, Action::Accept, g.clone(), To(Valid)),
            (PendingAcceptance, Action::Accept, Actor::Filer, NotGrantor),
            (PendingAcceptance, Action::Accept, Actor::Other, NotGrantor),
            (
                PendingAcceptance,
                Action::Submit,
                Actor::Filer,
                To(PendingAcceptance),
            ),
            (PendingAcceptance, Action::Suspend, g.clone(), Conflict),
            (Valid, Action::Accept, g.clone(), To(Valid)),
            (Valid, Action::Suspend, g.clone(), To(Suspended)),
            (Valid, Action::Suspend, Actor::Filer, NotGrantor),
            (Valid, Action::Resume, g.clone(), To(Valid)),
            (Suspended, Action::Resume, g.clone(), To(Valid)),
            (Suspended, Action::Resume, Actor::Other, NotGrantor),
            (Suspended, Action::Accept, g.clone(), Conflict),
            (Draft, Action::Revoke, g.clone(), To(Revoked)),
            (PendingAcceptance, Action::Revoke, g.clone(), To(Revoked)),
            (Valid, Action::Revoke, g.clone(), To(Revoked)),
            (Suspended, Action::Revoke, g.clone(), To(Revoked)),
            (Valid, Action::Revoke, Actor::Filer, NotGrantor),
            (Valid, Action::Revoke, Actor::Other, NotGrantor),
            (Revoked, Action::Revoke, g.clone(), To(Revoked)),
            (Revoked, Action::Accept, g.clone(), Conflict),
            (Revoked, Action::Resume, g.clone(), Conflict),
            (Expired, Action::Accept, g.clone(), Conflict),
            (Expired, Action::Resume, g.clone(), Conflict),
            (Expired, Action::Revoke, g.clone(), Conflict),
        ];
        for (i, (from, action, actor, want)) in cases.into_iter().enumerate() {
            let got = match next(from, action, &actor) {
                Ok(to) => To(to),
                Err(PowerError::NotGrantor(_)) => NotGrantor,
                Err(PowerError::Conflict(_)) => Conflict,
                Err(e) => panic!("case {i}: unexpected {e}"),
            };
            assert_eq!(got, want, "case {i}: {from:?} {action:?} by {actor:?}");
        }
    }

    fn authorisation(status: AuthorisationStatus, until: &str) -> Authorisation {
        Authorisation {
            code: "1234567890123456".into(),
            authorisation_type: "AT-SOCIAL-AID".into(),
            authorising: Party {
                party_type: PartyType::Natural,
                id: "2000000000015".into(),
            },
            authorised_idnp: "2003000000027".into(),
            valid_from: "2025-01-01".into(),
            valid_until: until.into(),
            status,
            revision: 0,
            granted_at: "2025-01-01T00:00:00.000000Z".into(),
            granted_via: "apl-cahul".into(),
            accepted_via: None,
            changed_at: None,
            revoked_at: None,
            revocation_reason: None,
        }
    }

    /// (stored status, last day, today) → the status as of today.
    #[test]
    fn expiry_by_date_table() {
        for (status, until, day, want) in [
            (Valid, "2026-01-31", "2026-01-31", Valid),
            (Valid, "2026-01-31", "2026-02-01", Expired),
            (Suspended, "2026-01-31", "2026-02-01", Expired),
            (PendingAcceptance, "2026-01-31", "2026-02-01", Expired),
            (Draft, "2026-01-31", "2026-02-01", Expired),
            (Revoked, "2026-01-31", "2026-02-01", Revoked),
            (Expired, "2030-01-01", "2026-02-01", Expired),
        ] {
            assert_eq!(
                effective(&authorisation(status, until), day),
                want,
                "{status:?} until {until} on {day}"
            );
        }
    }

    #[test]
    fn a_statement_binds_action_code_and_revision() {
        let a = authorisation(PendingAcceptance, "2030-12-31");
        let accept = consent_hash(&a, Action::Accept);
        assert_eq!(accept.len(), 64);
        assert_ne!(accept, consent_hash(&a, Action::Revoke));
        let mut later = a.clone();
        later.revision += 1;
        assert_ne!(accept, consent_hash(&later, Action::Accept));
        let mut other = a.clone();
        other.code = "1234567890123457".into();
        assert_ne!(accept, consent_hash(&other, Action::Accept));
        assert!(statement(&a, Action::Accept).contains("\naction=accept\n"));
    }
}
