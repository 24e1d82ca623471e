//! The notification queue, persisted in `--data/notifications/`, one JSON
//! file per notification.
//!
//! Invariants: every change reaches the disk before it is acted on or
//! answered (`mconnect_sdk::adapter::write_atomic`: a temporary file, fsync,
//! rename, fsync of the directory), so a crash leaves either the old or the
//! new record, never a torn one; a notification is marked `Sent` only after
//! the SMTP server accepted it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use mconnect_sdk::adapter::write_atomic;
use serde::{Deserialize, Serialize};

/// Where a notification goes.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Recipient {
    /// A natural person, resolved to an e-mail address by the backend.
    Idnp(String),
    /// An e-mail address.
    Email(String),
    /// An HTTPS URL that receives a JSON POST.
    Webhook(String),
}

/// How it is delivered.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// SMTP.
    Email,
    /// HTTPS POST.
    Webhook,
}

/// Where a notification stands (MNotify's own status names).
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum Status {
    /// Queued or between retries.
    Sending,
    /// The SMTP server accepted the message.
    Sent,
    /// The webhook receiver acknowledged it with a 2xx answer.
    Delivered,
    /// Attempts exhausted, or refused permanently.
    Failed,
}

/// One notification and the outcome of its sends.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Notification {
    /// Its id (UUIDv4).
    pub id: String,
    /// The caller's key for repeating the same request safely.
    pub idempotency_key: Option<String>,
    /// The participant that asked for it.
    pub client: String,
    /// Whom it was addressed to.
    pub recipient: Recipient,
    /// The resolved e-mail address or webhook URL.
    pub address: String,
    /// The channel.
    pub channel: Channel,
    /// Template id.
    pub template: String,
    /// Language (`ro`, `ru`, `en`).
    pub language: String,
    /// Rendered subject.
    pub subject: String,
    /// Rendered body.
    pub body: String,
    /// Status.
    pub status: Status,
    /// Sends tried so far.
    pub attempts: u32,
    /// Unix milliseconds before which no further send is tried.
    pub next_attempt_ms: u64,
    /// The last failure, for the status answer.
    pub last_error: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339, once sent or delivered.
    pub sent_at: Option<String>,
}

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The disk.
    #[error("storage {path}: {source}")]
    Io {
        /// File concerned.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// A record that does not parse.
    #[error("corrupt record {path}: {reason}")]
    Corrupt {
        /// File concerned.
        path: PathBuf,
        /// Cause.
        reason: String,
    },
}

/// The queue: all notifications in memory, each mirrored in its file.
pub struct Store {
    dir: PathBuf,
    items: BTreeMap<String, Notification>,
}

impl Store {
    /// Opens `data/notifications`, loading every record.
    pub fn open(data: &Path) -> Result<Store, StoreError> {
        let dir = data.join("notifications");
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| StoreError::Io { path, source }
        };
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let mut items = BTreeMap::new();
        for entry in std::fs::read_dir(&dir).map_err(io(&dir))? {
            let path = entry.map_err(io(&dir))?.path();
            // Leftover temporary files are writes that never completed.
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            let text = std::fs::read_to_string(&path).map_err(io(&path))?;
            let n: Notification = serde_json::from_str(&text).map_err(|e| StoreError::Corrupt {
                path: path.clone(),
                reason: e.to_string(),
            })?;
            items.insert(n.id.clone(), n);
        }
        Ok(Store { dir, items })
    }

    /// A notification by id.
    pub fn get(&self, id: &str) -> Option<&Notification> {
        self.items.get(id)
    }

    /// The notification an earlier request with this key from this client made.
    pub fn by_key(&self, client: &str, key: &str) -> Option<&Notification> {
        self.items
            .values()
            .find(|n| n.client == client && n.idempotency_key.as_deref() == Some(key))
    }

    /// Ids of notifications due for a send at `now_ms`, oldest first.
    pub fn due(&self, now_ms: u64) -> Vec<String> {
        let mut due: Vec<&Notification> = self
            .items
            .values()
            .filter(|n| n.status == Status::Sending && n.next_attempt_ms <= now_ms)
            .collect();
        due.sort_by(|a, b| a.created_at.cmp(&b.created_at));
        due.into_iter().map(|n| n.id.clone()).collect()
    }

    /// Writes a notification durably, then keeps it in memory.
    pub fn put(&mut self, n: Notification) -> Result<(), StoreError> {
        save(&self.dir.join(format!("{}.json", n.id)), &n)?;
        self.items.insert(n.id.clone(), n);
        Ok(())
    }
}

/// Writes `value` as JSON to `path`, durably ([`write_atomic`]).
fn save<T: Serialize>(path: &Path, value: &T) -> Result<(), StoreError> {
    let bytes = serde_json::to_vec_pretty(value).map_err(|e| StoreError::Corrupt {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    write_atomic(path, &bytes).map_err(|source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    })
}
