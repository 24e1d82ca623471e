//! The MPower and MSign adapters through the real broker: the sandbox with
//! the adapter binaries as child processes, real TLS on loopback, and
//! `openssl` as the independent judge of MSign's signatures.
//!
//! The adapter binaries are separate workspace crates: build them first with
//! `cargo build --workspace --bins --examples`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::process::Command;

use base64::Engine as _;
use bytes::Bytes;
use http::{Method, StatusCode};
use mconnect::registry::Endpoint;
use mconnect_sdk::{Call, CallOutcome, Consumer};
use serde_json::{Value, json};
use support::{Bus, assert_refused};

const CITIZEN: &str = "2000000000015";
const REPRESENTATIVE: &str = "2003000000027";
const STRANGER: &str = "2004000000035";
const MPOWER_BASIS: &str = "md-law-142-2018-art-6-3-1";
const MPOWER_REASON: &str = "representation-verification";
const REPRESENTED_BASIS: &str = "md-law-133-2008-art-8-representative";
const REPRESENTED_REASON: &str = "social-aid-application-by-representative";

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

fn call(method: Method, path: &str, body: Option<Value>, user: &str) -> Call {
    Call {
        method,
        path: path.to_string(),
        body: body.map(|b| Bytes::from(b.to_string())),
        calling_user: user.into(),
        basis: MPOWER_BASIS.into(),
        reason: MPOWER_REASON.into(),
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

/// A call of the citizen portal (`mcabinet-mpower`) for its signed-in user.
fn portal_call(method: Method, path: &str, body: Option<Value>, user: &str) -> Call {
    Call {
        basis: "md-gd-375-2020".into(),
        reason: "citizen-self-service".into(),
        ..call(method, path, body, user)
    }
}

/// Filed by the citizen in the portal: Valid at once (the grantor's consent).
async fn grant(portal: &Consumer, authorised: &str, kind: &str) -> String {
    let out = portal
        .call(&portal_call(
            Method::POST,
            "/r1/mpower/authorisation-grant",
            Some(json!({
                "authorising": {"party_type": "natural", "id": CITIZEN},
                "authorised_idnp": authorised,
                "authorisation_type": kind,
                "valid_from": "2025-01-01",
                "valid_until": "2030-12-31",
            })),
            CITIZEN,
        ))
        .await
        .unwrap();
    let body = ok(&out, StatusCode::CREATED);
    assert_eq!(body["status"], "Valid");
    let code = body["code"].as_str().unwrap().to_string();
    assert!(
        code.len() == 16 && code.bytes().all(|b| b.is_ascii_digit()),
        "{code}"
    );
    code
}

async fn revoke(portal: &Consumer, code: &str) {
    let out = portal
        .call(&portal_call(
            Method::POST,
            "/r1/mpower/authorisation-revoke",
            Some(json!({"code": code, "reason": "test"})),
            CITIZEN,
        ))
        .await
        .unwrap();
    assert_eq!(ok(&out, StatusCode::OK)["status"], "Revoked");
}

async fn check(apl: &Consumer, authorised: &str, kind: &str) -> Value {
    let mut c = call(
        Method::GET,
        &format!(
            "/r1/mpower/authorisation-check?authorising={CITIZEN}&authorised={authorised}&type={kind}"
        ),
        None,
        REPRESENTATIVE,
    );
    c.subject = Some(CITIZEN.into());
    let out = apl.call(&c).await.unwrap();
    ok(&out, StatusCode::OK)
}

fn represented_call(user: &str, basis: &str, reason: &str) -> Call {
    Call {
        method: Method::GET,
        path: format!("/r1/asp-rsp/person-by-idnp?idnp={CITIZEN}"),
        body: None,
        calling_user: user.into(),
        basis: basis.into(),
        reason: reason.into(),
        subject: Some(CITIZEN.into()),
        represented_party: Some(CITIZEN.into()),
        request_id: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mpower_grant_check_by_code_list_and_revoke_through_the_bus() {
    adapters_built();
    let bus = Bus::start().await;
    let apl = bus.consumer("apl-cahul");

    let code = grant(&bus.consumer("mcabinet"), REPRESENTATIVE, "AT-SOCIAL-AID").await;
    let verdict = check(&apl, REPRESENTATIVE, "AT-SOCIAL-AID").await;
    assert_eq!(verdict["valid"], true, "{verdict}");
    assert_eq!(verdict["code"], code.as_str());
    // Another type, another person: no.
    assert_eq!(
        check(&apl, REPRESENTATIVE, "AT-OTHER").await["valid"],
        false
    );
    assert_eq!(check(&apl, STRANGER, "AT-SOCIAL-AID").await["valid"], false);

    let out = apl
        .call(&call(
            Method::GET,
            &format!("/r1/mpower/authorisation-by-code?code={code}"),
            None,
            REPRESENTATIVE,
        ))
        .await
        .unwrap();
    let by_code = ok(&out, StatusCode::OK);
    assert_eq!(by_code["authorised_idnp"], REPRESENTATIVE);
    assert_eq!(by_code["valid_now"], true);

    let mut list = call(
        Method::GET,
        &format!("/r1/mpower/authorisations-by-person?idnp={CITIZEN}"),
        None,
        CITIZEN,
    );
    list.subject = Some(CITIZEN.into());
    let listed = ok(&apl.call(&list).await.unwrap(), StatusCode::OK);
    assert!(
        listed["authorisations"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["code"] == code.as_str()),
        "{listed}"
    );

    // An institution cannot give a citizen's power away on its own: filed
    // by it, whatever calling user it names, it waits for the grantor.
    let out = apl
        .call(&call(
            Method::POST,
            "/r1/mpower/authorisation-grant",
            Some(json!({
                "authorising": {"party_type": "natural", "id": CITIZEN},
                "authorised_idnp": STRANGER,
                "authorisation_type": "AT-SOCIAL-AID",
                "valid_from": "2025-01-01",
                "valid_until": "2030-12-31",
            })),
            STRANGER,
        ))
        .await
        .unwrap();
    assert_eq!(ok(&out, StatusCode::CREATED)["status"], "PendingAcceptance");
    assert_eq!(check(&apl, STRANGER, "AT-SOCIAL-AID").await["valid"], false);

    revoke(&bus.consumer("mcabinet"), &code).await;
    assert_eq!(
        check(&apl, REPRESENTATIVE, "AT-SOCIAL-AID").await["valid"],
        false
    );
    // Revoking twice changes nothing: the second answer is the revoked
    // authorisation as it stands (a retried revocation is safe), and it stays
    // final: nothing brings it back (tests/representation.rs).
    let out = bus
        .consumer("mcabinet")
        .call(&portal_call(
            Method::POST,
            "/r1/mpower/authorisation-revoke",
            Some(json!({"code": code})),
            CITIZEN,
        ))
        .await
        .unwrap();
    assert_eq!(out.status, StatusCode::OK);
    assert_eq!(json_of(&out)["status"], "Revoked");
    bus.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn represented_party_passes_only_with_a_valid_mpower_authorisation() {
    adapters_built();
    let bus = Bus::start().await;
    let apl = bus.consumer("apl-cahul");
    let call_as = |user: &str| represented_call(user, REPRESENTED_BASIS, REPRESENTED_REASON);

    // No authorisation yet: refused.
    let out = apl.call(&call_as(REPRESENTATIVE)).await.unwrap();
    assert_refused(&out, 403, "representation.denied");

    // Granted through the bus: the broker asks MPower and lets the call pass.
    let code = grant(&bus.consumer("mcabinet"), REPRESENTATIVE, "AT-SOCIAL-AID").await;
    let out = apl.call(&call_as(REPRESENTATIVE)).await.unwrap();
    let body = ok(&out, StatusCode::OK);
    assert_eq!(body["idnp"], CITIZEN);

    // The same call by someone without an authorisation: refused.
    let out = apl.call(&call_as(STRANGER)).await.unwrap();
    assert_refused(&out, 403, "representation.denied");

    // An authorisation of another type does not do.
    grant(&bus.consumer("mcabinet"), STRANGER, "AT-OTHER").await;
    let out = apl.call(&call_as(STRANGER)).await.unwrap();
    assert_refused(&out, 403, "representation.denied");

    // A grant that names no authorisation type never allows representation,
    // even for the holder of a valid authorisation.
    let out = apl
        .call(&represented_call(
            REPRESENTATIVE,
            "md-law-133-2008-art-8",
            "social-aid-eligibility",
        ))
        .await
        .unwrap();
    assert_refused(&out, 403, "representation.denied");

    // MPower unreachable: the broker cannot confirm, so it refuses (fail
    // closed) and says why; with MPower back, the call passes again.
    let registry = bus.sandbox.broker.broker.registry().clone();
    let mpower_url = bus
        .sandbox
        .manifest
        .participants
        .iter()
        .find(|p| p.id == "mpower")
        .and_then(|p| p.endpoint.clone())
        .unwrap();
    let point_mpower_at = |url: &str| {
        registry
            .set_endpoints(
                "mpower",
                vec![Endpoint {
                    service: None,
                    url: url.to_string(),
                }],
            )
            .unwrap();
    };
    point_mpower_at("https://127.0.0.1:9");
    let out = apl.call(&call_as(REPRESENTATIVE)).await.unwrap();
    assert_refused(&out, 403, "representation.denied");
    assert!(
        json_of(&out)["detail"]
            .as_str()
            .unwrap()
            .contains("MPower could not be asked"),
        "{}",
        json_of(&out)
    );
    // An answer signed by someone else (here the population register, at
    // the address the registry gives for MPower) is not believed.
    let impostor = bus
        .sandbox
        .manifest
        .participants
        .iter()
        .find(|p| p.id == "asp-rsp")
        .and_then(|p| p.endpoint.clone())
        .unwrap();
    point_mpower_at(&impostor);
    let out = apl.call(&call_as(REPRESENTATIVE)).await.unwrap();
    assert_refused(&out, 403, "representation.denied");
    assert!(
        json_of(&out)["detail"]
            .as_str()
            .unwrap()
            .contains("not trustworthy"),
        "{}",
        json_of(&out)
    );
    point_mpower_at(&mpower_url);
    ok(
        &apl.call(&call_as(REPRESENTATIVE)).await.unwrap(),
        StatusCode::OK,
    );

    // Revoked: refused on the data plane at once.
    revoke(&bus.consumer("mcabinet"), &code).await;
    let out = apl.call(&call_as(REPRESENTATIVE)).await.unwrap();
    assert_refused(&out, 403, "representation.denied");
    bus.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mpower_state_survives_an_adapter_restart() {
    adapters_built();
    let bus = Bus::start().await;
    let code = grant(&bus.consumer("mcabinet"), REPRESENTATIVE, "AT-SOCIAL-AID").await;
    // Stopping the sandbox kills the adapter process (SIGKILL): only what
    // was durable before the answer can come back.
    let dir = bus.stop().await;
    let sandbox = mconnect_cli::sandbox::start(&support::args(dir.path()))
        .await
        .expect("sandbox restarts on the same directory");
    let apl = sandbox.manifest.consumer(dir.path(), "apl-cahul").unwrap();
    let out = apl
        .call(&call(
            Method::GET,
            &format!("/r1/mpower/authorisation-by-code?code={code}"),
            None,
            REPRESENTATIVE,
        ))
        .await
        .unwrap();
    let body = ok(&out, StatusCode::OK);
    assert_eq!(body["status"], "Valid");
    assert_eq!(body["authorised_idnp"], REPRESENTATIVE);
    assert_eq!(
        check(&apl, REPRESENTATIVE, "AT-SOCIAL-AID").await["valid"],
        true
    );
    sandbox.shutdown().await;
}

fn openssl(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn msign_call(method: Method, path: &str, body: Option<Value>) -> Call {
    Call {
        basis: "md-law-91-2014-art-6".into(),
        reason: "electronic-signing-of-applications".into(),
        ..call(method, path, body, CITIZEN)
    }
}

/// Posts a sign request and polls (bounded) until it is no longer Pending.
async fn sign(apl: &Consumer, request: Value) -> Value {
    let out = apl
        .call(&msign_call(
            Method::POST,
            "/r1/msign/sign-request",
            Some(request),
        ))
        .await
        .unwrap();
    let posted = ok(&out, StatusCode::CREATED);
    let id = posted["request_id"].as_str().unwrap().to_string();
    for _ in 0..50 {
        let out = apl
            .call(&msign_call(
                Method::GET,
                &format!("/r1/msign/sign-result?request_id={id}"),
                None,
            ))
            .await
            .unwrap();
        let result = ok(&out, StatusCode::OK);
        if result["status"] != "Pending" {
            return result;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("sign request {id} stayed Pending");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn msign_signatures_verify_with_openssl_and_through_the_bus() {
    adapters_built();
    let bus = Bus::start().await;
    let apl = bus.consumer("apl-cahul");
    let b64 = base64::engine::general_purpose::STANDARD;
    let work = tempfile::tempdir().unwrap();
    let document = "Cerere de ajutor social, Primăria Cahul, 2026".as_bytes();
    std::fs::write(work.path().join("doc.bin"), document).unwrap();

    // A document: the signature covers the document itself.
    let result = sign(
        &apl,
        json!({"content_type": "document", "document": b64.encode(document),
               "description": "Cerere de ajutor social", "signer_idnp": CITIZEN}),
    )
    .await;
    assert_eq!(result["status"], "Success", "{result}");
    let result_certificate = result["certificate"].as_str().unwrap().to_owned();
    let signature = b64.decode(result["signature"].as_str().unwrap()).unwrap();
    std::fs::write(work.path().join("doc.sig"), &signature).unwrap();
    std::fs::write(
        work.path().join("signer.pem"),
        result["certificate"].as_str().unwrap(),
    )
    .unwrap();
    let (ok_pub, text) = openssl(
        work.path(),
        &[
            "x509",
            "-in",
            "signer.pem",
            "-pubkey",
            "-noout",
            "-out",
            "signer.pub.pem",
        ],
    );
    assert!(ok_pub, "{text}");
    let (verified, text) = openssl(
        work.path(),
        &[
            "dgst",
            "-sha256",
            "-verify",
            "signer.pub.pem",
            "-signature",
            "doc.sig",
            "doc.bin",
        ],
    );
    assert!(verified && text.contains("Verified OK"), "{text}");
    // The signer certificate is the person's own (the sandbox issues its
    // officials one, the IDNP in the subject's serialNumber) and chains to
    // the sandbox CA.
    let (named, text) = openssl(
        work.path(),
        &["x509", "-in", "signer.pem", "-noout", "-subject"],
    );
    assert!(
        named && text.contains(&format!("PNOMD-{CITIZEN}")),
        "{text}"
    );
    let ca = bus.pki().join("ca.cert.pem");
    let (chained, text) = openssl(
        work.path(),
        &["verify", "-CAfile", ca.to_str().unwrap(), "signer.pem"],
    );
    assert!(chained, "{text}");
    // A changed document does not verify.
    std::fs::write(work.path().join("other.bin"), b"something else").unwrap();
    let (forged, _) = openssl(
        work.path(),
        &[
            "dgst",
            "-sha256",
            "-verify",
            "signer.pub.pem",
            "-signature",
            "doc.sig",
            "other.bin",
        ],
    );
    assert!(!forged);

    // A hash: the signature covers the 32 bytes of the SHA-256.
    let hash = mconnect::crypto::sha256(document);
    std::fs::write(work.path().join("hash.bin"), hash).unwrap();
    let result = sign(
        &apl,
        json!({"content_type": "hash", "hash": hex::encode(hash),
               "description": "Cerere de ajutor social (amprentă)", "signer_idnp": CITIZEN}),
    )
    .await;
    assert_eq!(result["status"], "Success", "{result}");
    std::fs::write(
        work.path().join("hash.sig"),
        b64.decode(result["signature"].as_str().unwrap()).unwrap(),
    )
    .unwrap();
    let (verified, text) = openssl(
        work.path(),
        &[
            "dgst",
            "-sha256",
            "-verify",
            "signer.pub.pem",
            "-signature",
            "hash.sig",
            "hash.bin",
        ],
    );
    assert!(verified, "{text}");

    // MSign's own verification agrees, both ways, with the signer's
    // certificate (not MSign's own: the person signed).
    let certificate = result_certificate;
    for (doc, valid) in [(document.to_vec(), true), (b"tampered".to_vec(), false)] {
        let out = apl
            .call(&msign_call(
                Method::POST,
                "/r1/msign/signature-verify",
                Some(
                    json!({"content_type": "document", "document": b64.encode(&doc),
                            "signature": b64.encode(&signature), "certificate": certificate}),
                ),
            ))
            .await
            .unwrap();
        let verdict = ok(&out, StatusCode::OK);
        assert_eq!(verdict["valid"], valid, "{verdict}");
        assert_eq!(verdict["signer_known"], false, "{verdict}");
    }
    bus.stop().await;
}
