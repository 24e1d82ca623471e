//! A connection request as the broker's admin API describes it
//! (`GET /v1/connection-requests/{id}`), turned into what the pages show:
//! its state and 30-day deadline, its history, the application's content,
//! its evidence (verified again here, from the evidence alone, with the
//! broker library's own check) and what changed between the versions filed.
//!
//! Invariant: a view holds text only; the templates escape all of it.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use mconnect::catalog::Catalog;
use mconnect::connect::Evidence;
use serde_json::Value;

use crate::i18n::Lang;

use super::Words;

/// One request in a list.
pub struct RequestRow {
    /// Its id.
    pub id: String,
    /// Where it opens.
    pub href: String,
    /// The state in words.
    pub state: String,
    /// The state's API name (for styling and tests).
    pub state_code: String,
    /// The applicant organisation.
    pub applicant: String,
    /// The services asked for.
    pub services: String,
    /// When it was first submitted.
    pub submitted: String,
    /// When the operator must answer.
    pub due: String,
    /// Whether that deadline has passed with the request waiting on the
    /// operator.
    pub overdue: bool,
    /// How many versions were filed.
    pub version: String,
}

/// One transition in the history.
pub struct HistoryRow {
    /// When.
    pub at: String,
    /// What, in words.
    pub transition: String,
    /// The state it led to, in words.
    pub to: String,
    /// Which system did it.
    pub by: String,
    /// Why.
    pub reason: String,
}

/// A part of the application: a title and its lines.
pub struct Section {
    /// The part's title.
    pub title: String,
    /// (label, value) lines.
    pub rows: Vec<(String, String)>,
}

/// The registration of an applicant not yet on the bus, as the broker
/// reads it for the operator.
pub struct RegistrationView {
    /// The certificate's subject.
    pub subject: String,
    /// Its SHA-256 fingerprint.
    pub fingerprint: String,
    /// When it expires.
    pub until: String,
    /// Whether it chains to the bus CA and is in date now.
    pub verified: bool,
    /// Why not, when not.
    pub problem: String,
    /// The system's address, when given.
    pub endpoint: String,
}

/// The registration block of the broker's view of a request, if any.
pub fn registration(request: &Value) -> Option<RegistrationView> {
    let r = request.get("registration").filter(|r| r.is_object())?;
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    Some(RegistrationView {
        subject: text(&r["subject"]),
        fingerprint: text(&r["fingerprint"]),
        until: when(&r["not_after"]),
        verified: r["chain"]["verified"] == Value::Bool(true),
        problem: text(&r["chain"]["problem"]),
        endpoint: text(&r["endpoint"]),
    })
}

/// The official's own signature of a version, as kept.
pub struct UserSignatureRow {
    /// Who the certificate names.
    pub idnp: String,
    /// The certificate's subject.
    pub subject: String,
    /// Its fingerprint.
    pub fingerprint: String,
    /// The algorithm.
    pub algorithm: String,
}

/// The evidence of one version.
pub struct EvidenceRow {
    /// Version number.
    pub version: String,
    /// The submitting system.
    pub signer: String,
    /// Its certificate's fingerprint.
    pub keyid: String,
    /// The official who filed it.
    pub calling_user: String,
    /// When it was signed.
    pub created: String,
    /// SHA-256 of the exact bytes.
    pub sha256: String,
    /// The official's own (MSign) signature, if kept.
    pub user: Option<UserSignatureRow>,
    /// Whether it verified again here.
    pub verified: bool,
    /// Why not.
    pub problem: String,
}

/// One line of a comparison.
pub struct DiffLine {
    /// `same`, `added`, `removed` or `gap` (unchanged lines left out).
    pub kind: &'static str,
    /// The line.
    pub text: String,
}

/// What changed from one version to the next.
pub struct DiffView {
    /// The earlier version.
    pub from: String,
    /// The later version.
    pub to: String,
    /// The lines, with two of context around each change.
    pub lines: Vec<DiffLine>,
}

/// Unchanged lines kept around each change.
const CONTEXT: usize = 2;
/// Lines compared at most per version (an application is far shorter).
const MAX_DIFF_LINES: usize = 2_000;

/// An RFC 3339 instant as the pages show it: `2026-11-27 10:45 UTC`.
pub fn when(value: &Value) -> String {
    let text = value.as_str().unwrap_or_default();
    if text.len() < 16 {
        return text.to_owned();
    }
    format!("{} {} UTC", &text[..10], &text[11..16])
}

/// The rows of `GET /v1/connection-requests`, ordered by deadline, the
/// earliest first; `href` makes each row's link from its id.
pub fn rows(list: &Value, lang: Lang, href: impl Fn(&str) -> String) -> Vec<RequestRow> {
    let w = Words::of(lang);
    let empty = Vec::new();
    let mut items: Vec<&Value> = list["connection_requests"]
        .as_array()
        .unwrap_or(&empty)
        .iter()
        .collect();
    // Waiting on the operator first, by deadline; decided ones after.
    items.sort_by_key(|r| {
        let state = r["state"].as_str().unwrap_or_default();
        let waiting = matches!(state, "submitted" | "under_review" | "resubmitted");
        (
            !waiting,
            r["due_at"].as_str().unwrap_or_default().to_owned(),
            r["id"].as_str().unwrap_or_default().to_owned(),
        )
    });
    items
        .into_iter()
        .map(|r| {
            let id = r["id"].as_str().unwrap_or_default().to_owned();
            let state = r["state"].as_str().unwrap_or_default();
            RequestRow {
                href: href(&id),
                state: w.state(state).to_owned(),
                state_code: state.to_owned(),
                applicant: format!(
                    "{} ({})",
                    r["applicant"]["name"].as_str().unwrap_or_default(),
                    r["applicant"]["system"].as_str().unwrap_or_default()
                ),
                services: r["services"]
                    .as_array()
                    .map(|s| {
                        s.iter()
                            .filter_map(Value::as_str)
                            .collect::<Vec<_>>()
                            .join(", ")
                    })
                    .unwrap_or_default(),
                submitted: when(&r["submitted_at"]),
                due: when(&r["due_at"]),
                overdue: r["overdue"] == Value::Bool(true),
                version: r["version"].to_string(),
                id,
            }
        })
        .collect()
}

/// The history of a request, oldest first.
pub fn history(request: &Value, lang: Lang) -> Vec<HistoryRow> {
    let w = Words::of(lang);
    request["history"]
        .as_array()
        .map(|h| {
            h.iter()
                .map(|e| HistoryRow {
                    at: when(&e["at"]),
                    transition: w
                        .transition(e["transition"].as_str().unwrap_or_default())
                        .to_owned(),
                    to: w.state(e["to"].as_str().unwrap_or_default()).to_owned(),
                    by: e["by"]["participant"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                    reason: e["reason"].as_str().unwrap_or_default().to_owned(),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The reason of the last request for changes, if that is where the
/// request stands.
pub fn changes_asked(request: &Value) -> Option<String> {
    if request["state"] != "changes_requested" {
        return None;
    }
    request["history"]
        .as_array()?
        .iter()
        .rev()
        .find(|e| e["transition"] == "request_changes")
        .and_then(|e| e["reason"].as_str())
        .map(str::to_owned)
}

/// The application's content, part by part.
pub fn sections(application: &Value, catalog: &Catalog, lang: Lang) -> Vec<Section> {
    let w = Words::of(lang);
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    let mut out = vec![Section {
        title: w.applicant.to_owned(),
        rows: vec![
            (
                w.organisation.into(),
                text(&application["applicant"]["name"]),
            ),
            (w.idno.into(), text(&application["applicant"]["idno"])),
            (w.system.into(), text(&application["applicant"]["system"])),
        ],
    }];
    // An applicant not yet on the bus: the system to register, as the
    // certificate itself says (never what a form claims about it).
    let registration = &application["applicant"]["registration"];
    if let Some(pem) = registration["certificate"].as_str() {
        let mut rows = Vec::new();
        match mconnect::registry::registered_certificate(pem) {
            Ok(cert) => {
                rows.push((w.fingerprint.into(), cert.fingerprint));
                rows.push((
                    w.certificate_until.into(),
                    when(&Value::from(mconnect::exchange::rfc3339(
                        std::time::UNIX_EPOCH
                            + std::time::Duration::from_secs(
                                u64::try_from(cert.not_after).unwrap_or(0),
                            ),
                    ))),
                ));
            }
            Err(e) => rows.push((w.certificate.into(), e.to_string())),
        }
        if let Some(endpoint) = registration["endpoint"].as_str() {
            rows.push((w.endpoint.into(), endpoint.to_owned()));
        }
        out.push(Section {
            title: w.registration.to_owned(),
            rows,
        });
    }
    let empty = Vec::new();
    for (i, s) in application["services"]
        .as_array()
        .unwrap_or(&empty)
        .iter()
        .enumerate()
    {
        let key = text(&s["service"]);
        let name = catalog
            .service_by_key(&key)
            .map_or_else(|| key.clone(), |svc| lang.pick(&svc.name).to_owned());
        let mut rows = vec![(w.service.into(), format!("{name} ({key})"))];
        for (k, b) in s["legal_bases"]
            .as_array()
            .unwrap_or(&empty)
            .iter()
            .enumerate()
        {
            let link = b["link"]
                .as_str()
                .map(|l| format!(" <{l}>"))
                .unwrap_or_default();
            rows.push((
                format!("{} {}", w.legal_basis, k + 1),
                format!(
                    "{} — {}, {}: {}{link}",
                    text(&b["id"]),
                    text(&b["act"]),
                    text(&b["article"]),
                    text(&b["text"])
                ),
            ));
        }
        rows.push((w.purpose_code.into(), text(&s["purpose"]["code"])));
        for (label, lang_code) in [
            (w.purpose_ro, "ro"),
            (w.purpose_ru, "ru"),
            (w.purpose_en, "en"),
        ] {
            rows.push((label.into(), text(&s["purpose"]["text"][lang_code])));
        }
        rows.push((w.use_case.into(), text(&s["use_case"])));
        rows.push((
            w.fields.into(),
            s["fields"]
                .as_array()
                .map(|f| {
                    f.iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default(),
        ));
        out.push(Section {
            title: format!("{} {}", w.service, i + 1),
            rows,
        });
    }
    let contact = |c: &Value| {
        let phone = c["phone"]
            .as_str()
            .map(|p| format!(", {p}"))
            .unwrap_or_default();
        format!("{}, {}{phone}", text(&c["name"]), text(&c["email"]))
    };
    out.push(Section {
        title: w.general.to_owned(),
        rows: vec![
            (
                w.controller.into(),
                application["controller_register_no"]
                    .as_str()
                    .unwrap_or(w.not_given)
                    .to_owned(),
            ),
            (w.valid_from.into(), text(&application["validity"]["from"])),
            (
                w.valid_until.into(),
                application["validity"]["until"]
                    .as_str()
                    .unwrap_or(w.open_ended)
                    .to_owned(),
            ),
            (
                w.technical_contact.into(),
                contact(&application["contacts"]["technical"]),
            ),
            (
                w.legal_contact.into(),
                contact(&application["contacts"]["legal"]),
            ),
            (
                w.declaration_title.into(),
                if application["declaration"]["own_responsibility"] == Value::Bool(true) {
                    application["declaration"]["text"]
                        .as_str()
                        .unwrap_or(w.declared)
                        .to_owned()
                } else {
                    w.not_declared.to_owned()
                },
            ),
        ],
    });
    out
}

/// The kept evidence of `GET /v1/connection-requests/{id}/evidence`, each
/// version verified again here with the broker library's own check
/// (`Evidence::reverify`: the RFC 9421 signature and digest, and the
/// official's MSign signature over the body's SHA-256 with the certificate
/// naming them), from the evidence alone.
pub fn evidence(answer: &Value) -> (Vec<EvidenceRow>, Vec<Evidence>) {
    let mut rows = Vec::new();
    let mut kept = Vec::new();
    for item in answer["evidence"].as_array().into_iter().flatten() {
        let mut item = item.clone();
        if let Some(o) = item.as_object_mut() {
            // The broker's own verdict travels beside the evidence.
            o.remove("verification");
        }
        let parsed: Result<Evidence, _> = serde_json::from_value(item.clone());
        let (verified, problem) = match &parsed {
            Ok(e) => match e.reverify() {
                Ok(()) => (true, String::new()),
                Err(p) => (false, p),
            },
            Err(e) => (false, format!("unreadable evidence: {e}")),
        };
        let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
        rows.push(EvidenceRow {
            version: item["version"].to_string(),
            signer: text(&item["signer"]),
            keyid: text(&item["keyid"]),
            calling_user: text(&item["calling_user"]),
            created: parsed
                .as_ref()
                .map(|e| when(&Value::from(rfc3339(e.created))))
                .unwrap_or_default(),
            sha256: text(&item["body_sha256"]),
            user: item
                .get("user_signature")
                .filter(|u| u.is_object())
                .map(|u| UserSignatureRow {
                    idnp: text(&u["idnp"]),
                    subject: text(&u["subject"]),
                    fingerprint: text(&u["certificate_fingerprint"]),
                    algorithm: text(&u["algorithm"]),
                }),
            verified,
            problem,
        });
        if let Ok(e) = parsed {
            kept.push(e);
        }
    }
    (rows, kept)
}

fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// What changed between each version and the next, as indented JSON
/// compared line by line.
pub fn diffs(kept: &[Evidence]) -> Vec<DiffView> {
    let pretty = |e: &Evidence| -> Vec<String> {
        let body = e.body_bytes().unwrap_or_default();
        let text = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| serde_json::to_string_pretty(&v).ok())
            .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
        text.lines()
            .take(MAX_DIFF_LINES)
            .map(str::to_owned)
            .collect()
    };
    kept.windows(2)
        .map(|pair| DiffView {
            from: pair[0].version.to_string(),
            to: pair[1].version.to_string(),
            lines: diff(&pretty(&pair[0]), &pretty(&pair[1])),
        })
        .collect()
}

/// A line diff (longest common subsequence), unchanged runs cut to
/// [`CONTEXT`] lines around each change.
pub fn diff(old: &[String], new: &[String]) -> Vec<DiffLine> {
    let (n, m) = (old.len(), new.len());
    // lcs[i][j]: the longest common subsequence of old[i..] and new[j..].
    let mut lcs = vec![vec![0u32; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if old[i] == new[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let mut all = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < n || j < m {
        if i < n && j < m && old[i] == new[j] {
            all.push(("same", old[i].clone()));
            i += 1;
            j += 1;
        } else if i < n && (j == m || lcs[i + 1][j] >= lcs[i][j + 1]) {
            // Removals before additions: the old line, then its new form.
            all.push(("removed", old[i].clone()));
            i += 1;
        } else {
            all.push(("added", new[j].clone()));
            j += 1;
        }
    }
    let near_change = |at: usize| {
        let lo = at.saturating_sub(CONTEXT);
        let hi = (at + CONTEXT).min(all.len().saturating_sub(1));
        (lo..=hi).any(|k| all[k].0 != "same")
    };
    let mut out = Vec::new();
    for (k, (kind, text)) in all.iter().enumerate() {
        if *kind != "same" || near_change(k) {
            out.push(DiffLine {
                kind,
                text: text.clone(),
            });
        } else if out.last().is_none_or(|l: &DiffLine| l.kind != "gap") {
            out.push(DiffLine {
                kind: "gap",
                text: "…".into(),
            });
        }
    }
    out
}

/// The bytes of a kept version, for a test or a download.
pub fn body_text(e: &Evidence) -> String {
    STANDARD
        .decode(&e.body)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn lines(text: &str) -> Vec<String> {
        text.lines().map(str::to_owned).collect()
    }

    #[test]
    fn the_queue_puts_what_waits_on_the_operator_first_by_deadline() {
        let list = serde_json::json!({"connection_requests": [
            {"id": "cr-2026-000001", "state": "active", "due_at": "2026-01-01T00:00:00Z", "overdue": false},
            {"id": "cr-2026-000002", "state": "resubmitted", "due_at": "2026-03-01T00:00:00Z", "overdue": false},
            {"id": "cr-2026-000003", "state": "submitted", "due_at": "2026-02-01T00:00:00Z", "overdue": true},
            {"id": "cr-2026-000004", "state": "changes_requested", "due_at": "2026-01-15T00:00:00Z", "overdue": false},
        ]});
        let rows = rows(&list, Lang::En, |id| format!("/operator/{id}"));
        let order: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(
            order,
            [
                "cr-2026-000003",
                "cr-2026-000002",
                "cr-2026-000001",
                "cr-2026-000004"
            ]
        );
        assert!(rows[0].overdue && !rows[1].overdue);
        assert_eq!(rows[0].due, "2026-02-01 00:00 UTC");
        assert_eq!(rows[0].href, "/operator/cr-2026-000003");
        assert_eq!(rows[1].state, "Resubmitted");
    }

    #[test]
    fn a_diff_shows_what_was_removed_and_added_with_some_context() {
        let old = lines("a\nb\nc\nd\ne\nf\ng\nh");
        let new = lines("a\nb\nc\nd\nE\nf\ng\nh");
        let out = diff(&old, &new);
        let kinds: Vec<(&str, &str)> = out.iter().map(|l| (l.kind, l.text.as_str())).collect();
        assert_eq!(
            kinds,
            [
                ("gap", "…"),
                ("same", "c"),
                ("same", "d"),
                ("removed", "e"),
                ("added", "E"),
                ("same", "f"),
                ("same", "g"),
                ("gap", "…"),
            ]
        );
        assert!(diff(&old, &old).iter().all(|l| l.kind == "gap"));
    }
}
