//! A catalog register file from bytes, as `Catalog::load_dir` reads each
//! file: JSON, the register schema, service schemas compiled, cross-checks.
//!
//! Invariants checked: loading never panics; a loaded catalog answers
//! lookups for every service it lists, and each service's schemas validate a
//! body without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mconnect::catalog::Catalog;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Ok(document) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let Ok(catalog) = Catalog::from_documents([("fuzz.json".into(), document)]) else {
        return;
    };
    for service in catalog.services() {
        let found = catalog
            .service(&service.provider, &service.code)
            .expect("a listed service is found by provider and code");
        assert_eq!(found.key, service.key);
        assert!(catalog.service_by_key(&service.key).is_some());
        let _ = service.validate_request(&Value::Null);
        let _ = service.validate_response(&serde_json::json!({"a": [1, "b", null]}));
    }
    let _ = mconnect::catalog::to_dcat_ap(&catalog);
});
