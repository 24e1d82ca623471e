//! Replays against the real broker (PROTOCOL.md section 2): a (client,
//! request id) pair is accepted once in 24 hours, across a clean restart and
//! a kill -9, whatever the signature's `created`; two identical requests at
//! once are accepted once; providers built on the SDK serve a broker
//! exchange id once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode};
use http_body_util::Full;
use mconnect_sdk::{CallOutcome, Consumer};
use support::{Bus, assert_ok, assert_refused};

const PERSON: &str = "2000000000015";
const PATH: &str = "/r1/asp-rsp/person-by-idnp?idnp=2000000000015";

/// A request signed by apl-cahul as the SDK would, but with the `created`
/// and `nonce` the test chooses; kept as parts so the exact bytes can be
/// sent again.
#[derive(Clone)]
struct Signed {
    uri: String,
    headers: HeaderMap,
}

impl Signed {
    fn new(dir: &Path, data_url: &str, request_id: uuid::Uuid, created: i64) -> Signed {
        Signed::with_nonce(dir, data_url, request_id, created, None)
    }

    fn with_nonce(
        dir: &Path,
        data_url: &str,
        request_id: uuid::Uuid,
        created: i64,
        nonce: Option<&str>,
    ) -> Signed {
        let uri = format!("{data_url}{PATH}");
        let mut h = support::social_aid_headers(request_id);
        support::sign_as(
            &dir.join("pki"),
            "apl-cahul",
            "GET",
            &uri,
            &mut h,
            created,
            nonce,
        );
        Signed { uri, headers: h }
    }

    fn request(&self) -> http::Request<Full<Bytes>> {
        let mut req = http::Request::new(Full::new(Bytes::new()));
        *req.uri_mut() = self.uri.parse().unwrap();
        *req.headers_mut() = self.headers.clone();
        req
    }

    async fn send(&self, consumer: &Consumer) -> CallOutcome {
        consumer.send(self.request()).await.unwrap()
    }
}

fn now() -> i64 {
    mconnect::exchange::unix_now()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Sandbox arguments on fixed ports, so that a restarted broker has the
/// same authority and the exact bytes signed for it still verify.
fn fixed_args(dir: &Path) -> mconnect_cli::sandbox::SandboxArgs {
    mconnect_cli::sandbox::SandboxArgs {
        data_port: free_port(),
        admin_port: free_port(),
        ..support::args(dir)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_accepted_request_sent_again_after_a_restart_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let args = fixed_args(dir.path());
    let sandbox = mconnect_cli::sandbox::start(&args).await.unwrap();
    let url = sandbox.manifest.broker.data_url.clone();
    let consumer = sandbox.manifest.consumer(dir.path(), "apl-cahul").unwrap();
    let accepted = Signed::new(dir.path(), &url, uuid::Uuid::new_v4(), now());
    assert_ok(&accepted.send(&consumer).await);
    let nonce = format!("nonce-{}", uuid::Uuid::new_v4());
    let with_nonce =
        Signed::with_nonce(dir.path(), &url, uuid::Uuid::new_v4(), now(), Some(&nonce));
    assert_ok(&with_nonce.send(&consumer).await);
    sandbox.shutdown().await;

    // Same directory, same ports: a new broker process state.
    let sandbox = mconnect_cli::sandbox::start(&args).await.unwrap();
    assert_eq!(sandbox.manifest.broker.data_url, url);
    let consumer = sandbox.manifest.consumer(dir.path(), "apl-cahul").unwrap();
    for _ in 0..10 {
        assert_refused(&accepted.send(&consumer).await, 409, "request.replayed");
    }
    // The same id with a fresh signature, and the same nonce under a new id.
    let request_id = accepted.headers["mconnect-request-id"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let resigned = Signed::new(dir.path(), &url, request_id, now());
    assert_refused(&resigned.send(&consumer).await, 409, "request.replayed");
    let same_nonce =
        Signed::with_nonce(dir.path(), &url, uuid::Uuid::new_v4(), now(), Some(&nonce));
    assert_refused(&same_nonce.send(&consumer).await, 409, "request.replayed");
    // A fresh id goes through: the refusals are about the ids, not the broker.
    let fresh = Signed::new(dir.path(), &url, uuid::Uuid::new_v4(), now());
    assert_ok(&fresh.send(&consumer).await);
    sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_reused_with_a_fresh_signature_after_the_created_window_is_refused_for_24_hours() {
    let bus = Bus::start().await;
    let url = bus.sandbox.manifest.broker.data_url.clone();
    let consumer = bus.consumer("apl-cahul");
    let broker = bus.sandbox.broker.broker.clone();
    let request_id = uuid::Uuid::new_v4();
    assert_ok(
        &Signed::new(bus.dir.path(), &url, request_id, now())
            .send(&consumer)
            .await,
    );
    // 370 s later by the broker's clock, well past the ±300 s window in
    // which the first signature could still be replayed as it was.
    broker.shift_clock(370);
    let later = Signed::new(bus.dir.path(), &url, request_id, now() + 370);
    assert_refused(&later.send(&consumer).await, 409, "request.replayed");
    // Still refused just before a day has passed...
    broker.shift_clock(24 * 3600 - 370 - 120);
    let within = Signed::new(bus.dir.path(), &url, request_id, now() + 24 * 3600 - 120);
    assert_refused(&within.send(&consumer).await, 409, "request.replayed");
    // ...and free again after it.
    broker.shift_clock(240);
    let after = Signed::new(bus.dir.path(), &url, request_id, now() + 24 * 3600 + 120);
    assert_ok(&after.send(&consumer).await);
    bus.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_identical_requests_at_once_are_accepted_once() {
    let bus = Bus::start().await;
    let url = bus.sandbox.manifest.broker.data_url.clone();
    // Two clients, two connections: the requests really race.
    let first = bus.consumer("apl-cahul");
    let second = bus.consumer("apl-cahul");
    for _ in 0..10 {
        let signed = Signed::new(bus.dir.path(), &url, uuid::Uuid::new_v4(), now());
        let (a, b) = tokio::join!(signed.send(&first), signed.send(&second));
        let mut statuses = [a.status.as_u16(), b.status.as_u16()];
        statuses.sort_unstable();
        assert_eq!(statuses, [200, 409], "exactly one of two is accepted");
        let refused = if a.status == StatusCode::OK { &b } else { &a };
        assert_refused(refused, 409, "request.replayed");
    }
    bus.stop().await;
}

/// Waits until something listens on `port`.
async fn wait_for_port(port: u16) {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("nothing listens on {port}");
}

/// `mconnect serve` on the sandbox's configuration, as its own process.
async fn spawn_broker(dir: &Path, port: u16) -> tokio::process::Child {
    let child = tokio::process::Command::new(support::mconnect_bin())
        .arg("serve")
        .arg("--config")
        .arg(dir.join("broker.toml"))
        .env("MCONNECT_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    wait_for_port(port).await;
    child
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_after_a_kill_9_is_still_refused() {
    let dir = tempfile::tempdir().unwrap();
    let args = fixed_args(dir.path());
    // The sandbox writes the PKI, the configuration and the registry and
    // starts the example registers; its in-process broker then makes way
    // for a broker process the test can kill.
    let sandbox = mconnect_cli::sandbox::start(&args).await.unwrap();
    let url = sandbox.manifest.broker.data_url.clone();
    let consumer = sandbox.manifest.consumer(dir.path(), "apl-cahul").unwrap();
    // A partial move: the registers (the rest of `sandbox`) keep running
    // until the end of the test.
    let broker = sandbox.broker;
    broker.shutdown().await;

    let mut child = spawn_broker(dir.path(), args.data_port).await;
    let accepted = Signed::new(dir.path(), &url, uuid::Uuid::new_v4(), now());
    let outcome = accepted.send(&consumer).await;
    // Killed the moment the answer is in: the record is durable (the answer
    // waited for it) but the index has most likely not committed it.
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    assert_ok(&outcome);

    let mut child = spawn_broker(dir.path(), args.data_port).await;
    let consumer = Consumer::new(
        mconnect_sdk::Credentials::from_pki_dir(&dir.path().join("pki"), "apl-cahul", "").unwrap(),
        &url,
        mconnect_sdk::TrustedKeys::broker_in_pki_dir(&dir.path().join("pki")).unwrap(),
    )
    .unwrap();
    assert_refused(&accepted.send(&consumer).await, 409, "request.replayed");
    child.start_kill().unwrap();
    child.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_serves_a_broker_exchange_id_once() {
    let bus = Bus::start().await;
    let pki = bus.pki();
    let broker = mconnect_sdk::Credentials::from_pki_dir(&pki, "broker", "").unwrap();
    let endpoint = bus
        .sandbox
        .broker
        .broker
        .registry()
        .snapshot()
        .get("asp-rsp")
        .and_then(|p| {
            p.participant
                .endpoint_for("person-by-idnp")
                .map(str::to_string)
        })
        .unwrap();
    let service_path = bus
        .sandbox
        .broker
        .broker
        .rules()
        .catalog
        .service("asp-rsp", "person-by-idnp")
        .unwrap()
        .path
        .clone();
    let uri = format!("{endpoint}{service_path}?idnp={PERSON}");
    // Signed as the broker forwards a call (exchange::Broker::forward_request).
    let signed = |exchange_id: &str| {
        let mut h = support::social_aid_headers(uuid::Uuid::new_v4());
        h.insert(
            "mconnect-exchange-id",
            HeaderValue::from_str(exchange_id).unwrap(),
        );
        support::sign_as(&pki, "broker", "GET", &uri, &mut h, now(), None);
        h
    };
    let request = |h: &HeaderMap| {
        let mut req = http::Request::new(Full::new(Bytes::new()));
        *req.uri_mut() = uri.parse().unwrap();
        *req.headers_mut() = h.clone();
        req
    };
    // The test speaks to the provider over mTLS with the broker's certificate.
    let to_provider = Consumer::new(
        broker.clone(),
        &endpoint,
        mconnect_sdk::TrustedKeys::broker_in_pki_dir(&pki).unwrap(),
    )
    .unwrap();
    let exchange_id = uuid::Uuid::now_v7().to_string();
    let served = signed(&exchange_id);
    let first = to_provider.send(request(&served)).await.unwrap();
    assert_eq!(first.status, StatusCode::OK, "{:?}", first.body);
    // The exact request again, and the same exchange id freshly signed.
    for again in [served.clone(), signed(&exchange_id)] {
        let again = to_provider.send(request(&again)).await.unwrap();
        assert_eq!(again.status, StatusCode::CONFLICT, "{:?}", again.body);
        assert_eq!(support::code(&again), "request.replayed");
    }
    let other = to_provider
        .send(request(&signed(&uuid::Uuid::now_v7().to_string())))
        .await
        .unwrap();
    assert_eq!(other.status, StatusCode::OK, "{:?}", other.body);
    bus.stop().await;
}
