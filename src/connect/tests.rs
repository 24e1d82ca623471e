//! The state machine as a table, roles, the 30-day deadline with an injected
//! clock, storage of requests and grants, application validation against the
//! repository's catalog, and signature evidence.

use std::sync::Arc;

use bytes::Bytes;
use http::Method;

use super::*;
use crate::catalog::Catalog;
use crate::pki::{DevCa, KeyType};
use crate::registry::{Organisation, Registry, registered_certificate};
use crate::store::RedbStore;

const DAY: i64 = 86_400;
const T0: i64 = 1_750_000_000;

/// A participant with no certificates or endpoints, named by its id (also
/// used by the tests of `filer`).
pub(super) fn participant(id: &str, idno: &str, roles: &[Role]) -> Participant {
    Participant {
        id: id.into(),
        organisation: Organisation {
            idno: idno.into(),
            name: id.into(),
        },
        roles: roles.to_vec(),
        certificates: Vec::new(),
        endpoints: Vec::new(),
        confidential: false,
    }
}

fn operator() -> Participant {
    participant("age-operator", "1003600000017", &[Role::Operator])
}
fn applicant() -> Participant {
    participant("apl-ungheni", "1004600000081", &[Role::Consumer])
}
fn provider() -> Participant {
    participant("cnas", "1003602000055", &[Role::Provider])
}
fn second_provider() -> Participant {
    participant("sfs", "1013600000041", &[Role::Provider])
}
fn stranger() -> Participant {
    participant("apl-cahul", "1003603000063", &[Role::Consumer])
}

fn sample_application() -> Application {
    serde_json::from_str(include_str!(
        "../../examples/connect/apl-ungheni-pensions.json"
    ))
    .unwrap()
}

fn sample_evidence() -> Evidence {
    Evidence {
        version: 1,
        received_at: T0,
        method: "POST".into(),
        target_uri: "https://127.0.0.1/v1/connection-requests".into(),
        body: String::new(),
        body_sha256: String::new(),
        headers: Default::default(),
        signature_input: String::new(),
        signature: format!("mconnect=:{}:", uuid::Uuid::new_v4()),
        keyid: "00".into(),
        signer: "apl-ungheni".into(),
        signer_idno: "1004600000081".into(),
        signer_certificate: String::new(),
        created: T0,
        calling_user: None,
        user_signature: None,
    }
}

fn request_in(state: State) -> ConnectionRequest {
    let mut r = ConnectionRequest::submitted(
        "cr-2025-000001".into(),
        sample_application(),
        sample_evidence(),
        &applicant(),
        T0,
    );
    r.state = state;
    if matches!(
        state,
        State::Approved | State::Active | State::Suspended | State::Revoked
    ) {
        r.grants = vec!["cr-2025-000001.1".into()];
        r.rate_limit = Some(RateLimitSpec::DEFAULT);
    }
    r
}

/// The right actor and act for each transition.
fn act_for(t: Transition) -> (Participant, Act) {
    let reason = Some("because the table says so".to_string());
    match t {
        Transition::Confirm => (provider(), Act::Plain(t, None)),
        Transition::Resubmit => (
            applicant(),
            Act::Resubmit {
                application: Box::new(sample_application()),
                evidence: Box::new(sample_evidence()),
                reason,
            },
        ),
        Transition::Approve => (
            operator(),
            Act::Approve {
                reason,
                rate_limit: None,
            },
        ),
        _ => (operator(), Act::Plain(t, reason)),
    }
}

#[test]
fn every_legal_transition_and_every_illegal_one() {
    use State as S;
    use Transition as T;
    // (from, transition, to): the procedure of GD 211/2019 as this broker
    // runs it. Every pair not listed must be refused as illegal.
    let legal = [
        (S::Submitted, T::Review, S::UnderReview),
        (S::UnderReview, T::RequestChanges, S::ChangesRequested),
        (S::ChangesRequested, T::Resubmit, S::Resubmitted),
        (S::Resubmitted, T::Review, S::UnderReview),
        (S::UnderReview, T::Approve, S::Approved),
        (S::UnderReview, T::Reject, S::Rejected),
        // One provider: its confirmation makes the request active.
        (S::Approved, T::Confirm, S::Active),
        (S::Active, T::Suspend, S::Suspended),
        (S::Suspended, T::Resume, S::Active),
        (S::Submitted, T::Revoke, S::Revoked),
        (S::UnderReview, T::Revoke, S::Revoked),
        (S::ChangesRequested, T::Revoke, S::Revoked),
        (S::Resubmitted, T::Revoke, S::Revoked),
        (S::Approved, T::Revoke, S::Revoked),
        (S::Active, T::Revoke, S::Revoked),
        (S::Suspended, T::Revoke, S::Revoked),
    ];
    let mut checked = 0;
    for from in State::ALL {
        for t in Transition::ALL {
            if t == T::Submit {
                continue; // creates a request; covered by `submitted`
            }
            let mut r = request_in(from);
            let before = r.clone();
            let (actor, act) = act_for(t);
            let expected = legal
                .iter()
                .find(|(f, tr, _)| *f == from && *tr == t)
                .map(|(_, _, to)| *to);
            let result = r.apply(act, &actor, T0 + DAY);
            match expected {
                Some(to) => {
                    assert_eq!(result, Ok(()), "{from} --{t}--> {to}");
                    assert_eq!(r.state, to, "{from} --{t}-->");
                    let last = r.history.last().unwrap();
                    assert_eq!(
                        (last.transition, last.from, last.to, last.at),
                        (t, Some(from), to, T0 + DAY)
                    );
                    assert_eq!(last.by.participant, actor.id);
                }
                None => {
                    let e = result.unwrap_err();
                    assert_eq!(e.code(), "connect.illegal_transition", "{from} --{t}--> ?");
                    assert_eq!(e.status(), http::StatusCode::CONFLICT);
                    let text = e.to_string();
                    assert!(text.contains(from.as_str()), "{text}");
                    for allowed in from.allowed() {
                        assert!(text.contains(allowed.as_str()), "{text}");
                    }
                    assert_eq!(r, before, "a refused transition changes nothing");
                }
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 9 * 9);
    // The table and the machine agree both ways.
    for from in State::ALL {
        let mut from_table: Vec<Transition> = legal
            .iter()
            .filter(|(f, _, _)| *f == from)
            .map(|(_, t, _)| *t)
            .collect();
        let mut from_machine = from.allowed().to_vec();
        from_table.sort_by_key(|t| t.as_str());
        from_machine.sort_by_key(|t| t.as_str());
        assert_eq!(from_table, from_machine, "{from}");
    }
}

#[test]
fn roles_decide_who_may_do_what() {
    let cases: [(Participant, Transition, State, &str); 7] = [
        (
            stranger(),
            Transition::Approve,
            State::UnderReview,
            "admin.forbidden",
        ),
        (
            applicant(),
            Transition::Approve,
            State::UnderReview,
            "admin.forbidden",
        ),
        (
            provider(),
            Transition::Suspend,
            State::Active,
            "admin.forbidden",
        ),
        (
            operator(),
            Transition::Confirm,
            State::Approved,
            "admin.forbidden",
        ),
        (
            second_provider(),
            Transition::Confirm,
            State::Approved,
            "admin.forbidden",
        ),
        (
            stranger(),
            Transition::Resubmit,
            State::ChangesRequested,
            "admin.forbidden",
        ),
        // Rights come before the state: a stranger learns nothing of it.
        (
            stranger(),
            Transition::Revoke,
            State::Revoked,
            "admin.forbidden",
        ),
    ];
    for (who, t, state, code) in cases {
        let mut r = request_in(state);
        let (_, act) = act_for(t);
        let e = r.apply(act, &who, T0).unwrap_err();
        assert_eq!(e.code(), code, "{} {t} in {state}", who.id);
    }
    let r = request_in(State::Submitted);
    assert!(r.visible_to(&operator()) && r.visible_to(&applicant()) && r.visible_to(&provider()));
    assert!(!r.visible_to(&stranger()) && !r.visible_to(&second_provider()));
    // Another system of the applicant's organisation is the applicant too.
    let sibling = participant("ungheni-social", "1004600000081", &[Role::Consumer]);
    assert!(r.is_applicant(&sibling));
    assert_eq!(
        request_in(State::UnderReview).actions_for(&operator()),
        vec![
            Transition::RequestChanges,
            Transition::Approve,
            Transition::Reject,
            Transition::Revoke
        ]
    );
    assert!(
        request_in(State::UnderReview)
            .actions_for(&applicant())
            .is_empty()
    );
}

#[test]
fn decisions_against_the_applicant_need_a_reason() {
    for t in [
        Transition::RequestChanges,
        Transition::Reject,
        Transition::Suspend,
        Transition::Revoke,
    ] {
        let from = *State::ALL
            .iter()
            .find(|s| s.allowed().contains(&t))
            .unwrap();
        let mut r = request_in(from);
        for reason in [None, Some("  ".to_string())] {
            let e = r.apply(Act::Plain(t, reason), &operator(), T0).unwrap_err();
            assert_eq!(e.code(), "connect.reason_required", "{t}");
        }
    }
    let mut r = request_in(State::Submitted);
    r.apply(Act::Plain(Transition::Review, None), &operator(), T0)
        .unwrap();
}

#[test]
fn every_provider_confirms_before_the_request_is_active() {
    let mut r = request_in(State::Approved);
    let mut second = sample_application().services[0].clone();
    second.service = "sfs/tax-debts".into();
    r.application.services.push(second);
    r.grants.push("cr-2025-000001.2".into());
    assert_eq!(
        r.providers().into_iter().collect::<Vec<_>>(),
        ["cnas", "sfs"]
    );

    r.apply(Act::Plain(Transition::Confirm, None), &provider(), T0)
        .unwrap();
    assert_eq!(r.state, State::Approved, "sfs has not confirmed yet");
    assert!(!r.grants_in_store());
    let e = r
        .apply(Act::Plain(Transition::Confirm, None), &provider(), T0)
        .unwrap_err();
    assert_eq!(e.code(), "connect.already_confirmed");
    assert_eq!(r.actions_for(&provider()), Vec::<Transition>::new());
    r.apply(
        Act::Plain(Transition::Confirm, None),
        &second_provider(),
        T0,
    )
    .unwrap();
    assert_eq!(r.state, State::Active);
    assert!(r.grants_in_store());
    assert_eq!(r.confirmations.len(), 2);
}

#[test]
fn the_thirty_day_deadline_runs_from_submission_and_resubmission() {
    let mut r = request_in(State::Submitted);
    assert_eq!(r.due_at(), T0 + 30 * DAY);
    // (state, now, overdue)
    let cases = [
        (State::Submitted, T0 + 30 * DAY, false),
        (State::Submitted, T0 + 30 * DAY + 1, true),
        (State::UnderReview, T0 + 31 * DAY, true),
        (State::Resubmitted, T0 + 31 * DAY, true),
        // Waiting on the applicant or decided: the clock does not run.
        (State::ChangesRequested, T0 + 90 * DAY, false),
        (State::Approved, T0 + 90 * DAY, false),
        (State::Rejected, T0 + 90 * DAY, false),
        (State::Active, T0 + 90 * DAY, false),
    ];
    for (state, now, overdue) in cases {
        r.state = state;
        assert_eq!(r.overdue(now), overdue, "{state} at T0+{}s", now - T0);
    }

    // A resubmission on day 40 starts a new 30 days.
    r.state = State::ChangesRequested;
    let (who, act) = act_for(Transition::Resubmit);
    r.apply(act, &who, T0 + 40 * DAY).unwrap();
    assert_eq!(r.due_at(), T0 + 70 * DAY);
    assert!(!r.overdue(T0 + 69 * DAY));
    assert!(r.overdue(T0 + 70 * DAY + 1));
    assert_eq!(r.submitted_at, T0, "the first submission is kept");
    assert_eq!(r.evidence.len(), 2, "each version keeps its evidence");
}

#[test]
fn ids_count_up_per_year() {
    assert_eq!(next_id([], 2025), "cr-2025-000001");
    assert_eq!(
        next_id(["cr-2025-000001", "cr-2025-000009", "cr-2024-000500"], 2025),
        "cr-2025-000010"
    );
    assert_eq!(next_id(["cr-2024-000500"], 2025), "cr-2025-000001");
}

#[test]
fn the_store_holds_grants_only_while_they_are_or_were_in_force() {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open(&dir.path().join("state.redb")).unwrap();
    let grants = |store: &RedbStore| -> Vec<(String, String)> {
        store
            .scan(Collection::Grants)
            .unwrap()
            .into_iter()
            .map(|(k, v)| {
                let v: serde_json::Value = serde_json::from_slice(&v).unwrap();
                (k, v["status"].as_str().unwrap().to_string())
            })
            .collect()
    };
    let mut r = request_in(State::Approved);
    persist(&store, &r).unwrap();
    assert!(grants(&store).is_empty(), "approved but unconfirmed");
    let approved = r.clone();

    r.apply(Act::Plain(Transition::Confirm, None), &provider(), T0)
        .unwrap();
    persist(&store, &r).unwrap();
    assert_eq!(
        grants(&store),
        [("cr-2025-000001.1".into(), "active".into())]
    );
    let docs = stored_grant_documents(&store).unwrap();
    assert_eq!(docs.len(), 1);
    assert_eq!(
        docs[0].0,
        std::path::PathBuf::from("state/connection-requests/cr-2025-000001")
    );
    let grant = &docs[0].1["grants"][0];
    assert_eq!(grant["origin"]["request_id"], "cr-2025-000001");
    assert_eq!(grant["consumer"], "apl-ungheni");
    assert_eq!(grant["purposes"][0]["code"], "disability-support");

    // Undoing the confirmation removes the grants again.
    restore(&store, &r.id, Some(&approved)).unwrap();
    assert!(grants(&store).is_empty());
    assert_eq!(load(&store, &r.id).unwrap().unwrap().state, State::Approved);

    persist(&store, &r).unwrap();
    let why = Some("audit finding".to_string());
    r.apply(
        Act::Plain(Transition::Suspend, why.clone()),
        &operator(),
        T0,
    )
    .unwrap();
    persist(&store, &r).unwrap();
    assert_eq!(grants(&store)[0].1, "suspended");
    r.apply(Act::Plain(Transition::Revoke, why), &operator(), T0)
        .unwrap();
    persist(&store, &r).unwrap();
    assert_eq!(grants(&store)[0].1, "revoked");
    assert_eq!(load_all(&store).unwrap(), vec![r.clone()]);

    // A request revoked before it was ever in force leaves no grants.
    let mut early = request_in(State::Approved);
    early.id = "cr-2025-000002".into();
    early.grants = vec!["cr-2025-000002.1".into()];
    early
        .apply(
            Act::Plain(Transition::Revoke, Some("withdrawn".into())),
            &operator(),
            T0,
        )
        .unwrap();
    assert!(!early.grants_in_store());
    restore(&store, &early.id, None).unwrap();
}

/// A registry with the sandbox participants an application may name, each
/// with a fresh certificate; returns the keys too.
fn registry_with(ca: &DevCa, dir: &std::path::Path) -> (Registry, Vec<(String, String, String)>) {
    let anchors = crate::trust::TrustAnchors::from_pem(ca.cert_pem()).unwrap();
    let registry = Registry::open(
        Arc::new(RedbStore::open(&dir.join("state.redb")).unwrap()),
        anchors,
    )
    .unwrap();
    let mut keys = Vec::new();
    for (id, idno, key) in [
        ("mcabinet", "1003600000017", KeyType::Ed25519),
        ("apl-ungheni", "1004600000081", KeyType::EcdsaP256),
        ("apl-cahul", "1003603000063", KeyType::Ed25519),
    ] {
        let issued = ca.issue(id, id, key).unwrap();
        let mut p = participant(id, idno, &[Role::Consumer]);
        p.certificates = vec![registered_certificate(&issued.cert_pem).unwrap()];
        registry.upsert(p).unwrap();
        keys.push((id.to_string(), issued.cert_pem, issued.key_pem));
    }
    (registry, keys)
}

fn repo_catalog() -> Catalog {
    Catalog::load_dir(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("catalog")).unwrap()
}

#[test]
fn applications_are_checked_against_schema_catalog_and_registry() {
    let dir = tempfile::tempdir().unwrap();
    let ca = DevCa::generate("ca").unwrap();
    let (registry, _) = registry_with(&ca, dir.path());
    let snapshot = registry.snapshot();
    let catalog = repo_catalog();
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/connect");
    for good in ["mcabinet-tax-debts.json", "apl-ungheni-pensions.json"] {
        let body = std::fs::read(examples.join(good)).unwrap();
        validate_application(&body, &catalog, &snapshot)
            .unwrap_or_else(|p| panic!("{good}: {p:?}"));
    }

    let base: serde_json::Value =
        serde_json::from_slice(&std::fs::read(examples.join("mcabinet-tax-debts.json")).unwrap())
            .unwrap();
    // (change, expected code, expected pointer, words the reason must hold)
    type Change = fn(&mut serde_json::Value);
    let cases: Vec<(Change, &str, &str, &str)> = vec![
        (
            |v| v["services"][0]["service"] = "sfs/marriages".into(),
            "connect.unknown_service",
            "/services/0/service",
            "unknown service \"sfs/marriages\"",
        ),
        (
            |v| v["declaration"]["own_responsibility"] = false.into(),
            "connect.application_invalid",
            "/declaration/own_responsibility",
            "true",
        ),
        (
            |v| {
                v.as_object_mut().unwrap().remove("controller_register_no");
            },
            "connect.application_invalid",
            "/controller_register_no",
            "personal data",
        ),
        (
            |v| v["services"][0]["fields"][0] = "debts[].secret".into(),
            "connect.application_invalid",
            "/services/0/fields/0",
            "not a field",
        ),
        (
            |v| v["applicant"]["system"] = "nobody".into(),
            "connect.application_invalid",
            "/applicant/system",
            "not a registered participant",
        ),
        (
            |v| v["applicant"]["idno"] = "1004600000081".into(),
            "connect.application_invalid",
            "/applicant/system",
            "belongs to IDNO",
        ),
        (
            |v| {
                v["services"][0]["legal_bases"][0]
                    .as_object_mut()
                    .unwrap()
                    .remove("article");
            },
            "connect.application_invalid",
            "/services/0/legal_bases/0",
            "article",
        ),
        (
            |v| v["validity"]["until"] = "2024-01-01".into(),
            "connect.application_invalid",
            "/validity/until",
            "ends before it starts",
        ),
        (
            |v| v["surprise"] = true.into(),
            "connect.application_invalid",
            "",
            "surprise",
        ),
    ];
    for (change, code, pointer, words) in cases {
        let mut v = base.clone();
        change(&mut v);
        let problems = validate_application(&serde_json::to_vec(&v).unwrap(), &catalog, &snapshot)
            .unwrap_err();
        assert_eq!(application::refusal_code(&problems), code, "{problems:?}");
        assert!(
            problems
                .iter()
                .any(|p| p.pointer == pointer && p.to_string().contains(words)),
            "{pointer} / {words}: {problems:?}"
        );
    }
    let problems = validate_application(b"not json", &catalog, &snapshot).unwrap_err();
    assert_eq!(problems[0].code, "request.malformed");
}

#[test]
fn signatures_are_verified_kept_and_verifiable_again() {
    let dir = tempfile::tempdir().unwrap();
    let ca = DevCa::generate("ca").unwrap();
    let (registry, keys) = registry_with(&ca, dir.path());
    let snapshot = registry.snapshot();
    let credentials = |id: &str| {
        let (_, cert, key) = keys.iter().find(|(p, _, _)| p == id).unwrap();
        mconnect_sdk::Credentials::from_pem(id, cert, key, ca.cert_pem(), None).unwrap()
    };
    let uri = "https://127.0.0.1:8444/v1/connection-requests";
    let body = Bytes::from_static(br#"{"hello": "world"}"#);
    let now = crate::exchange::unix_now();
    let signed = |id: &str, body: Bytes| {
        client::signed_submission(&credentials(id), Method::POST, uri, body, "2000000000015")
            .unwrap()
    };
    let verify = |request: &http::Request<http_body_util::Full<Bytes>>, body: &[u8], now| {
        verify_submission(
            &evidence::Submission {
                method: request.method().as_str(),
                target_uri: uri,
                headers: request.headers(),
                body,
            },
            &snapshot,
            now,
        )
    };

    let request = signed("mcabinet", body.clone());
    let kept = verify(&request, &body, now).unwrap();
    assert_eq!(kept.signer, "mcabinet");
    assert_eq!(kept.signer_idno, "1003600000017");
    assert_eq!(kept.calling_user.as_deref(), Some("2000000000015"));
    assert!(kept.headers.contains_key("content-digest"));
    kept.reverify().unwrap();
    assert_eq!(kept.body_bytes().unwrap(), body.to_vec());

    // (what is wrong, status, code)
    let cases: Vec<(&str, Result<Evidence, SignatureRefusal>, &str)> = vec![
        (
            "another body",
            verify(&request, br#"{"hello": "there"}"#, now),
            "digest.mismatch",
        ),
        (
            "too old",
            verify(&request, &body, now + 3600),
            "signature.expired",
        ),
        (
            "unsigned",
            {
                let mut r = signed("mcabinet", body.clone());
                r.headers_mut().remove("signature");
                verify(&r, &body, now)
            },
            "signature.missing",
        ),
        (
            "signed by apl-cahul's key under mcabinet's keyid",
            {
                let mut forged = credentials("apl-cahul");
                forged.keyid = credentials("mcabinet").keyid;
                let r = client::signed_submission(
                    &forged,
                    Method::POST,
                    uri,
                    body.clone(),
                    "2000000000015",
                )
                .unwrap();
                verify(&r, &body, now)
            },
            "signature.invalid",
        ),
        (
            "a certificate nobody registered",
            {
                let outsider = ca.issue("outsider", "x", KeyType::Ed25519).unwrap();
                let c = mconnect_sdk::Credentials::from_pem(
                    "outsider",
                    &outsider.cert_pem,
                    &outsider.key_pem,
                    ca.cert_pem(),
                    None,
                )
                .unwrap();
                let r =
                    client::signed_submission(&c, Method::POST, uri, body.clone(), "2000000000015")
                        .unwrap();
                verify(&r, &body, now)
            },
            "signature.invalid",
        ),
    ];
    for (what, result, code) in cases {
        assert_eq!(result.map(|_| ()).unwrap_err().code, code, "{what}");
    }

    // Evidence that was tampered with after the fact no longer verifies.
    let mut tampered = kept.clone();
    tampered.body = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        br#"{"hello": "there"}"#,
    );
    tampered.body_sha256 = hex::encode(crate::crypto::sha256(br#"{"hello": "there"}"#));
    assert!(tampered.reverify().unwrap_err().contains("digest"));
    let mut tampered = kept.clone();
    tampered.target_uri = "https://127.0.0.1:8444/v1/connection-requests/x".into();
    assert!(tampered.reverify().is_err());
    let mut tampered = kept;
    tampered.signer_certificate = keys[1].1.clone();
    assert!(tampered.reverify().unwrap_err().contains("keyid"));
}

#[test]
fn an_officials_own_signature_is_verified_kept_and_verifiable_again() {
    let dir = tempfile::tempdir().unwrap();
    let ca = DevCa::generate("ca").unwrap();
    let (registry, keys) = registry_with(&ca, dir.path());
    let snapshot = registry.snapshot();
    let (_, cert, key) = keys.iter().find(|(p, _, _)| p == "apl-cahul").unwrap();
    let credentials =
        mconnect_sdk::Credentials::from_pem("apl-cahul", cert, key, ca.cert_pem(), None).unwrap();
    let uri = "https://127.0.0.1:8444/v1/connection-requests";
    let body = Bytes::from_static(br#"{"hello": "world"}"#);
    let now = crate::exchange::unix_now();
    let (idnp, other) = ("2000000000048", "2000000000015");
    let person = ca.issue_person(idnp, "Elena Ciobanu").unwrap();
    // MSign signs the 32 bytes of the digest; ECDSA comes back in DER.
    let sign = |issued: &crate::pki::IssuedCertificate, message: &[u8]| {
        let key = crate::crypto::SigningKey::from_pem(&issued.key_pem).unwrap();
        let raw = key.sign(&crate::crypto::sha256(message)).unwrap();
        client::UserSigned {
            signature: base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD,
                crate::crypto::ecdsa_p256_fixed_to_der(&raw),
            ),
            certificate_pem: issued.cert_pem.clone(),
        }
    };
    let check = |request: &http::Request<http_body_util::Full<Bytes>>| {
        let submission = evidence::Submission {
            method: request.method().as_str(),
            target_uri: uri,
            headers: request.headers(),
            body: &body,
        };
        let mut kept = verify_submission(&submission, &snapshot, now)?;
        kept.user_signature =
            evidence::verify_user_signature(&submission, &kept, registry.anchors(), now)?;
        Ok::<_, SignatureRefusal>(kept)
    };
    let submit = |calling_user: &str, user: &client::UserSigned| {
        client::signed_submission_with(
            &credentials,
            Method::POST,
            uri,
            body.clone(),
            calling_user,
            Some(user),
        )
        .unwrap()
    };

    let kept = check(&submit(idnp, &sign(&person, &body))).unwrap();
    let user = kept.user_signature.clone().expect("kept with the evidence");
    assert_eq!(user.idnp, idnp);
    assert_eq!(user.digest_sha256, kept.body_sha256);
    assert_eq!(user.algorithm, "ecdsa-p256-sha256");
    assert!(
        user.subject.contains("PNOMD-2000000000048"),
        "{}",
        user.subject
    );
    assert_eq!(user.certificate_fingerprint, person.fingerprint);
    kept.reverify().unwrap();
    // Without one, nothing is kept and nothing is refused.
    let plain =
        client::signed_submission(&credentials, Method::POST, uri, body.clone(), idnp).unwrap();
    assert_eq!(check(&plain).unwrap().user_signature, None);

    // (what is wrong, the request, code)
    let outsider_ca = DevCa::generate("another CA").unwrap();
    let cases = [
        (
            "another person's certificate",
            submit(other, &sign(&person, &body)),
            "connect.user_signature_invalid",
        ),
        (
            "a signature over another body",
            submit(idnp, &sign(&person, b"{}")),
            "connect.user_signature_invalid",
        ),
        (
            "a certificate of another CA",
            submit(
                idnp,
                &sign(&outsider_ca.issue_person(idnp, "Elena").unwrap(), &body),
            ),
            "connect.user_signature_invalid",
        ),
        (
            "a signature without its certificate",
            {
                let mut r = plain.clone_without_body();
                r.headers_mut().insert(
                    "mconnect-user-signature",
                    http::HeaderValue::from_str(&sign(&person, &body).signature).unwrap(),
                );
                r
            },
            "request.malformed",
        ),
        (
            "a signature added after the submission was signed",
            {
                let mut r = plain.clone_without_body();
                let user = sign(&person, &body);
                r.headers_mut().insert(
                    "mconnect-user-signature",
                    http::HeaderValue::from_str(&user.signature).unwrap(),
                );
                let der = mconnect_sdk::parse_certs(&person.cert_pem).unwrap();
                r.headers_mut().insert(
                    "mconnect-user-certificate",
                    http::HeaderValue::from_str(&base64::Engine::encode(
                        &base64::engine::general_purpose::STANDARD,
                        der[0].as_ref(),
                    ))
                    .unwrap(),
                );
                r
            },
            "signature.invalid",
        ),
    ];
    for (what, request, code) in cases {
        assert_eq!(check(&request).unwrap_err().code, code, "{what}");
    }

    // Kept evidence whose user signature was changed no longer verifies.
    let mut tampered = kept.clone();
    if let Some(u) = tampered.user_signature.as_mut() {
        u.idnp = other.into();
    }
    assert!(tampered.reverify().is_err());
    let mut tampered = kept;
    if let Some(u) = tampered.user_signature.as_mut() {
        u.signature = sign(&person, b"{}").signature;
    }
    assert!(tampered.reverify().unwrap_err().contains("does not verify"));
}

trait CloneWithoutBody {
    fn clone_without_body(&self) -> http::Request<http_body_util::Full<Bytes>>;
}

impl CloneWithoutBody for http::Request<http_body_util::Full<Bytes>> {
    fn clone_without_body(&self) -> http::Request<http_body_util::Full<Bytes>> {
        let mut r = http::Request::new(http_body_util::Full::new(Bytes::new()));
        *r.method_mut() = self.method().clone();
        *r.uri_mut() = self.uri().clone();
        *r.headers_mut() = self.headers().clone();
        r
    }
}

#[test]
fn the_intermediary_that_filed_follows_and_resubmits_what_it_filed() {
    let portal = participant(
        "mconnect-portal",
        "1003600000017",
        &[Role::Consumer, Role::Intermediary],
    );
    let mut r = ConnectionRequest::submitted(
        "cr-2025-000002".into(),
        sample_application(),
        sample_evidence(),
        &portal,
        T0,
    );
    assert_eq!(r.filer(), Some("mconnect-portal"));
    assert!(r.visible_to(&portal) && r.visible_to(&applicant()));
    assert!(!r.visible_to(&stranger()));
    // Another intermediary did not file it, and sees nothing.
    let other = participant("other-portal", "1003603000063", &[Role::Intermediary]);
    assert!(!r.visible_to(&other));
    r.state = State::ChangesRequested;
    assert_eq!(r.actions_for(&portal), vec![Transition::Resubmit]);
    assert!(r.authorise(Transition::Resubmit, &other).is_err());
}

#[test]
fn an_application_registers_a_system_not_yet_on_the_bus() {
    let dir = tempfile::tempdir().unwrap();
    let ca = DevCa::generate("ca").unwrap();
    let (registry, keys) = registry_with(&ca, dir.path());
    let snapshot = registry.snapshot();
    let catalog = repo_catalog();
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/connect");
    let mut base: serde_json::Value =
        serde_json::from_slice(&std::fs::read(examples.join("mcabinet-tax-debts.json")).unwrap())
            .unwrap();
    let issued = ca
        .issue("apl-copceac", "Primăria Copceac", KeyType::Ed25519)
        .unwrap();
    base["applicant"] = serde_json::json!({
        "idno": "1003605000089", "name": "Primăria satului Copceac", "system": "apl-copceac",
        "registration": {"certificate": issued.cert_pem, "endpoint": "https://copceac.example.md"},
    });
    let good = validate_application(&serde_json::to_vec(&base).unwrap(), &catalog, &snapshot)
        .unwrap_or_else(|p| panic!("{p:?}"));
    assert_eq!(
        good.applicant.registration.unwrap().endpoint.as_deref(),
        Some("https://copceac.example.md")
    );

    let cahul_cert = keys
        .iter()
        .find(|(id, _, _)| id == "apl-cahul")
        .unwrap()
        .1
        .clone();
    // (change, pointer, words the reason must hold)
    type Change = Box<dyn Fn(&mut serde_json::Value)>;
    let cases: Vec<(Change, &str, &str)> = vec![
        (
            Box::new(|v| {
                v["applicant"]["system"] = "apl-cahul".into();
                v["applicant"]["idno"] = "1003603000063".into();
            }),
            "/applicant/registration",
            "already a registered participant",
        ),
        (
            Box::new(|v| v["applicant"]["system"] = "mconnect".into()),
            "/applicant/system",
            "cannot be a participant id",
        ),
        (
            Box::new(|v| {
                v["applicant"]["registration"]["certificate"] =
                    "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n".into();
            }),
            "/applicant/registration/certificate",
            "cannot be used",
        ),
        (
            Box::new(move |v| {
                v["applicant"]["registration"]["certificate"] = cahul_cert.clone().into();
            }),
            "/applicant/registration/certificate",
            "already registered to participant `apl-cahul`",
        ),
        (
            Box::new(|v| {
                v["applicant"]["registration"]["endpoint"] = "http://copceac.example.md".into();
            }),
            "/applicant/registration/endpoint",
            "https://",
        ),
        (
            Box::new(|v| {
                v["applicant"]["registration"]["endpoint"] = "https://copceac.md?x=1".into();
            }),
            "/applicant/registration/endpoint",
            "no credentials, query or fragment",
        ),
        (
            Box::new(|v| {
                v["applicant"]
                    .as_object_mut()
                    .unwrap()
                    .remove("registration");
            }),
            "/applicant/system",
            "give applicant.registration",
        ),
    ];
    for (change, pointer, words) in cases {
        let mut v = base.clone();
        change(&mut v);
        let problems = validate_application(&serde_json::to_vec(&v).unwrap(), &catalog, &snapshot)
            .unwrap_err();
        assert!(
            problems
                .iter()
                .any(|p| p.pointer == pointer && p.to_string().contains(words)),
            "{pointer} / {words}: {problems:?}"
        );
    }
}
