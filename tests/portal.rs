//! The data-access portal as the sandbox runs it: a child process listed in
//! `sandbox.json`, serving HTTPS with a certificate of the sandbox CA (and
//! asking no client certificate: its users are people in browsers), on the
//! same catalog as the broker. The pages themselves are tested in
//! `crates/portal/tests/`.

mod support;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use support::Bus;

#[tokio::test]
async fn the_sandbox_runs_the_portal_over_https_on_its_own_catalog() {
    let bus = Bus::start().await;
    let manifest = &bus.sandbox.manifest;
    let portal = manifest
        .portal
        .as_ref()
        .expect("sandbox.json lists the portal");
    assert!(
        portal.url.starts_with("https://127.0.0.1:"),
        "{}",
        portal.url
    );
    assert!(
        bus.sandbox
            .processes
            .iter()
            .any(|p| p.participant == "portal" && p.program == "mconnect-portal" && p.pid > 0),
        "the portal is one of the sandbox's processes"
    );
    let written: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(bus.dir.path().join("sandbox.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(written["portal"]["url"], portal.url.as_str());

    // A browser-like client: trusts the sandbox CA, presents no certificate.
    let ca = std::fs::read_to_string(bus.dir.path().join(&manifest.ca)).unwrap();
    let roots = mconnect_sdk::parse_certs(&ca).unwrap();
    let tls = mconnect_sdk::tls::server_auth_client_config(&roots).unwrap();
    let client = mconnect_sdk::tls::https_client(&tls, mconnect_sdk::tls::ClientOptions::default());
    let request = http::Request::get(format!("{}/catalog?lang=en", portal.url))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = client
        .request(request)
        .await
        .expect("the portal answers over TLS");
    assert_eq!(response.status(), 200);
    assert!(
        response
            .headers()
            .get("content-security-policy")
            .is_some_and(|v| v.to_str().unwrap().contains("default-src 'none'"))
    );
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let html = String::from_utf8(body.to_vec()).unwrap();
    // The broker's catalog: every callable service it has is listed.
    let rules = bus.sandbox.broker.broker.rules();
    for service in rules.catalog.services().filter(|s| s.is_callable()) {
        assert!(
            html.contains(&format!(
                "href=\"/catalog/services/{}/{}\"",
                service.provider, service.code
            )),
            "{} is listed",
            service.key
        );
    }
    bus.stop().await;
}
