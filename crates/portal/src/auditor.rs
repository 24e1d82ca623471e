//! The auditor's pages: a supervisory authority's official (role `auditor`)
//! reads the broker's audit log in a browser, as `mconnect audit …` does on
//! the command line. They declare a legal basis and a purpose once per
//! session, chosen from their organisation's grant for `mconnect/audit-log`;
//! search the log by person, consumer, service, kind and period; open a
//! record with its inclusion proof verified against a signed tree head;
//! and download the evidence bundle, the same as `mconnect audit export`.
//!
//! Every read goes through the broker's admin API as the auditor's
//! organisation (mutual TLS with its certificate), with the declared basis
//! and purpose and the official's IDNP as `MConnect-Calling-User`: the
//! broker decides it under the grant and records it (`audit.read`) before it
//! answers, as for any reader of the API.
//!
//! Invariants:
//! - only an official with the `auditor` role reaches these pages (403 for
//!   anyone else), and nothing is read before a declaration is made;
//! - the basis and purpose are the grant's, picked from radio buttons and
//!   checked against the grant on the server, never free text;
//! - nothing from the broker is shown as evidence unchecked: tree heads are
//!   verified with the broker certificate, proofs against the signed root,
//!   records against their leaf bytes (`mconnect::audit::auditor`, the same
//!   code as the CLI's);
//! - every page is `no-store`, every form carries the session's CSRF token,
//!   and the person searched for travels in a POST body, never in an address.

use std::path::Path;

use askama::Template;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::Full;
use mconnect::audit::auditor::{AuditReader, Entry, Proven, ReadError, Search, TreeHeadCheck};
use mconnect::audit::{Decision, certificate_verifier};
use mconnect::catalog::Catalog;
use mconnect::connect::client::AdminClient;
use mconnect::policy::Grant;

use crate::i18n::{Lang, Strings};
use crate::lookup::{Choice, Lookups};
use crate::pages::{self, Switch};
use crate::session::{Official, Session};
use crate::{Page, Portal};

/// The service every read of the log is decided under.
pub const AUDIT_LOG: &str = "mconnect/audit-log";
/// Records on one page of results.
pub const PAGE_SIZE: usize = 20;
/// The longest paging cursor taken back from a form.
const MAX_CURSOR: usize = 256;

/// What the auditor's pages need besides the admin clients: the broker
/// certificate that signs tree heads.
pub struct Auditing {
    check: Box<TreeHeadCheck>,
}

impl Auditing {
    /// Tree heads checked with the broker certificate(s) in `broker_pem`.
    pub fn new(broker_pem: &str) -> Result<Auditing, String> {
        let check = certificate_verifier(broker_pem).map_err(|e| e.to_string())?;
        Ok(Auditing {
            check: Box::new(check),
        })
    }

    /// Tree heads checked with `broker.cert.pem` of the PKI directory.
    pub fn from_pki_dir(pki: &Path) -> Result<Auditing, String> {
        let path = pki.join("broker.cert.pem");
        let pem = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        Auditing::new(&pem)
    }
}

/// The words of these pages in one language.
pub struct Words {
    audit: &'static str,
    declare_title: &'static str,
    declare_intro: &'static str,
    declare: &'static str,
    no_grant: &'static str,
    purpose: &'static str,
    legal_basis: &'static str,
    choose_purpose: &'static str,
    choose_basis: &'static str,
    there_is_a_problem: &'static str,
    reading_as: &'static str,
    change_declaration: &'static str,
    every_read_recorded: &'static str,
    search_title: &'static str,
    person: &'static str,
    person_hint: &'static str,
    person_invalid: &'static str,
    consumer: &'static str,
    consumer_hint: &'static str,
    consumer_invalid: &'static str,
    service: &'static str,
    any_service: &'static str,
    service_unknown: &'static str,
    kind: &'static str,
    kind_any: &'static str,
    kind_exchange: &'static str,
    kind_read: &'static str,
    kind_invalid: &'static str,
    period_from: &'static str,
    period_to: &'static str,
    period_hint: &'static str,
    date_invalid: &'static str,
    period_backwards: &'static str,
    search: &'static str,
    results: &'static str,
    no_results: &'static str,
    when: &'static str,
    subject: &'static str,
    outcome: &'static str,
    record: &'static str,
    open_record: &'static str,
    accepted: &'static str,
    refused: &'static str,
    next_page: &'static str,
    record_title: &'static str,
    event: &'static str,
    received: &'static str,
    answered: &'static str,
    consumer_idno: &'static str,
    calling_user: &'static str,
    provider: &'static str,
    service_version: &'static str,
    grant: &'static str,
    subjects: &'static str,
    represented_party: &'static str,
    problem_code: &'static str,
    http_status: &'static str,
    exchange_id: &'static str,
    request_id: &'static str,
    request_digest: &'static str,
    response_digest: &'static str,
    proof: &'static str,
    evidence: &'static str,
    /// `{size}` and `{time}` are filled in.
    proof_verified: &'static str,
    root_hash: &'static str,
    leaf_hash: &'static str,
    key_id: &'static str,
    audit_path: &'static str,
    export: &'static str,
    export_hint: &'static str,
    back_to_search: &'static str,
    refused_title: &'static str,
    refused_policy: &'static str,
    refused_role: &'static str,
    refused_rate: &'static str,
    refused_not_found: &'static str,
    refused_pruned: &'static str,
    refused_unavailable: &'static str,
    refused_malformed: &'static str,
    refused_other: &'static str,
    unreachable: &'static str,
    invalid_answer: &'static str,
    unverified: &'static str,
    broker_says: &'static str,
}

const RO: Words = Words {
    audit: "Jurnalul de audit",
    declare_title: "Declarați temeiul citirii jurnalului",
    declare_intro: "Fiecare citire a jurnalului de audit este ea însăși înregistrată, cu temeiul legal și scopul declarate aici și cu IDNP-ul dumneavoastră. Declarația rămâne valabilă până la ieșire.",
    declare: "Declarați și continuați",
    no_grant: "Organizația dumneavoastră nu are un acord activ pentru citirea jurnalului de audit (mconnect/audit-log), deci nu aveți ce declara.",
    purpose: "Scopul",
    legal_basis: "Temeiul legal",
    choose_purpose: "Alegeți scopul citirii, dintre cele ale acordului",
    choose_basis: "Alegeți temeiul legal, dintre cele ale acordului",
    there_is_a_problem: "Există o problemă",
    reading_as: "Citiți ca",
    change_declaration: "Schimbați declarația",
    every_read_recorded: "Fiecare căutare, deschidere a unei înregistrări și descărcare este înregistrată de MConnect în același jurnal, pe numele dumneavoastră.",
    search_title: "Căutați în jurnal",
    person: "IDNP-ul persoanei (sau IDNO-ul organizației)",
    person_hint: "13 cifre. Lăsați gol pentru toate persoanele.",
    person_invalid: "Introduceți un IDNP sau IDNO valid: 13 cifre, cu cifra de control corectă",
    consumer: "Consumatorul (participantul)",
    consumer_hint: "Identificatorul participantului, de exemplu apl-cahul. Lăsați gol pentru toți.",
    consumer_invalid: "Introduceți identificatorul unui participant: litere mici, cifre și cratime",
    service: "Serviciul",
    any_service: "Orice serviciu",
    service_unknown: "Alegeți un serviciu din listă",
    kind: "Tipul înregistrării",
    kind_any: "Toate",
    kind_exchange: "Schimburi de date",
    kind_read: "Citiri ale jurnalului de audit",
    kind_invalid: "Alegeți un tip din listă",
    period_from: "De la data",
    period_to: "Până la data (inclusiv)",
    period_hint: "Date în UTC. Lăsați goale pentru toată perioada.",
    date_invalid: "Introduceți datele ca AAAA-LL-ZZ",
    period_backwards: "Data de început trebuie să fie înaintea datei de sfârșit",
    search: "Căutați",
    results: "Înregistrări găsite, cele mai noi întâi",
    no_results: "Nicio înregistrare nu corespunde căutării.",
    when: "Când",
    subject: "Persoana",
    outcome: "Rezultatul",
    record: "Înregistrarea",
    open_record: "Deschideți înregistrarea",
    accepted: "acceptat",
    refused: "refuzat",
    next_page: "Pagina următoare",
    record_title: "Înregistrarea de audit",
    event: "Evenimentul",
    received: "Primit la",
    answered: "Răspuns la",
    consumer_idno: "IDNO-ul consumatorului",
    calling_user: "Utilizatorul (IDNP)",
    provider: "Furnizorul",
    service_version: "Versiunea serviciului",
    grant: "Acordul",
    subjects: "Toate persoanele vizate",
    represented_party: "Persoana reprezentată",
    problem_code: "Codul problemei",
    http_status: "Starea HTTP",
    exchange_id: "Identificatorul schimbului",
    request_id: "Identificatorul cererii",
    request_digest: "Amprenta cererii (SHA-256)",
    response_digest: "Amprenta răspunsului (SHA-256)",
    proof: "Dovada includerii",
    evidence: "Dovezile",
    proof_verified: "Dovada includerii a fost verificată față de capul de arbore semnat de dimensiunea {size}, semnat de broker la {time}.",
    root_hash: "Rădăcina arborelui",
    leaf_hash: "Amprenta frunzei",
    key_id: "Cheia brokerului",
    audit_path: "Drumul de audit (amprente)",
    export: "Descărcați dovezile (JSON lines)",
    export_hint: "Același pachet ca „mconnect audit export”: capul de arbore semnat, apoi înregistrarea cu dovada includerii ei.",
    back_to_search: "Înapoi la căutare",
    refused_title: "Citirea nu a fost făcută",
    refused_policy: "Brokerul nu permite această citire cu temeiul legal și scopul declarate. Declarați altele sau verificați acordul organizației.",
    refused_role: "Organizația dumneavoastră nu este înregistrată ca auditor în MConnect, deci nu poate citi jurnalul.",
    refused_rate: "Prea multe citiri într-un timp scurt. Așteptați puțin și încercați din nou.",
    refused_not_found: "Jurnalul nu are o înregistrare cu acest număr.",
    refused_pruned: "Această înregistrare a fost ștearsă conform politicii de păstrare; amprenta ei rămâne în jurnal.",
    refused_unavailable: "Jurnalul de audit nu poate fi citit acum și nu s-a citit nimic. Încercați mai târziu.",
    refused_malformed: "Brokerul nu a putut executa această căutare așa cum a fost formulată.",
    refused_other: "Brokerul a refuzat această citire.",
    unreachable: "Brokerul nu a putut fi contactat, deci nu s-a citit nimic. Încercați mai târziu.",
    invalid_answer: "Răspunsul brokerului nu are forma documentată, deci nu este afișat.",
    unverified: "Ce a trimis brokerul nu se verifică: nu poate fi prezentat ca dovadă.",
    broker_says: "Explicația",
};

const RU: Words = Words {
    audit: "Журнал аудита",
    declare_title: "Укажите основание для чтения журнала",
    declare_intro: "Каждое чтение журнала аудита само записывается — с указанными здесь правовым основанием и целью и вашим IDNP. Заявление действует до выхода из системы.",
    declare: "Заявить и продолжить",
    no_grant: "У вашей организации нет действующего разрешения на чтение журнала аудита (mconnect/audit-log), поэтому заявлять нечего.",
    purpose: "Цель",
    legal_basis: "Правовое основание",
    choose_purpose: "Выберите цель чтения из указанных в разрешении",
    choose_basis: "Выберите правовое основание из указанных в разрешении",
    there_is_a_problem: "Есть проблема",
    reading_as: "Вы читаете как",
    change_declaration: "Изменить заявление",
    every_read_recorded: "Каждый поиск, открытие записи и загрузка записываются MConnect в тот же журнал от вашего имени.",
    search_title: "Поиск в журнале",
    person: "IDNP лица (или IDNO организации)",
    person_hint: "13 цифр. Оставьте пустым для всех лиц.",
    person_invalid: "Введите действительный IDNP или IDNO: 13 цифр с правильной контрольной цифрой",
    consumer: "Потребитель (участник)",
    consumer_hint: "Идентификатор участника, например apl-cahul. Оставьте пустым для всех.",
    consumer_invalid: "Введите идентификатор участника: строчные буквы, цифры и дефисы",
    service: "Услуга",
    any_service: "Любая услуга",
    service_unknown: "Выберите услугу из списка",
    kind: "Тип записи",
    kind_any: "Все",
    kind_exchange: "Обмены данными",
    kind_read: "Чтения журнала аудита",
    kind_invalid: "Выберите тип из списка",
    period_from: "С даты",
    period_to: "По дату (включительно)",
    period_hint: "Даты в UTC. Оставьте пустыми для всего периода.",
    date_invalid: "Введите даты в виде ГГГГ-ММ-ДД",
    period_backwards: "Дата начала должна быть раньше даты окончания",
    search: "Искать",
    results: "Найденные записи, сначала новые",
    no_results: "Ни одна запись не соответствует поиску.",
    when: "Когда",
    subject: "Лицо",
    outcome: "Результат",
    record: "Запись",
    open_record: "Открыть запись",
    accepted: "принято",
    refused: "отказано",
    next_page: "Следующая страница",
    record_title: "Запись аудита",
    event: "Событие",
    received: "Получено",
    answered: "Отвечено",
    consumer_idno: "IDNO потребителя",
    calling_user: "Пользователь (IDNP)",
    provider: "Поставщик",
    service_version: "Версия услуги",
    grant: "Разрешение",
    subjects: "Все затронутые лица",
    represented_party: "Представляемое лицо",
    problem_code: "Код проблемы",
    http_status: "Статус HTTP",
    exchange_id: "Идентификатор обмена",
    request_id: "Идентификатор запроса",
    request_digest: "Отпечаток запроса (SHA-256)",
    response_digest: "Отпечаток ответа (SHA-256)",
    proof: "Доказательство включения",
    evidence: "Доказательства",
    proof_verified: "Доказательство включения проверено по подписанной вершине дерева размером {size}, подписанной брокером {time}.",
    root_hash: "Корень дерева",
    leaf_hash: "Отпечаток листа",
    key_id: "Ключ брокера",
    audit_path: "Путь аудита (отпечатки)",
    export: "Скачать доказательства (JSON lines)",
    export_hint: "Тот же пакет, что и «mconnect audit export»: подписанная вершина дерева, затем запись с доказательством её включения.",
    back_to_search: "Назад к поиску",
    refused_title: "Чтение не выполнено",
    refused_policy: "Брокер не разрешает это чтение с указанными правовым основанием и целью. Укажите другие или проверьте разрешение организации.",
    refused_role: "Ваша организация не зарегистрирована в MConnect как аудитор, поэтому не может читать журнал.",
    refused_rate: "Слишком много чтений за короткое время. Подождите немного и повторите.",
    refused_not_found: "В журнале нет записи с этим номером.",
    refused_pruned: "Эта запись удалена по политике хранения; её отпечаток остаётся в журнале.",
    refused_unavailable: "Журнал аудита сейчас нельзя прочитать, ничего не прочитано. Повторите позже.",
    refused_malformed: "Брокер не смог выполнить этот поиск в таком виде.",
    refused_other: "Брокер отказал в этом чтении.",
    unreachable: "Брокер недоступен, поэтому ничего не прочитано. Повторите позже.",
    invalid_answer: "Ответ брокера не в документированной форме, поэтому он не показан.",
    unverified: "Присланное брокером не проходит проверку: его нельзя представить как доказательство.",
    broker_says: "Пояснение",
};

const EN: Words = Words {
    audit: "Audit log",
    declare_title: "Declare why you are reading the log",
    declare_intro: "Every reading of the audit log is itself recorded, with the legal basis and purpose you declare here and your personal number. The declaration holds until you sign out.",
    declare: "Declare and continue",
    no_grant: "Your organisation holds no active grant to read the audit log (mconnect/audit-log), so there is nothing to declare.",
    purpose: "Purpose",
    legal_basis: "Legal basis",
    choose_purpose: "Choose the purpose of the reading, one of the grant's",
    choose_basis: "Choose the legal basis, one of the grant's",
    there_is_a_problem: "There is a problem",
    reading_as: "Reading as",
    change_declaration: "Change the declaration",
    every_read_recorded: "Every search, record opened and download is recorded by MConnect in this same log, in your name.",
    search_title: "Search the log",
    person: "The person's IDNP (or an organisation's IDNO)",
    person_hint: "13 digits. Leave empty for everyone.",
    person_invalid: "Enter a valid IDNP or IDNO: 13 digits with the right check digit",
    consumer: "Consumer (participant)",
    consumer_hint: "The participant's id, for example apl-cahul. Leave empty for all.",
    consumer_invalid: "Enter a participant id: lower-case letters, digits and hyphens",
    service: "Service",
    any_service: "Any service",
    service_unknown: "Choose a service from the list",
    kind: "Kind of record",
    kind_any: "All",
    kind_exchange: "Data exchanges",
    kind_read: "Readings of the audit log",
    kind_invalid: "Choose a kind from the list",
    period_from: "From",
    period_to: "To (inclusive)",
    period_hint: "Dates in UTC. Leave empty for the whole period.",
    date_invalid: "Enter the dates as YYYY-MM-DD",
    period_backwards: "The start date must come before the end date",
    search: "Search",
    results: "Records found, newest first",
    no_results: "No record matches the search.",
    when: "When",
    subject: "Person",
    outcome: "Outcome",
    record: "Record",
    open_record: "Open record",
    accepted: "accepted",
    refused: "refused",
    next_page: "Next page",
    record_title: "Audit record",
    event: "Event",
    received: "Received",
    answered: "Answered",
    consumer_idno: "Consumer's IDNO",
    calling_user: "User (IDNP)",
    provider: "Provider",
    service_version: "Service version",
    grant: "Grant",
    subjects: "Every person asked about",
    represented_party: "Represented party",
    problem_code: "Problem code",
    http_status: "HTTP status",
    exchange_id: "Exchange id",
    request_id: "Request id",
    request_digest: "Request digest (SHA-256)",
    response_digest: "Response digest (SHA-256)",
    proof: "Inclusion proof",
    evidence: "Evidence",
    proof_verified: "Inclusion proof verified against the signed tree head of size {size}, signed by the broker at {time}.",
    root_hash: "Root hash",
    leaf_hash: "Leaf hash",
    key_id: "Broker key",
    audit_path: "Audit path (hashes)",
    export: "Download the evidence (JSON lines)",
    export_hint: "The same bundle as `mconnect audit export`: the signed tree head, then the record with its inclusion proof.",
    back_to_search: "Back to the search",
    refused_title: "The reading was not done",
    refused_policy: "The broker does not allow this reading under the declared legal basis and purpose. Declare others, or check your organisation's grant.",
    refused_role: "Your organisation is not registered as an auditor on MConnect, so it cannot read the log.",
    refused_rate: "Too many readings in a short time. Wait a moment and try again.",
    refused_not_found: "The log holds no record with this number.",
    refused_pruned: "This record was removed under the retention policy; its hash stays in the log.",
    refused_unavailable: "The audit log cannot be read now, and nothing was read. Try again later.",
    refused_malformed: "The broker could not run this search as it was put.",
    refused_other: "The broker refused this reading.",
    unreachable: "The broker could not be reached, so nothing was read. Try again later.",
    invalid_answer: "The broker's answer is not in the documented form, so it is not shown.",
    unverified: "What the broker sent does not verify: it cannot be shown as evidence.",
    broker_says: "Explanation",
};

impl Words {
    /// The words in `lang`.
    pub fn of(lang: Lang) -> &'static Words {
        match lang {
            Lang::Ro => &RO,
            Lang::Ru => &RU,
            Lang::En => &EN,
        }
    }

    /// The name of the auditor's pages, for a link to them.
    pub fn link(&self) -> &'static str {
        self.audit
    }
}

/// What is wrong with a form: the field's id and the message.
type FieldErrors = Vec<(&'static str, &'static str)>;

/// Why the broker gave nothing to show, in a sentence.
pub struct Problem {
    sentence: &'static str,
    code: String,
    detail: String,
}

/// `/audit` before a declaration, and `/audit/declare`.
#[derive(Template)]
#[template(path = "audit_declare.html")]
pub struct DeclarePage {
    lang_code: &'static str,
    s: &'static Strings,
    w: &'static Words,
    switch: Vec<Switch>,
    title: &'static str,
    csrf: String,
    available: bool,
    purposes: Vec<Choice>,
    bases: Vec<Choice>,
    errors: FieldErrors,
}

/// The search as typed, to fill the form again.
#[derive(Default)]
pub struct SearchForm {
    subject: String,
    client: String,
    service: String,
    event: String,
    from: String,
    to: String,
}

/// One record in the results.
pub struct ResultRow {
    seq: u64,
    when: String,
    consumer: String,
    service: String,
    subject: String,
    refused: bool,
    code: String,
}

/// `/audit` once declared, and `/audit/search`.
#[derive(Template)]
#[template(path = "audit_search.html")]
pub struct SearchPage {
    lang_code: &'static str,
    s: &'static Strings,
    w: &'static Words,
    switch: Vec<Switch>,
    title: &'static str,
    csrf: String,
    purpose: String,
    basis: String,
    official: String,
    organisation: String,
    form: SearchForm,
    services: Vec<Choice>,
    kinds: Vec<Choice>,
    errors: FieldErrors,
    problem: Option<Problem>,
    searched: bool,
    rows: Vec<ResultRow>,
    next_cursor: String,
}

/// What the proof of a record says.
pub struct ProofView {
    verified: String,
    root_hash: String,
    leaf_hash: String,
    key_id: String,
    audit_path: Vec<String>,
}

/// `/audit/records/{seq}`.
#[derive(Template)]
#[template(path = "audit_record.html")]
pub struct RecordPage {
    lang_code: &'static str,
    s: &'static Strings,
    w: &'static Words,
    switch: Vec<Switch>,
    title: String,
    rows: Vec<(&'static str, String)>,
    proof: Option<ProofView>,
    problem: Option<Problem>,
    export: String,
}

/// A signed-in auditor and what their reads go through.
struct Auditor<'p> {
    id: String,
    session: Session,
    official: Official,
    admin: &'p AdminClient,
    auditing: &'p Auditing,
}

impl Auditor<'_> {
    /// A reader under the declared basis and purpose, as the official.
    fn reader<'a>(&'a self, (basis, purpose): &'a (String, String)) -> AuditReader<'a> {
        AuditReader::new(self.admin, basis, purpose, &*self.auditing.check)
            .as_user(&self.official.idnp)
    }
}

/// The signed-in auditor of a request, or the answer to give instead: the
/// sign-in without a session, 403 to anyone without the `auditor` role,
/// 503 when the portal cannot reach the admin API as their organisation.
fn auditor<'p>(
    portal: &'p Portal,
    request: &Request<()>,
    lang: Lang,
) -> Result<Auditor<'p>, Box<Page>> {
    let (id, session, official) = portal.official_session(request, lang)?;
    if !official.has_role("auditor") {
        return Err(Box::new(pages::error(lang, StatusCode::FORBIDDEN, request)));
    }
    let (Some(admin), Some(auditing)) = (
        portal.admin_client(&official.participant),
        portal.auditing.as_ref(),
    ) else {
        return Err(Box::new(pages::error(
            lang,
            StatusCode::SERVICE_UNAVAILABLE,
            request,
        )));
    };
    Ok(Auditor {
        id,
        session,
        official,
        admin,
        auditing,
    })
}

/// The organisation's grant to read the log among `grants`.
fn audit_grant<'g>(grants: &'g [Grant], organisation: &'g str) -> Option<&'g Grant> {
    Lookups::grants_of(grants, organisation).find(|g| g.services.iter().any(|s| s == AUDIT_LOG))
}

/// The organisation's grant to read the log, as the broker holds it now.
async fn grant(portal: &Portal, organisation: &str) -> Option<Grant> {
    let lookups = portal.lookups.as_ref()?;
    lookups.refresh(&portal.admin).await;
    audit_grant(&lookups.snapshot(), organisation).cloned()
}

/// `GET` under `/audit`.
pub(crate) async fn page(
    portal: &Portal,
    request: &Request<()>,
    lang: Lang,
    segments: &[&str],
) -> Page {
    let auditor = match auditor(portal, request, lang) {
        Ok(auditor) => auditor,
        Err(page) => return *page,
    };
    match segments {
        ["audit"] => match &auditor.session.audit_declaration {
            Some(declared) => {
                let view = search_page(portal, lang, &auditor, declared, SearchForm::default());
                pages::private(pages::render(StatusCode::OK, &view))
            }
            None => declare(portal, lang, &auditor, None).await,
        },
        ["audit", "declare"] => declare(portal, lang, &auditor, None).await,
        ["audit", "records", seq] => record(lang, request, &auditor, seq, false).await,
        ["audit", "records", seq, "export"] => record(lang, request, &auditor, seq, true).await,
        _ => pages::error(lang, StatusCode::NOT_FOUND, request),
    }
}

/// `POST` under `/audit`: the declaration and the search.
pub(crate) async fn submit(
    portal: &Portal,
    request: &Request<()>,
    lang: Lang,
    path: &str,
    form: &[(String, String)],
) -> Page {
    let auditor = match auditor(portal, request, lang) {
        Ok(auditor) => auditor,
        Err(page) => return *page,
    };
    match path {
        "/audit/declare" => declare(portal, lang, &auditor, Some(form)).await,
        "/audit/search" => search(portal, lang, &auditor, form).await,
        _ => pages::error(lang, StatusCode::NOT_FOUND, request),
    }
}

/// The declaration page, and the declaration checked against the grant.
async fn declare(
    portal: &Portal,
    lang: Lang,
    auditor: &Auditor<'_>,
    form: Option<&[(String, String)]>,
) -> Page {
    let w = Words::of(lang);
    let grant = grant(portal, &auditor.official.participant).await;
    let (mut basis, mut purpose) = auditor
        .session
        .audit_declaration
        .clone()
        .unwrap_or_default();
    let mut errors = Vec::new();
    if let (Some(form), Some(grant)) = (form, &grant) {
        purpose = crate::form_field(form, "purpose").to_owned();
        basis = crate::form_field(form, "basis").to_owned();
        if !grant.purposes.iter().any(|p| p.code == purpose) {
            errors.push(("purpose", w.choose_purpose));
        }
        if !grant.legal_bases.iter().any(|b| b.id == basis) {
            errors.push(("basis", w.choose_basis));
        }
        if errors.is_empty() {
            portal
                .sessions
                .set_audit_declaration(&auditor.id, (basis, purpose));
            return pages::redirect("/audit");
        }
    }
    let (purposes, bases) = grant
        .as_ref()
        .map(|g| Choice::of_grant(lang, g, &purpose, &basis))
        .unwrap_or_default();
    let view = DeclarePage {
        lang_code: lang.code(),
        s: lang.strings(),
        w,
        switch: pages::switcher(lang, "/audit/declare", None),
        title: w.declare_title,
        csrf: auditor.session.csrf.clone(),
        available: grant.is_some(),
        purposes,
        bases,
        errors,
    };
    let status = match (&grant, view.errors.is_empty()) {
        (None, _) => StatusCode::FORBIDDEN,
        (Some(_), true) => StatusCode::OK,
        (Some(_), false) => StatusCode::BAD_REQUEST,
    };
    pages::private(pages::render(status, &view))
}

/// The search page with `form` filled in and no results.
fn search_page(
    portal: &Portal,
    lang: Lang,
    auditor: &Auditor<'_>,
    (basis, purpose): &(String, String),
    form: SearchForm,
) -> SearchPage {
    let w = Words::of(lang);
    let grant = portal
        .lookups
        .as_ref()
        .and_then(|l| audit_grant(&l.snapshot(), &auditor.official.participant).cloned());
    let purpose_words = grant
        .as_ref()
        .and_then(|g| g.purposes.iter().find(|p| &p.code == purpose))
        .map_or_else(|| purpose.clone(), |p| lang.pick(&p.text).to_owned());
    let basis_words = grant
        .as_ref()
        .and_then(|g| g.legal_bases.iter().find(|b| &b.id == basis))
        .map_or_else(|| basis.clone(), |b| format!("{}, {}", b.act, b.article));
    SearchPage {
        lang_code: lang.code(),
        s: lang.strings(),
        w,
        switch: pages::switcher(lang, "/audit", None),
        title: w.audit,
        csrf: auditor.session.csrf.clone(),
        purpose: purpose_words,
        basis: basis_words,
        official: auditor.official.name.clone(),
        organisation: auditor.official.organisation.clone(),
        form,
        services: Vec::new(),
        kinds: Vec::new(),
        errors: Vec::new(),
        problem: None,
        searched: false,
        rows: Vec::new(),
        next_cursor: String::new(),
    }
    .with_choices(&portal.catalog, lang)
}

impl SearchPage {
    /// The service and kind lists, the form's values selected.
    fn with_choices(mut self, catalog: &Catalog, lang: Lang) -> SearchPage {
        let w = Words::of(lang);
        let mut services: Vec<Choice> = catalog
            .services()
            .map(|svc| Choice {
                value: svc.key.clone(),
                label: format!("{} ({})", lang.pick(&svc.name), svc.key),
                checked: svc.key == self.form.service,
            })
            .collect();
        services.sort_by(|a, b| a.value.cmp(&b.value));
        self.services = services;
        self.kinds = [
            ("", w.kind_any),
            ("exchange", w.kind_exchange),
            ("audit.read", w.kind_read),
        ]
        .into_iter()
        .map(|(value, label)| Choice {
            value: value.to_owned(),
            label: label.to_owned(),
            checked: value == self.form.event,
        })
        .collect();
        self
    }
}

/// The search form read and checked; the search to run, or what is wrong.
fn read_search(
    form: &[(String, String)],
    catalog: &Catalog,
    w: &Words,
) -> (SearchForm, Result<Search, FieldErrors>) {
    let field = |name: &str| {
        crate::form_field(form, name)
            .trim()
            .chars()
            .take(64)
            .collect::<String>()
    };
    let typed = SearchForm {
        subject: field("subject"),
        client: field("client"),
        service: field("service"),
        event: field("event"),
        from: field("from"),
        to: field("to"),
    };
    let mut errors = Vec::new();
    if !typed.subject.is_empty() && !mconnect_sdk::ids::is_valid_national_id(&typed.subject) {
        errors.push(("subject", w.person_invalid));
    }
    if !typed.client.is_empty() && !mconnect_sdk::ids::is_valid_participant_id(&typed.client) {
        errors.push(("client", w.consumer_invalid));
    }
    if !typed.service.is_empty() && catalog.service_by_key(&typed.service).is_none() {
        errors.push(("service", w.service_unknown));
    }
    if !["", "exchange", "audit.read"].contains(&typed.event.as_str()) {
        errors.push(("event", w.kind_invalid));
    }
    let format = time::macros::format_description!("[year]-[month]-[day]");
    let date = |text: &str| -> Result<Option<time::Date>, ()> {
        if text.is_empty() {
            Ok(None)
        } else {
            time::Date::parse(text, &format).map(Some).map_err(|_| ())
        }
    };
    let (from, to) = match (date(&typed.from), date(&typed.to)) {
        (Ok(from), Ok(to)) => {
            if let (Some(start), Some(end)) = (from, to)
                && start > end
            {
                errors.push(("from", w.period_backwards));
            }
            (from, to)
        }
        _ => {
            errors.push(("from", w.date_invalid));
            (None, None)
        }
    };
    if !errors.is_empty() {
        return (typed, Err(errors));
    }
    let some = |text: &str| (!text.is_empty()).then(|| text.to_owned());
    let search = Search {
        subject: some(&typed.subject),
        client: some(&typed.client),
        service: some(&typed.service),
        event: some(&typed.event),
        from: from.map(|d| d.to_string()),
        // The broker's `to` is exclusive; the form's is the last day.
        to: to.and_then(|d| d.next_day()).map(|d| d.to_string()),
        limit: PAGE_SIZE,
    };
    (typed, Ok(search))
}

/// `POST /audit/search`: one page of the log.
async fn search(
    portal: &Portal,
    lang: Lang,
    auditor: &Auditor<'_>,
    form: &[(String, String)],
) -> Page {
    let Some(declared) = &auditor.session.audit_declaration else {
        return pages::redirect("/audit");
    };
    let w = Words::of(lang);
    let (typed, checked) = read_search(form, &portal.catalog, w);
    let mut view = search_page(portal, lang, auditor, declared, typed);
    let search = match checked {
        Ok(search) => search,
        Err(errors) => {
            view.errors = errors;
            return pages::private(pages::render(StatusCode::BAD_REQUEST, &view));
        }
    };
    let cursor = crate::form_field(form, "cursor");
    let cursor = (!cursor.is_empty()
        && cursor.len() <= MAX_CURSOR
        && cursor.bytes().all(|b| b.is_ascii_graphic()))
    .then_some(cursor);
    let status = match auditor.reader(declared).search(&search, cursor).await {
        Ok(page) => {
            view.searched = true;
            view.rows = page.entries.iter().map(row).collect();
            view.next_cursor = page.next_cursor.unwrap_or_default();
            StatusCode::OK
        }
        Err(e) => {
            let (status, problem) = problem(w, &e);
            view.problem = Some(problem);
            status
        }
    };
    pages::private(pages::render(status, &view))
}

fn row(entry: &Entry) -> ResultRow {
    let r = &entry.record;
    ResultRow {
        seq: entry.seq,
        when: readable_time(&r.received_at),
        consumer: r.consumer.clone().unwrap_or_default(),
        service: service_of(&entry.record),
        subject: r
            .subject
            .clone()
            .or_else(|| r.subjects.first().cloned())
            .unwrap_or_default(),
        refused: r.decision == Decision::Refused,
        code: r.problem_code.clone().unwrap_or_default(),
    }
}

/// The record's service as `provider/code` when it names only the code.
fn service_of(record: &mconnect::audit::AuditRecord) -> String {
    match (&record.provider, &record.service) {
        (Some(provider), Some(service)) if !service.contains('/') => {
            format!("{provider}/{service}")
        }
        (_, service) => service.clone().unwrap_or_default(),
    }
}

/// An RFC 3339 time as a person reads it: date and time to the second, UTC.
fn readable_time(rfc3339: &str) -> String {
    rfc3339.get(..19).map_or_else(
        || rfc3339.to_owned(),
        |t| format!("{} UTC", t.replace('T', " ")),
    )
}

/// `GET /audit/records/{seq}` and `…/export`: the record proved against a
/// fresh signed tree head, shown or downloaded.
async fn record(
    lang: Lang,
    request: &Request<()>,
    auditor: &Auditor<'_>,
    seq: &str,
    export: bool,
) -> Page {
    let Some(declared) = &auditor.session.audit_declaration else {
        return pages::redirect("/audit");
    };
    let Ok(seq) = seq.parse::<u64>() else {
        return pages::error(lang, StatusCode::NOT_FOUND, request);
    };
    let w = Words::of(lang);
    let proven = auditor.reader(declared).prove(seq).await;
    if export && let Ok(proven) = &proven {
        return download(seq, proven);
    }
    let mut view = RecordPage {
        lang_code: lang.code(),
        s: lang.strings(),
        w,
        switch: pages::switcher(lang, &format!("/audit/records/{seq}"), None),
        title: format!("{} {seq}", w.record_title),
        rows: Vec::new(),
        proof: None,
        problem: None,
        export: format!("/audit/records/{seq}/export"),
    };
    let status = match proven {
        Ok(proven) => {
            view.rows = fields(w, &proven.entry);
            let sth = &proven.tree_head;
            view.proof = Some(ProofView {
                verified: w
                    .proof_verified
                    .replace("{size}", &sth.tree_size.to_string())
                    .replace("{time}", &signed_at(sth.timestamp)),
                root_hash: STANDARD.encode(sth.root_hash),
                leaf_hash: STANDARD.encode(proven.entry.leaf_hash()),
                key_id: sth.keyid.clone(),
                audit_path: proven
                    .audit_path
                    .iter()
                    .map(|h| STANDARD.encode(h))
                    .collect(),
            });
            StatusCode::OK
        }
        Err(e) => {
            let (status, problem) = problem(w, &e);
            view.problem = Some(problem);
            status
        }
    };
    pages::private(pages::render(status, &view))
}

/// The evidence bundle as a download.
fn download(seq: u64, proven: &Proven) -> Page {
    let mut response = Response::new(Full::new(Bytes::from(proven.bundle())));
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/jsonl; charset=utf-8"),
    );
    if let Ok(disposition) = HeaderValue::from_str(&format!(
        "attachment; filename=\"mconnect-audit-{seq}.jsonl\""
    )) {
        h.insert(header::CONTENT_DISPOSITION, disposition);
    }
    pages::private(response)
}

/// The record's fields as label and value, the empty ones left out.
fn fields(w: &Words, entry: &Entry) -> Vec<(&'static str, String)> {
    let r = &entry.record;
    let text = |v: &Option<String>| v.clone().unwrap_or_default();
    let decision = match r.decision {
        Decision::Accepted => w.accepted,
        Decision::Refused => w.refused,
    };
    [
        (w.event, r.event.clone()),
        (w.received, readable_time(&r.received_at)),
        (w.answered, readable_time(&r.answered_at)),
        (w.consumer, text(&r.consumer)),
        (w.consumer_idno, text(&r.consumer_idno)),
        (w.calling_user, text(&r.calling_user)),
        (w.provider, text(&r.provider)),
        (w.service, service_of(r)),
        (w.service_version, text(&r.service_version)),
        (w.purpose, text(&r.purpose)),
        (w.legal_basis, text(&r.legal_basis)),
        (w.grant, text(&r.grant_id)),
        (w.subject, text(&r.subject)),
        (w.subjects, r.subjects.join(", ")),
        (w.represented_party, text(&r.represented_party)),
        (w.outcome, decision.to_owned()),
        (w.problem_code, text(&r.problem_code)),
        (w.http_status, r.http_status.to_string()),
        (w.exchange_id, r.exchange_id.clone()),
        (w.request_id, text(&r.request_id)),
        (w.request_digest, text(&r.request_sha256)),
        (w.response_digest, text(&r.response_sha256)),
    ]
    .into_iter()
    .filter(|(_, value)| !value.is_empty())
    .collect()
}

/// When a tree head was signed (ms since the epoch), as a person reads it.
fn signed_at(ms: u64) -> String {
    let nanos = i128::from(ms) * 1_000_000;
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .map(|t| readable_time(&mconnect::audit::format_timestamp(t)))
        .unwrap_or_else(|_| format!("{ms} ms"))
}

/// What the page says when the broker gave nothing to show, and its
/// status: a refusal is a page that explains it (as a refused lookup is),
/// a broker out of reach 503, an answer that does not check out 502.
fn problem(w: &Words, error: &ReadError) -> (StatusCode, Problem) {
    let problem = |sentence, code: &str, detail: &str| Problem {
        sentence,
        code: code.to_owned(),
        detail: detail.to_owned(),
    };
    match error {
        ReadError::Refused { code, detail, .. } => {
            let sentence = match code.as_str() {
                c if c.starts_with("policy.") => w.refused_policy,
                "admin.forbidden" => w.refused_role,
                "rate.limited" => w.refused_rate,
                "audit.not_found" => w.refused_not_found,
                "audit.pruned" => w.refused_pruned,
                "audit.unavailable" => w.refused_unavailable,
                "request.malformed" | "audit.out_of_range" => w.refused_malformed,
                _ => w.refused_other,
            };
            (StatusCode::OK, problem(sentence, code, detail))
        }
        ReadError::Unreachable { detail, .. } => {
            tracing::warn!(error = %error, "the audit log could not be read");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                problem(w.unreachable, "", detail),
            )
        }
        ReadError::Unverified(detail) => {
            tracing::error!(error = %error, "what the broker sent does not verify");
            (StatusCode::BAD_GATEWAY, problem(w.unverified, "", detail))
        }
        ReadError::Invalid(_) | ReadError::Write(_) => {
            tracing::error!(error = %error, "the broker's answer is not in the documented form");
            (
                StatusCode::BAD_GATEWAY,
                problem(w.invalid_answer, "", &error.to_string()),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn catalog() -> Catalog {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../catalog");
        Catalog::load_dir(&dir).unwrap()
    }

    fn form(fields: &[(&str, &str)]) -> Vec<(String, String)> {
        fields
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn the_search_form_is_checked_field_by_field() {
        let (catalog, w) = (catalog(), Words::of(Lang::En));
        for (fields, field) in [
            (vec![("subject", "2000000000038")], "subject"),
            (vec![("subject", "20000000000")], "subject"),
            (vec![("client", "Apl Cahul")], "client"),
            (vec![("service", "nobody/nothing")], "service"),
            (vec![("event", "admin.change")], "event"),
            (vec![("from", "yesterday")], "from"),
            (vec![("to", "2026-13-01")], "from"),
            (vec![("from", "2026-02-01"), ("to", "2026-01-31")], "from"),
        ] {
            let (_, checked) = read_search(&form(&fields), &catalog, w);
            let errors = checked.err().unwrap_or_default();
            assert_eq!(
                errors.iter().map(|e| e.0).collect::<Vec<_>>(),
                vec![field],
                "{fields:?}"
            );
        }
        let (typed, checked) = read_search(
            &form(&[
                ("subject", " 2000000000037 "),
                ("client", "apl-cahul"),
                ("service", "asp-rsp/person-by-idnp"),
                ("event", "exchange"),
                ("from", "2026-01-01"),
                ("to", "2026-01-31"),
            ]),
            &catalog,
            w,
        );
        let search = checked.ok().unwrap();
        assert_eq!(typed.subject, "2000000000037");
        assert_eq!(search.subject.as_deref(), Some("2000000000037"));
        assert_eq!(search.client.as_deref(), Some("apl-cahul"));
        assert_eq!(search.service.as_deref(), Some("asp-rsp/person-by-idnp"));
        assert_eq!(search.event.as_deref(), Some("exchange"));
        assert_eq!(search.from.as_deref(), Some("2026-01-01"));
        // The last day is included: the broker's bound is exclusive.
        assert_eq!(search.to.as_deref(), Some("2026-02-01"));
        assert_eq!(search.limit, PAGE_SIZE);
        let (_, everything) = read_search(&form(&[]), &catalog, w);
        let everything = everything.ok().unwrap();
        assert!(everything.subject.is_none() && everything.from.is_none());
    }

    #[test]
    fn refusals_read_as_sentences_with_their_code() {
        let w = Words::of(Lang::En);
        let refused = |code: &str| ReadError::Refused {
            path: "/v1/audit/records".into(),
            status: StatusCode::FORBIDDEN,
            code: code.into(),
            detail: "why".into(),
        };
        for (code, sentence) in [
            ("policy.basis_not_allowed", w.refused_policy),
            ("admin.forbidden", w.refused_role),
            ("rate.limited", w.refused_rate),
            ("audit.not_found", w.refused_not_found),
            ("audit.unavailable", w.refused_unavailable),
            ("something.new", w.refused_other),
        ] {
            let (status, p) = problem(w, &refused(code));
            assert_eq!(
                (status, p.sentence, p.code.as_str()),
                (StatusCode::OK, sentence, code)
            );
            assert_eq!(p.detail, "why");
        }
        let (status, p) = problem(w, &ReadError::Unverified("root".into()));
        assert_eq!(
            (status, p.sentence),
            (StatusCode::BAD_GATEWAY, w.unverified)
        );
        let unreachable = ReadError::Unreachable {
            url: "https://broker".into(),
            detail: "refused".into(),
        };
        assert_eq!(problem(w, &unreachable).0, StatusCode::SERVICE_UNAVAILABLE);
    }

    #[test]
    fn times_read_to_the_second_in_utc() {
        assert_eq!(
            readable_time("2026-11-27T10:48:58.390985Z"),
            "2026-11-27 10:48:58 UTC"
        );
        assert_eq!(readable_time("soon"), "soon");
        assert_eq!(signed_at(1_795_776_556_921), "2026-11-27 10:49:16 UTC");
    }
}
