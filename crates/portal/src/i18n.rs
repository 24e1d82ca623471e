//! The portal's three languages — Romanian (the default), Russian and
//! English — and the words of its pages in each. The catalog's own texts
//! carry their three versions themselves (`catalog::Text`).
//!
//! Invariant: every page is available in every language; a missing
//! translation is a compile error, not an empty string (each language is
//! one value of [`Strings`], whose fields are all required).

use mconnect::catalog::Text;

/// A language of the portal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    /// Romanian, the default.
    Ro,
    /// Russian.
    Ru,
    /// English.
    En,
}

impl Lang {
    /// Every language, in the order the switcher shows them.
    pub const ALL: [Lang; 3] = [Lang::Ro, Lang::Ru, Lang::En];

    /// The BCP 47 code (`lang` attribute, `?lang=` parameter, cookie).
    pub fn code(self) -> &'static str {
        match self {
            Lang::Ro => "ro",
            Lang::Ru => "ru",
            Lang::En => "en",
        }
    }

    /// The language's name in itself, for the switcher.
    pub fn own_name(self) -> &'static str {
        match self {
            Lang::Ro => "Română",
            Lang::Ru => "Русский",
            Lang::En => "English",
        }
    }

    /// A language from its code; anything else is `None`.
    pub fn parse(code: &str) -> Option<Lang> {
        Lang::ALL.into_iter().find(|l| l.code() == code)
    }

    /// The text's version in this language.
    pub fn pick(self, text: &Text) -> &str {
        match self {
            Lang::Ro => &text.ro,
            Lang::Ru => &text.ru,
            Lang::En => &text.en,
        }
    }

    /// The words of the portal's pages.
    pub fn strings(self) -> &'static Strings {
        match self {
            Lang::Ro => &RO,
            Lang::Ru => &RU,
            Lang::En => &EN,
        }
    }
}

/// The words of the portal's pages in one language.
#[derive(Debug)]
pub struct Strings {
    /// The portal's name.
    pub portal: &'static str,
    /// "Skip to main content".
    pub skip: &'static str,
    /// "Language".
    pub language: &'static str,
    /// The catalog's heading.
    pub catalog: &'static str,
    /// The catalog's introduction.
    pub catalog_intro: &'static str,
    /// "Search the catalog".
    pub search_label: &'static str,
    /// The search hint.
    pub search_hint: &'static str,
    /// "Search".
    pub search_button: &'static str,
    /// "Services found:" (the number follows).
    pub services_found: &'static str,
    /// No service matched.
    pub nothing_found: &'static str,
    /// "Registers".
    pub registers: &'static str,
    /// "Service".
    pub service: &'static str,
    /// "Register".
    pub register: &'static str,
    /// "Provider".
    pub provider: &'static str,
    /// "Owner".
    pub owner: &'static str,
    /// "Status".
    pub status: &'static str,
    /// "Version".
    pub version: &'static str,
    /// "Personal data".
    pub personal_data: &'static str,
    /// "What it returns".
    pub returns: &'static str,
    /// "Data elements".
    pub data_elements: &'static str,
    /// "Field".
    pub field: &'static str,
    /// "Meaning".
    pub meaning: &'static str,
    /// "Parameters".
    pub parameters: &'static str,
    /// "required".
    pub required: &'static str,
    /// "optional".
    pub optional: &'static str,
    /// "Legal acts".
    pub legal_acts: &'static str,
    /// "Article".
    pub article: &'static str,
    /// "Public task".
    pub public_task: &'static str,
    /// "Contact".
    pub contact: &'static str,
    /// "Request schema".
    pub request_schema: &'static str,
    /// "Response schema".
    pub response_schema: &'static str,
    /// "How it is called".
    pub how_called: &'static str,
    /// The DCAT-AP link's text.
    pub dcat: &'static str,
    /// "Back to the catalog".
    pub back: &'static str,
    /// The not-found heading.
    pub not_found: &'static str,
    /// The not-found explanation.
    pub not_found_text: &'static str,
    /// "Sign in".
    pub sign_in: &'static str,
    /// "Sign out".
    pub sign_out: &'static str,
    /// The development sign-in's warning.
    pub dev_sign_in_warning: &'static str,
    /// "Who are you?" (the sign-in question).
    pub who_are_you: &'static str,
    /// "Continue".
    pub continue_: &'static str,
    /// The sign-in page when no way to sign in is configured.
    pub sign_in_unavailable: &'static str,
    /// "There is a problem" (error summary title).
    pub there_is_a_problem: &'static str,
    /// "Choose who you are".
    pub choose_official: &'static str,
    /// The form expired (CSRF token missing or wrong).
    pub form_expired: &'static str,
    /// "Your account".
    pub account: &'static str,
    /// "Signed in as".
    pub signed_in_as: &'static str,
    /// "Organisation".
    pub organisation: &'static str,
    /// "Roles".
    pub roles: &'static str,
    /// Too many sessions open.
    pub too_many_sessions: &'static str,
    /// Words of the lookup pages: `lookups`.
    pub lookups: &'static str,
    /// Words of the lookup pages: `lookups_intro`.
    pub lookups_intro: &'static str,
    /// Words of the lookup pages: `lookups_not_configured`.
    pub lookups_not_configured: &'static str,
    /// Words of the lookup pages: `no_offers`.
    pub no_offers: &'static str,
    /// Words of the lookup pages: `purpose`.
    pub purpose: &'static str,
    /// Words of the lookup pages: `legal_basis`.
    pub legal_basis: &'static str,
    /// Words of the lookup pages: `person_idnp`.
    pub person_idnp: &'static str,
    /// Words of the lookup pages: `person_hint`.
    pub person_hint: &'static str,
    /// Words of the lookup pages: `choose_purpose`.
    pub choose_purpose: &'static str,
    /// Words of the lookup pages: `choose_basis`.
    pub choose_basis: &'static str,
    /// Words of the lookup pages: `idnp_invalid`.
    pub idnp_invalid: &'static str,
    /// Words of the lookup pages: `check_answers`.
    pub check_answers: &'static str,
    /// Words of the lookup pages: `check_intro`.
    pub check_intro: &'static str,
    /// Words of the lookup pages: `check_warning`.
    pub check_warning: &'static str,
    /// Words of the lookup pages: `change`.
    pub change: &'static str,
    /// Words of the lookup pages: `confirm_lookup`.
    pub confirm_lookup: &'static str,
    /// Words of the lookup pages: `refused`.
    pub refused: &'static str,
    /// Words of the lookup pages: `problem_code`.
    pub problem_code: &'static str,
    /// Words of the lookup pages: `answer`.
    pub answer: &'static str,
    /// Words of the lookup pages: `answer_fields`.
    pub answer_fields: &'static str,
    /// Words of the lookup pages: `value`.
    pub value: &'static str,
    /// Words of the lookup pages: `receipt`.
    pub receipt: &'static str,
    /// Words of the lookup pages: `exchange_id`.
    pub exchange_id: &'static str,
    /// Words of the lookup pages: `audit_seq`.
    pub audit_seq: &'static str,
    /// Words of the lookup pages: `receipt_status`.
    pub receipt_status: &'static str,
    /// Words of the lookup pages: `receipt_verified`.
    pub receipt_verified: &'static str,
    /// Words of the lookup pages: `receipt_unverified`.
    pub receipt_unverified: &'static str,
    /// Words of the lookup pages: `broker_unreachable`.
    pub broker_unreachable: &'static str,
    /// Words of the lookup pages: `print_hint`.
    pub print_hint: &'static str,
    /// Words of the lookup pages: `new_lookup`.
    pub new_lookup: &'static str,
    /// Words of the administrator's page: `officials_rights`.
    pub officials_rights: &'static str,
    /// Words of the administrator's page: `officials_rights_intro`.
    pub officials_rights_intro: &'static str,
    /// Words of the administrator's page: `official`.
    pub official: &'static str,
    /// Words of the administrator's page: `save`.
    pub save: &'static str,
    /// Words of the administrator's page: `saved`.
    pub saved: &'static str,
    /// The personal-data classes: none, personal, special.
    pub personal_classes: [&'static str; 3],
    /// The lifecycle statuses: draft, active, deprecated, retired.
    pub lifecycle: [&'static str; 4],
}

static RO: Strings = Strings {
    portal: "MConnect — acces la date",
    skip: "Salt la conținutul principal",
    language: "Limba",
    catalog: "Catalogul semantic",
    catalog_intro: "Registrele de stat și serviciile lor de date disponibile prin MConnect: ce date există, cine le deține, în temeiul căror acte normative și ce date cu caracter personal conțin.",
    search_label: "Căutați în catalog",
    search_hint: "De exemplu: domiciliu, vehicule, impozite. Diacriticele nu contează.",
    search_button: "Căutare",
    services_found: "Servicii găsite:",
    nothing_found: "Niciun serviciu nu corespunde căutării.",
    registers: "Registre",
    service: "Serviciu",
    register: "Registru",
    provider: "Furnizor",
    owner: "Deținător",
    status: "Stare",
    version: "Versiune",
    personal_data: "Date cu caracter personal",
    returns: "Ce returnează",
    data_elements: "Elemente de date",
    field: "Câmp",
    meaning: "Semnificație",
    parameters: "Parametri",
    required: "obligatoriu",
    optional: "opțional",
    legal_acts: "Acte normative",
    article: "Articolul",
    public_task: "Misiunea publică",
    contact: "Contact",
    request_schema: "Schema cererii",
    response_schema: "Schema răspunsului",
    how_called: "Cum se apelează",
    dcat: "Descriere DCAT-AP (JSON-LD)",
    back: "Înapoi la catalog",
    not_found: "Pagina nu a fost găsită",
    not_found_text: "Adresa nu corespunde niciunei pagini. Verificați adresa sau reveniți la catalog.",
    sign_in: "Autentificare",
    sign_out: "Ieșire",
    dev_sign_in_warning: "Autentificare de dezvoltare: doar în mediul de test (sandbox). În producție, funcționarii se autentifică prin MPass.",
    who_are_you: "Cine sunteți?",
    continue_: "Continuare",
    sign_in_unavailable: "Autentificarea nu este configurată pe acest portal. Catalogul rămâne public.",
    there_is_a_problem: "Există o problemă",
    choose_official: "Alegeți persoana în numele căreia vă autentificați",
    form_expired: "Formularul a expirat. Reîncărcați pagina și încercați din nou.",
    account: "Contul dumneavoastră",
    signed_in_as: "Autentificat ca",
    organisation: "Organizația",
    roles: "Roluri",
    too_many_sessions: "Prea multe sesiuni deschise. Încercați din nou peste câteva minute.",
    lookups: "Interogări",
    lookups_intro: "Serviciile pe care organizația dumneavoastră le poate interoga, conform autorizațiilor sale. Fiecare interogare este semnată, verificată de MConnect și înregistrată în jurnalul de audit.",
    lookups_not_configured: "Interogările nu sunt configurate pe acest portal.",
    no_offers: "Organizația dumneavoastră nu are autorizații pentru servicii pe care le puteți interoga aici.",
    purpose: "Scopul",
    legal_basis: "Temeiul legal",
    person_idnp: "IDNP-ul persoanei",
    person_hint: "13 cifre, de pe actul de identitate al persoanei.",
    choose_purpose: "Alegeți scopul interogării",
    choose_basis: "Alegeți temeiul legal",
    idnp_invalid: "Introduceți un IDNP valid: 13 cifre, cu cifra de control corectă",
    check_answers: "Verificați înainte de interogare",
    check_intro: "Urmează să cereți date despre o persoană din registrul de stat. Verificați că totul este corect.",
    check_warning: "Interogarea se face în numele organizației dumneavoastră, sub numele dumneavoastră, și se înregistrează; persoana o va vedea în istoricul accesărilor datelor sale.",
    change: "Modificați",
    confirm_lookup: "Confirmați și interogați",
    refused: "Interogarea a fost refuzată",
    problem_code: "Codul problemei",
    answer: "Răspunsul registrului",
    answer_fields: "Datele primite (doar câmpurile permise de autorizație)",
    value: "Valoare",
    receipt: "Confirmarea MConnect",
    exchange_id: "Identificatorul schimbului",
    audit_seq: "Numărul în jurnalul de audit",
    receipt_status: "Confirmarea",
    receipt_verified: "verificată: semnată de MConnect",
    receipt_unverified: "neverificată: răspunsul nu poate fi folosit",
    broker_unreachable: "MConnect nu a putut fi contactat. Interogarea nu a fost trimisă; încercați din nou.",
    print_hint: "Tipăriți această pagină pentru dosar: extrasul include confirmarea.",
    new_lookup: "O nouă interogare",
    officials_rights: "Drepturile funcționarilor",
    officials_rights_intro: "Bifați autorizațiile organizației pe care le poate folosi fiecare funcționar. Un funcționar fără nicio bifă nu poate interoga nimic.",
    official: "Funcționar",
    save: "Salvați",
    saved: "Drepturile au fost salvate.",
    personal_classes: [
        "fără date personale",
        "date cu caracter personal",
        "categorii speciale de date",
    ],
    lifecycle: ["în pregătire", "activ", "depreciat", "retras"],
};

static RU: Strings = Strings {
    portal: "MConnect — доступ к данным",
    skip: "Перейти к основному содержанию",
    language: "Язык",
    catalog: "Семантический каталог",
    catalog_intro: "Государственные регистры и их сервисы данных, доступные через MConnect: какие данные существуют, кто ими владеет, на основании каких нормативных актов и какие персональные данные они содержат.",
    search_label: "Поиск по каталогу",
    search_hint: "Например: место жительства, транспорт, налоги. Диакритика не важна.",
    search_button: "Найти",
    services_found: "Найдено сервисов:",
    nothing_found: "Ни один сервис не соответствует запросу.",
    registers: "Регистры",
    service: "Сервис",
    register: "Регистр",
    provider: "Поставщик",
    owner: "Владелец",
    status: "Состояние",
    version: "Версия",
    personal_data: "Персональные данные",
    returns: "Что возвращает",
    data_elements: "Элементы данных",
    field: "Поле",
    meaning: "Значение",
    parameters: "Параметры",
    required: "обязательный",
    optional: "необязательный",
    legal_acts: "Нормативные акты",
    article: "Статья",
    public_task: "Публичная задача",
    contact: "Контакт",
    request_schema: "Схема запроса",
    response_schema: "Схема ответа",
    how_called: "Как вызывается",
    dcat: "Описание DCAT-AP (JSON-LD)",
    back: "Назад к каталогу",
    not_found: "Страница не найдена",
    not_found_text: "Адрес не соответствует ни одной странице. Проверьте адрес или вернитесь в каталог.",
    sign_in: "Вход",
    sign_out: "Выход",
    dev_sign_in_warning: "Вход для разработки: только в тестовой среде (sandbox). В рабочей среде служащие входят через MPass.",
    who_are_you: "Кто вы?",
    continue_: "Продолжить",
    sign_in_unavailable: "Вход на этом портале не настроен. Каталог остаётся общедоступным.",
    there_is_a_problem: "Есть проблема",
    choose_official: "Выберите, от чьего имени вы входите",
    form_expired: "Срок действия формы истёк. Обновите страницу и попробуйте снова.",
    account: "Ваша учётная запись",
    signed_in_as: "Вы вошли как",
    organisation: "Организация",
    roles: "Роли",
    too_many_sessions: "Открыто слишком много сеансов. Попробуйте через несколько минут.",
    lookups: "Запросы",
    lookups_intro: "Сервисы, которые ваша организация может запрашивать по своим разрешениям. Каждый запрос подписан, проверен MConnect и записан в журнал аудита.",
    lookups_not_configured: "Запросы на этом портале не настроены.",
    no_offers: "У вашей организации нет разрешений на сервисы, которые здесь можно запросить.",
    purpose: "Цель",
    legal_basis: "Правовое основание",
    person_idnp: "IDNP лица",
    person_hint: "13 цифр, из удостоверения личности.",
    choose_purpose: "Выберите цель запроса",
    choose_basis: "Выберите правовое основание",
    idnp_invalid: "Введите действительный IDNP: 13 цифр с правильной контрольной цифрой",
    check_answers: "Проверьте перед запросом",
    check_intro: "Вы собираетесь запросить данные о лице из государственного регистра. Проверьте, что всё верно.",
    check_warning: "Запрос делается от имени вашей организации, под вашим именем, и записывается; лицо увидит его в истории обращений к своим данным.",
    change: "Изменить",
    confirm_lookup: "Подтвердить и запросить",
    refused: "Запрос отклонён",
    problem_code: "Код проблемы",
    answer: "Ответ регистра",
    answer_fields: "Полученные данные (только поля, разрешённые разрешением)",
    value: "Значение",
    receipt: "Подтверждение MConnect",
    exchange_id: "Идентификатор обмена",
    audit_seq: "Номер в журнале аудита",
    receipt_status: "Подтверждение",
    receipt_verified: "проверено: подписано MConnect",
    receipt_unverified: "не проверено: ответ нельзя использовать",
    broker_unreachable: "Не удалось связаться с MConnect. Запрос не отправлен; попробуйте снова.",
    print_hint: "Распечатайте эту страницу для дела: выписка содержит подтверждение.",
    new_lookup: "Новый запрос",
    officials_rights: "Права служащих",
    officials_rights_intro: "Отметьте, какими разрешениями организации может пользоваться каждый служащий. Служащий без отметок не может ничего запрашивать.",
    official: "Служащий",
    save: "Сохранить",
    saved: "Права сохранены.",
    personal_classes: [
        "без персональных данных",
        "персональные данные",
        "особые категории данных",
    ],
    lifecycle: ["в подготовке", "действует", "устаревший", "выведен"],
};

static EN: Strings = Strings {
    portal: "MConnect — data access",
    skip: "Skip to main content",
    language: "Language",
    catalog: "Semantic catalog",
    catalog_intro: "The state registers and their data services available through MConnect: what data exists, who holds it, under which legal acts, and what personal data it contains.",
    search_label: "Search the catalog",
    search_hint: "For example: domicile, vehicles, taxes. Diacritics do not matter.",
    search_button: "Search",
    services_found: "Services found:",
    nothing_found: "No service matches the search.",
    registers: "Registers",
    service: "Service",
    register: "Register",
    provider: "Provider",
    owner: "Owner",
    status: "Status",
    version: "Version",
    personal_data: "Personal data",
    returns: "What it returns",
    data_elements: "Data elements",
    field: "Field",
    meaning: "Meaning",
    parameters: "Parameters",
    required: "required",
    optional: "optional",
    legal_acts: "Legal acts",
    article: "Article",
    public_task: "Public task",
    contact: "Contact",
    request_schema: "Request schema",
    response_schema: "Response schema",
    how_called: "How it is called",
    dcat: "DCAT-AP description (JSON-LD)",
    back: "Back to the catalog",
    not_found: "Page not found",
    not_found_text: "The address matches no page. Check the address or go back to the catalog.",
    sign_in: "Sign in",
    sign_out: "Sign out",
    dev_sign_in_warning: "Development sign-in: sandbox only. In production, officials sign in through MPass.",
    who_are_you: "Who are you?",
    continue_: "Continue",
    sign_in_unavailable: "Sign-in is not configured on this portal. The catalog stays public.",
    there_is_a_problem: "There is a problem",
    choose_official: "Choose who you are signing in as",
    form_expired: "The form has expired. Reload the page and try again.",
    account: "Your account",
    signed_in_as: "Signed in as",
    organisation: "Organisation",
    roles: "Roles",
    too_many_sessions: "Too many sessions are open. Try again in a few minutes.",
    lookups: "Lookups",
    lookups_intro: "The services your organisation may ask, under its grants. Every lookup is signed, checked by MConnect and recorded in the audit log.",
    lookups_not_configured: "Lookups are not configured on this portal.",
    no_offers: "Your organisation holds no grant for a service you can look up here.",
    purpose: "Purpose",
    legal_basis: "Legal basis",
    person_idnp: "The person's IDNP",
    person_hint: "13 digits, from the person's identity document.",
    choose_purpose: "Choose the purpose of the lookup",
    choose_basis: "Choose the legal basis",
    idnp_invalid: "Enter a valid IDNP: 13 digits with the right control digit",
    check_answers: "Check before you look up",
    check_intro: "You are about to ask a state register for data about a person. Check that everything is right.",
    check_warning: "The lookup is made on behalf of your organisation, under your name, and recorded; the person will see it in the history of who accessed their data.",
    change: "Change",
    confirm_lookup: "Confirm and look up",
    refused: "The lookup was refused",
    problem_code: "Problem code",
    answer: "The register's answer",
    answer_fields: "Data received (only the fields the grant allows)",
    value: "Value",
    receipt: "MConnect receipt",
    exchange_id: "Exchange id",
    audit_seq: "Audit log number",
    receipt_status: "Receipt",
    receipt_verified: "verified: signed by MConnect",
    receipt_unverified: "not verified: the answer must not be used",
    broker_unreachable: "MConnect could not be reached. The lookup was not sent; try again.",
    print_hint: "Print this page for the case file: the extract includes the receipt.",
    new_lookup: "A new lookup",
    officials_rights: "Officials' rights",
    officials_rights_intro: "Tick which of the organisation's grants each official may use. An official with nothing ticked can look nothing up.",
    official: "Official",
    save: "Save",
    saved: "The rights were saved.",
    personal_classes: [
        "no personal data",
        "personal data",
        "special categories of data",
    ],
    lifecycle: ["draft", "active", "deprecated", "retired"],
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_unknown_codes_are_refused() {
        for lang in Lang::ALL {
            assert_eq!(Lang::parse(lang.code()), Some(lang));
        }
        assert_eq!(Lang::parse("fr"), None);
        assert_eq!(Lang::parse(""), None);
    }

    #[test]
    fn every_language_names_the_portal_differently() {
        let names: Vec<&str> = Lang::ALL.iter().map(|l| l.strings().portal).collect();
        assert_eq!(names.len(), 3);
        assert!(names[0] != names[1] && names[1] != names[2] && names[0] != names[2]);
    }
}
