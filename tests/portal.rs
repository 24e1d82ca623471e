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

    // The development sign-in offers the definition's officials, and one of
    // them signs in over HTTPS.
    let definition: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(support::repo().join("examples/sandbox/participants.json"))
            .unwrap(),
    )
    .unwrap();
    let listed: Vec<&str> = portal.officials.iter().map(|o| o.idnp.as_str()).collect();
    let defined: Vec<&str> = definition["officials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["idnp"].as_str().unwrap())
        .collect();
    assert_eq!(listed, defined);
    let official = &portal.officials[0];
    let get = |path: &str, cookie: &str| {
        let mut request = http::Request::get(format!("{}{path}", portal.url));
        if !cookie.is_empty() {
            request = request.header("cookie", cookie);
        }
        request.body(Full::new(Bytes::new())).unwrap()
    };
    let form = client.request(get("/sign-in", "")).await.unwrap();
    let csrf_cookie = form
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|c| c.starts_with("__Host-mconnect_csrf="))
        .expect("a CSRF cookie");
    let token = csrf_cookie
        .trim_start_matches("__Host-mconnect_csrf=")
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let sign_in = http::Request::post(format!("{}/sign-in", portal.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("cookie", format!("__Host-mconnect_csrf={token}"))
        .body(Full::new(Bytes::from(format!(
            "csrf={token}&idnp={}",
            official.idnp
        ))))
        .unwrap();
    let signed_in = client.request(sign_in).await.unwrap();
    assert_eq!(signed_in.status(), 303);
    let session = signed_in
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|c| c.starts_with("__Host-mconnect_session="))
        .expect("a session cookie");
    let session = session.split(';').next().unwrap().to_owned();
    let account = client
        .request(get("/account?lang=en", &session))
        .await
        .unwrap();
    assert_eq!(account.status(), 200);
    let body = account.into_body().collect().await.unwrap().to_bytes();
    let html = String::from_utf8(body.to_vec()).unwrap();
    assert!(html.contains(&official.name), "{html}");
    assert!(html.contains(&official.participant));
    bus.stop().await;
}
