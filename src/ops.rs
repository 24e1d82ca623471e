//! The operations endpoints of PROTOCOL.md section 8: `/healthz` (alive),
//! `/readyz` (what was probed, and whether the broker can serve) and
//! `/metrics` (Prometheus text format). Served on the plain-HTTP operations
//! listener, which needs no client certificate, and with the same content on
//! the admin listener: both call [`Operations::respond`].
//!
//! Invariants: `/readyz` reports only what it probed on this request, never a
//! constant: a real read of the state store through [`StateStore`], the audit
//! log's fail-closed state and a freshly signed and verified tree head, and a
//! signature made with the broker's key and verified with the public key of
//! its certificate, whose dates are checked against the clock. It answers 503
//! when any probe fails, so a broker whose audit log has failed closed is
//! never reported ready. Nothing here changes state.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Method, Response, StatusCode};
use http_body_util::Full;
use serde::Serialize;

use crate::crypto::VerifyingKey;
use crate::exchange::Broker;
use crate::server::ListenerStats;
use crate::store::{Collection, StateStore};

/// What the operations endpoints read: the broker and its listeners' counters.
pub struct Operations {
    broker: Arc<Broker>,
    /// The broker's certificate (DER), whose key must verify what the broker signs.
    certificate: Vec<u8>,
    listeners: Vec<(&'static str, Arc<ListenerStats>)>,
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
        Operations {
            broker,
            certificate,
            listeners,
        }
    }

    /// Answers `/healthz`, `/readyz` and `/metrics`; `None` for any other
    /// request, which the caller routes (admin) or refuses (operations).
    pub async fn respond(&self, method: &Method, path: &str) -> Option<Response<Full<Bytes>>> {
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
            "/metrics" => Some(text(
                StatusCode::OK,
                "text/plain; version=0.0.4",
                self.metrics(),
            )),
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
        let verifier = VerifyingKey::from_certificate_der(&self.certificate);
        let audit = self.probe_audit(verifier.as_ref().ok());
        let keys = self.probe_keys(verifier.as_ref().ok());
        Readiness {
            ready: store.ok && audit.ok && keys.ok,
            store: store.ok,
            audit: audit.ok,
            keys: keys.ok,
            participants: self.broker.registry().snapshot().participants().len(),
            probes: ReadinessProbes { store, audit, keys },
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
                "not failed closed; signed and verified the tree head of size {}",
                sth.tree_size
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

    fn metrics(&self) -> String {
        use std::fmt::Write;
        let rules = self.broker.rules();
        let audit = self.broker.audit();
        let mut out = format!(
            "# HELP mconnect_audit_tree_size Records in the audit log.\n# TYPE mconnect_audit_tree_size gauge\nmconnect_audit_tree_size {}\n# HELP mconnect_audit_failed 1 when the audit log has failed closed.\n# TYPE mconnect_audit_failed gauge\nmconnect_audit_failed {}\n# HELP mconnect_participants Registered participants.\n# TYPE mconnect_participants gauge\nmconnect_participants {}\n# HELP mconnect_catalog_services Catalogued services.\n# TYPE mconnect_catalog_services gauge\nmconnect_catalog_services {}\n",
            audit.tree_size(),
            u8::from(audit.failure().is_some()),
            self.broker.registry().snapshot().participants().len(),
            rules.catalog.services().count(),
        );
        let counts: Vec<_> = self
            .listeners
            .iter()
            .map(|(name, stats)| (*name, stats.counts()))
            .collect();
        let families: [Series; 7] = [
            (
                "mconnect_connections_open",
                "gauge",
                "Connections open now.",
                |c| c.open,
                "",
            ),
            (
                "mconnect_connections_accepted_total",
                "counter",
                "Connections accepted.",
                |c| c.accepted,
                "",
            ),
            (
                "mconnect_connections_refused_total",
                "counter",
                "Connections closed at once for a cap.",
                |c| c.refused_listener_cap,
                ",reason=\"max_connections\"",
            ),
            (
                "mconnect_connections_refused_total",
                "counter",
                "",
                |c| c.refused_certificate_cap,
                ",reason=\"max_connections_per_certificate\"",
            ),
            (
                "mconnect_connections_closed_total",
                "counter",
                "Connections closed for a timeout.",
                |c| c.closed_header_timeout,
                ",reason=\"header_read_timeout\"",
            ),
            (
                "mconnect_connections_closed_total",
                "counter",
                "",
                |c| c.closed_idle,
                ",reason=\"idle_timeout\"",
            ),
            (
                "mconnect_tls_handshakes_failed_total",
                "counter",
                "TLS handshakes refused or timed out.",
                |c| c.handshake_failed,
                "",
            ),
        ];
        for (name, kind, help, value, labels) in families {
            if !help.is_empty() {
                let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n");
            }
            for (listener, c) in &counts {
                let _ = writeln!(
                    out,
                    "{name}{{listener=\"{listener}\"{labels}}} {}",
                    value(c)
                );
            }
        }
        out
    }
}

/// One metric series per listener: name, type, help (empty when it continues
/// the family of the series before it), the value, and extra labels.
type Series = (
    &'static str,
    &'static str,
    &'static str,
    fn(&crate::server::ListenerCounts) -> u64,
    &'static str,
);

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
    match ops.respond(&request.method, request.uri.path()).await {
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
