//! The portal as a SAML 2.0 service provider of MPass, the government
//! sign-in: the AuthnRequest it sends (HTTP-POST binding), the Response it
//! accepts, and its own metadata. No HTTP here: [`crate::mpass`] serves the
//! pages, this module decides what a posted Response proves.
//!
//! Invariants (each has a test, here or in `tests/saml.rs` against a real
//! identity provider, pysaml2 signing with xmlsec1):
//! - signatures are checked by bergshamra (XML-DSig and exclusive C14N,
//!   pure Rust over aws-lc-rs), never by canonicalisation of our own, and
//!   only with the IdP certificates configured from its metadata or PEM: a
//!   key or certificate carried in the message is never trusted
//!   (`trusted_keys_only`); only SHA-2 signature and digest methods, C14N
//!   and the enveloped-signature transform are accepted (no SHA-1, no
//!   XPath or XSLT);
//! - the signed element is the one read: the Response holds exactly one
//!   `Assertion` (none nested, none encrypted); every `Signature` is a direct
//!   child of the Response or of that Assertion, with exactly one Reference
//!   whose URI is `#` + the `ID` of its parent, which bergshamra resolved to
//!   that very node (its duplicate-ID refusal and strict reference positions
//!   stand behind this too); every signature present must verify, and the
//!   Assertion must be covered (signed itself or inside the signed
//!   Response). Values are read from the same parsed tree that was verified,
//!   and an element whose text is read may hold text only (a comment inside
//!   a NameID cannot split it);
//! - a DOCTYPE (so any entity) is refused before anything is read;
//! - the Assertion's Issuer (and the Response's, when given) is the
//!   configured IdP; the Response's `Destination` and the bearer
//!   confirmation's `Recipient` are our ACS URL; the Audience is our entity
//!   id; `NotBefore`/`NotOnOrAfter` of the Conditions and of the
//!   confirmation hold within [`CLOCK_SKEW`]; the status is Success;
//! - `InResponseTo` (of the Response and of the confirmation, equal) names
//!   an AuthnRequest this process issued less than [`REQUEST_LIFETIME`] ago,
//!   for this browser (the random value in its `__Host-` cookie) and with
//!   this RelayState; it is taken out when accepted, so a Response is
//!   accepted once (replay refused) and an unsolicited one never;
//!   requests in flight are bounded by [`MAX_PENDING`];
//! - the NameID is a valid IDNP.
//!
//! MPass's attributes read: `FirstName` and `LastName` (the name), and
//! `AdministeredLegalEntity` (the first valid 13-digit IDNO in its values).
//! The AuthnRequest is not signed (see the README's MPass section).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bergshamra_dsig::{DsigContext, VerifyResult};
use bergshamra_keys::KeysManager;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uppsala::{Document, NodeId, NodeKind};

use crate::session::{random_token, same_token};

/// SAML 2.0 protocol namespace.
pub const NS_PROTOCOL: &str = "urn:oasis:names:tc:SAML:2.0:protocol";
/// SAML 2.0 assertion namespace.
pub const NS_ASSERTION: &str = "urn:oasis:names:tc:SAML:2.0:assertion";
/// SAML 2.0 metadata namespace.
pub const NS_METADATA: &str = "urn:oasis:names:tc:SAML:2.0:metadata";
/// XML-DSig namespace.
pub const NS_DSIG: &str = "http://www.w3.org/2000/09/xmldsig#";
/// The HTTP-POST binding, the only one used.
pub const BINDING_POST: &str = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST";
const STATUS_SUCCESS: &str = "urn:oasis:names:tc:SAML:2.0:status:Success";
const BEARER: &str = "urn:oasis:names:tc:SAML:2.0:cm:bearer";

/// How far the IdP's clock may be from ours.
pub const CLOCK_SKEW: Duration = Duration::from_secs(60);
/// How long a person has at MPass before the AuthnRequest is forgotten.
pub const REQUEST_LIFETIME: Duration = Duration::from_secs(10 * 60);
/// AuthnRequests in flight at most; past it, the oldest is forgotten.
pub const MAX_PENDING: usize = 10_000;

/// The identity provider as configured: who it is, where people sign in,
/// and the certificates its signatures must verify with.
#[derive(Clone)]
pub struct IdentityProvider {
    entity_id: String,
    sso_url: String,
    keys: KeysManager,
}

/// The service provider: this portal, and the AuthnRequests it has issued.
pub struct ServiceProvider {
    entity_id: String,
    acs_url: String,
    idp: IdentityProvider,
    pending: Mutex<HashMap<String, Pending>>,
}

/// An AuthnRequest issued and not yet answered.
struct Pending {
    issued: OffsetDateTime,
    browser: String,
    relay_state: String,
}

/// A sign-in begun: what the browser posts to MPass, and the value its
/// cookie must hold when the answer comes back.
#[derive(Debug, Clone)]
pub struct AuthnStart {
    /// Where the form posts: the IdP's SSO URL.
    pub sso_url: String,
    /// The AuthnRequest, base64 (the `SAMLRequest` field).
    pub saml_request: String,
    /// The `RelayState` field.
    pub relay_state: String,
    /// The request's id (`InResponseTo` of its answer).
    pub request_id: String,
    /// The random value that ties the answer to this browser.
    pub browser: String,
}

/// Who MPass says signed in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SamlIdentity {
    /// The person's IDNP (the NameID).
    pub idnp: String,
    /// First and last name from the attributes, or empty.
    pub name: String,
    /// The legal entity the person administers, if MPass named one.
    pub organisation_idno: Option<String>,
}

/// Why a configuration of the IdP or of this service provider is refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The IdP's metadata cannot be used.
    #[error("IdP metadata: {0}")]
    Metadata(String),
    /// The IdP's certificate cannot be used.
    #[error("IdP certificate: {0}")]
    Certificate(String),
    /// A URL or entity id is not usable.
    #[error("{0}")]
    Url(String),
}

/// Why a posted Response was refused. Every variant means: no session.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Not base64, not UTF-8, not XML, or not a SAML Response.
    #[error("malformed: {0}")]
    Malformed(String),
    /// The document has a DOCTYPE.
    #[error("a DOCTYPE is not accepted")]
    Doctype,
    /// The document is not shaped as one signed assertion in a Response:
    /// several or encrypted assertions, signatures elsewhere.
    #[error("structure: {0}")]
    Structure(String),
    /// No signature covers the assertion.
    #[error("the assertion is not signed")]
    Unsigned,
    /// A signature does not verify with the IdP's certificates.
    #[error("signature: {0}")]
    Signature(String),
    /// The IdP answered with another status than Success.
    #[error("status {0}")]
    Status(String),
    /// Issued by someone else than the configured IdP.
    #[error("issuer {0:?} is not the IdP")]
    Issuer(String),
    /// Meant for another consumer service (Destination or Recipient).
    #[error("destination or recipient {0:?} is not our ACS URL")]
    Destination(String),
    /// Meant for another service provider.
    #[error("the audience is not this service provider")]
    Audience,
    /// Not valid yet, or no more.
    #[error("time: {0}")]
    Time(String),
    /// `InResponseTo` names no AuthnRequest in flight: never issued,
    /// already answered (a replay), or too old.
    #[error("InResponseTo {0:?} is not a request in flight")]
    UnknownRequest(String),
    /// The answer comes to another browser than the one that asked, or
    /// with another RelayState.
    #[error("the answer is not for this browser")]
    OtherBrowser,
    /// The NameID is not a valid IDNP.
    #[error("the NameID is not a valid IDNP")]
    NameId,
}

impl Refusal {
    /// The stable code of the refusal, for the audit log.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::Malformed(_) => "saml.malformed",
            Refusal::Doctype => "saml.doctype",
            Refusal::Structure(_) => "saml.structure",
            Refusal::Unsigned => "saml.unsigned",
            Refusal::Signature(_) => "saml.signature",
            Refusal::Status(_) => "saml.status",
            Refusal::Issuer(_) => "saml.issuer",
            Refusal::Destination(_) => "saml.destination",
            Refusal::Audience => "saml.audience",
            Refusal::Time(_) => "saml.expired",
            Refusal::UnknownRequest(_) => "saml.unknown_request",
            Refusal::OtherBrowser => "saml.other_browser",
            Refusal::NameId => "saml.name_id",
        }
    }
}

impl IdentityProvider {
    /// The IdP from its SAML metadata (an `EntityDescriptor`, or an
    /// `EntitiesDescriptor` holding it): its entity id (`entity_id` picks
    /// one when several IdPs are listed), its HTTP-POST SSO URL and its
    /// signing certificates.
    pub fn from_metadata(xml: &str, entity_id: Option<&str>) -> Result<Self, ConfigError> {
        let bad = |m: &str| ConfigError::Metadata(m.to_owned());
        let doc = parse(xml).map_err(|e| ConfigError::Metadata(e.to_string()))?;
        let root = doc.document_element().ok_or_else(|| bad("empty"))?;
        let mut found = None;
        for node in elements(&doc, root) {
            if !is(&doc, node, NS_METADATA, "EntityDescriptor") {
                continue;
            }
            let Some(idp) = child(&doc, node, NS_METADATA, "IDPSSODescriptor") else {
                continue;
            };
            let id = attr(&doc, node, "entityID").unwrap_or_default();
            if entity_id.is_none_or(|wanted| wanted == id) {
                if found.is_some() {
                    return Err(bad(
                        "several identity providers: name one with --mpass-idp-entity-id",
                    ));
                }
                found = Some((id.to_owned(), idp));
            }
        }
        let (id, idp) = found.ok_or_else(|| bad("no IDPSSODescriptor for that entity id"))?;
        let sso_url = children(&doc, idp, NS_METADATA, "SingleSignOnService")
            .into_iter()
            .find(|&s| attr(&doc, s, "Binding") == Some(BINDING_POST))
            .and_then(|s| attr(&doc, s, "Location"))
            .ok_or_else(|| bad("no SingleSignOnService with the HTTP-POST binding"))?
            .to_owned();
        let mut keys = KeysManager::new();
        for descriptor in children(&doc, idp, NS_METADATA, "KeyDescriptor") {
            if attr(&doc, descriptor, "use").is_some_and(|u| u != "signing") {
                continue;
            }
            let certificates = child(&doc, descriptor, NS_DSIG, "KeyInfo")
                .map(|info| children(&doc, info, NS_DSIG, "X509Data"))
                .unwrap_or_default()
                .into_iter()
                .flat_map(|data| children(&doc, data, NS_DSIG, "X509Certificate"));
            for certificate in certificates {
                let text = text(&doc, certificate).map_err(|e| bad(&e.to_string()))?;
                let der = decode_base64(&text).ok_or_else(|| bad("a certificate is not base64"))?;
                keys.add_key(load_certificate(&der)?);
            }
        }
        if keys.is_empty() {
            return Err(bad("no signing certificate"));
        }
        IdentityProvider::new(id, sso_url, keys)
    }

    /// The IdP from its signing certificate (PEM, one or more), SSO URL
    /// and entity id, given one by one.
    pub fn from_certificate_pem(
        pem: &str,
        sso_url: &str,
        entity_id: &str,
    ) -> Result<Self, ConfigError> {
        let mut keys = KeysManager::new();
        let mut rest = pem;
        while let Some(start) = rest.find("-----BEGIN CERTIFICATE-----") {
            let end = rest[start..]
                .find("-----END CERTIFICATE-----")
                .map(|e| start + e + "-----END CERTIFICATE-----".len())
                .ok_or_else(|| ConfigError::Certificate("unterminated PEM block".into()))?;
            let key = bergshamra_keys::loader::load_x509_cert_pem(&rest.as_bytes()[start..end])
                .map_err(|e| ConfigError::Certificate(e.to_string()))?;
            keys.add_key(key);
            rest = &rest[end..];
        }
        if keys.is_empty() {
            return Err(ConfigError::Certificate(
                "no CERTIFICATE in the PEM file".into(),
            ));
        }
        IdentityProvider::new(entity_id.to_owned(), sso_url.to_owned(), keys)
    }

    fn new(entity_id: String, sso_url: String, keys: KeysManager) -> Result<Self, ConfigError> {
        if entity_id.trim().is_empty() {
            return Err(ConfigError::Url("the IdP's entity id is empty".into()));
        }
        check_url("the IdP's SSO URL", &sso_url)?;
        Ok(IdentityProvider {
            entity_id,
            sso_url,
            keys,
        })
    }

    /// The IdP's entity id.
    pub fn entity_id(&self) -> &str {
        &self.entity_id
    }

    /// Where the AuthnRequest is posted.
    pub fn sso_url(&self) -> &str {
        &self.sso_url
    }

    /// The SSO URL's origin (`scheme://host[:port]`), for the page's
    /// `form-action`.
    pub fn sso_origin(&self) -> String {
        origin(&self.sso_url).unwrap_or_default()
    }
}

impl ServiceProvider {
    /// This portal as the service provider `entity_id` whose consumer
    /// service is at `acs_url`, signing people in with `idp`.
    pub fn new(entity_id: &str, acs_url: &str, idp: IdentityProvider) -> Result<Self, ConfigError> {
        if entity_id.trim().is_empty() {
            return Err(ConfigError::Url(
                "the service provider's entity id is empty".into(),
            ));
        }
        check_url("the assertion consumer service URL", acs_url)?;
        Ok(ServiceProvider {
            entity_id: entity_id.to_owned(),
            acs_url: acs_url.to_owned(),
            idp,
            pending: Mutex::new(HashMap::new()),
        })
    }

    /// The identity provider.
    pub fn idp(&self) -> &IdentityProvider {
        &self.idp
    }

    /// This service provider's entity id.
    pub fn entity_id(&self) -> &str {
        &self.entity_id
    }

    /// This service provider's metadata: entity id, and the consumer
    /// service with the HTTP-POST binding.
    pub fn metadata(&self) -> String {
        format!(
            concat!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n",
                "<md:EntityDescriptor xmlns:md=\"{md}\" entityID=\"{entity}\">",
                "<md:SPSSODescriptor AuthnRequestsSigned=\"false\" WantAssertionsSigned=\"true\" ",
                "protocolSupportEnumeration=\"{protocol}\">",
                "<md:NameIDFormat>urn:oasis:names:tc:SAML:1.1:nameid-format:unspecified</md:NameIDFormat>",
                "<md:AssertionConsumerService Binding=\"{binding}\" Location=\"{acs}\" index=\"0\" isDefault=\"true\"/>",
                "</md:SPSSODescriptor></md:EntityDescriptor>\n"
            ),
            md = NS_METADATA,
            entity = escape(&self.entity_id),
            protocol = NS_PROTOCOL,
            binding = BINDING_POST,
            acs = escape(&self.acs_url),
        )
    }

    /// Begins a sign-in now, for the browser that holds `browser` (from
    /// its cookie) or a new one.
    pub fn start(&self, browser: Option<&str>) -> AuthnStart {
        self.start_at(browser, OffsetDateTime::now_utc())
    }

    /// Begins a sign-in at `now`: a new AuthnRequest, remembered until it
    /// is answered or [`REQUEST_LIFETIME`] has passed.
    pub fn start_at(&self, browser: Option<&str>, now: OffsetDateTime) -> AuthnStart {
        let request_id = format!("_{}", random_token());
        let instant = now
            .replace_nanosecond(0)
            .unwrap_or(now)
            .format(&Rfc3339)
            .unwrap_or_default();
        let request = format!(
            concat!(
                "<samlp:AuthnRequest xmlns:samlp=\"{protocol}\" xmlns:saml=\"{assertion}\" ",
                "ID=\"{id}\" Version=\"2.0\" IssueInstant=\"{instant}\" Destination=\"{sso}\" ",
                "AssertionConsumerServiceURL=\"{acs}\" ProtocolBinding=\"{binding}\">",
                "<saml:Issuer>{entity}</saml:Issuer>",
                "<samlp:NameIDPolicy AllowCreate=\"true\"/>",
                "</samlp:AuthnRequest>"
            ),
            protocol = NS_PROTOCOL,
            assertion = NS_ASSERTION,
            id = request_id,
            instant = instant,
            sso = escape(&self.idp.sso_url),
            acs = escape(&self.acs_url),
            binding = BINDING_POST,
            entity = escape(&self.entity_id),
        );
        let start = AuthnStart {
            sso_url: self.idp.sso_url.clone(),
            saml_request: BASE64.encode(request),
            relay_state: random_token(),
            request_id,
            browser: browser.map_or_else(random_token, str::to_owned),
        };
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if pending.len() >= MAX_PENDING {
            pending.retain(|_, p| live(p, now));
            // Still full: the oldest is forgotten (its sign-in, if anyone's,
            // is refused and can be begun again), so a flood of unanswered
            // requests cannot keep everyone else from signing in.
            if pending.len() >= MAX_PENDING
                && let Some(oldest) = pending
                    .iter()
                    .min_by_key(|(_, p)| p.issued)
                    .map(|(id, _)| id.clone())
            {
                pending.remove(&oldest);
            }
        }
        pending.insert(
            start.request_id.clone(),
            Pending {
                issued: now,
                browser: start.browser.clone(),
                relay_state: start.relay_state.clone(),
            },
        );
        start
    }

    /// Decides a posted Response now.
    pub fn consume(
        &self,
        saml_response: &str,
        relay_state: &str,
        browser: Option<&str>,
    ) -> Result<SamlIdentity, Refusal> {
        self.consume_at(
            saml_response,
            relay_state,
            browser,
            OffsetDateTime::now_utc(),
        )
    }

    /// Decides a posted Response (`SAMLResponse`, base64) that came with
    /// `relay_state`, from a browser whose sign-in cookie holds `browser`,
    /// at `now`. On success the AuthnRequest it answers is used up.
    pub fn consume_at(
        &self,
        saml_response: &str,
        relay_state: &str,
        browser: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<SamlIdentity, Refusal> {
        let bytes = decode_base64(saml_response)
            .ok_or_else(|| Refusal::Malformed("SAMLResponse is not base64".into()))?;
        let xml = std::str::from_utf8(&bytes)
            .map_err(|_| Refusal::Malformed("SAMLResponse is not UTF-8".into()))?;
        let (identity, in_response_to) = self.read(xml, now)?;
        self.claim(&in_response_to, relay_state, browser, now)?;
        Ok(identity)
    }

    /// Everything the document itself must show; returns who, and the
    /// request it answers.
    fn read(&self, xml: &str, now: OffsetDateTime) -> Result<(SamlIdentity, String), Refusal> {
        let doc = parse(xml)?;
        let response = doc
            .document_element()
            .filter(|&r| is(&doc, r, NS_PROTOCOL, "Response"))
            .ok_or_else(|| Refusal::Malformed("not a SAML Response".into()))?;
        if attr(&doc, response, "Version") != Some("2.0") {
            return Err(Refusal::Malformed("not SAML 2.0".into()));
        }
        // A refusal needs no signature: whatever the status says, nobody
        // is signed in by it.
        let status = only_child(&doc, response, NS_PROTOCOL, "Status")?
            .map(|s| only_child(&doc, s, NS_PROTOCOL, "StatusCode"))
            .transpose()?
            .flatten()
            .and_then(|c| attr(&doc, c, "Value"))
            .unwrap_or_default();
        if status != STATUS_SUCCESS {
            return Err(Refusal::Status(status.to_owned()));
        }
        let assertion = the_assertion(&doc, response)?;
        self.verify_signatures(&doc, xml, response, assertion)?;

        // From here on, only the verified tree is read.
        let destination = attr(&doc, response, "Destination").unwrap_or_default();
        if destination != self.acs_url {
            return Err(Refusal::Destination(destination.to_owned()));
        }
        if let Some(issuer) = only_child(&doc, response, NS_ASSERTION, "Issuer")? {
            self.check_issuer(&doc, issuer)?;
        }
        let issuer = only_child(&doc, assertion, NS_ASSERTION, "Issuer")?
            .ok_or_else(|| Refusal::Issuer(String::new()))?;
        self.check_issuer(&doc, issuer)?;
        if attr(&doc, assertion, "Version") != Some("2.0") {
            return Err(Refusal::Malformed("the assertion is not SAML 2.0".into()));
        }
        self.check_conditions(&doc, assertion, now)?;
        if children(&doc, assertion, NS_ASSERTION, "AuthnStatement").is_empty() {
            return Err(Refusal::Structure("no AuthnStatement".into()));
        }
        for statement in children(&doc, assertion, NS_ASSERTION, "AuthnStatement") {
            if let Some(end) = attr(&doc, statement, "SessionNotOnOrAfter")
                && now >= instant(end)? + CLOCK_SKEW
            {
                return Err(Refusal::Time("the MPass session has ended".into()));
            }
        }

        let subject = only_child(&doc, assertion, NS_ASSERTION, "Subject")?
            .ok_or_else(|| Refusal::Structure("no Subject".into()))?;
        let in_response_to = self.check_confirmation(&doc, subject, now)?;
        if attr(&doc, response, "InResponseTo") != Some(in_response_to.as_str()) {
            return Err(Refusal::UnknownRequest(
                attr(&doc, response, "InResponseTo")
                    .unwrap_or_default()
                    .to_owned(),
            ));
        }
        let name_id = only_child(&doc, subject, NS_ASSERTION, "NameID")?
            .ok_or(Refusal::NameId)
            .and_then(|n| text(&doc, n))?;
        if !mconnect_sdk::ids::is_valid_idnp(&name_id) {
            return Err(Refusal::NameId);
        }

        let attributes = attributes(&doc, assertion)?;
        let value = |name: &str| {
            attributes
                .iter()
                .find(|(n, _)| n == name)
                .and_then(|(_, values)| values.first())
                .map_or("", String::as_str)
        };
        let name = format!("{} {}", value("FirstName"), value("LastName"))
            .trim()
            .to_owned();
        let organisation_idno = attributes
            .iter()
            .filter(|(n, _)| n == "AdministeredLegalEntity")
            .flat_map(|(_, values)| values)
            .find_map(|v| idno_in(v));
        Ok((
            SamlIdentity {
                idnp: name_id,
                name,
                organisation_idno,
            },
            in_response_to,
        ))
    }

    /// Every signature present verifies with the IdP's certificates, signs
    /// its own parent (the Response or the Assertion), and the Assertion
    /// is covered.
    fn verify_signatures(
        &self,
        doc: &Document<'_>,
        xml: &str,
        response: NodeId,
        assertion: NodeId,
    ) -> Result<(), Refusal> {
        let signatures: Vec<NodeId> = elements(doc, response)
            .into_iter()
            .filter(|&n| {
                doc.element(n)
                    .is_some_and(|e| e.name.local_name == "Signature")
            })
            .collect();
        if signatures.is_empty() {
            return Err(Refusal::Unsigned);
        }
        let mut parents = Vec::new();
        for &signature in &signatures {
            let parent = doc.parent(signature);
            let allowed = is(doc, signature, NS_DSIG, "Signature")
                && (parent == Some(response) || parent == Some(assertion));
            if !allowed || parents.contains(&parent) {
                return Err(Refusal::Structure(
                    "a signature stands where none belongs".into(),
                ));
            }
            parents.push(parent);
        }
        for &signature in &signatures {
            check_algorithms(doc, signature)?;
        }
        let context = DsigContext::new(self.idp.keys.clone());
        let results =
            bergshamra_dsig::verify::verify_all_document_with_source(&context, doc, Some(xml))
                .map_err(|e| Refusal::Signature(e.to_string()))?;
        if results.len() != signatures.len() {
            return Err(Refusal::Signature("not every signature was checked".into()));
        }
        let mut covered = Vec::new();
        for result in results {
            let (signature, references) = match result {
                VerifyResult::Valid {
                    signature_node,
                    references,
                    ..
                } => (signature_node, references),
                VerifyResult::Invalid { reason } => return Err(Refusal::Signature(reason)),
            };
            let parent = doc
                .parent(signature)
                .ok_or_else(|| Refusal::Signature("a signature has no parent".into()))?;
            let id = attr(doc, parent, "ID").unwrap_or_default();
            let [reference] = references.as_slice() else {
                return Err(Refusal::Signature(
                    "a signature must have one reference".into(),
                ));
            };
            if id.is_empty()
                || reference.uri != format!("#{id}")
                || reference.resolved_node != Some(parent)
                || !reference.digest_verified
            {
                return Err(Refusal::Signature(
                    "a signature does not sign the element it stands in".into(),
                ));
            }
            covered.push(parent);
        }
        if covered.contains(&assertion) || covered.contains(&response) {
            Ok(())
        } else {
            Err(Refusal::Unsigned)
        }
    }

    fn check_issuer(&self, doc: &Document<'_>, issuer: NodeId) -> Result<(), Refusal> {
        let name = text(doc, issuer)?;
        if name != self.idp.entity_id {
            return Err(Refusal::Issuer(name));
        }
        Ok(())
    }

    /// Conditions: validity window within the clock skew, our audience in
    /// every restriction, and no condition we do not know.
    fn check_conditions(
        &self,
        doc: &Document<'_>,
        assertion: NodeId,
        now: OffsetDateTime,
    ) -> Result<(), Refusal> {
        let conditions = only_child(doc, assertion, NS_ASSERTION, "Conditions")?
            .ok_or_else(|| Refusal::Structure("no Conditions".into()))?;
        window(doc, conditions, now)?;
        let mut restrictions = 0;
        for condition in elements_below(doc, conditions) {
            let known = ["AudienceRestriction", "OneTimeUse", "ProxyRestriction"]
                .into_iter()
                .find(|local| is(doc, condition, NS_ASSERTION, local));
            match known {
                Some("AudienceRestriction") => {
                    restrictions += 1;
                    let mut ours = false;
                    for audience in children(doc, condition, NS_ASSERTION, "Audience") {
                        ours |= text(doc, audience)? == self.entity_id;
                    }
                    if !ours {
                        return Err(Refusal::Audience);
                    }
                }
                Some(_) => {}
                None => {
                    return Err(Refusal::Structure("a condition we do not know".into()));
                }
            }
        }
        if restrictions == 0 {
            return Err(Refusal::Audience);
        }
        Ok(())
    }

    /// A bearer confirmation for our ACS, in time; returns its
    /// `InResponseTo`.
    fn check_confirmation(
        &self,
        doc: &Document<'_>,
        subject: NodeId,
        now: OffsetDateTime,
    ) -> Result<String, Refusal> {
        let mut refusal = Refusal::Structure("no bearer SubjectConfirmation".into());
        for confirmation in children(doc, subject, NS_ASSERTION, "SubjectConfirmation") {
            if attr(doc, confirmation, "Method") != Some(BEARER) {
                continue;
            }
            let checked = only_child(doc, confirmation, NS_ASSERTION, "SubjectConfirmationData")
                .and_then(|data| {
                    let data = data
                        .ok_or_else(|| Refusal::Structure("no SubjectConfirmationData".into()))?;
                    let recipient = attr(doc, data, "Recipient").unwrap_or_default();
                    if recipient != self.acs_url {
                        return Err(Refusal::Destination(recipient.to_owned()));
                    }
                    if attr(doc, data, "NotOnOrAfter").is_none() {
                        return Err(Refusal::Time("the confirmation has no end".into()));
                    }
                    window(doc, data, now)?;
                    attr(doc, data, "InResponseTo")
                        .map(str::to_owned)
                        .ok_or_else(|| Refusal::UnknownRequest(String::new()))
                });
            match checked {
                Ok(in_response_to) => return Ok(in_response_to),
                Err(e) => refusal = e,
            }
        }
        Err(refusal)
    }

    /// Uses up the AuthnRequest `id` if this browser and RelayState are
    /// the ones it was issued with and it is still young.
    fn claim(
        &self,
        id: &str,
        relay_state: &str,
        browser: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<(), Refusal> {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let Some(request) = pending.get(id) else {
            return Err(Refusal::UnknownRequest(id.to_owned()));
        };
        if !live(request, now) {
            pending.remove(id);
            return Err(Refusal::UnknownRequest(id.to_owned()));
        }
        // Another browser's answer (a login CSRF) leaves the request to
        // its own browser.
        if !browser.is_some_and(|b| same_token(&request.browser, b))
            || !same_token(&request.relay_state, relay_state)
        {
            return Err(Refusal::OtherBrowser);
        }
        pending.remove(id);
        Ok(())
    }
}

fn live(pending: &Pending, now: OffsetDateTime) -> bool {
    now < pending.issued + REQUEST_LIFETIME
}

/// The algorithms a signature may name: SHA-2 signatures and digests, and
/// only the transforms of an enveloped SAML signature (no XPath, no XSLT).
/// bergshamra would verify SHA-1 too.
fn check_algorithms(doc: &Document<'_>, signature: NodeId) -> Result<(), Refusal> {
    const SIGNATURE_METHODS: [&str; 6] = [
        "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256",
        "http://www.w3.org/2001/04/xmldsig-more#rsa-sha384",
        "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512",
        "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256",
        "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha384",
        "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha512",
    ];
    const DIGEST_METHODS: [&str; 3] = [
        "http://www.w3.org/2001/04/xmlenc#sha256",
        "http://www.w3.org/2001/04/xmldsig-more#sha384",
        "http://www.w3.org/2001/04/xmlenc#sha512",
    ];
    const CANONICALISATIONS: [&str; 2] = [
        "http://www.w3.org/2001/10/xml-exc-c14n#",
        "http://www.w3.org/TR/2001/REC-xml-c14n-20010315",
    ];
    const ENVELOPED: &str = "http://www.w3.org/2000/09/xmldsig#enveloped-signature";
    let algorithm = |node: Option<NodeId>| node.and_then(|n| attr(doc, n, "Algorithm"));
    let refuse = |what: &str, uri: Option<&str>| {
        Err(Refusal::Signature(format!(
            "{what} {:?} is not accepted",
            uri.unwrap_or_default()
        )))
    };
    let signed_info = child(doc, signature, NS_DSIG, "SignedInfo");
    let c14n =
        algorithm(signed_info.and_then(|s| child(doc, s, NS_DSIG, "CanonicalizationMethod")));
    if !c14n.is_some_and(|a| CANONICALISATIONS.contains(&a)) {
        return refuse("canonicalisation", c14n);
    }
    let method = algorithm(signed_info.and_then(|s| child(doc, s, NS_DSIG, "SignatureMethod")));
    if !method.is_some_and(|a| SIGNATURE_METHODS.contains(&a)) {
        return refuse("signature method", method);
    }
    let references = signed_info
        .map(|s| children(doc, s, NS_DSIG, "Reference"))
        .unwrap_or_default();
    for reference in references {
        let digest = algorithm(child(doc, reference, NS_DSIG, "DigestMethod"));
        if !digest.is_some_and(|a| DIGEST_METHODS.contains(&a)) {
            return refuse("digest method", digest);
        }
        let transforms = child(doc, reference, NS_DSIG, "Transforms")
            .map(|t| children(doc, t, NS_DSIG, "Transform"))
            .unwrap_or_default();
        for transform in transforms {
            let uri = attr(doc, transform, "Algorithm");
            if !uri.is_some_and(|a| a == ENVELOPED || CANONICALISATIONS.contains(&a)) {
                return refuse("transform", uri);
            }
        }
    }
    Ok(())
}

/// The one Assertion of the Response: a direct child, and no other
/// assertion (of any namespace, at any depth), none encrypted.
fn the_assertion(doc: &Document<'_>, response: NodeId) -> Result<NodeId, Refusal> {
    let mut found = Vec::new();
    for node in elements(doc, response) {
        let Some(element) = doc.element(node) else {
            continue;
        };
        match element.name.local_name.as_ref() {
            "Assertion" => found.push(node),
            "EncryptedAssertion" => {
                return Err(Refusal::Structure(
                    "encrypted assertions are not accepted".into(),
                ));
            }
            _ => {}
        }
    }
    match found.as_slice() {
        [one] if is(doc, *one, NS_ASSERTION, "Assertion") && doc.parent(*one) == Some(response) => {
            Ok(*one)
        }
        [] => Err(Refusal::Structure("no assertion".into())),
        _ => Err(Refusal::Structure(
            "the response must hold exactly one assertion".into(),
        )),
    }
}

/// `NotBefore` and `NotOnOrAfter` of `node`, where given, hold at `now`
/// within the clock skew.
fn window(doc: &Document<'_>, node: NodeId, now: OffsetDateTime) -> Result<(), Refusal> {
    if let Some(start) = attr(doc, node, "NotBefore")
        && now + CLOCK_SKEW < instant(start)?
    {
        return Err(Refusal::Time("not valid yet".into()));
    }
    if let Some(end) = attr(doc, node, "NotOnOrAfter")
        && now >= instant(end)? + CLOCK_SKEW
    {
        return Err(Refusal::Time("expired".into()));
    }
    Ok(())
}

/// The assertion's attributes: name and text values, in order.
fn attributes(
    doc: &Document<'_>,
    assertion: NodeId,
) -> Result<Vec<(String, Vec<String>)>, Refusal> {
    let mut out = Vec::new();
    for statement in children(doc, assertion, NS_ASSERTION, "AttributeStatement") {
        for attribute in children(doc, statement, NS_ASSERTION, "Attribute") {
            let name = attr(doc, attribute, "Name").unwrap_or_default().to_owned();
            let mut values = Vec::new();
            for value in children(doc, attribute, NS_ASSERTION, "AttributeValue") {
                values.push(text(doc, value)?);
            }
            out.push((name, values));
        }
    }
    Ok(out)
}

/// The first 13-digit run of `value` that is a valid IDNO.
fn idno_in(value: &str) -> Option<String> {
    value
        .split(|c: char| !c.is_ascii_digit())
        .find(|run| mconnect_sdk::ids::is_valid_idno(run))
        .map(str::to_owned)
}

/// Parses with DTDs refused (so no entity can be declared, expanded or
/// fetched).
fn parse(xml: &str) -> Result<Document<'_>, Refusal> {
    if xml.contains("<!DOCTYPE") || xml.contains("<!ENTITY") {
        return Err(Refusal::Doctype);
    }
    uppsala::Parser::new()
        .with_forbid_dtd(true)
        .parse(xml)
        .map_err(|e| Refusal::Malformed(format!("not XML: {e}")))
}

/// `node` and every element below it, in document order.
fn elements(doc: &Document<'_>, node: NodeId) -> Vec<NodeId> {
    let mut out = vec![node];
    out.extend(
        doc.descendants(node)
            .into_iter()
            .filter(|&n| doc.element(n).is_some()),
    );
    out
}

/// The child elements of `node`.
fn elements_below(doc: &Document<'_>, node: NodeId) -> Vec<NodeId> {
    doc.children(node)
        .into_iter()
        .filter(|&n| doc.element(n).is_some())
        .collect()
}

fn is(doc: &Document<'_>, node: NodeId, namespace: &str, local: &str) -> bool {
    doc.element(node)
        .is_some_and(|e| e.matches_name_ns(namespace, local))
}

fn children(doc: &Document<'_>, node: NodeId, namespace: &str, local: &str) -> Vec<NodeId> {
    doc.child_elements_by_name_ns(node, namespace, local)
}

fn child(doc: &Document<'_>, node: NodeId, namespace: &str, local: &str) -> Option<NodeId> {
    doc.first_child_element_by_name_ns(node, namespace, local)
}

/// The child `local` of `node` when there is at most one.
fn only_child(
    doc: &Document<'_>,
    node: NodeId,
    namespace: &str,
    local: &str,
) -> Result<Option<NodeId>, Refusal> {
    match children(doc, node, namespace, local).as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(*one)),
        _ => Err(Refusal::Structure(format!("{local} is given twice"))),
    }
}

/// An attribute without a namespace (a prefixed one of the same local name
/// is another attribute).
fn attr<'d>(doc: &'d Document<'_>, node: NodeId, name: &str) -> Option<&'d str> {
    doc.element(node)?
        .attributes
        .iter()
        .find(|a| a.name.namespace_uri.is_none() && a.name.local_name == name)
        .map(|a| a.value.as_ref())
}

/// The text of an element that holds text only, trimmed. A comment, an
/// element or a processing instruction inside is refused, so what was
/// signed and what is read cannot differ by what canonicalisation drops.
fn text(doc: &Document<'_>, node: NodeId) -> Result<String, Refusal> {
    let mut out = String::new();
    for child in doc.children(node) {
        match doc.node_kind(child) {
            Some(NodeKind::Text(t)) | Some(NodeKind::CData(t)) => out.push_str(t),
            _ => {
                return Err(Refusal::Structure(
                    "an element meant to hold text holds something else".into(),
                ));
            }
        }
    }
    Ok(out.trim().to_owned())
}

/// An `xs:dateTime` in UTC.
fn instant(value: &str) -> Result<OffsetDateTime, Refusal> {
    OffsetDateTime::parse(value, &Rfc3339)
        .map_err(|_| Refusal::Malformed(format!("{value:?} is not a date and time")))
}

fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    BASE64.decode(compact).ok()
}

fn load_certificate(der: &[u8]) -> Result<bergshamra_keys::Key, ConfigError> {
    bergshamra_keys::loader::load_x509_cert_der(der)
        .map_err(|e| ConfigError::Certificate(e.to_string()))
}

/// An absolute `https` URL, or `http` on a loopback host (a test IdP).
fn check_url(what: &str, url: &str) -> Result<(), ConfigError> {
    let bad = || ConfigError::Url(format!("{what} {url:?} must be an https URL"));
    let uri: http::Uri = url.parse().map_err(|_| bad())?;
    let host = uri.host().ok_or_else(bad)?;
    let loopback = host == "localhost"
        || host
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    match uri.scheme_str() {
        Some("https") => Ok(()),
        Some("http") if loopback => Ok(()),
        _ => Err(bad()),
    }
}

/// `scheme://host[:port]` of an absolute URL (no user information).
fn origin(url: &str) -> Option<String> {
    let uri: http::Uri = url.parse().ok()?;
    let (scheme, host) = (uri.scheme_str()?, uri.host()?);
    Some(match uri.port_u16() {
        Some(port) => format!("{scheme}://{host}:{port}"),
        None => format!("{scheme}://{host}"),
    })
}

/// Text for an XML attribute value or element.
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests;
