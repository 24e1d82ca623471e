//! The bus face of MNotify: one broker-forwarded request (signature already
//! checked by the SDK) to the queue, answered as JSON or an RFC 9457 problem
//! with a stable code.
//!
//! | Method and path                 | Catalog service (catalog/mnotify.json) | Operation |
//! | ------------------------------- | -------------------------------------- | --------- |
//! | `POST /notifications`           | `mnotify/notification-send`   | a notification to an IDNP, an e-mail address or an HTTPS webhook, from a template (ro/ru/en) with parameters → 202 with its id and status `Sending` |
//! | `GET /notifications/status?id=` | `mnotify/notification-status` | its status (`Sending`, `Sent`, `Delivered`, `Failed`), attempts and last error |
//!
//! Problem codes: `notification.invalid`, `notification.recipient_invalid`,
//! `notification.template_unknown`, `notification.param_missing` (422),
//! `notification.key_conflict` (409), `request.malformed` (400),
//! `notification.unknown` (404), `notification.unknown_path` (404),
//! `notification.store_failed` (503).
//!
//! Invariants: a request is answered only after its notification is on disk;
//! a repeated request with the same `idempotency_key` from the same client
//! gets the first notification back and sends nothing more; a client sees
//! only its own notifications.

use http::{Method, StatusCode};
use mconnect_sdk::adapter::now_rfc3339;
use mconnect_sdk::{ProviderRequest, ProviderResponse};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::backend::LocalBackend;
use crate::backend::delivery::now_ms;
use crate::backend::store::{Channel, Notification, Recipient, Status};
use crate::backend::templates;

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
pub async fn handle(backend: &LocalBackend, request: ProviderRequest) -> ProviderResponse {
    let client = request.header("mconnect-client").unwrap_or("").to_string();
    match (&request.method, request.uri.path()) {
        (&Method::POST, "/notifications") => send(backend, &client, &request.body).await,
        (&Method::GET, "/notifications/status") => {
            let Some(id) = request.query_param("id") else {
                return ProviderResponse::problem(
                    StatusCode::BAD_REQUEST,
                    "request.malformed",
                    "query parameter `id` is required",
                );
            };
            match backend.store.lock().await.get(&id) {
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
async fn send(backend: &LocalBackend, client: &str, body: &[u8]) -> ProviderResponse {
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
            (Channel::Email, backend.resolve_idnp(idnp))
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
    let mut store = backend.store.lock().await;
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
    backend.wake.notify_one();
    ProviderResponse::json(StatusCode::ACCEPTED, &answer)
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
