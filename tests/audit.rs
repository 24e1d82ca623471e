//! The audit log against real processes: a broker killed with SIGKILL under
//! load loses no receipted exchange; a log that cannot be written refuses
//! exchanges (503 `audit.unavailable`); the admin endpoints of PROTOCOL.md
//! section 7 over real mTLS with legal-basis checks, each read audited; the
//! "who accessed my data" bus services (access-history and find-usage); and
//! `mconnect audit verify` catching a flipped byte.
//!
//! Every loop is bounded in count and time; everything listens on 127.0.0.1.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::{Method, StatusCode};
use mconnect::audit::merkle::leaf_hash;
use mconnect::audit::{
    Hash, SignedTreeHead, certificate_verifier, verify_consistency, verify_inclusion,
    verify_tree_head,
};
use mconnect_sdk::SandboxManifest;
use support::{Bus, assert_refused, code, get};

const PERSON: &str = "2000000000015";
const SOCIAL_BASIS: &str = "md-law-133-2008-art-8";
const SOCIAL_REASON: &str = "social-aid-eligibility";
const AUDITOR_BASIS: &str = "md-law-133-2011-art-27";
const AUDITOR_REASON: &str = "supervision-of-personal-data-processing";

fn person_call() -> mconnect_sdk::Call {
    get(
        &format!("/r1/asp-rsp/person-by-idnp?idnp={PERSON}"),
        SOCIAL_BASIS,
        SOCIAL_REASON,
        Some(PERSON),
    )
}

/// The admin API as one participant, sending a basis and reason.
struct Admin(mconnect::connect::client::AdminClient);

struct Answer {
    status: StatusCode,
    body: serde_json::Value,
    audit_seq: Option<u64>,
}

impl Admin {
    fn new(dir: &Path, admin_url: &str, participant: &str) -> Admin {
        Admin(support::admin_client(dir, admin_url, participant))
    }

    async fn get(&self, path: &str, basis: Option<&str>, reason: Option<&str>) -> Answer {
        let mut request = self.0.plain(Method::GET, path, None).unwrap();
        for (name, value) in [
            ("mconnect-call-basis", basis),
            ("mconnect-call-reason", reason),
        ] {
            if let Some(v) = value {
                request.headers_mut().insert(name, v.parse().unwrap());
            }
        }
        let answer = tokio::time::timeout(Duration::from_secs(20), self.0.send_full(request))
            .await
            .expect("admin API answers in time")
            .unwrap();
        Answer {
            status: answer.status,
            audit_seq: answer
                .header("mconnect-audit-seq")
                .and_then(|v| v.parse().ok()),
            body: answer.body,
        }
    }

    /// A read as the sandbox auditor (basis and reason of its grant).
    async fn audit(&self, path: &str) -> Answer {
        self.get(path, Some(AUDITOR_BASIS), Some(AUDITOR_REASON))
            .await
    }
}

fn hashes(value: &serde_json::Value) -> Vec<Hash> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            <Hash>::try_from(STANDARD.decode(h.as_str().unwrap()).unwrap().as_slice()).unwrap()
        })
        .collect()
}

fn sth_of(answer: &Answer) -> SignedTreeHead {
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    serde_json::from_value(answer.body.clone()).unwrap()
}

// ---------------------------------------------------------------------------
// (a) SIGKILL under load

fn mconnect_exe() -> PathBuf {
    support::mconnect_bin()
}

/// `mconnect sandbox` on `dir` as a child in its own process group, so the
/// whole group (broker and example registers) can be killed at once.
fn spawn_sandbox(dir: &Path) -> Child {
    let _ = std::fs::remove_file(dir.join("sandbox.json"));
    let repo = support::repo();
    Command::new(mconnect_exe())
        .arg("sandbox")
        .arg("--dir")
        .arg(dir)
        .args(["--data-port", "0", "--admin-port", "0"])
        .arg("--catalog")
        .arg(repo.join("catalog"))
        .arg("--policies")
        .arg(repo.join("policies"))
        .arg("--participants")
        .arg(repo.join("examples/sandbox/participants.json"))
        .arg("--examples-dir")
        .arg(support::examples_dir())
        .env("MCONNECT_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap()
}

async fn wait_for_manifest(dir: &Path, child: &mut Child) -> SandboxManifest {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(manifest) = SandboxManifest::read(dir) {
            return manifest;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the sandbox exited early: {status}");
        }
        assert!(
            Instant::now() < deadline,
            "sandbox.json did not appear in 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn signal_group(child: &Child, signal: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg("--")
        .arg(format!("-{}", child.id()))
        .status();
}

async fn wait_exit(child: &mut Child, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_receipted_exchange_survives_sigkill_and_the_log_verifies() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut child = spawn_sandbox(dir);
    let manifest = wait_for_manifest(dir, &mut child).await;
    let consumer = Arc::new(manifest.consumer(dir, "apl-cahul").unwrap());
    let calls: Vec<mconnect_sdk::Call> = manifest
        .tries
        .iter()
        .filter(|t| t.client == "apl-cahul")
        .map(|t| mconnect_sdk::Call {
            method: t.method.parse().unwrap(),
            path: t.path.clone(),
            body: t.body.as_ref().map(|b| Bytes::from(b.to_string())),
            calling_user: PERSON.into(),
            basis: t.basis.clone(),
            reason: t.reason.clone(),
            subject: t.subject.clone(),
            represented_party: None,
            request_id: None,
        })
        .collect();
    assert!(!calls.is_empty());
    let calls = Arc::new(calls);

    // Concurrent signed calls, every receipt kept; killed mid-load.
    let receipts: Arc<Mutex<Vec<(String, u64)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for worker in 0..12usize {
        let (consumer, calls, receipts, stop) = (
            consumer.clone(),
            calls.clone(),
            receipts.clone(),
            stop.clone(),
        );
        tasks.push(tokio::spawn(async move {
            for n in 0..5000usize {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let call = &calls[(worker + n) % calls.len()];
                let outcome =
                    tokio::time::timeout(Duration::from_secs(5), consumer.call(call)).await;
                let Ok(Ok(outcome)) = outcome else {
                    // The broker is gone (or going): nothing acknowledged here.
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    continue;
                };
                if let Ok(receipt) = &outcome.receipt
                    && let Some(seq) = receipt.audit_seq
                {
                    receipts
                        .lock()
                        .unwrap()
                        .push((receipt.exchange_id.clone(), seq));
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    signal_group(&child, "KILL");
    assert!(wait_exit(&mut child, Duration::from_secs(10)).await);
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(15), task).await;
    }
    let receipts = receipts.lock().unwrap().clone();
    assert!(
        receipts.len() >= 10,
        "only {} receipts before the kill",
        receipts.len()
    );

    // Restart on the same directory; every receipted exchange is at its seq.
    let mut child = spawn_sandbox(dir);
    let manifest = wait_for_manifest(dir, &mut child).await;
    let auditor = Admin::new(dir, &manifest.broker.admin_url, "cnpdcp-audit");
    let mut logged: HashMap<u64, String> = HashMap::new();
    let mut cursor: Option<String> = None;
    for _ in 0..200 {
        let mut path = "/v1/audit/records?client=apl-cahul&limit=1000".to_string();
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let page = auditor.audit(&path).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        for item in page.body["items"].as_array().unwrap() {
            logged.insert(
                item["seq"].as_u64().unwrap(),
                item["record"]["exchange_id"].as_str().unwrap().to_string(),
            );
        }
        cursor = page.body["next_cursor"].as_str().map(str::to_string);
        if cursor.is_none() {
            break;
        }
    }
    for (exchange_id, seq) in &receipts {
        assert_eq!(
            logged.get(seq),
            Some(exchange_id),
            "receipted exchange {exchange_id} (seq {seq}) is not in the log after the crash"
        );
    }
    signal_group(&child, "TERM");
    if !wait_exit(&mut child, Duration::from_secs(20)).await {
        signal_group(&child, "KILL");
        wait_exit(&mut child, Duration::from_secs(5)).await;
    }
    let verify = Command::new(mconnect_exe())
        .args(["audit", "verify", "--quiet", "--dir"])
        .arg(dir.join("audit"))
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "verify after the crash: {}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
}

// ---------------------------------------------------------------------------
// (b) fail closed

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwritable_log_refuses_exchanges_and_leaks_no_provider_data() {
    // A sandbox made once (PKI, registry), then a broker on it with tiny
    // segments so that a directory at the next segment's name breaks the log.
    let bus = Bus::start().await;
    let manifest = bus.sandbox.manifest.clone();
    let tmp = bus.stop().await;
    let dir = tmp.path();
    let (mut register, url) =
        support::spawn_register(&dir.join("pki"), "population", "asp-rsp", "ed25519", &[]).await;
    {
        let store = mconnect::store::RedbStore::open(&dir.join("state.redb")).unwrap();
        let anchors = mconnect::trust::TrustAnchors::from_pem(
            &std::fs::read_to_string(dir.join("pki/ca.cert.pem")).unwrap(),
        )
        .unwrap();
        let registry = mconnect::registry::Registry::open(Arc::new(store), anchors).unwrap();
        registry
            .set_endpoints(
                "asp-rsp",
                vec![mconnect::registry::Endpoint { service: None, url }],
            )
            .unwrap();
    }
    let mut config = mconnect::config::Config::load(&dir.join("broker.toml")).unwrap();
    config.audit.segment_bytes = 4096;
    config.audit.tree_head_interval = None;
    let running = mconnect::app::start(config).await.unwrap();
    let start = running.broker.audit().tree_size();
    // Placed after the log opened (recovery would refuse them): the writer's
    // next roll, whatever seq it falls on, hits a directory and fails.
    let segments = dir.join("audit/segments");
    // From start + 1: the first append may roll into a fresh segment (the
    // one it opened may already be past the tiny size), and must work.
    for seq in start + 1..start + 300 {
        let _ = std::fs::create_dir(segments.join(format!("{seq:020}.seg")));
    }
    let mut manifest = manifest;
    manifest.broker.data_url = format!("https://127.0.0.1:{}", running.data_addr().port());
    let consumer = manifest.consumer(dir, "apl-cahul").unwrap();
    let mut refused = None;
    let mut served = 0;
    for _ in 0..60 {
        let out = consumer.call(&person_call()).await.unwrap();
        if out.status == StatusCode::SERVICE_UNAVAILABLE {
            refused = Some(out);
            break;
        }
        if out.status == StatusCode::OK {
            served += 1;
        }
    }
    let refused = refused.expect("the log never failed");
    assert!(served >= 1, "the log worked before the roll");
    assert_refused(&refused, 503, "audit.unavailable");
    assert!(refused.receipt.as_ref().unwrap().audit_seq.is_none());
    let body = String::from_utf8_lossy(&refused.body);
    for secret in ["first_name", "last_name", "birth_date", "address"] {
        assert!(!body.contains(secret), "provider data leaked: {body}");
    }
    // Fail closed: the next exchange is refused too, before it costs the provider.
    let again = consumer.call(&person_call()).await.unwrap();
    assert_refused(&again, 503, "audit.unavailable");
    assert!(running.broker.audit().failure().is_some());
    running.shutdown().await;
    let _ = register.kill().await;
}

// ---------------------------------------------------------------------------
// (c) admin endpoints

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auditors_read_the_log_with_a_legal_basis_and_every_read_is_audited() {
    let bus = Bus::start().await;
    let dir = bus.dir.path().to_path_buf();
    let admin_url = bus.sandbox.manifest.broker.admin_url.clone();
    let auditor = Admin::new(&dir, &admin_url, "cnpdcp-audit");
    let operator = Admin::new(&dir, &admin_url, "age-operator");
    let consumer_only = Admin::new(&dir, &admin_url, "apl-cahul");
    let cahul = bus.consumer("apl-cahul");
    let out = cahul.call(&person_call()).await.unwrap();
    assert_eq!(out.status, StatusCode::OK);
    let seq = out.receipt.as_ref().unwrap().audit_seq.unwrap();
    let exchange_id = out.receipt.as_ref().unwrap().exchange_id.clone();

    let broker_pem = std::fs::read_to_string(dir.join("pki/broker.cert.pem")).unwrap();
    let verifier = certificate_verifier(&broker_pem).unwrap();

    // Tree head: signed by the broker certificate.
    let first = sth_of(&auditor.audit("/v1/audit/tree-head").await);
    assert!(first.tree_size > seq);
    verify_tree_head(&first, verifier.clone()).unwrap();
    assert_eq!(first.keyid, bus.sandbox.manifest.broker.keyid);

    // The record with its exact leaf bytes, and its inclusion proof.
    let record = auditor.audit(&format!("/v1/audit/records/{seq}")).await;
    assert_eq!(record.status, StatusCode::OK, "{}", record.body);
    assert_eq!(record.body["seq"], seq);
    assert_eq!(record.body["record"]["exchange_id"], exchange_id.as_str());
    let leaf = STANDARD
        .decode(record.body["leaf"].as_str().unwrap())
        .unwrap();
    let parsed: serde_json::Value = serde_json::from_slice(&leaf).unwrap();
    assert_eq!(parsed, record.body["record"]);
    let inclusion = auditor
        .audit(&format!(
            "/v1/audit/proof/inclusion?seq={seq}&tree_size={}",
            first.tree_size
        ))
        .await;
    assert_eq!(inclusion.status, StatusCode::OK, "{}", inclusion.body);
    assert_eq!(inclusion.body["leaf_index"], seq);
    assert_eq!(inclusion.body["tree_size"], first.tree_size);
    verify_inclusion(
        &leaf_hash(&leaf),
        seq,
        first.tree_size,
        &hashes(&inclusion.body["audit_path"]),
        &first.root_hash,
    )
    .unwrap();

    // The tree grew (by the reads themselves, too): consistency proof.
    cahul.call(&person_call()).await.unwrap();
    let second = sth_of(&auditor.audit("/v1/audit/tree-head").await);
    verify_tree_head(&second, verifier.clone()).unwrap();
    assert!(second.tree_size > first.tree_size);
    let consistency = auditor
        .audit(&format!(
            "/v1/audit/proof/consistency?first={}&second={}",
            first.tree_size, second.tree_size
        ))
        .await;
    assert_eq!(consistency.status, StatusCode::OK, "{}", consistency.body);
    assert_eq!(consistency.body["first"], first.tree_size);
    assert_eq!(consistency.body["second"], second.tree_size);
    verify_consistency(
        first.tree_size,
        second.tree_size,
        &first.root_hash,
        &second.root_hash,
        &hashes(&consistency.body["proof"]),
    )
    .unwrap();

    // Refusals: no basis or reason, a basis or reason not granted, the wrong
    // role, another participant's basis, a tree beyond the log.
    type Case<'a> = (&'a Admin, Option<&'a str>, Option<&'a str>, u16, &'a str);
    let cases: Vec<Case> = vec![
        (&auditor, None, None, 400, "request.malformed"),
        (
            &auditor,
            Some(AUDITOR_BASIS),
            None,
            400,
            "request.malformed",
        ),
        (
            &auditor,
            Some("md-law-142-2018-art-8"),
            Some(AUDITOR_REASON),
            403,
            "policy.basis_not_allowed",
        ),
        (
            &auditor,
            Some(AUDITOR_BASIS),
            Some("curiosity"),
            403,
            "policy.purpose_not_allowed",
        ),
        (
            &consumer_only,
            Some(AUDITOR_BASIS),
            Some(AUDITOR_REASON),
            403,
            "admin.forbidden",
        ),
        (
            &operator,
            Some(AUDITOR_BASIS),
            Some(AUDITOR_REASON),
            403,
            "policy.basis_not_allowed",
        ),
    ];
    for (who, basis, reason, status, expected) in &cases {
        let answer = who.get("/v1/audit/tree-head", *basis, *reason).await;
        assert_eq!(
            (
                answer.status.as_u16(),
                answer.body["code"].as_str().unwrap_or("")
            ),
            (*status, *expected),
            "{basis:?} {reason:?}: {}",
            answer.body
        );
    }
    let beyond = auditor
        .audit("/v1/audit/proof/inclusion?seq=0&tree_size=99999999")
        .await;
    assert_eq!(beyond.status, StatusCode::BAD_REQUEST, "{}", beyond.body);
    // The operator reads under its own grant (incident investigation).
    let op = operator
        .get(
            "/v1/audit/records?limit=5",
            Some("md-law-142-2018-art-8"),
            Some("incident-investigation"),
        )
        .await;
    assert_eq!(op.status, StatusCode::OK, "{}", op.body);
    assert!(op.audit_seq.is_some());

    // A search by subject finds the exchange, and is itself recorded with that subject.
    let by_subject = auditor
        .audit(&format!(
            "/v1/audit/records?subject={PERSON}&event=exchange&limit=10"
        ))
        .await;
    assert_eq!(by_subject.status, StatusCode::OK, "{}", by_subject.body);
    let items = by_subject.body["items"].as_array().unwrap();
    assert!(
        items
            .iter()
            .any(|i| i["record"]["exchange_id"] == exchange_id.as_str())
    );
    // Newest first.
    let seqs: Vec<u64> = items.iter().map(|i| i["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] > w[1]), "{seqs:?}");
    let search_seq = by_subject
        .audit_seq
        .expect("the read has its own audit seq");

    // Every read is in the log as an audit.read record: answered ones with
    // basis, purpose and grant; refused ones with their problem code.
    let reads = auditor
        .audit("/v1/audit/records?event=audit.read&limit=1000")
        .await;
    assert_eq!(reads.status, StatusCode::OK, "{}", reads.body);
    let reads = reads.body["items"].as_array().unwrap().clone();
    let by_seq: HashMap<u64, &serde_json::Value> = reads
        .iter()
        .map(|i| (i["seq"].as_u64().unwrap(), &i["record"]))
        .collect();
    let search = by_seq.get(&search_seq).expect("the search's own record");
    assert_eq!(search["consumer"], "cnpdcp-audit");
    assert_eq!(search["consumer_idno"], "1003600000028");
    assert_eq!(search["legal_basis"], AUDITOR_BASIS);
    assert_eq!(search["purpose"], AUDITOR_REASON);
    assert_eq!(search["subject"], PERSON);
    assert_eq!(search["service"], "mconnect/audit-log");
    assert_eq!(search["grant_id"], "cnpdcp-audit-supervision");
    assert_eq!(search["decision"], "accepted");
    let op_read = by_seq
        .get(&op.audit_seq.unwrap())
        .expect("the operator's read");
    assert_eq!(op_read["consumer"], "age-operator");
    assert_eq!(op_read["purpose"], "incident-investigation");
    let refused: Vec<&&serde_json::Value> = by_seq
        .values()
        .filter(|r| r["decision"] == "refused")
        .collect();
    assert!(
        refused.len() >= cases.len(),
        "{} refused reads recorded, {} made",
        refused.len(),
        cases.len()
    );
    assert!(
        refused
            .iter()
            .any(|r| r["consumer"] == "apl-cahul" && r["problem_code"] == "admin.forbidden")
    );
    // Answered reads by the auditor so far: 2 tree heads, 1 record, 2 proofs,
    // 1 out-of-range (refused), 1 search; all there.
    let accepted_by_auditor = by_seq
        .values()
        .filter(|r| r["consumer"] == "cnpdcp-audit" && r["decision"] == "accepted")
        .count();
    assert!(accepted_by_auditor >= 6, "{accepted_by_auditor}");

    // The OpenAPI document describes the endpoints.
    let doc = auditor.get("/v1/openapi.json", None, None).await;
    for path in [
        "/v1/audit/tree-head",
        "/v1/audit/records/{seq}",
        "/v1/audit/proof/inclusion",
        "/v1/audit/proof/consistency",
        "/v1/audit/records",
    ] {
        assert!(doc.body["paths"].get(path).is_some(), "{path}");
    }
    bus.stop().await;
}

// ---------------------------------------------------------------------------
// (d) who accessed my data

fn history_call(query: &str) -> mconnect_sdk::Call {
    get(
        &format!("/r1/mconnect/access-history?subject={PERSON}{query}"),
        "md-law-133-2011-art-13",
        "citizen-access-history",
        Some(PERSON),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_citizen_sees_who_accessed_their_data_except_confidential_consumers() {
    let bus = Bus::start().await;
    // apl-balti becomes a confidential consumer.
    let registry = bus.sandbox.broker.broker.registry().clone();
    let mut balti = registry
        .snapshot()
        .get("apl-balti")
        .unwrap()
        .participant
        .clone();
    balti.confidential = true;
    registry.upsert(balti).unwrap();

    let mut cahul_exchanges = Vec::new();
    for _ in 0..2 {
        let out = bus
            .consumer("apl-cahul")
            .call(&person_call())
            .await
            .unwrap();
        assert_eq!(out.status, StatusCode::OK);
        cahul_exchanges.push(out.receipt.unwrap().exchange_id);
    }
    let out = bus
        .consumer("apl-balti")
        .call(&person_call())
        .await
        .unwrap();
    assert_eq!(out.status, StatusCode::OK);
    let balti_exchange = out.receipt.unwrap().exchange_id;
    // A refused call is not an access.
    let refused = bus
        .consumer("apl-cahul")
        .call(&get(
            &format!("/r1/asp-rsp/person-by-idnp?idnp={PERSON}"),
            SOCIAL_BASIS,
            "curiosity",
            Some(PERSON),
        ))
        .await
        .unwrap();
    assert_refused(&refused, 403, "policy.purpose_not_allowed");

    let mcabinet = bus.consumer("mcabinet");
    let out = mcabinet.call(&history_call("")).await.unwrap();
    assert_eq!(
        out.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&out.body)
    );
    let receipt = out
        .receipt
        .as_ref()
        .expect("the broker's own answer is sealed too");
    assert!(receipt.audit_seq.is_some());
    let body: serde_json::Value = serde_json::from_slice(&out.body).unwrap();
    assert_eq!(body["subject"], PERSON);
    let items = body["items"].as_array().unwrap();
    let ids: Vec<&str> = items
        .iter()
        .map(|i| i["exchange_id"].as_str().unwrap())
        .collect();
    // Newest first, only the accepted exchanges, apl-balti left out.
    assert_eq!(
        ids,
        vec![cahul_exchanges[1].as_str(), cahul_exchanges[0].as_str()],
        "{body}"
    );
    assert!(!ids.contains(&balti_exchange.as_str()));
    let item = &items[0];
    assert_eq!(item["consumer_idno"], "1003603000063");
    assert_eq!(item["consumer_name"], "Primăria municipiului Cahul");
    assert_eq!(item["consumer_system"], "apl-cahul");
    assert_eq!(item["service"], "asp-rsp/person-by-idnp");
    assert_eq!(item["purpose"], SOCIAL_REASON);
    assert_eq!(item["legal_basis"], SOCIAL_BASIS);
    assert!(item["time"].as_str().unwrap().ends_with('Z'));
    assert!(body["next_cursor"].is_null());

    // Paged: one at a time, the cursor leads to the older one.
    let out = mcabinet.call(&history_call("&limit=1")).await.unwrap();
    let page: serde_json::Value = serde_json::from_slice(&out.body).unwrap();
    assert_eq!(
        page["items"][0]["exchange_id"],
        cahul_exchanges[1].as_str(),
        "{page}"
    );
    let cursor = page["next_cursor"].as_str().unwrap().to_string();
    let out = mcabinet
        .call(&history_call(&format!("&limit=1&cursor={cursor}")))
        .await
        .unwrap();
    let page: serde_json::Value = serde_json::from_slice(&out.body).unwrap();
    assert_eq!(
        page["items"][0]["exchange_id"],
        cahul_exchanges[0].as_str(),
        "{page}"
    );

    // A period before the exchanges holds nothing.
    let out = mcabinet
        .call(&history_call("&to=2025-01-01"))
        .await
        .unwrap();
    let page: serde_json::Value = serde_json::from_slice(&out.body).unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 0, "{page}");

    // Someone else's history under the citizen's header is refused.
    let mut other = history_call("");
    other.subject = Some("2000000000026".into());
    let out = mcabinet.call(&other).await.unwrap();
    assert_refused(&out, 403, "policy.subject_mismatch");

    // No grant for others; the audit log itself is only on the admin API.
    let out = bus
        .consumer("apl-cahul")
        .call(&history_call(""))
        .await
        .unwrap();
    assert_refused(&out, 403, "policy.denied");
    let log_call = get(
        "/r1/mconnect/audit-log",
        AUDITOR_BASIS,
        AUDITOR_REASON,
        None,
    );
    let out = bus.consumer("cnpdcp-audit").call(&log_call).await.unwrap();
    assert_refused(&out, 404, "catalog.unknown_service");
    assert!(code(&out).contains("catalog"));
    assert!(String::from_utf8_lossy(&out.body).contains("/v1/audit/records"));

    // The history reads are audited like any exchange.
    let audit = bus.sandbox.broker.broker.audit();
    audit.sync_index().unwrap();
    let page = audit
        .query(&mconnect::audit::AuditQuery {
            consumer: Some("mcabinet".into()),
            service: Some("mconnect/access-history".into()),
            ..Default::default()
        })
        .unwrap();
    assert!(page.items.len() >= 4, "{}", page.items.len());
    assert!(page.items.iter().all(|e| e.record.event == "exchange"));
    bus.stop().await;
}

fn usage_call(person: &str, query: &str) -> mconnect_sdk::Call {
    get(
        &format!("/r1/mconnect/find-usage?personCode={person}{query}"),
        "md-law-133-2011-art-13",
        "citizen-access-history",
        Some(person),
    )
}

/// Calls find-usage as MCabinet and returns its answer, which must be 200.
async fn find_usage(bus: &Bus, person: &str, query: &str) -> serde_json::Value {
    let out = bus
        .consumer("mcabinet")
        .call(&usage_call(person, query))
        .await
        .unwrap();
    assert_eq!(
        out.status,
        StatusCode::OK,
        "{query}: {}",
        String::from_utf8_lossy(&out.body)
    );
    assert!(out.receipt.is_ok(), "the broker's own answer is sealed too");
    serde_json::from_slice(&out.body).unwrap()
}

fn exchange_ids(answer: &serde_json::Value) -> Vec<String> {
    answer["usages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["exchangeId"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn find_usage_counts_and_pages_a_persons_accesses_in_the_data_tracker_shape() {
    const OFFICIAL: &str = "2001000000012";
    const OTHER: &str = "2003000000027";
    let bus = Bus::start().await;
    // apl-balti becomes a confidential consumer.
    let registry = bus.sandbox.broker.broker.registry().clone();
    let mut balti = registry
        .snapshot()
        .get("apl-balti")
        .unwrap()
        .participant
        .clone();
    balti.confidential = true;
    registry.upsert(balti).unwrap();

    // apl-cahul looks the person up four times, the second time for an
    // official (the others with the person as calling user); apl-balti once;
    // apl-cahul also looks up someone else, and is refused once.
    let mut cahul = Vec::new();
    for i in 0..4 {
        let mut call = person_call();
        if i == 1 {
            call.calling_user = OFFICIAL.into();
        }
        let out = bus.consumer("apl-cahul").call(&call).await.unwrap();
        assert_eq!(out.status, StatusCode::OK);
        cahul.push(out.receipt.unwrap().exchange_id);
    }
    let out = bus
        .consumer("apl-balti")
        .call(&person_call())
        .await
        .unwrap();
    assert_eq!(out.status, StatusCode::OK);
    let balti_exchange = out.receipt.unwrap().exchange_id;
    let out = bus
        .consumer("apl-cahul")
        .call(&get(
            &format!("/r1/asp-rsp/person-by-idnp?idnp={OTHER}"),
            SOCIAL_BASIS,
            SOCIAL_REASON,
            Some(OTHER),
        ))
        .await
        .unwrap();
    assert_eq!(out.status, StatusCode::OK);
    let other_exchange = out.receipt.unwrap().exchange_id;
    let refused = bus
        .consumer("apl-cahul")
        .call(&get(
            &format!("/r1/asp-rsp/person-by-idnp?idnp={PERSON}"),
            SOCIAL_BASIS,
            "curiosity",
            Some(PERSON),
        ))
        .await
        .unwrap();
    assert_refused(&refused, 403, "policy.purpose_not_allowed");
    let newest_first: Vec<String> = cahul.iter().rev().cloned().collect();

    // Everything: newest first, only apl-cahul's accepted lookups.
    let all = find_usage(&bus, PERSON, "").await;
    assert_eq!(all["personCode"], PERSON);
    assert_eq!(
        (&all["totalCount"], &all["offset"], &all["limit"]),
        (&4.into(), &0.into(), &50.into()),
        "{all}"
    );
    assert_eq!(exchange_ids(&all), newest_first, "{all}");
    assert!(!exchange_ids(&all).contains(&balti_exchange));
    assert!(!exchange_ids(&all).contains(&other_exchange));
    let rsp = registry
        .snapshot()
        .get("asp-rsp")
        .unwrap()
        .participant
        .clone();
    let rules = bus.sandbox.broker.broker.rules();
    let service = rules.catalog.service("asp-rsp", "person-by-idnp").unwrap();
    for usage in all["usages"].as_array().unwrap() {
        assert!(usage["logTime"].as_str().unwrap().ends_with('Z'), "{usage}");
        assert_eq!(usage["action"], "asp-rsp/person-by-idnp");
        assert_eq!(usage["actionName"]["ro"], service.name.ro.as_str());
        assert_eq!(usage["actionName"]["ru"], service.name.ru.as_str());
        assert_eq!(usage["actionName"]["en"], service.name.en.as_str());
        assert_eq!(usage["receiverCode"], "1003603000063");
        assert_eq!(usage["receiverName"], "Primăria municipiului Cahul");
        assert_eq!(usage["receiverSystem"], "apl-cahul");
        assert_eq!(usage["senderCode"], rsp.organisation.idno.as_str());
        assert_eq!(usage["senderName"], rsp.organisation.name.as_str());
        assert_eq!(usage["senderSystem"], "asp-rsp");
        assert_eq!(usage["purpose"], SOCIAL_REASON);
        assert_eq!(usage["legalBasis"], SOCIAL_BASIS);
    }
    // The citizen learns the role, never the official's personal number.
    let roles: Vec<&str> = all["usages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["userRole"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["self", "self", "official", "self"]);
    assert!(!all.to_string().contains(OFFICIAL), "{all}");

    // Offset and limit cover every usage exactly once, with one total.
    for limit in 1..=3 {
        let mut seen = Vec::new();
        for offset in (0..6).step_by(limit) {
            let page = find_usage(&bus, PERSON, &format!("&offset={offset}&limit={limit}")).await;
            assert_eq!(
                (&page["totalCount"], &page["offset"], &page["limit"]),
                (&4.into(), &offset.into(), &limit.into()),
                "{page}"
            );
            seen.extend(exchange_ids(&page));
        }
        assert_eq!(seen, newest_first, "limit {limit}");
    }

    // The period: dateFrom inclusive, dateTo exclusive, dates or times.
    let newest_time = all["usages"][0]["logTime"].as_str().unwrap().to_string();
    let before = find_usage(&bus, PERSON, "&dateTo=2025-01-01").await;
    assert_eq!(
        (&before["totalCount"], exchange_ids(&before).len()),
        (&0.into(), 0)
    );
    let since = find_usage(&bus, PERSON, &format!("&dateFrom={newest_time}")).await;
    assert_eq!(exchange_ids(&since), newest_first[..1].to_vec(), "{since}");
    let until = find_usage(
        &bus,
        PERSON,
        &format!("&dateFrom=2025-01-01&dateTo={newest_time}"),
    )
    .await;
    assert_eq!(until["totalCount"], 3, "{until}");
    assert_eq!(exchange_ids(&until), newest_first[1..].to_vec());

    // Another person's usage holds only their own lookup.
    let other = find_usage(&bus, OTHER, "").await;
    assert_eq!(other["totalCount"], 1, "{other}");
    assert_eq!(exchange_ids(&other), [other_exchange]);

    // The readings are audited with the person as subject, and are not
    // usages themselves: the total has not moved.
    let again = find_usage(&bus, PERSON, "").await;
    assert_eq!(again["totalCount"], 4, "{again}");
    let audit = bus.sandbox.broker.broker.audit();
    audit.sync_index().unwrap();
    let reads = audit
        .query(&mconnect::audit::AuditQuery {
            consumer: Some("mcabinet".into()),
            service: Some("mconnect/find-usage".into()),
            limit: 1000,
            ..Default::default()
        })
        .unwrap();
    assert!(reads.items.len() >= 12, "{}", reads.items.len());
    let latest = &reads.items[0].record;
    assert_eq!(latest.event, "exchange");
    assert_eq!(latest.subject.as_deref(), Some(PERSON));
    assert!(latest.subjects.iter().any(|s| s == PERSON));
    assert!(
        reads
            .items
            .iter()
            .all(|e| !exchange_ids(&again).contains(&e.record.exchange_id))
    );

    // Refusals. The header must be the person asked about, which binding
    // checks before the service runs (403); the rest are malformed calls.
    let mcabinet = bus.consumer("mcabinet");
    let mut elsewhere = usage_call(PERSON, "");
    elsewhere.subject = Some(OTHER.into());
    let out = mcabinet.call(&elsewhere).await.unwrap();
    assert_refused(&out, 403, "policy.subject_mismatch");
    let mut anonymous = usage_call(PERSON, "");
    anonymous.subject = None;
    let out = mcabinet.call(&anonymous).await.unwrap();
    assert_refused(&out, 403, "policy.subject_required");
    for query in [
        "&dateFrom=yesterday",
        "&dateTo=2025-13-01",
        "&dateFrom=2025-02-01&dateTo=2025-01-01",
        "&limit=0",
        "&limit=201",
        "&offset=-1",
        "&offset=x",
        "&cursor=1-1",
    ] {
        let out = mcabinet.call(&usage_call(PERSON, query)).await.unwrap();
        assert_eq!(code(&out), "request.malformed", "{query}");
        assert_refused(&out, 400, "request.malformed");
    }
    let out = mcabinet
        .call(&get(
            "/r1/mconnect/find-usage?personCode=123",
            "md-law-133-2011-art-13",
            "citizen-access-history",
            Some("123"),
        ))
        .await
        .unwrap();
    assert_eq!(
        out.status.as_u16(),
        400,
        "{}",
        String::from_utf8_lossy(&out.body)
    );
    // Only grant holders read usage.
    let out = bus
        .consumer("apl-cahul")
        .call(&usage_call(PERSON, ""))
        .await
        .unwrap();
    assert_refused(&out, 403, "policy.denied");
    bus.stop().await;
}

// ---------------------------------------------------------------------------
// (e) a flipped byte

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_names_the_record_a_flipped_byte_hits_and_exits_1() {
    let bus = Bus::start().await;
    for _ in 0..3 {
        let out = bus
            .consumer("apl-cahul")
            .call(&person_call())
            .await
            .unwrap();
        assert_eq!(out.status, StatusCode::OK);
    }
    // The sandbox made its try-list fixtures through the bus before these.
    let records = bus.sandbox.broker.broker.audit().tree_size();
    let tmp = bus.stop().await;
    let dir = tmp.path();
    let verify = |log: &Path| {
        Command::new(mconnect_exe())
            .args(["audit", "verify", "--quiet", "--dir"])
            .arg(log)
            .arg("--cert")
            .arg(dir.join("pki/broker.cert.pem"))
            .output()
            .unwrap()
    };
    let clean = verify(&dir.join("audit"));
    let text = String::from_utf8_lossy(&clean.stdout);
    assert!(clean.status.success(), "{text}");
    assert!(
        text.contains(&format!("records checked : {records}")),
        "{text}"
    );

    // A copy with one byte flipped inside record 1's leaf.
    let copy = tempfile::tempdir().unwrap();
    std::fs::create_dir(copy.path().join("segments")).unwrap();
    for entry in std::fs::read_dir(dir.join("audit/segments")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(
            entry.path(),
            copy.path().join("segments").join(entry.file_name()),
        )
        .unwrap();
    }
    std::fs::copy(
        dir.join("audit/tree-heads.jsonl"),
        copy.path().join("tree-heads.jsonl"),
    )
    .unwrap();
    let segment = copy.path().join("segments/00000000000000000000.seg");
    let mut bytes = std::fs::read(&segment).unwrap();
    // Header 20 bytes, then frames of `len u32 | crc u32 | seq u64 | leaf`.
    let first_len = u32::from_le_bytes(bytes[20..24].try_into().unwrap()) as usize;
    let second = 20 + 16 + first_len;
    let target = second + 16 + 40;
    bytes[target] ^= 0x01;
    std::fs::write(&segment, &bytes).unwrap();
    let broken = verify(copy.path());
    let text = String::from_utf8_lossy(&broken.stdout);
    assert_eq!(broken.status.code(), Some(1), "{text}");
    assert!(text.contains("record 1"), "{text}");
}
