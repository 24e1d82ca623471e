//! Signature benchmarks: the RFC 9421 and RFC 9530 work of one exchange, per
//! algorithm, as the broker and the SDK do it.
//!
//! - `signature/sign/{alg}` and `signature/verify/{alg}`: the bare
//!   `SigningKey::sign` / `VerifyingKey::verify` over a 300-byte signature
//!   base (the first 300 bytes of the base of the request below);
//! - `httpsig/sign-request/{alg}`: `mconnect_sdk::sign_request` of a realistic
//!   consumer call (POST `/r1/asp-rsp/persons-lookup` with a 1 KB JSON body
//!   and the `MConnect-*` headers of PROTOCOL.md section 2, subject
//!   included), which computes the Content-Digest, builds the base, signs and
//!   attaches the two headers;
//! - `httpsig/verify-request/{alg}`: the broker's step 5 on that request,
//!   `exchange::verify::verify_request` (parse Signature-Input and Signature,
//!   keyid lookup, created window, required components, base, signature,
//!   then the body against its Content-Digest);
//! - `httpsig/signature-base`: the base alone, the algorithm-independent part;
//! - `digest/sha-256/{1k,32k}` and `digest/verify/{1k,32k}`: computing and
//!   checking a Content-Digest for the two payload sizes the load harness uses.
//!
//! Keys come from the development PKI (`mconnect::pki`), so they are the
//! kinds the sandbox issues: Ed25519, P-256 and RSA-2048 (which signs both
//! RSA algorithms). Figures are recorded in `benches/README.md`.
//!
//! Run: `cargo bench --bench signature -- --warm-up-time 1 --measurement-time 2`.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue};
use mconnect::crypto::{Algorithm, VerifyingKey};
use mconnect::exchange::call::headers;
use mconnect::exchange::verify::{SignedRequest, verify_request};
use mconnect::httpsig::digest::{content_digest_header, verify_content_digest};
use mconnect::httpsig::{self, MessageView, RequestView};
use mconnect::pki::{DevCa, KeyType};
use mconnect::registry::{
    Organisation, Participant, ParticipantEntry, Role, registered_certificate,
};
use mconnect_sdk::{self, Credentials};

const METHOD: &str = "POST";
const TARGET_URI: &str = "https://broker.mconnect.gov.md:8443/r1/asp-rsp/persons-lookup";
const CONSUMER: &str = "apl-cahul";
/// Bytes of signature base the raw sign/verify benches sign.
const RAW_BASE_LEN: usize = 300;
/// The broker's accepted `created` skew (PROTOCOL.md section 2).
const SKEW_SECS: i64 = 300;

/// A consumer's credentials and the broker's view of the same participant
/// (its registered certificate's key), for one algorithm.
struct Signer {
    alg: Algorithm,
    credentials: Credentials,
    participant: ParticipantEntry,
    verifying_key: VerifyingKey,
}

fn signers() -> Vec<Signer> {
    let ca = DevCa::generate("MConnect bench CA").unwrap();
    let issue = |key_type| ca.issue(CONSUMER, "Primăria Cahul", key_type).unwrap();
    let ed25519 = issue(KeyType::Ed25519);
    let p256 = issue(KeyType::EcdsaP256);
    let rsa = issue(KeyType::Rsa2048);
    [
        (Algorithm::Ed25519, &ed25519),
        (Algorithm::EcdsaP256Sha256, &p256),
        (Algorithm::RsaPssSha512, &rsa),
        (Algorithm::RsaV15Sha256, &rsa),
    ]
    .into_iter()
    .map(|(alg, cert)| {
        let credentials = Credentials::from_pem(
            CONSUMER,
            &cert.cert_pem,
            &cert.key_pem,
            ca.cert_pem(),
            Some(alg),
        )
        .unwrap();
        let verifying_key = VerifyingKey::from_certificate_der(&cert.cert_der).unwrap();
        let anchors = mconnect::trust::TrustAnchors::from_pem(ca.cert_pem()).unwrap();
        let participant = ParticipantEntry::new(
            Participant {
                id: CONSUMER.to_string(),
                organisation: Organisation {
                    idno: "1007601000114".to_string(),
                    name: "Primăria municipiului Cahul".to_string(),
                },
                roles: vec![Role::Consumer],
                certificates: vec![registered_certificate(&cert.cert_pem).unwrap()],
                endpoints: Vec::new(),
                confidential: false,
            },
            &anchors,
            mconnect::exchange::unix_now(),
        )
        .unwrap();
        Signer {
            alg,
            credentials,
            participant,
            verifying_key,
        }
    })
    .collect()
}

/// A JSON body of about `size` bytes: a `persons-lookup` request padded with
/// IDNPs, the shape the large load payload has.
fn body(size: usize) -> Vec<u8> {
    let mut idnps = Vec::new();
    let mut i = 0u64;
    loop {
        let candidate = serde_json::to_vec(&serde_json::json!({ "idnps": idnps })).unwrap();
        if candidate.len() >= size {
            return candidate;
        }
        idnps.push(format!("{:013}", 2_000_000_000_000u64 + i * 7919));
        i += 1;
    }
}

/// The unsigned headers of a consumer call (PROTOCOL.md section 2).
fn call_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    for (name, value) in [
        ("host", "broker.mconnect.gov.md:8443"),
        ("content-type", "application/json"),
        (headers::CLIENT, CONSUMER),
        (headers::CALLING_USER, "2000000000015"),
        (headers::CALL_BASIS, "md-law-133-2008-art-8"),
        (headers::CALL_REASON, "social-aid-eligibility"),
        (headers::REQUEST_ID, "5f0c6a1e-8d3b-4c1a-9f7e-0123456789ab"),
        (headers::SUBJECT, "2003000000027"),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    h
}

/// A signed call, as it reaches the broker.
fn signed_call(signer: &Signer, body: &[u8]) -> HeaderMap {
    let mut h = call_headers();
    mconnect_sdk::sign_request(&signer.credentials, METHOD, TARGET_URI, &mut h, body).unwrap();
    h
}

fn view(h: &HeaderMap) -> MessageView<'_> {
    MessageView::Request(RequestView {
        method: METHOD,
        target_uri: TARGET_URI,
        headers: h,
    })
}

fn bench_raw(c: &mut Criterion) {
    let signers = signers();
    let body = body(1024);
    // A real base, cut to the size the brief of this bench names; the
    // public-key operation dominates, so a few bytes more or less do not
    // show.
    let signed = signed_call(&signers[0], &body);
    let parsed = httpsig::parse_signature(&signed, "mconnect").unwrap();
    let base = httpsig::signature_base(&view(&signed), &parsed.params).unwrap();
    assert!(base.len() >= RAW_BASE_LEN, "base is {} bytes", base.len());
    let message = &base.as_bytes()[..RAW_BASE_LEN];

    let mut group = c.benchmark_group("signature");
    for signer in &signers {
        let key = &signer.credentials.key;
        group.bench_function(format!("sign/{}", signer.alg), |b| {
            b.iter(|| key.sign(black_box(message)).unwrap())
        });
        let signature = key.sign(message).unwrap();
        signer
            .verifying_key
            .verify(signer.alg, message, &signature)
            .unwrap();
        group.bench_function(format!("verify/{}", signer.alg), |b| {
            b.iter(|| {
                signer
                    .verifying_key
                    .verify(signer.alg, black_box(message), black_box(&signature))
                    .is_ok()
            })
        });
    }
    group.finish();
}

fn bench_request(c: &mut Criterion) {
    let signers = signers();
    let body = body(1024);
    let mut group = c.benchmark_group("httpsig");
    {
        let signed = signed_call(&signers[0], &body);
        let parsed = httpsig::parse_signature(&signed, "mconnect").unwrap();
        group.bench_function("signature-base", |b| {
            b.iter(|| httpsig::signature_base(&view(black_box(&signed)), &parsed.params).unwrap())
        });
    }
    for signer in &signers {
        // The header map is cloned outside the timing: a caller builds it
        // anyway.
        let unsigned = call_headers();
        group.bench_function(format!("sign-request/{}", signer.alg), |b| {
            b.iter_batched(
                || unsigned.clone(),
                |mut h| {
                    mconnect_sdk::sign_request(
                        &signer.credentials,
                        METHOD,
                        TARGET_URI,
                        &mut h,
                        &body,
                    )
                    .unwrap();
                    h
                },
                BatchSize::SmallInput,
            )
        });
        // Signed now, so `created` stays inside the broker's window for the
        // whole measurement.
        let signed = signed_call(signer, &body);
        let request = SignedRequest {
            method: METHOD,
            target_uri: TARGET_URI,
            headers: &signed,
            body: &body,
        };
        let now = mconnect::exchange::unix_now();
        verify_request(&request, &signer.participant, now, SKEW_SECS).unwrap();
        group.bench_function(format!("verify-request/{}", signer.alg), |b| {
            b.iter(|| {
                verify_request(
                    black_box(&request),
                    &signer.participant,
                    mconnect::exchange::unix_now(),
                    SKEW_SECS,
                )
                .unwrap()
            })
        });
    }
    group.finish();
}

fn bench_digest(c: &mut Criterion) {
    let mut group = c.benchmark_group("digest");
    for (name, size) in [("1k", 1024), ("32k", 32 * 1024)] {
        let body = body(size);
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_function(format!("sha-256/{name}"), |b| {
            b.iter(|| content_digest_header(black_box(&body)))
        });
        let header = content_digest_header(&body);
        group.bench_function(format!("verify/{name}"), |b| {
            b.iter(|| verify_content_digest(black_box(&header), black_box(&body)).is_ok())
        });
    }
    group.finish();
}

criterion_group!(benches, bench_raw, bench_request, bench_digest);
criterion_main!(benches);
