//! Unit tests of the service provider: configuration, the AuthnRequest,
//! the metadata, and every refusal that comes before or without a valid
//! signature. Signed answers of a real IdP are in `tests/saml.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

const IDP: &str = "https://mpass.test/idp";
const SSO: &str = "https://mpass.test/login/saml";
const SP: &str = "https://portal.test/saml/metadata";
const ACS: &str = "https://portal.test/saml/acs";

/// A self-signed certificate (DER, PEM) as an IdP's.
fn certificate() -> (Vec<u8>, String) {
    let certified = rcgen::generate_simple_self_signed(vec!["mpass.test".into()]).unwrap();
    (certified.cert.der().to_vec(), certified.cert.pem())
}

fn idp_metadata(entity: &str, binding: &str, der: &[u8]) -> String {
    format!(
        r#"<md:EntityDescriptor xmlns:md="{NS_METADATA}" xmlns:ds="{NS_DSIG}" entityID="{entity}">
  <md:IDPSSODescriptor protocolSupportEnumeration="{NS_PROTOCOL}">
    <md:KeyDescriptor use="encryption"><ds:KeyInfo><ds:X509Data><ds:X509Certificate>AAAA</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor>
    <md:KeyDescriptor use="signing"><ds:KeyInfo><ds:X509Data><ds:X509Certificate>
      {}
    </ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor>
    <md:SingleSignOnService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect" Location="https://mpass.test/redirect"/>
    <md:SingleSignOnService Binding="{binding}" Location="{SSO}"/>
  </md:IDPSSODescriptor>
</md:EntityDescriptor>"#,
        BASE64.encode(der)
    )
}

fn sp() -> ServiceProvider {
    let (_, pem) = certificate();
    let idp = IdentityProvider::from_certificate_pem(&pem, SSO, IDP).unwrap();
    ServiceProvider::new(SP, ACS, idp).unwrap()
}

#[test]
fn the_idp_is_read_from_its_metadata_and_its_signing_certificate_only() {
    let (der, _) = certificate();
    let idp =
        IdentityProvider::from_metadata(&idp_metadata(IDP, BINDING_POST, &der), None).unwrap();
    assert_eq!(idp.entity_id(), IDP);
    assert_eq!(idp.sso_url(), SSO);
    assert_eq!(idp.sso_origin(), "https://mpass.test");
    // The encryption key's (bogus) certificate was never read.
    assert_eq!(idp.keys.len(), 1);

    let refused = [
        (idp_metadata(IDP, "urn:other", &der), None, "HTTP-POST"),
        (
            idp_metadata(IDP, BINDING_POST, &der),
            Some("https://other"),
            "no IDPSSODescriptor",
        ),
        (
            format!(
                "<md:EntitiesDescriptor xmlns:md=\"{NS_METADATA}\">{}{}</md:EntitiesDescriptor>",
                idp_metadata(IDP, BINDING_POST, &der),
                idp_metadata("https://second", BINDING_POST, &der)
            ),
            None,
            "several",
        ),
        (
            idp_metadata(IDP, BINDING_POST, &der).replace(SSO, "http://mpass.test/sso"),
            None,
            "https",
        ),
        (
            format!("<!DOCTYPE x>{}", idp_metadata(IDP, BINDING_POST, &der)),
            None,
            "DOCTYPE",
        ),
        (
            idp_metadata(IDP, BINDING_POST, b"not a certificate"),
            None,
            "certificate",
        ),
    ];
    for (xml, entity, says) in refused {
        let error = IdentityProvider::from_metadata(&xml, entity).err().unwrap();
        assert!(error.to_string().contains(says), "{error} ({says})");
    }
    // Several IdPs in one file: the entity id picks one.
    let both = format!(
        "<md:EntitiesDescriptor xmlns:md=\"{NS_METADATA}\">{}{}</md:EntitiesDescriptor>",
        idp_metadata(IDP, BINDING_POST, &der),
        idp_metadata("https://second", BINDING_POST, &der)
    );
    let second = IdentityProvider::from_metadata(&both, Some("https://second")).unwrap();
    assert_eq!(second.entity_id(), "https://second");
}

#[test]
fn the_idp_is_read_from_a_pem_certificate_and_urls() {
    let (_, pem) = certificate();
    let (_, other) = certificate();
    let two = IdentityProvider::from_certificate_pem(&format!("{pem}\n{other}"), SSO, IDP).unwrap();
    assert_eq!(two.keys.len(), 2, "a rollover: old and new certificate");
    for (pem, sso, entity) in [
        ("", SSO, IDP),
        ("-----BEGIN CERTIFICATE-----\nAAAA", SSO, IDP),
        (pem.as_str(), "ftp://mpass.test/sso", IDP),
        (pem.as_str(), "/sso", IDP),
        (pem.as_str(), SSO, " "),
    ] {
        assert!(
            IdentityProvider::from_certificate_pem(pem, sso, entity).is_err(),
            "{sso} {entity}"
        );
    }
    // A local test IdP may speak plain HTTP; nothing else may.
    assert!(IdentityProvider::from_certificate_pem(&pem, "http://127.0.0.1:8080/sso", IDP).is_ok());
    assert!(IdentityProvider::from_certificate_pem(&pem, "http://[::1]:8080/sso", IDP).is_ok());
    assert!(IdentityProvider::from_certificate_pem(&pem, "http://mpass.test/sso", IDP).is_err());
    let idp = IdentityProvider::from_certificate_pem(&pem, SSO, IDP).unwrap();
    assert!(ServiceProvider::new(SP, "http://portal.test/saml/acs", idp.clone()).is_err());
    assert!(ServiceProvider::new("", ACS, idp).is_err());
}

#[test]
fn the_authn_request_and_the_metadata_say_who_we_are() {
    let sp = sp();
    let now = OffsetDateTime::now_utc();
    let start = sp.start_at(None, now);
    assert_eq!(start.sso_url, SSO);
    assert_eq!(start.browser.len(), 64);
    let request = String::from_utf8(BASE64.decode(&start.saml_request).unwrap()).unwrap();
    let doc = parse(&request).unwrap();
    let root = doc.document_element().unwrap();
    assert!(is(&doc, root, NS_PROTOCOL, "AuthnRequest"));
    assert_eq!(attr(&doc, root, "ID"), Some(start.request_id.as_str()));
    assert_eq!(attr(&doc, root, "Destination"), Some(SSO));
    assert_eq!(attr(&doc, root, "AssertionConsumerServiceURL"), Some(ACS));
    assert_eq!(attr(&doc, root, "ProtocolBinding"), Some(BINDING_POST));
    let issued = instant(attr(&doc, root, "IssueInstant").unwrap()).unwrap();
    assert!((now - issued).whole_seconds() <= 1);
    let issuer = child(&doc, root, NS_ASSERTION, "Issuer").unwrap();
    assert_eq!(text(&doc, issuer).unwrap(), SP);
    // The same browser keeps its cookie's value over several sign-ins.
    let again = sp.start_at(Some(&start.browser), now);
    assert_eq!(again.browser, start.browser);
    assert_ne!(again.request_id, start.request_id);

    let metadata = sp.metadata();
    let doc = parse(&metadata).unwrap();
    let root = doc.document_element().unwrap();
    assert_eq!(attr(&doc, root, "entityID"), Some(SP));
    let descriptor = child(&doc, root, NS_METADATA, "SPSSODescriptor").unwrap();
    let acs = child(&doc, descriptor, NS_METADATA, "AssertionConsumerService").unwrap();
    assert_eq!(attr(&doc, acs, "Binding"), Some(BINDING_POST));
    assert_eq!(attr(&doc, acs, "Location"), Some(ACS));
    assert_eq!(escape("a&b<\"'>"), "a&amp;b&lt;&quot;&apos;&gt;");
}

#[test]
fn requests_in_flight_are_bounded_and_forgotten_when_old() {
    let sp = sp();
    let t0 = OffsetDateTime::now_utc();
    let first = sp.start_at(None, t0 - Duration::from_secs(1));
    for _ in 1..MAX_PENDING {
        sp.start_at(None, t0);
    }
    // Full: a new sign-in still begins, and the oldest request is forgotten.
    let newest = sp.start_at(None, t0);
    assert_eq!(sp.pending.lock().unwrap().len(), MAX_PENDING);
    assert!(
        sp.claim(
            &first.request_id,
            &first.relay_state,
            Some(&first.browser),
            t0
        )
        .is_err()
    );
    assert!(sp.pending.lock().unwrap().contains_key(&newest.request_id));
    let later = t0 + REQUEST_LIFETIME;
    let start = sp.start_at(None, later);
    // An expired request is forgotten, a young one claimed once.
    assert_eq!(sp.pending.lock().unwrap().len(), 1);
    sp.claim(
        &start.request_id,
        &start.relay_state,
        Some(&start.browser),
        later,
    )
    .unwrap();
    assert_eq!(
        sp.claim(
            &start.request_id,
            &start.relay_state,
            Some(&start.browser),
            later
        ),
        Err(Refusal::UnknownRequest(start.request_id.clone()))
    );
    let old = sp.start_at(None, later);
    assert!(matches!(
        sp.claim(
            &old.request_id,
            &old.relay_state,
            Some(&old.browser),
            later + REQUEST_LIFETIME
        ),
        Err(Refusal::UnknownRequest(_))
    ));
}

/// A Response around `assertion`, and its XML.
fn response(status: &str, assertion: &str) -> String {
    format!(
        r#"<samlp:Response xmlns:samlp="{NS_PROTOCOL}" xmlns:saml="{NS_ASSERTION}" xmlns:ds="{NS_DSIG}" ID="r1" Version="2.0" Destination="{ACS}" InResponseTo="_x"><saml:Issuer>{IDP}</saml:Issuer><samlp:Status><samlp:StatusCode Value="urn:oasis:names:tc:SAML:2.0:status:{status}"/></samlp:Status>{assertion}</samlp:Response>"#
    )
}

const ASSERTION: &str = r#"<saml:Assertion ID="a1" Version="2.0"><saml:Issuer>https://mpass.test/idp</saml:Issuer><saml:Subject><saml:NameID>2000000000015</saml:NameID></saml:Subject></saml:Assertion>"#;
const SIGNATURE: &str = "<ds:Signature><ds:SignedInfo/></ds:Signature>";

#[test]
fn responses_are_refused_before_any_signature_when_their_shape_is_wrong() {
    let sp = sp();
    let signed_assertion =
        ASSERTION.replace("</saml:Issuer>", &format!("</saml:Issuer>{SIGNATURE}"));
    let cases: Vec<(String, Refusal)> = vec![
        (
            "not base64!".into(),
            Refusal::Malformed("SAMLResponse is not base64".into()),
        ),
        (
            BASE64.encode([0xff, 0xfe]),
            Refusal::Malformed("SAMLResponse is not UTF-8".into()),
        ),
        (
            BASE64.encode(format!(
                "<!DOCTYPE r [<!ENTITY e \"x\">]>{}",
                response("Success", ASSERTION)
            )),
            Refusal::Doctype,
        ),
        (
            BASE64.encode(format!(
                "<samlp:AuthnRequest xmlns:samlp=\"{NS_PROTOCOL}\"/>"
            )),
            Refusal::Malformed("not a SAML Response".into()),
        ),
        (
            BASE64.encode(response("Responder", "")),
            Refusal::Status("urn:oasis:names:tc:SAML:2.0:status:Responder".into()),
        ),
        (
            BASE64.encode(response("Success", "")),
            Refusal::Structure("no assertion".into()),
        ),
        (
            BASE64.encode(response("Success", &format!("{ASSERTION}{ASSERTION}"))),
            Refusal::Structure("the response must hold exactly one assertion".into()),
        ),
        (
            BASE64.encode(response(
                "Success",
                &format!("<saml:Advice>{ASSERTION}</saml:Advice>{signed_assertion}"),
            )),
            Refusal::Structure("the response must hold exactly one assertion".into()),
        ),
        (
            BASE64.encode(response("Success", "<saml:EncryptedAssertion/>")),
            Refusal::Structure("encrypted assertions are not accepted".into()),
        ),
        (
            BASE64.encode(response("Success", ASSERTION)),
            Refusal::Unsigned,
        ),
        (
            BASE64.encode(response(
                "Success",
                &ASSERTION.replace("<saml:NameID>", &format!("{SIGNATURE}<saml:NameID>")),
            )),
            Refusal::Structure("a signature stands where none belongs".into()),
        ),
        (
            BASE64.encode(response(
                "Success",
                &signed_assertion.replace("</saml:Issuer>", &format!("</saml:Issuer>{SIGNATURE}")),
            )),
            Refusal::Structure("a signature stands where none belongs".into()),
        ),
        (
            BASE64.encode(response("Success", &signed_assertion)),
            Refusal::Signature("canonicalisation \"\" is not accepted".into()),
        ),
    ];
    for (posted, expected) in cases {
        assert_eq!(
            sp.consume(&posted, "", Some("b")),
            Err(expected.clone()),
            "{expected}"
        );
    }
}

#[test]
fn validity_windows_allow_a_minute_of_clock_skew() {
    let now = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
    let at = |offset: i64| {
        (now + time::Duration::seconds(offset))
            .format(&Rfc3339)
            .unwrap()
    };
    let cases = [
        (Some(at(59)), None, true),
        (Some(at(61)), None, false),
        (None, Some(at(-59)), true),
        (None, Some(at(-60)), false),
        (Some(at(-300)), Some(at(300)), true),
        (Some("yesterday".to_owned()), None, false),
    ];
    for (not_before, not_on_or_after, ok) in cases {
        let mut xml = String::from("<c");
        if let Some(t) = &not_before {
            xml.push_str(&format!(" NotBefore=\"{t}\""));
        }
        if let Some(t) = &not_on_or_after {
            xml.push_str(&format!(" NotOnOrAfter=\"{t}\""));
        }
        xml.push_str("/>");
        let doc = parse(&xml).unwrap();
        let node = doc.document_element().unwrap();
        assert_eq!(window(&doc, node, now).is_ok(), ok, "{xml}");
    }
}

#[test]
fn text_and_attributes_are_read_strictly() {
    let doc = parse(r#"<a xmlns:x="urn:x" x:ID="evil" ID="good"><b> 2000000000015 </b><c>1<!---->2</c><d>1<e/>2</d></a>"#)
        .unwrap();
    let root = doc.document_element().unwrap();
    assert_eq!(attr(&doc, root, "ID"), Some("good"));
    let kids = elements_below(&doc, root);
    assert_eq!(text(&doc, kids[0]).unwrap(), "2000000000015");
    assert!(text(&doc, kids[1]).is_err(), "a comment splits nothing");
    assert!(text(&doc, kids[2]).is_err());

    for (value, idno) in [
        ("1003600000017", Some("1003600000017")),
        (
            "1003600000017 Agenția de Guvernare Electronică",
            Some("1003600000017"),
        ),
        ("IDNO: 1003600000018; 1003600000017", Some("1003600000017")),
        ("10036000000170", None),
        ("", None),
    ] {
        assert_eq!(idno_in(value).as_deref(), idno, "{value}");
    }
}
