//! The change feed: how a store shared by several brokers tells each of them
//! what the others changed, backend-neutral.
//!
//! A backend that others write to (PostgreSQL) hands out a [`ChangeFeed`]
//! per subscriber ([`StateStore::subscribe`](super::StateStore::subscribe));
//! one that only this broker writes (redb) hands out none. The backend marks
//! what changed ([`FeedSender`]); the subscriber takes everything marked
//! since its last take in one [`Changes`] ([`ChangeFeed::next`]), so a burst
//! of commits becomes one reload, and reports when it has applied them
//! ([`ChangeFeed::applied`]).
//!
//! Invariants: nothing marked is ever dropped before the subscriber took it
//! (marks are flags, so memory is bounded however many commits arrive); when
//! the backend's feed reconnects after losing the database it marks
//! everything ([`Changes::resync`]), since what was committed while it was
//! away was never announced; and [`ChangeFeed::health`] is an error from the
//! moment the feed is lost until a resync after it has been applied, so a
//! broker never takes a change while its snapshot may be stale.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use super::Collection;

/// What changed since the subscriber last took its changes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Participants (the registry).
    pub participants: bool,
    /// Connection requests (read from the store when asked for; no snapshot).
    pub connection_requests: bool,
    /// Grants of connection requests (the rules).
    pub grants: bool,
    /// A broker reloaded its catalog and policy files: reload ours.
    pub rules_files: bool,
    /// Anything may have changed (the feed reconnected after a loss): reload
    /// everything.
    pub resync: bool,
}

impl Changes {
    /// Nothing changed.
    pub fn is_empty(&self) -> bool {
        *self == Changes::default()
    }

    /// Whether the registry must be reloaded.
    pub fn registry(&self) -> bool {
        self.participants || self.resync
    }

    /// Whether the rules (catalog, policies and stored grants) must be
    /// reloaded. As for a local participant change, a participant change
    /// alone does not reload them; a grant stored with it does.
    pub fn rules(&self) -> bool {
        self.grants || self.rules_files || self.resync
    }

    fn merge(&mut self, other: Changes) {
        self.participants |= other.participants;
        self.connection_requests |= other.connection_requests;
        self.grants |= other.grants;
        self.rules_files |= other.rules_files;
        self.resync |= other.resync;
    }

    /// The change of one collection.
    pub fn of(collection: Collection) -> Changes {
        match collection {
            Collection::Participants => Changes {
                participants: true,
                ..Changes::default()
            },
            Collection::ConnectionRequests => Changes {
                connection_requests: true,
                ..Changes::default()
            },
            Collection::Grants => Changes {
                grants: true,
                ..Changes::default()
            },
        }
    }
}

/// Whether the feed is connected to the shared store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FeedStatus {
    /// Listening since then.
    Connected {
        /// When the feed (re)connected.
        since: SystemTime,
    },
    /// The store is out of reach since then.
    Lost {
        /// When the feed lost it.
        since: SystemTime,
        /// What the backend reported.
        reason: String,
    },
}

/// One subscriber's view of the feed.
#[derive(Clone)]
pub struct ChangeFeed {
    shared: Arc<Shared>,
}

/// The backend's side of one subscription: marks changes and the status.
#[derive(Clone)]
pub(crate) struct FeedSender {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    /// Holds one permit when something was marked and nobody waited, so a
    /// mark between a take and the next wait is never missed.
    wake: tokio::sync::Notify,
}

struct State {
    status: FeedStatus,
    /// Marked, not yet taken.
    pending: Changes,
    /// Taken, not yet reported applied.
    applying: Changes,
    /// Why the last application failed (the subscriber retries).
    failed: Option<String>,
}

/// A new subscription: the backend keeps the sender, the subscriber the feed.
pub(crate) fn channel() -> (FeedSender, ChangeFeed) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            status: FeedStatus::Connected {
                since: SystemTime::now(),
            },
            pending: Changes::default(),
            applying: Changes::default(),
            failed: None,
        }),
        wake: tokio::sync::Notify::new(),
    });
    (
        FeedSender {
            shared: Arc::clone(&shared),
        },
        ChangeFeed { shared },
    )
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // Every update is one assignment: a panic leaves no half-state.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl FeedSender {
    /// Marks changes for the subscriber and wakes it.
    pub(crate) fn mark(&self, changes: Changes) {
        if changes.is_empty() {
            return;
        }
        self.shared.state().pending.merge(changes);
        self.shared.wake.notify_one();
    }

    /// The feed lost the store. Kept as the first loss until reconnected.
    pub(crate) fn lost(&self, reason: String) {
        let mut state = self.shared.state();
        if matches!(state.status, FeedStatus::Connected { .. }) {
            state.status = FeedStatus::Lost {
                since: SystemTime::now(),
                reason,
            };
        }
    }

    /// The feed is back: whatever was committed meanwhile was not announced,
    /// so everything is marked for reloading.
    pub(crate) fn reconnected(&self) {
        let mut state = self.shared.state();
        state.status = FeedStatus::Connected {
            since: SystemTime::now(),
        };
        state.pending.resync = true;
        drop(state);
        self.shared.wake.notify_one();
    }

    /// Whether the subscriber is gone.
    pub(crate) fn is_closed(&self) -> bool {
        Arc::strong_count(&self.shared) == 1
    }
}

impl ChangeFeed {
    /// Waits until something changed, then takes everything marked so far.
    /// Cancel-safe: nothing is taken until it returns.
    pub async fn next(&self) -> Changes {
        loop {
            {
                let mut state = self.shared.state();
                if !state.pending.is_empty() {
                    let taken = std::mem::take(&mut state.pending);
                    state.applying.merge(taken);
                    return taken;
                }
            }
            self.shared.wake.notified().await;
        }
    }

    /// Reports the changes last taken as applied (`Ok`), or not (`Err`: they
    /// are marked again, and the health says why until a later success).
    pub fn applied(&self, outcome: Result<(), String>) {
        let mut state = self.shared.state();
        let applying = std::mem::take(&mut state.applying);
        match outcome {
            Ok(()) => state.failed = None,
            Err(reason) => {
                state.pending.merge(applying);
                state.failed = Some(reason);
            }
        }
    }

    /// The connection's status.
    pub fn status(&self) -> FeedStatus {
        self.shared.state().status.clone()
    }

    /// Whether this broker's view of the shared state is current enough to
    /// change it: the feed is connected, no resync waits to be applied, and
    /// the last application succeeded. The error says which, and since when.
    pub fn health(&self) -> Result<(), String> {
        let state = self.shared.state();
        if let FeedStatus::Lost { since, reason } = &state.status {
            return Err(format!(
                "the shared state store is out of reach since {} (unix seconds): {reason}",
                unix(*since)
            ));
        }
        if state.pending.resync || state.applying.resync {
            return Err(
                "reloading the shared state after the store came back; try again in a moment"
                    .into(),
            );
        }
        if let Some(reason) = &state.failed {
            return Err(format!(
                "the last change from other brokers could not be applied here: {reason}"
            ));
        }
        Ok(())
    }
}

fn unix(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
