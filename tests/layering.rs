//! The dependency rules of ARCHITECTURE.md ("Crates and what they may
//! know"), checked on the manifests and the sources, so that breaking one
//! fails the build's tests instead of waiting for a reviewer:
//!
//! - the SDK knows no broker: `mconnect-sdk` depends on neither `mconnect`
//!   nor `mconnect-cli` (cargo would refuse the cycle anyway; this names it);
//! - adapters and examples are participants: they depend on `mconnect-sdk`
//!   and on nothing of the broker, and every example is a target of the SDK
//!   crate, so the compiler sees only the SDK when building it;
//! - the library knows no command line: `mconnect` does not depend on clap,
//!   anyhow or indicatif, and spawns no processes;
//! - the server knows no exchange: the HTTP server lives in the SDK, which
//!   cannot name the exchange;
//! - policy never does I/O, and only the TLS modules build rustls
//!   configurations.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn manifest(relative: &str) -> toml::Table {
    let path = repo().join(relative);
    let text = std::fs::read_to_string(&path).unwrap();
    text.parse::<toml::Table>()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The packages a manifest's `[dependencies]` (not dev-dependencies) name:
/// the key, or the `package` it renames, also through
/// `[workspace.dependencies]` for `x.workspace = true`, so no renaming hides
/// a dependency on the broker.
fn dependencies(manifest: &toml::Table) -> Vec<String> {
    let root = self::manifest("Cargo.toml");
    let workspace = root
        .get("workspace")
        .and_then(|w| w.get("dependencies"))
        .and_then(|d| d.as_table())
        .cloned()
        .unwrap_or_default();
    let package = |key: &str, spec: &toml::Value| -> String {
        if let Some(renamed) = spec.get("package").and_then(|p| p.as_str()) {
            return renamed.to_owned();
        }
        if spec.get("workspace").and_then(|w| w.as_bool()) == Some(true)
            && let Some(shared) = workspace.get(key)
            && let Some(renamed) = shared.get("package").and_then(|p| p.as_str())
        {
            return renamed.to_owned();
        }
        key.to_owned()
    };
    manifest
        .get("dependencies")
        .and_then(|d| d.as_table())
        .map(|d| d.iter().map(|(key, spec)| package(key, spec)).collect())
        .unwrap_or_default()
}

/// Every `.rs` file under `dir`.
fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// Lines of `files` (comments excluded) that contain any of `needles`.
fn offending(files: &[PathBuf], needles: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(file).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.trim_start();
            if code.starts_with("//") {
                continue;
            }
            if let Some(needle) = needles.iter().find(|needle| code.contains(*needle)) {
                found.push(format!(
                    "{}:{}: `{needle}` in: {}",
                    file.display(),
                    n + 1,
                    code
                ));
            }
        }
    }
    found
}

#[test]
fn the_sdk_knows_no_broker() {
    let sdk = manifest("crates/sdk/Cargo.toml");
    let deps = dependencies(&sdk);
    for broker in ["mconnect", "mconnect-cli"] {
        assert!(
            !deps.iter().any(|d| d == broker),
            "crates/sdk depends on {broker}: the participant side must not know the broker"
        );
    }
    let hits = offending(&sources(&repo().join("crates/sdk/src")), &["mconnect::"]);
    assert!(
        hits.is_empty(),
        "the SDK names the broker:\n{}",
        hits.join("\n")
    );
}

#[test]
fn adapters_depend_on_the_sdk_alone() {
    let adapters = std::fs::read_dir(repo().join("adapters")).unwrap();
    let mut checked = 0;
    for entry in adapters.flatten() {
        let dir = entry.path();
        if !dir.join("Cargo.toml").is_file() {
            continue;
        }
        let relative = format!(
            "adapters/{}/Cargo.toml",
            dir.file_name().unwrap().to_string_lossy()
        );
        let deps = dependencies(&manifest(&relative));
        assert!(
            deps.iter().any(|d| d == "mconnect-sdk"),
            "{relative} does not build on mconnect-sdk"
        );
        for broker in ["mconnect", "mconnect-cli"] {
            assert!(
                !deps.iter().any(|d| d == broker),
                "{relative} depends on {broker}: adapters are participants and use the SDK alone"
            );
        }
        let hits = offending(
            &sources(&dir.join("src")),
            &["mconnect::", "mconnect_cli::"],
        );
        assert!(hits.is_empty(), "{relative}:\n{}", hits.join("\n"));
        checked += 1;
    }
    assert_eq!(checked, 4, "MSign, MPay, MPower and MNotify are checked");
}

#[test]
fn examples_are_targets_of_the_sdk_and_use_nothing_else() {
    let root = manifest("Cargo.toml");
    assert_eq!(
        root["package"]
            .get("autoexamples")
            .and_then(|v| v.as_bool()),
        Some(false),
        "the broker package must not build examples/ against the whole library"
    );
    let sdk = manifest("crates/sdk/Cargo.toml");
    let declared: Vec<String> = sdk["example"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap().to_owned())
        .collect();
    let files: Vec<PathBuf> = std::fs::read_dir(repo().join("examples"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        .collect();
    assert!(!files.is_empty());
    for file in &files {
        let name = file.file_name().unwrap().to_string_lossy();
        assert!(
            declared
                .iter()
                .any(|p| p.ends_with(&format!("examples/{name}"))),
            "examples/{name} is not an example of crates/sdk"
        );
    }
    let hits = offending(&files, &["mconnect::", "mconnect_cli::"]);
    assert!(
        hits.is_empty(),
        "examples name the broker:\n{}",
        hits.join("\n")
    );
}

#[test]
fn the_library_knows_no_command_line() {
    let deps = dependencies(&manifest("Cargo.toml"));
    for cli in ["clap", "anyhow", "indicatif"] {
        assert!(
            !deps.iter().any(|d| d == cli),
            "the broker library depends on {cli}: that belongs to crates/cli"
        );
    }
    let hits = offending(
        &sources(&repo().join("src")),
        &[
            "clap::",
            "anyhow::",
            "indicatif::",
            "process::Command",
            "mconnect_cli",
        ],
    );
    assert!(
        hits.is_empty(),
        "the library reaches for the CLI:\n{}",
        hits.join("\n")
    );
}

#[test]
fn policy_does_no_io() {
    let files: Vec<PathBuf> = sources(&repo().join("src/policy"))
        .into_iter()
        .filter(|p| !p.ends_with("tests.rs"))
        .collect();
    let hits = offending(
        &files,
        &[
            "std::fs",
            "tokio::",
            "std::net",
            "std::io::Read",
            "redb::",
            "File::",
        ],
    );
    assert!(hits.is_empty(), "policy does I/O:\n{}", hits.join("\n"));
}

#[test]
fn only_the_tls_modules_build_rustls_configurations() {
    let mut files = sources(&repo().join("src"));
    files.extend(sources(&repo().join("crates")));
    files.extend(sources(&repo().join("adapters")));
    files.extend(sources(&repo().join("examples")));
    files.retain(|p| !p.ends_with("crates/sdk/src/tls.rs"));
    let hits = offending(
        &files,
        &[
            "ServerConfig::builder",
            "ClientConfig::builder",
            "HttpsConnectorBuilder",
            "Client::builder(",
        ],
    );
    assert!(
        hits.is_empty(),
        "rustls configurations or HTTPS clients built outside crates/sdk/src/tls.rs:\n{}",
        hits.join("\n")
    );
}
