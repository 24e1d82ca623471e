//! Catalog tests: the shipped catalog loads, schemas are enforced both ways
//! with JSON pointers, and broken files are refused with file and pointer.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::*;

fn shipped_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("catalog")
}

fn shipped() -> Catalog {
    match Catalog::load_dir(&shipped_dir()) {
        Ok(catalog) => catalog,
        Err(e) => panic!("shipped catalog does not load: {e}"),
    }
}

/// The providers that are adapters (`adapters/`): their catalog files come
/// and go with the adapters, so the exact-count tests below are about the
/// registers and leave the adapters' entries to the adapters' own tests.
const ADAPTERS: [&str; 4] = ["mnotify", "mpay", "mpower", "msign"];

/// How many registers and services of the shipped catalog are adapters'.
fn adapter_counts(catalog: &Catalog) -> (usize, usize) {
    let registers = catalog
        .registers()
        .filter(|r| ADAPTERS.contains(&r.provider.as_str()))
        .count();
    let services = catalog
        .services()
        .filter(|s| ADAPTERS.contains(&s.provider.as_str()))
        .count();
    (registers, services)
}

/// A minimal valid register document, for tests that break one thing in it.
pub(crate) fn test_register(provider: &str, services: Value) -> Value {
    json!({
        "id": format!("reg-{provider}"),
        "name": {"ro": "Registru", "ru": "Регистр", "en": "Register"},
        "description": {"ro": "d", "ru": "d", "en": "d"},
        "owner": {"idno": "1003601000036", "name": {"ro": "ASP", "ru": "АГУ", "en": "PSA"}},
        "provider": provider,
        "contact": {"name": "Registry desk", "email": "desk@example.md"},
        "legal_acts": [{"id": "md-law-71-2007", "title": {"ro": "Legea 71/2007", "ru": "Закон 71/2007", "en": "Law 71/2007"}, "article": "art. 4"}],
        "public_task": {"ro": "t", "ru": "t", "en": "t"},
        "personal_data_categories": ["identity"],
        "services": services
    })
}

/// A minimal valid service document.
pub(crate) fn test_service(code: &str, status: &str, subject_required: bool) -> Value {
    json!({
        "code": code, "version": "1.0.0", "status": status,
        "name": {"ro": "Persoana", "ru": "Лицо", "en": "Person"},
        "description": {"ro": "d", "ru": "d", "en": "d"},
        "method": "GET", "path": "/persons",
        "subject_required": subject_required, "personal_data": "personal",
        "timeout_ms": 1000, "body_limit": 0,
        "response_schema": {
            "type": "object",
            "required": ["idnp"],
            "properties": {
                "idnp": {"type": "string", "pattern": "^[0-9]{13}$"},
                "name": {"type": "string"},
                "address": {"type": "object", "properties": {"locality": {"type": "string"}, "street": {"type": "string"}}},
                "debts": {"type": "array", "items": {"type": "object", "properties": {
                    "title": {"type": "string"}, "amount_mdl": {"type": "number"}}}}
            }
        },
        "data_elements": [{"path": "idnp", "meaning": {"ro": "IDNP", "ru": "IDNP", "en": "IDNP"}}]
    })
}

fn from_docs(docs: Vec<(&str, Value)>) -> Result<Catalog, Vec<RuleProblem>> {
    Catalog::from_documents(
        docs.into_iter()
            .map(|(name, value)| (PathBuf::from(name), value)),
    )
}

fn errors_of(result: Result<Catalog, Vec<RuleProblem>>) -> Vec<RuleProblem> {
    match result {
        Ok(_) => panic!("expected the catalog to be refused"),
        Err(errors) => errors,
    }
}

#[test]
fn every_shipped_catalog_file_loads() {
    let catalog = shipped();
    let keys: Vec<&str> = catalog
        .services()
        .filter(|s| !ADAPTERS.contains(&s.provider.as_str()))
        .map(|s| s.key.as_str())
        .collect();
    assert_eq!(
        keys,
        [
            "asp-cadastru/properties-by-owner",
            "asp-rsp/person-by-idnp",
            "asp-rsp/persons-lookup",
            "asp-rsud/company-by-idno",
            "asp-vehicule/vehicles-by-owner",
            "cnas/insurance-record",
            "mconnect/access-history",
            "mconnect/audit-log",
            "mconnect/find-usage",
            "sfs/tax-debts",
        ]
    );
    assert_eq!(catalog.registers().count(), 7 + adapter_counts(&catalog).0);
    for service in catalog.services() {
        assert!(service.is_callable(), "{}", service.key);
        assert!(catalog.register(&service.register).is_some());
    }
    let person = catalog.service("asp-rsp", "person-by-idnp").map(Arc::clone);
    let Some(person) = person else {
        panic!("person-by-idnp missing")
    };
    assert_eq!(person.method, http::Method::GET);
    assert_eq!(person.path, "/persons/by-idnp");
    assert!(person.subject_required && !person.accepts_body());
    let Some(lookup) = catalog.service_by_key("asp-rsp/persons-lookup") else {
        panic!("lookup missing")
    };
    assert_eq!(lookup.method, http::Method::POST);
    assert!(!lookup.subject_required && lookup.accepts_body());
    assert!(catalog.service("asp-rsp", "nothing").is_none());
    assert!(catalog.service("nobody", "person-by-idnp").is_none());
}

#[test]
fn check_dir_summarises() {
    let summary = match check_dir(&shipped_dir()) {
        Ok(summary) => summary,
        Err(errors) => panic!("{errors:?}"),
    };
    let (registers, services) = adapter_counts(&shipped());
    let (registers, services) = (7 + registers, 10 + services);
    assert_eq!(summary.registers, registers);
    assert_eq!(summary.files.len(), registers);
    assert_eq!(
        summary.to_string(),
        format!(
            "{registers} files, {registers} registers, {services} services ({services} active)"
        )
    );
}

fn sample_person() -> Value {
    json!({
        "idnp": "2000000000015", "first_name": "Ion", "last_name": "Rusu", "birth_date": "1980-05-17",
        "sex": "M", "citizenship": "MDA", "status": "alive",
        "address": {"region": "Cahul", "locality": "Cahul", "street": "str. Republicii", "house": "12", "apartment": null},
        "identity_document": {"type": "buletin", "series": "B", "number": "12345678", "issued": "2020-01-10", "expires": "2030-01-10"}
    })
}

#[test]
fn response_schemas_accept_valid_and_name_the_pointer_of_invalid() {
    let catalog = shipped();
    let Some(person) = catalog.service("asp-rsp", "person-by-idnp") else {
        panic!()
    };
    assert_eq!(person.validate_response(&sample_person()), Ok(()));

    let mut cases: Vec<(Value, &str)> = Vec::new();
    let mut bad_date = sample_person();
    bad_date["birth_date"] = json!("17.05.1980");
    cases.push((bad_date, "/birth_date"));
    let mut bad_nested = sample_person();
    bad_nested["address"]["apartment"] = json!(7);
    cases.push((bad_nested, "/address/apartment"));
    let mut missing = sample_person();
    if let Some(map) = missing.as_object_mut() {
        map.remove("status");
    }
    cases.push((missing, ""));
    for (body, pointer) in cases {
        let Err(violation) = person.validate_response(&body) else {
            panic!("{body} passed")
        };
        assert_eq!(violation.pointer, pointer, "{violation}");
        // The reason never repeats the offending value (it may be personal data).
        assert!(!violation.reason.contains("17.05.1980"), "{violation}");
    }

    let Some(lookup) = catalog.service("asp-rsp", "persons-lookup") else {
        panic!()
    };
    let mut second = sample_person();
    second["idnp"] = json!("12345");
    let body = json!({"persons": [sample_person(), second]});
    let Err(violation) = lookup.validate_response(&body) else {
        panic!()
    };
    assert_eq!(violation.pointer, "/persons/1/idnp");
    assert!(
        violation.to_string().starts_with("at /persons/1/idnp: "),
        "{violation}"
    );
}

#[test]
fn request_schemas_accept_valid_and_name_the_pointer_of_invalid() {
    let catalog = shipped();
    let Some(lookup) = catalog.service("asp-rsp", "persons-lookup") else {
        panic!()
    };
    assert_eq!(
        lookup.validate_request(&json!({"idnps": ["2000000000015"]})),
        Ok(())
    );
    let too_many: Vec<String> = (0..51).map(|_| "2000000000015".to_owned()).collect();
    for (body, pointer) in [
        (json!({"idnps": []}), "/idnps"),
        (json!({"idnps": too_many}), "/idnps"),
        (json!({"idnps": ["2000000000015", "x"]}), "/idnps/1"),
        (json!({"idnps": ["2000000000015"], "extra": 1}), ""),
        (json!([]), ""),
    ] {
        let Err(violation) = lookup.validate_request(&body) else {
            panic!("{body} passed")
        };
        assert_eq!(violation.pointer, pointer, "{body}: {violation}");
    }
    let Some(person) = catalog.service("asp-rsp", "person-by-idnp") else {
        panic!()
    };
    assert_eq!(person.validate_request(&Value::Null), Ok(()));
}

#[test]
fn lifecycle_decides_callability() {
    let services = json!([
        test_service("a", "draft", true),
        test_service("b", "active", true),
        test_service("c", "deprecated", true),
        test_service("d", "retired", true),
    ]);
    let catalog = match from_docs(vec![("reg.json", test_register("reg", services))]) {
        Ok(catalog) => catalog,
        Err(e) => panic!("{e:?}"),
    };
    let callable: Vec<(&str, bool)> = catalog
        .services()
        .map(|s| (s.code.as_str(), s.is_callable()))
        .collect();
    assert_eq!(
        callable,
        [("a", false), ("b", true), ("c", true), ("d", false)]
    );
    // Lookups return every status; the exchange refuses non-callable ones.
    assert!(catalog.service("reg", "d").is_some());
    let filter = ServiceFilter {
        status: Some(Lifecycle::Deprecated),
        ..ServiceFilter::default()
    };
    assert_eq!(catalog.search(&filter).count(), 1);
    let filter = ServiceFilter {
        text: Some("ЛИЦО"),
        ..ServiceFilter::default()
    };
    assert_eq!(catalog.search(&filter).count(), 4);
}

#[test]
fn broken_documents_are_refused_with_file_and_pointer() {
    let good = || test_register("reg", json!([test_service("person", "active", true)]));
    let mut cases: Vec<(Value, &str, &str)> = Vec::new();
    let mut bad_status = good();
    bad_status["services"][0]["status"] = json!("live");
    cases.push((bad_status, "/services/0/status", ""));
    let mut missing_ru = good();
    if let Some(name) = missing_ru["name"].as_object_mut() {
        name.remove("ru");
    }
    cases.push((missing_ru, "/name", "ru"));
    let mut bad_idno = good();
    bad_idno["owner"]["idno"] = json!("1003601000037");
    cases.push((bad_idno, "/owner/idno", "control digit"));
    let mut bad_element = good();
    bad_element["services"][0]["data_elements"][0]["path"] = json!("address.house");
    cases.push((
        bad_element,
        "/services/0/data_elements/0/path",
        "not a field",
    ));
    let mut remote_ref = good();
    remote_ref["services"][0]["response_schema"] =
        json!({"$ref": "https://example.org/person.json"});
    cases.push((
        remote_ref,
        "/services/0/response_schema",
        "does not compile",
    ));
    let mut bad_schema = good();
    bad_schema["services"][0]["response_schema"] = json!({"type": "object", "pattern": "("});
    cases.push((
        bad_schema,
        "/services/0/response_schema",
        "does not compile",
    ));
    let mut duplicate = good();
    duplicate["services"] = json!([
        test_service("person", "active", true),
        test_service("person", "draft", true)
    ]);
    cases.push((duplicate, "/services/1/code", "duplicate"));

    for (doc, pointer, reason) in cases {
        let errors = errors_of(from_docs(vec![("broken.json", doc)]));
        let Some(error) = errors.iter().find(|e| e.pointer == pointer) else {
            panic!("no error at {pointer}: {errors:?}")
        };
        assert_eq!(error.file, Path::new("broken.json"));
        assert!(error.reason.contains(reason), "{error}");
        assert!(
            error
                .to_string()
                .starts_with(&format!("broken.json: at {pointer}")),
            "{error}"
        );
    }
}

#[test]
fn duplicates_across_files_are_refused() {
    let a = test_register("reg", json!([test_service("person", "active", true)]));
    let mut b = a.clone();
    b["id"] = json!("other");
    let errors = errors_of(from_docs(vec![("a.json", a.clone()), ("b.json", b)]));
    assert_eq!(errors[0].file, Path::new("b.json"));
    assert_eq!(errors[0].pointer, "/services/0/code");
    let errors = errors_of(from_docs(vec![("a.json", a.clone()), ("c.json", a)]));
    assert_eq!(errors[0].pointer, "/id");
}

#[test]
fn a_broken_file_on_disk_names_the_file() {
    let dir = std::env::temp_dir().join(format!("mconnect-catalog-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(e) = std::fs::create_dir_all(dir.join("schema")) {
        panic!("{e}");
    }
    let good = test_register("reg", json!([test_service("person", "active", true)]));
    let write = |name: &str, text: &str| {
        if let Err(e) = std::fs::write(dir.join(name), text) {
            panic!("{e}");
        }
    };
    write("good.json", &good.to_string());
    write("schema/ignored.json", "not json at all");
    write("notes.txt", "ignored too");
    assert!(Catalog::load_dir(&dir).is_ok());

    write("zz-broken.json", "{\"id\": ");
    let Err(error) = Catalog::load_dir(&dir) else {
        panic!("broken file accepted")
    };
    assert_eq!(error.file, dir.join("zz-broken.json"));
    assert!(error.reason.contains("not valid JSON"), "{error}");
    let _ = std::fs::remove_dir_all(&dir);

    let Err(error) = Catalog::load_dir(&dir) else {
        panic!("missing dir accepted")
    };
    assert!(error.reason.contains("cannot read directory"), "{error}");
}

#[test]
fn dcat_ap_rendering() {
    let catalog = shipped();
    let dcat = to_dcat_ap(&catalog);
    assert_eq!(dcat["@type"], "dcat:Catalog");
    assert_eq!(dcat["@context"]["dcatap"], "http://data.europa.eu/r5r/");
    let Some(datasets) = dcat["dcat:dataset"].as_array() else {
        panic!()
    };
    let Some(services) = dcat["dcat:service"].as_array() else {
        panic!()
    };
    let (adapter_registers, adapter_services) = adapter_counts(&catalog);
    assert_eq!(datasets.len(), 7 + adapter_registers);
    assert_eq!(services.len(), 10 + adapter_services);
    let Some(rsp) = datasets.iter().find(|d| d["dct:identifier"] == "rsp") else {
        panic!()
    };
    assert_eq!(rsp["dct:publisher"]["dct:identifier"], "1003601000036");
    let Some(legislation) = rsp["dcatap:applicableLegislation"].as_array() else {
        panic!()
    };
    assert!(
        legislation
            .iter()
            .any(|l| l["eli:id_local"] == "md-law-142-2018")
    );
    assert!(
        legislation
            .iter()
            .all(|l| l["@type"] == "eli:LegalResource")
    );
    let Some(person) = services
        .iter()
        .find(|s| s["dct:identifier"] == "asp-rsp/person-by-idnp")
    else {
        panic!()
    };
    assert_eq!(person["@type"], "dcat:DataService");
    assert_eq!(person["dcat:servesDataset"], "urn:mconnect:register:rsp");
    assert!(person["dct:title"].as_array().is_some_and(|t| t.len() == 3));
}

#[test]
fn search_folds_case_and_diacritics_in_every_language() {
    let catalog = shipped();
    let find = |text: &str| -> Vec<String> {
        let filter = ServiceFilter {
            text: Some(text),
            ..ServiceFilter::default()
        };
        catalog.search(&filter).map(|s| s.key.clone()).collect()
    };
    // (query, expected keys): one row per way people type.
    let table: [(&str, &[&str]); 6] = [
        ("Vehiculele", &["asp-vehicule/vehicles-by-owner"]),
        ("detinator", &["asp-vehicule/vehicles-by-owner"]),
        ("DEŢINĂTOR", &["asp-vehicule/vehicles-by-owner"]),
        ("налогоплательщика", &["sfs/tax-debts"]),
        ("arrears", &["sfs/tax-debts"]),
        (
            "ASP-RSP/",
            &["asp-rsp/person-by-idnp", "asp-rsp/persons-lookup"],
        ),
    ];
    for (query, expected) in table {
        assert_eq!(find(query), expected, "{query}");
    }
    assert_eq!(fold("Şţ ș ț Ăâî Ё"), "st s t aai е");
}

// Found by fuzz/fuzz_targets/request_body.rs: masking hid values but the
// reason still quoted unexpected property names, and a name can be personal
// data (a provider answering with an object keyed by IDNP).
#[test]
fn reasons_never_quote_unexpected_property_names() {
    let catalog = shipped();
    let Some(lookup) = catalog.service("asp-rsp", "persons-lookup") else {
        panic!()
    };
    let body = json!({"idnps": ["2000000000015"], "2000000000026": {"name": "Ion"}});
    for violation in [
        lookup.validate_request(&body).unwrap_err(),
        lookup.validate_response(&body).unwrap_err(),
    ] {
        assert!(!violation.reason.contains("2000000000026"), "{violation}");
    }
    assert_eq!(
        lookup.validate_request(&body).unwrap_err().reason,
        "1 property is not allowed by the schema"
    );
}
