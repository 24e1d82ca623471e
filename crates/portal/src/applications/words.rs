//! The words of the connection-application pages (the authority's, the
//! operator's and the providers'), in the three languages; a missing one
//! is a compile error. Kept apart from `i18n.rs`, which the base template
//! reads, so the pages of each part of the portal keep their own words.

use crate::i18n::Lang;

/// The words of the application pages in one language.
pub struct Words {
    /// Text `add_basis`.
    pub add_basis: &'static str,
    /// Text `added`.
    pub added: &'static str,
    /// Text `applicant`.
    pub applicant: &'static str,
    /// Text `application`.
    pub application: &'static str,
    /// Text `applications`.
    pub applications: &'static str,
    /// Text `applications_intro`.
    pub applications_intro: &'static str,
    /// Text `back_to_check`.
    pub back_to_check: &'static str,
    /// Text `back_to_form`.
    pub back_to_form: &'static str,
    /// Text `basis_act`.
    pub basis_act: &'static str,
    /// Text `basis_act_hint`.
    pub basis_act_hint: &'static str,
    /// Text `basis_article`.
    pub basis_article: &'static str,
    /// Text `basis_article_hint`.
    pub basis_article_hint: &'static str,
    /// Text `basis_id`.
    pub basis_id: &'static str,
    /// Text `basis_id_hint`.
    pub basis_id_hint: &'static str,
    /// Text `basis_link`.
    pub basis_link: &'static str,
    /// Text `basis_text`.
    pub basis_text: &'static str,
    /// Text `by`.
    pub by: &'static str,
    /// Text `change_application`.
    pub change_application: &'static str,
    /// Text `changes_asked`.
    pub changes_asked: &'static str,
    /// Text `changes_between`.
    pub changes_between: &'static str,
    /// Text `check_again`.
    pub check_again: &'static str,
    /// Text `check_application`.
    pub check_application: &'static str,
    /// Text `check_continue`.
    pub check_continue: &'static str,
    /// Text `check_intro`.
    pub check_intro: &'static str,
    /// Text `choose_a_service`.
    pub choose_a_service: &'static str,
    /// Text `confirmations`.
    pub confirmations: &'static str,
    /// Text `confirmations_intro`.
    pub confirmations_intro: &'static str,
    /// Text `contact_email`.
    pub contact_email: &'static str,
    /// Text `contact_name`.
    pub contact_name: &'static str,
    /// Text `contact_phone`.
    pub contact_phone: &'static str,
    /// Text `continue_`.
    pub continue_: &'static str,
    /// Text `controller`.
    pub controller: &'static str,
    /// Text `controller_hint`.
    pub controller_hint: &'static str,
    /// Text `date_hint`.
    pub date_hint: &'static str,
    /// Text `decide`.
    pub decide: &'static str,
    /// Text `decision_recorded`.
    pub decision_recorded: &'static str,
    /// Text `declaration`.
    pub declaration: &'static str,
    /// Text `declaration_title`.
    pub declaration_title: &'static str,
    /// Text `declared`.
    pub declared: &'static str,
    /// Text `digest`.
    pub digest: &'static str,
    /// Text `due`.
    pub due: &'static str,
    /// Text `edit_and_sign`.
    pub edit_and_sign: &'static str,
    /// Text `edit_application`.
    pub edit_application: &'static str,
    /// Text `evidence`.
    pub evidence: &'static str,
    /// Text `fields`.
    pub fields: &'static str,
    /// Text `fields_hint`.
    pub fields_hint: &'static str,
    /// Text `filed_by`.
    pub filed_by: &'static str,
    /// Text `general`.
    pub general: &'static str,
    /// Text `grant`.
    pub grant: &'static str,
    /// Text `grants`.
    pub grants: &'static str,
    /// Text `history`.
    pub history: &'static str,
    /// Text `idno`.
    pub idno: &'static str,
    /// Text `keyid`.
    pub keyid: &'static str,
    /// Text `legal_basis`.
    pub legal_basis: &'static str,
    /// Text `legal_contact`.
    pub legal_contact: &'static str,
    /// Text `legal_contact_hint`.
    pub legal_contact_hint: &'static str,
    /// Text `mail_request`.
    pub mail_request: &'static str,
    /// Text `msign_signature`.
    pub msign_signature: &'static str,
    /// Text `new_application`.
    pub new_application: &'static str,
    /// Text `none`.
    pub none: &'static str,
    /// Text `none_yet`.
    pub none_yet: &'static str,
    /// Text `not_declared`.
    pub not_declared: &'static str,
    /// Text `not_given`.
    pub not_given: &'static str,
    /// Text `not_verified`.
    pub not_verified: &'static str,
    /// Text `not_yet`.
    pub not_yet: &'static str,
    /// Text `open_ended`.
    pub open_ended: &'static str,
    /// Text `optional`.
    pub optional: &'static str,
    /// Text `organisation`.
    pub organisation: &'static str,
    /// Text `overdue`.
    pub overdue: &'static str,
    /// Text `overdue_count`.
    pub overdue_count: &'static str,
    /// Text `provider_confirmation`.
    pub provider_confirmation: &'static str,
    /// Text `purpose`.
    pub purpose: &'static str,
    /// Text `purpose_code`.
    pub purpose_code: &'static str,
    /// Text `purpose_code_hint`.
    pub purpose_code_hint: &'static str,
    /// Text `purpose_en`.
    pub purpose_en: &'static str,
    /// Text `purpose_ro`.
    pub purpose_ro: &'static str,
    /// Text `purpose_ru`.
    pub purpose_ru: &'static str,
    /// Text `queue`.
    pub queue: &'static str,
    /// Text `queue_intro`.
    pub queue_intro: &'static str,
    /// Text `reason`.
    pub reason: &'static str,
    /// Text `reason_hint`.
    pub reason_hint: &'static str,
    /// Text `refused_title`.
    pub refused_title: &'static str,
    /// Text `removed`.
    pub removed: &'static str,
    /// Text `request`.
    pub request: &'static str,
    /// Text `requests_caption`.
    pub requests_caption: &'static str,
    /// Text `resubmission_of`.
    pub resubmission_of: &'static str,
    /// Text `service`.
    pub service: &'static str,
    /// Text `services`.
    pub services: &'static str,
    /// Text `sign_description`.
    pub sign_description: &'static str,
    /// Text `sign_warning`.
    pub sign_warning: &'static str,
    /// Text `sign_with_msign`.
    pub sign_with_msign: &'static str,
    /// Text `signature`.
    pub signature: &'static str,
    /// Text `signed_at`.
    pub signed_at: &'static str,
    /// Text `signed_text`.
    pub signed_text: &'static str,
    /// Text `signed_title`.
    pub signed_title: &'static str,
    /// Text `signer`.
    pub signer: &'static str,
    /// Text `signing_failed`.
    pub signing_failed: &'static str,
    /// Text `signing_failed_text`.
    pub signing_failed_text: &'static str,
    /// Text `start_application`.
    pub start_application: &'static str,
    /// Text `stop_refresh`.
    pub stop_refresh: &'static str,
    /// Text `state_label`.
    pub state_label: &'static str,
    /// Text `submit_application`.
    pub submit_application: &'static str,
    /// Text `submitted`.
    pub submitted: &'static str,
    /// Text `submitted_by`.
    pub submitted_by: &'static str,
    /// Text `submitted_text`.
    pub submitted_text: &'static str,
    /// Text `system`.
    pub system: &'static str,
    /// Text `technical_contact`.
    pub technical_contact: &'static str,
    /// Text `there_is_a_problem`.
    pub there_is_a_problem: &'static str,
    /// Text `until_hint`.
    pub until_hint: &'static str,
    /// Text `use_case`.
    pub use_case: &'static str,
    /// Text `use_case_hint`.
    pub use_case_hint: &'static str,
    /// Text `valid_from`.
    pub valid_from: &'static str,
    /// Text `valid_until`.
    pub valid_until: &'static str,
    /// Text `verified`.
    pub verified: &'static str,
    /// Text `verified_here`.
    pub verified_here: &'static str,
    /// Text `version`.
    pub version: &'static str,
    /// Text `waiting_refresh`.
    pub waiting_refresh: &'static str,
    /// Text `waiting_text`.
    pub waiting_text: &'static str,
    /// Text `waiting_title`.
    pub waiting_title: &'static str,
    /// Text `what`.
    pub what: &'static str,
    /// Text `what_changed`.
    pub what_changed: &'static str,
    /// Text `when`.
    pub when: &'static str,
    /// Text `which_services`.
    pub which_services: &'static str,
    /// Text `which_services_hint`.
    pub which_services_hint: &'static str,
    /// Text `join_intro`.
    pub join_intro: &'static str,
    /// Text `join_title`.
    pub join_title: &'static str,
    /// Text `joined_title`.
    pub joined_title: &'static str,
    /// Text `joined_text`.
    pub joined_text: &'static str,
    /// Text `registration`.
    pub registration: &'static str,
    /// Text `certificate`.
    pub certificate: &'static str,
    /// Text `certificate_hint`.
    pub certificate_hint: &'static str,
    /// Text `endpoint`.
    pub endpoint: &'static str,
    /// Text `endpoint_hint`.
    pub endpoint_hint: &'static str,
    /// Text `fingerprint`.
    pub fingerprint: &'static str,
    /// Text `certificate_until`.
    pub certificate_until: &'static str,
    /// Text `certificate_subject`.
    pub certificate_subject: &'static str,
    /// Text `chain`.
    pub chain: &'static str,
    /// Text `organisation_name`.
    pub organisation_name: &'static str,
    states: &'static [(&'static str, &'static str)],
    transitions: &'static [(&'static str, &'static str)],
    decisions: &'static [(&'static str, &'static str)],
}

impl Words {
    /// The words in `lang`.
    pub fn of(lang: Lang) -> &'static Words {
        match lang {
            Lang::Ro => &RO,
            Lang::Ru => &RU,
            Lang::En => &EN,
        }
    }

    fn find(table: &'static [(&'static str, &'static str)], code: &str) -> &'static str {
        table
            .iter()
            .find(|(c, _)| *c == code)
            .map_or("—", |(_, words)| words)
    }

    /// A request's state (`under_review`) in words.
    pub fn state(&self, code: &str) -> &'static str {
        Words::find(self.states, code)
    }

    /// A transition (`request_changes`) in words.
    pub fn transition(&self, code: &str) -> &'static str {
        Words::find(self.transitions, code)
    }

    /// A decision's button (`request-changes`).
    pub fn decision(&self, action: &str) -> &'static str {
        Words::find(self.decisions, action)
    }
}

const RO: Words = Words {
    join_intro: "Cererea vă conectează și sistemul: Agenția îl înregistrează când aprobă cererea. Dați IDNO-ul organizației și certificatul emis de CA-ul magistralei pentru sistemul dumneavoastră. Portalul depune cererea în numele organizației, semnată de dumneavoastră prin MSign.",
    join_title: "Organizația dumneavoastră nu este încă pe magistrală",
    joined_title: "Organizația dumneavoastră este pe magistrală",
    joined_text: "Aici urmăriți cererile pe care portalul le-a depus pentru organizația dumneavoastră cât timp nu era pe magistrală. Cererile noi, și modificările acestora, le depune acum sistemul organizației, semnate cu certificatul său, prin API-ul de administrare al brokerului: portalul depune cereri doar pentru autoritățile care nu sunt încă pe magistrală.",
    registration: "Înregistrarea pe magistrală",
    certificate: "Certificatul sistemului (PEM)",
    certificate_hint: "Certificatul TLS și de semnare al sistemului, emis de CA-ul magistralei: lipiți-l de la -----BEGIN CERTIFICATE----- până la -----END CERTIFICATE-----",
    endpoint: "Adresa sistemului",
    endpoint_hint: "Opțional: adresa https la care sistemul poate fi găsit",
    fingerprint: "Amprenta certificatului (SHA-256)",
    certificate_until: "Certificat valabil până la",
    certificate_subject: "Titularul certificatului",
    chain: "Emis de CA-ul magistralei",
    organisation_name: "Denumirea oficială a organizației",
    add_basis: "Adăugați un alt temei legal",
    added: "adăugat",
    applicant: "Solicitant",
    application: "Cerere de conectare",
    applications: "Cereri de conectare",
    applications_intro: "Organizația dumneavoastră solicită Agenției de Guvernare Electronică acces la registre prin MConnect printr-o cerere semnată. Agenția răspunde în 30 de zile; poate cere modificări.",
    back_to_check: "Înapoi la cerere",
    back_to_form: "Înapoi la formular",
    basis_act: "Actul normativ",
    basis_act_hint: "De exemplu: Legea nr. 100/2001 privind actele de stare civilă",
    basis_article: "Articolul",
    basis_article_hint: "Articolul, alineatul, litera",
    basis_id: "Identificatorul temeiului legal",
    basis_id_hint: "Ce va trimite sistemul dumneavoastră în MConnect-Call-Basis: litere mici, cifre, puncte și cratime, de exemplu md-law-100-2001-art-5",
    basis_link: "Link la textul oficial",
    basis_text: "Ce prevede norma",
    by: "De către",
    change_application: "Modificați cererea",
    changes_asked: "Agenția a cerut modificări",
    changes_between: "Modificări de la versiunea",
    check_again: "Verificați acum",
    check_application: "Verificați cererea",
    check_continue: "Continuați la verificarea cererii",
    check_intro: "Aceasta este ceea ce veți semna și trimite Agenției de Guvernare Electronică. Semnătura acoperă exact acest conținut.",
    choose_a_service: "Alegeți cel puțin un serviciu",
    confirmations: "Cereri pentru serviciile dumneavoastră",
    confirmations_intro: "Cereri de conectare care solicită serviciile organizației dumneavoastră. După ce Agenția aprobă o cerere, confirmați că sistemele dumneavoastră sunt gata să-l servească pe solicitant; acordurile intră în vigoare când toți furnizorii au confirmat.",
    contact_email: "E-mail",
    contact_name: "Nume",
    contact_phone: "Telefon",
    continue_: "Continuați",
    controller: "Numărul în registrul operatorilor de date cu caracter personal",
    controller_hint: "Obligatoriu: un serviciu solicitat conține date cu caracter personal (Legea nr. 133/2011)",
    date_hint: "AAAA-LL-ZZ, de exemplu 2026-01-01",
    decide: "Decideți",
    decision_recorded: "Decizia a fost înregistrată",
    declaration: "Declarăm pe propria răspundere că datele din această cerere sunt adevărate, că datele primite vor fi folosite numai în scopurile și pe temeiurile legale declarate și că le vom proteja conform legii.",
    declaration_title: "Declarație pe propria răspundere",
    declared: "Declarat",
    digest: "SHA-256 al cererii",
    due: "Termen de răspuns",
    edit_and_sign: "Modificați și semnați din nou",
    edit_application: "Modificați cererea",
    evidence: "Probe",
    fields: "Câmpurile solicitate",
    fields_hint: "Solicitați doar ce cere scopul: brokerul transmite aceste câmpuri și niciun altul.",
    filed_by: "Depusă de (IDNP)",
    general: "Valabilitate, contacte și declarație",
    grant: "Acord",
    grants: "Acorduri",
    history: "Istoric",
    idno: "IDNO",
    keyid: "certificat",
    legal_basis: "Temei legal",
    legal_contact: "Contact juridic",
    legal_contact_hint: "Deciziile Agenției sunt trimise la această adresă.",
    mail_request: "Cererea de conectare MConnect",
    msign_signature: "Semnătura funcționarului (MSign)",
    new_application: "Cerere nouă de conectare",
    none: "niciuna",
    none_yet: "Nu există încă cereri.",
    not_declared: "Nedeclarat",
    not_given: "Nu este indicat",
    not_verified: "Nu se verifică",
    not_yet: "Neconfirmat încă",
    open_ended: "Pe termen nelimitat",
    optional: "Opțional",
    organisation: "Organizația",
    overdue: "Termen depășit",
    overdue_count: "Depășite termenul de 30 de zile",
    provider_confirmation: "Confirmare de către",
    purpose: "Scopul",
    purpose_code: "Codul scopului",
    purpose_code_hint: "Ce va trimite sistemul dumneavoastră în MConnect-Call-Reason, de exemplu civil-status-registration",
    purpose_en: "Scopul în engleză",
    purpose_ro: "Scopul în română",
    purpose_ru: "Scopul în rusă",
    queue: "Cereri de conectare de examinat",
    queue_intro: "Cererile în ordinea în care trebuie răspuns: întâi cele care așteaptă Agenția, cu termenul cel mai apropiat primul. Agenția răspunde în 30 de zile de la depunere sau redepunere.",
    reason: "Motivul",
    reason_hint: "Obligatoriu pentru a cere modificări sau a respinge: solicitantul îl va afla.",
    refused_title: "Cererea nu a fost acceptată",
    removed: "eliminat",
    request: "Cerere",
    requests_caption: "Cereri",
    resubmission_of: "Versiune modificată a cererii",
    service: "Serviciul",
    services: "Servicii",
    sign_description: "Cerere de conectare la MConnect",
    sign_warning: "Semnarea cu MSign este ca semnătura pe hârtie. MSign vă va cere confirmarea; această pagină așteaptă semnătura.",
    sign_with_msign: "Semnați cu MSign",
    signature: "Semnătura",
    signed_at: "Semnată la",
    signed_text: "Semnătura a sosit. Trimiteți cererea semnată Agenției de Guvernare Electronică.",
    signed_title: "Semnată",
    signer: "Semnatarul",
    signing_failed: "Cererea nu a fost semnată",
    signing_failed_text: "MSign nu a semnat cererea. Verificați-o și semnați din nou.",
    start_application: "Începeți o cerere nouă",
    stop_refresh: "Opriți verificarea automată",
    state_label: "Starea",
    submit_application: "Trimiteți cererea",
    submitted: "Depusă",
    submitted_by: "Trimisă de sistemul",
    submitted_text: "Cererea a fost trimisă. Agenția de Guvernare Electronică răspunde în 30 de zile; veți fi anunțați prin e-mail.",
    system: "Sistemul",
    technical_contact: "Contact tehnic",
    there_is_a_problem: "Există o problemă",
    until_hint: "AAAA-LL-ZZ; lăsați gol pentru nelimitat",
    use_case: "Cum vor fi folosite datele",
    use_case_hint: "Descrieți procedura și cine din organizație folosește datele.",
    valid_from: "Acces de la",
    valid_until: "Acces până la",
    verified: "Verificată",
    verified_here: "Semnăturile, verificate aici",
    version: "Versiunea",
    waiting_refresh: "Această pagină verifică din nou singură la câteva secunde.",
    waiting_text: "MSign așteaptă semnătura dumneavoastră. Confirmați semnătura acolo unde vă cere MSign.",
    waiting_title: "Se așteaptă semnătura",
    what: "Ce",
    what_changed: "Ce ați modificat",
    when: "Când",
    which_services: "De ce servicii aveți nevoie?",
    which_services_hint: "Alegeți serviciile din catalogul semantic. Pentru fiecare veți indica temeiul legal, scopul și câmpurile necesare.",
    states: &[
        ("submitted", "Depusă"),
        ("under_review", "În examinare"),
        ("changes_requested", "Modificări cerute"),
        ("resubmitted", "Redepusă"),
        ("approved", "Aprobată, se așteaptă furnizorii"),
        ("rejected", "Respinsă"),
        ("active", "În vigoare"),
        ("suspended", "Suspendată"),
        ("revoked", "Revocată"),
    ],
    transitions: &[
        ("submit", "depusă"),
        ("review", "luată în examinare"),
        ("request_changes", "modificări cerute"),
        ("resubmit", "redepusă"),
        ("approve", "aprobată"),
        ("reject", "respinsă"),
        ("confirm", "confirmată de un furnizor"),
        ("suspend", "suspendată"),
        ("resume", "reluată"),
        ("revoke", "revocată"),
    ],
    decisions: &[
        ("review", "Luați în examinare"),
        ("request-changes", "Cereți modificări"),
        ("approve", "Aprobați"),
        ("reject", "Respingeți"),
        ("confirm", "Confirmați pentru serviciile noastre"),
    ],
};

const RU: Words = Words {
    join_intro: "Заявка подключает и вашу систему: Агентство регистрирует её при одобрении заявки. Укажите IDNO организации и сертификат, выданный УЦ шины для вашей системы. Портал подаёт заявку от имени организации, подписанную вами через MSign.",
    join_title: "Ваша организация ещё не подключена к шине",
    joined_title: "Ваша организация подключена к шине",
    joined_text: "Здесь вы следите за заявками, которые портал подал для вашей организации, пока она не была подключена к шине. Новые заявки и их изменения теперь подаёт система организации, подписывая их своим сертификатом, через административный API брокера: портал подаёт заявки только за органы, ещё не подключённые к шине.",
    registration: "Регистрация на шине",
    certificate: "Сертификат системы (PEM)",
    certificate_hint: "TLS-сертификат и сертификат подписи системы, выданный УЦ шины: вставьте его от -----BEGIN CERTIFICATE----- до -----END CERTIFICATE-----",
    endpoint: "Адрес системы",
    endpoint_hint: "Необязательно: https-адрес, по которому доступна система",
    fingerprint: "Отпечаток сертификата (SHA-256)",
    certificate_until: "Сертификат действителен до",
    certificate_subject: "Владелец сертификата",
    chain: "Выдан УЦ шины",
    organisation_name: "Официальное название организации",
    add_basis: "Добавить ещё одно правовое основание",
    added: "добавлено",
    applicant: "Заявитель",
    application: "Заявка на подключение",
    applications: "Заявки на подключение",
    applications_intro: "Ваша организация запрашивает у Агентства электронного управления доступ к регистрам через MConnect подписанной заявкой. Агентство отвечает в течение 30 дней и может запросить изменения.",
    back_to_check: "Вернуться к заявке",
    back_to_form: "Вернуться к форме",
    basis_act: "Нормативный акт",
    basis_act_hint: "Например: Закон № 100/2001 об актах гражданского состояния",
    basis_article: "Статья",
    basis_article_hint: "Статья, часть, пункт",
    basis_id: "Идентификатор правового основания",
    basis_id_hint: "Что ваша система будет отправлять в MConnect-Call-Basis: строчные буквы, цифры, точки и дефисы, например md-law-100-2001-art-5",
    basis_link: "Ссылка на официальный текст",
    basis_text: "Что гласит норма",
    by: "Кем",
    change_application: "Изменить заявку",
    changes_asked: "Агентство запросило изменения",
    changes_between: "Изменения с версии",
    check_again: "Проверить сейчас",
    check_application: "Проверьте заявку",
    check_continue: "Перейти к проверке заявки",
    check_intro: "Это то, что вы подпишете и отправите в Агентство электронного управления. Подпись охватывает ровно это содержание.",
    choose_a_service: "Выберите хотя бы одну услугу",
    confirmations: "Заявки на ваши услуги",
    confirmations_intro: "Заявки на подключение, в которых запрошены услуги вашей организации. После одобрения Агентством подтвердите, что ваши системы готовы обслуживать заявителя; доступы вступают в силу, когда подтвердят все поставщики.",
    contact_email: "Эл. почта",
    contact_name: "Имя",
    contact_phone: "Телефон",
    continue_: "Продолжить",
    controller: "Номер в реестре операторов персональных данных",
    controller_hint: "Обязательно: запрошенная услуга содержит персональные данные (Закон № 133/2011)",
    date_hint: "ГГГГ-ММ-ДД, например 2026-01-01",
    decide: "Решение",
    decision_recorded: "Решение записано",
    declaration: "Под собственную ответственность заявляем, что сведения в этой заявке достоверны, что полученные данные будут использоваться только в заявленных целях и на заявленных правовых основаниях и что мы будем защищать их согласно закону.",
    declaration_title: "Заявление под собственную ответственность",
    declared: "Заявлено",
    digest: "SHA-256 заявки",
    due: "Срок ответа",
    edit_and_sign: "Изменить и подписать снова",
    edit_application: "Изменение заявки",
    evidence: "Доказательства",
    fields: "Запрошенные поля",
    fields_hint: "Запрашивайте только то, что нужно для цели: брокер передаёт эти поля и никакие другие.",
    filed_by: "Подал (IDNP)",
    general: "Срок, контакты и заявление",
    grant: "Доступ",
    grants: "Доступы",
    history: "История",
    idno: "IDNO",
    keyid: "сертификат",
    legal_basis: "Правовое основание",
    legal_contact: "Юридический контакт",
    legal_contact_hint: "Решения Агентства отправляются на этот адрес.",
    mail_request: "Заявка на подключение к MConnect",
    msign_signature: "Подпись должностного лица (MSign)",
    new_application: "Новая заявка на подключение",
    none: "нет",
    none_yet: "Заявок пока нет.",
    not_declared: "Не заявлено",
    not_given: "Не указан",
    not_verified: "Не проходит проверку",
    not_yet: "Ещё не подтверждено",
    open_ended: "Бессрочно",
    optional: "Необязательно",
    organisation: "Организация",
    overdue: "Просрочено",
    overdue_count: "Просрочен 30-дневный срок",
    provider_confirmation: "Подтверждение от",
    purpose: "Цель",
    purpose_code: "Код цели",
    purpose_code_hint: "Что ваша система будет отправлять в MConnect-Call-Reason, например civil-status-registration",
    purpose_en: "Цель на английском",
    purpose_ro: "Цель на румынском",
    purpose_ru: "Цель на русском",
    queue: "Заявки на подключение на рассмотрении",
    queue_intro: "Заявки в порядке сроков ответа: сначала ожидающие Агентство, с ближайшим сроком первыми. Агентство отвечает в течение 30 дней после подачи или повторной подачи.",
    reason: "Причина",
    reason_hint: "Обязательна, чтобы запросить изменения или отклонить: заявитель её узнает.",
    refused_title: "Заявка не принята",
    removed: "удалено",
    request: "Заявка",
    requests_caption: "Заявки",
    resubmission_of: "Изменённая версия заявки",
    service: "Услуга",
    services: "Услуги",
    sign_description: "Заявка на подключение к MConnect",
    sign_warning: "Подпись через MSign равна подписи на бумаге. MSign попросит подтверждения; эта страница ждёт вашей подписи.",
    sign_with_msign: "Подписать через MSign",
    signature: "Подпись",
    signed_at: "Подписано",
    signed_text: "Подпись получена. Отправьте подписанную заявку в Агентство электронного управления.",
    signed_title: "Подписано",
    signer: "Подписант",
    signing_failed: "Заявка не подписана",
    signing_failed_text: "MSign не подписал заявку. Проверьте её и подпишите снова.",
    start_application: "Начать новую заявку",
    stop_refresh: "Остановить автоматическую проверку",
    state_label: "Статус",
    submit_application: "Отправить заявку",
    submitted: "Подана",
    submitted_by: "Отправлена системой",
    submitted_text: "Заявка отправлена. Агентство электронного управления ответит в течение 30 дней; вы получите сообщение по эл. почте.",
    system: "Система",
    technical_contact: "Технический контакт",
    there_is_a_problem: "Есть проблема",
    until_hint: "ГГГГ-ММ-ДД; оставьте пустым для бессрочного доступа",
    use_case: "Как будут использоваться данные",
    use_case_hint: "Опишите процедуру и кто в организации использует данные.",
    valid_from: "Доступ с",
    valid_until: "Доступ до",
    verified: "Проверено",
    verified_here: "Подписи, проверенные здесь",
    version: "Версия",
    waiting_refresh: "Эта страница сама проверяет снова каждые несколько секунд.",
    waiting_text: "MSign ждёт вашей подписи. Подтвердите подпись там, где просит MSign.",
    waiting_title: "Ожидание вашей подписи",
    what: "Что",
    what_changed: "Что вы изменили",
    when: "Когда",
    which_services: "Какие услуги вам нужны?",
    which_services_hint: "Выберите услуги из семантического каталога. Для каждой укажите правовое основание, цель и нужные поля.",
    states: &[
        ("submitted", "Подана"),
        ("under_review", "На рассмотрении"),
        ("changes_requested", "Запрошены изменения"),
        ("resubmitted", "Подана повторно"),
        ("approved", "Одобрена, ожидает поставщиков"),
        ("rejected", "Отклонена"),
        ("active", "Действует"),
        ("suspended", "Приостановлена"),
        ("revoked", "Отозвана"),
    ],
    transitions: &[
        ("submit", "подана"),
        ("review", "принята к рассмотрению"),
        ("request_changes", "запрошены изменения"),
        ("resubmit", "подана повторно"),
        ("approve", "одобрена"),
        ("reject", "отклонена"),
        ("confirm", "подтверждена поставщиком"),
        ("suspend", "приостановлена"),
        ("resume", "возобновлена"),
        ("revoke", "отозвана"),
    ],
    decisions: &[
        ("review", "Принять к рассмотрению"),
        ("request-changes", "Запросить изменения"),
        ("approve", "Одобрить"),
        ("reject", "Отклонить"),
        ("confirm", "Подтвердить для наших услуг"),
    ],
};

const EN: Words = Words {
    join_intro: "This application connects your system too: the Agency registers it when it approves the application. Give your organisation's IDNO and the certificate the bus CA issued for your system. The portal files the application for your organisation, signed by you through MSign.",
    join_title: "Your organisation is not on the bus yet",
    joined_title: "Your organisation is on the bus",
    joined_text: "Here you follow the applications the portal filed for your organisation while it was not on the bus. New applications, and changes to them, are now filed by your organisation's own system, signed with its certificate, on the broker's admin API: the portal files only for authorities not yet on the bus.",
    registration: "Registration on the bus",
    certificate: "The system's certificate (PEM)",
    certificate_hint: "The system's TLS and signing certificate, issued by the bus CA: paste it from -----BEGIN CERTIFICATE----- to -----END CERTIFICATE-----",
    endpoint: "The system's address",
    endpoint_hint: "Optional: the https address where the system can be reached",
    fingerprint: "Certificate fingerprint (SHA-256)",
    certificate_until: "Certificate valid until",
    certificate_subject: "Certificate subject",
    chain: "Issued by the bus CA",
    organisation_name: "Official name of the organisation",
    add_basis: "Add another legal basis",
    added: "added",
    applicant: "Applicant",
    application: "Connection application",
    applications: "Connection applications",
    applications_intro: "Your organisation asks the e-Government Agency for access to registers through MConnect with a signed application. The Agency answers within 30 days; it may ask for changes.",
    back_to_check: "Back to your application",
    back_to_form: "Back to the form",
    basis_act: "Legal act",
    basis_act_hint: "For example: Law no. 100/2001 on civil status documents",
    basis_article: "Article",
    basis_article_hint: "Article, paragraph, letter",
    basis_id: "Identifier of the legal basis",
    basis_id_hint: "What your system will send as MConnect-Call-Basis: lower-case letters, digits, dots and hyphens, for example md-law-100-2001-art-5",
    basis_link: "Link to the official text",
    basis_text: "What the norm says",
    by: "By",
    change_application: "Change the application",
    changes_asked: "The Agency asked for changes",
    changes_between: "Changes from version",
    check_again: "Check now",
    check_application: "Check your application",
    check_continue: "Continue to check your application",
    check_intro: "This is what you will sign and send to the e-Government Agency. Your signature covers exactly these contents.",
    choose_a_service: "Choose at least one service",
    confirmations: "Applications for your services",
    confirmations_intro: "Connection applications that ask for your organisation's services. Once the Agency approves one, confirm that your systems are ready to serve the applicant; the grants come into force when every provider has confirmed.",
    contact_email: "E-mail",
    contact_name: "Name",
    contact_phone: "Phone",
    continue_: "Continue",
    controller: "Number in the register of personal-data controllers",
    controller_hint: "Required: a service you ask for carries personal data (Law no. 133/2011)",
    date_hint: "YYYY-MM-DD, for example 2026-01-01",
    decide: "Decide",
    decision_recorded: "Decision recorded",
    declaration: "On our own responsibility we declare that the data in this application is true, that the data received will be used only for the stated purposes and on the stated legal bases, and that we will protect it as the law requires.",
    declaration_title: "Declaration on own responsibility",
    declared: "Declared",
    digest: "SHA-256 of the application",
    due: "Answer due by",
    edit_and_sign: "Edit and sign again",
    edit_application: "Change your application",
    evidence: "Evidence",
    fields: "Fields asked for",
    fields_hint: "Ask only for what the purpose needs: the broker passes on these fields and no others.",
    filed_by: "Filed by (IDNP)",
    general: "Validity, contacts and declaration",
    grant: "Grant",
    grants: "Grants",
    history: "History",
    idno: "IDNO",
    keyid: "certificate",
    legal_basis: "Legal basis",
    legal_contact: "Legal contact",
    legal_contact_hint: "The Agency's decisions are mailed to this address.",
    mail_request: "MConnect connection application",
    msign_signature: "Official's signature (MSign)",
    new_application: "New connection application",
    none: "none",
    none_yet: "There are no applications yet.",
    not_declared: "Not declared",
    not_given: "Not given",
    not_verified: "Does not verify",
    not_yet: "Not yet confirmed",
    open_ended: "Open-ended",
    optional: "Optional",
    organisation: "Organisation",
    overdue: "Overdue",
    overdue_count: "Past the 30-day deadline",
    provider_confirmation: "Confirmation by",
    purpose: "Purpose",
    purpose_code: "Purpose code",
    purpose_code_hint: "What your system will send as MConnect-Call-Reason, for example civil-status-registration",
    purpose_en: "Purpose in English",
    purpose_ro: "Purpose in Romanian",
    purpose_ru: "Purpose in Russian",
    queue: "Connection applications to review",
    queue_intro: "Applications in the order they must be answered: those waiting on the Agency first, the earliest deadline first. The Agency answers within 30 days of a submission or resubmission.",
    reason: "Reason",
    reason_hint: "Required to ask for changes or to reject: the applicant is told this.",
    refused_title: "The application was not accepted",
    removed: "removed",
    request: "Application",
    requests_caption: "Applications",
    resubmission_of: "Changed version of",
    service: "Service",
    services: "Services",
    sign_description: "MConnect connection application",
    sign_warning: "Signing with MSign is like signing on paper. MSign will ask you to confirm; this page waits for your signature.",
    sign_with_msign: "Sign with MSign",
    signature: "Signature",
    signed_at: "Signed at",
    signed_text: "Your signature arrived. Send the signed application to the e-Government Agency.",
    signed_title: "Signed",
    signer: "Signer",
    signing_failed: "The application was not signed",
    signing_failed_text: "MSign did not sign the application. Check it and sign again.",
    start_application: "Start a new application",
    stop_refresh: "Stop checking by itself",
    state_label: "State",
    submit_application: "Send the application",
    submitted: "Submitted",
    submitted_by: "Sent by the system",
    submitted_text: "Your application was sent. The e-Government Agency answers within 30 days; you will be told by e-mail.",
    system: "System",
    technical_contact: "Technical contact",
    there_is_a_problem: "There is a problem",
    until_hint: "YYYY-MM-DD; leave empty for no end",
    use_case: "How the data will be used",
    use_case_hint: "Describe the procedure and who in your organisation uses the data.",
    valid_from: "Access from",
    valid_until: "Access until",
    verified: "Verified",
    verified_here: "Signatures, checked here",
    version: "Version",
    waiting_refresh: "This page checks again by itself every few seconds.",
    waiting_text: "MSign is waiting for your signature. Confirm the signature where MSign asks you to.",
    waiting_title: "Waiting for your signature",
    what: "What",
    what_changed: "What you changed",
    when: "When",
    which_services: "Which services do you need?",
    which_services_hint: "Choose the services from the semantic catalog. For each you will give its legal basis, purpose and the fields you need.",
    states: &[
        ("submitted", "Submitted"),
        ("under_review", "Under review"),
        ("changes_requested", "Changes requested"),
        ("resubmitted", "Resubmitted"),
        ("approved", "Approved, waiting for the providers"),
        ("rejected", "Rejected"),
        ("active", "In force"),
        ("suspended", "Suspended"),
        ("revoked", "Revoked"),
    ],
    transitions: &[
        ("submit", "submitted"),
        ("review", "taken up for review"),
        ("request_changes", "changes asked for"),
        ("resubmit", "resubmitted"),
        ("approve", "approved"),
        ("reject", "rejected"),
        ("confirm", "confirmed by a provider"),
        ("suspend", "suspended"),
        ("resume", "resumed"),
        ("revoke", "revoked"),
    ],
    decisions: &[
        ("review", "Take up for review"),
        ("request-changes", "Ask for changes"),
        ("approve", "Approve"),
        ("reject", "Reject"),
        ("confirm", "Confirm for our services"),
    ],
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_transition_and_decision_has_words_in_every_language() {
        for lang in Lang::ALL {
            let w = Words::of(lang);
            for state in mconnect::connect::State::ALL {
                assert_ne!(w.state(state.as_str()), "—", "{state:?}");
            }
            for t in mconnect::connect::Transition::ALL {
                assert_ne!(w.transition(t.as_str()), "—", "{t:?}");
            }
            for d in ["review", "request-changes", "approve", "reject", "confirm"] {
                assert_ne!(w.decision(d), "—", "{d}");
            }
        }
    }
}
