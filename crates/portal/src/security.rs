//! What every answer of the portal carries, applied in one place so that no
//! page can forget it, and how the visitor's language is chosen.
//!
//! Invariants:
//! - the Content-Security-Policy allows scripts, styles, images and forms
//!   from the portal itself only, no inline code, no framing;
//! - the language cookie is `Secure`, `HttpOnly` and `SameSite=Lax`, and
//!   holds only one of the three language codes.

use bytes::Bytes;
use http::{HeaderValue, Request, Response, header};
use http_body_util::Full;

use crate::i18n::Lang;

/// The policy: nothing from elsewhere, nothing inline, no framing.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// The cookie that remembers the chosen language.
const LANG_COOKIE: &str = "mconnect_lang";

/// The visitor's language: `?lang=` when given (a switch), else the
/// language cookie, else the first of the three in `Accept-Language`, else
/// Romanian.
pub fn language<B>(request: &Request<B>) -> Lang {
    if let Some(lang) = asked_language(request) {
        return lang;
    }
    if let Some(lang) = cookie(request, LANG_COOKIE).and_then(|v| Lang::parse(&v)) {
        return lang;
    }
    request
        .headers()
        .get(header::ACCEPT_LANGUAGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.split(',')
                .filter_map(|part| part.split(';').next())
                .filter_map(|tag| tag.trim().get(..2))
                .find_map(|code| Lang::parse(&code.to_ascii_lowercase()))
        })
        .unwrap_or(Lang::Ro)
}

/// `?lang=` of the request, if it names one of the three.
fn asked_language<B>(request: &Request<B>) -> Option<Lang> {
    let query = request.uri().query()?;
    form_urlencoded::parse(query.as_bytes())
        .find(|(name, _)| name == "lang")
        .and_then(|(_, value)| Lang::parse(&value))
}

/// The value of cookie `name`.
pub fn cookie<B>(request: &Request<B>, name: &str) -> Option<String> {
    request
        .headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.to_owned())
}

/// Set as an extension on a page whose form posts to another origin (the
/// MPass page posts to the identity provider): [`harden`] then adds that
/// origin, and only it, to the policy's `form-action`.
#[derive(Debug, Clone)]
pub struct FormActionOrigin(pub String);

/// Adds the headers every answer carries; remembers a language switch.
pub fn harden<B>(response: &mut Response<Full<Bytes>>, lang: Lang, request: &Request<B>) {
    let policy = response
        .extensions()
        .get::<FormActionOrigin>()
        .and_then(|FormActionOrigin(origin)| {
            let policy = CONTENT_SECURITY_POLICY.replace(
                "form-action 'self'",
                &format!("form-action 'self' {origin}"),
            );
            // An origin is `scheme://host[:port]`: nothing that could end
            // the directive.
            let plain = !origin.contains([';', ',', ' ', '\'', '"']);
            plain.then(|| HeaderValue::from_str(&policy).ok()).flatten()
        })
        .unwrap_or(HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    let h = response.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, policy);
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::CONTENT_LANGUAGE,
        HeaderValue::from_static(lang.code()),
    );
    // Pages answer differently by language cookie and header.
    h.insert(
        header::VARY,
        HeaderValue::from_static("Cookie, Accept-Language"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    }
    if asked_language(request).is_some() {
        let cookie = format!(
            "{LANG_COOKIE}={}; Path=/; Max-Age=31536000; Secure; HttpOnly; SameSite=Lax",
            lang.code()
        );
        if let Ok(value) = HeaderValue::from_str(&cookie) {
            h.append(header::SET_COOKIE, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(uri: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut builder = Request::builder().uri(uri);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap_or_default()
    }

    /// A request target, its headers, and the language it must get.
    type Case = (&'static str, &'static [(&'static str, &'static str)], Lang);

    #[test]
    fn the_language_is_chosen_switch_first_then_cookie_then_browser() {
        let cases: &[Case] = &[
            ("/catalog", &[], Lang::Ro),
            ("/catalog?lang=ru", &[], Lang::Ru),
            ("/catalog?lang=xx", &[], Lang::Ro),
            ("/catalog", &[("cookie", "a=b; mconnect_lang=en")], Lang::En),
            (
                "/catalog?lang=ro",
                &[("cookie", "mconnect_lang=en")],
                Lang::Ro,
            ),
            (
                "/catalog",
                &[("cookie", "mconnect_lang=<script>")],
                Lang::Ro,
            ),
            (
                "/catalog",
                &[("accept-language", "de-DE, ru;q=0.8")],
                Lang::Ru,
            ),
            ("/catalog", &[("accept-language", "EN-gb")], Lang::En),
            (
                "/catalog",
                &[("accept-language", "en"), ("cookie", "mconnect_lang=ru")],
                Lang::Ru,
            ),
        ];
        for (uri, headers, want) in cases {
            assert_eq!(language(&request(uri, headers)), *want, "{uri} {headers:?}");
        }
    }
}
