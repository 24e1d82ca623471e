//! Audit log benchmarks: durable appends with group commit (1, 64 and 1024
//! concurrent appenders), proof generation at one million leaves, and a probe
//! of the disk's own fsync latency and bandwidth, which bounds everything else.
//!
//! Every append measured is durable: `append` returns only after the batch
//! holding the record was fsynced. The log lives under the target directory
//! (a real disk, not tmpfs); `AUDIT_BENCH_DIR` puts it elsewhere.
//!
//! Run: `cargo bench --bench audit` (figures in benches/README.md).

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use mconnect::audit::merkle::{MerkleTree, leaf_hash};
use mconnect::audit::{AuditConfig, AuditLog, AuditRecord, Decision, TreeHeadSigner};

struct NullSigner;

impl TreeHeadSigner for NullSigner {
    fn keyid(&self) -> String {
        "bench".to_string()
    }
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, String> {
        Ok(message[..8].to_vec())
    }
}

fn bench_dir() -> PathBuf {
    let base = std::env::var_os("AUDIT_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")));
    std::fs::create_dir_all(&base).unwrap();
    base
}

/// A record of the size an exchange leaves (1,040 bytes as a canonical leaf).
fn record(i: u64) -> AuditRecord {
    AuditRecord {
        exchange_id: format!("0190f0e0-0000-7000-8000-{i:012}"),
        request_id: Some(format!("5f0c6a1e-8d3b-4c1a-9f7e-{i:012}")),
        event: "exchange".to_string(),
        received_at: "2025-03-01T09:30:00.123456Z".to_string(),
        forwarded_at: Some("2025-03-01T09:30:00.124456Z".to_string()),
        answered_at: "2025-03-01T09:30:00.223456Z".to_string(),
        consumer: Some("apl-cahul".to_string()),
        consumer_idno: Some("1003603000063".to_string()),
        calling_user: Some("2000000000015".to_string()),
        provider: Some("asp-rsp".to_string()),
        service: Some("asp-rsp/person-by-idnp".to_string()),
        service_version: Some("1.0.0".to_string()),
        purpose: Some("social-aid-eligibility".to_string()),
        legal_basis: Some("md-law-133-2008-art-8".to_string()),
        grant_id: Some("apl-cahul-social-aid".to_string()),
        subject: Some(format!("{:013}", 2_000_000_000_000u64 + i % 10_000)),
        represented_party: None,
        decision: Decision::Accepted,
        problem_code: None,
        http_status: 200,
        request_bytes: 0,
        request_sha256: Some(
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855".into(),
        ),
        response_bytes: 412,
        response_sha256: Some(
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".into(),
        ),
        keyids_checked: vec![
            "3b6f0c1e9d8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c".into(),
        ],
        keyids_made: vec![
            "8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c3b6f0c1e9d".into(),
        ],
        duration_us: 1834,
    }
}

fn durable_appends(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("audit_append_durable");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(8));
    group.warm_up_time(Duration::from_secs(2));
    for appenders in [1u64, 64, 1024] {
        let dir = tempfile::tempdir_in(bench_dir()).unwrap();
        let (log, _) = runtime
            .block_on(async { AuditLog::open(AuditConfig::new(dir.path()), Arc::new(NullSigner)) })
            .unwrap();
        group.throughput(Throughput::Elements(1));
        group.bench_with_input(
            BenchmarkId::from_parameter(format!("{appenders}_appenders")),
            &appenders,
            |b, &appenders| {
                b.iter_custom(|iters| {
                    let log = log.clone();
                    runtime.block_on(async move {
                        let per_task = iters.div_ceil(appenders).max(1);
                        let start = Instant::now();
                        let mut tasks = Vec::with_capacity(appenders as usize);
                        for t in 0..appenders {
                            let log = log.clone();
                            tasks.push(tokio::spawn(async move {
                                for i in 0..per_task {
                                    log.append(record(t * per_task + i)).await.unwrap();
                                }
                            }));
                        }
                        for task in tasks {
                            task.await.unwrap();
                        }
                        // Scale to the iterations asked for (rounding up
                        // appended a few more).
                        start
                            .elapsed()
                            .mul_f64(iters as f64 / (per_task * appenders) as f64)
                    })
                });
            },
        );
        runtime.block_on(log.close()).unwrap();
    }
    group.finish();
}

fn proofs(c: &mut Criterion) {
    const LEAVES: u64 = 1_000_000;
    let mut tree = MerkleTree::new();
    for i in 0..LEAVES {
        tree.push(leaf_hash(&i.to_le_bytes()));
    }
    let mut group = c.benchmark_group("audit_proofs_1m");
    let mut n = 0u64;
    group.bench_function("inclusion", |b| {
        b.iter(|| {
            // Spread the leaves over the whole tree (a fixed stride, coprime
            // with the size).
            n = (n + 104_729) % LEAVES;
            tree.inclusion_proof(n, LEAVES).unwrap()
        })
    });
    let mut m = 1u64;
    group.bench_function("consistency", |b| {
        b.iter(|| {
            m = (m + 104_729) % (LEAVES - 1) + 1;
            tree.consistency_proof(m, LEAVES).unwrap()
        })
    });
    group.bench_function("root", |b| b.iter(|| tree.root(LEAVES - 1).unwrap()));
    group.finish();
}

/// The disk itself: write + fdatasync of 4 KiB (latency) and of 1 MiB
/// (bandwidth). Group commit cannot beat these.
fn fsync_probe(c: &mut Criterion) {
    let dir = tempfile::tempdir_in(bench_dir()).unwrap();
    let path = dir.path().join("probe");
    let mut group = c.benchmark_group("fsync_probe");
    group.sample_size(20);
    for size in [4096usize, 1 << 20] {
        let buf = vec![0x5au8; size];
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap();
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(BenchmarkId::new("write_fdatasync", size), |b| {
            b.iter(|| {
                file.write_all(&buf).unwrap();
                file.sync_data().unwrap();
            })
        });
    }
    group.finish();
}

criterion_group!(benches, fsync_probe, durable_appends, proofs);
criterion_main!(benches);
