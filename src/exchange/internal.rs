//! The broker's own services: calls to `/r1/mconnect/{code}` are answered by
//! the broker from its audit log instead of being forwarded.
//!
//! - `mconnect/access-history` ("who accessed my data"): a person's access
//!   history over a period, newest first, paged, read from the audit index.
//! - `mconnect/audit-log` is catalogued (so grants can name it and the policy
//!   index can decide on it) but is served on the admin API only
//!   (`/v1/audit/...`); on the data plane it is refused with 404
//!   `catalog.unknown_service`.
//!
//! Invariants:
//! - the answer is built only from the audit log, the registry snapshot and
//!   the catalog; it has passed the same identify, verify, authorise and
//!   validate steps as any forwarded call, and it is schema-checked,
//!   minimised, audited and sealed by the exchange like any provider answer;
//! - the history lists only accepted `exchange` records about the subject,
//!   never calls to the broker's own services (a citizen looking at their
//!   history is not an access by someone else);
//! - consumers flagged `confidential` in the registry are left out, and so are
//!   consumers no longer in the registry: the broker cannot tell whether they
//!   were confidential, and a leak cannot be taken back while an omission can
//!   be corrected by an auditor, who sees everything;
//! - every loop is bounded: at most [`MAX_INDEX_PAGES`] index pages per call.

use std::collections::HashSet;

use http::StatusCode;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::error::{ErrorKind, ExchangeError};
use super::upstream::{Upstream, UpstreamAnswer, UpstreamCall, UpstreamFuture, UpstreamTrace};
use crate::audit::{AuditEntry, AuditLog, AuditQuery, Decision};
use crate::catalog::{Catalog, Service};
use crate::registry::RegistrySnapshot;

/// The provider id under which the broker catalogues its own services.
pub const PROVIDER: &str = "mconnect";
/// Code of the access-history service.
pub const ACCESS_HISTORY: &str = "access-history";
/// Code of the audit-log service (admin API only).
pub const AUDIT_LOG: &str = "audit-log";
/// Index pages read at most for one history page: filtering out refusals and
/// confidential consumers may leave an index page short, so a few are read to
/// fill the answer, but never without bound.
pub const MAX_INDEX_PAGES: usize = 8;
/// Largest history page.
pub const MAX_LIMIT: usize = 200;
/// History page size when the call gives none.
pub const DEFAULT_LIMIT: usize = 50;

/// What the internal answer needs from the call.
pub struct InternalCall<'a> {
    /// The raw query string, without `?`.
    pub query: Option<&'a str>,
    /// `MConnect-Subject`, when sent.
    pub subject: Option<&'a str>,
}

/// The broker's own services as an upstream.
pub struct OwnServices {
    audit: AuditLog,
}

impl OwnServices {
    /// Services answered from `audit`.
    pub fn new(audit: AuditLog) -> Self {
        OwnServices { audit }
    }
}

impl Upstream for OwnServices {
    fn call<'a>(
        &'a self,
        call: UpstreamCall<'a>,
        _trace: &'a mut UpstreamTrace,
    ) -> UpstreamFuture<'a> {
        Box::pin(async move {
            let own = InternalCall {
                query: call.route.query,
                subject: call.call.subject.as_deref(),
            };
            let value =
                answer(&self.audit, call.registry, call.catalog, call.service, &own).await?;
            let body = serde_json::to_vec(&value).map_err(|e| {
                ExchangeError::new(ErrorKind::Internal, format!("encoding failed: {e}"))
            })?;
            Ok(UpstreamAnswer {
                status: StatusCode::OK,
                media_type: "application/json".to_owned(),
                body: body.into(),
            })
        })
    }
}

/// Answers a call to one of the broker's own services with its JSON value.
/// Refusals are exchange errors, audited and sealed by the caller like any
/// other.
async fn answer(
    audit: &AuditLog,
    registry: &RegistrySnapshot,
    catalog: &Catalog,
    service: &Service,
    call: &InternalCall<'_>,
) -> Result<Value, ExchangeError> {
    match service.code.as_str() {
        ACCESS_HISTORY => access_history(audit, registry, catalog, call).await,
        AUDIT_LOG => Err(ExchangeError::new(
            ErrorKind::UnknownService,
            "mconnect/audit-log is not served on the data plane: read the log on the admin API \
             (GET /v1/audit/records, /v1/audit/tree-head, /v1/audit/proof/...) with an auditor \
             or operator certificate and the MConnect-Call-Basis and MConnect-Call-Reason headers",
        )),
        other => Err(ExchangeError::new(
            ErrorKind::UnknownService,
            format!(
                "the broker offers no service `{other}`; see GET /v1/services on the admin API"
            ),
        )),
    }
}

/// The parameters of an access-history call, checked.
#[derive(Debug, PartialEq, Eq)]
struct HistoryRequest {
    subject: String,
    from: Option<OffsetDateTime>,
    to: Option<OffsetDateTime>,
    limit: usize,
    cursor: Option<String>,
}

fn malformed(detail: impl Into<String>) -> ExchangeError {
    ExchangeError::new(ErrorKind::Malformed, detail)
}

impl HistoryRequest {
    fn parse(call: &InternalCall<'_>) -> Result<HistoryRequest, ExchangeError> {
        let param = |name: &str| call.query.and_then(|q| mconnect_sdk::query_param(q, name));
        let subject = param("subject")
            .ok_or_else(|| malformed("give the person's IDNP as the `subject` query parameter"))?;
        if !crate::ids::is_valid_idnp(&subject) {
            return Err(malformed("`subject` is not a valid IDNP"));
        }
        // The audit record of this call is indexed under MConnect-Subject; it
        // must be the person whose history is read, or the read would be
        // recorded against someone else.
        if call.subject != Some(subject.as_str()) {
            return Err(malformed(
                "MConnect-Subject must be the IDNP given as the `subject` query parameter",
            ));
        }
        let time = |name: &str| -> Result<Option<OffsetDateTime>, ExchangeError> {
            param(name)
                .map(|text| {
                    parse_instant(&text).ok_or_else(|| {
                        malformed(format!(
                            "`{name}` must be an RFC 3339 date-time (2025-03-01T00:00:00Z) or a date (2025-03-01)"
                        ))
                    })
                })
                .transpose()
        };
        let (from, to) = (time("from")?, time("to")?);
        if let (Some(from), Some(to)) = (from, to)
            && from > to
        {
            return Err(malformed("`from` must not be after `to`"));
        }
        let limit = match param("limit") {
            None => DEFAULT_LIMIT,
            Some(text) => text
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=MAX_LIMIT).contains(n))
                .ok_or_else(|| malformed(format!("`limit` must be 1 to {MAX_LIMIT}")))?,
        };
        Ok(HistoryRequest {
            subject,
            from,
            to,
            limit,
            cursor: param("cursor"),
        })
    }
}

/// An RFC 3339 date-time, or a calendar date meaning its start (UTC).
fn parse_instant(text: &str) -> Option<OffsetDateTime> {
    if let Ok(t) = OffsetDateTime::parse(text, &Rfc3339) {
        return Some(t);
    }
    let format = time::macros::format_description!("[year]-[month]-[day]");
    time::Date::parse(text, &format)
        .ok()
        .map(|d| d.midnight().assume_utc())
}

async fn access_history(
    audit: &AuditLog,
    registry: &RegistrySnapshot,
    catalog: &Catalog,
    call: &InternalCall<'_>,
) -> Result<Value, ExchangeError> {
    let request = HistoryRequest::parse(call)?;
    let log = audit.clone();
    let subject = request.subject.clone();
    // Who may be shown is decided before paging, so a page is never filled
    // with entries that are then hidden.
    let visible: HashSet<String> = registry
        .participants()
        .into_iter()
        .filter(|p| !p.confidential)
        .map(|p| p.id.clone())
        .collect();
    let (from, to, limit, cursor) = (request.from, request.to, request.limit, request.cursor);
    // redb reads and the segment reads behind them are blocking I/O: keep them
    // off the runtime's worker threads.
    let entries = tokio::task::spawn_blocking(move || {
        read_history(&log, &visible, subject, from, to, limit, cursor)
    })
    .await
    .map_err(|e| ExchangeError::new(ErrorKind::Internal, format!("history lookup failed: {e}")))?
    .map_err(|e| match e {
        crate::audit::AuditError::InvalidQuery(detail) => malformed(detail),
        other => ExchangeError::new(
            ErrorKind::AuditUnavailable,
            format!("the access history cannot be read now: {other}"),
        ),
    })?;
    let (entries, next_cursor) = entries;
    let items: Vec<Value> = entries
        .iter()
        .filter_map(|entry| history_item(entry, registry, catalog))
        .collect();
    Ok(json!({
        "subject": request.subject,
        "items": items,
        "next_cursor": next_cursor,
    }))
}

/// Reads index pages until `limit` visible entries are found, the index has
/// no more, or [`MAX_INDEX_PAGES`] pages were read. Returns the entries and
/// the cursor to continue from.
fn read_history(
    log: &AuditLog,
    visible: &HashSet<String>,
    subject: String,
    from: Option<OffsetDateTime>,
    to: Option<OffsetDateTime>,
    limit: usize,
    mut cursor: Option<String>,
) -> Result<(Vec<AuditEntry>, Option<String>), crate::audit::AuditError> {
    // A citizen who was just served expects to see that access: bring the
    // index up to the log first (cheap when it is already there).
    if let Err(e) = log.sync_index() {
        tracing::warn!(error = %e, "audit index catch-up failed; history may lag");
    }
    let mut found = Vec::new();
    for _ in 0..MAX_INDEX_PAGES {
        let page = log.query(&AuditQuery {
            subject: Some(subject.clone()),
            event: Some("exchange".to_string()),
            from,
            to,
            // Index pages larger than the answer: refusals and the citizen's
            // own history reads are skipped, and the cursor handed out is the
            // last entry shown, so nothing is lost by reading ahead.
            limit: (limit * 4).clamp(100, crate::audit::index::MAX_LIMIT),
            cursor: cursor.clone(),
            ..AuditQuery::default()
        })?;
        for entry in page.items {
            if !is_access(&entry, visible) {
                continue;
            }
            found.push(entry);
            if found.len() == limit {
                let last = &found[found.len() - 1];
                let next = format!("{}-{}", last.record.received_micros(), last.seq);
                return Ok((found, Some(next)));
            }
        }
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => return Ok((found, None)),
        }
    }
    Ok((found, cursor))
}

/// An accepted exchange about the subject, by a consumer that may be shown,
/// with someone other than the broker.
fn is_access(entry: &AuditEntry, visible: &HashSet<String>) -> bool {
    entry.record.decision == Decision::Accepted
        && entry.record.provider.as_deref() != Some(PROVIDER)
        && entry
            .record
            .consumer
            .as_ref()
            .is_some_and(|c| visible.contains(c))
}

/// One line of the history, or `None` when the consumer must not be shown.
fn history_item(
    entry: &AuditEntry,
    registry: &RegistrySnapshot,
    catalog: &Catalog,
) -> Option<Value> {
    let record = &entry.record;
    let consumer = registry.get(record.consumer.as_deref()?)?;
    if consumer.participant.confidential {
        return None;
    }
    let service = record.service_key()?;
    let service_name = catalog.service_by_key(&service).map(|s| s.name.ro.clone());
    Some(json!({
        "time": record.received_at,
        "consumer_idno": consumer.participant.organisation.idno,
        "consumer_name": consumer.participant.organisation.name,
        "consumer_system": consumer.participant.id,
        "service": service,
        "service_name": service_name,
        "purpose": record.purpose,
        "legal_basis": record.legal_basis,
        "exchange_id": record.exchange_id,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(query: &str, subject: Option<&str>) -> Result<HistoryRequest, String> {
        HistoryRequest::parse(&InternalCall {
            query: Some(query),
            subject,
        })
        .map_err(|e| e.code().to_string())
    }

    #[test]
    fn history_parameters_are_checked() {
        let p = "2000000000015";
        let ok = parse(
            &format!("subject={p}&from=2025-01-01&to=2025-02-01T00:00:00Z&limit=5"),
            Some(p),
        );
        assert!(
            ok.as_ref().is_ok_and(|r| r.limit == 5 && r.from.is_some()),
            "{ok:?}"
        );
        let table: &[(&str, Option<&str>)] = &[
            ("", Some(p)),
            ("subject=123", Some("123")),
            ("subject=2000000000015", None),
            ("subject=2000000000015", Some("2000000000026")),
            ("subject=2000000000015&from=yesterday", Some(p)),
            (
                "subject=2000000000015&from=2025-02-01&to=2025-01-01",
                Some(p),
            ),
            ("subject=2000000000015&limit=0", Some(p)),
            ("subject=2000000000015&limit=100000", Some(p)),
        ];
        for (query, subject) in table {
            assert_eq!(
                parse(query, *subject).err().as_deref(),
                Some("request.malformed"),
                "{query} / {subject:?}"
            );
        }
    }
}
