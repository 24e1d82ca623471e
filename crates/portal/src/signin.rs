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

use crate::i18n::{Lang, Strings};
use crate::pages::{self, Switch};
use crate::session::{
    CSRF_COOKIE, Official, SESSION_COOKIE, Session, SessionError, Sessions, random_token,
    same_token,
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
    organisation: String,
    participant: String,
    roles: String,
    administrator: bool,
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
    lang: Lang,
    request: &Request<B>,
) -> Response<Full<Bytes>> {
    if session_of(sessions, request).is_some() {
        return pages::redirect("/account");
    }
    let held = crate::security::cookie(request, CSRF_COOKIE).filter(|t| is_token(t));
    let csrf = held.clone().unwrap_or_else(random_token);
    let mut response = sign_in_page(officials, lang, request, &csrf, StatusCode::OK, "");
    if held.is_none() {
        set_cookie(&mut response, CSRF_COOKIE, &csrf, "SameSite=Strict");
    }
    response
}

/// `POST /sign-in`: the CSRF token, then the chosen official, then a new
/// session replacing any other of this browser.
pub fn submit<B>(
    sessions: &Sessions,
    officials: &[Official],
    lang: Lang,
    request: &Request<B>,
    form: &[(String, String)],
) -> Response<Full<Bytes>> {
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
        return response;
    };
    if officials.is_empty() {
        return sign_in_page(officials, lang, request, &csrf, StatusCode::FORBIDDEN, "");
    }
    let chosen = crate::form_field(form, "idnp");
    let Some(official) = officials.iter().find(|o| o.idnp == chosen) else {
        return sign_in_page(
            officials,
            lang,
            request,
            &csrf,
            StatusCode::BAD_REQUEST,
            s.choose_official,
        );
    };
    if let Some((old, _)) = session_of(sessions, request) {
        sessions.close(&old);
    }
    let id = match sessions.open(official.clone()) {
        Ok(id) => id,
        Err(SessionError::Full) => {
            return sign_in_page(
                officials,
                lang,
                request,
                &csrf,
                StatusCode::SERVICE_UNAVAILABLE,
                s.too_many_sessions,
            );
        }
    };
    tracing::info!(official = %official.idnp, organisation = %official.participant, "signed in (development sign-in)");
    let mut response = pages::redirect("/account");
    set_cookie(&mut response, SESSION_COOKIE, &id, "SameSite=Strict");
    clear_cookie(&mut response, CSRF_COOKIE);
    response
}

/// `GET /account`: who is signed in.
pub fn account<B>(sessions: &Sessions, lang: Lang, request: &Request<B>) -> Response<Full<Bytes>> {
    let Some((_, session)) = session_of(sessions, request) else {
        return pages::redirect("/sign-in");
    };
    let s = lang.strings();
    let o = &session.official;
    let page = AccountPage {
        lang_code: lang.code(),
        s,
        switch: pages::switcher(lang, "/account", None),
        title: s.account,
        name: o.name.clone(),
        organisation: o.organisation.clone(),
        participant: o.participant.clone(),
        roles: o.roles.join(", "),
        administrator: o.roles.iter().any(|r| r == "administrator"),
        csrf: session.csrf.clone(),
    };
    pages::private(pages::render(StatusCode::OK, &page))
}

/// `POST /sign-out`: ends the session if the form is its own.
pub fn sign_out<B>(
    sessions: &Sessions,
    lang: Lang,
    request: &Request<B>,
    form: &[(String, String)],
) -> Response<Full<Bytes>> {
    let Some((id, session)) = session_of(sessions, request) else {
        return pages::redirect("/catalog");
    };
    if !same_token(&session.csrf, crate::form_field(form, "csrf")) {
        return pages::error(lang, StatusCode::FORBIDDEN, request);
    }
    sessions.close(&id);
    tracing::info!(official = %session.official.idnp, "signed out");
    let mut response = pages::redirect("/catalog");
    clear_cookie(&mut response, SESSION_COOKIE);
    response
}

fn sign_in_page<B>(
    officials: &[Official],
    lang: Lang,
    request: &Request<B>,
    csrf: &str,
    status: StatusCode,
    problem: &'static str,
) -> Response<Full<Bytes>> {
    let s = lang.strings();
    let page = SignInPage {
        lang_code: lang.code(),
        s,
        switch: pages::switcher(lang, request.uri().path(), None),
        title: s.sign_in,
        officials: officials
            .iter()
            .map(|o| OfficialRow {
                idnp: o.idnp.clone(),
                name: o.name.clone(),
                organisation: o.organisation.clone(),
                roles: o.roles.join(", "),
            })
            .collect(),
        csrf: csrf.to_owned(),
        problem,
    };
    pages::private(pages::render(status, &page))
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
