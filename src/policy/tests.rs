//! Policy tests: one table row per decision rule, shipped grants load and
//! behave, bad grants are refused with file and pointer, minimisation of
//! nested objects and arrays, and rate limits reached and recovered.

use std::path::{Path, PathBuf};
use std::time::Duration;

use governor::clock::FakeRelativeClock;
use serde_json::{Value, json};

use super::*;
use crate::catalog::Catalog;

/// 2026-06-15T12:00:00Z.
const NOW: i64 = 1_781_524_800;

fn test_catalog() -> Catalog {
    let register = json!({
        "id": "reg",
        "name": {"ro": "Registru", "ru": "Регистр", "en": "Register"},
        "description": {"ro": "d", "ru": "d", "en": "d"},
        "owner": {"idno": "1003601000036", "name": {"ro": "ASP", "ru": "АГУ", "en": "PSA"}},
        "provider": "reg",
        "contact": {"name": "desk", "email": "desk@example.md"},
        "legal_acts": [{"id": "md-law-71-2007", "title": {"ro": "L", "ru": "L", "en": "L"}, "article": "art. 4"}],
        "public_task": {"ro": "t", "ru": "t", "en": "t"},
        "personal_data_categories": [],
        "services": [service("person", true), service("list", false)]
    });
    match Catalog::from_documents([(PathBuf::from("reg.json"), register)]) {
        Ok(catalog) => catalog,
        Err(e) => panic!("{e:?}"),
    }
}

fn service(code: &str, subject_required: bool) -> Value {
    json!({
        "code": code, "version": "1.0.0", "status": "active",
        "name": {"ro": "n", "ru": "n", "en": "n"}, "description": {"ro": "d", "ru": "d", "en": "d"},
        "method": "GET", "path": "/x", "subject_required": subject_required, "personal_data": "personal",
        "timeout_ms": 1000, "body_limit": 0,
        "response_schema": {"type": "object", "properties": {
            "idnp": {"type": "string"}, "name": {"type": "string"},
            "address": {"type": "object", "properties": {"locality": {"type": "string"}, "street": {"type": "string"}}},
            "debts": {"type": "array", "items": {"type": "object", "properties": {"title": {"type": "string"}, "amount_mdl": {"type": "number"}}}}
        }},
        "data_elements": [{"path": "idnp", "meaning": {"ro": "m", "ru": "m", "en": "m"}}]
    })
}

fn grant(
    id: &str,
    consumer: &str,
    services: &[&str],
    status: &str,
    from: &str,
    until: &str,
) -> Value {
    let fields: serde_json::Map<String, Value> = services
        .iter()
        .map(|s| ((*s).to_owned(), json!(["idnp", "address.locality"])))
        .collect();
    json!({
        "id": id, "consumer": consumer, "services": services,
        "purposes": [{"code": "social-aid", "text": {"ro": "p", "ru": "p", "en": "p"}}],
        "legal_bases": [{"id": "md-law-133-2008-art-8", "act": "Legea 133/2008", "article": "art. 8", "text": "t"}],
        "fields": fields,
        "valid_from": from, "valid_until": until,
        "rate_limit": {"requests": 2, "per": "second"},
        "status": status
    })
}

fn known(id: &str) -> bool {
    ["apl-a", "apl-b", "apl-c", "apl-d", "apl-e"].contains(&id)
}

fn test_index(catalog: &Catalog) -> PolicyIndex {
    let grants = json!({"grants": [
        grant("a-active", "apl-a", &["reg/person", "reg/list"], "active", "2025-01-01", "2027-12-31"),
        grant("b-suspended", "apl-b", &["reg/person"], "suspended", "2025-01-01", "2027-12-31"),
        grant("c-expired", "apl-c", &["reg/person"], "active", "2020-01-01", "2025-12-31"),
        grant("c-future", "apl-c", &["reg/list"], "active", "2027-01-01", "2027-12-31"),
        grant("d-revoked", "apl-d", &["reg/person"], "revoked", "2025-01-01", "2027-12-31"),
        grant("e-old", "apl-e", &["reg/person"], "active", "2020-01-01", "2020-12-31"),
        grant("e-suspended", "apl-e", &["reg/person"], "suspended", "2025-01-01", "2027-12-31"),
    ]});
    match PolicyIndex::from_documents([(PathBuf::from("test.json"), grants)], catalog, &known) {
        Ok(index) => index,
        Err(e) => panic!("{e:?}"),
    }
}

/// One row per rule of the decision order (module docs), plus the variants
/// of the rules that have several (no grant vs revoked, expired vs not yet
/// valid). `B` stands for the grant's legal basis; `-` for no grant named.
const DECISION_TABLE: &[&str] = &[
    // consumer | service | basis          | reason     | subject | expected                   | grant named
    "apl-a      | person  | B              | social-aid | yes     | allow                      | a-active",
    "apl-a      | list    | B              | social-aid | no      | allow                      | a-active",
    "apl-z      | person  | B              | social-aid | yes     | policy.denied              | -",
    "apl-d      | person  | B              | social-aid | yes     | policy.denied              | -",
    "apl-b      | person  | B              | social-aid | yes     | policy.grant_suspended     | b-suspended",
    "apl-c      | person  | B              | social-aid | yes     | policy.grant_expired       | c-expired",
    "apl-c      | list    | B              | social-aid | yes     | policy.grant_expired       | c-future",
    "apl-e      | person  | B              | social-aid | yes     | policy.grant_expired       | e-old",
    "apl-a      | person  | md-law-1-2000  | social-aid | yes     | policy.basis_not_allowed   | a-active",
    "apl-a      | person  | B              | curiosity  | yes     | policy.purpose_not_allowed | a-active",
    "apl-a      | person  | B              | social-aid | no      | policy.subject_required    | a-active",
];

#[test]
fn decision_table() {
    let catalog = test_catalog();
    let index = test_index(&catalog);
    for row in DECISION_TABLE {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let [
            consumer,
            service,
            basis,
            reason,
            subject,
            expected,
            grant_id,
        ] = cells[..]
        else {
            panic!("malformed row {row}")
        };
        let Some(service) = catalog.service("reg", service) else {
            panic!("{row}")
        };
        let basis = if basis == "B" {
            "md-law-133-2008-art-8"
        } else {
            basis
        };
        let request = DecisionRequest {
            consumer,
            service,
            basis,
            reason,
            subject_present: subject == "yes",
        };
        let decision = index.decide(&request, NOW);
        let (outcome, rule) = match decision {
            Decision::Allow(_) => ("allow", ""),
            Decision::Deny(denial) => (denial.code.code(), denial.rule),
        };
        assert_eq!(outcome, expected, "{row}: {rule}");
        assert_eq!(
            decision.grant().map_or("-", |g| g.id.as_str()),
            grant_id,
            "{row}"
        );
        assert_eq!(
            decision.is_allowed(),
            rule.is_empty(),
            "{row}: a refusal names its rule"
        );
    }
}

#[test]
fn deny_codes_match_the_protocol() {
    for (code, text) in [
        (DenyCode::PolicyDenied, "policy.denied"),
        (DenyCode::PurposeNotAllowed, "policy.purpose_not_allowed"),
        (DenyCode::BasisNotAllowed, "policy.basis_not_allowed"),
        (DenyCode::GrantExpired, "policy.grant_expired"),
        (DenyCode::GrantSuspended, "policy.grant_suspended"),
        (DenyCode::SubjectRequired, "policy.subject_required"),
    ] {
        assert_eq!(code.code(), text);
        assert_eq!(code.status(), http::StatusCode::FORBIDDEN);
    }
}

#[test]
fn validity_bounds_are_inclusive_days() {
    let catalog = test_catalog();
    let index = test_index(&catalog);
    let Some(grant) = index.grant("c-expired") else {
        panic!()
    };
    // valid 2020-01-01 .. 2025-12-31 inclusive.
    assert!(!grant.in_date(1_577_836_799));
    assert!(grant.in_date(1_577_836_800));
    assert!(grant.in_date(1_767_225_599));
    assert!(!grant.in_date(1_767_225_600));
    assert_eq!(index.grants_of("apl-c").count(), 2);
    assert_eq!(index.grants().count(), 7);
    assert_eq!(
        index.grant("d-revoked").map(|g| g.status),
        Some(GrantStatus::Revoked)
    );
}

#[test]
fn instants_parse() {
    for (text, end, expected) in [
        ("2025-01-01", false, Some(1_735_689_600)),
        ("2025-01-01", true, Some(1_735_776_000)),
        ("2025-01-01T02:00:00+02:00", false, Some(1_735_689_600)),
        ("2025-01-01T00:00:00.250Z", false, Some(1_735_689_600)),
        ("2025-02-30", false, None),
        ("2025-01-01T24:00:00Z", false, None),
        ("2025-01-01T00:00:00", false, None),
        ("25-01-01", false, None),
    ] {
        assert_eq!(parse_instant(text, end), expected, "{text}");
    }
}

fn refused(grants: Value) -> Vec<RuleProblem> {
    let catalog = test_catalog();
    match PolicyIndex::from_documents(
        [(PathBuf::from("bad.json"), json!({"grants": [grants]}))],
        &catalog,
        &known,
    ) {
        Ok(_) => panic!("bad grant accepted"),
        Err(errors) => errors,
    }
}

#[test]
fn bad_grants_are_refused_with_file_and_pointer() {
    let good = || {
        grant(
            "g",
            "apl-a",
            &["reg/person"],
            "active",
            "2025-01-01",
            "2027-12-31",
        )
    };
    let mut cases: Vec<(Value, &str, &str)> = Vec::new();
    cases.push((
        grant(
            "g",
            "apl-x",
            &["reg/person"],
            "active",
            "2025-01-01",
            "2027-12-31",
        ),
        "/grants/0/consumer",
        "unknown participant",
    ));
    let mut unknown_service = good();
    unknown_service["services"] = json!(["reg/person", "reg/nothing"]);
    unknown_service["fields"]["reg/nothing"] = json!(["idnp"]);
    cases.push((unknown_service, "/grants/0/services/1", "unknown service"));
    let mut unknown_field = good();
    unknown_field["fields"]["reg/person"] = json!(["idnp", "address.house"]);
    cases.push((
        unknown_field,
        "/grants/0/fields/reg~1person/1",
        "not a field",
    ));
    let mut missing_fields = good();
    missing_fields["fields"] = json!({});
    cases.push((missing_fields, "/grants/0/fields", "no field list"));
    let mut backwards = good();
    backwards["valid_until"] = json!("2024-12-31");
    cases.push((backwards, "/grants/0/valid_until", "ends before"));
    let mut bad_status = good();
    bad_status["status"] = json!("paused");
    cases.push((bad_status, "/grants/0/status", ""));
    let mut bad_basis = good();
    bad_basis["legal_bases"][0]["id"] = json!("Law 133/2008!");
    cases.push((bad_basis, "/grants/0/legal_bases/0/id", ""));
    let mut twice = good();
    twice["purposes"] = json!([twice["purposes"][0], twice["purposes"][0]]);
    cases.push((twice, "/grants/0/purposes", "twice"));
    for (doc, pointer, reason) in cases {
        let errors = refused(doc);
        let Some(error) = errors.iter().find(|e| e.pointer == pointer) else {
            panic!("no error at {pointer}: {errors:?}")
        };
        assert_eq!(error.file, Path::new("bad.json"));
        assert!(error.reason.contains(reason), "{error}");
    }
}

#[test]
fn duplicate_grant_ids_are_refused() {
    let catalog = test_catalog();
    let doc = |id| json!({"grants": [grant(id, "apl-a", &["reg/person"], "active", "2025-01-01", "2027-12-31")]});
    let result = PolicyIndex::from_documents(
        [
            (PathBuf::from("a.json"), doc("same")),
            (PathBuf::from("b.json"), doc("same")),
        ],
        &catalog,
        &known,
    );
    let Err(errors) = result else {
        panic!("duplicate accepted")
    };
    assert_eq!(errors[0].file, Path::new("b.json"));
    assert_eq!(errors[0].pointer, "/grants/0/id");
}

fn shipped() -> (Catalog, PolicyIndex) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let catalog = match Catalog::load_dir(&root.join("catalog")) {
        Ok(catalog) => catalog,
        Err(e) => panic!("{e}"),
    };
    let participants: Value = match std::fs::read(root.join("examples/sandbox/participants.json"))
        .map_err(|e| e.to_string())
        .and_then(|bytes| serde_json::from_slice(&bytes).map_err(|e| e.to_string()))
    {
        Ok(value) => value,
        Err(e) => panic!("{e}"),
    };
    let ids: Vec<String> = participants["participants"]
        .as_array()
        .map(|list| {
            list.iter()
                .filter_map(|p| p["id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let is_known = |id: &str| ids.iter().any(|known| known == id);
    let index = match PolicyIndex::load_dir(&root.join("policies"), &catalog, &is_known) {
        Ok(index) => index,
        Err(e) => panic!("{e}"),
    };
    match check_dir(&root.join("policies"), &catalog, &is_known) {
        Ok(summary) => assert_eq!(summary.grants.values().sum::<usize>(), index.len()),
        Err(e) => panic!("{e:?}"),
    }
    (catalog, index)
}

#[test]
fn every_shipped_policy_file_loads_and_behaves() {
    let (catalog, index) = shipped();
    // Every catalogued register service has an allowed call from apl-cahul
    // (the sandbox's `try` list relies on it). The broker's own services
    // (provider `mconnect`: the audit log, citizens' access history) are
    // granted to supervisors and the citizen portal, not to municipalities.
    for service in catalog.services().filter(|s| s.provider != "mconnect") {
        let grant = index
            .grants_of("apl-cahul")
            .find(|g| g.covers(&service.key) && g.status == GrantStatus::Active);
        let Some(grant) = grant else {
            panic!("apl-cahul has no grant for {}", service.key)
        };
        let request = DecisionRequest {
            consumer: "apl-cahul",
            service,
            basis: &grant.legal_bases[0].id,
            reason: &grant.purposes[0].code,
            subject_present: true,
        };
        assert!(index.decide(&request, NOW).is_allowed(), "{}", service.key);
    }
    let Some(insurance) = catalog.service("cnas", "insurance-record") else {
        panic!()
    };
    let Some(vehicles) = catalog.service("asp-vehicule", "vehicles-by-owner") else {
        panic!()
    };
    let ask = |consumer, service| DecisionRequest {
        consumer,
        service,
        basis: "md-law-133-2008-art-8",
        reason: "social-aid-eligibility",
        subject_present: true,
    };
    let code = |decision: Decision<'_>| match decision {
        Decision::Allow(_) => None,
        Decision::Deny(denial) => Some(denial.code),
    };
    assert_eq!(
        code(index.decide(&ask("apl-balti", insurance), NOW)),
        Some(DenyCode::GrantSuspended)
    );
    assert_eq!(
        code(index.decide(&ask("apl-ungheni", vehicles), NOW)),
        Some(DenyCode::GrantExpired)
    );
    assert_eq!(
        code(index.decide(&ask("cnpdcp-audit", insurance), NOW)),
        Some(DenyCode::PolicyDenied)
    );
    // The APL tax grant does not see what the debts are for.
    let Some(grant) = index.grant("apl-cahul-local-taxes") else {
        panic!()
    };
    assert!(
        grant
            .fields_for("sfs/tax-debts")
            .allows("debts[].amount_mdl")
    );
    assert!(!grant.fields_for("sfs/tax-debts").allows("debts[].title"));
    // The adapters' grants (adapters/, policies/adapters-*.json) come and go
    // with the adapters and are tested with them.
    let adapter = |key: &str| {
        ["mnotify/", "mpay/", "mpower/", "msign/"]
            .iter()
            .any(|p| key.starts_with(p))
    };
    assert_eq!(
        index
            .grants_of("mcabinet")
            .filter(|g| !g.services.iter().all(|s| adapter(s)))
            .count(),
        2
    );
}

#[test]
fn minimisation_of_nested_objects_and_arrays() {
    let fields = match FieldSet::new([
        "idnp",
        "address.locality",
        "debts[].amount_mdl",
        "persons[].address",
        "persons[].idnp",
    ]) {
        Ok(fields) => fields,
        Err(e) => panic!("{e}"),
    };
    let mut body = json!({
        "idnp": "2000000000015",
        "name": "Ion Rusu",
        "address": {"locality": "Cahul", "street": "Republicii", "apartment": null},
        "debts": [{"title": "TVA", "amount_mdl": 10.5}, {"title": "IVI", "amount_mdl": 3}],
        "persons": [
            {"idnp": "1", "first_name": "A", "address": {"locality": "Cahul", "street": "s"}},
            {"idnp": "2", "first_name": "B", "address": null}
        ],
        "extra": {"idnp": "should go"}
    });
    minimise(&mut body, &fields);
    assert_eq!(
        body,
        json!({
            "idnp": "2000000000015",
            "address": {"locality": "Cahul"},
            "debts": [{"amount_mdl": 10.5}, {"amount_mdl": 3}],
            "persons": [
                {"idnp": "1", "address": {"locality": "Cahul", "street": "s"}},
                {"idnp": "2", "address": null}
            ]
        })
    );

    // A scalar where only sub-fields are allowed is removed: fail closed.
    let mut odd = json!({"address": "str. Republicii 12, Cahul", "debts": ["TVA"]});
    minimise(&mut odd, &fields);
    assert_eq!(odd, json!({"debts": []}));

    let mut all = json!({"a": 1});
    minimise(&mut all, &FieldSet::EMPTY);
    assert_eq!(all, json!({}));
    let mut scalar = json!("secret");
    minimise(&mut scalar, &FieldSet::EMPTY);
    assert_eq!(scalar, Value::Null);
    let mut kept = json!({"a": {"b": 1}});
    minimise(&mut kept, &FieldSet::all());
    assert_eq!(kept, json!({"a": {"b": 1}}));

    // A parent path allows the whole subtree, whatever narrower paths say.
    let Ok(parent) = FieldSet::new(["address.locality", "address"]) else {
        panic!()
    };
    assert!(parent.allows("address.street"));
    assert!(FieldSet::new(["a..b"]).is_err());
}

fn rate_grant(requests: u32, burst: Option<u32>, quota: Option<Quota>) -> Grant {
    Grant {
        id: "g".into(),
        consumer: "apl-a".into(),
        services: vec!["reg/person".into()],
        purposes: Vec::new(),
        legal_bases: Vec::new(),
        fields: BTreeMap::new(),
        valid_from: 0,
        valid_until: None,
        rate_limit: RateLimit {
            requests,
            per: RatePeriod::Second,
            burst: burst.unwrap_or(requests),
        },
        quota,
        status: GrantStatus::Active,
        origin: GrantOrigin::File,
        controller_register_no: None,
        representation: None,
        note: None,
    }
}

#[test]
fn rate_limit_reached_and_recovered() {
    let clock = FakeRelativeClock::default();
    let limiter = RateLimiter::with_clock(clock.clone());
    let grant = rate_grant(2, None, None);
    assert!(limiter.check(&grant, "reg/person", NOW).is_ok());
    assert!(limiter.check(&grant, "reg/person", NOW).is_ok());
    let Err(limited) = limiter.check(&grant, "reg/person", NOW) else {
        panic!("third call passed")
    };
    assert_eq!(limited.kind, LimitKind::Rate);
    assert_eq!(limited.retry_after, Duration::from_millis(500));
    assert_eq!(limited.retry_after_secs(), 1);
    assert_eq!(limited.code(), "rate.limited");
    // Another service of the same consumer has its own bucket.
    assert!(limiter.check(&grant, "reg/list", NOW).is_ok());
    clock.advance(Duration::from_millis(500));
    assert!(limiter.check(&grant, "reg/person", NOW).is_ok());
    assert!(limiter.check(&grant, "reg/person", NOW).is_err());
    // A reload that raises the rate takes effect at once.
    let faster = rate_grant(10, None, None);
    assert!(limiter.check(&faster, "reg/person", NOW).is_ok());
}

#[test]
fn a_rate_shared_by_brokers_is_divided_rounding_up() {
    // (requests, burst, brokers) -> (requests, burst) each broker enforces.
    let table = [
        ((10, 20, 1), (10, 20)),
        ((10, 20, 2), (5, 10)),
        ((10, 20, 3), (4, 7)),
        ((4, 4, 8), (1, 1)),
        ((1, 1, 2), (1, 1)),
        ((7, 7, 0), (7, 7)),
    ];
    for ((requests, burst, brokers), expected) in table {
        let shared = rate_grant(requests, Some(burst), None)
            .rate_limit
            .shared_by(brokers);
        assert_eq!(
            (shared.requests, shared.burst),
            expected,
            "{requests}/{burst} among {brokers}"
        );
        assert_eq!(shared.per, RatePeriod::Second);
    }
}

#[test]
fn a_brokers_share_of_the_rate_is_enforced_without_counting_quotas() {
    let clock = FakeRelativeClock::default();
    let limiter = RateLimiter::with_clock(clock.clone());
    let grant = rate_grant(
        4,
        None,
        Some(Quota {
            per_day: Some(1),
            per_month: None,
        }),
    );
    // Among two brokers: a burst of 2 here, whatever the quota says.
    assert!(limiter.check_rate(&grant, "reg/person", 2).is_ok());
    assert!(limiter.check_rate(&grant, "reg/person", 2).is_ok());
    let Err(limited) = limiter.check_rate(&grant, "reg/person", 2) else {
        panic!("third call passed")
    };
    assert_eq!(limited.kind, LimitKind::Rate);
    assert_eq!(limited.retry_after, Duration::from_millis(500));
    // Alone again (the other broker left): the whole rate, a new bucket.
    for _ in 0..4 {
        assert!(limiter.check_rate(&grant, "reg/person", 1).is_ok());
    }
    assert!(limiter.check_rate(&grant, "reg/person", 1).is_err());
    // The quota refusal counted elsewhere carries its window's end.
    let daily = quota_reached(true, NOW);
    assert_eq!(daily.kind, LimitKind::DailyQuota);
    assert_eq!(daily.retry_after, Duration::from_secs(12 * 3600));
    assert_eq!(quota_reached(false, NOW).kind, LimitKind::MonthlyQuota);
}

#[test]
fn quota_reached_and_recovered_next_day() {
    let clock = FakeRelativeClock::default();
    let limiter = RateLimiter::with_clock(clock.clone());
    let grant = rate_grant(
        1000,
        None,
        Some(Quota {
            per_day: Some(3),
            per_month: Some(4),
        }),
    );
    for _ in 0..3 {
        assert!(limiter.check(&grant, "reg/person", NOW).is_ok());
    }
    let Err(limited) = limiter.check(&grant, "reg/person", NOW) else {
        panic!()
    };
    assert_eq!(limited.kind, LimitKind::DailyQuota);
    assert_eq!(limited.retry_after, Duration::from_secs(12 * 3600)); // NOW is noon UTC
    let tomorrow = NOW + 86_400;
    assert!(limiter.check(&grant, "reg/person", tomorrow).is_ok());
    let Err(limited) = limiter.check(&grant, "reg/person", tomorrow) else {
        panic!()
    };
    assert_eq!(limited.kind, LimitKind::MonthlyQuota);
    // 2026-06-16T12:00Z to 2026-07-01T00:00Z.
    assert_eq!(
        limited.retry_after,
        Duration::from_secs(14 * 86_400 + 12 * 3600)
    );
}

#[test]
fn idle_keys_are_evicted() {
    let clock = FakeRelativeClock::default();
    let limiter = RateLimiter::with_clock(clock.clone());
    let plain = rate_grant(10, None, None);
    let quota = rate_grant(
        10,
        None,
        Some(Quota {
            per_day: Some(100),
            per_month: None,
        }),
    );
    assert!(limiter.check(&plain, "reg/person", NOW).is_ok());
    assert!(limiter.check(&quota, "reg/list", NOW).is_ok());
    assert_eq!(limiter.len(), 2);
    limiter.evict_idle(NOW);
    assert_eq!(limiter.len(), 2, "keys in use are kept");
    clock.advance(Duration::from_secs(120));
    limiter.evict_idle(NOW + 120);
    assert_eq!(limiter.len(), 1, "the daily count of today is kept");
    limiter.evict_idle(NOW + 86_400);
    assert!(limiter.is_empty());
}

#[test]
fn each_consumer_and_service_pair_has_its_own_slot_and_counts() {
    let clock = FakeRelativeClock::default();
    let limiter = RateLimiter::with_clock(clock.clone());
    let one = |consumer: &str| Grant {
        consumer: consumer.into(),
        ..rate_grant(
            1,
            None,
            Some(Quota {
                per_day: Some(2),
                per_month: Some(3),
            }),
        )
    };
    // The same bytes split differently are different pairs, and a key too
    // long to be kept inside its slot works the same.
    let long = "x".repeat(100);
    for (consumer, service) in [("ab", "c"), ("a", "bc"), (long.as_str(), "reg/person")] {
        assert!(limiter.check(&one(consumer), service, NOW).is_ok());
        assert!(
            limiter.check(&one(consumer), service, NOW).is_err(),
            "{consumer} {service}"
        );
    }
    assert_eq!(limiter.len(), 3);
    // A faster rate rebuilds the bucket and keeps the day's count.
    let faster = Grant {
        consumer: "ab".into(),
        ..rate_grant(
            10,
            None,
            Some(Quota {
                per_day: Some(2),
                per_month: Some(3),
            }),
        )
    };
    assert!(limiter.check(&faster, "c", NOW).is_ok());
    let Err(limited) = limiter.check(&faster, "c", NOW) else {
        panic!("a third call the same day passed")
    };
    assert_eq!(limited.kind, LimitKind::DailyQuota);
    // The next day counts afresh, the month goes on, and a new month
    // starts it again (NOW is 2026-06-15; 2026-07-01 is 16 days later).
    let tomorrow = NOW + 86_400;
    assert!(limiter.check(&faster, "c", tomorrow).is_ok());
    let Err(limited) = limiter.check(&faster, "c", tomorrow) else {
        panic!("a fourth call the same month passed")
    };
    assert_eq!(limited.kind, LimitKind::MonthlyQuota);
    assert!(limiter.check(&faster, "c", NOW + 16 * 86_400).is_ok());
    assert_eq!(limiter.len(), 3);
}

#[test]
fn field_sets_compare_by_content_and_the_empty_set_allows_nothing() {
    let empty = FieldSet::new([]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(empty, FieldSet::EMPTY);
    let a = FieldSet::new(["idnp", "address.locality"]).unwrap_or_else(|e| panic!("{e}"));
    let b = FieldSet::new(["idnp", "address.locality"]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(a, b);
    assert_ne!(a, FieldSet::EMPTY);
    assert!(!FieldSet::EMPTY.allows("idnp"));
    let mut value = json!({"idnp": "2000000000015"});
    minimise(&mut value, &FieldSet::EMPTY);
    assert_eq!(value, json!({}));
}
