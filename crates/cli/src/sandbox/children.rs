//! The sandbox's child processes (example registers, adapters and the
//! data-access portal): where
//! their binaries are, how they are started so that they end with the
//! sandbox, and how they are stopped.
//!
//! Invariants: every child gets a lifeline (`MCONNECT_LIFELINE=stdin`, a pipe
//! on its standard input whose write end only the sandbox holds, close-on-exec
//! so no sibling inherits it), so it ends when the sandbox ends, even by
//! SIGKILL (see `mconnect_sdk::exit_when_parent_dies`); a clean stop closes the
//! lifelines, waits for each child and kills (then reaps) any that outstay
//! the grace period; all binaries are checked before anything starts.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use super::{SandboxDefinition, SandboxManifest};
use mconnect_sdk::{LIFELINE_ENV, LIFELINE_GRACE};

/// A child process of the sandbox, as listed in `sandbox.json`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ManifestProcess {
    /// The participant it serves.
    pub participant: String,
    /// Its process id.
    pub pid: u32,
    /// The binary it runs.
    pub program: String,
}

/// What `sandbox.json` holds: the manifest, plus the processes of this run
/// (the sandbox's own `pid` and its children), for scripts that watch them.
#[derive(Serialize)]
struct ManifestFile<'a> {
    #[serde(flatten)]
    manifest: &'a SandboxManifest,
    pid: u32,
    processes: &'a [ManifestProcess],
}

/// The binaries the sandbox runs.
pub(crate) struct Binaries {
    /// `examples/state_register`.
    pub(crate) register: PathBuf,
    /// The directory with `mconnect-adapter-*`.
    pub(crate) adapters: PathBuf,
    /// `mconnect-portal`, the data-access portal.
    pub(crate) portal: PathBuf,
    /// `mconnect`, which a cluster's brokers run (`mconnect serve`).
    pub(crate) mconnect: PathBuf,
}

impl Binaries {
    /// Finds the binaries the definition needs: the example register in
    /// `examples_dir` (default: `examples/` beside this executable, which is
    /// where cargo puts them: `target/<profile>/examples/`) and the adapters
    /// in its parent (`target/<profile>/`). Names every missing one and the
    /// command that builds them.
    pub(crate) fn locate(
        examples_dir: Option<&Path>,
        definition: &SandboxDefinition,
        cluster: bool,
    ) -> Result<Binaries> {
        let exe = std::env::current_exe().context("finding this executable")?;
        let examples = match examples_dir {
            Some(d) => d.to_path_buf(),
            None => exe
                .parent()
                .context("this executable has no directory")?
                .join("examples"),
        };
        let adapters = examples
            .parent()
            .context("the examples directory has no parent")?
            .to_path_buf();
        // The brokers run this very command, unless this process is another
        // program embedding the sandbox (a test): then the `mconnect` beside
        // the adapters.
        let mconnect = if exe.file_stem().is_some_and(|n| n == "mconnect") {
            exe.clone()
        } else {
            adapters.join("mconnect")
        };
        let binaries = Binaries {
            register: examples.join("state_register"),
            portal: adapters.join("mconnect-portal"),
            adapters,
            mconnect,
        };
        let mut needed = vec![binaries.portal.clone()];
        if cluster {
            needed.push(binaries.mconnect.clone());
        }
        for p in &definition.participants {
            if p.serves.is_some() {
                needed.push(binaries.register.clone());
            } else if let Some(adapter) = &p.adapter {
                needed.push(binaries.adapter(adapter));
            }
        }
        needed.sort();
        needed.dedup();
        let missing: Vec<String> = needed
            .iter()
            .filter(|p| !p.is_file())
            .map(|p| p.display().to_string())
            .collect();
        if !missing.is_empty() {
            // The profile directory cargo built this executable into tells
            // which build command the user ran.
            let release = exe
                .parent()
                .and_then(Path::file_name)
                .is_some_and(|n| n == "release");
            bail!(
                "the sandbox runs the example registers, the adapters and the portal, and {} missing: {}; \
                 build them from the repository with `cargo build {}--workspace --bins --examples` \
                 (or name their directory with --examples-dir)",
                if missing.len() == 1 {
                    "this one is"
                } else {
                    "these are"
                },
                missing.join(", "),
                if release { "--release " } else { "" },
            );
        }
        Ok(binaries)
    }

    /// The binary of an adapter.
    pub(crate) fn adapter(&self, name: &str) -> PathBuf {
        self.adapters.join(format!("mconnect-adapter-{name}"))
    }
}

/// Gives a child its lifeline: a pipe on standard input that ends when the
/// sandbox does. The write end stays in the returned `Child` (its `stdin`),
/// so it lives exactly as long as the sandbox holds the child.
pub(crate) fn give_lifeline(command: &mut tokio::process::Command) {
    command.stdin(Stdio::piped()).env(LIFELINE_ENV, "stdin");
}

/// Starts a guard for a process that knows no lifeline (a broker run by
/// `mconnect serve`, nginx), started as the leader of its own process group
/// `group`: a shell, in a process group of its own and deaf to the
/// terminal's signals, that waits on a pipe whose write end only the
/// returned `Child` holds. When the pipe closes, because the sandbox ended
/// however it ended, SIGKILL included, it sends SIGTERM to the group and,
/// if the group is still there after the lifeline's grace period, SIGKILL.
/// On a clean stop the sandbox kills the guard first ([`end_guard`]), so it
/// signals nobody once the group's id is free again.
pub(crate) fn guard(group: u32) -> Result<std::process::Child> {
    use std::os::unix::process::CommandExt;
    std::process::Command::new("sh")
        .args([
            "-c",
            "trap '' INT TERM HUP QUIT; read -r _ignored; kill -15 -\"$1\" 2>/dev/null || exit 0; \
             i=0; while [ $i -lt \"$2\" ] && kill -0 -\"$1\" 2>/dev/null; do sleep 0.1; i=$((i+1)); done; \
             kill -9 -\"$1\" 2>/dev/null; exit 0",
            "mconnect-sandbox-guard",
        ])
        .arg(group.to_string())
        .arg((LIFELINE_GRACE.as_millis() / 100).to_string())
        .process_group(0)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting a sandbox guard process")
}

/// Ends a guard without letting it signal anything.
pub(crate) fn end_guard(guard: &mut std::process::Child) {
    let _ = guard.kill();
    let _ = guard.wait();
}

/// Sends signal number `signal` to process `pid`, or with `group` to its
/// whole process group (the shell's `kill`: the library forbids unsafe code
/// and so `kill(2)` itself). False when nothing was there to signal.
pub(crate) fn signal(pid: u32, signal: u8, group: bool) -> bool {
    let target = if group {
        format!("-{pid}")
    } else {
        pid.to_string()
    };
    std::process::Command::new("sh")
        .args(["-c", "kill -\"$1\" \"$2\" 2>/dev/null", "mconnect-kill"])
        .arg(signal.to_string())
        .arg(target)
        .stdin(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Stops the children: closes every lifeline at once, then waits for each to
/// exit by itself, and kills and reaps any that has not after the grace
/// period (plus a second for the exit itself).
pub(crate) async fn stop_all(children: &mut [tokio::process::Child]) {
    for child in children.iter_mut() {
        drop(child.stdin.take());
    }
    let deadline = tokio::time::Instant::now() + LIFELINE_GRACE + Duration::from_secs(1);
    for child in children.iter_mut() {
        match tokio::time::timeout_at(deadline, child.wait()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "waiting for a sandbox process"),
            Err(_) => {
                tracing::warn!(pid = ?child.id(), "a sandbox process did not stop; killing it");
                // `kill` sends SIGKILL and waits, so the process is reaped.
                let _ = child.kill().await;
            }
        }
    }
}

/// Writes `{dir}/sandbox.json` whole or not at all (a temporary file renamed
/// over it), so a script polling for it never reads half a file.
pub(crate) fn write_manifest(
    dir: &Path,
    manifest: &SandboxManifest,
    processes: &[ManifestProcess],
) -> Result<()> {
    let file = ManifestFile {
        manifest,
        pid: std::process::id(),
        processes,
    };
    let path = dir.join("sandbox.json");
    let partial = dir.join("sandbox.json.partial");
    std::fs::write(&partial, serde_json::to_string_pretty(&file)?)
        .with_context(|| format!("writing {}", partial.display()))?;
    std::fs::rename(&partial, &path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
