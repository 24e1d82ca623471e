//! The reference MNotify backend: [`LocalBackend`] holds the persistent
//! queue ([`store`]), the recipient table of `--data/recipients.json`, and
//! the wake-up of the delivery worker ([`delivery`], which sends over SMTP
//! and HTTPS behind the [`delivery::Channels`] seam); [`templates`] renders
//! the built-in templates.
//!
//! Invariants: the queue is shared by the bus side and the one delivery
//! worker under one lock, never held across a send; IDNP recipients resolve
//! through the table, else to the deterministic mailbox
//! `{IDNP}@cetatean.mnotify.md`.

use std::path::Path;
use std::sync::Arc;

use serde_json::Value;
use tokio::sync::{Mutex, Notify};

use self::delivery::{Backoff, Channels};
use self::store::{Store, StoreError};

pub mod delivery;
pub mod store;
pub mod templates;

/// The reference backend, as the service and the worker share it.
pub struct LocalBackend {
    /// The notification queue.
    pub store: Arc<Mutex<Store>>,
    /// Wakes the delivery worker when a notification is queued.
    pub wake: Arc<Notify>,
    /// `{"IDNP": "address"}`.
    recipients: serde_json::Map<String, Value>,
}

impl LocalBackend {
    /// Opens the queue in `data` (created if absent) and reads the recipient
    /// table (none if the file is absent or unreadable).
    pub fn open(data: &Path) -> Result<LocalBackend, StoreError> {
        std::fs::create_dir_all(data).map_err(|source| StoreError::Io {
            path: data.to_path_buf(),
            source,
        })?;
        let table = data.join("recipients.json");
        let recipients = match std::fs::read_to_string(&table) {
            Ok(text) => {
                serde_json::from_str::<serde_json::Map<String, Value>>(&text).map_err(|e| {
                    StoreError::Corrupt {
                        path: table,
                        reason: e.to_string(),
                    }
                })?
            }
            Err(_) => serde_json::Map::new(),
        };
        Ok(LocalBackend {
            store: Arc::new(Mutex::new(Store::open(data)?)),
            wake: Arc::new(Notify::new()),
            recipients,
        })
    }

    /// Starts the delivery worker on `channels`; it runs until the runtime
    /// ends.
    pub fn spawn_worker<C: Channels>(&self, channels: C, backoff: Backoff) {
        tokio::spawn(delivery::run_worker(
            self.store.clone(),
            Arc::new(channels),
            backoff,
            self.wake.clone(),
        ));
    }

    /// The address of a person: from the recipient table, else the
    /// reference backend's mailbox for the IDNP.
    pub fn resolve_idnp(&self, idnp: &str) -> String {
        self.recipients
            .get(idnp)
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| format!("{idnp}@cetatean.mnotify.md"))
    }
}
