//! The semantic catalog: which registers exist on the bus, which services they
//! offer, under which legal acts, and the JSON Schemas of each service's
//! request and response (Law 142/2018 art. 10; PROTOCOL.md sections 1 and 5).
//!
//! The catalog is read from a directory with one JSON file per register (files
//! under `schema/` are skipped), each validated against the register schema
//! embedded from `catalog/schema/register.schema.json`. Loading is all or
//! nothing: a single bad file refuses the whole directory, so the caller keeps
//! the version it already serves.
//!
//! Invariants:
//! - A [`Catalog`] is immutable once built; reloading builds a new one.
//! - Every request and response schema is compiled exactly once, at load, with
//!   remote `$ref` fetching disabled (jsonschema without its `resolve-*`
//!   features): validation on the exchange path never does I/O.
//! - Schema violations name the JSON pointer of the offending value but never
//!   echo the value itself, so personal data does not leak into problem
//!   details or logs.

mod dcat;
mod files;
pub mod params;
pub(crate) mod paths;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

pub use crate::rules::RuleProblem;
pub use dcat::to_dcat_ap;
pub(crate) use files::{JsonFile, read_json_dir as files_in};

/// The register schema every catalog file must satisfy, embedded so that the
/// rules enforced are those the broker was built with, not a file an operator
/// might edit alongside the data.
const REGISTER_SCHEMA: &str = include_str!("../../catalog/schema/register.schema.json");

/// The loaded, validated catalog: registers and their services.
#[derive(Debug)]
pub struct Catalog {
    registers: Vec<Register>,
    /// Every service, sorted by key so listings are stable.
    services: Vec<Arc<Service>>,
    /// provider → code → service. Two levels so that a lookup by `&str` pair
    /// needs no joined key and therefore no allocation.
    by_key: HashMap<String, HashMap<String, Arc<Service>>>,
}

/// One register or information system, as catalogued.
#[derive(Debug, Clone)]
pub struct Register {
    /// Stable identifier of the register (the semantic asset id).
    pub id: String,
    /// Name in ro, ru and en.
    pub name: Text,
    /// Description in ro, ru and en.
    pub description: Text,
    /// Organisation that owns (controls) the register.
    pub owner: Organisation,
    /// Participant id of the provider system answering for this register.
    pub provider: String,
    /// Who to contact about the register.
    pub contact: Contact,
    /// Legal acts that establish the register and regulate access to it.
    pub legal_acts: Vec<LegalAct>,
    /// The public task the register serves.
    pub public_task: Text,
    /// Categories of personal data held (free codes such as `identity`).
    pub personal_data_categories: Vec<String>,
    /// Keys (`provider/code`) of the register's services, in file order.
    pub services: Vec<String>,
    /// The file the register was read from.
    pub file: PathBuf,
}

/// A text in the three languages of the catalog.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Text {
    /// Romanian.
    pub ro: String,
    /// Russian.
    pub ru: String,
    /// English.
    pub en: String,
}

impl Text {
    /// Whether any language version contains `needle`, ignoring case and
    /// diacritics (see [`fold`]).
    pub fn contains_ignore_case(&self, needle: &str) -> bool {
        let needle = fold(needle);
        [&self.ro, &self.ru, &self.en]
            .iter()
            .any(|text| fold(text).contains(&needle))
    }
}

/// Folds text for search: lowercase, Romanian letters with diacritics to
/// their base letter and Russian `ё` to `е`. People type `sanatate` for
/// `sănătate`, and Moldovan texts mix the comma-below `ș ț` with the older
/// cedilla `ş ţ`, so an exact match would miss most of what users look for.
pub fn fold(text: &str) -> String {
    text.chars()
        .flat_map(char::to_lowercase)
        .map(|c| match c {
            'ă' | 'â' => 'a',
            'î' => 'i',
            'ș' | 'ş' => 's',
            'ț' | 'ţ' => 't',
            'ё' => 'е',
            other => other,
        })
        .collect()
}

/// An organisation identified by its IDNO.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Organisation {
    /// IDNO (13 digits, control digit checked at load).
    pub idno: String,
    /// Name in ro, ru and en.
    pub name: Text,
}

/// A contact point for a register.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Contact {
    /// Department or person.
    pub name: String,
    /// E-mail address.
    pub email: String,
    /// Phone number in international form.
    #[serde(default)]
    pub phone: Option<String>,
    /// Web page.
    #[serde(default)]
    pub url: Option<String>,
}

/// A legal act (or one provision of it) that establishes a register.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LegalAct {
    /// Stable id such as `md-law-142-2018`.
    pub id: String,
    /// Title in ro, ru and en.
    pub title: Text,
    /// Article, paragraph or chapter referred to.
    pub article: String,
    /// Link to the official text (legis.md), when known.
    #[serde(default)]
    pub link: Option<String>,
}

/// Lifecycle status of a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Lifecycle {
    /// Described but not yet callable.
    Draft,
    /// In service.
    Active,
    /// Still callable; consumers should move to its successor.
    Deprecated,
    /// No longer callable.
    Retired,
}

impl Lifecycle {
    /// The lowercase name used in catalog files and the admin API.
    pub fn as_str(self) -> &'static str {
        match self {
            Lifecycle::Draft => "draft",
            Lifecycle::Active => "active",
            Lifecycle::Deprecated => "deprecated",
            Lifecycle::Retired => "retired",
        }
    }

    /// Parses the lowercase name.
    pub fn parse(text: &str) -> Option<Lifecycle> {
        match text {
            "draft" => Some(Lifecycle::Draft),
            "active" => Some(Lifecycle::Active),
            "deprecated" => Some(Lifecycle::Deprecated),
            "retired" => Some(Lifecycle::Retired),
            _ => None,
        }
    }
}

/// Personal-data classification of a service or data element (Law 133/2011).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PersonalData {
    /// No personal data.
    None,
    /// Personal data.
    Personal,
    /// Special categories of personal data (Law 133/2011 art. 6).
    Special,
}

impl PersonalData {
    /// The lowercase name used in catalog files and the admin API.
    pub fn as_str(self) -> &'static str {
        match self {
            PersonalData::None => "none",
            PersonalData::Personal => "personal",
            PersonalData::Special => "special",
        }
    }

    /// Parses the lowercase name.
    pub fn parse(text: &str) -> Option<PersonalData> {
        match text {
            "none" => Some(PersonalData::None),
            "personal" => Some(PersonalData::Personal),
            "special" => Some(PersonalData::Special),
            _ => None,
        }
    }
}

/// A data element of a service's response, with its meaning.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataElement {
    /// Field path, as in grants (`address.locality`, `debts[].amount_mdl`).
    pub path: String,
    /// What the element means, in ro, ru and en.
    pub meaning: Text,
    /// Classification of this element when it differs from the service's.
    #[serde(default)]
    pub personal_data: Option<PersonalData>,
}

/// A query parameter a service takes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryParameter {
    /// Parameter name.
    pub name: String,
    /// Whether the provider needs it.
    pub required: bool,
    /// The format its value must have; the broker checks it before forwarding.
    #[serde(default)]
    pub format: params::ParamFormat,
    /// A value that works in the sandbox (what the `try` list sends).
    #[serde(default)]
    pub example: Option<String>,
    /// What the parameter means.
    pub meaning: Text,
}

/// One catalogued service, `{provider}/{code}`, with its compiled schemas.
pub struct Service {
    /// Provider participant id.
    pub provider: String,
    /// Service code, unique within the provider.
    pub code: String,
    /// `provider/code`, the key grants and audit records use.
    pub key: String,
    /// Semantic version of the service contract.
    pub version: String,
    /// Lifecycle status.
    pub status: Lifecycle,
    /// Id of the register the service belongs to.
    pub register: String,
    /// Name in ro, ru and en.
    pub name: Text,
    /// Description in ro, ru and en.
    pub description: Text,
    /// HTTP method the provider expects.
    pub method: http::Method,
    /// Provider-side path, appended to the provider's registered endpoint.
    pub path: String,
    /// Query parameters the provider takes.
    pub query: Vec<QueryParameter>,
    /// Whether calls must carry `MConnect-Subject`.
    pub subject_required: bool,
    /// Where a request holds the ids of the people it asks about; the
    /// `MConnect-Subject` header must be one of them, and all are audit subjects.
    pub subject_ids: Vec<params::SubjectLocation>,
    /// The body locations of `subject_ids`, split once at load.
    pub(crate) subject_pointers: Vec<Vec<params::Segment>>,
    /// Personal-data classification of the service as a whole.
    pub personal_data: PersonalData,
    /// How long the broker waits for the provider.
    pub timeout: Duration,
    /// Largest request body accepted, in bytes.
    pub body_limit: usize,
    /// Meaning of the response's data elements.
    pub data_elements: Vec<DataElement>,
    /// The request body schema as written, if the service takes a body.
    pub request_schema: Option<Value>,
    /// The response body schema as written.
    pub response_schema: Value,
    /// Opt-in storage of this service's request and response bodies in the
    /// audit log (encrypted, with this retention); `None` stores none.
    pub store_bodies: Option<StoreBodies>,
    request_validator: Option<jsonschema::Validator>,
    response_validator: jsonschema::Validator,
}

impl fmt::Debug for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The compiled validators are large and say nothing useful in a log.
        f.debug_struct("Service")
            .field("key", &self.key)
            .field("version", &self.version)
            .field("status", &self.status)
            .field("method", &self.method)
            .field("path", &self.path)
            .field("subject_required", &self.subject_required)
            .finish_non_exhaustive()
    }
}

/// A service's opt-in to body storage (`"store_bodies": {"retention_days": N}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreBodies {
    /// Days the bodies are kept before the audit log's retention drops them
    /// (1 to 36500, checked by the register schema).
    pub retention_days: u32,
}

impl StoreBodies {
    /// The retention as a duration.
    pub fn retention(&self) -> Duration {
        Duration::from_secs(u64::from(self.retention_days) * 24 * 3600)
    }
}

/// Where a body broke its schema: a JSON pointer into the body and the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("at {}: {reason}", display_pointer(pointer))]
pub struct SchemaViolation {
    /// JSON pointer (RFC 6901) of the offending value; empty for the root.
    pub pointer: String,
    /// What is wrong, without the value itself.
    pub reason: String,
}

/// What `mconnect catalog check` reports for a valid directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogSummary {
    /// Files read.
    pub files: Vec<PathBuf>,
    /// Number of registers.
    pub registers: usize,
    /// Number of services, by lifecycle status.
    pub services: BTreeMap<&'static str, usize>,
}

impl fmt::Display for CatalogSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let total: usize = self.services.values().sum();
        write!(
            f,
            "{} files, {} registers, {} services",
            self.files.len(),
            self.registers,
            total
        )?;
        let mut first = true;
        for (status, count) in &self.services {
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

/// Checks a catalog directory and reports every problem found, for
/// `mconnect catalog check DIR` (which exits non-zero when this is `Err`).
pub fn check_dir(dir: &Path) -> Result<CatalogSummary, Vec<RuleProblem>> {
    let (catalog, files) = load(dir)?;
    let mut services = BTreeMap::new();
    for service in catalog.services() {
        *services.entry(service.status.as_str()).or_insert(0) += 1;
    }
    Ok(CatalogSummary {
        files,
        registers: catalog.registers.len(),
        services,
    })
}

impl Catalog {
    /// Loads every `*.json` file in `dir` (not recursing, so `schema/` is
    /// skipped), validates each against the register schema, compiles every
    /// service schema, and checks that register ids and service keys are
    /// unique. On failure returns the first problem; use [`check_dir`] to get
    /// them all.
    pub fn load_dir(dir: &Path) -> Result<Catalog, RuleProblem> {
        load(dir)
            .map(|(catalog, _)| catalog)
            .map_err(|mut problems| problems.swap_remove(0))
    }

    /// Like [`Catalog::load_dir`], but reporting every problem found.
    pub fn load_dir_all(dir: &Path) -> Result<Catalog, Vec<RuleProblem>> {
        load(dir).map(|(catalog, _)| catalog)
    }

    /// Builds a catalog from documents already in memory (tests, embedded
    /// catalogs). Each document is named by `file` in errors.
    pub fn from_documents(
        documents: impl IntoIterator<Item = (PathBuf, Value)>,
    ) -> Result<Catalog, Vec<RuleProblem>> {
        let files = documents
            .into_iter()
            .map(|(path, value)| JsonFile { path, value })
            .collect();
        build(files)
    }

    /// The service `provider/code`, whatever its lifecycle status: the
    /// exchange refuses non-callable services itself (404
    /// `catalog.unknown_service`). Allocation-free.
    pub fn service(&self, provider: &str, code: &str) -> Option<&Arc<Service>> {
        self.by_key.get(provider)?.get(code)
    }

    /// The service with key `provider/code`.
    pub fn service_by_key(&self, key: &str) -> Option<&Arc<Service>> {
        let (provider, code) = key.split_once('/')?;
        self.service(provider, code)
    }

    /// Every service, sorted by key.
    pub fn services(&self) -> impl Iterator<Item = &Arc<Service>> {
        self.services.iter()
    }

    /// Every register, sorted by id.
    pub fn registers(&self) -> impl Iterator<Item = &Register> {
        self.registers.iter()
    }

    /// The register with this id.
    pub fn register(&self, id: &str) -> Option<&Register> {
        self.registers.iter().find(|register| register.id == id)
    }

    /// Services matching a filter, for the admin API's service listing.
    pub fn search<'a>(
        &'a self,
        filter: &'a ServiceFilter<'a>,
    ) -> impl Iterator<Item = &'a Arc<Service>> {
        self.services
            .iter()
            .filter(move |service| filter.matches(service))
    }
}

/// A filter over services for the admin listing. Empty fields match anything.
#[derive(Debug, Clone, Default)]
pub struct ServiceFilter<'a> {
    /// Only this provider's services.
    pub provider: Option<&'a str>,
    /// Only services in this lifecycle status.
    pub status: Option<Lifecycle>,
    /// Only services with this personal-data class.
    pub personal_data: Option<PersonalData>,
    /// Text searched, ignoring case and diacritics, in the key, names and
    /// descriptions in ro, ru and en.
    pub text: Option<&'a str>,
}

impl ServiceFilter<'_> {
    /// Whether `service` passes the filter.
    pub fn matches(&self, service: &Service) -> bool {
        self.provider.is_none_or(|p| service.provider == p)
            && self.status.is_none_or(|s| service.status == s)
            && self
                .personal_data
                .is_none_or(|c| service.personal_data == c)
            && self.text.is_none_or(|text| {
                service.key.contains(&fold(text))
                    || service.name.contains_ignore_case(text)
                    || service.description.contains_ignore_case(text)
            })
    }
}

impl Service {
    /// Whether consumers may call the service: active and deprecated ones are
    /// callable, draft and retired ones are not.
    pub fn is_callable(&self) -> bool {
        matches!(self.status, Lifecycle::Active | Lifecycle::Deprecated)
    }

    /// Whether the service takes a request body (it has a request schema).
    pub fn accepts_body(&self) -> bool {
        self.request_validator.is_some()
    }

    /// The people a call asks about (PROTOCOL.md section 4): every id in an
    /// id-typed query parameter and at the service's body locations, each
    /// once, in order of appearance; and the ids `MConnect-Subject` must be
    /// among. `query` comes from [`params::parse_query`] for this service.
    pub fn subjects_of(
        &self,
        query: &[params::QueryValue<'_>],
        body: Option<&Value>,
    ) -> Result<params::CallSubjects, params::IdProblem> {
        let mut declared = Vec::new();
        for location in &self.subject_ids {
            if let params::SubjectLocation::Query(name) = location {
                declared.extend(
                    query
                        .iter()
                        .filter(|v| &v.parameter.name == name)
                        .map(|v| v.value.clone()),
                );
            }
        }
        if let Some(body) = body {
            for pointer in &self.subject_pointers {
                params::ids_at(body, pointer, &mut String::new(), &mut declared)?;
            }
        }
        let typed: Vec<String> = query
            .iter()
            .filter(|v| v.parameter.format.is_person_id())
            .map(|v| v.value.clone())
            .collect();
        let bound = if !self.subject_ids.is_empty() {
            Some(declared.clone())
        } else if self.query.iter().any(|q| q.format.is_person_id()) {
            Some(typed.clone())
        } else {
            None
        };
        let mut ids: Vec<String> = Vec::with_capacity(declared.len() + typed.len());
        for id in typed.into_iter().chain(declared) {
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        Ok(params::CallSubjects { ids, bound })
    }
    /// Validates a request body against the request schema (422
    /// `schema.request_invalid`). A service without a request schema takes no
    /// body; the exchange decides what to do with one, so this returns `Ok`.
    pub fn validate_request(&self, body: &Value) -> Result<(), SchemaViolation> {
        match &self.request_validator {
            Some(validator) => first_violation(validator, body),
            None => Ok(()),
        }
    }

    /// Validates a successful provider response body against the response
    /// schema (502 `schema.response_invalid`). Error bodies (status >= 400)
    /// are problem+json and are not checked.
    pub fn validate_response(&self, body: &Value) -> Result<(), SchemaViolation> {
        first_violation(&self.response_validator, body)
    }
}

/// Formats a JSON pointer for messages: the root pointer is empty, which
/// reads badly, so it is shown as `(root)`.
fn display_pointer(pointer: &str) -> &str {
    if pointer.is_empty() {
        "(root)"
    } else {
        pointer
    }
}

/// Returns the first schema error, masked so the offending value (possibly
/// personal data) is not repeated in the reason.
fn first_violation(validator: &jsonschema::Validator, body: &Value) -> Result<(), SchemaViolation> {
    use jsonschema::error::ValidationErrorKind;
    // Most bodies are valid: `is_valid` walks them without building errors
    // and their locations (most of `iter_errors`' cost on a valid body), and
    // errors are only collected for a body that has one (issue 17).
    if validator.is_valid(body) {
        return Ok(());
    }
    let Some(error) = validator.iter_errors(body).next() else {
        return Ok(());
    };
    let reason = match error.kind() {
        // Masking hides values but still quotes unexpected property names,
        // and a name can itself be personal data (an object keyed by IDNP).
        ValidationErrorKind::AdditionalProperties { unexpected }
        | ValidationErrorKind::UnevaluatedProperties { unexpected } => {
            let count = unexpected.len();
            let noun = if count == 1 {
                "property is"
            } else {
                "properties are"
            };
            format!("{count} {noun} not allowed by the schema")
        }
        _ => error.masked().to_string(),
    };
    Err(SchemaViolation {
        pointer: error.instance_path().as_str().to_owned(),
        reason,
    })
}

/// Compiles a schema the way every catalog and policy schema is compiled:
/// draft 2020-12, formats checked (dates matter in our registers), and only
/// the default offline retriever, so a `$ref` to anything but the document
/// itself fails at load instead of fetching at run time.
pub(crate) fn compile_schema(schema: &Value) -> Result<jsonschema::Validator, String> {
    jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(schema)
        .map_err(|error| error.to_string())
}

/// Validates `value` against `validator`, collecting every violation as a
/// problem in `file`. Used for the repository's own file schemas, where the
/// operator wants all problems at once.
pub(crate) fn schema_problems(
    validator: &jsonschema::Validator,
    file: &Path,
    value: &Value,
) -> Vec<RuleProblem> {
    // `is_valid` stops at the first failure and builds no error paths, so it
    // is several times faster than collecting errors; valid files are the
    // rule, so errors are collected only for the rare invalid one.
    if validator.is_valid(value) {
        return Vec::new();
    }
    validator
        .iter_errors(value)
        .map(|error| RuleProblem {
            file: file.to_path_buf(),
            pointer: error.instance_path().as_str().to_owned(),
            reason: error.to_string(),
        })
        .collect()
}

/// The raw shape of a catalog file, read after schema validation.
#[derive(Deserialize)]
struct RawRegister {
    #[serde(rename = "$schema", default)]
    _schema: Option<String>,
    id: String,
    name: Text,
    description: Text,
    owner: Organisation,
    provider: String,
    contact: Contact,
    legal_acts: Vec<LegalAct>,
    public_task: Text,
    personal_data_categories: Vec<String>,
    services: Vec<RawService>,
}

#[derive(Deserialize)]
struct RawService {
    code: String,
    version: String,
    status: Lifecycle,
    name: Text,
    description: Text,
    method: String,
    path: String,
    #[serde(default)]
    query: Vec<QueryParameter>,
    subject_required: bool,
    #[serde(default)]
    subject_ids: Vec<params::SubjectLocation>,
    personal_data: PersonalData,
    timeout_ms: u64,
    body_limit: usize,
    #[serde(default)]
    request_schema: Option<Value>,
    response_schema: Value,
    data_elements: Vec<DataElement>,
    #[serde(default)]
    store_bodies: Option<StoreBodies>,
}

fn load(dir: &Path) -> Result<(Catalog, Vec<PathBuf>), Vec<RuleProblem>> {
    let files = files::read_json_dir(dir)?;
    let paths = files.iter().map(|file| file.path.clone()).collect();
    build(files).map(|catalog| (catalog, paths))
}

fn build(files: Vec<JsonFile>) -> Result<Catalog, Vec<RuleProblem>> {
    let meta_schema: Value = serde_json::from_str(REGISTER_SCHEMA).map_err(|e| {
        vec![RuleProblem {
            file: PathBuf::from("catalog/schema/register.schema.json"),
            pointer: String::new(),
            reason: format!("embedded schema is not JSON: {e}"),
        }]
    })?;
    let meta = compile_schema(&meta_schema).map_err(|reason| {
        vec![RuleProblem {
            file: PathBuf::from("catalog/schema/register.schema.json"),
            pointer: String::new(),
            reason: format!("embedded schema does not compile: {reason}"),
        }]
    })?;

    let mut problems = Vec::new();
    let mut registers: Vec<Register> = Vec::new();
    let mut services: Vec<Arc<Service>> = Vec::new();
    let mut by_key: HashMap<String, HashMap<String, Arc<Service>>> = HashMap::new();
    let mut register_files: HashMap<String, PathBuf> = HashMap::new();

    for file in files {
        let schema_errors = schema_problems(&meta, &file.path, &file.value);
        if !schema_errors.is_empty() {
            problems.extend(schema_errors);
            continue;
        }
        let raw: RawRegister = match serde_json::from_value(file.value) {
            Ok(raw) => raw,
            Err(e) => {
                problems.push(RuleProblem::new(&file.path, "", e.to_string()));
                continue;
            }
        };
        let Some((register, file_services)) = build_register(raw, &file.path, &mut problems) else {
            continue;
        };
        if let Some(previous) = register_files.get(&register.id) {
            problems.push(RuleProblem::new(
                &file.path,
                "/id",
                format!(
                    "register id {:?} is already used by {}",
                    register.id,
                    previous.display()
                ),
            ));
            continue;
        }
        register_files.insert(register.id.clone(), file.path.clone());
        for (index, service) in file_services.into_iter().enumerate() {
            let codes = by_key.entry(service.provider.clone()).or_default();
            if codes.contains_key(&service.code) {
                problems.push(RuleProblem::new(
                    &file.path,
                    format!("/services/{index}/code"),
                    format!("service {} is catalogued twice", service.key),
                ));
                continue;
            }
            let service = Arc::new(service);
            codes.insert(service.code.clone(), Arc::clone(&service));
            services.push(service);
        }
        registers.push(register);
    }

    if !problems.is_empty() {
        return Err(problems);
    }
    registers.sort_by(|a, b| a.id.cmp(&b.id));
    services.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(Catalog {
        registers,
        services,
        by_key,
    })
}

/// Turns a schema-valid raw register into a register and its services,
/// checking what the schema cannot: the IDNO control digit, the provider id,
/// unique service codes, compilable service schemas and data-element paths
/// that exist in the response schema.
fn build_register(
    raw: RawRegister,
    file: &Path,
    problems: &mut Vec<RuleProblem>,
) -> Option<(Register, Vec<Service>)> {
    let before = problems.len();
    if !crate::ids::is_valid_idno(&raw.owner.idno) {
        problems.push(RuleProblem::new(
            file,
            "/owner/idno",
            "not a valid IDNO (control digit)",
        ));
    }
    if !crate::ids::is_valid_participant_id(&raw.provider) {
        problems.push(RuleProblem::new(
            file,
            "/provider",
            "not a valid participant id",
        ));
    }
    let mut services = Vec::with_capacity(raw.services.len());
    for (index, s) in raw.services.into_iter().enumerate() {
        let at = |rest: &str| format!("/services/{index}{rest}");
        if services.iter().any(|other: &Service| other.code == s.code) {
            problems.push(RuleProblem::new(
                file,
                at("/code"),
                format!("duplicate service code {:?}", s.code),
            ));
            continue;
        }
        let method = match http::Method::from_bytes(s.method.as_bytes()) {
            Ok(method) => method,
            Err(_) => {
                problems.push(RuleProblem::new(file, at("/method"), "not an HTTP method"));
                continue;
            }
        };
        let request_validator = match &s.request_schema {
            Some(schema) => match compile_schema(schema) {
                Ok(validator) => Some(validator),
                Err(reason) => {
                    problems.push(RuleProblem::new(
                        file,
                        at("/request_schema"),
                        format!("schema does not compile: {reason}"),
                    ));
                    continue;
                }
            },
            None => None,
        };
        let response_validator = match compile_schema(&s.response_schema) {
            Ok(validator) => validator,
            Err(reason) => {
                problems.push(RuleProblem::new(
                    file,
                    at("/response_schema"),
                    format!("schema does not compile: {reason}"),
                ));
                continue;
            }
        };
        for (e, element) in s.data_elements.iter().enumerate() {
            if !paths::schema_has_path(&s.response_schema, &element.path) {
                problems.push(RuleProblem::new(
                    file,
                    at(&format!("/data_elements/{e}/path")),
                    format!("{:?} is not a field of the response schema", element.path),
                ));
            }
        }
        let mut names: Vec<&str> = s.query.iter().map(|q| q.name.as_str()).collect();
        names.sort_unstable();
        if names.windows(2).any(|w| w[0] == w[1]) {
            problems.push(RuleProblem::new(
                file,
                at("/query"),
                "duplicate query parameter",
            ));
        }
        let mut subject_pointers = Vec::new();
        for (i, location) in s.subject_ids.iter().enumerate() {
            let at_location = at(&format!("/subject_ids/{i}"));
            match location {
                params::SubjectLocation::Query(name) => {
                    if !s.query.iter().any(|q| &q.name == name && q.format.is_person_id()) {
                        problems.push(RuleProblem::new(
                            file,
                            &at_location,
                            format!("{name:?} is not a query parameter of format idnp, idno or idnp-or-idno"),
                        ));
                    }
                }
                params::SubjectLocation::Body(pointer) => match params::parse_pointer(pointer) {
                    Some(segments) if s.request_schema.is_some() => subject_pointers.push(segments),
                    Some(_) => problems.push(RuleProblem::new(
                        file,
                        &at_location,
                        "a body location needs a service that takes a body (request_schema)",
                    )),
                    None => problems.push(RuleProblem::new(
                        file,
                        &at_location,
                        format!("{pointer:?} is not a JSON pointer (RFC 6901, `*` for every array element)"),
                    )),
                },
            }
        }
        for (q, parameter) in s.query.iter().enumerate() {
            if let Some(example) = &parameter.example
                && !parameter.format.accepts(example)
            {
                problems.push(RuleProblem::new(
                    file,
                    at(&format!("/query/{q}/example")),
                    format!("example is not {}", parameter.format.describe()),
                ));
            }
        }
        services.push(Service {
            key: format!("{}/{}", raw.provider, s.code),
            provider: raw.provider.clone(),
            code: s.code,
            version: s.version,
            status: s.status,
            register: raw.id.clone(),
            name: s.name,
            description: s.description,
            method,
            path: s.path,
            query: s.query,
            subject_required: s.subject_required,
            subject_ids: s.subject_ids,
            subject_pointers,
            personal_data: s.personal_data,
            timeout: Duration::from_millis(s.timeout_ms),
            body_limit: s.body_limit,
            data_elements: s.data_elements,
            request_schema: s.request_schema,
            response_schema: s.response_schema,
            store_bodies: s.store_bodies,
            request_validator,
            response_validator,
        });
    }
    if problems.len() > before {
        return None;
    }
    let register = Register {
        services: services.iter().map(|s| s.key.clone()).collect(),
        id: raw.id,
        name: raw.name,
        description: raw.description,
        owner: raw.owner,
        provider: raw.provider,
        contact: raw.contact,
        legal_acts: raw.legal_acts,
        public_task: raw.public_task,
        personal_data_categories: raw.personal_data_categories,
        file: file.to_path_buf(),
    };
    Some((register, services))
}
