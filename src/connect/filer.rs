//! Who may file an application: the applicant itself, or an intermediary
//! for an authority that is not yet on the bus.
//!
//! An application is filed (submitted or resubmitted) by the participant
//! whose certificate signs it (RFC 9421). Normally that is the applicant:
//! its system, or another system of its organisation. An authority that is
//! not yet a participant has no certificate the broker knows, so a
//! participant with the `intermediary` role (the data-access portal) may
//! file for it, on three conditions: the application carries the
//! registration of the new system (it is for an authority not on the bus,
//! never for one that is), the official who files it signed it themselves
//! (MSign; the broker verified that signature), and the intermediary sends
//! it over its own connection (the TLS client is the signer), so that it is
//! the intermediary, and no one relaying its signed bytes, that becomes the
//! filer with the rights to follow the request.
//!
//! Invariant: this module does no I/O; [`may_file`] decides from what the
//! admin API verified, and each branch has its unit test.

use crate::registry::{Participant, Role};

use super::Application;

/// On whose account an application is filed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filer {
    /// The applicant organisation itself.
    Applicant,
    /// An intermediary, for an authority not yet on the bus.
    Intermediary,
}

/// Why the signer may not file this application (403).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{detail}")]
pub struct FilerRefusal {
    /// `connect.signer_not_applicant` or `connect.user_signature_required`.
    pub code: &'static str,
    /// What is wrong and what to do.
    pub detail: String,
}

/// Decides whether `signer` (the participant whose certificate signed the
/// submission) may file `application`, sent over the TLS connection of
/// participant `caller`, with (`user_signed`) or without a verified
/// signature of the official who files it.
pub fn may_file(
    application: &Application,
    signer: &Participant,
    caller: &str,
    user_signed: bool,
) -> Result<Filer, FilerRefusal> {
    let applicant = &application.applicant;
    if signer.id == applicant.system || signer.organisation.idno == applicant.idno {
        return Ok(Filer::Applicant);
    }
    let not_applicant = |why: &str| FilerRefusal {
        code: "connect.signer_not_applicant",
        detail: format!(
            "the application is signed by `{}` (IDNO {}) but the applicant is `{}` (IDNO {}): {why}",
            signer.id, signer.organisation.idno, applicant.system, applicant.idno
        ),
    };
    if !signer.has_role(Role::Intermediary) {
        return Err(not_applicant("sign with a certificate of the applicant"));
    }
    if applicant.registration.is_none() {
        return Err(not_applicant(
            "an intermediary files only for an authority not yet on the bus, with applicant.registration; a participant files its own applications",
        ));
    }
    if !user_signed {
        return Err(FilerRefusal {
            code: "connect.user_signature_required",
            detail: format!(
                "`{}` files for `{}` as an intermediary: the official who files must sign the application too (MConnect-User-Signature and MConnect-User-Certificate)",
                signer.id, applicant.system
            ),
        });
    }
    if caller != signer.id {
        return Err(not_applicant(&format!(
            "an intermediary sends what it signs over its own connection, and this came from `{caller}`"
        )));
    }
    Ok(Filer::Intermediary)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::connect::application::Registration;
    use crate::connect::tests::participant;

    fn application(registration: bool) -> Application {
        let mut value = serde_json::json!({
            "applicant": {"idno": "1003605000089", "name": "Primăria Copceac", "system": "apl-copceac"},
            "services": [],
            "contacts": {"technical": {"name": "IT", "email": "it@copceac.md"},
                         "legal": {"name": "Juridic", "email": "juridic@copceac.md"}},
            "validity": {"from": "2026-01-01"},
            "declaration": {"own_responsibility": true},
        });
        let mut application: Application = serde_json::from_value(value.take()).unwrap();
        if registration {
            application.applicant.registration = Some(Registration {
                certificate: "-----BEGIN CERTIFICATE-----".into(),
                endpoint: None,
            });
        }
        application
    }

    #[test]
    fn each_branch_of_the_decision() {
        let portal = participant(
            "mconnect-portal",
            "1003600000017",
            &[Role::Consumer, Role::Intermediary],
        );
        let cahul = participant("apl-cahul", "1003603000063", &[Role::Consumer]);
        let copceac = participant("apl-copceac", "1003605000089", &[Role::Consumer]);
        let copceac_other = participant("apl-copceac-2", "1003605000089", &[Role::Consumer]);
        let code = |r: Result<Filer, FilerRefusal>| r.map_err(|e| e.code);
        /// (application with registration, signer, TLS caller, user signed) → decision
        type Row<'a> = (bool, &'a Participant, &'a str, bool, Result<Filer, &'a str>);
        let table: [Row; 9] = [
            (false, &copceac, "apl-copceac", false, Ok(Filer::Applicant)),
            (
                true,
                &copceac_other,
                "apl-copceac-2",
                false,
                Ok(Filer::Applicant),
            ),
            (
                true,
                &portal,
                "mconnect-portal",
                true,
                Ok(Filer::Intermediary),
            ),
            (
                true,
                &cahul,
                "apl-cahul",
                true,
                Err("connect.signer_not_applicant"),
            ),
            (
                false,
                &cahul,
                "apl-cahul",
                false,
                Err("connect.signer_not_applicant"),
            ),
            (
                false,
                &portal,
                "mconnect-portal",
                true,
                Err("connect.signer_not_applicant"),
            ),
            (
                true,
                &portal,
                "mconnect-portal",
                false,
                Err("connect.user_signature_required"),
            ),
            (
                true,
                &portal,
                "apl-cahul",
                true,
                Err("connect.signer_not_applicant"),
            ),
            (
                false,
                &portal,
                "mconnect-portal",
                false,
                Err("connect.signer_not_applicant"),
            ),
        ];
        for (n, (registration, signer, caller, user_signed, expected)) in
            table.into_iter().enumerate()
        {
            let got = code(may_file(
                &application(registration),
                signer,
                caller,
                user_signed,
            ));
            assert_eq!(got, expected, "row {n}");
        }
    }

    #[test]
    fn a_refusal_says_who_signed_and_for_whom() {
        let cahul = participant("apl-cahul", "1003603000063", &[Role::Consumer]);
        let refusal = may_file(&application(true), &cahul, "apl-cahul", true).unwrap_err();
        assert!(refusal.detail.contains("`apl-cahul`"), "{}", refusal.detail);
        assert!(
            refusal.detail.contains("`apl-copceac`"),
            "{}",
            refusal.detail
        );
    }
}
