//! The admin API over real mTLS: roles come from the caller's certificate.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use http::{Method, StatusCode};

/// The admin API as a sandbox participant.
struct Admin(mconnect::connect::client::AdminClient);

impl Admin {
    fn new(bus: &support::Bus, participant: &str) -> Admin {
        Admin(support::admin_client(
            bus.dir.path(),
            &bus.sandbox.manifest.broker.admin_url,
            participant,
        ))
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (StatusCode, serde_json::Value) {
        let request = self.0.plain(method, path, body.as_ref()).unwrap();
        self.0.send(request).await.unwrap()
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
    assert_eq!(
        body["participants"].as_array().unwrap().len(),
        support::participant_count()
    );

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
