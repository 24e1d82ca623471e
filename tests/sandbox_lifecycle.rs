//! The sandbox as a newcomer runs it (PROTOCOL.md section 9): the real
//! `mconnect sandbox` binary started from a directory that is not the
//! repository, with no paths but `--dir`. Killed with SIGKILL, it takes every
//! child process along; stopped with SIGTERM, it exits 0 with its children
//! stopped and its audit log closed; started again on the same directory, it
//! keeps that log. The calls its banner suggests work, and `--try N` out of
//! range is a clear error.
//!
//! Processes are watched through /proc (Linux): a child counts as alive while
//! `/proc/{pid}/stat` shows the same start time and a state other than zombie.
//! Every wait is bounded; everything listens on 127.0.0.1.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use mconnect::audit::{VerifyReport, certificate_verifier, verify_dir};
use serde_json::Value;

/// How long a debug-build sandbox may take to start (first start makes a PKI
/// with RSA keys, on a shared machine).
const START_LIMIT: Duration = Duration::from_secs(180);
/// How long the children may take to end once the sandbox is gone: the
/// lifeline's grace period is 5 s, so this is already generous.
const CHILDREN_LIMIT: Duration = Duration::from_secs(15);
/// How long a clean stop may take.
const STOP_LIMIT: Duration = Duration::from_secs(30);

fn mconnect() -> PathBuf {
    support::mconnect_bin()
}

/// How many child processes the shipped definition starts: one per
/// participant that serves a register or runs an adapter, and the portal.
fn expected_children() -> usize {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/sandbox/participants.json");
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    doc["participants"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p.get("serves").is_some() || p.get("adapter").is_some())
        .count()
        + 1
}

/// A process as /proc shows it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Proc {
    pid: u32,
    start_time: u64,
}

/// (state, parent pid, start time) of `pid`, or `None` if it does not exist.
fn stat(pid: u32) -> Option<(char, u32, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: the fields
    // after it start after the last `)`.
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state), rest[1] field 4 (ppid), rest[19] field 22 (starttime).
    Some((
        fields.first()?.chars().next()?,
        fields.get(1)?.parse().ok()?,
        fields.get(19)?.parse().ok()?,
    ))
}

fn alive(p: &Proc) -> bool {
    matches!(stat(p.pid), Some((state, _, start)) if start == p.start_time && state != 'Z' && state != 'X')
}

/// Every live process whose parent is `parent`, by scanning /proc.
fn children_of(parent: u32) -> BTreeSet<Proc> {
    let mut found = BTreeSet::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if let Some((state, ppid, start_time)) = stat(pid)
            && ppid == parent
            && state != 'Z'
        {
            found.insert(Proc { pid, start_time });
        }
    }
    found
}

/// A `mconnect sandbox` process, killed (SIGKILL) if a test fails half-way;
/// its children then end through their lifelines.
struct Sandbox {
    process: Child,
    /// The sandbox directory (absolute).
    dir: PathBuf,
    /// Its standard output (the banner).
    stdout: PathBuf,
    stderr: PathBuf,
    manifest: Value,
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

impl Sandbox {
    /// Starts `mconnect sandbox --dir sb` in `cwd` (so the directory is
    /// `cwd/sb`), on free ports, and waits for this run's sandbox.json and
    /// the end of its banner.
    fn start(cwd: &Path, run: &str) -> Sandbox {
        let stdout = cwd.join(format!("{run}.stdout"));
        let stderr = cwd.join(format!("{run}.stderr"));
        let process = Command::new(mconnect())
            .current_dir(cwd)
            .args([
                "sandbox",
                "--dir",
                "sb",
                "--data-port",
                "0",
                "--admin-port",
                "0",
                "--ops-port",
                "0",
            ])
            .env("MCONNECT_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        let mut sandbox = Sandbox {
            process,
            dir: cwd.join("sb"),
            stdout,
            stderr,
            manifest: Value::Null,
        };
        let deadline = Instant::now() + START_LIMIT;
        loop {
            if let Some(status) = sandbox.process.try_wait().unwrap() {
                panic!(
                    "the sandbox exited during start ({status}): {}",
                    std::fs::read_to_string(&sandbox.stderr).unwrap_or_default()
                );
            }
            // A manifest left by an earlier run names another pid.
            let manifest = std::fs::read_to_string(sandbox.dir.join("sandbox.json"))
                .ok()
                .and_then(|t| serde_json::from_str::<Value>(&t).ok());
            let banner = std::fs::read_to_string(&sandbox.stdout).unwrap_or_default();
            if let Some(m) = manifest
                && m["pid"] == sandbox.process.id()
                && banner.contains("Ctrl-C stops the sandbox")
            {
                sandbox.manifest = m;
                return sandbox;
            }
            assert!(
                Instant::now() < deadline,
                "the sandbox did not start in {START_LIMIT:?}: {}",
                std::fs::read_to_string(&sandbox.stderr).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The children recorded in sandbox.json, checked against /proc: the
    /// same set as the live children of the sandbox process, as many as the
    /// definition has providers.
    fn children(&self) -> BTreeSet<Proc> {
        let recorded: BTreeSet<u32> = self.manifest["processes"]
            .as_array()
            .expect("sandbox.json lists its processes")
            .iter()
            .map(|p| p["pid"].as_u64().unwrap() as u32)
            .collect();
        let live = children_of(self.process.id());
        assert_eq!(
            live.iter().map(|p| p.pid).collect::<BTreeSet<_>>(),
            recorded,
            "sandbox.json names exactly the sandbox's child processes"
        );
        assert_eq!(live.len(), expected_children(), "{live:?}");
        live
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    fn terminate(&mut self) -> std::process::ExitStatus {
        let sent = Command::new("kill")
            .args(["-TERM", &self.process.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        let deadline = Instant::now() + STOP_LIMIT;
        loop {
            if let Some(status) = self.process.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "no exit within {STOP_LIMIT:?} of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The commands the banner suggests, as printed.
    fn suggested(&self) -> Vec<String> {
        std::fs::read_to_string(&self.stdout)
            .unwrap()
            .lines()
            .map(str::trim)
            .filter(|l| l.contains(" call --sandbox "))
            .map(str::to_string)
            .collect()
    }
}

/// Runs `mconnect call --sandbox sb ARGS` in `cwd`.
fn call(cwd: &Path, args: &[&str]) -> Output {
    Command::new(mconnect())
        .current_dir(cwd)
        .args(["call", "--sandbox", "sb"])
        .args(args)
        .output()
        .unwrap()
}

fn assert_success(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what}: {}\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Waits (bounded) until none of `children` is alive; names the survivors
/// (and kills them, so a failing test leaves nothing behind).
fn assert_all_gone(children: &BTreeSet<Proc>, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let survivors: Vec<&Proc> = children.iter().filter(|p| alive(p)).collect();
        if survivors.is_empty() {
            return;
        }
        if Instant::now() >= deadline {
            for p in &survivors {
                let _ = Command::new("kill")
                    .args(["-KILL", &p.pid.to_string()])
                    .status();
            }
            panic!("children still running {within:?} after the sandbox ended: {survivors:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Verifies the sandbox's audit log with the broker certificate.
fn verify_log(dir: &Path) -> VerifyReport {
    let pem = std::fs::read_to_string(dir.join("pki/broker.cert.pem")).unwrap();
    let report = verify_dir(&dir.join("audit"), certificate_verifier(&pem).unwrap()).unwrap();
    assert!(
        report.is_ok(),
        "the audit log verifies: {:?}",
        report.problems
    );
    report
}

/// Every segment file of the log, with its bytes.
fn segments(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(dir.join("audit/segments"))
        .unwrap()
        .flatten()
        .map(|e| (e.path(), std::fs::read(e.path()).unwrap()))
        .collect();
    files.sort();
    files
}

#[test]
fn sigkill_takes_every_child_along_and_a_restart_keeps_the_log() {
    let cwd = tempfile::tempdir().unwrap();
    let mut sandbox = Sandbox::start(cwd.path(), "first");
    assert_success("--try 0", &call(cwd.path(), &["--try", "0"]));
    let children = sandbox.children();
    assert!(children.iter().all(alive));

    sandbox.process.kill().unwrap();
    sandbox.process.wait().unwrap();
    assert_all_gone(&children, CHILDREN_LIMIT);
    let before = verify_log(&sandbox.dir);
    assert!(before.records >= 1, "the call before the kill was audited");
    drop(sandbox);

    // Same directory, after a crash: the log reopens (checking its tail) and grows.
    let mut again = Sandbox::start(cwd.path(), "second");
    assert_success("--try 0 after restart", &call(cwd.path(), &["--try", "0"]));
    let children = again.children();
    assert!(again.terminate().success());
    assert_all_gone(&children, CHILDREN_LIMIT);
    let after = verify_log(&again.dir);
    assert!(
        after.records > before.records,
        "{} records before the kill, {} after the restart",
        before.records,
        after.records
    );
}

#[test]
fn sigterm_stops_cleanly_the_banner_calls_work_and_a_restart_keeps_the_log() {
    let cwd = tempfile::tempdir().unwrap();
    let mut sandbox = Sandbox::start(cwd.path(), "first");

    // Every call the banner suggests works, run as printed, from elsewhere.
    let suggested = sandbox.suggested();
    assert!(!suggested.is_empty(), "the banner suggests calls");
    for line in &suggested {
        let out = Command::new("sh")
            .current_dir("/")
            .args(["-c", line])
            .output()
            .unwrap();
        assert_success(line, &out);
    }
    // One past the end of the list: a clear error, no call made.
    let len = sandbox.manifest["try"].as_array().unwrap().len();
    let out = call(cwd.path(), &["--try", &len.to_string()]);
    assert_eq!(out.status.code(), Some(1));
    let message = String::from_utf8_lossy(&out.stderr);
    assert!(
        message.contains(&format!(
            "--try {len} is out of range: sb/sandbox.json lists {len} calls to try, numbered 0 to {}",
            len - 1
        )),
        "{message}"
    );

    // A second sandbox on the same directory is refused before it touches
    // anything: the running one's manifest stays.
    let second = Command::new(mconnect())
        .current_dir(cwd.path())
        .args([
            "sandbox",
            "--dir",
            "sb",
            "--data-port",
            "0",
            "--admin-port",
            "0",
            "--ops-port",
            "0",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(second.status.code(), Some(1));
    let message = String::from_utf8_lossy(&second.stderr);
    assert!(
        message.contains("another sandbox is running on sb"),
        "{message}"
    );
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(sandbox.dir.join("sandbox.json")).unwrap())
            .unwrap();
    assert_eq!(manifest["pid"], sandbox.process.id());

    let children = sandbox.children();
    let status = sandbox.terminate();
    assert!(
        status.success(),
        "{status}: {}",
        std::fs::read_to_string(&sandbox.stderr).unwrap_or_default()
    );
    // The sandbox waited for its children before it exited.
    assert!(
        children.iter().all(|p| !alive(p)),
        "children outlived the sandbox"
    );
    let before = verify_log(&sandbox.dir);
    assert!(before.records as usize >= suggested.len());
    assert!(
        before.torn_tail.is_none(),
        "a clean stop leaves no torn tail"
    );
    // The log was closed: its last signed tree head covers every record.
    let heads = mconnect::audit::read_tree_heads(&sandbox.dir.join("audit")).unwrap();
    assert_eq!(
        heads.iter().map(|h| h.tree_size).max(),
        Some(before.records)
    );
    let old_segments = segments(&sandbox.dir);
    drop(sandbox);

    let mut again = Sandbox::start(cwd.path(), "second");
    assert_success("--try 0 after restart", &call(cwd.path(), &["--try", "0"]));
    let children = again.children();
    assert!(again.terminate().success());
    assert_all_gone(&children, CHILDREN_LIMIT);
    let after = verify_log(&again.dir);
    assert!(after.records > before.records);
    assert!(after.tree_heads_checked >= before.tree_heads_checked);
    // Nothing written before the restart changed: each old segment is a
    // prefix of the same file now.
    let new_segments = segments(&again.dir);
    for (path, bytes) in &old_segments {
        let now = new_segments
            .iter()
            .find(|(p, _)| p == path)
            .unwrap_or_else(|| panic!("{} disappeared", path.display()));
        assert!(now.1.starts_with(bytes), "{} was rewritten", path.display());
    }
}

#[test]
fn missing_binaries_are_named_with_the_build_command_before_anything_starts() {
    let cwd = tempfile::tempdir().unwrap();
    let out = Command::new(mconnect())
        .current_dir(cwd.path())
        .args([
            "sandbox",
            "--dir",
            "sb",
            "--data-port",
            "0",
            "--admin-port",
            "0",
            "--ops-port",
            "0",
        ])
        .args(["--examples-dir", "nowhere/examples"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let message = String::from_utf8_lossy(&out.stderr);
    for expected in [
        "nowhere/examples/state_register",
        "nowhere/mconnect-adapter-mpower",
        "`cargo build --workspace --bins --examples`",
    ] {
        assert!(message.contains(expected), "{expected} in: {message}");
    }
    // Nothing was started: no manifest, no state, no audit log.
    for never in ["sandbox.json", "state.redb", "audit"] {
        assert!(!cwd.path().join("sb").join(never).exists(), "{never}");
    }
}
