//! Issue 16, deliverable 2, through the real broker (the sandbox, real TLS,
//! real providers): W3C trace context from the consumer to the provider, the
//! audit record and the broker's JSON log line of the exchange, and the
//! `--log-format json` flag of the `mconnect` binary.
//!
//! The broker runs in this test process, so its events go to the subscriber
//! installed here — the command's own (`mconnect_cli::cli::logging`, JSON),
//! writing into a buffer the tests read back.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use http::{HeaderValue, Method, StatusCode};
use mconnect_cli::cli::logging::{self, LogFormat};
use mconnect_sdk::{
    CallOutcome, Credentials, ProviderResponse, ProviderSettings, TraceParent, TrustedKeys,
};
use serde_json::{Value, json};
use support::{Bus, get};

const SOCIAL_BASIS: &str = "md-law-133-2008-art-8";
const SOCIAL_REASON: &str = "social-aid-eligibility";
/// The calling user of `support::get`.
const CALLING_USER: &str = "2000000000015";
/// The person looked up: another IDNP than the calling user's.
const PERSON: &str = "2003000000027";
/// A string only the provider's answer body holds.
const BODY_MARK: &str = "Traceanu";
const CONSUMER_TRACE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const CONSUMER_TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CONSUMER_SPAN: &str = "00f067aa0ba902b7";

/// Everything the broker logged in this process, as written.
fn log() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOG: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOG.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        logging::init_with_writer("info", LogFormat::Json, Capture(buffer.clone()), false)
            .expect("the first subscriber of this test process");
        buffer
    })
}

#[derive(Clone)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'w> tracing_subscriber::fmt::MakeWriter<'w> for Capture {
    type Writer = Capture;

    fn make_writer(&'w self) -> Capture {
        self.clone()
    }
}

/// Every line logged so far; each must be one JSON object.
fn log_lines() -> Vec<(String, Value)> {
    let text = String::from_utf8(log().lock().unwrap().clone()).unwrap();
    text.lines()
        .map(|line| {
            let value: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("a log line that is not JSON ({e}): {line}"));
            assert!(value.is_object(), "{line}");
            (line.to_string(), value)
        })
        .collect()
}

/// The one `exchange` event of an exchange: its raw line and its fields.
fn exchange_line(exchange_id: &str) -> (String, Value) {
    let mut found: Vec<(String, Value)> = log_lines()
        .into_iter()
        .filter(|(_, v)| v["message"] == "exchange" && v["exchange_id"] == exchange_id)
        .collect();
    assert_eq!(found.len(), 1, "one event per exchange {exchange_id}");
    found.pop().unwrap()
}

/// Asserts a log line names no person and carries no body or query.
fn assert_no_personal_data(line: &str) {
    for secret in [PERSON, CALLING_USER, BODY_MARK, "idnp="] {
        assert!(!line.contains(secret), "{secret} in the log line: {line}");
    }
}

fn person_call() -> mconnect_sdk::Call {
    get(
        &format!("/r1/asp-rsp/person-by-idnp?idnp={PERSON}"),
        SOCIAL_BASIS,
        SOCIAL_REASON,
        Some(PERSON),
    )
}

/// The audit record of an answer, read as the sandbox's auditor on the
/// admin API (`GET /v1/audit/records/{seq}`).
async fn audited(bus: &Bus, outcome: &CallOutcome) -> Value {
    let seq = outcome.receipt.as_ref().unwrap().audit_seq.unwrap();
    let manifest = &bus.sandbox.manifest;
    let auditor = support::admin_client(
        bus.dir.path(),
        &manifest.broker.admin_url,
        &manifest.auditor.id,
    );
    let mut request = auditor
        .plain(Method::GET, &format!("/v1/audit/records/{seq}"), None)
        .unwrap();
    for (name, value) in [
        ("mconnect-call-basis", &manifest.auditor.basis),
        ("mconnect-call-reason", &manifest.auditor.reason),
    ] {
        request
            .headers_mut()
            .insert(name, HeaderValue::from_str(value).unwrap());
    }
    let (status, body) = auditor.send(request).await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["seq"], seq);
    body["record"].clone()
}

/// A provider of `asp-rsp/person-by-idnp` made with the SDK's provider
/// server, keeping the trace context of every request it is sent.
async fn echoing_provider(pki: &Path) -> (mconnect_sdk::RunningServer, Arc<Mutex<Vec<Seen>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let credentials = Credentials::from_pki_dir(pki, "asp-rsp", "").unwrap();
    let broker =
        TrustedKeys::from_pem(&std::fs::read_to_string(pki.join("broker.cert.pem")).unwrap())
            .unwrap();
    let kept = seen.clone();
    let server = mconnect_sdk::serve_provider(
        ProviderSettings {
            listen: "127.0.0.1:0".parse().unwrap(),
            credentials,
            broker,
            max_body_bytes: 4096,
        },
        move |request| {
            let kept = kept.clone();
            async move {
                kept.lock().unwrap().push(Seen {
                    parent: request.trace_parent(),
                    raw: request.header("traceparent").map(str::to_string),
                    state: request.trace_state(),
                });
                let idnp = request.query_param("idnp").unwrap_or_default();
                ProviderResponse::json(StatusCode::OK, &person(&idnp))
            }
        },
    )
    .await
    .unwrap();
    (server, seen)
}

/// What the provider was sent.
struct Seen {
    parent: Option<TraceParent>,
    raw: Option<String>,
    state: Option<String>,
}

fn person(idnp: &str) -> Value {
    json!({
        "idnp": idnp,
        "first_name": "Ion",
        "last_name": BODY_MARK,
        "birth_date": "1980-01-01",
        "sex": "M",
        "citizenship": "MDA",
        "status": "alive",
        "address": {"region": "Cahul", "locality": "Cahul", "street": "Stefan cel Mare",
                    "house": "1", "apartment": null},
        "identity_document": {"type": "buletin", "series": "B", "number": "1",
                              "issued": "2020-01-01", "expires": "2030-01-01"}
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_call_is_followed_from_consumer_to_provider_audit_and_log() {
    log();
    let bus = Bus::start().await;
    let (provider, seen) = echoing_provider(&bus.pki()).await;
    let manifest = &bus.sandbox.manifest;
    let asp = support::admin_client(bus.dir.path(), &manifest.broker.admin_url, "asp-rsp");
    let url = format!("https://{}", provider.local_addr());
    let endpoints = json!([{ "url": url }]);
    let put = asp
        .plain(
            Method::PUT,
            "/v1/participants/asp-rsp/endpoints",
            Some(&endpoints),
        )
        .unwrap();
    let (status, body) = asp.send(put).await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");

    // The consumer continues its trace, with vendor data in tracestate.
    let cahul = bus.consumer("apl-cahul");
    let consumer_span = TraceParent::parse(CONSUMER_TRACE).unwrap();
    let mut request = cahul
        .build_traced(&person_call(), Some(&consumer_span))
        .unwrap();
    request.headers_mut().insert(
        "tracestate",
        HeaderValue::from_static("congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"),
    );
    let out = tokio::time::timeout(Duration::from_secs(30), cahul.send(request))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out.status, 200, "{}", String::from_utf8_lossy(&out.body));
    let receipt = out.receipt.clone().expect("a verified receipt");

    // The provider got the consumer's trace id under the broker's own span.
    let sent = seen.lock().unwrap().pop().expect("the provider was called");
    let forwarded = sent
        .parent
        .expect("a valid traceparent reached the provider");
    assert_eq!(forwarded.trace_id(), CONSUMER_TRACE_ID);
    assert_ne!(forwarded.parent_id(), CONSUMER_SPAN);
    assert!(forwarded.sampled());
    assert_eq!(sent.raw, Some(forwarded.to_string()));
    assert_eq!(
        sent.state.as_deref(),
        Some("congo=t61rcWkgMzE,rojo=00f067aa0ba902b7")
    );

    // The answer names the same trace and the broker's span.
    let answered = out.trace_parent().expect("the answer carries traceparent");
    assert_eq!(answered, forwarded);

    // The audit record keeps the trace id.
    let record = audited(&bus, &out).await;
    assert_eq!(record["exchange_id"], receipt.exchange_id.as_str());
    assert_eq!(record["trace_id"], CONSUMER_TRACE_ID);

    // One JSON log line for the exchange, with its ids, code and timings,
    // and no personal data.
    let (line, event) = exchange_line(&receipt.exchange_id);
    assert_eq!(event["level"], "INFO");
    assert_eq!(event["target"], "mconnect::exchange");
    assert_eq!(event["trace_id"], CONSUMER_TRACE_ID);
    assert_eq!(event["span_id"], forwarded.parent_id().as_str());
    assert_eq!(event["parent_span_id"], CONSUMER_SPAN);
    assert_eq!(event["trace_origin"], "continued");
    assert_eq!(event["request_id"].as_str(), receipt.request_id.as_deref());
    assert_eq!(event["client"], "apl-cahul");
    assert_eq!(event["provider"], "asp-rsp");
    assert_eq!(event["service"], "asp-rsp/person-by-idnp");
    assert_eq!(event["code"], "ok");
    assert_eq!(event["http_status"], 200);
    assert_eq!(event["audit_seq"].as_u64(), receipt.audit_seq);
    for timing in ["total_ms", "provider_ms", "audit_wait_ms"] {
        assert!(
            event[timing].as_f64().is_some_and(|ms| ms >= 0.0),
            "{timing}: {line}"
        );
    }
    assert!(event["total_ms"].as_f64() >= event["provider_ms"].as_f64());
    assert_no_personal_data(&line);
    provider.shutdown().await;
    bus.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_invalid_traceparent_starts_a_trace_and_refuses_nothing() {
    log();
    let bus = Bus::start().await;
    let cahul = bus.consumer("apl-cahul");

    // None sent: the broker starts a trace and the answer names it.
    let out = cahul.call(&person_call()).await.unwrap();
    assert_eq!(out.status, 200, "{}", String::from_utf8_lossy(&out.body));
    let started = out.trace_parent().expect("the answer carries traceparent");
    assert!(started.sampled());
    let record = audited(&bus, &out).await;
    assert_eq!(record["trace_id"], started.trace_id().as_str());
    let exchange_id = &out.receipt.as_ref().unwrap().exchange_id;
    let (line, event) = exchange_line(exchange_id);
    assert_eq!(event["trace_id"], started.trace_id().as_str());
    assert_eq!(event["trace_origin"], "started");
    assert!(event.get("parent_span_id").is_none(), "{line}");
    assert_no_personal_data(&line);

    // Invalid ones are replaced, never refused.
    for invalid in [
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "not a trace",
    ] {
        let mut request = cahul.build(&person_call()).unwrap();
        request
            .headers_mut()
            .insert("traceparent", HeaderValue::from_static(invalid));
        let out = cahul.send(request).await.unwrap();
        assert_eq!(
            out.status,
            200,
            "{invalid}: {}",
            String::from_utf8_lossy(&out.body)
        );
        let replaced = out.trace_parent().expect("a new traceparent");
        assert_ne!(replaced.trace_id(), CONSUMER_TRACE_ID, "{invalid}");
        assert_ne!(replaced.trace_id(), "0".repeat(32), "{invalid}");
        let record = audited(&bus, &out).await;
        assert_eq!(record["trace_id"], replaced.trace_id().as_str());
        let (_, event) = exchange_line(&out.receipt.as_ref().unwrap().exchange_id);
        assert_eq!(event["trace_origin"], "restarted", "{invalid}");
    }

    // A refusal is traced too: same trace id in the answer, record and log.
    let mut refused = person_call();
    refused.reason = "not-a-purpose-of-the-grant".into();
    let consumer_span = TraceParent::parse(CONSUMER_TRACE).unwrap();
    let out = cahul.call_traced(&refused, &consumer_span).await.unwrap();
    support::assert_refused(&out, 403, "policy.purpose_not_allowed");
    assert_eq!(out.trace_parent().unwrap().trace_id(), CONSUMER_TRACE_ID);
    assert_eq!(audited(&bus, &out).await["trace_id"], CONSUMER_TRACE_ID);
    let (line, event) = exchange_line(&out.receipt.as_ref().unwrap().exchange_id);
    assert_eq!(event["code"], "policy.purpose_not_allowed");
    assert_eq!(event["http_status"], 403);
    assert_eq!(event["trace_id"], CONSUMER_TRACE_ID);
    assert!(event.get("provider_ms").is_none(), "not forwarded: {line}");
    assert_no_personal_data(&line);

    // The log now holds records without a trace id (the auditor's reads,
    // in the form records had before the field existed) and with one;
    // `mconnect audit verify` checks both.
    let dir = bus.stop().await;
    let verify = std::process::Command::new(support::mconnect_bin())
        .args(["audit", "verify", "--quiet", "--dir"])
        .arg(dir.path().join("audit"))
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    let leaves = std::fs::read_dir(dir.path().join("audit/segments"))
        .unwrap()
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .collect::<String>();
    assert!(leaves.contains("\"trace_id\":\""));
    assert!(leaves.contains("\"event\":\"audit.read\""));
}

/// `mconnect --log-format json sandbox`: every line the command logs is a
/// JSON object (here the broker's start-up events).
#[test]
fn the_command_logs_json_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(support::mconnect_bin())
        .args(["sandbox", "--no-wait", "--dir"])
        .arg(dir.path().join("sb"))
        .args(["--data-port", "0", "--admin-port", "0", "--ops-port", "0"])
        .env("MCONNECT_LOG_FORMAT", "json")
        .env("MCONNECT_LOG", "info")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let events: Vec<Value> = stderr
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(
        events
            .iter()
            .any(|e| e["message"] == "broker listening" && e["level"] == "INFO"),
        "{stderr}"
    );
}
