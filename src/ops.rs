//! The operations endpoints of PROTOCOL.md section 8: `/healthz` (alive),
//! `/readyz` (what was probed, and whether the broker can serve) and
//! `/metrics` (Prometheus text format, or OpenMetrics when the scraper asks
//! for it). Served on the plain-HTTP operations listener, which needs no
//! client certificate, and with the same content on the admin listener: both
//! call [`Operations::respond`].
//!
//! `/metrics` joins what the broker counts as it works (`crate::metrics`:
//! exchanges, latencies, sizes, fsyncs, reload failures) with what is read
//! here at each scrape (`Scraped`, a collector): the audit log's size, state, queue and
//! indexer lag, the replay store, the rules version, certificate expiry and
//! the listeners' counters. Every label value comes from a fixed set, the
//! registry or the catalog.
//!
//! Invariants: `/readyz` reports only what it probed on this request, never a
//! constant: a real read of the state store through [`StateStore`], the
//! state of the change feed of a store shared with other brokers (connected,
//! every announced change applied), the audit log's fail-closed state and a freshly signed and verified tree head, and a
//! signature made with the broker's key and verified with the public key of
//! its certificate, whose dates are checked against the clock. It answers 503
//! when any probe fails, so a broker whose audit log has failed closed is
//! never reported ready. Nothing here changes state.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Method, Response, StatusCode};
use http_body_util::Full;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use serde::Serialize;

use crate::crypto::VerifyingKey;
use crate::exchange::Broker;
use crate::server::{HandshakeFailure, ListenerCounts, ListenerStats};
use crate::store::{Collection, FeedStatus, StateStore};

/// The media type of the Prometheus text format, served unless asked otherwise.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
/// The media type of OpenMetrics text, served when the scraper's `Accept` names it.
pub const OPENMETRICS_TEXT: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What the operations endpoints read: the broker and its listeners' counters.
pub struct Operations {
    broker: Arc<Broker>,
    /// The broker's certificate (DER), whose key must verify what the broker signs.
    certificate: Vec<u8>,
    /// What is read at each scrape ([`Scraped`]).
    scraped: Registry,
}

/// The outcome of one readiness probe.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Probe {
    /// Whether it passed.
    pub ok: bool,
    /// What was done, or why it failed.
    pub detail: String,
}

/// The `/readyz` answer.
#[derive(Clone, Debug, Serialize)]
pub struct Readiness {
    /// All probes passed.
    pub ready: bool,
    /// The state store answered a read.
    pub store: bool,
    /// This broker is in step with the state it shares with other brokers
    /// (always, when it shares none).
    pub shared_state: bool,
    /// The audit log has not failed closed and signs a tree head.
    pub audit: bool,
    /// The broker key signs, its certificate verifies it and is in date.
    pub keys: bool,
    /// Each probe with what it did.
    pub probes: ReadinessProbes,
    /// Registered participants (informational).
    pub participants: usize,
}

/// The probes of one readiness check.
#[derive(Clone, Debug, Serialize)]
pub struct ReadinessProbes {
    /// State store probe.
    pub store: Probe,
    /// The shared state's change feed.
    pub shared_state: Probe,
    /// Audit log probe.
    pub audit: Probe,
    /// Broker key and certificate probe.
    pub keys: Probe,
}

impl Operations {
    /// The operations endpoints of `broker`, whose certificate is
    /// `certificate` (DER), reporting the counters of `listeners`.
    pub fn new(
        broker: Arc<Broker>,
        certificate: Vec<u8>,
        listeners: Vec<(&'static str, Arc<ListenerStats>)>,
    ) -> Self {
        let mut scraped = Registry::default();
        scraped.register_collector(Box::new(Scraped {
            broker: Arc::clone(&broker),
            certificate_not_after: crate::tls::validity(&certificate).map(|(_, after)| after),
            listeners,
        }));
        Operations {
            broker,
            certificate,
            scraped,
        }
    }

    /// Answers `/healthz`, `/readyz` and `/metrics`; `None` for any other
    /// request, which the caller routes (admin) or refuses (operations).
    /// `/metrics` is in the Prometheus text format.
    pub async fn respond(&self, method: &Method, path: &str) -> Option<Response<Full<Bytes>>> {
        self.respond_accepting(method, path, None).await
    }

    /// [`Operations::respond`], with `/metrics` in OpenMetrics text when
    /// `accept` (the request's `Accept`) names it, as Prometheus does.
    pub async fn respond_accepting(
        &self,
        method: &Method,
        path: &str,
        accept: Option<&str>,
    ) -> Option<Response<Full<Bytes>>> {
        if method != Method::GET && method != Method::HEAD {
            return None;
        }
        match path {
            "/healthz" => Some(text(StatusCode::OK, "text/plain", "ok\n".into())),
            "/readyz" => {
                let readiness = self.readiness().await;
                let status = if readiness.ready {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                let body = serde_json::to_string_pretty(&readiness).unwrap_or_default();
                Some(text(status, "application/json", body))
            }
            "/metrics" => {
                let openmetrics =
                    accept.is_some_and(|a| a.contains("application/openmetrics-text"));
                Some(match self.metrics(openmetrics) {
                    Ok(body) => text(
                        StatusCode::OK,
                        if openmetrics {
                            OPENMETRICS_TEXT
                        } else {
                            PROMETHEUS_TEXT
                        },
                        body,
                    ),
                    Err(std::fmt::Error) => text(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "text/plain",
                        "the metrics could not be encoded\n".into(),
                    ),
                })
            }
            _ => None,
        }
    }

    /// Runs every probe now.
    pub async fn readiness(&self) -> Readiness {
        let store = self.broker.registry().store().clone();
        // redb reads block: keep them off the runtime's worker threads.
        let store = tokio::task::spawn_blocking(move || probe_store(store.as_ref()))
            .await
            .unwrap_or_else(|e| failed(format!("store probe did not finish: {e}")));
        let shared_state = self.probe_shared_state();
        let verifier = VerifyingKey::from_certificate_der(&self.certificate);
        let audit = self.probe_audit(verifier.as_ref().ok());
        let keys = self.probe_keys(verifier.as_ref().ok());
        Readiness {
            ready: store.ok && shared_state.ok && audit.ok && keys.ok,
            store: store.ok,
            shared_state: shared_state.ok,
            audit: audit.ok,
            keys: keys.ok,
            participants: self.broker.registry().snapshot().participants().len(),
            probes: ReadinessProbes {
                store,
                shared_state,
                audit,
                keys,
            },
        }
    }

    /// The change feed of a store shared with other brokers, as its
    /// listening connection found it last (it is checked every few seconds,
    /// and a closed connection is seen at once) and whether every change it
    /// announced is in force here. Not ready while it is lost or catching
    /// up: the broker then serves exchanges from its last state but refuses
    /// changes (503 `state.unavailable`).
    fn probe_shared_state(&self) -> Probe {
        let Some(feed) = self.broker.registry().feed() else {
            return passed("not shared: this broker is the state store's only writer".into());
        };
        match feed.health() {
            Ok(()) => passed(match feed.status() {
                FeedStatus::Connected { since } => format!(
                    "following the other brokers' changes since {} (unix seconds), all applied",
                    since.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
                ),
                FeedStatus::Lost { .. } => "following the other brokers' changes".into(),
            }),
            Err(reason) => failed(format!(
                "{reason}; serving exchanges from the last participants and rules (version {}), refusing changes",
                self.broker.live_rules().version()
            )),
        }
    }

    fn probe_audit(&self, verifier: Option<&VerifyingKey>) -> Probe {
        let audit = self.broker.audit();
        if let Some(reason) = audit.failure() {
            return failed(format!("the audit log has failed closed: {reason}"));
        }
        // Below the free-space watermark the broker takes no new exchange,
        // so it is not ready for traffic even though the log still works.
        let space = audit.space();
        if space.below_watermark {
            return failed(format!(
                "the audit filesystem has {} bytes free, under the watermark of {}: exchanges are refused until space is freed",
                space.free_bytes, space.watermark_bytes
            ));
        }
        let sth = match audit.signed_tree_head() {
            Ok(sth) => sth,
            Err(e) => return failed(format!("cannot sign a tree head: {e}")),
        };
        let Some(verifier) = verifier else {
            return failed("the broker certificate's key is unusable".into());
        };
        let alg = self.broker.sealer().key().algorithm();
        match crate::audit::verify_tree_head(&sth, |_, message, signature| {
            verifier
                .verify(alg, message, signature)
                .map_err(|e| e.to_string())
        }) {
            Ok(()) => passed(format!(
                "not failed closed; signed and verified the tree head of size {}{}",
                sth.tree_size,
                shipping_detail(audit)
            )),
            Err(e) => failed(format!("the tree head does not verify: {e}")),
        }
    }

    fn probe_keys(&self, verifier: Option<&VerifyingKey>) -> Probe {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let Some((not_before, not_after)) = crate::tls::validity(&self.certificate) else {
            return failed("the broker certificate is not valid X.509".into());
        };
        if now < not_before {
            return failed(format!(
                "the broker certificate is not valid before {not_before} (unix seconds)"
            ));
        }
        if now > not_after {
            return failed(format!(
                "the broker certificate expired at {not_after} (unix seconds)"
            ));
        }
        let Some(verifier) = verifier else {
            return failed("the broker certificate's key is unusable".into());
        };
        let key = self.broker.sealer().key();
        let message = format!("mconnect readiness probe {now}");
        let signature = match key.sign(message.as_bytes()) {
            Ok(s) => s,
            Err(e) => return failed(format!("the broker key does not sign: {e}")),
        };
        match verifier.verify(key.algorithm(), message.as_bytes(), &signature) {
            Ok(()) => passed(format!(
                "signed a probe with the broker key and verified it with its certificate, valid until {not_after} (unix seconds)"
            )),
            Err(e) => failed(format!(
                "the broker certificate does not verify the broker key's signature: {e}"
            )),
        }
    }

    /// The whole exposition: what the broker counted, then what is read now.
    pub fn metrics(&self, openmetrics: bool) -> Result<String, std::fmt::Error> {
        use prometheus_client::encoding::{prometheus_text, text};
        let mut out = String::with_capacity(16 * 1024);
        let counted = self.broker.metrics().registry();
        if openmetrics {
            text::encode_registry(&mut out, counted)?;
            text::encode_registry(&mut out, &self.scraped)?;
            text::encode_eof(&mut out)?;
        } else {
            prometheus_text::encode(&mut out, counted)?;
            prometheus_text::encode(&mut out, &self.scraped)?;
        }
        Ok(out)
    }
}

/// What `/metrics` reads at each scrape rather than counts as it goes.
struct Scraped {
    broker: Arc<Broker>,
    /// When the broker's own certificate expires (unix seconds).
    certificate_not_after: Option<i64>,
    listeners: Vec<(&'static str, Arc<ListenerStats>)>,
}

impl std::fmt::Debug for Scraped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scraped").finish_non_exhaustive()
    }
}

/// A reason label and the listener counter it reports.
type ReasonCount = (&'static str, fn(&ListenerCounts) -> u64);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabels {
    listener: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerReasonLabels {
    listener: &'static str,
    reason: &'static str,
}

impl Collector for Scraped {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let broker = &self.broker;
        let audit = broker.audit();
        let rules = broker.rules();
        let registry = broker.registry().snapshot();
        let participants = registry.participants();
        let now = crate::exchange::unix_now();
        let e = &mut encoder;

        let tree_size = audit.tree_size();
        gauge(
            e,
            "mconnect_audit_tree_size",
            "Records in the audit log",
            tree_size,
        )?;
        gauge(
            e,
            "mconnect_audit_failed",
            "1 when the audit log has failed closed",
            u64::from(audit.failure().is_some()),
        )?;
        gauge(
            e,
            "mconnect_audit_queue_depth",
            "Audit records queued for the writer, not yet in a batch",
            audit.queue_depth() as u64,
        )?;
        // A read of the index's own counter (one redb read transaction).
        if let Ok(indexed) = audit.indexed() {
            gauge(
                e,
                "mconnect_audit_index_lag_records",
                "Durable audit records the query index does not cover yet",
                tree_size.saturating_sub(indexed),
            )?;
        }
        // Brokers of a cluster ship their records to the shared copy
        // (`audit::ship`): how far behind, and whether it stopped.
        if let Some(status) = audit.shipping_status() {
            gauge(
                e,
                "mconnect_audit_shipping_lag_records",
                "Durable audit records not yet shipped to the cluster's shared copy",
                status.lag,
            )?;
            gauge(
                e,
                "mconnect_audit_shipping_alarm",
                "1 when shipping stopped because the shared copy disagrees with this log",
                u64::from(status.alarm.is_some()),
            )?;
            let shipped = ConstCounter::new(status.shipped_total);
            shipped.encode(e.encode_descriptor(
                "mconnect_audit_shipped_records",
                "Audit records shipped to the cluster's shared copy since start",
                None,
                shipped.metric_type(),
            )?)?;
        }
        gauge(
            e,
            "mconnect_audit_disk_free_bytes",
            "Free space of the audit log's filesystem (as last read, at most 250 ms ago)",
            audit.space().free_bytes,
        )?;
        if let Some(held) = broker.replay_ids_held() {
            gauge(
                e,
                "mconnect_replay_ids_held",
                "Single-use request ids held in the replay store's memory until the index covers their records",
                held as u64,
            )?;
        }
        gauge(
            e,
            "mconnect_rate_limiter_keys",
            "(grant, consumer) pairs the rate limiter tracks",
            broker.rate_limiter().len() as u64,
        )?;
        gauge(
            e,
            "mconnect_rules_version",
            "Version of the rules in force: 1 at start, one more for each swap (reload, SIGHUP, connection-request transition)",
            broker.live_rules().version(),
        )?;
        gauge(
            e,
            "mconnect_rules_loaded_timestamp_seconds",
            "When the rules in force were put in force (unix seconds)",
            broker.live_rules().since(),
        )?;
        gauge(
            e,
            "mconnect_participants",
            "Registered participants",
            participants.len() as u64,
        )?;
        gauge(
            e,
            "mconnect_catalog_services",
            "Catalogued services",
            rules.catalog.services().count() as u64,
        )?;

        // Certificates: one series per registered certificate (bounded by
        // the registry), and the broker's own.
        let certificates = participants.iter().flat_map(|p| {
            p.certificates.iter().map(move |c| {
                (
                    [
                        ("participant", p.id.as_str()),
                        ("fingerprint", c.fingerprint.as_str()),
                    ],
                    c.not_after - now,
                )
            })
        });
        gauges(
            e,
            "mconnect_participant_certificate_expiry_seconds",
            "Seconds until each registered participant certificate expires (negative once expired; /86400 for days)",
            certificates,
        )?;
        if let Some(not_after) = self.certificate_not_after {
            gauge(
                e,
                "mconnect_broker_certificate_expiry_seconds",
                "Seconds until the broker's own certificate expires (negative once expired; /86400 for days)",
                not_after - now,
            )?;
        }

        // Listeners.
        let counts: Vec<(&'static str, ListenerCounts)> = self
            .listeners
            .iter()
            .map(|(name, stats)| (*name, stats.counts()))
            .collect();
        let each = |value: fn(&ListenerCounts) -> u64| {
            counts
                .iter()
                .map(move |(listener, c)| (ListenerLabels { listener }, value(c)))
        };
        gauges(
            e,
            "mconnect_connections_open",
            "Connections open now",
            each(|c| c.open),
        )?;
        counters(
            e,
            "mconnect_connections_accepted",
            "Connections accepted",
            each(|c| c.accepted),
        )?;
        let reasons = |pairs: &'static [ReasonCount]| {
            counts.iter().flat_map(move |(listener, c)| {
                pairs.iter().map(move |(reason, value)| {
                    (ListenerReasonLabels { listener, reason }, value(c))
                })
            })
        };
        counters(
            e,
            "mconnect_connections_refused",
            "Connections closed at once for a cap",
            reasons(&[
                ("max_connections", |c| c.refused_listener_cap),
                ("max_connections_per_certificate", |c| {
                    c.refused_certificate_cap
                }),
            ]),
        )?;
        counters(
            e,
            "mconnect_connections_closed",
            "Connections closed for a timeout",
            reasons(&[
                ("header_read_timeout", |c| c.closed_header_timeout),
                ("idle_timeout", |c| c.closed_idle),
            ]),
        )?;
        let handshakes = counts
            .iter()
            .filter(|(listener, _)| *listener != "ops")
            .flat_map(|(listener, c)| {
                HandshakeFailure::ALL
                    .iter()
                    .zip(c.handshake_failures)
                    .map(move |(reason, n)| {
                        (
                            ListenerReasonLabels {
                                listener,
                                reason: reason.as_str(),
                            },
                            n,
                        )
                    })
            });
        counters(
            e,
            "mconnect_tls_handshake_failures",
            "TLS handshakes refused or timed out, by reason",
            handshakes,
        )?;
        Ok(())
    }
}

/// How the shipping to a cluster's shared copy stands, for the audit
/// probe's detail (informational: a lagging or stopped shipper never makes
/// the broker unready, its own log still records every exchange).
fn shipping_detail(audit: &crate::audit::AuditLog) -> String {
    let Some(status) = audit.shipping_status() else {
        return String::new();
    };
    let mut detail = format!(
        "; shipped as `{}` to the cluster's copy: {} records, {} behind",
        status.broker_id, status.shipped, status.lag
    );
    if let Some(alarm) = &status.alarm {
        detail.push_str(&format!("; SHIPPING STOPPED: {alarm}"));
    } else if let Some(error) = &status.error {
        detail.push_str(&format!("; copy unreachable, retrying: {error}"));
    }
    detail
}

/// One gauge without labels.
fn gauge<V>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: V,
) -> Result<(), std::fmt::Error>
where
    ConstGauge<V>: EncodeMetric,
{
    let metric = ConstGauge::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

/// One family of gauges, one series per label set.
fn gauges<L, V>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (L, V)>,
) -> Result<(), std::fmt::Error>
where
    L: EncodeLabelSet,
    ConstGauge<V>: EncodeMetric,
{
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in series {
        ConstGauge::new(value).encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

/// One family of counters, one series per label set (`name` without
/// `_total`: the encoder adds it).
fn counters<L: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (L, u64)>,
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in series {
        ConstCounter::new(value).encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

/// A real read transaction on the state store.
fn probe_store(store: &dyn StateStore) -> Probe {
    match store.get(Collection::Participants, "readiness-probe") {
        Ok(_) => passed("read the participants table".into()),
        Err(e) => failed(format!("the state store cannot be read: {e}")),
    }
}

fn passed(detail: String) -> Probe {
    Probe { ok: true, detail }
}

fn failed(detail: String) -> Probe {
    Probe { ok: false, detail }
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    r.headers_mut().insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    r
}

/// The operations listener's handler: the three endpoints, 404 otherwise.
pub async fn handle(ops: &Operations, request: &http::request::Parts) -> Response<Full<Bytes>> {
    let accept = request
        .headers
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok());
    match ops
        .respond_accepting(&request.method, request.uri.path(), accept)
        .await
    {
        Some(response) => response,
        None => {
            let problem = mconnect_sdk::protocol::Problem::new(
                StatusCode::NOT_FOUND,
                "ops.not_found",
                "the operations listener serves GET /healthz, /readyz and /metrics only",
            );
            text(
                StatusCode::NOT_FOUND,
                mconnect_sdk::protocol::PROBLEM_JSON,
                String::from_utf8_lossy(&problem.to_json()).into_owned(),
            )
        }
    }
}
