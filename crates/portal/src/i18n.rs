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
    /// An error page: refused.
    pub forbidden: &'static str,
    /// An error page: refused, why.
    pub forbidden_text: &'static str,
    /// An error page: cannot now.
    pub unavailable: &'static str,
    /// An error page: cannot now, what to do.
    pub unavailable_text: &'static str,
    /// An error page: the request cannot be read.
    pub bad_request: &'static str,
    /// An error page: the request cannot be read, what to do.
    pub bad_request_text: &'static str,
    /// The label of an IDNP.
    pub idnp: &'static str,
    /// The page of who accessed a person's data: its title.
    pub my_data: &'static str,
    /// The history page: what it shows.
    pub my_data_intro: &'static str,
    /// The history page: what it leaves out, and why.
    pub my_data_confidential: &'static str,
    /// The history page: nothing found.
    pub my_data_empty: &'static str,
    /// The history page: the broker could not answer.
    pub my_data_unavailable: &'static str,
    /// The history page: how many accesses the period holds.
    pub my_data_total: &'static str,
    /// The history page: the period's start.
    pub period_from: &'static str,
    /// The history page: the period's end.
    pub period_to: &'static str,
    /// The history page: how to write a date.
    pub period_hint: &'static str,
    /// The history page: the button that applies the period.
    pub show: &'static str,
    /// Paging: back.
    pub previous_page: &'static str,
    /// Paging: on.
    pub next_page: &'static str,
    /// The history table: when.
    pub when: &'static str,
    /// The history table: which authority and system.
    pub authority: &'static str,
    /// The history table: in which role.
    pub user_role: &'static str,
    /// A role: an official of the authority.
    pub role_official: &'static str,
    /// A role: the person themself.
    pub role_self: &'static str,
    /// A role: the authority's system, with no person named.
    pub role_system: &'static str,
    /// The history page: a date that cannot be read.
    pub date_invalid: &'static str,
    /// The development sign-in: as a resident.
    pub resident_sign_in: &'static str,
    /// The development sign-in: the resident's IDNP.
    pub resident_hint: &'static str,
    /// Refusal: a resident on an official's page.
    pub officials_only: &'static str,
    /// MPass: the way in (a link and a title).
    pub mpass_sign_in: &'static str,
    /// MPass: what happens next.
    pub mpass_intro: &'static str,
    /// MPass: the button that goes to MPass.
    pub mpass_continue: &'static str,
    /// MPass: not configured on this portal.
    pub mpass_off: &'static str,
    /// MPass: signed in, on the way to the account.
    pub mpass_signed_in: &'static str,
    /// MPass: its answer was not accepted.
    pub mpass_refused: &'static str,
    /// MPass: it did not sign the person in.
    pub mpass_failed: &'static str,
    /// MPass: the sign-in is too old or was used.
    pub mpass_expired: &'static str,
    /// MPass: start again (a link).
    pub mpass_again: &'static str,
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
    forbidden: "Nu aveți acces la această pagină",
    forbidden_text: "Pagina este doar pentru funcționarii cu acest drept, iar formularul trebuie trimis din sesiunea dumneavoastră. Reveniți la contul dumneavoastră.",
    unavailable: "Serviciul nu este disponibil acum",
    unavailable_text: "Nu s-a făcut nimic. Încercați din nou peste câteva minute.",
    bad_request: "Cererea nu poate fi citită",
    bad_request_text: "Reveniți la pagina anterioară și trimiteți formularul din nou.",
    idnp: "IDNP",
    my_data: "Cine mi-a accesat datele",
    my_data_intro: "Fiecare schimb de date prin MConnect care v-a privit: când, ce autoritate și ce sistem, în ce rol, ce serviciu, cu ce scop și în baza cărui temei legal. Cele mai noi sunt primele.",
    my_data_confidential: "Accesările autorităților cărora legea le permite confidențialitatea (de exemplu, organele de urmărire penală) nu sunt afișate.",
    my_data_empty: "Nicio accesare a datelor dumneavoastră în această perioadă.",
    my_data_unavailable: "Istoricul nu poate fi citit acum. Încercați din nou peste câteva minute.",
    my_data_total: "Accesări în perioadă",
    period_from: "De la data",
    period_to: "Până la data (exclusiv)",
    period_hint: "De exemplu, 2026-01-31",
    show: "Afișați",
    previous_page: "Pagina anterioară",
    next_page: "Pagina următoare",
    when: "Când",
    authority: "Autoritatea și sistemul",
    user_role: "În ce rol",
    role_official: "un funcționar al autorității",
    role_self: "dumneavoastră",
    role_system: "sistemul autorității",
    date_invalid: "Introduceți data ca an-lună-zi, de exemplu 2026-01-31; prima dată nu poate fi după a doua",
    resident_sign_in: "Intrați ca locuitor",
    resident_hint: "IDNP-ul persoanei din datele sandbox-ului, pentru a vedea cine i-a accesat datele.",
    officials_only: "Această pagină este doar pentru funcționari.",
    mpass_sign_in: "Autentificare cu MPass",
    mpass_intro: "Vă veți autentifica în MPass, serviciul guvernamental de autentificare, apoi veți reveni aici.",
    mpass_continue: "Continuați spre MPass",
    mpass_off: "Autentificarea cu MPass nu este configurată pe acest portal.",
    mpass_signed_in: "V-ați autentificat. Continuați spre contul dumneavoastră.",
    mpass_refused: "Răspunsul MPass nu a putut fi acceptat. Reluați autentificarea; dacă se repetă, anunțați administratorii portalului.",
    mpass_failed: "MPass nu v-a autentificat. Puteți încerca din nou.",
    mpass_expired: "Această autentificare a expirat sau a fost deja folosită. Reluați-o.",
    mpass_again: "Autentificați-vă din nou",
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
    forbidden: "У вас нет доступа к этой странице",
    forbidden_text: "Страница только для служащих с этим правом, а форма должна быть отправлена из вашей сессии. Вернитесь в свой кабинет.",
    unavailable: "Сервис сейчас недоступен",
    unavailable_text: "Ничего не было сделано. Повторите через несколько минут.",
    bad_request: "Запрос не удаётся прочитать",
    bad_request_text: "Вернитесь на предыдущую страницу и отправьте форму ещё раз.",
    idnp: "IDNP",
    my_data: "Кто обращался к моим данным",
    my_data_intro: "Каждый обмен данными через MConnect, который касался вас: когда, какой орган и какая система, в какой роли, какой сервис, с какой целью и на каком правовом основании. Новые сначала.",
    my_data_confidential: "Обращения органов, которым закон разрешает конфиденциальность (например, органов уголовного преследования), не показываются.",
    my_data_empty: "За этот период к вашим данным никто не обращался.",
    my_data_unavailable: "История сейчас недоступна. Повторите через несколько минут.",
    my_data_total: "Обращений за период",
    period_from: "С даты",
    period_to: "По дату (не включая)",
    period_hint: "Например, 2026-01-31",
    show: "Показать",
    previous_page: "Предыдущая страница",
    next_page: "Следующая страница",
    when: "Когда",
    authority: "Орган и система",
    user_role: "В какой роли",
    role_official: "служащий органа",
    role_self: "вы сами",
    role_system: "система органа",
    date_invalid: "Введите дату как год-месяц-день, например 2026-01-31; первая дата не может быть позже второй",
    resident_sign_in: "Войти как житель",
    resident_hint: "IDNP человека из данных песочницы, чтобы увидеть, кто обращался к его данным.",
    officials_only: "Эта страница только для служащих.",
    mpass_sign_in: "Войти через MPass",
    mpass_intro: "Вы войдёте в MPass, государственной службе входа, и вернётесь сюда.",
    mpass_continue: "Перейти в MPass",
    mpass_off: "Вход через MPass на этом портале не настроен.",
    mpass_signed_in: "Вы вошли. Перейдите в свой кабинет.",
    mpass_refused: "Ответ MPass не может быть принят. Начните вход заново; если это повторится, сообщите администраторам портала.",
    mpass_failed: "MPass не выполнил вход. Можно попробовать ещё раз.",
    mpass_expired: "Этот вход устарел или уже был использован. Начните его заново.",
    mpass_again: "Войти снова",
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
    forbidden: "You cannot use this page",
    forbidden_text: "The page is for officials with this right, and a form must be sent from your own session. Go back to your account.",
    unavailable: "The service is not available now",
    unavailable_text: "Nothing was done. Try again in a few minutes.",
    bad_request: "The request cannot be read",
    bad_request_text: "Go back to the previous page and send the form again.",
    idnp: "IDNP",
    my_data: "Who accessed my data",
    my_data_intro: "Every exchange of data through MConnect that concerned you: when, which authority and system, in which role, which service, for what purpose and under which legal basis. Newest first.",
    my_data_confidential: "Accesses by authorities the law allows to stay confidential (criminal investigation bodies, for example) are not shown.",
    my_data_empty: "Nobody accessed your data in this period.",
    my_data_unavailable: "The history cannot be read now. Try again in a few minutes.",
    my_data_total: "Accesses in the period",
    period_from: "From",
    period_to: "Until (not included)",
    period_hint: "For example, 2026-01-31",
    show: "Show",
    previous_page: "Previous page",
    next_page: "Next page",
    when: "When",
    authority: "Authority and system",
    user_role: "In which role",
    role_official: "an official of the authority",
    role_self: "you",
    role_system: "the authority's system",
    date_invalid: "Enter the date as year-month-day, for example 2026-01-31; the first date cannot be after the second",
    resident_sign_in: "Sign in as a resident",
    resident_hint: "The IDNP of a person in the sandbox's data, to see who accessed their data.",
    officials_only: "This page is for officials only.",
    mpass_sign_in: "Sign in with MPass",
    mpass_intro: "You will sign in on MPass, the government's sign-in service, and come back here.",
    mpass_continue: "Continue to MPass",
    mpass_off: "Sign-in with MPass is not configured on this portal.",
    mpass_signed_in: "You are signed in. Continue to your account.",
    mpass_refused: "MPass's answer could not be accepted. Start the sign-in again; if it happens again, tell the portal's administrators.",
    mpass_failed: "MPass did not sign you in. You can try again.",
    mpass_expired: "This sign-in has expired or was already used. Start it again.",
    mpass_again: "Sign in again",
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
