//! Authorised lookups for a signed-in official: the portal is a participant
//! of the bus and calls through the broker like any consumer, signing as the
//! official's own organisation with the official's IDNP as
//! `MConnect-Calling-User`, so every lookup is a signed, policy-checked,
//! minimised, audited exchange. The official picks a service one of the
//! organisation's grants allows, the purpose and legal basis from that grant
//! (never free text), and the person's IDNP; a check-your-answers page states
//! what is about to be invoked; the answer shows only what the broker let
//! through, with its verified receipt, printable for the case file.
//!
//! Invariants:
//! - the grants offered are the official's organisation's only, and the
//!   confirmed lookup is rebuilt from the grant on the server, so no form
//!   field can name another organisation's grant, a purpose or a basis the
//!   grant does not list;
//! - a lookup is sent only from the check page's confirmation (POST with
//!   the session's CSRF token), once: the pending lookup lives in the
//!   session (so it ends with it) and is taken out when it is sent;
//! - the decision is the broker's: the portal offers, the broker refuses.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use askama::Template;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use mconnect::catalog::params::ParamFormat;
use mconnect::catalog::{Catalog, Service};
use mconnect::connect::client::AdminClient;
use mconnect::policy::{Grant, GrantStatus};
use mconnect_sdk::{Call, Consumer};

use crate::assignments::Assignments;
use crate::i18n::{Lang, Strings};
use crate::pages::{self, Switch};
use crate::session::{Official, PendingLookup as Pending, Session, Sessions};

/// What the portal needs to look things up: a consumer client per hosted
/// organisation (its key and certificate), and the grants of the bus.
pub struct Lookups {
    consumers: HashMap<String, Consumer>,
    /// The grants of the bus as last read: from the policy files at start,
    /// then from the broker ([`Lookups::refresh`]), which also holds those
    /// of approved connection requests.
    grants: ArcSwap<Vec<Grant>>,
    /// When the grants were last read from the broker.
    refreshed: Mutex<Option<Instant>>,
    assignments: Assignments,
}

/// How long grants read from the broker are used before they are read again.
pub const GRANTS_FRESH_FOR: Duration = Duration::from_secs(5);

impl Lookups {
    /// Lookups for the organisations in `consumers`, under `grants`, each
    /// official using the grants `assignments` gives them.
    pub fn new(
        consumers: HashMap<String, Consumer>,
        grants: Vec<Grant>,
        assignments: Assignments,
    ) -> Lookups {
        Lookups {
            consumers,
            grants: ArcSwap::from_pointee(grants),
            refreshed: Mutex::new(None),
            assignments,
        }
    }

    /// Who may use which grant.
    pub fn assignments(&self) -> &Assignments {
        &self.assignments
    }

    /// The grants as last read; pass them to [`Lookups::grants_of`] and the
    /// page functions, so one page works on one consistent set.
    pub fn snapshot(&self) -> Arc<Vec<Grant>> {
        self.grants.load_full()
    }

    /// Reads the grants again from the broker when they are older than
    /// [`GRANTS_FRESH_FOR`]: each hosted organisation's own, as the broker
    /// holds them now (files and approved connection requests), so a grant
    /// approved a moment ago is offered, and a revoked one is not. When any
    /// read fails the grants stay as they were (the broker decides every
    /// call anyway).
    pub async fn refresh(&self, admin: &HashMap<String, AdminClient>) {
        {
            let mut last = self.refreshed.lock().unwrap_or_else(|e| e.into_inner());
            if last.is_some_and(|at| at.elapsed() < GRANTS_FRESH_FOR) || admin.is_empty() {
                return;
            }
            *last = Some(Instant::now());
        }
        let mut fresh = Vec::new();
        for organisation in self.consumers.keys() {
            let Some(client) = admin.get(organisation) else {
                continue;
            };
            match read_grants(client).await {
                Ok(mut grants) => fresh.append(&mut grants),
                Err(e) => {
                    tracing::warn!(organisation, error = %e, "grants not read from the broker; the last ones stay");
                    return;
                }
            }
        }
        self.grants.store(Arc::new(fresh));
    }

    /// Forget when the grants were read, so the next page reads them (after
    /// a change the portal made itself).
    pub fn expire(&self) {
        *self.refreshed.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// The organisation's active, in-date grants among `grants` (those an
    /// official could be given), without representation.
    pub fn grants_of<'a>(
        grants: &'a [Grant],
        organisation: &'a str,
    ) -> impl Iterator<Item = &'a Grant> + 'a {
        let now = mconnect_sdk::protocol::unix_now();
        grants.iter().filter(move |g| usable(g, organisation, now))
    }

    /// What the official may ask: their organisation's grants that an
    /// administrator gave them, with the services the portal can ask (a GET
    /// that takes the person's IDNP as a parameter).
    fn offers<'a>(
        &'a self,
        grants: &'a [Grant],
        catalog: &'a Catalog,
        official: &Official,
    ) -> impl Iterator<Item = (&'a Grant, &'a Service, &'a str)> + 'a {
        let organisation = official.participant.clone();
        let idnp = official.idnp.clone();
        let now = mconnect_sdk::protocol::unix_now();
        grants
            .iter()
            .filter(move |g| {
                usable(g, &organisation, now)
                    && self.assignments.allowed(&organisation, &idnp, &g.id)
            })
            .flat_map(move |g| {
                g.services.iter().filter_map(move |key| {
                    let service = catalog.service_by_key(key)?;
                    let param = person_parameter(service)?;
                    Some((g, service.as_ref(), param))
                })
            })
    }
}

/// Whether `organisation` can use `grant` through the portal now: its own,
/// active, in date, and not for acting on someone's behalf (representation
/// needs MPower's consent flow, which the portal does not offer).
fn usable(grant: &Grant, organisation: &str, now: i64) -> bool {
    grant.consumer == organisation
        && grant.status == GrantStatus::Active
        && grant.in_date(now)
        && grant.representation.is_none()
}

/// The query parameter that names the person, for a service the portal can
/// ask: a callable GET with an IDNP parameter.
fn person_parameter(service: &Service) -> Option<&str> {
    if service.method != Method::GET || !service.is_callable() {
        return None;
    }
    service
        .query
        .iter()
        .find(|q| matches!(q.format, ParamFormat::Idnp | ParamFormat::IdnpOrIdno))
        .map(|q| q.name.as_str())
}

/// One grant's service on the lookup list.
pub struct OfferRow {
    href: String,
    service: String,
    register: String,
    grant: String,
}

/// `/lookup`.
#[derive(Template)]
#[template(path = "lookups.html")]
pub struct LookupsPage {
    lang_code: &'static str,
    s: &'static Strings,
    switch: Vec<Switch>,
    title: &'static str,
    organisation: String,
    offers: Vec<OfferRow>,
    configured: bool,
}

/// A choice of a radio group.
pub struct Choice {
    pub(crate) value: String,
    pub(crate) label: String,
    pub(crate) checked: bool,
}

impl Choice {
    /// The purposes and the legal bases of `grant` as radio buttons, with
    /// `purpose` and `basis` checked (and a grant's only one always).
    pub(crate) fn of_grant(
        lang: Lang,
        grant: &Grant,
        purpose: &str,
        basis: &str,
    ) -> (Vec<Choice>, Vec<Choice>) {
        let purposes = grant
            .purposes
            .iter()
            .map(|p| Choice {
                value: p.code.clone(),
                label: lang.pick(&p.text).to_owned(),
                checked: p.code == purpose || grant.purposes.len() == 1,
            })
            .collect();
        let bases = grant
            .legal_bases
            .iter()
            .map(|b| Choice {
                value: b.id.clone(),
                label: format!("{} — {}, {}", b.text, b.act, b.article),
                checked: b.id == basis || grant.legal_bases.len() == 1,
            })
            .collect();
        (purposes, bases)
    }
}

/// `/lookup/{grant}/{provider}/{code}`.
#[derive(Template)]
#[template(path = "lookup_form.html")]
pub struct QuestionPage {
    lang_code: &'static str,
    s: &'static Strings,
    switch: Vec<Switch>,
    title: String,
    action: String,
    csrf: String,
    register: String,
    purposes: Vec<Choice>,
    bases: Vec<Choice>,
    person: String,
    errors: Vec<(&'static str, &'static str)>,
}

/// `/lookup/check`.
#[derive(Template)]
#[template(path = "lookup_check.html")]
pub struct CheckPage {
    lang_code: &'static str,
    s: &'static Strings,
    switch: Vec<Switch>,
    title: &'static str,
    csrf: String,
    service: String,
    register: String,
    person: String,
    purpose: String,
    basis: String,
    organisation: String,
    official: String,
    change: String,
}

/// One line of an answer.
pub struct AnswerRow {
    field: String,
    value: String,
}

/// `/lookup/confirm`'s answer.
#[derive(Template)]
#[template(path = "lookup_result.html")]
pub struct ResultPage {
    lang_code: &'static str,
    s: &'static Strings,
    switch: Vec<Switch>,
    title: String,
    refused: bool,
    refusal: String,
    code: String,
    rows: Vec<AnswerRow>,
    exchange_id: String,
    audit_seq: String,
    verified: bool,
    person: String,
    purpose: String,
    basis: String,
    organisation: String,
    official: String,
}

/// `GET /lookup`: the services the official's organisation may ask.
pub fn list(
    lookups: Option<&Lookups>,
    catalog: &Catalog,
    lang: Lang,
    official: &Official,
) -> Response<Full<Bytes>> {
    let s = lang.strings();
    let grants = lookups.map(Lookups::snapshot).unwrap_or_default();
    let offers = lookups
        .map(|l| {
            l.offers(&grants, catalog, official)
                .map(|(g, svc, _)| OfferRow {
                    href: format!("/lookup/{}/{}/{}", g.id, svc.provider, svc.code),
                    service: lang.pick(&svc.name).to_owned(),
                    register: catalog
                        .register(&svc.register)
                        .map(|r| lang.pick(&r.name).to_owned())
                        .unwrap_or_default(),
                    grant: g.id.clone(),
                })
                .collect()
        })
        .unwrap_or_default();
    pages::private(pages::render(
        StatusCode::OK,
        &LookupsPage {
            lang_code: lang.code(),
            s,
            switch: pages::switcher(lang, "/lookup", None),
            title: s.lookups,
            organisation: official.organisation.clone(),
            offers,
            configured: lookups.is_some(),
        },
    ))
}

/// The grant and service of `/lookup/{grant}/{provider}/{code}`, if the
/// official's organisation holds that grant and the portal can ask it.
fn offer<'a>(
    lookups: &'a Lookups,
    grants: &'a [Grant],
    catalog: &'a Catalog,
    official: &Official,
    grant: &str,
    provider: &str,
    code: &str,
) -> Option<(&'a Grant, &'a Service, &'a str)> {
    lookups
        .offers(grants, catalog, official)
        .find(|(g, svc, _)| g.id == grant && svc.provider == provider && svc.code == code)
}

/// `GET|POST /lookup/{grant}/{provider}/{code}`: the question page, and its
/// answers checked (on the server, whatever the browser checked).
#[allow(clippy::too_many_arguments)]
pub fn question<B>(
    lookups: &Lookups,
    sessions: &Sessions,
    catalog: &Catalog,
    lang: Lang,
    request: &Request<B>,
    (id, session, official): (&str, &Session, &Official),
    path: (&str, &str, &str),
    form: Option<&[(String, String)]>,
) -> Response<Full<Bytes>> {
    let s = lang.strings();
    let (grant_id, provider, code) = path;
    let grants = lookups.snapshot();
    let Some((grant, service, _)) = offer(
        lookups, &grants, catalog, official, grant_id, provider, code,
    ) else {
        return pages::error(lang, StatusCode::NOT_FOUND, request);
    };
    let (mut purpose, mut basis, mut person, mut errors) =
        (String::new(), String::new(), String::new(), Vec::new());
    if let Some(form) = form {
        purpose = crate::form_field(form, "purpose").to_owned();
        basis = crate::form_field(form, "basis").to_owned();
        person = crate::form_field(form, "person").trim().to_owned();
        if !grant.purposes.iter().any(|p| p.code == purpose) {
            errors.push(("purpose", s.choose_purpose));
        }
        if !grant.legal_bases.iter().any(|b| b.id == basis) {
            errors.push(("basis", s.choose_basis));
        }
        if !mconnect_sdk::ids::is_valid_idnp(&person) {
            errors.push(("person", s.idnp_invalid));
        }
        if errors.is_empty() {
            let pending = Pending {
                grant: grant.id.clone(),
                service: service.key.clone(),
                purpose,
                basis,
                person,
            };
            sessions.set_pending(id, pending);
            return pages::redirect("/lookup/check");
        }
    }
    let register = catalog
        .register(&service.register)
        .map(|r| lang.pick(&r.name).to_owned())
        .unwrap_or_default();
    let (purposes, bases) = Choice::of_grant(lang, grant, &purpose, &basis);
    let page = QuestionPage {
        lang_code: lang.code(),
        s,
        switch: pages::switcher(lang, request.uri().path(), None),
        title: lang.pick(&service.name).to_owned(),
        action: request.uri().path().to_owned(),
        csrf: session.csrf.clone(),
        register,
        purposes,
        bases,
        person,
        errors,
    };
    let status = if page.errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    pages::private(pages::render(status, &page))
}

/// `GET /lookup/check`: what is about to be asked, under which law.
pub fn check(
    lookups: &Lookups,
    catalog: &Catalog,
    lang: Lang,
    (session, official): (&Session, &Official),
) -> Response<Full<Bytes>> {
    let Some(pending) = session.pending.clone() else {
        return pages::redirect("/lookup");
    };
    let grants = lookups.snapshot();
    let Some((grant, service)) = resolve(lookups, &grants, catalog, official, &pending) else {
        return pages::redirect("/lookup");
    };
    let s = lang.strings();
    let (purpose, basis) = words(lang, grant, &pending);
    let page = CheckPage {
        lang_code: lang.code(),
        s,
        switch: pages::switcher(lang, "/lookup/check", None),
        title: s.check_answers,
        csrf: session.csrf.clone(),
        service: lang.pick(&service.name).to_owned(),
        register: catalog
            .register(&service.register)
            .map(|r| lang.pick(&r.name).to_owned())
            .unwrap_or_default(),
        person: pending.person.clone(),
        purpose,
        basis,
        organisation: official.organisation.clone(),
        official: official.name.clone(),
        change: format!("/lookup/{}/{}/{}", grant.id, service.provider, service.code),
    };
    pages::private(pages::render(StatusCode::OK, &page))
}

/// `POST /lookup/confirm`: sends the pending lookup through the broker and
/// shows what came back, with the receipt.
pub async fn confirm<B>(
    lookups: &Lookups,
    sessions: &Sessions,
    catalog: &Catalog,
    lang: Lang,
    request: &Request<B>,
    (id, official): (&str, &Official),
) -> Response<Full<Bytes>> {
    // Taken, not read: a lookup is sent once, however often the form is.
    let Some(pending) = sessions.take_pending(id) else {
        return pages::redirect("/lookup");
    };
    let grants = lookups.snapshot();
    let Some((grant, service)) = resolve(lookups, &grants, catalog, official, &pending) else {
        return pages::redirect("/lookup");
    };
    let Some(consumer) = lookups.consumers.get(&official.participant) else {
        return pages::error(lang, StatusCode::SERVICE_UNAVAILABLE, request);
    };
    let Some(param) = person_parameter(service) else {
        return pages::error(lang, StatusCode::NOT_FOUND, request);
    };
    let s = lang.strings();
    let call = Call {
        method: Method::GET,
        path: format!(
            "/r1/{}/{}?{}",
            service.provider,
            service.code,
            form_urlencoded::Serializer::new(String::new())
                .append_pair(param, &pending.person)
                .finish()
        ),
        body: None,
        calling_user: official.idnp.clone(),
        basis: pending.basis.clone(),
        reason: pending.purpose.clone(),
        subject: Some(pending.person.clone()),
        represented_party: None,
        request_id: None,
    };
    let (purpose, basis) = words(lang, grant, &pending);
    let mut page = ResultPage {
        lang_code: lang.code(),
        s,
        // The answer is shown once; a language switch leads to the list.
        switch: pages::switcher(lang, "/lookup", None),
        title: lang.pick(&service.name).to_owned(),
        refused: false,
        refusal: String::new(),
        code: String::new(),
        rows: Vec::new(),
        exchange_id: String::new(),
        audit_seq: String::new(),
        verified: false,
        person: pending.person.clone(),
        purpose,
        basis,
        organisation: official.organisation.clone(),
        official: official.name.clone(),
    };
    match consumer.call(&call).await {
        Err(e) => {
            tracing::warn!(error = %e, "lookup could not be sent");
            page.refused = true;
            page.refusal = s.broker_unreachable.to_owned();
        }
        Ok(outcome) => {
            if let Ok(receipt) = &outcome.receipt {
                page.verified = true;
                page.exchange_id = receipt.exchange_id.clone();
                page.audit_seq = receipt
                    .audit_seq
                    .map(|seq| seq.to_string())
                    .unwrap_or_default();
            }
            let value: serde_json::Value =
                serde_json::from_slice(&outcome.body).unwrap_or_default();
            if outcome.status.is_success() && page.verified {
                flatten("", &value, &mut page.rows);
            } else {
                page.refused = true;
                page.code = value["code"].as_str().unwrap_or_default().to_owned();
                page.refusal = value["detail"]
                    .as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| s.receipt_unverified.to_owned());
            }
            tracing::info!(
                official = %official.idnp,
                organisation = %official.participant,
                service = %service.key,
                status = outcome.status.as_u16(),
                exchange_id = %page.exchange_id,
                "lookup"
            );
        }
    }
    pages::private(pages::render(StatusCode::OK, &page))
}

/// The grant and service of a pending lookup, checked again against the
/// session's organisation (the grants may have changed since).
fn resolve<'a>(
    lookups: &'a Lookups,
    grants: &'a [Grant],
    catalog: &'a Catalog,
    official: &Official,
    pending: &Pending,
) -> Option<(&'a Grant, &'a Service)> {
    let (provider, code) = pending.service.split_once('/')?;
    let (grant, service, _) = offer(
        lookups,
        grants,
        catalog,
        official,
        &pending.grant,
        provider,
        code,
    )?;
    let purpose_ok = grant.purposes.iter().any(|p| p.code == pending.purpose);
    let basis_ok = grant.legal_bases.iter().any(|b| b.id == pending.basis);
    (purpose_ok && basis_ok).then_some((grant, service))
}

/// The purpose and legal basis of a pending lookup, in words.
fn words(lang: Lang, grant: &Grant, pending: &Pending) -> (String, String) {
    let purpose = grant
        .purposes
        .iter()
        .find(|p| p.code == pending.purpose)
        .map(|p| lang.pick(&p.text).to_owned())
        .unwrap_or_default();
    let basis = grant
        .legal_bases
        .iter()
        .find(|b| b.id == pending.basis)
        .map(|b| format!("{} — {}, {}", b.text, b.act, b.article))
        .unwrap_or_default();
    (purpose, basis)
}

/// An answer as lines of `field: value`, nested objects and arrays with
/// dotted paths, in the order the broker sent them.
fn flatten(prefix: &str, value: &serde_json::Value, rows: &mut Vec<AnswerRow>) {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&path, v, rows);
            }
        }
        serde_json::Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                flatten(&format!("{prefix}[{}]", i + 1), v, rows);
            }
        }
        serde_json::Value::String(text) => rows.push(AnswerRow {
            field: prefix.to_owned(),
            value: text.clone(),
        }),
        serde_json::Value::Null => {}
        other => rows.push(AnswerRow {
            field: prefix.to_owned(),
            value: other.to_string(),
        }),
    }
}

/// The grants the broker holds now for the client's participant
/// (`GET /v1/grants`, the caller's own).
async fn read_grants(client: &AdminClient) -> Result<Vec<Grant>, String> {
    let request = client
        .plain(Method::GET, "/v1/grants", None)
        .map_err(|e| e.to_string())?;
    let (status, body) = client.send(request).await.map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(format!("the broker answered {status}: {body}"));
    }
    body["grants"]
        .as_array()
        .ok_or("the answer has no `grants` list")?
        .iter()
        .map(mconnect::policy::view::from_view)
        .collect()
}
