//! The background tasks of a running broker: reloading the rules on SIGHUP,
//! following the other brokers on a shared state store
//! (`rules::follow`), evicting idle rate-limit keys, and writing refusal
//! aggregates.
//!
//! Invariant: the tasks stop on shutdown, after any reload in progress has
//! finished, so a reload is never cut off between audit and swap.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::exchange::{Broker, unix_now};
use crate::rules::{ReloadError, reload};

/// How often idle rate-limit keys are evicted. A key is only evictable after
/// a minute of idleness anyway (see `policy::rate`), so scanning more often
/// would find nothing new.
const EVICT_EVERY: Duration = Duration::from_secs(60);

/// The background tasks of a running broker; stopped by [`Maintenance::stop`].
pub struct Maintenance {
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Maintenance {
    /// Starts the SIGHUP reload handler, the follower of the shared state,
    /// the rate-limit eviction timer and the writer of refusal aggregates.
    pub fn start(broker: Arc<Broker>, catalog_dir: PathBuf, policies_dir: PathBuf) -> Maintenance {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let mut tasks = Vec::with_capacity(4);
        tasks.push(tokio::spawn(crate::rules::follow::follow(
            Arc::clone(&broker),
            catalog_dir.clone(),
            policies_dir.clone(),
            stopped.clone(),
        )));
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
