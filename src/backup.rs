//! Backup and restore of one broker's state store and audit log
//! (`mconnect backup`, `mconnect restore`).
//!
//! A backup is a directory:
//!
//! ```text
//! {out}/backup.json                 what was copied: files with size and SHA-256,
//!                                   the records and the newest signed tree head
//! {out}/state.redb                  the embedded state store (absent with PostgreSQL)
//! {out}/audit/tree-heads.jsonl      the signed tree heads, copied first
//! {out}/audit/segments/*.seg|.pruned the segments and kept leaf hashes
//! {out}/audit/bodies/...            opt-in encrypted bodies
//! {out}/audit/broker-certificates.pem the broker certificates published at the last start
//! {out}/body.key                    the body key (mode 0600), wherever it is kept
//! ```
//!
//! Invariants:
//!
//! - **A backup may be taken while the broker runs**, and is consistent:
//!   the tree heads are copied before the segments, so every signed head in
//!   the backup covers records that are in it (segments only grow; a record
//!   being written as it is copied is a torn tail, which holds nothing
//!   acknowledged and which the next open removes). The redb state file is
//!   copied until two successive copies are identical, and the copy must then
//!   open as a redb database (its recovery checks the commit's checksums);
//!   state changes are rare admin acts, so this converges at once.
//! - **A backup is verified before it is reported done**: the copied log
//!   with `audit::verify_dir` against the broker certificates (current and
//!   previous), the copied state by reading every collection.
//! - **Derived files are left out**: the query indexes (`index.redb`),
//!   rebuilt from the segments when the broker starts, and the `LOCK`.
//! - **Restore never overwrites**: it refuses a target whose state file
//!   exists or whose audit directory holds a log, checks every file against
//!   the manifest, and verifies the restored log before it reports success.
//! - State kept in PostgreSQL is not copied here: `pg_dump` backs it up and
//!   `pg_restore` brings it back (docs/OPERATIONS.md); the audit log, which
//!   stays this broker's own, is.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::audit::{TREE_HEADS_FILE, certificate_verifier, read_tree_heads, verify_dir};
use crate::config::Config;
use crate::store::{Backend, Collection};

/// The manifest's file name in a backup directory.
pub const MANIFEST_FILE: &str = "backup.json";

/// Why a backup or restore failed.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The command cannot run as asked (target not empty, bad backup...).
    #[error("{0}")]
    Refused(String),
    /// The copied or restored audit log does not verify.
    #[error("the audit log in {dir} does not verify: {problems}")]
    Verify {
        /// The log directory.
        dir: PathBuf,
        /// Every problem found.
        problems: String,
    },
}

/// What a backup holds (`backup.json`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The manifest's format (1).
    pub format: u32,
    /// When the backup was taken (RFC 3339, UTC).
    pub created_at: String,
    /// Where the state was: `redb` (copied, `state.redb`) or `postgres` (not copied).
    pub state: String,
    /// Participants in the copied state (redb only).
    pub participants: Option<usize>,
    /// Records in the copied log (pruned ones counted by their hashes).
    pub audit_records: u64,
    /// The largest tree size a signed tree head in the backup covers.
    pub tree_size: u64,
    /// Every file copied, relative to the backup directory.
    pub files: Vec<ManifestFile>,
}

/// One file of a backup.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ManifestFile {
    /// Path relative to the backup directory, `/`-separated.
    pub path: String,
    /// Size in bytes.
    pub bytes: u64,
    /// Lowercase hex SHA-256 of its content.
    pub sha256: String,
}

/// The broker certificates that verify this configuration's log: `tls.cert`
/// and `tls.previous_certs`, as one PEM text.
pub fn broker_certificates_pem(config: &Config) -> Result<String, BackupError> {
    let mut pem = String::new();
    for path in std::iter::once(&config.cert_file).chain(&config.previous_cert_files) {
        pem.push_str(&fs::read_to_string(path).map_err(io(path))?);
        pem.push('\n');
    }
    Ok(pem)
}

/// Backs up the state and audit log of `config` into `out` (absent or empty).
pub fn backup(config: &Config, out: &Path) -> Result<Manifest, BackupError> {
    let certs = broker_certificates_pem(config)?;
    if out.exists() && fs::read_dir(out).map_err(io(out))?.next().is_some() {
        return Err(BackupError::Refused(format!(
            "{} is not empty: give a new directory for each backup",
            out.display()
        )));
    }
    fs::create_dir_all(out).map_err(io(out))?;
    // It holds the state and the body key: its owner's alone.
    fs::set_permissions(out, std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .map_err(io(out))?;
    let mut files = Vec::new();

    // The audit log: tree heads first, then the segments they cover.
    let audit_out = out.join("audit");
    copy_audit(&config.audit_dir, &audit_out, out, &mut files)?;
    let body_key = body_key_path(config);
    if body_key.exists() {
        files.push(copy_file(&body_key, &out.join("body.key"), out)?);
    }

    // The state.
    let (state, participants) = match &config.state {
        Backend::Embedded(path) => {
            let target = out.join("state.redb");
            files.push(copy_stable(path, &target, out)?);
            let count = check_state(&target)?;
            // Opening may have completed the copy's recovery: record what
            // is kept.
            let last = files.len() - 1;
            files[last] = describe(&target, out)?;
            ("redb".to_string(), Some(count))
        }
        Backend::Postgres(_) => ("postgres".to_string(), None),
    };

    let (audit_records, tree_size) = verify_log(&audit_out, &certs)?;
    let manifest = Manifest {
        format: 1,
        created_at: crate::audit::format_timestamp(time::OffsetDateTime::now_utc()),
        state,
        participants,
        audit_records,
        tree_size,
        files,
    };
    let text = serde_json::to_vec_pretty(&manifest)
        .map_err(|e| BackupError::Refused(format!("cannot write the manifest: {e}")))?;
    write_synced(&out.join(MANIFEST_FILE), &text)?;
    sync_dir(out)?;
    Ok(manifest)
}

/// Restores a backup from `from` into the paths of `config`, which must not
/// hold a state file or an audit log yet. Returns the backup's manifest.
pub fn restore(config: &Config, from: &Path) -> Result<Manifest, BackupError> {
    let certs = broker_certificates_pem(config)?;
    let manifest_path = from.join(MANIFEST_FILE);
    let text = fs::read(&manifest_path).map_err(io(&manifest_path))?;
    let manifest: Manifest = serde_json::from_slice(&text).map_err(|e| {
        BackupError::Refused(format!(
            "{} is not a backup manifest: {e}",
            manifest_path.display()
        ))
    })?;
    if manifest.format != 1 {
        return Err(BackupError::Refused(format!(
            "backup format {} is not known to this broker",
            manifest.format
        )));
    }
    // Every file as the manifest describes it, and nothing outside the backup.
    for f in &manifest.files {
        if f.path
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
        {
            return Err(BackupError::Refused(format!(
                "the manifest names `{}`, outside the backup",
                f.path
            )));
        }
        let found = describe(&from.join(&f.path), from)?;
        if found != *f {
            return Err(BackupError::Refused(format!(
                "{} does not match the manifest (size or SHA-256 differ): the backup is damaged",
                f.path
            )));
        }
    }
    // The target must be empty.
    if has_log(&config.audit_dir)? {
        return Err(BackupError::Refused(format!(
            "{} already holds an audit log: restore only into an empty audit directory (move the old one away first)",
            config.audit_dir.display()
        )));
    }
    match (&config.state, manifest.state.as_str()) {
        (Backend::Embedded(path), "redb") if path.exists() => {
            return Err(BackupError::Refused(format!(
                "{} already exists: restore only where there is no state file (move it away first)",
                path.display()
            )));
        }
        (Backend::Embedded(_), "redb") | (Backend::Postgres(_), "postgres") => {}
        (Backend::Embedded(_), other) => {
            return Err(BackupError::Refused(format!(
                "the backup's state was kept in {other}, but this configuration keeps it in storage.state: restore it with pg_restore and configure [state] postgres"
            )));
        }
        (Backend::Postgres(_), _) => {
            return Err(BackupError::Refused(
                "the backup holds a redb state file, but this configuration keeps the state in PostgreSQL".into(),
            ));
        }
    }
    let body_key = body_key_path(config);
    if manifest.files.iter().any(|f| f.path == "body.key") && body_key.exists() {
        let existing = fs::read(&body_key).map_err(io(&body_key))?;
        let saved = fs::read(from.join("body.key")).map_err(io(&from.join("body.key")))?;
        if existing != saved {
            return Err(BackupError::Refused(format!(
                "{} exists and differs from the backup's body key: move it away first",
                body_key.display()
            )));
        }
    }
    // The backup's log must verify before anything is put in place.
    verify_log(&from.join("audit"), &certs)?;

    for f in &manifest.files {
        let source = from.join(&f.path);
        let target = match f.path.as_str() {
            "state.redb" => match &config.state {
                Backend::Embedded(path) => path.clone(),
                Backend::Postgres(_) => continue,
            },
            "body.key" => body_key.clone(),
            other => match other.strip_prefix("audit/") {
                Some(rest) => config.audit_dir.join(rest),
                None => continue,
            },
        };
        if target.exists() && f.path == "body.key" {
            continue;
        }
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).map_err(io(parent))?;
        }
        // Through a temporary name, so that an interrupted restore leaves no
        // file that looks whole.
        let tmp = target.with_extension("restoring");
        copy_file(&source, &tmp, from)?;
        fs::rename(&tmp, &target).map_err(io(&target))?;
        if f.path == "body.key" {
            set_private(&target)?;
        }
        if let Some(parent) = target.parent() {
            sync_dir(parent)?;
        }
    }
    verify_log(&config.audit_dir, &certs)?;
    Ok(manifest)
}

/// The body key's path: `audit.body_key_file`, or `body.key` in the audit directory.
fn body_key_path(config: &Config) -> PathBuf {
    config
        .audit
        .body_key_file
        .clone()
        .unwrap_or_else(|| config.audit_dir.join("body.key"))
}

/// Whether `dir` holds an audit log (segments or tree heads).
fn has_log(dir: &Path) -> Result<bool, BackupError> {
    if dir.join(TREE_HEADS_FILE).exists() {
        return Ok(true);
    }
    let segments = dir.join("segments");
    Ok(segments.is_dir()
        && fs::read_dir(&segments)
            .map_err(io(&segments))?
            .next()
            .is_some())
}

/// Copies the log's files (not its indexes or lock) from `dir` to `to`.
/// Retention may prune a segment while it is copied; then the copy starts
/// again (a few times at most).
fn copy_audit(
    dir: &Path,
    to: &Path,
    root: &Path,
    files: &mut Vec<ManifestFile>,
) -> Result<(), BackupError> {
    if !dir.join("segments").is_dir() {
        return Err(BackupError::Refused(format!(
            "{} holds no audit log (no segments/ directory): check storage.audit_dir",
            dir.display()
        )));
    }
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut copied = Vec::new();
        match copy_audit_once(dir, to, root, &mut copied) {
            Ok(()) => {
                files.extend(copied);
                return Ok(());
            }
            Err(BackupError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound && attempt < 5 =>
            {
                if to.exists() {
                    fs::remove_dir_all(to).map_err(io(to))?;
                }
            }
            Err(e) => return Err(e),
        }
    }
}

fn copy_audit_once(
    dir: &Path,
    to: &Path,
    root: &Path,
    files: &mut Vec<ManifestFile>,
) -> Result<(), BackupError> {
    fs::create_dir_all(to.join("segments")).map_err(io(to))?;
    // First the tree heads: what they cover is on disk already, and every
    // segment listed after this holds it.
    let heads = dir.join(TREE_HEADS_FILE);
    if heads.exists() {
        files.push(copy_file(&heads, &to.join(TREE_HEADS_FILE), root)?);
    }
    let certs = dir.join(crate::app::BROKER_CERTIFICATES_FILE);
    if certs.exists() {
        files.push(copy_file(
            &certs,
            &to.join(crate::app::BROKER_CERTIFICATES_FILE),
            root,
        )?);
    }
    let mut names = Vec::new();
    for entry in fs::read_dir(dir.join("segments")).map_err(io(dir))? {
        let name = entry.map_err(io(dir))?.file_name();
        if let Some(name) = name.to_str()
            && (name.ends_with(".seg") || name.ends_with(".pruned"))
        {
            names.push(name.to_string());
        }
    }
    names.sort();
    for name in names {
        files.push(copy_file(
            &dir.join("segments").join(&name),
            &to.join("segments").join(&name),
            root,
        )?);
    }
    sync_dir(&to.join("segments"))?;
    let bodies = dir.join("bodies");
    if bodies.is_dir() {
        copy_tree(&bodies, &to.join("bodies"), root, files)?;
    }
    sync_dir(to)
}

fn copy_tree(
    from: &Path,
    to: &Path,
    root: &Path,
    files: &mut Vec<ManifestFile>,
) -> Result<(), BackupError> {
    fs::create_dir_all(to).map_err(io(to))?;
    let mut entries: Vec<_> = fs::read_dir(from)
        .map_err(io(from))?
        .collect::<Result<_, _>>()
        .map_err(io(from))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let target = to.join(entry.file_name());
        let kind = entry.file_type().map_err(io(&path))?;
        if kind.is_dir() {
            copy_tree(&path, &target, root, files)?;
        } else if kind.is_file() {
            files.push(copy_file(&path, &target, root)?);
        }
    }
    sync_dir(to)
}

/// Copies a file that another process may be writing until two successive
/// copies are identical.
fn copy_stable(from: &Path, to: &Path, root: &Path) -> Result<ManifestFile, BackupError> {
    let mut previous = copy_file(from, to, root)?;
    for _ in 0..20 {
        let again = describe_source(from)?;
        if again.0 == previous.bytes && again.1 == previous.sha256 {
            return Ok(previous);
        }
        previous = copy_file(from, to, root)?;
    }
    Err(BackupError::Refused(format!(
        "{} kept changing while it was copied: try again when the broker is less busy, or stop it",
        from.display()
    )))
}

/// Opens a copied state file and reads every collection; returns the participants.
fn check_state(path: &Path) -> Result<usize, BackupError> {
    let store = crate::store::open(&Backend::Embedded(path.to_path_buf()))
        .map_err(|e| BackupError::Refused(format!("the copied state does not open: {e}")))?;
    let mut participants = 0;
    for collection in Collection::ALL {
        let n = store
            .scan(collection)
            .map_err(|e| BackupError::Refused(format!("the copied state does not read: {e}")))?
            .len();
        if collection == Collection::Participants {
            participants = n;
        }
    }
    Ok(participants)
}

/// Verifies the log in `dir` with `certs`; returns its records and the
/// largest signed tree size.
fn verify_log(dir: &Path, certs: &str) -> Result<(u64, u64), BackupError> {
    let verifier = certificate_verifier(certs).map_err(|e| BackupError::Refused(e.to_string()))?;
    let report = verify_dir(dir, verifier).map_err(|e| BackupError::Verify {
        dir: dir.to_path_buf(),
        problems: e.to_string(),
    })?;
    if !report.is_ok() {
        return Err(BackupError::Verify {
            dir: dir.to_path_buf(),
            problems: report
                .problems
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "),
        });
    }
    let tree_size = read_tree_heads(dir)
        .map_err(|e| BackupError::Refused(e.to_string()))?
        .iter()
        .map(|h| h.tree_size)
        .max()
        .unwrap_or(0);
    Ok((report.records, tree_size))
}

fn copy_file(from: &Path, to: &Path, root: &Path) -> Result<ManifestFile, BackupError> {
    let bytes = fs::read(from).map_err(io(from))?;
    let private = fs::metadata(from)
        .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o077 == 0)
        .unwrap_or(true);
    write_synced(to, &bytes)?;
    if private {
        set_private(to)?;
    }
    describe(to, root)
}

fn describe(path: &Path, root: &Path) -> Result<ManifestFile, BackupError> {
    let (bytes, sha256) = describe_source(path)?;
    let relative = path.strip_prefix(root).unwrap_or(path);
    Ok(ManifestFile {
        path: relative
            .components()
            .map(|c| c.as_os_str().to_string_lossy())
            .collect::<Vec<_>>()
            .join("/"),
        bytes,
        sha256,
    })
}

fn describe_source(path: &Path) -> Result<(u64, String), BackupError> {
    let bytes = fs::read(path).map_err(io(path))?;
    let sha = crate::crypto::sha256(&bytes);
    Ok((
        bytes.len() as u64,
        sha.iter().map(|b| format!("{b:02x}")).collect(),
    ))
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), BackupError> {
    let mut file = fs::File::create(path).map_err(io(path))?;
    file.write_all(bytes).map_err(io(path))?;
    file.sync_all().map_err(io(path))
}

fn set_private(path: &Path) -> Result<(), BackupError> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).map_err(io(path))
}

fn sync_dir(dir: &Path) -> Result<(), BackupError> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> BackupError + '_ {
    move |source| BackupError::Io {
        path: path.to_path_buf(),
        source,
    }
}
