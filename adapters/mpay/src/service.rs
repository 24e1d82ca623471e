//! The bus face of MPay: one broker-forwarded request (signature already
//! checked by the SDK) to one backend operation, answered as JSON or an
//! RFC 9457 problem with the backend error's stable code.
//!
//! | Method and path           | Catalog service (catalog/mpay.json) | Operation |
//! | ------------------------- | ----------------------------------- | --------- |
//! | `POST /orders`            | `mpay/order-create`    | a payment order for a service (order key, lines, amount in MDL, payer IDNP/IDNO, the provider participant, where to send the paid notice) → the order |
//! | `GET /orders/details?service_id=&order_key=` | `mpay/order-details` | the order with its status (Active, PartiallyPaid, Paid, Expired, Cancelled) |
//! | `POST /orders/cancel`     | `mpay/order-cancel`    | withdraws an unpaid order |
//! | `POST /payments/confirm`  | `mpay/payment-confirm` | a payment confirmation (service id, order key, invoice id, payment id, paid at, amount, currency, lines) |
//!
//! Invariants: amounts travel as MDL with at most two decimals and reach the
//! backend as whole bani; a confirmation is idempotent — the same payment id
//! with the same details gets the same answer and counts once, with
//! different details it is refused with 409 `payment.conflict`; every
//! confirmation wakes the paid-notice task (`backend::notifier`).

use http::{Method, StatusCode};
use mconnect_sdk::{ProviderRequest, ProviderResponse};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::Notify;

use crate::backend::{
    Confirmation, Line, NewOrder, Order, PayError, Payer, PaymentBackend, now_unix,
};

/// Routes one request forwarded by the broker.
pub fn handle<B: PaymentBackend>(
    backend: &B,
    wake: &Notify,
    request: ProviderRequest,
) -> ProviderResponse {
    let answer = match (&request.method, request.uri.path()) {
        (&Method::POST, "/orders") => create(backend, &request.body),
        (&Method::GET, "/orders/details") => {
            match (
                request.query_param("service_id"),
                request.query_param("order_key"),
            ) {
                (Some(s), Some(k)) => backend
                    .order_details(&s, &k)
                    .map(|o| (StatusCode::OK, order_view(&o))),
                _ => Err(PayError::Invalid(
                    "query parameters `service_id` and `order_key` are required".into(),
                )),
            }
        }
        (&Method::POST, "/orders/cancel") => cancel(backend, &request.body),
        (&Method::POST, "/payments/confirm") => {
            let calling_user = request.header("mconnect-calling-user").unwrap_or("");
            let out = confirm(backend, &request.body, calling_user);
            wake.notify_one();
            out
        }
        _ => {
            return ProviderResponse::problem(
                StatusCode::NOT_FOUND,
                "payment.unknown_path",
                "MPay serves /orders, /orders/details, /orders/cancel and /payments/confirm",
            );
        }
    };
    match answer {
        Ok((status, body)) => ProviderResponse::json(status, &body),
        Err(e) => {
            if let PayError::Storage(reason) = &e {
                tracing::error!(%reason, "storage failed");
            }
            ProviderResponse::problem(e.status(), e.code(), &e.to_string())
        }
    }
}

/// A line as it travels: amount in MDL.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireLine {
    code: String,
    description: String,
    amount: serde_json::Number,
}

/// `order-create` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    service_id: String,
    order_key: String,
    provider: String,
    payer: Payer,
    lines: Vec<WireLine>,
    amount: serde_json::Number,
    currency: String,
    #[serde(default)]
    notify: Option<Value>,
    #[serde(default)]
    language: Option<String>,
    #[serde(default)]
    expires_at: Option<String>,
}

/// `payment-confirm` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfirmBody {
    service_id: String,
    order_key: String,
    invoice_id: String,
    payment_id: String,
    paid_at: String,
    amount: serde_json::Number,
    currency: String,
    #[serde(default)]
    lines: Vec<WireLine>,
}

/// `order-cancel` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OrderRef {
    service_id: String,
    order_key: String,
}

type Answer = Result<(StatusCode, Value), PayError>;

fn parse<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, PayError> {
    serde_json::from_slice(body).map_err(|e| PayError::Invalid(format!("body: {e}")))
}

/// MDL with at most two decimals → bani.
fn bani(n: &serde_json::Number, what: &str) -> Result<i64, PayError> {
    let invalid = || {
        PayError::Invalid(format!(
            "{what}: an amount in MDL with at most two decimals"
        ))
    };
    let x = n.as_f64().ok_or_else(invalid)?;
    let scaled = x * 100.0;
    let rounded = scaled.round();
    if !(0.0..=1e13).contains(&rounded) || (scaled - rounded).abs() > 1e-6 {
        return Err(invalid());
    }
    Ok(rounded as i64)
}

fn mdl(bani: i64) -> Value {
    json!(bani as f64 / 100.0)
}

fn lines(wire: &[WireLine]) -> Result<Vec<Line>, PayError> {
    wire.iter()
        .map(|l| {
            Ok(Line {
                code: l.code.clone(),
                description: l.description.clone(),
                amount: bani(&l.amount, "lines[].amount")?,
            })
        })
        .collect()
}

/// An identifier: 1–64 characters of `A-Z a-z 0-9 . _ -`.
fn check_id(value: &str, what: &str) -> Result<(), PayError> {
    let ok = !value.is_empty()
        && value.len() <= 64
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(PayError::Invalid(format!(
            "{what}: 1-64 characters of letters, digits, `.`, `_`, `-`"
        )))
    }
}

fn create<B: PaymentBackend>(backend: &B, body: &[u8]) -> Answer {
    let b: CreateBody = parse(body)?;
    check_id(&b.service_id, "service_id")?;
    check_id(&b.order_key, "order_key")?;
    check_id(&b.provider, "provider")?;
    let digits = |s: &Option<String>| {
        s.as_ref()
            .is_some_and(|v| v.len() == 13 && v.bytes().all(|c| c.is_ascii_digit()))
    };
    if !(digits(&b.payer.idnp) ^ digits(&b.payer.idno)) {
        return Err(PayError::Invalid(
            "payer: exactly one of idnp, idno (13 digits)".into(),
        ));
    }
    if b.currency != "MDL" {
        return Err(PayError::Invalid("currency must be MDL".into()));
    }
    let amount = bani(&b.amount, "amount")?;
    let lines = lines(&b.lines)?;
    if amount == 0 || lines.is_empty() || lines.iter().map(|l| l.amount).sum::<i64>() != amount {
        return Err(PayError::Invalid(
            "an order has lines, and they add up to its amount (more than 0)".into(),
        ));
    }
    if let Some(notify) = &b.notify {
        let ok = notify.as_object().is_some_and(|o| {
            o.len() == 1
                && (o.get("email").is_some_and(Value::is_string)
                    || o.get("webhook").is_some_and(Value::is_string))
        });
        if !ok {
            return Err(PayError::Invalid(
                "notify: {\"email\": …} or {\"webhook\": \"https://…\"}".into(),
            ));
        }
    }
    let language = b.language.unwrap_or_else(|| "ro".into());
    if !matches!(language.as_str(), "ro" | "ru" | "en") {
        return Err(PayError::Invalid("language: ro, ru or en".into()));
    }
    let expires_at = match &b.expires_at {
        None => None,
        Some(t) => Some(
            time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
                .map_err(|_| PayError::Invalid("expires_at: an RFC 3339 date-time".into()))?
                .unix_timestamp(),
        ),
    };
    let order = backend.create_order(NewOrder {
        service_id: b.service_id,
        order_key: b.order_key,
        provider: b.provider,
        notify: b.notify,
        language,
        payer: b.payer,
        lines,
        amount,
        currency: b.currency,
        expires_at,
    })?;
    Ok((StatusCode::OK, order_view(&order)))
}

fn cancel<B: PaymentBackend>(backend: &B, body: &[u8]) -> Answer {
    let r: OrderRef = parse(body)?;
    let order = backend.cancel_order(&r.service_id, &r.order_key)?;
    Ok((StatusCode::OK, order_view(&order)))
}

fn confirm<B: PaymentBackend>(backend: &B, body: &[u8], calling_user: &str) -> Answer {
    let b: ConfirmBody = parse(body)?;
    check_id(&b.invoice_id, "invoice_id")?;
    check_id(&b.payment_id, "payment_id")?;
    if time::OffsetDateTime::parse(&b.paid_at, &time::format_description::well_known::Rfc3339)
        .is_err()
    {
        return Err(PayError::Invalid("paid_at: an RFC 3339 date-time".into()));
    }
    let answer = backend.confirm_payment(Confirmation {
        amount: bani(&b.amount, "amount")?,
        lines: lines(&b.lines)?,
        service_id: b.service_id.clone(),
        order_key: b.order_key.clone(),
        invoice_id: b.invoice_id,
        payment_id: b.payment_id.clone(),
        paid_at: b.paid_at,
        currency: b.currency,
        calling_user: calling_user.to_string(),
    })?;
    Ok((
        StatusCode::OK,
        json!({
            "service_id": b.service_id,
            "order_key": b.order_key,
            "payment_id": b.payment_id,
            "accepted": true,
            "order_status": answer.order_status,
            "paid_amount": mdl(answer.paid_amount),
            "remaining": mdl(answer.remaining),
            "currency": "MDL",
        }),
    ))
}

/// The order as the services answer it.
fn order_view(o: &Order) -> Value {
    let line =
        |l: &Line| json!({"code": l.code, "description": l.description, "amount": mdl(l.amount)});
    json!({
        "service_id": o.order.service_id,
        "order_key": o.order.order_key,
        "provider": o.order.provider,
        "status": o.status(now_unix()),
        "amount": mdl(o.order.amount),
        "paid_amount": mdl(o.paid()),
        "currency": o.order.currency,
        "payer": o.order.payer,
        "lines": o.order.lines.iter().map(line).collect::<Vec<_>>(),
        "payments": o.payments.values().map(|p| json!({
            "payment_id": p.payment_id,
            "invoice_id": p.invoice_id,
            "paid_at": p.paid_at,
            "amount": mdl(p.amount),
        })).collect::<Vec<_>>(),
        "created_at": o.created_at,
        "notice": {
            "state": o.notice.state,
            "notification_id": o.notice.notification_id,
        },
    })
}
