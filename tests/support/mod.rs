//! Test support: the real sandbox (broker on 127.0.0.1:0, example registers
//! as child processes, development PKI) in a temporary directory, and helpers
//! to call it as any participant.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use bytes::Bytes;
use http::Method;
use mconnect::sandbox::{RunningSandbox, SandboxArgs};
use mconnect::sdk::{Call, CallOutcome, Consumer};

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Where cargo put the example binaries for this test build.
pub fn examples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_mconnect"))
        .parent()
        .unwrap()
        .join("examples")
}

/// How many participants the sandbox definition registers.
pub fn participant_count() -> usize {
    let text = std::fs::read_to_string(repo().join("examples/sandbox/participants.json")).unwrap();
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    doc["participants"].as_array().unwrap().len()
}

/// Sandbox arguments for a directory, on free ports.
pub fn args(dir: &Path) -> SandboxArgs {
    SandboxArgs {
        dir: dir.to_path_buf(),
        data_port: 0,
        admin_port: 0,
        ops_port: 0,
        catalog: Some(repo().join("catalog")),
        policies: Some(repo().join("policies")),
        participants: Some(repo().join("examples/sandbox/participants.json")),
        examples_dir: Some(examples_dir()),
        no_wait: true,
    }
}

/// A running bus in its own temporary directory.
pub struct Bus {
    pub sandbox: RunningSandbox,
    pub dir: tempfile::TempDir,
}

impl Bus {
    pub async fn start() -> Bus {
        let dir = tempfile::tempdir().unwrap();
        let sandbox = mconnect::sandbox::start(&args(dir.path()))
            .await
            .expect("sandbox starts");
        Bus { sandbox, dir }
    }

    pub fn consumer(&self, participant: &str) -> Consumer {
        self.sandbox
            .manifest
            .consumer(self.dir.path(), participant)
            .unwrap()
    }

    pub fn pki(&self) -> PathBuf {
        self.dir.path().join("pki")
    }

    pub async fn stop(self) -> tempfile::TempDir {
        self.sandbox.shutdown().await;
        self.dir
    }
}

/// A GET call with the protocol fields.
pub fn get(path: &str, basis: &str, reason: &str, subject: Option<&str>) -> Call {
    Call {
        method: Method::GET,
        path: path.to_string(),
        body: None,
        calling_user: "2000000000015".into(),
        basis: basis.into(),
        reason: reason.into(),
        subject: subject.map(str::to_string),
        represented_party: None,
        request_id: None,
    }
}

/// A POST call with a JSON body.
pub fn post(path: &str, body: &str, basis: &str, reason: &str) -> Call {
    Call {
        method: Method::POST,
        body: Some(Bytes::from(body.to_string())),
        ..get(path, basis, reason, None)
    }
}

/// The problem `code` of a refusal.
pub fn code(outcome: &CallOutcome) -> String {
    serde_json::from_slice::<serde_json::Value>(&outcome.body)
        .ok()
        .and_then(|v| v["code"].as_str().map(str::to_string))
        .unwrap_or_else(|| format!("<no code: {}>", String::from_utf8_lossy(&outcome.body)))
}

/// Asserts status and code, and that even the refusal carries a verified receipt.
pub fn assert_refused(outcome: &CallOutcome, status: u16, expected: &str) {
    assert_eq!(
        (outcome.status.as_u16(), code(outcome).as_str()),
        (status, expected),
        "body: {}",
        String::from_utf8_lossy(&outcome.body)
    );
    assert!(
        outcome.receipt.is_ok(),
        "refusals are signed receipts too: {:?}",
        outcome.receipt
    );
}

/// Starts an extra example register process (for failure tests); returns it and its URL.
pub async fn spawn_register(
    pki: &Path,
    register: &str,
    participant: &str,
    alg: &str,
    extra: &[&str],
) -> (tokio::process::Child, String) {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(examples_dir().join("state_register"))
        .args([
            "--register",
            register,
            "--participant",
            participant,
            "--alg",
            alg,
            "--listen",
            "127.0.0.1:0",
        ])
        .arg("--pki")
        .arg(pki)
        .args(extra)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(std::time::Duration::from_secs(20), lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let url = line.strip_prefix("LISTENING ").unwrap().trim().to_string();
    (child, url)
}

/// An mTLS admin-API client acting as a participant of the sandbox in `dir`.
pub fn admin_client(
    dir: &Path,
    admin_url: &str,
    participant: &str,
) -> mconnect::connect::client::AdminClient {
    let pki = dir.join("pki");
    let credentials = mconnect::sdk::Credentials::load(
        participant,
        &pki.join(format!("{participant}.cert.pem")),
        &pki.join(format!("{participant}.key.pem")),
        &pki.join("ca.cert.pem"),
        None,
    )
    .unwrap();
    mconnect::connect::client::AdminClient::new(credentials, admin_url).unwrap()
}
