//! The table against a direct reading of the grants: every rule's data
//! and every pair's grants agree, with real hashes and with every hash
//! equal (one long probe chain, so only the exact key comparison
//! separates pairs).

use super::*;
use crate::catalog::Text;
use crate::policy::GrantOrigin;
use crate::policy::{LegalBasis, Purpose, RateLimit, RatePeriod};
use std::collections::BTreeMap;

fn grant(id: usize, consumer: &str, services: &[&str], bases: usize, purposes: usize) -> Grant {
    let status = match id % 5 {
        0 => GrantStatus::Suspended,
        1 => GrantStatus::Revoked,
        _ => GrantStatus::Active,
    };
    Grant {
        id: format!("g-{id:03}"),
        consumer: consumer.into(),
        services: services.iter().map(|s| (*s).to_owned()).collect(),
        purposes: (0..purposes)
            .map(|k| Purpose {
                code: format!("p-{}", (id + k) % 7),
                text: Text {
                    ro: String::new(),
                    ru: String::new(),
                    en: String::new(),
                },
            })
            .collect(),
        legal_bases: (0..bases)
            .map(|k| LegalBasis {
                id: format!("b-{}", (id + k) % 4),
                act: String::new(),
                article: String::new(),
                text: String::new(),
                link: None,
            })
            .collect(),
        fields: BTreeMap::new(),
        valid_from: (id % 3) as i64 * 100,
        valid_until: (!id.is_multiple_of(4)).then_some(250 + (id % 2) as i64 * 100),
        rate_limit: RateLimit {
            requests: 1,
            per: RatePeriod::Second,
            burst: 1,
        },
        quota: None,
        status,
        origin: GrantOrigin::File,
        controller_register_no: None,
        note: None,
        representation: None,
    }
}

/// Consumers and services whose joined bytes coincide ("a" + "bc/x" and
/// "ab" + "c/x"), and a long one.
fn consumers() -> Vec<String> {
    let mut names: Vec<String> = ["a", "ab", "b", "abc", ""].map(String::from).into();
    names.push("m".repeat(300));
    names
}

fn services() -> Vec<String> {
    let mut names: Vec<String> = ["c/x", "bc/x", "x/y", "c", "x"].map(String::from).into();
    names.push(format!("s/{}", "q".repeat(30)));
    names
}

fn grants() -> Vec<Grant> {
    let (consumers, services) = (consumers(), services());
    (0..90)
        .map(|id| {
            let consumer = &consumers[id % consumers.len()];
            let first = services[id % services.len()].as_str();
            let second = services[(id / 2) % services.len()].as_str();
            // Some grants have more names than a rule holds inline.
            let (bases, purposes) = if id % 11 == 0 {
                (6, 6)
            } else {
                (1 + id % 3, 1 + id % 2)
            };
            grant(id, consumer, &[first, second], bases, purposes)
        })
        .collect()
}

fn check(table: &DecisionTable, grants: &[Grant]) {
    let names: Vec<String> = (0..8)
        .flat_map(|k| [format!("b-{k}"), format!("p-{k}")])
        .collect();
    let mut consumers = consumers();
    consumers.push("zz".into());
    let mut services = services();
    services.push("y".into());
    for consumer in &consumers {
        for service in &services {
            let (consumer, service) = (consumer.as_str(), service.as_str());
            let expected: Vec<usize> = grants
                .iter()
                .enumerate()
                .filter(|(_, g)| {
                    g.status != GrantStatus::Revoked && g.consumer == consumer && g.covers(service)
                })
                .flat_map(|(i, g)| {
                    std::iter::repeat_n(i, g.services.iter().filter(|s| *s == service).count())
                })
                .collect();
            let rules = table.rules(consumer, service);
            let got: Vec<usize> = rules.iter().map(Rule::grant).collect();
            assert_eq!(got, expected, "{consumer:?} {service:?}");
            for rule in rules {
                let g = &grants[rule.grant()];
                assert_eq!(rule.is_active(), g.status == GrantStatus::Active);
                assert_eq!(rule.valid_from(), g.valid_from);
                for now in [-1, 0, 99, 100, 200, 249, 250, 349, 350, i64::MAX] {
                    assert_eq!(rule.in_date(now), g.in_date(now), "{} at {now}", g.id);
                }
                for name in &names {
                    assert_eq!(table.has_basis(rule, name, grants), g.has_basis(name));
                    assert_eq!(table.has_purpose(rule, name, grants), g.has_purpose(name));
                }
            }
        }
    }
}

#[test]
fn rules_mirror_the_grants() {
    let grants = grants();
    let Ok(table) = DecisionTable::build(&grants) else {
        panic!("table builds")
    };
    check(&table, &grants);
}

#[test]
fn equal_hashes_are_told_apart_by_the_key() {
    let grants = grants();
    let Ok(table) = DecisionTable::build_with_mask(&grants, 0) else {
        panic!("table builds")
    };
    assert!(
        table
            .slots
            .iter()
            .filter(|s| s.rule_count != 0)
            .all(|s| s.hash == 0)
    );
    check(&table, &grants);
}

#[test]
fn an_empty_table_finds_nothing() {
    let Ok(table) = DecisionTable::build(&[]) else {
        panic!("table builds")
    };
    assert!(table.rules("a", "b/c").is_empty());
}
