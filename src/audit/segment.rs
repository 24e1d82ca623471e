//! Segment files: the on-disk format of the log, recovery at open, and reads.
//!
//! A segment is `segments/{first seq:020}.seg`: a 20-byte header (magic
//! `MCAUDSG1`, first seq u64 LE, CRC-32C of those 16 bytes u32 LE) followed by
//! frames. A frame is `len u32 LE | crc u32 LE | seq u64 LE | leaf[len]` where crc
//! is CRC-32C over `len ‖ seq ‖ leaf`. Integers are little-endian.
//!
//! Invariants: only the writer task appends to segments, and only recovery at
//! open truncates one (a torn tail of the last segment); sealed segments are
//! never modified. Sequence numbers are gap-free across segments: each segment's
//! first seq is the previous segment's first seq plus its record count. Readers
//! only read sequence numbers below the published tree size, which the writer
//! raises only after the frames are on disk.

use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::merkle::{MerkleTree, leaf_hash};
use super::record::MAX_RECORD_BYTES;
use super::{AuditError, RecoveryReport, TornTail};

/// Segment header length in bytes.
pub(crate) const HEADER_LEN: u64 = 20;
/// Frame header length in bytes (len, crc, seq).
pub(crate) const FRAME_HEADER: usize = 16;
/// Every `CHECKPOINT_STRIDE`-th record's file offset is kept in memory, so a
/// random read scans at most that many frame headers.
pub(crate) const CHECKPOINT_STRIDE: u64 = 16;
const MAGIC: &[u8; 8] = b"MCAUDSG1";

/// One segment file as the log knows it.
#[derive(Debug, Clone)]
pub(crate) struct SegmentInfo {
    /// Sequence number of its first record.
    pub base: u64,
    /// Full path of the file.
    pub path: PathBuf,
}

/// Where records live: the segment list and sparse offsets. Shared by the writer
/// (which extends it) and the readers.
#[derive(Debug, Default)]
pub(crate) struct Layout {
    /// Segments in seq order.
    pub segments: Vec<SegmentInfo>,
    /// `checkpoints[i]` = file offset of record `i * CHECKPOINT_STRIDE` in the
    /// segment that holds it.
    pub checkpoints: Vec<u64>,
}

/// A frame as decoded from a buffer.
pub(crate) enum Decoded<'a> {
    /// A whole frame whose checksum matches.
    Frame {
        seq: u64,
        leaf: &'a [u8],
        next: usize,
    },
    /// Not enough bytes left for the frame the header announces.
    Partial(&'static str),
    /// The bytes are not a valid frame.
    Bad(&'static str),
}

/// File name of the segment starting at `base`.
pub(crate) fn segment_name(base: u64) -> String {
    format!("{base:020}.seg")
}

/// The segment header for a segment starting at `base`.
pub(crate) fn encode_header(base: u64) -> [u8; HEADER_LEN as usize] {
    let mut out = [0u8; HEADER_LEN as usize];
    out[..8].copy_from_slice(MAGIC);
    out[8..16].copy_from_slice(&base.to_le_bytes());
    let crc = crc32c::crc32c(&out[..16]);
    out[16..20].copy_from_slice(&crc.to_le_bytes());
    out
}

/// Checks a header and returns the base seq it names.
pub(crate) fn decode_header(bytes: &[u8]) -> Option<u64> {
    let header = bytes.get(..HEADER_LEN as usize)?;
    if &header[..8] != MAGIC {
        return None;
    }
    let crc = u32::from_le_bytes(header[16..20].try_into().ok()?);
    if crc != crc32c::crc32c(&header[..16]) {
        return None;
    }
    Some(u64::from_le_bytes(header[8..16].try_into().ok()?))
}

/// Appends one frame for `leaf` at `seq` to `buf`.
pub(crate) fn encode_frame(buf: &mut Vec<u8>, seq: u64, leaf: &[u8]) {
    // Callers cap leaves at MAX_RECORD_BYTES, far below u32::MAX.
    let len = u32::try_from(leaf.len()).unwrap_or(u32::MAX).to_le_bytes();
    let seq = seq.to_le_bytes();
    let crc = frame_crc(&len, &seq, leaf);
    buf.extend_from_slice(&len);
    buf.extend_from_slice(&crc.to_le_bytes());
    buf.extend_from_slice(&seq);
    buf.extend_from_slice(leaf);
}

fn frame_crc(len: &[u8], seq: &[u8], leaf: &[u8]) -> u32 {
    let crc = crc32c::crc32c(len);
    let crc = crc32c::crc32c_append(crc, seq);
    crc32c::crc32c_append(crc, leaf)
}

/// Parses the frame header fields at the start of `bytes` (at least 16 bytes).
fn header_fields(bytes: &[u8]) -> Option<(usize, u32, u64)> {
    let len = u32::from_le_bytes(bytes.get(0..4)?.try_into().ok()?);
    let crc = u32::from_le_bytes(bytes.get(4..8)?.try_into().ok()?);
    let seq = u64::from_le_bytes(bytes.get(8..16)?.try_into().ok()?);
    Some((usize::try_from(len).ok()?, crc, seq))
}

/// Decodes the frame at `offset` of `buf`.
pub(crate) fn decode_frame(buf: &[u8], offset: usize) -> Decoded<'_> {
    let Some(rest) = buf.get(offset..) else {
        return Decoded::Partial("offset beyond the end");
    };
    let Some((len, crc, seq)) = header_fields(rest) else {
        return Decoded::Partial("partial frame header");
    };
    if len == 0 || len > MAX_RECORD_BYTES {
        return Decoded::Bad("implausible frame length");
    }
    let Some(leaf) = rest.get(FRAME_HEADER..FRAME_HEADER + len) else {
        return Decoded::Partial("partial frame");
    };
    if frame_crc(&rest[0..4], &rest[8..16], leaf) != crc {
        return Decoded::Bad("checksum mismatch");
    }
    Decoded::Frame {
        seq,
        leaf,
        next: offset + FRAME_HEADER + len,
    }
}

/// True when a valid frame with a seq at or after `expected` starts anywhere after
/// `offset`. Tells corruption in the middle (valid records follow) from a torn
/// tail (nothing valid follows).
pub(crate) fn valid_frame_after(buf: &[u8], offset: usize, expected: u64) -> Option<usize> {
    let max_seq = expected.saturating_add((buf.len() / FRAME_HEADER) as u64 + 1);
    (offset + 1..buf.len().saturating_sub(FRAME_HEADER - 1)).find(|&p| {
        // Cheap filter on the seq field before paying for a checksum.
        let seq_ok = buf
            .get(p + 8..p + 16)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
            .is_some_and(|s| s >= expected && s <= max_seq);
        seq_ok && matches!(decode_frame(buf, p), Decoded::Frame { .. })
    })
}

/// Lists the segment files of `dir` in seq order.
pub(crate) fn list_segments(dir: &Path) -> Result<Vec<SegmentInfo>, AuditError> {
    let mut out = Vec::new();
    let entries = fs::read_dir(dir).map_err(|e| AuditError::io(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| AuditError::io(dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(stem) = name.strip_suffix(".seg") else {
            continue;
        };
        let base = stem
            .parse::<u64>()
            .ok()
            .filter(|_| stem.len() == 20)
            .ok_or_else(|| AuditError::Corrupt {
                segment: entry.path(),
                offset: 0,
                seq: 0,
                reason: "segment file name is not a 20-digit sequence number".to_string(),
            })?;
        out.push(SegmentInfo {
            base,
            path: entry.path(),
        });
    }
    out.sort_by_key(|s| s.base);
    Ok(out)
}

/// What recovery found: the tree, the layout and what it repaired.
pub(crate) struct Recovered {
    pub tree: MerkleTree,
    pub layout: Layout,
    /// Length of the last segment after recovery (where the writer appends).
    pub last_len: u64,
    pub report: RecoveryReport,
}

/// Scans every segment, checks every frame and rebuilds the tree. A torn tail of
/// the last segment is truncated (and fsynced) and reported; anything else that
/// is wrong is an error, because it would mean dropping acknowledged records.
/// `signed_size` is the largest published tree head: records below it were
/// acknowledged, so a "torn tail" that reaches below it is damage, not a torn write.
pub(crate) fn recover(segments_dir: &Path, signed_size: u64) -> Result<Recovered, AuditError> {
    let mut segments = list_segments(segments_dir)?;
    let mut tree = MerkleTree::new();
    let mut layout = Layout::default();
    let mut report = RecoveryReport::default();
    let mut last_len = 0;
    // Segments pruned under retention: only their leaf hashes remain. Their
    // checkpoints are placeholders so `checkpoints` stays indexed by seq.
    for hash in super::retention::load_pruned(segments_dir)? {
        if tree.len().is_multiple_of(CHECKPOINT_STRIDE) {
            layout.checkpoints.push(HEADER_LEN);
        }
        tree.push(hash);
    }
    let pruned_below = tree.len();
    report.pruned = pruned_below;
    // A segment whose hashes are already kept was being pruned when the
    // process stopped: finish the prune, but only after checking that every
    // one of its records is what the kept hashes say (a stray or forged
    // pruned file must never make recovery delete records).
    let mut finished_prune = false;
    for seg in segments.iter().filter(|s| s.base < pruned_below) {
        let bytes = fs::read(&seg.path).map_err(|e| AuditError::io(&seg.path, e))?;
        let mismatch = |offset: usize, seq: u64| AuditError::Corrupt {
            segment: seg.path.clone(),
            offset: offset as u64,
            seq,
            reason: "segment left by an interrupted prune does not match its kept hashes"
                .to_string(),
        };
        if decode_header(&bytes) != Some(seg.base) {
            return Err(mismatch(0, seg.base));
        }
        let (mut offset, mut seq) = (HEADER_LEN as usize, seg.base);
        while offset < bytes.len() {
            match decode_frame(&bytes, offset) {
                Decoded::Frame { seq: s, leaf, next }
                    if s == seq && tree.leaf(seq) == Some(leaf_hash(leaf)) =>
                {
                    offset = next;
                    seq += 1;
                }
                _ => return Err(mismatch(offset, seq)),
            }
        }
        fs::remove_file(&seg.path).map_err(|e| AuditError::io(&seg.path, e))?;
        finished_prune = true;
    }
    if finished_prune {
        sync_dir(segments_dir)?;
    }
    segments.retain(|s| s.base >= pruned_below);
    let count = segments.len();
    let mut kept = Vec::with_capacity(count);
    for (i, seg) in segments.drain(..).enumerate() {
        let is_last = i + 1 == count;
        let expected = tree.len();
        let bytes = fs::read(&seg.path).map_err(|e| AuditError::io(&seg.path, e))?;
        let corrupt = |offset: u64, seq: u64, reason: String| AuditError::Corrupt {
            segment: seg.path.clone(),
            offset,
            seq,
            reason,
        };
        if seg.base != expected {
            return Err(corrupt(
                0,
                expected,
                format!("segment starts at record {}, expected {expected}", seg.base),
            ));
        }
        match decode_header(&bytes) {
            Some(base) if base == seg.base => {}
            Some(base) => {
                return Err(corrupt(
                    0,
                    expected,
                    format!("header names record {base}, file name {}", seg.base),
                ));
            }
            None => {
                // A last segment whose header never reached the disk was being
                // created when the process died; it holds no acknowledged record.
                if is_last
                    && expected >= signed_size
                    && valid_frame_after(&bytes, 0, expected).is_none()
                {
                    fs::remove_file(&seg.path).map_err(|e| AuditError::io(&seg.path, e))?;
                    sync_dir(segments_dir)?;
                    report.torn_tail = Some(TornTail {
                        segment: seg.path.clone(),
                        offset: 0,
                        bytes_dropped: bytes.len() as u64,
                    });
                    break;
                }
                return Err(corrupt(0, expected, "bad segment header".to_string()));
            }
        }
        let mut offset = HEADER_LEN as usize;
        loop {
            if offset == bytes.len() {
                break;
            }
            let next_seq = tree.len();
            let problem = match decode_frame(&bytes, offset) {
                Decoded::Frame { seq, leaf, next } if seq == next_seq => {
                    if seq.is_multiple_of(CHECKPOINT_STRIDE) {
                        layout.checkpoints.push(offset as u64);
                    }
                    tree.push(leaf_hash(leaf));
                    offset = next;
                    continue;
                }
                Decoded::Frame { seq, .. } => format!("record {seq} where {next_seq} was expected"),
                Decoded::Partial(why) | Decoded::Bad(why) => why.to_string(),
            };
            let later = valid_frame_after(&bytes, offset, next_seq);
            if !is_last || later.is_some() {
                return Err(corrupt(offset as u64, next_seq, problem));
            }
            if next_seq < signed_size {
                return Err(corrupt(
                    offset as u64,
                    next_seq,
                    format!(
                        "{problem}, and a published tree head covers {signed_size} records: \
                         acknowledged records are damaged"
                    ),
                ));
            }
            truncate(&seg.path, offset as u64)?;
            report.torn_tail = Some(TornTail {
                segment: seg.path.clone(),
                offset: offset as u64,
                bytes_dropped: (bytes.len() - offset) as u64,
            });
            tracing::warn!(
                segment = %seg.path.display(),
                offset,
                dropped = bytes.len() - offset,
                "audit log: truncated a torn tail ({problem}); it held no acknowledged record"
            );
            break;
        }
        last_len = offset as u64;
        kept.push(seg);
    }
    // The segments can also end cleanly on a frame boundary short of a
    // published tree head (a last segment cut at a frame or removed): those
    // records were acknowledged, so this is damage, never a torn tail.
    if tree.len() < signed_size {
        return Err(AuditError::Corrupt {
            segment: kept
                .last()
                .map_or_else(|| segments_dir.to_path_buf(), |s| s.path.clone()),
            offset: last_len,
            seq: tree.len(),
            reason: format!(
                "the log ends at record {}, and a published tree head covers {signed_size} \
                 records: acknowledged records are missing",
                tree.len()
            ),
        });
    }
    report.segments = kept.len();
    report.records = tree.len();
    layout.segments = kept;
    Ok(Recovered {
        tree,
        layout,
        last_len,
        report,
    })
}

pub(crate) fn truncate(path: &Path, len: u64) -> Result<(), AuditError> {
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| AuditError::io(path, e))?;
    file.set_len(len).map_err(|e| AuditError::io(path, e))?;
    file.sync_all().map_err(|e| AuditError::io(path, e))
}

/// Fsyncs a directory so that a file created or removed in it survives a crash.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), AuditError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| AuditError::io(dir, e))
}

impl Layout {
    /// The segment holding `seq` and the offset to start scanning from.
    fn locate(&self, seq: u64) -> Option<(SegmentInfo, u64)> {
        let idx = self
            .segments
            .partition_point(|s| s.base <= seq)
            .checked_sub(1)?;
        let seg = self.segments.get(idx)?.clone();
        let cp = seq / CHECKPOINT_STRIDE;
        let cp_seq = cp * CHECKPOINT_STRIDE;
        let offset = match self.checkpoints.get(usize::try_from(cp).ok()?) {
            Some(&offset) if cp_seq >= seg.base => offset,
            _ => HEADER_LEN,
        };
        Some((seg, offset))
    }
}

/// Reads the records `[from, to)` in order, calling `f(seq, leaf)` for each;
/// `to` must not exceed the published tree size. The layout lock is held only to
/// find where to start.
pub(crate) fn read_range(
    layout: &std::sync::RwLock<Layout>,
    from: u64,
    to: u64,
    mut f: impl FnMut(u64, &[u8]) -> Result<(), AuditError>,
) -> Result<(), AuditError> {
    let mut seq = from;
    while seq < to {
        let (seg, start, next_base) = {
            let layout = layout
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let Some((seg, start)) = layout.locate(seq) else {
                return Err(AuditError::NotFound(seq));
            };
            let next_base = layout
                .segments
                .iter()
                .find(|s| s.base > seg.base)
                .map_or(u64::MAX, |s| s.base);
            (seg, start, next_base)
        };
        let file = File::open(&seg.path).map_err(|e| AuditError::io(&seg.path, e))?;
        let mut reader = BufReader::with_capacity(64 * 1024, file);
        reader
            .seek(SeekFrom::Start(start))
            .map_err(|e| AuditError::io(&seg.path, e))?;
        let mut offset = start;
        let mut frame = Vec::new();
        while seq < to && seq < next_base {
            let corrupt = |reason: &str| AuditError::Corrupt {
                segment: seg.path.clone(),
                offset,
                seq,
                reason: reason.to_string(),
            };
            frame.resize(FRAME_HEADER, 0);
            reader
                .read_exact(&mut frame)
                .map_err(|e| corrupt(&format!("cannot read frame header: {e}")))?;
            let (len, _, found) = header_fields(&frame).ok_or_else(|| corrupt("bad header"))?;
            if len == 0 || len > MAX_RECORD_BYTES {
                return Err(corrupt("implausible frame length"));
            }
            if found < seq {
                // Skipping from the checkpoint to the wanted record.
                reader
                    .seek_relative(len as i64)
                    .map_err(|e| AuditError::io(&seg.path, e))?;
                offset += (FRAME_HEADER + len) as u64;
                continue;
            }
            frame.resize(FRAME_HEADER + len, 0);
            reader
                .read_exact(&mut frame[FRAME_HEADER..])
                .map_err(|e| corrupt(&format!("cannot read frame: {e}")))?;
            match decode_frame(&frame, 0) {
                Decoded::Frame { seq: s, leaf, .. } if s == seq => f(seq, leaf)?,
                Decoded::Frame { .. } => return Err(corrupt("unexpected sequence number")),
                Decoded::Partial(why) | Decoded::Bad(why) => return Err(corrupt(why)),
            }
            offset += (FRAME_HEADER + len) as u64;
            seq += 1;
        }
    }
    Ok(())
}

/// Fuzzing entry point (built only under `cfg(fuzzing)`, which cargo-fuzz
/// sets): recovers `segments_dir` as opening the log does, then reads every
/// recovered record back through the reader, calling `f(seq, the leaf hash the
/// rebuilt tree holds, the leaf read)`. Returns the recovered tree size.
#[cfg(fuzzing)]
#[doc(hidden)]
pub fn fuzz_recover_and_read(
    segments_dir: &Path,
    signed_size: u64,
    mut f: impl FnMut(u64, Option<super::Hash>, &[u8]),
) -> Result<u64, AuditError> {
    let recovered = recover(segments_dir, signed_size)?;
    let size = recovered.tree.len();
    let tree = recovered.tree;
    let layout = std::sync::RwLock::new(recovered.layout);
    read_range(&layout, recovered.report.pruned, size, |seq, leaf| {
        f(seq, tree.leaf(seq), leaf);
        Ok(())
    })?;
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Writes one segment starting at `base` holding records `base..end`.
    fn write_segment(dir: &Path, base: u64, end: u64) -> PathBuf {
        let mut bytes = encode_header(base).to_vec();
        for seq in base..end {
            encode_frame(&mut bytes, seq, format!(r#"{{"seq":{seq}}}"#).as_bytes());
        }
        let path = dir.join(segment_name(base));
        fs::write(&path, bytes).unwrap();
        path
    }

    fn frame_end(path: &Path, records: usize) -> u64 {
        let bytes = fs::read(path).unwrap();
        let mut offset = HEADER_LEN as usize;
        for _ in 0..records {
            match decode_frame(&bytes, offset) {
                Decoded::Frame { next, .. } => offset = next,
                _ => panic!("test segment is malformed"),
            }
        }
        offset as u64
    }

    // Found by fuzz/fuzz_targets/audit_segment.rs: a last segment cut exactly
    // at a frame boundary below the published tree size was recovered as a
    // clean, shorter log, silently dropping acknowledged records (and letting
    // their sequence numbers be reused).
    #[test]
    fn a_log_cut_at_a_frame_boundary_below_a_published_head_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_segment(dir.path(), 0, 2);
        assert_eq!(recover(dir.path(), 2).unwrap().tree.len(), 2);
        truncate(&path, frame_end(&path, 1)).unwrap();
        match recover(dir.path(), 2) {
            Err(AuditError::Corrupt { seq: 1, reason, .. }) => {
                assert!(
                    reason.contains("acknowledged records are missing"),
                    "{reason}"
                );
            }
            Err(e) => panic!("wrong error: {e}"),
            Ok(r) => panic!("recovered {} records below a head of 2", r.tree.len()),
        }
        // Without a head covering record 1, the same bytes are a clean log.
        assert_eq!(recover(dir.path(), 1).unwrap().tree.len(), 1);
    }

    #[test]
    fn a_removed_last_segment_below_a_published_head_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        write_segment(dir.path(), 0, 2);
        let second = write_segment(dir.path(), 2, 4);
        assert_eq!(recover(dir.path(), 4).unwrap().tree.len(), 4);
        fs::remove_file(second).unwrap();
        assert!(matches!(
            recover(dir.path(), 4),
            Err(AuditError::Corrupt { seq: 2, .. })
        ));
        assert_eq!(recover(dir.path(), 2).unwrap().tree.len(), 2);
    }
}
