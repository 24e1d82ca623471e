//! The application: what an authority files to consume catalogued services,
//! and its validation against the embedded schema, the catalog and the
//! participant registry.
//!
//! Invariants:
//! - the schema is `policies/schema/application.schema.json`, embedded at
//!   build time and compiled once per process (no remote `$ref`: the
//!   compiler's offline retriever refuses them);
//! - an application is accepted only if the grants it would become load
//!   into a policy index (the same loader the broker runs on start), so an
//!   approval can never produce grants the broker refuses;
//! - every problem names a JSON pointer into the application and says what
//!   to fix; an unknown service is reported with its own stable code,
//!   `connect.unknown_service`, naming the service.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::catalog::{self, Catalog, PersonalData};
use crate::policy::{GrantStatus, PolicyIndex};
use crate::registry::RegistrySnapshot;

use super::grants::{RateLimitSpec, grant_value};

/// The application schema, embedded so the rules enforced are those the
/// broker was built with.
pub const APPLICATION_SCHEMA: &str = include_str!("../../policies/schema/application.schema.json");

/// An application for connection (the body of a submission).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Application {
    /// The schema reference editors use; ignored.
    #[serde(rename = "$schema", default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    /// The organisation and system asking.
    pub applicant: Applicant,
    /// The services asked for.
    pub services: Vec<RequestedService>,
    /// Number in the register of personal-data controllers (Law 133/2011),
    /// required when a requested service carries personal data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controller_register_no: Option<String>,
    /// Technical and legal contacts.
    pub contacts: Contacts,
    /// The period asked for.
    pub validity: Validity,
    /// The declaration on own responsibility.
    pub declaration: Declaration,
}

/// The applicant organisation and its consuming system.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Applicant {
    /// IDNO of the organisation.
    pub idno: String,
    /// Its official name.
    pub name: String,
    /// The participant id that will call (`MConnect-Client`).
    pub system: String,
    /// What the operator needs to register the system, when it is not yet
    /// a participant (absent: it must be one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registration: Option<Registration>,
}

/// The system of an applicant that is not yet on the bus, as it will be
/// registered on approval (role `consumer`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Registration {
    /// Its TLS client and signing certificate, PEM.
    pub certificate: String,
    /// Where it is reachable (https), for the operator's records; a
    /// consumer has no endpoint in the registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
}

/// One service asked for, with its legal basis, purpose and fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestedService {
    /// Catalog key, `provider/code`.
    pub service: String,
    /// Express references to legal norms; each `id` becomes a value of
    /// `MConnect-Call-Basis`.
    pub legal_bases: Vec<LegalNorm>,
    /// The purpose; its `code` becomes the value of `MConnect-Call-Reason`.
    pub purpose: StatedPurpose,
    /// How the data will be used.
    pub use_case: String,
    /// Response fields asked for.
    pub fields: Vec<String>,
}

/// An express reference to a legal norm.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LegalNorm {
    /// The id consumers send (`md-law-133-2008-art-8`).
    pub id: String,
    /// The act.
    pub act: String,
    /// Article, paragraph, letter.
    pub article: String,
    /// What the norm says.
    pub text: String,
    /// Link to the official text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
}

/// A purpose with its text in the three languages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatedPurpose {
    /// The code consumers send.
    pub code: String,
    /// Its meaning.
    pub text: Texts,
}

/// A text in Romanian, Russian and English.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Texts {
    /// Romanian.
    pub ro: String,
    /// Russian.
    pub ru: String,
    /// English.
    pub en: String,
}

/// The contacts of the applicant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Contacts {
    /// Who runs the consuming system.
    pub technical: Contact,
    /// Who answers for the legal side.
    pub legal: Contact,
}

/// A person to contact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Contact {
    /// Name.
    pub name: String,
    /// E-mail.
    pub email: String,
    /// Phone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
}

/// The period asked for: whole UTC days, `until` inclusive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Validity {
    /// First day.
    pub from: String,
    /// Last day; absent is open-ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
}

/// The declaration on own responsibility.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Declaration {
    /// Must be true.
    pub own_responsibility: bool,
    /// The declaration's wording, when the applicant gives it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// One thing wrong with an application.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("at {}: {reason}", if pointer.is_empty() { "(root)" } else { pointer })]
pub struct ApplicationProblem {
    /// Stable code: `connect.unknown_service`, `connect.application_invalid`
    /// or `request.malformed`.
    pub code: &'static str,
    /// JSON pointer into the application.
    pub pointer: String,
    /// What is wrong and what to fix.
    pub reason: String,
}

impl ApplicationProblem {
    fn new(code: &'static str, pointer: impl Into<String>, reason: impl Into<String>) -> Self {
        ApplicationProblem {
            code,
            pointer: pointer.into(),
            reason: reason.into(),
        }
    }
}

/// The code of a refusal made of `problems`: an unknown service is the most
/// specific, so it wins.
pub fn refusal_code(problems: &[ApplicationProblem]) -> &'static str {
    if problems.iter().any(|p| p.code == UNKNOWN_SERVICE) {
        UNKNOWN_SERVICE
    } else {
        problems.first().map_or(INVALID, |p| p.code)
    }
}

const UNKNOWN_SERVICE: &str = "connect.unknown_service";
const INVALID: &str = "connect.application_invalid";
/// At most this many schema problems are reported, so a garbage document
/// cannot make a huge answer.
const MAX_SCHEMA_PROBLEMS: usize = 20;

fn validator() -> Result<&'static jsonschema::Validator, String> {
    static VALIDATOR: OnceLock<Result<jsonschema::Validator, String>> = OnceLock::new();
    VALIDATOR
        .get_or_init(|| {
            let schema: Value = serde_json::from_str(APPLICATION_SCHEMA)
                .map_err(|e| format!("embedded application schema is not JSON: {e}"))?;
            catalog::compile_schema(&schema)
                .map_err(|e| format!("embedded application schema does not compile: {e}"))
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// What validation needs to know of the registry: which participants
/// exist, and the organisation (IDNO) of each. The broker asks its own
/// registry; the portal, which validates an application before it is
/// signed, asks the broker's participant list (`GET /v1/participants`) —
/// one validator either way.
pub trait Participants {
    /// The IDNO of participant `id`'s organisation, if it is registered.
    fn organisation_idno(&self, id: &str) -> Option<&str>;

    /// The participant a certificate (by fingerprint) is registered to,
    /// when the lister knows (the broker's registry does; the portal's
    /// participant list does not, and the broker checks again).
    fn certificate_owner(&self, _fingerprint: &str) -> Option<&str> {
        None
    }
}

impl Participants for RegistrySnapshot {
    fn organisation_idno(&self, id: &str) -> Option<&str> {
        self.get(id)
            .map(|entry| entry.participant.organisation.idno.as_str())
    }

    fn certificate_owner(&self, fingerprint: &str) -> Option<&str> {
        self.by_fingerprint(fingerprint)
            .map(|entry| entry.participant.id.as_str())
    }
}

impl<P: Participants + ?Sized> Participants for std::sync::Arc<P> {
    fn organisation_idno(&self, id: &str) -> Option<&str> {
        (**self).organisation_idno(id)
    }

    fn certificate_owner(&self, fingerprint: &str) -> Option<&str> {
        (**self).certificate_owner(fingerprint)
    }
}

/// Participant id → organisation IDNO, as the broker lists them.
impl Participants for std::collections::HashMap<String, String> {
    fn organisation_idno(&self, id: &str) -> Option<&str> {
        self.get(id).map(String::as_str)
    }
}

/// Parses and validates an application: JSON, schema, then the registry
/// (applicant system and organisation), the catalog (services, fields,
/// personal data), dates, and finally a trial build of the grants it would
/// become. Returns every problem found.
pub fn validate_application<P: Participants + ?Sized>(
    body: &[u8],
    catalog: &Catalog,
    registry: &P,
) -> Result<Application, Vec<ApplicationProblem>> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        vec![ApplicationProblem::new(
            "request.malformed",
            "",
            format!("the application is not JSON: {e}"),
        )]
    })?;
    let validator =
        validator().map_err(|reason| vec![ApplicationProblem::new(INVALID, "", reason)])?;
    let schema_problems: Vec<ApplicationProblem> = validator
        .iter_errors(&value)
        .take(MAX_SCHEMA_PROBLEMS)
        .map(|e| ApplicationProblem::new(INVALID, e.instance_path().as_str(), e.to_string()))
        .collect();
    if !schema_problems.is_empty() {
        // The schema cannot tell an unknown service from a mistyped one; a
        // well-formed key that is not catalogued is still reported below.
        return Err(schema_problems);
    }
    let application: Application = serde_json::from_value(value)
        .map_err(|e| vec![ApplicationProblem::new(INVALID, "", e.to_string())])?;
    let problems = cross_check(&application, catalog, registry);
    if problems.is_empty() {
        Ok(application)
    } else {
        Err(problems)
    }
}

fn cross_check<P: Participants + ?Sized>(
    application: &Application,
    catalog: &Catalog,
    registry: &P,
) -> Vec<ApplicationProblem> {
    let mut problems = Vec::new();
    let mut problem = |code: &'static str, pointer: String, reason: String| {
        problems.push(ApplicationProblem::new(code, pointer, reason));
    };
    let applicant = &application.applicant;
    if !crate::ids::is_valid_idno(&applicant.idno) {
        problem(
            INVALID,
            "/applicant/idno".into(),
            format!(
                "IDNO {} is not 13 digits with a valid control digit",
                applicant.idno
            ),
        );
    }
    match (
        registry.organisation_idno(&applicant.system),
        &applicant.registration,
    ) {
        (None, None) => problem(
            INVALID,
            "/applicant/system".into(),
            format!(
                "`{}` is not a registered participant: give applicant.registration (the system's certificate) so the operator can register it on approval",
                applicant.system
            ),
        ),
        (Some(_), Some(_)) => problem(
            INVALID,
            "/applicant/registration".into(),
            format!(
                "`{}` is already a registered participant: leave out applicant.registration and apply as that participant",
                applicant.system
            ),
        ),
        (Some(idno), None) if idno != applicant.idno => problem(
            INVALID,
            "/applicant/system".into(),
            format!(
                "participant `{}` belongs to IDNO {}, not to the applicant IDNO {}",
                applicant.system, idno, applicant.idno
            ),
        ),
        (Some(_), None) => {}
        (None, Some(registration)) => {
            for (pointer, reason) in
                registration_problems(&applicant.system, registration, registry)
            {
                problem(INVALID, pointer, reason);
            }
        }
    }

    let mut seen = HashSet::new();
    let mut personal = Vec::new();
    for (i, asked) in application.services.iter().enumerate() {
        let at = format!("/services/{i}");
        if !seen.insert(asked.service.as_str()) {
            problem(
                INVALID,
                format!("{at}/service"),
                format!(
                    "service {:?} is asked for twice; ask once with every legal basis",
                    asked.service
                ),
            );
            continue;
        }
        let Some(service) = catalog.service_by_key(&asked.service) else {
            problem(
                UNKNOWN_SERVICE,
                format!("{at}/service"),
                format!(
                    "unknown service {:?}: it is not in the semantic catalog; see GET /v1/services for the services you can ask for",
                    asked.service
                ),
            );
            continue;
        };
        if !service.is_callable() {
            problem(
                INVALID,
                format!("{at}/service"),
                format!(
                    "service {:?} is {} and cannot be asked for",
                    asked.service,
                    service.status.as_str()
                ),
            );
        }
        if service.personal_data != PersonalData::None {
            personal.push(asked.service.as_str());
        }
        for (k, path) in asked.fields.iter().enumerate() {
            if !catalog::paths::schema_has_path(&service.response_schema, path) {
                problem(
                    INVALID,
                    format!("{at}/fields/{k}"),
                    format!(
                        "{path:?} is not a field of the response of {}",
                        asked.service
                    ),
                );
            }
        }
        let mut bases = HashSet::new();
        for (k, basis) in asked.legal_bases.iter().enumerate() {
            if !bases.insert(basis.id.as_str()) {
                problem(
                    INVALID,
                    format!("{at}/legal_bases/{k}/id"),
                    format!("legal basis {:?} is listed twice", basis.id),
                );
            }
        }
    }
    if !personal.is_empty()
        && application
            .controller_register_no
            .as_deref()
            .is_none_or(|n| n.trim().is_empty())
    {
        problem(
            INVALID,
            "/controller_register_no".into(),
            format!(
                "{} carr{} personal data (the catalog says so): give your number in the register of personal-data controllers (Law 133/2011)",
                personal.join(", "),
                if personal.len() == 1 { "ies" } else { "y" }
            ),
        );
    }

    let from = crate::policy::parse_instant(&application.validity.from, false);
    if from.is_none() {
        problem(
            INVALID,
            "/validity/from".into(),
            "not a date (YYYY-MM-DD)".into(),
        );
    }
    if let Some(until) = &application.validity.until {
        match crate::policy::parse_instant(until, true) {
            None => problem(
                INVALID,
                "/validity/until".into(),
                "not a date (YYYY-MM-DD)".into(),
            ),
            Some(until) if from.is_some_and(|from| until <= from) => problem(
                INVALID,
                "/validity/until".into(),
                "validity ends before it starts".into(),
            ),
            Some(_) => {}
        }
    }
    if !application.declaration.own_responsibility {
        problem(
            INVALID,
            "/declaration/own_responsibility".into(),
            "the declaration on own responsibility must be true".into(),
        );
    }

    if problems.is_empty() {
        trial_build(application, catalog, registry, &mut problems);
    }
    problems
}

/// What is wrong with the registration of a system not yet on the bus,
/// as (pointer, reason): a system id the bus reserves, a certificate that
/// is unreadable or already another participant's, an endpoint that is not
/// an https URL with a host. Whether the certificate chains to the bus CA is
/// the broker's check on arrival ([`crate::registry::admit`]), which needs
/// its trust anchors.
fn registration_problems<P: Participants + ?Sized>(
    system: &str,
    registration: &Registration,
    registry: &P,
) -> Vec<(String, String)> {
    let mut problems = Vec::new();
    if !crate::ids::is_valid_participant_id(system) || RESERVED_IDS.contains(&system) {
        problems.push((
            "/applicant/system".to_string(),
            format!(
                "`{system}` cannot be a participant id: it must match [a-z0-9][a-z0-9-]{{0,62}} and not be one the bus reserves ({})",
                RESERVED_IDS.join(", ")
            ),
        ));
    }
    match crate::registry::registered_certificate(&registration.certificate) {
        Err(e) => problems.push((
            "/applicant/registration/certificate".to_string(),
            format!("the certificate cannot be used: {e}"),
        )),
        Ok(cert) => {
            if let Some(owner) = registry.certificate_owner(&cert.fingerprint) {
                problems.push((
                    "/applicant/registration/certificate".to_string(),
                    format!(
                        "certificate {} is already registered to participant `{owner}`: each system has its own certificate",
                        cert.fingerprint
                    ),
                ));
            }
        }
    }
    if let Some(endpoint) = &registration.endpoint {
        let ok = endpoint.starts_with("https://")
            && !endpoint.contains(['?', '#', '@', '\\'])
            && endpoint
                .parse::<http::Uri>()
                .is_ok_and(|u| u.host().is_some_and(|h| !h.is_empty()));
        if !ok {
            problems.push((
                "/applicant/registration/endpoint".to_string(),
                format!(
                    "endpoint `{endpoint}` must be an https:// URL with a host, and no credentials, query or fragment"
                ),
            ));
        }
    }
    problems
}

/// Participant ids no applicant may take: the broker's own services are
/// catalogued under `mconnect`, and the development PKI names the broker's
/// and the CA's files `broker` and `ca`.
const RESERVED_IDS: &[&str] = &[crate::exchange::internal::PROVIDER, "broker", "ca"];

/// Builds the grants the application would become and loads them as the
/// broker would, so that approval can never produce a grant the policy
/// loader refuses (a check this module does not repeat by hand).
fn trial_build<P: Participants + ?Sized>(
    application: &Application,
    catalog: &Catalog,
    registry: &P,
    problems: &mut Vec<ApplicationProblem>,
) {
    let grants: Vec<Value> = application
        .services
        .iter()
        .enumerate()
        .map(|(n, asked)| {
            grant_value(
                &format!("cr-trial.{}", n + 1),
                "cr-trial",
                application,
                asked,
                GrantStatus::Active,
                &RateLimitSpec::DEFAULT,
            )
        })
        .collect();
    let document = serde_json::json!({ "grants": grants });
    // A system registered on approval is known to the grants it becomes.
    let registering = application
        .applicant
        .registration
        .is_some()
        .then_some(application.applicant.system.as_str());
    let known = |id: &str| registry.organisation_idno(id).is_some() || registering == Some(id);
    if let Err(errors) =
        PolicyIndex::from_documents([(PathBuf::from("application"), document)], catalog, &known)
    {
        for error in errors {
            problems.push(ApplicationProblem::new(
                INVALID,
                "",
                format!("the grants this application would become do not load: {error}"),
            ));
        }
    }
}
