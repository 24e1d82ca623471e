//! State store latency on both backends: a get, a put and a three-write
//! batch (the shape of a connection request's transition: the request and
//! two grant documents), and a scan of 100 documents, on the embedded redb
//! store and on PostgreSQL (a local server of its own, started like the
//! tests' through `mconnect_cli::sandbox::postgres`, over TCP on loopback).
//!
//! Every write measured is durable when it returns (redb fsyncs its commit;
//! PostgreSQL flushes its WAL at COMMIT). Both live on the same disk, under
//! the target directory unless `STORE_BENCH_DIR` names another (never
//! tmpfs, or the fsyncs cost nothing). Documents are 1 KiB of JSON, about a
//! participant's size.
//!
//! Run: `cargo bench --bench store` (figures in benches/README.md).

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use mconnect::store::{Collection, PgStore, PostgresSettings, RedbStore, StateStore, Write};
use mconnect_cli::sandbox::postgres::LocalPostgres;

#[path = "fixtures/dirs.rs"]
mod dirs;

fn document(i: usize) -> Vec<u8> {
    let mut doc = format!("{{\"id\":\"participant-{i:04}\",\"pad\":\"");
    while doc.len() < 1022 {
        doc.push('x');
    }
    doc.push_str("\"}");
    doc.into_bytes()
}

fn store_latency(c: &mut Criterion) {
    let dir = tempfile::tempdir_in(dirs::bench_dir("STORE_BENCH_DIR")).unwrap();
    let server = LocalPostgres::start(&dir.path().join("pg")).unwrap();
    let url = server.create_database("bench").unwrap();
    let backends: Vec<(&str, Arc<dyn StateStore>)> = vec![
        (
            "redb",
            Arc::new(RedbStore::open(&dir.path().join("state.redb")).unwrap()),
        ),
        (
            "postgres",
            Arc::new(PgStore::open(&PostgresSettings::from_url(&url).unwrap()).unwrap()),
        ),
    ];
    let mut group = c.benchmark_group("store");
    group.sample_size(30);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(4));
    for (name, store) in &backends {
        // 1000 participants, 100 grants.
        let keys: Vec<String> = (0..1000).map(|i| format!("participant-{i:04}")).collect();
        for chunk in keys.chunks(100) {
            let docs: Vec<Vec<u8>> = (0..chunk.len()).map(document).collect();
            let writes: Vec<Write<'_>> = chunk
                .iter()
                .zip(&docs)
                .map(|(k, d)| Write::Put(Collection::Participants, k, d))
                .collect();
            store.apply(&writes).unwrap();
        }
        let grants: Vec<String> = (0..100).map(|i| format!("grant-{i:03}")).collect();
        let doc = document(0);
        let writes: Vec<Write<'_>> = grants
            .iter()
            .map(|k| Write::Put(Collection::Grants, k, &doc))
            .collect();
        store.apply(&writes).unwrap();

        let mut n = 0usize;
        group.bench_function(format!("{name}/get"), |b| {
            b.iter(|| {
                n = (n + 389) % keys.len();
                store.get(Collection::Participants, &keys[n]).unwrap()
            })
        });
        group.bench_function(format!("{name}/put"), |b| {
            b.iter(|| {
                n = (n + 389) % keys.len();
                store.put(Collection::Participants, &keys[n], &doc).unwrap()
            })
        });
        group.bench_function(format!("{name}/apply_3"), |b| {
            b.iter(|| {
                n = (n + 389) % keys.len();
                store
                    .apply(&[
                        Write::Put(Collection::ConnectionRequests, "MC-2026-0001", &doc),
                        Write::Put(Collection::Grants, &grants[n % 100], &doc),
                        Write::Delete(Collection::Grants, &grants[(n + 1) % 100]),
                    ])
                    .unwrap()
            })
        });
        group.bench_function(format!("{name}/scan_100"), |b| {
            b.iter(|| store.scan(Collection::Grants).unwrap())
        });
    }
    group.finish();
    drop(backends);
    drop(server);
}

criterion_group!(benches, store_latency);
criterion_main!(benches);
