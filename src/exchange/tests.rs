//! The exchange pipeline end to end, in-process: the real [`Broker::handle`]
//! with a real registry (redb in a temp dir, DevCa certificates), real rules
//! (a small catalog and one grant), a real audit log and a real sealer, and a
//! FAKE upstream in place of the providers that answers what each test
//! scripts and records what it was asked. No network, no sandbox.
//!
//! Every test checks three things: the sealed answer (status, problem code,
//! the receipt verifies), the audit record the receipt names, and what the
//! fake upstream saw.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};

use super::error::{ErrorKind, ExchangeError};
use super::seal::Sealer;
use super::upstream::{Upstream, UpstreamAnswer, UpstreamCall, UpstreamFuture, UpstreamTrace};
use super::{Broker, BrokerParts, Peer, Rules};
use crate::audit::{AuditConfig, AuditLog, AuditRecord, Decision, TreeHeadSigner};
use crate::catalog::Catalog;
use crate::config::Limits;
use crate::crypto::SigningKey;
use crate::pki::{DevCa, IssuedCertificate, KeyType};
use crate::policy::PolicyIndex;
use crate::registry::{
    Endpoint, Organisation, Participant, Registry, Role, registered_certificate,
};
use crate::store::RedbStore;
use crate::trust::TrustAnchors;
use mconnect_sdk::{Credentials, TrustedKeys, sign_request, verify_receipt};

/// The broker's public data URL: what consumers sign `@target-uri` for.
const BASE: &str = "https://broker.test";
/// The consumer with the grant.
const CONSUMER: &str = "apl-test";
/// A registered consumer with no grant.
const OTHER: &str = "apl-other";
/// The provider of the test register.
const PROVIDER: &str = "reg-prov";
/// The one grant.
const GRANT: &str = "apl-test-social-aid";
const BASIS: &str = "md-law-133-2008-art-8";
const REASON: &str = "social-aid";
const ORG_IDNO: &str = "1003600000017";
/// The official making the calls.
const USER: &str = "2000000000015";
/// The person asked about.
const SUBJECT: &str = "2003000000027";
/// Another valid IDNP.
const SOMEONE_ELSE: &str = "2004000000035";
/// What the fake upstream says it signed the forwarded request with.
const FORWARD_KEY: &str = "fake:forward-key";
/// What the fake upstream says the provider's answer was checked with.
const PROVIDER_KEY: &str = "fake:provider-key";
/// Marks provider data that must never reach the consumer.
const LEAK: &str = "LEAKED-PERSONAL-DATA";

// ---------------------------------------------------------------------------
// The fake upstream.

/// What the fake upstream was asked, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    exchange_id: String,
    method: Method,
    service: String,
    provider: String,
    code: String,
    subpath: String,
    query: Option<String>,
    client: String,
    calling_user: String,
    basis: String,
    reason: String,
    subject: Option<String>,
    represented_party: Option<String>,
    request_id: String,
    body: Bytes,
}

/// Answers every call with the scripted answer, and records the calls.
struct FakeUpstream {
    /// The answer, and whether the request "left" (sets `forwarded_at`).
    script: Mutex<(Result<UpstreamAnswer, ExchangeError>, bool)>,
    seen: Mutex<Vec<Seen>>,
}

impl FakeUpstream {
    fn new() -> FakeUpstream {
        FakeUpstream {
            script: Mutex::new((Ok(person_answer()), true)),
            seen: Mutex::new(Vec::new()),
        }
    }

    fn answer(&self, answer: Result<UpstreamAnswer, ExchangeError>, forwarded: bool) {
        *self.script.lock().unwrap() = (answer, forwarded);
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Upstream for FakeUpstream {
    fn call<'a>(
        &'a self,
        call: UpstreamCall<'a>,
        trace: &'a mut UpstreamTrace,
    ) -> UpstreamFuture<'a> {
        self.seen.lock().unwrap().push(Seen {
            exchange_id: call.exchange_id.to_string(),
            method: call.head.method.clone(),
            service: call.service.key.clone(),
            provider: call.route.provider.to_string(),
            code: call.route.code.to_string(),
            subpath: call.route.subpath.to_string(),
            query: call.route.query.map(str::to_string),
            client: call.call.client.clone(),
            calling_user: call.call.calling_user.clone(),
            basis: call.call.basis.clone(),
            reason: call.call.reason.clone(),
            subject: call.call.subject.clone(),
            represented_party: call.call.represented_party.clone(),
            request_id: call.call.request_id.to_string(),
            body: call.body.clone(),
        });
        let (answer, forwarded) = self.script.lock().unwrap().clone();
        if forwarded {
            trace.forwarded_at = Some(SystemTime::now());
            trace.keyids_made.push(FORWARD_KEY.to_string());
            if answer.is_ok() {
                trace.keyids_checked.push(PROVIDER_KEY.to_string());
            }
        }
        Box::pin(async move { answer })
    }
}

fn answer(status: u16, media_type: &str, body: impl Into<Bytes>) -> UpstreamAnswer {
    UpstreamAnswer {
        status: StatusCode::from_u16(status).unwrap(),
        media_type: media_type.to_string(),
        body: body.into(),
    }
}

fn json_answer(status: u16, value: &Value) -> UpstreamAnswer {
    answer(
        status,
        "application/json",
        serde_json::to_vec(value).unwrap(),
    )
}

/// A full person as the provider knows it: more than the grant allows.
fn full_person() -> Value {
    json!({
        "idnp": SUBJECT,
        "name": "Ion Popescu",
        "secret_note": LEAK,
        "address": {"locality": "Cahul", "street": LEAK}
    })
}

/// The same person cut to the grant's fields.
fn minimised_person() -> Value {
    json!({"idnp": SUBJECT, "name": "Ion Popescu", "address": {"locality": "Cahul"}})
}

fn person_answer() -> UpstreamAnswer {
    json_answer(200, &full_person())
}

// ---------------------------------------------------------------------------
// Catalog and policy.

fn text(s: &str) -> Value {
    json!({"ro": s, "ru": s, "en": s})
}

fn person_schema() -> Value {
    json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["idnp", "name"],
        "properties": {
            "idnp": {"type": "string", "pattern": "^[0-9]{13}$"},
            "name": {"type": "string", "minLength": 1},
            "secret_note": {"type": "string"},
            "address": {"type": "object", "properties": {
                "locality": {"type": "string"}, "street": {"type": "string"}
            }}
        }
    })
}

fn register() -> Value {
    let data_elements = json!([{"path": "idnp", "meaning": text("IDNP")}]);
    json!({
        "id": "reg",
        "name": text("Test register"),
        "description": text("A register for the exchange tests"),
        "owner": {"idno": "1003601000036", "name": text("Owner")},
        "provider": PROVIDER,
        "contact": {"name": "desk", "email": "desk@example.md"},
        "legal_acts": [{"id": "md-law-71-2007", "title": text("Law 71/2007"), "article": "art. 4"}],
        "public_task": text("Tests"),
        "personal_data_categories": ["identity"],
        "services": [
            {
                "code": "person", "version": "1.0.0", "status": "active",
                "name": text("Person"), "description": text("Person by IDNP"),
                "method": "GET", "path": "/persons",
                "query": [{"name": "idnp", "required": true, "format": "idnp", "meaning": text("IDNP")}],
                "subject_required": true,
                "subject_ids": [{"query": "idnp"}],
                "personal_data": "personal", "timeout_ms": 1000, "body_limit": 0,
                "response_schema": person_schema(),
                "data_elements": data_elements
            },
            {
                "code": "search", "version": "2.1.0", "status": "active",
                "name": text("Search"), "description": text("Person by IDNP in the body"),
                "method": "POST", "path": "/search",
                "subject_required": false,
                "subject_ids": [{"body": "/idnp"}],
                "personal_data": "personal", "timeout_ms": 1000, "body_limit": 4096,
                "request_schema": {
                    "type": "object", "additionalProperties": false, "required": ["idnp"],
                    "properties": {"idnp": {"type": "string"}}
                },
                "response_schema": person_schema(),
                "data_elements": data_elements
            }
        ]
    })
}

fn grants() -> Value {
    let fields = json!(["idnp", "name", "address.locality"]);
    json!({"grants": [{
        "id": GRANT,
        "consumer": CONSUMER,
        "services": [format!("{PROVIDER}/person"), format!("{PROVIDER}/search")],
        "purposes": [{"code": REASON, "text": text("Social aid")}],
        "legal_bases": [{"id": BASIS, "act": "Legea 133/2008", "article": "art. 8", "text": "t"}],
        "fields": {format!("{PROVIDER}/person"): fields, format!("{PROVIDER}/search"): fields},
        "valid_from": "2020-01-01",
        "valid_until": "2099-12-31",
        "rate_limit": {"requests": 1000, "per": "second"},
        "status": "active"
    }]})
}

// ---------------------------------------------------------------------------
// The broker under test.

/// Signs tree heads with the broker key, as `app` does.
struct TestTreeSigner {
    key: SigningKey,
    keyid: String,
}

impl TreeHeadSigner for TestTreeSigner {
    fn keyid(&self) -> String {
        self.keyid.clone()
    }
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, String> {
        self.key.sign(message).map_err(|e| e.to_string())
    }
}

/// A participant's signing side.
#[derive(Clone)]
struct Party {
    credentials: Credentials,
    fingerprint: String,
}

impl Party {
    fn new(id: &str, issued: &IssuedCertificate, ca: &DevCa) -> Party {
        Party {
            credentials: Credentials::from_pem(
                id,
                &issued.cert_pem,
                &issued.key_pem,
                ca.cert_pem(),
                None,
            )
            .unwrap(),
            fingerprint: issued.fingerprint.clone(),
        }
    }
}

struct Harness {
    broker: Broker,
    fake: Arc<FakeUpstream>,
    /// `apl-test`, holder of the grant.
    consumer: Party,
    /// `apl-other`, registered, no grant.
    other: Party,
    /// A certificate of the bus CA registered to no one.
    stranger: Party,
    broker_keys: TrustedKeys,
    broker_keyid: String,
    _dir: tempfile::TempDir,
}

fn participant(id: &str, issued: &IssuedCertificate, role: Role) -> Participant {
    Participant {
        id: id.to_string(),
        organisation: Organisation {
            idno: ORG_IDNO.to_string(),
            name: format!("Org of {id}"),
        },
        roles: vec![role],
        certificates: vec![registered_certificate(&issued.cert_pem).unwrap()],
        endpoints: if role == Role::Provider {
            vec![Endpoint {
                service: None,
                url: "https://127.0.0.1:9".to_string(),
            }]
        } else {
            Vec::new()
        },
        confidential: false,
    }
}

fn harness() -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let ca = DevCa::generate("exchange test ca").unwrap();
    let issue = |id: &str| ca.issue(id, "Org", KeyType::Ed25519).unwrap();
    let broker_cert = issue("broker");
    let consumer_cert = issue(CONSUMER);
    let other_cert = issue(OTHER);
    let provider_cert = issue(PROVIDER);
    let stranger_cert = issue("apl-stranger");

    let store = Arc::new(RedbStore::open(&dir.path().join("state.redb")).unwrap());
    let anchors = TrustAnchors::from_pem(ca.cert_pem()).unwrap();
    let registry = Arc::new(Registry::open(store, anchors).unwrap());
    registry
        .upsert(participant(CONSUMER, &consumer_cert, Role::Consumer))
        .unwrap();
    registry
        .upsert(participant(OTHER, &other_cert, Role::Consumer))
        .unwrap();
    registry
        .upsert(participant(PROVIDER, &provider_cert, Role::Provider))
        .unwrap();

    let catalog = Catalog::from_documents([(PathBuf::from("reg.json"), register())])
        .unwrap_or_else(|e| panic!("catalog: {e:?}"));
    let snapshot = registry.snapshot();
    let known = |id: &str| snapshot.get(id).is_some();
    let policy =
        PolicyIndex::from_documents([(PathBuf::from("grants.json"), grants())], &catalog, &known)
            .unwrap_or_else(|e| panic!("policy: {e:?}"));

    let (audit, _) = AuditLog::open(
        AuditConfig {
            // Only a real write failure stops appends, whatever the disk.
            min_free_bytes: Some(0),
            ..AuditConfig::new(dir.path().join("audit"))
        },
        Arc::new(TestTreeSigner {
            key: SigningKey::from_pem(&broker_cert.key_pem).unwrap(),
            keyid: broker_cert.fingerprint.clone(),
        }),
    )
    .unwrap();
    audit.sync_index().unwrap();
    let sealer = Arc::new(Sealer::new(
        SigningKey::from_pem(&broker_cert.key_pem).unwrap(),
        broker_cert.fingerprint.clone(),
    ));
    let fake = Arc::new(FakeUpstream::new());
    let broker = Broker::new(BrokerParts {
        registry,
        rules: Rules { catalog, policy },
        audit,
        upstream: fake.clone(),
        sealer,
        limits: Limits::default(),
        public_data_url: Some(BASE.into()),
    });
    Harness {
        broker,
        fake,
        consumer: Party::new(CONSUMER, &consumer_cert, &ca),
        other: Party::new(OTHER, &other_cert, &ca),
        stranger: Party::new("apl-stranger", &stranger_cert, &ca),
        broker_keys: TrustedKeys::from_pem(&broker_cert.cert_pem).unwrap(),
        broker_keyid: broker_cert.fingerprint,
        _dir: dir,
    }
}

/// One call as a consumer builds it.
#[derive(Clone)]
struct Ask {
    /// `MConnect-Client`.
    client: &'static str,
    /// Who signs.
    signer: Party,
    method: Method,
    /// Path and query.
    path: String,
    body: Bytes,
    subject: Option<&'static str>,
    basis: &'static str,
    reason: &'static str,
    request_id: uuid::Uuid,
    /// Headers the consumer adds that are no part of the protocol.
    extra: Vec<(&'static str, &'static str)>,
    /// The base URL the signature covers.
    signed_for: &'static str,
}

impl Ask {
    fn request(&self) -> Request<Full<Bytes>> {
        let mut h = HeaderMap::new();
        let mut put = |name: &'static str, value: &str| {
            h.insert(name, HeaderValue::from_str(value).unwrap());
        };
        put("mconnect-client", self.client);
        put("mconnect-calling-user", USER);
        put("mconnect-call-basis", self.basis);
        put("mconnect-call-reason", self.reason);
        put("mconnect-request-id", &self.request_id.to_string());
        if let Some(subject) = self.subject {
            put("mconnect-subject", subject);
        }
        if !self.body.is_empty() {
            put("content-type", "application/json");
        }
        for (name, value) in &self.extra {
            put(name, value);
        }
        let uri = format!("{}{}", self.signed_for, self.path);
        sign_request(
            &self.signer.credentials,
            self.method.as_str(),
            &uri,
            &mut h,
            &self.body,
        )
        .unwrap();
        let mut request = Request::new(Full::new(self.body.clone()));
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.path.parse().unwrap();
        *request.headers_mut() = h;
        request
    }
}

/// The answer as the consumer got it, and the record its receipt names.
struct Outcome {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
    exchange_id: String,
    record: AuditRecord,
}

impl Outcome {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("answer is not JSON ({e}): {:?}", self.body))
    }

    fn content_type(&self) -> &str {
        self.headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    /// Asserts a broker refusal: status, problem+json with the protocol's
    /// members, and a Refused record with the same code.
    fn assert_refused(&self, status: u16, code: &str, what: &str) {
        assert_eq!(self.status.as_u16(), status, "{what}: {:?}", self.body);
        assert_eq!(self.content_type(), "application/problem+json", "{what}");
        let problem = self.json();
        assert_eq!(problem["code"], code, "{what}: {problem}");
        assert_eq!(problem["status"], status, "{what}");
        assert_eq!(
            problem["type"],
            format!("urn:mconnect:problem:{code}"),
            "{what}"
        );
        assert_eq!(problem["exchange_id"], self.exchange_id.as_str(), "{what}");
        assert_eq!(self.record.decision, Decision::Refused, "{what}");
        assert_eq!(self.record.problem_code.as_deref(), Some(code), "{what}");
    }
}

impl Harness {
    /// An allowed call to `reg-prov/person` about [`SUBJECT`].
    fn person(&self) -> Ask {
        Ask {
            client: CONSUMER,
            signer: self.consumer.clone(),
            method: Method::GET,
            path: format!("/r1/{PROVIDER}/person?idnp={SUBJECT}"),
            body: Bytes::new(),
            subject: Some(SUBJECT),
            basis: BASIS,
            reason: REASON,
            request_id: uuid::Uuid::new_v4(),
            extra: Vec::new(),
            signed_for: BASE,
        }
    }

    /// An allowed call to `reg-prov/search` with [`SUBJECT`] in the body.
    fn search(&self) -> Ask {
        Ask {
            method: Method::POST,
            path: format!("/r1/{PROVIDER}/search"),
            body: Bytes::from(format!(r#"{{"idnp":"{SUBJECT}"}}"#)),
            subject: None,
            ..self.person()
        }
    }

    /// Sends `ask` over a connection whose client certificate is `peer`'s.
    async fn send(&self, peer: Option<&Party>, ask: &Ask) -> Outcome {
        self.send_request(peer, ask.request()).await
    }

    /// Runs one exchange; checks the receipt and that exactly one record
    /// was made, and reads that record back.
    async fn send_request(&self, peer: Option<&Party>, request: Request<Full<Bytes>>) -> Outcome {
        let audit = self.broker.audit();
        let before = audit.tree_size();
        let peer = Peer {
            fingerprint: peer.map(|p| p.fingerprint.clone()),
            addr: "127.0.0.1:40000".parse().unwrap(),
        };
        let response = self.broker.handle(&peer, request).await;
        let (head, body) = response.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        let receipt = verify_receipt(head.status, &head.headers, &body, &self.broker_keys)
            .unwrap_or_else(|e| panic!("receipt does not verify: {e}"));
        assert_eq!(receipt.keyid, self.broker_keyid);
        let seq = receipt.audit_seq.expect("every answer here is recorded");
        assert_eq!(seq, before, "the record is the next leaf");
        assert_eq!(audit.tree_size(), before + 1, "exactly one record");
        let (record, _) = audit.record(seq).unwrap().unwrap();
        assert_eq!(record.event, "exchange");
        assert_eq!(record.exchange_id, receipt.exchange_id);
        assert_eq!(record.request_id, receipt.request_id);
        assert_eq!(record.http_status, head.status.as_u16());
        assert_eq!(record.response_bytes, body.len() as u64);
        assert_eq!(
            record.response_sha256,
            Some(hex::encode(crate::crypto::sha256(&body)))
        );
        assert_eq!(
            record.keyids_made.last(),
            Some(&self.broker_keyid),
            "the receipt's key is listed last"
        );
        Outcome {
            status: head.status,
            headers: head.headers,
            body,
            exchange_id: receipt.exchange_id,
            record,
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.fake.seen()
    }
}

/// What the fake must have seen for the allowed `ask`.
fn seen_for(
    ask: &Ask,
    exchange_id: &str,
    service: &str,
    subpath: &str,
    query: Option<&str>,
) -> Seen {
    Seen {
        exchange_id: exchange_id.to_string(),
        method: ask.method.clone(),
        service: format!("{PROVIDER}/{service}"),
        provider: PROVIDER.to_string(),
        code: service.to_string(),
        subpath: subpath.to_string(),
        query: query.map(str::to_string),
        client: CONSUMER.to_string(),
        calling_user: USER.to_string(),
        basis: BASIS.to_string(),
        reason: REASON.to_string(),
        subject: ask.subject.map(str::to_string),
        represented_party: None,
        request_id: ask.request_id.to_string(),
        body: ask.body.clone(),
    }
}

// ---------------------------------------------------------------------------
// 1. An allowed call.

#[tokio::test]
async fn an_allowed_call_is_forwarded_once_minimised_to_the_grant_and_recorded() {
    let h = harness();
    let ask = Ask {
        path: format!("/r1/{PROVIDER}/person/detail?idnp={SUBJECT}"),
        extra: vec![("x-evil", "1"), ("cookie", "session=abc")],
        ..h.person()
    };
    let out = h.send(Some(&h.consumer), &ask).await;

    // The answer: the grant's fields only (secret_note and address.street cut).
    assert_eq!(out.status, StatusCode::OK, "{:?}", out.body);
    assert_eq!(out.content_type(), "application/json");
    assert_eq!(out.json(), minimised_person());
    assert!(!String::from_utf8_lossy(&out.body).contains(LEAK));
    assert_eq!(
        out.headers
            .get("mconnect-request-id")
            .and_then(|v| v.to_str().ok()),
        Some(ask.request_id.to_string().as_str())
    );

    // The upstream: called once, with this exchange, route and protocol headers.
    assert_eq!(
        h.seen(),
        vec![seen_for(
            &ask,
            &out.exchange_id,
            "person",
            "/detail",
            Some(&format!("idnp={SUBJECT}"))
        )]
    );

    // The record: accepted, under the grant, about the subject.
    let r = &out.record;
    let request_id = ask.request_id.to_string();
    assert_eq!(r.decision, Decision::Accepted);
    assert_eq!(r.problem_code, None);
    assert_eq!(r.http_status, 200);
    assert_eq!(r.grant_id.as_deref(), Some(GRANT));
    assert_eq!(r.consumer.as_deref(), Some(CONSUMER));
    assert_eq!(r.consumer_idno.as_deref(), Some(ORG_IDNO));
    assert_eq!(r.calling_user.as_deref(), Some(USER));
    assert_eq!(r.provider.as_deref(), Some(PROVIDER));
    assert_eq!(r.service.as_deref(), Some("reg-prov/person"));
    assert_eq!(r.service_version.as_deref(), Some("1.0.0"));
    assert_eq!(r.purpose.as_deref(), Some(REASON));
    assert_eq!(r.legal_basis.as_deref(), Some(BASIS));
    assert_eq!(r.subject.as_deref(), Some(SUBJECT));
    assert_eq!(r.subjects, vec![SUBJECT.to_string()]);
    assert_eq!(r.represented_party, None);
    assert_eq!(r.request_id.as_deref(), Some(request_id.as_str()));
    assert_eq!(r.replay_ids, vec![request_id.clone()]);
    assert!(r.forwarded_at.is_some());
    assert_eq!(r.request_bytes, 0);
    assert_eq!(
        r.keyids_checked,
        vec![h.consumer.fingerprint.clone(), PROVIDER_KEY.to_string()]
    );
    assert_eq!(
        r.keyids_made,
        vec![FORWARD_KEY.to_string(), h.broker_keyid.clone()]
    );
}

#[tokio::test]
async fn an_allowed_call_with_a_body_forwards_the_body_and_records_its_subjects() {
    let h = harness();
    let ask = Ask {
        path: format!("/r1/{PROVIDER}/search/v2"),
        ..h.search()
    };
    let out = h.send(Some(&h.consumer), &ask).await;

    assert_eq!(out.status, StatusCode::OK, "{:?}", out.body);
    assert_eq!(out.json(), minimised_person());
    assert_eq!(
        h.seen(),
        vec![seen_for(&ask, &out.exchange_id, "search", "/v2", None)]
    );
    let r = &out.record;
    assert_eq!(r.decision, Decision::Accepted);
    assert_eq!(r.service.as_deref(), Some("reg-prov/search"));
    assert_eq!(r.service_version.as_deref(), Some("2.1.0"));
    assert_eq!(r.grant_id.as_deref(), Some(GRANT));
    // No MConnect-Subject, but the body names the person: a subject.
    assert_eq!(r.subject, None);
    assert_eq!(r.subjects, vec![SUBJECT.to_string()]);
    assert_eq!(r.request_bytes, ask.body.len() as u64);
    assert_eq!(
        r.request_sha256,
        Some(hex::encode(crate::crypto::sha256(&ask.body)))
    );
}

// ---------------------------------------------------------------------------
// 2, 3. The answer checks.

/// What the consumer must get for an upstream answer.
enum Expect {
    /// Delivered: status, media type, body (JSON; `None` for an empty body).
    Delivered(u16, &'static str, Option<Value>),
    /// Refused by the broker: status and code.
    Refused(u16, &'static str),
}

#[tokio::test]
async fn every_upstream_answer_passes_the_schema_minimisation_and_problem_checks() {
    let long = "x".repeat(1025);
    let cases: Vec<(&str, UpstreamAnswer, Expect)> = vec![
        (
            "200 within the schema: minimised",
            person_answer(),
            Expect::Delivered(200, "application/json", Some(minimised_person())),
        ),
        (
            "201 within the schema: minimised too",
            json_answer(201, &full_person()),
            Expect::Delivered(201, "application/json", Some(minimised_person())),
        ),
        (
            "200 missing a required field",
            json_answer(200, &json!({"idnp": SUBJECT, "secret_note": LEAK})),
            Expect::Refused(502, "schema.response_invalid"),
        ),
        (
            "200 with a field the schema does not know",
            json_answer(200, &json!({"idnp": SUBJECT, "name": "Ion", LEAK: LEAK})),
            Expect::Refused(502, "schema.response_invalid"),
        ),
        (
            "200 with a value breaking its pattern",
            json_answer(200, &json!({"idnp": LEAK, "name": "Ion"})),
            Expect::Refused(502, "schema.response_invalid"),
        ),
        (
            "200 with a root that is no object",
            json_answer(200, &json!([LEAK])),
            Expect::Refused(502, "schema.response_invalid"),
        ),
        (
            "200 as text/plain",
            answer(200, "text/plain", LEAK),
            Expect::Refused(502, "provider.bad_response"),
        ),
        (
            "200 application/json that is not JSON",
            answer(200, "application/json", format!("{{\"name\": {LEAK}")),
            Expect::Refused(502, "provider.bad_response"),
        ),
        (
            "200 with no media type",
            answer(200, "", serde_json::to_vec(&full_person()).unwrap()),
            Expect::Refused(502, "provider.bad_response"),
        ),
        (
            "204 without a body",
            answer(204, "", Bytes::new()),
            Expect::Delivered(204, "application/json", None),
        ),
        (
            "204 with a body",
            answer(204, "application/json", format!("\"{LEAK}\"")),
            Expect::Refused(502, "provider.bad_response"),
        ),
        (
            "302 redirect",
            answer(302, "text/html", LEAK),
            Expect::Refused(502, "provider.bad_response"),
        ),
        (
            "500 as text/html",
            answer(500, "text/html", format!("<h1>{LEAK}</h1>")),
            Expect::Refused(502, "provider.bad_response"),
        ),
        (
            "404 as application/json",
            json_answer(404, &json!({"error": LEAK})),
            Expect::Refused(502, "provider.bad_response"),
        ),
        (
            "404 problem+json that is not JSON",
            answer(404, "application/problem+json", LEAK),
            Expect::Refused(502, "provider.bad_response"),
        ),
        (
            "404 problem+json that is an array",
            answer(404, "application/problem+json", format!("[\"{LEAK}\"]")),
            Expect::Refused(502, "provider.bad_response"),
        ),
        (
            "404 problem+json whose status is another",
            answer(
                404,
                "application/problem+json",
                serde_json::to_vec(&json!({"status": 400, "detail": LEAK})).unwrap(),
            ),
            Expect::Refused(502, "provider.bad_response"),
        ),
        (
            "404 problem+json with a code that is no string",
            answer(
                404,
                "application/problem+json",
                serde_json::to_vec(&json!({"code": 7, "detail": LEAK})).unwrap(),
            ),
            Expect::Refused(502, "provider.bad_response"),
        ),
        (
            "404 problem+json with a detail over 1 KiB",
            answer(
                404,
                "application/problem+json",
                serde_json::to_vec(&json!({"code": "x", "detail": long})).unwrap(),
            ),
            Expect::Refused(502, "provider.bad_response"),
        ),
        (
            "503 problem+json with extra members: cut to the problem members",
            answer(
                503,
                "application/problem+json",
                serde_json::to_vec(&json!({
                    "type": "urn:reg:down", "title": "Down", "status": 503,
                    "detail": "maintenance until 14:00", "code": "reg.maintenance",
                    "instance": LEAK, "idnp": SUBJECT, "person": full_person(),
                    "exchange_id": "forged"
                }))
                .unwrap(),
            ),
            Expect::Delivered(
                503,
                "application/problem+json",
                Some(json!({
                    "type": "urn:reg:down", "title": "Down", "status": 503,
                    "detail": "maintenance until 14:00", "code": "reg.maintenance"
                })),
            ),
        ),
        (
            "404 problem+json without status: the HTTP status is added",
            answer(
                404,
                "application/problem+json",
                serde_json::to_vec(&json!({"code": "reg.not_found", "extra": LEAK})).unwrap(),
            ),
            Expect::Delivered(
                404,
                "application/problem+json",
                Some(json!({"code": "reg.not_found", "status": 404})),
            ),
        ),
    ];

    let h = harness();
    for (i, (what, upstream, expect)) in cases.into_iter().enumerate() {
        h.fake.answer(Ok(upstream), true);
        let ask = h.person();
        let out = h.send(Some(&h.consumer), &ask).await;
        assert_eq!(h.seen().len(), i + 1, "{what}: forwarded once");
        assert_eq!(
            h.seen().last().map(|s| s.exchange_id.clone()),
            Some(out.exchange_id.clone()),
            "{what}"
        );
        let r = &out.record;
        match expect {
            Expect::Delivered(status, media_type, body) => {
                assert_eq!(out.status.as_u16(), status, "{what}: {:?}", out.body);
                assert_eq!(out.content_type(), media_type, "{what}");
                match body {
                    Some(value) => assert_eq!(out.json(), value, "{what}"),
                    None => assert!(out.body.is_empty(), "{what}"),
                }
                // Delivered, even an error of the provider: accepted by the broker.
                assert_eq!(r.decision, Decision::Accepted, "{what}");
                assert_eq!(r.problem_code, None, "{what}");
                assert_eq!(
                    r.keyids_checked,
                    vec![h.consumer.fingerprint.clone(), PROVIDER_KEY.to_string()],
                    "{what}"
                );
            }
            Expect::Refused(status, code) => {
                out.assert_refused(status, code, what);
            }
        }
        // Whatever happened, nothing the grant does not allow left.
        assert!(
            !String::from_utf8_lossy(&out.body).contains(LEAK),
            "{what}: leaked: {:?}",
            out.body
        );
        assert_eq!(r.grant_id.as_deref(), Some(GRANT), "{what}");
        assert_eq!(r.subjects, vec![SUBJECT.to_string()], "{what}");
        assert!(r.forwarded_at.is_some(), "{what}");
        assert_eq!(
            r.replay_ids,
            vec![ask.request_id.to_string()],
            "{what}: the id is used up"
        );
    }
}

/// A provider answer with a member name twice is refused without repeating
/// the name: a member name can be personal data (an object keyed by IDNP),
/// which is why schema violations are masked too
/// (`catalog::first_violation`); the detail says what and where only.
#[tokio::test]
async fn a_duplicate_member_name_in_the_answer_is_not_quoted_to_the_consumer() {
    let h = harness();
    let body =
        format!(r#"{{"idnp":"{SUBJECT}","name":"Ion","{SOMEONE_ELSE}":1,"{SOMEONE_ELSE}":2}}"#);
    h.fake
        .answer(Ok(answer(200, "application/json", body)), true);
    let out = h.send(Some(&h.consumer), &h.person()).await;
    out.assert_refused(502, "provider.bad_response", "duplicate member");
    assert!(
        !String::from_utf8_lossy(&out.body).contains(SOMEONE_ELSE),
        "{:?}",
        out.body
    );
}

// ---------------------------------------------------------------------------
// 4. Refusals before the upstream.

/// A refusal before the upstream: who connects, what they send, and what
/// must be answered and recorded.
struct Refusal {
    what: &'static str,
    /// Whose certificate the TLS connection presented.
    peer: Option<Party>,
    request: Request<Full<Bytes>>,
    status: u16,
    code: &'static str,
    /// The consumer the record names.
    consumer: Option<&'static str>,
    /// The grant the record names.
    grant: Option<&'static str>,
    /// Whether the protocol headers were read (the record has the request id).
    read: bool,
    /// Whether the signature verified (its key checked, the id used up); the
    /// key of `signer`.
    verified: Option<String>,
}

#[tokio::test]
async fn refusals_before_the_upstream_are_answered_audited_and_never_forwarded() {
    let h = harness();
    let consumer = Some(h.consumer.clone());
    let fp = Some(h.consumer.fingerprint.clone());
    let tampered = |ask: Ask, change: fn(&mut HeaderMap)| {
        let mut request = ask.request();
        change(request.headers_mut());
        request
    };
    let refusal = |what, peer: Option<Party>, request, status, code| Refusal {
        what,
        peer,
        request,
        status,
        code,
        consumer: Some(CONSUMER),
        grant: None,
        read: true,
        verified: None,
    };
    let cases: Vec<Refusal> = vec![
        // Identify.
        Refusal {
            consumer: None,
            read: false,
            ..refusal(
                "a certificate registered to no one",
                Some(h.stranger.clone()),
                h.person().request(),
                401,
                "client.unknown",
            )
        },
        Refusal {
            consumer: None,
            read: false,
            ..refusal(
                "no client certificate",
                None,
                h.person().request(),
                401,
                "client.unknown",
            )
        },
        Refusal {
            consumer: None,
            read: false,
            ..refusal(
                "another participant's certificate",
                Some(h.other.clone()),
                h.person().request(),
                401,
                "client.certificate_mismatch",
            )
        },
        refusal(
            "a service the catalog does not have",
            consumer.clone(),
            Ask {
                path: format!("/r1/{PROVIDER}/nothing?idnp={SUBJECT}"),
                ..h.person()
            }
            .request(),
            404,
            "catalog.unknown_service",
        ),
        refusal(
            "the service's other method",
            consumer.clone(),
            Ask {
                method: Method::POST,
                ..h.person()
            }
            .request(),
            400,
            "request.malformed",
        ),
        // Verify.
        refusal(
            "unsigned",
            consumer.clone(),
            tampered(h.person(), |headers| {
                headers.remove("signature");
                headers.remove("signature-input");
            }),
            401,
            "signature.missing",
        ),
        refusal(
            "a covered header changed after signing",
            consumer.clone(),
            tampered(h.person(), |headers| {
                headers.insert("mconnect-calling-user", SOMEONE_ELSE.parse().unwrap());
            }),
            401,
            "signature.invalid",
        ),
        refusal(
            "signed for another authority",
            consumer.clone(),
            Ask {
                signed_for: "https://other-broker.test",
                ..h.person()
            }
            .request(),
            401,
            "signature.invalid",
        ),
        refusal(
            "signed with another participant's key",
            consumer.clone(),
            Ask {
                signer: h.other.clone(),
                ..h.person()
            }
            .request(),
            401,
            "signature.invalid",
        ),
        refusal(
            "a body changed after signing",
            consumer.clone(),
            {
                let mut request = h.search().request();
                *request.body_mut() =
                    Full::new(Bytes::from(format!(r#"{{"idnp":"{SOMEONE_ELSE}"}}"#)));
                request
            },
            401,
            "digest.mismatch",
        ),
        // Bind.
        Refusal {
            verified: fp.clone(),
            ..refusal(
                "a subject that is not the person asked about",
                consumer.clone(),
                Ask {
                    subject: Some(SOMEONE_ELSE),
                    ..h.person()
                }
                .request(),
                403,
                "policy.subject_mismatch",
            )
        },
        Refusal {
            verified: fp.clone(),
            ..refusal(
                "a query parameter of the wrong format",
                consumer.clone(),
                Ask {
                    path: format!("/r1/{PROVIDER}/person?idnp=123"),
                    subject: None,
                    ..h.person()
                }
                .request(),
                400,
                "request.malformed",
            )
        },
        // Authorise.
        Refusal {
            consumer: Some(OTHER),
            verified: Some(h.other.fingerprint.clone()),
            ..refusal(
                "a consumer without a grant",
                Some(h.other.clone()),
                Ask {
                    client: OTHER,
                    signer: h.other.clone(),
                    ..h.person()
                }
                .request(),
                403,
                "policy.denied",
            )
        },
        Refusal {
            grant: Some(GRANT),
            verified: fp.clone(),
            ..refusal(
                "a purpose the grant does not name",
                consumer.clone(),
                Ask {
                    reason: "curiosity",
                    ..h.person()
                }
                .request(),
                403,
                "policy.purpose_not_allowed",
            )
        },
        Refusal {
            grant: Some(GRANT),
            verified: fp.clone(),
            ..refusal(
                "a legal basis the grant does not name",
                consumer.clone(),
                Ask {
                    basis: "md-law-1-2000",
                    ..h.person()
                }
                .request(),
                403,
                "policy.basis_not_allowed",
            )
        },
        Refusal {
            grant: Some(GRANT),
            verified: fp.clone(),
            ..refusal(
                "no subject where the service needs one",
                consumer.clone(),
                Ask {
                    subject: None,
                    ..h.person()
                }
                .request(),
                403,
                "policy.subject_required",
            )
        },
        // Validate.
        Refusal {
            grant: Some(GRANT),
            verified: fp.clone(),
            ..refusal(
                "a body breaking the request schema",
                consumer.clone(),
                Ask {
                    body: Bytes::from(format!(r#"{{"idnp":"{SUBJECT}","more":1}}"#)),
                    ..h.search()
                }
                .request(),
                422,
                "schema.request_invalid",
            )
        },
    ];

    for case in cases {
        let what = case.what;
        let request_id = case
            .request
            .headers()
            .get("mconnect-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let out = h.send_request(case.peer.as_ref(), case.request).await;
        out.assert_refused(case.status, case.code, what);
        assert!(h.seen().is_empty(), "{what}: the upstream was called");

        let r = &out.record;
        assert_eq!(r.consumer.as_deref(), case.consumer, "{what}");
        assert_eq!(r.grant_id.as_deref(), case.grant, "{what}");
        assert_eq!(r.forwarded_at, None, "{what}");
        let expected_id = if case.read { request_id.clone() } else { None };
        assert_eq!(r.request_id, expected_id, "{what}");
        assert_eq!(
            out.headers
                .get("mconnect-request-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
            expected_id,
            "{what}"
        );
        match &case.verified {
            Some(keyid) => {
                assert_eq!(r.keyids_checked, vec![keyid.clone()], "{what}");
                assert_eq!(
                    r.replay_ids,
                    vec![request_id.clone().unwrap()],
                    "{what}: the id is used up"
                );
            }
            None => {
                assert!(r.keyids_checked.is_empty(), "{what}");
                assert!(r.replay_ids.is_empty(), "{what}: no id used up");
            }
        }
        assert_eq!(r.keyids_made, vec![h.broker_keyid.clone()], "{what}");
    }

    // The broker still serves after all that.
    let out = h.send(Some(&h.consumer), &h.person()).await;
    assert_eq!(out.status, StatusCode::OK);
    assert_eq!(h.seen().len(), 1);
}

// ---------------------------------------------------------------------------
// 5. Replay.

#[tokio::test]
async fn a_used_request_id_is_refused_as_replayed_and_not_forwarded_again() {
    let h = harness();
    let first = h.person();
    let out = h.send(Some(&h.consumer), &first).await;
    assert_eq!(out.status, StatusCode::OK);
    assert_eq!(h.seen().len(), 1);

    // The same id again, freshly signed: refused, not forwarded.
    let again = h.send(Some(&h.consumer), &first).await;
    again.assert_refused(409, "request.replayed", "same id again");
    assert_eq!(h.seen().len(), 1, "the upstream was called again");
    let r = &again.record;
    let id = first.request_id.to_string();
    assert_eq!(r.request_id.as_deref(), Some(id.as_str()));
    assert_eq!(r.consumer.as_deref(), Some(CONSUMER));
    assert_eq!(r.keyids_checked, vec![h.consumer.fingerprint.clone()]);
    assert!(r.replay_ids.is_empty(), "a refused claim uses nothing up");
    assert_eq!(r.grant_id, None);
    assert_eq!(r.forwarded_at, None);

    // The same id on another call (another service, a body): still replayed.
    let other_call = Ask {
        request_id: first.request_id,
        ..h.search()
    };
    let out = h.send(Some(&h.consumer), &other_call).await;
    out.assert_refused(409, "request.replayed", "same id, another call");
    assert_eq!(h.seen().len(), 1);

    // Ids are per client: the same id from another client is no replay (it
    // goes on to that client's own refusal).
    let out = h
        .send(
            Some(&h.other),
            &Ask {
                client: OTHER,
                signer: h.other.clone(),
                request_id: first.request_id,
                ..h.person()
            },
        )
        .await;
    out.assert_refused(403, "policy.denied", "same id, another client");

    // A call refused after its signature verified used its id up too.
    let refused = Ask {
        reason: "curiosity",
        ..h.person()
    };
    let out = h.send(Some(&h.consumer), &refused).await;
    out.assert_refused(403, "policy.purpose_not_allowed", "refused call");
    let out = h
        .send(
            Some(&h.consumer),
            &Ask {
                request_id: refused.request_id,
                ..h.person()
            },
        )
        .await;
    out.assert_refused(409, "request.replayed", "id of a refused call");
    assert_eq!(h.seen().len(), 1);

    // A fresh id passes.
    let out = h.send(Some(&h.consumer), &h.person()).await;
    assert_eq!(out.status, StatusCode::OK);
    assert_eq!(h.seen().len(), 2);
}

// ---------------------------------------------------------------------------
// 6. The upstream fails.

#[tokio::test]
async fn an_upstream_failure_is_answered_with_its_code_and_audited() {
    let cases = [
        (
            "provider not registered: nothing left",
            ErrorKind::ProviderUnavailable,
            false,
            503,
            "provider.unavailable",
        ),
        (
            "provider unreachable",
            ErrorKind::ProviderUnavailable,
            true,
            503,
            "provider.unavailable",
        ),
        (
            "provider too slow",
            ErrorKind::ProviderTimeout,
            true,
            504,
            "provider.timeout",
        ),
        (
            "provider answer badly signed",
            ErrorKind::ProviderSignatureInvalid,
            true,
            502,
            "provider.signature_invalid",
        ),
        (
            "provider answer not HTTP",
            ErrorKind::ProviderBadResponse,
            true,
            502,
            "provider.bad_response",
        ),
    ];
    let h = harness();
    for (i, (what, kind, forwarded, status, code)) in cases.into_iter().enumerate() {
        let detail = format!("the fake upstream failed: {what}");
        h.fake
            .answer(Err(ExchangeError::new(kind, detail.clone())), forwarded);
        let ask = h.person();
        let out = h.send(Some(&h.consumer), &ask).await;
        out.assert_refused(status, code, what);
        assert_eq!(out.json()["detail"], detail.as_str(), "{what}");
        assert_eq!(h.seen().len(), i + 1, "{what}: asked once");
        assert_eq!(h.seen()[i].exchange_id, out.exchange_id, "{what}");

        let r = &out.record;
        assert_eq!(r.grant_id.as_deref(), Some(GRANT), "{what}");
        assert_eq!(r.consumer.as_deref(), Some(CONSUMER), "{what}");
        assert_eq!(r.subjects, vec![SUBJECT.to_string()], "{what}");
        assert_eq!(r.forwarded_at.is_some(), forwarded, "{what}");
        assert_eq!(
            r.keyids_checked,
            vec![h.consumer.fingerprint.clone()],
            "{what}"
        );
        let mut made = Vec::new();
        if forwarded {
            made.push(FORWARD_KEY.to_string());
        }
        made.push(h.broker_keyid.clone());
        assert_eq!(r.keyids_made, made, "{what}");
        assert_eq!(
            r.replay_ids,
            vec![ask.request_id.to_string()],
            "{what}: the id is used up"
        );
    }
}

mod metrics;
