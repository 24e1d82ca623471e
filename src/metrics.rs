//! The broker's own metrics, counted where things happen and served on
//! `/metrics` by [`crate::ops`]: exchanges by provider, service, consumer and
//! outcome code, the latency of the whole exchange, of the provider leg and
//! of the durable audit wait, body sizes, refusals without a record of their
//! own, and failed rule reloads. Built on `prometheus-client`, the Prometheus
//! project's Rust client (typed metrics, label sets as structs, OpenMetrics
//! and Prometheus text). What is read only when scraped (the audit queue,
//! indexer lag, certificates, listeners) is gathered by `ops` at scrape time.
//!
//! Invariants:
//! - *Bounded labels.* A label value is a participant id of the registry, a
//!   service key of the catalog, a code of PROTOCOL.md section 5 (`ok` for
//!   a delivered answer), or [`UNKNOWN`]; anything a caller makes up (an
//!   unregistered `MConnect-Client`, a path naming no catalogued service) is
//!   folded into `unknown`, so no request can create a series.
//! - *Cheap on the hot path.* Names are looked up in a [`Vocabulary`] built
//!   once per registry snapshot and catalog (rebuilt only after either is
//!   swapped); label values are `&'static str` (one interned copy of each
//!   name the registry or catalog ever held, so label sets are copied without
//!   reference counts), and each service keeps the handles of its histograms
//!   once it has been called. Counting an exchange allocates nothing once its
//!   series exist: a few hash lookups, one family lookup (the exchanges
//!   counter), atomic increments and histogram locks.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::time::Duration;

use arc_swap::{ArcSwap, Guard};
use foldhash::fast::RandomState;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::registry::RegistrySnapshot;
use crate::rules::Rules;

/// Latency buckets (seconds), 100 µs to 10 s: the broker's own work takes
/// under a millisecond, providers and fsyncs milliseconds, timeouts seconds.
pub const SECONDS_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Body size buckets (bytes), 64 B to 16 MiB in steps of four.
pub const BYTES_BUCKETS: [f64; 10] = [
    64.0,
    256.0,
    1024.0,
    4096.0,
    16384.0,
    65536.0,
    262_144.0,
    1_048_576.0,
    4_194_304.0,
    16_777_216.0,
];

/// The label value of a name the registry or the catalog does not know.
pub const UNKNOWN: &str = "unknown";

/// The outcome code of a delivered answer (a provider's own problem answer
/// included: the broker delivered it; its status is in the audit record).
pub const OK: &str = "ok";

/// The labels of `mconnect_exchanges_total`.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ExchangeLabels {
    /// The provider participant (from the catalogued service, else the
    /// registry), or `unknown`.
    pub provider: &'static str,
    /// The catalogued service key `provider/code`, or `unknown`.
    pub service: &'static str,
    /// The calling participant (by its certificate), or `unknown`.
    pub consumer: &'static str,
    /// A problem code of PROTOCOL.md section 5, or `ok`.
    pub code: &'static str,
}

/// The label of per-service histograms.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServiceLabels {
    /// The catalogued service key, or `unknown`.
    pub service: &'static str,
}

/// The label of per-provider histograms.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderLabels {
    /// The provider participant, or `unknown`.
    pub provider: &'static str,
}

/// A problem code.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabels {
    /// A problem code of PROTOCOL.md section 5.
    pub code: &'static str,
}

/// A fixed reason.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// One of a fixed set of reasons.
    pub reason: &'static str,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// What one exchange reports once it is answered.
#[derive(Debug, Clone, Copy)]
pub struct Observed<'a> {
    /// The provider the path named, if the exchange got that far.
    pub provider: Option<&'a str>,
    /// The service key the path named, if the exchange got that far.
    pub service: Option<&'a str>,
    /// The calling participant, if its certificate is registered.
    pub consumer: Option<&'a str>,
    /// The outcome: a problem code or [`OK`].
    pub code: &'static str,
    /// From receipt to the sealed answer.
    pub elapsed: Duration,
    /// The provider leg (the upstream call), if the call was forwarded.
    pub provider_elapsed: Option<Duration>,
    /// Waiting for the audit record to be durable, if one was written.
    pub audit_wait: Option<Duration>,
    /// The request body, if it was read.
    pub request_bytes: Option<u64>,
    /// The answer's body.
    pub response_bytes: u64,
    /// Whether the exchange has an audit record of its own (else it was
    /// counted in a refusal aggregate, or refused because the log could not
    /// take it).
    pub recorded: bool,
}

/// The broker's metrics; one per [`crate::exchange::Broker`].
pub struct Metrics {
    registry: Registry,
    names: Names,
    exchanges: Family<ExchangeLabels, Counter>,
    exchange_seconds: Histograms<ServiceLabels>,
    provider_seconds: Histograms<ProviderLabels>,
    audit_wait_seconds: Histogram,
    request_bytes: Histograms<ServiceLabels>,
    response_bytes: Histograms<ServiceLabels>,
    unrecorded: Family<CodeLabels, Counter>,
    reload_failures: Family<ReasonLabels, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn seconds() -> Histogram {
    Histogram::new(SECONDS_BUCKETS)
}

fn bytes() -> Histogram {
    Histogram::new(BYTES_BUCKETS)
}

/// One service's histograms, taken from their families on its first call
/// so later calls skip the families' locks and hashing.
struct ServiceSeries {
    duration: Histogram,
    request_bytes: Histogram,
    response_bytes: Histogram,
    /// Its provider's leg; `None` for the `unknown` service.
    provider: Option<Histogram>,
}

impl Metrics {
    /// The metrics of one broker, with the audit log's fsync histogram
    /// (`AuditLog::fsync_seconds`) among them.
    pub fn new(audit_fsync_seconds: Histogram) -> Metrics {
        let exchanges = Family::<ExchangeLabels, Counter>::default();
        let exchange_seconds: Histograms<ServiceLabels> = Family::new_with_constructor(seconds);
        let provider_seconds: Histograms<ProviderLabels> = Family::new_with_constructor(seconds);
        let audit_wait_seconds = seconds();
        let request_bytes: Histograms<ServiceLabels> = Family::new_with_constructor(bytes);
        let response_bytes: Histograms<ServiceLabels> = Family::new_with_constructor(bytes);
        let unrecorded = Family::<CodeLabels, Counter>::default();
        let reload_failures = Family::<ReasonLabels, Counter>::default();
        let mut registry = Registry::default();
        // prometheus-client adds `_total` to counters itself.
        registry.register(
            "mconnect_exchanges",
            "Exchanges answered, by provider, service, consumer and outcome code (ok or a problem code)",
            exchanges.clone(),
        );
        registry.register(
            "mconnect_exchange_duration_seconds",
            "Whole exchanges, from receipt to the sealed answer, by service",
            exchange_seconds.clone(),
        );
        registry.register(
            "mconnect_provider_duration_seconds",
            "The provider leg of forwarded calls (signed request out, checked answer back), by provider",
            provider_seconds.clone(),
        );
        registry.register(
            "mconnect_audit_wait_seconds",
            "Time an exchange waited for its audit record to be durable (queue, write, group fsync)",
            audit_wait_seconds.clone(),
        );
        registry.register(
            "mconnect_audit_fsync_seconds",
            "Duration of each group-commit fdatasync of the audit log",
            audit_fsync_seconds,
        );
        registry.register(
            "mconnect_request_body_bytes",
            "Request bodies read, by service",
            request_bytes.clone(),
        );
        registry.register(
            "mconnect_response_body_bytes",
            "Answer bodies sent (problem answers included), by service",
            response_bytes.clone(),
        );
        registry.register(
            "mconnect_exchanges_unrecorded",
            "Refusals answered without an audit record of their own: over the client's refusal budget (counted in an aggregate record) or not recordable (audit.unavailable)",
            unrecorded.clone(),
        );
        registry.register(
            "mconnect_rules_reload_failures",
            "Rule reloads (admin API or SIGHUP) that did not take effect, by reason (invalid, audit_unavailable)",
            reload_failures.clone(),
        );
        Metrics {
            registry,
            names: Names::new(),
            exchanges,
            exchange_seconds,
            provider_seconds,
            audit_wait_seconds,
            request_bytes,
            response_bytes,
            unrecorded,
            reload_failures,
        }
    }

    /// Adds the metrics of the checks brokers of a cluster make together
    /// (`store::SharedState`), for a broker on PostgreSQL.
    pub fn register_shared(&mut self, shared: &crate::store::SharedMetrics) {
        shared.register(&mut self.registry);
    }

    /// The metrics counted by the broker, for `/metrics`.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Counts one answered exchange. `registry` and `rules` are the ones it
    /// was decided on: they bound the label values.
    pub fn exchange(
        &self,
        observed: &Observed<'_>,
        registry: &Arc<RegistrySnapshot>,
        rules: &Arc<Rules>,
    ) {
        self.count(&self.names.current(registry, rules), observed);
    }

    /// Counts one answered exchange under the names `vocabulary` knows.
    fn count(&self, vocabulary: &Vocabulary, observed: &Observed<'_>) {
        let service = observed
            .service
            .and_then(|key| vocabulary.services.get(key));
        let labels = vocabulary.labels_of(observed, service);
        self.exchanges.get_or_create(&labels).inc();
        let series = match service {
            Some(s) => s
                .series
                .get_or_init(|| self.series(s.key, Some(s.provider))),
            None => self
                .names
                .unknown
                .get_or_init(|| self.series(UNKNOWN, None)),
        };
        series.duration.observe(observed.elapsed.as_secs_f64());
        if let Some(bytes) = observed.request_bytes {
            series.request_bytes.observe(bytes as f64);
        }
        series
            .response_bytes
            .observe(observed.response_bytes as f64);
        if let Some(leg) = observed.provider_elapsed {
            match &series.provider {
                Some(provider) => provider.observe(leg.as_secs_f64()),
                // Only a catalogued service is forwarded; kept general.
                None => self
                    .provider_seconds
                    .get_or_create(&ProviderLabels {
                        provider: labels.provider,
                    })
                    .observe(leg.as_secs_f64()),
            }
        }
        if let Some(wait) = observed.audit_wait {
            self.audit_wait_seconds.observe(wait.as_secs_f64());
        }
        if !observed.recorded {
            self.unrecorded
                .get_or_create(&CodeLabels {
                    code: observed.code,
                })
                .inc();
        }
    }

    fn series(&self, service: &'static str, provider: Option<&'static str>) -> ServiceSeries {
        let labels = ServiceLabels { service };
        ServiceSeries {
            duration: self.exchange_seconds.get_or_create_owned(&labels),
            request_bytes: self.request_bytes.get_or_create_owned(&labels),
            response_bytes: self.response_bytes.get_or_create_owned(&labels),
            provider: provider.map(|provider| {
                self.provider_seconds
                    .get_or_create_owned(&ProviderLabels { provider })
            }),
        }
    }

    /// Counts a reload that did not take effect; `reason` is `invalid` or
    /// `audit_unavailable`.
    pub fn rules_reload_failed(&self, reason: &'static str) {
        self.reload_failures
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// The label set an exchange is counted under.
    pub fn labels(
        &self,
        observed: &Observed<'_>,
        registry: &Arc<RegistrySnapshot>,
        rules: &Arc<Rules>,
    ) -> ExchangeLabels {
        self.names.current(registry, rules).labels(observed)
    }
}

/// The vocabulary in use, rebuilt when the registry or the catalog changed.
struct Names {
    current: ArcSwap<Vocabulary>,
    rebuild: Mutex<()>,
    /// The histograms of calls to no catalogued service.
    unknown: OnceLock<ServiceSeries>,
}

impl Names {
    fn new() -> Names {
        Names {
            current: ArcSwap::from_pointee(Vocabulary::default()),
            rebuild: Mutex::new(()),
            unknown: OnceLock::new(),
        }
    }

    /// The vocabulary of `registry` and `rules`: the one in use when it was
    /// built from them (two pointer comparisons), else a new one.
    fn current(
        &self,
        registry: &Arc<RegistrySnapshot>,
        rules: &Arc<Rules>,
    ) -> Guard<Arc<Vocabulary>> {
        let vocabulary = self.current.load();
        if vocabulary.is_of(registry, rules) {
            return vocabulary;
        }
        drop(vocabulary);
        // One rebuild at a time; whoever waited finds it done.
        let _turn = self.rebuild.lock().unwrap_or_else(PoisonError::into_inner);
        let vocabulary = self.current.load();
        if vocabulary.is_of(registry, rules) {
            return vocabulary;
        }
        let fresh = Arc::new(Vocabulary::of(registry, rules));
        self.current.store(Arc::clone(&fresh));
        Guard::from_inner(fresh)
    }
}

/// The names label values may take: the registry's participants and the
/// catalog's services.
#[derive(Default)]
pub struct Vocabulary {
    /// What it was built from. Weak references keep the allocations (not the
    /// data) alive, so a new snapshot can never sit at the same address.
    registry: Weak<RegistrySnapshot>,
    rules: Weak<Rules>,
    participants: HashMap<Box<str>, &'static str, RandomState>,
    services: HashMap<Box<str>, Service, RandomState>,
}

/// A catalogued service as labels name it.
struct Service {
    provider: &'static str,
    key: &'static str,
    /// Its histograms, once it has been called.
    series: OnceLock<ServiceSeries>,
}

impl Vocabulary {
    fn of(registry: &Arc<RegistrySnapshot>, rules: &Arc<Rules>) -> Vocabulary {
        let participants = registry.participants();
        let mut vocabulary = Vocabulary::new(
            participants.iter().map(|p| p.id.as_str()),
            rules
                .catalog
                .services()
                .map(|s| (s.provider.as_str(), s.key.as_str())),
        );
        vocabulary.registry = Arc::downgrade(registry);
        vocabulary.rules = Arc::downgrade(rules);
        vocabulary
    }

    /// A vocabulary of these participant ids and (provider, service key)
    /// pairs.
    pub fn new<'a>(
        participants: impl Iterator<Item = &'a str>,
        services: impl Iterator<Item = (&'a str, &'a str)>,
    ) -> Vocabulary {
        Vocabulary {
            registry: Weak::new(),
            rules: Weak::new(),
            participants: participants.map(|id| (Box::from(id), intern(id))).collect(),
            services: services
                .map(|(provider, key)| {
                    let service = Service {
                        provider: intern(provider),
                        key: intern(key),
                        series: OnceLock::new(),
                    };
                    (Box::from(key), service)
                })
                .collect(),
        }
    }

    fn is_of(&self, registry: &Arc<RegistrySnapshot>, rules: &Arc<Rules>) -> bool {
        std::ptr::eq(self.registry.as_ptr(), Arc::as_ptr(registry))
            && std::ptr::eq(self.rules.as_ptr(), Arc::as_ptr(rules))
    }

    /// The labels of an exchange: every name folded into `unknown` unless
    /// this vocabulary has it.
    pub fn labels(&self, observed: &Observed<'_>) -> ExchangeLabels {
        let service = observed.service.and_then(|key| self.services.get(key));
        self.labels_of(observed, service)
    }

    fn labels_of(&self, observed: &Observed<'_>, service: Option<&Service>) -> ExchangeLabels {
        let participant = |id: Option<&str>| {
            id.and_then(|id| self.participants.get(id).copied())
                .unwrap_or(UNKNOWN)
        };
        let (provider, service) = match service {
            Some(s) => (s.provider, s.key),
            None => (participant(observed.provider), UNKNOWN),
        };
        ExchangeLabels {
            provider,
            service,
            consumer: participant(observed.consumer),
            code: observed.code,
        }
    }
}

/// One `'static` copy of `name`, made the first time it is asked for. Only
/// names of the registry and the catalog are interned, so the memory held
/// is bounded by the names they ever held (a few bytes each).
fn intern(name: &str) -> &'static str {
    static NAMES: OnceLock<Mutex<HashSet<&'static str, RandomState>>> = OnceLock::new();
    let mut names = NAMES
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    if let Some(interned) = names.get(name) {
        return interned;
    }
    let interned: &'static str = Box::leak(Box::from(name));
    names.insert(interned);
    interned
}

#[cfg(test)]
mod tests;
