//! What the load harnesses share (`load.rs`, `portal_load.rs`): the pooled
//! mTLS client, requests signed as a consumer signs them for the broker or
//! as the broker signs them for a provider, the open-loop pacer, and HDR
//! histograms with their summary.
//!
//! The pacer is what keeps both harnesses free of coordinated omission: work
//! is started at its scheduled instant whatever happened before, and each
//! latency is meant to be measured from that instant.

// Each harness uses part of this module; what one leaves unused is not dead.
#![allow(dead_code)]

use std::future::Future;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http::{HeaderMap, HeaderValue, Method, Request};
use http_body_util::Full;
use mconnect_sdk::tls::{ClientOptions, HttpsClient};
use mconnect_sdk::{Credentials, SandboxManifest};

/// Any error of a harness's setup, said once on stderr.
pub type BoxError = Box<dyn std::error::Error>;

/// The protocol headers of one call, as the consumer names them.
pub struct CallHeaders<'a> {
    /// `MConnect-Client`: the consumer organisation.
    pub client: &'a str,
    /// `MConnect-Calling-User`: the person at the consumer who asks.
    pub calling_user: &'a str,
    /// `MConnect-Call-Basis`: the legal basis.
    pub basis: &'a str,
    /// `MConnect-Call-Reason`: the purpose.
    pub reason: &'a str,
    /// `MConnect-Subject`: the person asked about, if one is.
    pub subject: Option<&'a str>,
}

/// Where a signed request goes.
pub enum Hop<'a> {
    /// To the broker, signed by the consumer.
    Broker,
    /// Straight to a provider, signed as the broker signs what it forwards
    /// (with an exchange id). `signed_base` is the URL the signature covers:
    /// the provider's own, also when the request goes through a proxy.
    Provider { signed_base: &'a str },
}

/// Latency percentiles of one histogram, in microseconds.
#[derive(serde::Serialize, Clone, Copy)]
pub struct Latency {
    /// How many latencies were recorded.
    pub count: u64,
    /// The median.
    pub median_us: u64,
    /// The 90th percentile.
    pub p90_us: u64,
    /// The 99th percentile.
    pub p99_us: u64,
    /// The largest.
    pub max_us: u64,
}

impl Latency {
    /// The percentiles of `hist`.
    pub fn of(hist: &Histogram<u64>) -> Latency {
        Latency {
            count: hist.len(),
            median_us: hist.value_at_quantile(0.50),
            p90_us: hist.value_at_quantile(0.90),
            p99_us: hist.value_at_quantile(0.99),
            max_us: hist.max(),
        }
    }
}

/// The pooled mTLS client of a participant (HTTP/1.1, at most `pool` idle
/// connections kept), built by the SDK's one client builder.
pub fn client(credentials: &Credentials, pool: usize) -> Result<HttpsClient, BoxError> {
    let tls = mconnect_sdk::tls::client_config(&credentials.ca, &credentials.tls)?;
    Ok(mconnect_sdk::tls::https_client(
        &tls,
        ClientOptions {
            http2: false,
            connect_timeout: None,
            max_idle_per_host: pool,
        },
    ))
}

/// What it takes to call a sandbox's provider as the broker does: the
/// broker's credentials and the provider's endpoint.
pub fn as_broker(
    dir: &Path,
    manifest: &SandboxManifest,
    provider: &str,
) -> Result<(Credentials, String), BoxError> {
    let endpoint = manifest
        .participants
        .iter()
        .find(|p| p.id == provider)
        .and_then(|p| p.endpoint.clone())
        .ok_or_else(|| format!("sandbox.json names no endpoint for {provider}"))?;
    let credentials = Credentials::load(
        "broker",
        &dir.join("pki/broker.cert.pem"),
        &dir.join("pki/broker.key.pem"),
        &dir.join(&manifest.ca),
        None,
    )?;
    Ok((credentials, endpoint))
}

/// One request to `{base}{path}`, signed with a fresh request id. A body is
/// sent as JSON.
pub fn signed_request(
    credentials: &Credentials,
    (method, base, path): (&Method, &str, &str),
    call: &CallHeaders<'_>,
    body: Option<&Bytes>,
    hop: &Hop<'_>,
) -> Result<Request<Full<Bytes>>, BoxError> {
    let mut h = HeaderMap::new();
    h.insert("mconnect-client", HeaderValue::from_str(call.client)?);
    h.insert(
        "mconnect-calling-user",
        HeaderValue::from_str(call.calling_user)?,
    );
    h.insert("mconnect-call-basis", HeaderValue::from_str(call.basis)?);
    h.insert("mconnect-call-reason", HeaderValue::from_str(call.reason)?);
    h.insert(
        "mconnect-request-id",
        HeaderValue::from_str(&uuid::Uuid::new_v4().to_string())?,
    );
    if let Some(subject) = call.subject {
        h.insert("mconnect-subject", HeaderValue::from_str(subject)?);
    }
    if body.is_some() {
        h.insert("content-type", HeaderValue::from_static("application/json"));
    }
    let signed_base = match hop {
        Hop::Broker => base,
        Hop::Provider { signed_base } => {
            h.insert(
                "mconnect-exchange-id",
                HeaderValue::from_str(&uuid::Uuid::now_v7().to_string())?,
            );
            signed_base
        }
    };
    let bytes = body.cloned().unwrap_or_default();
    mconnect_sdk::sign_request(
        credentials,
        method.as_str(),
        &format!("{signed_base}{path}"),
        &mut h,
        &bytes,
    )?;
    let mut request = Request::new(Full::new(bytes));
    *request.method_mut() = method.clone();
    *request.uri_mut() = format!("{base}{path}").parse()?;
    *request.headers_mut() = h;
    Ok(request)
}

/// Starts `run(scheduled, item)` for each item, `rate` a second, each at its
/// scheduled instant whether or not earlier ones have finished, and waits
/// for all of them. `run` should measure from `scheduled`, so that a stall
/// shows in the latencies instead of silently lowering the offered load.
pub async fn open_loop<T, F, Fut>(rate: u64, items: Vec<T>, run: F)
where
    T: Send + 'static,
    F: Fn(Instant, T) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let interval = Duration::from_secs_f64(1.0 / rate.max(1) as f64);
    let runtime = tokio::runtime::Handle::current();
    // The pacer is a plain blocking thread, not a tokio timer: tokio's timer
    // ticks in whole milliseconds, which would release work up to 1 ms late
    // and in bursts, and that slack would be counted as latency of whatever
    // is measured. A thread sleeping to each scheduled instant (nanosleep)
    // keeps to the schedule within tens of microseconds.
    let pacer = tokio::task::spawn_blocking(move || {
        let start = Instant::now();
        let mut tasks = Vec::with_capacity(items.len());
        for (i, item) in items.into_iter().enumerate() {
            let scheduled = start + interval.mul_f64(i as f64);
            let wait = scheduled.saturating_duration_since(Instant::now());
            if !wait.is_zero() {
                std::thread::sleep(wait);
            }
            tasks.push(runtime.spawn(run(scheduled, item)));
        }
        tasks
    });
    for t in pacer.await.unwrap_or_default() {
        let _ = t.await;
    }
}

/// An empty histogram of 1 µs to 60 s at 3 significant digits.
pub fn new_hist() -> Histogram<u64> {
    // Constant, valid bounds: this cannot fail.
    #[allow(clippy::expect_used)]
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

/// Microseconds since `since`, as a histogram records them.
pub fn micros_since(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_micros()).unwrap_or(u64::MAX)
}
