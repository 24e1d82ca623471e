//! Issue 11 item 9: readiness tells the truth (PROTOCOL.md section 8). The
//! operations listener answers `/healthz`, `/readyz` and `/metrics` over plain
//! HTTP without a client certificate; `/readyz` reports each probe it ran and
//! turns 503 when the audit log has really failed closed (its disk full); the
//! admin listener answers the same.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use http::{Method, StatusCode};
use mconnect::config::Config;
use mconnect_sdk::SandboxManifest;
use support::plain_get;

fn ops_addr(url: &str) -> SocketAddr {
    url.strip_prefix("http://").unwrap().parse().unwrap()
}

async fn admin_readyz(dir: &Path, admin_url: &str) -> (StatusCode, serde_json::Value) {
    let admin = support::admin_client(dir, admin_url, "apl-cahul");
    let request = admin.plain(Method::GET, "/readyz", None).unwrap();
    admin.send(request).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_over_plain_http_reports_each_probe() {
    let bus = support::Bus::start().await;
    let written: SandboxManifest = serde_json::from_str(
        &std::fs::read_to_string(bus.dir.path().join("sandbox.json")).unwrap(),
    )
    .unwrap();
    assert!(
        written.broker.ops_url.starts_with("http://127.0.0.1:"),
        "{}",
        written.broker.ops_url
    );
    let addr = ops_addr(&written.broker.ops_url);
    assert_eq!(addr, bus.sandbox.broker.ops_addr());

    let (status, body) = plain_get(addr, "/healthz").await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    let (status, body) = plain_get(addr, "/readyz").await;
    assert_eq!(status, 200, "{body}");
    let ready: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ready["ready"], true);
    for probe in ["store", "audit", "keys"] {
        assert_eq!(ready[probe], true, "{probe}: {body}");
        assert_eq!(ready["probes"][probe]["ok"], true, "{probe}: {body}");
    }
    let detail = |p: &str| ready["probes"][p]["detail"].as_str().unwrap().to_string();
    assert!(
        detail("store").contains("read the participants table"),
        "{body}"
    );
    assert!(
        detail("audit").contains("signed and verified the tree head"),
        "{body}"
    );
    assert!(
        detail("keys").contains("verified it with its certificate"),
        "{body}"
    );

    let (status, metrics) = plain_get(addr, "/metrics").await;
    assert_eq!(status, 200);
    assert!(metrics.contains("mconnect_audit_failed 0\n"), "{metrics}");
    assert!(
        metrics.contains("mconnect_connections_open{listener=\"data\"}"),
        "{metrics}"
    );

    // Only the three endpoints: the admin API stays behind mTLS.
    let (status, body) = plain_get(addr, "/v1/participants").await;
    assert_eq!(status, 404);
    assert!(body.contains("\"code\":\"ops.not_found\""), "{body}");

    // The admin listener answers the same document.
    let (status, admin) =
        admin_readyz(bus.dir.path(), &bus.sandbox.manifest.broker.admin_url).await;
    assert_eq!(status, StatusCode::OK);
    let keys = |v: &serde_json::Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(&admin), keys(&ready));
    assert_eq!(admin["probes"]["keys"]["ok"], true);
    bus.stop().await;
}

/// Unmounts the test's tmpfs however the test ends.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_turns_503_when_the_audit_log_fails_closed() {
    let dir = support::Bus::start().await.stop().await;
    // A real fault: the audit log on a small tmpfs that is then filled up.
    let audit_fs = dir.path().join("audit-fs");
    std::fs::create_dir_all(&audit_fs).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=8m", "tmpfs"])
        .arg(&audit_fs)
        .status()
        .unwrap();
    assert!(
        mounted.success(),
        "this test mounts a tmpfs and must run as root"
    );
    let _mount = Mount(audit_fs.clone());

    let base = std::fs::read_to_string(dir.path().join("broker.toml")).unwrap();
    assert!(base.contains("audit_dir = \"audit\""));
    let text = base.replace("audit_dir = \"audit\"", "audit_dir = \"audit-fs\"");
    let config = Config::from_toml(&text, dir.path()).unwrap();
    let broker = mconnect::app::start(config).await.expect("broker starts");
    let ops = broker.ops_addr();
    let (status, body) = plain_get(ops, "/readyz").await;
    assert_eq!(status, 200, "{body}");

    // Fill the file system (bounded: 8 MiB in 64 KiB steps, with room to spare).
    let mut filler = std::fs::File::create(audit_fs.join("filler")).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    let mut full = false;
    for _ in 0..1024 {
        if std::io::Write::write_all(&mut filler, &chunk).is_err() {
            full = true;
            break;
        }
    }
    assert!(full, "the tmpfs did not fill up");

    // Signed calls now cannot be audited: the log fails closed.
    let mut manifest: SandboxManifest =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("sandbox.json")).unwrap())
            .unwrap();
    manifest.broker.data_url = format!("https://127.0.0.1:{}", broker.data_addr().port());
    let t = manifest.tries[0].clone();
    let consumer = manifest.consumer(dir.path(), &t.client).unwrap();
    let mut last = None;
    for _ in 0..20 {
        let outcome = consumer
            .call(&support::get(
                &t.path,
                &t.basis,
                &t.reason,
                t.subject.as_deref(),
            ))
            .await
            .unwrap();
        last = Some((outcome.status, support::code(&outcome)));
        if outcome.status == StatusCode::SERVICE_UNAVAILABLE {
            break;
        }
    }
    // A full disk stops new work one of two ways: the free-space watermark
    // (checked before each batch) or a failed write that closes the log.
    // Either way exchanges are refused and readiness must say so.
    let audit = broker.broker.audit();
    let failed = audit.failure().is_some();
    assert!(
        failed || audit.space().below_watermark,
        "the audit log takes work on a full disk: {last:?}"
    );
    assert_eq!(
        last,
        Some((
            StatusCode::SERVICE_UNAVAILABLE,
            "audit.unavailable".to_string()
        ))
    );

    let (status, body) = plain_get(ops, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    let ready: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ready["ready"], false);
    assert_eq!(ready["audit"], false);
    assert_eq!(ready["probes"]["audit"]["ok"], false);
    let detail = ready["probes"]["audit"]["detail"].as_str().unwrap();
    assert!(
        detail.contains("failed closed") || detail.contains("watermark"),
        "{body}"
    );
    // The other probes still say what they found.
    assert_eq!(ready["store"], true, "{body}");
    assert_eq!(ready["keys"], true, "{body}");
    let (_, metrics) = plain_get(ops, "/metrics").await;
    assert!(metrics.contains("mconnect_audit_failed "), "{metrics}");

    // The admin listener says the same.
    let admin_url = format!("https://127.0.0.1:{}", broker.admin_addr().port());
    let (status, admin) = admin_readyz(dir.path(), &admin_url).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(admin["probes"]["audit"]["ok"], false);

    drop(filler);
    broker.shutdown().await;
}
