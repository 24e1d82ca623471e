//! Signing officials in and out. The development sign-in lists the
//! sandbox's officials (clearly marked, and offered only when the portal is
//! started with a development officials file on a loopback address); MPass
//! (SAML 2.0) is the production way in and is not built yet, so without the
//! development file this portal signs nobody in.
//!
//! Invariants: every form is checked against its CSRF token before anything
//! else; a sign-in replaces any session the browser had; pages of a signed-in
//! official are `Cache-Control: no-store`.

use askama::Template;
use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::Full;

use crate::audit::PortalEvent;
use crate::i18n::{Lang, Strings};
use crate::pages::{self, Switch};
use crate::session::{
    CSRF_COOKIE, Official, Person, Resident, SESSION_COOKIE, Session, SessionError, Sessions,
    random_token, same_token,
};

/// An official as the sign-in page lists them.
pub struct OfficialRow {
    idnp: String,
    name: String,
    organisation: String,
    roles: String,
}

/// `/sign-in`.
#[derive(Template)]
#[template(path = "signin.html")]
pub struct SignInPage {
    lang_code: &'static str,
    s: &'static Strings,
    switch: Vec<Switch>,
    title: &'static str,
    officials: Vec<OfficialRow>,
    csrf: String,
    problem: &'static str,
    /// The field the problem is about (`official` or `resident-idnp`).
    problem_field: &'static str,
    /// The resident IDNP as typed, shown again with its error.
    resident_idnp: String,
    /// Whether MPass sign-in is offered.
    mpass: bool,
}

/// `/account`.
#[derive(Template)]
#[template(path = "account.html")]
pub struct AccountPage {
    lang_code: &'static str,
    s: &'static Strings,
    switch: Vec<Switch>,
    title: &'static str,
    name: String,
    idnp: String,
    organisation: String,
    participant: String,
    roles: String,
    official: bool,
    administrator: bool,
    /// The link to the audit log, for an auditor; empty otherwise.
    audit_link: &'static str,
    /// The connection-application pages the official's roles open, as
    /// (address, text).
    application_links: Vec<(&'static str, &'static str)>,
    csrf: String,
}

/// The signed-in session of a request, if any.
pub fn session_of<B>(sessions: &Sessions, request: &Request<B>) -> Option<(String, Session)> {
    let id = crate::security::cookie(request, SESSION_COOKIE)?;
    let session = sessions.touch(&id)?;
    Some((id, session))
}

/// `GET /sign-in`: the way in, with a fresh CSRF token unless the browser
/// already holds one.
pub fn form<B>(
    sessions: &Sessions,
    officials: &[Official],
    mpass: bool,
    lang: Lang,
    request: &Request<B>,
) -> Response<Full<Bytes>> {
    if session_of(sessions, request).is_some() {
        return pages::redirect("/account");
    }
    let held = crate::security::cookie(request, CSRF_COOKIE).filter(|t| is_token(t));
    let csrf = held.clone().unwrap_or_else(random_token);
    let mut view = SignInView::new(officials, &csrf);
    view.mpass = mpass;
    let mut response = view.render(lang, request, StatusCode::OK);
    if held.is_none() {
        set_cookie(&mut response, CSRF_COOKIE, &csrf, "SameSite=Strict");
    }
    response
}

/// What a sign-in form asks for.
pub enum SignIn {
    /// A page to answer with, and the refusal to record, if it is one.
    Page(Response<Full<Bytes>>, Option<PortalEvent>),
    /// Sign this person in (record it, then [`finish`]).
    Open(Person),
}

/// `POST /sign-in`: the CSRF token, then the chosen official or the
/// resident's IDNP. The session is opened by [`finish`], once the sign-in
/// is recorded.
pub fn submit<B>(
    officials: &[Official],
    lang: Lang,
    request: &Request<B>,
    form: &[(String, String)],
) -> SignIn {
    let refused = |code: &str| {
        Some(PortalEvent::SignInRefused {
            method: DEVELOPMENT,
            code: code.to_owned(),
        })
    };
    let s = lang.strings();
    let held = crate::security::cookie(request, CSRF_COOKIE).filter(|t| is_token(t));
    let sent = crate::form_field(form, "csrf");
    let Some(csrf) = held.filter(|held| same_token(held, sent)) else {
        let fresh = random_token();
        let mut response = sign_in_page(
            officials,
            lang,
            request,
            &fresh,
            StatusCode::FORBIDDEN,
            s.form_expired,
        );
        set_cookie(&mut response, CSRF_COOKIE, &fresh, "SameSite=Strict");
        return SignIn::Page(response, refused("portal.csrf"));
    };
    if officials.is_empty() {
        let page = sign_in_page(officials, lang, request, &csrf, StatusCode::FORBIDDEN, "");
        return SignIn::Page(page, refused("portal.sign_in_off"));
    }
    if crate::form_field(form, "kind") == "resident" {
        let idnp = crate::form_field(form, "resident_idnp").trim();
        if !mconnect_sdk::ids::is_valid_idnp(idnp) {
            let mut page = SignInView::new(officials, &csrf);
            page.problem = (s.idnp_invalid, "resident-idnp");
            page.resident_idnp = idnp.chars().take(13).collect();
            let page = page.render(lang, request, StatusCode::BAD_REQUEST);
            return SignIn::Page(page, refused("portal.invalid_idnp"));
        }
        return SignIn::Open(Person::Resident(Resident {
            idnp: idnp.to_owned(),
            name: String::new(),
        }));
    }
    let chosen = crate::form_field(form, "idnp");
    match officials.iter().find(|o| o.idnp == chosen) {
        Some(official) => SignIn::Open(Person::Official(official.clone())),
        None => {
            let page = sign_in_page(
                officials,
                lang,
                request,
                &csrf,
                StatusCode::BAD_REQUEST,
                s.choose_official,
            );
            SignIn::Page(page, refused("portal.unknown_official"))
        }
    }
}

/// The development sign-in's name in the audit log.
pub const DEVELOPMENT: &str = "development";

/// Opens the session of a recorded sign-in: the answer redirects to the
/// account page with the new session's cookie, or says the portal is full.
pub fn finish<B>(
    sessions: &Sessions,
    lang: Lang,
    request: &Request<B>,
    person: Person,
    method: &str,
) -> Response<Full<Bytes>> {
    match open_session(sessions, request, person, method) {
        Ok(mut response) => {
            clear_cookie(&mut response, CSRF_COOKIE);
            response
        }
        Err(SessionError::Full) => {
            let s = lang.strings();
            let csrf = random_token();
            let mut page = SignInView::new(&[], &csrf);
            page.problem = (s.too_many_sessions, "official");
            page.render(lang, request, StatusCode::SERVICE_UNAVAILABLE)
        }
    }
}

/// Opens a session for `person` signed in by `method`, replacing any
/// session this browser had: the answer redirects to the account page and
/// sets the new session's cookie. Every sign-in method ends here.
pub fn open_session<B>(
    sessions: &Sessions,
    request: &Request<B>,
    person: Person,
    method: &str,
) -> Result<Response<Full<Bytes>>, SessionError> {
    if let Some((old, _)) = session_of(sessions, request) {
        sessions.close(&old);
    }
    let idnp = person.idnp().to_owned();
    let organisation = match &person {
        Person::Official(o) => o.participant.clone(),
        Person::Resident(_) => String::new(),
    };
    let id = sessions.open(person)?;
    tracing::info!(person = %idnp, organisation = %organisation, method, "signed in");
    let mut response = pages::redirect("/account");
    set_cookie(&mut response, SESSION_COOKIE, &id, "SameSite=Strict");
    Ok(response)
}

/// `GET /account`: who is signed in.
pub fn account<B>(sessions: &Sessions, lang: Lang, request: &Request<B>) -> Response<Full<Bytes>> {
    let Some((_, session)) = session_of(sessions, request) else {
        return pages::redirect("/sign-in");
    };
    let s = lang.strings();
    let (organisation, participant, roles, official, administrator) = match &session.person {
        Person::Official(o) => (
            o.organisation.clone(),
            o.participant.clone(),
            o.roles.join(", "),
            true,
            o.roles.iter().any(|r| r == "administrator"),
        ),
        Person::Resident(_) => (String::new(), String::new(), String::new(), false, false),
    };
    let page = AccountPage {
        lang_code: lang.code(),
        s,
        switch: pages::switcher(lang, "/account", None),
        title: s.account,
        name: session.person.name().to_owned(),
        idnp: session.person.idnp().to_owned(),
        organisation,
        participant,
        roles,
        official,
        administrator,
        audit_link: match session.official() {
            Some(o) if o.has_role("auditor") => crate::auditor::Words::of(lang).link(),
            _ => "",
        },
        application_links: session
            .official()
            .map(|o| crate::applications::links(o, lang))
            .unwrap_or_default(),
        csrf: session.csrf.clone(),
    };
    pages::private(pages::render(StatusCode::OK, &page))
}

/// `POST /sign-out`: ends the session if the form is its own; the sign-out
/// to record, when there was one.
pub fn sign_out<B>(
    sessions: &Sessions,
    lang: Lang,
    request: &Request<B>,
    form: &[(String, String)],
) -> (Response<Full<Bytes>>, Option<PortalEvent>) {
    let Some((id, session)) = session_of(sessions, request) else {
        return (pages::redirect("/catalog"), None);
    };
    if !same_token(&session.csrf, crate::form_field(form, "csrf")) {
        let refusal = PortalEvent::Refused {
            idnp: session.person.idnp().to_owned(),
            organisation: session.official().map(|o| o.participant.clone()),
            path: "/sign-out".to_owned(),
            code: "portal.csrf".to_owned(),
            status: 403,
        };
        return (
            pages::error(lang, StatusCode::FORBIDDEN, request),
            Some(refusal),
        );
    }
    sessions.close(&id);
    tracing::info!(person = %session.person.idnp(), "signed out");
    let mut response = pages::redirect("/catalog");
    clear_cookie(&mut response, SESSION_COOKIE);
    let event = PortalEvent::SignOut {
        idnp: session.person.idnp().to_owned(),
    };
    (response, Some(event))
}

fn sign_in_page<B>(
    officials: &[Official],
    lang: Lang,
    request: &Request<B>,
    csrf: &str,
    status: StatusCode,
    problem: &'static str,
) -> Response<Full<Bytes>> {
    let mut page = SignInView::new(officials, csrf);
    page.problem = (problem, "official");
    page.render(lang, request, status)
}

/// What a sign-in page shows, before it is rendered in a language.
struct SignInView<'a> {
    officials: &'a [Official],
    csrf: &'a str,
    /// The problem and the field it is about; "" when none.
    problem: (&'static str, &'static str),
    resident_idnp: String,
    /// Whether the page offers sign-in with MPass.
    mpass: bool,
}

impl<'a> SignInView<'a> {
    fn new(officials: &'a [Official], csrf: &'a str) -> SignInView<'a> {
        SignInView {
            officials,
            csrf,
            problem: ("", "official"),
            resident_idnp: String::new(),
            mpass: false,
        }
    }

    fn render<B>(
        self,
        lang: Lang,
        request: &Request<B>,
        status: StatusCode,
    ) -> Response<Full<Bytes>> {
        let s = lang.strings();
        let page = SignInPage {
            lang_code: lang.code(),
            s,
            switch: pages::switcher(lang, request.uri().path(), None),
            title: s.sign_in,
            officials: self
                .officials
                .iter()
                .map(|o| OfficialRow {
                    idnp: o.idnp.clone(),
                    name: o.name.clone(),
                    organisation: o.organisation.clone(),
                    roles: o.roles.join(", "),
                })
                .collect(),
            csrf: self.csrf.to_owned(),
            problem: self.problem.0,
            problem_field: self.problem.1,
            resident_idnp: self.resident_idnp,
            mpass: self.mpass,
        };
        pages::private(pages::render(status, &page))
    }
}

/// Whether a cookie value has the shape of our tokens (64 hex digits), so
/// nothing else is ever echoed into a page.
fn is_token(value: &str) -> bool {
    value.len() == 64 && value.bytes().all(|b| b.is_ascii_hexdigit())
}

fn set_cookie(response: &mut Response<Full<Bytes>>, name: &str, value: &str, same_site: &str) {
    let cookie = format!("{name}={value}; Path=/; Secure; HttpOnly; {same_site}");
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
}

fn clear_cookie(response: &mut Response<Full<Bytes>>, name: &str) {
    let cookie = format!("{name}=; Path=/; Max-Age=0; Secure; HttpOnly; SameSite=Strict");
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
}
