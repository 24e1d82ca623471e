//! Keys outside the PKI sign nothing (issue 11 item 4, PROTOCOL.md section
//! 1), through the real broker: registration refuses certificates that do
//! not chain to the bus CA or are out of date; a key whose certificate
//! expired after registration, or was removed, signs nothing (consumer
//! requests and provider answers alike); a TLS identity that expired during
//! a kept-alive connection identifies no one. And only providers (for
//! themselves) and operators set endpoints (item 10).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use http::{Method, StatusCode};
use mconnect::crypto::SigningKey;
use mconnect::pki::{DevCa, IssuedCertificate, KeyType};
use mconnect_sdk::{Consumer, Credentials, TrustedKeys};
use support::{Bus, assert_refused, get};

const SOCIAL_BASIS: &str = "md-law-133-2008-art-8";
const SOCIAL_REASON: &str = "social-aid-eligibility";
const PERSON: &str = "2000000000015";

fn person_call() -> mconnect_sdk::Call {
    get(
        &format!("/r1/asp-rsp/person-by-idnp?idnp={PERSON}"),
        SOCIAL_BASIS,
        SOCIAL_REASON,
        Some(PERSON),
    )
}

/// The admin API as a sandbox participant.
struct Admin(mconnect::connect::client::AdminClient);

impl Admin {
    fn new(bus: &Bus, participant: &str) -> Admin {
        Admin(support::admin_client(
            bus.dir.path(),
            &bus.sandbox.manifest.broker.admin_url,
            participant,
        ))
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (StatusCode, serde_json::Value) {
        let request = self.0.plain(method, path, body.as_ref()).unwrap();
        self.0.send(request).await.unwrap()
    }

    async fn add_certificate(&self, id: &str, pem: &str) -> (StatusCode, serde_json::Value) {
        self.send(
            Method::POST,
            &format!("/v1/participants/{id}/certificates"),
            Some(serde_json::json!({ "pem": pem })),
        )
        .await
    }
}

fn bus_ca(bus: &Bus) -> DevCa {
    DevCa::load(&bus.pki()).unwrap()
}

/// Credentials of `participant` whose TLS identity and signing key are
/// chosen separately (`None`: the participant's sandbox certificate).
fn credentials_with(
    bus: &Bus,
    participant: &str,
    tls: Option<&IssuedCertificate>,
    signer: Option<&IssuedCertificate>,
) -> Credentials {
    let mut credentials = bus
        .sandbox
        .manifest
        .credentials(bus.dir.path(), participant)
        .unwrap();
    if let Some(tls) = tls {
        credentials.tls = mconnect::tls::Identity::from_pem(&tls.cert_pem, &tls.key_pem).unwrap();
    }
    if let Some(signer) = signer {
        credentials = Credentials {
            key: Arc::new(SigningKey::from_pem(&signer.key_pem).unwrap()),
            keyid: signer.fingerprint.clone(),
            ..credentials
        };
    }
    credentials
}

/// A consumer with [`credentials_with`].
fn consumer_with(
    bus: &Bus,
    participant: &str,
    tls: Option<&IssuedCertificate>,
    signer: Option<&IssuedCertificate>,
) -> Consumer {
    let credentials = credentials_with(bus, participant, tls, signer);
    let broker_pem = std::fs::read_to_string(bus.pki().join("broker.cert.pem")).unwrap();
    Consumer::new(
        credentials,
        &bus.sandbox.manifest.broker.data_url,
        TrustedKeys::from_pem(&broker_pem).unwrap(),
    )
    .unwrap()
}

async fn put(
    who: &Admin,
    id: &str,
    endpoints: serde_json::Value,
) -> (StatusCode, serde_json::Value) {
    who.send(
        Method::PUT,
        &format!("/v1/participants/{id}/endpoints"),
        Some(endpoints),
    )
    .await
}

fn detail(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body).unwrap()["detail"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// A self-signed leaf certificate, as a participant might make one itself.
fn self_signed() -> String {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let params = rcgen::CertificateParams::new(vec!["apl-cahul".to_string()]).unwrap();
    params.self_signed(&key).unwrap().pem()
}

/// The operator registers a successor certificate for `id` and removes the
/// one its running process still signs with.
async fn rotate_away(bus: &Bus, operator: &Admin, ca: &DevCa, id: &str) {
    let successor = ca.issue(id, "Successor", KeyType::Ed25519).unwrap();
    let (status, body) = operator.add_certificate(id, &successor.cert_pem).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let old = bus
        .sandbox
        .manifest
        .credentials(bus.dir.path(), id)
        .unwrap()
        .keyid;
    let (status, body) = operator
        .send(
            Method::DELETE,
            &format!("/v1/participants/{id}/certificates/{old}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_refuses_certificates_outside_the_pki_and_removed_keys_sign_nothing() {
    let bus = Bus::start().await;
    let ca = bus_ca(&bus);
    let foreign = DevCa::generate("another CA").unwrap();
    let cahul = Admin::new(&bus, "apl-cahul");
    let operator = Admin::new(&bus, "age-operator");

    // On itself, a participant registers only in-date certificates of the bus CA.
    let issue = |ca: &DevCa, from: i64, until: i64| {
        ca.issue_valid("apl-cahul", "Primăria Cahul", KeyType::Ed25519, from, until)
            .unwrap()
            .cert_pem
    };
    let cases = [
        ("expired", issue(&ca, -30, -1), "certificate.expired"),
        ("self-signed", self_signed(), "certificate.untrusted"),
        (
            "another CA",
            issue(&foreign, -1, 30),
            "certificate.untrusted",
        ),
        (
            "not yet valid",
            issue(&ca, 1, 30),
            "certificate.not_yet_valid",
        ),
        (
            "the CA itself",
            ca.cert_pem().to_string(),
            "certificate.invalid",
        ),
    ];
    for (name, pem, expected) in &cases {
        let (status, body) = cahul.add_certificate("apl-cahul", pem).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some(*expected)),
            "{name}: {body}"
        );
    }
    // The operator cannot slip one in by replacing the participant either.
    let snapshot = bus.sandbox.broker.broker.registry().snapshot();
    let mut doc = serde_json::to_value(&snapshot.get("apl-cahul").unwrap().participant).unwrap();
    let outsider = mconnect::registry::registered_certificate(&issue(&foreign, -1, 30)).unwrap();
    doc["certificates"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::to_value(&outsider).unwrap());
    let (status, body) = operator
        .send(Method::PUT, "/v1/participants/apl-cahul", Some(doc))
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("certificate.untrusted")),
        "{body}"
    );
    assert_eq!(
        bus.sandbox
            .broker
            .broker
            .registry()
            .snapshot()
            .get("apl-cahul")
            .unwrap()
            .registered_certificates(),
        1,
        "nothing refused was registered"
    );

    // A current certificate of the bus CA is registered and signs.
    let rotated = ca
        .issue("apl-cahul", "Primăria Cahul", KeyType::EcdsaP256)
        .unwrap();
    let (status, body) = cahul.add_certificate("apl-cahul", &rotated.cert_pem).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let signs_with_rotated = consumer_with(&bus, "apl-cahul", None, Some(&rotated));
    let out = signs_with_rotated.call(&person_call()).await.unwrap();
    assert_eq!(out.status, StatusCode::OK, "{}", detail(&out.body));

    // Removed: its key signs nothing, and the refusal says so.
    let (status, body) = cahul
        .send(
            Method::DELETE,
            &format!(
                "/v1/participants/apl-cahul/certificates/{}",
                rotated.fingerprint
            ),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let out = signs_with_rotated.call(&person_call()).await.unwrap();
    assert_refused(&out, 401, "signature.invalid");
    assert!(
        detail(&out.body).contains("not registered"),
        "{}",
        detail(&out.body)
    );
    // Removing one it does not hold, or its last one, is refused.
    let (status, body) = cahul
        .send(
            Method::DELETE,
            &format!(
                "/v1/participants/apl-cahul/certificates/{}",
                rotated.fingerprint
            ),
            None,
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("certificate.unknown")),
        "{body}"
    );
    let own = bus
        .sandbox
        .manifest
        .credentials(bus.dir.path(), "apl-cahul")
        .unwrap()
        .keyid;
    let (status, body) = cahul
        .send(
            Method::DELETE,
            &format!("/v1/participants/apl-cahul/certificates/{own}"),
            None,
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::CONFLICT, Some("certificate.last")),
        "{body}"
    );
    let out = bus
        .consumer("apl-cahul")
        .call(&person_call())
        .await
        .unwrap();
    assert_eq!(
        out.status,
        StatusCode::OK,
        "still served: {}",
        detail(&out.body)
    );

    // Nor is MPower's answer to the broker's representation check: asked
    // about an authorisation nobody holds, it answers "no", signed; once its
    // key is rotated away, that answer no longer counts as an answer.
    let represented = mconnect_sdk::Call {
        calling_user: "2003000000027".into(),
        represented_party: Some(PERSON.into()),
        ..get(
            &format!("/r1/asp-rsp/person-by-idnp?idnp={PERSON}"),
            "md-law-133-2008-art-8-representative",
            "social-aid-application-by-representative",
            Some(PERSON),
        )
    };
    let out = bus.consumer("apl-cahul").call(&represented).await.unwrap();
    assert_refused(&out, 403, "representation.denied");
    assert!(
        !detail(&out.body).contains("signs nothing"),
        "{}",
        detail(&out.body)
    );
    rotate_away(&bus, &operator, &ca, "mpower").await;
    let out = bus.consumer("apl-cahul").call(&represented).await.unwrap();
    assert_refused(&out, 403, "representation.denied");
    assert!(
        detail(&out.body).contains("signs nothing"),
        "{}",
        detail(&out.body)
    );

    // A provider's answer signed by a removed key is not believed either:
    // the operator rotates asp-rsp's certificate while its register still
    // signs with the old key.
    rotate_away(&bus, &operator, &ca, "asp-rsp").await;
    let out = bus
        .consumer("apl-cahul")
        .call(&person_call())
        .await
        .unwrap();
    assert_refused(&out, 502, "provider.signature_invalid");
    assert!(
        detail(&out.body).contains("signs nothing"),
        "{}",
        detail(&out.body)
    );
    bus.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_that_expires_after_registration_signs_and_identifies_nothing() {
    let bus = Bus::start().await;
    let ca = bus_ca(&bus);
    let cahul = Admin::new(&bus, "apl-cahul");

    // Valid for a few seconds from now: long enough to register and use
    // once, then expired at the next use. Whole seconds, as X.509 keeps them.
    let now = mconnect::exchange::unix_now();
    let not_after = now + 6;
    let at = |t: i64| time::OffsetDateTime::from_unix_timestamp(t).unwrap();
    let short = |kt| {
        ca.issue_between(
            "apl-cahul",
            "Primăria Cahul",
            kt,
            at(now - 60),
            at(not_after),
        )
        .unwrap()
    };
    let signer = short(KeyType::Ed25519);
    let identity = short(KeyType::EcdsaP256);
    for cert in [&signer, &identity] {
        let (status, body) = cahul.add_certificate("apl-cahul", &cert.cert_pem).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    // Signing with the short-lived key over the usual TLS identity, and
    // presenting the short-lived certificate over TLS while signing with the
    // usual key: both pass while in date.
    let signs_short = consumer_with(&bus, "apl-cahul", None, Some(&signer));
    let connects_short = consumer_with(&bus, "apl-cahul", Some(&identity), None);
    for (name, consumer) in [("signer", &signs_short), ("identity", &connects_short)] {
        let out = consumer.call(&person_call()).await.unwrap();
        assert_eq!(out.status, StatusCode::OK, "{name}: {}", detail(&out.body));
    }
    // The same on the admin API: a connection opened with the short-lived
    // certificate, and an application signed with the short-lived key.
    let admin_url = &bus.sandbox.manifest.broker.admin_url;
    let admin_connects_short = mconnect::connect::client::AdminClient::new(
        credentials_with(&bus, "apl-cahul", Some(&identity), None),
        admin_url,
    )
    .unwrap();
    let admin_signs_short = mconnect::connect::client::AdminClient::new(
        credentials_with(&bus, "apl-cahul", None, Some(&signer)),
        admin_url,
    )
    .unwrap();
    let request = admin_connects_short
        .plain(Method::GET, "/v1/participants/apl-cahul", None)
        .unwrap();
    let (status, body) = admin_connects_short.send(request).await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");

    // The clock passes not_after (inclusive) without anything re-registered.
    while mconnect::exchange::unix_now() <= not_after {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let out = signs_short.call(&person_call()).await.unwrap();
    assert_refused(&out, 401, "signature.invalid");
    assert!(
        detail(&out.body).contains("expired at"),
        "the detail says why: {}",
        detail(&out.body)
    );
    // The kept-alive connection outlived its certificate: the handshake is
    // not repeated, so the broker checks the dates at the request.
    let out = connects_short.call(&person_call()).await.unwrap();
    assert_refused(&out, 401, "client.unknown");
    assert!(
        detail(&out.body).contains("expired at"),
        "the detail says why: {}",
        detail(&out.body)
    );
    let request = admin_connects_short
        .plain(Method::GET, "/v1/participants/apl-cahul", None)
        .unwrap();
    let (status, body) = admin_connects_short.send(request).await.unwrap();
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("client.unknown")),
        "{body}"
    );
    assert!(
        body["detail"].as_str().unwrap().contains("expired at"),
        "{body}"
    );
    let application =
        std::fs::read(support::repo().join("examples/connect/mcabinet-tax-debts.json")).unwrap();
    let request = admin_signs_short
        .signed(
            Method::POST,
            "/v1/connection-requests",
            bytes::Bytes::from(application),
            "2000000000015",
        )
        .unwrap();
    let (status, body) = admin_signs_short.send(request).await.unwrap();
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("signature.invalid")),
        "an application's evidence is not signed by an expired key: {body}"
    );
    assert!(
        body["detail"].as_str().unwrap().contains("expired at"),
        "{body}"
    );
    // The participant's other certificate is unaffected.
    let out = bus
        .consumer("apl-cahul")
        .call(&person_call())
        .await
        .unwrap();
    assert_eq!(out.status, StatusCode::OK, "{}", detail(&out.body));

    // After a restart the stored, now expired, certificate still signs nothing.
    let (bus, signs_short) = {
        let manifest_dir = bus.stop().await;
        let sandbox = mconnect_cli::sandbox::start(&support::args(manifest_dir.path()))
            .await
            .unwrap();
        let bus = Bus {
            sandbox,
            dir: manifest_dir,
        };
        let signs_short = consumer_with(&bus, "apl-cahul", None, Some(&signer));
        (bus, signs_short)
    };
    let out = signs_short.call(&person_call()).await.unwrap();
    assert_refused(&out, 401, "signature.invalid");
    assert!(
        detail(&out.body).contains("expired"),
        "{}",
        detail(&out.body)
    );
    bus.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_providers_for_themselves_and_operators_set_endpoints() {
    let bus = Bus::start().await;
    let consumer = Admin::new(&bus, "apl-cahul");
    let provider = Admin::new(&bus, "asp-rsp");
    let operator = Admin::new(&bus, "age-operator");
    let url = "https://127.0.0.1:9";
    let cases = [
        // A consumer-only participant, on itself.
        (
            &consumer,
            "apl-cahul",
            serde_json::json!([{ "url": url }]),
            StatusCode::FORBIDDEN,
            "admin.forbidden",
        ),
        // A provider on another.
        (
            &provider,
            "sfs",
            serde_json::json!([{ "url": url }]),
            StatusCode::FORBIDDEN,
            "admin.forbidden",
        ),
        // A service the catalog does not list for that provider: a
        // conflict with the catalog in force.
        (
            &provider,
            "asp-rsp",
            serde_json::json!([{ "service": "no-such-service", "url": url }]),
            StatusCode::CONFLICT,
            "endpoint.not_catalogued",
        ),
        (
            &provider,
            "asp-rsp",
            serde_json::json!([{ "service": "tax-debts", "url": url }]),
            StatusCode::CONFLICT,
            "endpoint.not_catalogued",
        ),
        // Not https, or with a query of its own.
        (
            &provider,
            "asp-rsp",
            serde_json::json!([{ "service": "person-by-idnp", "url": "http://127.0.0.1:9" }]),
            StatusCode::BAD_REQUEST,
            "admin.invalid",
        ),
        (
            &provider,
            "asp-rsp",
            serde_json::json!([{ "service": "person-by-idnp", "url": "https://127.0.0.1:9/p?x=1" }]),
            StatusCode::BAD_REQUEST,
            "admin.invalid",
        ),
        // Even the operator gives no endpoints to a consumer.
        (
            &operator,
            "apl-cahul",
            serde_json::json!([{ "url": url }]),
            StatusCode::CONFLICT,
            "participant.not_provider",
        ),
    ];
    for (i, (who, id, endpoints, status, code)) in cases.into_iter().enumerate() {
        let (got, body) = put(who, id, endpoints).await;
        assert_eq!(
            (got, body["code"].as_str()),
            (status, Some(code)),
            "case {i}: {body}"
        );
    }
    let snapshot = bus.sandbox.broker.broker.registry().snapshot();
    assert!(
        snapshot
            .get("apl-cahul")
            .unwrap()
            .participant
            .endpoints
            .is_empty()
    );

    // What is allowed: a provider on itself, for its own catalogued service.
    let current = snapshot
        .get("asp-rsp")
        .unwrap()
        .participant
        .endpoints
        .clone();
    let mut mine = serde_json::to_value(&current).unwrap();
    mine.as_array_mut()
        .unwrap()
        .push(serde_json::json!({ "service": "person-by-idnp", "url": current[0].url }));
    let (status, body) = put(&provider, "asp-rsp", mine).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let out = bus
        .consumer("apl-cahul")
        .call(&person_call())
        .await
        .unwrap();
    assert_eq!(out.status, StatusCode::OK, "{}", detail(&out.body));
    bus.stop().await;
}
