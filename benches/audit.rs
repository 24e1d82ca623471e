//! Audit log benchmarks: durable appends with group commit (1, 64 and 1024
//! concurrent appenders), proof generation at one million leaves, the
//! broker's replay check over the audit index, and a probe of the disk's own
//! fsync latency and bandwidth, which bounds everything else.
//!
//! Every append measured is durable: `append` returns only after the batch
//! holding the record was fsynced. The log lives under the target directory
//! (a real disk, not tmpfs); `AUDIT_BENCH_DIR` puts it elsewhere.
//!
//! Run: `cargo bench --bench audit` (figures in benches/README.md).

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::fs::OpenOptions;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use mconnect::audit::merkle::{MerkleTree, leaf_hash};
use mconnect::audit::{AuditConfig, AuditLog, TreeHeadSigner};

#[path = "fixtures/dirs.rs"]
mod dirs;
#[path = "fixtures/records.rs"]
mod records;

struct NullSigner;

impl TreeHeadSigner for NullSigner {
    fn keyid(&self) -> String {
        "bench".to_string()
    }
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, String> {
        Ok(message[..8].to_vec())
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
        let dir = tempfile::tempdir_in(dirs::bench_dir("AUDIT_BENCH_DIR")).unwrap();
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
                                    log.append(records::exchange_record(t * per_task + i))
                                        .await
                                        .unwrap();
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
    let dir = tempfile::tempdir_in(dirs::bench_dir("AUDIT_BENCH_DIR")).unwrap();
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

/// The broker's replay check (`exchange::replay_store`) with 100,000 used
/// ids in the audit index: a fresh id (front, then index, then settled and
/// dropped from the front as the exchange does) and an id already used.
fn replay_check(c: &mut Criterion) {
    use mconnect::exchange::replay_store::{EmbeddedReplayStore, ReplayStore, Settled};
    const USED: u64 = 100_000;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir_in(dirs::bench_dir("AUDIT_BENCH_DIR")).unwrap();
    let (log, _) = runtime
        .block_on(async { AuditLog::open(AuditConfig::new(dir.path()), Arc::new(NullSigner)) })
        .unwrap();
    let received = mconnect::audit::format_timestamp(time::OffsetDateTime::now_utc());
    runtime.block_on(async {
        let mut tasks = Vec::new();
        for t in 0..256u64 {
            let log = log.clone();
            let received = received.clone();
            tasks.push(tokio::spawn(async move {
                for i in (t..USED).step_by(256) {
                    let mut record = records::exchange_record(i);
                    record.received_at = received.clone();
                    record.replay_ids = vec![uuid::Uuid::from_u128(u128::from(i)).to_string()];
                    log.append(record).await.unwrap();
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
    });
    log.sync_index().unwrap();
    let store = EmbeddedReplayStore::new(log.clone(), 4_000_000);
    let now = mconnect::exchange::unix_now();
    let mut group = c.benchmark_group("replay_check");
    group.throughput(Throughput::Elements(1));
    let mut n = u128::from(USED);
    group.bench_function("fresh_id_claim_and_settle", |b| {
        b.iter(|| {
            n += 1;
            let ids = [uuid::Uuid::from_u128(n).to_string()];
            store.claim("apl-cahul", &ids, now).unwrap();
            store.settle("apl-cahul", &ids, Settled::Recorded(0), now);
        })
    });
    let mut i = 0u128;
    group.bench_function("used_id_refused_from_index", |b| {
        b.iter(|| {
            i = (i + 7919) % u128::from(USED);
            let ids = [uuid::Uuid::from_u128(i).to_string()];
            assert!(store.claim("apl-cahul", &ids, now).is_err());
        })
    });
    group.finish();
    runtime.block_on(async { log.close().await.unwrap() });
}

criterion_group!(benches, fsync_probe, durable_appends, proofs, replay_check);
criterion_main!(benches);
