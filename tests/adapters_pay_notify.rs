//! MPay and MNotify through the real broker: the sandbox (broker, example
//! registers and the adapters as real processes over real TLS) and a real
//! SMTP server on loopback (Python's aiosmtpd, writing each message it
//! accepts to a Maildir).
//!
//! Requires the workspace binaries (`cargo build --workspace --bins
//! --examples`, as tests/run.sh does) and `aiosmtpd`
//! (tests/interop/requirements.txt).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::time::Duration;

use mconnect_cli::sandbox::RunningSandbox;
use mconnect_sdk::{CallOutcome, Consumer};
use serde_json::{Value, json};
use support::smtp::{Smtp, free_port, serve_sandbox, wait_for_mails};

const APL_BASIS: &str = "md-gd-280-2013-mpay";
const APL_REASON: &str = "local-fee-collection";
const PAY_REASON: &str = "citizen-payment";

/// Starts the sandbox on `dir`, MNotify pointed at `smtp_port` when given.
async fn start(dir: &Path, smtp_port: Option<u16>) -> RunningSandbox {
    serve_sandbox(dir, smtp_port);
    mconnect_cli::sandbox::start(&support::args(dir))
        .await
        .expect("sandbox starts")
}

fn consumer(sandbox: &RunningSandbox, participant: &str) -> Consumer {
    sandbox
        .manifest
        .consumer(&sandbox.dir, participant)
        .unwrap()
}

async fn post(c: &Consumer, path: &str, body: &Value, basis: &str, reason: &str) -> CallOutcome {
    let outcome = c
        .call(&support::post(path, &body.to_string(), basis, reason))
        .await
        .unwrap();
    assert!(outcome.receipt.is_ok(), "receipt: {:?}", outcome.receipt);
    outcome
}

async fn get(c: &Consumer, path: &str, basis: &str, reason: &str) -> CallOutcome {
    let outcome = c
        .call(&support::get(path, basis, reason, None))
        .await
        .unwrap();
    assert!(outcome.receipt.is_ok(), "receipt: {:?}", outcome.receipt);
    outcome
}

fn json_of(o: &CallOutcome) -> Value {
    serde_json::from_slice(&o.body)
        .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&o.body)))
}

fn order(key: &str, amount: f64) -> Value {
    json!({
        "service_id": "cahul-taxa-salubrizare",
        "order_key": key,
        "provider": "apl-cahul",
        "payer": {"idnp": "2000000000015", "name": "Ion Popescu"},
        "lines": [{"code": "TL-SAL", "description": "Taxa de salubrizare", "amount": amount}],
        "amount": amount,
        "currency": "MDL",
        "notify": {"email": "taxe@cahul.md"},
        "language": "ro"
    })
}

fn payment(key: &str, payment_id: &str, amount: f64) -> Value {
    json!({
        "service_id": "cahul-taxa-salubrizare",
        "order_key": key,
        "invoice_id": format!("INV-{payment_id}"),
        "payment_id": payment_id,
        "paid_at": "2026-11-23T05:00:00Z",
        "amount": amount,
        "currency": "MDL"
    })
}

async fn notification_status(apl: &Consumer, id: &str) -> Value {
    json_of(
        &get(
            apl,
            &format!("/r1/mnotify/notification-status?id={id}"),
            APL_BASIS,
            APL_REASON,
        )
        .await,
    )
}

async fn wait_for_status(apl: &Consumer, id: &str, status: &str) -> Value {
    let mut last = Value::Null;
    for _ in 0..100 {
        last = notification_status(apl, id).await;
        if last["status"] == status {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("notification {id} never reached {status}: {last}");
}

#[tokio::test(flavor = "multi_thread")]
async fn repeated_payment_confirmation_is_idempotent_and_the_paid_order_is_mailed_to_the_apl() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let smtp = Smtp::start(port, &dir.path().join("maildir")).await;
    let bus = start(dir.path(), Some(port)).await;
    let apl = consumer(&bus, "apl-cahul");
    let portal = consumer(&bus, "mcabinet");

    let created = post(
        &apl,
        "/r1/mpay/order-create",
        &order("CH-T-1", 150.0),
        APL_BASIS,
        APL_REASON,
    )
    .await;
    assert_eq!(
        created.status,
        200,
        "{}",
        String::from_utf8_lossy(&created.body)
    );
    assert_eq!(json_of(&created)["status"], "Active");

    let confirm = |body: Value| {
        let portal = &portal;
        async move {
            post(
                portal,
                "/r1/mpay/payment-confirm",
                &body,
                APL_BASIS,
                PAY_REASON,
            )
            .await
        }
    };
    let first = confirm(payment("CH-T-1", "PAY-1", 100.0)).await;
    assert_eq!(
        first.status,
        200,
        "{}",
        String::from_utf8_lossy(&first.body)
    );
    assert_eq!(json_of(&first)["order_status"], "PartiallyPaid");
    // The same confirmation again: the same answer, counted once.
    let again = confirm(payment("CH-T-1", "PAY-1", 100.0)).await;
    assert_eq!(again.status, 200);
    assert_eq!(json_of(&again), json_of(&first));
    // The same payment id with another amount is refused.
    let conflict = confirm(payment("CH-T-1", "PAY-1", 50.0)).await;
    support::assert_refused(&conflict, 409, "payment.conflict");
    let rest = confirm(payment("CH-T-1", "PAY-2", 50.0)).await;
    assert_eq!(json_of(&rest)["order_status"], "Paid");
    let repeat_of_last = confirm(payment("CH-T-1", "PAY-2", 50.0)).await;
    assert_eq!(json_of(&repeat_of_last), json_of(&rest));

    let details = json_of(
        &get(
            &apl,
            "/r1/mpay/order-details?service_id=cahul-taxa-salubrizare&order_key=CH-T-1",
            APL_BASIS,
            APL_REASON,
        )
        .await,
    );
    assert_eq!(details["status"], "Paid");
    assert_eq!(details["paid_amount"], 150.0);
    assert_eq!(details["payments"].as_array().map(Vec::len), Some(2));

    // MPay told MNotify over the bus; MNotify mailed the APL, once.
    let received = wait_for_mails(&smtp.maildir, 1, Duration::from_secs(30)).await;
    assert_eq!(received.len(), 1, "{received:?}");
    assert!(received[0].contains("taxe@cahul.md"), "{}", received[0]);
    assert!(received[0].contains("CH-T-1"), "{}", received[0]);
    let details = json_of(
        &get(
            &apl,
            "/r1/mpay/order-details?service_id=cahul-taxa-salubrizare&order_key=CH-T-1",
            APL_BASIS,
            APL_REASON,
        )
        .await,
    );
    assert_eq!(details["notice"]["state"], "queued", "{details}");
    bus.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn mail_to_an_smtp_server_that_is_down_arrives_once_when_it_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let bus = start(dir.path(), Some(port)).await;
    let apl = consumer(&bus, "apl-cahul");
    let sent = post(
        &apl,
        "/r1/mnotify/notification-send",
        &json!({
            "recipient": {"email": "rezident@example.md"},
            "template": "document-ready",
            "language": "en",
            "params": {"name": "Ion Popescu", "document": "certificat de domiciliu", "place": "Primăria Cahul"}
        }),
        APL_BASIS,
        APL_REASON,
    )
    .await;
    assert_eq!(sent.status, 202, "{}", String::from_utf8_lossy(&sent.body));
    let id = json_of(&sent)["id"].as_str().unwrap().to_string();

    // Nothing listens: attempts fail and the notification waits.
    let mut status = Value::Null;
    for _ in 0..50 {
        status = notification_status(&apl, &id).await;
        if status["attempts"].as_u64().unwrap_or(0) >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(status["status"], "Sending", "{status}");
    assert!(status["last_error"].is_string(), "{status}");

    let smtp = Smtp::start(port, &dir.path().join("maildir")).await;
    let received = wait_for_mails(&smtp.maildir, 1, Duration::from_secs(30)).await;
    assert_eq!(received.len(), 1, "{received:?}");
    assert!(received[0].contains("is ready"), "{}", received[0]);
    wait_for_status(&apl, &id, "Sent").await;
    assert_eq!(smtp.mails().len(), 1);
    bus.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_queued_notification_survives_an_adapter_restart_and_is_sent_once() {
    let dir = tempfile::tempdir().unwrap();
    // No SMTP server configured: MNotify queues.
    let bus = start(dir.path(), None).await;
    let apl = consumer(&bus, "apl-cahul");
    let sent = post(
        &apl,
        "/r1/mnotify/notification-send",
        &json!({
            "recipient": {"idnp": "2000000000015"},
            "template": "generic",
            "params": {"subject": "Avizul de plată", "body": "Aveți de achitat taxa de salubrizare."},
            "idempotency_key": "restart-1"
        }),
        APL_BASIS,
        APL_REASON,
    )
    .await;
    assert_eq!(sent.status, 202, "{}", String::from_utf8_lossy(&sent.body));
    let id = json_of(&sent)["id"].as_str().unwrap().to_string();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(notification_status(&apl, &id).await["status"], "Sending");
    bus.shutdown().await;

    let port = free_port();
    let smtp = Smtp::start(port, &dir.path().join("maildir")).await;
    let bus = start(dir.path(), Some(port)).await;
    let apl = consumer(&bus, "apl-cahul");
    let received = wait_for_mails(&smtp.maildir, 1, Duration::from_secs(30)).await;
    assert_eq!(received.len(), 1, "{received:?}");
    assert!(
        received[0].contains("2000000000015@cetatean.mnotify.md"),
        "{}",
        received[0]
    );
    wait_for_status(&apl, &id, "Sent").await;
    // The same request again is the same notification: nothing more is sent.
    let repeated = post(
        &apl,
        "/r1/mnotify/notification-send",
        &json!({
            "recipient": {"idnp": "2000000000015"},
            "template": "generic",
            "params": {"subject": "Avizul de plată", "body": "Aveți de achitat taxa de salubrizare."},
            "idempotency_key": "restart-1"
        }),
        APL_BASIS,
        APL_REASON,
    )
    .await;
    assert_eq!(json_of(&repeated)["id"], id.as_str());
    let received = wait_for_mails(&smtp.maildir, 2, Duration::from_secs(2)).await;
    assert_eq!(received.len(), 1, "{received:?}");
    bus.shutdown().await;
}

/// Runs an example scenario against the sandbox in `dir`; returns its stdout.
async fn scenario(name: &str, dir: &Path) -> String {
    let exe = support::examples_dir().join(name);
    let out = tokio::process::Command::new(&exe)
        .arg("--sandbox")
        .arg(dir)
        .output()
        .await
        .unwrap_or_else(|e| panic!("{}: {e} (cargo build --examples)", exe.display()));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{name} failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[tokio::test(flavor = "multi_thread")]
async fn the_two_scenarios_run() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let smtp = Smtp::start(port, &dir.path().join("maildir")).await;
    let bus = start(dir.path(), Some(port)).await;

    let resident = scenario("scenario_resident_check", dir.path()).await;
    assert!(resident.contains("resident of"), "{resident}");

    let fee = scenario("scenario_local_fee", dir.path()).await;
    assert!(fee.contains("order status: Paid"), "{fee}");
    assert!(fee.contains("notice queued in MNotify"), "{fee}");
    let received = wait_for_mails(&smtp.maildir, 1, Duration::from_secs(30)).await;
    assert_eq!(received.len(), 1, "{received:?}");
    bus.shutdown().await;
}

/// A webhook receiver: HTTPS on loopback with the APL's certificate from the
/// sandbox PKI (it names 127.0.0.1), answering 204 and keeping each body.
async fn webhook_receiver(
    pki: &Path,
) -> (
    String,
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    tokio::task::JoinHandle<()>,
) {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let certs = CertificateDer::pem_file_iter(pki.join("apl-cahul.cert.pem"))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(pki.join("apl-cahul.key.pem")).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "https://127.0.0.1:{}/hooks/mnotify",
        listener.local_addr().unwrap().port()
    );
    let bodies = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let kept = bodies.clone();
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let Ok(mut tls) = acceptor.accept(tcp).await else {
                continue;
            };
            // Read the head, then Content-Length bytes of body (bounded).
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            while buf.len() < 64 * 1024 {
                let n = tls.read(&mut chunk).await.unwrap_or(0);
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf).to_string();
                if let Some(end) = text.find("\r\n\r\n") {
                    let length = text[..end]
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse::<usize>().ok())?
                        })
                        .unwrap_or(0);
                    if buf.len() >= end + 4 + length {
                        kept.lock()
                            .unwrap()
                            .push(String::from_utf8_lossy(&buf[end + 4..]).to_string());
                        break;
                    }
                }
            }
            let _ = tls
                .write_all(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n")
                .await;
            let _ = tls.shutdown().await;
        }
    });
    (url, bodies, task)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_webhook_notification_is_delivered_over_https() {
    let dir = tempfile::tempdir().unwrap();
    let bus = start(dir.path(), None).await;
    let (url, bodies, task) = webhook_receiver(&dir.path().join("pki")).await;
    let apl = consumer(&bus, "apl-cahul");
    let sent = post(
        &apl,
        "/r1/mnotify/notification-send",
        &json!({
            "recipient": {"webhook": url},
            "template": "payment-received",
            "language": "ru",
            "params": {"order_key": "CH-W-1", "service": "cahul-taxa-salubrizare", "amount": "150.00", "currency": "MDL", "payment_id": "PAY-W", "paid_at": "2026-11-23T05:00:00Z"}
        }),
        APL_BASIS,
        APL_REASON,
    )
    .await;
    assert_eq!(sent.status, 202, "{}", String::from_utf8_lossy(&sent.body));
    let id = json_of(&sent)["id"].as_str().unwrap().to_string();
    let status = wait_for_status(&apl, &id, "Delivered").await;
    assert_eq!(status["channel"], "webhook");
    let bodies = bodies.lock().unwrap().clone();
    assert_eq!(bodies.len(), 1, "{bodies:?}");
    let body: Value = serde_json::from_str(&bodies[0]).unwrap();
    assert_eq!(body["id"], id.as_str());
    assert!(
        body["subject"].as_str().unwrap().contains("CH-W-1"),
        "{body}"
    );
    task.abort();
    bus.shutdown().await;
}
