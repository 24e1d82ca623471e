//! Memory per idle connection (issue 17: under 16 KB): the broker process's
//! resident memory while it holds many idle mTLS connections on its data
//! listener, HTTP/1.1 and HTTP/2, divided by their number.
//!
//! The broker is the release `mconnect` binary (mimalloc, as deployed), run
//! as its own process so that its resident memory is not mixed with the
//! clients': a sandbox is made with `mconnect sandbox --no-wait` (PKI,
//! participants, state), then `mconnect serve` runs on its `broker.toml`
//! with a fixed data port and `[server]` limits wide enough for the
//! measurement (idle timeout of 10 minutes and header-read timeout of 5, the largest allowed, caps above the
//! count), so no connection is closed while it is measured.
//!
//! For each protocol the harness opens `--count` connections from one
//! certificate (hyper's client over tokio-rustls, ALPN `http/1.1` or `h2`;
//! its connection tasks answer HTTP/2 pings), in two states: right after the
//! TLS handshake (and, for HTTP/2, the connection preface and SETTINGS), and
//! after one request answered on each (an unsigned `GET /r1/…`, refused with
//! 401, so the server's buffers are as a served connection leaves them).
//! Each of the four measurements has a broker process of its own, since
//! memory a process has freed stays resident (mimalloc keeps it for reuse)
//! and would be reused by the next measurement's connections. The broker's
//! resident memory (`/proc/PID/statm`) is read after a warm-up of
//! [`WARM_UP`] connections of the same kind (opened and closed, so one-off
//! allocations of the runtime and caches are not counted per connection,
//! and few enough that what they free does not hide much of the
//! measurement), after a pause once all are open, and again after closing
//! them all. Resident memory counts the pages touched, not what was
//! allocated (though memory freed by one allocation and reused by another
//! stays resident, and a touched transparent huge page counts whole: the
//! log line from `/proc/PID/smaps_rollup` says how much of it is huge
//! pages; `MIMALLOC_ALLOW_THP=0` in the environment turns them off for the
//! broker).
//!
//! The result is a markdown table on stdout. Run:
//! `cargo build --release --workspace --bins --examples && cargo bench --bench connections`
//! (the sandbox step runs the example registers and adapters found beside
//! the binary; `-- --count 2000 --binary target/release/mconnect`, and
//! `--serve-binary` for another build of the broker copied aside).

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;

#[path = "../tests/support/tls_client.rs"]
mod tls_client;
use tls_client::connector;

/// Connections opened and closed before each measurement.
const WARM_UP: usize = 16;

#[derive(Parser, Debug)]
struct Args {
    /// Idle connections held per measurement.
    #[arg(long, default_value_t = 2000)]
    count: usize,
    /// The `mconnect` binary (release build).
    #[arg(long, default_value = "target/release/mconnect")]
    binary: PathBuf,
    /// Seconds to wait after the last connection opened or closed before
    /// reading the broker's memory.
    #[arg(long, default_value_t = 2.0)]
    settle: f64,
    /// Connections opened at once.
    #[arg(long, default_value_t = 16)]
    parallel: usize,
    /// Only the measurements whose name contains this.
    #[arg(long, default_value = "")]
    only: String,
    /// The binary that runs `serve`, if not `--binary` (another build
    /// copied aside, for before/after comparisons; the sandbox is made with
    /// `--binary`, which finds the example registers beside it).
    #[arg(long)]
    serve_binary: Option<PathBuf>,
    // `cargo bench` passes `--bench`.
    #[arg(long, hide = true)]
    bench: bool,
}

/// One client connection the harness keeps open: the request sender and
/// the task driving the connection (dropping both closes it).
struct Held {
    sender: Sender,
    driver: JoinHandle<()>,
}

enum Sender {
    H1(hyper::client::conn::http1::SendRequest<Empty<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Empty<Bytes>>),
}

struct Broker {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = Args::parse();
    if !args.bench {
        // Under `cargo test --all-targets`: nothing to do.
        return;
    }
    let binary = std::fs::canonicalize(&args.binary).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; build it with `cargo build --release --workspace --bins --examples`",
            args.binary.display()
        )
    });
    let serve_binary = match &args.serve_binary {
        Some(other) => std::fs::canonicalize(other).expect("--serve-binary"),
        None => binary.clone(),
    };
    let work = tempfile::tempdir().expect("a scratch directory");
    let dir = work.path().join("sandbox");
    let config = make_sandbox(&binary, &dir, args.count);
    let h1 = connector(&dir, "apl-cahul", b"http/1.1");
    let h2 = connector(&dir, "apl-cahul", b"h2");
    let settle = Duration::from_secs_f64(args.settle);

    let mut rows = Vec::new();
    for (name, tls, request) in [
        ("HTTP/1.1, after the handshake", &h1, false),
        ("HTTP/1.1, after one request", &h1, true),
        ("HTTP/2, after the preface", &h2, false),
        ("HTTP/2, after one request", &h2, true),
    ] {
        if !name.contains(&args.only) {
            continue;
        }
        let broker = serve(&serve_binary, &dir, &config);
        wait_for(broker.addr).await;
        let pid = broker.child.id();
        let warm = open(tls, broker.addr, WARM_UP, request, args.parallel).await;
        close(warm).await;
        tokio::time::sleep(settle).await;
        let before = rss(pid);
        let started = Instant::now();
        let held = open(tls, broker.addr, args.count, request, args.parallel).await;
        let open_time = started.elapsed();
        tokio::time::sleep(settle).await;
        let holding = rss(pid);
        eprintln!("connections: {name}: {}", smaps(pid));
        let count = held.len();
        close(held).await;
        tokio::time::sleep(settle).await;
        let after = rss(pid);
        let per = (holding as f64 - before as f64) / count as f64;
        eprintln!(
            "connections: {name}: {count} open in {open_time:.1?}, {:.1} KiB each",
            per / 1024.0
        );
        rows.push(format!(
            "| {name} | {count} | {:.1} | {:.1} | {:.1} | {:.2} |",
            before as f64 / 1_048_576.0,
            holding as f64 / 1_048_576.0,
            after as f64 / 1_048_576.0,
            per / 1024.0,
        ));
        drop(broker);
    }
    // What requests add by themselves (caches, the audit log's and the
    // refusal counters' state), on few connections: not per connection.
    if "requests".contains(&args.only) {
        let broker = serve(&serve_binary, &dir, &config);
        wait_for(broker.addr).await;
        let pid = broker.child.id();
        let mut few = open(&h1, broker.addr, WARM_UP, true, args.parallel).await;
        tokio::time::sleep(settle).await;
        let before = rss(pid);
        for i in 0..args.count {
            request_on(&mut few[i % WARM_UP].sender).await;
        }
        tokio::time::sleep(settle).await;
        let holding = rss(pid);
        close(few).await;
        let per = (holding as f64 - before as f64) / args.count as f64;
        eprintln!(
            "connections: {} requests on {WARM_UP} connections: {:.1} KiB each",
            args.count,
            per / 1024.0
        );
        rows.push(format!(
            "| {} more requests on {WARM_UP} HTTP/1.1 connections (per request) | {WARM_UP} | {:.1} | {:.1} | | {:.2} |",
            args.count,
            before as f64 / 1_048_576.0,
            holding as f64 / 1_048_576.0,
            per / 1024.0,
        ));
        drop(broker);
    }
    println!(
        "| connections | held | broker RSS before (MiB) | holding (MiB) | after closing (MiB) | KiB per connection |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    for row in rows {
        println!("{row}");
    }
}

/// Makes a sandbox in `dir` and a configuration for `mconnect serve` with a
/// fixed data port and limits that hold `count` idle connections.
fn make_sandbox(binary: &Path, dir: &Path, count: usize) -> (PathBuf, SocketAddr) {
    let status = Command::new(binary)
        .args(["--log", "warn", "sandbox", "--no-wait", "--dir"])
        .arg(dir)
        .args(["--data-port", "0", "--admin-port", "0", "--ops-port", "0"])
        .stdout(Stdio::null())
        .status()
        .expect("the sandbox runs");
    assert!(status.success(), "mconnect sandbox --no-wait failed");
    let addr = {
        let probe = TcpListener::bind("127.0.0.1:0").expect("a free port");
        probe.local_addr().expect("its address")
    };
    let config = dir.join("broker.toml");
    let text = std::fs::read_to_string(&config).expect("broker.toml");
    assert!(
        !text.contains("[server]"),
        "the sandbox's broker.toml has a [server] section"
    );
    let text = text.replace("data = \"127.0.0.1:0\"", &format!("data = \"{addr}\""));
    let text = format!(
        "{text}\n[server]\nheader_read_timeout_secs = 300\nidle_timeout_secs = 600\n\
         max_connections = {}\nmax_connections_per_certificate = {}\n",
        count + 64,
        count + 64
    );
    std::fs::write(&config, text).expect("broker.toml written");
    (config, addr)
}

/// Starts `mconnect serve` on the sandbox's state with `config`.
fn serve(binary: &Path, dir: &Path, (config, addr): &(PathBuf, SocketAddr)) -> Broker {
    let child = Command::new(binary)
        .args(["--log", "warn", "serve", "--config"])
        .arg(config)
        .current_dir(dir)
        .stdout(Stdio::null())
        .spawn()
        .expect("mconnect serve starts");
    Broker { child, addr: *addr }
}

async fn wait_for(addr: SocketAddr) {
    for _ in 0..200 {
        if TcpStream::connect(addr).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the broker does not listen on {addr}");
}

/// Opens `count` connections, `parallel` at a time; with `request`, sends
/// one request on each and reads its answer.
async fn open(
    tls: &TlsConnector,
    addr: SocketAddr,
    count: usize,
    request: bool,
    parallel: usize,
) -> Vec<Held> {
    let mut held = Vec::with_capacity(count);
    while held.len() < count {
        let batch = parallel.min(count - held.len());
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..batch {
            let tls = tls.clone();
            set.spawn(async move { open_one(&tls, addr, request).await });
        }
        while let Some(one) = set.join_next().await {
            held.push(one.expect("no panic"));
        }
    }
    held
}

async fn open_one(tls: &TlsConnector, addr: SocketAddr, request: bool) -> Held {
    let tcp = TcpStream::connect(addr).await.expect("connects");
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let stream = tls.connect(name, tcp).await.expect("TLS handshake");
    let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
    let io = TokioIo::new(stream);
    let (mut sender, driver) = if h2 {
        let (sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .expect("HTTP/2 handshake");
        (
            Sender::H2(sender),
            tokio::spawn(async move {
                let _ = conn.await;
            }),
        )
    } else {
        let (sender, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .expect("HTTP/1 handshake");
        (
            Sender::H1(sender),
            tokio::spawn(async move {
                let _ = conn.await;
            }),
        )
    };
    if h2 {
        // Let the preface and SETTINGS exchange finish.
        if let Sender::H2(s) = &mut sender {
            s.ready().await.expect("HTTP/2 ready");
        }
    }
    if request {
        request_on(&mut sender).await;
    }
    Held { sender, driver }
}

/// One unsigned call, refused by the broker; waits for the whole answer.
async fn request_on(sender: &mut Sender) {
    let call = Request::get("https://localhost/r1/asp-rsp/person-by-idnp")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let answer = match sender {
        Sender::H1(s) => {
            s.ready().await.expect("HTTP/1 ready");
            s.send_request(call).await
        }
        Sender::H2(s) => s.send_request(call).await,
    }
    .expect("an answer");
    let _ = answer.into_body().collect().await;
}

async fn close(held: Vec<Held>) {
    for one in held {
        drop(one.sender);
        one.driver.abort();
    }
}

/// Resident memory of `pid` in bytes.
fn rss(pid: u32) -> u64 {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).expect("statm");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|f| f.parse().ok())
        .expect("resident pages");
    pages * 4096
}

/// The broker's memory by kind (`/proc/PID/smaps_rollup`), for the log.
fn smaps(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .unwrap_or_default()
        .lines()
        .filter(|l| {
            ["Rss:", "Anonymous:", "AnonHugePages:", "Private_Dirty:"]
                .iter()
                .any(|k| l.starts_with(k))
        })
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join(", ")
}
