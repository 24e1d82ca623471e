//! A policy (grant) file from bytes, checked against the shipped catalog, as
//! `PolicyIndex::load_dir` reads each file.
//!
//! Invariants checked: loading never panics; for every loaded grant, a call
//! stating one of its bases and purposes for one of its services is decided
//! without panicking, and an allowed call is allowed only by a grant of that
//! consumer, naming that service, basis and purpose, active and in date. A
//! basis no grant names is never allowed.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use mconnect::catalog::Catalog;
use mconnect::policy::{Decision, DecisionRequest, GrantStatus, PolicyIndex};
use serde_json::Value;

static CATALOG: LazyLock<Catalog> = LazyLock::new(|| {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    Catalog::load_dir(&root.join("catalog")).expect("shipped catalog loads")
});

fuzz_target!(|data: &[u8]| {
    let Ok(document) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let known = |id: &str| !id.starts_with("unknown");
    let Ok(index) = PolicyIndex::from_documents([("fuzz.json".into(), document)], &CATALOG, &known)
    else {
        return;
    };
    for grant in index.grants().take(8) {
        let _ = grant.in_date(i64::MIN);
        let _ = grant.in_date(i64::MAX);
        for key in grant.services.iter().take(4) {
            let Some(service) = CATALOG.service_by_key(key) else {
                panic!(
                    "grant {} names {key}, which the catalog does not have",
                    grant.id
                );
            };
            let now = grant.valid_from;
            for basis in grant.legal_bases.iter().take(2) {
                for purpose in grant.purposes.iter().take(2) {
                    let request = DecisionRequest {
                        consumer: &grant.consumer,
                        service,
                        basis: &basis.id,
                        reason: &purpose.code,
                        subject_present: true,
                    };
                    if let Decision::Allow(by) = index.decide(&request, now) {
                        assert_eq!(by.consumer, grant.consumer);
                        assert!(by.covers(key));
                        assert!(by.has_basis(&basis.id) && by.has_purpose(&purpose.code));
                        assert!(by.in_date(now) && by.status == GrantStatus::Active);
                    }
                }
            }
            let stranger = DecisionRequest {
                consumer: &grant.consumer,
                service,
                basis: "\u{0}not-a-basis",
                reason: "\u{0}not-a-purpose",
                subject_present: true,
            };
            assert!(!index.decide(&stranger, now).is_allowed());
        }
    }
});
