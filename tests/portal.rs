//! The data-access portal as the sandbox runs it: a child process listed in
//! `sandbox.json`, serving HTTPS with a certificate of the sandbox CA (and
//! asking no client certificate: its users are people in browsers), on the
//! same catalog as the broker. The pages themselves are tested in
//! `crates/portal/tests/`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use support::Bus;
use support::browser::{Browser, csrf};

#[tokio::test]
async fn the_sandbox_runs_the_portal_over_https_on_its_own_catalog() {
    let bus = Bus::start().await;
    let manifest = &bus.sandbox.manifest;
    let portal = manifest
        .portal
        .as_ref()
        .expect("sandbox.json lists the portal");
    assert!(
        portal.url.starts_with("https://127.0.0.1:"),
        "{}",
        portal.url
    );
    assert!(
        bus.sandbox
            .processes
            .iter()
            .any(|p| p.participant == "portal" && p.program == "mconnect-portal" && p.pid > 0),
        "the portal is one of the sandbox's processes"
    );
    let written: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(bus.dir.path().join("sandbox.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(written["portal"]["url"], portal.url.as_str());

    // A browser-like client: trusts the sandbox CA, presents no certificate.
    let ca = std::fs::read_to_string(bus.dir.path().join(&manifest.ca)).unwrap();
    let roots = mconnect_sdk::parse_certs(&ca).unwrap();
    let tls = mconnect_sdk::tls::server_auth_client_config(&roots).unwrap();
    let client = mconnect_sdk::tls::https_client(&tls, mconnect_sdk::tls::ClientOptions::default());
    let request = http::Request::get(format!("{}/catalog?lang=en", portal.url))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = client
        .request(request)
        .await
        .expect("the portal answers over TLS");
    assert_eq!(response.status(), 200);
    assert!(
        response
            .headers()
            .get("content-security-policy")
            .is_some_and(|v| v.to_str().unwrap().contains("default-src 'none'"))
    );
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let html = String::from_utf8(body.to_vec()).unwrap();
    // The broker's catalog: every callable service it has is listed.
    let rules = bus.sandbox.broker.broker.rules();
    for service in rules.catalog.services().filter(|s| s.is_callable()) {
        assert!(
            html.contains(&format!(
                "href=\"/catalog/services/{}/{}\"",
                service.provider, service.code
            )),
            "{} is listed",
            service.key
        );
    }

    // The development sign-in offers the definition's officials, and one of
    // them signs in over HTTPS.
    let definition: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(support::repo().join("examples/sandbox/participants.json"))
            .unwrap(),
    )
    .unwrap();
    let listed: Vec<&str> = portal.officials.iter().map(|o| o.idnp.as_str()).collect();
    let defined: Vec<&str> = definition["officials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["idnp"].as_str().unwrap())
        .collect();
    assert_eq!(listed, defined);
    let official = &portal.officials[0];
    let get = |path: &str, cookie: &str| {
        let mut request = http::Request::get(format!("{}{path}", portal.url));
        if !cookie.is_empty() {
            request = request.header("cookie", cookie);
        }
        request.body(Full::new(Bytes::new())).unwrap()
    };
    let form = client.request(get("/sign-in", "")).await.unwrap();
    let csrf_cookie = form
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|c| c.starts_with("__Host-mconnect_csrf="))
        .expect("a CSRF cookie");
    let token = csrf_cookie
        .trim_start_matches("__Host-mconnect_csrf=")
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let sign_in = http::Request::post(format!("{}/sign-in", portal.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("cookie", format!("__Host-mconnect_csrf={token}"))
        .body(Full::new(Bytes::from(format!(
            "csrf={token}&idnp={}",
            official.idnp
        ))))
        .unwrap();
    let signed_in = client.request(sign_in).await.unwrap();
    assert_eq!(signed_in.status(), 303);
    let session = signed_in
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|c| c.starts_with("__Host-mconnect_session="))
        .expect("a session cookie");
    let session = session.split(';').next().unwrap().to_owned();
    let account = client
        .request(get("/account?lang=en", &session))
        .await
        .unwrap();
    assert_eq!(account.status(), 200);
    let body = account.into_body().collect().await.unwrap().to_bytes();
    let html = String::from_utf8(body.to_vec()).unwrap();
    assert!(html.contains(&official.name), "{html}");
    assert!(html.contains(&official.participant));
    bus.stop().await;
}

#[tokio::test]
async fn an_official_looks_a_resident_up_through_the_broker_and_another_cannot_use_those_grants() {
    let bus = Bus::start().await;
    let resident = "2000000000037";
    let question = "/lookup/apl-cahul-residence/asp-rsp/person-by-idnp";

    let mut cahul = Browser::new(&bus);
    cahul.sign_in("2000000000015").await;
    let list = cahul.go("GET", "/lookup?lang=en", None).await;
    assert_eq!(list.status, 200);
    assert!(
        list.body.contains(&format!("href=\"{question}\"")),
        "{}",
        list.body
    );
    assert!(
        !list.body.contains("apl-balti"),
        "only Cahul's own grants are offered"
    );

    // The question page: purpose and basis from the grant, never free text.
    let page = cahul.go("GET", question, None).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("value=\"residence-verification\""));
    assert!(page.body.contains("value=\"md-law-436-2006-art-29\""));
    let token = csrf(&page.body);
    // Checked on the server: a wrong IDNP, a purpose or basis the grant lacks.
    for (form, error) in [
        (
            format!(
                "csrf={token}&purpose=residence-verification&basis=md-law-436-2006-art-29&person=2000000000038"
            ),
            "#person",
        ),
        (
            format!(
                "csrf={token}&purpose=tax-collection&basis=md-law-436-2006-art-29&person={resident}"
            ),
            "#purpose",
        ),
        (
            format!("csrf={token}&purpose=residence-verification&basis=any-law&person={resident}"),
            "#basis",
        ),
    ] {
        let refused = cahul.go("POST", question, Some(&form)).await;
        assert_eq!(refused.status, 400, "{form}");
        assert!(
            refused.body.contains(&format!("href=\"{error}\"")),
            "{form}: error summary links {error}"
        );
    }
    let before = bus.sandbox.broker.broker.audit().tree_size();
    let asked = cahul
        .go(
            "POST",
            question,
            Some(&format!(
                "csrf={token}&purpose=residence-verification&basis=md-law-436-2006-art-29&person={resident}"
            )),
        )
        .await;
    assert_eq!(asked.status, 303);
    assert_eq!(asked.location.as_deref(), Some("/lookup/check"));
    // Nothing is asked before the check page is confirmed.
    assert_eq!(bus.sandbox.broker.broker.audit().tree_size(), before);
    let check = cahul.go("GET", "/lookup/check?lang=en", None).await;
    assert_eq!(check.status, 200);
    assert!(check.body.contains(resident));
    assert!(
        check
            .body
            .contains("Verifying domicile for local public services")
    );
    // A confirmation without the session's token is refused before
    // anything is sent, and the lookup stays pending.
    let forged = cahul
        .go(
            "POST",
            "/lookup/confirm",
            Some(&format!("csrf={}", "0".repeat(64))),
        )
        .await;
    assert_eq!(forged.status, 403);
    assert_eq!(bus.sandbox.broker.broker.audit().tree_size(), before);
    let result = cahul
        .go(
            "POST",
            "/lookup/confirm?lang=en",
            Some(&format!("csrf={}", csrf(&check.body))),
        )
        .await;
    assert_eq!(result.status, 200);
    assert!(
        result.body.contains("The register&#39;s answer"),
        "{}",
        result.body
    );
    assert!(result.body.contains("verified: signed by MConnect"));
    assert!(
        result.body.contains("hreflang=\"ro\"") && result.body.contains("hreflang=\"ru\""),
        "every page offers the other languages"
    );
    // Only the grant's fields: idnp, first_name, last_name, status, address.
    assert!(result.body.contains("<code>first_name</code>"));
    assert!(
        !result.body.contains("<code>birth_date</code>"),
        "minimised by the broker"
    );
    // The audit record names the organisation, the official and the person.
    let seq_at = result.body.find("Audit log number").unwrap();
    let seq: u64 = result.body[seq_at..]
        .split("<code>")
        .nth(1)
        .unwrap()
        .split("</code>")
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let (record, _) = bus
        .sandbox
        .broker
        .broker
        .audit()
        .record(seq)
        .unwrap()
        .unwrap();
    assert_eq!(record.consumer.as_deref(), Some("apl-cahul"));
    assert_eq!(record.calling_user.as_deref(), Some("2000000000015"));
    assert_eq!(record.subject.as_deref(), Some(resident));
    assert_eq!(record.grant_id.as_deref(), Some("apl-cahul-residence"));
    assert_eq!(record.purpose.as_deref(), Some("residence-verification"));
    // Confirming again sends nothing: the lookup was taken when sent.
    let again = cahul
        .go(
            "POST",
            "/lookup/confirm",
            Some(&format!("csrf={}", csrf(&check.body))),
        )
        .await;
    assert_eq!(again.status, 303);
    assert_eq!(bus.sandbox.broker.broker.audit().tree_size(), seq + 1);

    // An official of Bălți cannot use Cahul's grants, by link or by form.
    let mut balti = Browser::new(&bus);
    balti.sign_in("2000000000026").await;
    let theirs = balti.go("GET", "/lookup", None).await;
    assert!(!theirs.body.contains("apl-cahul-"), "{}", theirs.body);
    assert_eq!(balti.go("GET", question, None).await.status, 404);
    let account = balti.go("GET", "/account", None).await;
    let forged = balti
        .go(
            "POST",
            question,
            Some(&format!(
                "csrf={}&purpose=residence-verification&basis=md-law-436-2006-art-29&person={resident}",
                csrf(&account.body)
            )),
        )
        .await;
    assert_eq!(forged.status, 404);
    // Signed out, no lookup page is reachable.
    let mut stranger = Browser::new(&bus);
    let bounced = stranger.go("GET", question, None).await;
    assert_eq!(bounced.status, 303);
    assert_eq!(bounced.location.as_deref(), Some("/sign-in"));
    bus.stop().await;
}

#[tokio::test]
async fn an_administrator_decides_which_official_may_use_which_grant() {
    let bus = Bus::start().await;
    let residence = "/lookup/apl-cahul-residence/asp-rsp/person-by-idnp";
    let (ion, elena, maria) = ("2000000000015", "2000000000048", "2000000000026");

    let mut official = Browser::new(&bus);
    official.sign_in(ion).await;
    assert!(
        official
            .go("GET", "/lookup", None)
            .await
            .body
            .contains(residence)
    );
    assert_eq!(
        official.go("GET", "/admin/officials", None).await.status,
        403,
        "an official without the administrator role may not"
    );

    let mut admin = Browser::new(&bus);
    admin.sign_in(elena).await;
    let page = admin.go("GET", "/admin/officials?lang=en", None).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains(&format!(
        "name=\"allow:{ion}:apl-cahul-residence\" aria-label="
    )));
    assert!(
        !page.body.contains(maria),
        "only Cahul's officials are listed"
    );
    // Ion keeps local taxes only; the form also tries to give a Bălți
    // official a right, and Ion a Bălți grant: both are ignored.
    let form = format!(
        "csrf={}&allow:{ion}:apl-cahul-local-taxes=on&allow:{maria}:apl-cahul-residence=on&allow:{ion}:apl-balti-civil-status=on",
        csrf(&page.body)
    );
    let saved = admin
        .go("POST", "/admin/officials?lang=en", Some(&form))
        .await;
    assert_eq!(saved.status, 200);
    assert!(saved.body.contains("The rights were saved."));
    let forged = admin
        .go(
            "POST",
            "/admin/officials",
            Some(&format!(
                "csrf={}&allow:{ion}:apl-cahul-residence=on",
                "0".repeat(64)
            )),
        )
        .await;
    assert_eq!(
        forged.status, 403,
        "without the session's token nothing changes"
    );

    let list = official.go("GET", "/lookup", None).await;
    assert!(!list.body.contains(residence), "the right is gone at once");
    assert!(list.body.contains("/lookup/apl-cahul-local-taxes/"));
    assert_eq!(official.go("GET", residence, None).await.status, 404);

    // On disk, for a restart: Cahul as decided, Bălți untouched.
    let stored: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(bus.dir.path().join("portal/assignments.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        stored["apl-cahul"][ion],
        serde_json::json!(["apl-cahul-local-taxes"])
    );
    assert_eq!(stored["apl-cahul"][elena], serde_json::json!([]));
    assert!(stored["apl-balti"][maria].as_array().unwrap().len() > 1);
    assert!(stored["apl-balti"].get(ion).is_none());

    // The portal's own audit log: who signed in, who changed whose rights,
    // and the refusals the portal made itself.
    let dir = bus.stop().await;
    let records = portal_audit(dir.path());
    let signed_in: Vec<&str> = records
        .iter()
        .filter(|r| r.event == "portal.sign_in" && r.problem_code.is_none())
        .filter_map(|r| r.calling_user.as_deref())
        .collect();
    assert!(
        signed_in.contains(&ion) && signed_in.contains(&elena),
        "{signed_in:?}"
    );
    let change = records
        .iter()
        .find(|r| r.event == "portal.assignments" && r.subject.as_deref() == Some(ion))
        .expect("the change to Ion's rights is recorded");
    assert_eq!(change.calling_user.as_deref(), Some(elena));
    assert_eq!(change.consumer.as_deref(), Some("apl-cahul"));
    assert_eq!(change.grant_id.as_deref(), Some("apl-cahul-local-taxes"));
    assert!(
        records.iter().any(|r| r.event == "portal.refusal"
            && r.calling_user.as_deref() == Some(elena)
            && r.http_status == 403),
        "the forged form is recorded as refused"
    );
    assert!(
        records.iter().any(|r| r.event == "portal.refusal"
            && r.calling_user.as_deref() == Some(ion)
            && r.service.as_deref() == Some("/admin/officials")),
        "an official on the administrators' page is recorded as refused"
    );
}

/// The records of the portal's audit log in a stopped sandbox's directory.
fn portal_audit(dir: &std::path::Path) -> Vec<mconnect::audit::AuditRecord> {
    struct Unsigned;
    impl mconnect::audit::TreeHeadSigner for Unsigned {
        fn keyid(&self) -> String {
            "test".into()
        }
        fn sign(&self, _: &[u8]) -> Result<Vec<u8>, String> {
            Ok(Vec::new())
        }
    }
    let config = mconnect::audit::AuditConfig::new(dir.join("portal/audit"));
    let (log, _) = mconnect::audit::AuditLog::open(config, std::sync::Arc::new(Unsigned)).unwrap();
    (0..log.tree_size())
        .map(|seq| log.record(seq).unwrap().unwrap().0)
        .collect()
}

#[tokio::test]
async fn a_resident_sees_who_accessed_their_data_and_reaches_nothing_of_an_official() {
    let bus = Bus::start().await;
    let resident = "2000000000037";
    let question = "/lookup/apl-cahul-residence/asp-rsp/person-by-idnp";

    // An official of Cahul looks the resident up.
    let mut cahul = Browser::new(&bus);
    cahul.sign_in("2000000000015").await;
    let page = cahul.go("GET", question, None).await;
    let asked = cahul
        .go(
            "POST",
            question,
            Some(&format!(
                "csrf={}&purpose=residence-verification&basis=md-law-436-2006-art-29&person={resident}",
                csrf(&page.body)
            )),
        )
        .await;
    assert_eq!(asked.status, 303);
    let check = cahul.go("GET", "/lookup/check", None).await;
    let result = cahul
        .go(
            "POST",
            "/lookup/confirm",
            Some(&format!("csrf={}", csrf(&check.body))),
        )
        .await;
    assert_eq!(result.status, 200);

    // The resident signs in (the development sign-in's resident form).
    let mut person = Browser::new(&bus);
    let bad = person.sign_in_resident("2000000000038").await;
    assert_eq!(bad.status, 400, "a wrong control digit is refused");
    assert!(bad.body.contains("href=\"#resident-idnp\""));
    let done = person.sign_in_resident(resident).await;
    assert_eq!(done.status, 303, "{}", done.body);
    let account = person.go("GET", "/account?lang=en", None).await;
    assert!(account.body.contains("href=\"/my-data\""));
    assert!(!account.body.contains("href=\"/lookup\""));

    // Nothing of an official's: not the lookups, not the administration,
    // not a forged confirmation.
    for path in ["/lookup", question, "/lookup/check", "/admin/officials"] {
        assert_eq!(person.go("GET", path, None).await.status, 403, "{path}");
    }
    let forged = person
        .go(
            "POST",
            "/lookup/confirm",
            Some(&format!("csrf={}", csrf(&account.body))),
        )
        .await;
    assert_eq!(forged.status, 403);

    // Their history: Cahul's lookup, by an official, under its purpose and
    // law, without the official's personal number; the history read itself
    // is not listed.
    let history = person.go("GET", "/my-data?lang=en", None).await;
    assert_eq!(history.status, 200, "{}", history.body);
    assert!(
        history.body.contains("Accesses in the period: 1"),
        "{}",
        history.body
    );
    assert!(history.body.contains("Primăria municipiului Cahul"));
    assert!(history.body.contains("<code>apl-cahul</code>"));
    assert!(history.body.contains("an official of the authority"));
    assert!(
        history
            .body
            .contains("Verifying domicile for local public services")
    );
    assert!(
        !history.body.contains("2000000000015"),
        "the official stays unnamed"
    );
    let again = person.go("GET", "/my-data?lang=en", None).await;
    assert!(
        again.body.contains("Accesses in the period: 1"),
        "reading is not an access"
    );
    // A period that ends before the lookup holds nothing; a backwards or
    // unreadable one is an error on the page.
    let before = person
        .go(
            "GET",
            "/my-data?lang=en&from=2025-01-01&to=2025-02-01",
            None,
        )
        .await;
    assert!(
        before.body.contains("Accesses in the period: 0"),
        "{}",
        before.body
    );
    let backwards = person
        .go(
            "GET",
            "/my-data?lang=en&from=2026-02-01&to=2026-01-01",
            None,
        )
        .await;
    assert_eq!(backwards.status, 400);
    assert!(backwards.body.contains("href=\"#from\""));

    // Another resident sees nothing of it.
    let mut other = Browser::new(&bus);
    other.sign_in_resident("2000000000026").await;
    let theirs = other.go("GET", "/my-data?lang=en", None).await;
    assert!(!theirs.body.contains("apl-cahul"), "{}", theirs.body);

    // The broker recorded each history read, by the portal's own system,
    // with the person as calling user and subject.
    let audit = bus.sandbox.broker.broker.audit();
    let reads = (0..audit.tree_size())
        .map(|seq| audit.record(seq).unwrap().unwrap().0)
        .filter(|r| {
            r.provider.as_deref() == Some("mconnect")
                && r.service
                    .as_deref()
                    .is_some_and(|s| s.ends_with("find-usage"))
                && r.subject.as_deref() == Some(resident)
        })
        .collect::<Vec<_>>();
    assert_eq!(
        reads.len(),
        3,
        "three pages read, the backwards period never asked: {reads:?}"
    );
    assert!(
        reads
            .iter()
            .all(|r| r.consumer.as_deref() == Some("mconnect-portal")
                && r.calling_user.as_deref() == Some(resident))
    );
    let dir = bus.stop().await;
    let records = portal_audit(dir.path());
    assert!(records.iter().any(|r| r.event == "portal.sign_in"
        && r.calling_user.as_deref() == Some(resident)
        && r.consumer.is_none()));
    assert!(records.iter().any(|r| r.event == "portal.refusal"
        && r.calling_user.as_deref() == Some(resident)
        && r.problem_code.as_deref() == Some("portal.officials_only")));
    assert!(
        records.iter().any(|r| r.event == "portal.sign_in"
            && r.problem_code.as_deref() == Some("portal.invalid_idnp"))
    );
}

/// The number in the `<code>` after `label` on a page.
fn number_after(body: &str, label: &str) -> u64 {
    let at = body
        .find(label)
        .unwrap_or_else(|| panic!("{label} on {body}"));
    body[at..]
        .split("<code>")
        .nth(1)
        .unwrap()
        .split("</code>")
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// The records the portal lists on a results page, in order.
fn listed_records(body: &str) -> Vec<u64> {
    body.split("href=\"/audit/records/")
        .skip(1)
        .map(|rest| rest.split('"').next().unwrap().parse().unwrap())
        .collect()
}

#[tokio::test]
async fn an_auditor_finds_a_lookup_in_the_log_proves_it_and_exports_the_evidence() {
    let bus = Bus::start().await;
    let resident = "2000000000037";
    let question = "/lookup/apl-cahul-residence/asp-rsp/person-by-idnp";
    let auditor_idnp = "2000000000071";
    let (basis, purpose) = (
        "md-law-133-2011-art-27",
        "supervision-of-personal-data-processing",
    );

    // An official of Cahul looks the resident up.
    let mut cahul = Browser::new(&bus);
    cahul.sign_in("2000000000015").await;
    let page = cahul.go("GET", question, None).await;
    cahul
        .go(
            "POST",
            question,
            Some(&format!(
                "csrf={}&purpose=residence-verification&basis=md-law-436-2006-art-29&person={resident}",
                csrf(&page.body)
            )),
        )
        .await;
    let check = cahul.go("GET", "/lookup/check", None).await;
    let result = cahul
        .go(
            "POST",
            "/lookup/confirm?lang=en",
            Some(&format!("csrf={}", csrf(&check.body))),
        )
        .await;
    let seq = number_after(&result.body, "Audit log number");

    // Nobody but an auditor reaches the log: not an official, by link or
    // by form.
    assert_eq!(cahul.go("GET", "/audit", None).await.status, 403);
    let account = cahul.go("GET", "/account", None).await;
    assert!(!account.body.contains("href=\"/audit\""));
    let forged = cahul
        .go(
            "POST",
            "/audit/declare",
            Some(&format!(
                "csrf={}&purpose={purpose}&basis={basis}",
                csrf(&account.body)
            )),
        )
        .await;
    assert_eq!(forged.status, 403);
    assert_eq!(
        cahul
            .go("GET", &format!("/audit/records/{seq}"), None)
            .await
            .status,
        403
    );

    // The auditor declares a basis and purpose first, from the grant.
    let mut auditor = Browser::new(&bus);
    auditor.sign_in(auditor_idnp).await;
    let account = auditor.go("GET", "/account", None).await;
    assert!(account.body.contains("href=\"/audit\""), "{}", account.body);
    let reads_before = audit_reads(&bus, auditor_idnp).len();
    let undeclared = auditor
        .go("GET", &format!("/audit/records/{seq}"), None)
        .await;
    assert_eq!(
        undeclared.status, 303,
        "nothing is read before a declaration"
    );
    assert_eq!(undeclared.location.as_deref(), Some("/audit"));
    let declare = auditor.go("GET", "/audit?lang=en", None).await;
    assert_eq!(declare.status, 200, "{}", declare.body);
    assert_eq!(declare.headers["cache-control"], "no-store");
    assert!(
        declare.body.contains(&format!(
            "type=\"radio\" id=\"purpose-1\" name=\"purpose\" value=\"{purpose}\""
        )),
        "{}",
        declare.body
    );
    assert!(declare.body.contains(&format!("value=\"{basis}\"")));
    let token = csrf(&declare.body);
    let wrong = auditor
        .go(
            "POST",
            "/audit/declare?lang=en",
            Some(&format!(
                "csrf={token}&purpose=tax-collection&basis={basis}"
            )),
        )
        .await;
    assert_eq!(wrong.status, 400);
    assert!(wrong.body.contains("href=\"#purpose\""), "{}", wrong.body);
    let tokenless = auditor
        .go(
            "POST",
            "/audit/declare",
            Some(&format!(
                "csrf={}&purpose={purpose}&basis={basis}",
                "0".repeat(64)
            )),
        )
        .await;
    assert_eq!(tokenless.status, 403);
    let declared = auditor
        .go(
            "POST",
            "/audit/declare",
            Some(&format!("csrf={token}&purpose={purpose}&basis={basis}")),
        )
        .await;
    assert_eq!(declared.status, 303);
    assert_eq!(declared.location.as_deref(), Some("/audit"));

    // The search form, checked on the server.
    let form = auditor.go("GET", "/audit?lang=en", None).await;
    assert_eq!(form.status, 200);
    assert!(form.body.contains("Search the log"), "{}", form.body);
    for (fields, error) in [
        ("subject=2000000000038", "#subject"),
        ("client=Apl%20Cahul", "#client"),
        ("service=nobody%2Fnothing", "#service"),
        ("from=2026-02-01&to=2026-01-01", "#from"),
        ("from=yesterday", "#from"),
    ] {
        let refused = auditor
            .go(
                "POST",
                "/audit/search?lang=en",
                Some(&format!("csrf={token}&{fields}")),
            )
            .await;
        assert_eq!(refused.status, 400, "{fields}");
        assert!(
            refused.body.contains(&format!("href=\"{error}\"")),
            "{fields}: the error summary links {error}"
        );
    }
    assert_eq!(
        audit_reads(&bus, auditor_idnp).len(),
        reads_before,
        "a search the portal refuses reads nothing"
    );

    // Searched by the person, the consumer, the service and the period, the
    // lookup is there.
    let today = time::OffsetDateTime::now_utc().date();
    let found = auditor
        .go(
            "POST",
            "/audit/search?lang=en",
            Some(&format!(
                "csrf={token}&subject={resident}&client=apl-cahul&service=asp-rsp%2Fperson-by-idnp&event=exchange&from={today}&to={today}"
            )),
        )
        .await;
    assert_eq!(found.status, 200, "{}", found.body);
    assert_eq!(found.headers["cache-control"], "no-store");
    assert_eq!(listed_records(&found.body), vec![seq], "{}", found.body);
    assert!(found.body.contains("<code>apl-cahul</code>"));

    // Opened: the record, its proof verified against a signed tree head.
    let record = auditor
        .go("GET", &format!("/audit/records/{seq}?lang=en"), None)
        .await;
    assert_eq!(record.status, 200, "{}", record.body);
    assert_eq!(record.headers["cache-control"], "no-store");
    assert!(
        record
            .body
            .contains("Inclusion proof verified against the signed tree head of size"),
        "{}",
        record.body
    );
    assert!(record.body.contains("signed by the broker at"));
    assert!(record.body.contains(resident) && record.body.contains("2000000000015"));
    assert!(record.body.contains("residence-verification"));

    // Exported: the bundle verifies with the broker certificate, and is
    // what `mconnect audit export` writes for the same record.
    let export = auditor
        .go("GET", &format!("/audit/records/{seq}/export"), None)
        .await;
    assert_eq!(export.status, 200, "{}", export.body);
    assert_eq!(export.headers["cache-control"], "no-store");
    assert_eq!(
        export.headers["content-disposition"],
        format!("attachment; filename=\"mconnect-audit-{seq}.jsonl\"").as_str()
    );
    let lines: Vec<serde_json::Value> = export
        .body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{}", export.body);
    let sth: mconnect::audit::SignedTreeHead =
        serde_json::from_value(lines[0]["tree_head"].clone()).unwrap();
    let broker_pem = std::fs::read_to_string(bus.pki().join("broker.cert.pem")).unwrap();
    let verifier = mconnect::audit::certificate_verifier(&broker_pem).unwrap();
    mconnect::audit::verify_tree_head(&sth, verifier).unwrap();
    let entry = mconnect::audit::auditor::Entry::from_item(&lines[1]).unwrap();
    assert_eq!(entry.seq, seq);
    assert_eq!(entry.record.subject.as_deref(), Some(resident));
    let path: Vec<mconnect::audit::Hash> = lines[1]["audit_path"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            use base64::Engine;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(h.as_str().unwrap())
                .unwrap();
            <mconnect::audit::Hash>::try_from(bytes.as_slice()).unwrap()
        })
        .collect();
    mconnect::audit::verify_inclusion(
        &entry.leaf_hash(),
        seq,
        sth.tree_size,
        &path,
        &sth.root_hash,
    )
    .unwrap();
    let out = bus.dir.path().join("cli-export.jsonl");
    let cli = tokio::process::Command::new(support::mconnect_bin())
        .args(["audit", "export", "--sandbox"])
        .arg(bus.dir.path())
        .args([
            "--subject",
            resident,
            "--client",
            "apl-cahul",
            "--service",
            "asp-rsp/person-by-idnp",
            "--event",
            "exchange",
            "--out",
        ])
        .arg(&out)
        .output()
        .await
        .unwrap();
    assert!(
        cli.status.success(),
        "{}",
        String::from_utf8_lossy(&cli.stderr)
    );
    let theirs: Vec<serde_json::Value> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let keys =
        |v: &serde_json::Value| -> Vec<String> { v.as_object().unwrap().keys().cloned().collect() };
    assert_eq!(keys(&theirs[0]), keys(&lines[0]));
    assert_eq!(keys(&theirs[0]["tree_head"]), keys(&lines[0]["tree_head"]));
    let same = theirs
        .iter()
        .find(|l| l["seq"] == seq)
        .expect("the CLI exports the same record");
    assert_eq!(keys(same), keys(&lines[1]));
    assert_eq!(same["record"], lines[1]["record"]);
    assert_eq!(same["leaf"], lines[1]["leaf"]);

    // A refusal of the broker reads as a sentence with its problem code.
    let missing = auditor
        .go("GET", "/audit/records/999999999?lang=en", None)
        .await;
    assert!(
        missing
            .body
            .contains("The log holds no record with this number."),
        "{}",
        missing.body
    );
    assert!(missing.body.contains("<code>audit.not_found</code>"));

    // Paging by the broker's cursor: the next page goes on where the first
    // stopped.
    let first = auditor
        .go(
            "POST",
            "/audit/search?lang=en",
            Some(&format!("csrf={token}")),
        )
        .await;
    assert_eq!(first.status, 200);
    let first_seqs = listed_records(&first.body);
    assert_eq!(first_seqs.len(), 20, "a full page: {}", first.body);
    let cursor_at = first
        .body
        .find("name=\"cursor\" value=\"")
        .expect("a next page");
    // The broker's cursor is `{time}-{seq}`: nothing to escape.
    let cursor = first.body[cursor_at + 21..].split('"').next().unwrap();
    let second = auditor
        .go(
            "POST",
            "/audit/search?lang=en",
            Some(&format!("csrf={token}&cursor={cursor}")),
        )
        .await;
    assert_eq!(second.status, 200, "{}", second.body);
    let second_seqs = listed_records(&second.body);
    assert!(!second_seqs.is_empty());
    assert!(
        second_seqs[0] < *first_seqs.last().unwrap(),
        "newest first, on from the first page: {first_seqs:?} then {second_seqs:?}"
    );

    // Every read is the broker's too: an `audit.read` record naming the
    // auditor, under the declared basis and purpose. The search, the record
    // (record, tree head, proof), the export (the same three), the refused
    // record, and two pages.
    let reads = audit_reads(&bus, auditor_idnp);
    assert_eq!(reads.len() - reads_before, 10, "{reads:#?}");
    assert!(
        reads
            .iter()
            .all(|r| r.consumer.as_deref() == Some("cnpdcp-audit")
                && r.legal_basis.as_deref() == Some(basis)
                && r.purpose.as_deref() == Some(purpose))
    );
    assert!(
        reads.iter().any(|r| r.subject.as_deref() == Some(resident)),
        "the search by the person names the person"
    );
    bus.stop().await;
}

/// The broker's `audit.read` records made as the official `idnp`.
fn audit_reads(bus: &Bus, idnp: &str) -> Vec<mconnect::audit::AuditRecord> {
    let audit = bus.sandbox.broker.broker.audit();
    (0..audit.tree_size())
        .map(|seq| audit.record(seq).unwrap().unwrap().0)
        .filter(|r| r.event == "audit.read" && r.calling_user.as_deref() == Some(idnp))
        .collect()
}
