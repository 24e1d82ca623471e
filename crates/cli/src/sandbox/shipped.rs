//! The sandbox data built into the binary (`catalog/`, `policies/`,
//! `examples/sandbox/participants.json`, embedded by `build.rs`), so that
//! `mconnect sandbox` runs from any working directory.
//!
//! Invariant: `{dir}/shipped/` holds exactly the embedded files after
//! [`write`]; it is rewritten on every start (a copy, not a place to edit:
//! own rules are given with `--catalog`, `--policies`, `--participants`), and
//! a start that fails half-way leaves the previous copy in place.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

include!(concat!(env!("OUT_DIR"), "/shipped.rs"));

/// Where [`write`] put the shipped data.
pub(crate) struct ShippedPaths {
    pub(crate) catalog: PathBuf,
    pub(crate) policies: PathBuf,
    pub(crate) participants: PathBuf,
}

/// Writes the embedded data into `{dir}/shipped/`, replacing an older copy.
pub(crate) fn write(dir: &Path) -> Result<ShippedPaths> {
    let target = dir.join("shipped");
    let fresh = dir.join("shipped.new");
    let old = dir.join("shipped.old");
    for stale in [&fresh, &old] {
        if stale.exists() {
            std::fs::remove_dir_all(stale)
                .with_context(|| format!("removing {}", stale.display()))?;
        }
    }
    for (name, contents) in SHIPPED {
        let path = fresh.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))?;
    }
    // Swap the directories so a crash between the steps leaves either copy
    // whole; the next start removes whichever is left over.
    if target.exists() {
        std::fs::rename(&target, &old)
            .with_context(|| format!("moving {} aside", target.display()))?;
    }
    std::fs::rename(&fresh, &target).with_context(|| format!("writing {}", target.display()))?;
    if old.exists() {
        std::fs::remove_dir_all(&old).with_context(|| format!("removing {}", old.display()))?;
    }
    Ok(ShippedPaths {
        catalog: target.join("catalog"),
        policies: target.join("policies"),
        participants: target.join("examples/sandbox/participants.json"),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// The embedded copy is the repository's data, byte for byte, and a
    /// second write replaces the first (a file removed from the copy comes back).
    #[test]
    fn writes_the_repository_data_and_rewrites_it() {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let dir = tempfile::tempdir().unwrap();
        let paths = write(dir.path()).unwrap();
        assert!(SHIPPED.iter().any(|(n, _)| n.starts_with("catalog/")));
        assert!(SHIPPED.iter().any(|(n, _)| n.starts_with("policies/")));
        for (name, contents) in SHIPPED {
            assert_eq!(std::fs::read(repo.join(name)).unwrap(), *contents, "{name}");
        }
        assert_eq!(
            std::fs::read(&paths.participants).unwrap(),
            std::fs::read(repo.join("examples/sandbox/participants.json")).unwrap()
        );
        let some = paths.catalog.join("population.json");
        std::fs::remove_file(&some).unwrap();
        std::fs::write(paths.policies.join("stray.json"), "{}").unwrap();
        let again = write(dir.path()).unwrap();
        assert!(again.catalog.join("population.json").is_file());
        assert!(!again.policies.join("stray.json").exists());
        assert!(!dir.path().join("shipped.new").exists());
        assert!(!dir.path().join("shipped.old").exists());
    }
}
