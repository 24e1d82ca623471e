//! Scenario: a citizen pays a local fee through MPay and the APL is
//! notified through MNotify.
//!
//! 1. Primăria Cahul (`apl-cahul`) registers a payment order in MPay
//!    (`mpay/order-create`), asking to be told at its e-mail address.
//! 2. The citizen pays through the portal (`mcabinet`), which confirms the
//!    payment to MPay (`mpay/payment-confirm`) — twice, as a payment channel
//!    may, and the second confirmation changes nothing.
//! 3. MPay, now holding a Paid order, calls MNotify over the bus; MNotify
//!    mails the APL. The APL sees the order Paid and the notice queued.
//!
//! Built only on the participant SDK; run against a running sandbox:
//!
//! ```text
//! cargo run --example scenario_local_fee -- --sandbox sandbox
//! ```
//!
//! The mail goes out when the sandbox's MNotify has an SMTP server
//! (`sandbox/adapters/mnotify/smtp` holding `host:port`); without one it
//! stays queued.

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use http::Method;
use mconnect_sdk::{Call, CallOutcome, Consumer, SandboxManifest};
use serde_json::{Value, json};

const BASIS: &str = "md-gd-280-2013-mpay";

#[derive(Parser)]
struct Args {
    /// The sandbox directory (holds sandbox.json).
    #[arg(long, default_value = "sandbox")]
    sandbox: PathBuf,
    /// The citizen's IDNP.
    #[arg(long, default_value = "2000000000015")]
    citizen: String,
    /// Where the APL wants the paid notice.
    #[arg(long, default_value = "taxe@cahul.md")]
    email: String,
    /// The fee, in MDL.
    #[arg(long, default_value_t = 150.0)]
    amount: f64,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let sandbox = SandboxManifest::read(&args.sandbox)?;
    let apl = sandbox.consumer(&args.sandbox, "apl-cahul")?;
    let portal = sandbox.consumer(&args.sandbox, "mcabinet")?;
    let order_key = format!("CH-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let service_id = "cahul-taxa-salubrizare";

    let order = call(
        &apl,
        Method::POST,
        "/r1/mpay/order-create",
        Some(json!({
            "service_id": service_id,
            "order_key": order_key,
            "provider": "apl-cahul",
            "payer": {"idnp": args.citizen},
            "lines": [{"code": "TL-SAL", "description": "Taxa de salubrizare 2026", "amount": args.amount}],
            "amount": args.amount,
            "currency": "MDL",
            "notify": {"email": args.email},
            "language": "ro"
        })),
        &args.citizen,
        "local-fee-collection",
    )
    .await?;
    println!(
        "1. apl-cahul registered order {order_key}: {} MDL, status {}",
        order["amount"], order["status"]
    );

    let payment = json!({
        "service_id": service_id,
        "order_key": order_key,
        "invoice_id": format!("INV-{order_key}"),
        "payment_id": format!("PAY-{order_key}"),
        "paid_at": time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339)?,
        "amount": args.amount,
        "currency": "MDL"
    });
    let first = call(
        &portal,
        Method::POST,
        "/r1/mpay/payment-confirm",
        Some(payment.clone()),
        &args.citizen,
        "citizen-payment",
    )
    .await?;
    let second = call(
        &portal,
        Method::POST,
        "/r1/mpay/payment-confirm",
        Some(payment),
        &args.citizen,
        "citizen-payment",
    )
    .await?;
    println!(
        "2. the citizen paid; MPay confirmed: {} (a repeated confirmation got {})",
        first["order_status"],
        if first == second {
            "the same answer"
        } else {
            "a different answer!"
        }
    );
    if first != second {
        return Err("a repeated confirmation changed the answer".into());
    }

    // MPay tells MNotify right after the payment; wait (bounded) for it.
    let path = format!("/r1/mpay/order-details?service_id={service_id}&order_key={order_key}");
    let mut details = Value::Null;
    for _ in 0..60 {
        details = call(
            &apl,
            Method::GET,
            &path,
            None,
            &args.citizen,
            "local-fee-collection",
        )
        .await?;
        if details["notice"]["state"] != "pending" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    println!(
        "3. apl-cahul sees order status: {}",
        details["status"].as_str().unwrap_or("?")
    );
    match details["notice"]["state"].as_str() {
        Some("queued") => println!(
            "   notice queued in MNotify: notification {} to {}",
            details["notice"]["notification_id"].as_str().unwrap_or("?"),
            args.email
        ),
        other => return Err(format!("the paid notice is {other:?}, not queued").into()),
    }
    Ok(())
}

/// One call; the JSON answer, or an error with the refusal.
async fn call(
    consumer: &Consumer,
    method: Method,
    path: &str,
    body: Option<Value>,
    calling_user: &str,
    reason: &str,
) -> Result<Value, Box<dyn std::error::Error>> {
    let outcome: CallOutcome = consumer
        .call(&Call {
            method,
            path: path.to_string(),
            body: body.map(|b| Bytes::from(b.to_string())),
            calling_user: calling_user.to_string(),
            basis: BASIS.into(),
            reason: reason.into(),
            subject: None,
            represented_party: None,
            request_id: None,
        })
        .await?;
    if let Err(e) = &outcome.receipt {
        return Err(format!("the broker's receipt does not verify: {e}").into());
    }
    if !outcome.status.is_success() {
        return Err(format!(
            "{path} refused ({}): {}",
            outcome.status,
            String::from_utf8_lossy(&outcome.body)
        )
        .into());
    }
    Ok(serde_json::from_slice(&outcome.body)?)
}
