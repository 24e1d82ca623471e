//! Broker configuration: a TOML file read into a raw serde structure and
//! turned into a validated [`Config`] in one step.
//!
//! Invariants: unknown keys are an error; every path is resolved relative to
//! the configuration file's directory; a [`Config`] that exists is usable, so
//! nothing after this module re-checks it. A bad configuration makes
//! `mconnect serve` exit with code 64 (`EX_USAGE`) before any port is bound.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// The exit code for a configuration the broker refuses (sysexits `EX_USAGE`).
pub const EXIT_CONFIG: i32 = 64;

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TOML is malformed, has an unknown key or a value of the wrong type.
    #[error("config file {path} is invalid: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the parser reported, with line and column.
        message: String,
    },
    /// A value is well-formed but unusable.
    #[error("config key `{key}` is invalid: {reason}")]
    Invalid {
        /// The dotted key.
        key: &'static str,
        /// What to fix.
        reason: String,
    },
}

/// The validated broker configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where the data plane (consumers) listens.
    pub data_listen: SocketAddr,
    /// Where the admin and metadata API listens.
    pub admin_listen: SocketAddr,
    /// Where the plain-HTTP operations listener (`/healthz`, `/readyz`,
    /// `/metrics`, no client certificate) listens; loopback by default.
    pub ops_listen: SocketAddr,
    /// The public base URL of the data plane, used to check `@target-uri`
    /// when clients reach the broker through a name it cannot see.
    pub public_data_url: Option<String>,
    /// PEM file with the CA certificate(s) that issue participant certificates.
    pub ca_file: PathBuf,
    /// PEM file with the broker's certificate (chain first).
    pub cert_file: PathBuf,
    /// PEM file with the broker's private key.
    pub key_file: PathBuf,
    /// PEM files with the broker's earlier certificates (`tls.previous_certs`):
    /// their keys signed receipts and tree heads before the last rotation, so
    /// they stay published for verifiers (see `app::broker_certificates`).
    pub previous_cert_files: Vec<PathBuf>,
    /// Where participants, connection requests and grants are kept: the
    /// embedded redb file (`storage.state`, the default) or PostgreSQL
    /// (`[state] postgres`).
    pub state: crate::store::Backend,
    /// The audit log directory.
    pub audit_dir: PathBuf,
    /// The catalog directory.
    pub catalog_dir: PathBuf,
    /// The policies (grants) directory.
    pub policies_dir: PathBuf,
    /// Limits on what the broker accepts.
    pub limits: Limits,
    /// Timeouts towards providers.
    pub provider: ProviderSettings,
    /// How the audit log is written (the optional `[audit]` section).
    pub audit: AuditSettings,
    /// Connection limits of every listener (the optional `[server]` section;
    /// `max_header_bytes` comes from `[limits]`).
    pub server: crate::server::ServerLimits,
}

/// The optional `[audit]` section: how the audit log writes segments and
/// publishes signed tree heads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditSettings {
    /// A segment is closed and the next one started past this size
    /// (4096 to 1073741824 bytes).
    pub segment_bytes: u64,
    /// Largest number of records made durable by one fsync (1 to 65536).
    pub max_batch: usize,
    /// How often a signed tree head is published when the log grew; `None`
    /// (`tree_head_interval_secs = 0`) publishes only on demand and at shutdown.
    pub tree_head_interval: Option<Duration>,
    /// How long records are kept before whole sealed segments may be pruned
    /// (`retention_days`, default 730; their leaf hashes are kept).
    pub record_retention: Duration,
    /// Key file for the bodies of services that opt in to body storage
    /// (`body_key_file`, 32 raw bytes, created with mode 0600 when missing);
    /// `None` means `body.key` in the audit directory.
    pub body_key_file: Option<PathBuf>,
    /// Free bytes the audit filesystem keeps for management records
    /// (`min_free_bytes`): below it no new exchange is taken. `None`: 5 % of
    /// the filesystem, at most 256 MiB; `Some(0)` turns the watermark off.
    pub min_free_bytes: Option<u64>,
    /// The name this broker's log is shipped under to a cluster's shared
    /// copy (`broker_id`, with `[state] postgres`): written to the log
    /// directory's `broker-id` file at the first start and checked against
    /// it afterwards; `None` lets the first start pick a random one.
    pub broker_id: Option<String>,
}

impl Default for AuditSettings {
    fn default() -> Self {
        AuditSettings {
            segment_bytes: crate::audit::DEFAULT_SEGMENT_BYTES,
            max_batch: crate::audit::DEFAULT_MAX_BATCH,
            tree_head_interval: Some(Duration::from_secs(60)),
            record_retention: crate::audit::DEFAULT_RECORD_RETENTION,
            body_key_file: None,
            min_free_bytes: None,
            broker_id: None,
        }
    }
}

/// Limits on requests the broker accepts.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest request body any service may receive; a service's own limit may be lower.
    pub max_body_bytes: usize,
    /// Largest response body the broker reads from a provider.
    pub max_response_bytes: usize,
    /// Largest total size of request headers.
    pub max_header_bytes: usize,
    /// How far `created` may be from the broker's clock.
    pub created_skew: Duration,
    /// How many request ids the replay check may hold in memory (ids not yet
    /// in the audit index); when full, requests are refused with 503.
    pub replay_capacity: usize,
    /// Most JSON values one request body or provider answer may hold (a
    /// small body of empty arrays would otherwise become a large tree).
    pub max_json_values: usize,
    /// Refusals audited one by one per client certificate and second; the
    /// rest are counted in one record per (certificate, code, second).
    pub refusals_per_second: u32,
    /// Burst of refusals audited one by one per client certificate.
    pub refusals_burst: u32,
}

/// Timeouts towards providers.
#[derive(Clone, Debug)]
pub struct ProviderSettings {
    /// TCP and TLS connect timeout.
    pub connect_timeout: Duration,
    /// Request timeout for services whose catalog entry names none.
    pub default_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 4 * 1024 * 1024,
            max_response_bytes: 16 * 1024 * 1024,
            max_header_bytes: 32 * 1024,
            created_skew: Duration::from_secs(300),
            replay_capacity: 4_000_000,
            max_json_values: 200_000,
            refusals_per_second: crate::exchange::refusals::DEFAULT_REFUSALS_PER_SECOND,
            refusals_burst: crate::exchange::refusals::DEFAULT_REFUSALS_BURST,
        }
    }
}

impl Default for ProviderSettings {
    fn default() -> Self {
        ProviderSettings {
            connect_timeout: Duration::from_secs(2),
            default_timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: RawListen,
    tls: RawTls,
    storage: RawStorage,
    catalog: RawDir,
    policies: RawDir,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    provider: RawProvider,
    #[serde(default)]
    audit: RawAudit,
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    state: RawState,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawState {
    postgres: Option<String>,
    password_file: Option<PathBuf>,
    pool_size: Option<usize>,
    timeout_secs: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawServer {
    header_read_timeout_secs: Option<u64>,
    idle_timeout_secs: Option<u64>,
    max_connections: Option<usize>,
    max_connections_per_certificate: Option<usize>,
    max_concurrent_streams: Option<u32>,
    h2_keepalive_interval_secs: Option<u64>,
    h2_keepalive_timeout_secs: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAudit {
    segment_bytes: Option<u64>,
    max_batch: Option<usize>,
    tree_head_interval_secs: Option<u64>,
    retention_days: Option<u64>,
    body_key_file: Option<PathBuf>,
    min_free_bytes: Option<u64>,
    broker_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawListen {
    data: String,
    admin: String,
    ops: Option<String>,
    public_data_url: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    #[serde(default)]
    previous_certs: Vec<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStorage {
    state: Option<PathBuf>,
    audit_dir: PathBuf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDir {
    dir: PathBuf,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_body_bytes: Option<usize>,
    max_response_bytes: Option<usize>,
    max_header_bytes: Option<usize>,
    created_skew_secs: Option<u64>,
    replay_capacity: Option<usize>,
    max_json_values: Option<usize>,
    refusals_per_second: Option<u32>,
    refusals_burst: Option<u32>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawProvider {
    connect_timeout_ms: Option<u64>,
    default_timeout_ms: Option<u64>,
}

impl Config {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let base = path.parent().unwrap_or_else(|| Path::new("."));
        Config::from_toml(&text, base).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.to_path_buf(),
                message,
            },
            other => other,
        })
    }

    /// Parses and validates configuration text; relative paths are resolved against `base`.
    pub fn from_toml(text: &str, base: &Path) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::new(),
            message: e.to_string(),
        })?;
        let resolve = |p: PathBuf| if p.is_absolute() { p } else { base.join(p) };
        let defaults = Limits::default();
        let provider_defaults = ProviderSettings::default();
        let limits = Limits {
            max_body_bytes: positive(
                "limits.max_body_bytes",
                raw.limits.max_body_bytes,
                defaults.max_body_bytes,
            )?,
            max_response_bytes: positive(
                "limits.max_response_bytes",
                raw.limits.max_response_bytes,
                defaults.max_response_bytes,
            )?,
            max_header_bytes: positive(
                "limits.max_header_bytes",
                raw.limits.max_header_bytes,
                defaults.max_header_bytes,
            )?,
            created_skew: Duration::from_secs(positive(
                "limits.created_skew_secs",
                raw.limits.created_skew_secs,
                defaults.created_skew.as_secs(),
            )?),
            replay_capacity: positive(
                "limits.replay_capacity",
                raw.limits.replay_capacity,
                defaults.replay_capacity,
            )?,
            max_json_values: positive(
                "limits.max_json_values",
                raw.limits.max_json_values,
                defaults.max_json_values,
            )?,
            refusals_per_second: positive(
                "limits.refusals_per_second",
                raw.limits.refusals_per_second,
                defaults.refusals_per_second,
            )?,
            refusals_burst: positive(
                "limits.refusals_burst",
                raw.limits.refusals_burst,
                defaults.refusals_burst,
            )?,
        };
        if limits.max_header_bytes < 8192 {
            return Err(ConfigError::Invalid {
                key: "limits.max_header_bytes",
                reason: "must be at least 8192 so signed requests fit".into(),
            });
        }
        let provider = ProviderSettings {
            connect_timeout: Duration::from_millis(positive(
                "provider.connect_timeout_ms",
                raw.provider.connect_timeout_ms,
                provider_defaults.connect_timeout.as_millis() as u64,
            )?),
            default_timeout: Duration::from_millis(positive(
                "provider.default_timeout_ms",
                raw.provider.default_timeout_ms,
                provider_defaults.default_timeout.as_millis() as u64,
            )?),
        };
        let server = server_limits(&raw.server, limits.max_header_bytes)?;
        let state = state_backend(&raw.state, raw.storage.state.clone(), &resolve)?;
        let mut audit = audit_settings(&raw.audit)?;
        audit.body_key_file = raw.audit.body_key_file.clone().map(resolve);
        if let Some(url) = &raw.listen.public_data_url
            && (!url.starts_with("https://") || url.ends_with('/'))
        {
            return Err(ConfigError::Invalid {
                key: "listen.public_data_url",
                reason: "must be an https:// URL without a trailing slash".into(),
            });
        }
        let data_listen = socket("listen.data", &raw.listen.data)?;
        // Clients sign `@target-uri` with the broker's authority; on a
        // wildcard address the broker cannot know it, so it must be told.
        if data_listen.ip().is_unspecified() && raw.listen.public_data_url.is_none() {
            return Err(ConfigError::Invalid {
                key: "listen.public_data_url",
                reason: format!(
                    "is required when listen.data is a wildcard address ({data_listen}): give the https:// URL clients address"
                ),
            });
        }
        Ok(Config {
            data_listen,
            admin_listen: socket("listen.admin", &raw.listen.admin)?,
            ops_listen: socket(
                "listen.ops",
                raw.listen.ops.as_deref().unwrap_or(DEFAULT_OPS_LISTEN),
            )?,
            public_data_url: raw.listen.public_data_url,
            ca_file: existing("tls.ca", resolve(raw.tls.ca))?,
            cert_file: existing("tls.cert", resolve(raw.tls.cert))?,
            key_file: existing("tls.key", resolve(raw.tls.key))?,
            previous_cert_files: raw
                .tls
                .previous_certs
                .into_iter()
                .map(|p| existing("tls.previous_certs", resolve(p)))
                .collect::<Result<_, _>>()?,
            state,
            audit_dir: resolve(raw.storage.audit_dir),
            catalog_dir: existing("catalog.dir", resolve(raw.catalog.dir))?,
            policies_dir: existing("policies.dir", resolve(raw.policies.dir))?,
            limits,
            provider,
            audit,
            server,
        })
    }
}

/// The operations listener's address when `listen.ops` is not set: loopback,
/// so probes and metrics are not exposed beyond the host by default.
pub const DEFAULT_OPS_LISTEN: &str = "127.0.0.1:8445";

/// Checks the `[server]` section. Every limit has a floor and a ceiling so
/// that no value turns a limit off (a zero cap would refuse everything, a
/// huge timeout would be no timeout).
fn server_limits(
    raw: &RawServer,
    max_header_bytes: usize,
) -> Result<crate::server::ServerLimits, ConfigError> {
    let d = crate::server::ServerLimits::default();
    let secs = |key: &'static str, value: Option<u64>, default: Duration, max: u64| match value {
        None => Ok(default),
        Some(v @ 1..) if v <= max => Ok(Duration::from_secs(v)),
        Some(_) => Err(ConfigError::Invalid {
            key,
            reason: format!("must be between 1 and {max} seconds"),
        }),
    };
    let count = |key: &'static str, value: Option<usize>, default: usize, max: usize| match value {
        None => Ok(default),
        Some(v @ 1..) if v <= max => Ok(v),
        Some(_) => Err(ConfigError::Invalid {
            key,
            reason: format!("must be between 1 and {max}"),
        }),
    };
    let limits = crate::server::ServerLimits {
        max_header_bytes,
        header_read_timeout: secs(
            "server.header_read_timeout_secs",
            raw.header_read_timeout_secs,
            d.header_read_timeout,
            300,
        )?,
        idle_timeout: secs(
            "server.idle_timeout_secs",
            raw.idle_timeout_secs,
            d.idle_timeout,
            3600,
        )?,
        max_connections: count(
            "server.max_connections",
            raw.max_connections,
            d.max_connections,
            1_000_000,
        )?,
        max_connections_per_certificate: count(
            "server.max_connections_per_certificate",
            raw.max_connections_per_certificate,
            d.max_connections_per_certificate,
            1_000_000,
        )?,
        max_concurrent_streams: count(
            "server.max_concurrent_streams",
            raw.max_concurrent_streams.map(|v| v as usize),
            d.max_concurrent_streams as usize,
            10_000,
        )? as u32,
        h2_keepalive_interval: secs(
            "server.h2_keepalive_interval_secs",
            raw.h2_keepalive_interval_secs,
            d.h2_keepalive_interval,
            3600,
        )?,
        h2_keepalive_timeout: secs(
            "server.h2_keepalive_timeout_secs",
            raw.h2_keepalive_timeout_secs,
            d.h2_keepalive_timeout,
            300,
        )?,
    };
    if limits.max_connections_per_certificate > limits.max_connections {
        return Err(ConfigError::Invalid {
            key: "server.max_connections_per_certificate",
            reason: "must not exceed server.max_connections".into(),
        });
    }
    Ok(limits)
}

/// The state store: `storage.state` (embedded redb) or `state.postgres`,
/// exactly one of them; the other `[state]` keys only with `postgres`.
fn state_backend(
    raw: &RawState,
    file: Option<PathBuf>,
    resolve: &dyn Fn(PathBuf) -> PathBuf,
) -> Result<crate::store::Backend, ConfigError> {
    use crate::store::{Backend, PostgresSettings};
    let Some(url) = &raw.postgres else {
        let only_with_postgres = [
            ("state.password_file", raw.password_file.is_some()),
            ("state.pool_size", raw.pool_size.is_some()),
            ("state.timeout_secs", raw.timeout_secs.is_some()),
        ];
        if let Some((key, _)) = only_with_postgres.iter().find(|(_, set)| *set) {
            return Err(ConfigError::Invalid {
                key,
                reason: "applies to state.postgres only, which is not set".into(),
            });
        }
        return match file {
            Some(file) => Ok(Backend::Embedded(resolve(file))),
            None => Err(ConfigError::Invalid {
                key: "storage.state",
                reason: "is missing: name the embedded state file, or set state.postgres".into(),
            }),
        };
    };
    if file.is_some() {
        return Err(ConfigError::Invalid {
            key: "storage.state",
            reason: "conflicts with state.postgres: keep one state store (remove storage.state to use PostgreSQL)".into(),
        });
    }
    let mut settings = PostgresSettings::from_url(url).map_err(|reason| ConfigError::Invalid {
        key: "state.postgres",
        reason,
    })?;
    if let Some(path) = &raw.password_file {
        let path = resolve(path.clone());
        let password = std::fs::read_to_string(&path).map_err(|e| ConfigError::Invalid {
            key: "state.password_file",
            reason: format!("cannot read {}: {e}", path.display()),
        })?;
        settings = settings.with_password(password.trim_end_matches(['\r', '\n']).as_bytes());
    }
    match raw.pool_size {
        None => {}
        Some(n @ 1..=1024) => settings = settings.with_pool_size(n),
        Some(_) => {
            return Err(ConfigError::Invalid {
                key: "state.pool_size",
                reason: "must be between 1 and 1024".into(),
            });
        }
    }
    match raw.timeout_secs {
        None => {}
        Some(secs @ 1..=600) => settings = settings.with_timeout(Duration::from_secs(secs)),
        Some(_) => {
            return Err(ConfigError::Invalid {
                key: "state.timeout_secs",
                reason: "must be between 1 and 600 seconds".into(),
            });
        }
    }
    Ok(Backend::Postgres(Box::new(settings)))
}

/// Checks the `[audit]` section against the bounds the audit log accepts.
fn audit_settings(raw: &RawAudit) -> Result<AuditSettings, ConfigError> {
    let defaults = AuditSettings::default();
    let segment_bytes = raw.segment_bytes.unwrap_or(defaults.segment_bytes);
    if !(4096..=1 << 30).contains(&segment_bytes) {
        return Err(ConfigError::Invalid {
            key: "audit.segment_bytes",
            reason: "must be between 4096 and 1073741824".into(),
        });
    }
    let max_batch = raw.max_batch.unwrap_or(defaults.max_batch);
    if !(1..=65536).contains(&max_batch) {
        return Err(ConfigError::Invalid {
            key: "audit.max_batch",
            reason: "must be between 1 and 65536".into(),
        });
    }
    let tree_head_interval = match raw.tree_head_interval_secs {
        None => defaults.tree_head_interval,
        Some(0) => None,
        Some(secs) => Some(Duration::from_secs(secs)),
    };
    // Bounded so that `now - retention` can never underflow the clock.
    let record_retention = match raw.retention_days {
        None => defaults.record_retention,
        Some(days @ 1..=36500) => Duration::from_secs(days * 24 * 3600),
        Some(_) => {
            return Err(ConfigError::Invalid {
                key: "audit.retention_days",
                reason: "must be between 1 and 36500".into(),
            });
        }
    };
    Ok(AuditSettings {
        segment_bytes,
        max_batch,
        tree_head_interval,
        record_retention,
        body_key_file: None,
        // Any value is coherent: 0 turns the watermark off (only a failed
        // write stops appends), more than the disk refuses all exchanges.
        min_free_bytes: raw.min_free_bytes,
        broker_id: match &raw.broker_id {
            Some(id) if !crate::audit::ship::valid_broker_id(id) => {
                return Err(ConfigError::Invalid {
                    key: "audit.broker_id",
                    reason: "must be 1 to 64 letters, digits, `.`, `_` or `-`, starting with a letter or digit".into(),
                });
            }
            other => other.clone(),
        },
    })
}

fn socket(key: &'static str, value: &str) -> Result<SocketAddr, ConfigError> {
    value.parse().map_err(|_| ConfigError::Invalid {
        key,
        reason: format!("`{value}` is not an address:port such as 127.0.0.1:8443"),
    })
}

fn existing(key: &'static str, path: PathBuf) -> Result<PathBuf, ConfigError> {
    if path.exists() {
        Ok(path)
    } else {
        Err(ConfigError::Invalid {
            key,
            reason: format!("{} does not exist", path.display()),
        })
    }
}

fn positive<T: PartialOrd + Default + Copy>(
    key: &'static str,
    value: Option<T>,
    default: T,
) -> Result<T, ConfigError> {
    match value {
        None => Ok(default),
        Some(v) if v > T::default() => Ok(v),
        Some(_) => Err(ConfigError::Invalid {
            key,
            reason: "must be greater than zero".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example(dir: &Path) -> String {
        for f in ["ca.pem", "cert.pem", "key.pem"] {
            std::fs::write(dir.join(f), "x").unwrap();
        }
        std::fs::create_dir_all(dir.join("catalog")).unwrap();
        std::fs::create_dir_all(dir.join("policies")).unwrap();
        r#"
[listen]
data = "127.0.0.1:8443"
admin = "127.0.0.1:8444"
[tls]
ca = "ca.pem"
cert = "cert.pem"
key = "key.pem"
[storage]
state = "state.redb"
audit_dir = "audit"
[catalog]
dir = "catalog"
[policies]
dir = "policies"
"#
        .to_string()
    }

    #[test]
    fn accepts_minimal_config_and_resolves_paths() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = Config::from_toml(&example(dir.path()), dir.path()).unwrap();
        assert!(matches!(
            &cfg.state,
            crate::store::Backend::Embedded(p) if *p == dir.path().join("state.redb")
        ));
        assert_eq!(cfg.limits.created_skew, Duration::from_secs(300));
    }

    #[test]
    fn refuses_unknown_keys() {
        let dir = tempfile::tempdir().unwrap();
        let text = example(dir.path()) + "\n[limits]\nmax_bodi_bytes = 5\n";
        let err = Config::from_toml(&text, dir.path()).unwrap_err();
        assert!(err.to_string().contains("max_bodi_bytes"), "{err}");
    }

    #[test]
    fn refuses_bad_address_and_missing_files() {
        let dir = tempfile::tempdir().unwrap();
        let text = example(dir.path()).replace("127.0.0.1:8443", "localhost");
        assert!(matches!(
            Config::from_toml(&text, dir.path()),
            Err(ConfigError::Invalid {
                key: "listen.data",
                ..
            })
        ));
        std::fs::remove_file(dir.path().join("ca.pem")).unwrap();
        let text = example(dir.path());
        std::fs::remove_file(dir.path().join("ca.pem")).unwrap();
        assert!(matches!(
            Config::from_toml(&text, dir.path()),
            Err(ConfigError::Invalid { key: "tls.ca", .. })
        ));
    }

    #[test]
    fn refusal_budget_and_free_space_watermark() {
        let dir = tempfile::tempdir().unwrap();
        let base = example(dir.path());
        let cfg = Config::from_toml(&base, dir.path()).unwrap();
        assert_eq!(
            (cfg.limits.refusals_per_second, cfg.limits.refusals_burst),
            (20, 50)
        );
        assert_eq!(cfg.audit.min_free_bytes, None);
        let text = format!(
            "{base}[limits]\nrefusals_per_second = 5\nrefusals_burst = 7\n[audit]\nmin_free_bytes = 0\n"
        );
        let cfg = Config::from_toml(&text, dir.path()).unwrap();
        assert_eq!(
            (cfg.limits.refusals_per_second, cfg.limits.refusals_burst),
            (5, 7)
        );
        assert_eq!(cfg.audit.min_free_bytes, Some(0));
        for bad in ["refusals_per_second = 0", "refusals_burst = 0"] {
            let text = format!("{base}[limits]\n{bad}\n");
            assert!(
                matches!(
                    Config::from_toml(&text, dir.path()),
                    Err(ConfigError::Invalid { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn server_limits_defaults_bounds_and_ops_address() {
        let dir = tempfile::tempdir().unwrap();
        let base = example(dir.path());
        let cfg = Config::from_toml(&base, dir.path()).unwrap();
        assert_eq!(cfg.ops_listen, DEFAULT_OPS_LISTEN.parse().unwrap());
        assert_eq!(cfg.server.max_header_bytes, cfg.limits.max_header_bytes);
        assert_eq!(
            cfg.server.header_read_timeout,
            crate::server::ServerLimits::default().header_read_timeout
        );
        let text = base.replace(
            "admin = \"127.0.0.1:8444\"",
            "admin = \"127.0.0.1:8444\"\nops = \"127.0.0.1:0\"",
        ) + "[server]\nheader_read_timeout_secs = 3\nidle_timeout_secs = 7\nmax_connections = 9\nmax_connections_per_certificate = 4\nmax_concurrent_streams = 5\n";
        let cfg = Config::from_toml(&text, dir.path()).unwrap();
        assert_eq!(cfg.ops_listen.port(), 0);
        assert_eq!(cfg.server.header_read_timeout, Duration::from_secs(3));
        assert_eq!(cfg.server.idle_timeout, Duration::from_secs(7));
        assert_eq!(cfg.server.max_connections, 9);
        assert_eq!(cfg.server.max_connections_per_certificate, 4);
        assert_eq!(cfg.server.max_concurrent_streams, 5);
        for (bad, key) in [
            ("idle_timeout_secs = 0", "server.idle_timeout_secs"),
            (
                "header_read_timeout_secs = 301",
                "server.header_read_timeout_secs",
            ),
            ("max_connections = 0", "server.max_connections"),
            (
                "max_concurrent_streams = 0",
                "server.max_concurrent_streams",
            ),
            (
                "max_connections = 2\nmax_connections_per_certificate = 3",
                "server.max_connections_per_certificate",
            ),
        ] {
            let text = format!("{base}[server]\n{bad}\n");
            match Config::from_toml(&text, dir.path()) {
                Err(ConfigError::Invalid { key: k, .. }) => assert_eq!(k, key, "{bad}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
        let text = format!("{base}[server]\nmax_conections = 3\n");
        assert!(matches!(
            Config::from_toml(&text, dir.path()),
            Err(ConfigError::Parse { .. })
        ));
    }

    #[test]
    fn example_config_lists_the_server_defaults() {
        let text = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/broker.toml"),
        )
        .unwrap();
        let raw: RawConfig = toml::from_str(&text).unwrap();
        let limits = server_limits(&raw.server, Limits::default().max_header_bytes).unwrap();
        assert_eq!(limits, crate::server::ServerLimits::default());
        assert_eq!(raw.listen.ops.as_deref(), Some(DEFAULT_OPS_LISTEN));
    }

    #[test]
    fn state_in_postgres_instead_of_redb() {
        use crate::store::Backend;
        let dir = tempfile::tempdir().unwrap();
        let base = example(dir.path());
        let pg = base.replace("state = \"state.redb\"\n", "");
        let text = format!(
            "{pg}[state]\npostgres = \"postgres://mconnect@127.0.0.1:5433/mconnect\"\npool_size = 4\ntimeout_secs = 3\n"
        );
        match Config::from_toml(&text, dir.path()).unwrap().state {
            Backend::Postgres(s) => {
                assert_eq!(s.pool_size(), 4);
                assert_eq!(s.timeout(), Duration::from_secs(3));
                assert_eq!(s.describe(), "postgres://mconnect@127.0.0.1:5433/mconnect");
            }
            other => panic!("{other:?}"),
        }
        // A password, in the URL or in a file of its own, never shows.
        std::fs::write(dir.path().join("pg.password"), "s3cret\n").unwrap();
        for state in [
            "postgres = \"postgres://mconnect@localhost/mconnect\"\npassword_file = \"pg.password\"",
            "postgres = \"postgres://mconnect:s3cret@127.0.0.1/mconnect\"",
            "postgres = \"host=/run/postgresql user=mconnect password=s3cret dbname=mconnect\"",
        ] {
            let cfg = Config::from_toml(&format!("{pg}[state]\n{state}\n"), dir.path()).unwrap();
            assert!(matches!(cfg.state, Backend::Postgres(_)), "{state}");
            assert!(!format!("{cfg:?}").contains("s3cret"), "{state}");
        }
        let url = "postgres = \"postgres://m@127.0.0.1/db\"";
        for (text, key) in [
            (format!("{base}[state]\n{url}\n"), "storage.state"),
            (pg.clone(), "storage.state"),
            (format!("{base}[state]\npool_size = 3\n"), "state.pool_size"),
            (
                format!("{pg}[state]\npostgres = \"postgres://m@db.example.org/db\"\n"),
                "state.postgres",
            ),
            (
                format!("{pg}[state]\npostgres = \"postgres://m@192.0.2.7/db\"\n"),
                "state.postgres",
            ),
            (
                format!("{pg}[state]\npostgres = \"postgres://m@127.0.0.1/db?sslmode=require\"\n"),
                "state.postgres",
            ),
            (
                format!("{pg}[state]\npostgres = \"postgres://m@127.0.0.1\"\n"),
                "state.postgres",
            ),
            (
                format!("{pg}[state]\npostgres = \"no url\"\n"),
                "state.postgres",
            ),
            (
                format!("{pg}[state]\n{url}\npool_size = 0\n"),
                "state.pool_size",
            ),
            (
                format!("{pg}[state]\n{url}\ntimeout_secs = 0\n"),
                "state.timeout_secs",
            ),
            (
                format!("{pg}[state]\n{url}\npassword_file = \"missing\"\n"),
                "state.password_file",
            ),
        ] {
            match Config::from_toml(&text, dir.path()) {
                Err(ConfigError::Invalid { key: k, .. }) => assert_eq!(k, key, "{text}"),
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    #[test]
    fn audit_retention_and_body_key() {
        let dir = tempfile::tempdir().unwrap();
        let base = example(dir.path());
        let cfg = Config::from_toml(&base, dir.path()).unwrap();
        assert_eq!(
            cfg.audit.record_retention,
            crate::audit::DEFAULT_RECORD_RETENTION
        );
        assert_eq!(cfg.audit.body_key_file, None);
        let text =
            format!("{base}[audit]\nretention_days = 30\nbody_key_file = \"keys/body.key\"\n");
        let cfg = Config::from_toml(&text, dir.path()).unwrap();
        assert_eq!(
            cfg.audit.record_retention,
            Duration::from_secs(30 * 24 * 3600)
        );
        assert_eq!(
            cfg.audit.body_key_file,
            Some(dir.path().join("keys/body.key"))
        );
        let text = format!("{base}[audit]\nretention_days = 0\n");
        assert!(matches!(
            Config::from_toml(&text, dir.path()),
            Err(ConfigError::Invalid {
                key: "audit.retention_days",
                ..
            })
        ));
    }
}
