//! The data-access portal: what about 150 local authorities without a system
//! of their own use, in a browser, to reach the state registers through the
//! bus. Built so far: the public semantic catalog — every register and
//! service, searchable in three languages, a page per service — and signing
//! people in and out (the development sign-in, [`signin`]; MPass, SAML
//! 2.0, [`mpass`] over [`saml`]), served as
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
//! - a form is read only up to [`MAX_FORM_BYTES`] (MPass's signed answer
//!   up to [`mpass::MAX_RESPONSE_FORM_BYTES`]), and only on the routes that
//!   take one;
//! - the portal never fails: an error is a page, in the visitor's language.

#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use mconnect::catalog::Catalog;
use mconnect::connect::client::AdminClient;

pub mod admin;
pub mod applications;
pub mod assignments;
pub mod audit;
pub mod auditor;
pub mod history;
pub mod i18n;
pub mod lookup;
pub mod mpass;
pub mod operator;
pub mod pages;
pub mod saml;
pub mod security;
pub mod session;
pub mod signin;

use audit::PortalEvent;
use i18n::Lang;
use lookup::Lookups;
use session::{Official, Session, Sessions, same_token};

/// A page the portal answers with.
type Page = Response<Full<Bytes>>;

/// A signed-in official: the session's id, the session, and the official.
type SignedInOfficial = (String, Session, Official);

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
    /// Reading a signed-in person's own access history through the broker.
    history: Option<history::History>,
    /// Where sign-ins, changes and the portal's own refusals are recorded.
    audit: Option<audit::PortalAudit>,
    /// Sign-in with MPass (SAML 2.0), when configured.
    mpass: Option<mpass::Mpass>,
    /// The broker's admin API, as each hosted organisation (connection
    /// applications, decisions on them, the audit log).
    admin: HashMap<String, AdminClient>,
    /// What the auditor's pages check the broker's tree heads with.
    auditing: Option<auditor::Auditing>,
    /// Connection applications: signing through MSign and notices through
    /// MNotify as the portal's own participant, and the drafts.
    applications: Option<applications::Applications>,
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
            history: None,
            audit: None,
            mpass: None,
            admin: HashMap::new(),
            auditing: None,
            applications: None,
        }
    }

    /// Sign-in with MPass.
    pub fn with_mpass(mut self, mpass: mpass::Mpass) -> Portal {
        self.mpass = Some(mpass);
        self
    }

    /// Lookups through the broker for the organisations `lookups` serves.
    pub fn with_lookups(mut self, lookups: Lookups) -> Portal {
        self.lookups = Some(lookups);
        self
    }

    /// The broker's admin API as each organisation in `clients`.
    pub fn with_admin(mut self, clients: HashMap<String, AdminClient>) -> Portal {
        self.admin = clients;
        self
    }

    /// Connection applications, signed and announced with `applications`.
    pub fn with_applications(mut self, applications: applications::Applications) -> Portal {
        self.applications = Some(applications);
        self
    }

    /// The auditor's pages, checking tree heads with `auditing`.
    pub fn with_auditing(mut self, auditing: auditor::Auditing) -> Portal {
        self.auditing = Some(auditing);
        self
    }

    /// The admin-API client of a hosted organisation, if the portal holds
    /// its keys and knows the admin URL.
    pub fn admin_client(&self, participant: &str) -> Option<&AdminClient> {
        self.admin.get(participant)
    }

    /// Records sign-ins, changes and the portal's own refusals in `audit`.
    pub fn with_audit(mut self, audit: audit::PortalAudit) -> Portal {
        self.audit = Some(audit);
        self
    }

    /// Records `event`; without an audit log (a portal built in a test),
    /// only traces it.
    async fn record(&self, event: &PortalEvent) -> Result<(), ()> {
        let Some(audit) = &self.audit else {
            tracing::info!(?event, "portal event (no audit log configured)");
            return Ok(());
        };
        audit.record(event).await.map(|_| ()).map_err(|e| {
            tracing::error!(error = %e, ?event, "portal event not recorded");
        })
    }

    /// Signs `person` in by `method` once the sign-in is recorded; refuses
    /// it when the record cannot be written.
    async fn sign_in<B>(
        &self,
        request: &Request<B>,
        lang: Lang,
        person: session::Person,
        method: &'static str,
    ) -> Response<Full<Bytes>> {
        let event = PortalEvent::SignIn {
            idnp: person.idnp().to_owned(),
            organisation: match &person {
                session::Person::Official(o) => Some(o.participant.clone()),
                session::Person::Resident(_) => None,
            },
            method,
        };
        if self.record(&event).await.is_err() {
            return pages::error(lang, StatusCode::SERVICE_UNAVAILABLE, request);
        }
        signin::finish(&self.sessions, lang, request, person, method)
    }

    /// Access histories ("who accessed my data") read through the broker.
    pub fn with_history(mut self, history: history::History) -> Portal {
        self.history = Some(history);
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
            || path == "/saml/acs"
            || path.starts_with("/lookup/")
            || path.starts_with("/audit/")
            || path.starts_with("/applications/")
            || path.starts_with("/operator/")
            || path.starts_with("/confirmations/");
        // MPass's signed Response is larger than any form of ours.
        let limit = if path == "/saml/acs" {
            mpass::MAX_RESPONSE_FORM_BYTES
        } else if path == "/applications/form" {
            applications::MAX_FORM_BYTES
        } else {
            MAX_FORM_BYTES
        };
        // Pages that offer grants read them fresh from the broker first (at
        // most every few seconds), so an approval shows at once.
        if (path.starts_with("/lookup") || path == "/admin/officials")
            && let Some(lookups) = &self.lookups
        {
            lookups.refresh(&self.admin).await;
        }
        let mut response = if head.method() == Method::POST && takes_form {
            match read_form(&head, body, limit).await {
                Ok(form) => self.submit(&head, lang, &path, &form).await,
                Err(status) => pages::error(lang, status, &head),
            }
        } else if path == "/my-data" && head.method() == Method::GET {
            match signin::session_of(&self.sessions, &head) {
                Some((_, session)) => {
                    history::page(self.history.as_ref(), &self.catalog, lang, &head, &session).await
                }
                None => pages::redirect("/sign-in"),
            }
        } else {
            self.route(&head, lang).await
        };
        if response.status() == StatusCode::FORBIDDEN
            && path != "/sign-in"
            && path != "/sign-out"
            && path != "/saml/acs"
        {
            self.record_refusal(&head, &path, response.status()).await;
        }
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
            "/saml/acs" => self.mpass_acs(head, lang, form).await,
            "/sign-in" => match signin::submit(&self.dev_officials, lang, head, form) {
                signin::SignIn::Open(person) => {
                    self.sign_in(head, lang, person, signin::DEVELOPMENT).await
                }
                signin::SignIn::Page(page, refusal) => {
                    if let Some(refusal) = refusal {
                        // A refusal is answered whether or not it is recorded.
                        let _ = self.record(&refusal).await;
                    }
                    page
                }
            },
            "/sign-out" => {
                let (page, event) = signin::sign_out(&self.sessions, lang, head, form);
                if let Some(event) = event {
                    let _ = self.record(&event).await;
                }
                page
            }
            // Every other form belongs to a signed-in page and carries its
            // session's token: checked here, once, before any module reads
            // the form (without a session the module sends to the sign-in).
            _ if signin::session_of(&self.sessions, head).is_some_and(|(_, session)| {
                !same_token(&session.csrf, form_field(form, "csrf"))
            }) =>
            {
                pages::error(lang, StatusCode::FORBIDDEN, head)
            }
            _ if path.starts_with("/audit/") => auditor::submit(self, head, lang, path, form).await,
            _ if path.starts_with("/applications/") => {
                applications::submit(self, head, lang, path, form).await
            }
            _ if path.starts_with("/operator/") || path.starts_with("/confirmations/") => {
                operator::submit(self, head, lang, path, form).await
            }
            _ => {
                let (id, session, official) = match self.official_session(head, lang) {
                    Ok(signed_in) => signed_in,
                    Err(response) => return *response,
                };
                let Some(lookups) = &self.lookups else {
                    return pages::error(lang, StatusCode::NOT_FOUND, head);
                };
                let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
                match segments.as_slice() {
                    ["admin", "officials"] => {
                        admin::officials(
                            self.audit.as_ref(),
                            lookups,
                            self.officials(),
                            lang,
                            head,
                            (&session, &official),
                            Some(form),
                        )
                        .await
                    }
                    ["lookup", "confirm"] => {
                        lookup::confirm(
                            lookups,
                            &self.sessions,
                            &self.catalog,
                            lang,
                            head,
                            (&id, &official),
                        )
                        .await
                    }
                    ["lookup", grant, provider, code] => lookup::question(
                        lookups,
                        &self.sessions,
                        &self.catalog,
                        lang,
                        head,
                        (&id, &session, &official),
                        (grant, provider, code),
                        Some(form),
                    ),
                    _ => pages::error(lang, StatusCode::NOT_FOUND, head),
                }
            }
        }
    }

    /// Records that the portal refused a signed-in person `path` (a
    /// resident on an official's page, a form without its token, a page for
    /// administrators): refusals are audited like sign-ins.
    async fn record_refusal(&self, request: &Request<()>, path: &str, status: StatusCode) {
        let Some((_, session)) = signin::session_of(&self.sessions, request) else {
            return;
        };
        let code = match session.official() {
            None => "portal.officials_only",
            Some(_) => "portal.forbidden",
        };
        let event = PortalEvent::Refused {
            idnp: session.person.idnp().to_owned(),
            organisation: session.official().map(|o| o.participant.clone()),
            path: path.chars().take(200).collect(),
            code: code.to_owned(),
            status: status.as_u16(),
        };
        let _ = self.record(&event).await;
    }

    /// `POST /saml/acs`: MPass's answer. An accepted one is recorded and
    /// opens the session like any sign-in; a refused one is recorded with
    /// its reason (`saml.*`) and answered with its page.
    async fn mpass_acs(
        &self,
        head: &Request<()>,
        lang: Lang,
        form: &[(String, String)],
    ) -> Response<Full<Bytes>> {
        let Some(mpass) = &self.mpass else {
            return pages::error(lang, StatusCode::NOT_FOUND, head);
        };
        match mpass.acs(lang, head, form) {
            mpass::Acs::Open(person) => {
                let opened = self.sign_in(head, lang, person, mpass::METHOD).await;
                mpass::after_sign_in(opened, lang)
            }
            mpass::Acs::Refused(page, refusal) => {
                let event = PortalEvent::SignInRefused {
                    method: mpass::METHOD,
                    code: refusal.code().to_owned(),
                };
                // A refusal is answered whether or not it is recorded.
                let _ = self.record(&event).await;
                page
            }
        }
    }

    /// The signed-in official of a request, or the answer to give instead:
    /// to the sign-in without a session, 403 to a resident (their session
    /// reaches their own page only, never a lookup or an administrator's page).
    fn official_session(
        &self,
        request: &Request<()>,
        lang: Lang,
    ) -> Result<SignedInOfficial, Box<Page>> {
        let Some((id, session)) = signin::session_of(&self.sessions, request) else {
            return Err(Box::new(pages::redirect("/sign-in")));
        };
        match session.official().cloned() {
            Some(official) => Ok((id, session, official)),
            None => Err(Box::new(pages::error(lang, StatusCode::FORBIDDEN, request))),
        }
    }

    /// Who the officials are, for an administrator's page: those MPass
    /// signs in as officials when MPass is configured, else the development
    /// sign-in's.
    fn officials(&self) -> &[Official] {
        match &self.mpass {
            Some(mpass) => mpass.officials(),
            None => &self.dev_officials,
        }
    }

    /// The pages a signed-in official reaches under `/lookup`.
    fn lookup_page(
        &self,
        request: &Request<()>,
        lang: Lang,
        segments: &[&str],
    ) -> Response<Full<Bytes>> {
        let (id, session, official) = match self.official_session(request, lang) {
            Ok(signed_in) => signed_in,
            Err(response) => return *response,
        };
        match (segments, &self.lookups) {
            (["lookup"], lookups) => lookup::list(lookups.as_ref(), &self.catalog, lang, &official),
            (["lookup", "check"], Some(lookups)) => {
                lookup::check(lookups, &self.catalog, lang, (&session, &official))
            }
            (["lookup", grant, provider, code], Some(lookups)) => lookup::question(
                lookups,
                &self.sessions,
                &self.catalog,
                lang,
                request,
                (&id, &session, &official),
                (grant, provider, code),
                None,
            ),
            _ => pages::error(lang, StatusCode::NOT_FOUND, request),
        }
    }

    async fn route(&self, request: &Request<()>, lang: Lang) -> Response<Full<Bytes>> {
        let path = request.uri().path();
        let query = request.uri().query().unwrap_or("");
        if request.method() != Method::GET && request.method() != Method::HEAD {
            return pages::error(lang, StatusCode::METHOD_NOT_ALLOWED, request);
        }
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        match segments.as_slice() {
            ["sign-in"] => signin::form(
                &self.sessions,
                &self.dev_officials,
                self.mpass.is_some(),
                lang,
                request,
            ),
            ["account"] => signin::account(&self.sessions, lang, request),
            ["sign-in", "mpass"] => match &self.mpass {
                Some(mpass) => mpass.begin(lang, request),
                None => mpass::off(lang, request),
            },
            ["saml", "metadata"] => match &self.mpass {
                Some(mpass) => mpass.metadata(),
                None => pages::error(lang, StatusCode::NOT_FOUND, request),
            },
            ["lookup", ..] => self.lookup_page(request, lang, &segments),
            ["audit", ..] => auditor::page(self, request, lang, &segments).await,
            ["applications", ..] => applications::page(self, request, lang, &segments).await,
            ["operator" | "confirmations", ..] => {
                operator::page(self, request, lang, &segments).await
            }
            ["admin", "officials"] => {
                let (_, session, official) = match self.official_session(request, lang) {
                    Ok(signed_in) => signed_in,
                    Err(response) => return *response,
                };
                match &self.lookups {
                    Some(lookups) => {
                        admin::officials(
                            self.audit.as_ref(),
                            lookups,
                            self.officials(),
                            lang,
                            request,
                            (&session, &official),
                            None,
                        )
                        .await
                    }
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
async fn read_form<B>(
    head: &Request<()>,
    body: B,
    limit: usize,
) -> Result<Vec<(String, String)>, StatusCode>
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
    let bytes = Limited::new(body, limit)
        .collect()
        .await
        .map_err(|_| StatusCode::PAYLOAD_TOO_LARGE)?
        .to_bytes();
    Ok(form_urlencoded::parse(&bytes).into_owned().collect())
}
