//! Free space of the audit filesystem: the watermark below which the log takes
//! no new work, and the monitor that reopens a failed log once space is back.
//!
//! A full disk must never turn into "refuse everything until a restart". So:
//!
//! - **Watermark.** Below `min_free_bytes` free (statvfs `f_bavail`, what an
//!   unprivileged writer may use) the log refuses *work* records (exchanges and
//!   their refusal aggregates) with `Unavailable`, before they reach the disk,
//!   and the broker stops taking new exchanges. Management records (admin
//!   changes, connection-request transitions, reloads, audit reads) may still
//!   use the reserve below the watermark, so operators and auditors keep
//!   working while the disk is nearly full.
//! - **Precision.** The writer asks statvfs once per batch before writing it
//!   (one syscall per group commit), so the watermark holds even between the
//!   monitor's ticks.
//! - **Self-healing.** A log that failed closed (a write or fsync failed, for
//!   example with ENOSPC) is reopened by the monitor once free space is back
//!   above the watermark: the writer checks the last segment's tail against
//!   the in-memory tree exactly as recovery does at open (every frame below the
//!   published size must hash to its leaf; frames past it were never
//!   acknowledged and are cut), then resumes. No restart is needed. A tail that
//!   does not check out keeps the log failed (and says why): never guess.
//!
//! Invariant: the monitor holds neither a strong reference to the log nor a
//! strong sender, so it never keeps a dropped log alive.

use std::path::Path;
use std::sync::Weak;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::writer::Command;
use super::{AuditError, Shared};

/// Watermark when none is configured: 5 % of the filesystem, at most this.
pub const DEFAULT_MAX_WATERMARK: u64 = 256 * 1024 * 1024;
/// Share of the filesystem (in percent) the default watermark keeps free.
const DEFAULT_WATERMARK_PERCENT: u64 = 5;
/// How often the monitor looks at the free space.
const MONITOR_EVERY: Duration = Duration::from_millis(250);

/// What the log knows about its filesystem's free space.
pub(crate) struct Space {
    /// Free bytes that must remain for work records to be taken.
    watermark: u64,
    /// Last free-byte count seen.
    free: AtomicU64,
    /// Set while free space is below the watermark.
    low: AtomicBool,
}

/// A snapshot of the space state, for metrics, readiness and the data plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpaceStatus {
    /// Free bytes of the audit filesystem at the last look.
    pub free_bytes: u64,
    /// The configured (or default) watermark.
    pub watermark_bytes: u64,
    /// True while free space is below the watermark: no new work is taken.
    pub below_watermark: bool,
}

/// Free bytes available to the broker on the filesystem holding `dir`, and the
/// filesystem's total size.
pub(crate) fn free_and_total(dir: &Path) -> std::io::Result<(u64, u64)> {
    let st = rustix::fs::statvfs(dir).map_err(std::io::Error::from)?;
    let unit = st.f_frsize.max(1);
    Ok((
        st.f_bavail.saturating_mul(unit),
        st.f_blocks.saturating_mul(unit),
    ))
}

impl Space {
    /// The space state of the filesystem holding `dir`; `configured` is the
    /// operator's watermark, `None` for the default (5 % of the filesystem, at
    /// most 256 MiB).
    pub(crate) fn open(dir: &Path, configured: Option<u64>) -> Result<Space, AuditError> {
        let (free, total) = free_and_total(dir).map_err(|e| AuditError::io(dir, e))?;
        let watermark = configured.unwrap_or_else(|| {
            (total / 100)
                .saturating_mul(DEFAULT_WATERMARK_PERCENT)
                .min(DEFAULT_MAX_WATERMARK)
        });
        Ok(Space {
            watermark,
            free: AtomicU64::new(free),
            low: AtomicBool::new(free < watermark),
        })
    }

    /// True while the filesystem is below the watermark (as last seen).
    pub(crate) fn is_low(&self) -> bool {
        self.low.load(Ordering::Acquire)
    }

    /// The current state.
    pub(crate) fn status(&self) -> SpaceStatus {
        SpaceStatus {
            free_bytes: self.free.load(Ordering::Acquire),
            watermark_bytes: self.watermark,
            below_watermark: self.is_low(),
        }
    }

    /// Looks at the filesystem now and records what it saw; returns the free
    /// bytes. A failing statvfs counts as no space: fail closed.
    pub(crate) fn refresh(&self, dir: &Path) -> u64 {
        let free = match free_and_total(dir) {
            Ok((free, _)) => free,
            Err(e) => {
                tracing::warn!(error = %e, "audit log: cannot read free space; taking no new work");
                0
            }
        };
        self.free.store(free, Ordering::Release);
        let low = free < self.watermark;
        if self.low.swap(low, Ordering::AcqRel) != low {
            if low {
                tracing::error!(
                    free,
                    watermark = self.watermark,
                    "audit filesystem below its free-space watermark: new exchanges are refused"
                );
            } else {
                tracing::info!(
                    free,
                    watermark = self.watermark,
                    "audit filesystem above its free-space watermark again"
                );
            }
        }
        free
    }

    /// Whether a work record of `bytes`, after `used` bytes already admitted in
    /// the same batch, keeps `free` above the watermark.
    pub(crate) fn admits(&self, free: u64, used: u64, bytes: u64) -> bool {
        free.saturating_sub(used) >= self.watermark.saturating_add(bytes)
    }
}

/// Starts the monitor thread: refreshes the space state every 250 ms and,
/// when the log has failed closed and space is above the watermark, asks the
/// writer to reopen it. Ends once the log is closed or dropped.
pub(crate) fn spawn_monitor(
    shared: Weak<Shared>,
    tx: mpsc::WeakSender<Command>,
) -> Result<std::thread::JoinHandle<()>, AuditError> {
    std::thread::Builder::new()
        .name("audit-space".to_string())
        .spawn(move || {
            // Back off after a failed reopen so a damaged tail is not re-read
            // four times a second; space coming back is checked every tick.
            let mut wait_ticks = 0u32;
            let mut backoff = 1u32;
            loop {
                std::thread::sleep(MONITOR_EVERY);
                let Some(shared) = shared.upgrade() else { return };
                if shared.closed.load(Ordering::Acquire) {
                    return;
                }
                let dir = shared.config.dir.clone();
                shared.space.refresh(&dir);
                if shared.failure().is_none() || shared.space.is_low() {
                    continue;
                }
                if wait_ticks > 0 {
                    wait_ticks -= 1;
                    continue;
                }
                drop(shared);
                let Some(tx) = tx.upgrade() else { return };
                let (reply, answer) = oneshot::channel();
                if tx.blocking_send(Command::Reopen(reply)).is_err() {
                    return;
                }
                drop(tx);
                match answer.blocking_recv() {
                    Ok(Ok(size)) => {
                        tracing::info!(
                            tree_size = size,
                            "audit log reopened after its tail checked out; appends resume"
                        );
                        backoff = 1;
                    }
                    Ok(Err(e)) => {
                        tracing::error!(error = %e, "audit log: reopen refused; the log stays failed closed");
                        wait_ticks = backoff;
                        backoff = (backoff * 2).min(240);
                    }
                    Err(_) => return,
                }
            }
        })
        .map_err(|e| AuditError::Unavailable(format!("cannot start audit-space: {e}")))
}

/// Checks the tail of the log before a failed log takes appends again, as
/// recovery does at open: every frame of the last segment below `size` (the
/// published tree size) must be there and hash to its leaf in the tree;
/// frames at or past `size` were never acknowledged (their callers were
/// refused) and are cut off; a segment file a failed roll left behind is
/// removed if it holds no record. Returns the last segment and its length.
pub(crate) fn check_tail(
    shared: &Shared,
    size: u64,
) -> Result<(std::path::PathBuf, u64), AuditError> {
    use super::merkle::leaf_hash;
    use super::segment::{
        Decoded, HEADER_LEN, decode_frame, decode_header, list_segments, sync_dir, truncate,
        valid_frame_after,
    };
    let segments_dir = shared.segments_dir();
    let last = shared
        .layout_read()
        .segments
        .last()
        .cloned()
        .ok_or_else(|| AuditError::Unavailable("the audit log has no segment".to_string()))?;
    let corrupt = |path: &Path, offset: u64, seq: u64, reason: &str| AuditError::Corrupt {
        segment: path.to_path_buf(),
        offset,
        seq,
        reason: reason.to_string(),
    };
    let mut removed = false;
    for seg in list_segments(&segments_dir)? {
        if seg.base <= last.base {
            continue;
        }
        let bytes = std::fs::read(&seg.path).map_err(|e| AuditError::io(&seg.path, e))?;
        let holds_record = matches!(
            decode_frame(&bytes, HEADER_LEN as usize),
            Decoded::Frame { .. }
        ) || valid_frame_after(&bytes, HEADER_LEN as usize, size).is_some();
        if seg.base != size || holds_record {
            return Err(corrupt(
                &seg.path,
                0,
                seg.base,
                "a segment past the log's end holds records nobody was told about",
            ));
        }
        std::fs::remove_file(&seg.path).map_err(|e| AuditError::io(&seg.path, e))?;
        removed = true;
    }
    if removed {
        sync_dir(&segments_dir)?;
    }
    let bytes = std::fs::read(&last.path).map_err(|e| AuditError::io(&last.path, e))?;
    if decode_header(&bytes) != Some(last.base) {
        return Err(corrupt(&last.path, 0, last.base, "bad segment header"));
    }
    let mut offset = HEADER_LEN as usize;
    {
        let tree = shared.tree_read();
        for seq in last.base..size {
            match decode_frame(&bytes, offset) {
                Decoded::Frame { seq: s, leaf, next }
                    if s == seq && tree.leaf(seq) == Some(leaf_hash(leaf)) =>
                {
                    offset = next;
                }
                _ => {
                    return Err(corrupt(
                        &last.path,
                        offset as u64,
                        seq,
                        "an acknowledged record is missing or differs from the tree",
                    ));
                }
            }
        }
    }
    if bytes.len() > offset {
        tracing::warn!(
            segment = %last.path.display(),
            offset,
            dropped = bytes.len() - offset,
            "audit log: cut frames that were never acknowledged before reopening"
        );
        truncate(&last.path, offset as u64)?;
    }
    Ok((last.path, offset as u64))
}
