//! The audit disk, full for real: the sandbox's audit directory is a small
//! tmpfs that the test fills (this needs root, as CI runs it; without it the
//! test fails and says so). Proves issue 11 items 3 and 8 through the real
//! broker:
//!
//! - a flood of unsigned requests from one client costs a bounded number of
//!   audit records whose counts add up to every refusal, and another client's
//!   calls pass meanwhile;
//! - below the free-space watermark exchanges are refused 503 while
//!   participant reads and audit reads on the admin API keep working;
//! - with the disk full (the log failed closed on a real ENOSPC) an endpoint
//!   change, a connection-request transition, a submission and a reload are
//!   refused 503 `audit.unavailable` and change nothing (read back);
//! - once the filler is deleted the log reopens by itself, exchanges and
//!   changes succeed again without a restart, and the whole log verifies.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use mconnect::connect::client::AdminClient;
use mconnect_sdk::{CallOutcome, Consumer};
use serde_json::{Value, json};

const FLOOD_CLIENT: &str = "apl-cahul";
const FLOOD_REQUESTS: usize = 5_000;
const FLOOD_DEADLINE: Duration = Duration::from_secs(20);

/// A tmpfs mounted on a directory for the test's lifetime.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output();
        match out {
            Ok(o) if o.status.success() => Tmpfs {
                dir: dir.to_path_buf(),
            },
            Ok(o) => panic!(
                "cannot mount a tmpfs on {} to fill the audit disk for real: {}; \
                 this test needs root (CI runs it as root)",
                dir.display(),
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            Err(e) => panic!("cannot run mount(8) to mount a tmpfs: {e}; this test needs root"),
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy, so a file still open somewhere does not keep the mount.
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.dir)
            .status();
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Free bytes of the filesystem holding `dir`.
fn free_bytes(dir: &Path) -> u64 {
    let st = rustix::fs::statvfs(dir).unwrap();
    st.f_bavail * st.f_frsize
}

/// A GET from the sandbox's `try` list by `client`, which the shipped
/// policies allow.
fn allowed_call(manifest: &mconnect_sdk::SandboxManifest, client: &str) -> mconnect_sdk::Call {
    let t = manifest
        .tries
        .iter()
        .find(|t| t.client == client && t.method == "GET")
        .expect("a GET in the try list");
    support::get(&t.path, &t.basis, &t.reason, t.subject.as_deref())
}

async fn read(client: &AdminClient, path: &str) -> (StatusCode, Value) {
    let request = client.plain(Method::GET, path, None).unwrap();
    client.send(request).await.unwrap()
}

/// An audit read on the admin API as the sandbox's auditor.
async fn audit_read(
    client: &AdminClient,
    auditor: &(String, String),
    path: &str,
) -> (StatusCode, Value) {
    let mut request = client.plain(Method::GET, path, None).unwrap();
    request
        .headers_mut()
        .insert("mconnect-call-basis", auditor.0.parse().unwrap());
    request
        .headers_mut()
        .insert("mconnect-call-reason", auditor.1.parse().unwrap());
    client.send(request).await.unwrap()
}

fn seq_of(outcome: &CallOutcome) -> Option<&str> {
    outcome
        .headers
        .get("mconnect-audit-seq")
        .and_then(|v| v.to_str().ok())
}

/// An unsigned request: identified by its certificate, refused for the
/// missing signature.
fn unsigned(data_url: &str) -> Request<Full<Bytes>> {
    Request::builder()
        .method(Method::GET)
        .uri(format!(
            "{data_url}/r1/asp-rsp/person-by-idnp?idnp=2000000000015"
        ))
        .header("mconnect-client", FLOOD_CLIENT)
        .header("mconnect-calling-user", "2000000000015")
        .header("mconnect-call-basis", "x")
        .header("mconnect-call-reason", "y")
        .header("mconnect-request-id", uuid::Uuid::new_v4().to_string())
        .body(Full::new(Bytes::new()))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_audit_disk_changes_nothing_stops_new_work_and_heals_without_restart() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("sandbox");
    let audit_dir = dir.join("audit");
    let tmpfs = Tmpfs::mount(&audit_dir, "16m");
    // Own copies of catalog and policies, so a reload has something to change.
    let rules = root.path().join("rules");
    copy_dir(&support::repo().join("catalog"), &rules.join("catalog"));
    copy_dir(&support::repo().join("policies"), &rules.join("policies"));
    let mut args = support::args(&dir);
    args.catalog = Some(rules.join("catalog"));
    args.policies = Some(rules.join("policies"));
    let sandbox = mconnect_cli::sandbox::start(&args)
        .await
        .expect("sandbox starts");
    let manifest = &sandbox.manifest;
    let broker = sandbox.broker.broker.clone();
    let audit = broker.audit().clone();
    let admin = |id: &str| support::admin_client(&dir, &manifest.broker.admin_url, id);
    // The well-behaved client: its first allowed GET must pass on a fresh bus.
    let good_client = "apl-balti";
    let good = manifest.consumer(&dir, good_client).unwrap();
    let call = allowed_call(manifest, good_client);
    let auditor = admin(&manifest.auditor.id);
    let auditor_basis = (
        manifest.auditor.basis.clone(),
        manifest.auditor.reason.clone(),
    );
    let operator = admin("age-operator");
    let asp_rsp = admin("asp-rsp");
    let ungheni = admin("apl-ungheni");

    let first = good.call(&call).await.unwrap();
    assert_eq!(first.status, StatusCode::OK, "{:?}", first.body);

    // ---- Item 3: an invalid change is audited as refused, changes nothing. ----
    let (_, before) = read(&operator, "/v1/participants/asp-rsp").await;
    let size = audit.tree_size();
    let put = asp_rsp
        .plain(
            Method::PUT,
            "/v1/participants/asp-rsp/endpoints",
            Some(&json!([{"url": "ftp://nowhere"}])),
        )
        .unwrap();
    let (status, problem) = asp_rsp.send(put).await.unwrap();
    assert_eq!(
        (status.as_u16(), problem["code"].as_str()),
        (400, Some("admin.invalid")),
        "{problem}"
    );
    let (record, _) = audit.record(size).unwrap().unwrap();
    assert_eq!(
        (
            record.event.as_str(),
            record.decision,
            record.problem_code.as_deref()
        ),
        (
            "admin.change",
            mconnect::audit::Decision::Refused,
            Some("admin.invalid")
        )
    );
    let (_, after) = read(&operator, "/v1/participants/asp-rsp").await;
    assert_eq!(after["endpoints"], before["endpoints"]);

    // ---- Item 8: a flood of unsigned requests from one client. ----
    let flood: Arc<Consumer> = Arc::new(manifest.consumer(&dir, FLOOD_CLIENT).unwrap());
    let before_flood = audit.tree_size();
    let started = Instant::now();
    let sent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..8 {
        let (flood, sent, data_url) = (
            flood.clone(),
            sent.clone(),
            manifest.broker.data_url.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut statuses = Vec::new();
            while started.elapsed() < FLOOD_DEADLINE {
                if sent.fetch_add(1, std::sync::atomic::Ordering::SeqCst) >= FLOOD_REQUESTS {
                    sent.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                    break;
                }
                let out = flood.send(unsigned(&data_url)).await.unwrap();
                // Over the budget or not, every refusal is a signed answer.
                assert!(out.receipt.is_ok(), "{:?}", out.receipt);
                statuses.push((out.status, support::code(&out), seq_of(&out).is_some()));
            }
            statuses
        }));
    }
    // Another client is served meanwhile.
    for _ in 0..5 {
        let out = good.call(&call).await.unwrap();
        assert_eq!(out.status, StatusCode::OK, "{:?}", out.body);
        assert!(seq_of(&out).is_some());
    }
    let mut refused = 0usize;
    let mut without_seq = 0usize;
    for w in workers {
        for (status, code, has_seq) in w.await.unwrap() {
            assert_eq!((status.as_u16(), code.as_str()), (401, "signature.missing"));
            refused += 1;
            without_seq += usize::from(!has_seq);
        }
    }
    let flood_secs = started.elapsed().as_secs_f64();
    assert_eq!(refused, sent.load(std::sync::atomic::Ordering::SeqCst));
    assert!(
        refused >= 1_000,
        "the flood sent only {refused} requests in 20 s"
    );
    // Every counted refusal reaches the log (aggregates are written once their
    // second is over).
    let deadline = Instant::now() + Duration::from_secs(10);
    while broker.refusals().pending_count() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(broker.refusals().pending_count(), 0);
    let (mut records, mut counted, mut aggregates, mut bytes) = (0u64, 0u64, 0u64, 0usize);
    for seq in before_flood..audit.tree_size() {
        let (record, leaf) = audit.record(seq).unwrap().unwrap();
        if record.consumer.as_deref() != Some(FLOOD_CLIENT) {
            continue;
        }
        records += 1;
        bytes += leaf.len();
        assert_eq!(record.problem_code.as_deref(), Some("signature.missing"));
        match record.event.as_str() {
            "exchange" => counted += 1,
            "exchange.refusals" => {
                aggregates += 1;
                counted += record.refusal_count.unwrap();
            }
            other => panic!("unexpected event {other}"),
        }
    }
    println!(
        "flood: {refused} refusals in {flood_secs:.1} s, {records} audit records ({aggregates} aggregates, {bytes} leaf bytes), {without_seq} answers without seq"
    );
    assert_eq!(
        counted, refused as u64,
        "the counts must add up to every refusal"
    );
    // Budget: burst 50 + 20/s one by one, plus one aggregate per second.
    let bound = 50 + 21 * (flood_secs.ceil() as u64 + 2);
    assert!(
        records <= bound,
        "{records} records for {refused} refusals (bound {bound})"
    );
    assert_eq!(without_seq as u64, counted - (records - aggregates));
    assert!(
        aggregates > 0 && without_seq > 0,
        "the flood must exceed the budget"
    );

    // ---- Item 8: below the watermark no new work, reads go on. ----
    let watermark = audit.space().watermark_bytes;
    assert!(
        watermark > 0 && watermark < 16 * 1024 * 1024,
        "watermark {watermark}"
    );
    let filler_path = audit_dir.join("filler");
    let mut filler = std::fs::File::create(&filler_path).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    let target = free_bytes(&audit_dir).saturating_sub(watermark / 2);
    let mut written = 0u64;
    while written + chunk.len() as u64 <= target {
        filler.write_all(&chunk).unwrap();
        written += chunk.len() as u64;
    }
    filler.sync_all().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !audit.space().below_watermark && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(audit.space().below_watermark, "{:?}", audit.space());
    let out = good.call(&call).await.unwrap();
    support::assert_refused(&out, 503, "audit.unavailable");
    assert!(seq_of(&out).is_none());
    let (status, list) = read(&operator, "/v1/participants").await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let (status, head) = audit_read(&auditor, &auditor_basis, "/v1/audit/tree-head").await;
    assert_eq!(status, StatusCode::OK, "{head}");
    let (status, page) = audit_read(
        &auditor,
        &auditor_basis,
        "/v1/audit/records?client=apl-balti&limit=5",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(audit.failure().is_none(), "the watermark is not a failure");
    // Readiness says so: a load balancer sends no traffic here meanwhile.
    let (status, ready) = support::plain_get(sandbox.broker.ops_addr(), "/readyz").await;
    assert_eq!(status, 503, "{ready}");
    assert!(ready.contains("watermark"), "{ready}");

    // A connection request to transition later, filed while there is room.
    let application: Value = serde_json::from_slice(
        &std::fs::read(support::repo().join("examples/connect/apl-ungheni-pensions.json")).unwrap(),
    )
    .unwrap();
    let submission = || {
        ungheni
            .signed(
                Method::POST,
                "/v1/connection-requests",
                Bytes::from(serde_json::to_vec(&application).unwrap()),
                "2000000000015",
            )
            .unwrap()
    };
    let (status, created) = ungheni.send(submission()).await.unwrap();
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let request_id = created["id"].as_str().unwrap().to_string();

    // ---- Item 3: the disk full for real; the log fails closed. ----
    loop {
        match filler.write_all(&chunk[..4096]) {
            Ok(()) => {}
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(28), "{e}");
                break;
            }
        }
    }
    let _ = filler.sync_all();
    // Audit reads use the reserve; the next ones meet ENOSPC in the segment.
    let mut failed = false;
    for _ in 0..200 {
        let (status, _) = audit_read(&auditor, &auditor_basis, "/v1/audit/records/0").await;
        if status == StatusCode::SERVICE_UNAVAILABLE {
            failed = true;
            break;
        }
        assert_eq!(status, StatusCode::OK);
    }
    assert!(
        failed && audit.failure().is_some(),
        "the log should have failed closed on ENOSPC"
    );

    // An endpoint change: 503, and nothing changed.
    let (_, before) = read(&operator, "/v1/participants/asp-rsp").await;
    let endpoints_before = before["endpoints"].clone();
    assert!(
        endpoints_before.as_array().is_some_and(|a| !a.is_empty()),
        "{before}"
    );
    let put = asp_rsp
        .plain(
            Method::PUT,
            "/v1/participants/asp-rsp/endpoints",
            Some(&json!([{"url": "https://127.0.0.1:9/elsewhere"}])),
        )
        .unwrap();
    let (status, problem) = asp_rsp.send(put).await.unwrap();
    assert_eq!(
        (status.as_u16(), problem["code"].as_str()),
        (503, Some("audit.unavailable")),
        "{problem}"
    );
    let (_, after) = read(&operator, "/v1/participants/asp-rsp").await;
    assert_eq!(
        after["endpoints"], endpoints_before,
        "a refused change must change nothing"
    );

    // A connection-request transition and a submission: 503, nothing changed.
    let review = operator
        .plain(
            Method::POST,
            &format!("/v1/connection-requests/{request_id}/review"),
            Some(&json!({})),
        )
        .unwrap();
    let (status, problem) = operator.send(review).await.unwrap();
    assert_eq!(
        (status.as_u16(), problem["code"].as_str()),
        (503, Some("audit.unavailable")),
        "{problem}"
    );
    let (_, shown) = read(&operator, &format!("/v1/connection-requests/{request_id}")).await;
    assert_eq!(shown["state"], "submitted", "{shown}");
    let ids = |list: &Value| -> Vec<String> {
        list["connection_requests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_string())
            .collect()
    };
    let (_, listed_before) = read(&operator, "/v1/connection-requests").await;
    let (status, problem) = ungheni.send(submission()).await.unwrap();
    assert_eq!(
        (status.as_u16(), problem["code"].as_str()),
        (503, Some("audit.unavailable")),
        "{problem}"
    );
    let (_, listed_after) = read(&operator, "/v1/connection-requests").await;
    assert_eq!(
        ids(&listed_after),
        ids(&listed_before),
        "a refused submission must store nothing"
    );

    // A reload that would drop the good client's grants: 503, the grants stay.
    let good_policy = rules.join(format!("policies/{good_client}.json"));
    let kept = std::fs::read(&good_policy).unwrap();
    std::fs::remove_file(&good_policy).unwrap();
    let reload = operator.plain(Method::POST, "/v1/reload", None).unwrap();
    let (status, problem) = operator.send(reload).await.unwrap();
    assert_eq!(
        (status.as_u16(), problem["code"].as_str()),
        (503, Some("audit.unavailable")),
        "{problem}"
    );
    // The running rules stay: the file is put back now and no reload runs,
    // so the good client's call succeeding once space is back (below) proves the
    // refused reload swapped nothing in (it would be 403 policy.denied).
    std::fs::write(&good_policy, kept).unwrap();

    // Exchanges are refused, reads still work.
    support::assert_refused(&good.call(&call).await.unwrap(), 503, "audit.unavailable");
    let (status, _) = read(&operator, "/v1/participants").await;
    assert_eq!(status, StatusCode::OK);

    // ---- Space back: the log reopens by itself, no restart. ----
    drop(filler);
    std::fs::remove_file(&filler_path).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let healed = loop {
        let out = good.call(&call).await.unwrap();
        if out.status == StatusCode::OK || Instant::now() > deadline {
            break out;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(healed.status, StatusCode::OK, "{:?}", healed.body);
    assert!(seq_of(&healed).is_some());
    assert!(audit.failure().is_none());
    // Still unchanged, and now changes go through again.
    let (_, after) = read(&operator, "/v1/participants/asp-rsp").await;
    assert_eq!(after["endpoints"], endpoints_before);
    let (_, shown) = read(&operator, &format!("/v1/connection-requests/{request_id}")).await;
    assert_eq!(shown["state"], "submitted");
    let review = operator
        .plain(
            Method::POST,
            &format!("/v1/connection-requests/{request_id}/review"),
            Some(&json!({})),
        )
        .unwrap();
    let (status, shown) = operator.send(review).await.unwrap();
    assert_eq!(status, StatusCode::OK, "{shown}");
    assert_eq!(shown["state"], "under_review");

    // Every refusal counted while the disk was full is written too.
    let deadline = Instant::now() + Duration::from_secs(10);
    while broker.refusals().pending_count() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(broker.refusals().pending_count(), 0);

    // The whole log verifies, as `mconnect audit verify` checks it.
    sandbox.shutdown().await;
    let cert = std::fs::read_to_string(dir.join("pki/broker.cert.pem")).unwrap();
    let verifier = mconnect::audit::certificate_verifier(&cert).unwrap();
    let report = mconnect::audit::verify_dir(&audit_dir, verifier).unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    assert!(report.records > before_flood);
    drop(tmpfs);
}
