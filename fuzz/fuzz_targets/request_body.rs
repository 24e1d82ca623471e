//! JSON bodies through the shipped catalog's request and response schemas and
//! through minimisation with the shipped grants' allowed fields.
//!
//! Invariants checked:
//! - validation never panics and its reason never repeats a string of the
//!   body (values may be personal data; reasons go to logs and consumers),
//!   unless the schema itself holds that text;
//! - after minimisation every remaining scalar lies under a path the grant
//!   allows (nothing leaks), and minimising again changes nothing.
//!
//! Input: byte 0 picks the service, byte 1 the field set (a grant naming the
//! service, or none), the rest is the body.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use mconnect::catalog::{Catalog, Service};
use mconnect::policy::{FieldSet, PolicyIndex, minimise};
use serde_json::Value;

struct Shipped {
    // (service, its schemas as text, the field sets of the grants naming it)
    services: Vec<(std::sync::Arc<Service>, String, Vec<FieldSet>)>,
}

static SHIPPED: LazyLock<Shipped> = LazyLock::new(|| {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let catalog = Catalog::load_dir(&root.join("catalog")).expect("shipped catalog loads");
    let policy = PolicyIndex::load_dir(&root.join("policies"), &catalog, &|_| true)
        .expect("shipped policies load");
    let mut services: Vec<_> = catalog
        .services()
        .map(|service| {
            let fields: Vec<FieldSet> = policy
                .grants()
                .filter(|g| g.covers(&service.key))
                .map(|g| g.fields_for(&service.key).clone())
                .collect();
            let schemas = format!(
                "{} {}",
                service.request_schema.clone().unwrap_or_default(),
                service.response_schema
            );
            (service.clone(), schemas, fields)
        })
        .collect();
    services.sort_by(|a, b| a.0.key.cmp(&b.0.key));
    Shipped { services }
});

fn strings<'v>(value: &'v Value, out: &mut Vec<&'v str>) {
    match value {
        Value::String(s) => out.push(s),
        Value::Array(items) => items.iter().for_each(|v| strings(v, out)),
        Value::Object(map) => map.iter().for_each(|(k, v)| {
            out.push(k);
            strings(v, out);
        }),
        _ => {}
    }
}

fn no_echo(reason: &str, body: &Value, schemas: &str) {
    let mut found = Vec::new();
    strings(body, &mut found);
    for s in found {
        // Lower-case words alone can coincide with the message's own wording
        // ("is a required property"); the data worth hiding (ids, names,
        // dates) has digits, capitals or punctuation.
        let wording = s.bytes().all(|b| b.is_ascii_lowercase() || b == b' ');
        if s.len() >= 8 && !wording && !schemas.contains(s) {
            assert!(
                !reason.contains(s),
                "reason {reason:?} repeats body text {s:?}"
            );
        }
    }
}

// Whether `path` (object keys, arrays transparent) lies under an allowed path.
fn allowed(fields: &FieldSet, path: &[&str]) -> bool {
    fields.paths().iter().any(|p| {
        let allowed: Vec<&str> = p.split('.').map(|s| s.trim_end_matches("[]")).collect();
        allowed.len() <= path.len() && allowed.iter().zip(path).all(|(a, b)| a == b)
    })
}

fn no_leak<'v>(value: &'v Value, path: &mut Vec<&'v str>, fields: &FieldSet) {
    match value {
        Value::Null => {}
        Value::Array(items) => items.iter().for_each(|v| no_leak(v, path, fields)),
        Value::Object(map) => {
            for (k, v) in map {
                path.push(k);
                no_leak(v, path, fields);
                path.pop();
            }
        }
        scalar => assert!(
            allowed(fields, path),
            "{scalar} at {path:?} survived minimisation with {:?}",
            fields.paths()
        ),
    }
}

fuzz_target!(|data: &[u8]| {
    let shipped = &*SHIPPED;
    let [which, grant, body @ ..] = data else {
        return;
    };
    let (service, schemas, sets) = &shipped.services[*which as usize % shipped.services.len()];
    let Ok(mut body) = serde_json::from_slice::<Value>(body) else {
        return;
    };
    if let Err(violation) = service.validate_request(&body) {
        no_echo(&violation.reason, &body, schemas);
    }
    if let Err(violation) = service.validate_response(&body) {
        no_echo(&violation.reason, &body, schemas);
    }
    let fields = match sets.get(*grant as usize) {
        Some(set) => set.clone(),
        None => FieldSet::EMPTY,
    };
    minimise(&mut body, &fields);
    no_leak(&body, &mut Vec::new(), &fields);
    let once = body.clone();
    minimise(&mut body, &fields);
    assert_eq!(once, body, "minimisation is not idempotent");
});
