//! A broker run as in production, with the real `mconnect` binary: started
//! from a participants file on an empty store, its own key rotated with old
//! receipts and tree heads still verifying, backed up while it runs and
//! restored into an empty installation, and refusing a private key others
//! can read. The shipped deployment files are checked against the code.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{HeaderMap, Method, StatusCode};
use mconnect::pki::{DevCa, KeyType};
use mconnect_sdk::{Consumer, Credentials, TrustedKeys};

const PERSON: &str = "2000000000015";
const SOCIAL_BASIS: &str = "md-law-133-2008-art-8";
const SOCIAL_REASON: &str = "social-aid-eligibility";
const AUDITOR_BASIS: &str = "md-law-133-2011-art-27";
const AUDITOR_REASON: &str = "supervision-of-personal-data-processing";

/// A broker installation in a temporary directory: development PKI, the
/// repository's catalog, two policy files, broker.toml and a participants
/// file for an operator, an auditor and a consumer.
struct Install {
    dir: tempfile::TempDir,
}

impl Install {
    fn new() -> Install {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let pki = root.join("pki");
        let ca = support::dev_pki(&pki, "production test CA");
        let people = [
            ("age-operator", "1003600000017", "operator"),
            ("cnpdcp-audit", "1003600000028", "auditor"),
            ("apl-cahul", "1003603000063", "consumer"),
        ];
        let mut participants = Vec::new();
        for (id, idno, role) in people {
            let issued = ca.issue(id, id, KeyType::Ed25519).unwrap();
            issued.write(&pki, id).unwrap();
            let mut roles = vec![role];
            if role == "auditor" {
                roles.push("consumer");
            }
            participants.push(serde_json::json!({
                "id": id,
                "organisation": {"idno": idno, "name": format!("Organisation of {id}")},
                "roles": roles,
                "certificates": [mconnect::registry::registered_certificate(&issued.cert_pem).unwrap()],
            }));
        }
        std::fs::write(
            root.join("participants.json"),
            serde_json::to_vec_pretty(&serde_json::json!({ "participants": participants }))
                .unwrap(),
        )
        .unwrap();
        let policies = root.join("policies");
        std::fs::create_dir_all(&policies).unwrap();
        for f in ["apl-cahul.json", "cnpdcp-audit.json"] {
            std::fs::copy(support::repo().join("policies").join(f), policies.join(f)).unwrap();
        }
        let install = Install { dir };
        install.write_config("pki/broker.cert.pem", "pki/broker.key.pem", &[]);
        install
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    fn config(&self) -> PathBuf {
        self.root().join("broker.toml")
    }

    fn audit_dir(&self) -> PathBuf {
        self.root().join("var/audit")
    }

    fn state_file(&self) -> PathBuf {
        self.root().join("var/state.redb")
    }

    fn write_config(&self, cert: &str, key: &str, previous: &[&str]) {
        let previous = previous
            .iter()
            .map(|p| format!("\"{p}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let text = format!(
            r#"
[listen]
data = "127.0.0.1:0"
admin = "127.0.0.1:0"
ops = "127.0.0.1:0"
[tls]
ca = "pki/ca.cert.pem"
cert = "{cert}"
key = "{key}"
previous_certs = [{previous}]
[storage]
state = "var/state.redb"
audit_dir = "var/audit"
[catalog]
dir = "{catalog}"
[policies]
dir = "policies"
[audit]
tree_head_interval_secs = 0
"#,
            catalog = support::repo().join("catalog").display()
        );
        std::fs::write(self.config(), text).unwrap();
    }

    /// `mconnect serve` with `extra` arguments, until it listens.
    fn serve(&self, extra: &[&str]) -> Broker {
        Broker::start(&self.config(), extra)
    }

    /// `mconnect serve` with `extra` arguments, which must refuse to start.
    fn serve_refused(&self, extra: &[&str]) -> (i32, String) {
        let out = Command::new(support::mconnect_bin())
            .args(["serve", "--config"])
            .arg(self.config())
            .args(extra)
            .current_dir(self.root())
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn credentials(&self, id: &str) -> Credentials {
        let pki = self.root().join("pki");
        Credentials::load(
            id,
            &pki.join(format!("{id}.cert.pem")),
            &pki.join(format!("{id}.key.pem")),
            &pki.join("ca.cert.pem"),
            None,
        )
        .unwrap()
    }

    /// A consumer that trusts the broker certificates published in the
    /// audit directory (current and previous).
    fn consumer(&self, broker: &Broker) -> Consumer {
        Consumer::new(
            self.credentials("apl-cahul"),
            &format!("https://{}", broker.data),
            self.published_keys(),
        )
        .unwrap()
    }

    fn published_keys(&self) -> TrustedKeys {
        let pem = std::fs::read_to_string(
            self.audit_dir()
                .join(mconnect::app::BROKER_CERTIFICATES_FILE),
        )
        .unwrap();
        TrustedKeys::from_pem(&pem).unwrap()
    }

    fn admin(&self, broker: &Broker, id: &str) -> mconnect::connect::client::AdminClient {
        mconnect::connect::client::AdminClient::new(
            self.credentials(id),
            &format!("https://{}", broker.admin),
        )
        .unwrap()
    }

    /// `mconnect audit verify --quiet` of the audit log against `cert`.
    fn verify_audit(&self, cert: &str) -> (i32, String) {
        self.mconnect(&[
            "audit",
            "verify",
            "--quiet",
            "--dir",
            "var/audit",
            "--cert",
            cert,
        ])
    }

    fn mconnect(&self, args: &[&str]) -> (i32, String) {
        mconnect_in(self.root(), args)
    }
}

/// `mconnect` with `args`, run in `dir`: its exit code, and stdout then
/// stderr.
fn mconnect_in(dir: &Path, args: &[&str]) -> (i32, String) {
    let out = Command::new(support::mconnect_bin())
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// A running `mconnect serve`, killed if the test fails before it stops it.
struct Broker {
    child: Option<Child>,
    data: String,
    admin: String,
    stderr: Arc<Mutex<String>>,
}

impl Broker {
    fn start(config: &Path, extra: &[&str]) -> Broker {
        let mut child = Command::new(support::mconnect_bin())
            .args(["serve", "--config"])
            .arg(config)
            .args(extra)
            .current_dir(config.parent().unwrap())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let pipe = child.stderr.take().unwrap();
        let log = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix("mconnect: data plane on https://") {
                    let mut parts = rest.split(", admin on https://");
                    let data = parts.next().unwrap().to_string();
                    let admin = parts.next().unwrap().split(',').next().unwrap().to_string();
                    let _ = tx.send((data, admin));
                }
                log.lock().unwrap().push_str(&(line + "\n"));
            }
        });
        let mut broker = Broker {
            child: Some(child),
            data: String::new(),
            admin: String::new(),
            stderr,
        };
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok((data, admin)) => {
                broker.data = data;
                broker.admin = admin;
                broker
            }
            Err(_) => panic!(
                "the broker did not start: {}",
                broker.stderr.lock().unwrap()
            ),
        }
    }

    /// SIGTERM, then waits for a clean exit.
    fn stop(mut self) {
        let mut child = self.child.take().unwrap();
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(
                    status.success(),
                    "broker exited with {status}: {}",
                    self.stderr.lock().unwrap()
                );
                return;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("the broker did not stop on SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// What a receipt needs to be checked again later.
struct Kept {
    status: StatusCode,
    headers: HeaderMap,
    body: bytes::Bytes,
    seq: u64,
    exchange_id: String,
    keyid: String,
}

async fn call(consumer: &Consumer) -> Kept {
    let outcome = call_once(consumer).await.unwrap();
    let receipt = outcome.receipt.as_ref().expect("the receipt verifies");
    Kept {
        status: outcome.status,
        seq: receipt.audit_seq.expect("the exchange was audited"),
        exchange_id: receipt.exchange_id.clone(),
        keyid: receipt.keyid.clone(),
        headers: outcome.headers,
        body: outcome.body,
    }
}

/// apl-cahul asks for a person (the provider is not registered here, so
/// the broker refuses it: an audited, receipted exchange all the same).
async fn call_once(
    consumer: &Consumer,
) -> Result<mconnect_sdk::CallOutcome, mconnect_sdk::SdkError> {
    consumer
        .call(&mconnect_sdk::Call {
            method: Method::GET,
            path: format!("/r1/asp-rsp/person-by-idnp?idnp={PERSON}"),
            body: None,
            calling_user: "2000000000015".into(),
            basis: SOCIAL_BASIS.into(),
            reason: SOCIAL_REASON.into(),
            subject: Some(PERSON.into()),
            represented_party: None,
            request_id: None,
        })
        .await
}

/// Asserts that `broker` lists `count` participants (asked as the operator).
async fn assert_participants(install: &Install, broker: &Broker, count: usize) {
    let (status, body) = admin_get(
        &install.admin(broker, "age-operator"),
        "/v1/participants",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["participants"].as_array().unwrap().len(),
        count,
        "{body}"
    );
}

async fn admin_get(
    admin: &mconnect::connect::client::AdminClient,
    path: &str,
    basis: Option<(&str, &str)>,
) -> (StatusCode, serde_json::Value) {
    let mut request = admin.plain(Method::GET, path, None).unwrap();
    if let Some((basis, reason)) = basis {
        request
            .headers_mut()
            .insert("mconnect-call-basis", basis.parse().unwrap());
        request
            .headers_mut()
            .insert("mconnect-call-reason", reason.parse().unwrap());
    }
    let answer = tokio::time::timeout(Duration::from_secs(20), admin.send_full(request))
        .await
        .unwrap()
        .unwrap();
    (answer.status, answer.body)
}

fn participants_in_store(path: &Path) -> usize {
    let store =
        mconnect::store::open(&mconnect::store::Backend::Embedded(path.to_path_buf())).unwrap();
    store
        .scan(mconnect::store::Collection::Participants)
        .unwrap()
        .len()
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_registers_the_first_participants_once_all_or_nothing() {
    let install = Install::new();
    let root = install.root().to_path_buf();

    // A file with one bad participant registers nothing.
    let text = std::fs::read_to_string(root.join("participants.json")).unwrap();
    std::fs::write(
        root.join("bad.json"),
        text.replace("1003603000063", "1003603000064"),
    )
    .unwrap();
    let (code, stderr) = install.serve_refused(&["--init-participants", "bad.json"]);
    assert_eq!(code, 64, "{stderr}");
    assert!(
        stderr.contains("nothing was registered") && stderr.contains("apl-cahul"),
        "{stderr}"
    );
    assert_eq!(participants_in_store(&install.state_file()), 0);

    // The empty store takes the file; the broker serves those participants
    // and the registration is in the audit log, made by `broker`.
    let broker = install.serve(&["--init-participants", "participants.json"]);
    let outcome = call(&install.consumer(&broker)).await;
    assert!(outcome.seq > 0);
    let (status, body) = admin_get(
        &install.admin(&broker, "cnpdcp-audit"),
        "/v1/audit/records?event=admin.change&limit=10",
        Some((AUDITOR_BASIS, AUDITOR_REASON)),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let items = body["items"].as_array().unwrap();
    let mut upserts: Vec<&str> = items
        .iter()
        .filter(|i| i["record"]["consumer"] == "broker")
        .filter_map(|i| i["record"]["service"].as_str())
        .collect();
    upserts.sort_unstable();
    assert_eq!(
        upserts,
        [
            "participant.upsert age-operator",
            "participant.upsert apl-cahul",
            "participant.upsert cnpdcp-audit"
        ],
        "{body}"
    );
    broker.stop();

    // The same file again: nothing to do, the broker starts.
    let broker = install.serve(&["--init-participants", "participants.json"]);
    assert_participants(&install, &broker, 3).await;
    broker.stop();

    // Another file on a store that holds participants: refused, exit 64.
    let mut doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    doc["participants"][2]["roles"] = serde_json::json!(["consumer", "provider"]);
    std::fs::write(root.join("other.json"), doc.to_string()).unwrap();
    let (code, stderr) = install.serve_refused(&["--init-participants", "other.json"]);
    assert_eq!(code, 64, "{stderr}");
    assert!(
        stderr.contains("not empty") && stderr.contains("apl-cahul"),
        "{stderr}"
    );
    assert_eq!(participants_in_store(&install.state_file()), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_broker_key_rotates_and_old_receipts_and_tree_heads_still_verify() {
    let install = Install::new();
    let root = install.root().to_path_buf();
    let broker = install.serve(&["--init-participants", "participants.json"]);
    let a = call(&install.consumer(&broker)).await;
    broker.stop();

    // Rotation: a new broker certificate from the bus CA; the old one is
    // listed as previous.
    let ca = DevCa::load(&root.join("pki")).unwrap();
    let next = root.join("pki-next");
    std::fs::create_dir_all(&next).unwrap();
    ca.issue("broker", "MConnect", KeyType::EcdsaP256)
        .unwrap()
        .write(&next, "broker")
        .unwrap();
    // Forgetting the old certificate is refused: its tree heads would no
    // longer verify with what the broker publishes.
    install.write_config("pki-next/broker.cert.pem", "pki-next/broker.key.pem", &[]);
    let (code, stderr) = install.serve_refused(&[]);
    assert_eq!(code, 64, "{stderr}");
    assert!(stderr.contains("tls.previous_certs"), "{stderr}");
    install.write_config(
        "pki-next/broker.cert.pem",
        "pki-next/broker.key.pem",
        &["pki/broker.cert.pem"],
    );
    let broker = install.serve(&[]);
    let b = call(&install.consumer(&broker)).await;
    broker.stop();
    assert_ne!(a.keyid, b.keyid, "receipt B is signed with the new key");
    assert!(b.seq > a.seq);

    // Both receipts verify with the published certificates...
    let published = install.published_keys();
    for kept in [&a, &b] {
        let receipt = mconnect_sdk::consumer::verify_receipt(
            kept.status,
            &kept.headers,
            &kept.body,
            &published,
        )
        .unwrap();
        assert_eq!(receipt.keyid, kept.keyid);
        assert_eq!(receipt.audit_seq, Some(kept.seq));
    }
    // ...and receipt A only with the old certificate among them.
    let only_new = TrustedKeys::broker_in_pki_dir(&next).unwrap();
    assert!(
        mconnect_sdk::consumer::verify_receipt(a.status, &a.headers, &a.body, &only_new).is_err()
    );

    // The whole log, signed by two keys, verifies with both certificates.
    let heads = mconnect::audit::read_tree_heads(&install.audit_dir()).unwrap();
    let mut keyids: Vec<&str> = heads.iter().map(|h| h.keyid.as_str()).collect();
    keyids.sort_unstable();
    keyids.dedup();
    assert_eq!(keyids.len(), 2, "tree heads of both keys");
    let (code, out) = install.verify_audit("var/audit/broker-certificates.pem");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("result          : OK"), "{out}");
    let (code, out) = install.verify_audit("pki-next/broker.cert.pem");
    assert_eq!(
        code, 1,
        "the new certificate alone does not verify old heads: {out}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_taken_while_serving_restores_into_an_empty_installation() {
    let install = Install::new();
    let broker = install.serve(&["--init-participants", "participants.json"]);
    let consumer = install.consumer(&broker);
    let before = [call(&consumer).await, call(&consumer).await];
    // The log keeps growing while the backup is taken.
    let busy = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let traffic = {
        let (consumer, busy) = (install.consumer(&broker), busy.clone());
        tokio::spawn(async move {
            let mut calls = 0u32;
            while busy.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = call_once(&consumer).await;
                calls += 1;
            }
            calls
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let root = install.root().to_path_buf();
    let (code, out) = tokio::task::spawn_blocking(move || {
        mconnect_in(
            &root,
            &["backup", "--config", "broker.toml", "--out", "backup"],
        )
    })
    .await
    .unwrap();
    busy.store(false, std::sync::atomic::Ordering::Relaxed);
    assert!(traffic.await.unwrap() > 0);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("3 participants"), "{out}");
    // A backup directory is never reused.
    let (code, out) = install.mconnect(&["backup", "--config", "broker.toml", "--out", "backup"]);
    assert_eq!(code, 64, "{out}");
    broker.stop();

    // Restoring over a live installation is refused.
    let (code, out) = install.mconnect(&["restore", "--config", "broker.toml", "--from", "backup"]);
    assert_eq!(code, 64, "{out}");
    assert!(out.contains("already holds an audit log"), "{out}");

    // The disk is lost.
    std::fs::remove_dir_all(install.root().join("var")).unwrap();
    // A damaged backup is refused before anything is put in place.
    let status = Command::new("cp")
        .args(["-r", "backup", "damaged"])
        .current_dir(install.root())
        .status()
        .unwrap();
    assert!(status.success());
    let segment = std::fs::read_dir(install.root().join("damaged/audit/segments"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "seg"))
        .unwrap();
    let mut bytes = std::fs::read(&segment).unwrap();
    let last = bytes.len() - 10;
    bytes[last] ^= 1;
    std::fs::write(&segment, bytes).unwrap();
    let (code, out) =
        install.mconnect(&["restore", "--config", "broker.toml", "--from", "damaged"]);
    assert_eq!(code, 64, "{out}");
    assert!(out.contains("does not match the manifest"), "{out}");
    assert!(!install.audit_dir().join("segments").exists());
    assert!(!install.state_file().exists());
    let (code, out) = install.mconnect(&["restore", "--config", "broker.toml", "--from", "backup"]);
    assert_eq!(code, 0, "{out}");
    assert!(!install.audit_dir().join("index.redb").exists());
    let (code, out) = install.verify_audit("pki/broker.cert.pem");
    assert_eq!(code, 0, "{out}");

    // The restored broker knows its participants and finds the calls made
    // before the backup (the indexes are rebuilt at start).
    let broker = install.serve(&[]);
    assert_participants(&install, &broker, 3).await;
    let (status, body) = admin_get(
        &install.admin(&broker, "cnpdcp-audit"),
        "/v1/audit/records?client=apl-cahul&limit=100",
        Some((AUDITOR_BASIS, AUDITOR_REASON)),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let found: Vec<(u64, &str)> = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["seq"].as_u64().unwrap(),
                i["record"]["exchange_id"].as_str().unwrap(),
            )
        })
        .collect();
    for kept in &before {
        assert!(
            found.contains(&(kept.seq, kept.exchange_id.as_str())),
            "{} at {} not found: {body}",
            kept.exchange_id,
            kept.seq
        );
    }
    // It serves again, after the restored records.
    let after = call(&install.consumer(&broker)).await;
    assert!(after.seq > before[1].seq);
    broker.stop();
    let (code, out) = install.verify_audit("pki/broker.cert.pem");
    assert_eq!(code, 0, "{out}");
}

#[test]
fn a_private_key_others_can_read_is_refused() {
    let install = Install::new();
    let key = install.root().join("pki/broker.key.pem");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
    let (code, stderr) = install.serve_refused(&[]);
    assert_eq!(code, 64, "{stderr}");
    assert!(
        stderr.contains("broker.key.pem") && stderr.contains("chmod 600"),
        "{stderr}"
    );
    assert!(
        !install.state_file().exists(),
        "refused before opening anything"
    );
}

/// Every key a broker.toml lists, commented out or not, as `section.key`.
fn listed_keys(text: &str) -> Vec<String> {
    let mut section = String::new();
    let mut keys = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_string();
            continue;
        }
        let line = line.trim_start_matches('#').trim_start();
        if let Some((key, _)) = line.split_once(" = ")
            && !key.is_empty()
            && key.chars().all(|c| c.is_ascii_lowercase() || c == '_')
        {
            keys.push(format!("{section}.{key}"));
        }
    }
    keys.sort();
    keys.dedup();
    keys
}

#[test]
fn the_production_config_lists_every_key_of_the_example_and_loads() {
    let deploy = std::fs::read_to_string(support::repo().join("deploy/broker.toml")).unwrap();
    let example = std::fs::read_to_string(support::repo().join("examples/broker.toml")).unwrap();
    let keys = listed_keys(&deploy);
    assert_eq!(keys, listed_keys(&example));
    assert!(keys.len() > 30, "{keys:?}");
    assert!(keys.contains(&"tls.previous_certs".to_string()));
    // Commented key by key: a comment line right above every key.
    let lines: Vec<&str> = deploy.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        if !line.starts_with('#') && line.contains(" = ") {
            assert!(
                lines[..i]
                    .iter()
                    .rev()
                    .take_while(|l| l.starts_with('#'))
                    .any(|l| l.len() > 2 && !l.contains(" = ")),
                "deploy/broker.toml: `{line}` has no comment of its own"
            );
        }
    }

    // It loads once its paths exist (here under a temporary root).
    let root = tempfile::tempdir().unwrap();
    let etc = root.path().join("etc/");
    let var = root.path().join("var/");
    let text = deploy
        .replace("/etc/mconnect/", etc.to_str().unwrap())
        .replace("/var/lib/mconnect/", var.to_str().unwrap());
    for f in [
        "tls/ca.cert.pem",
        "tls/broker.cert.pem",
        "tls/broker.key.pem",
    ] {
        std::fs::create_dir_all(etc.join(f).parent().unwrap()).unwrap();
        std::fs::write(etc.join(f), "x").unwrap();
    }
    for d in ["catalog", "policies"] {
        std::fs::create_dir_all(etc.join(d)).unwrap();
    }
    let config = mconnect::config::Config::from_toml(&text, &etc).unwrap();
    assert!(matches!(
        &config.state,
        mconnect::store::Backend::Embedded(p) if p.starts_with(&var)
    ));
    assert!(config.audit_dir.starts_with(&var));

    // The unit gives the broker enough file descriptors for every listener.
    let unit =
        std::fs::read_to_string(support::repo().join("deploy/systemd/mconnect.service")).unwrap();
    let limit: usize = unit
        .lines()
        .find_map(|l| l.strip_prefix("LimitNOFILE="))
        .unwrap()
        .parse()
        .unwrap();
    assert!(limit > 3 * config.server.max_connections + 1024, "{limit}");
}

#[test]
fn the_systemd_unit_runs_the_broker_hardened() {
    let unit =
        std::fs::read_to_string(support::repo().join("deploy/systemd/mconnect.service")).unwrap();
    let has = |line: &str| unit.lines().any(|l| l == line);
    for line in [
        "User=mconnect",
        "ExecStart=/usr/bin/mconnect serve --config /etc/mconnect/broker.toml",
        "Restart=on-failure",
        "RestartPreventExitStatus=64",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "PrivateTmp=yes",
        "ReadWritePaths=/var/lib/mconnect",
    ] {
        assert!(has(line), "the unit lacks `{line}`");
    }
    // The state and the audit log of deploy/broker.toml are writable under
    // ProtectSystem=strict.
    let deploy = std::fs::read_to_string(support::repo().join("deploy/broker.toml")).unwrap();
    for key in ["state = \"", "audit_dir = \"", "body_key_file = \""] {
        let path = deploy
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap()
            .trim_end_matches('"');
        assert!(path.starts_with("/var/lib/mconnect/"), "{key}{path}");
    }
    // systemd's own check, where systemd is installed, with this build's
    // binary in place of /usr/bin/mconnect.
    let Ok(analyze) = which("systemd-analyze") else {
        eprintln!("systemd-analyze not installed: the unit's syntax is not checked");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("mconnect.service");
    std::fs::write(
        &copy,
        unit.replace(
            "/usr/bin/mconnect",
            support::mconnect_bin().to_str().unwrap(),
        ),
    )
    .unwrap();
    let out = Command::new(analyze)
        .arg("verify")
        .arg(&copy)
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn which(name: &str) -> Result<PathBuf, ()> {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or(())
}
