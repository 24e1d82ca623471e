//! The paid notice: when an order becomes Paid, its provider is told over
//! the bus. This task calls `mnotify/notification-send` through the broker
//! as the consumer `mpay` (grant `mpay-paid-notice` in
//! policies/adapters-pay-notify.json), with template `payment-received` and
//! the order's `notify` recipient.
//!
//! Invariants: the call carries the idempotency key
//! `mpay:{service_id}:{order_key}`, so retries after a failure or a restart
//! queue one notification, never two; a notice is retried (bounded, with
//! backoff) until MNotify has queued it, and each outcome is recorded in the
//! backend ([`PaymentBackend::set_notice`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Method;
use mconnect_sdk::{Call, Consumer};
use serde_json::{Value, json};
use tokio::sync::Notify;

use super::{Order, PaymentBackend};

/// Legal basis of the paid notice (the grant's `legal_bases[0].id`).
const NOTICE_BASIS: &str = "md-gd-280-2013-mpay";
/// Purpose of the paid notice (the grant's `purposes[0].code`).
const NOTICE_PURPOSE: &str = "payment-notification";
/// Attempts at calling MNotify before a notice is `failed`.
const NOTICE_ATTEMPTS: u32 = 10;

/// Sends pending paid notices to MNotify over the bus, retrying with
/// bounded exponential backoff; wakes on `wake` or every 500 ms.
pub async fn run_notifier<B: PaymentBackend>(
    backend: Arc<B>,
    consumer: Consumer,
    wake: Arc<Notify>,
) {
    // When each order may be tried again; in memory, since a restart may as
    // well try at once.
    let mut not_before: HashMap<(String, String), Instant> = HashMap::new();
    loop {
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
        for (service_id, order_key) in backend.pending_notices() {
            let id = (service_id.clone(), order_key.clone());
            if not_before.get(&id).is_some_and(|t| Instant::now() < *t) {
                continue;
            }
            let Ok(order) = backend.order_details(&service_id, &order_key) else {
                continue;
            };
            let mut notice = order.notice.clone();
            match notify(&consumer, &order).await {
                Ok(notification_id) => {
                    notice.state = "queued".into();
                    notice.notification_id = Some(notification_id);
                    not_before.remove(&id);
                }
                Err(reason) => {
                    notice.attempts += 1;
                    tracing::warn!(%service_id, %order_key, attempts = notice.attempts, %reason, "paid notice not accepted");
                    if notice.attempts >= NOTICE_ATTEMPTS {
                        notice.state = "failed".into();
                    }
                    let delay = Duration::from_millis(500u64 << notice.attempts.min(6));
                    not_before.insert(id, Instant::now() + delay);
                }
            }
            if let Err(e) = backend.set_notice(&service_id, &order_key, notice) {
                tracing::error!(error = %e, "recording a paid notice failed");
            }
        }
    }
}

/// One call to `mnotify/notification-send`; the notification id on success.
async fn notify(consumer: &Consumer, order: &Order) -> Result<String, String> {
    let recipient = order.order.notify.clone().ok_or("no recipient")?;
    let paid_at = order
        .payments
        .values()
        .map(|p| p.paid_at.as_str())
        .max()
        .unwrap_or("");
    let last_payment = order
        .payments
        .values()
        .max_by(|a, b| a.paid_at.cmp(&b.paid_at))
        .map(|p| p.payment_id.as_str())
        .unwrap_or("");
    let body = json!({
        "recipient": recipient,
        "template": "payment-received",
        "language": order.order.language,
        "params": {
            "order_key": order.order.order_key,
            "service": order.order.service_id,
            "amount": format!("{:.2}", order.order.amount as f64 / 100.0),
            "currency": order.order.currency,
            "payment_id": last_payment,
            "paid_at": paid_at,
        },
        "idempotency_key": format!("mpay:{}:{}", order.order.service_id, order.order.order_key),
    });
    let calling_user = order
        .notice
        .calling_user
        .clone()
        .or_else(|| order.order.payer.idnp.clone())
        .unwrap_or_default();
    let outcome = consumer
        .call(&Call {
            method: Method::POST,
            path: "/r1/mnotify/notification-send".into(),
            body: Some(Bytes::from(body.to_string())),
            calling_user,
            basis: NOTICE_BASIS.into(),
            reason: NOTICE_PURPOSE.into(),
            subject: None,
            represented_party: None,
            request_id: None,
        })
        .await
        .map_err(|e| e.to_string())?;
    if !outcome.status.is_success() {
        return Err(format!(
            "{}: {}",
            outcome.status,
            String::from_utf8_lossy(&outcome.body)
        ));
    }
    let value: Value = serde_json::from_slice(&outcome.body).map_err(|e| e.to_string())?;
    value["id"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| "MNotify answered without an id".into())
}
