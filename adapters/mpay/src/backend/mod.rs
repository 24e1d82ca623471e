//! The payment backend: [`PaymentBackend`], shaped after the real MPay
//! integration (the provider's `GetOrderDetails` and MPay's
//! `ConfirmOrderPayment`, keyed by service id and order key), and
//! [`LocalBackend`], the reference implementation persisted in `--data`;
//! [`notifier`] is its external effect, the paid notice sent over the bus.
//!
//! Invariants: amounts are whole bani (1/100 MDL), never floats; an order's
//! paid amount is the sum of its distinct payment ids, so a repeated
//! confirmation counts once; a payment id names one payment for ever — a
//! repeat that differs in any field is refused (`payment.conflict`); every
//! change is on disk (`mconnect_sdk::adapter::write_atomic`) before it is
//! answered.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use mconnect_sdk::adapter::{now_rfc3339, write_atomic};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub mod notifier;

/// Order status, as MPay names them.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum OrderStatus {
    /// Nothing paid yet.
    Active,
    /// Some paid, some left.
    PartiallyPaid,
    /// Paid in full.
    Paid,
    /// Its payment deadline passed before it was paid.
    Expired,
    /// Withdrawn by the service provider.
    Cancelled,
}

/// One line of an order or a payment (a fee or tax with its amount).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Line {
    /// Line code (the fee's or tax's code).
    pub code: String,
    /// What it is for.
    pub description: String,
    /// Amount in bani.
    pub amount: i64,
}

/// Who pays.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Payer {
    /// IDNP of a natural person.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idnp: Option<String>,
    /// IDNO of a legal person.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idno: Option<String>,
    /// Name as printed on the receipt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// A new order, as the service provider registers it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct NewOrder {
    /// MPay service id.
    pub service_id: String,
    /// The provider's key of the order.
    pub order_key: String,
    /// The provider participant the order belongs to (told when it is paid).
    pub provider: String,
    /// Where the provider wants the paid notice: an MNotify recipient
    /// (`{"email": …}` or `{"webhook": …}`); none means no notice.
    pub notify: Option<Value>,
    /// Language of the notice (ro, ru, en).
    pub language: String,
    /// Payer.
    pub payer: Payer,
    /// Lines; their sum is the amount.
    pub lines: Vec<Line>,
    /// Total in bani.
    pub amount: i64,
    /// Always MDL.
    pub currency: String,
    /// Unix seconds after which an unpaid order expires.
    pub expires_at: Option<i64>,
}

/// A recorded payment.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Payment {
    /// MPay's payment id.
    pub payment_id: String,
    /// MPay's invoice id.
    pub invoice_id: String,
    /// When it was paid (RFC 3339).
    pub paid_at: String,
    /// Amount in bani.
    pub amount: i64,
    /// Currency.
    pub currency: String,
    /// Lines paid.
    pub lines: Vec<Line>,
    /// The answer given the first time, repeated to every identical repeat.
    pub answer: ConfirmAnswer,
}

/// How the provider is being told of a full payment.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct NoticeState {
    /// `none` (nobody to tell), `pending` (to be sent over the bus),
    /// `queued` (MNotify accepted it), `failed` (attempts exhausted).
    pub state: String,
    /// MNotify's notification id once queued.
    pub notification_id: Option<String>,
    /// Attempts at calling MNotify.
    pub attempts: u32,
    /// The calling user of the payment that completed the order (the bus
    /// call that tells the provider is made on that person's action).
    pub calling_user: Option<String>,
}

/// An order and its payments.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Order {
    /// What was asked for.
    pub order: NewOrder,
    /// Set when the provider cancelled it.
    pub cancelled: bool,
    /// Payments by payment id.
    pub payments: BTreeMap<String, Payment>,
    /// RFC 3339.
    pub created_at: String,
    /// The paid notice.
    pub notice: NoticeState,
}

impl Order {
    /// Sum of the payments.
    pub fn paid(&self) -> i64 {
        self.payments.values().map(|p| p.amount).sum()
    }

    /// The status at `now` (unix seconds).
    pub fn status(&self, now: i64) -> OrderStatus {
        let paid = self.paid();
        if paid >= self.order.amount {
            OrderStatus::Paid
        } else if self.cancelled {
            OrderStatus::Cancelled
        } else if self.order.expires_at.is_some_and(|t| now >= t) {
            OrderStatus::Expired
        } else if paid > 0 {
            OrderStatus::PartiallyPaid
        } else {
            OrderStatus::Active
        }
    }
}

/// A payment confirmation, as MPay sends it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Confirmation {
    /// MPay service id.
    pub service_id: String,
    /// Order key.
    pub order_key: String,
    /// Invoice id.
    pub invoice_id: String,
    /// Payment id.
    pub payment_id: String,
    /// RFC 3339.
    pub paid_at: String,
    /// Amount in bani.
    pub amount: i64,
    /// Currency.
    pub currency: String,
    /// Lines paid.
    pub lines: Vec<Line>,
    /// Calling user of the confirming call.
    pub calling_user: String,
}

/// What a confirmation established.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ConfirmAnswer {
    /// Order status right after this payment.
    pub order_status: OrderStatus,
    /// Paid in total right after it, in bani.
    pub paid_amount: i64,
    /// Left to pay, in bani.
    pub remaining: i64,
}

/// Why an operation was refused. Each variant has its stable code.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PayError {
    /// Invalid parameter.
    #[error("{0}")]
    Invalid(String),
    /// No order of this service yet.
    #[error("service `{0}` has no orders here: check the service id")]
    UnknownService(String),
    /// No such order.
    #[error("no order `{0}` for this service")]
    UnknownOrder(String),
    /// The same order key with different content.
    #[error("order `{0}` exists with different content: use a new order key")]
    OrderConflict(String),
    /// The same payment id with different content.
    #[error("payment `{0}` was confirmed with different details")]
    PaymentConflict(String),
    /// Payment on an order that is Paid, Expired or Cancelled.
    #[error("order is {0:?} and takes no payment")]
    NotPayable(OrderStatus),
    /// More than what is left.
    #[error("the payment is more than the {0} bani left to pay")]
    Overpaid(i64),
    /// The disk.
    #[error("storage: {0}")]
    Storage(String),
}

impl PayError {
    /// Stable problem code.
    pub fn code(&self) -> &'static str {
        match self {
            PayError::Invalid(_) => "request.invalid_parameter",
            PayError::UnknownService(_) => "payment.unknown_service",
            PayError::UnknownOrder(_) => "payment.unknown_order",
            PayError::OrderConflict(_) => "order.conflict",
            PayError::PaymentConflict(_) => "payment.conflict",
            PayError::NotPayable(_) => "order.not_payable",
            PayError::Overpaid(_) => "payment.amount_exceeds",
            PayError::Storage(_) => "payment.store_failed",
        }
    }

    /// HTTP status.
    pub fn status(&self) -> http::StatusCode {
        use http::StatusCode as S;
        match self {
            PayError::Invalid(_) | PayError::Overpaid(_) => S::UNPROCESSABLE_ENTITY,
            PayError::UnknownService(_) | PayError::UnknownOrder(_) => S::NOT_FOUND,
            PayError::OrderConflict(_) | PayError::PaymentConflict(_) | PayError::NotPayable(_) => {
                S::CONFLICT
            }
            PayError::Storage(_) => S::SERVICE_UNAVAILABLE,
        }
    }
}

/// The payment side of MPay, as the adapter uses it. A deployment points an
/// implementation of this at the real MPay; [`LocalBackend`] keeps orders on disk.
pub trait PaymentBackend: Send + Sync + 'static {
    /// Registers an order; the same order again is answered as the first time.
    fn create_order(&self, order: NewOrder) -> Result<Order, PayError>;
    /// `GetOrderDetails`.
    fn order_details(&self, service_id: &str, order_key: &str) -> Result<Order, PayError>;
    /// Cancels an unpaid order.
    fn cancel_order(&self, service_id: &str, order_key: &str) -> Result<Order, PayError>;
    /// `ConfirmOrderPayment`: idempotent under repetition.
    fn confirm_payment(&self, confirmation: Confirmation) -> Result<ConfirmAnswer, PayError>;
    /// Orders whose paid notice is still to be sent, as `(service_id, order_key)`.
    fn pending_notices(&self) -> Vec<(String, String)>;
    /// Records the outcome of an attempt at the paid notice.
    fn set_notice(
        &self,
        service_id: &str,
        order_key: &str,
        notice: NoticeState,
    ) -> Result<(), PayError>;
}

/// The reference backend: every order in `--data/orders.json`.
pub struct LocalBackend {
    dir: PathBuf,
    orders: std::sync::Mutex<BTreeMap<String, Order>>,
}

fn key(service_id: &str, order_key: &str) -> String {
    format!("{service_id}\u{1f}{order_key}")
}

impl LocalBackend {
    /// Loads `data/orders.json` (absent: no orders yet).
    pub fn open(data: &Path) -> Result<LocalBackend, PayError> {
        std::fs::create_dir_all(data).map_err(|e| PayError::Storage(e.to_string()))?;
        let orders = match std::fs::read_to_string(data.join("orders.json")) {
            Ok(text) => serde_json::from_str(&text)
                .map_err(|e| PayError::Storage(format!("orders.json: {e}")))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(PayError::Storage(e.to_string())),
        };
        Ok(LocalBackend {
            dir: data.to_path_buf(),
            orders: std::sync::Mutex::new(orders),
        })
    }

    /// Applies `change` to a copy, writes the copy, then keeps it: a failed
    /// write leaves memory as the disk is.
    fn update<T>(
        &self,
        change: impl FnOnce(&mut BTreeMap<String, Order>) -> Result<T, PayError>,
    ) -> Result<T, PayError> {
        let mut guard = self
            .orders
            .lock()
            .map_err(|_| PayError::Storage("state lock poisoned".into()))?;
        let mut next = guard.clone();
        let out = change(&mut next)?;
        save(&self.dir, "orders.json", &next)?;
        *guard = next;
        Ok(out)
    }

    fn read<T>(&self, f: impl FnOnce(&BTreeMap<String, Order>) -> T) -> Result<T, PayError> {
        let guard = self
            .orders
            .lock()
            .map_err(|_| PayError::Storage("state lock poisoned".into()))?;
        Ok(f(&guard))
    }
}

fn lookup<'a>(
    orders: &'a mut BTreeMap<String, Order>,
    service_id: &str,
    order_key: &str,
) -> Result<&'a mut Order, PayError> {
    if !orders.values().any(|o| o.order.service_id == service_id) {
        return Err(PayError::UnknownService(service_id.to_string()));
    }
    orders
        .get_mut(&key(service_id, order_key))
        .ok_or_else(|| PayError::UnknownOrder(order_key.to_string()))
}

impl PaymentBackend for LocalBackend {
    fn create_order(&self, order: NewOrder) -> Result<Order, PayError> {
        self.update(|orders| {
            let k = key(&order.service_id, &order.order_key);
            if let Some(existing) = orders.get(&k) {
                return if existing.order == order {
                    Ok(existing.clone())
                } else {
                    Err(PayError::OrderConflict(order.order_key.clone()))
                };
            }
            let created = Order {
                order,
                cancelled: false,
                payments: BTreeMap::new(),
                created_at: now_rfc3339(),
                notice: NoticeState {
                    state: "none".into(),
                    ..NoticeState::default()
                },
            };
            orders.insert(k, created.clone());
            Ok(created)
        })
    }

    fn order_details(&self, service_id: &str, order_key: &str) -> Result<Order, PayError> {
        let mut orders = self.read(Clone::clone)?;
        lookup(&mut orders, service_id, order_key).map(|o| o.clone())
    }

    fn cancel_order(&self, service_id: &str, order_key: &str) -> Result<Order, PayError> {
        self.update(|orders| {
            let order = lookup(orders, service_id, order_key)?;
            match order.status(now_unix()) {
                OrderStatus::Active | OrderStatus::Cancelled => {
                    order.cancelled = true;
                    Ok(order.clone())
                }
                other => Err(PayError::NotPayable(other)),
            }
        })
    }

    fn confirm_payment(&self, c: Confirmation) -> Result<ConfirmAnswer, PayError> {
        if c.currency != "MDL" {
            return Err(PayError::Invalid("currency must be MDL".into()));
        }
        if c.amount <= 0 {
            return Err(PayError::Invalid("amount must be positive".into()));
        }
        if !c.lines.is_empty() && c.lines.iter().map(|l| l.amount).sum::<i64>() != c.amount {
            return Err(PayError::Invalid(
                "the lines do not add up to the amount".into(),
            ));
        }
        self.update(|orders| {
            // A payment id is unique across orders: look for it everywhere.
            if let Some((o, p)) = orders
                .values()
                .find_map(|o| o.payments.get(&c.payment_id).map(|p| (o, p)))
            {
                let same = o.order.service_id == c.service_id
                    && o.order.order_key == c.order_key
                    && p.invoice_id == c.invoice_id
                    && p.paid_at == c.paid_at
                    && p.amount == c.amount
                    && p.currency == c.currency
                    && p.lines == c.lines;
                return if same {
                    Ok(p.answer.clone())
                } else {
                    Err(PayError::PaymentConflict(c.payment_id.clone()))
                };
            }
            let now = now_unix();
            let order = lookup(orders, &c.service_id, &c.order_key)?;
            let status = order.status(now);
            if !matches!(status, OrderStatus::Active | OrderStatus::PartiallyPaid) {
                return Err(PayError::NotPayable(status));
            }
            let left = order.order.amount - order.paid();
            if c.amount > left {
                return Err(PayError::Overpaid(left));
            }
            let paid_amount = order.paid() + c.amount;
            let order_status = if paid_amount >= order.order.amount {
                OrderStatus::Paid
            } else {
                OrderStatus::PartiallyPaid
            };
            let answer = ConfirmAnswer {
                order_status,
                paid_amount,
                remaining: order.order.amount - paid_amount,
            };
            order.payments.insert(
                c.payment_id.clone(),
                Payment {
                    payment_id: c.payment_id.clone(),
                    invoice_id: c.invoice_id.clone(),
                    paid_at: c.paid_at.clone(),
                    amount: c.amount,
                    currency: c.currency.clone(),
                    lines: c.lines.clone(),
                    answer: answer.clone(),
                },
            );
            // The notice is decided in the same write as the payment that
            // completes the order, so a crash cannot lose it.
            if order_status == OrderStatus::Paid && order.order.notify.is_some() {
                order.notice = NoticeState {
                    state: "pending".into(),
                    notification_id: None,
                    attempts: 0,
                    calling_user: Some(c.calling_user.clone()),
                };
            }
            Ok(answer)
        })
    }

    fn pending_notices(&self) -> Vec<(String, String)> {
        self.read(|orders| {
            orders
                .values()
                .filter(|o| o.notice.state == "pending")
                .map(|o| (o.order.service_id.clone(), o.order.order_key.clone()))
                .collect()
        })
        .unwrap_or_default()
    }

    fn set_notice(
        &self,
        service_id: &str,
        order_key: &str,
        notice: NoticeState,
    ) -> Result<(), PayError> {
        self.update(|orders| {
            lookup(orders, service_id, order_key)?.notice = notice;
            Ok(())
        })
    }
}

/// Writes `value` as JSON to `dir/name`, durably ([`write_atomic`]).
fn save<T: Serialize>(dir: &Path, name: &str, value: &T) -> Result<(), PayError> {
    let bytes = serde_json::to_vec_pretty(value).map_err(|e| PayError::Storage(e.to_string()))?;
    write_atomic(&dir.join(name), &bytes).map_err(|e| PayError::Storage(format!("{name}: {e}")))
}

/// Unix seconds.
pub fn now_unix() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(key: &str, amount: i64) -> NewOrder {
        NewOrder {
            service_id: "cahul-taxe-locale".into(),
            order_key: key.into(),
            provider: "apl-cahul".into(),
            notify: Some(serde_json::json!({"email": "taxe@cahul.md"})),
            language: "ro".into(),
            payer: Payer {
                idnp: Some("2000000000015".into()),
                idno: None,
                name: None,
            },
            lines: vec![Line {
                code: "T1".into(),
                description: "taxa".into(),
                amount,
            }],
            amount,
            currency: "MDL".into(),
            expires_at: None,
        }
    }

    fn pay(key: &str, id: &str, amount: i64) -> Confirmation {
        Confirmation {
            service_id: "cahul-taxe-locale".into(),
            order_key: key.into(),
            invoice_id: format!("INV-{id}"),
            payment_id: id.into(),
            paid_at: "2026-11-23T05:00:00Z".into(),
            amount,
            currency: "MDL".into(),
            lines: Vec::new(),
            calling_user: "2000000000015".into(),
        }
    }

    #[test]
    fn confirmations_table() {
        let dir = std::env::temp_dir().join(format!("mpay-unit-{}", uuid::Uuid::new_v4()));
        let b = LocalBackend::open(&dir).unwrap_or_else(|e| panic!("{e}"));
        assert!(b.create_order(order("K", 10_000)).is_ok());
        let partial = Ok(ConfirmAnswer {
            order_status: OrderStatus::PartiallyPaid,
            paid_amount: 4_000,
            remaining: 6_000,
        });
        let cases: Vec<(Confirmation, Result<ConfirmAnswer, &str>)> = vec![
            (pay("K", "P1", 4_000), partial.clone()),
            (pay("K", "P1", 4_000), partial.clone()),
            (pay("K", "P1", 5_000), Err("payment.conflict")),
            (pay("K", "P2", 7_000), Err("payment.amount_exceeds")),
            (pay("X", "P3", 1), Err("payment.unknown_order")),
            (
                pay("K", "P2", 6_000),
                Ok(ConfirmAnswer {
                    order_status: OrderStatus::Paid,
                    paid_amount: 10_000,
                    remaining: 0,
                }),
            ),
            (pay("K", "P4", 1), Err("order.not_payable")),
        ];
        for (i, (c, expected)) in cases.into_iter().enumerate() {
            let got = b.confirm_payment(c).map_err(|e| e.code());
            assert_eq!(got, expected, "case {i}");
        }
        // It survives a restart: the same repeat gives the same answer.
        let again = LocalBackend::open(&dir).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            again.confirm_payment(pay("K", "P1", 4_000)).ok(),
            partial.ok()
        );
        assert_eq!(again.pending_notices().len(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
