//! End-to-end tests of the audit log on real files in temporary directories:
//! group commit, reopen, torn tails, corruption, failing disks, proofs, signed
//! tree heads and the indexes.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use aws_lc_rs::hmac;

use super::merkle::leaf_hash;
use super::record::tests::sample;
use super::*;

/// Signs tree heads with HMAC-SHA256: enough to test that the bytes signed are
/// the bytes verified.
struct TestSigner(hmac::Key);

impl TestSigner {
    fn new() -> Arc<TestSigner> {
        Arc::new(TestSigner(hmac::Key::new(hmac::HMAC_SHA256, b"test key")))
    }
}

impl TreeHeadSigner for TestSigner {
    fn keyid(&self) -> String {
        "test-key".to_string()
    }
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, String> {
        Ok(hmac::sign(&self.0, message).as_ref().to_vec())
    }
}

fn verify_hmac(keyid: &str, message: &[u8], signature: &[u8]) -> Result<(), String> {
    if keyid != "test-key" {
        return Err(format!("unknown key {keyid}"));
    }
    let key = hmac::Key::new(hmac::HMAC_SHA256, b"test key");
    hmac::verify(&key, message, signature).map_err(|_| "bad signature".to_string())
}

fn config(dir: &Path) -> AuditConfig {
    AuditConfig::new(dir)
}

fn open(config: AuditConfig) -> (AuditLog, RecoveryReport) {
    match AuditLog::open(config, TestSigner::new()) {
        Ok(opened) => opened,
        Err(e) => panic!("open failed: {e}"),
    }
}

fn record(i: u64) -> AuditRecord {
    let mut r = sample(i);
    r.subject = Some(format!("200000000000{}", i % 3));
    r.consumer = Some(
        if i.is_multiple_of(2) {
            "apl-cahul"
        } else {
            "apl-orhei"
        }
        .to_string(),
    );
    r.received_at = format!("2025-03-01T09:{:02}:{:02}.000000Z", (i / 60) % 60, i % 60);
    r
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir.join("segments"))
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.sort();
    files
}

async fn append_n(log: &AuditLog, range: std::ops::Range<u64>) {
    for i in range {
        let seq = log.append(record(i)).await;
        assert_eq!(seq.ok(), Some(i));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_get_distinct_gap_free_seqs_that_survive_reopen() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut cfg = config(tmp.path());
    cfg.segment_bytes = 64 * 1024; // several segments, so rolling is covered
    let (log, report) = open(cfg.clone());
    assert_eq!(report.records, 0);
    let mut tasks = Vec::new();
    for i in 0..2000u64 {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            let r = record(i);
            (log.append(r.clone()).await, r)
        }));
    }
    let mut seen = std::collections::BTreeMap::new();
    for task in tasks {
        let (seq, r) = task.await.unwrap_or_else(|e| panic!("{e}"));
        let seq = seq.unwrap_or_else(|e| panic!("append failed: {e}"));
        assert!(seen.insert(seq, r).is_none(), "seq {seq} given twice");
    }
    assert_eq!(
        seen.keys().copied().collect::<Vec<_>>(),
        (0..2000).collect::<Vec<_>>()
    );
    assert_eq!(log.tree_size(), 2000);
    for (&seq, r) in &seen {
        let (got, leaf) = log
            .record(seq)
            .ok()
            .flatten()
            .unwrap_or_else(|| panic!("{seq}"));
        assert_eq!(&got, r);
        assert_eq!(leaf, r.canonical_bytes().unwrap_or_default());
    }
    let root = log.root_hash(2000).ok();
    log.close().await.unwrap_or_else(|e| panic!("{e}"));
    assert!(segment_files(tmp.path()).len() > 2);

    let (log, report) = open(cfg);
    assert_eq!(report.records, 2000);
    assert_eq!(report.torn_tail, None);
    assert_eq!(log.root_hash(2000).ok(), root);
    for (&seq, r) in seen.iter().step_by(97) {
        assert_eq!(
            log.record(seq).ok().flatten().map(|(got, _)| got).as_ref(),
            Some(r)
        );
    }
    // Appends continue where the log left off.
    assert_eq!(log.append(record(2000)).await.ok(), Some(2000));
    log.close().await.unwrap_or_else(|e| panic!("{e}"));
    let verified = verify_dir(tmp.path(), verify_hmac).unwrap_or_else(|e| panic!("{e}"));
    assert!(verified.is_ok(), "{:?}", verified.problems);
    assert_eq!(verified.records, 2001);
    assert_eq!(verified.tree_heads_checked, 2, "one head per close");
}

#[tokio::test]
async fn proofs_and_signed_tree_heads_verify() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (log, _) = open(config(tmp.path()));
    append_n(&log, 0..37).await;
    let sth = log.signed_tree_head().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(sth.tree_size, 37);
    assert!(verify_tree_head(&sth, verify_hmac).is_ok());
    let mut forged = sth.clone();
    forged.tree_size = 36;
    assert!(verify_tree_head(&forged, verify_hmac).is_err());
    // The JSON is the tree-head endpoint's answer, base64 and all.
    let json = serde_json::to_value(&sth).unwrap_or_default();
    assert!(json["root_hash"].as_str().is_some_and(|s| s.len() == 44));
    let back: Option<SignedTreeHead> = serde_json::from_value(json).ok();
    assert_eq!(back.as_ref(), Some(&sth));

    for seq in 0..37 {
        let leaf = log
            .record(seq)
            .ok()
            .flatten()
            .map(|(_, l)| l)
            .unwrap_or_default();
        let proof = log.inclusion_proof(seq, 37).unwrap_or_default();
        assert_eq!(
            verify_inclusion(&leaf_hash(&leaf), seq, 37, &proof, &sth.root_hash),
            Ok(())
        );
    }
    for first in 0..=37 {
        let old = log.root_hash(first).unwrap_or_default();
        let proof = log.consistency_proof(first, 37).unwrap_or_default();
        assert_eq!(
            verify_consistency(first, 37, &old, &sth.root_hash, &proof),
            Ok(())
        );
    }
    assert!(log.inclusion_proof(0, 38).is_err());
    assert!(log.inclusion_proof(37, 37).is_err());
    assert!(log.consistency_proof(5, 38).is_err());
    assert!(matches!(log.record(37), Ok(None)));
    log.close().await.unwrap_or_else(|e| panic!("{e}"));
}

#[tokio::test]
async fn torn_tail_is_truncated_and_reported() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (log, _) = open(config(tmp.path()));
    append_n(&log, 0..10).await;
    log.close().await.unwrap_or_else(|e| panic!("{e}"));
    let last = segment_files(tmp.path()).pop().unwrap_or_default();

    // A write cut short in the middle of a frame that was never acknowledged.
    let mut frame = Vec::new();
    segment::encode_frame(
        &mut frame,
        10,
        &record(10).canonical_bytes().unwrap_or_default(),
    );
    let mut file = OpenOptions::new()
        .append(true)
        .open(&last)
        .unwrap_or_else(|e| panic!("{e}"));
    file.write_all(&frame[..frame.len() / 2])
        .unwrap_or_else(|e| panic!("{e}"));
    drop(file);
    let (log, report) = open(config(tmp.path()));
    assert_eq!(report.records, 10);
    let torn = report
        .torn_tail
        .unwrap_or_else(|| panic!("no torn tail reported"));
    assert_eq!(torn.segment, last);
    assert_eq!(torn.bytes_dropped, (frame.len() / 2) as u64);
    for seq in 0..10 {
        assert_eq!(
            log.record(seq).ok().flatten().map(|(r, _)| r),
            Some(record(seq))
        );
    }
    // The lost record's seq goes to the next append (it was never acknowledged).
    assert_eq!(log.append(record(10)).await.ok(), Some(10));
    log.close().await.unwrap_or_else(|e| panic!("{e}"));

    // Garbage after the last frame (a frame header and half a body of noise).
    let mut file = OpenOptions::new()
        .append(true)
        .open(&last)
        .unwrap_or_else(|e| panic!("{e}"));
    file.write_all(&[0x55; 37])
        .unwrap_or_else(|e| panic!("{e}"));
    drop(file);
    let before = verify_dir(tmp.path(), verify_hmac).unwrap_or_else(|e| panic!("{e}"));
    assert!(before.is_ok(), "{:?}", before.problems);
    assert!(before.torn_tail.is_some());
    let (log, report) = open(config(tmp.path()));
    assert_eq!(report.records, 11);
    assert_eq!(report.torn_tail.map(|t| t.bytes_dropped), Some(37));
    log.close().await.unwrap_or_else(|e| panic!("{e}"));

    // Cutting into acknowledged records, which a signed head covers, is damage:
    // the log refuses to open rather than drop them.
    let len = fs::metadata(&last).map(|m| m.len()).unwrap_or(0);
    let file = OpenOptions::new().write(true).open(&last);
    file.and_then(|f| f.set_len(len - 5))
        .unwrap_or_else(|e| panic!("{e}"));
    match AuditLog::open(config(tmp.path()), TestSigner::new()) {
        Err(AuditError::Corrupt { seq, .. }) => assert_eq!(seq, 10),
        Err(e) => panic!("wrong error {e}"),
        Ok(_) => panic!("a log missing acknowledged records opened"),
    }
}

/// Offset of the frame of record `seq` in a single-segment log.
fn frame_offset(segment: &Path, seq: u64) -> usize {
    let bytes = fs::read(segment).unwrap_or_default();
    let mut offset = segment::HEADER_LEN as usize;
    for _ in 0..seq {
        let len = u32::from_le_bytes(bytes[offset..offset + 4].try_into().unwrap_or([0; 4]));
        offset += segment::FRAME_HEADER + len as usize;
    }
    offset
}

#[tokio::test]
async fn flipped_byte_in_the_middle_is_named_by_verify_and_refused_by_open() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (log, _) = open(config(tmp.path()));
    append_n(&log, 0..10).await;
    log.close().await.unwrap_or_else(|e| panic!("{e}"));
    let seg = segment_files(tmp.path()).pop().unwrap_or_default();
    let at = frame_offset(&seg, 3) + segment::FRAME_HEADER + 20;
    let mut bytes = fs::read(&seg).unwrap_or_default();
    bytes[at] ^= 0x01;
    fs::write(&seg, &bytes).unwrap_or_else(|e| panic!("{e}"));

    let report = verify_dir(tmp.path(), verify_hmac).unwrap_or_else(|e| panic!("{e}"));
    assert!(!report.is_ok());
    let first = &report.problems[0];
    assert_eq!(first.seq, Some(3), "{first}");
    assert_eq!(first.segment.as_ref(), Some(&seg));
    assert_eq!(first.offset, Some(frame_offset(&seg, 3) as u64));
    // The record count is intact and the signed head no longer matches.
    assert_eq!(report.records, 10);
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.message.contains("does not match"))
    );

    match AuditLog::open(config(tmp.path()), TestSigner::new()) {
        Err(AuditError::Corrupt { seq, .. }) => assert_eq!(seq, 3),
        Err(e) => panic!("wrong error {e}"),
        Ok(_) => panic!("a corrupt log opened"),
    }
}

/// Rewrites record 2 of the log in `dir` with a changed field and a correct
/// frame checksum, as someone with the disk but without the key could.
fn forge_record_2(dir: &Path) {
    let seg = segment_files(dir).pop().unwrap_or_default();
    let bytes = fs::read(&seg).unwrap_or_default();
    let (start, end) = (frame_offset(&seg, 2), frame_offset(&seg, 3));
    let mut forged = record(2);
    forged.http_status = 201;
    let mut frame = Vec::new();
    segment::encode_frame(&mut frame, 2, &forged.canonical_bytes().unwrap_or_default());
    assert_eq!(frame.len(), end - start);
    let mut out = bytes[..start].to_vec();
    out.extend_from_slice(&frame);
    out.extend_from_slice(&bytes[end..]);
    fs::write(&seg, out).unwrap_or_else(|e| panic!("{e}"));
}

#[tokio::test]
async fn tampering_with_a_valid_checksum_is_caught_by_the_signed_head() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (log, _) = open(config(tmp.path()));
    append_n(&log, 0..5).await;
    log.close().await.unwrap_or_else(|e| panic!("{e}"));
    forge_record_2(tmp.path());
    let report = verify_dir(tmp.path(), verify_hmac).unwrap_or_else(|e| panic!("{e}"));
    assert!(!report.is_ok());
    assert!(
        report.problems[0]
            .message
            .contains("does not match the records")
    );
}

#[tokio::test]
async fn a_log_changed_below_its_published_head_is_not_opened() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (log, _) = open(config(tmp.path()));
    append_n(&log, 0..5).await;
    log.close().await.unwrap_or_else(|e| panic!("{e}"));
    // Checksums hold; only the signed root can tell.
    forge_record_2(tmp.path());
    match AuditLog::open(config(tmp.path()), TestSigner::new()) {
        Err(AuditError::Corrupt { reason, .. }) => {
            assert!(
                reason.contains("changed after it was published"),
                "{reason}"
            );
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("a forged log was opened"),
    }
}

#[tokio::test]
async fn failing_disk_refuses_appends_and_never_reports_false_success() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut cfg = config(tmp.path());
    cfg.segment_bytes = 4096;
    let (log, _) = open(cfg.clone());
    append_n(&log, 0..3).await;
    // Block the next segment's file name with a directory: the roll fails with a
    // real OS error (root ignores permission bits, so a read-only directory would
    // not fail here).
    let mut seq = 3;
    let block = |seq: u64| tmp.path().join("segments").join(segment::segment_name(seq));
    fs::create_dir(block(seq)).unwrap_or_else(|e| panic!("{e}"));
    let mut failed_at = None;
    // Fill the first segment until the writer must roll into the blocked name.
    for _ in 0..200 {
        match log.append(record(seq)).await {
            Ok(got) => {
                assert_eq!(got, seq);
                fs::remove_dir(block(seq)).unwrap_or_else(|e| panic!("{e}"));
                seq += 1;
                fs::create_dir(block(seq)).unwrap_or_else(|e| panic!("{e}"));
            }
            Err(e) => {
                assert!(e.is_unavailable(), "{e}");
                failed_at = Some(seq);
                break;
            }
        }
    }
    let failed_at = failed_at.unwrap_or_else(|| panic!("the writer never rolled"));
    assert_eq!(log.tree_size(), failed_at);
    // Fail closed: later appends are refused too, even though nothing blocks them now.
    fs::remove_dir(block(failed_at)).unwrap_or_else(|e| panic!("{e}"));
    assert!(log.failure().is_some());
    assert!(
        log.append(record(failed_at))
            .await
            .is_err_and(|e| e.is_unavailable())
    );
    log.close().await.unwrap_or_else(|e| panic!("{e}"));
    // Reopening re-reads the disk; everything acknowledged is there.
    let (log, report) = open(cfg);
    assert_eq!(report.records, failed_at);
    assert_eq!(log.append(record(failed_at)).await.ok(), Some(failed_at));
    log.close().await.unwrap_or_else(|e| panic!("{e}"));
}

#[tokio::test]
async fn an_unwritable_directory_is_an_error_not_a_panic() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let file = tmp.path().join("not-a-dir");
    fs::write(&file, b"x").unwrap_or_else(|e| panic!("{e}"));
    let result = AuditLog::open(config(&file.join("audit")), TestSigner::new());
    assert!(matches!(result, Err(AuditError::Io { .. })));
}

#[tokio::test]
async fn a_second_open_of_the_same_directory_is_refused() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (log, _) = open(config(tmp.path()));
    let second = AuditLog::open(config(tmp.path()), TestSigner::new());
    assert!(matches!(second, Err(AuditError::InUse(_))));
    let other = log.clone();
    log.close().await.unwrap_or_else(|e| panic!("{e}"));
    assert!(
        other
            .append(record(0))
            .await
            .is_err_and(|e| e.is_unavailable())
    );
    let (again, _) = open(config(tmp.path()));
    again.close().await.unwrap_or_else(|e| panic!("{e}"));
}

#[tokio::test]
async fn invalid_records_are_refused_before_the_log() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (log, _) = open(config(tmp.path()));
    let mut bad = record(0);
    bad.answered_at = "2025-03-01 09:00".to_string();
    assert!(matches!(
        log.append(bad).await,
        Err(AuditError::InvalidRecord(_))
    ));
    assert_eq!(log.tree_size(), 0);
    log.close().await.unwrap_or_else(|e| panic!("{e}"));
}

fn seqs(page: &AuditPage) -> Vec<u64> {
    page.items.iter().map(|e| e.seq).collect()
}

fn run(log: &AuditLog, query: &AuditQuery) -> AuditPage {
    log.query(query)
        .unwrap_or_else(|e| panic!("query failed: {e}"))
}

#[tokio::test]
async fn queries_page_newest_first_and_the_index_rebuilds() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (log, _) = open(config(tmp.path()));
    append_n(&log, 0..30).await;
    log.sync_index().unwrap_or_else(|e| panic!("{e}"));

    // Subject 2000000000001 is on seqs 1, 4, 7, ... 28.
    let subject = Some("2000000000001".to_string());
    let mut query = AuditQuery {
        subject: subject.clone(),
        limit: 4,
        ..AuditQuery::default()
    };
    let mut all = Vec::new();
    loop {
        let page = run(&log, &query);
        assert!(page.items.len() <= 4);
        all.extend(seqs(&page));
        match page.next_cursor {
            Some(cursor) => query.cursor = Some(cursor),
            None => break,
        }
    }
    let expected: Vec<u64> = (0..30).rev().filter(|i| i % 3 == 1).collect();
    assert_eq!(all, expected);

    // Two filters, and a time window [09:00:10, 09:00:20).
    let at = |s: &str| {
        let micros = parse_timestamp(s).unwrap_or_default();
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1000).ok()
    };
    let query = AuditQuery {
        consumer: Some("apl-cahul".to_string()),
        from: at("2025-03-01T09:00:10.000000Z"),
        to: at("2025-03-01T09:00:20.000000Z"),
        ..AuditQuery::default()
    };
    assert_eq!(seqs(&run(&log, &query)), vec![18, 16, 14, 12, 10]);
    let query = AuditQuery {
        subject: subject.clone(),
        consumer: Some("apl-orhei".to_string()),
        ..AuditQuery::default()
    };
    assert_eq!(seqs(&run(&log, &query)), vec![25, 19, 13, 7, 1]);
    let query = AuditQuery {
        service: Some("asp-rsp/person-by-idnp".to_string()),
        limit: 3,
        ..AuditQuery::default()
    };
    assert_eq!(seqs(&run(&log, &query)), vec![29, 28, 27]);
    let bad = AuditQuery {
        cursor: Some("not-a-cursor".to_string()),
        ..AuditQuery::default()
    };
    assert!(matches!(log.query(&bad), Err(AuditError::InvalidQuery(_))));
    log.close().await.unwrap_or_else(|e| panic!("{e}"));

    // Without its index file the log rebuilds it from the segments.
    fs::remove_file(tmp.path().join("index.redb")).unwrap_or_else(|e| panic!("{e}"));
    let (log, _) = open(config(tmp.path()));
    log.sync_index().unwrap_or_else(|e| panic!("{e}"));
    let query = AuditQuery {
        subject,
        ..AuditQuery::default()
    };
    let page = run(&log, &query);
    assert_eq!(seqs(&page), expected);
    assert_eq!(page.indexed, 30);
    assert_eq!(page.items[0].record, record(28));
    // A damaged index file is replaced too.
    log.close().await.unwrap_or_else(|e| panic!("{e}"));
    fs::write(tmp.path().join("index.redb"), b"not a database").unwrap_or_else(|e| panic!("{e}"));
    let (log, _) = open(config(tmp.path()));
    log.sync_index().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(seqs(&run(&log, &query)), expected);
    log.close().await.unwrap_or_else(|e| panic!("{e}"));
}

#[tokio::test]
async fn rows_of_another_value_with_the_same_key_hash_are_not_returned() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (log, _) = open(config(tmp.path()));
    append_n(&log, 0..6).await;
    log.sync_index().unwrap_or_else(|e| panic!("{e}"));
    // Rows of seq 4 (subject 2000000000001, consumer apl-cahul) filed under
    // another person and another consumer, as a collision of their key
    // hashes would file them.
    let time = record(4).received_micros();
    log.shared.index.file_row_for_test("2000000000009", time, 4);
    log.shared.index.file_row_for_test("apl-ungheni", time, 4);
    for query in [
        AuditQuery {
            subject: Some("2000000000009".to_string()),
            ..AuditQuery::default()
        },
        AuditQuery {
            consumer: Some("apl-ungheni".to_string()),
            ..AuditQuery::default()
        },
    ] {
        assert_eq!(seqs(&run(&log, &query)), Vec::<u64>::new(), "{query:?}");
    }
    // The record's own rows still find it.
    let query = AuditQuery {
        subject: Some("2000000000001".to_string()),
        ..AuditQuery::default()
    };
    assert_eq!(seqs(&run(&log, &query)), vec![4, 1]);
    log.close().await.unwrap_or_else(|e| panic!("{e}"));
}

/// Records appended concurrently, with received times that do not follow
/// their seqs (a slow exchange is appended after later, faster ones; some
/// share a microsecond), are found exactly as a scan of every record finds
/// them: newest first by (received, seq), page after page, by time, by
/// consumer (posting blocks) and by subject (runs merged as they grow),
/// with and without a time window; before and after a rebuild from the
/// segments.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_stay_exact_when_received_times_do_not_follow_the_seqs() {
    const BASE: i64 = 1_740_819_600_000_000; // 2025-03-01T09:00:00Z in µs
    let at = |micros: i64| {
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1000)
            .unwrap_or_else(|e| panic!("{e}"))
    };
    let received = |i: u64| -> i64 {
        let i = i as i64;
        match i % 11 {
            0 => BASE + i * 700 - 35_000, // arrived long before its neighbours
            3 => BASE + (i - 1) * 700,    // the same microsecond as another
            _ => BASE + i * 700,
        }
    };
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (mut log, _) = open(config(tmp.path()));
    let mut tasks = Vec::new();
    for i in 0..2_400u64 {
        let log = log.clone();
        let mut r = record(i);
        r.received_at = format_timestamp(at(received(i)));
        r.consumer =
            Some(["apl-cahul", "apl-orhei", "apl-balti"][(i / 7 % 3) as usize].to_string());
        tasks.push(tokio::spawn(async move {
            let seq = log
                .append(r.clone())
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            (seq, r)
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.push(task.await.unwrap_or_else(|e| panic!("{e}")));
    }
    let expect = |query: &AuditQuery| -> Vec<u64> {
        let mut hits: Vec<(i64, u64)> = all
            .iter()
            .filter(|(_, r)| {
                let t = r.received_micros() as i64;
                query
                    .consumer
                    .as_ref()
                    .is_none_or(|c| r.consumer.as_ref() == Some(c))
                    && query
                        .subject
                        .as_ref()
                        .is_none_or(|s| r.subject.as_ref() == Some(s))
                    && query
                        .from
                        .is_none_or(|f| t >= (f.unix_timestamp_nanos() / 1000) as i64)
                    && query
                        .to
                        .is_none_or(|to| t < (to.unix_timestamp_nanos() / 1000) as i64)
            })
            .map(|(seq, r)| (r.received_micros() as i64, *seq))
            .collect();
        hits.sort_unstable_by(|a, b| b.cmp(a));
        hits.into_iter().map(|(_, seq)| seq).collect()
    };
    let paged = |log: &AuditLog, query: &AuditQuery| -> Vec<u64> {
        let mut query = query.clone();
        let mut got = Vec::new();
        loop {
            let page = run(log, &query);
            got.extend(seqs(&page));
            match page.next_cursor {
                Some(cursor) => query.cursor = Some(cursor),
                None => return got,
            }
        }
    };
    let filters = [
        (None, None),
        (Some("apl-orhei"), None),
        (None, Some("2000000000001")),
        (Some("apl-orhei"), Some("2000000000001")),
    ];
    let queries: Vec<AuditQuery> = filters
        .into_iter()
        .flat_map(|(consumer, subject)| {
            [
                (None, None),
                (Some(at(BASE + 300_000)), Some(at(BASE + 900_000))),
                (None, Some(at(received(1_200)))),
            ]
            .into_iter()
            .map(move |(from, to)| AuditQuery {
                consumer: consumer.map(str::to_string),
                subject: subject.map(str::to_string),
                from,
                to,
                limit: 37,
                ..AuditQuery::default()
            })
        })
        .collect();
    for round in ["indexed as appended", "rebuilt"] {
        log.sync_index().unwrap_or_else(|e| panic!("{e}"));
        for query in &queries {
            let expected = expect(query);
            assert!(expected.len() > 37, "{round}: {query:?} pages");
            assert_eq!(paged(&log, query), expected, "{round}: {query:?}");
        }
        log.close().await.unwrap_or_else(|e| panic!("{e}"));
        fs::remove_file(tmp.path().join("index.redb")).unwrap_or_else(|e| panic!("{e}"));
        log = open(config(tmp.path())).0;
    }
    log.close().await.unwrap_or_else(|e| panic!("{e}"));
}

/// A log of six records whose index file was written by an older layout
/// (`version` in `meta`, claiming to cover the whole log, with the rows
/// `fill` adds), opened again and brought up to date.
async fn reopened_over_an_old_index(
    dir: &Path,
    version: u64,
    fill: impl FnOnce(&redb::WriteTransaction),
) -> AuditLog {
    let (log, _) = open(config(dir));
    append_n(&log, 0..6).await;
    log.close().await.unwrap_or_else(|e| panic!("{e}"));
    let path = dir.join("index.redb");
    fs::remove_file(&path).unwrap_or_else(|e| panic!("{e}"));
    {
        let meta: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("meta");
        let db = redb::Database::create(&path).unwrap_or_else(|e| panic!("{e}"));
        let txn = db.begin_write().unwrap_or_else(|e| panic!("{e}"));
        {
            let mut meta = txn.open_table(meta).unwrap_or_else(|e| panic!("{e}"));
            meta.insert("version", version)
                .unwrap_or_else(|e| panic!("{e}"));
            meta.insert("next", 6).unwrap_or_else(|e| panic!("{e}"));
        }
        fill(&txn);
        txn.commit().unwrap_or_else(|e| panic!("{e}"));
    }
    let (log, _) = open(config(dir));
    log.sync_index().unwrap_or_else(|e| panic!("{e}"));
    log
}

#[tokio::test]
async fn an_index_of_the_first_layout_is_rebuilt_at_open() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    // The first layout (VERSION 1) had string keys; its row would be wrong now.
    let log = reopened_over_an_old_index(tmp.path(), 1, |txn| {
        let by_subject: redb::TableDefinition<(&str, u64, u64), ()> =
            redb::TableDefinition::new("by_subject");
        let mut rows = txn.open_table(by_subject).unwrap_or_else(|e| panic!("{e}"));
        rows.insert(("2000000000001", 0, 5), ())
            .unwrap_or_else(|e| panic!("{e}"));
    })
    .await;
    let query = AuditQuery {
        subject: Some("2000000000001".to_string()),
        ..AuditQuery::default()
    };
    let page = run(&log, &query);
    assert_eq!(seqs(&page), vec![4, 1]);
    assert_eq!(page.indexed, 6);
    log.close().await.unwrap_or_else(|e| panic!("{e}"));
}

/// An index the layout before posting blocks wrote (3: one `()` row per
/// record in `by_consumer`) is rebuilt, not read with the new types.
#[tokio::test]
async fn an_index_of_the_layout_before_posting_blocks_is_rebuilt_at_open() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let log = reopened_over_an_old_index(tmp.path(), 3, |txn| {
        let by_consumer: redb::TableDefinition<(u64, u64, u64), ()> =
            redb::TableDefinition::new("by_consumer");
        let mut rows = txn
            .open_table(by_consumer)
            .unwrap_or_else(|e| panic!("{e}"));
        rows.insert((index::key_hash("apl-cahul"), 0, 5), ())
            .unwrap_or_else(|e| panic!("{e}"));
    })
    .await;
    let query = AuditQuery {
        consumer: Some("apl-cahul".to_string()),
        ..AuditQuery::default()
    };
    let page = run(&log, &query);
    assert_eq!(seqs(&page), vec![4, 2, 0]);
    assert_eq!(page.indexed, 6);
    log.close().await.unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn index_key_hashes_do_not_change() {
    // Index files on disk hold these keys: a change to the function must
    // come with a new index layout VERSION (which rebuilds the files). The
    // values were computed apart from this code (FNV-1a 64, then SplitMix64's
    // finaliser, in Python).
    assert_eq!(index::key_hash(""), 0xf52a_15e9_a9b5_e89b);
    assert_eq!(index::key_hash("2000000000001"), 0xd2b6_c0e6_34b0_9167);
    assert_eq!(
        index::key_hash("asp-rsp/person-by-idnp"),
        0xe6db_b710_e2d2_e9aa
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_indexer_thread_catches_up_by_itself() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (log, _) = open(config(tmp.path()));
    append_n(&log, 0..10).await;
    let query = AuditQuery::default();
    for _ in 0..100 {
        if run(&log, &query).indexed == 10 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(seqs(&run(&log, &query)), (0..10).rev().collect::<Vec<_>>());
    log.close().await.unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn handles_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync + Clone>() {}
    assert_send_sync::<AuditLog>();
}
