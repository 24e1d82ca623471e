//! Each page's view, built from the catalog in the visitor's language and
//! rendered by its template (`templates/`).
//!
//! Invariant: a view holds text only; the templates escape all of it, so no
//! catalog text can become markup.

use askama::Template;
use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::Full;
use mconnect::catalog::{Catalog, Lifecycle, PersonalData, Service, ServiceFilter};

use crate::i18n::{Lang, Strings};

/// One entry of the language switcher.
pub struct Switch {
    /// Language code.
    pub code: &'static str,
    /// Its name in itself.
    pub name: &'static str,
    /// This page in that language.
    pub href: String,
    /// Whether it is the page's language.
    pub current: bool,
}

/// The switcher for the page at `path` (keeping a search's `q`).
pub fn switcher(lang: Lang, path: &str, q: Option<&str>) -> Vec<Switch> {
    Lang::ALL
        .into_iter()
        .map(|l| {
            let mut query = form_urlencoded::Serializer::new(String::new());
            query.append_pair("lang", l.code());
            if let Some(q) = q.filter(|q| !q.is_empty()) {
                query.append_pair("q", q);
            }
            Switch {
                code: l.code(),
                name: l.own_name(),
                href: format!("{path}?{}", query.finish()),
                current: l == lang,
            }
        })
        .collect()
}

fn personal(s: &Strings, class: PersonalData) -> &'static str {
    match class {
        PersonalData::None => s.personal_classes[0],
        PersonalData::Personal => s.personal_classes[1],
        PersonalData::Special => s.personal_classes[2],
    }
}

fn lifecycle(s: &Strings, status: Lifecycle) -> &'static str {
    match status {
        Lifecycle::Draft => s.lifecycle[0],
        Lifecycle::Active => s.lifecycle[1],
        Lifecycle::Deprecated => s.lifecycle[2],
        Lifecycle::Retired => s.lifecycle[3],
    }
}

/// The page of a service.
fn service_href(service: &Service) -> String {
    format!("/catalog/services/{}/{}", service.provider, service.code)
}

/// A service in the catalog list.
pub struct ServiceRow {
    href: String,
    name: String,
    description: String,
    personal: &'static str,
    status: &'static str,
    active: bool,
}

/// A register with the services found in it.
pub struct RegisterGroup {
    id: String,
    name: String,
    owner: String,
    services: Vec<ServiceRow>,
}

/// `/catalog`: every register and its services, or those a search finds.
#[derive(Template)]
#[template(path = "catalog.html")]
pub struct CatalogPage {
    lang_code: &'static str,
    s: &'static Strings,
    switch: Vec<Switch>,
    title: &'static str,
    query: String,
    count: usize,
    groups: Vec<RegisterGroup>,
}

/// The search words of `?q=`, at most 200 characters.
fn search_words(query: &str) -> String {
    form_urlencoded::parse(query.as_bytes())
        .find(|(name, _)| name == "q")
        .map(|(_, value)| value.trim().chars().take(200).collect())
        .unwrap_or_default()
}

/// The catalog, searched (ignoring case and diacritics, in all three
/// languages) when `?q=` is given. Retired services are not listed.
pub fn catalog(catalog: &Catalog, lang: Lang, query: &str) -> Response<Full<Bytes>> {
    let s = lang.strings();
    let q = search_words(query);
    let filter = ServiceFilter {
        text: (!q.is_empty()).then_some(q.as_str()),
        ..ServiceFilter::default()
    };
    let row = |svc: &Service| ServiceRow {
        href: service_href(svc),
        name: lang.pick(&svc.name).to_owned(),
        description: lang.pick(&svc.description).to_owned(),
        personal: personal(s, svc.personal_data),
        status: lifecycle(s, svc.status),
        active: svc.status == Lifecycle::Active,
    };
    let listed = |svc: &&std::sync::Arc<Service>, register: &str| {
        svc.register == register && svc.status != Lifecycle::Retired
    };
    // The search runs once over the catalog (it folds every text it
    // compares), then the matches are grouped by register.
    let found: Vec<&std::sync::Arc<Service>> = catalog.search(&filter).collect();
    let mut groups: Vec<RegisterGroup> = Vec::new();
    let mut count = 0;
    for register in catalog.registers() {
        // A search that names the register itself lists all its services.
        let whole = !q.is_empty() && register.name.contains_ignore_case(&q);
        let services: Vec<ServiceRow> = if whole {
            catalog
                .services()
                .filter(|svc| listed(svc, &register.id))
                .map(|svc| row(svc))
                .collect()
        } else {
            found
                .iter()
                .filter(|svc| listed(svc, &register.id))
                .map(|svc| row(svc))
                .collect()
        };
        if services.is_empty() {
            continue;
        }
        count += services.len();
        groups.push(RegisterGroup {
            id: register.id.clone(),
            name: lang.pick(&register.name).to_owned(),
            owner: lang.pick(&register.owner.name).to_owned(),
            services,
        });
    }
    render(
        StatusCode::OK,
        &CatalogPage {
            lang_code: lang.code(),
            s,
            switch: switcher(lang, "/catalog", Some(&q)),
            title: s.catalog,
            query: q.clone(),
            count,
            groups,
        },
    )
}

/// A query parameter of a service.
pub struct ParamRow {
    name: String,
    required: &'static str,
    meaning: String,
}

/// A data element of a service's answer.
pub struct ElementRow {
    path: String,
    meaning: String,
    personal: &'static str,
}

/// A legal act of the register.
pub struct ActRow {
    title: String,
    article: String,
    link: Option<String>,
}

/// `/catalog/services/{provider}/{code}`.
#[derive(Template)]
#[template(path = "service.html")]
pub struct ServicePage {
    lang_code: &'static str,
    s: &'static Strings,
    switch: Vec<Switch>,
    title: String,
    description: String,
    key: String,
    register: String,
    owner: String,
    provider: String,
    status: &'static str,
    version: String,
    personal: &'static str,
    method: String,
    params: Vec<ParamRow>,
    elements: Vec<ElementRow>,
    acts: Vec<ActRow>,
    public_task: String,
    contact: String,
    request_schema: Option<String>,
    response_schema: String,
}

/// The page of one service: what it returns, its data elements and their
/// personal-data class, the register's legal acts, provider, lifecycle and
/// schemas.
pub fn service<B>(
    catalog: &Catalog,
    lang: Lang,
    provider: &str,
    code: &str,
    request: &Request<B>,
) -> Response<Full<Bytes>> {
    let s = lang.strings();
    let Some(svc) = catalog.service(provider, code) else {
        return error(lang, StatusCode::NOT_FOUND, request);
    };
    let Some(register) = catalog.register(&svc.register) else {
        return error(lang, StatusCode::NOT_FOUND, request);
    };
    let pretty = |v: &serde_json::Value| serde_json::to_string_pretty(v).unwrap_or_default();
    let contact = [
        Some(register.contact.name.clone()),
        Some(register.contact.email.clone()),
        register.contact.phone.clone(),
        register.contact.url.clone(),
    ]
    .into_iter()
    .flatten()
    .collect::<Vec<_>>()
    .join(" · ");
    let page = ServicePage {
        lang_code: lang.code(),
        s,
        switch: switcher(lang, &service_href(svc), None),
        title: lang.pick(&svc.name).to_owned(),
        description: lang.pick(&svc.description).to_owned(),
        key: svc.key.clone(),
        register: lang.pick(&register.name).to_owned(),
        owner: lang.pick(&register.owner.name).to_owned(),
        provider: svc.provider.clone(),
        status: lifecycle(s, svc.status),
        version: svc.version.clone(),
        personal: personal(s, svc.personal_data),
        method: svc.method.to_string(),
        params: svc
            .query
            .iter()
            .map(|p| ParamRow {
                name: p.name.clone(),
                required: if p.required { s.required } else { s.optional },
                meaning: lang.pick(&p.meaning).to_owned(),
            })
            .collect(),
        elements: svc
            .data_elements
            .iter()
            .map(|e| ElementRow {
                path: e.path.clone(),
                meaning: lang.pick(&e.meaning).to_owned(),
                personal: personal(s, e.personal_data.unwrap_or(svc.personal_data)),
            })
            .collect(),
        acts: register
            .legal_acts
            .iter()
            .map(|a| ActRow {
                title: lang.pick(&a.title).to_owned(),
                article: a.article.clone(),
                link: a.link.clone(),
            })
            .collect(),
        public_task: lang.pick(&register.public_task).to_owned(),
        contact,
        request_schema: svc.request_schema.as_ref().map(pretty),
        response_schema: pretty(&svc.response_schema),
    };
    render(StatusCode::OK, &page)
}

/// `/catalog/dcat.jsonld`: the catalog as DCAT-AP, for harvesters.
pub fn dcat(catalog: &Catalog) -> Response<Full<Bytes>> {
    let body =
        serde_json::to_vec_pretty(&mconnect::catalog::to_dcat_ap(catalog)).unwrap_or_default();
    with_type(StatusCode::OK, body, "application/ld+json")
}

/// A page of the portal that is not found, or a method it does not serve.
#[derive(Template)]
#[template(path = "error.html")]
pub struct ErrorPage {
    lang_code: &'static str,
    s: &'static Strings,
    switch: Vec<Switch>,
    title: &'static str,
    text: &'static str,
}

/// The error page for `status`.
pub fn error<B>(lang: Lang, status: StatusCode, request: &Request<B>) -> Response<Full<Bytes>> {
    let s = lang.strings();
    let (title, text) = match status {
        StatusCode::FORBIDDEN => (s.forbidden, s.forbidden_text),
        StatusCode::SERVICE_UNAVAILABLE => (s.unavailable, s.unavailable_text),
        StatusCode::NOT_FOUND => (s.not_found, s.not_found_text),
        _ => (s.bad_request, s.bad_request_text),
    };
    // An error may answer a signed-in person's request: never cached.
    let mut response = private(render(
        status,
        &ErrorPage {
            lang_code: lang.code(),
            s,
            switch: switcher(lang, request.uri().path(), None),
            title,
            text,
        },
    ));
    if status == StatusCode::METHOD_NOT_ALLOWED {
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
    }
    response
}

/// A redirect to `location` on this portal.
pub fn redirect(location: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::SEE_OTHER;
    response
        .headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static(location));
    response
}

/// A static asset, cacheable for a day.
pub fn asset(body: &'static str, content_type: &'static str) -> Response<Full<Bytes>> {
    let mut response = with_type(StatusCode::OK, body.as_bytes().to_vec(), content_type);
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=86400"),
    );
    response
}

/// Pages about a signed-in person or the data of someone else are kept by
/// no cache, shared or private.
pub fn private(mut response: Response<Full<Bytes>>) -> Response<Full<Bytes>> {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// A page rendered, or a plain 500 if its template fails (a bug).
pub fn render<T: Template>(status: StatusCode, page: &T) -> Response<Full<Bytes>> {
    match page.render() {
        Ok(html) => with_type(status, html.into_bytes(), "text/html; charset=utf-8"),
        Err(e) => {
            // A template that fails to render is a bug; say so plainly
            // rather than send half a page.
            tracing::error!(error = %e, "page rendering failed");
            with_type(
                StatusCode::INTERNAL_SERVER_ERROR,
                b"internal error".to_vec(),
                "text/plain; charset=utf-8",
            )
        }
    }
}

fn with_type(
    status: StatusCode,
    body: Vec<u8>,
    content_type: &'static str,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}
