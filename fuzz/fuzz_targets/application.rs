//! A connection application (`POST /v1/connection-requests` body) from bytes,
//! validated as the broker does: JSON, the application schema, then the
//! sandbox registry and the shipped catalog, and a trial build of its grants.
//!
//! Invariants checked: validation never panics; an application it accepts
//! serializes back to JSON that it accepts again; every refusal carries at
//! least one problem and a refusal code.
#![no_main]

use std::sync::{Arc, LazyLock};

use libfuzzer_sys::fuzz_target;
use mconnect::catalog::Catalog;
use mconnect::connect::application::{refusal_code, validate_application};
use mconnect::registry::{Organisation, Participant, Registry, RegistrySnapshot, Role};
use mconnect::store::RedbStore;
use serde_json::Value;

struct World {
    catalog: Catalog,
    snapshot: Arc<RegistrySnapshot>,
    // Keeps the registry database alive for the whole run.
    _dir: std::path::PathBuf,
}

static WORLD: LazyLock<World> = LazyLock::new(|| {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let catalog = Catalog::load_dir(&root.join("catalog")).expect("shipped catalog loads");
    let dir = std::env::temp_dir().join(format!("mconnect-fuzz-app-{}", std::process::id()));
    let store = RedbStore::open(&dir.join("state.redb")).expect("registry store opens");
    // Participants are registered without certificates: the anchors only
    // have to exist (a development CA made for this run).
    let ca = mconnect::pki::DevCa::generate("fuzz bus ca").expect("a development CA");
    let anchors = mconnect::trust::TrustAnchors::from_pem(ca.cert_pem()).expect("anchors");
    let registry = Registry::open(Arc::new(store), anchors).expect("registry opens");
    let listed: Value = serde_json::from_slice(
        &std::fs::read(root.join("examples/sandbox/participants.json")).expect("participants"),
    )
    .expect("participants parse");
    for p in listed["participants"].as_array().expect("a list") {
        let roles: Vec<Role> = serde_json::from_value(p["roles"].clone()).expect("roles");
        registry
            .upsert(Participant {
                id: p["id"].as_str().expect("id").to_owned(),
                organisation: serde_json::from_value::<Organisation>(p["organisation"].clone())
                    .expect("organisation"),
                roles,
                certificates: Vec::new(),
                endpoints: Vec::new(),
                confidential: false,
            })
            .expect("upsert");
    }
    World {
        catalog,
        snapshot: registry.snapshot(),
        _dir: dir,
    }
});

fuzz_target!(|data: &[u8]| {
    let world = &*WORLD;
    match validate_application(data, &world.catalog, &world.snapshot) {
        Ok(application) => {
            let again = serde_json::to_vec(&application).expect("an application serializes");
            if let Err(problems) = validate_application(&again, &world.catalog, &world.snapshot) {
                panic!("accepted application refused after a round trip: {problems:?}");
            }
        }
        Err(problems) => {
            assert!(!problems.is_empty(), "a refusal without a problem");
            let _ = refusal_code(&problems);
        }
    }
});
