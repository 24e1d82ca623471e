//! The application form: the schema's application
//! (`policies/schema/application.schema.json`) as form fields named by
//! their JSON pointer (`services/0/purpose/text/ro`), read back into the
//! application's JSON, and the view that shows it again with the broker
//! library's validation problems beside the fields they point at.
//!
//! Invariant: this module checks nothing itself; every problem shown is one
//! of `mconnect::connect::validate_application`, word for word, placed at
//! the field its JSON pointer names (or the nearest enclosing one).

use mconnect::catalog::{Catalog, PersonalData};
use mconnect::connect::ApplicationProblem;
use serde_json::{Map, Value, json};

use crate::i18n::Lang;

use super::Words;

/// Services one application asks for, at most (the schema's `maxItems`).
pub const MAX_SERVICES: usize = 50;
/// Legal bases of one service, at most (the schema's `maxItems`).
pub const MAX_BASES: usize = 20;

/// The applicant part: who the signed-in official's organisation is on the
/// bus (from the broker's participant list), never a form field; or, for
/// an organisation not yet on the bus, what its administrator gives
/// (IDNO, name, the system's certificate and address; the system id is the
/// official's organisation's, never typed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applicant {
    /// IDNO of the organisation.
    pub idno: String,
    /// Its name.
    pub name: String,
    /// Its participant id (the system that will call).
    pub system: String,
    /// For an organisation not yet on the bus: the system's certificate
    /// (PEM) and address, as typed.
    pub registration: Option<(String, String)>,
}

impl Applicant {
    /// An organisation not yet on the bus, as its administrator fills it:
    /// IDNO, name, certificate and address from `form`, the system id
    /// `system` (the official's organisation).
    pub fn joining(form: &[(String, String)], system: &str) -> Applicant {
        Applicant {
            idno: field(form, "applicant/idno").to_owned(),
            name: field(form, "applicant/name").to_owned(),
            system: system.to_owned(),
            registration: Some((
                field(form, "applicant/registration/certificate").to_owned(),
                field(form, "applicant/registration/endpoint").to_owned(),
            )),
        }
    }

    /// The applicant part of the application, in the schema's shape (a
    /// blank address is left out).
    pub fn to_value(&self) -> Value {
        let mut applicant = json!({"idno": self.idno, "name": self.name, "system": self.system});
        if let Some((certificate, endpoint)) = &self.registration {
            let mut registration = Map::new();
            registration.insert("certificate".into(), certificate.as_str().into());
            if !endpoint.is_empty() {
                registration.insert("endpoint".into(), endpoint.as_str().into());
            }
            applicant["registration"] = Value::Object(registration);
        }
        applicant
    }
}

/// The first value of `name` in `form`, trimmed.
fn field<'f>(form: &'f [(String, String)], name: &str) -> &'f str {
    crate::form_field(form, name).trim()
}

/// Whether `form` holds a value for `name`.
fn has(form: &[(String, String)], name: &str) -> bool {
    form.iter().any(|(n, _)| n == name)
}

/// The application a submitted form describes, as JSON in the schema's
/// shape; blank optional fields are left out and a wholly blank legal
/// basis row is dropped (one row always stays). With `add_basis` set, the
/// service of that index gets one more, empty, row.
pub fn from_form(form: &[(String, String)], applicant: &Applicant, lang: Lang) -> Value {
    let add_basis: Option<usize> = field(form, "add_basis").parse().ok();
    let mut services = Vec::new();
    for i in 0..MAX_SERVICES {
        let at = |rest: &str| format!("services/{i}/{rest}");
        if !has(form, &at("service")) {
            break;
        }
        let mut bases = Vec::new();
        for k in 0..MAX_BASES {
            let basis = |name: &str| field(form, &at(&format!("legal_bases/{k}/{name}")));
            if !has(form, &at(&format!("legal_bases/{k}/id"))) {
                break;
            }
            let parts = ["id", "act", "article", "text", "link"].map(basis);
            if parts.iter().all(|p| p.is_empty()) {
                continue;
            }
            let mut row = Map::new();
            for (name, value) in ["id", "act", "article", "text"].iter().zip(parts) {
                row.insert((*name).into(), value.into());
            }
            if !parts[4].is_empty() {
                row.insert("link".into(), parts[4].into());
            }
            bases.push(Value::Object(row));
        }
        if bases.is_empty() || add_basis == Some(i) {
            bases.push(json!({"id": "", "act": "", "article": "", "text": ""}));
        }
        let fields: Vec<Value> = form
            .iter()
            .filter(|(n, _)| *n == at("fields"))
            .map(|(_, v)| Value::from(v.trim()))
            .collect();
        services.push(json!({
            "service": field(form, &at("service")),
            "legal_bases": bases,
            "purpose": {
                "code": field(form, &at("purpose/code")),
                "text": {
                    "ro": field(form, &at("purpose/text/ro")),
                    "ru": field(form, &at("purpose/text/ru")),
                    "en": field(form, &at("purpose/text/en")),
                },
            },
            "use_case": field(form, &at("use_case")),
            "fields": fields,
        }));
    }
    let contact = |who: &str| {
        let mut c = Map::new();
        c.insert(
            "name".into(),
            field(form, &format!("contacts/{who}/name")).into(),
        );
        c.insert(
            "email".into(),
            field(form, &format!("contacts/{who}/email")).into(),
        );
        let phone = field(form, &format!("contacts/{who}/phone"));
        if !phone.is_empty() {
            c.insert("phone".into(), phone.into());
        }
        Value::Object(c)
    };
    let mut validity = Map::new();
    validity.insert("from".into(), field(form, "validity/from").into());
    let until = field(form, "validity/until");
    if !until.is_empty() {
        validity.insert("until".into(), until.into());
    }
    let mut application = Map::new();
    application.insert("applicant".into(), applicant.to_value());
    application.insert("services".into(), Value::Array(services));
    let controller = field(form, "controller_register_no");
    if !controller.is_empty() {
        application.insert("controller_register_no".into(), controller.into());
    }
    application.insert(
        "contacts".into(),
        json!({"technical": contact("technical"), "legal": contact("legal")}),
    );
    application.insert("validity".into(), Value::Object(validity));
    application.insert(
        "declaration".into(),
        json!({
            "own_responsibility": field(form, "declaration/own_responsibility") == "true",
            "text": Words::of(lang).declaration,
        }),
    );
    Value::Object(application)
}

/// A new application's starting point: the chosen services, each with one
/// empty legal basis row, and the applicant.
pub fn blank(services: &[String], applicant: &Applicant) -> Value {
    json!({
        "applicant": applicant.to_value(),
        "services": services.iter().map(|s| json!({
            "service": s,
            "legal_bases": [{"id": "", "act": "", "article": "", "text": ""}],
            "purpose": {"code": "", "text": {"ro": "", "ru": "", "en": ""}},
            "use_case": "",
            "fields": [],
        })).collect::<Vec<_>>(),
        "contacts": {"technical": {"name": "", "email": ""}, "legal": {"name": "", "email": ""}},
        "validity": {"from": ""},
        "declaration": {"own_responsibility": false},
    })
}

/// One form control (or group of controls) and the problems placed at it.
pub struct Slot {
    /// The JSON pointer of the value it edits.
    pub pointer: String,
    /// The form field name (the pointer without its leading `/`).
    pub name: String,
    /// The element id (`f-` and the pointer's segments joined by `-`).
    pub id: String,
    /// The current value.
    pub value: String,
    /// The problems placed here, joined.
    pub error: String,
    /// What the error summary calls it.
    context: String,
}

impl Slot {
    fn new(pointer: String, value: &Value, context: String) -> Slot {
        let name = pointer.trim_start_matches('/').to_owned();
        Slot {
            id: format!("f-{}", name.replace('/', "-")),
            name,
            value: match value {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                other => other.to_string(),
            },
            error: String::new(),
            pointer,
            context,
        }
    }
}

/// One legal basis row.
pub struct BasisView {
    /// 1-based, for its legend.
    pub number: usize,
    /// The row as a whole (a required member missing).
    pub group: Slot,
    /// `id`.
    pub id: Slot,
    /// `act`.
    pub act: Slot,
    /// `article`.
    pub article: Slot,
    /// `text`.
    pub text: Slot,
    /// `link`.
    pub link: Slot,
}

/// One response field offered as a checkbox.
pub struct FieldChoice {
    /// The field path.
    pub path: String,
    /// What it means.
    pub meaning: String,
    /// Asked for.
    pub checked: bool,
    /// The checkbox's element id.
    pub id: String,
}

/// One requested service's part of the form.
pub struct ServiceView {
    /// 0-based index (the `add_basis` value).
    pub index: usize,
    /// The catalog key.
    pub key: String,
    /// Its name.
    pub name: String,
    /// Its register's name.
    pub register: String,
    /// Whether the catalog says it carries personal data.
    pub personal: bool,
    /// `service` itself (an unknown or retired one).
    pub service: Slot,
    /// Its legal bases.
    pub bases: Vec<BasisView>,
    /// Whether another legal basis may be added.
    pub more_bases: bool,
    /// `purpose/code`.
    pub purpose_code: Slot,
    /// `purpose/text/ro`.
    pub purpose_ro: Slot,
    /// `purpose/text/ru`.
    pub purpose_ru: Slot,
    /// `purpose/text/en`.
    pub purpose_en: Slot,
    /// `use_case`.
    pub use_case: Slot,
    /// `fields`, as a group.
    pub fields_group: Slot,
    /// The response fields offered.
    pub fields: Vec<FieldChoice>,
}

/// The whole form.
pub struct FormView {
    /// The applicant is not yet on the bus: its part is filled in too.
    pub joining: bool,
    /// `applicant/idno` (joining only).
    pub idno: Slot,
    /// `applicant/name` (joining only).
    pub name: Slot,
    /// The applicant's system id, shown (never typed).
    pub system: String,
    /// `applicant/registration`, as a group (joining only).
    pub registration: Slot,
    /// `applicant/registration/certificate` (joining only).
    pub certificate: Slot,
    /// `applicant/registration/endpoint` (joining only).
    pub endpoint: Slot,
    /// The services part.
    pub services: Vec<ServiceView>,
    /// Whether any chosen service carries personal data.
    pub personal: bool,
    /// `controller_register_no`.
    pub controller: Slot,
    /// `validity/from`.
    pub from: Slot,
    /// `validity/until`.
    pub until: Slot,
    /// `contacts/technical/*`.
    pub tech_name: Slot,
    /// `contacts/technical/email`.
    pub tech_email: Slot,
    /// `contacts/technical/phone`.
    pub tech_phone: Slot,
    /// `contacts/legal/name`.
    pub legal_name: Slot,
    /// `contacts/legal/email`.
    pub legal_email: Slot,
    /// `contacts/legal/phone`.
    pub legal_phone: Slot,
    /// `declaration/own_responsibility`.
    pub declaration: Slot,
    /// Whether the declaration is ticked.
    pub declared: bool,
    /// The error summary: (element id, text).
    pub summary: Vec<(String, String)>,
}

/// The text at `pointer` in `value`, or null.
fn at<'v>(value: &'v Value, pointer: &str) -> &'v Value {
    value.pointer(pointer).unwrap_or(&Value::Null)
}

impl FormView {
    /// The form showing `application`, with `problems` beside their fields.
    pub fn build(
        application: &Value,
        catalog: &Catalog,
        lang: Lang,
        problems: &[ApplicationProblem],
    ) -> FormView {
        let w = Words::of(lang);
        let slot = |pointer: String, context: String| {
            let v = at(application, &pointer);
            Slot::new(pointer, v, context)
        };
        let empty = Vec::new();
        let asked = at(application, "/services").as_array().unwrap_or(&empty);
        let mut services = Vec::new();
        for (i, s) in asked.iter().enumerate() {
            let key = s["service"].as_str().unwrap_or_default().to_owned();
            let found = catalog.service_by_key(&key);
            let name = found.map_or_else(|| key.clone(), |svc| lang.pick(&svc.name).to_owned());
            let ctx = |what: &str| format!("{name} — {what}");
            let p = |rest: &str| format!("/services/{i}/{rest}");
            let bases_len = s["legal_bases"].as_array().map_or(0, Vec::len);
            let bases = (0..bases_len)
                .map(|k| {
                    let b = |m: &str| p(&format!("legal_bases/{k}/{m}"));
                    let row = |what: &str| ctx(&format!("{} {} — {what}", w.legal_basis, k + 1));
                    BasisView {
                        number: k + 1,
                        group: slot(p(&format!("legal_bases/{k}")), row(w.legal_basis)),
                        id: slot(b("id"), row(w.basis_id)),
                        act: slot(b("act"), row(w.basis_act)),
                        article: slot(b("article"), row(w.basis_article)),
                        text: slot(b("text"), row(w.basis_text)),
                        link: slot(b("link"), row(w.basis_link)),
                    }
                })
                .collect();
            let chosen: Vec<&str> = s["fields"]
                .as_array()
                .map(|f| f.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let fields = found
                .map(|svc| {
                    svc.data_elements
                        .iter()
                        .enumerate()
                        .map(|(n, e)| FieldChoice {
                            path: e.path.clone(),
                            meaning: lang.pick(&e.meaning).to_owned(),
                            checked: chosen.contains(&e.path.as_str()),
                            id: format!("f-services-{i}-fields-{n}"),
                        })
                        .collect()
                })
                .unwrap_or_default();
            services.push(ServiceView {
                index: i,
                register: found
                    .and_then(|svc| catalog.register(&svc.register))
                    .map(|r| lang.pick(&r.name).to_owned())
                    .unwrap_or_default(),
                personal: found.is_some_and(|svc| svc.personal_data != PersonalData::None),
                service: slot(p("service"), ctx(w.service)),
                more_bases: bases_len < MAX_BASES,
                bases,
                purpose_code: slot(p("purpose/code"), ctx(w.purpose_code)),
                purpose_ro: slot(p("purpose/text/ro"), ctx(w.purpose_ro)),
                purpose_ru: slot(p("purpose/text/ru"), ctx(w.purpose_ru)),
                purpose_en: slot(p("purpose/text/en"), ctx(w.purpose_en)),
                use_case: slot(p("use_case"), ctx(w.use_case)),
                fields_group: slot(p("fields"), ctx(w.fields)),
                fields,
                key,
                name,
            });
        }
        let mut view = FormView {
            joining: application.pointer("/applicant/registration").is_some(),
            idno: slot("/applicant/idno".into(), w.idno.into()),
            name: slot("/applicant/name".into(), w.organisation_name.into()),
            system: at(application, "/applicant/system")
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            registration: slot("/applicant/registration".into(), w.registration.into()),
            certificate: slot(
                "/applicant/registration/certificate".into(),
                w.certificate.into(),
            ),
            endpoint: slot("/applicant/registration/endpoint".into(), w.endpoint.into()),
            personal: services.iter().any(|s| s.personal),
            services,
            controller: slot("/controller_register_no".into(), w.controller.into()),
            from: slot("/validity/from".into(), w.valid_from.into()),
            until: slot("/validity/until".into(), w.valid_until.into()),
            tech_name: slot(
                "/contacts/technical/name".into(),
                format!("{} — {}", w.technical_contact, w.contact_name),
            ),
            tech_email: slot(
                "/contacts/technical/email".into(),
                format!("{} — {}", w.technical_contact, w.contact_email),
            ),
            tech_phone: slot(
                "/contacts/technical/phone".into(),
                format!("{} — {}", w.technical_contact, w.contact_phone),
            ),
            legal_name: slot(
                "/contacts/legal/name".into(),
                format!("{} — {}", w.legal_contact, w.contact_name),
            ),
            legal_email: slot(
                "/contacts/legal/email".into(),
                format!("{} — {}", w.legal_contact, w.contact_email),
            ),
            legal_phone: slot(
                "/contacts/legal/phone".into(),
                format!("{} — {}", w.legal_contact, w.contact_phone),
            ),
            declaration: slot(
                "/declaration/own_responsibility".into(),
                w.declaration_title.into(),
            ),
            declared: at(application, "/declaration/own_responsibility") == &Value::Bool(true),
            summary: Vec::new(),
        };
        view.attach(problems);
        view
    }

    /// Every slot, for placing problems.
    fn slots(&mut self) -> Vec<&mut Slot> {
        let mut all: Vec<&mut Slot> = Vec::new();
        // The applicant's fields are on the form only for an organisation
        // not yet on the bus; otherwise its problems go to the summary.
        if self.joining {
            all.extend([
                &mut self.idno,
                &mut self.name,
                &mut self.registration,
                &mut self.certificate,
                &mut self.endpoint,
            ]);
        }
        for s in &mut self.services {
            all.push(&mut s.service);
            for b in &mut s.bases {
                all.extend([
                    &mut b.group,
                    &mut b.id,
                    &mut b.act,
                    &mut b.article,
                    &mut b.text,
                    &mut b.link,
                ]);
            }
            all.extend([
                &mut s.purpose_code,
                &mut s.purpose_ro,
                &mut s.purpose_ru,
                &mut s.purpose_en,
                &mut s.use_case,
                &mut s.fields_group,
            ]);
        }
        all.extend([
            &mut self.controller,
            &mut self.from,
            &mut self.until,
            &mut self.tech_name,
            &mut self.tech_email,
            &mut self.tech_phone,
            &mut self.legal_name,
            &mut self.legal_email,
            &mut self.legal_phone,
            &mut self.declaration,
        ]);
        all
    }

    /// Places each problem at the slot its pointer names, or the nearest
    /// enclosing one; a problem of the whole application (or of the
    /// applicant, which is no field) goes to the summary alone.
    fn attach(&mut self, problems: &[ApplicationProblem]) {
        let mut summary = Vec::new();
        for problem in problems {
            let mut slots = self.slots();
            let best = slots
                .iter_mut()
                .filter(|s| encloses(&s.pointer, &problem.pointer))
                .max_by_key(|s| s.pointer.len());
            match best {
                Some(slot) => {
                    if !slot.error.is_empty() {
                        slot.error.push_str("; ");
                    }
                    slot.error.push_str(&problem.reason);
                    summary.push((
                        slot.id.clone(),
                        format!("{}: {}", slot.context, problem.reason),
                    ));
                }
                None => summary.push(("application".to_owned(), problem.to_string())),
            }
        }
        self.summary = summary;
    }
}

/// Whether the value at `outer` contains the one at `inner` (or is it).
fn encloses(outer: &str, inner: &str) -> bool {
    inner == outer
        || inner
            .strip_prefix(outer)
            .is_some_and(|rest| rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn applicant() -> Applicant {
        Applicant {
            idno: "1003603000063".into(),
            name: "Primăria municipiului Cahul".into(),
            system: "apl-cahul".into(),
            registration: None,
        }
    }

    fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn a_form_becomes_the_schemas_application() {
        let form = pairs(&[
            ("services/0/service", "asp-rsp/person-by-idnp"),
            ("services/0/legal_bases/0/id", "md-law-100-2001-art-5"),
            ("services/0/legal_bases/0/act", "Legea 100/2001"),
            ("services/0/legal_bases/0/article", "art. 5"),
            ("services/0/legal_bases/0/text", "Actele de stare civilă."),
            ("services/0/legal_bases/0/link", ""),
            // A wholly blank second row is dropped.
            ("services/0/legal_bases/1/id", ""),
            ("services/0/legal_bases/1/act", " "),
            ("services/0/purpose/code", "civil-status"),
            ("services/0/purpose/text/ro", "Stare civilă"),
            ("services/0/purpose/text/ru", "ЗАГС"),
            ("services/0/purpose/text/en", "Civil status"),
            ("services/0/use_case", "Registering births"),
            ("services/0/fields", "idnp"),
            ("services/0/fields", "last_name"),
            ("controller_register_no", "0000303-001"),
            ("validity/from", "2026-01-01"),
            ("validity/until", ""),
            ("contacts/technical/name", "IT"),
            ("contacts/technical/email", "it@cahul.md"),
            ("contacts/technical/phone", ""),
            ("contacts/legal/name", "Juridic"),
            ("contacts/legal/email", "juridic@cahul.md"),
            ("contacts/legal/phone", "+373 299 22 222"),
            ("declaration/own_responsibility", "true"),
        ]);
        let v = from_form(&form, &applicant(), Lang::En);
        assert_eq!(v["applicant"]["system"], "apl-cahul");
        assert_eq!(v["services"][0]["legal_bases"].as_array().unwrap().len(), 1);
        assert!(v["services"][0]["legal_bases"][0].get("link").is_none());
        assert_eq!(v["services"][0]["fields"], json!(["idnp", "last_name"]));
        assert!(v["validity"].get("until").is_none());
        assert!(v["contacts"]["technical"].get("phone").is_none());
        assert_eq!(v["contacts"]["legal"]["phone"], "+373 299 22 222");
        assert_eq!(v["declaration"]["own_responsibility"], true);

        let mut more = form.clone();
        more.push(("add_basis".into(), "0".into()));
        let v = from_form(&more, &applicant(), Lang::En);
        assert_eq!(v["services"][0]["legal_bases"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn an_organisation_not_on_the_bus_fills_its_own_part() {
        let form = pairs(&[
            ("applicant/idno", " 1003605000089 "),
            ("applicant/name", "Primăria satului Copceac"),
            ("applicant/system", "apl-cahul"),
            ("applicant/registration/certificate", "PEM"),
            ("applicant/registration/endpoint", ""),
            ("services/0/service", "asp-rsp/person-by-idnp"),
        ]);
        let joining = Applicant::joining(&form, "apl-copceac");
        let v = from_form(&form, &joining, Lang::En);
        assert_eq!(v["applicant"]["idno"], "1003605000089");
        assert_eq!(
            v["applicant"]["system"], "apl-copceac",
            "the system is the official's organisation, never typed"
        );
        assert_eq!(
            v["applicant"]["registration"],
            json!({"certificate": "PEM"})
        );
        let catalog = Catalog::load_dir(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../catalog"),
        )
        .unwrap();
        let problem = ApplicationProblem {
            code: "connect.application_invalid",
            pointer: "/applicant/registration/certificate".into(),
            reason: "unreadable".into(),
        };
        let view = FormView::build(&v, &catalog, Lang::En, std::slice::from_ref(&problem));
        assert!(view.joining);
        assert_eq!(view.certificate.error, "unreadable");
        let registered = blank(&["asp-rsp/person-by-idnp".to_owned()], &applicant());
        let view = FormView::build(&registered, &catalog, Lang::En, &[problem]);
        assert!(!view.joining);
        assert_eq!(view.summary[0].0, "application");
    }

    #[test]
    fn problems_are_placed_at_their_field_or_the_nearest_enclosing_one() {
        let catalog = Catalog::load_dir(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../catalog"),
        )
        .unwrap();
        let value = blank(&["asp-rsp/person-by-idnp".to_owned()], &applicant());
        let problem = |pointer: &str, reason: &str| ApplicationProblem {
            code: "connect.application_invalid",
            pointer: pointer.into(),
            reason: reason.into(),
        };
        let view = FormView::build(
            &value,
            &catalog,
            Lang::En,
            &[
                problem("/services/0/purpose/code", "too short"),
                problem("/services/0/fields/3", "not a field"),
                problem("/applicant/system", "not registered"),
            ],
        );
        assert_eq!(view.services[0].purpose_code.error, "too short");
        assert_eq!(view.services[0].fields_group.error, "not a field");
        assert_eq!(view.summary[0].0, "f-services-0-purpose-code");
        assert_eq!(view.summary[1].0, "f-services-0-fields");
        assert_eq!(view.summary[2].0, "application");
        assert!(
            view.personal,
            "the population register carries personal data"
        );
        assert!(
            view.services[0]
                .fields
                .iter()
                .any(|f| f.path == "first_name")
        );
    }
}
