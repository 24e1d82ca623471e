//! The one problem type of every rules document — catalog files, policy
//! files, grants kept in the state store: which file, where in it, and why.
//! A leaf: the catalog and policy loaders report in it, and [`super`] hands
//! their lists on unchanged, so an operator sees every problem of a refused
//! load in one answer.

use std::fmt;
use std::path::PathBuf;

/// A rules document that cannot be loaded.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RuleProblem {
    /// The file (or directory) at fault; empty when the problem is not in
    /// one file (a loader that failed as a whole).
    #[serde(serialize_with = "lossy_path")]
    pub file: PathBuf,
    /// JSON pointer inside the file; empty for the whole document.
    pub pointer: String,
    /// What is wrong and what to fix.
    pub reason: String,
}

impl RuleProblem {
    /// A problem at `pointer` of `file`.
    pub fn new(
        file: impl Into<PathBuf>,
        pointer: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        RuleProblem {
            file: file.into(),
            pointer: pointer.into(),
            reason: reason.into(),
        }
    }

    /// A problem that no single file carries.
    pub fn general(reason: impl Into<String>) -> Self {
        RuleProblem::new(PathBuf::new(), String::new(), reason)
    }
}

impl fmt::Display for RuleProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pointer = if self.pointer.is_empty() {
            "(root)"
        } else {
            &self.pointer
        };
        match (self.file.as_os_str().is_empty(), self.pointer.is_empty()) {
            (true, true) => f.write_str(&self.reason),
            (true, false) => write!(f, "at {pointer}: {}", self.reason),
            (false, _) => write!(f, "{}: at {pointer}: {}", self.file.display(), self.reason),
        }
    }
}

impl std::error::Error for RuleProblem {}

/// File names in answers are text; a name that is not UTF-8 is shown lossily
/// rather than failing the whole answer.
fn lossy_path<S: serde::Serializer>(
    path: &std::path::Path,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&path.to_string_lossy())
}

/// Several problems as one line: the first, and how many more.
pub fn summarise(problems: &[RuleProblem]) -> String {
    match problems {
        [] => "the rules could not be loaded".to_owned(),
        [only] => only.to_string(),
        [first, rest @ ..] => format!("{first} (and {} more)", rest.len()),
    }
}
