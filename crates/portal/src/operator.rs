//! The operator's and the providers' side of connection applications. The
//! operator (AGE: an official with the `operator` role, of the operator
//! participant) sees the queue ordered by the 30-day deadline with overdue
//! ones marked, opens an application with its evidence (every version's
//! signatures verified again here, and what changed between versions),
//! and takes it up, approves, rejects or asks for changes with a reason. A
//! provider's official (role `provider`) confirms for their organisation's
//! services. Approval and the last confirmation reach the data plane at
//! once: the broker swaps its rules on the transition, and the portal
//! reads the new grants on the next page.
//!
//! Every decision goes to the broker's admin API as the official's own
//! organisation (mutual TLS with its certificate), which decides whether
//! that participant may make it; the portal offers a decision only where
//! the broker lists it as allowed. After each one the portal records it in
//! its own audit log and mails the applicant through MNotify.
//!
//! Invariants:
//! - `/operator…` is for officials with the `operator` role and
//!   `/confirmations…` for those with the `provider` role (403 for anyone
//!   else); a request the broker does not show the organisation is 404;
//! - every decision is a POST with the session's CSRF token, and a
//!   decision against the applicant carries its reason (the broker refuses
//!   it without one, and the page says so).

use askama::Template;
use http::{Method, Request, StatusCode};
use mconnect::connect::client::AdminClient;
use serde_json::{Value, json};

use crate::applications::{self, Words, admin_get, request_id_ok, see_other, view};
use crate::i18n::{Lang, Strings};
use crate::pages::{self, Switch};
use crate::session::{Official, Session};
use crate::{Page, Portal};

/// The decisions the operator's page offers, in its order.
const DECISIONS: [&str; 4] = ["review", "request-changes", "approve", "reject"];

/// Which side a page is for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    /// `/operator`: the operator.
    Operator,
    /// `/confirmations`: a provider.
    Provider,
}

impl Side {
    fn role(self) -> &'static str {
        match self {
            Side::Operator => "operator",
            Side::Provider => "provider",
        }
    }

    fn base(self) -> &'static str {
        match self {
            Side::Operator => "/operator",
            Side::Provider => "/confirmations",
        }
    }
}

/// The queue.
#[derive(Template)]
#[template(path = "operator_queue.html")]
struct QueuePage {
    lang_code: &'static str,
    s: &'static Strings,
    w: &'static Words,
    switch: Vec<Switch>,
    title: &'static str,
    intro: &'static str,
    rows: Vec<view::RequestRow>,
    overdue: usize,
}

/// A decision the page offers.
struct Decision {
    action: &'static str,
    label: &'static str,
    needs_reason: bool,
}

/// One request, with its evidence.
#[derive(Template)]
#[template(path = "operator_show.html")]
struct ShowPage {
    lang_code: &'static str,
    s: &'static Strings,
    w: &'static Words,
    switch: Vec<Switch>,
    title: String,
    back: &'static str,
    back_label: &'static str,
    csrf: String,
    action_base: String,
    state: String,
    state_code: String,
    due: String,
    overdue: bool,
    waiting_on_operator: bool,
    decided: String,
    error: String,
    reason: String,
    decisions: Vec<Decision>,
    first_action: &'static str,
    providers: Vec<(String, String)>,
    history: Vec<view::HistoryRow>,
    sections: Vec<view::Section>,
    evidence: Vec<view::EvidenceRow>,
    diffs: Vec<view::DiffView>,
    grants: Vec<(String, String, String)>,
    registration: Option<view::RegistrationView>,
}

/// The signed-in official of `side`, their organisation's admin client.
fn official<'p>(
    portal: &'p Portal,
    request: &Request<()>,
    lang: Lang,
    side: Side,
) -> Result<(Session, Official, &'p AdminClient), Box<Page>> {
    let (_, session, official) = portal.official_session(request, lang)?;
    if !official.has_role(side.role()) {
        return Err(Box::new(pages::error(lang, StatusCode::FORBIDDEN, request)));
    }
    match portal.admin_client(&official.participant) {
        Some(client) => Ok((session, official, client)),
        None => Err(Box::new(pages::error(lang, StatusCode::NOT_FOUND, request))),
    }
}

fn side_of(segments: &[&str]) -> Side {
    if segments.first() == Some(&"confirmations") {
        Side::Provider
    } else {
        Side::Operator
    }
}

/// `GET /operator…` and `GET /confirmations…`.
pub async fn page(portal: &Portal, request: &Request<()>, lang: Lang, segments: &[&str]) -> Page {
    let side = side_of(segments);
    let (session, _, client) = match official(portal, request, lang, side) {
        Ok(found) => found,
        Err(page) => return *page,
    };
    match segments {
        [_] => queue(client, lang, side, request).await,
        [_, id] if request_id_ok(id) => {
            let query: Vec<(String, String)> =
                form_urlencoded::parse(request.uri().query().unwrap_or("").as_bytes())
                    .into_owned()
                    .collect();
            let decided = crate::form_field(&query, "decided").to_owned();
            show(
                portal,
                client,
                (lang, side, request),
                &session,
                id,
                (decided, String::new(), String::new()),
            )
            .await
        }
        _ => pages::error(lang, StatusCode::NOT_FOUND, request),
    }
}

/// `POST /operator/{id}/{decision}` and `POST /confirmations/{id}/confirm`.
pub async fn submit(
    portal: &Portal,
    head: &Request<()>,
    lang: Lang,
    path: &str,
    form: &[(String, String)],
) -> Page {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let side = side_of(&segments);
    let (session, official, client) = match official(portal, head, lang, side) {
        Ok(found) => found,
        Err(page) => return *page,
    };
    let (id, action) = match (side, segments.as_slice()) {
        (Side::Operator, [_, id, action]) if DECISIONS.contains(action) => (*id, *action),
        (Side::Provider, [_, id, "confirm"]) => (*id, "confirm"),
        _ => return pages::error(lang, StatusCode::NOT_FOUND, head),
    };
    if !request_id_ok(id) {
        return pages::error(lang, StatusCode::NOT_FOUND, head);
    }
    let reason = crate::form_field(form, "reason").trim().to_owned();
    let body = if reason.is_empty() {
        json!({})
    } else {
        json!({ "reason": reason })
    };
    let path = format!("/v1/connection-requests/{id}/{action}");
    let answer = match client.plain(Method::POST, &path, Some(&body)) {
        Ok(request) => client.send(request).await,
        Err(e) => Err(e),
    };
    let transition = action.replace('-', "_");
    match answer {
        Ok((status, after)) if status.is_success() => {
            applications::record(portal, &official, id, &transition, status, None).await;
            if let Some(apps) = portal.applications.as_ref() {
                apps.notify(&after, &transition, &official).await;
            }
            if matches!(action, "approve" | "confirm")
                && let Some(lookups) = portal.lookups.as_ref()
            {
                // The grants may be in force now: the next lookup page reads them.
                lookups.expire();
            }
            see_other(&format!(
                "{}/{id}?decided={transition}&lang={}",
                side.base(),
                lang.code()
            ))
        }
        Ok((StatusCode::NOT_FOUND, _)) => pages::error(lang, StatusCode::NOT_FOUND, head),
        Ok((status, problem)) => {
            let code = problem["code"].as_str().unwrap_or_default().to_owned();
            applications::record(portal, &official, id, &transition, status, Some(code)).await;
            let detail = problem["detail"].as_str().unwrap_or_default().to_owned();
            let mut page = show(
                portal,
                client,
                (lang, side, head),
                &session,
                id,
                (String::new(), detail, reason),
            )
            .await;
            if page.status() == StatusCode::OK {
                *page.status_mut() = StatusCode::BAD_REQUEST;
            }
            page
        }
        Err(e) => {
            tracing::warn!(error = %e, "the broker's admin API is unreachable");
            pages::error(lang, StatusCode::SERVICE_UNAVAILABLE, head)
        }
    }
}

async fn queue(client: &AdminClient, lang: Lang, side: Side, request: &Request<()>) -> Page {
    let list = match admin_get(client, "/v1/connection-requests").await {
        Ok(list) => list,
        Err(status) => return pages::error(lang, status, request),
    };
    let w = Words::of(lang);
    let base = side.base();
    let rows = view::rows(&list, lang, |id| format!("{base}/{id}"));
    pages::private(pages::render(
        StatusCode::OK,
        &QueuePage {
            lang_code: lang.code(),
            s: lang.strings(),
            w,
            switch: pages::switcher(lang, base, None),
            title: match side {
                Side::Operator => w.queue,
                Side::Provider => w.confirmations,
            },
            intro: match side {
                Side::Operator => w.queue_intro,
                Side::Provider => w.confirmations_intro,
            },
            overdue: rows.iter().filter(|r| r.overdue).count(),
            rows,
        },
    ))
}

/// The request page; `(decided, error, reason)`: the decision just made,
/// or the broker's refusal of one with the reason that was typed.
async fn show(
    portal: &Portal,
    client: &AdminClient,
    (lang, side, request): (Lang, Side, &Request<()>),
    session: &Session,
    id: &str,
    (decided, error, reason): (String, String, String),
) -> Page {
    let found = match admin_get(client, &format!("/v1/connection-requests/{id}")).await {
        Ok(found) => found,
        Err(status) => return pages::error(lang, status, request),
    };
    let kept = match admin_get(client, &format!("/v1/connection-requests/{id}/evidence")).await {
        Ok(kept) => kept,
        Err(status) => return pages::error(lang, status, request),
    };
    let w = Words::of(lang);
    let (evidence, versions) = view::evidence(&kept);
    let allowed: Vec<&str> = found["allowed_transitions"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let offered: &[&'static str] = match side {
        Side::Operator => &DECISIONS,
        Side::Provider => &["confirm"],
    };
    let decisions: Vec<Decision> = offered
        .iter()
        .filter(|d| allowed.contains(d))
        .map(|d| Decision {
            action: d,
            label: w.decision(d),
            needs_reason: matches!(*d, "request-changes" | "reject"),
        })
        .collect();
    let state = found["state"].as_str().unwrap_or_default();
    let base = side.base();
    pages::private(pages::render(
        StatusCode::OK,
        &ShowPage {
            lang_code: lang.code(),
            s: lang.strings(),
            w,
            switch: pages::switcher(lang, &format!("{base}/{id}"), None),
            title: format!("{} {id}", w.application),
            back: base,
            back_label: match side {
                Side::Operator => w.queue,
                Side::Provider => w.confirmations,
            },
            csrf: session.csrf.clone(),
            action_base: format!("{base}/{id}"),
            state: w.state(state).to_owned(),
            state_code: state.to_owned(),
            due: view::when(&found["due_at"]),
            overdue: found["overdue"] == Value::Bool(true),
            waiting_on_operator: matches!(state, "submitted" | "under_review" | "resubmitted"),
            decided: if decided.is_empty() {
                String::new()
            } else {
                w.transition(&decided).to_owned()
            },
            error,
            reason,
            registration: view::registration(&found),
            first_action: decisions.first().map_or("review", |d| d.action),
            decisions,
            providers: found["providers"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| {
                    (
                        p["provider"].as_str().unwrap_or_default().to_owned(),
                        p["confirmed_at"].as_str().map_or_else(
                            || w.not_yet.to_owned(),
                            |_| view::when(&p["confirmed_at"]),
                        ),
                    )
                })
                .collect(),
            history: view::history(&found, lang),
            sections: view::sections(&found["application"], &portal.catalog, lang),
            diffs: view::diffs(&versions),
            evidence,
            grants: applications::grants(&found),
        },
    ))
}
