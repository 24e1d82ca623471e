//! The data-access portal: what about 150 local authorities without a system
//! of their own use, in a browser, to reach the state registers through the
//! bus. This first part is the public semantic catalog — every register and
//! service, searchable in three languages, a page per service — served as
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
//! - the portal never fails: an error is a page, in the visitor's language.

#![forbid(unsafe_code)]

use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use mconnect::catalog::Catalog;

pub mod i18n;
pub mod pages;
pub mod security;

use i18n::Lang;

/// The portal's state: the catalog it shows.
pub struct Portal {
    catalog: Arc<Catalog>,
}

/// The stylesheet, served from the portal itself (`style-src 'self'`).
const STYLESHEET: &str = include_str!("../assets/portal.css");

impl Portal {
    /// A portal showing `catalog`.
    pub fn new(catalog: Arc<Catalog>) -> Portal {
        Portal { catalog }
    }

    /// Answers one request. Never fails: every error is a page.
    pub fn handle<B>(&self, request: &Request<B>) -> Response<Full<Bytes>> {
        let lang = security::language(request);
        let mut response = self.route(request, lang);
        security::harden(&mut response, lang, request);
        response
    }

    fn route<B>(&self, request: &Request<B>, lang: Lang) -> Response<Full<Bytes>> {
        let path = request.uri().path();
        let query = request.uri().query().unwrap_or("");
        if request.method() != Method::GET && request.method() != Method::HEAD {
            return pages::error(lang, StatusCode::METHOD_NOT_ALLOWED, request);
        }
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        match segments.as_slice() {
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
