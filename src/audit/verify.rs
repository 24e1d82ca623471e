//! The auditor's check of a log directory: re-read every segment, recompute the
//! tree, and hold it against every published signed tree head.
//!
//! Invariants: verification only reads (it never truncates or repairs, so it can
//! run on a copy or next to a live broker), and it goes on past damage so that one
//! run names every damaged record it can reach. A torn tail is reported apart from
//! problems: it holds no acknowledged record and the next open removes it.
//! Segments pruned under retention count by their kept leaf hashes (checksum
//! checked, then held against the signed tree heads like every other leaf).

use std::fs;
use std::path::{Path, PathBuf};

use super::merkle::{Hash, MerkleTree, leaf_hash};
use super::record::AuditRecord;
use super::retention::{decode_pruned, list_pruned};
use super::segment::{
    Decoded, FRAME_HEADER, HEADER_LEN, decode_frame, decode_header, list_segments,
    valid_frame_after,
};
use super::{AuditError, TornTail, read_tree_heads};

/// The outcome of [`verify_dir`].
#[derive(Debug, Clone, Default)]
pub struct VerifyReport {
    /// Records read (including damaged ones that could still be delimited).
    pub records: u64,
    /// Segment files read.
    pub segments: usize,
    /// Records pruned under retention, counted by their kept leaf hashes.
    pub pruned_records: u64,
    /// Root of the tree recomputed from the records as read.
    pub root_hash: Hash,
    /// Signed tree heads checked against the records.
    pub tree_heads_checked: usize,
    /// An unacknowledged torn tail at the end of the last segment, if any.
    pub torn_tail: Option<TornTail>,
    /// Everything wrong, in the order found; empty when the log verifies.
    pub problems: Vec<VerifyProblem>,
}

impl VerifyReport {
    /// True when no problem was found.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// One thing wrong with the log, located as precisely as possible.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyProblem {
    /// The record it hits (its leaf index), when known.
    pub seq: Option<u64>,
    /// The segment file, when the problem is in one.
    pub segment: Option<PathBuf>,
    /// Byte offset in that segment.
    pub offset: Option<u64>,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for VerifyProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(seq) = self.seq {
            write!(f, "record {seq}: ")?;
        }
        write!(f, "{}", self.message)?;
        if let Some(segment) = &self.segment {
            write!(f, " ({}", segment.display())?;
            if let Some(offset) = self.offset {
                write!(f, " at offset {offset}")?;
            }
            write!(f, ")")?;
        }
        Ok(())
    }
}

/// A tree head signature check, `verify(keyid, message, signature)`, with the
/// broker certificate(s) in `cert_pem`: the keyid must be the SHA-256
/// fingerprint of one of them and the signature must verify with its key (in
/// the key's default algorithm, the one the broker signs with).
// The closure type is spelled out so it plugs straight into `verify_dir` and
// `verify_tree_head`; a named trait would say no more.
#[allow(clippy::type_complexity)]
pub fn certificate_verifier(
    cert_pem: &str,
) -> Result<impl Fn(&str, &[u8], &[u8]) -> Result<(), String> + Clone + use<>, AuditError> {
    let certs = mconnect_sdk::parse_certs(cert_pem)
        .map_err(|e| AuditError::BadTreeHead(format!("broker certificate unusable: {e}")))?;
    let mut keys = Vec::with_capacity(certs.len());
    for der in &certs {
        let key = crate::crypto::VerifyingKey::from_certificate_der(der).map_err(|e| {
            AuditError::BadTreeHead(format!("broker certificate key unusable: {e}"))
        })?;
        keys.push((crate::crypto::certificate_fingerprint(der), key));
    }
    let keys = std::sync::Arc::new(keys);
    Ok(move |keyid: &str, message: &[u8], signature: &[u8]| {
        let (_, key) = keys
            .iter()
            .find(|(fingerprint, _)| fingerprint == keyid)
            .ok_or_else(|| {
                format!("tree head signed by {keyid}, not by the given broker certificate")
            })?;
        key.verify(key.default_algorithm(), message, signature)
            .map_err(|e| format!("signature does not verify: {e}"))
    })
}

/// Verifies the log in `dir`. `verify_sth(keyid, message, signature)` checks a
/// tree head signature with the broker's certificate. Errors only when the
/// directory cannot be read at all; everything else is in the report.
pub fn verify_dir<F>(dir: &Path, verify_sth: F) -> Result<VerifyReport, AuditError>
where
    F: FnMut(&str, &[u8], &[u8]) -> Result<(), String>,
{
    verify_dir_with_progress(dir, verify_sth, |_, _| {})
}

/// [`verify_dir`] that also calls `progress(bytes_done, bytes_total)` after each
/// segment, for a progress bar.
pub fn verify_dir_with_progress<F, P>(
    dir: &Path,
    mut verify_sth: F,
    mut progress: P,
) -> Result<VerifyReport, AuditError>
where
    F: FnMut(&str, &[u8], &[u8]) -> Result<(), String>,
    P: FnMut(u64, u64),
{
    let segments = list_segments(&dir.join("segments"))?;
    let total: u64 = segments
        .iter()
        .filter_map(|s| fs::metadata(&s.path).ok())
        .map(|m| m.len())
        .sum();
    let mut report = VerifyReport {
        segments: segments.len(),
        ..VerifyReport::default()
    };
    let mut tree = MerkleTree::new();
    for (base, path) in list_pruned(&dir.join("segments"))? {
        let problem = |message: String| at(&path, Some(base), Some(0), message);
        let decoded = match fs::read(&path) {
            Ok(bytes) => decode_pruned(&bytes).map_err(str::to_string),
            Err(e) => Err(format!("cannot read the pruned hashes: {e}")),
        };
        match decoded {
            Ok(pruned) if pruned.base == base && base == tree.len() => {
                report.pruned_records += pruned.hashes.len() as u64;
                for hash in pruned.hashes {
                    tree.push(hash);
                }
            }
            Ok(pruned) => report.problems.push(problem(format!(
                "pruned hashes start at record {}, but {} records precede them",
                pruned.base,
                tree.len()
            ))),
            Err(message) => report.problems.push(problem(message)),
        }
    }
    // A segment whose hashes are kept was being pruned when the broker
    // stopped; the next open removes it. Its records are counted once.
    let pruned_below = tree.len();
    let segments: Vec<_> = segments
        .into_iter()
        .filter(|s| s.base >= pruned_below)
        .collect();
    report.segments = segments.len();
    let mut done = 0u64;
    for (i, seg) in segments.iter().enumerate() {
        let is_last = i + 1 == segments.len();
        let bytes = match fs::read(&seg.path) {
            Ok(bytes) => bytes,
            Err(e) => {
                report.problems.push(at(
                    &seg.path,
                    None,
                    None,
                    format!("cannot read the segment: {e}"),
                ));
                continue;
            }
        };
        if seg.base != tree.len() {
            report.problems.push(at(
                &seg.path,
                Some(tree.len()),
                Some(0),
                format!(
                    "segment starts at record {}, but {} records precede it: \
                     records are missing or repeated",
                    seg.base,
                    tree.len()
                ),
            ));
        }
        match decode_header(&bytes) {
            Some(base) if base == seg.base => {}
            Some(base) => report.problems.push(at(
                &seg.path,
                None,
                Some(0),
                format!("header names record {base}, the file name {}", seg.base),
            )),
            None => report.problems.push(at(
                &seg.path,
                None,
                Some(0),
                "segment header is damaged".to_string(),
            )),
        }
        let mut offset = HEADER_LEN as usize;
        while offset < bytes.len() {
            let expected = tree.len();
            match decode_frame(&bytes, offset) {
                Decoded::Frame { seq, leaf, next } => {
                    if seq != expected {
                        report.problems.push(at(
                            &seg.path,
                            Some(expected),
                            Some(offset as u64),
                            format!("frame carries sequence number {seq}"),
                        ));
                    }
                    if let Err(e) = AuditRecord::from_canonical_bytes(leaf) {
                        report.problems.push(at(
                            &seg.path,
                            Some(expected),
                            Some(offset as u64),
                            e.to_string(),
                        ));
                    }
                    tree.push(leaf_hash(leaf));
                    offset = next;
                }
                Decoded::Partial(why) | Decoded::Bad(why) => {
                    let later = valid_frame_after(&bytes, offset, expected);
                    if is_last && later.is_none() {
                        report.torn_tail = Some(TornTail {
                            segment: seg.path.clone(),
                            offset: offset as u64,
                            bytes_dropped: (bytes.len() - offset) as u64,
                        });
                        break;
                    }
                    // When the frame's own length still leads to the next valid
                    // frame, only this record's bytes are damaged: count it, with
                    // its leaf hashed as found, so every later seq stays right and
                    // tree heads covering it fail too.
                    let len = frame_len(&bytes, offset);
                    let next = offset + FRAME_HEADER + len;
                    if len > 0 && later == Some(next) {
                        report.problems.push(at(
                            &seg.path,
                            Some(expected),
                            Some(offset as u64),
                            format!("record damaged ({why})"),
                        ));
                        let leaf = bytes.get(offset + FRAME_HEADER..next).unwrap_or_default();
                        tree.push(leaf_hash(leaf));
                        offset = next;
                        continue;
                    }
                    let resume = later.unwrap_or(bytes.len());
                    report.problems.push(at(
                        &seg.path,
                        Some(expected),
                        Some(offset as u64),
                        format!(
                            "unreadable bytes up to offset {resume} ({why}); \
                             the records there are lost"
                        ),
                    ));
                    offset = resume;
                }
            }
        }
        done += bytes.len() as u64;
        progress(done, total);
    }
    report.records = tree.len();
    report.root_hash = tree.root(tree.len()).unwrap_or_default();
    let heads = match read_tree_heads(dir) {
        Ok(heads) => heads,
        Err(e) => {
            report.problems.push(VerifyProblem {
                seq: None,
                segment: None,
                offset: None,
                message: e.to_string(),
            });
            Vec::new()
        }
    };
    for sth in heads {
        report.tree_heads_checked += 1;
        let mut problem = |message: String| {
            report.problems.push(VerifyProblem {
                seq: None,
                segment: None,
                offset: None,
                message,
            });
        };
        if let Err(e) = verify_sth(&sth.keyid, &sth.message(), &sth.signature) {
            problem(format!(
                "signature on the tree head of size {} does not verify: {e}",
                sth.tree_size
            ));
        }
        match tree.root(sth.tree_size) {
            Ok(root) if root == sth.root_hash => {}
            Ok(_) => problem(format!(
                "the signed tree head of size {} does not match the records: \
                 a record below {} was changed",
                sth.tree_size, sth.tree_size
            )),
            Err(_) => problem(format!(
                "a signed tree head covers {} records but the log has {}: records were removed",
                sth.tree_size,
                tree.len()
            )),
        }
    }
    Ok(report)
}

fn at(segment: &Path, seq: Option<u64>, offset: Option<u64>, message: String) -> VerifyProblem {
    VerifyProblem {
        seq,
        segment: Some(segment.to_path_buf()),
        offset,
        message,
    }
}

/// The length field of the frame at `offset`, or 0 when it cannot be read.
fn frame_len(bytes: &[u8], offset: usize) -> usize {
    bytes
        .get(offset..offset + 4)
        .and_then(|b| b.try_into().ok())
        .map_or(0, |b| u32::from_le_bytes(b) as usize)
}
