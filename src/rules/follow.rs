//! Following the other brokers on a shared state store: what they commit
//! (participants, grants) and their reloads of the rule files reach this
//! broker through the store's change feed (`store::ChangeFeed`) and are put
//! into its registry snapshot and rules here, within a second of the commit.
//!
//! Invariants:
//! - The data plane never waits for this: it keeps reading the snapshot and
//!   rules in force, which are swapped atomically as for a local change.
//! - Nothing here is audited: the broker that made a change audited it
//!   before committing it; this broker only catches up with what is
//!   already in force elsewhere.
//! - A burst of commits becomes one reload: the feed folds everything
//!   marked while a reload runs into the next one.
//! - Swaps go through the same locks as local writers (the registry's
//!   writers' lock, [`LiveRules::writer`](super::LiveRules::writer)), so a
//!   reload never swaps out a newer local change.
//! - A reload that fails (the store unreachable, rules that no longer load)
//!   is retried with a backoff, and until one succeeds the feed's health
//!   says why, so the broker refuses changes and `/readyz` reports it.
//!   A reload of the rule files announced by another broker that fails here
//!   is not retried: this broker's files are refused as a SIGHUP would
//!   refuse them, and the running rules stay.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::exchange::Broker;
use crate::store::Changes;

/// The first wait before a failed reload is tried again.
const RETRY_FIRST: Duration = Duration::from_millis(250);
/// The longest wait between tries.
const RETRY_MAX: Duration = Duration::from_secs(30);

/// Applies the store's change feed to `broker` until `stopped` turns true.
/// Returns at once when the store has no feed (redb: nobody else writes).
pub async fn follow(
    broker: Arc<Broker>,
    catalog_dir: PathBuf,
    policies_dir: PathBuf,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    let Some(feed) = broker.registry().feed().cloned() else {
        return;
    };
    let mut retry = RETRY_FIRST;
    loop {
        let changes = tokio::select! {
            biased;
            _ = stopped.changed() => return,
            changes = feed.next() => changes,
        };
        let (target, catalog, policies) = (
            Arc::clone(&broker),
            catalog_dir.clone(),
            policies_dir.clone(),
        );
        let outcome =
            tokio::task::spawn_blocking(move || apply(&target, changes, &catalog, &policies))
                .await
                .unwrap_or_else(|e| Err(format!("the reload task failed: {e}")));
        match outcome {
            Ok(()) => {
                retry = RETRY_FIRST;
                feed.applied(Ok(()));
            }
            Err(reason) => {
                tracing::error!(%reason, ?changes, "changes from other brokers not applied; retrying, and refusing changes here until they are");
                feed.applied(Err(reason));
                tokio::select! {
                    biased;
                    _ = stopped.changed() => return,
                    _ = tokio::time::sleep(retry) => {}
                }
                retry = (retry * 2).min(RETRY_MAX);
            }
        }
    }
}

/// Reloads what `changes` name: the registry from the store, then the rules
/// (catalog and policy files, with the stored grants checked against the
/// registry just reloaded). Blocking.
pub fn apply(
    broker: &Broker,
    changes: Changes,
    catalog_dir: &Path,
    policies_dir: &Path,
) -> Result<(), String> {
    if changes.registry() {
        let swapped = broker
            .registry()
            .refresh()
            .map_err(|e| format!("reloading the participants: {e}"))?;
        if swapped {
            tracing::info!("participants changed by another broker are in force");
        }
    }
    if changes.rules() {
        let writer = broker.live_rules().writer();
        match super::load(catalog_dir, policies_dir, broker.registry()) {
            Ok(rules) => {
                writer.swap(rules);
                tracing::info!(
                    version = broker.live_rules().version(),
                    grants = changes.grants,
                    files = changes.rules_files,
                    resync = changes.resync,
                    "rules reloaded for changes made by another broker"
                );
            }
            Err(problems) => {
                let reason = super::summarise(&problems);
                broker.metrics().rules_reload_failed("invalid");
                if changes.grants || changes.resync {
                    return Err(format!("reloading the rules: {reason}"));
                }
                // Only the files changed, elsewhere: ours are refused as a
                // SIGHUP would refuse them. Retrying cannot help.
                tracing::error!(%reason, "another broker reloaded its rule files, but ours are refused; the running rules stay in force (every broker of a cluster needs the same catalog and policy files)");
            }
        }
    }
    Ok(())
}
