//! The data-access portal: what about 150 local authorities without a system
//! of their own use, in a browser, to reach the state registers through the
//! bus. Built so far: the public semantic catalog — every register and
//! service, searchable in three languages, a page per service — and signing
//! officials in and out (the development sign-in; [`signin`]), served as
//! server-rendered HTML that works without JavaScript.
//!
//! Layout: [`Portal::handle`] routes and applies the headers every answer
//! carries ([`security`]); [`pages`] builds each page's view from the
//! catalog; `templates/` holds the HTML (askama, compiled in, escaped by
//! default); [`i18n`] the three languages.
//!
//! Invariants:
//! - every answer carries the security headers (a Content-Security-Policy
//!   with no inline script or style, `nosniff`, no framing, no referrer);
//! - every text from the catalog is escaped by the template engine;
//! - a form is read only up to [`MAX_FORM_BYTES`], and only on the two
//!   routes that take one;
//! - the portal never fails: an error is a page, in the visitor's language.

#![forbid(unsafe_code)]

use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use mconnect::catalog::Catalog;

pub mod admin;
pub mod assignments;
pub mod i18n;
pub mod lookup;
pub mod pages;
pub mod security;
pub mod session;
pub mod signin;

use i18n::Lang;
use lookup::Lookups;
use session::{Official, Sessions};

/// The largest form body read.
pub const MAX_FORM_BYTES: usize = 16 * 1024;

/// The portal's state: the catalog it shows, who may sign in, who has.
pub struct Portal {
    catalog: Arc<Catalog>,
    /// The development sign-in's officials; empty outside a sandbox.
    dev_officials: Vec<Official>,
    sessions: Sessions,
    /// Lookups through the broker, when the portal holds the keys of the
    /// organisations it serves.
    lookups: Option<Lookups>,
}

/// The stylesheet, served from the portal itself (`style-src 'self'`).
const STYLESHEET: &str = include_str!("../assets/portal.css");

impl Portal {
    /// A portal showing `catalog`, signing nobody in.
    pub fn new(catalog: Arc<Catalog>) -> Portal {
        Portal {
            catalog,
            dev_officials: Vec::new(),
            sessions: Sessions::default(),
            lookups: None,
        }
    }

    /// Lookups through the broker for the organisations `lookups` serves.
    pub fn with_lookups(mut self, lookups: Lookups) -> Portal {
        self.lookups = Some(lookups);
        self
    }

    /// The development sign-in, offering `officials` (a sandbox only).
    pub fn with_dev_sign_in(mut self, officials: Vec<Official>) -> Portal {
        self.dev_officials = officials;
        self
    }

    /// The open sessions (tests of the timeouts).
    #[doc(hidden)]
    pub fn sessions(&self) -> &Sessions {
        &self.sessions
    }

    /// Answers one request. Never fails: every error is a page.
    pub async fn handle<B>(&self, request: Request<B>) -> Response<Full<Bytes>>
    where
        B: http_body::Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let lang = security::language(&request);
        let (head, body) = request.into_parts();
        let head = Request::from_parts(head, ());
        let path = head.uri().path().to_owned();
        let takes_form = path == "/sign-in"
            || path == "/sign-out"
            || path == "/admin/officials"
            || path.starts_with("/lookup/");
        let mut response = if head.method() == Method::POST && takes_form {
            match read_form(&head, body).await {
                Ok(form) => self.submit(&head, lang, &path, &form).await,
                Err(status) => pages::error(lang, status, &head),
            }
        } else {
            self.route(&head, lang)
        };
        security::harden(&mut response, lang, &head);
        response
    }

    /// The forms: sign-in, sign-out, and the lookup's question and confirmation.
    async fn submit(
        &self,
        head: &Request<()>,
        lang: Lang,
        path: &str,
        form: &[(String, String)],
    ) -> Response<Full<Bytes>> {
        match path {
            "/sign-in" => signin::submit(&self.sessions, &self.dev_officials, lang, head, form),
            "/sign-out" => signin::sign_out(&self.sessions, lang, head, form),
            _ => {
                let Some((id, session)) = signin::session_of(&self.sessions, head) else {
                    return pages::redirect("/sign-in");
                };
                let Some(lookups) = &self.lookups else {
                    return pages::error(lang, StatusCode::NOT_FOUND, head);
                };
                let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
                match segments.as_slice() {
                    ["admin", "officials"] => admin::officials(
                        lookups,
                        &self.dev_officials,
                        lang,
                        head,
                        &session,
                        Some(form),
                    ),
                    ["lookup", "confirm"] => {
                        lookup::confirm(
                            lookups,
                            &self.sessions,
                            &self.catalog,
                            lang,
                            head,
                            (&id, &session),
                            form,
                        )
                        .await
                    }
                    ["lookup", grant, provider, code] => lookup::question(
                        lookups,
                        &self.sessions,
                        &self.catalog,
                        lang,
                        head,
                        (&id, &session),
                        (grant, provider, code),
                        Some(form),
                    ),
                    _ => pages::error(lang, StatusCode::NOT_FOUND, head),
                }
            }
        }
    }

    /// The pages a signed-in official reaches under `/lookup`.
    fn lookup_page(
        &self,
        request: &Request<()>,
        lang: Lang,
        segments: &[&str],
    ) -> Response<Full<Bytes>> {
        let Some((id, session)) = signin::session_of(&self.sessions, request) else {
            return pages::redirect("/sign-in");
        };
        match (segments, &self.lookups) {
            (["lookup"], lookups) => lookup::list(lookups.as_ref(), &self.catalog, lang, &session),
            (["lookup", "check"], Some(lookups)) => {
                lookup::check(lookups, &self.catalog, lang, &session)
            }
            (["lookup", grant, provider, code], Some(lookups)) => lookup::question(
                lookups,
                &self.sessions,
                &self.catalog,
                lang,
                request,
                (&id, &session),
                (grant, provider, code),
                None,
            ),
            _ => pages::error(lang, StatusCode::NOT_FOUND, request),
        }
    }

    fn route(&self, request: &Request<()>, lang: Lang) -> Response<Full<Bytes>> {
        let path = request.uri().path();
        let query = request.uri().query().unwrap_or("");
        if request.method() != Method::GET && request.method() != Method::HEAD {
            return pages::error(lang, StatusCode::METHOD_NOT_ALLOWED, request);
        }
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        match segments.as_slice() {
            ["sign-in"] => signin::form(&self.sessions, &self.dev_officials, lang, request),
            ["account"] => signin::account(&self.sessions, lang, request),
            ["lookup", ..] => self.lookup_page(request, lang, &segments),
            ["admin", "officials"] => {
                let Some((_, session)) = signin::session_of(&self.sessions, request) else {
                    return pages::redirect("/sign-in");
                };
                match &self.lookups {
                    Some(lookups) => admin::officials(
                        lookups,
                        &self.dev_officials,
                        lang,
                        request,
                        &session,
                        None,
                    ),
                    None => pages::error(lang, StatusCode::NOT_FOUND, request),
                }
            }
            [""] => pages::redirect("/catalog"),
            ["catalog"] => pages::catalog(&self.catalog, lang, query),
            ["catalog", "dcat.jsonld"] => pages::dcat(&self.catalog),
            ["catalog", "services", provider, code] => {
                pages::service(&self.catalog, lang, provider, code, request)
            }
            ["assets", "portal.css"] => pages::asset(STYLESHEET, "text/css; charset=utf-8"),
            _ => pages::error(lang, StatusCode::NOT_FOUND, request),
        }
    }
}

/// The first value of `name` in a submitted form, or "".
pub fn form_field<'f>(form: &'f [(String, String)], name: &str) -> &'f str {
    form.iter()
        .find(|(n, _)| n == name)
        .map_or("", |(_, v)| v.as_str())
}

/// A submitted `application/x-www-form-urlencoded` form, at most
/// [`MAX_FORM_BYTES`]; anything else is refused with the status to answer.
async fn read_form<B>(head: &Request<()>, body: B) -> Result<Vec<(String, String)>, StatusCode>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let form_type = head
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if !form_type {
        return Err(StatusCode::UNSUPPORTED_MEDIA_TYPE);
    }
    let bytes = Limited::new(body, MAX_FORM_BYTES)
        .collect()
        .await
        .map_err(|_| StatusCode::PAYLOAD_TOO_LARGE)?
        .to_bytes();
    Ok(form_urlencoded::parse(&bytes).into_owned().collect())
}
