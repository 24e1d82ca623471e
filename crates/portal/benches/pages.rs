//! Server time of the portal's pages, in-process (no network): the catalog,
//! a search, a service page, and the lookup's list, question and check pages
//! of a signed-in official. The lookup's answer page adds the broker's
//! exchange, measured by the broker's own benchmarks (benches/README.md).
//!
//! `cargo bench -p mconnect-portal --bench pages`

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::Request;
use http_body_util::Full;
use mconnect::catalog::Catalog;
use mconnect::policy::PolicyIndex;
use mconnect_portal::Portal;
use mconnect_portal::assignments::Assignments;
use mconnect_portal::lookup::Lookups;
use mconnect_portal::session::Official;

fn get(path: &str, cookie: &str) -> Request<Full<Bytes>> {
    Request::get(path)
        .header("cookie", cookie)
        .body(Full::new(Bytes::new()))
        .unwrap()
}

fn pages(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let catalog = Catalog::load_dir(&root.join("catalog")).unwrap();
    let index = PolicyIndex::load_dir(&root.join("policies"), &catalog, &|_| true).unwrap();
    let official = Official {
        idnp: "2000000000015".into(),
        name: "Ion Popescu".into(),
        organisation: "Primăria municipiului Cahul".into(),
        participant: "apl-cahul".into(),
        roles: vec!["official".into()],
    };
    let assignments = Assignments::in_memory();
    let grants: BTreeSet<String> = index
        .grants()
        .filter(|g| g.consumer == "apl-cahul")
        .map(|g| g.id.clone())
        .collect();
    assignments
        .replace(
            "apl-cahul",
            BTreeMap::from([(official.idnp.clone(), grants)]),
        )
        .unwrap();
    // No consumer client: these pages never call the broker.
    let lookups = Lookups::new(
        HashMap::new(),
        index.grants().cloned().collect(),
        assignments,
    );
    let portal = Arc::new(
        Portal::new(Arc::new(catalog))
            .with_dev_sign_in(vec![official.clone()])
            .with_lookups(lookups),
    );
    let session = portal
        .sessions()
        .open(mconnect_portal::session::Person::Official(official))
        .unwrap();
    let cookie = format!("__Host-mconnect_session={session}");
    let question = "/lookup/apl-cahul-residence/asp-rsp/person-by-idnp";
    // A pending lookup, for the check page.
    let form = format!(
        "csrf={}&purpose=residence-verification&basis=md-law-436-2006-art-29&person=2000000000037",
        portal.sessions().touch(&session).unwrap().csrf
    );
    let post = Request::post(question)
        .header("cookie", &cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Full::new(Bytes::from(form)))
        .unwrap();
    assert_eq!(runtime.block_on(portal.handle(post)).status(), 303);

    let mut group = c.benchmark_group("portal");
    for (name, path) in [
        ("catalog", "/catalog"),
        ("search", "/catalog?q=asigurari"),
        ("service page", "/catalog/services/cnas/insurance-record"),
        ("lookup list", "/lookup"),
        ("question page", question),
        ("check page", "/lookup/check"),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| {
                let response = runtime.block_on(portal.handle(get(path, &cookie)));
                assert_eq!(response.status(), 200, "{path}");
                response
            })
        });
    }
    group.finish();
}

criterion_group!(benches, pages);
criterion_main!(benches);
