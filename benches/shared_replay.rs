//! The cluster's shared replay check (`mconnect::store::SharedState::claim`,
//! issue 15) on a local PostgreSQL server of its own (started like the
//! tests', through `mconnect_cli::sandbox::postgres`, over TCP on
//! loopback): the latency of one claim alone, and the throughput and round
//! trips of many claims at once, batched (the broker's setting: up to 4
//! statements in flight, each with every claim that waited) and one
//! statement per claim (`max_batch = 1`, 8 in flight: the pool's size), the
//! cost batching avoids.
//!
//! Every claim is durable when it is answered (PostgreSQL flushes its WAL at
//! each autocommit). The server's data lives under the target directory
//! unless `STORE_BENCH_DIR` names another (never tmpfs).
//!
//! Run: `cargo bench --bench shared_replay` (figures in benches/README.md).
//! `SHARED_REPLAY_CLAIMS` sets the claims per concurrent run (default 20000).

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use mconnect::store::{PgStore, PostgresSettings, SharedMetrics, SharedState, SharedTuning};
use mconnect_cli::sandbox::postgres::LocalPostgres;

#[path = "fixtures/dirs.rs"]
mod dirs;

fn micros(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

fn main() {
    let claims: usize = std::env::var("SHARED_REPLAY_CLAIMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let dir = tempfile::tempdir_in(dirs::bench_dir("STORE_BENCH_DIR")).unwrap();
    let server = LocalPostgres::start(&dir.path().join("pg")).unwrap();
    let url = server.create_database("bench").unwrap();
    let settings = PostgresSettings::from_url(&url).unwrap();
    // Migrates the schema, as a broker's start does.
    drop(PgStore::open(&settings).unwrap());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    let shared =
        SharedState::open(&settings, SharedTuning::default(), SharedMetrics::default()).unwrap();
    // One claim at a time: the latency an exchange adds at low load.
    let mut alone = Histogram::<u64>::new(3).unwrap();
    runtime.block_on(async {
        for i in 0..2_000 {
            let id = vec![format!("alone-{i}")];
            let started = Instant::now();
            shared.claim("bench", &id, 1_800_000_000).await.unwrap();
            if i >= 200 {
                alone.record(started.elapsed().as_nanos() as u64).unwrap();
            }
        }
    });
    println!(
        "alone: 1800 claims, median {:.0} µs, p99 {:.0} µs",
        micros(&alone, 0.5),
        micros(&alone, 0.99)
    );
    drop(shared);

    for (name, tuning) in [
        ("batched", SharedTuning::default()),
        (
            "one statement per claim",
            // As many statements in flight as the pool has connections.
            SharedTuning {
                max_batch: 1,
                max_in_flight: PostgresSettings::DEFAULT_POOL_SIZE,
            },
        ),
    ] {
        for concurrency in [16usize, 64, 256] {
            let metrics = SharedMetrics::default();
            let shared = Arc::new(SharedState::open(&settings, tuning, metrics.clone()).unwrap());
            let run = format!("{}-{concurrency}", name.replace(' ', "-"));
            let started = Instant::now();
            let latencies = runtime.block_on(async {
                let mut tasks = tokio::task::JoinSet::new();
                let per_task = claims / concurrency;
                for t in 0..concurrency {
                    let shared = Arc::clone(&shared);
                    let run = run.clone();
                    tasks.spawn(async move {
                        let mut h = Histogram::<u64>::new(3).unwrap();
                        for i in 0..per_task {
                            let id = vec![format!("{run}-{t}-{i}")];
                            let at = Instant::now();
                            shared.claim("bench", &id, 1_800_000_000).await.unwrap();
                            h.record(at.elapsed().as_nanos() as u64).unwrap();
                        }
                        h
                    });
                }
                let mut all = Histogram::<u64>::new(3).unwrap();
                while let Some(h) = tasks.join_next().await {
                    all.add(h.unwrap()).unwrap();
                }
                all
            });
            let elapsed = started.elapsed();
            let done = latencies.len();
            let statements = metrics.claim_batches.get();
            println!(
                "{name}, {concurrency} at once: {done} claims in {:.2} s = {:.0} claims/s, {statements} statements ({:.1} claims each), latency median {:.0} µs, p99 {:.0} µs",
                elapsed.as_secs_f64(),
                done as f64 / elapsed.as_secs_f64(),
                done as f64 / statements.max(1) as f64,
                micros(&latencies, 0.5),
                micros(&latencies, 0.99),
            );
            drop(shared);
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    drop(server);
}
