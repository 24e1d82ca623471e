//! Load harness: signed requests with unique request ids over mTLS with
//! keep-alive, against the broker (`--target mconnect`), an example provider
//! directly (`--target direct`, signed as the broker would), or the same
//! provider behind a plain TLS reverse proxy (`--target proxy --proxy-url`).
//!
//! Two modes:
//! - `closed`: `--concurrency` workers send back to back for `--duration`
//!   seconds (maximum throughput);
//! - `open`: requests are scheduled at a fixed `--rate`, and each latency is
//!   measured from its *scheduled* send time, so a stall shows up in the
//!   latencies instead of silently lowering the offered load (no coordinated
//!   omission).
//!
//! Requests are signed before the timed run, so the generator spends its
//! CPU on sending, not on signatures (it shares the machine's cores with what
//! it measures). Latencies go into an HDR histogram. The result is one JSON
//! object on stdout. `--cpu-pids` sums the user+system CPU time those
//! processes used during the run, for CPU time per exchange; each
//! `--cpu-group NAME=PID,…` does the same for one named group (a pid written
//! `PID+` counts its descendants too: PostgreSQL's backends, nginx's
//! workers), and `generator_cpu_ms` is the harness's own.
//!
//! `--connect-url` sends the requests, still signed for the sandbox's broker
//! URL (a cluster's load balancer), to another base URL: one broker of the
//! cluster directly, as the load balancer would pass them.
//!
//! Run: `cargo bench --bench load -- --sandbox DIR --target mconnect --mode closed`.

mod support;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use hdrhistogram::Histogram;
use http::{HeaderValue, Method, Request};
use http_body_util::{BodyExt, Full};
use mconnect_sdk::tls::HttpsClient;
use mconnect_sdk::{Credentials, SandboxManifest};
use support::{CallHeaders, Hop, client, new_hist};
use tokio::sync::Mutex;

#[derive(Parser, Debug, Clone)]
struct Args {
    /// The sandbox directory (sandbox.json, pki/).
    #[arg(long, default_value = "sandbox")]
    sandbox: PathBuf,
    /// mconnect, direct or proxy.
    #[arg(long, default_value = "mconnect")]
    target: String,
    /// Base URL of the reverse proxy, for `--target proxy`.
    #[arg(long)]
    proxy_url: Option<String>,
    /// closed or open.
    #[arg(long, default_value = "closed")]
    mode: String,
    /// small (one person, ~1 KB) or large (50 persons, ~32 KB).
    #[arg(long, default_value = "small")]
    payload: String,
    /// Workers (closed) or the most requests in flight (open).
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Seconds to run.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Requests per second (open mode).
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Process ids whose CPU time to measure, comma-separated.
    #[arg(long, default_value = "")]
    cpu_pids: String,
    /// A named group of processes whose CPU time to measure, separately:
    /// `NAME=PID[,PID...]`, `PID+` with its descendants; repeatable.
    #[arg(long)]
    cpu_group: Vec<String>,
    /// With `--target mconnect`: send to this base URL instead of the
    /// sandbox's broker URL, which the requests stay signed for.
    #[arg(long)]
    connect_url: Option<String>,
    /// Most requests to prepare (closed mode stops when they run out).
    #[arg(long, default_value_t = 400_000)]
    max_requests: usize,
    /// Set by `cargo bench`; without it (under `cargo test`) the harness does nothing.
    #[arg(long, hide = true)]
    bench: bool,
}

/// What the run measured.
#[derive(serde::Serialize)]
struct Report {
    target: String,
    mode: String,
    payload: String,
    concurrency: usize,
    offered_rate: Option<u64>,
    duration_s: f64,
    requests: u64,
    ok: u64,
    errors: u64,
    throughput_rps: f64,
    p50_us: u64,
    p99_us: u64,
    p999_us: u64,
    max_us: u64,
    cpu_ms: Option<f64>,
    cpu_us_per_request: Option<f64>,
    /// Each `--cpu-group`'s CPU time over the run.
    cpu_groups: Vec<GroupCpu>,
    /// The harness's own CPU time over the run (it shares the cores).
    generator_cpu_ms: Option<f64>,
    response_bytes: u64,
}

/// One `--cpu-group`'s CPU time over the run.
#[derive(serde::Serialize)]
struct GroupCpu {
    name: String,
    cpu_ms: Option<f64>,
    cpu_us_per_request: Option<f64>,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    if !args.bench {
        // `cargo test --all-targets` runs benches without `--bench`: there is
        // no sandbox to load then, and nothing to measure.
        eprintln!("load harness: run it with `cargo bench --bench load -- --sandbox DIR ...`");
        return Ok(());
    }
    let manifest = SandboxManifest::read(&args.sandbox)?;
    let dir = args.sandbox.clone();
    let (credentials, base) = match args.target.as_str() {
        "mconnect" => (
            participant(&manifest, &dir, "apl-cahul")?,
            manifest.broker.data_url.clone(),
        ),
        "direct" | "proxy" => {
            let (creds, provider) = support::as_broker(&dir, &manifest, "asp-rsp")?;
            let base = if args.target == "proxy" {
                args.proxy_url
                    .clone()
                    .ok_or("--proxy-url is required with --target proxy")?
            } else {
                provider
            };
            (creds, base)
        }
        other => return Err(format!("unknown target {other}").into()),
    };
    let client = client(&credentials, args.concurrency)?;
    let count = match args.mode.as_str() {
        "open" => ((args.rate as f64 * args.duration) as usize).min(args.max_requests),
        _ => args.max_requests,
    } + args.concurrency.min(8);
    eprintln!("preparing {count} signed requests for {} ...", args.target);
    let requests = prepare(&args, &credentials, &base, count)?;
    // A few untimed requests warm the pool and the TLS sessions; they are
    // taken off the list, since each request id may be used only once.
    let mut requests = requests;
    let warm: Vec<_> = requests
        .drain(..args.concurrency.min(8).min(requests.len()))
        .collect();
    for r in warm {
        let _ = send(&client, r).await;
    }
    let groups: Vec<(String, String)> = args
        .cpu_group
        .iter()
        .map(|g| {
            let (name, pids) = g.split_once('=').unwrap_or((g.as_str(), ""));
            (name.to_string(), pids.to_string())
        })
        .collect();
    let groups_before: Vec<Option<f64>> = groups.iter().map(|(_, p)| group_cpu(p)).collect();
    let generator_before = process_cpu("self", false);
    let cpu_before = cpu_time(&args.cpu_pids);
    let started = Instant::now();
    let (hist, ok, errors, bytes) = match args.mode.as_str() {
        "open" => open_loop(&args, &client, requests).await,
        _ => closed_loop(&args, &client, requests).await,
    };
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = match (cpu_before, cpu_time(&args.cpu_pids)) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    let generator_cpu_ms = match (generator_before, process_cpu("self", false)) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    let cpu_groups: Vec<GroupCpu> = groups
        .iter()
        .zip(groups_before)
        .map(|((name, pids), before)| {
            let cpu_ms = match (before, group_cpu(pids)) {
                (Some(a), Some(b)) => Some(b - a),
                _ => None,
            };
            GroupCpu {
                name: name.clone(),
                cpu_ms,
                cpu_us_per_request: cpu_ms.filter(|_| ok > 0).map(|ms| ms * 1000.0 / ok as f64),
            }
        })
        .collect();
    let requests_done = ok + errors;
    let report = Report {
        target: args.target.clone(),
        mode: args.mode.clone(),
        payload: args.payload.clone(),
        concurrency: args.concurrency,
        offered_rate: (args.mode == "open").then_some(args.rate),
        duration_s: elapsed,
        requests: requests_done,
        ok,
        errors,
        throughput_rps: ok as f64 / elapsed,
        p50_us: hist.value_at_quantile(0.50),
        p99_us: hist.value_at_quantile(0.99),
        p999_us: hist.value_at_quantile(0.999),
        max_us: hist.max(),
        cpu_ms: cpu,
        cpu_us_per_request: cpu.filter(|_| ok > 0).map(|ms| ms * 1000.0 / ok as f64),
        cpu_groups,
        generator_cpu_ms,
        response_bytes: bytes / ok.max(1),
    };
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

fn participant(
    manifest: &SandboxManifest,
    dir: &std::path::Path,
    id: &str,
) -> Result<Credentials, Box<dyn std::error::Error>> {
    Ok(manifest.credentials(dir, id)?)
}

/// Signs every request of the run up front.
fn prepare(
    args: &Args,
    credentials: &Credentials,
    base: &str,
    count: usize,
) -> Result<Vec<Request<Full<Bytes>>>, Box<dyn std::error::Error>> {
    let direct = args.target != "mconnect";
    let (method, path, body) = match (args.payload.as_str(), direct) {
        ("large", false) => (
            Method::POST,
            "/r1/asp-rsp/persons-lookup".to_string(),
            Some(large_body()),
        ),
        ("large", true) => (
            Method::POST,
            "/persons/lookup".to_string(),
            Some(large_body()),
        ),
        (_, false) => (
            Method::GET,
            "/r1/asp-rsp/person-by-idnp?idnp=2000000000015".to_string(),
            None,
        ),
        (_, true) => (
            Method::GET,
            "/persons/by-idnp?idnp=2000000000015".to_string(),
            None,
        ),
    };
    // Through a proxy the provider sees its own authority in Host, so the
    // signature covers the provider's URL, which nginx sets as Host.
    let signed_base = if args.target == "proxy" {
        let m = SandboxManifest::read(&args.sandbox)?;
        m.participants
            .iter()
            .find(|p| p.id == "asp-rsp")
            .and_then(|p| p.endpoint.clone())
            .ok_or("no endpoint")?
    } else {
        base.to_string()
    };
    let hop = if direct {
        Hop::Provider {
            signed_base: &signed_base,
        }
    } else {
        Hop::Broker
    };
    let call = CallHeaders {
        client: "apl-cahul",
        calling_user: "2000000000015",
        basis: "md-law-133-2008-art-8",
        reason: "social-aid-eligibility",
        subject: body.is_none().then_some("2000000000015"),
    };
    let connect = match (&args.connect_url, direct) {
        (Some(url), false) => Some(format!("{url}{path}").parse::<http::Uri>()?),
        (Some(_), true) => return Err("--connect-url goes with --target mconnect".into()),
        (None, _) => None,
    };
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let mut request = support::signed_request(
            credentials,
            (&method, base, &path),
            &call,
            body.as_ref(),
            &hop,
        )?;
        if let Some(uri) = &connect {
            *request.uri_mut() = uri.clone();
        }
        if args.target == "proxy" {
            let authority = signed_base.trim_start_matches("https://");
            request
                .headers_mut()
                .insert(http::header::HOST, HeaderValue::from_str(authority)?);
        }
        out.push(request);
    }
    Ok(out)
}

fn large_body() -> Bytes {
    let ids: Vec<String> = (0..50u64)
        .map(|i| {
            let base = format!("2{:011}", 1000 + i);
            let w = [7u32, 3, 1];
            let sum: u32 = base
                .bytes()
                .enumerate()
                .map(|(k, b)| u32::from(b - b'0') * w[k % 3])
                .sum();
            format!("{base}{}", sum % 10)
        })
        .collect();
    Bytes::from(serde_json::json!({ "idnps": ids }).to_string())
}

async fn send(client: &HttpsClient, request: Request<Full<Bytes>>) -> Result<(bool, u64), String> {
    let response = client.request(request).await.map_err(|e| e.to_string())?;
    let ok = response.status().is_success();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((ok, body.len() as u64))
}

async fn closed_loop(
    args: &Args,
    client: &HttpsClient,
    requests: Vec<Request<Full<Bytes>>>,
) -> (Histogram<u64>, u64, u64, u64) {
    let requests = Arc::new(requests);
    let next = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_secs_f64(args.duration);
    let total = Arc::new(Mutex::new((new_hist(), 0u64, 0u64, 0u64)));
    let mut workers = Vec::new();
    for _ in 0..args.concurrency {
        let (client, requests, next, total) = (
            client.clone(),
            requests.clone(),
            next.clone(),
            total.clone(),
        );
        workers.push(tokio::spawn(async move {
            let (mut hist, mut ok, mut errors, mut bytes) = (new_hist(), 0u64, 0u64, 0u64);
            while Instant::now() < deadline {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(request) = requests.get(i) else {
                    break;
                };
                let start = Instant::now();
                match send(&client, request.clone()).await {
                    Ok((true, n)) => {
                        ok += 1;
                        bytes += n;
                    }
                    _ => errors += 1,
                }
                let _ = hist.record(start.elapsed().as_micros() as u64);
            }
            let mut t = total.lock().await;
            let _ = t.0.add(&hist);
            t.1 += ok;
            t.2 += errors;
            t.3 += bytes;
        }));
    }
    for w in workers {
        let _ = w.await;
    }
    let t = total.lock().await;
    (t.0.clone(), t.1, t.2, t.3)
}

async fn open_loop(
    args: &Args,
    client: &HttpsClient,
    requests: Vec<Request<Full<Bytes>>>,
) -> (Histogram<u64>, u64, u64, u64) {
    let limit = Arc::new(tokio::sync::Semaphore::new(args.concurrency.max(1) * 64));
    let total = Arc::new(Mutex::new((new_hist(), 0u64, 0u64, 0u64)));
    let client = client.clone();
    let pacer_total = total.clone();
    support::open_loop(args.rate, requests, move |scheduled, request| {
        let (client, total, limit) = (client.clone(), pacer_total.clone(), limit.clone());
        async move {
            // Bounded in flight: beyond it a request waits, and that wait
            // counts in its latency (measured from the schedule).
            let _permit = limit.acquire_owned().await;
            let result = send(&client, request).await;
            let latency = scheduled.elapsed().as_micros() as u64;
            let mut t = total.lock().await;
            let _ = t.0.record(latency);
            match result {
                Ok((true, n)) => {
                    t.1 += 1;
                    t.3 += n;
                }
                _ => t.2 += 1,
            }
        }
    })
    .await;
    let t = total.lock().await;
    (t.0.clone(), t.1, t.2, t.3)
}

/// User + system CPU milliseconds of one process, from /proc; with
/// `reaped`, also those of its children it waited for (cutime + cstime).
fn process_cpu(pid: &str, reaped: bool) -> Option<f64> {
    let ticks_per_sec = 100.0; // CLK_TCK on Linux
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let mut ticks = 0.0;
    for i in if reaped { 11..15 } else { 11..13 } {
        ticks += fields.get(i)?.parse::<f64>().ok()?;
    }
    Some(ticks / ticks_per_sec * 1000.0)
}

/// The processes whose parent is `pid`, from /proc.
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let Some(child) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        let parent = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
        if parent == Some(pid) {
            found.push(child);
        }
    }
    found
}

/// CPU milliseconds of a `--cpu-group`'s pids. A `PID+` counts the process
/// and its descendants, each with the children it reaped: so a backend that
/// exits between two readings still counts (in its parent), once, and one
/// that starts between them counts whole.
fn group_cpu(pids: &str) -> Option<f64> {
    let mut total = 0.0;
    for pid in pids.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match pid.strip_suffix('+') {
            None => total += process_cpu(pid, false)?,
            Some(root) => {
                let root: u32 = root.parse().ok()?;
                total += process_cpu(&root.to_string(), true)?;
                let mut todo = children_of(root);
                let mut seen = 0;
                while let Some(child) = todo.pop() {
                    seen += 1;
                    if seen > 10_000 {
                        break;
                    }
                    total += process_cpu(&child.to_string(), true).unwrap_or(0.0);
                    todo.extend(children_of(child));
                }
            }
        }
    }
    Some(total)
}

/// User + system CPU milliseconds of the listed processes, from /proc.
fn cpu_time(pids: &str) -> Option<f64> {
    if pids.trim().is_empty() {
        return None;
    }
    let ticks_per_sec = 100.0; // CLK_TCK on Linux
    let mut total = 0.0;
    for pid in pids.split(',').filter(|p| !p.trim().is_empty()) {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())).ok()?;
        let after = stat.rsplit_once(')')?.1;
        let fields: Vec<&str> = after.split_whitespace().collect();
        let utime: f64 = fields.get(11)?.parse().ok()?;
        let stime: f64 = fields.get(12)?.parse().ok()?;
        total += (utime + stime) / ticks_per_sec * 1000.0;
    }
    Some(total)
}
