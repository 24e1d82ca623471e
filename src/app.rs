//! Starting a broker: configuration in, running listeners out. The one place
//! where the store, registry, catalog, policies, audit log, TLS and the
//! exchange are put together.
//!
//! Invariant: every fallible step (files, keys, catalog, policies, audit
//! recovery) runs before any port is bound, so a broken installation fails
//! at start with a clear message and never half-serves.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::audit::{AuditConfig, AuditLog, TreeHeadSigner};
use crate::config::Config;
use crate::crypto::{SigningKey, certificate_fingerprint};
use crate::exchange::route::ProviderClient;
use crate::exchange::seal::Sealer;
use crate::exchange::upstream::ProviderUpstream;
use crate::exchange::{Broker, BrokerParts};
use crate::registry::Registry;
use crate::server::RunningServer;
use crate::tls::{self, Identity};

mod maintenance;

/// Why the broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// TLS material unusable.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// The broker key unusable for signatures.
    #[error("broker key: {0}")]
    Key(String),
    /// The state store or registry.
    #[error(transparent)]
    Registry(#[from] crate::registry::RegistryError),
    /// The state store could not be opened.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// Catalog or policies refused; every problem found.
    #[error("rules refused: {}", crate::rules::summarise(.0))]
    Rules(Vec<crate::rules::RuleProblem>),
    /// The audit log could not be opened.
    #[error("audit log: {0}")]
    Audit(String),
    /// A port could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// A running broker.
pub struct RunningBroker {
    /// The broker.
    pub broker: Arc<Broker>,
    data: RunningServer,
    admin: RunningServer,
    /// The plain-HTTP operations listener (`/healthz`, `/readyz`, `/metrics`).
    ops: RunningServer,
    config: Config,
    /// SIGHUP reloads and rate-limit eviction, stopped on shutdown.
    maintenance: maintenance::Maintenance,
}

impl RunningBroker {
    /// The data plane's bound address.
    pub fn data_addr(&self) -> SocketAddr {
        self.data.local_addr()
    }

    /// The admin listener's bound address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin.local_addr()
    }

    /// The operations listener's bound address.
    pub fn ops_addr(&self) -> SocketAddr {
        self.ops.local_addr()
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Stops both listeners, lets requests in flight finish, flushes the audit log.
    pub async fn shutdown(self) {
        self.maintenance.stop().await;
        self.data.shutdown().await;
        self.admin.shutdown().await;
        // Refusals counted while the listeners drained are written too.
        self.broker
            .refusals()
            .flush(self.broker.audit(), None)
            .await;
        self.ops.shutdown().await;
        if let Err(e) = self.broker.audit().clone().close().await {
            tracing::error!(error = %e, "audit log close failed");
        }
    }
}

/// The broker key as the audit log's tree-head signer.
struct BrokerTreeSigner {
    key: Arc<SigningKey>,
    keyid: String,
}

impl TreeHeadSigner for BrokerTreeSigner {
    fn keyid(&self) -> String {
        self.keyid.clone()
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, String> {
        self.key.sign(message).map_err(|e| e.to_string())
    }
}

/// Opens everything and starts the data, admin and operations listeners.
pub async fn start(config: Config) -> Result<RunningBroker, StartError> {
    let cas = tls::load_certificates(&config.ca_file)?;
    let identity = Identity::load(&config.cert_file, &config.key_file)?;
    let leaf = identity
        .leaf()
        .ok_or_else(|| StartError::Key("broker certificate file is empty".into()))?;
    let keyid = certificate_fingerprint(leaf);
    let key_pem = std::fs::read_to_string(&config.key_file)
        .map_err(|e| StartError::Key(format!("{}: {e}", config.key_file.display())))?;
    let key = Arc::new(SigningKey::from_pem(&key_pem).map_err(|e| StartError::Key(e.to_string()))?);
    let certificate = leaf.to_vec();

    // Participant certificates must chain to the same CA the listeners trust.
    let anchors = crate::trust::TrustAnchors::new(&cas)?;
    // The state store (embedded redb or PostgreSQL, as configured), the
    // registry on it and the rules with its grants are read synchronously
    // (redb fsyncs; PostgreSQL is a round trip away and migrates at open):
    // off the runtime's workers.
    let (backend, catalog_dir, policies_dir) = (
        config.state.clone(),
        config.catalog_dir.clone(),
        config.policies_dir.clone(),
    );
    let (registry, rules) = tokio::task::spawn_blocking(move || {
        let store = crate::store::open(&backend)?;
        let registry = Arc::new(Registry::open(store, anchors)?);
        let rules = crate::rules::load(&catalog_dir, &policies_dir, &registry)
            .map_err(StartError::Rules)?;
        Ok::<_, StartError>((registry, rules))
    })
    .await
    .map_err(|e| {
        StartError::Store(crate::store::StoreError::Open {
            path: format!("{:?}", config.state),
            reason: format!("opening did not finish: {e}"),
        })
    })??;

    let (audit, recovery) = AuditLog::open(
        AuditConfig {
            segment_bytes: config.audit.segment_bytes,
            max_batch: config.audit.max_batch,
            tree_head_interval: config.audit.tree_head_interval,
            record_retention: config.audit.record_retention,
            // Without a configured key file, the key lives beside the log, so
            // a service that opts in to body storage is never silently skipped.
            body_key_file: Some(
                config
                    .audit
                    .body_key_file
                    .clone()
                    .unwrap_or_else(|| config.audit_dir.join("body.key")),
            ),
            // A retention pass at start, then daily.
            retention_interval: Some(std::time::Duration::from_secs(24 * 3600)),
            min_free_bytes: config.audit.min_free_bytes,
            ..AuditConfig::new(config.audit_dir.clone())
        },
        Arc::new(BrokerTreeSigner {
            key: key.clone(),
            keyid: keyid.clone(),
        }),
    )
    .map_err(|e| StartError::Audit(e.to_string()))?;
    tracing::info!(?recovery, "audit log open");
    // The replay check needs every request id used before this start in
    // the index, also those of records a crash left unindexed: catch up now,
    // before any port is bound (exchange::replay_store).
    let catch_up = audit.clone();
    tokio::task::spawn_blocking(move || catch_up.sync_index())
        .await
        .map_err(|e| StartError::Audit(format!("indexing the audit log: {e}")))?
        .map_err(|e| StartError::Audit(format!("indexing the audit log: {e}")))?;

    let server_tls = tls::server_config(&cas, &identity)?;
    let client_tls = tls::client_config(&cas, &identity)?;
    let signing_key = SigningKey::from_pem(&key_pem).map_err(|e| StartError::Key(e.to_string()))?;
    let sealer = Arc::new(Sealer::new(signing_key, keyid));
    let broker = Arc::new(Broker::new(BrokerParts {
        registry,
        rules,
        audit,
        upstream: Arc::new(ProviderUpstream::new(
            ProviderClient::new(client_tls, config.provider.connect_timeout),
            Arc::clone(&sealer),
            config.provider.default_timeout,
            config.limits.max_response_bytes,
        )),
        sealer,
        limits: config.limits.clone(),
        public_data_url: config.public_data_url.clone(),
    }));

    // Counters exist before the listeners, so the operations endpoints
    // (served by the admin listener too) can report all three.
    let (data_stats, admin_stats, ops_stats) = (Arc::default(), Arc::default(), Arc::default());
    let ops = Arc::new(crate::ops::Operations::new(
        broker.clone(),
        certificate,
        vec![
            ("data", Arc::clone(&data_stats)),
            ("admin", Arc::clone(&admin_stats)),
            ("ops", Arc::clone(&ops_stats)),
        ],
    ));
    let bind_error = |addr: SocketAddr| move |source| StartError::Bind { addr, source };
    let data_broker = broker.clone();
    let data = crate::server::serve_with(
        config.data_listen,
        Some(server_tls.clone()),
        config.server.clone(),
        data_stats,
        move |peer, request| {
            let broker = data_broker.clone();
            // Its own task, so that a client hanging up cannot cancel an
            // exchange half-way: once forwarded, it must reach its audit
            // record, which also keeps its request id used up.
            let exchange = tokio::spawn(async move { broker.handle(&peer, request).await });
            async move {
                exchange.await.unwrap_or_else(|e| {
                    tracing::error!(error = %e, "exchange task failed");
                    let mut response = http::Response::new(http_body_util::Full::new(
                        bytes::Bytes::from_static(b"{\"code\":\"internal\"}"),
                    ));
                    *response.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
                    response
                })
            }
        },
    )
    .await
    .map_err(bind_error(config.data_listen))?;
    let admin_state = Arc::new(crate::admin::AdminState::new(
        broker.clone(),
        config.catalog_dir.clone(),
        config.policies_dir.clone(),
        ops.clone(),
    ));
    let admin = crate::server::serve_with(
        config.admin_listen,
        Some(server_tls),
        config.server.clone(),
        admin_stats,
        move |peer, request| {
            let state = admin_state.clone();
            async move { state.handle(&peer, request).await }
        },
    )
    .await
    .map_err(bind_error(config.admin_listen))?;
    // Plain HTTP, no client certificate: probes and Prometheus must reach it.
    // It serves only the three read-only operations endpoints.
    let ops = crate::server::serve_with(
        config.ops_listen,
        None,
        config.server.clone(),
        ops_stats,
        move |_peer, request| {
            let ops = ops.clone();
            async move {
                let (head, _body) = request.into_parts();
                crate::ops::handle(&ops, &head).await
            }
        },
    )
    .await
    .map_err(bind_error(config.ops_listen))?;
    if !data.local_addr().ip().is_unspecified() {
        broker.default_public_data_url(format!("https://{}", data.local_addr()));
    }
    tracing::info!(data = %data.local_addr(), admin = %admin.local_addr(), ops = %ops.local_addr(), public = ?broker.public_data_url(), "broker listening");
    let maintenance = maintenance::Maintenance::start(
        broker.clone(),
        config.catalog_dir.clone(),
        config.policies_dir.clone(),
    );
    Ok(RunningBroker {
        broker,
        data,
        admin,
        ops,
        config,
        maintenance,
    })
}
