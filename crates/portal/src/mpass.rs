//! Signing in with MPass: the pages around [`crate::saml`]. `GET
//! /sign-in/mpass` issues an AuthnRequest and shows a form that posts it
//! to MPass (HTTP-POST binding, a visible button: no script needed, none
//! inline); MPass posts the signed Response back to `POST /saml/acs`;
//! `GET /saml/metadata` describes this service provider.
//!
//! Invariants:
//! - the ACS is the one form the portal accepts from another site, so its
//!   CSRF defence is the Response itself: `InResponseTo` must name a request
//!   this process issued, to this browser (the random value in the
//!   `__Host-mconnect_mpass` cookie, `SameSite=None` so that it comes back
//!   with MPass's cross-site post, and which holds nothing else), with the
//!   same RelayState, once;
//! - an accepted Response is returned to the caller ([`Acs::Open`]), which
//!   records the sign-in and opens the session; a refused one comes back
//!   with its [`Refusal`] to record, and a page with a plain sentence;
//! - the session cookie stays `SameSite=Strict`: a redirect after a
//!   cross-site post would not carry it, so the ACS answers with a page of
//!   this site that continues to `/account` ([`after_sign_in`]);
//! - whoever signs in is an official only when their IDNP is listed in the
//!   officials file, with the roles listed there; the officials file is the
//!   authority on organisations too, since the portal holds no map from its
//!   participants to their IDNOs: MPass's `AdministeredLegalEntity` is kept
//!   in [`SamlIdentity`] and logged, not used. Anyone else is a resident.

use askama::Template;
use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::Full;

use crate::i18n::{Lang, Strings};
use crate::pages::{self, Switch};
use crate::saml::{AuthnStart, Refusal, SamlIdentity, ServiceProvider};
use crate::security::FormActionOrigin;
use crate::session::{Official, Person, Resident};

/// MPass's name in the audit log.
pub const METHOD: &str = "mpass";
/// The cookie that ties MPass's answer to the browser that asked.
pub const BINDING_COOKIE: &str = "__Host-mconnect_mpass";
/// The largest ACS form read: a signed Response with its certificate and
/// attributes is some kilobytes, well over the other forms' limit.
pub const MAX_RESPONSE_FORM_BYTES: usize = 256 * 1024;

/// MPass sign-in: the service provider and who of those signing in is an
/// official.
pub struct Mpass {
    sp: ServiceProvider,
    officials: Vec<Official>,
}

/// What a post to the ACS comes to.
pub enum Acs {
    /// Sign this person in (record it, then open the session and answer
    /// with [`after_sign_in`]).
    Open(Person),
    /// Refused: the page to answer with, and the reason to record.
    Refused(Response<Full<Bytes>>, Refusal),
}

/// The form that carries the AuthnRequest to MPass.
pub struct MpassForm {
    sso_url: String,
    saml_request: String,
    relay_state: String,
}

/// `/sign-in/mpass`, and a refused sign-in.
#[derive(Template)]
#[template(path = "mpass.html")]
pub struct MpassPage {
    lang_code: &'static str,
    s: &'static Strings,
    switch: Vec<Switch>,
    title: &'static str,
    problem: &'static str,
    form: Option<MpassForm>,
    again: bool,
}

/// The page between the ACS and `/account`.
#[derive(Template)]
#[template(path = "mpass_done.html")]
pub struct MpassDonePage {
    lang_code: &'static str,
    s: &'static Strings,
    switch: Vec<Switch>,
    title: &'static str,
}

impl Mpass {
    /// MPass sign-in through `sp`; the IDNPs of `officials` sign in as
    /// those officials.
    pub fn new(sp: ServiceProvider, officials: Vec<Official>) -> Mpass {
        Mpass { sp, officials }
    }

    /// The officials MPass signs in as officials (the rest are residents).
    pub fn officials(&self) -> &[Official] {
        &self.officials
    }

    /// The service provider (metadata, tests).
    pub fn service_provider(&self) -> &ServiceProvider {
        &self.sp
    }

    /// `GET /sign-in/mpass`: a new AuthnRequest in a form for MPass.
    pub fn begin<B>(&self, lang: Lang, request: &Request<B>) -> Response<Full<Bytes>> {
        let held = crate::security::cookie(request, BINDING_COOKIE).filter(|v| is_token(v));
        let start = self.sp.start(held.as_deref());
        let AuthnStart {
            sso_url,
            saml_request,
            relay_state,
            browser,
            ..
        } = start;
        let form = MpassForm {
            sso_url,
            saml_request,
            relay_state,
        };
        let mut response = page(lang, request, StatusCode::OK, "", Some(form), false);
        response
            .extensions_mut()
            .insert(FormActionOrigin(self.sp.idp().sso_origin()));
        // SameSite=None: the cookie must come back with MPass's cross-site
        // post; it proves only which browser asked. Set again each time, so
        // that it lives as long as the newest request.
        let cookie = format!(
            "{BINDING_COOKIE}={browser}; Path=/; Max-Age={}; Secure; HttpOnly; SameSite=None",
            crate::saml::REQUEST_LIFETIME.as_secs()
        );
        if let Ok(value) = HeaderValue::from_str(&cookie) {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
        response
    }

    /// `POST /saml/acs`: MPass's answer, decided by the service provider.
    pub fn acs<B>(&self, lang: Lang, request: &Request<B>, form: &[(String, String)]) -> Acs {
        let browser = crate::security::cookie(request, BINDING_COOKIE);
        let decided = self.sp.consume(
            crate::form_field(form, "SAMLResponse"),
            crate::form_field(form, "RelayState"),
            browser.as_deref(),
        );
        match decided {
            Ok(identity) => {
                let person = self.person(&identity);
                tracing::info!(
                    person = %identity.idnp,
                    official = matches!(person, Person::Official(_)),
                    administered_legal_entity = identity.organisation_idno.as_deref().unwrap_or(""),
                    "MPass accepted the sign-in"
                );
                Acs::Open(person)
            }
            Err(refusal) => {
                tracing::warn!(code = refusal.code(), reason = %refusal, "MPass sign-in refused");
                let s = lang.strings();
                let (status, text) = match &refusal {
                    Refusal::Status(_) => (StatusCode::FORBIDDEN, s.mpass_failed),
                    Refusal::UnknownRequest(_) | Refusal::OtherBrowser | Refusal::Time(_) => {
                        (StatusCode::FORBIDDEN, s.mpass_expired)
                    }
                    _ => (StatusCode::FORBIDDEN, s.mpass_refused),
                };
                Acs::Refused(page(lang, request, status, text, None, true), refusal)
            }
        }
    }

    /// Who `identity` signs in as: the listed official, or a resident.
    pub fn person(&self, identity: &SamlIdentity) -> Person {
        match self.officials.iter().find(|o| o.idnp == identity.idnp) {
            Some(official) => Person::Official(official.clone()),
            None => Person::Resident(Resident {
                idnp: identity.idnp.clone(),
                name: identity.name.clone(),
            }),
        }
    }

    /// `GET /saml/metadata`.
    pub fn metadata(&self) -> Response<Full<Bytes>> {
        let mut response = Response::new(Full::new(Bytes::from(self.sp.metadata())));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/samlmetadata+xml"),
        );
        response
    }
}

/// `GET /sign-in/mpass` on a portal without MPass.
pub fn off<B>(lang: Lang, request: &Request<B>) -> Response<Full<Bytes>> {
    page(
        lang,
        request,
        StatusCode::NOT_FOUND,
        lang.strings().mpass_off,
        None,
        false,
    )
}

/// The answer to an accepted ACS post: the session's redirect to
/// `/account` becomes a page of this site that continues there (at once,
/// and with a link), so that the browser sends the new `SameSite=Strict`
/// cookie; the sign-in cookie is cleared. Any other answer (the portal is
/// full, the record failed) is kept.
pub fn after_sign_in(opened: Response<Full<Bytes>>, lang: Lang) -> Response<Full<Bytes>> {
    if opened.status() != StatusCode::SEE_OTHER {
        return opened;
    }
    let s = lang.strings();
    let done = MpassDonePage {
        lang_code: lang.code(),
        s,
        switch: pages::switcher(lang, "/account", None),
        title: s.mpass_signed_in,
    };
    let mut response = pages::private(pages::render(StatusCode::OK, &done));
    for cookie in opened.headers().get_all(header::SET_COOKIE) {
        response
            .headers_mut()
            .append(header::SET_COOKIE, cookie.clone());
    }
    let clear = format!("{BINDING_COOKIE}=; Path=/; Max-Age=0; Secure; HttpOnly; SameSite=None");
    if let Ok(value) = HeaderValue::from_str(&clear) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

fn page<B>(
    lang: Lang,
    request: &Request<B>,
    status: StatusCode,
    problem: &'static str,
    form: Option<MpassForm>,
    again: bool,
) -> Response<Full<Bytes>> {
    let s = lang.strings();
    let path = if request.uri().path() == "/sign-in/mpass" {
        "/sign-in/mpass"
    } else {
        "/sign-in"
    };
    let view = MpassPage {
        lang_code: lang.code(),
        s,
        switch: pages::switcher(lang, path, None),
        title: s.mpass_sign_in,
        problem,
        form,
        again,
    };
    pages::private(pages::render(status, &view))
}

/// Whether a cookie value has the shape of our tokens (64 hex digits).
fn is_token(value: &str) -> bool {
    value.len() == 64 && value.bytes().all(|b| b.is_ascii_hexdigit())
}
