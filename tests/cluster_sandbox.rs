//! `mconnect sandbox --cluster` (issue 15, deliverables 6 to 8): the real
//! binary starts PostgreSQL, two brokers, nginx in stream mode in front of
//! them, the registers, the adapters and the portal, and writes the
//! `cluster` block of sandbox.json (PROTOCOL.md section 9). Through the
//! load balancer every `try` call succeeds with a receipt that verifies,
//! and both brokers answer some; a change made on broker a's admin API is
//! honoured by broker b within a second; broker a killed with SIGKILL under
//! a steady load of signed calls costs at most the calls in flight on it
//! (the failover window is measured, at most 5 s), broker b keeps serving,
//! and the sandbox's supervisor starts a again and puts it back in the load
//! balancer; a's shipping is held back (its position row locked) from 1 s
//! into the load until the kill, so a dies with receipted records not yet
//! in PostgreSQL; every call of that load that got a verified receipt is,
//! once a is back and shipping caught up, in the log of the broker that signed
//! it (at the receipt's audit seq, read through that broker's admin API)
//! and in PostgreSQL's shipped copy (same broker id, seq and exchange id),
//! and `mconnect audit verify --shipped` passes for both brokers; broker b
//! hung (SIGSTOP), which nginx's passive checks cannot
//! see, is taken out by the supervisor's `/readyz` probes. Killed itself with SIGKILL, the sandbox takes every process
//! along (PostgreSQL, nginx's master and workers, the brokers), and it
//! starts again on the same directory.
//!
//! Real parts only: Debian's postgresql and nginx with libnginx-mod-stream
//! (tests/run.sh installs them), the workspace's binaries, mutual TLS on
//! 127.0.0.1. Every wait and loop is bounded.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use mconnect::connect::client::AdminClient;
use mconnect_cli::sandbox::SANDBOX_CALLING_USER;
use mconnect_sdk::{Call, CallOutcome, Consumer, ManifestTry, Receipt, SandboxManifest};
use serde_json::{Value, json};

/// How long a debug build's cluster may take to start.
const START_LIMIT: Duration = Duration::from_secs(240);
/// How soon a change on one broker must be in force on the other.
const FOLLOW_WITHIN: Duration = Duration::from_secs(1);
/// The longest failover window accepted.
const FAILOVER_LIMIT: Duration = Duration::from_secs(5);
/// The load: callers, each its own client (own connection), one call every
/// PACE, for LOAD_FOR; broker a is killed KILL_AT into it.
const CALLERS: usize = 4;
const PACE: Duration = Duration::from_millis(200);
const LOAD_FOR: Duration = Duration::from_secs(15);
const KILL_AT: Duration = Duration::from_secs(4);
/// From this far into the load until the kill, a's shipping is held back
/// (its position row locked), so a dies with receipted records unshipped.
const HOLD_SHIPPING_AT: Duration = Duration::from_secs(1);
/// A call that has not answered in this long counts as failed.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long both brokers may take to ship their logs once a is back.
const SHIPPED_WITHIN: Duration = Duration::from_secs(30);
/// The sandbox auditor's legal basis and purpose on `mconnect/audit-log`.
const AUDITOR: &str = "cnpdcp-audit";
const AUDITOR_BASIS: &str = "md-law-133-2011-art-27";
const AUDITOR_REASON: &str = "supervision-of-personal-data-processing";

/// The sandbox process, its standard error collected line by line with the
/// time each arrived; killed with SIGKILL when dropped.
struct Sandbox {
    child: Child,
    dir: PathBuf,
    lines: Arc<Mutex<Vec<(Instant, String)>>>,
}

impl Sandbox {
    fn start(dir: &Path, no_wait: bool) -> Sandbox {
        let mut command = Command::new(support::mconnect_bin());
        command
            .args(["sandbox", "--cluster", "--data-port", "0", "--dir"])
            .arg(dir)
            .arg("--examples-dir")
            .arg(support::examples_dir())
            .current_dir(std::env::temp_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if no_wait {
            command.arg("--no-wait");
        }
        let mut child = command.spawn().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || for _ in std::io::BufReader::new(stdout).lines() {});
        let stderr = child.stderr.take().unwrap();
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push((Instant::now(), line));
            }
        });
        Sandbox {
            child,
            dir: dir.to_path_buf(),
            lines,
        }
    }

    /// Waits for sandbox.json (written once everything runs).
    fn manifest(&mut self) -> SandboxManifest {
        let started = Instant::now();
        loop {
            if let Ok(m) = SandboxManifest::read(&self.dir) {
                return m;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("the sandbox exited ({status}):\n{}", self.log());
            }
            assert!(
                started.elapsed() < START_LIMIT,
                "no sandbox.json within {START_LIMIT:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log(&self) -> String {
        let lines = self.lines.lock().unwrap();
        lines
            .iter()
            .map(|(_, l)| l.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// When the supervisor first said a line containing `what`, after `since`.
    fn said(&self, what: &str, since: Instant) -> Option<Instant> {
        let lines = self.lines.lock().unwrap();
        lines
            .iter()
            .find(|(at, l)| *at >= since && l.contains(what))
            .map(|(at, _)| *at)
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether process `pid` exists and is not a zombie.
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        let state = s
            .rfind(')')
            .and_then(|i| s[i + 2..].chars().next())
            .unwrap_or('X');
        state != 'Z' && state != 'X'
    })
}

/// The processes whose parent is `pid`.
fn children_of(pid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(child) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
            continue;
        };
        if rest.split_whitespace().nth(1) == Some(pid.to_string().as_str()) {
            found.push(child);
        }
    }
    found
}

/// A plain HTTP GET on an operations listener: status and body.
fn ops_get(base: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let addr = base.trim_start_matches("http://");
    let Ok(mut tcp) = std::net::TcpStream::connect(addr) else {
        return (0, String::new());
    };
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    tcp.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .unwrap();
    let mut out = String::new();
    let _ = tcp.read_to_string(&mut out);
    let status = out.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = out.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, body.to_string())
}

/// The exchanges a broker counted (`mconnect_exchanges_total`, all labels).
fn exchanges(ops_url: &str) -> f64 {
    let (status, body) = ops_get(ops_url, "/metrics");
    assert_eq!(status, 200, "{body}");
    body.lines()
        .filter(|l| l.starts_with("mconnect_exchanges_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn call_of(entry: &ManifestTry) -> Call {
    entry.call(SANDBOX_CALLING_USER).unwrap()
}

/// A call signed for the load balancer's authority but sent to one broker
/// directly (as the load balancer would pass it).
async fn call_direct(
    consumer: &Consumer,
    call: &Call,
    broker_data_url: &str,
) -> Option<CallOutcome> {
    let mut request = consumer.build(call).unwrap();
    let direct = format!("{broker_data_url}{}", call.path);
    *request.uri_mut() = direct.parse().unwrap();
    tokio::time::timeout(CALL_TIMEOUT, consumer.send(request))
        .await
        .ok()
        .and_then(Result::ok)
}

/// The pid sandbox.json names for broker `index` now.
fn rewritten_pid(dir: &Path, index: usize) -> u32 {
    SandboxManifest::read(dir).unwrap().cluster.unwrap().brokers[index].pid
}

fn fingerprint(pem_file: &Path) -> String {
    let pem = std::fs::read_to_string(pem_file).unwrap();
    let der = mconnect_sdk::parse_certs(&pem).unwrap();
    mconnect::crypto::certificate_fingerprint(&der[0])
}

/// One call of the load: when it started and ended, and how it went.
struct Outcome {
    started: Instant,
    ended: Instant,
    ok: bool,
    keyid: Option<String>,
    /// The verified receipt of a call that succeeded.
    receipt: Option<Receipt>,
    error: String,
}

/// The broker id `name`'s audit log was shipped under (its `broker-id` file).
fn broker_id(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(
        dir.join(format!("audit-{name}"))
            .join(mconnect::audit::ship::BROKER_ID_FILE),
    )
    .unwrap()
    .trim()
    .to_string()
}

/// Rows of the shipped copy: (broker id, seq) → exchange id, for `brokers`;
/// and each broker's shipping position.
async fn shipped_copy(
    url: &str,
    brokers: &[String],
) -> (BTreeMap<(String, u64), String>, BTreeMap<String, u64>) {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    let connection = tokio::spawn(connection);
    let mut rows = BTreeMap::new();
    for row in client
        .query(
            "SELECT broker_id, seq, exchange_id FROM audit_records \
             WHERE broker_id = ANY($1) AND event = 'exchange'",
            &[&brokers],
        )
        .await
        .unwrap()
    {
        let seq: i64 = row.get(1);
        let exchange: Option<String> = row.get(2);
        rows.insert(
            (row.get(0), u64::try_from(seq).unwrap()),
            exchange.unwrap_or_default(),
        );
    }
    let mut positions = BTreeMap::new();
    for row in client
        .query(
            "SELECT broker_id, shipped_seq FROM audit_shipping WHERE broker_id = ANY($1)",
            &[&brokers],
        )
        .await
        .unwrap()
    {
        let shipped: i64 = row.get(1);
        positions.insert(row.get(0), u64::try_from(shipped).unwrap());
    }
    drop(client);
    let _ = connection.await;
    (rows, positions)
}

/// Record `seq` of the log of the broker `auditor` reaches (its admin API),
/// read as the sandbox auditor: its exchange id, or why there is none.
async fn local_record(auditor: &AdminClient, seq: u64) -> Result<String, String> {
    let mut request = auditor
        .plain(Method::GET, &format!("/v1/audit/records/{seq}"), None)
        .unwrap();
    request
        .headers_mut()
        .insert("mconnect-call-basis", AUDITOR_BASIS.parse().unwrap());
    request
        .headers_mut()
        .insert("mconnect-call-reason", AUDITOR_REASON.parse().unwrap());
    let answer = tokio::time::timeout(CALL_TIMEOUT, auditor.send_full(request))
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| e.to_string())?;
    if answer.status != StatusCode::OK {
        return Err(format!("{} {}", answer.status, answer.body));
    }
    answer.body["record"]["exchange_id"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| format!("no exchange id: {}", answer.body))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_cluster_sandbox_balances_follows_changes_and_fails_over() {
    let tmp = tempfile::tempdir().unwrap();
    // The postgres user runs PostgreSQL and must reach its directory.
    let root = tmp.path().join("cluster");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::set_permissions(
        tmp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let dir = root.join("sandbox");
    let mut sandbox = Sandbox::start(&dir, false);
    let manifest = tokio::task::block_in_place(|| sandbox.manifest());

    // The cluster block: the load balancer is the broker consumers call.
    let cluster = manifest.cluster.clone().expect("a cluster block");
    assert_eq!(cluster.data_url, manifest.broker.data_url);
    assert!(
        cluster.postgres.starts_with("postgres://"),
        "{}",
        cluster.postgres
    );
    assert_eq!(cluster.brokers.len(), 2);
    let (a, b) = (cluster.brokers[0].clone(), cluster.brokers[1].clone());
    assert_eq!((a.id.as_str(), b.id.as_str()), ("a", "b"));
    assert_ne!(a.keyid, b.keyid, "each broker has its own key");
    for broker in [&a, &b] {
        assert_eq!(fingerprint(&dir.join(&broker.cert)), broker.keyid);
        assert!(alive(broker.pid), "broker {} pid {}", broker.id, broker.pid);
        let (status, body) = ops_get(&broker.ops_url, "/readyz");
        assert_eq!(status, 200, "broker {}: {body}", broker.id);
    }

    // Every try call through the load balancer, with a fresh client each
    // (so a fresh connection, which nginx hands out round robin).
    let mut signers = BTreeSet::new();
    for (i, entry) in manifest.tries.iter().enumerate() {
        let consumer = manifest.consumer(&dir, &entry.client).unwrap();
        let out = consumer.call(&call_of(entry)).await.unwrap();
        assert!(
            out.status.is_success(),
            "try {i} ({} as {}): {} {}",
            entry.service,
            entry.client,
            out.status,
            String::from_utf8_lossy(&out.body)
        );
        let receipt = out.receipt.as_ref().expect("a receipt that verifies");
        signers.insert(receipt.keyid.clone());
    }
    assert_eq!(
        signers,
        BTreeSet::from([a.keyid.clone(), b.keyid.clone()]),
        "both brokers answer through the load balancer"
    );
    let (served_a, served_b) = (exchanges(&a.ops_url), exchanges(&b.ops_url));
    println!(
        "MEASURED try list through the load balancer: {} calls, broker a counted {served_a} exchanges, b {served_b}",
        manifest.tries.len()
    );
    assert!(served_a > 0.0 && served_b > 0.0);

    // The load's call: MCabinet reads a person from the population register.
    let entry = manifest
        .tries
        .iter()
        .find(|t| t.client == "mcabinet" && t.service == "asp-rsp/person-by-idnp")
        .expect("a try entry for MCabinet's own-data lookup")
        .clone();

    // A change on broker a's admin API, honoured by broker b: the operator
    // removes MCabinet's certificate (b refuses its calls), then adds it
    // back (b takes them again).
    let pki = dir.join("pki");
    let operator = AdminClient::new(
        mconnect_sdk::Credentials::from_pki_dir(&pki, "age-operator", "").unwrap(),
        &a.admin_url,
    )
    .unwrap();
    let mcabinet = manifest.consumer(&dir, "mcabinet").unwrap();
    let call = call_of(&entry);
    let direct_ok = |out: &Option<CallOutcome>| {
        out.as_ref()
            .is_some_and(|o| o.status == StatusCode::OK && o.receipt.is_ok())
    };
    let before = call_direct(&mcabinet, &call, &b.data_url).await;
    assert!(direct_ok(&before), "b answers before the change");
    let fp = fingerprint(&pki.join("mcabinet.cert.pem"));
    let sent = Instant::now();
    let request = operator
        .plain(
            Method::DELETE,
            &format!("/v1/participants/mcabinet/certificates/{fp}"),
            None,
        )
        .unwrap();
    let (status, body) = operator.send(request).await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    let refused = loop {
        let out = call_direct(&mcabinet, &call, &b.data_url).await;
        if !direct_ok(&out) {
            break sent.elapsed();
        }
        assert!(sent.elapsed() < Duration::from_secs(10), "b still accepts");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    println!("MEASURED certificate removed on a, refused by b: {refused:?}");
    assert!(refused <= FOLLOW_WITHIN, "{refused:?}");
    let pem = std::fs::read_to_string(pki.join("mcabinet.cert.pem")).unwrap();
    let sent = Instant::now();
    let request = operator
        .plain(
            Method::POST,
            "/v1/participants/mcabinet/certificates",
            Some(&json!({ "pem": pem })),
        )
        .unwrap();
    let (status, body) = operator.send(request).await.unwrap();
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let accepted = loop {
        let out = call_direct(&mcabinet, &call, &b.data_url).await;
        if direct_ok(&out) {
            break sent.elapsed();
        }
        assert!(sent.elapsed() < Duration::from_secs(10), "b still refuses");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    println!("MEASURED certificate added back on a, accepted by b: {accepted:?}");
    assert!(accepted <= FOLLOW_WITHIN, "{accepted:?}");

    // The load, and broker a killed with SIGKILL in the middle of it.
    let load_start = Instant::now();
    let mut callers = Vec::new();
    for _ in 0..CALLERS {
        let consumer = manifest.consumer(&dir, "mcabinet").unwrap();
        let call = call.clone();
        callers.push(tokio::spawn(async move {
            let mut outcomes = Vec::new();
            let mut next = Instant::now();
            while load_start.elapsed() < LOAD_FOR {
                let started = Instant::now();
                let out = tokio::time::timeout(CALL_TIMEOUT, consumer.call(&call)).await;
                let ended = Instant::now();
                let (ok, receipt, error) = match out {
                    Ok(Ok(o)) if o.status == StatusCode::OK && o.receipt.is_ok() => {
                        (true, o.receipt.ok(), String::new())
                    }
                    Ok(Ok(o)) => (
                        false,
                        None,
                        format!("{} {}", o.status, String::from_utf8_lossy(&o.body)),
                    ),
                    Ok(Err(e)) => (false, None, e.to_string()),
                    Err(_) => (false, None, "timed out".into()),
                };
                outcomes.push(Outcome {
                    started,
                    ended,
                    ok,
                    keyid: receipt.as_ref().map(|r| r.keyid.clone()),
                    receipt,
                    error,
                });
                next += PACE;
                tokio::time::sleep_until(next.into()).await;
            }
            outcomes
        }));
    }
    // a's shipper is held back before the kill: a transaction of the test
    // locks a's row of audit_shipping, which every shipping batch locks
    // first (exchanges never wait for shipping, so a keeps answering).
    let a_id = broker_id(&dir, "a");
    tokio::time::sleep_until((load_start + HOLD_SHIPPING_AT).into()).await;
    let (holder, holder_connection) =
        tokio_postgres::connect(&cluster.postgres, tokio_postgres::NoTls)
            .await
            .unwrap();
    let holder_connection = tokio::spawn(holder_connection);
    holder.batch_execute("BEGIN").await.unwrap();
    let held = holder
        .query(
            "SELECT shipped_seq FROM audit_shipping WHERE broker_id = $1 FOR UPDATE",
            &[&a_id],
        )
        .await
        .unwrap();
    assert_eq!(held.len(), 1, "a has shipped before");
    tokio::time::sleep_until((load_start + KILL_AT).into()).await;
    let killed_at = Instant::now();
    let kill = Command::new("kill")
        .args(["-9", &a.pid.to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    // Where a's shipped copy stood when it died; then shipping is let go
    // (the dead process's waiting batch went with its connection).
    let a_shipped_at_kill = shipped_copy(&cluster.postgres, std::slice::from_ref(&a_id))
        .await
        .1
        .get(&a_id)
        .copied()
        .unwrap_or(0);
    holder.batch_execute("ROLLBACK").await.unwrap();
    drop(holder);
    let _ = holder_connection.await;
    let mut outcomes = Vec::new();
    for caller in callers {
        outcomes.extend(caller.await.unwrap());
    }
    outcomes.sort_by_key(|o| o.started);
    let before_kill: Vec<&Outcome> = outcomes.iter().filter(|o| o.ended < killed_at).collect();
    assert!(
        before_kill.iter().all(|o| o.ok),
        "calls failed before the kill: {:?}",
        before_kill
            .iter()
            .filter(|o| !o.ok)
            .map(|o| &o.error)
            .collect::<Vec<_>>()
    );
    let failed: Vec<&Outcome> = outcomes.iter().filter(|o| !o.ok).collect();
    let window = failed
        .iter()
        .map(|o| o.ended.saturating_duration_since(killed_at))
        .max()
        .unwrap_or_default();
    println!(
        "MEASURED failover under load ({CALLERS} callers, one call each {PACE:?}, {:?}): {} calls, {} failed, failover window {window:?} after SIGKILL of broker a; errors: {:?}",
        LOAD_FOR,
        outcomes.len(),
        failed.len(),
        failed.iter().map(|o| o.error.as_str()).collect::<Vec<_>>()
    );
    assert!(window <= FAILOVER_LIMIT, "{window:?}");
    // B kept serving: every call that started after the window succeeded,
    // those before a's return signed by b.
    let after: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| o.started > killed_at + window)
        .collect();
    assert!(after.len() > 20, "{} calls after the window", after.len());
    assert!(after.iter().all(|o| o.ok));
    assert!(
        after
            .iter()
            .any(|o| o.keyid.as_deref() == Some(b.keyid.as_str()))
    );

    // The supervisor saw the exit, took a out, started it again and put it
    // back once ready; sandbox.json names the new process.
    let back = loop {
        if let Some(at) = sandbox.said("broker a is ready; back in the load balancer", killed_at) {
            break at;
        }
        assert!(
            killed_at.elapsed() < Duration::from_secs(60),
            "broker a not back within 60 s:\n{}",
            sandbox.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let noticed = sandbox.said("broker a exited", killed_at).unwrap();
    println!(
        "MEASURED broker a's exit noticed by the supervisor after {:?}, back in the load balancer after {:?}",
        noticed - killed_at,
        back - killed_at
    );
    let rewritten = SandboxManifest::read(&dir).unwrap();
    let a_again = rewritten.cluster.unwrap().brokers[0].clone();
    assert_ne!(a_again.pid, a.pid);
    assert!(alive(a_again.pid));
    assert_eq!(ops_get(&a_again.ops_url, "/readyz").0, 200);
    // New connections reach it again.
    let mut signers = BTreeSet::new();
    for _ in 0..6 {
        let consumer = manifest.consumer(&dir, "mcabinet").unwrap();
        let out = consumer.call(&call).await.unwrap();
        assert_eq!(out.status, StatusCode::OK);
        signers.insert(out.receipt.unwrap().keyid);
    }
    assert!(
        signers.contains(&a.keyid),
        "a serves again through the load balancer"
    );

    // No receipted exchange of the load is lost: each is in the log of the
    // broker that signed its receipt, at the receipt's seq, and, once both
    // have shipped past it, in PostgreSQL's copy under that broker's id and
    // seq; and each broker's copy verifies against its log.
    let names = [("a", &a), ("b", &b)];
    let ids: Vec<String> = names.iter().map(|(n, _)| broker_id(&dir, n)).collect();
    assert_ne!(ids[0], ids[1]);
    let mut receipted: Vec<(usize, u64, String)> = Vec::new();
    for o in outcomes.iter().filter(|o| o.ok) {
        let r = o.receipt.as_ref().unwrap();
        let index = names
            .iter()
            .position(|(_, broker)| broker.keyid == r.keyid)
            .unwrap_or_else(|| panic!("a receipt signed by neither broker: {}", r.keyid));
        let seq = r.audit_seq.expect("a receipt names its audit seq");
        assert!(!r.exchange_id.is_empty());
        receipted.push((index, seq, r.exchange_id.clone()));
    }
    let distinct: BTreeSet<(usize, u64)> = receipted.iter().map(|(i, s, _)| (*i, *s)).collect();
    assert_eq!(
        distinct.len(),
        receipted.len(),
        "one audit seq per exchange"
    );
    let highest: Vec<Option<u64>> = (0..2)
        .map(|i| receipted.iter().filter(|r| r.0 == i).map(|r| r.1).max())
        .collect();
    let shipping_from = Instant::now();
    let (copy, positions) = loop {
        let (copy, positions) = shipped_copy(&cluster.postgres, &ids).await;
        let caught_up = (0..2)
            .all(|i| highest[i].is_none_or(|h| positions.get(&ids[i]).is_some_and(|p| *p > h)));
        if caught_up {
            break (copy, positions);
        }
        assert!(
            shipping_from.elapsed() < SHIPPED_WITHIN,
            "not shipped within {SHIPPED_WITHIN:?}: positions {positions:?}, receipted up to {highest:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let caught_up = shipping_from.elapsed();
    let lb_back = back - killed_at;
    let a_receipted_after_position = receipted
        .iter()
        .filter(|r| r.0 == 0 && r.1 >= a_shipped_at_kill)
        .count();
    assert!(
        a_receipted_after_position > 0,
        "a died with every receipted record shipped: the hold did not hold"
    );
    let mut in_log = [0usize; 2];
    let mut missing = Vec::new();
    for (i, (name, broker)) in names.iter().enumerate() {
        let admin_url = if *name == "a" {
            a_again.admin_url.clone()
        } else {
            broker.admin_url.clone()
        };
        let auditor = support::admin_client(&dir, &admin_url, AUDITOR);
        for (_, seq, exchange) in receipted.iter().filter(|r| r.0 == i) {
            match local_record(&auditor, *seq).await {
                Ok(found) if &found == exchange => in_log[i] += 1,
                Ok(found) => missing.push(format!(
                    "broker {name} log seq {seq}: exchange {found}, receipt {exchange}"
                )),
                Err(e) => missing.push(format!("broker {name} log seq {seq}: {e}")),
            }
            match copy.get(&(ids[i].clone(), *seq)) {
                Some(found) if found == exchange => {}
                Some(found) => missing.push(format!(
                    "copy {} seq {seq}: exchange {found}, receipt {exchange}",
                    ids[i]
                )),
                None => missing.push(format!("copy {} seq {seq}: no row", ids[i])),
            }
        }
    }
    assert!(missing.is_empty(), "receipted exchanges lost: {missing:?}");
    println!(
        "MEASURED no receipted exchange lost: {} receipts ({} signed by a, {} by b), each in its broker's log and in PostgreSQL's copy; a's copy stood at {a_shipped_at_kill} records at the kill ({a_receipted_after_position} receipted records of a beyond it); a back in the load balancer {lb_back:?} after the kill, shipping positions {positions:?} covered every receipt {caught_up:?} after the check began",
        receipted.len(),
        in_log[0],
        in_log[1],
    );
    for (name, _) in names {
        let out = Command::new(support::mconnect_bin())
            .args(["audit", "verify", "--quiet", "--dir"])
            .arg(dir.join(format!("audit-{name}")))
            .arg("--cert")
            .arg(dir.join(format!("pki/broker-{name}.cert.pem")))
            .arg("--shipped")
            .arg(&cluster.postgres)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "audit verify --shipped of broker {name}: {}\n{text}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains("shipped result  : OK"), "{text}");
        println!(
            "MEASURED audit verify --shipped, broker {name}: {}",
            text.lines()
                .filter(|l| l.starts_with("records checked") || l.starts_with("rows compared"))
                .collect::<Vec<_>>()
                .join("; ")
        );
    }

    // A broker that hangs (SIGSTOP: its ports still accept connections,
    // which nginx's passive checks take for health) is found by the active
    // check, /readyz unanswered, and taken out: new connections all reach a.
    let b_pid = rewritten_pid(&dir, 1);
    let stopped_at = Instant::now();
    assert!(
        Command::new("kill")
            .args(["-STOP", &b_pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
    let out_at = loop {
        if let Some(at) = sandbox.said("broker b is not ready", stopped_at) {
            break at;
        }
        assert!(
            stopped_at.elapsed() < Duration::from_secs(10),
            "{}",
            sandbox.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    println!(
        "MEASURED hung broker b (SIGSTOP) out of the load balancer after {:?}",
        out_at - stopped_at
    );
    // nginx has the reload a moment after the line.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..6 {
        let consumer = manifest.consumer(&dir, "mcabinet").unwrap();
        let out = tokio::time::timeout(CALL_TIMEOUT, consumer.call(&call))
            .await
            .expect("no call goes to the hung broker")
            .unwrap();
        assert_eq!(out.status, StatusCode::OK);
        assert_eq!(out.receipt.unwrap().keyid, a.keyid);
    }
    let continued_at = Instant::now();
    assert!(
        Command::new("kill")
            .args(["-CONT", &b_pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
    loop {
        if sandbox
            .said("broker b is ready; back in the load balancer", continued_at)
            .is_some()
        {
            break;
        }
        assert!(
            continued_at.elapsed() < Duration::from_secs(10),
            "{}",
            sandbox.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // SIGKILL of the sandbox takes everything along: the brokers,
    // nginx's master and workers, PostgreSQL, registers, adapters, portal.
    let file: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("sandbox.json")).unwrap()).unwrap();
    let mut pids: Vec<u32> = file["processes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["pid"].as_u64().unwrap() as u32)
        .collect();
    let nginx = file["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["program"] == "nginx")
        .unwrap()["pid"]
        .as_u64()
        .unwrap() as u32;
    let workers = children_of(nginx);
    assert!(!workers.is_empty(), "nginx has workers");
    pids.extend(workers);
    assert!(pids.iter().all(|p| alive(*p)));
    sandbox.child.kill().unwrap();
    sandbox.child.wait().unwrap();
    let killed = Instant::now();
    while pids.iter().any(|p| alive(*p)) {
        assert!(
            killed.elapsed() < Duration::from_secs(20),
            "still running 20 s after the sandbox was killed: {:?}",
            pids.iter().filter(|p| alive(**p)).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "MEASURED every process of the killed cluster sandbox gone after {:?}",
        killed.elapsed()
    );
    drop(sandbox);

    // It starts again on the same directory (the database and the audit
    // logs kept), and stops cleanly.
    let mut again = Sandbox::start(&dir, true);
    let started = Instant::now();
    let status = loop {
        if let Some(status) = again.child.try_wait().unwrap() {
            break status;
        }
        assert!(started.elapsed() < START_LIMIT, "{}", again.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(status.success(), "the second start: {}", again.log());
    let second = SandboxManifest::read(&dir).unwrap();
    assert_eq!(second.cluster.unwrap().brokers.len(), 2);
    for name in ["audit-a", "audit-b"] {
        assert!(dir.join(name).is_dir());
    }
}
