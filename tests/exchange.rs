//! The exchange core against the real broker: real TLS on loopback, the
//! example registers as real processes, every refusal code of PROTOCOL.md
//! section 5 that the exchange core covers, asserted by status and code.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use http_body_util::Full;
use mconnect::registry::Endpoint;
use support::{Bus, assert_refused, code, get, post};

const SOCIAL_BASIS: &str = "md-law-133-2008-art-8";
const SOCIAL_REASON: &str = "social-aid-eligibility";
const PERSON: &str = "2000000000015";

fn person_call(subject: Option<&str>) -> mconnect_sdk::Call {
    get(
        &format!("/r1/asp-rsp/person-by-idnp?idnp={PERSON}"),
        SOCIAL_BASIS,
        SOCIAL_REASON,
        subject,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_algorithm_goes_through_with_verified_receipts_and_minimised_data() {
    let bus = Bus::start().await;
    // Consumers sign with ed25519 (apl-cahul), ecdsa-p256-sha256 (apl-balti)
    // and rsa-v1_5-sha256 (apl-ungheni); providers answer with ed25519
    // (asp-rsp), ecdsa-p256 (asp-rsud) and rsa-v1_5-sha256 (sfs).
    for client in ["apl-cahul", "apl-balti", "apl-ungheni"] {
        let out = bus
            .consumer(client)
            .call(&person_call(Some(PERSON)))
            .await
            .unwrap();
        assert_eq!(
            out.status,
            StatusCode::OK,
            "{client}: {}",
            String::from_utf8_lossy(&out.body)
        );
        let receipt = out.receipt.as_ref().expect("receipt verifies");
        assert!(receipt.audit_seq.is_some());
        let body: serde_json::Value = serde_json::from_slice(&out.body).unwrap();
        assert_eq!(body["idnp"], PERSON);
        // The social-aid grants do not include the identity document: minimised away.
        assert!(body.get("identity_document").is_none(), "{body}");
    }
    let out = bus
        .consumer("apl-cahul")
        .call(&get(
            "/r1/sfs/tax-debts?taxpayer=1003603000063",
            "md-tax-code-1163-1997-title-vii",
            "local-tax-administration",
            Some("1003603000063"),
        ))
        .await
        .unwrap();
    assert_eq!(
        out.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&out.body)
    );
    assert!(out.receipt.is_ok());
    let out = bus
        .consumer("apl-balti")
        .call(&get(
            "/r1/asp-rsud/company-by-idno?idno=1003603000063",
            "md-tax-code-1163-1997-title-vii",
            "local-tax-administration",
            Some("1003603000063"),
        ))
        .await
        .unwrap();
    assert_eq!(
        out.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&out.body)
    );
    // rsa-pss-sha512: the auditor's key. It holds no data grant, so the call is
    // refused by policy, which comes after the signature verified.
    let out = bus
        .consumer("cnpdcp-audit")
        .call(&person_call(Some(PERSON)))
        .await
        .unwrap();
    assert_refused(&out, 403, "policy.denied");
    // POST with a body: digest, request schema.
    let out = bus
        .consumer("apl-cahul")
        .call(&post(
            "/r1/asp-rsp/persons-lookup",
            r#"{"idnps":["2000000000015","2003000000027"]}"#,
            SOCIAL_BASIS,
            SOCIAL_REASON,
        ))
        .await
        .unwrap();
    assert_eq!(
        out.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&out.body)
    );
    let body: serde_json::Value = serde_json::from_slice(&out.body).unwrap();
    assert_eq!(body["persons"].as_array().unwrap().len(), 2);
    bus.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_carry_the_protocol_codes() {
    let bus = Bus::start().await;
    let cahul = bus.consumer("apl-cahul");
    let cases: Vec<(&str, mconnect_sdk::Call, u16, &str)> = vec![
        (
            "bad subject",
            person_call(Some("2000000000016")),
            400,
            "request.malformed",
        ),
        (
            "bad path",
            get("/r1/x", SOCIAL_BASIS, SOCIAL_REASON, None),
            400,
            "request.malformed",
        ),
        (
            "unknown service",
            get(
                "/r1/asp-rsp/nothing-here",
                SOCIAL_BASIS,
                SOCIAL_REASON,
                None,
            ),
            404,
            "catalog.unknown_service",
        ),
        (
            "no subject",
            person_call(None),
            403,
            "policy.subject_required",
        ),
        (
            "basis",
            get(
                &format!("/r1/asp-rsp/person-by-idnp?idnp={PERSON}"),
                "md-law-999-2099-art-1",
                SOCIAL_REASON,
                Some(PERSON),
            ),
            403,
            "policy.basis_not_allowed",
        ),
        (
            "purpose",
            get(
                &format!("/r1/asp-rsp/person-by-idnp?idnp={PERSON}"),
                SOCIAL_BASIS,
                "local-tax-administration",
                Some(PERSON),
            ),
            403,
            "policy.purpose_not_allowed",
        ),
        (
            "no grant",
            get(
                "/r1/sfs/tax-debts?taxpayer=1003603000063",
                "md-tax-code-1163-1997-title-vii",
                "local-tax-administration",
                Some("1003603000063"),
            ),
            200,
            "",
        ),
        (
            "schema",
            post(
                "/r1/asp-rsp/persons-lookup",
                r#"{"idnps":[]}"#,
                SOCIAL_BASIS,
                SOCIAL_REASON,
            ),
            422,
            "schema.request_invalid",
        ),
        (
            // A person id in the body is typed like one in the query.
            "malformed id in the body",
            post(
                "/r1/asp-rsp/persons-lookup",
                r#"{"idnps":["12"]}"#,
                SOCIAL_BASIS,
                SOCIAL_REASON,
            ),
            400,
            "request.malformed",
        ),
    ];
    for (name, call, status, expected) in cases {
        let out = cahul.call(&call).await.unwrap();
        if expected.is_empty() {
            assert_eq!(out.status.as_u16(), status, "{name}");
            continue;
        }
        assert_refused(&out, status, expected);
    }
    let mut represented = person_call(Some(PERSON));
    represented.represented_party = Some("2003000000027".into());
    assert_refused(
        &cahul.call(&represented).await.unwrap(),
        403,
        "representation.denied",
    );

    let out = bus
        .consumer("mcabinet")
        .call(&get(
            "/r1/sfs/tax-debts?taxpayer=2000000000015",
            "md-law-133-2011-art-13",
            "citizen-own-data",
            Some(PERSON),
        ))
        .await
        .unwrap();
    assert_refused(&out, 403, "policy.denied");
    let out = bus
        .consumer("apl-balti")
        .call(&get(
            &format!("/r1/cnas/insurance-record?idnp={PERSON}"),
            SOCIAL_BASIS,
            SOCIAL_REASON,
            Some(PERSON),
        ))
        .await
        .unwrap();
    assert_refused(&out, 403, "policy.grant_suspended");
    let out = bus
        .consumer("apl-ungheni")
        .call(&get(
            &format!("/r1/asp-vehicule/vehicles-by-owner?owner={PERSON}"),
            SOCIAL_BASIS,
            SOCIAL_REASON,
            Some(PERSON),
        ))
        .await
        .unwrap();
    assert_refused(&out, 403, "policy.grant_expired");

    // Too large: over the service's body limit.
    let big = format!(r#"{{"idnps":["{}"]}}"#, "2".repeat(2 * 1024 * 1024));
    let out = cahul
        .call(&post(
            "/r1/asp-rsp/persons-lookup",
            &big,
            SOCIAL_BASIS,
            SOCIAL_REASON,
        ))
        .await
        .unwrap();
    assert_refused(&out, 413, "request.too_large");

    // Rate: the procurement grant allows 5 requests a second.
    let ungheni = bus.consumer("apl-ungheni");
    let mut limited = None;
    for _ in 0..30 {
        let out = ungheni
            .call(&get(
                "/r1/asp-rsud/company-by-idno?idno=1003603000063",
                "md-law-131-2015-art-19",
                "procurement-qualification",
                Some("1003603000063"),
            ))
            .await
            .unwrap();
        if out.status == StatusCode::TOO_MANY_REQUESTS {
            limited = Some(out);
            break;
        }
    }
    let limited = limited.expect("the rate limit is reached within 30 quick calls");
    assert_refused(&limited, 429, "rate.limited");
    assert!(limited.headers.contains_key("retry-after"));
    bus.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_signature_digest_and_replay_are_enforced() {
    let bus = Bus::start().await;
    let cahul = bus.consumer("apl-cahul");

    // Another participant's id in MConnect-Client, with apl-cahul's certificate.
    let mut req = cahul.build(&person_call(Some(PERSON))).unwrap();
    req.headers_mut()
        .insert("mconnect-client", HeaderValue::from_static("apl-balti"));
    assert_refused(
        &cahul.send(req).await.unwrap(),
        401,
        "client.certificate_mismatch",
    );
    let mut req = cahul.build(&person_call(Some(PERSON))).unwrap();
    req.headers_mut()
        .insert("mconnect-client", HeaderValue::from_static("nobody-here"));
    assert_refused(&cahul.send(req).await.unwrap(), 401, "client.unknown");

    // No signature at all.
    let mut req = cahul.build(&person_call(Some(PERSON))).unwrap();
    req.headers_mut().remove("signature");
    req.headers_mut().remove("signature-input");
    assert_refused(&cahul.send(req).await.unwrap(), 401, "signature.missing");

    // A covered header changed after signing.
    let mut req = cahul.build(&person_call(Some(PERSON))).unwrap();
    req.headers_mut().insert(
        "mconnect-call-reason",
        HeaderValue::from_static("residence-verification"),
    );
    assert_refused(&cahul.send(req).await.unwrap(), 401, "signature.invalid");

    // The body changed after signing: the signature still holds, the digest does not.
    let req = cahul
        .build(&post(
            "/r1/asp-rsp/persons-lookup",
            r#"{"idnps":["2000000000015"]}"#,
            SOCIAL_BASIS,
            SOCIAL_REASON,
        ))
        .unwrap();
    let (parts, _) = req.into_parts();
    let tampered = http::Request::from_parts(
        parts,
        Full::new(Bytes::from_static(br#"{"idnps":["2003000000027"]}"#)),
    );
    assert_refused(&cahul.send(tampered).await.unwrap(), 401, "digest.mismatch");

    // A stale `created`: sign by hand with a time ten minutes ago.
    let stale = stale_request(&bus, 600);
    assert_refused(&cahul.send(stale).await.unwrap(), 401, "signature.expired");

    // The same request id twice.
    let mut call = person_call(Some(PERSON));
    call.request_id = Some(uuid::Uuid::new_v4());
    let first = cahul.call(&call).await.unwrap();
    assert_eq!(first.status, StatusCode::OK);
    assert_refused(&cahul.call(&call).await.unwrap(), 409, "request.replayed");

    // A certificate from the sandbox CA that no participant registered.
    let ca = mconnect::pki::DevCa::load(&bus.pki()).unwrap();
    let stranger = ca
        .issue("stranger", "Nobody", mconnect::pki::KeyType::Ed25519)
        .unwrap();
    let creds = mconnect_sdk::Credentials::from_pem(
        "apl-cahul",
        &stranger.cert_pem,
        &stranger.key_pem,
        ca.cert_pem(),
        None,
    )
    .unwrap();
    let broker_keys = mconnect_sdk::TrustedKeys::from_pem(
        &std::fs::read_to_string(bus.pki().join("broker.cert.pem")).unwrap(),
    )
    .unwrap();
    let unregistered = mconnect_sdk::Consumer::new(
        creds,
        &bus.sandbox.manifest.broker.data_url,
        broker_keys.clone(),
    )
    .unwrap();
    assert_refused(
        &unregistered.call(&person_call(Some(PERSON))).await.unwrap(),
        401,
        "client.unknown",
    );

    // A certificate from another CA never gets past the TLS handshake.
    let other_ca = mconnect::pki::DevCa::generate("rogue ca").unwrap();
    let rogue = other_ca
        .issue("apl-cahul", "Rogue", mconnect::pki::KeyType::Ed25519)
        .unwrap();
    let ca_pem = std::fs::read_to_string(bus.pki().join("ca.cert.pem")).unwrap();
    let creds = mconnect_sdk::Credentials::from_pem(
        "apl-cahul",
        &rogue.cert_pem,
        &rogue.key_pem,
        &ca_pem,
        None,
    )
    .unwrap();
    let rogue_client =
        mconnect_sdk::Consumer::new(creds, &bus.sandbox.manifest.broker.data_url, broker_keys)
            .unwrap();
    let err = rogue_client.call(&person_call(Some(PERSON))).await;
    assert!(
        err.is_err(),
        "a foreign CA's certificate must not be served: {err:?}"
    );
    // The data listener counted the failed handshake under its reason.
    let (_, metrics) = support::plain_get(bus.sandbox.broker.ops_addr(), "/metrics").await;
    let untrusted = "mconnect_tls_handshake_failures_total{listener=\"data\",reason=\"certificate_untrusted\"} ";
    let count: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix(untrusted))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{untrusted} missing:\n{metrics}"));
    assert!(count >= 1, "{metrics}");
    bus.stop().await;
}

/// A request signed correctly but with `created` `age_secs` in the past.
fn stale_request(bus: &Bus, age_secs: i64) -> http::Request<Full<Bytes>> {
    let uri = format!(
        "{}/r1/asp-rsp/person-by-idnp?idnp={PERSON}",
        bus.sandbox.manifest.broker.data_url
    );
    let mut h = support::social_aid_headers(uuid::Uuid::new_v4());
    let created = mconnect::exchange::unix_now() - age_secs;
    support::sign_as(&bus.pki(), "apl-cahul", "GET", &uri, &mut h, created, None);
    let mut req = http::Request::new(Full::new(Bytes::new()));
    *req.uri_mut() = uri.parse().unwrap();
    *req.headers_mut() = h;
    req
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_failures_are_refused_and_never_reach_the_consumer() {
    let bus = Bus::start().await;
    let cahul = bus.consumer("apl-cahul");
    let registry = bus.sandbox.broker.broker.registry().clone();
    let point = |url: String| {
        registry
            .set_endpoints("asp-rsp", vec![Endpoint { service: None, url }])
            .unwrap();
    };

    // Down: a port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    point(format!("https://127.0.0.1:{port}"));
    assert_refused(
        &cahul.call(&person_call(Some(PERSON))).await.unwrap(),
        503,
        "provider.unavailable",
    );

    // Answers without a signature, with a broken one, or off-schema.
    for (mode, expected) in [
        ("unsigned", "provider.signature_invalid"),
        ("bad-signature", "provider.signature_invalid"),
        ("bad-schema", "schema.response_invalid"),
    ] {
        let (_child, url) = support::spawn_register(
            &bus.pki(),
            "population",
            "asp-rsp",
            "ed25519",
            &["--misbehave", mode],
        )
        .await;
        point(url);
        let out = cahul.call(&person_call(Some(PERSON))).await.unwrap();
        assert_refused(&out, 502, expected);
        assert!(
            !String::from_utf8_lossy(&out.body).contains(PERSON),
            "{mode}: no provider data leaks"
        );
    }

    // Slow: past the service's timeout (5 s in the catalog).
    let (_slow, url) = support::spawn_register(
        &bus.pki(),
        "population",
        "asp-rsp",
        "ed25519",
        &["--delay-ms", "7000"],
    )
    .await;
    point(url);
    let started = std::time::Instant::now();
    let out = cahul.call(&person_call(Some(PERSON))).await.unwrap();
    assert_refused(&out, 504, "provider.timeout");
    assert!(started.elapsed() < Duration::from_secs(7));

    // A provider signing with a key that is not its own (another participant's certificate).
    let (_imposter, url) =
        support::spawn_register(&bus.pki(), "population", "asp-cadastru", "ed25519", &[]).await;
    point(url);
    assert_refused(
        &cahul.call(&person_call(Some(PERSON))).await.unwrap(),
        502,
        "provider.signature_invalid",
    );
    let _ = code;
    bus.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_the_registry_and_the_audit_log() {
    let bus = Bus::start().await;
    let out = bus
        .consumer("apl-cahul")
        .call(&person_call(Some(PERSON)))
        .await
        .unwrap();
    let seq = out.receipt.unwrap().audit_seq.unwrap();
    let registry = bus.sandbox.broker.broker.registry().clone();
    registry
        .set_endpoints(
            "asp-cadastru",
            vec![Endpoint {
                service: Some("extra".into()),
                url: "https://127.0.0.1:1".into(),
            }],
        )
        .unwrap();
    drop(registry);
    let dir = bus.stop().await;

    let sandbox = mconnect_cli::sandbox::start(&support::args(dir.path()))
        .await
        .unwrap();
    let snapshot = sandbox.broker.broker.registry().snapshot();
    assert_eq!(snapshot.participants().len(), support::participant_count());
    assert!(
        sandbox.broker.broker.audit().tree_size() > seq,
        "the audit log kept its records"
    );
    let again = mconnect_sdk::SandboxManifest::read(dir.path()).unwrap();
    let out = again
        .consumer(dir.path(), "apl-cahul")
        .unwrap()
        .call(&person_call(Some(PERSON)))
        .await
        .unwrap();
    assert_eq!(out.status, StatusCode::OK);
    assert!(out.receipt.unwrap().audit_seq.unwrap() > seq);
    sandbox.shutdown().await;
}
