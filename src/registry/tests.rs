//! Registry tests: persistence and indexing, and the certificate checks of
//! PROTOCOL.md section 1 as tables (certificate → verdict at registration,
//! dates → verdict at use).

use super::*;
use crate::pki::{DevCa, KeyType};
use crate::store::RedbStore;

const DAY: i64 = 24 * 3600;

fn anchors(ca: &DevCa) -> TrustAnchors {
    TrustAnchors::from_pem(ca.cert_pem()).unwrap()
}

fn open(path: &std::path::Path, ca: &DevCa) -> Registry {
    Registry::open(Arc::new(RedbStore::open(path).unwrap()), anchors(ca)).unwrap()
}

fn participant(ca: &DevCa, id: &str) -> Participant {
    let issued = ca.issue(id, "Org", KeyType::Ed25519).unwrap();
    Participant {
        id: id.into(),
        organisation: Organisation {
            idno: "1003600000017".into(),
            name: "Org".into(),
        },
        roles: vec![Role::Provider],
        certificates: vec![registered_certificate(&issued.cert_pem).unwrap()],
        endpoints: vec![Endpoint {
            service: None,
            url: "https://127.0.0.1:9000".into(),
        }],
        confidential: false,
    }
}

/// A self-signed leaf certificate (not a CA), as a participant might make one.
fn self_signed() -> String {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let params = rcgen::CertificateParams::new(vec!["apl-test".to_string()]).unwrap();
    params.self_signed(&key).unwrap().pem()
}

fn code(result: Result<RegisteredCertificate, RegistryError>) -> &'static str {
    match result {
        Ok(_) => "accepted",
        Err(e) => e.problem().1,
    }
}

#[test]
fn registration_accepts_only_in_date_certificates_of_the_bus_ca() {
    let ca = DevCa::generate("bus ca").unwrap();
    let foreign = DevCa::generate("another ca").unwrap();
    let trust = anchors(&ca);
    let now = crate::exchange::unix_now();
    let issue = |ca: &DevCa, from: i64, until: i64| {
        ca.issue_valid("apl-test", "Org", KeyType::EcdsaP256, from, until)
            .unwrap()
            .cert_pem
    };
    let cases: Vec<(&str, String, &str)> = vec![
        ("bus CA, in date", issue(&ca, -1, 30), "accepted"),
        (
            "bus CA, expired",
            issue(&ca, -30, -1),
            "certificate.expired",
        ),
        (
            "bus CA, not yet valid",
            issue(&ca, 1, 30),
            "certificate.not_yet_valid",
        ),
        ("self-signed", self_signed(), "certificate.untrusted"),
        (
            "another CA",
            issue(&foreign, -1, 30),
            "certificate.untrusted",
        ),
        (
            "another CA, expired",
            issue(&foreign, -30, -1),
            "certificate.expired",
        ),
        (
            "the bus CA's own certificate",
            ca.cert_pem().to_string(),
            "certificate.invalid",
        ),
        ("not PEM", "hello".to_string(), "certificate.invalid"),
        (
            "PEM of garbage",
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".to_string(),
            "certificate.invalid",
        ),
    ];
    for (name, pem, expected) in cases {
        assert_eq!(code(admit(&trust, &pem, now)), expected, "{name}");
    }
}

#[test]
fn dates_are_checked_as_integers_at_every_use() {
    // (not_before, not_after, now) -> verdict; not_after is inclusive.
    let cases = [
        (100, 200, 150, "ok"),
        (100, 200, 100, "ok"),
        (100, 200, 200, "ok"),
        (100, 200, 201, "certificate.expired"),
        (100, 200, 99, "certificate.not_yet_valid"),
        (100, 200, i64::MAX, "certificate.expired"),
        (100, 200, i64::MIN, "certificate.not_yet_valid"),
    ];
    for (nb, na, now, expected) in cases {
        let got = match check_dates(nb, na, now) {
            Ok(()) => "ok",
            Err(r) => r.code(),
        };
        assert_eq!(got, expected, "not_before {nb}, not_after {na}, now {now}");
    }
}

#[test]
fn a_registered_key_signs_only_within_its_dates_and_while_registered() {
    let dir = tempfile::tempdir().unwrap();
    let ca = DevCa::generate("ca").unwrap();
    let reg = open(&dir.path().join("s.redb"), &ca);
    let p = participant(&ca, "asp-rsp");
    let first = p.certificates[0].fingerprint.clone();
    reg.upsert(p).unwrap();
    let second = ca.issue("asp-rsp", "Org", KeyType::EcdsaP256).unwrap();
    reg.add_certificate("asp-rsp", &second.cert_pem).unwrap();
    let snap = reg.snapshot();
    let entry = snap.get("asp-rsp").unwrap();
    let now = crate::exchange::unix_now();
    let not_after = entry.participant.certificates[1].not_after;
    let verdict = |fp: &str, at: i64| match entry.key_at(fp, at) {
        Ok(_) => "ok",
        Err(KeyRefusal { reason: None, .. }) => "unregistered",
        Err(KeyRefusal {
            reason: Some(r), ..
        }) => r.code(),
    };
    let cases = [
        (second.fingerprint.as_str(), now, "ok"),
        (second.fingerprint.as_str(), not_after, "ok"),
        (
            second.fingerprint.as_str(),
            not_after + 1,
            "certificate.expired",
        ),
        (
            second.fingerprint.as_str(),
            now - 2 * DAY,
            "certificate.not_yet_valid",
        ),
        ("00ff", now, "unregistered"),
    ];
    for (fp, at, expected) in cases {
        assert_eq!(verdict(fp, at), expected, "{fp} at {at}");
    }
    assert!(
        entry
            .key_at(&second.fingerprint, not_after + 1)
            .unwrap_err()
            .to_string()
            .contains("expired at"),
        "the refusal says why"
    );

    // Removed: the key signs nothing from the next snapshot on.
    reg.remove_certificate("asp-rsp", &first, false).unwrap();
    assert_eq!(
        reg.snapshot()
            .get("asp-rsp")
            .unwrap()
            .key_at(&first, now)
            .unwrap_err()
            .reason,
        None
    );
    assert!(reg.snapshot().by_fingerprint(&first).is_none());
    // Not the last one, unless allowed (the operator's act); nor one it does not hold.
    assert_eq!(
        reg.remove_certificate("asp-rsp", &second.fingerprint, false)
            .unwrap_err()
            .problem()
            .1,
        "certificate.last"
    );
    assert_eq!(
        reg.remove_certificate("asp-rsp", &first, true)
            .unwrap_err()
            .problem()
            .1,
        "certificate.unknown"
    );
    reg.remove_certificate("asp-rsp", &second.fingerprint, true)
        .unwrap();
    assert_eq!(
        reg.snapshot()
            .get("asp-rsp")
            .unwrap()
            .registered_certificates(),
        0
    );
}

#[test]
fn stored_certificates_that_no_longer_pass_sign_nothing_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    let ca = DevCa::generate("ca").unwrap();
    let p = participant(&ca, "asp-rsp");
    let fp = p.certificates[0].fingerprint.clone();
    // An expired certificate written straight to the store, as one
    // registered before this check existed would be.
    let expired = ca
        .issue_valid("apl-old", "Org", KeyType::Ed25519, -30, -1)
        .unwrap();
    let mut old = participant(&ca, "apl-old");
    old.roles = vec![Role::Consumer];
    old.endpoints.clear();
    old.certificates = vec![registered_certificate(&expired.cert_pem).unwrap()];
    {
        let reg = open(&path, &ca);
        reg.upsert(p).unwrap();
        assert_eq!(
            reg.upsert(old.clone()).unwrap_err().problem().1,
            "certificate.expired",
            "an expired certificate does not enter by upsert"
        );
        reg.store()
            .put(
                Collection::Participants,
                "apl-old",
                &serde_json::to_vec(&old).unwrap(),
            )
            .unwrap();
    }
    let now = crate::exchange::unix_now();
    // Same CA: the stored expired one is listed but signs nothing.
    let reg = open(&path, &ca);
    let snap = reg.snapshot();
    let refusal = snap
        .get("apl-old")
        .unwrap()
        .key_at(&expired.fingerprint, now)
        .unwrap_err();
    assert_eq!(refusal.reason.unwrap().code(), "certificate.expired");
    assert!(snap.get("asp-rsp").unwrap().key_at(&fp, now).is_ok());
    drop(reg);
    // The broker now trusts another CA: nothing of the old one signs.
    let other = DevCa::generate("new ca").unwrap();
    let reg = open(&path, &other);
    let refusal = reg
        .snapshot()
        .get("asp-rsp")
        .unwrap()
        .certificate_at(&fp, now)
        .unwrap_err();
    assert_eq!(refusal.reason.unwrap().code(), "certificate.untrusted");
    // An operator can still edit such a participant (its certificate is kept
    // as it was, and still signs nothing).
    let mut edited = reg.snapshot().get("asp-rsp").unwrap().participant.clone();
    edited.confidential = true;
    reg.upsert(edited).unwrap();
    assert!(
        reg.snapshot()
            .get("asp-rsp")
            .unwrap()
            .key_at(&fp, now)
            .is_err()
    );
}

#[test]
fn registry_survives_restart_and_indexes_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    let ca = DevCa::generate("ca").unwrap();
    let p = participant(&ca, "asp-rsp");
    let fp = p.certificates[0].fingerprint.clone();
    {
        let reg = open(&path, &ca);
        reg.upsert(p.clone()).unwrap();
        let rotated = ca.issue("asp-rsp", "Org", KeyType::EcdsaP256).unwrap();
        reg.add_certificate("asp-rsp", &rotated.cert_pem).unwrap();
        reg.set_endpoints(
            "asp-rsp",
            vec![Endpoint {
                service: Some("person-by-idnp".into()),
                url: "https://127.0.0.1:9001".into(),
            }],
        )
        .unwrap();
    }
    let reg = open(&path, &ca);
    let snap = reg.snapshot();
    let entry = snap.by_fingerprint(&fp).unwrap();
    assert_eq!(entry.participant.id, "asp-rsp");
    assert_eq!(
        entry.usable_certificates(crate::exchange::unix_now()),
        2,
        "both certificates active during rotation"
    );
    assert_eq!(
        entry.participant.endpoint_for("person-by-idnp"),
        Some("https://127.0.0.1:9001")
    );
    assert_eq!(entry.participant.endpoint_for("other"), None);
}

#[test]
fn refuses_invalid_documents_and_shared_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let ca = DevCa::generate("ca").unwrap();
    let reg = open(&dir.path().join("s.redb"), &ca);
    let mut bad = participant(&ca, "asp-rsp");
    bad.organisation.idno = "1003600000018".into();
    assert!(matches!(reg.upsert(bad), Err(RegistryError::Invalid(_))));
    let a = participant(&ca, "a");
    let mut b = participant(&ca, "b");
    b.certificates = a.certificates.clone();
    reg.upsert(a).unwrap();
    assert!(matches!(
        reg.upsert(b),
        Err(RegistryError::CertificateTaken { .. })
    ));
    assert!(matches!(
        reg.set_endpoints("nobody", vec![]),
        Err(RegistryError::Unknown(_))
    ));
}

#[test]
fn endpoints_belong_to_providers_and_are_plain_https_bases() {
    let dir = tempfile::tempdir().unwrap();
    let ca = DevCa::generate("ca").unwrap();
    let reg = open(&dir.path().join("s.redb"), &ca);
    reg.upsert(participant(&ca, "asp-rsp")).unwrap();
    let mut consumer = participant(&ca, "apl-cahul");
    consumer.roles = vec![Role::Consumer];
    assert!(
        reg.upsert(consumer.clone()).is_err(),
        "a consumer has no endpoints"
    );
    consumer.endpoints.clear();
    reg.upsert(consumer).unwrap();
    let one = |url: &str| {
        vec![Endpoint {
            service: None,
            url: url.into(),
        }]
    };
    let cases = [
        ("apl-cahul", one("https://127.0.0.1:9000"), false),
        ("asp-rsp", one("https://127.0.0.1:9000"), true),
        ("asp-rsp", one("https://127.0.0.1:9000/base"), true),
        ("asp-rsp", one("http://127.0.0.1:9000"), false),
        ("asp-rsp", one("https://127.0.0.1:9000/"), false),
        ("asp-rsp", one("https://u:p@127.0.0.1:9000"), false),
        ("asp-rsp", one("https://127.0.0.1:9000/a?b=c"), false),
        ("asp-rsp", one("https://127.0.0.1:9000/a#b"), false),
        ("asp-rsp", one("https:///nohost"), false),
        (
            "asp-rsp",
            [one("https://a.example"), one("https://b.example")].concat(),
            false,
        ),
    ];
    for (id, endpoints, ok) in cases {
        let shown = format!("{id} {endpoints:?}");
        assert_eq!(reg.set_endpoints(id, endpoints).is_ok(), ok, "{shown}");
    }
}

#[test]
fn a_key_does_not_outlive_the_ca_that_vouched_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let ca = DevCa::generate("ca").unwrap();
    let reg = open(&dir.path().join("s.redb"), &ca);
    let mut p = participant(&ca, "asp-rsp");
    // Issued past the CA's ten years, which rcgen does not prevent.
    let long = ca
        .issue_valid("asp-rsp", "Org", KeyType::Ed25519, -1, 4000)
        .unwrap();
    p.certificates = vec![registered_certificate(&long.cert_pem).unwrap()];
    reg.upsert(p).unwrap();
    let ca_not_after =
        crate::tls::validity(&ParsedCertificate::from_pem(ca.cert_pem()).unwrap().chain[0])
            .unwrap()
            .1;
    let snap = reg.snapshot();
    let entry = snap.get("asp-rsp").unwrap();
    assert!(entry.key_at(&long.fingerprint, ca_not_after).is_ok());
    assert_eq!(
        entry
            .key_at(&long.fingerprint, ca_not_after + 1)
            .unwrap_err()
            .reason
            .unwrap(),
        CertificateRefusal::Expired {
            not_after: ca_not_after
        }
    );
}

#[test]
fn a_staged_change_is_invisible_until_committed_and_never_overwrites_a_newer_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    let ca = DevCa::generate("ca").unwrap();
    let reg = open(&path, &ca);
    reg.upsert(participant(&ca, "asp-rsp")).unwrap();
    let moved = vec![Endpoint {
        service: None,
        url: "https://127.0.0.1:9100".into(),
    }];
    let url = |reg: &Registry| {
        reg.snapshot().get("asp-rsp").unwrap().participant.endpoints[0]
            .url
            .clone()
    };
    // Invalid: refused at staging, nothing written.
    let bad = vec![Endpoint {
        service: None,
        url: "ftp://nowhere".into(),
    }];
    assert!(
        reg.stage(|r| r.set_endpoints("asp-rsp", bad.clone()))
            .is_err()
    );
    // Valid: nothing visible, nothing stored until commit.
    let staged = reg
        .stage(|r| r.set_endpoints("asp-rsp", moved.clone()))
        .unwrap();
    assert_eq!(url(&reg), "https://127.0.0.1:9000");
    let reopened = |path: &std::path::Path| {
        Registry::open(Arc::new(RedbStore::open(path).unwrap()), anchors(&ca))
    };
    drop(reg);
    let reg = reopened(&path).unwrap();
    assert_eq!(
        url(&reg),
        "https://127.0.0.1:9000",
        "staging stored nothing"
    );
    // A stage taken on another registry value is refused on this one.
    assert!(reg.commit(staged).is_err());
    let staged = reg
        .stage(|r| r.set_endpoints("asp-rsp", moved.clone()))
        .unwrap();
    // Something else changed the registry meanwhile: refused.
    reg.add_certificate(
        "asp-rsp",
        &ca.issue("asp-rsp", "Org", KeyType::EcdsaP256)
            .unwrap()
            .cert_pem,
    )
    .unwrap();
    assert!(reg.commit(staged).is_err());
    assert_eq!(url(&reg), "https://127.0.0.1:9000");
    let staged = reg
        .stage(|r| r.set_endpoints("asp-rsp", moved.clone()))
        .unwrap();
    reg.commit(staged).unwrap();
    assert_eq!(url(&reg), "https://127.0.0.1:9100");
    drop(reg);
    assert_eq!(url(&reopened(&path).unwrap()), "https://127.0.0.1:9100");
}
