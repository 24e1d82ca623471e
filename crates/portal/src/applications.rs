//! Connection applications for an authority's official (Law 142/2018,
//! GD 211/2019; DOMAIN.md, "The connection procedure"): an administrator of
//! the organisation fills the application (a form of the schema's
//! application, [`form`]), checks it, signs it through MSign, submits it to
//! the broker's admin API as the organisation, follows its state, history
//! and 30-day deadline, and answers a request for changes by editing and
//! signing again.
//!
//! ```text
//!  /applications/new ─► /applications/form ─► /applications/check ─► POST sign
//!   (services)            (validated on          (check your          │ MSign
//!                          the server)            application)        ▼
//!  /applications/{id} ◄── POST submit ◄── /applications/signing (refreshes
//!   (state, deadline,       (broker)        itself until signed: the HTTP
//!                                           `Refresh` header, no script)
//!    history; edit when
//!    changes are asked) ──► /applications/{id}/edit ─► form … (resubmit)
//! ```
//!
//! Signing: the portal asks MSign, as its own participant (`mconnect-portal`,
//! grant `portal-application-signing`: any authority's official signs
//! without their organisation holding an MSign grant of its own), to sign
//! the SHA-256 of the exact application bytes for the official's IDNP, and
//! polls for the result; the signature and the signer's certificate go with
//! the submission (`MConnect-User-Signature`, `MConnect-User-Certificate`),
//! which the organisation's own certificate signs (RFC 9421) through
//! `mconnect::connect::client`. The broker checks both and keeps both as
//! evidence.
//!
//! An authority not yet on the bus applies to join here too: an
//! administrator whose organisation (their session's participant) is not
//! registered fills the applicant part as well (IDNO, name, the system's
//! certificate from the bus CA and its address; the system id is their
//! organisation's), and the portal files the application as its own
//! participant, which has the `intermediary` role, with the official's
//! MSign signature (the broker accepts nothing less from an intermediary).
//! The operator's approval registers the system. Since the portal's own
//! participant may see every application it filed, such an official is
//! shown only those whose applicant system is their organisation.
//!
//! Once registered, the organisation is on the bus but not served here
//! (the portal holds no key of its system): its administrator still
//! follows, read as the portal's own participant, the applications the
//! portal filed for it (state, deadline, history, grants), and the pages
//! say that new applications, and changes to those, are filed by the
//! organisation's own system (as an intermediary the portal may file only
//! for an authority not on the bus: `connect::may_file`). The pages that
//! file (new, form, check, signing, submission, edit) lead back to the
//! list, which says so. The same holds for any organisation on the bus
//! that the portal does not serve: it sees only what the portal filed for
//! it, usually nothing.
//!
//! A registration's certificate is checked with the form, before the
//! official signs: it must chain to the bus CA (`--pki`'s `ca.cert.pem`)
//! and be in date, by `mconnect::registry::admit`, the broker's own check
//! on arrival, with its words and code.
//!
//! Invariants:
//! - only an official with the `administrator` role reaches these pages
//!   (403 for anyone else), and only their own organisation's applications
//!   exist for them: every read and write goes to the broker as their
//!   organisation, which answers 404 for another's; for an organisation not
//!   on the bus, or on it but not served here, as the portal's own
//!   participant, and the portal answers 404 for any application it did not
//!   file or whose applicant system is not theirs;
//! - an application is validated by the broker library's own
//!   `mconnect::connect::validate_application` (and a joining system's
//!   certificate by its `mconnect::registry::admit`), never a second
//!   validator, and its problems are shown word for word;
//! - the bytes signed are the bytes submitted: the draft keeps them from
//!   the check page to the submission, and the signature covers their
//!   SHA-256; changing anything starts the signing again;
//! - a draft lives with its session (keyed by the session id, for the
//!   official who made it) and is gone once submitted;
//! - every submission is recorded in the portal's audit log, and every
//!   state change the portal makes mails the applicant through MNotify
//!   ([`Applications::notify`]).

pub mod form;
pub mod view;
mod words;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use askama::Template;
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use mconnect::catalog::Catalog;
use mconnect::connect::ApplicationProblem;
use mconnect::connect::client::{AdminClient, UserSigned};
use mconnect::trust::TrustAnchors;
use mconnect_sdk::{Call, Consumer};
use serde_json::{Value, json};

use crate::audit::PortalEvent;
use crate::i18n::{Lang, Strings};
use crate::pages::{self, Switch};
use crate::session::{Official, Session};
use crate::{Page, Portal};

pub use words::Words;

/// The largest application form read: texts in three languages for up to
/// fifty services take more than the portal's other forms.
pub const MAX_FORM_BYTES: usize = 256 * 1024;
/// The role that files applications.
pub const ROLE: &str = "administrator";
/// MSign's services the portal signs through.
const SIGN_REQUEST: &str = "/r1/msign/sign-request";
const SIGN_RESULT: &str = "/r1/msign/sign-result";
/// The legal basis and purpose of the portal's MSign calls (its grant
/// `portal-application-signing`).
const SIGN_BASIS: &str = "md-law-91-2014-art-6";
const SIGN_REASON: &str = "connection-application-signing";
/// MNotify's service, and the basis and purpose of the portal's notices
/// (its grant `portal-connection-notices`).
const NOTIFY: &str = "/r1/mnotify/notification-send";
const NOTIFY_BASIS: &str = "md-gd-211-2019-connection";
const NOTIFY_REASON: &str = "connection-request-notification";
/// Drafts kept at most; past it the oldest go.
const MAX_DRAFTS: usize = 10_000;
/// A draft older than a session can be is gone.
const DRAFT_AGE: Duration = crate::session::MAX_AGE;
/// How often the waiting page asks again, in seconds.
const REFRESH_SECS: u32 = 2;

/// What the application pages need: the portal's own participant (to ask
/// MSign and MNotify as itself) and the drafts being filled.
pub struct Applications {
    consumer: Consumer,
    /// The admin API as the portal's own participant (an intermediary),
    /// for authorities not yet on the bus.
    own_admin: Option<AdminClient>,
    /// The bus CA, which a registration's certificate must chain to.
    anchors: Option<TrustAnchors>,
    drafts: Mutex<HashMap<String, Draft>>,
}

/// An application being filled, checked and signed, in one session.
#[derive(Clone)]
struct Draft {
    /// The official filling it (IDNP) and their organisation.
    owner: String,
    organisation: String,
    /// `None` for a new application; the request id for a resubmission.
    target: Option<String>,
    /// The application as last read from the form.
    application: Value,
    /// Why it is resubmitted (what changed).
    reason: String,
    /// The exact bytes, once validated: what is signed and submitted.
    body: Option<Vec<u8>>,
    /// MSign's request id, once asked.
    sign_request: Option<String>,
    /// The signature, once given.
    signed: Option<UserSigned>,
    touched: Instant,
}

impl Applications {
    /// Applications signed through MSign and announced through MNotify as
    /// the portal's own participant (`consumer`).
    pub fn new(consumer: Consumer) -> Applications {
        Applications {
            consumer,
            own_admin: None,
            anchors: None,
            drafts: Mutex::new(HashMap::new()),
        }
    }

    /// Files the applications of authorities not yet on the bus with
    /// `client`, the admin API as the portal's own participant (which the
    /// broker must know as an `intermediary`).
    pub fn with_own_admin(mut self, client: AdminClient) -> Applications {
        self.own_admin = Some(client);
        self
    }

    /// Checks the certificate of a system joining the bus against
    /// `anchors`, the bus CA, when the form is validated: before the
    /// official signs, as the broker checks it on arrival.
    pub fn with_trust(mut self, anchors: TrustAnchors) -> Applications {
        self.anchors = Some(anchors);
        self
    }

    /// The problem with the registration's certificate in `application`,
    /// if any: the broker's own check on arrival (`registry::admit`: chains
    /// to the bus CA, in date now), in its words.
    fn certificate_problem(&self, application: &Value) -> Option<ApplicationProblem> {
        const AT: &str = "/applicant/registration/certificate";
        let anchors = self.anchors.as_ref()?;
        let pem = application.pointer(AT)?.as_str()?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        let refusal = mconnect::registry::admit(anchors, pem, now).err()?;
        Some(ApplicationProblem {
            code: refusal.problem().1,
            pointer: AT.to_owned(),
            reason: refusal.to_string(),
        })
    }

    fn draft(&self, session: &str, official: &Official) -> Option<Draft> {
        let drafts = self.drafts.lock().unwrap_or_else(|e| e.into_inner());
        drafts
            .get(session)
            .filter(|d| {
                d.owner == official.idnp
                    && d.organisation == official.participant
                    && d.touched.elapsed() < DRAFT_AGE
            })
            .cloned()
    }

    fn keep(&self, session: &str, mut draft: Draft) {
        draft.touched = Instant::now();
        let mut drafts = self.drafts.lock().unwrap_or_else(|e| e.into_inner());
        if drafts.len() >= MAX_DRAFTS && !drafts.contains_key(session) {
            drafts.retain(|_, d| d.touched.elapsed() < DRAFT_AGE);
            if drafts.len() >= MAX_DRAFTS
                && let Some(oldest) = drafts
                    .iter()
                    .min_by_key(|(_, d)| d.touched)
                    .map(|(k, _)| k.clone())
            {
                drafts.remove(&oldest);
            }
        }
        drafts.insert(session.to_owned(), draft);
    }

    fn forget(&self, session: &str) {
        self.drafts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(session);
    }

    /// Asks MSign to have `idnp` sign the SHA-256 of `body`; MSign's
    /// request id.
    async fn ask_signature(&self, idnp: &str, body: &[u8], what: &str) -> Result<String, String> {
        let request = json!({
            "content_type": "hash",
            "hash": hex::encode(mconnect::crypto::sha256(body)),
            "description": what.chars().take(500).collect::<String>(),
            "signer_idnp": idnp,
        });
        let out = self
            .call(
                Method::POST,
                SIGN_REQUEST.into(),
                Some(request),
                idnp,
                (SIGN_BASIS, SIGN_REASON),
            )
            .await?;
        out["request_id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| "MSign gave no request id".into())
    }

    /// MSign's answer for `request_id`: `Ok(None)` while it waits for the
    /// signer, the signature once given, `Err` when it failed or expired.
    async fn signature(&self, idnp: &str, request_id: &str) -> Result<Option<UserSigned>, String> {
        let path = format!(
            "{SIGN_RESULT}?{}",
            form_urlencoded::Serializer::new(String::new())
                .append_pair("request_id", request_id)
                .finish()
        );
        let out = self
            .call(Method::GET, path, None, idnp, (SIGN_BASIS, SIGN_REASON))
            .await?;
        match out["status"].as_str() {
            Some("Pending") => Ok(None),
            Some("Success") => {
                if out["signer_idnp"] != idnp {
                    return Err("MSign signed for another person".into());
                }
                match (out["signature"].as_str(), out["certificate"].as_str()) {
                    (Some(signature), Some(certificate)) => Ok(Some(UserSigned {
                        signature: signature.to_owned(),
                        certificate_pem: certificate.to_owned(),
                    })),
                    _ => Err("MSign's answer has no signature or certificate".into()),
                }
            }
            Some(other) => Err(format!(
                "{other}{}",
                out["failure_reason"]
                    .as_str()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default()
            )),
            None => Err("MSign's answer has no status".into()),
        }
    }

    /// One call through the broker as the portal's own participant, with
    /// `calling_user` as `MConnect-Calling-User`; the answer's JSON once the
    /// broker's receipt verified.
    async fn call(
        &self,
        method: Method,
        path: String,
        body: Option<Value>,
        calling_user: &str,
        (basis, reason): (&str, &str),
    ) -> Result<Value, String> {
        let call = Call {
            method,
            path,
            body: body.map(|b| Bytes::from(b.to_string())),
            calling_user: calling_user.to_owned(),
            basis: basis.to_owned(),
            reason: reason.to_owned(),
            subject: None,
            represented_party: None,
            request_id: None,
        };
        let out = self.consumer.call(&call).await.map_err(|e| e.to_string())?;
        if let Err(e) = &out.receipt {
            return Err(format!("the broker's receipt does not verify: {e}"));
        }
        let value: Value = serde_json::from_slice(&out.body).unwrap_or(Value::Null);
        if !out.status.is_success() {
            return Err(value["detail"]
                .as_str()
                .map_or_else(|| out.status.to_string(), str::to_owned));
        }
        Ok(value)
    }

    /// Mails the applicant of `request` (the broker's view of it, after a
    /// transition `action` by `official`) through MNotify: its legal
    /// contact, in the three languages. A notice that cannot be sent is
    /// logged; the transition stands.
    pub async fn notify(&self, request: &Value, action: &str, official: &Official) {
        let Some(email) = request["application"]["contacts"]["legal"]["email"].as_str() else {
            return;
        };
        let id = request["id"].as_str().unwrap_or_default();
        let state = request["state"].as_str().unwrap_or_default();
        let reason = request["history"]
            .as_array()
            .and_then(|h| h.last())
            .and_then(|e| e["reason"].as_str())
            .unwrap_or_default();
        let due = view::when(&request["due_at"]);
        let mut body = String::new();
        for lang in Lang::ALL {
            let w = Words::of(lang);
            body.push_str(&format!(
                "{} {id}: {}.\n{}: {}\n",
                w.mail_request,
                w.transition(action),
                w.state_label,
                w.state(state)
            ));
            if !reason.is_empty() {
                body.push_str(&format!("{}: {reason}\n", w.reason));
            }
            if matches!(state, "submitted" | "under_review" | "resubmitted") {
                body.push_str(&format!("{}: {due}\n", w.due));
            }
            body.push('\n');
        }
        let notice = json!({
            "recipient": {"email": email},
            "template": "generic",
            "language": "ro",
            "params": {
                "subject": format!("MConnect {id}: {}", Words::of(Lang::Ro).state(state)),
                "body": body.trim_end(),
            },
            // One notice per transition, however often it is sent.
            "idempotency_key": format!(
                "{id}:{}",
                request["history"].as_array().map_or(0, Vec::len)
            ),
        });
        if let Err(e) = self
            .call(
                Method::POST,
                NOTIFY.into(),
                Some(notice),
                &official.idnp,
                (NOTIFY_BASIS, NOTIFY_REASON),
            )
            .await
        {
            tracing::warn!(request = id, error = %e, "the applicant was not notified");
        }
    }
}

/// The connection-application pages `official`'s roles open, as
/// (address, text), for the account page.
pub fn links(official: &Official, lang: Lang) -> Vec<(&'static str, &'static str)> {
    let w = Words::of(lang);
    [
        (ROLE, "/applications", w.applications),
        ("operator", "/operator", w.queue),
        ("provider", "/confirmations", w.confirmations),
    ]
    .into_iter()
    .filter(|(role, _, _)| official.has_role(role))
    .map(|(_, href, text)| (href, text))
    .collect()
}

/// A redirect to a path built at run time (never from outside input but
/// ids the broker gave).
pub(crate) fn see_other(location: &str) -> Page {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::SEE_OTHER;
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

/// Whether `id` looks like a connection request id (`cr-2026-000001`), so
/// it can travel in a path to the broker.
pub(crate) fn request_id_ok(id: &str) -> bool {
    id.len() == 14
        && id.starts_with("cr-")
        && id[3..7].bytes().all(|b| b.is_ascii_digit())
        && id.as_bytes()[7] == b'-'
        && id[8..].bytes().all(|b| b.is_ascii_digit())
}

/// Reads a JSON answer of the admin API as the organisation; `Err` with
/// the status to answer (404 for what the broker does not show them).
pub(crate) async fn admin_get(client: &AdminClient, path: &str) -> Result<Value, StatusCode> {
    let request = client
        .plain(Method::GET, path, None)
        .map_err(|_| StatusCode::SERVICE_UNAVAILABLE)?;
    match client.send(request).await {
        Ok((status, body)) if status.is_success() => Ok(body),
        Ok((StatusCode::NOT_FOUND | StatusCode::FORBIDDEN, _)) => Err(StatusCode::NOT_FOUND),
        Ok((status, body)) => {
            tracing::warn!(%status, %body, path, "admin API refused a read");
            Err(StatusCode::SERVICE_UNAVAILABLE)
        }
        Err(e) => {
            tracing::warn!(error = %e, path, "admin API unreachable");
            Err(StatusCode::SERVICE_UNAVAILABLE)
        }
    }
}

/// Records an action on a connection request in the portal's audit log.
pub(crate) async fn record(
    portal: &Portal,
    official: &Official,
    request: &str,
    action: &str,
    status: StatusCode,
    problem: Option<String>,
) {
    let event = PortalEvent::ConnectionRequest {
        idnp: official.idnp.clone(),
        organisation: official.participant.clone(),
        request: request.to_owned(),
        action: action.to_owned(),
        status: status.as_u16(),
        problem,
    };
    let _ = portal.record(&event).await;
}

/// The signed-in administrator, their organisation's admin client and the
/// application pages' state, or the page to answer instead.
struct Applicant<'p> {
    request: &'p Request<()>,
    session_id: String,
    session: Session,
    official: Official,
    client: &'p AdminClient,
    apps: &'p Applications,
    /// How the portal serves the organisation (and which `client` is).
    standing: Standing,
}

impl Applicant<'_> {
    /// Keeps a fresh draft of this official's (nothing asked of MSign yet):
    /// `body` is the exact bytes once the application is valid.
    fn keep_draft(
        &self,
        target: Option<String>,
        application: Value,
        reason: String,
        body: Option<Vec<u8>>,
    ) {
        self.apps.keep(
            &self.session_id,
            Draft {
                owner: self.official.idnp.clone(),
                organisation: self.official.participant.clone(),
                target,
                application,
                reason,
                body,
                sign_request: None,
                signed: None,
                touched: Instant::now(),
            },
        );
    }
}

/// Where the official's organisation stands with the portal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Standing {
    /// The portal serves it (`--hosted`): everything goes to the broker as
    /// the organisation.
    Hosted,
    /// It is not on the bus: it applies to join through the portal's own
    /// participant, an intermediary.
    Joining,
    /// It is on the bus (joined through the portal, typically) but not
    /// served here: it follows, through the portal's own participant, what
    /// the portal filed for it, and files nothing more here.
    Joined,
}

impl Applicant<'_> {
    /// Whether the official may see `request` (the broker's view): the
    /// broker decided for a hosted organisation; otherwise the portal's
    /// own participant reads all it filed, so only those it filed for the
    /// official's organisation.
    fn may_see(&self, request: &Value) -> bool {
        self.standing == Standing::Hosted
            || request["applicant"]["system"] == self.official.participant.as_str()
                && request["filed_by"] == self.client.participant()
    }

    /// Whether the official files (and changes) applications here: not
    /// once their organisation is on the bus without the portal serving
    /// it, since the portal files only for an authority not on the bus.
    fn files(&self) -> bool {
        self.standing != Standing::Joined
    }

    /// The organisation's system, when it is on the bus but not served
    /// here (what the pages then say).
    fn joined(&self) -> Option<String> {
        (self.standing == Standing::Joined).then(|| self.official.participant.clone())
    }
}

async fn applicant<'p>(
    portal: &'p Portal,
    request: &'p Request<()>,
    lang: Lang,
) -> Result<Applicant<'p>, Box<Page>> {
    let (session_id, session, official) = portal.official_session(request, lang)?;
    if !official.has_role(ROLE) {
        return Err(Box::new(pages::error(lang, StatusCode::FORBIDDEN, request)));
    }
    let Some(apps) = portal.applications.as_ref() else {
        return Err(Box::new(pages::error(lang, StatusCode::NOT_FOUND, request)));
    };
    let (client, standing) = match (portal.admin_client(&official.participant), &apps.own_admin) {
        (Some(client), _) => (client, Standing::Hosted),
        // Not hosted here: an organisation not yet on the bus applies to
        // join; one on the bus (it joined, typically through the portal)
        // follows what the portal filed for it.
        (None, Some(own)) => match participants(own).await {
            Ok(known) if known.contains_key(&official.participant) => (own, Standing::Joined),
            Ok(_) => (own, Standing::Joining),
            Err(status) => return Err(Box::new(pages::error(lang, status, request))),
        },
        (None, None) => {
            return Err(Box::new(pages::error(lang, StatusCode::NOT_FOUND, request)));
        }
    };
    Ok(Applicant {
        request,
        session_id,
        session,
        official,
        client,
        apps,
        standing,
    })
}

/// `/applications`.
#[derive(Template)]
#[template(path = "applications.html")]
struct ListPage {
    lang_code: &'static str,
    s: &'static Strings,
    w: &'static Words,
    switch: Vec<Switch>,
    title: &'static str,
    organisation: String,
    rows: Vec<view::RequestRow>,
    /// The organisation's system, when it is on the bus but not served
    /// here: it follows its applications and files no new one here.
    joined: Option<String>,
}

/// One service offered at the start.
struct Offer {
    key: String,
    name: String,
    id: String,
}

/// One register's services offered at the start.
struct OfferGroup {
    register: String,
    services: Vec<Offer>,
}

/// `/applications/new`.
#[derive(Template)]
#[template(path = "application_new.html")]
struct NewPage {
    lang_code: &'static str,
    s: &'static Strings,
    w: &'static Words,
    switch: Vec<Switch>,
    title: &'static str,
    groups: Vec<OfferGroup>,
    error: bool,
}

/// `/applications/form`.
#[derive(Template)]
#[template(path = "application_form.html")]
struct FormPage {
    lang_code: &'static str,
    s: &'static Strings,
    w: &'static Words,
    switch: Vec<Switch>,
    title: &'static str,
    csrf: String,
    organisation: String,
    form: form::FormView,
    resubmission: Option<String>,
    changes_asked: String,
    reason: String,
}

/// `/applications/check`.
#[derive(Template)]
#[template(path = "application_check.html")]
struct CheckPage {
    lang_code: &'static str,
    s: &'static Strings,
    w: &'static Words,
    switch: Vec<Switch>,
    title: &'static str,
    csrf: String,
    sections: Vec<view::Section>,
    sha256: String,
    official: String,
    idnp: String,
    resubmission: Option<String>,
    reason: String,
}

/// `/applications/signing`: waiting, signed, or failed.
#[derive(Template)]
#[template(path = "application_signing.html")]
struct SigningPage {
    lang_code: &'static str,
    s: &'static Strings,
    w: &'static Words,
    switch: Vec<Switch>,
    title: &'static str,
    csrf: String,
    automatic: bool,
    waiting: bool,
    signed: bool,
    failure: String,
    sha256: String,
}

/// `/applications/{id}`.
#[derive(Template)]
#[template(path = "application_show.html")]
struct ShowPage {
    lang_code: &'static str,
    s: &'static Strings,
    w: &'static Words,
    switch: Vec<Switch>,
    title: String,
    id: String,
    state: String,
    state_code: String,
    due: String,
    overdue: bool,
    waiting_on_operator: bool,
    submitted: String,
    version: String,
    just_submitted: bool,
    changes_asked: Option<String>,
    can_edit: bool,
    history: Vec<view::HistoryRow>,
    sections: Vec<view::Section>,
    grants: Vec<(String, String, String)>,
    /// As on the list.
    joined: Option<String>,
}

/// A refusal of the broker, shown as it said it.
#[derive(Template)]
#[template(path = "application_refused.html")]
struct RefusedPage {
    lang_code: &'static str,
    s: &'static Strings,
    w: &'static Words,
    switch: Vec<Switch>,
    title: &'static str,
    detail: String,
    code: String,
    back: String,
}

/// `GET /applications…`.
pub async fn page(portal: &Portal, request: &Request<()>, lang: Lang, segments: &[&str]) -> Page {
    let who = match applicant(portal, request, lang).await {
        Ok(who) => who,
        Err(page) => return *page,
    };
    match segments {
        ["applications"] => list(&who, lang).await,
        // Filing is over for an organisation on the bus that the portal
        // does not serve: the list says why.
        ["applications", "new" | "form" | "check" | "signing"] if !who.files() => {
            see_other("/applications")
        }
        ["applications", "new"] => new(&who, &portal.catalog, lang, false),
        ["applications", "form"] => {
            let query = request.uri().query().unwrap_or("");
            start(portal, &who, lang, query).await
        }
        ["applications", "check"] => check(portal, &who, lang),
        ["applications", "signing"] => signing(&who, lang).await,
        ["applications", id] if request_id_ok(id) => show(portal, &who, lang, id, request).await,
        ["applications", id, "edit"] if request_id_ok(id) => edit(portal, &who, lang, id).await,
        _ => pages::error(lang, StatusCode::NOT_FOUND, request),
    }
}

/// `POST /applications…`.
pub async fn submit(
    portal: &Portal,
    head: &Request<()>,
    lang: Lang,
    path: &str,
    form_fields: &[(String, String)],
) -> Page {
    let who = match applicant(portal, head, lang).await {
        Ok(who) => who,
        Err(page) => return *page,
    };
    match path {
        "/applications/form" | "/applications/sign" | "/applications/submit" if !who.files() => {
            who.apps.forget(&who.session_id);
            see_other("/applications")
        }
        "/applications/form" => fill(portal, &who, lang, form_fields).await,
        "/applications/sign" => sign(&who, lang).await,
        "/applications/submit" => send(portal, &who, lang).await,
        _ => pages::error(lang, StatusCode::NOT_FOUND, head),
    }
}

async fn list(who: &Applicant<'_>, lang: Lang) -> Page {
    let w = Words::of(lang);
    let mut list = match admin_get(who.client, "/v1/connection-requests").await {
        Ok(list) => list,
        Err(status) => return pages::error(lang, status, who.request),
    };
    if let Some(items) = list["connection_requests"].as_array_mut() {
        items.retain(|r| who.may_see(r));
    }
    pages::private(pages::render(
        StatusCode::OK,
        &ListPage {
            lang_code: lang.code(),
            s: lang.strings(),
            w,
            switch: pages::switcher(lang, "/applications", None),
            title: w.applications,
            organisation: who.official.organisation.clone(),
            rows: view::rows(&list, lang, |id| format!("/applications/{id}")),
            joined: who.joined(),
        },
    ))
}

/// The services an application may ask for: the catalog's callable ones,
/// less the broker's own (read on its admin API, never granted this way).
fn offers(catalog: &Catalog, lang: Lang) -> Vec<OfferGroup> {
    let mut groups: Vec<OfferGroup> = Vec::new();
    for register in catalog.registers() {
        let services: Vec<Offer> = catalog
            .services()
            .filter(|s| {
                s.register == register.id
                    && s.is_callable()
                    && s.provider != mconnect::exchange::internal::PROVIDER
            })
            .map(|s| Offer {
                id: format!("s-{}-{}", s.provider, s.code),
                key: s.key.clone(),
                name: lang.pick(&s.name).to_owned(),
            })
            .collect();
        if !services.is_empty() {
            groups.push(OfferGroup {
                register: lang.pick(&register.name).to_owned(),
                services,
            });
        }
    }
    groups
}

fn new(_who: &Applicant<'_>, catalog: &Catalog, lang: Lang, error: bool) -> Page {
    let w = Words::of(lang);
    let status = if error {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    pages::private(pages::render(
        status,
        &NewPage {
            lang_code: lang.code(),
            s: lang.strings(),
            w,
            switch: pages::switcher(lang, "/applications/new", None),
            title: w.new_application,
            groups: offers(catalog, lang),
            error,
        },
    ))
}

/// The broker's participants, id → organisation IDNO, for validation.
async fn participants(client: &AdminClient) -> Result<HashMap<String, String>, StatusCode> {
    Ok(idnos(&admin_get(client, "/v1/participants").await?))
}

/// Id → organisation IDNO of each participant in the broker's list.
fn idnos(list: &Value) -> HashMap<String, String> {
    list["participants"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| {
            Some((
                p["id"].as_str()?.to_owned(),
                p["organisation"]["idno"].as_str()?.to_owned(),
            ))
        })
        .collect()
}

/// The applicant part of the official's organisation, as the broker lists
/// it (for one joining, its name and system, the rest to fill in), and the
/// broker's participants for validation.
async fn organisation(
    who: &Applicant<'_>,
) -> Result<(form::Applicant, HashMap<String, String>), StatusCode> {
    if who.standing == Standing::Joining {
        let participants = participants(who.client).await?;
        let applicant = form::Applicant {
            idno: String::new(),
            name: who.official.organisation.clone(),
            system: who.official.participant.clone(),
            registration: Some((String::new(), String::new())),
        };
        return Ok((applicant, participants));
    }
    let list = admin_get(who.client, "/v1/participants").await?;
    let participants = idnos(&list);
    let own = list["participants"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["id"] == who.official.participant.as_str())
        .ok_or(StatusCode::SERVICE_UNAVAILABLE)?;
    Ok((
        form::Applicant {
            idno: own["organisation"]["idno"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            name: own["organisation"]["name"]
                .as_str()
                .unwrap_or(&who.official.organisation)
                .to_owned(),
            system: who.official.participant.clone(),
            registration: None,
        },
        participants,
    ))
}

/// `GET /applications/form?service=…`: a new application for the chosen
/// services; `?draft` shows the draft again (the check page's "change").
async fn start(portal: &Portal, who: &Applicant<'_>, lang: Lang, query: &str) -> Page {
    let pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    let chose = pairs.iter().any(|(k, _)| k == "service");
    if (pairs.iter().any(|(k, _)| k == "draft") || !chose)
        && let Some(draft) = who.apps.draft(&who.session_id, &who.official)
    {
        let reason = draft.reason.clone();
        return form_page(
            portal,
            who,
            lang,
            &draft.application,
            &[],
            draft.target,
            reason,
            None,
        );
    }
    let services: Vec<String> = pairs
        .into_iter()
        .filter(|(k, _)| k == "service")
        .map(|(_, v)| v)
        .filter(|key| {
            portal
                .catalog
                .service_by_key(key)
                .is_some_and(|s| s.is_callable())
        })
        .take(form::MAX_SERVICES)
        .collect();
    if services.is_empty() {
        return new(who, &portal.catalog, lang, true);
    }
    let (applicant, _) = match organisation(who).await {
        Ok(found) => found,
        Err(status) => return pages::error(lang, status, who.request),
    };
    let application = form::blank(&services, &applicant);
    form_page(
        portal,
        who,
        lang,
        &application,
        &[],
        None,
        String::new(),
        None,
    )
}

#[allow(clippy::too_many_arguments)]
fn form_page(
    portal: &Portal,
    who: &Applicant<'_>,
    lang: Lang,
    application: &Value,
    problems: &[mconnect::connect::ApplicationProblem],
    target: Option<String>,
    reason: String,
    changes_asked: Option<String>,
) -> Page {
    let w = Words::of(lang);
    let view = form::FormView::build(application, &portal.catalog, lang, problems);
    // The other languages show the same form: the draft when this is it,
    // else the services chosen.
    let kept = who
        .apps
        .draft(&who.session_id, &who.official)
        .is_some_and(|d| d.application == *application);
    let suffix = if kept {
        "&draft".to_owned()
    } else {
        view.services
            .iter()
            .map(|s| {
                format!(
                    "&{}",
                    form_urlencoded::Serializer::new(String::new())
                        .append_pair("service", &s.key)
                        .finish()
                )
            })
            .collect()
    };
    let mut switch = pages::switcher(lang, "/applications/form", None);
    for entry in &mut switch {
        entry.href.push_str(&suffix);
    }
    let status = if view.summary.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    pages::private(pages::render(
        status,
        &FormPage {
            lang_code: lang.code(),
            s: lang.strings(),
            w,
            switch,
            title: if target.is_some() {
                w.edit_application
            } else {
                w.new_application
            },
            csrf: who.session.csrf.clone(),
            organisation: who.official.organisation.clone(),
            form: view,
            resubmission: target,
            changes_asked: changes_asked.unwrap_or_default(),
            reason,
        },
    ))
}

/// `POST /applications/form`: reads the application, adds a legal basis
/// row when asked, else validates it with the broker library and, when it
/// holds, keeps it as the draft to check and sign.
async fn fill(
    portal: &Portal,
    who: &Applicant<'_>,
    lang: Lang,
    fields: &[(String, String)],
) -> Page {
    let (applicant, participants) = match organisation(who).await {
        Ok(found) => found,
        Err(status) => return pages::error(lang, status, who.request),
    };
    let earlier = who.apps.draft(&who.session_id, &who.official);
    // A resubmission keeps its target; the form names it, and it must be
    // the draft's own (so no form can resubmit another request).
    let target = crate::form_field(fields, "resubmit").trim();
    let target = (!target.is_empty()).then(|| target.to_owned()).filter(|t| {
        earlier
            .as_ref()
            .is_some_and(|d| d.target.as_deref() == Some(t))
    });
    if !crate::form_field(fields, "resubmit").trim().is_empty() && target.is_none() {
        return pages::error(lang, StatusCode::BAD_REQUEST, who.request);
    }
    // A resubmission keeps the applicant of the request (the broker refuses
    // another), which is the organisation's anyway. One joining the bus
    // fills its own part, but never its system id.
    let applicant = if who.standing == Standing::Joining {
        form::Applicant::joining(fields, &who.official.participant)
    } else {
        applicant
    };
    let application = form::from_form(fields, &applicant, lang);
    let reason = crate::form_field(fields, "reason").trim().to_owned();
    let adding = !crate::form_field(fields, "add_basis").is_empty();
    let body = serde_json::to_vec_pretty(&application).unwrap_or_default();
    let validated = if adding {
        Err(Vec::new())
    } else {
        let mut validated =
            mconnect::connect::validate_application(&body, &portal.catalog, &participants)
                .map(|_| ());
        // The broker's check on arrival of the certificate of a system
        // joining the bus, now rather than after the official signed; once
        // (an unreadable one is reported by the validation already).
        if let Some(problem) = who.apps.certificate_problem(&application) {
            match &mut validated {
                Ok(()) => validated = Err(vec![problem]),
                Err(problems) if !problems.iter().any(|p| p.pointer == problem.pointer) => {
                    problems.push(problem);
                }
                Err(_) => {}
            }
        }
        validated
    };
    match validated {
        Ok(_) => {
            who.keep_draft(target, application, reason, Some(body));
            see_other("/applications/check")
        }
        Err(problems) => {
            // What the form holds now is the draft, not yet valid: the
            // check page waits for a version that is.
            who.keep_draft(target.clone(), application.clone(), reason.clone(), None);
            form_page(
                portal,
                who,
                lang,
                &application,
                &problems,
                target,
                reason,
                None,
            )
        }
    }
}

/// `GET /applications/check`: the application as it will be signed.
fn check(portal: &Portal, who: &Applicant<'_>, lang: Lang) -> Page {
    let Some(draft) = who.apps.draft(&who.session_id, &who.official) else {
        return see_other("/applications");
    };
    let Some(body) = &draft.body else {
        return see_other("/applications/form?draft");
    };
    let w = Words::of(lang);
    pages::private(pages::render(
        StatusCode::OK,
        &CheckPage {
            lang_code: lang.code(),
            s: lang.strings(),
            w,
            switch: pages::switcher(lang, "/applications/check", None),
            title: w.check_application,
            csrf: who.session.csrf.clone(),
            sections: view::sections(&draft.application, &portal.catalog, lang),
            sha256: hex::encode(mconnect::crypto::sha256(body)),
            official: who.official.name.clone(),
            idnp: who.official.idnp.clone(),
            resubmission: draft.target.clone(),
            reason: draft.reason.clone(),
        },
    ))
}

/// The signing page: waiting (refreshing itself when `automatic`), signed,
/// or failed.
///
/// The page refreshes itself with the HTTP `Refresh` header, which browsers
/// follow without script; a `<meta http-equiv="refresh">` element would do
/// the same, but a timed refresh the person cannot stop fails WCAG 2.2.1
/// (axe-core's `meta-refresh`), so the page offers a link that stops it.
fn signing_page(
    who: &Applicant<'_>,
    lang: Lang,
    draft: &Draft,
    failure: Option<String>,
    automatic: bool,
) -> Page {
    let w = Words::of(lang);
    let signed = draft.signed.is_some();
    let waiting = !signed && failure.is_none();
    let mut response = pages::private(pages::render(
        StatusCode::OK,
        &SigningPage {
            lang_code: lang.code(),
            s: lang.strings(),
            w,
            switch: pages::switcher(lang, "/applications/signing", None),
            title: if signed {
                w.signed_title
            } else if waiting {
                w.waiting_title
            } else {
                w.signing_failed
            },
            csrf: who.session.csrf.clone(),
            automatic,
            waiting,
            signed,
            failure: failure.unwrap_or_default(),
            sha256: draft
                .body
                .as_ref()
                .map(|b| hex::encode(mconnect::crypto::sha256(b)))
                .unwrap_or_default(),
        },
    ));
    if waiting
        && automatic
        && let Ok(value) = HeaderValue::from_str(&format!(
            "{REFRESH_SECS}; url=/applications/signing?lang={}",
            lang.code()
        ))
    {
        response.headers_mut().insert("refresh", value);
    }
    response
}

/// `POST /applications/sign`: asks MSign for the official's signature over
/// the SHA-256 of the draft's exact bytes, and shows the waiting page.
async fn sign(who: &Applicant<'_>, lang: Lang) -> Page {
    let Some(mut draft) = who.apps.draft(&who.session_id, &who.official) else {
        return see_other("/applications");
    };
    let Some(body) = draft.body.clone() else {
        return see_other("/applications/form?draft");
    };
    let w = Words::of(lang);
    let what = format!("{} — {}", w.sign_description, who.official.organisation);
    match who
        .apps
        .ask_signature(&who.official.idnp, &body, &what)
        .await
    {
        Ok(id) => {
            draft.sign_request = Some(id);
            draft.signed = None;
            who.apps.keep(&who.session_id, draft.clone());
            signing_page(who, lang, &draft, None, true)
        }
        Err(e) => {
            tracing::warn!(error = %e, "MSign did not take the sign request");
            signing_page(who, lang, &draft, Some(e), false)
        }
    }
}

/// `GET /applications/signing`: asks MSign once whether the official has
/// signed; waits (the page refreshes itself), or offers the submission.
async fn signing(who: &Applicant<'_>, lang: Lang) -> Page {
    let Some(mut draft) = who.apps.draft(&who.session_id, &who.official) else {
        return see_other("/applications");
    };
    // `?manual`: the person stopped the page refreshing itself.
    let automatic = !who
        .request
        .uri()
        .query()
        .is_some_and(|q| form_urlencoded::parse(q.as_bytes()).any(|(k, _)| k == "manual"));
    if draft.signed.is_some() {
        return signing_page(who, lang, &draft, None, automatic);
    }
    let Some(request_id) = draft.sign_request.clone() else {
        return see_other("/applications/check");
    };
    match who.apps.signature(&who.official.idnp, &request_id).await {
        Ok(None) => signing_page(who, lang, &draft, None, automatic),
        Ok(Some(signed)) => {
            draft.signed = Some(signed);
            who.apps.keep(&who.session_id, draft.clone());
            signing_page(who, lang, &draft, None, automatic)
        }
        Err(e) => {
            draft.sign_request = None;
            who.apps.keep(&who.session_id, draft.clone());
            signing_page(who, lang, &draft, Some(e), automatic)
        }
    }
}

/// `POST /applications/submit`: files the signed application with the
/// broker as the organisation (a new one, or the resubmission of the one
/// whose changes were asked), records it, tells the applicant, and shows
/// the request.
async fn send(portal: &Portal, who: &Applicant<'_>, lang: Lang) -> Page {
    let Some(draft) = who.apps.draft(&who.session_id, &who.official) else {
        return see_other("/applications");
    };
    let (Some(body), Some(signed)) = (draft.body.clone(), draft.signed.clone()) else {
        return see_other("/applications/check");
    };
    let (path, action) = match &draft.target {
        None => ("/v1/connection-requests".to_owned(), "submit"),
        Some(id) => {
            let mut path = format!("/v1/connection-requests/{id}/resubmit");
            if !draft.reason.is_empty() {
                path.push('?');
                path.push_str(
                    &form_urlencoded::Serializer::new(String::new())
                        .append_pair("reason", &draft.reason)
                        .finish(),
                );
            }
            (path, "resubmit")
        }
    };
    let request = match who.client.signed_by_user(
        Method::POST,
        &path,
        Bytes::from(body),
        &who.official.idnp,
        &signed,
    ) {
        Ok(request) => request,
        Err(e) => {
            tracing::error!(error = %e, "the submission could not be signed");
            return pages::error(lang, StatusCode::SERVICE_UNAVAILABLE, who.request);
        }
    };
    let target = draft.target.clone().unwrap_or_else(|| "(new)".into());
    match who.client.send(request).await {
        Ok((status, answer)) if status.is_success() => {
            let id = answer["id"].as_str().unwrap_or_default().to_owned();
            who.apps.forget(&who.session_id);
            record(portal, &who.official, &id, action, status, None).await;
            who.apps.notify(&answer, action, &who.official).await;
            if request_id_ok(&id) {
                see_other(&format!(
                    "/applications/{id}?submitted=1&lang={}",
                    lang.code()
                ))
            } else {
                see_other("/applications")
            }
        }
        Ok((status, problem)) => {
            let code = problem["code"].as_str().unwrap_or_default().to_owned();
            record(
                portal,
                &who.official,
                &target,
                action,
                status,
                Some(code.clone()),
            )
            .await;
            let w = Words::of(lang);
            pages::private(pages::render(
                if status.is_client_error() {
                    status
                } else {
                    StatusCode::BAD_GATEWAY
                },
                &RefusedPage {
                    lang_code: lang.code(),
                    s: lang.strings(),
                    w,
                    switch: pages::switcher(lang, "/applications/check", None),
                    title: w.refused_title,
                    detail: problem["detail"].as_str().unwrap_or_default().to_owned(),
                    code,
                    back: "/applications/form?draft".into(),
                },
            ))
        }
        Err(e) => {
            tracing::warn!(error = %e, "the broker's admin API is unreachable");
            pages::error(lang, StatusCode::SERVICE_UNAVAILABLE, who.request)
        }
    }
}

/// The grants of a request: (id, service, status).
pub(crate) fn grants(request: &Value) -> Vec<(String, String, String)> {
    request["grants"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|g| {
            let text = |k: &str| g[k].as_str().unwrap_or_default().to_owned();
            (text("id"), text("service"), text("status"))
        })
        .collect()
}

/// `GET /applications/{id}`: the request's state, deadline and history.
async fn show(
    portal: &Portal,
    who: &Applicant<'_>,
    lang: Lang,
    id: &str,
    request: &Request<()>,
) -> Page {
    let found = match admin_get(who.client, &format!("/v1/connection-requests/{id}")).await {
        Ok(found) if who.may_see(&found) => found,
        Ok(_) => return pages::error(lang, StatusCode::NOT_FOUND, request),
        Err(status) => return pages::error(lang, status, request),
    };
    let w = Words::of(lang);
    let state = found["state"].as_str().unwrap_or_default();
    let allowed = |t: &str| {
        found["allowed_transitions"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x == t))
    };
    let just_submitted = request
        .uri()
        .query()
        .is_some_and(|q| form_urlencoded::parse(q.as_bytes()).any(|(k, _)| k == "submitted"));
    pages::private(pages::render(
        StatusCode::OK,
        &ShowPage {
            lang_code: lang.code(),
            s: lang.strings(),
            w,
            switch: pages::switcher(lang, &format!("/applications/{id}"), None),
            title: format!("{} {id}", w.application),
            id: id.to_owned(),
            state: w.state(state).to_owned(),
            state_code: state.to_owned(),
            due: view::when(&found["due_at"]),
            overdue: found["overdue"] == Value::Bool(true),
            waiting_on_operator: matches!(state, "submitted" | "under_review" | "resubmitted"),
            submitted: view::when(&found["submitted_at"]),
            version: found["version"].to_string(),
            just_submitted,
            changes_asked: view::changes_asked(&found),
            can_edit: allowed("resubmit") && who.files(),
            history: view::history(&found, lang),
            sections: view::sections(&found["application"], &portal.catalog, lang),
            grants: grants(&found),
            joined: who.joined(),
        },
    ))
}

/// `GET /applications/{id}/edit`: the form, filled with the version filed,
/// when the operator asked for changes.
async fn edit(portal: &Portal, who: &Applicant<'_>, lang: Lang, id: &str) -> Page {
    let found = match admin_get(who.client, &format!("/v1/connection-requests/{id}")).await {
        Ok(found) if who.may_see(&found) => found,
        Ok(_) => return pages::error(lang, StatusCode::NOT_FOUND, who.request),
        Err(status) => return pages::error(lang, status, who.request),
    };
    let may = found["allowed_transitions"]
        .as_array()
        .is_some_and(|a| a.iter().any(|x| x == "resubmit"));
    if !may || !who.files() {
        return see_other(&format!("/applications/{id}"));
    }
    let mut application = found["application"].clone();
    if let Some(o) = application.as_object_mut() {
        o.remove("$schema");
    }
    who.keep_draft(
        Some(id.to_owned()),
        application.clone(),
        String::new(),
        None,
    );
    form_page(
        portal,
        who,
        lang,
        &application,
        &[],
        Some(id.to_owned()),
        String::new(),
        view::changes_asked(&found),
    )
}
