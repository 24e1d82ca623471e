//! Scenario: a representative acts for a citizen under an MPower
//! authorisation, and the same call without one is refused.
//!
//! Run against a running sandbox (`mconnect sandbox` in another terminal):
//!
//! ```text
//! cargo run --example scenario_representation -- --sandbox sandbox
//! ```
//!
//! 1. The citizen (IDNP 2000000000015), in the citizen portal (`mcabinet`),
//!    gives Ion (IDNP 2003000000027) an `AT-SOCIAL-AID` power of attorney
//!    through the bus (`mpower/authorisation-grant`).
//! 2. Ion, at the Cahul mayoralty (`apl-cahul`), asks the population register
//!    about the citizen with `MConnect-Represented-Party`: the broker asks
//!    MPower, which confirms, and the data comes back.
//! 3. Another official (IDNP 2004000000035), with no authorisation, makes the
//!    same call: 403 `representation.denied`.
//! 4. The citizen revokes the authorisation; Ion's next call is refused too.
//!
//! Built only on the participant SDK (`mconnect::sdk`); `sandbox.json` is
//! read as plain JSON.

use std::path::PathBuf;

use bytes::Bytes;
use http::{Method, StatusCode};
use mconnect::sdk::{Call, CallOutcome, SandboxManifest};
use serde_json::{Value, json};

const CITIZEN: &str = "2000000000015";
const REPRESENTATIVE: &str = "2003000000027";
const STRANGER: &str = "2004000000035";
const TYPE: &str = "AT-SOCIAL-AID";
/// The grant `apl-cahul-represented-social-aid` (policies/adapters-sign-power.json).
const BASIS: &str = "md-law-133-2008-art-8-representative";
const REASON: &str = "social-aid-application-by-representative";

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

    println!(
        "1. The citizen {CITIZEN} authorises {REPRESENTATIVE} ({TYPE}) in MCabinet, through MPower on the bus"
    );
    let grant = portal
        .call(&Call {
            method: Method::POST,
            path: "/r1/mpower/authorisation-grant".into(),
            body: Some(Bytes::from(
                json!({
                    "authorising": {"party_type": "natural", "id": CITIZEN},
                    "authorised_idnp": REPRESENTATIVE,
                    "authorisation_type": TYPE,
                    "valid_from": "2025-01-01",
                    "valid_until": "2030-12-31",
                })
                .to_string(),
            )),
            calling_user: CITIZEN.into(),
            basis: "md-gd-375-2020".into(),
            reason: "citizen-self-service".into(),
            subject: None,
            represented_party: None,
            request_id: None,
        })
        .await?;
    expect(&grant, StatusCode::CREATED)?;
    let code = serde_json::from_slice::<Value>(&grant.body)?["code"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    println!("   authorisation code {code}");

    println!(
        "2. {REPRESENTATIVE} asks the population register about {CITIZEN}, on the citizen's behalf"
    );
    let out = mayoralty.call(&represented(REPRESENTATIVE)).await?;
    expect(&out, StatusCode::OK)?;
    println!("   200, data: {}", String::from_utf8_lossy(&out.body));

    println!("3. {STRANGER}, with no authorisation, makes the same call");
    let out = mayoralty.call(&represented(STRANGER)).await?;
    expect_refused(&out)?;

    println!("4. The citizen revokes {code}; {REPRESENTATIVE} tries again");
    let revoke = portal
        .call(&Call {
            method: Method::POST,
            path: "/r1/mpower/authorisation-revoke".into(),
            body: Some(Bytes::from(
                json!({"code": code, "reason": "no longer needed"}).to_string(),
            )),
            calling_user: CITIZEN.into(),
            basis: "md-gd-375-2020".into(),
            reason: "citizen-self-service".into(),
            subject: None,
            represented_party: None,
            request_id: None,
        })
        .await?;
    expect(&revoke, StatusCode::OK)?;
    let out = mayoralty.call(&represented(REPRESENTATIVE)).await?;
    expect_refused(&out)?;
    println!("Scenario complete: representation passes only with a valid MPower authorisation.");
    Ok(())
}

/// The population-register call a representative makes for the citizen.
fn represented(user: &str) -> Call {
    Call {
        method: Method::GET,
        path: format!("/r1/asp-rsp/person-by-idnp?idnp={CITIZEN}"),
        body: None,
        calling_user: user.into(),
        basis: BASIS.into(),
        reason: REASON.into(),
        subject: Some(CITIZEN.into()),
        represented_party: Some(CITIZEN.into()),
        request_id: None,
    }
}

fn expect(out: &CallOutcome, status: StatusCode) -> Result<(), String> {
    if out.status != status || out.receipt.is_err() {
        return Err(format!(
            "expected {status} with a verified receipt, got {} ({:?}): {}",
            out.status,
            out.receipt,
            String::from_utf8_lossy(&out.body)
        ));
    }
    Ok(())
}

fn expect_refused(out: &CallOutcome) -> Result<(), String> {
    let code = serde_json::from_slice::<Value>(&out.body)
        .ok()
        .and_then(|v| v["code"].as_str().map(str::to_string))
        .unwrap_or_default();
    if out.status != StatusCode::FORBIDDEN || code != "representation.denied" {
        return Err(format!(
            "expected 403 representation.denied, got {}: {}",
            out.status,
            String::from_utf8_lossy(&out.body)
        ));
    }
    println!(
        "   403 representation.denied: {}",
        serde_json::from_slice::<Value>(&out.body)
            .ok()
            .and_then(|v| v["detail"].as_str().map(str::to_string))
            .unwrap_or_default()
    );
    Ok(())
}
