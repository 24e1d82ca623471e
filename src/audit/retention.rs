//! Record retention: whole sealed segments older than the retention are
//! pruned, keeping their leaf hashes so the tree stays verifiable.
//!
//! A pruned segment leaves `segments/{first seq:020}.pruned`, integers
//! little-endian:
//!
//! ```text
//! "MCAUDPR1"   8 bytes magic
//! base         u64, first seq of the pruned segment
//! count        u64, number of records it held
//! newest_ms    u64, newest record time in it (ms since the Unix epoch)
//! hashes       count × 32 bytes, the RFC 9162 leaf hashes in seq order
//! checksum     32 bytes, SHA-256 of everything above
//! ```
//!
//! Invariants:
//!
//! - **Only whole sealed segments are pruned, oldest first**, never the active
//!   (last) segment and never one holding a record newer than the cutoff, so the
//!   pruned files always cover a gap-free prefix `[0, pruned_below)`.
//! - **The hashes are durable before the records go.** The pruned file is
//!   written to a temporary name, fsynced, renamed and the directory fsynced;
//!   only then is the segment removed. A crash in between leaves both; the next
//!   open finishes the prune (the pruned file is complete by then).
//! - **The kept hashes are the tree's hashes**: each pruned record is re-read
//!   and checked against the in-memory tree before its hash is kept, and a
//!   signed tree head covering the segment is published first, so `verify_dir`
//!   can hold the kept hashes against a signature.
//! - Only this module (on the retention pass) removes segments; the writer
//!   never touches a sealed segment.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use super::bodies::millis;
use super::merkle::{Hash, leaf_hash};
use super::record::{AuditRecord, parse_timestamp};
use super::segment::{Decoded, HEADER_LEN, decode_frame, decode_header, sync_dir};
use super::{AuditError, Shared};

const MAGIC: &[u8; 8] = b"MCAUDPR1";
const FIXED: usize = 8 + 8 + 8 + 8;

/// Name of the pruned-hashes file of the segment starting at `base`.
pub(crate) fn pruned_name(base: u64) -> String {
    format!("{base:020}.pruned")
}

/// The bytes of a pruned-hashes file.
pub(crate) fn encode_pruned(base: u64, newest_ms: u64, hashes: &[Hash]) -> Vec<u8> {
    let mut out = Vec::with_capacity(FIXED + hashes.len() * 32 + 32);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&base.to_le_bytes());
    out.extend_from_slice(&(hashes.len() as u64).to_le_bytes());
    out.extend_from_slice(&newest_ms.to_le_bytes());
    for h in hashes {
        out.extend_from_slice(h);
    }
    let sum = crate::crypto::sha256(&out);
    out.extend_from_slice(&sum);
    out
}

/// A decoded pruned-hashes file.
#[derive(Debug, Clone)]
pub(crate) struct Pruned {
    pub base: u64,
    pub hashes: Vec<Hash>,
}

/// Decodes and checks a pruned-hashes file.
pub(crate) fn decode_pruned(bytes: &[u8]) -> Result<Pruned, &'static str> {
    if bytes.len() < FIXED + 32 {
        return Err("pruned-hashes file is truncated");
    }
    let (body, sum) = bytes.split_at(bytes.len() - 32);
    if crate::crypto::sha256(body) != sum {
        return Err("pruned-hashes checksum mismatch: the kept leaf hashes were changed");
    }
    if &body[..8] != MAGIC {
        return Err("not a pruned-hashes file");
    }
    let field = |at: usize| -> Result<u64, &'static str> {
        body.get(at..at + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
            .ok_or("pruned-hashes header is truncated")
    };
    let base = field(8)?;
    let count = usize::try_from(field(16)?).map_err(|_| "implausible record count")?;
    let rest = &body[FIXED..];
    if Some(rest.len()) != count.checked_mul(32) {
        return Err("pruned-hashes length does not match its record count");
    }
    let hashes = rest
        .chunks_exact(32)
        .filter_map(|c| <Hash>::try_from(c).ok())
        .collect();
    Ok(Pruned { base, hashes })
}

/// Lists the pruned-hashes files of `segments_dir` in seq order, as
/// `(base from the file name, path)`.
pub(crate) fn list_pruned(segments_dir: &Path) -> Result<Vec<(u64, PathBuf)>, AuditError> {
    let mut out = Vec::new();
    let entries = fs::read_dir(segments_dir).map_err(|e| AuditError::io(segments_dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| AuditError::io(segments_dir, e))?;
        let name = entry.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".pruned")) else {
            continue;
        };
        let Some(base) = stem.parse::<u64>().ok().filter(|_| stem.len() == 20) else {
            continue;
        };
        out.push((base, entry.path()));
    }
    out.sort_by_key(|(base, _)| *base);
    Ok(out)
}

/// Loads every pruned-hashes file for recovery at open: they must be intact
/// and cover a gap-free prefix of the log. Returns the kept hashes in seq order.
pub(crate) fn load_pruned(segments_dir: &Path) -> Result<Vec<Hash>, AuditError> {
    let mut hashes: Vec<Hash> = Vec::new();
    for (base, path) in list_pruned(segments_dir)? {
        let corrupt = |reason: String| AuditError::Corrupt {
            segment: path.clone(),
            offset: 0,
            seq: base,
            reason,
        };
        let bytes = fs::read(&path).map_err(|e| AuditError::io(&path, e))?;
        let pruned = decode_pruned(&bytes).map_err(|e| corrupt(e.to_string()))?;
        if pruned.base != base || base != hashes.len() as u64 {
            return Err(corrupt(format!(
                "pruned hashes start at record {}, expected {}",
                pruned.base,
                hashes.len()
            )));
        }
        hashes.extend(pruned.hashes);
    }
    Ok(hashes)
}

/// What one retention pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// Segments pruned in this pass.
    pub segments_pruned: usize,
    /// Records whose bytes were pruned in this pass (their hashes are kept).
    pub records_pruned: u64,
    /// Records pruned in total: records below this seq are pruned.
    pub pruned_below: u64,
    /// Stored bodies dropped under their service's retention in this pass.
    pub bodies_expired: u64,
}

/// One retention pass as of `now` (see [`super::AuditLog::retention_pass`]).
pub(crate) fn run_pass(shared: &Shared, now: SystemTime) -> Result<RetentionReport, AuditError> {
    // One pass at a time: the periodic task and an operator's call must not
    // prune the same segment twice.
    let _one = shared
        .retention
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let cutoff = now
        .checked_sub(shared.config.record_retention)
        .map_or(0, millis);
    let (segments_pruned, records_pruned) = prune_segments(shared, cutoff)?;
    let pruned_below = shared.pruned_below.load(Ordering::Acquire);
    let bodies_expired = match &shared.bodies {
        Some(store) => store.expire(now, pruned_below)?,
        None => 0,
    };
    Ok(RetentionReport {
        segments_pruned,
        records_pruned,
        pruned_below,
        bodies_expired,
    })
}

/// Starts the periodic retention task on the current tokio runtime: a pass
/// right away (so a broker that was down for long catches up at start) and
/// then every `every`. Like the tree head task it holds only a weak reference,
/// so it never keeps the log alive, and it stops when the log is closed.
pub(crate) fn spawn_retention_task(
    shared: &Arc<Shared>,
    every: Duration,
) -> Result<(), AuditError> {
    let runtime = tokio::runtime::Handle::try_current()
        .map_err(|_| AuditError::Config("retention_interval needs a tokio runtime".to_string()))?;
    let weak = Arc::downgrade(shared);
    runtime.spawn(async move {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let Some(shared) = weak.upgrade() else { break };
            if shared.closed.load(Ordering::Acquire) {
                break;
            }
            let pass =
                tokio::task::spawn_blocking(move || run_pass(&shared, SystemTime::now())).await;
            match pass {
                Ok(Ok(report)) => {
                    if report.segments_pruned > 0 || report.bodies_expired > 0 {
                        tracing::info!(?report, "audit log: retention pass");
                    }
                }
                // A failed pass deletes nothing it has not first made safe;
                // the next one retries.
                Ok(Err(e)) => tracing::warn!(error = %e, "audit log: retention pass failed"),
                Err(e) => tracing::warn!(error = %e, "audit log: retention task failed"),
            }
        }
    });
    Ok(())
}

/// Prunes the oldest sealed segments whose every record is older than
/// `cutoff_ms` (ms since the Unix epoch). Returns (segments, records) pruned.
pub(crate) fn prune_segments(shared: &Shared, cutoff_ms: u64) -> Result<(usize, u64), AuditError> {
    let segments_dir = shared.segments_dir();
    let mut segments = 0;
    let mut records = 0;
    loop {
        let (seg, next_base) = {
            let layout = shared.layout_read();
            // The last segment is the active one: never pruned.
            match (layout.segments.first(), layout.segments.get(1)) {
                (Some(first), Some(second)) => (first.clone(), second.base),
                _ => break,
            }
        };
        let bytes = fs::read(&seg.path).map_err(|e| AuditError::io(&seg.path, e))?;
        let corrupt = |offset: usize, seq: u64, reason: &str| AuditError::Corrupt {
            segment: seg.path.clone(),
            offset: offset as u64,
            seq,
            reason: format!("{reason}; not pruned"),
        };
        if decode_header(&bytes) != Some(seg.base) {
            return Err(corrupt(0, seg.base, "bad segment header"));
        }
        let mut hashes = Vec::new();
        let mut newest_ms = 0u64;
        let mut offset = HEADER_LEN as usize;
        while offset < bytes.len() {
            let seq = seg.base + hashes.len() as u64;
            let Decoded::Frame { seq: s, leaf, next } = decode_frame(&bytes, offset) else {
                return Err(corrupt(offset, seq, "damaged frame"));
            };
            if s != seq {
                return Err(corrupt(offset, seq, "unexpected sequence number"));
            }
            // A record whose time cannot be read is treated as new: kept.
            let time_ms = AuditRecord::from_canonical_bytes(leaf)
                .ok()
                .and_then(|r| {
                    [&r.received_at, &r.answered_at]
                        .into_iter()
                        .filter_map(|t| parse_timestamp(t))
                        .max()
                })
                .and_then(|micros| u64::try_from(micros / 1000).ok())
                .unwrap_or(u64::MAX);
            newest_ms = newest_ms.max(time_ms);
            hashes.push(leaf_hash(leaf));
            offset = next;
        }
        // The kept hashes must be the tree's. Compared after the scan so the
        // tree lock (which the writer needs to publish appends) is held only
        // for the comparison.
        {
            let tree = shared.tree_read();
            if let Some(k) = (0..hashes.len())
                .find(|&k| tree.leaf(seg.base + k as u64) != hashes.get(k).copied())
            {
                return Err(corrupt(
                    0,
                    seg.base + k as u64,
                    "record does not match the tree",
                ));
            }
        }
        if seg.base + hashes.len() as u64 != next_base {
            return Err(corrupt(
                offset,
                seg.base,
                "segment ends short of the next one",
            ));
        }
        if newest_ms >= cutoff_ms {
            break;
        }
        // Bind the kept hashes to a signature before the records go.
        let covered = *shared
            .heads
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if covered.is_none_or(|n| n < next_base) {
            super::publish(shared)?;
        }
        let path = segments_dir.join(pruned_name(seg.base));
        let tmp = segments_dir.join(format!("{}.tmp", pruned_name(seg.base)));
        let mut file = File::create(&tmp).map_err(|e| AuditError::io(&tmp, e))?;
        file.write_all(&encode_pruned(seg.base, newest_ms, &hashes))
            .map_err(|e| AuditError::io(&tmp, e))?;
        file.sync_all().map_err(|e| AuditError::io(&tmp, e))?;
        drop(file);
        fs::rename(&tmp, &path).map_err(|e| AuditError::io(&path, e))?;
        sync_dir(&segments_dir)?;
        // Readers see "pruned" from here on; then the segment leaves the layout
        // and the disk.
        shared.pruned_below.store(next_base, Ordering::Release);
        shared
            .layout_write()
            .segments
            .retain(|s| s.base != seg.base);
        fs::remove_file(&seg.path).map_err(|e| AuditError::io(&seg.path, e))?;
        sync_dir(&segments_dir)?;
        tracing::info!(
            segment = %seg.path.display(),
            records = hashes.len(),
            "audit log: pruned a segment under retention; its leaf hashes are kept"
        );
        segments += 1;
        records += hashes.len() as u64;
    }
    Ok((segments, records))
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::super::record::tests::sample;
    use super::super::{AuditConfig, AuditLog, TreeHeadSigner};
    use super::*;

    struct NullSigner;

    impl TreeHeadSigner for NullSigner {
        fn keyid(&self) -> String {
            "null".to_string()
        }
        fn sign(&self, _: &[u8]) -> Result<Vec<u8>, String> {
            Ok(vec![0; 8])
        }
    }

    #[tokio::test]
    async fn a_damaged_segment_is_never_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let config = AuditConfig {
            segment_bytes: 4096,
            ..AuditConfig::new(dir.path())
        };
        let (log, _) = AuditLog::open(config, Arc::new(NullSigner)).unwrap();
        for i in 0..30 {
            // `sample` records are from 2025-03-01.
            log.append(sample(i)).await.unwrap();
        }
        let first = dir
            .path()
            .join("segments")
            .join(super::super::segment::segment_name(0));
        let mut bytes = fs::read(&first).unwrap();
        let at = bytes.len() - 10;
        bytes[at] ^= 1;
        fs::write(&first, &bytes).unwrap();
        let now = UNIX_EPOCH + Duration::from_secs(4_000_000_000);
        assert!(matches!(
            log.retention_pass(now),
            Err(AuditError::Corrupt { .. })
        ));
        // Nothing was deleted, nothing is claimed pruned.
        assert!(first.exists());
        assert!(
            list_pruned(&dir.path().join("segments"))
                .unwrap()
                .is_empty()
        );
        assert_eq!(log.pruned_below(), 0);
        log.close().await.unwrap();
    }

    #[test]
    fn pruned_file_round_trips_and_detects_changes() {
        let hashes = [[1u8; 32], [2u8; 32], [3u8; 32]];
        let bytes = encode_pruned(16, 99, &hashes);
        let pruned = decode_pruned(&bytes).unwrap();
        assert_eq!(pruned.base, 16);
        assert_eq!(pruned.hashes, hashes);
        for i in [0, 9, 40, bytes.len() - 1] {
            let mut bad = bytes.clone();
            bad[i] ^= 0x80;
            assert!(decode_pruned(&bad).is_err(), "flip at {i} not detected");
        }
        assert!(decode_pruned(&bytes[..bytes.len() - 1]).is_err());
    }
}
