//! MPass sign-in against a real SAML 2.0 identity provider: PyPI's pysaml2
//! (`saml2.server.Server`, signing with Debian's xmlsec1) run by
//! `tests/saml/idp.py` as a child process on 127.0.0.1. The portal's
//! AuthnRequest goes to it, its signed Response comes back to the portal's
//! ACS, as in a browser. The IdP makes the correct answer and, on request,
//! wrong ones (expired, another audience, destination or issuer, a foreign
//! key, SHA-1, unsigned, a failed sign-in); the test tampers with correct
//! ones itself (the NameID changed after signing, a comment in it, a second
//! assertion wrapped around the signed one, a DOCTYPE) and replays them.
//!
//! Nothing is skipped: without python3, pysaml2 or xmlsec1 the tests fail
//! and say what to install (`tests/run.sh` installs them).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use mconnect::catalog::Catalog;
use mconnect_portal::Portal;
use mconnect_portal::mpass::Mpass;
use mconnect_portal::saml::{IdentityProvider, Refusal, SamlIdentity, ServiceProvider};
use mconnect_portal::session::Official;

const SP_ENTITY: &str = "https://portal.test/saml/metadata";
const ACS: &str = "https://portal.test/saml/acs";
/// An official listed in the portal's officials file.
const OFFICIAL: &str = "2000000000015";
/// A resident, listed nowhere.
const RESIDENT: &str = "2000000000037";
/// The legal entity the official administers, as MPass says it.
const IDNO: &str = "1003600000017";

/// The identity provider process; it ends when its stdin closes (drop).
struct Idp {
    child: Child,
    _stdin: ChildStdin,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Idp {
    /// Starts `tests/saml/idp.py` and waits for its address. Fails, with
    /// what to install, when pysaml2 or xmlsec1 are missing.
    fn start() -> Idp {
        let xmlsec = Command::new("xmlsec1").arg("--version").output();
        assert!(
            xmlsec.is_ok_and(|o| o.status.success()),
            "xmlsec1 is missing: the IdP's signatures need Debian's xmlsec1 (apt-get install xmlsec1; tests/run.sh does it)"
        );
        let pysaml2 = Command::new("python3")
            .args(["-c", "import saml2.server"])
            .output();
        assert!(
            pysaml2.is_ok_and(|o| o.status.success()),
            "pysaml2 is missing: python3 -m pip install -r tests/interop/requirements.txt (tests/run.sh does it)"
        );
        let dir = tempfile::tempdir().unwrap();
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/saml/idp.py");
        let mut child = Command::new("python3")
            .arg(script)
            .arg(dir.path())
            .env("PYTHONWARNINGS", "ignore")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs tests/saml/idp.py");
        let stdin = child.stdin.take().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .trim()
            .strip_prefix("LISTENING http://")
            .unwrap_or_else(|| panic!("the IdP did not start: {line:?}"));
        Idp {
            child,
            _stdin: stdin,
            addr: url.parse().unwrap(),
            dir,
        }
    }

    fn metadata(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("idp-metadata.xml")).unwrap()
    }

    /// Tells the IdP who this service provider is: its own metadata.
    fn learn(&self, sp: &ServiceProvider) {
        std::fs::write(self.dir.path().join("sp-metadata.xml"), sp.metadata()).unwrap();
    }

    /// Posts an AuthnRequest to the IdP's SSO endpoint as `idnp`, answered
    /// as `variant`; returns the SAMLResponse and RelayState of the form
    /// the IdP gives the browser, and where that form posts.
    async fn sign_in(
        &self,
        saml_request: &str,
        relay_state: &str,
        idnp: &str,
        variant: &str,
    ) -> Posted {
        let target = format!(
            "/sso?idnp={idnp}&first_name=Ion&last_name=Popescu&legal_entity={IDNO}&variant={variant}"
        );
        let body = form(&[("SAMLRequest", saml_request), ("RelayState", relay_state)]);
        let page = support::send(self.addr, "POST", &target, &[FORM], &body).await;
        assert_eq!(page.status, 200, "the IdP answered: {}", page.body);
        Posted {
            action: attribute_after(&page.body, "<form", "action").unwrap(),
            saml_response: input(&page.body, "SAMLResponse").unwrap(),
            relay_state: input(&page.body, "RelayState").unwrap_or_default(),
        }
    }
}

impl Drop for Idp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the IdP's page posts to the service provider.
#[derive(Clone)]
struct Posted {
    action: String,
    saml_response: String,
    relay_state: String,
}

impl Posted {
    fn xml(&self) -> String {
        String::from_utf8(BASE64.decode(&self.saml_response).unwrap()).unwrap()
    }

    /// The same post with its Response's XML changed by `change`.
    fn altered(&self, change: impl FnOnce(&str) -> String) -> Posted {
        let xml = self.xml();
        let changed = change(&xml);
        assert_ne!(changed, xml, "the change changed nothing");
        Posted {
            saml_response: BASE64.encode(changed),
            ..self.clone()
        }
    }
}

const FORM: (&str, &str) = ("Content-Type", "application/x-www-form-urlencoded");

fn form(fields: &[(&str, &str)]) -> String {
    let mut form = form_urlencoded::Serializer::new(String::new());
    for (name, value) in fields {
        form.append_pair(name, value);
    }
    form.finish()
}

fn unescape(value: &str) -> String {
    value
        .replace("&#x2f;", "/")
        .replace("&#x27;", "'")
        .replace("&#39;", "'")
        .replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// The value of attribute `name` in the first tag that starts with `tag`.
fn attribute_after(html: &str, tag: &str, name: &str) -> Option<String> {
    let at = html.find(tag)?;
    let rest = &html[at..];
    let rest = &rest[..rest.find('>')?];
    let start = rest.find(&format!("{name}=\""))? + name.len() + 2;
    let end = rest[start..].find('"')? + start;
    Some(unescape(&rest[start..end]))
}

/// The value of the hidden input `name` of a form page.
fn input(html: &str, name: &str) -> Option<String> {
    let at = html.find(&format!("name=\"{name}\""))?;
    let tag_start = html[..at].rfind('<')?;
    attribute_after(&html[tag_start..], "<input", "value")
}

fn officials() -> Vec<Official> {
    vec![Official {
        idnp: OFFICIAL.into(),
        name: "Ion Popescu".into(),
        organisation: "Primăria municipiului Cahul".into(),
        participant: "apl-cahul".into(),
        roles: vec!["official".into()],
    }]
}

/// The service provider, configured from the IdP's own metadata, which the
/// IdP in turn learns from ours.
fn service_provider(idp: &Idp) -> ServiceProvider {
    let provider = IdentityProvider::from_metadata(&idp.metadata(), None).unwrap();
    assert_eq!(provider.sso_url(), format!("http://{}/sso", idp.addr));
    let sp = ServiceProvider::new(SP_ENTITY, ACS, provider).unwrap();
    idp.learn(&sp);
    sp
}

/// One sign-in at the IdP for a request `sp` issued to browser `browser`.
async fn round_trip(
    idp: &Idp,
    sp: &ServiceProvider,
    idnp: &str,
    variant: &str,
) -> (Posted, String) {
    let start = sp.start(None);
    let posted = idp
        .sign_in(&start.saml_request, &start.relay_state, idnp, variant)
        .await;
    (posted, start.browser)
}

fn consume(sp: &ServiceProvider, posted: &Posted, browser: &str) -> Result<SamlIdentity, Refusal> {
    sp.consume(&posted.saml_response, &posted.relay_state, Some(browser))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_service_provider_accepts_only_what_the_identity_provider_signed_for_it() {
    let idp = Idp::start();
    let sp = service_provider(&idp);

    // MPass's usual answer: the assertion signed.
    let (posted, browser) = round_trip(&idp, &sp, OFFICIAL, "ok").await;
    assert_eq!(posted.action, ACS);
    assert_eq!(
        consume(&sp, &posted, &browser),
        Ok(SamlIdentity {
            idnp: OFFICIAL.into(),
            name: "Ion Popescu".into(),
            organisation_idno: Some(IDNO.into()),
        })
    );
    // The same Response again: a replay.
    assert!(matches!(
        consume(&sp, &posted, &browser),
        Err(Refusal::UnknownRequest(_))
    ));

    // The Response signed instead of the assertion, or both.
    for variant in ["signed-response", "both-signed"] {
        let (posted, browser) = round_trip(&idp, &sp, RESIDENT, variant).await;
        let identity = consume(&sp, &posted, &browser).unwrap_or_else(|e| panic!("{variant}: {e}"));
        assert_eq!(identity.idnp, RESIDENT, "{variant}");
    }

    // What the IdP itself makes wrong.
    type Check = fn(&Refusal) -> bool;
    let wrong: [(&str, Check); 8] = [
        ("unsigned", |r| *r == Refusal::Unsigned),
        ("foreign-key", |r| matches!(r, Refusal::Signature(_))),
        (
            "sha1",
            |r| matches!(r, Refusal::Signature(m) if m.contains("not accepted")),
        ),
        ("expired", |r| *r == Refusal::Time("expired".into())),
        ("wrong-audience", |r| *r == Refusal::Audience),
        ("wrong-destination", |r| {
            matches!(r, Refusal::Destination(_))
        }),
        ("wrong-issuer", |r| matches!(r, Refusal::Issuer(_))),
        ("failed", |r| matches!(r, Refusal::Status(_))),
    ];
    for (variant, expected) in wrong {
        let (posted, browser) = round_trip(&idp, &sp, OFFICIAL, variant).await;
        let refusal = consume(&sp, &posted, &browser).expect_err(variant);
        assert!(expected(&refusal), "{variant}: refused for {refusal:?}");
    }

    // What an attacker makes of a correct answer. Each refusal leaves the
    // request in flight, so the untouched answer is still accepted after.
    let (posted, browser) = round_trip(&idp, &sp, OFFICIAL, "ok").await;
    let name_id = format!(">{OFFICIAL}</");
    let tampered: [(&str, Posted, Check); 7] = [
        (
            "NameID changed after signing",
            posted.altered(|x| x.replace(&name_id, &format!(">{RESIDENT}</"))),
            |r| matches!(r, Refusal::Signature(_)),
        ),
        (
            // Exclusive C14N drops comments, so the signature still holds:
            // the NameID reader must refuse, not read "20000000000".
            "a comment inside the NameID",
            posted.altered(|x| x.replace(&name_id, ">20000000000<!---->15</")),
            |r| matches!(r, Refusal::Structure(_)),
        ),
        (
            "an unsigned assertion before the signed one",
            posted.altered(|x| wrap_evil_assertion(x, false)),
            |r| matches!(r, Refusal::Structure(_)),
        ),
        (
            "the signed assertion hidden in Extensions, an evil one in its place",
            posted.altered(|x| wrap_evil_assertion(x, true)),
            |r| matches!(r, Refusal::Structure(_) | Refusal::Signature(_)),
        ),
        (
            "a DOCTYPE with an entity",
            posted.altered(|x| {
                x.replacen(
                    "<?xml version=\"1.0\"?>",
                    "<?xml version=\"1.0\"?><!DOCTYPE r [<!ENTITY e \"2000000000037\">]>",
                    1,
                )
            }),
            |r| *r == Refusal::Doctype,
        ),
        (
            "the signature removed",
            posted.altered(|x| {
                let start = x.find("<ns2:Signature").unwrap();
                let end = x.find("</ns2:Signature>").unwrap() + "</ns2:Signature>".len();
                format!("{}{}", &x[..start], &x[end..])
            }),
            |r| *r == Refusal::Unsigned,
        ),
        (
            "Response InResponseTo changed",
            posted.altered(|x| x.replacen("InResponseTo=\"_", "InResponseTo=\"_0", 1)),
            |r| matches!(r, Refusal::UnknownRequest(_)),
        ),
    ];
    for (what, altered, expected) in tampered {
        let refusal = consume(&sp, &altered, &browser).expect_err(what);
        assert!(expected(&refusal), "{what}: refused for {refusal:?}");
    }
    // Posted from another browser (a login CSRF), or with another
    // RelayState: refused, and the request stays for its own browser.
    assert_eq!(
        sp.consume(&posted.saml_response, &posted.relay_state, None),
        Err(Refusal::OtherBrowser)
    );
    assert_eq!(
        sp.consume(&posted.saml_response, "other", Some(&browser)),
        Err(Refusal::OtherBrowser)
    );
    assert_eq!(consume(&sp, &posted, &browser).unwrap().idnp, OFFICIAL);

    // A request this service provider never issued (an unsolicited or
    // forged sign-in): the IdP signs a correct answer to it, still refused.
    let forged = sp.start(None);
    let request = String::from_utf8(BASE64.decode(&forged.saml_request).unwrap()).unwrap();
    let request = BASE64.encode(request.replace(&forged.request_id, "_never-issued"));
    let posted = idp
        .sign_in(&request, &forged.relay_state, OFFICIAL, "ok")
        .await;
    assert_eq!(
        consume(&sp, &posted, &forged.browser),
        Err(Refusal::UnknownRequest("_never-issued".into()))
    );
}

/// The signed Response with an evil assertion (another NameID, no
/// signature) put before the signed one, or, with `hide`, the signed one
/// moved into the Response's Extensions and the evil one in its place.
fn wrap_evil_assertion(xml: &str, hide: bool) -> String {
    let start = xml.find("<ns1:Assertion ").unwrap();
    let end = xml.find("</ns1:Assertion>").unwrap() + "</ns1:Assertion>".len();
    let signed = &xml[start..end];
    let sig_start = signed.find("<ns2:Signature").unwrap();
    let sig_end = signed.find("</ns2:Signature>").unwrap() + "</ns2:Signature>".len();
    let evil = format!("{}{}", &signed[..sig_start], &signed[sig_end..])
        .replace(&format!(">{OFFICIAL}<"), &format!(">{RESIDENT}<"))
        .replacen(" ID=\"", " ID=\"evil-", 1);
    if hide {
        format!(
            "{}<ns0:Extensions>{signed}</ns0:Extensions>{evil}{}",
            &xml[..start],
            &xml[end..]
        )
    } else {
        format!("{}{evil}{signed}{}", &xml[..start], &xml[end..])
    }
}

/// Sends one request to the portal in this process.
async fn call(
    portal: &Portal,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (StatusCode, http::HeaderMap, String) {
    let mut request = Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    let response = portal.handle(request).await;
    let (head, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (
        head.status,
        head.headers,
        String::from_utf8(body.to_vec()).unwrap(),
    )
}

/// The value `name` gets from a `Set-Cookie`, and its attributes.
fn set_cookie(headers: &http::HeaderMap, name: &str) -> Option<(String, String)> {
    headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| {
            let (pair, attributes) = c.split_once(';').unwrap_or((c, ""));
            let (n, v) = pair.split_once('=')?;
            (n == name).then(|| (v.to_owned(), attributes.trim().to_owned()))
        })
}

fn catalog() -> Arc<Catalog> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    Arc::new(Catalog::load_dir(&root.join("catalog")).unwrap())
}

/// The browser's way through the portal's pages: `/sign-in/mpass`, the
/// IdP, the ACS; returns the ACS's answer.
async fn browser_sign_in(
    portal: &Portal,
    idp: &Idp,
    idnp: &str,
    variant: &str,
) -> (StatusCode, http::HeaderMap, String) {
    let (status, headers, page) = call(portal, "GET", "/sign-in/mpass?lang=en", &[], "").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains("Continue to MPass"), "{page}");
    assert!(!page.contains("<script"), "no script: {page}");
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains(&format!("form-action 'self' http://{}", idp.addr)),
        "the form may post to the IdP, and only there: {csp}"
    );
    let (browser, attributes) = set_cookie(&headers, "__Host-mconnect_mpass").unwrap();
    for attribute in ["Path=/", "Secure", "HttpOnly", "SameSite=None"] {
        assert!(attributes.contains(attribute), "{attributes}");
    }
    let action = attribute_after(&page, "<form method=\"post\"", "action").unwrap();
    assert_eq!(action, format!("http://{}/sso", idp.addr));
    let posted = idp
        .sign_in(
            &input(&page, "SAMLRequest").unwrap(),
            &input(&page, "RelayState").unwrap(),
            idnp,
            variant,
        )
        .await;
    assert_eq!(posted.action, ACS);
    // MPass posts cross-site: the browser sends the SameSite=None sign-in
    // cookie, never the session's Strict one.
    let cookie = format!("__Host-mconnect_mpass={browser}");
    let body = form(&[
        ("SAMLResponse", &posted.saml_response),
        ("RelayState", &posted.relay_state),
    ]);
    call(
        portal,
        "POST",
        "/saml/acs?lang=en",
        &[FORM, ("Cookie", &cookie)],
        &body,
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn people_sign_in_with_mpass_through_the_portals_pages() {
    let idp = Idp::start();
    let sp = service_provider(&idp);
    let portal = Portal::new(catalog()).with_mpass(Mpass::new(sp, officials()));

    let (status, headers, metadata) = call(&portal, "GET", "/saml/metadata", &[], "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "application/samlmetadata+xml");
    assert!(metadata.contains(&format!("entityID=\"{SP_ENTITY}\"")));
    assert!(metadata.contains(&format!("Location=\"{ACS}\"")));
    let (_, _, page) = call(&portal, "GET", "/sign-in?lang=en", &[], "").await;
    assert!(
        page.contains("href=\"/sign-in/mpass\""),
        "the sign-in page offers MPass: {page}"
    );

    // An official listed in the officials file: their account, their roles.
    let (status, headers, page) = browser_sign_in(&portal, &idp, OFFICIAL, "ok").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(
        page.contains("<meta http-equiv=\"refresh\" content=\"0; url=/account\">"),
        "{page}"
    );
    assert!(page.contains("href=\"/account\""), "{page}");
    let (session, attributes) = set_cookie(&headers, "__Host-mconnect_session").unwrap();
    for attribute in ["Path=/", "Secure", "HttpOnly", "SameSite=Strict"] {
        assert!(attributes.contains(attribute), "{attributes}");
    }
    assert_eq!(
        set_cookie(&headers, "__Host-mconnect_mpass").map(|(v, _)| v),
        Some(String::new()),
        "the sign-in cookie is cleared"
    );
    let cookie = format!("__Host-mconnect_session={session}");
    let (status, _, account) = call(
        &portal,
        "GET",
        "/account?lang=en",
        &[("Cookie", &cookie)],
        "",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{account}");
    assert!(account.contains("Ion Popescu"), "{account}");
    assert!(account.contains("apl-cahul"), "{account}");

    // A resident: signed in as themselves, their name from MPass.
    let (status, headers, page) = browser_sign_in(&portal, &idp, RESIDENT, "ok").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let (session, _) = set_cookie(&headers, "__Host-mconnect_session").unwrap();
    let cookie = format!("__Host-mconnect_session={session}");
    let (status, _, account) = call(
        &portal,
        "GET",
        "/account?lang=en",
        &[("Cookie", &cookie)],
        "",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{account}");
    assert!(account.contains("Ion Popescu"), "{account}");
    assert!(!account.contains("apl-cahul"), "{account}");
    // A resident reaches no official's page.
    let (status, _, _) = call(&portal, "GET", "/lookup", &[("Cookie", &cookie)], "").await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // Refusals are pages with a plain sentence, and open no session.
    for (variant, sentence) in [
        ("expired", "This sign-in has expired or was already used."),
        ("foreign-key", "MPass's answer could not be accepted."),
        ("failed", "MPass did not sign you in."),
    ] {
        let (status, headers, page) = browser_sign_in(&portal, &idp, OFFICIAL, variant).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{variant}: {page}");
        assert!(
            page.contains(&sentence.replace('\'', "&#39;"))
                || page.contains(&sentence.replace('\'', "&#x27;"))
                || page.contains(sentence),
            "{variant}: {page}"
        );
        assert!(
            page.contains("href=\"/sign-in/mpass\""),
            "{variant}: {page}"
        );
        assert!(
            set_cookie(&headers, "__Host-mconnect_session").is_none(),
            "{variant}: no session"
        );
    }

    // A replayed Response: refused, no second session.
    let start = call(&portal, "GET", "/sign-in/mpass", &[], "").await;
    let (browser, _) = set_cookie(&start.1, "__Host-mconnect_mpass").unwrap();
    let posted = idp
        .sign_in(
            &input(&start.2, "SAMLRequest").unwrap(),
            &input(&start.2, "RelayState").unwrap(),
            OFFICIAL,
            "ok",
        )
        .await;
    let cookie = format!("__Host-mconnect_mpass={browser}");
    let body = form(&[
        ("SAMLResponse", &posted.saml_response),
        ("RelayState", &posted.relay_state),
    ]);
    let headers = [FORM, ("Cookie", cookie.as_str())];
    let first = call(&portal, "POST", "/saml/acs", &headers, &body).await;
    assert_eq!(first.0, StatusCode::OK, "{}", first.2);
    let again = call(&portal, "POST", "/saml/acs", &headers, &body).await;
    assert_eq!(again.0, StatusCode::FORBIDDEN, "{}", again.2);
    assert!(set_cookie(&again.1, "__Host-mconnect_session").is_none());
}

#[tokio::test]
async fn without_mpass_the_portal_says_so() {
    let portal = Portal::new(catalog());
    let (_, _, page) = call(&portal, "GET", "/sign-in?lang=en", &[], "").await;
    assert!(
        page.contains("Sign-in with MPass is not configured on this portal."),
        "{page}"
    );
    assert!(!page.contains("href=\"/sign-in/mpass\""), "{page}");
    let (status, _, page) = call(&portal, "GET", "/sign-in/mpass?lang=en", &[], "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        page.contains("Sign-in with MPass is not configured on this portal."),
        "{page}"
    );
    let (status, _, _) = call(&portal, "GET", "/saml/metadata", &[], "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, _) = call(&portal, "POST", "/saml/acs", &[FORM], "SAMLResponse=x").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[test]
fn half_an_mpass_configuration_is_refused_before_anything_listens() {
    let dir = tempfile::tempdir().unwrap();
    let certified = rcgen::generate_simple_self_signed(vec!["mpass.test".into()]).unwrap();
    let cert = dir.path().join("idp.pem");
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    let metadata = |sso: &str| {
        format!(
            r#"<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" xmlns:ds="http://www.w3.org/2000/09/xmldsig#" entityID="https://mpass.test/idp"><md:IDPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol"><md:KeyDescriptor use="signing"><ds:KeyInfo><ds:X509Data><ds:X509Certificate>{}</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor><md:SingleSignOnService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST" Location="{sso}"/></md:IDPSSODescriptor></md:EntityDescriptor>"#,
            BASE64.encode(certified.cert.der())
        )
    };
    let good = dir.path().join("idp.xml");
    std::fs::write(&good, metadata("https://mpass.test/login/saml")).unwrap();
    let plain = dir.path().join("plain.xml");
    std::fs::write(&plain, metadata("http://mpass.test/login/saml")).unwrap();
    let officials = dir.path().join("officials.json");
    std::fs::write(
        &officials,
        r#"{"officials": [{"idnp": "2000000000015", "name": "N", "organisation": "O", "participant": "apl-cahul", "roles": ["official"]}]}"#,
    )
    .unwrap();
    let [good, plain, cert, officials] =
        [&good, &plain, &cert, &officials].map(|p| p.to_str().unwrap().to_owned());
    let public = "https://portal.test";
    let cases: Vec<(&str, Vec<&str>, i32, &str)> = vec![
        (
            "metadata without the public URL",
            vec!["--mpass-idp-metadata", &good],
            2,
            "--public-url",
        ),
        (
            "a certificate without the SSO URL",
            vec!["--mpass-idp-cert", &cert, "--public-url", public],
            2,
            "--mpass-idp-sso-url",
        ),
        (
            "officials without MPass",
            vec!["--officials", &officials],
            64,
            "configure MPass",
        ),
        (
            "an IdP over plain HTTP",
            vec!["--mpass-idp-metadata", &plain, "--public-url", public],
            64,
            "https",
        ),
        (
            "a public URL over plain HTTP",
            vec![
                "--mpass-idp-metadata",
                &good,
                "--public-url",
                "http://portal.test",
            ],
            64,
            "https",
        ),
        (
            "sign-ins without an audit log",
            vec![
                "--mpass-idp-metadata",
                &good,
                "--public-url",
                public,
                "--officials",
                &officials,
            ],
            64,
            "audited",
        ),
        (
            "the IdP given one by one, still without an audit log",
            vec![
                "--mpass-idp-cert",
                &cert,
                "--mpass-idp-sso-url",
                "https://mpass.test/login/saml",
                "--mpass-idp-entity-id",
                "https://mpass.test/idp",
                "--public-url",
                public,
            ],
            64,
            "audited",
        ),
    ];
    for (what, args, code, says) in cases {
        let (exit, stderr) = support::portal_command(&args);
        assert_eq!(exit, code, "{what}: {stderr}");
        assert!(stderr.contains(says), "{what}: {stderr}");
    }
}
