//! The portal served on 127.0.0.1 by the SDK's server, and a plain HTTP/1.1
//! client that shows every header the browser would get.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use mconnect::catalog::Catalog;
use mconnect_portal::Portal;
use mconnect_portal::session::Official;
use mconnect_sdk::server::{ListenerStats, RunningServer, ServerLimits, serve_with};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub struct Page {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Page {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn headers_named(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// The portal on the shipped catalog, with `officials` for the
/// development sign-in, on 127.0.0.1.
pub async fn start_with(officials: Vec<Official>) -> (RunningServer, Arc<Portal>) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let catalog = Arc::new(Catalog::load_dir(&root.join("catalog")).unwrap());
    let portal = Arc::new(Portal::new(catalog).with_dev_sign_in(officials));
    let served = portal.clone();
    let server = serve_with(
        "127.0.0.1:0".parse().unwrap(),
        None,
        ServerLimits::default(),
        Arc::new(ListenerStats::default()),
        move |_peer, request| {
            let portal = served.clone();
            async move { portal.handle(request).await }
        },
    )
    .await
    .unwrap();
    (server, portal)
}

/// The portal with `officials` and its own audit log in `dir` (signed
/// with a key of a fresh development CA); returns the log too.
pub async fn start_audited(
    officials: Vec<Official>,
    dir: &std::path::Path,
) -> (RunningServer, mconnect_portal::audit::PortalAudit) {
    let ca = mconnect::pki::DevCa::generate("test CA").unwrap();
    let own = ca
        .issue(
            "mconnect-portal",
            "1003600000017",
            mconnect::pki::KeyType::Ed25519,
        )
        .unwrap();
    let audit =
        mconnect_portal::audit::PortalAudit::open(dir, &own.cert_pem, &own.key_pem).unwrap();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let catalog = Arc::new(Catalog::load_dir(&root.join("catalog")).unwrap());
    let portal = Arc::new(
        Portal::new(catalog)
            .with_dev_sign_in(officials)
            .with_audit(audit.clone()),
    );
    let server = serve_with(
        "127.0.0.1:0".parse().unwrap(),
        None,
        ServerLimits::default(),
        Arc::new(ListenerStats::default()),
        move |_peer, request| {
            let portal = portal.clone();
            async move { portal.handle(request).await }
        },
    )
    .await
    .unwrap();
    (server, audit)
}

/// The portal with no sign-in.
pub async fn start() -> RunningServer {
    start_with(Vec::new()).await.0
}

/// One HTTP/1.1 request on its own connection, read to the end.
pub async fn fetch(addr: SocketAddr, method: &str, target: &str, headers: &[(&str, &str)]) -> Page {
    send(addr, method, target, headers, "").await
}

/// One request with `body` on its own connection, read to the end.
pub async fn send(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Page {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut request =
        format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        stream.read_to_end(&mut raw),
    )
    .await
    .unwrap()
    .unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    Page {
        status,
        headers,
        body: body.to_owned(),
    }
}

/// `mconnect-portal` on the shipped catalog with `args`: its exit code and
/// what it said on stderr.
pub fn portal_command(args: &[&str]) -> (i32, String) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mconnect-portal"))
        .arg("--catalog")
        .arg(root.join("catalog"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
