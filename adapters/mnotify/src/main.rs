//! `mconnect-adapter-mnotify`: MNotify as a provider on the bus, built only
//! on the participant SDK.
//!
//! Services (catalog/mnotify.json):
//! - `POST /notifications` (`notification-send`): a notification to an IDNP,
//!   an e-mail address or an HTTPS webhook, from a template (ro/ru/en) with
//!   parameters → 202 with its id and status `Sending`.
//! - `GET /notifications/status?id=` (`notification-status`): its status
//!   (`Sending`, `Sent`, `Delivered`, `Failed`), attempts and last error.
//!
//! E-mail goes to the SMTP server of `--smtp host:port`, or of the one line
//! in `--data/smtp` when the flag is absent (the sandbox starts adapters
//! without extra flags); with neither, e-mail is queued until one is set.
//! IDNP recipients resolve through `--data/recipients.json` (`{"IDNP":
//! "address"}`), else to `{IDNP}@cetatean.mnotify.md` (the reference
//! backend's deterministic mailbox).
//!
//! Invariants: a request is answered only after its notification is on disk;
//! a repeated request with the same `idempotency_key` from the same client
//! gets the first notification back and sends nothing more; a client sees
//! only its own notifications.

mod delivery;
mod store;
mod templates;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use http::{Method, StatusCode};
use mconnect_sdk::{
    self, Credentials, ProviderRequest, ProviderResponse, ProviderSettings, TrustedKeys,
};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::{Mutex, Notify};

use crate::delivery::{Backoff, Network, now_ms, now_rfc3339};
use crate::store::{Channel, Notification, Recipient, Status, Store};

/// Command line (the sandbox passes the first six).
#[derive(Parser, Clone)]
struct Args {
    /// This adapter's participant id (its key and certificate are in --pki).
    #[arg(long)]
    participant: String,
    /// Directory with ca.cert.pem, broker.cert.pem and {participant}.{cert,key}.pem.
    #[arg(long)]
    pki: PathBuf,
    /// Signature algorithm or key type.
    #[arg(long, default_value = "ed25519")]
    alg: String,
    /// Listen address.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Directory for the queue and the recipient table.
    #[arg(long)]
    data: PathBuf,
    /// The broker (unused: MNotify only answers).
    #[arg(long)]
    broker_url: Option<String>,
    /// SMTP server `host:port`; default: `--data/smtp`, else queue only.
    #[arg(long)]
    smtp: Option<String>,
    /// First retry delay in milliseconds.
    #[arg(long, default_value_t = 250)]
    retry_base_ms: u64,
    /// Largest retry delay in milliseconds.
    #[arg(long, default_value_t = 5000)]
    retry_cap_ms: u64,
    /// Sends tried before a notification is Failed.
    #[arg(long, default_value_t = 12)]
    max_attempts: u32,
}

/// Shared state of the handler.
struct State {
    store: Arc<Mutex<Store>>,
    wake: Arc<Notify>,
    recipients: serde_json::Map<String, Value>,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // First of all: a sandbox that dies while this starts takes it along.
    mconnect_sdk::exit_when_parent_dies();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,mconnect_adapter_mnotify=info".into()),
        )
        .init();
    let args = Args::parse();
    let credentials = Credentials::from_pki_dir(&args.pki, &args.participant, &args.alg)?;
    let broker = TrustedKeys::broker_in_pki_dir(&args.pki)?;
    std::fs::create_dir_all(&args.data)?;
    let smtp = smtp_server(&args)?;
    let recipients = match std::fs::read_to_string(args.data.join("recipients.json")) {
        Ok(text) => serde_json::from_str::<serde_json::Map<String, Value>>(&text)
            .map_err(|e| format!("recipients.json: {e}"))?,
        Err(_) => serde_json::Map::new(),
    };
    let store = Arc::new(Mutex::new(Store::open(&args.data)?));
    let wake = Arc::new(Notify::new());
    let network = Network::new(smtp, credentials.ca.clone())?;
    tokio::spawn(delivery::run_worker(
        store.clone(),
        Arc::new(network),
        Backoff {
            base: Duration::from_millis(args.retry_base_ms),
            cap: Duration::from_millis(args.retry_cap_ms),
            max_attempts: args.max_attempts.max(1),
        },
        wake.clone(),
    ));
    let state = Arc::new(State {
        store,
        wake,
        recipients,
    });
    let server = mconnect_sdk::serve_provider(
        ProviderSettings {
            listen: args.listen,
            credentials,
            broker,
            max_body_bytes: 256 * 1024,
        },
        move |request| {
            let state = state.clone();
            async move { handle(&state, request).await }
        },
    )
    .await?;
    println!("LISTENING https://{}", server.local_addr());
    // Ctrl-C, SIGTERM, or the sandbox that started it is gone.
    mconnect_sdk::until_stopped().await;
    server.shutdown().await;
    Ok(())
}

/// `--smtp`, else the one line of `--data/smtp`, as `(host, port)`.
fn smtp_server(args: &Args) -> Result<Option<(String, u16)>, String> {
    let text = match &args.smtp {
        Some(s) => s.clone(),
        None => match std::fs::read_to_string(args.data.join("smtp")) {
            Ok(s) => s.trim().to_string(),
            Err(_) => return Ok(None),
        },
    };
    if text.is_empty() {
        return Ok(None);
    }
    let (host, port) = text
        .rsplit_once(':')
        .ok_or_else(|| format!("SMTP server `{text}`: write host:port"))?;
    let port = port
        .parse()
        .map_err(|_| format!("SMTP server `{text}`: the port is not a number"))?;
    Ok(Some((host.to_string(), port)))
}

/// A `notification-send` request body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SendRequest {
    recipient: Recipient,
    template: String,
    #[serde(default = "default_language")]
    language: String,
    #[serde(default)]
    params: serde_json::Map<String, Value>,
    #[serde(default)]
    idempotency_key: Option<String>,
}

fn default_language() -> String {
    "ro".into()
}

/// Routes one request forwarded by the broker.
async fn handle(state: &State, request: ProviderRequest) -> ProviderResponse {
    let client = request.header("mconnect-client").unwrap_or("").to_string();
    match (&request.method, request.uri.path()) {
        (&Method::POST, "/notifications") => send(state, &client, &request.body).await,
        (&Method::GET, "/notifications/status") => {
            let Some(id) = request.query_param("id") else {
                return ProviderResponse::problem(
                    StatusCode::BAD_REQUEST,
                    "request.malformed",
                    "query parameter `id` is required",
                );
            };
            match state.store.lock().await.get(&id) {
                Some(n) if n.client == client => ProviderResponse::json(StatusCode::OK, &view(n)),
                _ => ProviderResponse::problem(
                    StatusCode::NOT_FOUND,
                    "notification.unknown",
                    "no notification with this id for this client",
                ),
            }
        }
        _ => ProviderResponse::problem(
            StatusCode::NOT_FOUND,
            "notification.unknown_path",
            "MNotify serves POST /notifications and GET /notifications/status",
        ),
    }
}

/// `notification-send`: validate, render, persist, wake the worker.
async fn send(state: &State, client: &str, body: &[u8]) -> ProviderResponse {
    let bad = |code: &str, detail: &str| {
        ProviderResponse::problem(StatusCode::UNPROCESSABLE_ENTITY, code, detail)
    };
    let req: SendRequest = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => return bad("notification.invalid", &format!("notification: {e}")),
    };
    let (channel, address) = match &req.recipient {
        Recipient::Idnp(idnp) => {
            if idnp.len() != 13 || !idnp.bytes().all(|b| b.is_ascii_digit()) {
                return bad("notification.recipient_invalid", "an IDNP is 13 digits");
            }
            (Channel::Email, resolve_idnp(&state.recipients, idnp))
        }
        Recipient::Email(email) => {
            if email.parse::<lettre::Address>().is_err() {
                return bad(
                    "notification.recipient_invalid",
                    "the e-mail address does not parse",
                );
            }
            (Channel::Email, email.clone())
        }
        Recipient::Webhook(url) => {
            let ok = url
                .parse::<http::Uri>()
                .is_ok_and(|u| u.scheme_str() == Some("https") && u.host().is_some());
            if !ok {
                return bad(
                    "notification.recipient_invalid",
                    "a webhook is an https:// URL",
                );
            }
            (Channel::Webhook, url.clone())
        }
    };
    let (subject, text) = match templates::render(&req.template, &req.language, &req.params) {
        Ok(r) => r,
        Err(e @ templates::RenderError::ParamMissing(_)) => {
            return bad("notification.param_missing", &e.to_string());
        }
        Err(e) => return bad("notification.template_unknown", &e.to_string()),
    };
    let mut store = state.store.lock().await;
    if let Some(key) = &req.idempotency_key
        && let Some(earlier) = store.by_key(client, key)
    {
        let same = earlier.recipient == req.recipient
            && earlier.template == req.template
            && earlier.language == req.language
            && earlier.subject == subject
            && earlier.body == text;
        return if same {
            ProviderResponse::json(StatusCode::OK, &view(earlier))
        } else {
            ProviderResponse::problem(
                StatusCode::CONFLICT,
                "notification.key_conflict",
                "this idempotency_key was used for a different notification",
            )
        };
    }
    let n = Notification {
        id: uuid::Uuid::new_v4().to_string(),
        idempotency_key: req.idempotency_key,
        client: client.to_string(),
        recipient: req.recipient,
        address,
        channel,
        template: req.template,
        language: req.language,
        subject,
        body: text,
        status: Status::Sending,
        attempts: 0,
        next_attempt_ms: now_ms(),
        last_error: None,
        created_at: now_rfc3339(),
        sent_at: None,
    };
    let answer = view(&n);
    if let Err(e) = store.put(n) {
        tracing::error!(error = %e, "queueing a notification failed");
        return ProviderResponse::problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "notification.store_failed",
            "the notification could not be queued; try again",
        );
    }
    drop(store);
    state.wake.notify_one();
    ProviderResponse::json(StatusCode::ACCEPTED, &answer)
}

/// The reference backend's address for a person.
fn resolve_idnp(table: &serde_json::Map<String, Value>, idnp: &str) -> String {
    table
        .get(idnp)
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| format!("{idnp}@cetatean.mnotify.md"))
}

/// The answer about a notification.
fn view(n: &Notification) -> Value {
    json!({
        "id": n.id,
        "status": n.status,
        "channel": n.channel,
        "template": n.template,
        "language": n.language,
        "attempts": n.attempts,
        "created_at": n.created_at,
        "sent_at": n.sent_at,
        "last_error": n.last_error,
    })
}
