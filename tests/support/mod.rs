//! Test support: the real sandbox (broker on 127.0.0.1:0, example registers
//! as child processes, development PKI) in a temporary directory, and helpers
//! to call it as any participant.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod browser;
pub mod postgres;
pub mod smtp;

use std::path::{Path, PathBuf};

use bytes::Bytes;
use http::Method;
use mconnect_cli::sandbox::{RunningSandbox, SandboxArgs};
use mconnect_sdk::{Call, CallOutcome, Consumer};

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A development CA named `ca_name` in `pki` (created), with a broker
/// certificate and key (`broker.cert.pem`, `broker.key.pem`).
pub fn dev_pki(pki: &Path, ca_name: &str) -> mconnect::pki::DevCa {
    std::fs::create_dir_all(pki).unwrap();
    let ca = mconnect::pki::DevCa::generate(ca_name).unwrap();
    ca.write(pki).unwrap();
    ca.issue("broker", "MConnect", mconnect::pki::KeyType::Ed25519)
        .unwrap()
        .write(pki, "broker")
        .unwrap();
    ca
}

/// Where cargo put this build's binaries: `target/{profile}`, the parent of
/// the `deps/` directory that holds this test executable.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap();
    deps.parent().unwrap().to_path_buf()
}

/// The `mconnect` command of this build. It lives in another package of
/// the workspace (mconnect-cli), so cargo does not hand its path to these
/// tests; README's test command builds every binary before the tests run.
pub fn mconnect_bin() -> PathBuf {
    let path = bin_dir().join("mconnect");
    assert!(
        path.is_file(),
        "{} is missing: build the workspace binaries first \
         (`cargo build --workspace --bins --examples`, as tests/run.sh does)",
        path.display()
    );
    path
}

/// Where cargo put the example binaries for this test build.
pub fn examples_dir() -> PathBuf {
    bin_dir().join("examples")
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
        cluster: false,
    }
}

/// A running bus in its own temporary directory.
pub struct Bus {
    pub sandbox: RunningSandbox,
    pub dir: tempfile::TempDir,
}

impl Bus {
    pub async fn start() -> Bus {
        Bus::start_in(tempfile::tempdir().unwrap()).await
    }

    /// A bus in `dir`, which the caller may have prepared (MNotify's SMTP
    /// server, for one: `smtp::Smtp::serve_sandbox`).
    pub async fn start_in(dir: tempfile::TempDir) -> Bus {
        let sandbox = mconnect_cli::sandbox::start(&args(dir.path()))
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

/// Asserts an answer 200 with a verified receipt.
pub fn assert_ok(outcome: &CallOutcome) {
    assert_eq!(
        outcome.status,
        http::StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&outcome.body)
    );
    assert!(outcome.receipt.is_ok(), "{:?}", outcome.receipt);
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
    let credentials = mconnect_sdk::Credentials::load(
        participant,
        &pki.join(format!("{participant}.cert.pem")),
        &pki.join(format!("{participant}.key.pem")),
        &pki.join("ca.cert.pem"),
        None,
    )
    .unwrap();
    mconnect::connect::client::AdminClient::new(credentials, admin_url).unwrap()
}

/// Signs `headers` in place (label `mconnect`) as `participant`, whose key
/// is in `pki`, for `method` and `target_uri`: covers the required
/// components and each optional protocol header present, with `created`
/// and an optional `nonce`. For requests the SDK would not build: stale,
/// replayed, signed for another authority, with headers added after, or
/// forwarded as the broker (`participant` "broker", with an exchange id).
pub fn sign_as(
    pki: &Path,
    participant: &str,
    method: &str,
    target_uri: &str,
    headers: &mut http::HeaderMap,
    created: i64,
    nonce: Option<&str>,
) {
    use mconnect::httpsig::{self, MessageView, RequestView, SignatureParams};
    let creds = mconnect_sdk::Credentials::from_pki_dir(pki, participant, "").unwrap();
    headers.remove("signature");
    headers.remove("signature-input");
    let mut covered = vec![
        "@method",
        "@target-uri",
        "mconnect-client",
        "mconnect-calling-user",
        "mconnect-call-basis",
        "mconnect-call-reason",
        "mconnect-request-id",
    ];
    for optional in [
        "mconnect-exchange-id",
        "mconnect-subject",
        "mconnect-represented-party",
        "content-digest",
    ] {
        if headers.contains_key(optional) {
            covered.push(optional);
        }
    }
    let mut params = SignatureParams::new(&covered);
    params.created = Some(created);
    params.keyid = Some(creds.keyid.clone());
    params.nonce = nonce.map(str::to_string);
    let sig = httpsig::sign(
        &MessageView::Request(RequestView {
            method,
            target_uri,
            headers,
        }),
        "mconnect",
        &params,
        &creds.key,
    )
    .unwrap();
    httpsig::attach(headers, sig);
}

/// A plain-HTTP GET (the operations listener): status and body.
pub async fn plain_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut out = String::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(20),
        tcp.read_to_string(&mut out),
    )
    .await
    .unwrap()
    .unwrap();
    let status = out[9..12].parse().unwrap();
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// The protocol headers of apl-cahul's social-aid lookup of 2000000000015
/// (unsigned; see [`sign_as`]), with `request_id`.
pub fn social_aid_headers(request_id: uuid::Uuid) -> http::HeaderMap {
    let mut h = http::HeaderMap::new();
    for (k, v) in [
        ("mconnect-client", "apl-cahul"),
        ("mconnect-calling-user", "2000000000015"),
        ("mconnect-call-basis", "md-law-133-2008-art-8"),
        ("mconnect-call-reason", "social-aid-eligibility"),
        ("mconnect-subject", "2000000000015"),
    ] {
        h.insert(k, http::HeaderValue::from_static(v));
    }
    h.insert(
        "mconnect-request-id",
        http::HeaderValue::from_str(&request_id.to_string()).unwrap(),
    );
    h
}
