//! The admin API over real mTLS: roles come from the caller's certificate.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// A plain mTLS client as a sandbox participant.
struct Admin {
    base: String,
    client: Client<
        hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
        Full<Bytes>,
    >,
}

impl Admin {
    fn new(bus: &support::Bus, participant: &str) -> Admin {
        let pki = bus.pki();
        let identity = mconnect::tls::Identity::load(
            &pki.join(format!("{participant}.cert.pem")),
            &pki.join(format!("{participant}.key.pem")),
        )
        .unwrap();
        let cas = mconnect::tls::load_certificates(&pki.join("ca.cert.pem")).unwrap();
        let tls = mconnect::tls::client_config(&cas, &identity).unwrap();
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config((*tls).clone())
            .https_only()
            .enable_http1()
            .build();
        Admin {
            base: bus.sandbox.manifest.broker.admin_url.clone(),
            client: Client::builder(TokioExecutor::new()).build(https),
        }
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (StatusCode, serde_json::Value) {
        let body = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
        let req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(Full::new(body))
            .unwrap();
        let res = self.client.request(req).await.unwrap();
        let status = res.status();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        let value = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        (status, value)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_decide_who_may_change_the_registry() {
    let bus = support::Bus::start().await;
    let operator = Admin::new(&bus, "age-operator");
    let provider = Admin::new(&bus, "asp-rsp");
    let consumer = Admin::new(&bus, "apl-cahul");

    let before = bus.sandbox.broker.broker.audit().tree_size();
    let (status, body) = operator.send(Method::GET, "/healthz", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = consumer.send(Method::GET, "/v1/openapi.json", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["openapi"], "3.1.0");
    let (status, body) = consumer.send(Method::GET, "/v1/participants", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["participants"].as_array().unwrap().len(), support::participant_count());

    // A provider replaces its own endpoints, not another's.
    let endpoints = serde_json::json!([{"url": "https://127.0.0.1:9999"}]);
    let (status, body) = provider
        .send(
            Method::PUT,
            "/v1/participants/asp-rsp/endpoints",
            Some(endpoints.clone()),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let snapshot = bus.sandbox.broker.broker.registry().snapshot();
    assert_eq!(
        snapshot
            .get("asp-rsp")
            .unwrap()
            .participant
            .endpoint_for("x"),
        Some("https://127.0.0.1:9999")
    );
    let (status, body) = provider
        .send(
            Method::PUT,
            "/v1/participants/sfs/endpoints",
            Some(endpoints.clone()),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("admin.forbidden"))
    );
    let bad = serde_json::json!([{"url": "http://plain.example"}]);
    let (status, body) = provider
        .send(Method::PUT, "/v1/participants/asp-rsp/endpoints", Some(bad))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    // Only operators register participants.
    let mut newcomer = serde_json::json!({
        "id": "apl-soroca",
        "organisation": {"idno": "1003605000104", "name": "Primăria Soroca"},
        "roles": ["consumer"],
        "certificates": [],
    });
    let (status, _) = consumer
        .send(
            Method::PUT,
            "/v1/participants/apl-soroca",
            Some(newcomer.clone()),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = operator
        .send(
            Method::PUT,
            "/v1/participants/apl-soroca",
            Some(newcomer.clone()),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    newcomer["organisation"]["idno"] = "1003605000105".into();
    let (status, body) = operator
        .send(Method::PUT, "/v1/participants/apl-soroca", Some(newcomer))
        .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "a bad IDNO control digit is refused: {body}"
    );
    assert!(
        bus.sandbox
            .broker
            .broker
            .registry()
            .snapshot()
            .get("apl-soroca")
            .is_some()
    );

    // Every change attempt that reached the registry was audited, accepted or refused.
    let audited = bus.sandbox.broker.broker.audit().tree_size() - before;
    assert_eq!(audited, 4, "two endpoint changes and two registrations");
    bus.stop().await;
}
