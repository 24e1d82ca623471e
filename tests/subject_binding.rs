//! Issue 11, items 1, 5 and 10, through the real broker: the subject is bound
//! to the data and every person asked about is audited; typed query
//! parameters, strict JSON and bounded trees; provider error answers cut to
//! problem members; subpath tricks, another host's `@target-uri` and repeated
//! `Content-Digest` lines refused.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;

use http::HeaderValue;
use mconnect::audit::AuditQuery;
use mconnect::registry::Endpoint;
use support::{Bus, assert_refused, code, get, post};

const SOCIAL_BASIS: &str = "md-law-133-2008-art-8";
const SOCIAL_REASON: &str = "social-aid-eligibility";
const PERSON: &str = "2000000000015";
const OTHER: &str = "2003000000027";
const THIRD: &str = "2001000000012";

fn person(idnp_query: &str, subject: Option<&str>) -> mconnect_sdk::Call {
    get(
        &format!("/r1/asp-rsp/person-by-idnp?{idnp_query}"),
        SOCIAL_BASIS,
        SOCIAL_REASON,
        subject,
    )
}

/// The audit record behind a receipt.
fn record_of(bus: &Bus, outcome: &mconnect_sdk::CallOutcome) -> mconnect::audit::AuditRecord {
    let seq = outcome
        .receipt
        .as_ref()
        .unwrap()
        .audit_seq
        .expect("an audit seq");
    bus.sandbox
        .broker
        .broker
        .audit()
        .record(seq)
        .unwrap()
        .expect("the record exists")
        .0
}

fn exchanges_about(bus: &Bus, who: &str) -> Vec<String> {
    let audit = bus.sandbox.broker.broker.audit();
    audit.sync_index().unwrap();
    audit
        .query(&AuditQuery {
            subject: Some(who.to_string()),
            event: Some("exchange".into()),
            limit: 1000,
            ..AuditQuery::default()
        })
        .unwrap()
        .items
        .into_iter()
        .map(|e| e.record.exchange_id)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_subject_is_bound_to_the_data_and_every_person_is_audited() {
    assert!(mconnect::ids::is_valid_idnp(THIRD) && mconnect::ids::is_valid_idnp(OTHER));
    let bus = Bus::start().await;
    let cahul = bus.consumer("apl-cahul");

    // The header names someone else than the person asked about.
    let out = cahul
        .call(&person(&format!("idnp={PERSON}"), Some(OTHER)))
        .await
        .unwrap();
    assert_refused(&out, 403, "policy.subject_mismatch");
    assert!(!String::from_utf8_lossy(&out.body).contains("first_name"));
    let refused = record_of(&bus, &out);
    assert_eq!(
        refused.subjects,
        vec![OTHER.to_string(), PERSON.to_string()]
    );

    // Typed query parameters are checked before anything is forwarded.
    for (query, why) in [
        ("idnp=2000000000016", "bad control digit"),
        (&format!("idnp={PERSON}&idnp={OTHER}") as &str, "repeated"),
        (
            &format!("idnp={PERSON}&id%6Ep={OTHER}"),
            "repeated once decoded",
        ),
        (
            &format!("idnp={PERSON};idnp={OTHER}"),
            "semicolon separator",
        ),
        (&format!("idnp={PERSON}&IDNP={OTHER}"), "unknown parameter"),
        ("idnp=%zz", "bad escape"),
        ("", "missing"),
    ] {
        let out = cahul.call(&person(query, Some(PERSON))).await.unwrap();
        assert_refused(&out, 400, "request.malformed");
        let _ = why;
    }

    // The right person: accepted, and that person's history has it.
    let out = cahul
        .call(&person(&format!("idnp={PERSON}"), Some(PERSON)))
        .await
        .unwrap();
    assert_eq!(out.status, 200, "{}", String::from_utf8_lossy(&out.body));
    let accepted = record_of(&bus, &out);
    assert_eq!(accepted.subjects, vec![PERSON.to_string()]);
    assert!(exchanges_about(&bus, PERSON).contains(&accepted.exchange_id));
    assert!(!exchanges_about(&bus, OTHER).contains(&accepted.exchange_id));

    // A lookup of several people: each is a subject, each history finds it.
    let lookup = |body: &str, subject: Option<&str>| {
        let mut call = post(
            "/r1/asp-rsp/persons-lookup",
            body,
            SOCIAL_BASIS,
            SOCIAL_REASON,
        );
        call.subject = subject.map(str::to_string);
        call
    };
    let body = format!(r#"{{"idnps":["{PERSON}","{OTHER}","{THIRD}"]}}"#);
    let out = cahul.call(&lookup(&body, None)).await.unwrap();
    assert_eq!(out.status, 200, "{}", String::from_utf8_lossy(&out.body));
    let many = record_of(&bus, &out);
    assert_eq!(many.subjects, vec![PERSON, OTHER, THIRD]);
    for who in [PERSON, OTHER, THIRD] {
        assert!(
            exchanges_about(&bus, who).contains(&many.exchange_id),
            "{who}'s history misses the lookup"
        );
    }
    // With a header, it must be one of the people in the body.
    let out = cahul.call(&lookup(&body, Some(OTHER))).await.unwrap();
    assert_eq!(out.status, 200);
    let stranger = "2002000000019";
    assert!(mconnect::ids::is_valid_idnp(stranger));
    let out = cahul.call(&lookup(&body, Some(stranger))).await.unwrap();
    assert_refused(&out, 403, "policy.subject_mismatch");
    // A malformed id in the body, and a body whose member appears twice.
    let out = cahul
        .call(&lookup(r#"{"idnps":["2000000000016"]}"#, None))
        .await
        .unwrap();
    assert_refused(&out, 400, "request.malformed");
    let twice = format!(r#"{{"idnps":["{PERSON}"],"idnps":["{OTHER}"]}}"#);
    let out = cahul.call(&lookup(&twice, None)).await.unwrap();
    assert_refused(&out, 422, "schema.request_invalid");

    // The citizen's own history service finds the lookup too.
    let mcabinet = bus.consumer("mcabinet");
    let mut history = get(
        &format!("/r1/mconnect/access-history?subject={THIRD}"),
        "md-law-133-2011-art-13",
        "citizen-access-history",
        Some(THIRD),
    );
    history.calling_user = THIRD.into();
    let out = mcabinet.call(&history).await.unwrap();
    assert_eq!(out.status, 200, "{}", String::from_utf8_lossy(&out.body));
    assert!(
        String::from_utf8_lossy(&out.body).contains(&many.exchange_id)
            || String::from_utf8_lossy(&out.body).contains("persons-lookup"),
        "{}",
        String::from_utf8_lossy(&out.body)
    );
    bus.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_small_values_cannot_blow_up_memory() {
    let bus = Bus::start().await;
    let cahul = bus.consumer("apl-cahul");
    // 4 KiB is persons-lookup's own limit; the value budget refuses a body of
    // empty arrays long before the schema sees it, with the same code.
    let arrays = format!(r#"{{"idnps":[{}"{PERSON}"]}}"#, "[],".repeat(1300));
    let mut call = post(
        "/r1/asp-rsp/persons-lookup",
        &arrays,
        SOCIAL_BASIS,
        SOCIAL_REASON,
    );
    call.subject = None;
    let out = cahul.call(&call).await.unwrap();
    assert!(
        matches!(
            code(&out).as_str(),
            "schema.request_invalid" | "request.malformed"
        ),
        "{}",
        code(&out)
    );
    let deep = format!("{}{}", "[".repeat(100), "]".repeat(100));
    let out = cahul
        .call(&post(
            "/r1/asp-rsp/persons-lookup",
            &deep,
            SOCIAL_BASIS,
            SOCIAL_REASON,
        ))
        .await
        .unwrap();
    assert_refused(&out, 422, "schema.request_invalid");
    bus.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_error_answers_are_cut_to_problems_or_refused() {
    let bus = Bus::start().await;
    let cahul = bus.consumer("apl-cahul");
    let registry = bus.sandbox.broker.broker.registry().clone();
    let point = |url: String| {
        registry
            .set_endpoints("asp-rsp", vec![Endpoint { service: None, url }])
            .unwrap();
    };
    let call = person(&format!("idnp={PERSON}"), Some(PERSON));

    // A signed 404 carrying the whole record as JSON: refused, body dropped.
    let (_leaky, url) = support::spawn_register(
        &bus.pki(),
        "population",
        "asp-rsp",
        "ed25519",
        &["--misbehave", "leaky-error"],
    )
    .await;
    point(url);
    let out = cahul.call(&call).await.unwrap();
    assert_refused(&out, 502, "provider.bad_response");
    assert!(!String::from_utf8_lossy(&out.body).contains("first_name"));

    // A signed problem+json 404 with the record as an extra member: only the
    // problem members reach the consumer.
    let (_problem, url) = support::spawn_register(
        &bus.pki(),
        "population",
        "asp-rsp",
        "ed25519",
        &["--misbehave", "leaky-problem"],
    )
    .await;
    point(url);
    let out = cahul.call(&call).await.unwrap();
    assert_eq!(out.status, 404);
    assert!(out.receipt.is_ok());
    let problem: serde_json::Value = serde_json::from_slice(&out.body).unwrap();
    let mut members: Vec<&str> = problem
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    members.sort_unstable();
    assert_eq!(members, ["code", "detail", "status", "title", "type"]);
    assert_eq!(problem["code"], "person.archived");
    assert_eq!(
        out.headers.get("content-type").unwrap(),
        "application/problem+json"
    );

    // A text/plain 500 with a secret in it.
    let (_text, url) = support::spawn_register(
        &bus.pki(),
        "population",
        "asp-rsp",
        "ed25519",
        &["--misbehave", "text-error"],
    )
    .await;
    point(url);
    let out = cahul.call(&call).await.unwrap();
    assert_refused(&out, 502, "provider.bad_response");
    assert!(!String::from_utf8_lossy(&out.body).contains("hunter2"));

    // Garbage bytes over a good TLS session: 502, not 503.
    let url = garbage_provider(&bus).await;
    point(url);
    let out = cahul.call(&call).await.unwrap();
    assert_refused(&out, 502, "provider.bad_response");
    bus.stop().await;
}

/// A TLS server with the provider's own certificate that answers every
/// connection with bytes that are not HTTP.
async fn garbage_provider(bus: &Bus) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let pki = bus.pki();
    let read = |name: &str| std::fs::read_to_string(pki.join(name)).unwrap();
    let certs = mconnect_sdk::parse_certs(&read("asp-rsp.cert.pem")).unwrap();
    let key =
        <rustls_pki_types::PrivateKeyDer as rustls_pki_types::pem::PemObject>::from_pem_slice(
            read("asp-rsp.key.pem").as_bytes(),
        )
        .unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        // Bounded: the test makes one call (the pool may open two connections).
        for _ in 0..8 {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(tcp).await {
                    let mut buf = [0u8; 4096];
                    let _ = tls.read(&mut buf).await;
                    let _ = tls
                        .write_all(b"\x00\x01garbage that is not HTTP\r\n\r\n")
                        .await;
                    let _ = tls.shutdown().await;
                }
            });
        }
    });
    format!("https://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subpath_authority_and_digest_tricks_are_refused() {
    let bus = Bus::start().await;
    let cahul = bus.consumer("apl-cahul");
    for subpath in [
        "/..%2f..%2fadmin",
        "/%2e%2e/x",
        "/%252e%252e/x",
        "/..;/x",
        "/x%5c..%5cy",
        "/.",
    ] {
        let out = cahul
            .call(&person(&format!("idnp={PERSON}"), Some(PERSON)).with_path_suffix(subpath))
            .await
            .unwrap();
        assert_refused(&out, 400, "request.malformed");
    }

    // Signed for another authority, with a Host header that names it: the
    // broker checks the signature against its own public authority.
    let data_url = bus.sandbox.manifest.broker.data_url.clone();
    let other = data_url.replace("127.0.0.1", "registry.example.md");
    let req = cahul
        .build(&person(&format!("idnp={PERSON}"), Some(PERSON)))
        .unwrap();
    let (mut parts, body) = req.into_parts();
    let elsewhere = parts.uri.to_string().replace(&data_url, &other);
    assert_ne!(elsewhere, parts.uri.to_string());
    parts.headers.insert(
        http::header::HOST,
        HeaderValue::from_str(other.trim_start_matches("https://")).unwrap(),
    );
    resign(&bus, &mut parts, Some(&elsewhere));
    let out = cahul
        .send(http::Request::from_parts(parts, body))
        .await
        .unwrap();
    assert_refused(&out, 401, "signature.invalid");

    // Two Content-Digest lines, the second one wrong, both covered by a
    // valid signature: refused as malformed, not checked on the first alone.
    let req = cahul
        .build(&post(
            "/r1/asp-rsp/persons-lookup",
            &format!(r#"{{"idnps":["{PERSON}"]}}"#),
            SOCIAL_BASIS,
            SOCIAL_REASON,
        ))
        .unwrap();
    let (mut parts, body) = req.into_parts();
    parts.headers.append(
        "content-digest",
        HeaderValue::from_static("sha-256=:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=:"),
    );
    resign(&bus, &mut parts, None);
    let out = cahul
        .send(http::Request::from_parts(parts, body))
        .await
        .unwrap();
    assert_refused(&out, 400, "request.malformed");
    bus.stop().await;
}

/// Signs a request head again as apl-cahul, covering the headers it now has,
/// for its own URI or for `target` when given.
fn resign(bus: &Bus, parts: &mut http::request::Parts, target: Option<&str>) {
    let own = parts.uri.to_string();
    let method = parts.method.to_string();
    let created = mconnect::exchange::unix_now();
    support::sign_as(
        &bus.pki(),
        "apl-cahul",
        &method,
        target.unwrap_or(&own),
        &mut parts.headers,
        created,
        None,
    );
}

trait WithSuffix {
    fn with_path_suffix(self, suffix: &str) -> Self;
}

impl WithSuffix for mconnect_sdk::Call {
    /// Inserts a subpath between the service code and the query.
    fn with_path_suffix(mut self, suffix: &str) -> Self {
        let (path, query) = self.path.split_once('?').unwrap_or((&self.path, ""));
        self.path = format!("{path}{suffix}?{query}");
        self
    }
}
