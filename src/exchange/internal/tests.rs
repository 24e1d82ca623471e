//! The own services' parameters (tables of bad input), the caller's role, and
//! the shared reader over a real audit log: visibility, paging, totals and
//! the scan bound.

use std::sync::Arc;

use super::*;
use crate::audit::record::tests::sample;
use crate::audit::{AuditConfig, TreeHeadSigner};

const PERSON: &str = "2000000000015";
const OTHER: &str = "2000000000026";

fn history(query: &str, subject: Option<&str>) -> Result<HistoryRequest, String> {
    HistoryRequest::parse(&InternalCall {
        query: Some(query),
        subject,
    })
    .map_err(|e| e.code().to_string())
}

fn usage(query: &str, subject: Option<&str>) -> Result<UsageRequest, String> {
    UsageRequest::parse(&InternalCall {
        query: Some(query),
        subject,
    })
    .map_err(|e| e.code().to_string())
}

#[test]
fn history_parameters_are_checked() {
    let p = PERSON;
    let ok = history(
        &format!("subject={p}&from=2025-01-01&to=2025-02-01T00:00:00Z&limit=5"),
        Some(p),
    );
    assert!(
        ok.as_ref()
            .is_ok_and(|r| r.limit == 5 && r.period.from.is_some()),
        "{ok:?}"
    );
    let table: &[(&str, Option<&str>)] = &[
        ("", Some(p)),
        ("subject=123", Some("123")),
        ("subject=2000000000015", None),
        ("subject=2000000000015", Some(OTHER)),
        ("subject=2000000000015&from=yesterday", Some(p)),
        (
            "subject=2000000000015&from=2025-02-01&to=2025-01-01",
            Some(p),
        ),
        ("subject=2000000000015&limit=0", Some(p)),
        ("subject=2000000000015&limit=100000", Some(p)),
    ];
    for (query, subject) in table {
        assert_eq!(
            history(query, *subject).err().as_deref(),
            Some("request.malformed"),
            "{query} / {subject:?}"
        );
    }
}

#[test]
fn usage_parameters_are_checked() {
    let p = PERSON;
    let all = usage(
        &format!(
            "personCode={p}&dateFrom=2025-01-01&dateTo=2025-02-01T00:00:00Z&offset=40&limit=200"
        ),
        Some(p),
    );
    let Ok(all) = all else { panic!("{all:?}") };
    assert_eq!(
        all,
        UsageRequest {
            person: p.to_owned(),
            period: Period {
                from: parse_instant("2025-01-01T00:00:00Z"),
                to: parse_instant("2025-02-01T00:00:00Z"),
            },
            offset: 40,
            limit: 200,
        }
    );
    // Defaults: the whole log, from the newest, 50 at a time.
    let bare = usage(&format!("personCode={p}"), Some(p));
    let Ok(bare) = bare else { panic!("{bare:?}") };
    assert_eq!(
        (bare.period.from, bare.period.to, bare.offset, bare.limit),
        (None, None, 0, DEFAULT_LIMIT)
    );
    // An empty period is a period.
    assert!(
        usage(
            &format!("personCode={p}&dateFrom=2025-01-01&dateTo=2025-01-01"),
            Some(p)
        )
        .is_ok()
    );
    let table: &[(&str, Option<&str>)] = &[
        // No person, not an IDNP, or not the subject header.
        ("", Some(p)),
        ("subject=2000000000015", Some(p)),
        ("personCode=2000000000016", Some("2000000000016")),
        ("personCode=123", Some("123")),
        ("personCode=2000000000015", None),
        ("personCode=2000000000015", Some(OTHER)),
        // Dates that are not dates, or a period that runs backwards.
        ("personCode=2000000000015&dateFrom=yesterday", Some(p)),
        ("personCode=2000000000015&dateTo=2025-13-01", Some(p)),
        ("personCode=2000000000015&dateFrom=2025-02-30", Some(p)),
        (
            "personCode=2000000000015&dateFrom=2025-02-01&dateTo=2025-01-01",
            Some(p),
        ),
        (
            "personCode=2000000000015&dateFrom=2025-01-01T00:00:01Z&dateTo=2025-01-01",
            Some(p),
        ),
        // Paging out of range.
        ("personCode=2000000000015&limit=0", Some(p)),
        ("personCode=2000000000015&limit=201", Some(p)),
        ("personCode=2000000000015&limit=", Some(p)),
        ("personCode=2000000000015&limit=ten", Some(p)),
        ("personCode=2000000000015&offset=-1", Some(p)),
        ("personCode=2000000000015&offset=1.5", Some(p)),
        ("personCode=2000000000015&offset=", Some(p)),
    ];
    for (query, subject) in table {
        assert_eq!(
            usage(query, *subject).err().as_deref(),
            Some("request.malformed"),
            "{query} / {subject:?}"
        );
    }
}

#[test]
fn the_role_never_names_the_official() {
    let table: &[(Option<&str>, &str)] = &[
        (None, "system"),
        (Some(""), "system"),
        (Some(PERSON), "self"),
        (Some(OTHER), "official"),
    ];
    for (calling_user, role) in table {
        assert_eq!(user_role(*calling_user, PERSON), *role, "{calling_user:?}");
    }
}

struct NullSigner;

impl TreeHeadSigner for NullSigner {
    fn keyid(&self) -> String {
        "null".to_owned()
    }
    fn sign(&self, _: &[u8]) -> Result<Vec<u8>, String> {
        Ok(vec![0; 8])
    }
}

/// An exchange record about `who` by `consumer`, received `minute` minutes
/// after 09:00 on 2025-03-01.
fn exchange(i: u64, who: &str, consumer: &str, minute: u64) -> AuditRecord {
    let mut r = sample(i);
    r.subject = Some(who.to_owned());
    r.subjects = vec![who.to_owned()];
    r.consumer = Some(consumer.to_owned());
    r.received_at = format!("2025-03-01T09:{minute:02}:00.000000Z");
    r
}

fn organisation(idno: &str, name: &str) -> Organisation {
    Organisation {
        idno: idno.to_owned(),
        name: name.to_owned(),
    }
}

fn ids(accesses: &[Access]) -> Vec<u64> {
    accesses.iter().map(|a| a.seq).collect()
}

#[tokio::test]
async fn one_reader_serves_both_shapes_within_its_bound() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = AuditLog::open(AuditConfig::new(dir.path()), Arc::new(NullSigner)).unwrap();
    // seq 0..=5: six accesses by apl-cahul, one a minute.
    for i in 0..6 {
        log.append(exchange(i, PERSON, "apl-cahul", i))
            .await
            .unwrap();
    }
    // seq 6..=10: records about the person that are not accesses to show.
    let mut refused = exchange(6, PERSON, "apl-cahul", 6);
    refused.decision = Decision::Refused;
    let mut own = exchange(7, PERSON, "mcabinet", 7);
    own.provider = Some(PROVIDER.to_owned());
    own.service = Some(FIND_USAGE.to_owned());
    for record in [
        refused,
        own,
        exchange(8, PERSON, "sis", 8),
        exchange(9, PERSON, "gone", 9),
        exchange(10, OTHER, "apl-cahul", 10),
    ] {
        log.append(record).await.unwrap();
    }
    let shown: HashMap<String, Organisation> = [
        ("apl-cahul", organisation("1003603000063", "Primăria Cahul")),
        ("mcabinet", organisation("1003600000017", "AGE")),
    ]
    .into_iter()
    .map(|(id, o)| (id.to_owned(), o))
    .collect();
    let accesses = |period: Period| Accesses {
        log: log.clone(),
        subject: PERSON.to_owned(),
        period,
        shown: shown.clone(),
    };
    let all = accesses(Period {
        from: None,
        to: None,
    });
    let big = ScanBudget {
        page: 1000,
        pages: 2,
    };

    // Every access, newest first; nothing that must not be shown.
    let Ok((total, found)) = read_usages(&all, 0, 50, big) else {
        panic!("the whole log is read")
    };
    assert_eq!((total, ids(&found)), (6, vec![5, 4, 3, 2, 1, 0]));
    assert_eq!(found[0].consumer.idno, "1003603000063");
    assert_eq!(found[0].service, "asp-rsp/person-by-idnp");

    // Pages of any size cover every access exactly once, with one total,
    // even when index pages are smaller than the answer's.
    for (limit, page) in [(1, 1), (4, 3), (5, 2), (6, 1000)] {
        let budget = ScanBudget { page, pages: 20 };
        let mut seen = Vec::new();
        for offset in (0..8).step_by(limit) {
            let Ok((total, found)) = read_usages(&all, offset, limit, budget) else {
                panic!("page {offset}/{limit}")
            };
            assert_eq!(total, 6);
            seen.extend(ids(&found));
        }
        assert_eq!(
            seen,
            vec![5, 4, 3, 2, 1, 0],
            "limit {limit}, index page {page}"
        );
    }

    // The period's start is inclusive, its end exclusive.
    let minute = |m: u64| parse_instant(&format!("2025-03-01T09:{m:02}:00Z"));
    let middle = accesses(Period {
        from: minute(1),
        to: minute(4),
    });
    let Ok((total, found)) = read_usages(&middle, 0, 50, big) else {
        panic!("a period is read")
    };
    assert_eq!((total, ids(&found)), (3, vec![3, 2, 1]));

    // The bound: ten records about the person are read with a budget of ten
    // (the full last page is followed by nothing), refused with nine.
    let exact = ScanBudget { page: 5, pages: 2 };
    assert!(read_usages(&all, 0, 50, exact).is_ok_and(|(total, _)| total == 6));
    for short in [
        ScanBudget { page: 3, pages: 3 },
        ScanBudget { page: 1, pages: 1 },
    ] {
        let refused = read_usages(&all, 0, 50, short).err();
        assert_eq!(
            refused.as_ref().map(|e| e.code()),
            Some("request.malformed"),
            "{short:?}"
        );
    }

    // The history pages the same accesses by cursor.
    let Ok((first, cursor)) = read_history(&all, 4, None) else {
        panic!("first history page")
    };
    assert_eq!(ids(&first), vec![5, 4, 3, 2]);
    assert!(cursor.is_some());
    let Ok((rest, cursor)) = read_history(&all, 4, cursor) else {
        panic!("second history page")
    };
    assert_eq!((ids(&rest), cursor), (vec![1, 0], None));
    log.close().await.unwrap();
}
