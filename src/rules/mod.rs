//! The rules a broker decides by — the catalog (what exists on the bus) and
//! the policy index (who may call what), built from the catalog and policy
//! directories plus the grants of connection requests kept in the state
//! store — and their whole lifecycle: loading with every problem reported at
//! once ([`load`]), reloading ([`reload`]), and the atomic swap behind one
//! write lock ([`LiveRules`]). A change to the rules arriving from elsewhere
//! (the admin API, SIGHUP, another broker on a shared store: [`follow`])
//! enters here.
//!
//! Invariants:
//! - *All or nothing*: new rules are built off to the side and put in force
//!   in one atomic swap only when the whole catalog and every policy loaded;
//!   a refused load changes nothing, and calls in flight finish on the rules
//!   they started with.
//! - *Ordered writers*: every writer holds [`LiveRules::writer`] from its
//!   load to its swap, so a slower load never swaps in rules older than
//!   those another writer just put in force. Readers never wait.
//! - A refused load names every problem ([`RuleProblem`]), with its file
//!   and JSON pointer, in one answer; the loaders run once.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use arc_swap::ArcSwap;
use serde_json::Value;

use crate::catalog::Catalog;
use crate::policy::PolicyIndex;
use crate::registry::Registry;

pub mod follow;
mod problem;
mod reload;

pub use problem::{RuleProblem, summarise};
pub use reload::{ReloadError, ReloadSummary, reload};

/// The catalog and the policy index, swapped together.
pub struct Rules {
    /// What exists on the bus.
    pub catalog: Catalog,
    /// Who may call what.
    pub policy: PolicyIndex,
}

/// The rules in force, and the lock their writers share.
pub struct LiveRules {
    current: ArcSwap<Rules>,
    write: Mutex<()>,
    /// 1 for the rules the broker started with, raised by every swap.
    version: AtomicU64,
    /// When the rules in force were put in force (unix seconds).
    since: AtomicI64,
}

/// Held by one writer of the rules from its load to its swap.
///
/// A std mutex guard: hold it on a blocking thread or in synchronous code,
/// never across an `.await`.
pub struct RulesWriter<'a> {
    live: &'a LiveRules,
    _turn: MutexGuard<'a, ()>,
}

impl LiveRules {
    /// Rules in force from the start.
    pub fn new(rules: Rules) -> LiveRules {
        LiveRules {
            current: ArcSwap::from_pointee(rules),
            write: Mutex::new(()),
            version: AtomicU64::new(1),
            since: AtomicI64::new(crate::exchange::unix_now()),
        }
    }

    /// Which rules are in force: 1 for those the broker started with, one
    /// more for each swap since (reload, SIGHUP, connection-request
    /// transition). Not kept across restarts.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// When the rules in force were put in force (unix seconds).
    pub fn since(&self) -> i64 {
        self.since.load(Ordering::Acquire)
    }

    /// The rules in force now. Lock-free; the `Arc` keeps them alive for a
    /// call that started on them, whatever is swapped in meanwhile.
    pub fn current(&self) -> Arc<Rules> {
        self.current.load_full()
    }

    /// Waits for the writers before, then lets this one load and swap.
    pub fn writer(&self) -> RulesWriter<'_> {
        RulesWriter {
            live: self,
            // A writer that panicked left the rules whole (the swap is one
            // store), so its poison carries no meaning.
            _turn: self.write.lock().unwrap_or_else(PoisonError::into_inner),
        }
    }
}

impl RulesWriter<'_> {
    /// Puts `rules` in force atomically.
    pub fn swap(&self, rules: Rules) {
        self.live.current.store(Arc::new(rules));
        // Writers hold the lock, so versions follow the order of swaps.
        self.live
            .since
            .store(crate::exchange::unix_now(), Ordering::Release);
        self.live.version.fetch_add(1, Ordering::AcqRel);
    }
}

/// Loads the catalog and the policies, with the grants of connection
/// requests read from the registry's state store, checked against the
/// registry's participants. On refusal, every problem found.
pub fn load(
    catalog_dir: &Path,
    policies_dir: &Path,
    registry: &Registry,
) -> Result<Rules, Vec<RuleProblem>> {
    let stored = crate::connect::stored_grant_documents(registry.store().as_ref())
        .map_err(|e| vec![RuleProblem::general(e)])?;
    load_with(catalog_dir, policies_dir, registry, stored)
}

/// [`load`] with the stored grant documents given: a connection-request
/// transition checks that the rules would load with its change before the
/// change is audited and stored.
pub fn load_with(
    catalog_dir: &Path,
    policies_dir: &Path,
    registry: &Registry,
    mut stored: Vec<(PathBuf, Value)>,
) -> Result<Rules, Vec<RuleProblem>> {
    let catalog = Catalog::load_dir_all(catalog_dir)?;
    let snapshot = registry.snapshot();
    let known = |id: &str| snapshot.get(id).is_some();
    // The policy files plus the grants of connection requests in force (or
    // suspended, or revoked for listings), read from the state store and
    // checked by the same loader, so both kinds obey the same rules.
    let mut documents: Vec<(PathBuf, Value)> = crate::catalog::files_in(policies_dir)?
        .into_iter()
        .map(|file| (file.path, file.value))
        .collect();
    // A stored grant that no longer loads (its service left the catalog, its
    // consumer was removed) is left out with a warning rather than stopping
    // the broker: leaving it out denies what it allowed, the safe side, and
    // everyone else keeps being served. Policy files stay strict.
    stored.retain(|(path, value)| {
        match PolicyIndex::from_documents(vec![(path.clone(), value.clone())], &catalog, &known) {
            Ok(_) => true,
            Err(problems) => {
                for problem in problems {
                    tracing::warn!(%problem, "stored grant no longer valid; left out of the policy index");
                }
                false
            }
        }
    });
    documents.extend(stored);
    let policy = PolicyIndex::from_documents(documents, &catalog, &known)?;
    Ok(Rules { catalog, policy })
}
