//! One sandbox per directory: a lock on `{dir}/sandbox.lock`, taken before
//! the sandbox touches anything else in the directory.
//!
//! Invariants: a second `mconnect sandbox` on a directory in use stops with a
//! clear error before it removes, rewrites or opens anything there (the
//! running one's sandbox.json, broker.toml, shipped data and state stay as
//! they are); the lock is the kernel's (`flock`), so it is released however
//! the holder ends, SIGKILL included, and the file is opened close-on-exec,
//! so no child process inherits it.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::Path;

use anyhow::{Context, Result, bail};

/// Takes the directory's lock; held until the returned file is dropped.
pub(crate) fn lock(dir: &Path) -> Result<File> {
    let path = dir.join("sandbox.lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => bail!(
            "another sandbox is running on {} (its pid is in sandbox.json); stop it or use another --dir",
            dir.display()
        ),
        Err(TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("locking {}", path.display()))
        }
    }
}
