//! Representation through the real broker (issue 11, item 6): a power of
//! attorney is in force only with the grantor's consent that MPower can
//! verify, its whole lifecycle is honoured by the broker's representation
//! check, and a grant made for acting on someone's behalf cannot be used
//! without naming them.
//!
//! The sandbox runs the MPower and MSign adapters as child processes: build
//! them first with `cargo build --workspace --bins --examples`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use bytes::Bytes;
use http::{Method, StatusCode};
use mconnect_sdk::{Call, CallOutcome, Consumer};
use serde_json::{Value, json};
use support::{Bus, assert_refused};

/// apl-cahul's grant on MPower (`apl-cahul-mpower`).
const APL_BASIS: &str = "md-law-142-2018-art-6-3-1";
const APL_REASON: &str = "representation-verification";
/// mcabinet's grant on MPower (`mcabinet-mpower`).
const PORTAL_BASIS: &str = "md-gd-375-2020";
const PORTAL_REASON: &str = "citizen-self-service";
/// apl-cahul's grant on MSign (`apl-cahul-msign`).
const MSIGN_BASIS: &str = "md-law-91-2014-art-6";
const MSIGN_REASON: &str = "electronic-signing-of-applications";
/// The representation grant (`apl-cahul-represented-social-aid`).
const REP_BASIS: &str = "md-law-133-2008-art-8-representative";
const REP_REASON: &str = "social-aid-application-by-representative";
const TYPE: &str = "AT-SOCIAL-AID";

fn adapters_built() {
    let dir = support::examples_dir();
    for name in ["mconnect-adapter-mpower", "mconnect-adapter-msign"] {
        let exe = dir.parent().unwrap().join(name);
        assert!(
            exe.exists(),
            "{} is missing: run `cargo build --workspace --bins --examples` first",
            exe.display()
        );
    }
}

/// A fresh IDNP (control digit included), so no test leans on another's
/// state.
fn fresh_idnp() -> String {
    let n = uuid::Uuid::new_v4().as_u128() % 100_000_000_000;
    let body = format!("2{n:011}");
    let sum: u32 = body
        .bytes()
        .zip([7u32, 3, 1].iter().cycle())
        .map(|(d, w)| u32::from(d - b'0') * w)
        .sum();
    format!("{body}{}", sum % 10)
}

struct People {
    citizen: String,
    representative: String,
}

impl People {
    fn new() -> People {
        People {
            citizen: fresh_idnp(),
            representative: fresh_idnp(),
        }
    }
}

fn call(method: Method, path: &str, body: Option<Value>, user: &str, grant: (&str, &str)) -> Call {
    Call {
        method,
        path: path.to_string(),
        body: body.map(|b| Bytes::from(b.to_string())),
        calling_user: user.into(),
        basis: grant.0.into(),
        reason: grant.1.into(),
        subject: None,
        represented_party: None,
        request_id: None,
    }
}

fn json_of(out: &CallOutcome) -> Value {
    serde_json::from_slice(&out.body).unwrap_or(Value::Null)
}

fn ok(out: &CallOutcome, status: StatusCode) -> Value {
    assert_eq!(
        out.status,
        status,
        "body: {}",
        String::from_utf8_lossy(&out.body)
    );
    assert!(out.receipt.is_ok(), "receipt: {:?}", out.receipt);
    json_of(out)
}

/// A provider refusal relayed by the broker: status and MPower's code.
fn refused_by_mpower(out: &CallOutcome, status: u16, code: &str) {
    assert_eq!(
        (
            out.status.as_u16(),
            json_of(out)["code"].as_str().unwrap_or("")
        ),
        (status, code),
        "body: {}",
        String::from_utf8_lossy(&out.body)
    );
}

/// Files `people.citizen`'s authorisation for `people.representative`
/// through `consumer`, with `user` as the calling user; the answer body.
async fn file(
    consumer: &Consumer,
    grant: (&str, &str),
    user: &str,
    people: &People,
    until: &str,
) -> Value {
    let out = consumer
        .call(&call(
            Method::POST,
            "/r1/mpower/authorisation-grant",
            Some(json!({
                "authorising": {"party_type": "natural", "id": people.citizen},
                "authorised_idnp": people.representative,
                "authorisation_type": TYPE,
                "valid_from": "2025-01-01",
                "valid_until": until,
            })),
            user,
            grant,
        ))
        .await
        .unwrap();
    ok(&out, StatusCode::CREATED)
}

/// One lifecycle step; the raw outcome.
async fn step(
    consumer: &Consumer,
    grant: (&str, &str),
    user: &str,
    code: &str,
    action: &str,
    msign_request_id: Option<&str>,
) -> CallOutcome {
    let mut body = json!({"code": code, "action": action});
    if let Some(id) = msign_request_id {
        body["msign_request_id"] = json!(id);
    }
    consumer
        .call(&call(
            Method::POST,
            "/r1/mpower/authorisation-transition",
            Some(body),
            user,
            grant,
        ))
        .await
        .unwrap()
}

/// Asks MSign (as apl-cahul) to have `signer` sign `hash`; the request id
/// once MSign answers Success.
async fn msign(apl: &Consumer, signer: &str, hash: &str) -> String {
    let out = apl
        .call(&call(
            Method::POST,
            "/r1/msign/sign-request",
            Some(json!({
                "content_type": "hash",
                "hash": hash,
                "description": "Consimțământ pentru o împuternicire MPower",
                "signer_idnp": signer,
            })),
            signer,
            (MSIGN_BASIS, MSIGN_REASON),
        ))
        .await
        .unwrap();
    let id = ok(&out, StatusCode::CREATED)["request_id"]
        .as_str()
        .unwrap()
        .to_string();
    for _ in 0..50 {
        let out = apl
            .call(&call(
                Method::GET,
                &format!("/r1/msign/sign-result?request_id={id}"),
                None,
                signer,
                (MSIGN_BASIS, MSIGN_REASON),
            ))
            .await
            .unwrap();
        if ok(&out, StatusCode::OK)["status"] == "Success" {
            return id;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("sign request {id} was not signed");
}

/// The representative asks the population register about the citizen, on
/// the citizen's behalf.
fn on_behalf(people: &People) -> Call {
    Call {
        method: Method::GET,
        path: format!("/r1/asp-rsp/person-by-idnp?idnp={}", people.citizen),
        body: None,
        calling_user: people.representative.clone(),
        basis: REP_BASIS.into(),
        reason: REP_REASON.into(),
        subject: Some(people.citizen.clone()),
        represented_party: Some(people.citizen.clone()),
        request_id: None,
    }
}

async fn passes(apl: &Consumer, people: &People) {
    let out = apl.call(&on_behalf(people)).await.unwrap();
    assert_eq!(ok(&out, StatusCode::OK)["idnp"], people.citizen.as_str());
}

async fn denied(apl: &Consumer, people: &People) {
    let out = apl.call(&on_behalf(people)).await.unwrap();
    assert_refused(&out, 403, "representation.denied");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_authorisation_filed_by_an_authority_waits_for_the_grantor_through_the_portal() {
    adapters_built();
    let bus = Bus::start().await;
    let apl = bus.consumer("apl-cahul");
    let portal = bus.consumer("mcabinet");
    let people = People::new();
    let apl_grant = (APL_BASIS, APL_REASON);
    let portal_grant = (PORTAL_BASIS, PORTAL_REASON);

    // The mayoralty files it in the citizen's name (calling user = the
    // citizen, which it merely claims): it waits, and representation fails.
    let filed = file(&apl, apl_grant, &people.citizen, &people, "2030-12-31").await;
    assert_eq!(filed["status"], "PendingAcceptance");
    assert_eq!(filed["valid_now"], false);
    let code = filed["code"].as_str().unwrap().to_string();
    denied(&apl, &people).await;

    // The mayoralty cannot accept it for the citizen either, whatever user
    // it names; nor can the portal for another of its users.
    let out = step(&apl, apl_grant, &people.citizen, &code, "accept", None).await;
    refused_by_mpower(&out, 403, "mpower.not_authorising_party");
    let out = step(
        &portal,
        portal_grant,
        &people.representative,
        &code,
        "accept",
        None,
    )
    .await;
    refused_by_mpower(&out, 403, "mpower.not_authorising_party");
    denied(&apl, &people).await;

    // The citizen, signed in to the portal, accepts: Valid, and the call passes.
    let out = step(
        &portal,
        portal_grant,
        &people.citizen,
        &code,
        "accept",
        None,
    )
    .await;
    let body = ok(&out, StatusCode::OK);
    assert_eq!(body["status"], "Valid");
    assert_eq!(body["accepted_via"], format!("mcabinet:{}", people.citizen));
    passes(&apl, &people).await;

    // Suspended: refused; resumed by the grantor: passes again. The
    // mayoralty can do neither.
    let out = step(&apl, apl_grant, &people.citizen, &code, "suspend", None).await;
    refused_by_mpower(&out, 403, "mpower.not_authorising_party");
    let out = step(
        &portal,
        portal_grant,
        &people.citizen,
        &code,
        "suspend",
        None,
    )
    .await;
    assert_eq!(ok(&out, StatusCode::OK)["status"], "Suspended");
    denied(&apl, &people).await;
    let out = step(
        &portal,
        portal_grant,
        &people.citizen,
        &code,
        "resume",
        None,
    )
    .await;
    assert_eq!(ok(&out, StatusCode::OK)["status"], "Valid");
    passes(&apl, &people).await;

    // Only the grantor revokes (the revoke service and the transition
    // alike); once revoked it is final and refused.
    let out = apl
        .call(&call(
            Method::POST,
            "/r1/mpower/authorisation-revoke",
            Some(json!({"code": code})),
            &people.citizen,
            apl_grant,
        ))
        .await
        .unwrap();
    refused_by_mpower(&out, 403, "mpower.not_authorising_party");
    passes(&apl, &people).await;
    let out = portal
        .call(&call(
            Method::POST,
            "/r1/mpower/authorisation-revoke",
            Some(json!({"code": code, "reason": "no longer needed"})),
            &people.citizen,
            portal_grant,
        ))
        .await
        .unwrap();
    assert_eq!(ok(&out, StatusCode::OK)["status"], "Revoked");
    denied(&apl, &people).await;
    let out = step(
        &portal,
        portal_grant,
        &people.citizen,
        &code,
        "accept",
        None,
    )
    .await;
    refused_by_mpower(&out, 409, "mpower.conflict");
    denied(&apl, &people).await;

    // Filed by the portal for its signed-in grantor: Valid at once. Filed
    // there as a draft: not yet; submitted by the filer it waits; accepted
    // by the grantor it is Valid.
    let other = People {
        citizen: people.citizen.clone(),
        representative: fresh_idnp(),
    };
    let direct = file(&portal, portal_grant, &other.citizen, &other, "2030-12-31").await;
    assert_eq!(direct["status"], "Valid");
    passes(&apl, &other).await;

    let drafted = People::new();
    let out = apl
        .call(&call(
            Method::POST,
            "/r1/mpower/authorisation-grant",
            Some(json!({
                "authorising": {"party_type": "natural", "id": drafted.citizen},
                "authorised_idnp": drafted.representative,
                "authorisation_type": TYPE,
                "valid_from": "2025-01-01",
                "valid_until": "2030-12-31",
                "draft": true,
            })),
            &drafted.citizen,
            apl_grant,
        ))
        .await
        .unwrap();
    let draft = ok(&out, StatusCode::CREATED);
    assert_eq!(draft["status"], "Draft");
    let draft_code = draft["code"].as_str().unwrap().to_string();
    denied(&apl, &drafted).await;
    let out = step(
        &apl,
        apl_grant,
        &drafted.citizen,
        &draft_code,
        "submit",
        None,
    )
    .await;
    assert_eq!(ok(&out, StatusCode::OK)["status"], "PendingAcceptance");
    denied(&apl, &drafted).await;
    let out = step(
        &portal,
        portal_grant,
        &drafted.citizen,
        &draft_code,
        "accept",
        None,
    )
    .await;
    assert_eq!(ok(&out, StatusCode::OK)["status"], "Valid");
    passes(&apl, &drafted).await;
    bus.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_grantors_msign_signature_over_this_step_makes_it_valid() {
    adapters_built();
    let bus = Bus::start().await;
    let apl = bus.consumer("apl-cahul");
    let portal = bus.consumer("mcabinet");
    let people = People::new();
    let apl_grant = (APL_BASIS, APL_REASON);

    let filed = file(&apl, apl_grant, &people.citizen, &people, "2030-12-31").await;
    assert_eq!(filed["status"], "PendingAcceptance");
    let code = filed["code"].as_str().unwrap().to_string();
    let accept_hash = filed["consent_hashes"]["accept"]
        .as_str()
        .unwrap()
        .to_string();
    let revoke_hash = filed["consent_hashes"]["revoke"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(accept_hash, revoke_hash);

    // Signed by someone else over the right statement: not consent.
    let by_other = msign(&apl, &people.representative, &accept_hash).await;
    let out = step(
        &apl,
        apl_grant,
        &people.citizen,
        &code,
        "accept",
        Some(&by_other),
    )
    .await;
    refused_by_mpower(&out, 403, "mpower.consent_invalid");
    // Signed by the grantor, but over another step's statement: not consent
    // to this one.
    let to_revoke = msign(&apl, &people.citizen, &revoke_hash).await;
    let out = step(
        &apl,
        apl_grant,
        &people.citizen,
        &code,
        "accept",
        Some(&to_revoke),
    )
    .await;
    refused_by_mpower(&out, 403, "mpower.consent_invalid");
    // An id MSign never gave.
    let unknown = uuid::Uuid::new_v4().to_string();
    let out = step(
        &apl,
        apl_grant,
        &people.citizen,
        &code,
        "accept",
        Some(&unknown),
    )
    .await;
    refused_by_mpower(&out, 403, "mpower.consent_invalid");
    denied(&apl, &people).await;

    // The grantor's own signature over the accept statement: Valid.
    let consent = msign(&apl, &people.citizen, &accept_hash).await;
    let out = step(
        &apl,
        apl_grant,
        &people.citizen,
        &code,
        "accept",
        Some(&consent),
    )
    .await;
    let body = ok(&out, StatusCode::OK);
    assert_eq!(body["status"], "Valid");
    assert_eq!(body["accepted_via"], format!("msign:{consent}"));
    passes(&apl, &people).await;

    // Suspended through the portal; the old accept signature cannot bring
    // it back (it consented to another step at another revision).
    let out = step(
        &portal,
        (PORTAL_BASIS, PORTAL_REASON),
        &people.citizen,
        &code,
        "suspend",
        None,
    )
    .await;
    let suspended = ok(&out, StatusCode::OK);
    assert_eq!(suspended["status"], "Suspended");
    denied(&apl, &people).await;
    let out = step(
        &apl,
        apl_grant,
        &people.citizen,
        &code,
        "resume",
        Some(&consent),
    )
    .await;
    refused_by_mpower(&out, 403, "mpower.consent_invalid");
    denied(&apl, &people).await;

    // The grantor revokes by signature over the current revoke statement.
    let revoke_now = suspended["consent_hashes"]["revoke"]
        .as_str()
        .unwrap()
        .to_string();
    let revocation = msign(&apl, &people.citizen, &revoke_now).await;
    let out = apl
        .call(&call(
            Method::POST,
            "/r1/mpower/authorisation-revoke",
            Some(json!({"code": code, "msign_request_id": revocation})),
            &people.representative,
            apl_grant,
        ))
        .await
        .unwrap();
    assert_eq!(ok(&out, StatusCode::OK)["status"], "Revoked");
    denied(&apl, &people).await;
    bus.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_authorisations_and_missing_or_self_representation_are_refused() {
    adapters_built();
    let bus = Bus::start().await;
    let apl = bus.consumer("apl-cahul");
    let portal = bus.consumer("mcabinet");

    // Consented but past its last day: Expired, and the broker refuses.
    let past = People::new();
    let filed = file(
        &portal,
        (PORTAL_BASIS, PORTAL_REASON),
        &past.citizen,
        &past,
        "2025-06-30",
    )
    .await;
    assert_eq!(filed["status"], "Expired");
    assert_eq!(filed["valid_now"], false);
    denied(&apl, &past).await;
    let code = filed["code"].as_str().unwrap();
    let out = step(
        &portal,
        (PORTAL_BASIS, PORTAL_REASON),
        &past.citizen,
        code,
        "resume",
        None,
    )
    .await;
    refused_by_mpower(&out, 409, "mpower.conflict");

    // A representation grant without MConnect-Represented-Party: refused
    // before MPower is asked, even for a holder of a valid authorisation.
    let people = People::new();
    file(
        &portal,
        (PORTAL_BASIS, PORTAL_REASON),
        &people.citizen,
        &people,
        "2030-12-31",
    )
    .await;
    passes(&apl, &people).await;
    let mut without = on_behalf(&people);
    without.represented_party = None;
    let out = apl.call(&without).await.unwrap();
    assert_refused(&out, 403, "representation.required");
    // Nobody represents themselves.
    let mut self_rep = on_behalf(&people);
    self_rep.calling_user = people.citizen.clone();
    let out = apl.call(&self_rep).await.unwrap();
    assert_refused(&out, 403, "representation.denied");
    // Acting for the citizen gives no right to someone else's data.
    let stranger = fresh_idnp();
    let mut elsewhere = on_behalf(&people);
    elsewhere.path = format!("/r1/asp-rsp/person-by-idnp?idnp={stranger}");
    elsewhere.subject = Some(stranger);
    let out = apl.call(&elsewhere).await.unwrap();
    assert_refused(&out, 403, "representation.denied");
    // A grant for acting on one's own never takes a represented party.
    let mut wrong_grant = on_behalf(&people);
    wrong_grant.basis = "md-law-133-2008-art-8".into();
    wrong_grant.reason = "social-aid-eligibility".into();
    let out = apl.call(&wrong_grant).await.unwrap();
    assert_refused(&out, 403, "representation.denied");
    bus.stop().await;
}
