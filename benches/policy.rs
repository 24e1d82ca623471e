//! Benchmarks of the authorisation and validation steps of the exchange path:
//! the policy decision at 1k and 100k grants (target: under 1 µs at 100k),
//! the rate and quota check with calls spread over 100k grants (issue 17:
//! under 1 µs; the implementation before issue 17 is measured beside it,
//! `fixtures/rate_before.rs`), building the index, JSON Schema validation of
//! a request and a response, and data minimisation of a realistic response.
//!
//! The grants are generated from the shape of the shipped ones against the
//! shipped catalog, so the index and the decision do the work they do in
//! production. Figures are recorded in `benches/README.md`.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::path::{Path, PathBuf};

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use mconnect::catalog::Catalog;
use mconnect::policy::{DecisionRequest, Grant, PolicyIndex, RateLimiter, minimise};
use serde_json::{Value, json};

#[path = "fixtures/grants.rs"]
mod fixtures;
#[path = "fixtures/rate_before.rs"]
mod rate_before;

/// Grants per generated policy file (operators split grants by consumer, so
/// files hold a few hundred to a few thousand grants).
const GRANTS_PER_FILE: usize = 1_000;
/// Each generated consumer holds this many grants, so a decision scans a
/// realistic handful of candidates per (consumer, service).
const GRANTS_PER_CONSUMER: usize = 4;
/// A fixed instant inside every generated grant's validity (2026-06-01).
const NOW: i64 = 1_780_272_000;

const SERVICES: [&str; 5] = [
    "asp-rsp/person-by-idnp",
    "asp-rsp/persons-lookup",
    "cnas/insurance-record",
    "asp-cadastru/properties-by-owner",
    "asp-vehicule/vehicles-by-owner",
];

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn catalog() -> Catalog {
    Catalog::load_dir(&repo().join("catalog")).expect("the shipped catalog loads")
}

fn fields(service: &str) -> Value {
    match service {
        "asp-rsp/person-by-idnp" => json!(["idnp", "first_name", "last_name", "address.locality"]),
        "asp-rsp/persons-lookup" => json!([
            "persons[].idnp",
            "persons[].first_name",
            "persons[].last_name",
            "persons[].address.locality"
        ]),
        "cnas/insurance-record" => json!(["idnp", "insured", "contributions[].year"]),
        "asp-cadastru/properties-by-owner" => json!(["owner", "properties[].type"]),
        _ => json!(["owner", "vehicles[].make", "vehicles[].model"]),
    }
}

/// One grant in the shape of the shipped ones: two services, one purpose,
/// two legal bases, a field list per service. The k-th grant of a consumer
/// has its own purpose, so a decision has to look past the first candidates.
fn grant(n: usize) -> Value {
    let consumer = n / GRANTS_PER_CONSUMER;
    let k = n % GRANTS_PER_CONSUMER;
    let services = [
        SERVICES[n % SERVICES.len()],
        SERVICES[(n + 1) % SERVICES.len()],
    ];
    let field_lists: serde_json::Map<String, Value> = services
        .iter()
        .map(|s| ((*s).to_owned(), fields(s)))
        .collect();
    let services: Vec<String> = services.iter().map(|s| (*s).to_owned()).collect();
    fixtures::grant_document(
        format!("bench-{n:06}"),
        format!("consumer-{consumer:05}"),
        &services,
        field_lists,
        k,
    )
}

/// `count` grants as policy documents of [`GRANTS_PER_FILE`] grants each.
fn documents(count: usize) -> Vec<(PathBuf, Value)> {
    (0..count)
        .step_by(GRANTS_PER_FILE)
        .map(|start| {
            let end = (start + GRANTS_PER_FILE).min(count);
            let grants: Vec<Value> = (start..end).map(grant).collect();
            (
                PathBuf::from(format!("bench-{start:06}.json")),
                json!({ "grants": grants }),
            )
        })
        .collect()
}

fn index(catalog: &Catalog, count: usize) -> PolicyIndex {
    PolicyIndex::from_documents(documents(count), catalog, &|_: &str| true)
        .expect("generated grants load")
}

fn bench_decide(c: &mut Criterion) {
    let catalog = catalog();
    let service = catalog
        .service("asp-rsp", "person-by-idnp")
        .expect("catalogued")
        .clone();
    let mut group = c.benchmark_group("policy/decide");
    for count in [1_000, 100_000] {
        let index = index(&catalog, count);
        assert_eq!(index.len(), count);
        // A consumer in the middle of the index whose last grant (purpose-3)
        // covers person-by-idnp (consumer numbers 3 mod 5 line up so), after
        // another grant for the same service: the allow skips a candidate.
        let middle = count / GRANTS_PER_CONSUMER / 2 / 5 * 5 + 3;
        let consumer = format!("consumer-{middle:05}");
        let allow = DecisionRequest {
            consumer: &consumer,
            service: &service,
            basis: "md-law-142-2018-art-6-3-1",
            reason: "purpose-3",
            subject_present: true,
        };
        assert!(
            index.decide(&allow, NOW).is_allowed(),
            "the bench call is allowed"
        );
        group.bench_function(format!("allow/{count}"), |b| {
            b.iter(|| black_box(index.decide(black_box(&allow), NOW)).is_allowed())
        });
        let wrong_purpose = DecisionRequest {
            reason: "not-a-purpose",
            ..allow
        };
        group.bench_function(format!("deny-purpose/{count}"), |b| {
            b.iter(|| black_box(index.decide(black_box(&wrong_purpose), NOW)).is_allowed())
        });
        let stranger = DecisionRequest {
            consumer: "consumer-unknown",
            ..allow
        };
        group.bench_function(format!("deny-unknown/{count}"), |b| {
            b.iter(|| black_box(index.decide(black_box(&stranger), NOW)).is_allowed())
        });
    }
    group.finish();
}

/// Calls cycled through by the rate check: random (grant, service) pairs,
/// far more (consumer, service) keys than the CPU caches hold.
const SPREAD: usize = 1 << 16;

/// The rate and quota check as the exchange makes it on one broker
/// (`RateLimiter::check` after an allow, embedded counts, no cluster), with
/// calls for random grants of 100k. Each limiter is first given every call
/// once, so it holds a key per (consumer, service) of the spread, as after a
/// busy minute. Whether a check passes or is limited does not change its
/// work much: both find the key and take its lock.
fn bench_rate(c: &mut Criterion) {
    let catalog = catalog();
    let count = 100_000;
    let index = index(&catalog, count);
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        // xorshift64*: enough for spreading calls, and the same every run.
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    // The service key as the exchange passes it: the catalog's (a handful of
    // strings, in cache), not the grant's copy.
    let key = |granted: &str| {
        let (provider, code) = granted.split_once('/').expect("provider/code");
        catalog
            .service(provider, code)
            .expect("catalogued")
            .key
            .as_str()
    };
    let calls: Vec<(&Grant, &str)> = (0..SPREAD)
        .map(|_| {
            let n = (next() % count as u64) as usize;
            let grant = index.grant(&format!("bench-{n:06}")).expect("generated");
            let service = &grant.services[(next() % 2) as usize];
            (grant, key(service))
        })
        .collect();
    let after = RateLimiter::new();
    let before = rate_before::RateLimiter::new();
    for (grant, service) in &calls {
        let _ = after.check(grant, service, NOW);
        let _ = before.check(grant, service, NOW);
    }
    let mut group = c.benchmark_group("rate/check-spread");
    // Alternated within the run, so both see the same machine.
    for round in 0..2 {
        let mut i = 0;
        group.bench_function(format!("before/{count}/{round}"), |b| {
            b.iter(|| {
                let (grant, service) = calls[i % SPREAD];
                i += 1;
                before
                    .check(black_box(grant), black_box(service), NOW)
                    .is_ok()
            })
        });
        let mut i = 0;
        group.bench_function(format!("after/{count}/{round}"), |b| {
            b.iter(|| {
                let (grant, service) = calls[i % SPREAD];
                i += 1;
                after
                    .check(black_box(grant), black_box(service), NOW)
                    .is_ok()
            })
        });
    }
    group.finish();
}

fn bench_build(c: &mut Criterion) {
    let catalog = catalog();
    let mut group = c.benchmark_group("policy/build");
    group.sample_size(10);
    for count in [1_000, 100_000] {
        // Documents are made outside the timing: in production they come
        // from the file reader, which is measured separately.
        group.bench_function(format!("{count}"), |b| {
            b.iter_batched(
                || documents(count),
                |docs| {
                    PolicyIndex::from_documents(docs, &catalog, &|_: &str| true)
                        .expect("generated grants load")
                },
                BatchSize::PerIteration,
            )
        });
    }
    group.finish();
}

/// A realistic answer of `asp-rsp/persons-lookup`: 20 full person records.
fn persons_response() -> Value {
    let persons: Vec<Value> = (0..20)
        .map(|i| {
            json!({
                "idnp": format!("2000000{i:06}"),
                "first_name": "Ion",
                "last_name": "Popescu",
                "birth_date": "1980-05-17",
                "sex": if i % 2 == 0 { "M" } else { "F" },
                "citizenship": "MDA",
                "status": "alive",
                "address": {
                    "region": "Cahul", "locality": "Cahul", "street": "str. Ștefan cel Mare",
                    "house": format!("{}", i + 1), "apartment": null
                },
                "identity_document": {
                    "type": "buletin", "series": "B", "number": format!("{:09}", 100 + i),
                    "issued": "2015-03-01", "expires": "2030-03-01"
                }
            })
        })
        .collect();
    json!({ "persons": persons })
}

fn bench_schema(c: &mut Criterion) {
    let catalog = catalog();
    let service = catalog
        .service("asp-rsp", "persons-lookup")
        .expect("catalogued");
    let request = json!({"idnps": ["2000000000015", "2003000000027", "2000000000023"]});
    let response = persons_response();
    assert!(service.validate_request(&request).is_ok());
    assert!(service.validate_response(&response).is_ok());
    let mut broken = response.clone();
    broken["persons"][7]["birth_date"] = json!("17.05.1980");
    assert!(service.validate_response(&broken).is_err());

    let mut group = c.benchmark_group("schema");
    group.bench_function("request/persons-lookup", |b| {
        b.iter(|| service.validate_request(black_box(&request)).is_ok())
    });
    group.bench_function("response/persons-lookup-20", |b| {
        b.iter(|| service.validate_response(black_box(&response)).is_ok())
    });
    group.bench_function("response-invalid/persons-lookup-20", |b| {
        b.iter(|| service.validate_response(black_box(&broken)).is_err())
    });
    group.finish();
}

/// The strict parse every provider answer goes through (`mconnect::json`):
/// duplicate names refused, values and depth bounded. 18 % of the broker's
/// samples with the 50-person answer under load (issue 17's profile).
fn bench_json(c: &mut Criterion) {
    let bytes = serde_json::to_vec(&persons_response()).expect("serialises");
    assert!(mconnect::json::parse(&bytes, 100_000).is_ok());
    let mut group = c.benchmark_group("json");
    group.bench_function("parse/persons-lookup-20", |b| {
        b.iter(|| mconnect::json::parse(black_box(&bytes), 100_000).is_ok())
    });
    group.finish();
}

fn bench_minimise(c: &mut Criterion) {
    let catalog = catalog();
    let index = index(&catalog, GRANTS_PER_CONSUMER);
    let grant = index.grant("bench-000000").expect("generated");
    let allowed = grant.fields_for("asp-rsp/persons-lookup");
    let response = persons_response();
    let mut group = c.benchmark_group("minimise");
    group.bench_function("persons-lookup-20", |b| {
        b.iter_batched(
            || response.clone(),
            |mut value| {
                minimise(&mut value, allowed);
                value
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(
    benches,
    bench_decide,
    bench_rate,
    bench_build,
    bench_schema,
    bench_json,
    bench_minimise
);
criterion_main!(benches);
