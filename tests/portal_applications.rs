//! Connection applications in the portal, end to end on the real sandbox:
//! an authority's administrator fills the application (the server's
//! problems first, word for word the broker library's), signs it through
//! MSign, submits it; the operator asks for changes with a reason; the
//! authority edits, signs and resubmits; the operator approves; the
//! provider confirms; the authority's official then looks a person up
//! through the new grant. Every state change is mailed to the applicant
//! through MNotify, to a real SMTP server; another authority's official
//! can neither see nor act on the application; the broker keeps the
//! official's MSign signature and certificate with the evidence.
//!
//! Needs the workspace binaries (`tests/run.sh` builds them) and Python's
//! aiosmtpd (`pip install -r tests/interop/requirements.txt`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use support::Bus;
use support::browser::{Browser, Seen};
use support::smtp::{Smtp, free_port, serve_sandbox, wait_for_mails};

const ELENA: &str = "2000000000048"; // Cahul, administrator
const ION: &str = "2000000000015"; // Cahul, official only
const MARIA: &str = "2000000000026"; // Bălți, administrator
const ANA: &str = "2000000000060"; // AGE, operator
const VICTOR: &str = "2000000000082"; // ASP (asp-rsp), provider
const RESIDENT: &str = "2000000000037";
const SERVICE: &str = "asp-rsp/person-by-idnp";
const LEGAL_MAIL: &str = "juridic@cahul.md";

/// The application form filled in, as (field, value) pairs.
fn filled(use_case: &str) -> Vec<(&'static str, String)> {
    [
        ("services/0/service", SERVICE),
        ("services/0/legal_bases/0/id", "md-law-100-2001-art-5"),
        (
            "services/0/legal_bases/0/act",
            "Legea nr. 100/2001 privind actele de stare civilă",
        ),
        ("services/0/legal_bases/0/article", "art. 5"),
        (
            "services/0/legal_bases/0/text",
            "Actele de stare civilă se întocmesc de organele de stare civilă pe baza datelor din Registrul de stat al populației.",
        ),
        ("services/0/legal_bases/0/link", ""),
        ("services/0/purpose/code", "civil-status-registration"),
        (
            "services/0/purpose/text/ro",
            "Înregistrarea actelor de stare civilă",
        ),
        (
            "services/0/purpose/text/ru",
            "Регистрация актов гражданского состояния",
        ),
        ("services/0/purpose/text/en", "Registering civil status acts"),
        ("services/0/fields", "idnp"),
        ("services/0/fields", "first_name"),
        ("services/0/fields", "last_name"),
        ("services/0/fields", "birth_date"),
        ("controller_register_no", "0000303-002"),
        ("validity/from", "2025-01-01"),
        ("validity/until", ""),
        ("contacts/technical/name", "Serviciul IT, Primăria Cahul"),
        ("contacts/technical/email", "it@cahul.md"),
        ("contacts/technical/phone", ""),
        ("contacts/legal/name", "Serviciul juridic, Primăria Cahul"),
        ("contacts/legal/email", LEGAL_MAIL),
        ("contacts/legal/phone", ""),
        ("declaration/own_responsibility", "true"),
    ]
    .into_iter()
    .map(|(k, v)| (k, v.to_owned()))
    .chain([("services/0/use_case", use_case.to_owned())])
    .collect()
}

fn pairs<'a>(fields: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    fields.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// Fills, checks, signs through MSign and sends the application on
/// `form` (a page holding the form), answering the submission's page.
async fn fill_sign_and_send(who: &mut Browser, form: &Seen, fields: &[(&str, &str)]) -> Seen {
    let checked = who.post("/applications/form", form, fields).await;
    assert_eq!(checked.status, 303, "{}", checked.body);
    assert_eq!(checked.location.as_deref(), Some("/applications/check"));
    let check = who.go("GET", "/applications/check?lang=en", None).await;
    assert_eq!(check.status, 200);
    assert!(check.body.contains("SHA-256 of the application"));
    // The waiting page: it refreshes itself without script (the HTTP
    // Refresh header), with a link to stop that and one to check now.
    let waiting = who.post("/applications/sign?lang=en", &check, &[]).await;
    assert_eq!(waiting.status, 200, "{}", waiting.body);
    assert!(waiting.body.contains("Waiting for your signature"));
    assert_eq!(
        waiting.headers.get("refresh").unwrap(),
        "2; url=/applications/signing?lang=en"
    );
    assert!(!waiting.body.contains("<script"));
    assert!(
        waiting
            .body
            .contains("href=\"/applications/signing?manual\"")
    );
    assert!(waiting.body.contains("href=\"/applications/signing\""));
    let manual = who
        .go("GET", "/applications/signing?manual&lang=en", None)
        .await;
    assert!(
        manual.headers.get("refresh").is_none(),
        "stopped at the person's word"
    );
    let mut signed = None;
    for _ in 0..50 {
        let page = who.go("GET", "/applications/signing?lang=en", None).await;
        assert_eq!(page.status, 200);
        if page.body.contains("Your signature arrived") {
            signed = Some(page);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let signed = signed.expect("MSign signs within 5 s");
    who.post("/applications/submit", &signed, &[]).await
}

/// The request id in a `/applications/{id}?…` address.
fn id_in(location: &str) -> String {
    location
        .trim_start_matches("/applications/")
        .split('?')
        .next()
        .unwrap()
        .to_owned()
}

/// Maria, another authority's administrator, signed in: application `id`
/// and its edit page are not found for her.
async fn hidden_from_maria(bus: &Bus, id: &str) -> Browser {
    let mut maria = Browser::new(bus);
    maria.sign_in(MARIA).await;
    for path in [
        format!("/applications/{id}"),
        format!("/applications/{id}/edit"),
    ] {
        assert_eq!(maria.go("GET", &path, None).await.status, 404, "{path}");
    }
    maria
}

/// The provider confirms on `page`, the confirmation page of request `id`:
/// the request, in force.
async fn confirm(
    provider: &mut Browser,
    page: &Seen,
    store: &dyn mconnect::store::StateStore,
    id: &str,
) -> mconnect::connect::ConnectionRequest {
    let confirmed = provider
        .post(&format!("/confirmations/{id}/confirm"), page, &[])
        .await;
    assert_eq!(confirmed.status, 303, "{}", confirmed.body);
    let kept = mconnect::connect::load(store, id).unwrap().unwrap();
    assert_eq!(kept.state, mconnect::connect::State::Active);
    kept
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_authority_applies_signs_resubmits_and_gets_its_grant_and_every_change_is_mailed() {
    let dir = tempfile::tempdir().unwrap();
    let smtp = Smtp::start(free_port(), &dir.path().join("maildir")).await;
    serve_sandbox(dir.path(), Some(smtp.port));
    let bus = Bus::start_in(dir).await;

    // Only an administrator files applications.
    let mut ion = Browser::new(&bus);
    ion.sign_in(ION).await;
    assert_eq!(ion.go("GET", "/applications", None).await.status, 403);
    let mut stranger = Browser::new(&bus);
    let bounced = stranger.go("GET", "/applications", None).await;
    assert_eq!(bounced.location.as_deref(), Some("/sign-in"));

    let mut elena = Browser::new(&bus);
    elena.sign_in(ELENA).await;
    let account = elena.go("GET", "/account", None).await;
    assert!(account.body.contains("href=\"/applications\""));
    assert!(!account.body.contains("href=\"/operator\""));
    let list = elena.go("GET", "/applications?lang=en", None).await;
    assert_eq!(list.status, 200);
    assert!(list.body.contains("There are no applications yet."));
    let new = elena.go("GET", "/applications/new?lang=en", None).await;
    assert!(new.body.contains(&format!("value=\"{SERVICE}\"")));
    assert!(
        !new.body.contains("value=\"mconnect/"),
        "the broker's own services are not offered"
    );
    let none = elena.go("GET", "/applications/form?lang=en", None).await;
    assert_eq!(none.status, 400, "no service chosen");
    let form = elena
        .go(
            "GET",
            &format!("/applications/form?lang=en&service={SERVICE}"),
            None,
        )
        .await;
    assert_eq!(form.status, 200);
    assert!(form.body.contains("name=\"services/0/legal_bases/0/act\""));
    assert!(
        form.body.contains("value=\"first_name\""),
        "the service's fields are offered"
    );

    // The server's problems, first the schema's: the inline errors and the
    // summary's links point at the fields.
    let mut wrong = filled("Registering births and marriages");
    for (k, v) in &mut wrong {
        match *k {
            "services/0/purpose/code" => *v = "Civil Status!".into(),
            "contacts/legal/email" => *v = "juridic-at-cahul".into(),
            "services/0/legal_bases/0/act" => v.clear(),
            _ => {}
        }
    }
    wrong.retain(|(k, _)| *k != "declaration/own_responsibility");
    let refused = elena
        .post("/applications/form?lang=en", &form, &pairs(&wrong))
        .await;
    assert_eq!(refused.status, 400, "{}", refused.body);
    for anchor in [
        "f-services-0-purpose-code",
        "f-contacts-legal-email",
        "f-services-0-legal_bases-0-act",
        "f-declaration-own_responsibility",
    ] {
        assert!(
            refused.body.contains(&format!("href=\"#{anchor}\"")),
            "{anchor}: {}",
            refused.body
        );
        assert!(refused.body.contains(&format!("id=\"{anchor}\"")));
    }
    assert!(refused.body.contains("class=\"error-message\""));
    assert!(
        refused.body.contains("Civil Status!"),
        "what was typed stays"
    );
    // Then the broker's cross-checks, in the words the admin API uses.
    let mut no_controller = filled("Registering births and marriages");
    no_controller.retain(|(k, _)| *k != "controller_register_no");
    let refused = elena
        .post(
            "/applications/form?lang=en",
            &refused,
            &pairs(&no_controller),
        )
        .await;
    assert_eq!(refused.status, 400);
    let said = "asp-rsp/person-by-idnp carries personal data (the catalog says so): give your number in the register of personal-data controllers (Law 133/2011)";
    assert!(refused.body.contains(said), "{}", refused.body);
    assert!(refused.body.contains("href=\"#f-controller_register_no\""));

    // Valid: checked, signed through MSign, sent.
    let first = filled("Registering births and marriages");
    let sent = fill_sign_and_send(&mut elena, &refused, &pairs(&first)).await;
    assert_eq!(sent.status, 303, "{}", sent.body);
    let location = sent.location.unwrap();
    let id = id_in(&location);
    let shown = elena.go("GET", &location, None).await;
    assert_eq!(shown.status, 200);
    assert!(shown.body.contains("Your application was sent."));
    assert!(shown.body.contains("state-submitted"));
    assert!(shown.body.contains("Answer due by"));
    let list = elena.go("GET", "/applications?lang=en", None).await;
    assert!(list.body.contains(&format!("href=\"/applications/{id}\"")));

    // The broker keeps the official's MSign signature and certificate with
    // the evidence, verified.
    let store = bus.sandbox.broker.broker.registry().store().clone();
    let kept = mconnect::connect::load(store.as_ref(), &id)
        .unwrap()
        .unwrap();
    let evidence = &kept.evidence[0];
    assert_eq!(evidence.signer, "apl-cahul");
    assert_eq!(evidence.calling_user.as_deref(), Some(ELENA));
    let user = evidence
        .user_signature
        .as_ref()
        .expect("the MSign signature is kept");
    assert_eq!(user.idnp, ELENA);
    assert!(
        user.subject.contains(&format!("PNOMD-{ELENA}")),
        "{}",
        user.subject
    );
    assert_eq!(user.digest_sha256, evidence.body_sha256);
    let issued =
        std::fs::read_to_string(bus.pki().join(format!("signers/{ELENA}.cert.pem"))).unwrap();
    assert_eq!(user.certificate.trim(), issued.trim());
    evidence.reverify().unwrap();

    // Another authority's administrator sees nothing of it and can do
    // nothing with it; nor the operator's pages.
    let mut maria = hidden_from_maria(&bus, &id).await;
    let theirs = maria.go("GET", "/applications", None).await;
    assert!(!theirs.body.contains(&id));
    assert_eq!(maria.go("GET", "/operator", None).await.status, 403);
    let account = maria.go("GET", "/account", None).await;
    let forged = maria
        .post(&format!("/operator/{id}/approve"), &account, &[])
        .await;
    assert_eq!(forged.status, 403);
    let forged = maria
        .post(&format!("/confirmations/{id}/confirm"), &account, &[])
        .await;
    assert_eq!(forged.status, 403);

    // The operator: the queue, the evidence verified, a review, a request
    // for changes refused without its reason and made with it.
    let mut ana = Browser::new(&bus);
    ana.sign_in(ANA).await;
    let account = ana.go("GET", "/account", None).await;
    assert!(account.body.contains("href=\"/operator\""));
    assert_eq!(ana.go("GET", "/applications", None).await.status, 403);
    let queue = ana.go("GET", "/operator?lang=en", None).await;
    assert_eq!(queue.status, 200);
    assert!(queue.body.contains(&format!("href=\"/operator/{id}\"")));
    let opened = ana
        .go("GET", &format!("/operator/{id}?lang=en"), None)
        .await;
    assert_eq!(opened.status, 200);
    assert!(
        opened.body.contains("class=\"tag verified\""),
        "{}",
        opened.body
    );
    assert!(opened.body.contains(&format!("PNOMD-{ELENA}")));
    let reviewed = ana
        .post(
            &format!("/operator/{id}/review"),
            &opened,
            &[("reason", "")],
        )
        .await;
    assert_eq!(reviewed.status, 303, "{}", reviewed.body);
    let opened = ana
        .go("GET", &format!("/operator/{id}?lang=en"), None)
        .await;
    let no_reason = ana
        .post(
            &format!("/operator/{id}/request-changes?lang=en"),
            &opened,
            &[("reason", " ")],
        )
        .await;
    assert_eq!(no_reason.status, 400);
    assert!(
        no_reason.body.contains("needs a reason"),
        "{}",
        no_reason.body
    );
    let why = "Say which department uses the data";
    let asked = ana
        .post(
            &format!("/operator/{id}/request-changes"),
            &opened,
            &[("reason", why)],
        )
        .await;
    assert_eq!(asked.status, 303);

    // The authority sees what was asked, edits, signs again and resubmits.
    let shown = elena
        .go("GET", &format!("/applications/{id}?lang=en"), None)
        .await;
    assert!(shown.body.contains(why));
    assert!(
        shown
            .body
            .contains(&format!("href=\"/applications/{id}/edit\""))
    );
    let edit = elena
        .go("GET", &format!("/applications/{id}/edit?lang=en"), None)
        .await;
    assert_eq!(edit.status, 200);
    assert!(
        edit.body.contains("Registering births and marriages"),
        "filled with the version filed"
    );
    assert!(
        edit.body
            .contains(&format!("name=\"resubmit\" value=\"{id}\""))
    );
    let mut second = filled("The civil status department registers births and marriages");
    second.push(("resubmit", id.clone()));
    second.push(("reason", "named the department".into()));
    let resent = fill_sign_and_send(&mut elena, &edit, &pairs(&second)).await;
    assert_eq!(resent.status, 303, "{}", resent.body);
    assert_eq!(id_in(&resent.location.unwrap()), id);
    let kept = mconnect::connect::load(store.as_ref(), &id)
        .unwrap()
        .unwrap();
    assert_eq!(kept.state, mconnect::connect::State::Resubmitted);
    assert_eq!(kept.evidence.len(), 2);
    assert!(kept.evidence.iter().all(|e| e.user_signature.is_some()));

    // The operator compares the versions and approves.
    let opened = ana
        .go("GET", &format!("/operator/{id}?lang=en"), None)
        .await;
    assert!(opened.body.contains("Changes from version 1 → 2"));
    assert!(opened.body.contains("class=\"diff-removed\""));
    assert!(
        opened
            .body
            .contains("The civil status department registers births and marriages")
    );
    for step in ["review", "approve"] {
        let page = ana.go("GET", &format!("/operator/{id}"), None).await;
        let done = ana
            .post(&format!("/operator/{id}/{step}"), &page, &[])
            .await;
        assert_eq!(done.status, 303, "{step}: {}", done.body);
    }

    // The provider confirms for its service: the grant is in force.
    let mut victor = Browser::new(&bus);
    victor.sign_in(VICTOR).await;
    let account = victor.go("GET", "/account", None).await;
    assert!(account.body.contains("href=\"/confirmations\""));
    assert_eq!(victor.go("GET", "/operator", None).await.status, 403);
    let mine = victor.go("GET", "/confirmations?lang=en", None).await;
    assert!(mine.body.contains(&format!("href=\"/confirmations/{id}\"")));
    let page = victor
        .go("GET", &format!("/confirmations/{id}?lang=en"), None)
        .await;
    assert!(page.body.contains("Confirm for our services"));
    assert!(
        !page.body.contains("/approve\""),
        "a provider is offered no operator decision"
    );
    let kept = confirm(&mut victor, &page, store.as_ref(), &id).await;
    let grant = kept.grants[0].clone();

    // The authority's administrator gives herself the new grant and looks
    // a person up through it, at once.
    let admin = elena.go("GET", "/admin/officials", None).await;
    assert!(
        admin.body.contains(&format!("allow:{ELENA}:{grant}")),
        "{}",
        admin.body
    );
    let allow = format!("allow:{ELENA}:{grant}");
    let saved = elena
        .post("/admin/officials", &admin, &[(allow.as_str(), "on")])
        .await;
    assert_eq!(saved.status, 200);
    let question = format!("/lookup/{grant}/{SERVICE}");
    let lookups = elena.go("GET", "/lookup", None).await;
    assert!(
        lookups.body.contains(&format!("href=\"{question}\"")),
        "{}",
        lookups.body
    );
    let page = elena.go("GET", &question, None).await;
    let asked = elena
        .post(
            &question,
            &page,
            &[
                ("purpose", "civil-status-registration"),
                ("basis", "md-law-100-2001-art-5"),
                ("person", RESIDENT),
            ],
        )
        .await;
    assert_eq!(asked.status, 303, "{}", asked.body);
    let check = elena.go("GET", "/lookup/check", None).await;
    let result = elena.post("/lookup/confirm?lang=en", &check, &[]).await;
    assert_eq!(result.status, 200);
    assert!(
        result.body.contains("<code>first_name</code>"),
        "{}",
        result.body
    );
    assert!(
        !result.body.contains("<code>address"),
        "only the fields asked for"
    );

    // One mail per state change, to the legal contact: submitted, taken up,
    // changes asked, resubmitted, taken up, approved, confirmed.
    let mails = wait_for_mails(&smtp.maildir, 7, Duration::from_secs(30)).await;
    let ours: Vec<&String> = mails.iter().filter(|m| m.contains(&id)).collect();
    assert_eq!(ours.len(), 7, "{mails:#?}");
    assert!(ours.iter().all(|m| m.contains(LEGAL_MAIL)));
    assert!(
        ours.iter().any(|m| m.contains(why)),
        "the reason travels with the notice"
    );

    // The portal's own audit log names who did what.
    let dir = bus.stop().await;
    let records = portal_audit(dir.path());
    let actions: Vec<(String, String)> = records
        .iter()
        .filter(|r| r.event == "portal.connection_request")
        .map(|r| {
            (
                r.calling_user.clone().unwrap_or_default(),
                r.service.clone().unwrap_or_default(),
            )
        })
        .collect();
    for (who, what) in [
        (ELENA, format!("{id} submit")),
        (ANA, format!("{id} request_changes")),
        (ELENA, format!("{id} resubmit")),
        (ANA, format!("{id} approve")),
        (VICTOR, format!("{id} confirm")),
    ] {
        assert!(
            actions.contains(&(who.to_owned(), what.clone())),
            "{who} {what}: {actions:?}"
        );
    }
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

const NICOLAE: &str = "2000000000093"; // Copceac, administrator; Copceac is not on the bus
const COPCEAC: &str = "apl-copceac";
const COPCEAC_IDNO: &str = "1003605000089";

/// Issues a certificate for Copceac's system from the sandbox's CA (as the
/// bus CA would for a new authority), written into the PKI directory.
fn issue_copceac(bus: &Bus) -> mconnect::pki::IssuedCertificate {
    let ca = mconnect::pki::DevCa::load(&bus.pki()).unwrap();
    let issued = ca
        .issue(
            COPCEAC,
            "Primăria satului Copceac",
            mconnect::pki::KeyType::Ed25519,
        )
        .unwrap();
    issued.write(&bus.pki(), COPCEAC).unwrap();
    issued
}

/// A consumer calling as Copceac's system with the certificate issued for it.
fn copceac_consumer(bus: &Bus) -> mconnect_sdk::Consumer {
    let credentials =
        mconnect_sdk::Credentials::from_pki_dir(&bus.pki(), COPCEAC, "ed25519").unwrap();
    let broker = mconnect_sdk::TrustedKeys::broker_in_pki_dir(&bus.pki()).unwrap();
    mconnect_sdk::Consumer::new(credentials, &bus.sandbox.manifest.broker.data_url, broker).unwrap()
}

fn lookup_call() -> mconnect_sdk::Call {
    mconnect_sdk::Call {
        method: http::Method::GET,
        path: format!("/r1/{SERVICE}?idnp={RESIDENT}"),
        body: None,
        calling_user: NICOLAE.into(),
        basis: "md-law-100-2001-art-5".into(),
        reason: "civil-status-registration".into(),
        subject: Some(RESIDENT.into()),
        represented_party: None,
        request_id: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_authority_not_on_the_bus_applies_through_the_portal_and_joins_on_approval() {
    let bus = Bus::start().await;
    let issued = issue_copceac(&bus);
    let registry = bus.sandbox.broker.broker.registry();
    assert!(registry.snapshot().get(COPCEAC).is_none());
    // Not a participant: the broker does not know the system at all yet.
    let before = copceac_consumer(&bus).call(&lookup_call()).await;
    assert!(
        before.map_or(true, |out| !out.status.is_success()),
        "an unregistered system calls nothing"
    );

    let mut nicolae = Browser::new(&bus);
    nicolae.sign_in(NICOLAE).await;
    let form = nicolae
        .go(
            "GET",
            &format!("/applications/form?lang=en&service={SERVICE}"),
            None,
        )
        .await;
    assert_eq!(form.status, 200, "{}", form.body);
    assert!(
        form.body
            .contains("Your organisation is not on the bus yet")
    );
    assert!(form.body.contains("name=\"applicant/idno\""));
    assert!(
        form.body
            .contains("name=\"applicant/registration/certificate\"")
    );
    assert!(form.body.contains(&format!("<code>{COPCEAC}</code>")));
    assert!(
        !form.body.contains("name=\"applicant/system\""),
        "the system id is the official's organisation's, never typed"
    );

    let mut fields = filled("Registering births in the village of Copceac");
    fields.extend([
        ("applicant/idno", COPCEAC_IDNO.to_owned()),
        ("applicant/name", "Primăria satului Copceac".to_owned()),
        (
            "applicant/registration/endpoint",
            "https://copceac.example.md".to_owned(),
        ),
    ]);
    // A certificate that is no certificate: the broker library's words,
    // beside the field.
    let mut wrong = fields.clone();
    wrong.push((
        "applicant/registration/certificate",
        "my certificate".into(),
    ));
    let refused = nicolae
        .post("/applications/form?lang=en", &form, &pairs(&wrong))
        .await;
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert!(
        refused
            .body
            .contains("href=\"#f-applicant-registration-certificate\""),
        "{}",
        refused.body
    );
    // A certificate of another CA: refused with the form, before anything
    // is signed, in the broker's own words (`registry::admit`, its check
    // on arrival).
    let stranger = mconnect::pki::DevCa::generate("not the bus CA")
        .unwrap()
        .issue(COPCEAC, "Copceac", mconnect::pki::KeyType::Ed25519)
        .unwrap();
    let mut foreign = fields.clone();
    foreign.push((
        "applicant/registration/certificate",
        stranger.cert_pem.clone(),
    ));
    let untrusted = nicolae
        .post("/applications/form?lang=en", &refused, &pairs(&foreign))
        .await;
    assert_eq!(untrusted.status, 400, "{}", untrusted.body);
    let said = format!(
        "certificate {}: certificate does not chain to the bus CA (its issuer is not the bus CA); have the bus CA issue it",
        stranger.fingerprint
    );
    assert!(untrusted.body.contains(&said), "{}", untrusted.body);
    assert!(
        untrusted
            .body
            .contains("id=\"f-applicant-registration-certificate-error\""),
        "beside the field: {}",
        untrusted.body
    );
    assert!(
        untrusted
            .body
            .contains("href=\"#f-applicant-registration-certificate\"")
    );
    // Nothing to check or sign: the draft is not a valid application.
    let check = nicolae.go("GET", "/applications/check?lang=en", None).await;
    assert_eq!(check.status, 303);
    assert_eq!(check.location.as_deref(), Some("/applications/form?draft"));
    let sign = nicolae
        .post("/applications/sign?lang=en", &untrusted, &[])
        .await;
    assert_eq!(sign.status, 303, "no MSign request: {}", sign.body);
    assert_eq!(sign.location.as_deref(), Some("/applications/form?draft"));

    fields.push((
        "applicant/registration/certificate",
        issued.cert_pem.clone(),
    ));
    let sent = fill_sign_and_send(&mut nicolae, &untrusted, &pairs(&fields)).await;
    assert_eq!(sent.status, 303, "{}", sent.body);
    let location = sent.location.unwrap();
    let id = id_in(&location);
    let shown = nicolae.go("GET", &location, None).await;
    assert_eq!(shown.status, 200, "{}", shown.body);
    assert!(shown.body.contains("state-submitted"));
    assert!(shown.body.contains(&issued.fingerprint), "{}", shown.body);
    let list = nicolae.go("GET", "/applications?lang=en", None).await;
    assert!(list.body.contains(&format!("href=\"/applications/{id}\"")));

    // Filed by the portal as an intermediary, with Nicolae's own signature.
    let store = registry.store().clone();
    let kept = mconnect::connect::load(store.as_ref(), &id)
        .unwrap()
        .unwrap();
    assert_eq!(kept.filer(), Some("mconnect-portal"));
    assert_eq!(kept.evidence[0].signer, "mconnect-portal");
    assert_eq!(
        kept.evidence[0].user_signature.as_ref().unwrap().idnp,
        NICOLAE
    );
    assert_eq!(kept.application.applicant.system, COPCEAC);

    // Another authority's administrator sees nothing of it.
    let mut maria = hidden_from_maria(&bus, &id).await;
    assert!(
        !maria
            .go("GET", "/applications", None)
            .await
            .body
            .contains(&id)
    );

    // The operator reads the registration and approves; the system is
    // registered in the same change.
    let mut ana = Browser::new(&bus);
    ana.sign_in(ANA).await;
    let opened = ana
        .go("GET", &format!("/operator/{id}?lang=en"), None)
        .await;
    assert_eq!(opened.status, 200);
    assert!(opened.body.contains("Registration on the bus"));
    assert!(opened.body.contains(&issued.fingerprint));
    assert!(opened.body.contains("CN=apl-copceac"), "{}", opened.body);
    assert!(opened.body.contains("https://copceac.example.md"));
    assert!(
        opened.body.contains("class=\"summary registration\"")
            && opened.body.contains("class=\"tag verified\"")
    );
    for step in ["review", "approve"] {
        let page = ana.go("GET", &format!("/operator/{id}"), None).await;
        let done = ana
            .post(&format!("/operator/{id}/{step}"), &page, &[])
            .await;
        assert_eq!(done.status, 303, "{step}: {}", done.body);
    }
    let snapshot = registry.snapshot();
    let joined = &snapshot
        .get(COPCEAC)
        .expect("registered on approval")
        .participant;
    assert_eq!(joined.organisation.idno, COPCEAC_IDNO);
    assert_eq!(joined.roles, vec![mconnect::registry::Role::Consumer]);
    assert_eq!(joined.certificates[0].fingerprint, issued.fingerprint);

    // Copceac is on the bus now, and the portal does not serve it (it holds
    // no key of its system): Nicolae still follows the application the
    // portal filed for it, approved, and is told that his organisation's
    // own system files from now on; he files nothing more here.
    let account = nicolae.go("GET", "/account", None).await;
    assert!(account.body.contains("href=\"/applications\""));
    let list = nicolae.go("GET", "/applications?lang=en", None).await;
    assert_eq!(list.status, 200, "{}", list.body);
    assert!(list.body.contains(&format!("href=\"/applications/{id}\"")));
    assert!(list.body.contains("state-approved"), "{}", list.body);
    assert!(list.body.contains("Approved, waiting for the providers"));
    assert!(list.body.contains("Your organisation is on the bus"));
    assert!(list.body.contains(&format!("<code>{COPCEAC}</code>")));
    assert!(
        !list.body.contains("href=\"/applications/new\""),
        "no new application through the portal: {}",
        list.body
    );
    let shown = nicolae
        .go("GET", &format!("/applications/{id}?lang=en"), None)
        .await;
    assert_eq!(shown.status, 200, "{}", shown.body);
    assert!(shown.body.contains("state-approved"));
    assert!(shown.body.contains(&issued.fingerprint));
    assert!(shown.body.contains("Your organisation is on the bus"));
    assert!(!shown.body.contains("/edit\""));
    for path in [
        "/applications/new".to_owned(),
        format!("/applications/form?service={SERVICE}"),
        "/applications/check".to_owned(),
        format!("/applications/{id}/edit"),
    ] {
        let page = nicolae.go("GET", &path, None).await;
        assert_eq!(page.status, 303, "{path}: {}", page.body);
        let back = if path.ends_with("/edit") {
            format!("/applications/{id}")
        } else {
            "/applications".to_owned()
        };
        assert_eq!(page.location.as_deref(), Some(back.as_str()), "{path}");
    }
    let refiled = nicolae
        .post("/applications/form?lang=en", &account, &pairs(&fields))
        .await;
    assert_eq!(refiled.status, 303, "{}", refiled.body);
    assert_eq!(refiled.location.as_deref(), Some("/applications"));
    assert_eq!(
        mconnect::connect::load_all(store.as_ref()).unwrap().len(),
        1,
        "nothing more was filed"
    );
    // Another authority's administrator still sees nothing of it.
    assert_eq!(
        maria
            .go("GET", &format!("/applications/{id}"), None)
            .await
            .status,
        404
    );

    // The provider confirms; the grant is in force; Copceac's system calls
    // through the broker with its own certificate.
    let mut victor = Browser::new(&bus);
    victor.sign_in(VICTOR).await;
    let page = victor
        .go("GET", &format!("/confirmations/{id}?lang=en"), None)
        .await;
    confirm(&mut victor, &page, store.as_ref(), &id).await;
    let shown = nicolae
        .go("GET", &format!("/applications/{id}?lang=en"), None)
        .await;
    assert_eq!(shown.status, 200);
    assert!(shown.body.contains("state-active"), "{}", shown.body);
    let out = copceac_consumer(&bus).call(&lookup_call()).await.unwrap();
    assert_eq!(out.status, 200, "{}", String::from_utf8_lossy(&out.body));
    out.receipt.unwrap();
    let answer: serde_json::Value = serde_json::from_slice(&out.body).unwrap();
    assert!(answer.get("first_name").is_some(), "{answer}");
    assert!(answer.get("address").is_none(), "only the fields asked for");
    bus.stop().await;
}

/// Copceac's application as JSON bytes, with `registration` when given.
fn copceac_application(system: &str, idno: &str, certificate: Option<&str>) -> Vec<u8> {
    let mut v: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            support::repo().join("examples/connect/apl-ungheni-pensions.json"),
        )
        .unwrap(),
    )
    .unwrap();
    v["applicant"] =
        serde_json::json!({"idno": idno, "name": "Primăria satului Copceac", "system": system});
    if let Some(pem) = certificate {
        v["applicant"]["registration"] = serde_json::json!({"certificate": pem});
    }
    serde_json::to_vec_pretty(&v).unwrap()
}

/// Nicolae's own signature over `body`, as MSign makes it with the signing
/// certificate the sandbox issued him.
fn nicolae_signs(bus: &Bus, body: &[u8]) -> mconnect::connect::client::UserSigned {
    let signers = bus.pki().join("signers");
    let cert = std::fs::read_to_string(signers.join(format!("{NICOLAE}.cert.pem"))).unwrap();
    let key = std::fs::read_to_string(signers.join(format!("{NICOLAE}.key.pem"))).unwrap();
    let key = mconnect::crypto::SigningKey::from_pem(&key).unwrap();
    let raw = key.sign(&mconnect::crypto::sha256(body)).unwrap();
    mconnect::connect::client::UserSigned {
        signature: base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            mconnect::crypto::ecdsa_p256_fixed_to_der(&raw),
        ),
        certificate_pem: cert,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_an_intermediary_with_the_officials_signature_files_for_an_authority_not_on_the_bus() {
    let bus = Bus::start().await;
    let issued = issue_copceac(&bus);
    let admin_url = bus.sandbox.manifest.broker.admin_url.clone();
    let portal = support::admin_client(bus.dir.path(), &admin_url, "mconnect-portal");
    let cahul = support::admin_client(bus.dir.path(), &admin_url, "apl-cahul");
    let path = "/v1/connection-requests";
    use mconnect::connect::client::AdminClient;
    // `client` files `body`, with Nicolae's own signature when `signed`:
    // the status and answer.
    let file = async |client: &AdminClient, body: Vec<u8>, signed: bool| {
        let request = if signed {
            let user = nicolae_signs(&bus, &body);
            client.signed_by_user(http::Method::POST, path, body.into(), NICOLAE, &user)
        } else {
            client.signed(http::Method::POST, path, body.into(), NICOLAE)
        };
        client.send(request.unwrap()).await.unwrap()
    };
    // Filed and refused with `status` and `code`: the problem.
    let refused =
        async |client: &AdminClient, body: Vec<u8>, signed: bool, status: u16, code: &str| {
            let (got, problem) = file(client, body, signed).await;
            assert_eq!(got, status, "{problem}");
            assert_eq!(problem["code"], code, "{problem}");
            problem
        };
    let joining = copceac_application(COPCEAC, COPCEAC_IDNO, Some(&issued.cert_pem));

    // An intermediary without the official's own signature.
    let code = "connect.user_signature_required";
    refused(&portal, joining.clone(), false, 403, code).await;

    // A participant that is not an intermediary, signing for another.
    let code = "connect.signer_not_applicant";
    refused(&cahul, joining.clone(), true, 403, code).await;

    // An intermediary filing for an authority already on the bus.
    let registered = copceac_application("apl-cahul", "1003603000063", None);
    refused(&portal, registered, true, 403, code).await;

    // A registration for a system that is registered already.
    let again = copceac_application("apl-cahul", "1003603000063", Some(&issued.cert_pem));
    let problem = refused(&cahul, again, false, 422, "connect.application_invalid").await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("`apl-cahul` is already a registered participant"),
        "{problem}"
    );

    // A certificate another CA issued.
    let stranger = mconnect::pki::DevCa::generate("not the bus CA")
        .unwrap()
        .issue(COPCEAC, "Copceac", mconnect::pki::KeyType::Ed25519)
        .unwrap();
    let foreign = copceac_application(COPCEAC, COPCEAC_IDNO, Some(&stranger.cert_pem));
    let problem = refused(&portal, foreign, true, 422, "certificate.untrusted").await;
    // The words the portal shows beside the field before signing.
    assert_eq!(
        problem["detail"],
        format!(
            "at /applicant/registration/certificate: certificate {}: certificate does not chain to the bus CA (its issuer is not the bus CA); have the bus CA issue it",
            stranger.fingerprint
        ),
        "{problem}"
    );

    // Refused, none of them is kept; the intermediary with the official's
    // signature and a certificate of the bus CA is.
    let store = bus.sandbox.broker.broker.registry().store().clone();
    assert!(
        mconnect::connect::load_all(store.as_ref())
            .unwrap()
            .is_empty()
    );
    let (status, answer) = file(&portal, joining, true).await;
    assert_eq!(status, 201, "{answer}");
    assert_eq!(answer["filed_by"], "mconnect-portal");
    assert_eq!(
        answer["registration"]["chain"]["verified"], true,
        "{answer}"
    );
    // The applicant organisation is not on the bus, and no one else but the
    // filer, the operator and the provider sees it.
    let id = answer["id"].as_str().unwrap();
    let (status, _) = cahul
        .send(
            cahul
                .plain(http::Method::GET, &format!("{path}/{id}"), None)
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(status, 404);
    bus.stop().await;
}
