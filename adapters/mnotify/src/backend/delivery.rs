//! Delivery: the channels (SMTP e-mail, HTTPS webhooks) behind the
//! [`Channels`] trait, where the SMTP server is ([`smtp_server`]), and the
//! worker that drains the queue with bounded exponential backoff.
//!
//! Invariants: one worker sends, one notification at a time, so no
//! notification is ever in two sends at once; the store lock is never held
//! across a send; the outcome of each send is written before the next one
//! starts; a notification leaves `Sending` only on an accepted send
//! (`Sent`/`Delivered`), a permanent refusal, or exhausted attempts (`Failed`).
//! The one window left is a crash after the SMTP server accepted and before
//! `Sent` reached the disk: the message is then sent again with the same
//! `Message-ID`, which receivers use to drop the duplicate.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use mconnect_sdk::adapter::now_rfc3339;
use tokio::sync::{Mutex, Notify};

use super::store::{Channel, Notification, Status, Store};

/// What one send attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendOutcome {
    /// The SMTP server accepted the message, or the webhook answered 2xx.
    Accepted,
    /// Try again later (connection refused, timeout, 4xx SMTP, 5xx HTTP).
    Temporary(String),
    /// Do not try again (5xx SMTP, 4xx HTTP).
    Permanent(String),
    /// No way to send on this channel is configured: wait without spending an attempt.
    NotConfigured,
}

/// The channels a notification can go out on. The reference implementation
/// is [`Network`]; the real MNotify would take the message at this seam.
pub trait Channels: Send + Sync + 'static {
    /// Sends one notification once.
    fn send(&self, n: &Notification) -> impl Future<Output = SendOutcome> + Send;
}

/// Real SMTP and HTTPS.
pub struct Network {
    smtp: Option<AsyncSmtpTransport<Tokio1Executor>>,
    from: lettre::message::Mailbox,
    https: mconnect_sdk::tls::HttpsClient,
}

impl Network {
    /// SMTP to `smtp` (`host:port`, plain SMTP as on a local relay; `None`
    /// queues e-mail only) and webhooks trusting the certificates in `roots`.
    pub fn new(
        smtp: Option<(String, u16)>,
        roots: Vec<rustls_pki_types::CertificateDer<'static>>,
    ) -> Result<Network, String> {
        let smtp = smtp.map(|(host, port)| {
            AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
                .port(port)
                .timeout(Some(Duration::from_secs(10)))
                .build()
        });
        // Webhook targets are outside the bus: trusted by `roots`, no client
        // certificate; built like every other client on the bus.
        let tls = mconnect_sdk::tls::server_auth_client_config(&roots)
            .map_err(|e| format!("webhook trust: {e}"))?;
        let https = mconnect_sdk::tls::https_client(
            &tls,
            mconnect_sdk::tls::ClientOptions {
                http2: false,
                ..Default::default()
            },
        );
        let from = "MNotify <notificari@mnotify.gov.md>"
            .parse()
            .map_err(|e| format!("sender address: {e}"))?;
        Ok(Network { smtp, from, https })
    }

    async fn email(&self, n: &Notification) -> SendOutcome {
        let Some(smtp) = &self.smtp else {
            return SendOutcome::NotConfigured;
        };
        let to: lettre::message::Mailbox = match n.address.parse() {
            Ok(to) => to,
            Err(e) => return SendOutcome::Permanent(format!("address {}: {e}", n.address)),
        };
        let message = lettre::Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(n.subject.clone())
            // The same id on every attempt lets receivers drop a duplicate.
            .message_id(Some(format!("<{}@mnotify.mconnect.md>", n.id)))
            .header(lettre::message::header::ContentType::TEXT_PLAIN)
            .body(body(&n.body));
        let message = match message {
            Ok(m) => m,
            Err(e) => return SendOutcome::Permanent(format!("message: {e}")),
        };
        match smtp.send(message).await {
            Ok(_) => SendOutcome::Accepted,
            Err(e) if e.is_permanent() => SendOutcome::Permanent(format!("smtp: {e}")),
            Err(e) => SendOutcome::Temporary(format!("smtp: {e}")),
        }
    }

    async fn webhook(&self, n: &Notification) -> SendOutcome {
        let body = serde_json::json!({
            "id": n.id,
            "template": n.template,
            "language": n.language,
            "subject": n.subject,
            "body": n.body,
            "created_at": n.created_at,
        });
        let request = http::Request::post(&n.address)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header("idempotency-key", &n.id)
            .body(Full::new(Bytes::from(body.to_string())));
        let request = match request {
            Ok(r) => r,
            Err(e) => return SendOutcome::Permanent(format!("webhook URL: {e}")),
        };
        let sent = tokio::time::timeout(Duration::from_secs(10), self.https.request(request)).await;
        match sent {
            Err(_) => SendOutcome::Temporary("webhook: timed out".into()),
            Ok(Err(e)) => SendOutcome::Temporary(format!("webhook: {e}")),
            Ok(Ok(response)) => {
                let status = response.status();
                // Drain the body so the connection can be reused.
                let _ = response.into_body().collect().await;
                if status.is_success() {
                    SendOutcome::Accepted
                } else if status.is_client_error()
                    && status != http::StatusCode::REQUEST_TIMEOUT
                    && status != http::StatusCode::TOO_MANY_REQUESTS
                {
                    SendOutcome::Permanent(format!("webhook answered {status}"))
                } else {
                    SendOutcome::Temporary(format!("webhook answered {status}"))
                }
            }
        }
    }
}

/// The SMTP server as `(host, port)`: `flag` (`--smtp host:port`), else the
/// one line of `{data}/smtp` (the sandbox starts adapters without extra
/// flags); `None` when neither names one (e-mail is then queued only).
pub fn smtp_server(flag: Option<&str>, data: &Path) -> Result<Option<(String, u16)>, String> {
    let text = match flag {
        Some(s) => s.to_string(),
        None => match std::fs::read_to_string(data.join("smtp")) {
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

/// The body as 8-bit text, readable as it is, when its lines allow (the
/// relays this is for announce 8BITMIME); otherwise lettre's own choice.
fn body(text: &str) -> lettre::message::Body {
    use lettre::message::{Body, header::ContentTransferEncoding};
    Body::new_with_encoding(text.to_string(), ContentTransferEncoding::EightBit)
        .unwrap_or_else(|_| Body::new(text.to_string()))
}

impl Channels for Network {
    async fn send(&self, n: &Notification) -> SendOutcome {
        match n.channel {
            Channel::Email => self.email(n).await,
            Channel::Webhook => self.webhook(n).await,
        }
    }
}

/// Retry policy: the delay before attempt `k + 1` is `base · 2^(k-1)`, at
/// most `cap`; after `max_attempts` failed sends the notification is `Failed`.
#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    /// First delay.
    pub base: Duration,
    /// Largest delay.
    pub cap: Duration,
    /// Sends tried before giving up.
    pub max_attempts: u32,
}

impl Backoff {
    /// The delay after `attempts` failed sends.
    pub fn delay(&self, attempts: u32) -> Duration {
        let factor = 1u32 << attempts.saturating_sub(1).min(20);
        self.base.saturating_mul(factor).min(self.cap)
    }
}

/// Unix time in milliseconds.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Drains the queue forever: wakes on `wake` or every 200 ms, sends what is due.
pub async fn run_worker<C: Channels>(
    store: Arc<Mutex<Store>>,
    channels: Arc<C>,
    backoff: Backoff,
    wake: Arc<Notify>,
) {
    loop {
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
        let due = store.lock().await.due(now_ms());
        for id in due {
            let Some(n) = store.lock().await.get(&id).cloned() else {
                continue;
            };
            let outcome = channels.send(&n).await;
            let mut updated = n;
            match outcome {
                SendOutcome::NotConfigured => continue,
                SendOutcome::Accepted => {
                    updated.status = match updated.channel {
                        Channel::Email => Status::Sent,
                        Channel::Webhook => Status::Delivered,
                    };
                    updated.attempts += 1;
                    updated.sent_at = Some(now_rfc3339());
                    updated.last_error = None;
                }
                SendOutcome::Permanent(reason) => {
                    updated.attempts += 1;
                    updated.status = Status::Failed;
                    updated.last_error = Some(reason);
                }
                SendOutcome::Temporary(reason) => {
                    updated.attempts += 1;
                    updated.last_error = Some(reason);
                    if updated.attempts >= backoff.max_attempts {
                        updated.status = Status::Failed;
                    } else {
                        updated.next_attempt_ms =
                            now_ms() + backoff.delay(updated.attempts).as_millis() as u64;
                    }
                }
            }
            tracing::info!(id = %updated.id, status = ?updated.status, attempts = updated.attempts, error = ?updated.last_error, "send attempt");
            if let Err(e) = store.lock().await.put(updated) {
                // The outcome could not be recorded: stop sending rather than
                // risk sending again what the disk does not know was sent.
                tracing::error!(error = %e, "recording a send failed; the worker stops");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let b = Backoff {
            base: Duration::from_millis(250),
            cap: Duration::from_secs(2),
            max_attempts: 5,
        };
        let delays: Vec<u128> = (1..=6).map(|k| b.delay(k).as_millis()).collect();
        assert_eq!(delays, vec![250, 500, 1000, 2000, 2000, 2000]);
    }
}
