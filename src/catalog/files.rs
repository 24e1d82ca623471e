//! Reading a directory of JSON documents (catalog or policy files) and the
//! problem type both loaders report.
//!
//! Invariant: only this module touches the file system for catalog and policy
//! loading; everything after it works on values in memory.

use std::path::{Path, PathBuf};

use crate::rules::RuleProblem;

use serde_json::Value;

/// Files larger than this are refused: catalog and policy files are small,
/// and a huge file is a mistake that should not exhaust memory on reload.
const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// A parsed JSON file.
pub(crate) struct JsonFile {
    /// Where it was read from (or the name given to an in-memory document).
    pub(crate) path: PathBuf,
    /// Its content.
    pub(crate) value: Value,
}

/// Reads every `*.json` file directly in `dir`, sorted by name so error
/// reports and duplicate detection are deterministic. Subdirectories (such
/// as `schema/`) are not entered.
pub(crate) fn read_json_dir(dir: &Path) -> Result<Vec<JsonFile>, Vec<RuleProblem>> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        vec![RuleProblem::new(
            dir,
            "",
            format!("cannot read directory: {e}"),
        )]
    })?;
    let mut paths = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| {
            vec![RuleProblem::new(
                dir,
                "",
                format!("cannot read directory: {e}"),
            )]
        })?;
        let path = entry.path();
        if path.extension().is_some_and(|ext| ext == "json") && path.is_file() {
            paths.push(path);
        }
    }
    paths.sort();
    let mut files = Vec::with_capacity(paths.len());
    let mut problems = Vec::new();
    for path in paths {
        match read_json_file(&path) {
            Ok(value) => files.push(JsonFile { path, value }),
            Err(problem) => problems.push(problem),
        }
    }
    if problems.is_empty() {
        Ok(files)
    } else {
        Err(problems)
    }
}

fn read_json_file(path: &Path) -> Result<Value, RuleProblem> {
    let metadata = std::fs::metadata(path)
        .map_err(|e| RuleProblem::new(path, "", format!("cannot read file: {e}")))?;
    if metadata.len() > MAX_FILE_BYTES {
        return Err(RuleProblem::new(
            path,
            "",
            format!("file is larger than {MAX_FILE_BYTES} bytes"),
        ));
    }
    let bytes = std::fs::read(path)
        .map_err(|e| RuleProblem::new(path, "", format!("cannot read file: {e}")))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| RuleProblem::new(path, "", format!("not valid JSON: {e}")))
}
