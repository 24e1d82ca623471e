//! "Who accessed my data": a signed-in person's own access history, read
//! through the broker like any lookup. The portal is a participant of the
//! bus (its own system, not an authority's) and asks the broker's
//! `mconnect/find-usage` service under its own grant, with the person as
//! both `MConnect-Calling-User` and `MConnect-Subject`; the broker answers
//! from its audit log, leaves confidential consumers out, and records the
//! reading itself (which the history then does not list: reading one's own
//! history is not an access by someone else).
//!
//! Invariants:
//! - the person asked about is always the signed-in person: no form or
//!   address names anyone else, so neither a resident nor an official can
//!   read another person's history here;
//! - the answer is shown only with a verified broker receipt;
//! - the official's personal number never reaches the page: the broker
//!   gives the role (an official, the person, a system), not who.

use askama::Template;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use mconnect::catalog::Catalog;
use mconnect::policy::{Grant, GrantStatus};
use mconnect_sdk::{Call, Consumer};
use serde::Deserialize;

use crate::i18n::{Lang, Strings};
use crate::pages::{self, Switch};
use crate::session::Session;

/// The broker's service the history is read from.
pub const FIND_USAGE: &str = "mconnect/find-usage";
/// Accesses shown on one page.
pub const PAGE_SIZE: u32 = 20;
/// The furthest a visitor can page (offsets beyond are refused).
const MAX_OFFSET: u32 = 100_000;

/// What the portal needs to read histories: its own consumer client and
/// the grant it reads them under, and every grant of the bus to say
/// purposes and legal bases in words.
pub struct History {
    consumer: Consumer,
    grant: Grant,
    grants: Vec<Grant>,
}

impl History {
    /// Histories read as `participant` with `consumer`, under the active
    /// grant of `grants` that gives `participant` [`FIND_USAGE`].
    pub fn new(
        participant: &str,
        consumer: Consumer,
        grants: Vec<Grant>,
    ) -> Result<History, String> {
        let now = mconnect_sdk::protocol::unix_now();
        let grant = grants
            .iter()
            .find(|g| {
                g.consumer == participant
                    && g.status == GrantStatus::Active
                    && g.in_date(now)
                    && g.services.iter().any(|s| s == FIND_USAGE)
            })
            .cloned()
            .ok_or_else(|| {
                format!("{participant} holds no active grant for {FIND_USAGE}: the history cannot be read")
            })?;
        if grant.purposes.is_empty() || grant.legal_bases.is_empty() {
            return Err(format!(
                "grant {} names no purpose or no legal basis",
                grant.id
            ));
        }
        Ok(History {
            consumer,
            grant,
            grants,
        })
    }

    /// A purpose code in words, from whichever grant defines it.
    fn purpose_words(&self, lang: Lang, code: &str) -> String {
        self.grants
            .iter()
            .flat_map(|g| &g.purposes)
            .find(|p| p.code == code)
            .map_or_else(|| code.to_owned(), |p| lang.pick(&p.text).to_owned())
    }

    /// A legal basis id in words (act and article).
    fn basis_words(&self, id: &str) -> String {
        self.grants
            .iter()
            .flat_map(|g| &g.legal_bases)
            .find(|b| b.id == id)
            .map_or_else(|| id.to_owned(), |b| format!("{}, {}", b.act, b.article))
    }
}

/// One access as the page shows it.
pub struct UsageRow {
    when: String,
    authority: String,
    system: String,
    role: &'static str,
    service: String,
    register: String,
    purpose: String,
    basis: String,
}

/// `/my-data`.
#[derive(Template)]
#[template(path = "my_data.html")]
pub struct HistoryPage {
    lang_code: &'static str,
    s: &'static Strings,
    switch: Vec<Switch>,
    title: &'static str,
    name: String,
    idnp: String,
    from: String,
    to: String,
    date_error: bool,
    unavailable: bool,
    total: u64,
    rows: Vec<UsageRow>,
    previous: String,
    next: String,
}

/// The broker's answer (the fields the page uses).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Usages {
    total_count: u64,
    usages: Vec<Usage>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Usage {
    log_time: String,
    action: String,
    #[serde(default)]
    receiver_code: Option<String>,
    #[serde(default)]
    receiver_name: Option<String>,
    #[serde(default)]
    receiver_system: Option<String>,
    #[serde(default)]
    sender_name: Option<String>,
    #[serde(default)]
    user_role: Option<String>,
    #[serde(default)]
    purpose: Option<String>,
    #[serde(default)]
    legal_basis: Option<String>,
}

/// The period and page asked for in the address, checked.
#[derive(Debug, PartialEq, Eq)]
struct Asked {
    from: String,
    to: String,
    offset: u32,
}

/// Reads `?from=&to=&offset=`; `None` when a date is not a date or the
/// period runs backwards.
fn asked(query: &str) -> Option<Asked> {
    let field = |name: &str| {
        form_urlencoded::parse(query.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.trim().to_owned())
            .unwrap_or_default()
    };
    let (from, to) = (field("from"), field("to"));
    let format = time::macros::format_description!("[year]-[month]-[day]");
    let date = |text: &str| -> Option<Option<time::Date>> {
        if text.is_empty() {
            Some(None)
        } else {
            time::Date::parse(text, &format).ok().map(Some)
        }
    };
    let (start, end) = (date(&from)?, date(&to)?);
    if let (Some(start), Some(end)) = (start, end)
        && start > end
    {
        return None;
    }
    let offset = match field("offset").as_str() {
        "" => 0,
        text => text.parse::<u32>().ok().filter(|o| *o <= MAX_OFFSET)?,
    };
    Some(Asked { from, to, offset })
}

/// The address of a page of the same period.
fn page_link(asked: &Asked, offset: u64) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    if !asked.from.is_empty() {
        query.append_pair("from", &asked.from);
    }
    if !asked.to.is_empty() {
        query.append_pair("to", &asked.to);
    }
    if offset > 0 {
        query.append_pair("offset", &offset.to_string());
    }
    let query = query.finish();
    if query.is_empty() {
        "/my-data".to_owned()
    } else {
        format!("/my-data?{query}")
    }
}

/// `GET /my-data`: the signed-in person's own history.
pub async fn page<B>(
    history: Option<&History>,
    catalog: &Catalog,
    lang: Lang,
    request: &Request<B>,
    session: &Session,
) -> Response<Full<Bytes>> {
    let s = lang.strings();
    let query = request.uri().query().unwrap_or("");
    let person = session.person.idnp().to_owned();
    let mut view = HistoryPage {
        lang_code: lang.code(),
        s,
        switch: pages::switcher(lang, "/my-data", None),
        title: s.my_data,
        name: session.person.name().to_owned(),
        idnp: person.clone(),
        from: String::new(),
        to: String::new(),
        date_error: false,
        unavailable: false,
        total: 0,
        rows: Vec::new(),
        previous: String::new(),
        next: String::new(),
    };
    let Some(asked) = asked(query) else {
        view.date_error = true;
        let field = |name: &str| {
            form_urlencoded::parse(query.as_bytes())
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.chars().take(20).collect())
                .unwrap_or_default()
        };
        view.from = field("from");
        view.to = field("to");
        return pages::private(pages::render(StatusCode::BAD_REQUEST, &view));
    };
    view.from.clone_from(&asked.from);
    view.to.clone_from(&asked.to);
    let Some(history) = history else {
        view.unavailable = true;
        return pages::private(pages::render(StatusCode::SERVICE_UNAVAILABLE, &view));
    };
    // The serializer is not `Send`: finish it before the call is awaited.
    let params = {
        let mut params = form_urlencoded::Serializer::new(String::new());
        params.append_pair("personCode", &person);
        if !asked.from.is_empty() {
            params.append_pair("dateFrom", &asked.from);
        }
        if !asked.to.is_empty() {
            params.append_pair("dateTo", &asked.to);
        }
        params.append_pair("offset", &asked.offset.to_string());
        params.append_pair("limit", &PAGE_SIZE.to_string());
        params.finish()
    };
    let call = Call {
        method: Method::GET,
        path: format!("/r1/{FIND_USAGE}?{params}"),
        body: None,
        calling_user: person.clone(),
        basis: history.grant.legal_bases[0].id.clone(),
        reason: history.grant.purposes[0].code.clone(),
        subject: Some(person.clone()),
        represented_party: None,
        request_id: None,
    };
    let answer = match history.consumer.call(&call).await {
        Ok(outcome) if outcome.status.is_success() && outcome.receipt.is_ok() => {
            serde_json::from_slice::<Usages>(&outcome.body).map_err(|e| e.to_string())
        }
        Ok(outcome) => Err(format!(
            "status {}, receipt {}: {}",
            outcome.status,
            if outcome.receipt.is_ok() {
                "verified"
            } else {
                "not verified"
            },
            String::from_utf8_lossy(&outcome.body)
                .chars()
                .take(300)
                .collect::<String>()
        )),
        Err(e) => Err(e.to_string()),
    };
    let usages = match answer {
        Ok(usages) => usages,
        Err(e) => {
            tracing::warn!(error = %e, "access history could not be read");
            view.unavailable = true;
            return pages::private(pages::render(StatusCode::SERVICE_UNAVAILABLE, &view));
        }
    };
    view.total = usages.total_count;
    let shown = usages.usages.len() as u64;
    view.rows = usages
        .usages
        .into_iter()
        .map(|u| row(history, catalog, lang, u))
        .collect();
    if asked.offset > 0 {
        view.previous = page_link(&asked, u64::from(asked.offset.saturating_sub(PAGE_SIZE)));
    }
    let after = u64::from(asked.offset) + shown;
    if shown > 0 && after < usages.total_count && after <= u64::from(MAX_OFFSET) {
        view.next = page_link(&asked, after);
    }
    pages::private(pages::render(StatusCode::OK, &view))
}

fn row(history: &History, catalog: &Catalog, lang: Lang, usage: Usage) -> UsageRow {
    let s = lang.strings();
    let service = catalog.service_by_key(&usage.action);
    let register = service
        .as_ref()
        .and_then(|svc| catalog.register(&svc.register))
        .map(|r| lang.pick(&r.name).to_owned())
        .or(usage.sender_name)
        .unwrap_or_default();
    let authority = match (usage.receiver_name, usage.receiver_code) {
        (Some(name), Some(code)) => format!("{name} ({code})"),
        (Some(name), None) => name,
        (None, code) => code.unwrap_or_default(),
    };
    UsageRow {
        // RFC 3339 UTC: the date and the minute are what a person reads.
        when: usage
            .log_time
            .get(..16)
            .map_or(usage.log_time.clone(), |t| {
                format!("{} UTC", t.replace('T', " "))
            }),
        authority,
        system: usage.receiver_system.unwrap_or_default(),
        role: match usage.user_role.as_deref() {
            Some("official") => s.role_official,
            Some("self") => s.role_self,
            _ => s.role_system,
        },
        service: service
            .map(|svc| lang.pick(&svc.name).to_owned())
            .unwrap_or(usage.action),
        register,
        purpose: usage
            .purpose
            .map(|p| history.purpose_words(lang, &p))
            .unwrap_or_default(),
        basis: usage
            .legal_basis
            .map(|b| history.basis_words(&b))
            .unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_period_and_page_are_checked() {
        assert_eq!(
            asked(""),
            Some(Asked {
                from: String::new(),
                to: String::new(),
                offset: 0
            })
        );
        assert_eq!(
            asked("from=2026-01-01&to=2026-02-01&offset=40"),
            Some(Asked {
                from: "2026-01-01".into(),
                to: "2026-02-01".into(),
                offset: 40
            })
        );
        for bad in [
            "from=yesterday",
            "to=2026-13-01",
            "from=2026-02-01&to=2026-01-01",
            "offset=-1",
            "offset=many",
            "offset=100001",
            "from=2026-01-01T00:00:00Z",
        ] {
            assert_eq!(asked(bad), None, "{bad}");
        }
    }

    #[test]
    fn page_links_keep_the_period() {
        let a = Asked {
            from: "2026-01-01".into(),
            to: String::new(),
            offset: 20,
        };
        assert_eq!(page_link(&a, 0), "/my-data?from=2026-01-01");
        assert_eq!(page_link(&a, 40), "/my-data?from=2026-01-01&offset=40");
    }
}
