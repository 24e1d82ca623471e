//! Opt-in body storage: the request and delivered response bodies of services
//! that ask for it (`store_bodies` in the catalog), encrypted at rest, each
//! with its own retention.
//!
//! One file per body, beside the segments:
//!
//! ```text
//! {dir}/bodies/{seq:020}.request     sealed body of record `seq`'s request
//! {dir}/bodies/{seq:020}.response    sealed body of record `seq`'s response
//! ```
//!
//! A sealed body is, integers little-endian:
//!
//! ```text
//! "MCAUDBD1"   8 bytes magic
//! seq          u64, the record's leaf index
//! kind         u8, 1 = request, 2 = response
//! expires_at   u64, ms since the Unix epoch, when retention drops it
//! nonce        12 bytes, random per body
//! ciphertext   AES-256-GCM of the body, with its 16-byte tag
//! ```
//!
//! The 25 bytes from the magic to `expires_at` are the AEAD's authenticated
//! data, so a body cannot be moved to another record or kind, nor its expiry
//! changed, without the tag failing. When retention drops a body, the file is
//! atomically replaced by a tombstone `"MCAUDBX1" ‖ seq ‖ kind ‖ expires_at ‖
//! dropped_at` (no ciphertext) so a later read answers "expired under
//! retention" rather than "never stored".
//!
//! Invariants:
//!
//! - **The tree never depends on bodies.** The record's `request_sha256` and
//!   `response_sha256` already commit to them; a body is only written after its
//!   record is durable, and a failure here never touches the record or the tree.
//! - **A body is served only if it decrypts and matches the record's digest**
//!   (checked by the caller, [`super::AuditLog::body`]).
//! - Files are written to a temporary name, fsynced, renamed, and the directory
//!   fsynced, so a crash leaves either the old file or the new one, never half.
//! - The key file holds 32 raw bytes and is created with mode 0600 when missing.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};

use super::AuditError;
use super::segment::sync_dir;

const MAGIC: &[u8; 8] = b"MCAUDBD1";
const TOMBSTONE: &[u8; 8] = b"MCAUDBX1";
/// Length of the authenticated header (magic, seq, kind, expires_at).
const HEADER_LEN: usize = 8 + 8 + 1 + 8;
/// Length of a body key in bytes (AES-256).
pub const BODY_KEY_LEN: usize = 32;
/// Name of the body directory inside the log directory.
pub const BODIES_DIR: &str = "bodies";

/// Which of an exchange's bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BodyKind {
    /// The consumer's request body, as received.
    Request,
    /// The response body as delivered to the consumer (after minimisation).
    Response,
}

impl BodyKind {
    fn code(self) -> u8 {
        match self {
            BodyKind::Request => 1,
            BodyKind::Response => 2,
        }
    }

    /// The file name suffix and the word used in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            BodyKind::Request => "request",
            BodyKind::Response => "response",
        }
    }
}

impl std::fmt::Display for BodyKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The bodies of one exchange to keep with its record, and for how long.
#[derive(Debug, Clone)]
pub struct ExchangeBodies {
    /// The request body as received.
    pub request: Vec<u8>,
    /// The response body as delivered.
    pub response: Vec<u8>,
    /// The service's retention for bodies.
    pub retention: Duration,
}

/// What reading a stored body found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyRead {
    /// The decrypted body (not yet checked against the record: see
    /// [`super::AuditLog::body`]).
    Plain(Vec<u8>),
    /// Retention dropped it at this time (ms since the Unix epoch).
    Expired {
        /// When it was due to expire.
        expires_at: u64,
        /// When it was dropped.
        dropped_at: u64,
    },
    /// No body was stored for this record and kind.
    Missing,
}

/// The encrypted body store of one log directory.
pub struct BodyStore {
    dir: PathBuf,
    key: LessSafeKey,
    rng: SystemRandom,
}

impl std::fmt::Debug for BodyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("BodyStore").field("dir", &self.dir).finish()
    }
}

impl BodyStore {
    /// Opens the store in `{log_dir}/bodies` with the key in `key_file`,
    /// creating the key (mode 0600) and the directory when missing.
    pub fn open(log_dir: &Path, key_file: &Path) -> Result<BodyStore, AuditError> {
        let key = load_or_create_key(key_file)?;
        let dir = log_dir.join(BODIES_DIR);
        if !dir.is_dir() {
            fs::create_dir_all(&dir).map_err(|e| AuditError::io(&dir, e))?;
            sync_dir(log_dir)?;
        }
        let unbound = UnboundKey::new(&AES_256_GCM, &key)
            .map_err(|_| AuditError::Config("body key unusable for AES-256-GCM".to_string()))?;
        Ok(BodyStore {
            dir,
            key: LessSafeKey::new(unbound),
            rng: SystemRandom::new(),
        })
    }

    /// Path of the file holding record `seq`'s body of `kind`.
    pub fn path(&self, seq: u64, kind: BodyKind) -> PathBuf {
        self.dir.join(format!("{seq:020}.{}", kind.as_str()))
    }

    /// Encrypts and durably writes one body of record `seq`, to expire at
    /// `expires_at` (ms since the Unix epoch).
    pub fn put(
        &self,
        seq: u64,
        kind: BodyKind,
        body: &[u8],
        expires_at: u64,
    ) -> Result<(), AuditError> {
        let header = header(MAGIC, seq, kind, expires_at);
        let mut nonce = [0u8; NONCE_LEN];
        self.rng
            .fill(&mut nonce)
            .map_err(|_| AuditError::Unavailable("no randomness for a body nonce".to_string()))?;
        let mut sealed = body.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&header[..]),
                &mut sealed,
            )
            .map_err(|_| AuditError::Unavailable("body encryption failed".to_string()))?;
        let mut out = Vec::with_capacity(HEADER_LEN + NONCE_LEN + sealed.len());
        out.extend_from_slice(&header);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        write_atomic(&self.dir, &self.path(seq, kind), &out)
    }

    /// Reads and decrypts record `seq`'s body of `kind`. A file that does not
    /// decrypt (damaged, moved from another record, wrong key) is an error,
    /// never served.
    pub fn get(&self, seq: u64, kind: BodyKind) -> Result<BodyRead, AuditError> {
        let path = self.path(seq, kind);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BodyRead::Missing),
            Err(e) => return Err(AuditError::io(&path, e)),
        };
        let damaged = |reason: &str| AuditError::Corrupt {
            segment: path.clone(),
            offset: 0,
            seq,
            reason: format!("stored {kind} body {reason}"),
        };
        let (magic, file_seq, file_kind, expires_at) =
            parse_header(&bytes).ok_or_else(|| damaged("has a bad header"))?;
        if file_seq != seq || file_kind != kind.code() {
            return Err(damaged("belongs to another record"));
        }
        if &magic == TOMBSTONE {
            let dropped_at = bytes
                .get(HEADER_LEN..HEADER_LEN + 8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_le_bytes)
                .ok_or_else(|| damaged("tombstone is truncated"))?;
            return Ok(BodyRead::Expired {
                expires_at,
                dropped_at,
            });
        }
        let nonce: [u8; NONCE_LEN] = bytes
            .get(HEADER_LEN..HEADER_LEN + NONCE_LEN)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| damaged("is truncated"))?;
        let mut sealed = bytes
            .get(HEADER_LEN + NONCE_LEN..)
            .unwrap_or_default()
            .to_vec();
        let plain = self
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&bytes[..HEADER_LEN]),
                &mut sealed,
            )
            .map_err(|_| damaged("does not decrypt (damaged, moved or another key)"))?;
        Ok(BodyRead::Plain(plain.to_vec()))
    }

    /// Drops every body whose expiry is at or before `now` (replacing it by a
    /// tombstone, durably), and removes the files of records below
    /// `pruned_below` altogether. Returns how many bodies were dropped.
    pub fn expire(&self, now: SystemTime, pruned_below: u64) -> Result<u64, AuditError> {
        let now_ms = millis(now);
        let mut dropped = 0;
        let mut removed_any = false;
        let entries = fs::read_dir(&self.dir).map_err(|e| AuditError::io(&self.dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| AuditError::io(&self.dir, e))?;
            let path = entry.path();
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.ends_with(".tmp") {
                // A write interrupted by a crash: never renamed, never a body.
                fs::remove_file(&path).map_err(|e| AuditError::io(&path, e))?;
                removed_any = true;
                continue;
            }
            let Some((seq, kind)) = parse_name(name) else {
                continue;
            };
            if seq < pruned_below {
                fs::remove_file(&path).map_err(|e| AuditError::io(&path, e))?;
                removed_any = true;
                continue;
            }
            // Only the header is needed; a damaged file is left for the
            // auditor to see rather than silently dropped.
            let bytes = read_head(&path)?;
            let Some((magic, _, _, expires_at)) = parse_header(&bytes) else {
                tracing::warn!(path = %path.display(), "audit body store: damaged body file kept");
                continue;
            };
            if &magic == MAGIC && expires_at <= now_ms {
                let mut tomb = header(TOMBSTONE, seq, kind, expires_at).to_vec();
                tomb.extend_from_slice(&now_ms.to_le_bytes());
                write_atomic(&self.dir, &path, &tomb)?;
                dropped += 1;
            }
        }
        if removed_any {
            sync_dir(&self.dir)?;
        }
        Ok(dropped)
    }
}

/// The first bytes of a body file, enough for its header.
fn read_head(path: &Path) -> Result<Vec<u8>, AuditError> {
    let file = File::open(path).map_err(|e| AuditError::io(path, e))?;
    let mut head = Vec::with_capacity(HEADER_LEN);
    file.take(HEADER_LEN as u64)
        .read_to_end(&mut head)
        .map_err(|e| AuditError::io(path, e))?;
    Ok(head)
}

/// Milliseconds since the Unix epoch (0 before it).
pub(crate) fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn header(magic: &[u8; 8], seq: u64, kind: BodyKind, expires_at: u64) -> [u8; HEADER_LEN] {
    let mut out = [0u8; HEADER_LEN];
    out[..8].copy_from_slice(magic);
    out[8..16].copy_from_slice(&seq.to_le_bytes());
    out[16] = kind.code();
    out[17..25].copy_from_slice(&expires_at.to_le_bytes());
    out
}

fn parse_header(bytes: &[u8]) -> Option<([u8; 8], u64, u8, u64)> {
    let magic: [u8; 8] = bytes.get(..8)?.try_into().ok()?;
    if &magic != MAGIC && &magic != TOMBSTONE {
        return None;
    }
    let seq = u64::from_le_bytes(bytes.get(8..16)?.try_into().ok()?);
    let kind = *bytes.get(16)?;
    let expires_at = u64::from_le_bytes(bytes.get(17..25)?.try_into().ok()?);
    Some((magic, seq, kind, expires_at))
}

fn parse_name(name: &str) -> Option<(u64, BodyKind)> {
    let (stem, kind) = name.split_once('.')?;
    let kind = match kind {
        "request" => BodyKind::Request,
        "response" => BodyKind::Response,
        _ => return None,
    };
    if stem.len() != 20 {
        return None;
    }
    Some((stem.parse().ok()?, kind))
}

/// Writes `bytes` to `path` through a temporary file: fsync, rename, fsync the
/// directory.
fn write_atomic(dir: &Path, path: &Path, bytes: &[u8]) -> Result<(), AuditError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut file = File::create(&tmp).map_err(|e| AuditError::io(&tmp, e))?;
    file.write_all(bytes).map_err(|e| AuditError::io(&tmp, e))?;
    file.sync_all().map_err(|e| AuditError::io(&tmp, e))?;
    drop(file);
    fs::rename(&tmp, path).map_err(|e| AuditError::io(path, e))?;
    sync_dir(dir)
}

/// Reads the 32-byte body key, or creates it (random, mode 0600) when missing.
fn load_or_create_key(path: &Path) -> Result<[u8; BODY_KEY_LEN], AuditError> {
    match fs::read(path) {
        Ok(bytes) => <[u8; BODY_KEY_LEN]>::try_from(bytes.as_slice()).map_err(|_| {
            AuditError::Config(format!(
                "body key file {} must hold exactly {BODY_KEY_LEN} bytes",
                path.display()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut key = [0u8; BODY_KEY_LEN];
            SystemRandom::new()
                .fill(&mut key)
                .map_err(|_| AuditError::Config("no randomness for the body key".to_string()))?;
            let mut options = OpenOptions::new();
            // create_new: never overwrite a key another process just made.
            options.write(true).create_new(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                options.mode(0o600);
            }
            let mut file = options.open(path).map_err(|e| AuditError::io(path, e))?;
            file.write_all(&key).map_err(|e| AuditError::io(path, e))?;
            file.sync_all().map_err(|e| AuditError::io(path, e))?;
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                sync_dir(parent)?;
            }
            Ok(key)
        }
        Err(e) => Err(AuditError::io(path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(dir: &Path) -> BodyStore {
        BodyStore::open(dir, &dir.join("body.key")).unwrap()
    }

    #[test]
    fn key_is_created_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let a = store(dir.path());
        a.put(3, BodyKind::Request, b"hello", u64::MAX).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.path().join("body.key"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let b = store(dir.path());
        assert_eq!(
            b.get(3, BodyKind::Request).unwrap(),
            BodyRead::Plain(b"hello".to_vec())
        );
    }

    #[test]
    fn bodies_are_encrypted_and_bound_to_seq_and_kind() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let secret = b"IDNP 2001234567890 secret payload";
        s.put(7, BodyKind::Response, secret, u64::MAX).unwrap();
        let raw = fs::read(s.path(7, BodyKind::Response)).unwrap();
        assert!(!raw.windows(secret.len()).any(|w| w == secret));
        // Moved to another record or kind: refused.
        fs::copy(s.path(7, BodyKind::Response), s.path(8, BodyKind::Response)).unwrap();
        assert!(s.get(8, BodyKind::Response).is_err());
        fs::copy(s.path(7, BodyKind::Response), s.path(7, BodyKind::Request)).unwrap();
        assert!(s.get(7, BodyKind::Request).is_err());
        // Expiry changed in the header: the tag fails.
        let mut tampered = raw.clone();
        tampered[20] ^= 1;
        fs::write(s.path(7, BodyKind::Response), &tampered).unwrap();
        assert!(s.get(7, BodyKind::Response).is_err());
        // Another key: refused.
        fs::write(s.path(7, BodyKind::Response), &raw).unwrap();
        let other = BodyStore::open(dir.path(), &dir.path().join("other.key")).unwrap();
        assert!(other.get(7, BodyKind::Response).is_err());
        assert_eq!(s.get(9, BodyKind::Request).unwrap(), BodyRead::Missing);
    }

    #[test]
    fn expiry_leaves_a_tombstone_without_the_body() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let t0 = UNIX_EPOCH + Duration::from_secs(1_000_000);
        s.put(1, BodyKind::Request, b"old body", millis(t0))
            .unwrap();
        s.put(2, BodyKind::Request, b"new body", millis(t0) + 10_000)
            .unwrap();
        s.put(0, BodyKind::Request, b"pruned", u64::MAX).unwrap();
        assert_eq!(s.expire(t0, 1).unwrap(), 1);
        assert!(!s.path(0, BodyKind::Request).exists());
        let raw = fs::read(s.path(1, BodyKind::Request)).unwrap();
        assert!(!raw.windows(8).any(|w| w == b"old body"));
        assert!(matches!(
            s.get(1, BodyKind::Request).unwrap(),
            BodyRead::Expired { .. }
        ));
        assert_eq!(
            s.get(2, BodyKind::Request).unwrap(),
            BodyRead::Plain(b"new body".to_vec())
        );
        // A second pass drops nothing more.
        assert_eq!(s.expire(t0, 1).unwrap(), 0);
    }

    #[test]
    fn a_short_key_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("k"), b"short").unwrap();
        assert!(BodyStore::open(dir.path(), &dir.path().join("k")).is_err());
    }
}
