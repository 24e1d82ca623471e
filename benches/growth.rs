//! Cost growth: how the per-request decision and the audit queries behave as
//! the catalog (10 to 10k services), the grants (1k to 100k) and the audit
//! log (10k to 10M records) grow. The claim to check is that they stay flat
//! or grow logarithmically.
//!
//! Policy: catalogs are generated from the shipped register files (each
//! copy a new register under a new provider id, services and schemas
//! intact), grants in the shape of the shipped ones (two services, one
//! purpose, two legal bases, the field lists the shipped grants use; four
//! grants per consumer). Per size it measures what the exchange does per
//! request after the signature: the catalog lookup `Catalog::service`,
//! `PolicyIndex::decide` (the same request over and over, as the criterion
//! bench does; 256 requests for random grants, which stay in cache; and
//! 65,536 requests for random grants, which do not), and the rate check
//! `RateLimiter::check`. Calls are timed in batches of [`BATCH`]; a sample
//! is a batch's time divided by its size, so the timer's own cost is spread
//! thin and p99 is the 99th percentile of those batch means. A pointer-chase
//! probe gives the machine's cost of one cache miss for comparison.
//!
//! Audit: one log, grown by durable appends from many concurrent appenders
//! to 10k, 100k, 1M and 10M records (`--max-records` stops lower). Records
//! are about 1 KB (the shape of `benches/audit.rs`'s), with ~100k subjects,
//! 200 consumers and 21 services, received about 3.15 s apart (10M records
//! span a year; `--step-micros 5` gives the spacing of a bus appending 200k
//! records/s, which the audit index's posting blocks depend on). At each size it notes how far the indexer thread is behind,
//! brings the index up to date (`sync_index`, timed) and times each query
//! shape, with the bytes read from the disk (not the page cache) per call:
//! by subject, by consumer within a day, by service, by time within an hour
//! (first page each, the default 50 records), `record(seq)` and
//! `inclusion_proof` of random seqs.
//!
//! The result is a markdown table on stdout and in `--out` (default
//! `growth.md` in the target directory). The log lives under
//! `CARGO_TARGET_TMPDIR` (or `GROWTH_BENCH_DIR`) and is deleted at the end;
//! 10M records take about 14 GiB with the index (check `df` first).
//!
//! Without `--bench` (that is, under `cargo test --all-targets`) it does
//! nothing. Run: `cargo bench --bench growth` (add `-- --max-records 1000000`
//! for a shorter run).

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::fmt::Write as _;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use mconnect::audit::{
    AuditConfig, AuditLog, AuditQuery, AuditRecord, TreeHeadSigner, format_timestamp,
};
use mconnect::catalog::{Catalog, Service};
use mconnect::policy::{DecisionRequest, PolicyIndex, RateLimiter};
use serde_json::{Value, json};
use time::OffsetDateTime;

/// The allocator the broker is deployed with (crates/cli/src/main.rs): the
/// audit appenders allocate a record's strings and free them on the audit
/// threads (benches/README.md, issue 17: glibc's malloc and free were a
/// third of the appenders' CPU).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "fixtures/dirs.rs"]
mod dirs;
#[path = "fixtures/grants.rs"]
mod grants;
#[path = "fixtures/records.rs"]
mod records;

/// Calls per timed batch in the policy measurements.
const BATCH: usize = 16;
/// Most batches, and most time, per policy measurement.
const MAX_BATCHES: usize = 40_000;
const POLICY_MEASURE_TIME: Duration = Duration::from_millis(1500);
/// Distinct prebuilt requests cycled through by the "spread" measurements:
/// enough that they touch far more of the index than the CPU caches hold.
const SPREAD: usize = 1 << 16;
/// Distinct requests of the "few" measurement: random grants too, but so few
/// that what they touch stays in cache. The difference to "spread" is the
/// cost of cache misses, not of the index's size.
const FEW: usize = 256;
/// A fixed instant inside every generated grant's validity (2026-06-01).
const NOW: i64 = 1_780_272_000;
const CATALOG_SIZES: [usize; 4] = [10, 100, 1_000, 10_000];
const GRANT_SIZES: [usize; 3] = [1_000, 10_000, 100_000];
const GRANTS_PER_CONSUMER: usize = 4;
const GRANTS_PER_FILE: usize = 1_000;
/// Shipped registers copied into generated catalogs: the data registers the
/// shipped grants use, so each service has a realistic field list.
const TEMPLATE_FILES: [&str; 6] = [
    "population.json",
    "social-insurance.json",
    "real-estate.json",
    "vehicles.json",
    "legal-entities.json",
    "tax-debts.json",
];

const AUDIT_CHECKPOINTS: [u64; 4] = [10_000, 100_000, 1_000_000, 10_000_000];
const SUBJECTS: u64 = 100_000;
const CONSUMERS: u64 = 200;
/// Real service keys of the shipped catalog: the audit records' spread.
const AUDIT_SERVICES: [&str; 21] = [
    "asp-rsp/person-by-idnp",
    "asp-rsp/persons-lookup",
    "cnas/insurance-record",
    "asp-cadastru/properties-by-owner",
    "asp-vehicule/vehicles-by-owner",
    "asp-rsud/company-by-idno",
    "sfs/tax-debts",
    "mpay/order-create",
    "mpay/order-details",
    "mpay/order-cancel",
    "mpay/payment-confirm",
    "mnotify/notification-send",
    "mnotify/notification-status",
    "mpower/authorisation-grant",
    "mpower/authorisation-check",
    "mpower/authorisations-by-person",
    "msign/sign-request",
    "msign/sign-result",
    "msign/signature-verify",
    "mconnect/access-history",
    "mconnect/find-usage",
];
/// First record's `received_at`: 2025-01-01T00:00:00Z, in microseconds.
const T0_MICROS: u64 = 1_735_689_600_000_000;
/// Microseconds between records' `received_at` by default: 10M records
/// span 365 days.
const DEFAULT_STEP_MICROS: u64 = 3_153_600;
/// Microseconds between records' `received_at` in this run (`--step-micros`).
static STEP_MICROS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();

fn step_micros() -> u64 {
    *STEP_MICROS.get_or_init(|| DEFAULT_STEP_MICROS)
}
const DAY_MICROS: u64 = 86_400_000_000;
const HOUR_MICROS: u64 = 3_600_000_000;
/// Most time per audit query shape and size.
const QUERY_MEASURE_TIME: Duration = Duration::from_secs(5);

#[derive(Parser, Debug)]
struct Args {
    /// Grow the audit log to at most this many records.
    #[arg(long, default_value_t = 10_000_000)]
    max_records: u64,
    /// Where to write the markdown table (default: growth.md in the target directory).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Concurrent appenders while growing the log.
    #[arg(long, default_value_t = 1024)]
    appenders: u64,
    /// Most queries per shape and size (each shape also stops after 5 s).
    #[arg(long, default_value_t = 1000)]
    queries: usize,
    /// Stop growing the log after this many seconds of appending, and measure
    /// at the size reached.
    #[arg(long, default_value_t = 3600)]
    append_time_limit: u64,
    /// Microseconds between records' `received_at`. The default spreads 10M
    /// records over a year, for the query shapes; 5 is what a bus appending
    /// 200k records/s writes, for the append rate (the audit index files the
    /// records of one value and 10 ms in one posting block).
    #[arg(long, default_value_t = DEFAULT_STEP_MICROS)]
    step_micros: u64,
    /// Leave out the policy part.
    #[arg(long)]
    skip_policy: bool,
    /// Leave out the audit part.
    #[arg(long)]
    skip_audit: bool,
    /// Set by `cargo bench`; without it the harness does nothing.
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() {
    // `cargo test --all-targets` runs bench mains without `--bench` (and
    // with test-harness arguments clap would not know): do nothing then.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let args = Args::parse();
    assert!(args.step_micros > 0, "--step-micros must be at least 1");
    STEP_MICROS.set(args.step_micros).unwrap();
    let started = OffsetDateTime::now_utc();
    let mut report = String::new();
    writeln!(
        report,
        "# Cost growth ({} UTC)\n",
        format_timestamp(started).get(..19).unwrap_or_default()
    )
    .unwrap();
    if !args.skip_policy {
        report.push_str(&policy_growth());
        print_so_far(&report);
    }
    if !args.skip_audit {
        report.push_str(&audit_growth(&args));
    }
    println!("{report}");
    let out = args.out.clone().unwrap_or_else(|| {
        Path::new(env!("CARGO_TARGET_TMPDIR"))
            .parent()
            .unwrap()
            .join("growth.md")
    });
    std::fs::write(&out, &report).unwrap();
    eprintln!("growth: table written to {}", out.display());
}

fn print_so_far(report: &str) {
    eprintln!("{report}");
}

// ---------------------------------------------------------------------------
// Measurement helpers.

/// A small deterministic generator (SplitMix64): the same spread every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[derive(Clone, Copy)]
struct Stats {
    median: f64,
    p99: f64,
    samples: usize,
}

fn stats(mut samples: Vec<f64>) -> Stats {
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    Stats {
        median: at(0.5),
        p99: at(0.99),
        samples: samples.len(),
    }
}

/// Times `f(i)` for i = 0, 1, 2, ... in batches of [`BATCH`]; nanoseconds
/// per call.
fn time_batched(mut f: impl FnMut(usize) -> bool) -> Stats {
    // Warm up: caches, branch predictors, lazily made state.
    for i in 0..SPREAD.min(20_000) {
        black_box(f(i));
    }
    let mut samples = Vec::with_capacity(MAX_BATCHES);
    let start = Instant::now();
    let mut i = 0;
    while samples.len() < MAX_BATCHES && start.elapsed() < POLICY_MEASURE_TIME {
        let t = Instant::now();
        for _ in 0..BATCH {
            black_box(f(i));
            i += 1;
        }
        samples.push(t.elapsed().as_nanos() as f64 / BATCH as f64);
    }
    stats(samples)
}

/// Nanoseconds per dependent load when chasing pointers at random through
/// `bytes` of memory: what one cache miss costs at that working-set size.
fn load_latency(bytes: usize) -> f64 {
    let n = bytes / std::mem::size_of::<u32>();
    // Sattolo's algorithm: a random permutation that is one single cycle.
    let mut next: Vec<u32> = (0..n as u32).collect();
    let mut rng = Rng(n as u64);
    for i in (1..n).rev() {
        let j = rng.below(i as u64) as usize;
        next.swap(i, j);
    }
    const STEPS: usize = 2_000_000;
    let mut at = 0u32;
    for _ in 0..STEPS / 10 {
        at = next[at as usize];
    }
    let t = Instant::now();
    for _ in 0..STEPS {
        at = next[at as usize];
    }
    black_box(at);
    t.elapsed().as_nanos() as f64 / STEPS as f64
}

fn secs(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64())
}

// ---------------------------------------------------------------------------
// Policy.

/// A generated service: where it lives and which shipped service it copies.
struct ServiceRef {
    provider: String,
    code: String,
    template_key: String,
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// The field list the shipped grants give each shipped service.
fn template_fields() -> HashMap<String, Value> {
    let mut fields = HashMap::new();
    for entry in std::fs::read_dir(repo().join("policies")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let doc = read_json(&path);
            for grant in doc["grants"].as_array().unwrap() {
                for (service, list) in grant["fields"].as_object().unwrap() {
                    fields
                        .entry(service.clone())
                        .or_insert_with(|| list.clone());
                }
            }
        }
    }
    fields
}

/// Catalog documents with exactly `count` services: copies of the template
/// registers under new ids and provider ids.
fn catalog_documents(
    count: usize,
    templates: &[Value],
) -> (Vec<(PathBuf, Value)>, Vec<ServiceRef>) {
    let mut documents = Vec::new();
    let mut services = Vec::with_capacity(count);
    let mut copy = 0usize;
    while services.len() < count {
        let template = &templates[copy % templates.len()];
        let mut register = template.clone();
        let id = format!("{}-g{copy:05}", template["id"].as_str().unwrap());
        let template_provider = template["provider"].as_str().unwrap();
        let provider = format!("{template_provider}-g{copy:05}");
        register["id"] = json!(id);
        register["provider"] = json!(provider);
        let list = register["services"].as_array_mut().unwrap();
        list.truncate(count - services.len());
        for service in list.iter() {
            let code = service["code"].as_str().unwrap().to_owned();
            services.push(ServiceRef {
                provider: provider.clone(),
                template_key: format!("{template_provider}/{code}"),
                code,
            });
        }
        documents.push((PathBuf::from(format!("{id}.json")), register));
        copy += 1;
    }
    (documents, services)
}

/// Grant `n` in the shape of the shipped ones. A consumer's four grants
/// name consecutive pairs of services (k, k+1) from a per-consumer start, so
/// neighbouring grants share a service and a decision sometimes has to look
/// past a candidate with another purpose.
fn grant(n: usize, services: &[ServiceRef], fields: &HashMap<String, Value>) -> Value {
    let consumer = n / GRANTS_PER_CONSUMER;
    let k = n % GRANTS_PER_CONSUMER;
    let start = mix(consumer as u64) as usize % services.len();
    let pair = [
        &services[(start + k) % services.len()],
        &services[(start + k + 1) % services.len()],
    ];
    let keys: Vec<String> = pair
        .iter()
        .map(|s| format!("{}/{}", s.provider, s.code))
        .collect();
    let field_lists: serde_json::Map<String, Value> = pair
        .iter()
        .zip(&keys)
        .map(|(s, key)| (key.clone(), fields[&s.template_key].clone()))
        .collect();
    grants::grant_document(
        format!("growth-{n:06}"),
        format!("consumer-{consumer:06}"),
        &keys,
        field_lists,
        k,
    )
}

fn policy_documents(
    count: usize,
    services: &[ServiceRef],
    fields: &HashMap<String, Value>,
) -> Vec<(PathBuf, Value)> {
    (0..count)
        .step_by(GRANTS_PER_FILE)
        .map(|start| {
            let end = (start + GRANTS_PER_FILE).min(count);
            let grants: Vec<Value> = (start..end).map(|n| grant(n, services, fields)).collect();
            (
                PathBuf::from(format!("growth-{start:06}.json")),
                json!({ "grants": grants }),
            )
        })
        .collect()
}

/// An allowed call: grant `n`'s consumer, one of its two services (the
/// first, shared with the previous grant of the consumer when there is one)
/// and its purpose.
struct Call {
    consumer: String,
    service: Arc<Service>,
    reason: String,
}

fn call(n: usize, catalog: &Catalog, services: &[ServiceRef]) -> Call {
    let consumer = n / GRANTS_PER_CONSUMER;
    let k = n % GRANTS_PER_CONSUMER;
    let start = mix(consumer as u64) as usize % services.len();
    let s = &services[(start + k) % services.len()];
    Call {
        consumer: format!("consumer-{consumer:06}"),
        service: catalog.service(&s.provider, &s.code).unwrap().clone(),
        reason: format!("purpose-{k}"),
    }
}

fn decision<'a>(call: &'a Call) -> DecisionRequest<'a> {
    DecisionRequest {
        consumer: &call.consumer,
        service: &call.service,
        basis: "md-law-142-2018-art-6-3-1",
        reason: &call.reason,
        subject_present: true,
    }
}

fn policy_growth() -> String {
    let templates: Vec<Value> = TEMPLATE_FILES
        .iter()
        .map(|f| read_json(&repo().join("catalog").join(f)))
        .collect();
    let fields = template_fields();
    let mut out = String::new();
    out.push_str("## Policy decision\n\n");
    out.push_str(&format!(
        "ns per call, median / p99 of batch means ({BATCH} calls a batch). \
         hot: one request over and over; few: {FEW} allowed requests for random grants; \
         spread: {SPREAD} allowed requests for random grants. Every request is allowed. \
         For scale, one dependent memory load costs {:.0} ns over a 1 MiB working set \
         and {:.0} ns over 256 MiB on this machine (random pointer chase).\n\n",
        load_latency(1 << 20),
        load_latency(256 << 20),
    ));
    out.push_str(
        "| services | grants | catalog build (s) | index build (s) | `Catalog::service` spread | `decide` hot | `decide` few | `decide` spread | `RateLimiter::check` spread |\n",
    );
    out.push_str("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n");
    let cell = |s: Stats| format!("{:.0} / {:.0}", s.median, s.p99);
    for catalog_size in CATALOG_SIZES {
        let t = Instant::now();
        let (documents, services) = catalog_documents(catalog_size, &templates);
        let catalog = Catalog::from_documents(documents).expect("generated catalog loads");
        let catalog_build = t.elapsed();
        assert_eq!(catalog.services().count(), catalog_size);
        for grant_count in GRANT_SIZES {
            eprintln!("growth: policy, {catalog_size} services, {grant_count} grants");
            let documents = policy_documents(grant_count, &services, &fields);
            let t = Instant::now();
            let index = PolicyIndex::from_documents(documents, &catalog, &|_: &str| true)
                .expect("generated grants load");
            let index_build = t.elapsed();
            assert_eq!(index.len(), grant_count);

            let mut rng = Rng(grant_count as u64 ^ catalog_size as u64);
            let calls: Vec<Call> = (0..SPREAD)
                .map(|_| call(rng.below(grant_count as u64) as usize, &catalog, &services))
                .collect();
            for c in &calls {
                assert!(index.decide(&decision(c), NOW).is_allowed());
            }
            let lookups: Vec<(&str, &str)> = (0..SPREAD)
                .map(|_| {
                    let s = &services[rng.below(catalog_size as u64) as usize];
                    (s.provider.as_str(), s.code.as_str())
                })
                .collect();

            let lookup = time_batched(|i| {
                let (provider, code) = lookups[i % SPREAD];
                catalog
                    .service(black_box(provider), black_box(code))
                    .is_some()
            });
            let hot_call = &calls[0];
            let hot = time_batched(|_| {
                index
                    .decide(black_box(&decision(hot_call)), NOW)
                    .is_allowed()
            });
            let few = time_batched(|i| {
                index
                    .decide(black_box(&decision(&calls[i % FEW])), NOW)
                    .is_allowed()
            });
            let spread = time_batched(|i| {
                index
                    .decide(black_box(&decision(&calls[i % SPREAD])), NOW)
                    .is_allowed()
            });
            // One limiter per size, warmed with every request once, so its
            // map holds a key per distinct (consumer, service) pair of the
            // spread, as after a busy minute. Whether a check passes or is
            // limited does not change its work: two map lookups under a read
            // lock and one mutex.
            let limiter = RateLimiter::new();
            let grants: Vec<_> = calls
                .iter()
                .map(|c| index.decide(&decision(c), NOW).grant().unwrap())
                .collect();
            for (c, g) in calls.iter().zip(&grants) {
                let _ = limiter.check(g, &c.service.key, NOW);
            }
            let rate = time_batched(|i| {
                let i = i % SPREAD;
                limiter
                    .check(black_box(grants[i]), &calls[i].service.key, NOW)
                    .is_ok()
            });
            out.push_str(&format!(
                "| {catalog_size} | {grant_count} | {} | {} | {} | {} | {} | {} | {} |\n",
                secs(catalog_build),
                secs(index_build),
                cell(lookup),
                cell(hot),
                cell(few),
                cell(spread),
                cell(rate),
            ));
        }
    }
    out.push('\n');
    out
}

// ---------------------------------------------------------------------------
// Audit.

struct NullSigner;

impl TreeHeadSigner for NullSigner {
    fn keyid(&self) -> String {
        "bench".to_string()
    }
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, String> {
        Ok(message[..8].to_vec())
    }
}

fn subject_of(i: u64) -> String {
    format!("{:013}", 2_000_000_000_000u64 + (mix(i) >> 8) % SUBJECTS)
}

fn consumer_of(i: u64) -> String {
    format!("consumer-{:03}", mix(i) % CONSUMERS)
}

fn service_of(i: u64) -> &'static str {
    AUDIT_SERVICES[((mix(i) >> 40) % AUDIT_SERVICES.len() as u64) as usize]
}

fn micros_time(micros: u64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1000).unwrap()
}

fn received_micros(i: u64) -> u64 {
    T0_MICROS + i * step_micros()
}

/// Record `i` of the generated log: about 1 KB, like an exchange's, spread
/// over consumers, services, subjects and time.
fn record(i: u64) -> AuditRecord {
    let received = received_micros(i);
    let service = service_of(i);
    let provider = service.split_once('/').unwrap().0;
    let consumer = consumer_of(i);
    AuditRecord {
        received_at: format_timestamp(micros_time(received)),
        forwarded_at: Some(format_timestamp(micros_time(received + 1_000))),
        answered_at: format_timestamp(micros_time(received + 100_000)),
        consumer_idno: Some(format!("{:013}", 1_003_600_000_000u64 + mix(i) % CONSUMERS)),
        calling_user: Some(format!("{:013}", 2_000_000_000_000u64 + mix(i) % 5_000)),
        provider: Some(provider.to_string()),
        service: Some(service.to_string()),
        grant_id: Some(format!("{consumer}-social-aid")),
        consumer: Some(consumer),
        subject: Some(subject_of(i)),
        ..records::exchange_record(i)
    }
}

fn audit_dir() -> tempfile::TempDir {
    let base = dirs::bench_dir("GROWTH_BENCH_DIR");
    tempfile::Builder::new()
        .prefix("growth-")
        .tempdir_in(base)
        .unwrap()
}

fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let meta = entry.metadata().unwrap();
        total += if meta.is_dir() {
            dir_bytes(&entry.path())
        } else {
            meta.len()
        };
    }
    total
}

fn gib(bytes: u64) -> String {
    format!("{:.2}", bytes as f64 / f64::from(1u32 << 30))
}

/// Appends records `from..to` (numbered, not seqs) with `appenders`
/// concurrent durable appenders; stops early at `deadline`. Returns how far
/// it got.
fn grow(
    runtime: &tokio::runtime::Runtime,
    log: &AuditLog,
    from: u64,
    to: u64,
    appenders: u64,
    deadline: Instant,
) -> u64 {
    let next = Arc::new(AtomicU64::new(from));
    let stop = Arc::new(AtomicBool::new(false));
    runtime.block_on(async {
        let progress = {
            let next = next.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                let mut tick = tokio::time::interval(Duration::from_secs(10));
                tick.tick().await;
                loop {
                    tick.tick().await;
                    let done = next.load(Ordering::Relaxed).min(to);
                    eprintln!(
                        "growth: {done} records ({:.0}/s since {from})",
                        (done - from) as f64 / started.elapsed().as_secs_f64()
                    );
                    if Instant::now() >= deadline {
                        stop.store(true, Ordering::Relaxed);
                    }
                }
            })
        };
        let mut tasks = Vec::new();
        for _ in 0..appenders {
            let log = log.clone();
            let next = next.clone();
            let stop = stop.clone();
            tasks.push(tokio::spawn(async move {
                // Check the stop flag before taking a number, so that every
                // number taken below `to` is appended.
                while !stop.load(Ordering::Relaxed) {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= to {
                        break;
                    }
                    log.append(record(i)).await.unwrap();
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        progress.abort();
    });
    next.load(Ordering::Relaxed).min(to)
}

/// One query shape measured at one size.
struct QueryRow {
    shape: &'static str,
    stats: Stats,
    items: f64,
    /// Bytes the process read from the disk (not the page cache) per call.
    disk_bytes: f64,
}

/// Bytes this process has had read from storage (`read_bytes` of
/// `/proc/self/io`: page-cache hits do not count); 0 where unavailable.
fn disk_read_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/io")
        .ok()
        .and_then(|io| {
            io.lines()
                .find_map(|l| l.strip_prefix("read_bytes: "))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Times `f` (which returns how many records it found) up to `count` times
/// or [`QUERY_MEASURE_TIME`]; microseconds per call.
fn time_queries(count: usize, mut f: impl FnMut() -> usize) -> (Stats, f64, f64) {
    for _ in 0..count.min(20) {
        black_box(f());
    }
    let mut samples = Vec::with_capacity(count);
    let mut items = 0usize;
    let disk_before = disk_read_bytes();
    let start = Instant::now();
    while samples.len() < count && start.elapsed() < QUERY_MEASURE_TIME {
        let t = Instant::now();
        items += black_box(f());
        samples.push(t.elapsed().as_nanos() as f64 / 1000.0);
    }
    let n = samples.len();
    let disk = disk_read_bytes().saturating_sub(disk_before) as f64 / n as f64;
    (stats(samples), items as f64 / n as f64, disk)
}

fn measure_queries(log: &AuditLog, size: u64, count: usize) -> Vec<QueryRow> {
    let mut rng = Rng(size);
    let span = size * step_micros();
    let window = |rng: &mut Rng, width: u64| {
        let from = T0_MICROS + rng.below(span.saturating_sub(width).max(1));
        (Some(micros_time(from)), Some(micros_time(from + width)))
    };
    let page = |log: &AuditLog, q: &AuditQuery| log.query(q).unwrap().items.len();
    let mut rows = Vec::new();
    let mut shape = |shape: &'static str, (stats, items, disk_bytes): (Stats, f64, f64)| {
        rows.push(QueryRow {
            shape,
            stats,
            items,
            disk_bytes,
        });
    };
    shape(
        "by subject",
        time_queries(count, || {
            let q = AuditQuery {
                subject: Some(subject_of(rng.below(size))),
                ..AuditQuery::default()
            };
            page(log, &q)
        }),
    );
    shape(
        "by consumer, one day",
        time_queries(count, || {
            let (from, to) = window(&mut rng, DAY_MICROS);
            let q = AuditQuery {
                consumer: Some(consumer_of(rng.below(size))),
                from,
                to,
                ..AuditQuery::default()
            };
            page(log, &q)
        }),
    );
    shape(
        "by service",
        time_queries(count, || {
            let q = AuditQuery {
                service: Some(service_of(rng.below(size)).to_string()),
                ..AuditQuery::default()
            };
            page(log, &q)
        }),
    );
    shape(
        "by time, one hour",
        time_queries(count, || {
            let (from, to) = window(&mut rng, HOUR_MICROS);
            let q = AuditQuery {
                from,
                to,
                ..AuditQuery::default()
            };
            page(log, &q)
        }),
    );
    shape(
        "record(seq)",
        time_queries(count * 10, || {
            usize::from(log.record(rng.below(size)).unwrap().is_some())
        }),
    );
    shape(
        "inclusion_proof",
        time_queries(count * 10, || {
            log.inclusion_proof(rng.below(size), size).unwrap().len()
        }),
    );
    rows
}

fn audit_growth(args: &Args) -> String {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = audit_dir();
    eprintln!("growth: audit log in {}", dir.path().display());
    let (log, _) = runtime
        .block_on(async { AuditLog::open(AuditConfig::new(dir.path()), Arc::new(NullSigner)) })
        .unwrap();
    let mut checkpoints: Vec<u64> = AUDIT_CHECKPOINTS
        .into_iter()
        .filter(|&c| c < args.max_records)
        .collect();
    checkpoints.push(args.max_records);
    let deadline = Instant::now() + Duration::from_secs(args.append_time_limit);

    let mut growth = String::new();
    let mut queries = String::new();
    let mut size = 0u64;
    for target in checkpoints {
        eprintln!("growth: appending up to {target} records");
        let t = Instant::now();
        let reached = grow(&runtime, &log, size, target, args.appenders, deadline);
        let append_time = t.elapsed();
        let rate = (reached - size) as f64 / append_time.as_secs_f64();
        size = reached;
        assert_eq!(log.tree_size(), size);
        // How far the indexer thread is behind the appends: what a query
        // could not find yet, and what `sync_index` has to do.
        let indexed = log
            .query(&AuditQuery {
                limit: 1,
                ..AuditQuery::default()
            })
            .unwrap()
            .indexed;
        let t = Instant::now();
        log.sync_index().unwrap();
        let catch_up = t.elapsed();
        let bytes = dir_bytes(dir.path());
        let index_bytes = std::fs::metadata(dir.path().join("index.redb"))
            .map(|m| m.len())
            .unwrap_or(0);
        growth.push_str(&format!(
            "| {size} | {rate:.0} | {} | {} | {} | {} |\n",
            size - indexed,
            secs(catch_up),
            gib(bytes - index_bytes),
            gib(index_bytes),
        ));
        eprintln!("growth: measuring queries at {size} records");
        for row in measure_queries(&log, size, args.queries) {
            queries.push_str(&format!(
                "| {size} | {} | {:.1} | {:.1} | {:.1} | {:.0} | {} |\n",
                row.shape,
                row.stats.median,
                row.stats.p99,
                row.items,
                row.disk_bytes / 1024.0,
                row.stats.samples
            ));
        }
        eprintln!("growth: at {size} records\n{growth}\n{queries}");
        if size < target {
            eprintln!("growth: append time limit reached at {size} records");
            break;
        }
    }
    runtime.block_on(log.close()).unwrap();
    // The whole index built again from the segments, as a broker does at
    // start after a restore or an upgrade that changes the index layout:
    // the indexer's own rate, without appenders beside it.
    std::fs::remove_file(dir.path().join("index.redb")).unwrap();
    let t = Instant::now();
    let (log, _) = runtime
        .block_on(async { AuditLog::open(AuditConfig::new(dir.path()), Arc::new(NullSigner)) })
        .unwrap();
    let reopen = t.elapsed();
    let t = Instant::now();
    log.sync_index().unwrap();
    let rebuild = t.elapsed();
    runtime.block_on(log.close()).unwrap();
    drop(dir);

    let mut out = String::new();
    out.push_str("## Audit log\n\n");
    out.push_str(&format!(
        "{} concurrent durable appenders; records of {} B (canonical leaf), {SUBJECTS} subjects, \
         {CONSUMERS} consumers, {} services, one every {:.2} s of `received_at`.\n\n",
        args.appenders,
        record(0).canonical_bytes().unwrap().len(),
        AUDIT_SERVICES.len(),
        step_micros() as f64 / 1e6
    ));
    out.push_str(
        "| records | append rate since previous size (records/s) | index behind at that size (records) | `sync_index` (s) | segments (GiB) | index (GiB) |\n",
    );
    out.push_str("| ---: | ---: | ---: | ---: | ---: | ---: |\n");
    out.push_str(&growth);
    out.push_str(&format!(
        "\nIndex rebuilt from the segments (index file deleted, log reopened in {} s, \
         then `sync_index`): {size} records in {} s, {:.0} records/s.\n",
        secs(reopen),
        secs(rebuild),
        size as f64 / rebuild.as_secs_f64()
    ));
    out.push_str(
        "\nµs per call; queries return the first page (50 records at most). \
         Disk KiB: bytes read from storage, not the page cache, per call.\n\n",
    );
    out.push_str(
        "| records | query | median (µs) | p99 (µs) | records per page | disk KiB read per call | calls |\n",
    );
    out.push_str("| ---: | --- | ---: | ---: | ---: | ---: | ---: |\n");
    out.push_str(&queries);
    out.push('\n');
    out
}
