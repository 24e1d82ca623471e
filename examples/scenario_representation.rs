//! Scenario: a representative acts for a citizen under an MPower
//! authorisation that the citizen consented to, and every call without that
//! consent, by someone else, or without naming the citizen is refused.
//!
//! Run against a running sandbox (`mconnect sandbox` in another terminal):
//!
//! ```text
//! cargo run --example scenario_representation -- --sandbox sandbox
//! ```
//!
//! 1. At the Cahul mayoralty (`apl-cahul`) the citizen asks for an
//!    `AT-SOCIAL-AID` power of attorney for their representative; the
//!    mayoralty files it (`mpower/authorisation-grant`). MPower cannot take
//!    the mayoralty's word for the citizen's consent: it is
//!    `PendingAcceptance`.
//! 2. The representative asks the population register about the citizen with
//!    `MConnect-Represented-Party`: the broker asks MPower, which does not
//!    confirm yet: 403 `representation.denied`.
//! 3. The citizen consents by signing with MSign the statement MPower names
//!    (`consent_hashes.accept`); the mayoralty hands MPower the MSign request
//!    id (`mpower/authorisation-transition`, action `accept`), MPower checks
//!    the signature and the signer: `Valid`. (Signed in to the citizen portal,
//!    `mcabinet`, the citizen could accept there instead.)
//! 4. The representative's call now passes.
//! 5. Someone with no authorisation makes the same call: 403
//!    `representation.denied`; the call without `MConnect-Represented-Party`
//!    under the representation grant: 403 `representation.required`.
//! 6. The citizen revokes the authorisation in the portal; the
//!    representative's next call is refused.
//!
//! Every run uses fresh people (random valid IDNPs), so it succeeds on a
//! fresh sandbox, after the sandbox's `try` list, and when run again.
//! Built only on the participant SDK (`mconnect_sdk`); `sandbox.json` is
//! read as plain JSON.

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use mconnect_sdk::{Call, CallOutcome, Consumer, SandboxManifest};
use serde_json::{Value, json};

const TYPE: &str = "AT-SOCIAL-AID";
/// The grant `apl-cahul-represented-social-aid` (policies/adapters-sign-power.json).
const BASIS: &str = "md-law-133-2008-art-8-representative";
const REASON: &str = "social-aid-application-by-representative";
/// The grants `apl-cahul-mpower`, `apl-cahul-msign` and `mcabinet-mpower`.
const MPOWER: (&str, &str) = ("md-law-142-2018-art-6-3-1", "representation-verification");
const MSIGN: (&str, &str) = ("md-law-91-2014-art-6", "electronic-signing-of-applications");
const PORTAL: (&str, &str) = ("md-gd-375-2020", "citizen-self-service");

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mut dir = PathBuf::from("sandbox");
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--sandbox" => {
                dir = args
                    .next()
                    .map(PathBuf::from)
                    .ok_or("--sandbox needs a directory")?
            }
            other => return Err(format!("unknown argument {other}; use --sandbox DIR").into()),
        }
    }
    let manifest = SandboxManifest::read(&dir)?;
    let portal = manifest.consumer(&dir, "mcabinet")?;
    let mayoralty = manifest.consumer(&dir, "apl-cahul")?;
    let citizen = fresh_idnp();
    let representative = fresh_idnp();
    let stranger = fresh_idnp();

    println!(
        "1. The citizen {citizen} asks the mayoralty to register {representative} as their {TYPE} representative"
    );
    let filed = mayoralty
        .call(&call(
            Method::POST,
            "/r1/mpower/authorisation-grant",
            Some(json!({
                "authorising": {"party_type": "natural", "id": citizen},
                "authorised_idnp": representative,
                "authorisation_type": TYPE,
                "valid_from": "2025-01-01",
                "valid_until": "2030-12-31",
            })),
            &citizen,
            MPOWER,
        ))
        .await?;
    let filed = expect(&filed, StatusCode::CREATED)?;
    let code = text(&filed["code"]);
    println!(
        "   authorisation {code} is {} until the citizen consents",
        text(&filed["status"])
    );

    println!("2. {representative} asks the population register about {citizen}, on their behalf");
    expect_refused(
        &mayoralty
            .call(&represented(&citizen, &representative))
            .await?,
        "representation.denied",
    )?;

    println!("3. The citizen signs their consent with MSign; the mayoralty passes it to MPower");
    let hash = text(&filed["consent_hashes"]["accept"]);
    let signed = sign(&mayoralty, &citizen, &hash).await?;
    let accepted = mayoralty
        .call(&call(
            Method::POST,
            "/r1/mpower/authorisation-transition",
            Some(json!({"code": code, "action": "accept", "msign_request_id": signed})),
            &citizen,
            MPOWER,
        ))
        .await?;
    let accepted = expect(&accepted, StatusCode::OK)?;
    println!(
        "   MPower checked the signature and the signer: {} ({})",
        text(&accepted["status"]),
        text(&accepted["accepted_via"])
    );

    println!("4. {representative} asks again");
    let out = mayoralty
        .call(&represented(&citizen, &representative))
        .await?;
    expect(&out, StatusCode::OK)?;
    println!("   200, data: {}", String::from_utf8_lossy(&out.body));

    println!(
        "5. {stranger}, with no authorisation, makes the same call; then {representative} without MConnect-Represented-Party"
    );
    expect_refused(
        &mayoralty.call(&represented(&citizen, &stranger)).await?,
        "representation.denied",
    )?;
    let mut unnamed = represented(&citizen, &representative);
    unnamed.represented_party = None;
    expect_refused(&mayoralty.call(&unnamed).await?, "representation.required")?;

    println!("6. The citizen revokes {code} in MCabinet; {representative} tries again");
    let revoke = portal
        .call(&call(
            Method::POST,
            "/r1/mpower/authorisation-revoke",
            Some(json!({"code": code, "reason": "no longer needed"})),
            &citizen,
            PORTAL,
        ))
        .await?;
    expect(&revoke, StatusCode::OK)?;
    expect_refused(
        &mayoralty
            .call(&represented(&citizen, &representative))
            .await?,
        "representation.denied",
    )?;
    println!(
        "Scenario complete: representation passes only with an authorisation the citizen consented to."
    );
    Ok(())
}

fn call(method: Method, path: &str, body: Option<Value>, user: &str, grant: (&str, &str)) -> Call {
    Call {
        method,
        path: path.into(),
        body: body.map(|b| Bytes::from(b.to_string())),
        calling_user: user.into(),
        basis: grant.0.into(),
        reason: grant.1.into(),
        subject: None,
        represented_party: None,
        request_id: None,
    }
}

/// Has MSign sign `hash` for `signer` (the sandbox's simulated signer signs
/// at once; a real one takes a moment, hence the bounded wait); the request id.
async fn sign(
    mayoralty: &Consumer,
    signer: &str,
    hash: &str,
) -> Result<String, Box<dyn std::error::Error>> {
    let posted = mayoralty
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
            MSIGN,
        ))
        .await?;
    let id = text(&expect(&posted, StatusCode::CREATED)?["request_id"]);
    for _ in 0..100 {
        let result = mayoralty
            .call(&call(
                Method::GET,
                &format!("/r1/msign/sign-result?request_id={id}"),
                None,
                signer,
                MSIGN,
            ))
            .await?;
        match text(&expect(&result, StatusCode::OK)?["status"]).as_str() {
            "Success" => return Ok(id),
            "Pending" => tokio::time::sleep(Duration::from_millis(200)).await,
            other => return Err(format!("MSign request {id} ended {other}").into()),
        }
    }
    Err(format!("MSign request {id} was not signed in 20 s").into())
}

/// A random valid IDNP: 2, eleven random digits, the control digit.
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

fn text(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_string()
}

/// The population-register call a representative makes for the citizen.
fn represented(citizen: &str, user: &str) -> Call {
    Call {
        method: Method::GET,
        path: format!("/r1/asp-rsp/person-by-idnp?idnp={citizen}"),
        body: None,
        calling_user: user.into(),
        basis: BASIS.into(),
        reason: REASON.into(),
        subject: Some(citizen.into()),
        represented_party: Some(citizen.into()),
        request_id: None,
    }
}

fn expect(out: &CallOutcome, status: StatusCode) -> Result<Value, String> {
    if out.status != status || out.receipt.is_err() {
        return Err(format!(
            "expected {status} with a verified receipt, got {} ({:?}): {}",
            out.status,
            out.receipt,
            String::from_utf8_lossy(&out.body)
        ));
    }
    Ok(serde_json::from_slice(&out.body).unwrap_or(Value::Null))
}

fn expect_refused(out: &CallOutcome, code: &str) -> Result<(), String> {
    let body = serde_json::from_slice::<Value>(&out.body).unwrap_or(Value::Null);
    if out.status != StatusCode::FORBIDDEN || body["code"] != code {
        return Err(format!(
            "expected 403 {code}, got {}: {}",
            out.status,
            String::from_utf8_lossy(&out.body)
        ));
    }
    println!("   403 {code}: {}", text(&body["detail"]));
    Ok(())
}
