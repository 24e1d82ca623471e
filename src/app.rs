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
    /// The operator's participants file (`--init-participants`) was refused.
    #[error(transparent)]
    Bootstrap(#[from] crate::bootstrap::InitError),
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

/// What `mconnect serve` may ask of a start beyond the configuration.
#[derive(Clone, Debug, Default)]
pub struct StartOptions {
    /// The operator's first participants (`--init-participants`), registered
    /// on an empty state store before anything else (see [`crate::bootstrap`]).
    pub init_participants: Option<std::path::PathBuf>,
}

/// [`start`], first registering the operator's participants when asked.
///
/// The registration runs on its own opening of the state store and the audit
/// log, closed again before the broker starts: the policies may name those
/// participants, so the rules can only be loaded once they are stored.
pub async fn start_with(
    config: Config,
    options: StartOptions,
) -> Result<RunningBroker, StartError> {
    if let Some(file) = &options.init_participants {
        let outcome = init_participants(&config, file).await?;
        tracing::info!(?outcome, file = %file.display(), "participants file");
    }
    start(config).await
}

async fn init_participants(
    config: &Config,
    file: &std::path::Path,
) -> Result<crate::bootstrap::InitOutcome, StartError> {
    let cas = tls::load_certificates(&config.ca_file)?;
    let keys = BrokerKeys::load(config)?;
    keys.check_log(&config.audit_dir)?;
    let anchors = crate::trust::TrustAnchors::new(&cas)?;
    let (backend, catalog_dir) = (config.state.clone(), config.catalog_dir.clone());
    let (registry, catalog) = tokio::task::spawn_blocking(move || {
        let store = crate::store::open(&backend)?;
        let registry = Arc::new(Registry::open(store, anchors)?);
        let catalog =
            crate::catalog::Catalog::load_dir_all(&catalog_dir).map_err(StartError::Rules)?;
        Ok::<_, StartError>((registry, Arc::new(catalog)))
    })
    .await
    .map_err(|e| StartError::Audit(format!("opening the state store did not finish: {e}")))??;
    let (audit, _) = AuditLog::open(
        AuditConfig {
            segment_bytes: config.audit.segment_bytes,
            max_batch: config.audit.max_batch,
            tree_head_interval: None,
            record_retention: config.audit.record_retention,
            min_free_bytes: config.audit.min_free_bytes,
            ..AuditConfig::new(config.audit_dir.clone())
        },
        Arc::new(BrokerTreeSigner {
            key: keys.key.clone(),
            keyid: keys.keyid.clone(),
        }),
    )
    .map_err(|e| StartError::Audit(e.to_string()))?;
    let outcome = crate::bootstrap::init_participants(file, &registry, catalog, &audit).await;
    if let Err(e) = audit.close().await {
        tracing::error!(error = %e, "audit log close failed");
    }
    // The store is released before `start` opens it again.
    drop(registry);
    Ok(outcome?)
}

/// The broker's key and certificates, checked once.
struct BrokerKeys {
    key: Arc<SigningKey>,
    key_pem: String,
    keyid: String,
    /// Every broker certificate verifiers need, as PEM: `tls.cert`'s leaf
    /// first, then those of `tls.previous_certs`.
    published: Vec<(String, String)>,
}

impl BrokerKeys {
    fn load(config: &Config) -> Result<BrokerKeys, StartError> {
        check_key_permissions(&config.key_file)?;
        let identity = Identity::load(&config.cert_file, &config.key_file)?;
        let leaf = identity
            .leaf()
            .ok_or_else(|| StartError::Key("broker certificate file is empty".into()))?;
        let keyid = certificate_fingerprint(leaf);
        let key_pem = std::fs::read_to_string(&config.key_file)
            .map_err(|e| StartError::Key(format!("{}: {e}", config.key_file.display())))?;
        let key =
            Arc::new(SigningKey::from_pem(&key_pem).map_err(|e| StartError::Key(e.to_string()))?);
        let mut published = vec![(keyid.clone(), pem_of(leaf))];
        for path in &config.previous_cert_files {
            let certs = tls::load_certificates(path)?;
            for der in &certs {
                let fingerprint = certificate_fingerprint(der);
                if published.iter().any(|(fp, _)| *fp == fingerprint) {
                    return Err(StartError::Key(format!(
                        "tls.previous_certs: {} repeats certificate {fingerprint}{}",
                        path.display(),
                        if fingerprint == keyid {
                            ", the current tls.cert: list only certificates the broker no longer signs with"
                        } else {
                            ""
                        }
                    )));
                }
                published.push((fingerprint, pem_of(der)));
            }
        }
        Ok(BrokerKeys {
            key,
            key_pem,
            keyid,
            published,
        })
    }

    /// Refuses a log with tree heads signed by a key that is neither the
    /// current one nor a listed previous one: verifiers could not check them
    /// (nor the receipts of that key) with the published certificates.
    fn check_log(&self, audit_dir: &std::path::Path) -> Result<(), StartError> {
        let heads = crate::audit::read_tree_heads(audit_dir)
            .map_err(|e| StartError::Audit(e.to_string()))?;
        let mut unknown: Vec<&str> = heads
            .iter()
            .map(|h| h.keyid.as_str())
            .filter(|k| !self.published.iter().any(|(fp, _)| fp == k))
            .collect();
        unknown.sort_unstable();
        unknown.dedup();
        match unknown.first() {
            None => Ok(()),
            Some(_) => Err(StartError::Key(format!(
                "the audit log in {} has tree heads signed by {}, which is neither tls.cert nor in tls.previous_certs: after a rotation, list the earlier broker certificate in tls.previous_certs so that its receipts and tree heads still verify",
                audit_dir.display(),
                unknown.join(", ")
            ))),
        }
    }

    /// Writes [`BROKER_CERTIFICATES_FILE`] in the audit directory.
    fn publish(&self, audit_dir: &std::path::Path) -> Result<(), StartError> {
        let text: String = self.published.iter().map(|(_, pem)| pem.as_str()).collect();
        let path = audit_dir.join(BROKER_CERTIFICATES_FILE);
        let tmp = audit_dir.join(format!("{BROKER_CERTIFICATES_FILE}.tmp"));
        std::fs::write(&tmp, text)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|e| StartError::Audit(format!("writing {}: {e}", path.display())))
    }
}

/// The file in the audit directory that holds every broker certificate
/// whose key signed the log's tree heads and the broker's receipts: the
/// current one first, then `tls.previous_certs`. Rewritten at every start.
/// Verifiers take it (`mconnect audit verify --cert`, the SDK's
/// `TrustedKeys::from_pem`) after checking it against what the operator
/// published, never on trust from beside the log it is to check.
pub const BROKER_CERTIFICATES_FILE: &str = "broker-certificates.pem";

/// Refuses a private key file that others than its owner may read or write.
fn check_key_permissions(path: &std::path::Path) -> Result<(), StartError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .map_err(|e| StartError::Key(format!("{}: {e}", path.display())))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(StartError::Key(format!(
            "{} is open to group or others (mode {:04o}): the broker's private key must be readable by its own user only; chmod 600 it (and chown it to the user the broker runs as)",
            path.display(),
            mode & 0o7777
        )));
    }
    Ok(())
}

fn pem_of(der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem
}

/// Opens the cluster's shared audit copy and starts shipping `audit` to it
/// under the log's broker id (`audit::ship::broker_id`).
async fn start_audit_shipping(
    audit: &AuditLog,
    settings: &crate::store::PostgresSettings,
    config: &Config,
) -> Result<(), StartError> {
    let settings = settings.clone();
    let dir = config.audit_dir.clone();
    let configured = config.audit.broker_id.clone();
    let (copy, broker_id) = tokio::task::spawn_blocking(move || {
        let broker_id = crate::audit::ship::broker_id(&dir, configured.as_deref())
            .map_err(|e| StartError::Audit(e.to_string()))?;
        let copy = crate::store::PgAuditCopy::open(&settings)?;
        Ok::<_, StartError>((copy, broker_id))
    })
    .await
    .map_err(|e| StartError::Audit(format!("opening the shared audit copy: {e}")))??;
    audit
        .start_shipping(Arc::new(copy), broker_id.clone())
        .map_err(|e| StartError::Audit(e.to_string()))?;
    tracing::info!(broker = %broker_id, "audit log shipped to the cluster's shared copy");
    Ok(())
}

/// Opens everything and starts the data, admin and operations listeners.
pub async fn start(config: Config) -> Result<RunningBroker, StartError> {
    let cas = tls::load_certificates(&config.ca_file)?;
    let keys = BrokerKeys::load(&config)?;
    keys.check_log(&config.audit_dir)?;
    let identity = Identity::load(&config.cert_file, &config.key_file)?;
    let leaf = identity
        .leaf()
        .ok_or_else(|| StartError::Key("broker certificate file is empty".into()))?;
    let keyid = keys.keyid.clone();
    let key_pem = keys.key_pem.clone();
    let key = keys.key.clone();
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
    let (registry, rules, shared) = tokio::task::spawn_blocking(move || {
        let store = crate::store::open(&backend)?;
        // Brokers on one PostgreSQL database are a cluster: request ids,
        // quotas and rates are checked across all of them (issue 15), on a
        // pool of their own, once `store::open` has migrated the schema.
        let shared = match &backend {
            crate::store::Backend::Postgres(settings) => Some(crate::store::SharedState::open(
                settings,
                crate::store::SharedTuning::default(),
                crate::store::SharedMetrics::default(),
            )?),
            crate::store::Backend::Embedded(_) => None,
        };
        let registry = Arc::new(Registry::open(store, anchors)?);
        let rules = crate::rules::load(&catalog_dir, &policies_dir, &registry)
            .map_err(StartError::Rules)?;
        Ok::<_, StartError>((registry, rules, shared))
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
    keys.publish(&config.audit_dir)?;
    // Brokers on one PostgreSQL database ship their records to the shared
    // copy that cluster-wide searches read (issue 15; `audit::ship`).
    if let crate::store::Backend::Postgres(settings) = &config.state {
        start_audit_shipping(&audit, settings, &config).await?;
    }
    // The replay check needs every request id used before this start in
    // the index, also those of records a crash left unindexed: catch up now,
    // before any port is bound (exchange::replay_store).
    let behind = audit
        .tree_size()
        .saturating_sub(audit.indexed().unwrap_or(0));
    if behind > 0 {
        // A whole log after a restore or an index layout change: minutes
        // for tens of millions of records (docs/OPERATIONS.md).
        tracing::info!(
            records = behind,
            "indexing the audit log before the ports open"
        );
    }
    let catch_up = audit.clone();
    tokio::task::spawn_blocking(move || catch_up.sync_index())
        .await
        .map_err(|e| StartError::Audit(format!("indexing the audit log: {e}")))?
        .map_err(|e| StartError::Audit(format!("indexing the audit log: {e}")))?;

    let server_tls = tls::server_config(&cas, &identity)?;
    let client_tls = tls::client_config(&cas, &identity)?;
    let signing_key = SigningKey::from_pem(&key_pem).map_err(|e| StartError::Key(e.to_string()))?;
    let sealer = Arc::new(Sealer::new(signing_key, keyid));
    let broker = Broker::new(BrokerParts {
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
    });
    let broker = Arc::new(match shared {
        Some(shared) => broker.with_shared_state(Arc::new(shared)),
        None => broker,
    });

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
