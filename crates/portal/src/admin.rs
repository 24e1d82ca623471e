//! The administrator's page: which of the organisation's officials may use
//! which of its grants.
//!
//! Invariants: only an official with the `administrator` role reaches it,
//! and only for their own organisation; the form is checked against the
//! session's CSRF token; a submitted assignment names only officials of that
//! organisation and grants it holds — anything else in the form is ignored,
//! not trusted; the change is durable before it takes effect.

use std::collections::{BTreeMap, BTreeSet};

use askama::Template;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;

use crate::audit::{PortalAudit, PortalEvent};
use crate::i18n::{Lang, Strings};
use crate::lookup::Lookups;
use crate::pages::{self, Switch};
use crate::session::{Official, Session};

/// One official's row: a checkbox per grant.
pub struct OfficialRow {
    name: String,
    idnp: String,
    cells: Vec<Cell>,
}

/// One checkbox.
pub struct Cell {
    name: String,
    label: String,
    checked: bool,
}

/// `/admin/officials`.
#[derive(Template)]
#[template(path = "admin_officials.html")]
pub struct OfficialsPage {
    lang_code: &'static str,
    s: &'static Strings,
    switch: Vec<Switch>,
    title: &'static str,
    organisation: String,
    grants: Vec<String>,
    rows: Vec<OfficialRow>,
    csrf: String,
    saved: bool,
}

fn is_administrator(official: &Official) -> bool {
    official.roles.iter().any(|r| r == "administrator")
}

/// `GET` (form `None`) and `POST /admin/officials`.
pub async fn officials<B>(
    audit: Option<&PortalAudit>,
    lookups: &Lookups,
    officials: &[Official],
    lang: Lang,
    request: &Request<B>,
    (session, official): (&Session, &Official),
    form: Option<&[(String, String)]>,
) -> Response<Full<Bytes>> {
    if !is_administrator(official) {
        return pages::error(lang, StatusCode::FORBIDDEN, request);
    }
    let organisation = official.participant.as_str();
    let snapshot = lookups.snapshot();
    let grants: Vec<String> = Lookups::grants_of(&snapshot, organisation)
        .map(|g| g.id.clone())
        .collect();
    let colleagues: Vec<&Official> = officials
        .iter()
        .filter(|o| o.participant == organisation)
        .collect();
    let mut saved = false;
    if let Some(form) = form {
        // Rebuilt from what this organisation has: a checkbox for another
        // organisation's official or grant is not a right, it is ignored.
        let mut next: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for official in &colleagues {
            let given = grants
                .iter()
                .filter(|g| {
                    let name = cell_name(&official.idnp, g);
                    form.iter().any(|(n, v)| *n == name && v == "on")
                })
                .cloned()
                .collect();
            next.insert(official.idnp.clone(), given);
        }
        // Each official whose rights change is recorded first: a change the
        // log cannot show is not made.
        let before = lookups.assignments().of(organisation);
        for (idnp, given) in &next {
            if before.get(idnp).unwrap_or(&BTreeSet::new()) == given {
                continue;
            }
            let event = PortalEvent::Assignments {
                administrator: official.idnp.clone(),
                organisation: organisation.to_owned(),
                official: idnp.clone(),
                grants: given.iter().cloned().collect(),
            };
            if let Some(audit) = audit
                && let Err(e) = audit.record(&event).await
            {
                tracing::error!(error = %e, "assignment change not recorded; not made");
                return pages::error(lang, StatusCode::SERVICE_UNAVAILABLE, request);
            }
        }
        if let Err(e) = lookups.assignments().replace(organisation, next) {
            tracing::error!(error = %e, "assignments not saved");
            if let Some(audit) = audit {
                let event = PortalEvent::Refused {
                    idnp: official.idnp.clone(),
                    organisation: Some(organisation.to_owned()),
                    path: "/admin/officials".to_owned(),
                    code: "portal.assignments_not_saved".to_owned(),
                    status: 503,
                };
                if let Err(e) = audit.record(&event).await {
                    tracing::error!(error = %e, "the failed change could not be recorded either");
                }
            }
            return pages::error(lang, StatusCode::SERVICE_UNAVAILABLE, request);
        }
        tracing::info!(administrator = %official.idnp, organisation, "assignments changed");
        saved = true;
    }
    let current = lookups.assignments().of(organisation);
    let s = lang.strings();
    let rows = colleagues
        .iter()
        .map(|o| OfficialRow {
            name: o.name.clone(),
            idnp: o.idnp.clone(),
            cells: grants
                .iter()
                .map(|g| Cell {
                    name: cell_name(&o.idnp, g),
                    label: format!("{} — {g}", o.name),
                    checked: current.get(&o.idnp).is_some_and(|set| set.contains(g)),
                })
                .collect(),
        })
        .collect();
    let page = OfficialsPage {
        lang_code: lang.code(),
        s,
        switch: pages::switcher(lang, "/admin/officials", None),
        title: s.officials_rights,
        organisation: official.organisation.clone(),
        grants,
        rows,
        csrf: session.csrf.clone(),
        saved,
    };
    pages::private(pages::render(StatusCode::OK, &page))
}

fn cell_name(idnp: &str, grant: &str) -> String {
    format!("allow:{idnp}:{grant}")
}
