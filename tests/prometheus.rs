//! Issue 16, metrics: a real Prometheus (Debian's `prometheus` package,
//! installed by tests/run.sh) scrapes a sandbox's operations listener every
//! second, and its own HTTP API (`/api/v1/query`) must then report exactly
//! the exchanges the test made, accepted and refused, by outcome code. The
//! exposition also passes `promtool check metrics` (Prometheus' own lint of
//! names, units and help). The shipped alert rules
//! (`deploy/prometheus/alerts.yml`) pass `promtool check rules`, are loaded
//! into that Prometheus and must all evaluate; they and the Grafana
//! dashboard name only metrics the broker serves.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long Prometheus may take to start, or to show a scrape.
const WAIT: Duration = Duration::from_secs(60);

/// A Prometheus server started by the test, killed and reaped on drop
/// however the test ends.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    dir: PathBuf,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// Starts Prometheus in `dir`, scraping `target` every second and
    /// evaluating the shipped alert rules.
    fn start(dir: &Path, target: SocketAddr) -> Prometheus {
        let binary = which("prometheus");
        let config = dir.join("prometheus.yml");
        let rules = alert_rules();
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 rule_files: ['{}']\n\
                 scrape_configs:\n  - job_name: mconnect\n    static_configs:\n      - targets: ['{target}']\n",
                rules.display()
            ),
        )
        .unwrap();
        let addr = free_port();
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("prometheus starts");
        Prometheus {
            child,
            addr,
            dir: dir.to_path_buf(),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    /// Waits until the server answers `/-/ready`.
    async fn ready(&mut self) {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("prometheus exited ({status}):\n{}", self.log());
            }
            if let Ok((200, _)) = get(self.addr, "/-/ready").await {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "prometheus not ready in {WAIT:?}:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// An instant PromQL query: the vector's samples, by the value of `by`.
    async fn query(&self, promql: &str, by: &str) -> BTreeMap<String, f64> {
        let path = format!("/api/v1/query?query={}", percent_encode(promql));
        let (status, body) = get(self.addr, &path).await.unwrap();
        assert_eq!(status, 200, "{promql}: {body}");
        let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(answer["status"], "success", "{promql}: {body}");
        answer["data"]["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|sample| {
                let key = sample["metric"][by].as_str().unwrap_or("").to_string();
                let value = sample["value"][1].as_str().unwrap().parse().unwrap();
                (key, value)
            })
            .collect()
    }

    /// Asks `promql` until it answers `want` (a scrape can be a second
    /// away); panics with what it last said, and the scrape target's state.
    async fn until(&self, promql: &str, by: &str, want: &BTreeMap<String, f64>) {
        let deadline = Instant::now() + WAIT;
        loop {
            let got = self.query(promql, by).await;
            if &got == want {
                return;
            }
            if Instant::now() > deadline {
                let (_, targets) = get(self.addr, "/api/v1/targets").await.unwrap();
                let (_, all) = get(self.addr, "/api/v1/query?query=mconnect_exchanges_total")
                    .await
                    .unwrap();
                panic!(
                    "{promql}: {got:?}, expected {want:?}\nall exchanges: {all}\ntargets: {targets}\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// The value of a query that answers one sample.
    async fn one(&self, promql: &str) -> f64 {
        let got = self.query(promql, "").await;
        assert_eq!(got.len(), 1, "{promql}: {got:?}");
        got.into_values().next().unwrap()
    }
}

fn which(program: &str) -> PathBuf {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program}"))
        .output()
        .unwrap();
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        out.status.success() && !path.is_empty(),
        "{program} is missing: install Debian's prometheus package (tests/run.sh does)"
    );
    PathBuf::from(path)
}

fn free_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

/// Percent-encodes a query parameter value (everything but unreserved characters).
fn percent_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A plain HTTP/1.0 GET (so the answer is neither chunked nor kept alive):
/// status and body, or an error if nothing listens yet.
async fn get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let exchange = async {
        let mut tcp = tokio::net::TcpStream::connect(addr).await?;
        tcp.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
            .await?;
        let mut out = String::new();
        tcp.read_to_string(&mut out).await?;
        Ok::<_, std::io::Error>(out)
    };
    let out = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    let status = out
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not HTTP: {out:?}")))?;
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_sandbox_and_counts_every_exchange_by_code() {
    let bus = support::Bus::start().await;
    let ops = bus.sandbox.broker.ops_addr();
    let scratch = tempfile::tempdir().unwrap();
    let mut prometheus = Prometheus::start(scratch.path(), ops);
    prometheus.ready().await;

    // Accepted calls, then refused ones: a service the catalog does not
    // have (from a registered consumer), and more calls than the grant's
    // burst allows (some answered 429 rate.limited).
    let t = bus.sandbox.manifest.tries[0].clone();
    let consumer = bus.consumer(&t.client);
    let call = support::get(&t.path, &t.basis, &t.reason, t.subject.as_deref());
    let mut made: BTreeMap<String, f64> = BTreeMap::new();
    let mut count = |status: u16, code: String| {
        let code = if status < 300 { "ok".to_string() } else { code };
        *made.entry(code).or_default() += 1.0;
    };
    for _ in 0..3 {
        let out = consumer.call(&call).await.unwrap();
        assert_eq!(out.status, 200, "{}", support::code(&out));
        count(200, String::new());
    }
    let unknown = support::get(
        &format!(
            "/r1/{}/no-such-service",
            t.service.split('/').next().unwrap()
        ),
        &t.basis,
        &t.reason,
        None,
    );
    for _ in 0..2 {
        let out = consumer.call(&unknown).await.unwrap();
        support::assert_refused(&out, 404, "catalog.unknown_service");
        count(404, support::code(&out));
    }
    // The shipped grant allows a burst of 20 at 10 a second: 30 calls in a
    // row pass that.
    for _ in 0..30 {
        let out = consumer.call(&call).await.unwrap();
        assert!(
            out.status == 200 || out.status == 429,
            "{}: {}",
            out.status,
            support::code(&out)
        );
        count(out.status.as_u16(), support::code(&out));
    }
    assert!(made.contains_key("rate.limited"), "{made:?}");

    // Prometheus' own numbers, by code, over its HTTP API. The sandbox's
    // adapters make calls of their own at start, none from this consumer to
    // this provider.
    let provider = t.service.split('/').next().unwrap();
    let ours = format!(r#"consumer="{}",provider="{provider}""#, t.client);
    prometheus
        .until(
            &format!("sum by (code) (mconnect_exchanges_total{{{ours}}})"),
            "code",
            &made,
        )
        .await;
    let total: f64 = made.values().sum();
    let services = format!(r#"service=~"{}|unknown""#, t.service);
    assert_eq!(
        prometheus
            .one(&format!(
                "sum(mconnect_exchange_duration_seconds_count{{{services}}})"
            ))
            .await,
        total
    );
    assert_eq!(
        prometheus.one(r#"up{job="mconnect"}"#).await,
        1.0,
        "the scrape succeeds"
    );
    // Every accepted call named its provider, service and consumer.
    let by_service = prometheus
        .query(
            r#"sum by (service) (mconnect_exchanges_total{code="ok"})"#,
            "service",
        )
        .await;
    assert_eq!(by_service.get(&t.service), made.get("ok"), "{by_service:?}");
    // The latency histogram answers a quantile; fsyncs and the audit wait
    // were measured; certificates have days left.
    let p99 = prometheus
        .one("histogram_quantile(0.99, sum by (le) (mconnect_exchange_duration_seconds_bucket))")
        .await;
    assert!(p99 > 0.0 && p99 <= 10.0, "p99 {p99}");
    assert!(
        prometheus
            .one("sum(mconnect_audit_fsync_seconds_count)")
            .await
            >= 1.0
    );
    assert!(
        prometheus
            .one("sum(mconnect_audit_wait_seconds_count)")
            .await
            >= total
    );
    assert!(
        prometheus
            .one("min(mconnect_participant_certificate_expiry_seconds) / 86400")
            .await
            > 1.0
    );
    assert!(
        prometheus
            .one("count(mconnect_participant_certificate_expiry_seconds)")
            .await
            >= support::participant_count() as f64
    );
    assert!(
        prometheus
            .one("mconnect_broker_certificate_expiry_seconds / 86400")
            .await
            > 1.0
    );
    assert!(prometheus.one("mconnect_rules_version").await >= 1.0);

    // The Prometheus text exposition passes Prometheus' own linter.
    let (status, text) = support::plain_get(ops, "/metrics").await;
    assert_eq!(status, 200);
    let mut promtool = Command::new(which("promtool"))
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut promtool.stdin.take().unwrap(), text.as_bytes()).unwrap();
    let linted = promtool.wait_with_output().unwrap();
    assert!(
        linted.status.success(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&linted.stdout),
        String::from_utf8_lossy(&linted.stderr)
    );

    // Every query of the Grafana dashboard is PromQL this Prometheus
    // accepts, over metrics the broker serves.
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(support::repo().join("deploy/grafana/mconnect.json")).unwrap(),
    )
    .unwrap();
    let mut exprs = Vec::new();
    collect_exprs(&dashboard, &mut exprs);
    assert!(exprs.len() >= 10, "{exprs:?}");
    for expr in &exprs {
        let promql = expr
            .replace("$__rate_interval", "1m")
            .replace("$job", ".*")
            .replace("$instance", ".*");
        prometheus.query(&promql, "").await;
        for name in metric_names(expr) {
            assert!(
                served(&text, name) || registered(name),
                "the dashboard queries {name}, which /metrics does not serve"
            );
        }
    }

    // The shipped alert rules: Prometheus' own check, then every rule
    // loaded and evaluated without error against this broker's series, and
    // naming only metrics it serves.
    let checked = Command::new(which("promtool"))
        .args(["check", "rules"])
        .arg(alert_rules())
        .output()
        .unwrap();
    assert!(
        checked.status.success(),
        "promtool check rules: {}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    let rules = prometheus.evaluated_rules().await;
    assert!(rules.len() >= 15, "{rules:?}");
    for rule in &rules {
        let query = rule["query"].as_str().unwrap();
        for name in metric_names(query) {
            assert!(
                served(&text, name) || registered(name),
                "alert {} reads {name}, which /metrics does not serve",
                rule["name"]
            );
        }
    }

    drop(prometheus);
    bus.stop().await;
}

/// The shipped alert rules.
fn alert_rules() -> PathBuf {
    support::repo().join("deploy/prometheus/alerts.yml")
}

impl Prometheus {
    /// Every loaded rule (`/api/v1/rules`), once each has been evaluated;
    /// panics on a rule whose evaluation failed.
    async fn evaluated_rules(&self) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + WAIT;
        loop {
            let (status, body) = get(self.addr, "/api/v1/rules").await.unwrap();
            assert_eq!(status, 200, "{body}");
            let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
            let rules: Vec<serde_json::Value> = answer["data"]["groups"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|group| group["rules"].as_array().unwrap().clone())
                .collect();
            for rule in &rules {
                assert_ne!(rule["health"], "err", "alert rule fails: {rule}");
            }
            if !rules.is_empty() && rules.iter().all(|rule| rule["health"] == "ok") {
                return rules;
            }
            assert!(
                Instant::now() < deadline,
                "alert rules not all evaluated in {WAIT:?}: {body}\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// Every `expr` string in a Grafana dashboard.
fn collect_exprs(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("expr", serde_json::Value::String(expr)) => out.push(expr.clone()),
                    _ => collect_exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect_exprs(v, out)),
        _ => {}
    }
}

/// The `mconnect_*` metric names a PromQL expression reads.
fn metric_names(expr: &str) -> Vec<&str> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("mconnect_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.push(&tail[..end]);
        rest = &tail[end..];
    }
    names
}

/// Whether the exposition has the family of `name` (a sample name: a
/// histogram's `_bucket`, `_count` and `_sum` belong to its family).
fn served(text: &str, name: &str) -> bool {
    let histogram = ["_bucket", "_count", "_sum"]
        .iter()
        .find_map(|suffix| name.strip_suffix(suffix))
        .is_some_and(|base| text.contains(&format!("# TYPE {base} histogram\n")));
    histogram || text.contains(&format!("# TYPE {name} "))
}

/// Whether the broker registers `name` as one of the families it counts
/// (prometheus-client leaves a family out until it has a series, like
/// reload failures before the first one) or reads at scrape: those of
/// brokers on PostgreSQL (shared replay, quota leases, cluster brokers,
/// audit shipping) are served only by a cluster, which this sandbox is not.
fn registered(name: &str) -> bool {
    let base = ["_bucket", "_count", "_sum", "_total"]
        .iter()
        .find_map(|suffix| name.strip_suffix(suffix))
        .unwrap_or(name);
    [
        "src/metrics.rs",
        "src/ops.rs",
        "src/store/postgres/shared.rs",
    ]
    .iter()
    .any(|file| {
        std::fs::read_to_string(support::repo().join(file))
            .unwrap()
            .contains(&format!("\"{base}\""))
    })
}
