//! The broker's own services: calls to `/r1/mconnect/{code}` are answered by
//! the broker from its audit log instead of being forwarded.
//!
//! - `mconnect/access-history` ("who accessed my data"): a person's access
//!   history over a period, newest first, cursor-paged, read from the audit
//!   index.
//! - `mconnect/find-usage`: the same accesses in the shape of the Estonian
//!   Data Tracker's `findUsage`, for citizen portals (MCabinet, the
//!   data-access portal): person, period, offset and limit in; for each
//!   access its time, action (the service), receiver (the consumer), sender
//!   (the provider), the role of whoever called (`official`, `self` or
//!   `system`, never the official's IDNP), purpose and legal basis; and the
//!   total count over the period.
//! - `mconnect/audit-log` is catalogued (so grants can name it and the policy
//!   index can decide on it) but is served on the admin API only
//!   (`/v1/audit/...`); on the data plane it is refused with 404
//!   `catalog.unknown_service`.
//!
//! Both person-facing services read through one reader of "the accesses a
//! person may be shown" (`Accesses`) and differ only in how they page and
//! in the shape of the answer.
//!
//! On brokers sharing PostgreSQL the reader searches every broker's shipped
//! records (`AuditLog::search`, `audit::ship`), so a person sees the
//! accesses made through any broker of the cluster.
//!
//! Invariants:
//! - the answer is built only from the audit log, the registry snapshot and
//!   the catalog; it has passed the same identify, verify, authorise and
//!   validate steps as any forwarded call, and it is schema-checked,
//!   minimised, audited and sealed by the exchange like any provider answer;
//! - `MConnect-Subject` is the person asked about, so the reading itself is
//!   audited under that person;
//! - the accesses are only accepted `exchange` records about the subject,
//!   never calls to the broker's own services (a citizen looking at their
//!   history is not an access by someone else);
//! - consumers flagged `confidential` in the registry are left out, and so are
//!   consumers no longer in the registry: the broker cannot tell whether they
//!   were confidential, and a leak cannot be taken back while an omission can
//!   be corrected by an auditor, who sees everything. Who may be shown is
//!   decided once, before any index page is read, so pages and find-usage's
//!   total always count the same accesses;
//! - every loop is bounded: access-history reads at most [`MAX_INDEX_PAGES`]
//!   index pages per call; find-usage reads at most [`MAX_USAGE_PAGES`] pages
//!   of the index's largest size ([`MAX_USAGE_RECORDS`] records) and refuses
//!   a period that holds more (400 `request.malformed`, asking for a shorter
//!   period) rather than answer with a wrong total.

use std::collections::HashMap;
use std::ops::RangeInclusive;

use http::StatusCode;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::error::{ErrorKind, ExchangeError};
use super::upstream::{Upstream, UpstreamAnswer, UpstreamCall, UpstreamFuture, UpstreamTrace};
use crate::audit::{AuditEntry, AuditError, AuditLog, AuditQuery, AuditRecord, Decision, index};
use crate::catalog::{Catalog, Service};
use crate::registry::{Organisation, RegistrySnapshot};

/// The provider id under which the broker catalogues its own services.
pub const PROVIDER: &str = "mconnect";
/// Code of the access-history service.
pub const ACCESS_HISTORY: &str = "access-history";
/// Code of the find-usage service.
pub const FIND_USAGE: &str = "find-usage";
/// Code of the audit-log service (admin API only).
pub const AUDIT_LOG: &str = "audit-log";
/// Index pages read at most for one history page: filtering out refusals and
/// confidential consumers may leave an index page short, so a few are read to
/// fill the answer, but never without bound.
pub const MAX_INDEX_PAGES: usize = 8;
/// Index pages find-usage reads at most for one answer, each of the index's
/// largest size: its total counts the whole period, so it reads the period to
/// the end or refuses.
pub const MAX_USAGE_PAGES: usize = 20;
/// Records about a person find-usage examines at most for one answer.
pub const MAX_USAGE_RECORDS: usize = MAX_USAGE_PAGES * index::MAX_LIMIT;
/// Largest page of either service.
pub const MAX_LIMIT: usize = 200;
/// Page size when the call gives none.
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
        FIND_USAGE => find_usage(audit, registry, catalog, call).await,
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

fn malformed(detail: impl Into<String>) -> ExchangeError {
    ExchangeError::new(ErrorKind::Malformed, detail)
}

/// A period `[from, to)`; an end not given is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Period {
    from: Option<OffsetDateTime>,
    to: Option<OffsetDateTime>,
}

/// The parameters of an access-history call, checked.
#[derive(Debug, PartialEq, Eq)]
struct HistoryRequest {
    subject: String,
    period: Period,
    limit: usize,
    cursor: Option<String>,
}

impl HistoryRequest {
    fn parse(call: &InternalCall<'_>) -> Result<HistoryRequest, ExchangeError> {
        Ok(HistoryRequest {
            subject: call.person("subject")?,
            period: call.period("from", "to")?,
            limit: call.number("limit", DEFAULT_LIMIT, 1..=MAX_LIMIT)?,
            cursor: call.param("cursor"),
        })
    }
}

/// The parameters of a find-usage call, checked.
#[derive(Debug, PartialEq, Eq)]
struct UsageRequest {
    person: String,
    period: Period,
    offset: usize,
    limit: usize,
}

impl UsageRequest {
    fn parse(call: &InternalCall<'_>) -> Result<UsageRequest, ExchangeError> {
        Ok(UsageRequest {
            person: call.person("personCode")?,
            period: call.period("dateFrom", "dateTo")?,
            offset: call.number("offset", 0, 0..=usize::MAX)?,
            limit: call.number("limit", DEFAULT_LIMIT, 1..=MAX_LIMIT)?,
        })
    }
}

impl InternalCall<'_> {
    fn param(&self, name: &str) -> Option<String> {
        self.query.and_then(|q| mconnect_sdk::query_param(q, name))
    }

    /// The person asked about: the IDNP in `name`, which must also be the
    /// call's `MConnect-Subject`. The audit record of this call is indexed
    /// under that header; a read about someone else would be recorded
    /// against the wrong person.
    fn person(&self, name: &str) -> Result<String, ExchangeError> {
        let person = self.param(name).ok_or_else(|| {
            malformed(format!(
                "give the person's IDNP as the `{name}` query parameter"
            ))
        })?;
        if !crate::ids::is_valid_idnp(&person) {
            return Err(malformed(format!("`{name}` is not a valid IDNP")));
        }
        if self.subject != Some(person.as_str()) {
            return Err(malformed(format!(
                "MConnect-Subject must be the IDNP given as the `{name}` query parameter"
            )));
        }
        Ok(person)
    }

    /// The period from `from` (inclusive) to `to` (exclusive), each an RFC
    /// 3339 date-time or a date.
    fn period(&self, from: &str, to: &str) -> Result<Period, ExchangeError> {
        let instant = |name: &str| -> Result<Option<OffsetDateTime>, ExchangeError> {
            self.param(name)
                .map(|text| {
                    parse_instant(&text).ok_or_else(|| {
                        malformed(format!(
                            "`{name}` must be an RFC 3339 date-time (2025-03-01T00:00:00Z) or a date (2025-03-01)"
                        ))
                    })
                })
                .transpose()
        };
        let period = Period {
            from: instant(from)?,
            to: instant(to)?,
        };
        if let (Some(start), Some(end)) = (period.from, period.to)
            && start > end
        {
            return Err(malformed(format!("`{from}` must not be after `{to}`")));
        }
        Ok(period)
    }

    /// A whole number in `range` at `name`, `default` when absent.
    fn number(
        &self,
        name: &str,
        default: usize,
        range: RangeInclusive<usize>,
    ) -> Result<usize, ExchangeError> {
        let Some(text) = self.param(name) else {
            return Ok(default);
        };
        text.parse::<usize>()
            .ok()
            .filter(|n| range.contains(n))
            .ok_or_else(|| {
                malformed(if *range.end() == usize::MAX {
                    format!("`{name}` must be a whole number, {} or more", range.start())
                } else {
                    format!("`{name}` must be {} to {}", range.start(), range.end())
                })
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

/// One access a person may be shown.
struct Access {
    /// Leaf index of its record.
    seq: u64,
    /// The broker whose log holds it, when read from a cluster's shared
    /// copy (`AuditLog::search`).
    broker: Option<String>,
    record: AuditRecord,
    /// The service as `provider/code`.
    service: String,
    /// The consumer participant's id.
    system: String,
    /// The consumer's organisation.
    consumer: Organisation,
    /// The provider participant's id.
    provider: String,
}

/// The reader both person-facing services share: the accesses a person may
/// be shown over a period, newest first, one index page at a time.
struct Accesses {
    log: AuditLog,
    subject: String,
    period: Period,
    /// The consumers that may be shown, by participant id, taken from the
    /// registry once before any page is read: a page is never filled with
    /// entries that are then hidden, and a total counts exactly what the
    /// pages show.
    shown: HashMap<String, Organisation>,
}

/// One index page, read.
struct AccessPage {
    /// The accesses on it that may be shown, newest first.
    accesses: Vec<Access>,
    /// How many records the page held, shown or not.
    read: usize,
    /// Where the next page starts; `None` after the last.
    next: Option<String>,
}

impl Accesses {
    fn new(
        log: &AuditLog,
        registry: &RegistrySnapshot,
        subject: String,
        period: Period,
    ) -> Accesses {
        let shown = registry
            .participants()
            .into_iter()
            .filter(|p| !p.confidential)
            .map(|p| (p.id.clone(), p.organisation.clone()))
            .collect();
        Accesses {
            log: log.clone(),
            subject,
            period,
            shown,
        }
    }

    /// Brings the index up to the log: a citizen who was just served expects
    /// to see that access (cheap when the index is already there).
    fn catch_up(&self) {
        if let Err(e) = self.log.sync_index() {
            tracing::warn!(error = %e, "audit index catch-up failed; accesses may lag");
        }
    }

    /// Reads one index page of `size` exchange records about the subject,
    /// from `cursor` on.
    fn page(&self, cursor: Option<String>, size: usize) -> Result<AccessPage, AuditError> {
        // On a cluster: every broker's records, from the shared copy.
        let page = self.log.search(&AuditQuery {
            subject: Some(self.subject.clone()),
            event: Some("exchange".to_string()),
            from: self.period.from,
            to: self.period.to,
            limit: size,
            cursor,
            ..AuditQuery::default()
        })?;
        let read = page.items.len();
        let accesses = page
            .items
            .into_iter()
            .filter_map(|entry| self.access(entry))
            .collect();
        Ok(AccessPage {
            accesses,
            read,
            next: page.next_cursor,
        })
    }

    /// The entry as an access the person may be shown: an accepted exchange
    /// with a provider other than the broker, by a consumer that may be
    /// shown.
    fn access(&self, entry: AuditEntry) -> Option<Access> {
        let record = entry.record;
        if record.decision != Decision::Accepted {
            return None;
        }
        let provider = record.provider.clone().filter(|p| p != PROVIDER)?;
        let system = record.consumer.clone()?;
        let consumer = self.shown.get(&system)?.clone();
        let service = record.service_key()?;
        Some(Access {
            seq: entry.seq,
            broker: entry.broker,
            record,
            service,
            system,
            consumer,
            provider,
        })
    }
}

/// Runs a read of the audit log on the blocking pool: redb reads and the
/// segment reads behind them are blocking I/O, kept off the runtime's
/// worker threads.
async fn off_runtime<T, F>(read: F) -> Result<T, ExchangeError>
where
    F: FnOnce() -> Result<T, ExchangeError> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(read).await.map_err(|e| {
        ExchangeError::new(
            ErrorKind::Internal,
            format!("the access lookup failed: {e}"),
        )
    })?
}

/// A failed read of the log as the consumer hears it: a cursor the log did
/// not issue is the caller's mistake, anything else the log's.
fn unreadable(e: AuditError) -> ExchangeError {
    match e {
        AuditError::InvalidQuery(detail) => malformed(detail),
        other => ExchangeError::new(
            ErrorKind::AuditUnavailable,
            format!("the access history cannot be read now: {other}"),
        ),
    }
}

async fn access_history(
    audit: &AuditLog,
    registry: &RegistrySnapshot,
    catalog: &Catalog,
    call: &InternalCall<'_>,
) -> Result<Value, ExchangeError> {
    let request = HistoryRequest::parse(call)?;
    let accesses = Accesses::new(audit, registry, request.subject.clone(), request.period);
    let (limit, cursor) = (request.limit, request.cursor);
    let (found, next_cursor) =
        off_runtime(move || read_history(&accesses, limit, cursor).map_err(unreadable)).await?;
    let items: Vec<Value> = found.iter().map(|a| history_item(a, catalog)).collect();
    Ok(json!({
        "subject": request.subject,
        "items": items,
        "next_cursor": next_cursor,
    }))
}

/// Reads index pages until `limit` accesses are found, the index has no
/// more, or [`MAX_INDEX_PAGES`] pages were read. Returns the accesses and
/// the cursor to continue from.
fn read_history(
    accesses: &Accesses,
    limit: usize,
    mut cursor: Option<String>,
) -> Result<(Vec<Access>, Option<String>), AuditError> {
    accesses.catch_up();
    let mut found = Vec::new();
    for _ in 0..MAX_INDEX_PAGES {
        // Index pages larger than the answer: refusals and the citizen's own
        // history reads are skipped, and the cursor handed out is the last
        // entry shown, so nothing is lost by reading ahead.
        let page = accesses.page(cursor.take(), (limit * 4).clamp(100, index::MAX_LIMIT))?;
        for access in page.accesses {
            let after = match &access.broker {
                Some(broker) => format!(
                    "{}-{}-{broker}",
                    access.record.received_micros(),
                    access.seq
                ),
                None => format!("{}-{}", access.record.received_micros(), access.seq),
            };
            found.push(access);
            if found.len() == limit {
                return Ok((found, Some(after)));
            }
        }
        match page.next {
            Some(next) => cursor = Some(next),
            None => return Ok((found, None)),
        }
    }
    Ok((found, cursor))
}

/// One line of the history.
fn history_item(access: &Access, catalog: &Catalog) -> Value {
    let record = &access.record;
    let service_name = catalog
        .service_by_key(&access.service)
        .map(|s| s.name.ro.clone());
    json!({
        "time": record.received_at,
        "consumer_idno": access.consumer.idno,
        "consumer_name": access.consumer.name,
        "consumer_system": access.system,
        "service": access.service,
        "service_name": service_name,
        "purpose": record.purpose,
        "legal_basis": record.legal_basis,
        "exchange_id": record.exchange_id,
    })
}

async fn find_usage(
    audit: &AuditLog,
    registry: &RegistrySnapshot,
    catalog: &Catalog,
    call: &InternalCall<'_>,
) -> Result<Value, ExchangeError> {
    let request = UsageRequest::parse(call)?;
    let accesses = Accesses::new(audit, registry, request.person.clone(), request.period);
    let (offset, limit) = (request.offset, request.limit);
    let (total, found) =
        off_runtime(move || read_usages(&accesses, offset, limit, USAGE_BUDGET)).await?;
    let usages: Vec<Value> = found
        .iter()
        .map(|a| usage_item(a, &request.person, registry, catalog))
        .collect();
    Ok(json!({
        "personCode": request.person,
        "totalCount": total,
        "offset": offset,
        "limit": limit,
        "usages": usages,
    }))
}

/// How much of the index find-usage reads at most for one answer.
#[derive(Debug, Clone, Copy)]
struct ScanBudget {
    /// Records per index page.
    page: usize,
    /// Index pages.
    pages: usize,
}

const USAGE_BUDGET: ScanBudget = ScanBudget {
    page: index::MAX_LIMIT,
    pages: MAX_USAGE_PAGES,
};

/// Counts every access in the period and keeps those at `offset..offset +
/// limit`, newest first. A period holding more records than `budget` lets
/// it read is refused: the total would be wrong.
fn read_usages(
    accesses: &Accesses,
    offset: usize,
    limit: usize,
    budget: ScanBudget,
) -> Result<(usize, Vec<Access>), ExchangeError> {
    accesses.catch_up();
    let mut total = 0usize;
    let mut kept = Vec::new();
    let mut cursor = None;
    for _ in 0..budget.pages {
        let page = accesses
            .page(cursor.take(), budget.page)
            .map_err(unreadable)?;
        for access in page.accesses {
            if total >= offset && kept.len() < limit {
                kept.push(access);
            }
            total += 1;
        }
        match page.next {
            Some(next) => cursor = Some(next),
            None => return Ok((total, kept)),
        }
    }
    // The budget is spent. A full last page hands out a cursor even when
    // nothing follows it, so look whether anything does.
    let rest = accesses.page(cursor, 1).map_err(unreadable)?;
    if rest.read == 0 && rest.next.is_none() {
        return Ok((total, kept));
    }
    Err(malformed(format!(
        "the period holds more than {} exchange records about this person, more than one \
         call counts: ask for a shorter period with `dateFrom` and `dateTo`",
        budget.page * budget.pages
    )))
}

/// One usage in the Data Tracker's shape.
fn usage_item(
    access: &Access,
    person: &str,
    registry: &RegistrySnapshot,
    catalog: &Catalog,
) -> Value {
    let record = &access.record;
    let service = catalog.service_by_key(&access.service);
    // The register that gave the data: its participant as registered now,
    // else (a provider that has left the registry) its catalogued owner.
    let registered = registry
        .get(&access.provider)
        .map(|entry| &entry.participant.organisation);
    let owner = service
        .and_then(|s| catalog.register(&s.register))
        .map(|r| &r.owner);
    let sender_code = registered
        .map(|o| o.idno.clone())
        .or_else(|| owner.map(|o| o.idno.clone()));
    let sender_name = registered
        .map(|o| o.name.clone())
        .or_else(|| owner.map(|o| o.name.ro.clone()));
    let action_name = service.map(|s| json!({"ro": s.name.ro, "ru": s.name.ru, "en": s.name.en}));
    json!({
        "logTime": record.received_at,
        "action": access.service,
        "actionName": action_name,
        "receiverCode": access.consumer.idno,
        "receiverName": access.consumer.name,
        "receiverSystem": access.system,
        "senderCode": sender_code,
        "senderName": sender_name,
        "senderSystem": access.provider,
        "userRole": user_role(record.calling_user.as_deref(), person),
        "purpose": record.purpose,
        "legalBasis": record.legal_basis,
        "exchangeId": record.exchange_id,
    })
}

/// Who made the call, as the person may learn it: an official (someone
/// else), the person themself, or a system with no user. Never who the
/// official was.
fn user_role(calling_user: Option<&str>, person: &str) -> &'static str {
    match calling_user.filter(|user| !user.is_empty()) {
        None => "system",
        Some(user) if user == person => "self",
        Some(_) => "official",
    }
}

#[cfg(test)]
mod tests;
