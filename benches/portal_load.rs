//! Load on the data-access portal's lookup answer page (issue 13: "server
//! time of a lookup page under 50 ms at the median and 200 ms at p99 beyond
//! the provider's own time").
//!
//! Officials sign in to the sandbox's portal over HTTPS as browsers do (the
//! development sign-in, `--sessions` sessions spread over the officials who
//! hold the residence grant, each with its own connection and cookies).
//! Then, for `--duration` seconds, lookups are scheduled at `--rate` a
//! second (open loop, through the shared pacer); each takes a free session
//! and is what an official does: the question form posted (303), the check
//! page read, the confirmation posted. That last POST answers with the
//! answer page: the portal calls the broker, which calls the provider
//! `asp-rsp`, and renders the answer with its verified receipt. A page
//! without the verified receipt, or with a refusal, counts as an error.
//!
//! Two latencies are recorded, with no coordinated omission:
//! - the answer page: the confirmation POST's own time plus any time the
//!   lookup waited before it could start (for a free session, or behind the
//!   schedule), as if the page had been asked at the lookup's scheduled time;
//! - the whole lookup: from its scheduled time to the answer page read.
//!
//! Then a second phase at the same rate and for as long calls the provider
//! directly with the same question, signed as the broker signs what it
//! forwards (the way `load.rs --target direct` does): the provider's own
//! time, to subtract from the page's.
//!
//! The result is one JSON object on stdout.
//!
//! Run: `cargo bench --bench portal_load -- --sandbox DIR --rate 20 --duration 20`.

mod support;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use hdrhistogram::Histogram;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use mconnect_sdk::SandboxManifest;
use mconnect_sdk::tls::{ClientOptions, HttpsClient};
use support::{BoxError, CallHeaders, Hop, Latency, micros_since, new_hist};
use tokio::sync::Semaphore;

#[derive(Parser, Debug)]
struct Args {
    /// The sandbox directory (sandbox.json, pki/).
    #[arg(long, default_value = "sandbox")]
    sandbox: PathBuf,
    /// Sessions signed in before the run; an official may have several.
    #[arg(long, default_value_t = 16)]
    sessions: usize,
    /// Lookups per second.
    #[arg(long, default_value_t = 5)]
    rate: u64,
    /// Seconds to run each phase (the portal's, then the provider's).
    #[arg(long, default_value_t = 20.0)]
    duration: f64,
    /// Set by `cargo bench`; without it (under `cargo test`) the harness does nothing.
    #[arg(long, hide = true)]
    bench: bool,
}

/// The lookup every session makes: Cahul's residence grant on the
/// population register's `person-by-idnp`, about one resident.
const ORGANISATION: &str = "apl-cahul";
const QUESTION: &str = "/lookup/apl-cahul-residence/asp-rsp/person-by-idnp";
const PURPOSE: &str = "residence-verification";
const BASIS: &str = "md-law-436-2006-art-29";
const PERSON: &str = "2000000000037";
/// The same question as the provider is asked it, and by whom.
const PROVIDER: &str = "asp-rsp";
const PROVIDER_PATH: &str = "/persons/by-idnp?idnp=2000000000037";

/// What an answer page must say (in English, asked with `?lang=en`): the
/// broker's receipt verified, and no refusal.
const VERIFIED: &str = "verified: signed by MConnect";
const REFUSED: &str = "id=\"refused-title\"";

/// One request of a lookup may take this long before it counts as an error,
/// so that a stuck portal cannot hold the run open.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// Error messages kept for stderr, so a failed run says why.
const ERRORS_SHOWN: usize = 5;

/// What the run measured.
#[derive(serde::Serialize)]
struct Report {
    offered_rate: u64,
    duration_s: f64,
    sessions: usize,
    lookups: u64,
    ok: u64,
    errors: u64,
    /// The answer page (the confirmation POST), from the lookup's schedule.
    answer_page: Latency,
    /// The question POST, the check page and the answer page together.
    lookup_flow: Latency,
    provider_errors: u64,
    /// The provider asked directly, at the same rate.
    provider: Latency,
    /// The answer page's median and p99 less the provider's median.
    answer_page_median_beyond_provider_us: i64,
    answer_page_p99_beyond_provider_us: i64,
}

/// One official's browser: its own HTTPS connection to the portal (trusting
/// the sandbox CA, presenting no certificate), the cookies it was given, and
/// the session's CSRF token from the question form it keeps open.
struct Browser {
    base: String,
    client: HttpsClient,
    cookies: Vec<(String, String)>,
    token: String,
}

/// A page as the browser got it.
struct Page {
    status: StatusCode,
    location: Option<String>,
    body: String,
}

/// What the timed lookups add up to.
struct Tally {
    page: Histogram<u64>,
    flow: Histogram<u64>,
    ok: u64,
    errors: u64,
    messages: Vec<String>,
}

/// The signed-in sessions not busy with a lookup; a lookup waits for one.
struct Sessions {
    free: Semaphore,
    idle: Mutex<Vec<Browser>>,
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args = Args::parse();
    if !args.bench {
        // `cargo test --all-targets` runs benches without `--bench`: there is
        // no sandbox then, and nothing to measure.
        eprintln!(
            "portal load harness: run it with `cargo bench --bench portal_load -- --sandbox DIR`"
        );
        return Ok(());
    }
    let manifest = SandboxManifest::read(&args.sandbox)?;
    let portal = manifest
        .portal
        .as_ref()
        .ok_or("sandbox.json names no portal")?;
    let ca = std::fs::read_to_string(args.sandbox.join(&manifest.ca))?;
    let tls = mconnect_sdk::tls::server_auth_client_config(&mconnect_sdk::parse_certs(&ca)?)?;

    // Sessions of the officials who may ask the question, round robin.
    let officials: Vec<&str> = portal
        .officials
        .iter()
        .filter(|o| o.participant == ORGANISATION)
        .map(|o| o.idnp.as_str())
        .collect();
    let mut browsers = Vec::with_capacity(args.sessions);
    let mut calling_user = None;
    for i in 0..args.sessions.max(1) {
        let Some(idnp) = officials.get(i % officials.len().max(1)) else {
            return Err(format!("the sandbox has no official of {ORGANISATION}").into());
        };
        let mut browser = Browser {
            base: portal.url.clone(),
            client: mconnect_sdk::tls::https_client(&tls, ClientOptions::default()),
            cookies: Vec::new(),
            token: String::new(),
        };
        browser
            .sign_in(idnp)
            .await
            .map_err(|e| format!("signing {idnp} in: {e}"))?;
        // Untimed: warms this session's connection, the portal's to the
        // broker and the broker's to the provider.
        browser
            .lookup()
            .await
            .map_err(|e| format!("a first lookup of {idnp}: {e}"))?;
        calling_user.get_or_insert(*idnp);
        browsers.push(browser);
    }
    let calling_user = calling_user.unwrap_or_default().to_owned();
    eprintln!(
        "{} sessions of {} officials signed in; {} lookups/s for {} s ...",
        browsers.len(),
        officials.len(),
        args.rate,
        args.duration
    );

    let count = (args.rate as f64 * args.duration).round() as usize;
    let started = Instant::now();
    let tally = portal_phase(args.rate, browsers, count).await;
    let elapsed = started.elapsed().as_secs_f64();

    eprintln!("the provider directly, {} calls/s ...", args.rate);
    let (provider, provider_errors) =
        provider_phase(&args, &manifest, &calling_user, count).await?;

    for message in &tally.messages {
        eprintln!("error: {message}");
    }
    let page = Latency::of(&tally.page);
    let report = Report {
        offered_rate: args.rate,
        duration_s: elapsed,
        sessions: args.sessions.max(1),
        lookups: tally.ok + tally.errors,
        ok: tally.ok,
        errors: tally.errors,
        answer_page: page,
        lookup_flow: Latency::of(&tally.flow),
        provider_errors,
        provider,
        answer_page_median_beyond_provider_us: page.median_us as i64 - provider.median_us as i64,
        answer_page_p99_beyond_provider_us: page.p99_us as i64 - provider.median_us as i64,
    };
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

/// The timed lookups through the portal.
async fn portal_phase(rate: u64, browsers: Vec<Browser>, count: usize) -> Tally {
    let sessions = Arc::new(Sessions {
        free: Semaphore::new(browsers.len()),
        idle: Mutex::new(browsers),
    });
    let tally = Arc::new(Mutex::new(Tally::new()));
    let (pacer_sessions, pacer_tally) = (sessions.clone(), tally.clone());
    support::open_loop(rate, vec![(); count], move |scheduled, ()| {
        let (sessions, tally) = (pacer_sessions.clone(), pacer_tally.clone());
        async move {
            let Ok(_permit) = sessions.free.acquire().await else {
                return;
            };
            let taken = lock(&sessions.idle).pop();
            let Some(mut browser) = taken else {
                return;
            };
            let began = Instant::now();
            let result = browser.lookup().await;
            let flow = micros_since(scheduled);
            lock(&sessions.idle).push(browser);
            let mut t = lock(&tally);
            match result {
                Ok(confirm) => {
                    // The page's own time, plus the wait before the lookup
                    // could begin: no coordinated omission.
                    let waited = began.saturating_duration_since(scheduled);
                    let page = u64::try_from((confirm + waited).as_micros()).unwrap_or(u64::MAX);
                    let _ = t.page.record(page);
                    let _ = t.flow.record(flow);
                    t.ok += 1;
                }
                Err(e) => {
                    t.errors += 1;
                    if t.messages.len() < ERRORS_SHOWN {
                        t.messages.push(e);
                    }
                }
            }
        }
    })
    .await;
    std::mem::replace(&mut *lock(&tally), Tally::new())
}

/// The provider asked the same question directly, at the same rate, signed
/// as the broker would sign it; each latency from its scheduled time.
async fn provider_phase(
    args: &Args,
    manifest: &SandboxManifest,
    calling_user: &str,
    count: usize,
) -> Result<(Latency, u64), BoxError> {
    let (broker, endpoint) = support::as_broker(&args.sandbox, manifest, PROVIDER)?;
    let client = support::client(&broker, 64)?;
    let call = CallHeaders {
        client: ORGANISATION,
        calling_user,
        basis: BASIS,
        reason: PURPOSE,
        subject: Some(PERSON),
    };
    let hop = Hop::Provider {
        signed_base: &endpoint,
    };
    // Signed before the timed run (and a few more to warm the pool), so the
    // generator spends its time sending, not signing.
    let warm = 4;
    let mut requests = (0..count + warm)
        .map(|_| {
            support::signed_request(
                &broker,
                (&Method::GET, &endpoint, PROVIDER_PATH),
                &call,
                None,
                &hop,
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    for request in requests.drain(..warm) {
        let _ = ask_provider(&client, request).await;
    }
    let tally = Arc::new(Mutex::new((new_hist(), 0u64)));
    let pacer_tally = tally.clone();
    support::open_loop(args.rate, requests, move |scheduled, request| {
        let (client, tally) = (client.clone(), pacer_tally.clone());
        async move {
            let ok = ask_provider(&client, request).await;
            let latency = micros_since(scheduled);
            let mut t = lock(&tally);
            if ok {
                let _ = t.0.record(latency);
            } else {
                t.1 += 1;
            }
        }
    })
    .await;
    let t = lock(&tally);
    Ok((Latency::of(&t.0), t.1))
}

/// Sends one request to the provider; whether it answered with success.
async fn ask_provider(client: &HttpsClient, request: Request<Full<Bytes>>) -> bool {
    let answer = async {
        let response = client.request(request).await.ok()?;
        let ok = response.status().is_success();
        response.into_body().collect().await.ok()?;
        Some(ok)
    };
    matches!(
        tokio::time::timeout(STEP_TIMEOUT, answer).await,
        Ok(Some(true))
    )
}

impl Tally {
    fn new() -> Tally {
        Tally {
            page: new_hist(),
            flow: new_hist(),
            ok: 0,
            errors: 0,
            messages: Vec::new(),
        }
    }
}

impl Browser {
    /// The development sign-in (the form's CSRF token, then the official's
    /// IDNP; the session cookie is kept), then the question form opened.
    async fn sign_in(&mut self, idnp: &str) -> Result<(), String> {
        let form = self.get("/sign-in").await?;
        let form = format!("csrf={}&idnp={idnp}", csrf(&form.body)?);
        let done = self.post("/sign-in", form).await?;
        expect(&done, StatusCode::SEE_OTHER, "the sign-in")?;
        let question = self.get(QUESTION).await?;
        expect(&question, StatusCode::OK, "the question form")?;
        // The session's token, the same on every form of the session.
        self.token = csrf(&question.body)?.to_owned();
        Ok(())
    }

    /// One lookup: the question posted, the check page, the confirmation.
    /// Returns how long the confirmation took until its answer page was
    /// read, once that page is found verified.
    async fn lookup(&mut self) -> Result<Duration, String> {
        let form = format!(
            "csrf={}&purpose={PURPOSE}&basis={BASIS}&person={PERSON}",
            self.token
        );
        let asked = self.post(QUESTION, form).await?;
        expect(&asked, StatusCode::SEE_OTHER, "the question")?;
        if asked.location.as_deref() != Some("/lookup/check") {
            return Err(format!("the question led to {:?}", asked.location));
        }
        let check = self.get("/lookup/check?lang=en").await?;
        expect(&check, StatusCode::OK, "the check page")?;
        let form = format!("csrf={}", csrf(&check.body)?);
        let began = Instant::now();
        let answer = self.post("/lookup/confirm?lang=en", form).await?;
        let took = began.elapsed();
        expect(&answer, StatusCode::OK, "the answer page")?;
        if !answer.body.contains(VERIFIED) || answer.body.contains(REFUSED) {
            let at = answer.body.find("<h1>").unwrap_or(0);
            let excerpt: String = answer.body[at..].chars().take(400).collect();
            return Err(format!(
                "the answer page is not a verified answer: {excerpt}"
            ));
        }
        Ok(took)
    }

    async fn get(&mut self, path: &str) -> Result<Page, String> {
        self.go(Method::GET, path, None).await
    }

    async fn post(&mut self, path: &str, form: String) -> Result<Page, String> {
        self.go(Method::POST, path, Some(form)).await
    }

    /// One request with the browser's cookies; the cookies it sets are kept.
    async fn go(
        &mut self,
        method: Method,
        path: &str,
        form: Option<String>,
    ) -> Result<Page, String> {
        let cookie = self
            .cookies
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect::<Vec<_>>()
            .join("; ");
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("cookie", cookie);
        if form.is_some() {
            request = request.header("content-type", "application/x-www-form-urlencoded");
        }
        let request = request
            .body(Full::new(Bytes::from(form.unwrap_or_default())))
            .map_err(|e| e.to_string())?;
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| e.to_string())?;
            let (parts, body) = response.into_parts();
            let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
            Ok::<_, String>((parts, body))
        };
        let (parts, body) = tokio::time::timeout(STEP_TIMEOUT, exchange)
            .await
            .map_err(|_| format!("{path}: no answer in {STEP_TIMEOUT:?}"))??;
        for set in parts.headers.get_all(http::header::SET_COOKIE) {
            let pair = set.to_str().unwrap_or_default().split(';').next();
            if let Some((name, value)) = pair.and_then(|p| p.split_once('=')) {
                self.cookies.retain(|(n, _)| n != name);
                if !value.is_empty() {
                    self.cookies.push((name.to_owned(), value.to_owned()));
                }
            }
        }
        Ok(Page {
            status: parts.status,
            location: parts
                .headers
                .get(http::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }
}

/// The CSRF field of a form page.
fn csrf(body: &str) -> Result<&str, String> {
    let field = "name=\"csrf\" value=\"";
    let at = body
        .find(field)
        .ok_or("a page without the form's CSRF field")?
        + field.len();
    body[at..]
        .split('"')
        .next()
        .ok_or_else(|| "an unterminated CSRF field".to_owned())
}

fn expect(page: &Page, status: StatusCode, what: &str) -> Result<(), String> {
    if page.status == status {
        return Ok(());
    }
    let excerpt: String = page.body.chars().take(200).collect();
    Err(format!(
        "{what}: {} instead of {status}: {excerpt}",
        page.status
    ))
}

/// A lock no task holds across an await; a poisoned one is still usable
/// (a panicking task leaves only counts behind).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
