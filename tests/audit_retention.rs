//! Retention of the audit log (issue 4, items 1 and 7): opt-in encrypted body
//! storage with per-service expiry, and record pruning in whole segments that
//! keeps the Merkle tree, its proofs and `verify_dir` intact. Small segments
//! and injected clocks; no sleeps.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::hmac;
use mconnect::audit::{
    AuditConfig, AuditError, AuditLog, AuditQuery, AuditRecord, BodyKind, Decision, ExchangeBodies,
    TreeHeadSigner, verify_consistency, verify_dir, verify_inclusion,
};

const DAY: Duration = Duration::from_secs(24 * 3600);

struct TestSigner;

impl TreeHeadSigner for TestSigner {
    fn keyid(&self) -> String {
        "test-key".to_string()
    }
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, String> {
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"retention key");
        Ok(hmac::sign(&key, message).as_ref().to_vec())
    }
}

fn verify_hmac(keyid: &str, message: &[u8], signature: &[u8]) -> Result<(), String> {
    if keyid != "test-key" {
        return Err(format!("unknown key {keyid}"));
    }
    let key = hmac::Key::new(hmac::HMAC_SHA256, b"retention key");
    hmac::verify(&key, message, signature).map_err(|_| "bad signature".to_string())
}

fn timestamp(t: SystemTime) -> String {
    mconnect::audit::format_timestamp(time::OffsetDateTime::from(t))
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes))
}

/// A record received at `at`.
fn record(i: u64, at: SystemTime) -> AuditRecord {
    AuditRecord {
        exchange_id: format!("0190f0e0-0000-7000-8000-{i:012}"),
        request_id: Some(format!("req-{i}")),
        event: "exchange".to_string(),
        received_at: timestamp(at),
        forwarded_at: None,
        answered_at: timestamp(at + Duration::from_millis(50)),
        consumer: Some("apl-cahul".to_string()),
        consumer_idno: None,
        calling_user: None,
        provider: Some("asp-rsp".to_string()),
        service: Some("asp-rsp/person-by-idnp".to_string()),
        service_version: None,
        purpose: None,
        legal_basis: None,
        grant_id: None,
        subject: Some("2001234567890".to_string()),
        subjects: Vec::new(),
        represented_party: None,
        decision: Decision::Accepted,
        problem_code: None,
        http_status: 200,
        request_bytes: 0,
        request_sha256: None,
        response_bytes: 0,
        response_sha256: None,
        keyids_checked: vec![],
        keyids_made: vec![],
        duration_us: 100,
        refusal_count: None,
        replay_ids: Vec::new(),
        trace_id: None,
    }
}

fn config(dir: &Path) -> AuditConfig {
    AuditConfig {
        segment_bytes: 4096,
        ..AuditConfig::new(dir)
    }
}

fn open(config: AuditConfig) -> AuditLog {
    match AuditLog::open(config, Arc::new(TestSigner)) {
        Ok((log, _)) => log,
        Err(e) => panic!("open failed: {e}"),
    }
}

fn files(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    out.retain(|p| p.to_string_lossy().ends_with(suffix));
    out.sort();
    out
}

/// 40 records from 2023 and 10 from mid-2026: with "now" = 2026-07-01 and the
/// default 730 days, only segments made wholly of 2023 records may go.
fn old_time() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_672_531_200) // 2023-01-01
}
fn new_time() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_780_272_000) // 2026-06-01
}
fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_782_864_000) // 2026-07-01
}

async fn fill(log: &AuditLog) {
    for i in 0..40 {
        let seq = log
            .append(record(i, old_time() + Duration::from_secs(i)))
            .await;
        assert_eq!(seq.ok(), Some(i));
    }
    for i in 40..50 {
        let seq = log
            .append(record(i, new_time() + Duration::from_secs(i)))
            .await;
        assert_eq!(seq.ok(), Some(i));
    }
}

#[tokio::test]
async fn pruned_segments_keep_root_proofs_and_verification() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(config(dir.path()));
    fill(&log).await;
    let root = log.root_hash(50).unwrap();
    let old_root = log.root_hash(10).unwrap();
    log.publish_tree_head().unwrap();
    let segments_before = files(&dir.path().join("segments"), ".seg").len();
    assert!(segments_before > 3, "small segments expected");

    let report = log.retention_pass(now()).unwrap();
    assert!(report.segments_pruned >= 1, "{report:?}");
    let pruned = report.pruned_below;
    assert!(
        pruned > 0 && pruned <= 40,
        "never beyond the old records: {report:?}"
    );
    assert_eq!(report.records_pruned, pruned);
    assert_eq!(log.pruned_below(), pruned);
    // The segment holding record 39 also holds newer ones or is next to them:
    // nothing newer than the retention went.
    assert!(log.record(40).unwrap().is_some());

    // The tree is unchanged: root, inclusion proofs, consistency proofs.
    assert_eq!(log.root_hash(50).unwrap(), root);
    for seq in [pruned, 45, 49] {
        let (_, leaf) = log.record(seq).unwrap().unwrap();
        let path = log.inclusion_proof(seq, 50).unwrap();
        let leaf_hash = mconnect::audit::merkle::leaf_hash(&leaf);
        verify_inclusion(&leaf_hash, seq, 50, &path, &root).unwrap();
    }
    let proof = log.consistency_proof(10, 50).unwrap();
    verify_consistency(10, 50, &old_root, &root, &proof).unwrap();
    // A pruned record answers clearly.
    assert!(matches!(log.record(0), Err(AuditError::Pruned(0))));
    // Its inclusion proof still exists (from the kept hash).
    assert!(log.inclusion_proof(0, 50).is_ok());

    let verified = verify_dir(dir.path(), verify_hmac).unwrap();
    assert!(verified.is_ok(), "{:?}", verified.problems);
    assert_eq!(verified.pruned_records, pruned);
    assert_eq!(verified.records, 50);
    assert_eq!(verified.root_hash, root);
    assert_eq!(
        files(&dir.path().join("segments"), ".pruned").len(),
        report.segments_pruned
    );
    log.close().await.unwrap();

    // Reopen with the index gone: recovery loads the kept hashes, the index
    // is rebuilt around the pruned range, appends go on.
    fs::remove_file(dir.path().join("index.redb")).unwrap();
    let (log, recovery) = AuditLog::open(config(dir.path()), Arc::new(TestSigner)).unwrap();
    assert_eq!(recovery.pruned, pruned);
    assert_eq!(recovery.records, 50);
    assert_eq!(log.root_hash(50).unwrap(), root);
    log.sync_index().unwrap();
    let page = log
        .query(&AuditQuery {
            subject: Some("2001234567890".to_string()),
            limit: 100,
            ..AuditQuery::default()
        })
        .unwrap();
    assert_eq!(page.items.len() as u64, 50 - pruned);
    assert_eq!(log.append(record(50, now())).await.unwrap(), 50);
    log.close().await.unwrap();
    let verified = verify_dir(dir.path(), verify_hmac).unwrap();
    assert!(verified.is_ok(), "{:?}", verified.problems);
}

#[tokio::test]
async fn the_active_segment_and_newer_records_are_never_pruned() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(config(dir.path()));
    // Nothing old: nothing pruned.
    for i in 0..30 {
        log.append(record(i, new_time())).await.unwrap();
    }
    let report = log.retention_pass(now()).unwrap();
    assert_eq!(report.segments_pruned, 0);
    log.close().await.unwrap();

    // Everything old: all but the active segment go.
    let dir = tempfile::tempdir().unwrap();
    let log = open(config(dir.path()));
    for i in 0..30 {
        log.append(record(i, old_time())).await.unwrap();
    }
    let segments = files(&dir.path().join("segments"), ".seg");
    let report = log.retention_pass(now()).unwrap();
    assert_eq!(report.segments_pruned, segments.len() - 1);
    let left = files(&dir.path().join("segments"), ".seg");
    assert_eq!(left, segments[segments.len() - 1..].to_vec());
    assert!(log.record(29).unwrap().is_some());
    // A second pass finds nothing more to do.
    assert_eq!(log.retention_pass(now()).unwrap().segments_pruned, 0);
    log.close().await.unwrap();
    assert!(verify_dir(dir.path(), verify_hmac).unwrap().is_ok());
}

#[tokio::test]
async fn tampered_kept_hashes_are_detected() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(config(dir.path()));
    fill(&log).await;
    log.publish_tree_head().unwrap();
    log.retention_pass(now()).unwrap();
    log.close().await.unwrap();
    let pruned = files(&dir.path().join("segments"), ".pruned");
    let original = fs::read(&pruned[0]).unwrap();

    // A flipped hash byte: the checksum says so, and open refuses.
    let mut bad = original.clone();
    bad[32 + 5] ^= 1;
    fs::write(&pruned[0], &bad).unwrap();
    let report = verify_dir(dir.path(), verify_hmac).unwrap();
    assert!(!report.is_ok());
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.message.contains("checksum")),
        "{:?}",
        report.problems
    );
    assert!(AuditLog::open(config(dir.path()), Arc::new(TestSigner)).is_err());

    // A changed hash with a recomputed checksum: the signed tree heads catch it.
    let mut forged = original[..original.len() - 32].to_vec();
    forged[32 + 5] ^= 1;
    let sum = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &forged);
    forged.extend_from_slice(sum.as_ref());
    fs::write(&pruned[0], &forged).unwrap();
    let report = verify_dir(dir.path(), verify_hmac).unwrap();
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.message.contains("does not match the records")),
        "{:?}",
        report.problems
    );
}

#[tokio::test]
async fn an_interrupted_prune_is_finished_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(config(dir.path()));
    fill(&log).await;
    let root = log.root_hash(50).unwrap();
    let first = files(&dir.path().join("segments"), ".seg")[0].clone();
    let copy = fs::read(&first).unwrap();
    log.retention_pass(now()).unwrap();
    log.close().await.unwrap();
    // A leftover segment that does not match the kept hashes: open refuses
    // and deletes nothing.
    let mut damaged = copy.clone();
    let last = damaged.len() - 3;
    damaged[last] ^= 1;
    fs::write(&first, &damaged).unwrap();
    assert!(AuditLog::open(config(dir.path()), Arc::new(TestSigner)).is_err());
    assert!(first.exists());
    // As if the process died after writing the hashes, before the delete.
    fs::write(&first, &copy).unwrap();
    let verified = verify_dir(dir.path(), verify_hmac).unwrap();
    assert!(verified.is_ok(), "{:?}", verified.problems);
    let (log, _) = AuditLog::open(config(dir.path()), Arc::new(TestSigner)).unwrap();
    assert!(!first.exists());
    assert_eq!(log.root_hash(50).unwrap(), root);
    log.close().await.unwrap();
}

fn body_config(dir: &Path) -> AuditConfig {
    AuditConfig {
        body_key_file: Some(dir.join("body.key")),
        ..config(dir)
    }
}

fn exchange(i: u64, request: &[u8], response: &[u8]) -> AuditRecord {
    let mut r = record(i, SystemTime::now());
    r.request_bytes = request.len() as u64;
    r.request_sha256 = Some(sha256_hex(request));
    r.response_bytes = response.len() as u64;
    r.response_sha256 = Some(sha256_hex(response));
    r
}

#[tokio::test]
async fn bodies_are_encrypted_checked_and_expire_while_the_tree_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(body_config(dir.path()));
    let request = br#"{"idnp":"2001234567890"}"#.to_vec();
    let response = br#"{"name":"Ion Popescu","born":"1980-01-01"}"#.to_vec();
    let bodies = ExchangeBodies {
        request: request.clone(),
        response: response.clone(),
        retention: 30 * DAY,
    };
    let seq = log
        .append_with_bodies(exchange(0, &request, &response), bodies)
        .await
        .unwrap();
    // A second record whose service did not opt in.
    log.append(exchange(1, b"", b"{}")).await.unwrap();

    assert_eq!(log.body(seq, BodyKind::Request).unwrap(), request);
    assert_eq!(log.body(seq, BodyKind::Response).unwrap(), response);
    for path in files(&dir.path().join("bodies"), "") {
        let raw = fs::read(&path).unwrap();
        for plain in [&request[..], &response[..], b"Ion Popescu"] {
            assert!(
                !raw.windows(plain.len()).any(|w| w == plain),
                "plaintext in {path:?}"
            );
        }
    }
    assert!(matches!(
        log.body(1, BodyKind::Request),
        Err(AuditError::BodyNotStored { seq: 1, .. })
    ));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(dir.path().join("body.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "the body key is private");
    }

    // Not yet expired.
    let report = log.retention_pass(SystemTime::now() + 29 * DAY).unwrap();
    assert_eq!(report.bodies_expired, 0);
    // Expired: dropped, durably, and said so.
    let report = log.retention_pass(SystemTime::now() + 31 * DAY).unwrap();
    assert_eq!(report.bodies_expired, 2);
    assert!(matches!(
        log.body(seq, BodyKind::Request),
        Err(AuditError::BodyExpired { .. })
    ));
    for path in files(&dir.path().join("bodies"), "") {
        let raw = fs::read(&path).unwrap();
        assert!(raw.len() < 64, "only a tombstone is left in {path:?}");
    }
    // The record itself and the tree are untouched.
    assert!(log.record(seq).unwrap().is_some());
    log.close().await.unwrap();
    let verified = verify_dir(dir.path(), verify_hmac).unwrap();
    assert!(verified.is_ok(), "{:?}", verified.problems);
    assert_eq!(verified.records, 2);
    // The expiry survives a restart.
    let log = open(body_config(dir.path()));
    assert!(matches!(
        log.body(seq, BodyKind::Response),
        Err(AuditError::BodyExpired { .. })
    ));
    log.close().await.unwrap();
}

#[tokio::test]
async fn body_store_failures_never_lose_or_fake_a_record() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(body_config(dir.path()));
    let (request, response) = (b"{\"q\":1}".to_vec(), b"{\"a\":2}".to_vec());
    let bodies = |r: &[u8], a: &[u8]| ExchangeBodies {
        request: r.to_vec(),
        response: a.to_vec(),
        retention: 30 * DAY,
    };
    let seq = log
        .append_with_bodies(
            exchange(0, &request, &response),
            bodies(&request, &response),
        )
        .await
        .unwrap();

    // A damaged body file: an error, never a wrong body; the record stands.
    let path = dir
        .path()
        .join("bodies")
        .join(format!("{seq:020}.response"));
    let mut raw = fs::read(&path).unwrap();
    let last = raw.len() - 1;
    raw[last] ^= 1;
    fs::write(&path, &raw).unwrap();
    assert!(matches!(
        log.body(seq, BodyKind::Response),
        Err(AuditError::Corrupt { .. })
    ));
    assert!(log.record(seq).unwrap().is_some());

    // A body that decrypts but is not the one the record commits to: refused.
    log.store_body(
        seq,
        BodyKind::Request,
        b"{\"q\":666}",
        SystemTime::now() + DAY,
    )
    .unwrap();
    assert!(matches!(
        log.body(seq, BodyKind::Request),
        Err(AuditError::BodyMismatch { .. })
    ));
    // No body without its record.
    assert!(
        log.store_body(99, BodyKind::Request, b"x", SystemTime::now())
            .is_err()
    );

    // The body directory becomes unusable: the exchange is still recorded.
    let bodies_dir = dir.path().join("bodies");
    fs::remove_dir_all(&bodies_dir).unwrap();
    fs::write(&bodies_dir, b"not a directory").unwrap();
    let seq2 = log
        .append_with_bodies(
            exchange(1, &request, &response),
            bodies(&request, &response),
        )
        .await
        .unwrap();
    assert_eq!(seq2, 1);
    assert!(log.record(seq2).unwrap().is_some());
    assert!(log.body(seq2, BodyKind::Request).is_err());
    assert!(
        log.failure().is_none(),
        "a body failure does not fail the log"
    );
    assert_eq!(log.append(exchange(2, b"", b"")).await.unwrap(), 2);
    log.close().await.unwrap();
    let verified = verify_dir(dir.path(), verify_hmac).unwrap();
    assert!(verified.is_ok(), "{:?}", verified.problems);
    assert_eq!(verified.records, 3);
}

#[tokio::test]
async fn the_retention_task_runs_a_pass_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(config(dir.path()));
    for i in 0..30 {
        log.append(record(i, old_time())).await.unwrap();
    }
    log.close().await.unwrap();
    // Records from 2023 are past the default 730 days on the real clock.
    let log = open(AuditConfig {
        retention_interval: Some(Duration::from_secs(3600)),
        ..config(dir.path())
    });
    let mut waited = Duration::ZERO;
    while log.pruned_below() == 0 && waited < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(20)).await;
        waited += Duration::from_millis(20);
    }
    assert!(log.pruned_below() > 0, "the pass at open pruned nothing");
    log.close().await.unwrap();
    let verified = verify_dir(dir.path(), verify_hmac).unwrap();
    assert!(verified.is_ok(), "{:?}", verified.problems);
    assert!(verified.pruned_records > 0);
}
