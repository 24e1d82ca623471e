//! Embeds the shipped sandbox data (`catalog/`, `policies/` and
//! `examples/sandbox/participants.json`) into the `mconnect` command, so that
//! `mconnect sandbox` runs from any working directory: it writes these files
//! into its own directory instead of reading them relative to the cwd.
//!
//! Invariant: the generated list names every regular file under those roots,
//! sorted, and cargo reruns this script whenever any of them changes, so the
//! binary always carries the data of the tree it was built from.

use std::path::{Path, PathBuf};

/// The files and directories embedded, relative to the repository root
/// (two levels above this crate).
const ROOTS: [&str; 3] = ["catalog", "policies", "examples/sandbox/participants.json"];

fn main() {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let root = manifest_dir.join("../..");
    let mut files = Vec::new();
    for name in ROOTS {
        println!("cargo:rerun-if-changed=../../{name}");
        collect(&root, &root.join(name), &mut files);
    }
    files.sort();
    let mut out = String::from(
        "/// The shipped sandbox data: (path relative to the repository root, contents).\n\
         pub(crate) static SHIPPED: &[(&str, &[u8])] = &[\n",
    );
    for (relative, absolute) in &files {
        out.push_str(&format!(
            "    ({relative:?}, include_bytes!({:?})),\n",
            absolute.display().to_string()
        ));
    }
    out.push_str("];\n");
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").unwrap_or_default());
    if let Err(e) = std::fs::write(out_dir.join("shipped.rs"), out) {
        panic!("writing shipped.rs: {e}");
    }
}

/// Adds every regular file under `path` as (relative name with `/`, absolute path).
fn collect(root: &Path, path: &Path, files: &mut Vec<(String, PathBuf)>) {
    let Ok(meta) = std::fs::metadata(path) else {
        panic!(
            "{} is missing: the sandbox data must ship with the crate",
            path.display()
        );
    };
    if meta.is_dir() {
        let Ok(entries) = std::fs::read_dir(path) else {
            panic!("cannot read {}", path.display());
        };
        for entry in entries.flatten() {
            collect(root, &entry.path(), files);
        }
    } else if meta.is_file() {
        let relative = path
            .strip_prefix(root)
            .unwrap_or(path)
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join("/");
        files.push((relative, path.to_path_buf()));
    }
}
