//! Legal-basis access policy: grants, the compiled decision index, data
//! minimisation and rate limits (PROTOCOL.md section 6).
//!
//! Grants are read from a directory of JSON files (files under `schema/` are
//! skipped), validated against the schema embedded from
//! `policies/schema/grants.schema.json`, then cross-checked: every consumer is
//! a known participant, every service is catalogued, every allowed field
//! exists in the service's response schema. Loading is all or nothing; the
//! caller swaps the new [`PolicyIndex`] in atomically (for example with
//! `ArcSwap`) and keeps the old one when loading fails.
//!
//! # Decision order
//!
//! [`PolicyIndex::decide`] applies these rules in order; the first that fails
//! is the refusal, and an allowed call names the grant used.
//!
//! | # | rule | refusal |
//! |---|------|---------|
//! | 1 | some grant names (consumer, service) and is not revoked | `policy.denied` |
//! | 2 | one of them is active (not suspended) | `policy.grant_suspended` |
//! | 3 | one active grant is within its validity interval | `policy.grant_expired` |
//! | 4 | one of those lists `MConnect-Call-Basis` among its legal bases | `policy.basis_not_allowed` |
//! | 5 | one of those lists `MConnect-Call-Reason` among its purposes | `policy.purpose_not_allowed` |
//! | 6 | the subject is present when the service requires it | `policy.subject_required` |
//!
//! A revoked grant is left out of the index entirely: it behaves exactly as
//! if it had never been granted (`policy.denied`), so a revoked consumer
//! learns nothing more than one that never had access. Suspension, by
//! contrast, is reported, because a suspended consumer is expected to fix
//! something and ask for reinstatement. When several grants pass, the one
//! with the smallest id is used, so decisions are deterministic. The rate
//! limit (429) is checked after an allow, by [`RateLimiter`].
//!
//! Invariants:
//! - *Policy never does I/O on the decision path*: `decide` reads only the
//!   in-memory index; all files are read and all checks done at load.
//! - `decide` does not allocate and takes no lock: it is one hash lookup of
//!   the (consumer, service) pair and scans of that pair's short, contiguous
//!   list of compiled rules (see `index.rs` for the layout and why).
//! - Default deny: anything not granted is refused.

mod fields;
mod index;
mod rate;
#[cfg(test)]
mod tests;
pub mod view;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use crate::catalog::{self, Catalog, JsonFile, RuleProblem, Service, Text};
use index::DecisionTable;

pub use fields::{FieldSet, minimise};
pub use rate::{LimitKind, RateLimited, RateLimiter, quota_reached, windows as quota_windows};

/// The grant schema every policy file must satisfy, embedded so the rules
/// enforced are those the broker was built with.
const GRANTS_SCHEMA: &str = include_str!("../../policies/schema/grants.schema.json");

/// The compiled, immutable set of grants.
#[derive(Debug)]
pub struct PolicyIndex {
    /// Every grant loaded, revoked ones included (for listings), sorted by id.
    grants: Vec<Grant>,
    /// (consumer, service key) → the decision data of the non-revoked grants
    /// naming that pair, ascending (so by grant id), laid out for few cache
    /// misses per decision.
    table: DecisionTable,
}

/// What the exchange asks the policy about one call.
#[derive(Debug, Clone, Copy)]
pub struct DecisionRequest<'a> {
    /// Consumer participant id (`MConnect-Client`, already authenticated).
    pub consumer: &'a str,
    /// The catalogued service called.
    pub service: &'a Service,
    /// `MConnect-Call-Basis`.
    pub basis: &'a str,
    /// `MConnect-Call-Reason`.
    pub reason: &'a str,
    /// Whether `MConnect-Subject` was sent (its format is checked elsewhere).
    pub subject_present: bool,
}

/// The outcome of a decision.
#[derive(Debug, Clone, Copy)]
pub enum Decision<'a> {
    /// The call may proceed under this grant.
    Allow(&'a Grant),
    /// The call is refused.
    Deny(Denial<'a>),
}

impl<'a> Decision<'a> {
    /// Whether the call may proceed.
    pub fn is_allowed(&self) -> bool {
        matches!(self, Decision::Allow(_))
    }

    /// The grant used (allow) or the grant that came closest (deny), for the
    /// audit record.
    pub fn grant(&self) -> Option<&'a Grant> {
        match self {
            Decision::Allow(grant) => Some(grant),
            Decision::Deny(denial) => denial.grant,
        }
    }
}

/// Why a call is refused.
#[derive(Debug, Clone, Copy)]
pub struct Denial<'a> {
    /// The refusal's stable code.
    pub code: DenyCode,
    /// The rule that failed, in words, for the problem detail and the audit
    /// record.
    pub rule: &'static str,
    /// The grant that came closest, if any grant names (consumer, service).
    pub grant: Option<&'a Grant>,
}

/// The policy refusals of PROTOCOL.md section 5 (all 403).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DenyCode {
    /// No active grant for this consumer and service.
    PolicyDenied,
    /// The call reason is not a purpose of the grant.
    PurposeNotAllowed,
    /// The call basis is not a legal basis of the grant.
    BasisNotAllowed,
    /// The grant is outside its validity interval.
    GrantExpired,
    /// The grant is suspended.
    GrantSuspended,
    /// The service needs `MConnect-Subject`.
    SubjectRequired,
}

impl DenyCode {
    /// The stable machine code of PROTOCOL.md section 5.
    pub fn code(self) -> &'static str {
        match self {
            DenyCode::PolicyDenied => "policy.denied",
            DenyCode::PurposeNotAllowed => "policy.purpose_not_allowed",
            DenyCode::BasisNotAllowed => "policy.basis_not_allowed",
            DenyCode::GrantExpired => "policy.grant_expired",
            DenyCode::GrantSuspended => "policy.grant_suspended",
            DenyCode::SubjectRequired => "policy.subject_required",
        }
    }

    /// The HTTP status of every policy refusal.
    pub fn status(self) -> http::StatusCode {
        http::StatusCode::FORBIDDEN
    }
}

impl fmt::Display for DenyCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// One grant: a consumer may call these services, for these purposes, under
/// these legal bases, and receive these fields.
#[derive(Debug, Clone)]
pub struct Grant {
    /// Unique id, named in every decision and audit record.
    pub id: String,
    /// Consumer participant id.
    pub consumer: String,
    /// Service keys (`provider/code`) granted.
    pub services: Vec<String>,
    /// Purposes (`MConnect-Call-Reason` values).
    pub purposes: Vec<Purpose>,
    /// Legal bases (`MConnect-Call-Basis` values).
    pub legal_bases: Vec<LegalBasis>,
    /// Allowed response fields, per service key.
    pub fields: BTreeMap<String, FieldSet>,
    /// Start of validity, Unix seconds (inclusive).
    pub valid_from: i64,
    /// End of validity, Unix seconds (exclusive); `None` is open-ended.
    pub valid_until: Option<i64>,
    /// Rate limit per (consumer, service).
    pub rate_limit: RateLimit,
    /// Quota per (consumer, service), if any.
    pub quota: Option<Quota>,
    /// Status.
    pub status: GrantStatus,
    /// Where the grant came from.
    pub origin: GrantOrigin,
    /// Number in the register of personal-data controllers, if given.
    pub controller_register_no: Option<String>,
    /// Free note.
    pub note: Option<String>,
    /// Whether calls with `MConnect-Represented-Party` may pass under this
    /// grant, and which MPower authorisation the calling user must hold from
    /// the represented party. `None`: such calls are refused.
    pub representation: Option<Representation>,
}

/// What a grant requires of a call made on behalf of a represented party.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Representation {
    /// The MPower authorisation type code (`AT-…`) the calling user must
    /// hold, valid today, from the represented party.
    pub authorisation_type: String,
}

impl Grant {
    /// The fields the consumer may receive from `service_key`. A service the
    /// grant does not name gets the empty set, so a mistake fails closed
    /// (everything removed) rather than open.
    pub fn fields_for(&self, service_key: &str) -> &FieldSet {
        // A static, because a `const` with heap-owning fields cannot be
        // promoted to a `'static` reference.
        static NOTHING: FieldSet = FieldSet::EMPTY;
        self.fields.get(service_key).unwrap_or(&NOTHING)
    }

    /// Whether the grant is in force at `now_unix` by its dates.
    pub fn in_date(&self, now_unix: i64) -> bool {
        self.valid_from <= now_unix && self.valid_until.is_none_or(|until| now_unix < until)
    }

    /// Whether `id` is one of the grant's legal bases.
    pub fn has_basis(&self, id: &str) -> bool {
        self.legal_bases.iter().any(|basis| basis.id == id)
    }

    /// Whether `code` is one of the grant's purposes.
    pub fn has_purpose(&self, code: &str) -> bool {
        self.purposes.iter().any(|purpose| purpose.code == code)
    }

    /// Whether the grant names `service_key`.
    pub fn covers(&self, service_key: &str) -> bool {
        self.services.iter().any(|s| s == service_key)
    }
}

/// A purpose a consumer may state in `MConnect-Call-Reason`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Purpose {
    /// Code sent in the header.
    pub code: String,
    /// What it means, in ro, ru and en.
    pub text: Text,
}

/// A legal basis a consumer may state in `MConnect-Call-Basis`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LegalBasis {
    /// Id sent in the header (`md-law-142-2018-art-6-3-1`).
    pub id: String,
    /// The act (`Legea nr. 142/2018 ...`).
    pub act: String,
    /// Article, paragraph, letter.
    pub article: String,
    /// What the norm says, briefly.
    pub text: String,
    /// Link to the official text, when known.
    #[serde(default)]
    pub link: Option<String>,
}

/// Status of a grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GrantStatus {
    /// In force (subject to its dates).
    Active,
    /// Temporarily not in force; reported as `policy.grant_suspended`.
    Suspended,
    /// Ended; behaves as if never granted.
    Revoked,
}

impl GrantStatus {
    /// The lowercase name used in files and the admin API.
    pub fn as_str(self) -> &'static str {
        match self {
            GrantStatus::Active => "active",
            GrantStatus::Suspended => "suspended",
            GrantStatus::Revoked => "revoked",
        }
    }
}

/// Where a grant came from.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum GrantOrigin {
    /// Written by the operator in a policy file.
    File,
    /// Created from an approved connection request.
    ConnectionRequest {
        /// The request's id.
        request_id: String,
    },
}

/// The period a rate limit is expressed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RatePeriod {
    /// Per second.
    Second,
    /// Per minute.
    Minute,
    /// Per hour.
    Hour,
}

/// A rate limit: `requests` per `per`, with bursts up to `burst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Requests per period (at least 1).
    pub requests: u32,
    /// The period.
    pub per: RatePeriod,
    /// Largest burst (at least 1; defaults to `requests`).
    pub burst: u32,
}

impl RateLimit {
    /// This rate divided among `brokers` enforcing it side by side: each
    /// `ceil(requests / brokers)` per period, bursts of `ceil(burst /
    /// brokers)`, so together they allow at most `brokers − 1` more than
    /// the grant per period (and per burst), and none less when the load
    /// is spread evenly.
    pub fn shared_by(&self, brokers: u32) -> RateLimit {
        let brokers = brokers.max(1);
        RateLimit {
            requests: self.requests.max(1).div_ceil(brokers),
            per: self.per,
            burst: self.burst.max(1).div_ceil(brokers),
        }
    }

    /// The governor quota: one request replenished every `per / requests`,
    /// bursts up to `burst`.
    pub fn governor_quota(&self) -> governor::Quota {
        let period = match self.per {
            RatePeriod::Second => std::time::Duration::from_secs(1),
            RatePeriod::Minute => std::time::Duration::from_secs(60),
            RatePeriod::Hour => std::time::Duration::from_secs(3600),
        };
        // Both are at least 1 by construction (schema minimum and `max(1)`),
        // and the interval is at least 1 µs (at most a million per second),
        // so the fallbacks below are never taken; they keep this total.
        let requests = self.requests.max(1);
        let burst = std::num::NonZeroU32::new(self.burst).unwrap_or(std::num::NonZeroU32::MIN);
        let interval = (period / requests).max(std::time::Duration::from_nanos(1));
        governor::Quota::with_period(interval)
            .unwrap_or_else(|| governor::Quota::per_hour(std::num::NonZeroU32::MIN))
            .allow_burst(burst)
    }
}

/// A quota per (consumer, service) per UTC calendar day and/or month.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quota {
    /// Calls per UTC day.
    #[serde(default)]
    pub per_day: Option<u64>,
    /// Calls per UTC calendar month.
    #[serde(default)]
    pub per_month: Option<u64>,
}

/// What `mconnect policy check` reports for a valid directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicySummary {
    /// Files read.
    pub files: Vec<PathBuf>,
    /// Grants by status.
    pub grants: BTreeMap<&'static str, usize>,
    /// Distinct consumers with at least one grant.
    pub consumers: usize,
}

impl fmt::Display for PolicySummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let total: usize = self.grants.values().sum();
        write!(
            f,
            "{} files, {} grants for {} consumers",
            self.files.len(),
            total,
            self.consumers
        )?;
        let mut first = true;
        for (status, count) in &self.grants {
            f.write_str(if first { " (" } else { ", " })?;
            write!(f, "{count} {status}")?;
            first = false;
        }
        if !first {
            f.write_str(")")?;
        }
        Ok(())
    }
}

/// Checks a policy directory against a catalog and the participant registry
/// and reports every problem, for `mconnect policy check DIR` (which exits
/// non-zero when this is `Err`).
pub fn check_dir(
    dir: &Path,
    catalog: &Catalog,
    is_known_participant: &dyn Fn(&str) -> bool,
) -> Result<PolicySummary, Vec<RuleProblem>> {
    let files = catalog::files_in(dir)?;
    let paths: Vec<PathBuf> = files.iter().map(|f| f.path.clone()).collect();
    let index = build(files, catalog, is_known_participant)?;
    let mut grants = BTreeMap::new();
    let mut consumers = HashSet::new();
    for grant in index.grants() {
        *grants.entry(grant.status.as_str()).or_insert(0) += 1;
        consumers.insert(grant.consumer.as_str());
    }
    Ok(PolicySummary {
        files: paths,
        grants,
        consumers: consumers.len(),
    })
}

impl PolicyIndex {
    /// Loads every `*.json` policy file in `dir`, validates it, cross-checks
    /// it against `catalog` and `is_known_participant`, and compiles the
    /// index. Returns the first problem; use [`check_dir`] to get them all.
    pub fn load_dir(
        dir: &Path,
        catalog: &Catalog,
        is_known_participant: &dyn Fn(&str) -> bool,
    ) -> Result<PolicyIndex, RuleProblem> {
        let files = catalog::files_in(dir).map_err(first)?;
        build(files, catalog, is_known_participant).map_err(first)
    }

    /// Builds an index from policy documents already in memory, for example
    /// the files of a directory plus grants made from approved connection
    /// requests. Each document has the policy file shape (`{"grants": [..]}`)
    /// and is named by its path in errors.
    pub fn from_documents(
        documents: impl IntoIterator<Item = (PathBuf, Value)>,
        catalog: &Catalog,
        is_known_participant: &dyn Fn(&str) -> bool,
    ) -> Result<PolicyIndex, Vec<RuleProblem>> {
        let files = documents
            .into_iter()
            .map(|(path, value)| JsonFile { path, value })
            .collect();
        build(files, catalog, is_known_participant)
    }

    /// Decides one call, in the order documented on this module. Pure: no
    /// I/O, no allocation, no locks.
    pub fn decide<'a>(&'a self, request: &DecisionRequest<'_>, now_unix: i64) -> Decision<'a> {
        let rules = self.table.rules(request.consumer, &request.service.key);
        // Each decision rule narrows the candidates of the previous one; the
        // scans are repeated rather than collected so that nothing is
        // allocated. The lists are short (a consumer rarely has more than a
        // few grants for one service), so this costs less than a Vec would.
        // The scans read only the compiled rules; a grant is reached only to
        // be named.
        let grant = |rule: &index::Rule| &self.grants[rule.grant()];
        let active = || rules.iter().filter(|r| r.is_active());
        let in_force = || active().filter(|r| r.in_date(now_unix));
        let with_basis =
            || in_force().filter(|r| self.table.has_basis(r, request.basis, &self.grants));

        let Some(first) = rules.first() else {
            return deny(
                DenyCode::PolicyDenied,
                "no active grant for consumer and service",
                None,
            );
        };
        let Some(first_active) = active().next() else {
            return deny(
                DenyCode::GrantSuspended,
                "every grant for consumer and service is suspended",
                Some(grant(first)),
            );
        };
        let Some(first_in_force) = in_force().next() else {
            let rule = if first_active.valid_from() > now_unix {
                "grant for consumer and service is not yet in force"
            } else {
                "grant for consumer and service has expired"
            };
            return deny(DenyCode::GrantExpired, rule, Some(grant(first_active)));
        };
        let Some(first_with_basis) = with_basis().next() else {
            return deny(
                DenyCode::BasisNotAllowed,
                "call basis is not a legal basis of any grant in force for consumer and service",
                Some(grant(first_in_force)),
            );
        };
        let Some(allowed) =
            with_basis().find(|r| self.table.has_purpose(r, request.reason, &self.grants))
        else {
            return deny(
                DenyCode::PurposeNotAllowed,
                "call reason is not a purpose of the grants with this legal basis",
                Some(grant(first_with_basis)),
            );
        };
        let grant = grant(allowed);
        if request.service.subject_required && !request.subject_present {
            return deny(
                DenyCode::SubjectRequired,
                "service requires the MConnect-Subject header",
                Some(grant),
            );
        }
        Decision::Allow(grant)
    }

    /// The grants of one consumer, revoked ones included, by id.
    pub fn grants_of<'a>(&'a self, consumer: &'a str) -> impl Iterator<Item = &'a Grant> + 'a {
        self.grants
            .iter()
            .filter(move |grant| grant.consumer == consumer)
    }

    /// Every grant, revoked ones included, by id.
    pub fn grants(&self) -> impl Iterator<Item = &Grant> {
        self.grants.iter()
    }

    /// The grant with this id.
    pub fn grant(&self, id: &str) -> Option<&Grant> {
        self.grants
            .binary_search_by(|grant| grant.id.as_str().cmp(id))
            .ok()
            .map(|i| &self.grants[i])
    }

    /// Number of grants, revoked ones included.
    pub fn len(&self) -> usize {
        self.grants.len()
    }

    /// Whether there are no grants (everything is denied).
    pub fn is_empty(&self) -> bool {
        self.grants.is_empty()
    }
}

fn deny<'a>(code: DenyCode, rule: &'static str, grant: Option<&'a Grant>) -> Decision<'a> {
    Decision::Deny(Denial { code, rule, grant })
}

fn first(mut errors: Vec<RuleProblem>) -> RuleProblem {
    if errors.is_empty() {
        // Not reached: loaders only fail with at least one problem. Kept
        // total so no panic is possible.
        RuleProblem {
            file: PathBuf::new(),
            pointer: String::new(),
            reason: "policy could not be loaded".into(),
        }
    } else {
        errors.swap_remove(0)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(rename = "$schema", default)]
    _schema: Option<String>,
    grants: Vec<RawGrant>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGrant {
    id: String,
    consumer: String,
    services: Vec<String>,
    purposes: Vec<Purpose>,
    legal_bases: Vec<LegalBasis>,
    fields: BTreeMap<String, Vec<String>>,
    valid_from: String,
    #[serde(default)]
    valid_until: Option<String>,
    rate_limit: RawRateLimit,
    #[serde(default)]
    quota: Option<Quota>,
    status: GrantStatus,
    #[serde(default)]
    origin: Option<GrantOrigin>,
    #[serde(default)]
    controller_register_no: Option<String>,
    #[serde(default)]
    note: Option<String>,
    #[serde(default)]
    representation: Option<Representation>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRateLimit {
    requests: u32,
    per: RatePeriod,
    #[serde(default)]
    burst: Option<u32>,
}

fn build(
    files: Vec<JsonFile>,
    catalog: &Catalog,
    is_known_participant: &dyn Fn(&str) -> bool,
) -> Result<PolicyIndex, Vec<RuleProblem>> {
    let schema_error = |reason: String| {
        vec![RuleProblem {
            file: PathBuf::from("policies/schema/grants.schema.json"),
            pointer: String::new(),
            reason,
        }]
    };
    let schema: Value = serde_json::from_str(GRANTS_SCHEMA)
        .map_err(|e| schema_error(format!("embedded schema is not JSON: {e}")))?;
    let validator = catalog::compile_schema(&schema)
        .map_err(|e| schema_error(format!("embedded schema does not compile: {e}")))?;

    let mut problems = Vec::new();
    let mut paths: Vec<PathBuf> = Vec::with_capacity(files.len());
    // Each grant with where it was written (file number, index in the file),
    // for the duplicate check after sorting.
    let mut built: Vec<(Grant, usize, usize)> = Vec::new();
    let mut field_sets = FieldSetCache::default();
    for file in files {
        let file_number = paths.len();
        paths.push(file.path);
        let path = &paths[file_number];
        let schema_problems = catalog::schema_problems(&validator, path, &file.value);
        if !schema_problems.is_empty() {
            problems.extend(schema_problems);
            continue;
        }
        let raw: RawFile = match serde_json::from_value(file.value) {
            Ok(raw) => raw,
            Err(e) => {
                problems.push(RuleProblem::new(path, "", e.to_string()));
                continue;
            }
        };
        built.reserve(raw.grants.len());
        for (index, raw_grant) in raw.grants.into_iter().enumerate() {
            let context = GrantContext {
                file: path,
                index,
                catalog,
                is_known_participant,
            };
            if let Some(grant) = build_grant(raw_grant, &context, &mut field_sets, &mut problems) {
                built.push((grant, file_number, index));
            }
        }
    }

    // Sorting by id (then by place) puts duplicates side by side, the first
    // written first: no map of every id is needed to find them.
    built.sort_by(|a, b| (a.0.id.as_str(), a.1, a.2).cmp(&(b.0.id.as_str(), b.1, b.2)));
    for pair in built.windows(2) {
        let [(first, first_file, _), (again, file, index)] = pair else {
            continue;
        };
        if first.id == again.id {
            problems.push(RuleProblem::new(
                &paths[*file],
                format!("/grants/{index}/id"),
                format!(
                    "grant id {:?} is already used in {}",
                    again.id,
                    paths[*first_file].display()
                ),
            ));
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let grants: Vec<Grant> = built.into_iter().map(|(grant, _, _)| grant).collect();
    // Revoked grants stay listable but never enter the table, so they behave
    // exactly as no grant at all.
    let table = DecisionTable::build(&grants).map_err(|index::TooLarge| {
        vec![RuleProblem {
            file: PathBuf::new(),
            pointer: String::new(),
            reason: "too many grants to index (over 4 billion rules or names, or 4 GiB of \
                     consumer and service ids): load fewer grants"
                .into(),
        }]
    })?;
    Ok(PolicyIndex { grants, table })
}

/// Escapes a key for use in a JSON pointer (RFC 6901): service keys contain
/// `/`.
fn pointer_escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// Where a raw grant was read and what it is checked against.
struct GrantContext<'a> {
    file: &'a Path,
    /// Index of the grant in the file's `grants` array.
    index: usize,
    catalog: &'a Catalog,
    is_known_participant: &'a dyn Fn(&str) -> bool,
}

/// `/grants/{index}`, the pointer of a grant in its file, written out only
/// when formatted into a problem.
#[derive(Clone, Copy)]
struct GrantPointer(usize);

impl fmt::Display for GrantPointer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "/grants/{}", self.0)
    }
}

/// Compiled field sets by service and field list. Grants of one kind allow
/// the same fields, so each distinct list is checked against the response
/// schema and compiled once, and the grants share it. Only lists that passed
/// every check are kept, so a hit needs no further checking.
#[derive(Default)]
struct FieldSetCache {
    by_service: HashMap<String, HashMap<Vec<String>, FieldSet>>,
}

impl FieldSetCache {
    fn get(&self, service: &str, paths: &[String]) -> Option<&FieldSet> {
        self.by_service.get(service)?.get(paths)
    }

    fn insert(&mut self, service: &str, paths: Vec<String>, set: FieldSet) {
        self.by_service
            .entry(service.to_owned())
            .or_default()
            .insert(paths, set);
    }
}

fn build_grant(
    raw: RawGrant,
    context: &GrantContext<'_>,
    field_sets: &mut FieldSetCache,
    problems: &mut Vec<RuleProblem>,
) -> Option<Grant> {
    let GrantContext {
        file,
        index,
        catalog,
        is_known_participant,
    } = *context;
    let before = problems.len();
    // Pointers are formatted only when there is a problem to report: the
    // common case, a valid grant, builds none.
    let at = GrantPointer(index);
    let mut problem =
        |pointer: String, reason: String| problems.push(RuleProblem::new(file, &pointer, reason));

    if !is_known_participant(&raw.consumer) {
        problem(
            format!("{at}/consumer"),
            format!("unknown participant {:?}", raw.consumer),
        );
    }
    for (j, key) in raw.services.iter().enumerate() {
        if catalog.service_by_key(key).is_none() {
            problem(
                format!("{at}/services/{j}"),
                format!("unknown service {key:?}: not in the catalog"),
            );
        }
    }
    for key in raw
        .services
        .iter()
        .filter(|key| !raw.fields.contains_key(*key))
    {
        problem(
            format!("{at}/fields"),
            format!("no field list for service {key:?}"),
        );
    }
    let mut fields = BTreeMap::new();
    for (key, paths) in raw.fields {
        let pointer = || format!("{at}/fields/{}", pointer_escape(&key));
        if !raw.services.contains(&key) {
            problem(
                pointer(),
                format!("{key:?} is not one of the grant's services"),
            );
            continue;
        }
        if let Some(set) = field_sets.get(&key, &paths) {
            fields.insert(key, set.clone());
            continue;
        }
        let Some(service) = catalog.service_by_key(&key) else {
            continue; // already reported under /services
        };
        let mut all_exist = true;
        for (k, path) in paths.iter().enumerate() {
            if !catalog::paths::schema_has_path(&service.response_schema, path) {
                all_exist = false;
                problem(
                    format!("{}/{k}", pointer()),
                    format!("{path:?} is not a field of the response of {key}"),
                );
            }
        }
        match FieldSet::new(paths.iter().map(String::as_str)) {
            Ok(set) => {
                if all_exist {
                    field_sets.insert(&key, paths, set.clone());
                }
                fields.insert(key, set);
            }
            Err(reason) => problem(pointer(), reason),
        }
    }
    if let Some(duplicate) = first_duplicate(raw.legal_bases.iter().map(|b| b.id.as_str())) {
        problem(
            format!("{at}/legal_bases"),
            format!("legal basis {duplicate:?} is listed twice"),
        );
    }
    if let Some(duplicate) = first_duplicate(raw.purposes.iter().map(|p| p.code.as_str())) {
        problem(
            format!("{at}/purposes"),
            format!("purpose {duplicate:?} is listed twice"),
        );
    }
    let valid_from = parse_instant(&raw.valid_from, false);
    if valid_from.is_none() {
        problem(
            format!("{at}/valid_from"),
            "not a date (YYYY-MM-DD) or RFC 3339 date-time".into(),
        );
    }
    let valid_until = match &raw.valid_until {
        None => Some(None),
        Some(text) => match parse_instant(text, true) {
            Some(until) => Some(Some(until)),
            None => {
                problem(
                    format!("{at}/valid_until"),
                    "not a date (YYYY-MM-DD) or RFC 3339 date-time".into(),
                );
                None
            }
        },
    };
    if let (Some(from), Some(Some(until))) = (valid_from, valid_until)
        && until <= from
    {
        problem(
            format!("{at}/valid_until"),
            "validity ends before it starts".into(),
        );
    }
    if raw.rate_limit.requests == 0 || raw.rate_limit.burst == Some(0) {
        problem(
            format!("{at}/rate_limit"),
            "requests and burst must be at least 1".into(),
        );
    }
    if raw.rate_limit.requests > 1_000_000 {
        problem(
            format!("{at}/rate_limit/requests"),
            "at most 1000000 requests per period".into(),
        );
    }

    if problems.len() > before {
        return None;
    }
    Some(Grant {
        id: raw.id,
        consumer: raw.consumer,
        services: raw.services,
        purposes: raw.purposes,
        legal_bases: raw.legal_bases,
        fields,
        valid_from: valid_from?,
        valid_until: valid_until?,
        rate_limit: RateLimit {
            requests: raw.rate_limit.requests,
            per: raw.rate_limit.per,
            burst: raw.rate_limit.burst.unwrap_or(raw.rate_limit.requests),
        },
        quota: raw.quota,
        status: raw.status,
        origin: raw.origin.unwrap_or(GrantOrigin::File),
        controller_register_no: raw.controller_register_no,
        note: raw.note,
        representation: raw.representation,
    })
}

/// The first item that appeared before. Quadratic, but the lists are a
/// grant's handful of purposes or legal bases, where comparing beats
/// allocating a set for each of 100k grants.
fn first_duplicate<'a>(items: impl Iterator<Item = &'a str> + Clone) -> Option<&'a str> {
    items
        .clone()
        .enumerate()
        .find(|(i, item)| items.clone().take(*i).any(|earlier| earlier == *item))
        .map(|(_, item)| item)
}

/// Parses a grant date: `YYYY-MM-DD` (a whole UTC day: its start, or with
/// `end_of_day` the start of the next day, so a `valid_until` date is
/// inclusive) or an RFC 3339 date-time (exact instant). Returns Unix seconds.
///
/// Written by hand because the `time` crate's parsers need its `parsing`
/// feature, which the broker does not otherwise enable.
pub(crate) fn parse_instant(text: &str, end_of_day: bool) -> Option<i64> {
    let bytes = text.as_bytes();
    let number = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = text.get(range)?;
        if part.bytes().all(|b| b.is_ascii_digit()) {
            part.parse().ok()
        } else {
            None
        }
    };
    if bytes.len() < 10 || bytes[4] != b'-' || bytes[7] != b'-' {
        return None;
    }
    let year = i32::try_from(number(0..4)?).ok()?;
    let month = time::Month::try_from(u8::try_from(number(5..7)?).ok()?).ok()?;
    let day = u8::try_from(number(8..10)?).ok()?;
    let date = time::Date::from_calendar_date(year, month, day).ok()?;
    let midnight = date.midnight().assume_utc().unix_timestamp();
    if bytes.len() == 10 {
        return Some(if end_of_day {
            midnight + 86_400
        } else {
            midnight
        });
    }
    // RFC 3339: T HH:MM:SS [.frac] (Z | ±HH:MM)
    if !matches!(bytes[10], b'T' | b't')
        || bytes.len() < 20
        || bytes[13] != b':'
        || bytes[16] != b':'
    {
        return None;
    }
    let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut rest = &text[19..];
    if let Some(fraction) = rest.strip_prefix('.') {
        let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        rest = &fraction[digits..];
    }
    let offset = match rest.as_bytes() {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let digit = |b: &u8| b.is_ascii_digit().then(|| i64::from(b - b'0'));
            let minutes = (digit(h1)? * 10 + digit(h2)?) * 60 + digit(m1)? * 10 + digit(m2)?;
            if *sign == b'+' {
                minutes * 60
            } else {
                -minutes * 60
            }
        }
        _ => return None,
    };
    Some(midnight + hour * 3600 + minute * 60 + second - offset)
}
