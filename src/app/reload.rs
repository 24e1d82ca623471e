//! Reloading catalog and policies while the broker runs, and the broker's
//! background maintenance: the SIGHUP handler and the periodic eviction of
//! idle rate-limit keys.
//!
//! Both reload triggers (SIGHUP and `POST /v1/reload`) go through [`reload`],
//! which reuses [`load_rules`](super::load_rules) so that a reload checks
//! exactly what a start checks.
//!
//! Invariants:
//! - *Reload without loss*: new rules are built off to the side, off the async
//!   workers; the running version is replaced in one atomic swap only when the
//!   whole catalog and every policy loaded. A bad file changes nothing.
//! - Every reload attempt, accepted or refused, is audited (event
//!   `admin.change`, service `rules.reload`) before it takes effect or is
//!   answered; if the record cannot be made durable the new rules are not
//!   swapped in.
//! - The maintenance tasks stop on shutdown, after any reload in progress
//!   has finished, so a reload is never cut off between audit and swap.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use crate::audit::{AuditRecord, Decision};
use crate::catalog;
use crate::exchange::{Broker, unix_now};
use crate::policy;
use crate::registry::Participant;

/// How often idle rate-limit keys are evicted. A key is only evictable after
/// a minute of idleness anyway (see `policy::rate`), so scanning more often
/// would find nothing new.
const EVICT_EVERY: Duration = Duration::from_secs(60);

/// The service name of reload records in the audit log.
const RELOAD_ACTION: &str = "rules.reload";

/// One problem that refused a reload: the file, where in it, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RuleProblem {
    /// The file (or directory) at fault; empty when the loader named none.
    pub file: String,
    /// JSON pointer inside the file; empty for the whole document.
    pub pointer: String,
    /// What is wrong and what to fix.
    pub reason: String,
}

impl std::fmt::Display for RuleProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.file.is_empty() {
            return f.write_str(&self.reason);
        }
        let pointer = if self.pointer.is_empty() {
            "(root)"
        } else {
            &self.pointer
        };
        write!(f, "{}: at {pointer}: {}", self.file, self.reason)
    }
}

/// Why a reload did not take effect. In every case the running rules stay.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// A catalog or policy file was refused; every problem found is listed.
    #[error("rules refused: {}", .0.first().map(ToString::to_string).unwrap_or_default())]
    Invalid(Vec<RuleProblem>),
    /// The reload could not be audited, so it was not applied.
    #[error("the reload could not be audited: {0}")]
    Audit(String),
}

/// What a successful reload put in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct ReloadSummary {
    /// Registers catalogued.
    pub registers: usize,
    /// Services catalogued.
    pub services: usize,
    /// Grants loaded, revoked ones included.
    pub grants: usize,
}

/// Reloads catalog and policies from `catalog_dir` and `policies_dir` and,
/// when both load, swaps them in atomically. `actor` is the operator who
/// asked, or `None` for SIGHUP (the broker itself).
pub async fn reload(
    broker: &Arc<Broker>,
    catalog_dir: &Path,
    policies_dir: &Path,
    actor: Option<&Participant>,
) -> Result<ReloadSummary, ReloadError> {
    let broker = Arc::clone(broker);
    let (catalog_dir, policies_dir) = (catalog_dir.to_path_buf(), policies_dir.to_path_buf());
    let actor = actor.cloned();
    let runtime = tokio::runtime::Handle::current();
    // Reading files and compiling schemas takes from milliseconds to seconds
    // (100k grants): it runs off the async workers serving exchanges, and so
    // may hold the rules lock and wait for the audit record there.
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let received = SystemTime::now();
        // Load, audit and swap under one lock, so that a slower reload never
        // swaps in rules older than those another writer just put in force.
        let _guard = rules_write_lock();
        let registry = broker.registry();
        let loaded = super::load_rules(&catalog_dir, &policies_dir, registry)
            .map_err(|error| diagnose(&catalog_dir, &policies_dir, registry, &error));
        let record = reload_record(actor.as_ref(), received, started, loaded.as_ref().err());
        runtime
            .block_on(broker.audit().append(record))
            .map_err(|e| ReloadError::Audit(e.to_string()))?;
        let rules = loaded.map_err(ReloadError::Invalid)?;
        let summary = ReloadSummary {
            registers: rules.catalog.registers().count(),
            services: rules.catalog.services().count(),
            grants: rules.policy.len(),
        };
        broker.swap_rules(rules);
        Ok(summary)
    })
    .await
    .unwrap_or_else(|join| {
        Err(ReloadError::Invalid(vec![RuleProblem {
            file: String::new(),
            pointer: String::new(),
            reason: format!("the reload task failed: {join}"),
        }]))
    })
}

/// The lock every writer of the rules holds from loading to swapping, so
/// that swaps happen in the order of loads. Writers other than [`reload`]
/// (connection-request approvals) take it around their own load and swap.
/// A std mutex: it is only ever held on blocking threads or in synchronous
/// code, never across an `.await`.
pub(crate) fn rules_write_lock() -> MutexGuard<'static, ()> {
    static RULES_WRITE: Mutex<()> = Mutex::new(());
    RULES_WRITE.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The background tasks of a running broker; stopped by [`Maintenance::stop`].
pub struct Maintenance {
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Maintenance {
    /// Starts the SIGHUP reload handler, the rate-limit eviction timer and the
    /// writer of refusal aggregates.
    pub fn start(broker: Arc<Broker>, catalog_dir: PathBuf, policies_dir: PathBuf) -> Maintenance {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let mut tasks = Vec::with_capacity(3);
        tasks.push(tokio::spawn(crate::exchange::refusals::run_flusher(
            Arc::clone(&broker),
            stopped.clone(),
        )));
        tasks.push(tokio::spawn(evict_idle_keys(
            Arc::clone(&broker),
            stopped.clone(),
        )));
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(hangups) => tasks.push(tokio::spawn(reload_on_hangup(
                broker,
                catalog_dir,
                policies_dir,
                hangups,
                stopped,
            ))),
            // Without the handler SIGHUP keeps its default action; the
            // operator endpoint still reloads.
            Err(e) => {
                tracing::warn!(error = %e, "cannot handle SIGHUP; reload with POST /v1/reload")
            }
        }
        Maintenance { stop, tasks }
    }

    /// Stops the tasks, letting a reload in progress finish first.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            if let Err(e) = task.await {
                tracing::error!(error = %e, "maintenance task failed");
            }
        }
    }
}

async fn reload_on_hangup(
    broker: Arc<Broker>,
    catalog_dir: PathBuf,
    policies_dir: PathBuf,
    mut hangups: tokio::signal::unix::Signal,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            biased;
            _ = stopped.changed() => return,
            signal = hangups.recv() => {
                if signal.is_none() {
                    return;
                }
            }
        }
        match reload(&broker, &catalog_dir, &policies_dir, None).await {
            Ok(summary) => tracing::info!(
                registers = summary.registers,
                services = summary.services,
                grants = summary.grants,
                "SIGHUP: catalog and policies reloaded"
            ),
            Err(ReloadError::Invalid(problems)) => {
                for problem in &problems {
                    tracing::error!(%problem, "SIGHUP: reload refused; the running rules stay in force");
                }
            }
            Err(e) => tracing::error!(error = %e, "SIGHUP: reload not applied"),
        }
    }
}

async fn evict_idle_keys(broker: Arc<Broker>, mut stopped: tokio::sync::watch::Receiver<bool>) {
    let mut ticks = tokio::time::interval(EVICT_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = stopped.changed() => return,
            _ = ticks.tick() => broker.rate_limiter().evict_idle(unix_now()),
        }
    }
}

/// Turns a refused load into the list of problems for the operator. The
/// loaders used by `mconnect catalog check` and `policy check` report every
/// problem with its file and pointer, so they are asked first; the message of
/// `load_rules` is the fallback for what only it checks (for example grants
/// of connection requests in the state store).
fn diagnose(
    catalog_dir: &Path,
    policies_dir: &Path,
    registry: &crate::registry::Registry,
    error: &super::StartError,
) -> Vec<RuleProblem> {
    let fallback = || {
        vec![RuleProblem {
            file: String::new(),
            pointer: String::new(),
            reason: error.to_string(),
        }]
    };
    let catalog = match catalog::Catalog::load_dir(catalog_dir) {
        Ok(catalog) => catalog,
        Err(_) => {
            return match catalog::check_dir(catalog_dir) {
                Err(problems) if !problems.is_empty() => problems
                    .into_iter()
                    .map(|p| RuleProblem {
                        file: p.file.display().to_string(),
                        pointer: p.pointer,
                        reason: p.reason,
                    })
                    .collect(),
                _ => fallback(),
            };
        }
    };
    let snapshot = registry.snapshot();
    let known = |id: &str| snapshot.get(id).is_some();
    match policy::check_dir(policies_dir, &catalog, &known) {
        Err(problems) if !problems.is_empty() => problems
            .into_iter()
            .map(|p| RuleProblem {
                file: p.file.display().to_string(),
                pointer: p.pointer,
                reason: p.reason,
            })
            .collect(),
        _ => fallback(),
    }
}

fn reload_record(
    actor: Option<&Participant>,
    received: SystemTime,
    started: Instant,
    problems: Option<&Vec<RuleProblem>>,
) -> AuditRecord {
    let (decision, http_status, problem_code) = match problems {
        None => (Decision::Accepted, 200, None),
        Some(_) => (Decision::Refused, 400, Some("admin.invalid".to_owned())),
    };
    AuditRecord {
        // SIGHUP has no participant behind it: the broker acts on its own
        // operator's signal, so the record names no consumer.
        consumer: actor.map(|p| p.id.clone()),
        consumer_idno: actor.map(|p| p.organisation.idno.clone()),
        decision,
        problem_code,
        http_status,
        ..AuditRecord::management("admin.change", RELOAD_ACTION, received, started)
    }
}
