//! Connection requests against the real sandbox over real TLS: a signed
//! application becomes an active grant that the data plane enforces at once,
//! every transition is audited, and everything survives a restart.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use bytes::Bytes;
use http::{Method, StatusCode};
use mconnect::connect::client::AdminClient;
use serde_json::{Value, json};
use support::{Bus, assert_refused, get};

const TAXPAYER: &str = "2000000000015";
const MCABINET_BASIS: &str = "md-law-133-2011-art-13";
const MCABINET_REASON: &str = "citizen-own-tax-status";
const CALLING_USER: &str = "2000000000015";

fn example(name: &str) -> Value {
    let path = support::repo().join("examples/connect").join(name);
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn bytes(value: &Value) -> Bytes {
    Bytes::from(serde_json::to_vec_pretty(value).unwrap())
}

/// The admin client of a sandbox participant, with its key for signing.
fn admin(bus: &Bus, id: &str) -> AdminClient {
    let manifest = &bus.sandbox.manifest;
    let credentials = manifest.credentials(bus.dir.path(), id).unwrap();
    AdminClient::new(credentials, &manifest.broker.admin_url).unwrap()
}

async fn submit(client: &AdminClient, application: &Value) -> (StatusCode, Value) {
    let request = client
        .signed(
            Method::POST,
            "/v1/connection-requests",
            bytes(application),
            CALLING_USER,
        )
        .unwrap();
    client.send(request).await.unwrap()
}

async fn act(client: &AdminClient, id: &str, action: &str, body: Value) -> (StatusCode, Value) {
    let request = client
        .plain(
            Method::POST,
            &format!("/v1/connection-requests/{id}/{action}"),
            Some(&body),
        )
        .unwrap();
    client.send(request).await.unwrap()
}

async fn read(client: &AdminClient, path: &str) -> (StatusCode, Value) {
    let request = client.plain(Method::GET, path, None).unwrap();
    client.send(request).await.unwrap()
}

/// Asserts the newest audit record is this transition's.
fn assert_audited(bus: &Bus, actor: &str, target: &str, accepted: bool) {
    let audit = bus.sandbox.broker.broker.audit();
    let (record, _) = audit.record(audit.tree_size() - 1).unwrap().unwrap();
    assert_eq!(record.event, "connect.transition");
    assert_eq!(record.consumer.as_deref(), Some(actor));
    assert_eq!(record.service.as_deref(), Some(target));
    assert_eq!(
        record.decision,
        if accepted {
            mconnect::audit::Decision::Accepted
        } else {
            mconnect::audit::Decision::Refused
        }
    );
}

async fn tax_debts_status(bus: &Bus) -> (u16, String) {
    let out = bus
        .consumer("mcabinet")
        .call(&get(
            &format!("/r1/sfs/tax-debts?taxpayer={TAXPAYER}"),
            MCABINET_BASIS,
            MCABINET_REASON,
            Some(TAXPAYER),
        ))
        .await
        .unwrap();
    assert!(out.receipt.is_ok(), "{:?}", out.receipt);
    (out.status.as_u16(), support::code(&out))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_application_becomes_an_enforced_grant_and_survives_a_restart() {
    let bus = Bus::start().await;
    let mcabinet = admin(&bus, "mcabinet");
    let operator = admin(&bus, "age-operator");
    let sfs = admin(&bus, "sfs");
    let cahul = admin(&bus, "apl-cahul");

    // Before: no grant for mcabinet on sfs/tax-debts.
    assert_eq!(tax_debts_status(&bus).await.1, "policy.denied");

    let application = example("mcabinet-tax-debts.json");
    let (status, body) = submit(&mcabinet, &application).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id = body["id"].as_str().unwrap().to_string();
    assert_eq!(body["state"], "submitted");
    assert_eq!(body["overdue"], false);
    assert_eq!(body["evidence"][0]["verification"]["verified"], true);
    assert_eq!(body["evidence"][0]["signer"], "mcabinet");
    assert_audited(&bus, "mcabinet", &format!("{id} submit"), true);

    // Who sees it: the applicant, the operator and the provider; not others.
    for (who, sees) in [(&mcabinet, 1), (&operator, 1), (&sfs, 1), (&cahul, 0)] {
        let (status, list) = read(who, "/v1/connection-requests").await;
        assert_eq!(status, StatusCode::OK);
        let n = list["connection_requests"].as_array().unwrap().len();
        assert_eq!(n, sees, "{} sees {n}", who.participant());
    }
    let (status, body) = read(&cahul, &format!("/v1/connection-requests/{id}")).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("connect.unknown_request"))
    );

    // Review, a request for changes, a signed resubmission, review, approval.
    let why = json!({"reason": "state which fields the citizen sees"});
    let steps: [(&AdminClient, &str, Value, &str); 2] = [
        (&operator, "review", json!({}), "under_review"),
        (
            &operator,
            "request-changes",
            why.clone(),
            "changes_requested",
        ),
    ];
    for (who, action, body, state) in steps {
        let (status, out) = act(who, &id, action, body).await;
        assert_eq!(status, StatusCode::OK, "{action}: {out}");
        assert_eq!(out["state"], state);
        assert_audited(
            &bus,
            who.participant(),
            &format!("{id} {}", action.replace('-', "_")),
            true,
        );
    }
    let mut changed = application.clone();
    changed["services"][0]["fields"] = json!(["taxpayer", "has_debts", "checked_at"]);
    let request = mcabinet
        .signed(
            Method::POST,
            &format!("/v1/connection-requests/{id}/resubmit?reason=fewer%20fields"),
            bytes(&changed),
            CALLING_USER,
        )
        .unwrap();
    let (status, out) = mcabinet.send(request).await.unwrap();
    assert_eq!(status, StatusCode::OK, "{out}");
    assert_eq!(out["state"], "resubmitted");
    assert_eq!(out["version"], 2);
    assert_audited(&bus, "mcabinet", &format!("{id} resubmit"), true);
    for (action, state) in [("review", "under_review"), ("approve", "approved")] {
        let (status, out) = act(
            &operator,
            &id,
            action,
            json!({"reason": "lawful and proportionate"}),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{action}: {out}");
        assert_eq!(out["state"], state);
    }
    // Approved, but the provider has not confirmed: still no access.
    assert_eq!(tax_debts_status(&bus).await.1, "policy.denied");

    // Only the provider confirms; then the grant is in force at once.
    let (status, out) = act(&operator, &id, "confirm", json!({})).await;
    assert_eq!(
        (status, out["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("admin.forbidden")),
        "{out}"
    );
    let (status, out) = act(&sfs, &id, "confirm", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{out}");
    assert_eq!(out["state"], "active");
    assert_audited(&bus, "sfs", &format!("{id} confirm"), true);
    assert_eq!(
        tax_debts_status(&bus).await.0,
        200,
        "active after the confirmation"
    );
    let (status, body) = read(&mcabinet, "/v1/grants").await;
    assert_eq!(status, StatusCode::OK);
    let grant = body["grants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["id"] == format!("{id}.1"))
        .cloned()
        .unwrap();
    assert_eq!(grant["status"], "active");

    // An illegal transition names the state and what is allowed.
    let (status, out) = act(&operator, &id, "approve", json!({})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{out}");
    assert_eq!(out["code"], "connect.illegal_transition");
    let detail = out["detail"].as_str().unwrap();
    assert!(
        detail.contains("it is active") && detail.contains("suspend, revoke"),
        "{detail}"
    );
    assert_audited(&bus, "age-operator", &format!("{id} approve"), false);

    // Suspension withdraws the grant at once; resumption restores it.
    let (status, out) = act(
        &operator,
        &id,
        "suspend",
        json!({"reason": "security review"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{out}");
    assert_eq!(tax_debts_status(&bus).await.1, "policy.grant_suspended");
    let (status, out) = act(&operator, &id, "resume", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{out}");
    assert_eq!(tax_debts_status(&bus).await.0, 200);

    // The history says who did what, when and why; both versions' evidence
    // verifies again.
    let (_, shown) = read(&operator, &format!("/v1/connection-requests/{id}")).await;
    let history: Vec<(&str, &str)> = shown["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["transition"].as_str().unwrap(),
                h["by"]["participant"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        history,
        [
            ("submit", "mcabinet"),
            ("review", "age-operator"),
            ("request_changes", "age-operator"),
            ("resubmit", "mcabinet"),
            ("review", "age-operator"),
            ("approve", "age-operator"),
            ("confirm", "sfs"),
            ("suspend", "age-operator"),
            ("resume", "age-operator"),
        ]
    );
    assert_eq!(
        shown["history"][2]["reason"],
        "state which fields the citizen sees"
    );
    assert_eq!(shown["history"][3]["reason"], "fewer fields");
    assert_eq!(shown["allowed_transitions"], json!(["suspend", "revoke"]));
    let (status, evidence) = read(&sfs, &format!("/v1/connection-requests/{id}/evidence")).await;
    assert_eq!(status, StatusCode::OK);
    let evidence = evidence["evidence"].as_array().unwrap();
    assert_eq!(evidence.len(), 2);
    for e in evidence {
        assert_eq!(e["verification"]["verified"], true, "{e}");
        assert!(
            e["signature_input"]
                .as_str()
                .unwrap()
                .starts_with("mconnect=(")
        );
        assert!(e["headers"]["content-digest"].is_string());
    }

    // A restart on the same directory keeps the request and its grant.
    let Bus { sandbox, dir } = bus;
    sandbox.shutdown().await;
    let sandbox = mconnect_cli::sandbox::start(&support::args(dir.path()))
        .await
        .unwrap();
    let bus = Bus { sandbox, dir };
    assert_eq!(
        tax_debts_status(&bus).await.0,
        200,
        "the grant is in force after a restart"
    );
    let operator = admin(&bus, "age-operator");
    let (_, shown) = read(&operator, &format!("/v1/connection-requests/{id}")).await;
    assert_eq!(shown["state"], "active");
    assert_eq!(shown["history"].as_array().unwrap().len(), 9);
    assert_eq!(shown["evidence"][1]["verification"]["verified"], true);

    // Revocation withdraws it at once, and that survives a restart too.
    let (status, out) = act(&operator, &id, "revoke", json!({"reason": "service ended"})).await;
    assert_eq!(status, StatusCode::OK, "{out}");
    assert_audited(&bus, "age-operator", &format!("{id} revoke"), true);
    assert_eq!(tax_debts_status(&bus).await.1, "policy.denied");
    let (status, out) = act(&operator, &id, "resume", json!({})).await;
    assert_eq!(
        (status, out["code"].as_str()),
        (StatusCode::CONFLICT, Some("connect.illegal_transition"))
    );
    let Bus { sandbox, dir } = bus;
    sandbox.shutdown().await;
    let sandbox = mconnect_cli::sandbox::start(&support::args(dir.path()))
        .await
        .unwrap();
    let bus = Bus { sandbox, dir };
    assert_eq!(tax_debts_status(&bus).await.1, "policy.denied");
    let (_, shown) = read(
        &admin(&bus, "mcabinet"),
        &format!("/v1/connection-requests/{id}"),
    )
    .await;
    assert_eq!(shown["state"], "revoked");
    bus.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_wrong_key_and_unknown_service_applications_are_refused() {
    let bus = Bus::start().await;
    let mcabinet = admin(&bus, "mcabinet");
    let cahul = admin(&bus, "apl-cahul");
    let application = example("mcabinet-tax-debts.json");
    let path = "/v1/connection-requests";
    let signed = |client: &AdminClient, body: Bytes| {
        client
            .signed(Method::POST, path, body, CALLING_USER)
            .unwrap()
    };

    // (what, request, status, code)
    let mut forged = signed(&mcabinet, bytes(&application));
    forged.headers_mut().insert(
        "signature",
        http::HeaderValue::from_str(&format!(
            "mconnect=:{}:",
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [7u8; 64])
        ))
        .unwrap(),
    );
    let wrong_key = {
        // apl-cahul's key, but naming mcabinet's certificate.
        let manifest = &bus.sandbox.manifest;
        let dir = bus.dir.path();
        let p = |id: &str| manifest.participants.iter().find(|p| p.id == id).unwrap();
        let mut credentials = mconnect_sdk::Credentials::load(
            "mcabinet",
            &dir.join(&p("apl-cahul").cert),
            &dir.join(&p("apl-cahul").key),
            &dir.join(&manifest.ca),
            None,
        )
        .unwrap();
        let real = mconnect_sdk::Credentials::load(
            "mcabinet",
            &dir.join(&p("mcabinet").cert),
            &dir.join(&p("mcabinet").key),
            &dir.join(&manifest.ca),
            None,
        )
        .unwrap();
        credentials.keyid = real.keyid;
        mconnect::connect::client::signed_submission(
            &credentials,
            Method::POST,
            &mcabinet.url(path),
            bytes(&application),
            CALLING_USER,
        )
        .unwrap()
    };
    let mut changed_body = signed(&mcabinet, bytes(&application));
    let mut other = application.clone();
    other["services"][0]["fields"] = json!(["taxpayer", "debts"]);
    *changed_body.body_mut() = http_body_util::Full::new(bytes(&other));
    let mut unsigned = signed(&mcabinet, bytes(&application));
    unsigned.headers_mut().remove("signature-input");
    let mut unknown = example("unknown-service.json");
    unknown["applicant"] = json!({"idno": "1003603000063", "name": "Primăria municipiului Cahul", "system": "apl-cahul"});
    let cases = vec![
        ("forged signature bytes", forged, 401, "signature.invalid"),
        (
            "apl-cahul's key under mcabinet's keyid",
            wrong_key,
            401,
            "signature.invalid",
        ),
        (
            "body changed after signing",
            changed_body,
            401,
            "digest.mismatch",
        ),
        ("no signature", unsigned, 401, "signature.missing"),
        (
            "apl-cahul signs mcabinet's application",
            signed(&cahul, bytes(&application)),
            403,
            "connect.signer_not_applicant",
        ),
        (
            "an unknown service",
            signed(&cahul, bytes(&unknown)),
            422,
            "connect.unknown_service",
        ),
    ];
    for (what, request, status, code) in cases {
        let before = bus.sandbox.broker.broker.audit().tree_size();
        let (got, body) = mcabinet.send(request).await.unwrap();
        assert_eq!(
            (got.as_u16(), body["code"].as_str()),
            (status, Some(code)),
            "{what}: {body}"
        );
        assert!(
            bus.sandbox.broker.broker.audit().tree_size() > before,
            "{what}: refused submissions are audited"
        );
        if code == "connect.unknown_service" {
            let detail = body["detail"].as_str().unwrap();
            assert!(
                detail.contains("\"asp-rsp/marriages\"") && detail.contains("/services/0/service"),
                "{detail}"
            );
        }
    }
    let (_, list) = read(&mcabinet, path).await;
    assert!(
        list["connection_requests"].as_array().unwrap().is_empty(),
        "nothing was kept"
    );

    // A signed submission is filed once; the same bytes again are a replay.
    let request = signed(&mcabinet, bytes(&application));
    let again = {
        let mut r = http::Request::new(http_body_util::Full::new(bytes(&application)));
        *r.method_mut() = Method::POST;
        *r.uri_mut() = request.uri().clone();
        *r.headers_mut() = request.headers().clone();
        r
    };
    assert_eq!(mcabinet.send(request).await.unwrap().0, StatusCode::CREATED);
    let (status, body) = mcabinet.send(again).await.unwrap();
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::CONFLICT, Some("request.replayed")),
        "{body}"
    );

    // The OpenAPI document describes the endpoints.
    let (_, doc) = read(&mcabinet, "/v1/openapi.json").await;
    for p in [
        "/v1/connection-requests",
        "/v1/connection-requests/{id}",
        "/v1/connection-requests/{id}/evidence",
        "/v1/connection-requests/{id}/resubmit",
        "/v1/connection-requests/{id}/request-changes",
        "/v1/connection-requests/{id}/confirm",
        "/v1/connection-requests/{id}/revoke",
    ] {
        assert!(doc["paths"][p].is_object(), "{p} is documented");
    }
    bus.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_state_machine_over_the_api_and_a_new_purpose_on_the_data_plane() {
    let bus = Bus::start().await;
    let ungheni = admin(&bus, "apl-ungheni");
    let operator = admin(&bus, "age-operator");
    let cnas = admin(&bus, "cnas");
    let new_purpose = || {
        get(
            "/r1/cnas/insurance-record?idnp=2000000000015",
            "md-law-60-2012-art-23",
            "disability-support",
            Some("2000000000015"),
        )
    };
    // apl-ungheni has a grant for the service, but not for this basis.
    assert_refused(
        &bus.consumer("apl-ungheni")
            .call(&new_purpose())
            .await
            .unwrap(),
        403,
        "policy.basis_not_allowed",
    );

    let application = example("apl-ungheni-pensions.json");
    let (status, body) = submit(&ungheni, &application).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let first = body["id"].as_str().unwrap().to_string();
    let (_, body) = submit(&ungheni, &application).await;
    let second = body["id"].as_str().unwrap().to_string();
    assert_ne!(first, second);

    // (who, request, action, body, expected status, expected state or code)
    let reason = json!({"reason": "as the table says"});
    let none = json!({});
    let limited = json!({"rate_limit": {"requests": 5, "per": "second", "burst": 5}});
    let table: Vec<(&AdminClient, &str, &str, &Value, u16, &str)> = vec![
        // Illegal from submitted.
        (
            &operator,
            &first,
            "approve",
            &none,
            409,
            "connect.illegal_transition",
        ),
        (
            &operator,
            &first,
            "suspend",
            &reason,
            409,
            "connect.illegal_transition",
        ),
        (
            &cnas,
            &first,
            "confirm",
            &none,
            409,
            "connect.illegal_transition",
        ),
        // Operators decide; applicants and providers do not.
        (&ungheni, &first, "review", &none, 403, "admin.forbidden"),
        (&cnas, &first, "reject", &reason, 403, "admin.forbidden"),
        (&operator, &first, "review", &none, 200, "under_review"),
        (
            &operator,
            &first,
            "review",
            &none,
            409,
            "connect.illegal_transition",
        ),
        (
            &operator,
            &first,
            "reject",
            &none,
            400,
            "connect.reason_required",
        ),
        (&operator, &first, "reject", &reason, 200, "rejected"),
        (
            &operator,
            &first,
            "revoke",
            &reason,
            409,
            "connect.illegal_transition",
        ),
        // The second one is approved, confirmed, suspended and revoked.
        (&operator, &second, "review", &none, 200, "under_review"),
        (&operator, &second, "approve", &limited, 200, "approved"),
        (
            &operator,
            &second,
            "resume",
            &none,
            409,
            "connect.illegal_transition",
        ),
        (&cnas, &second, "confirm", &none, 200, "active"),
        (
            &cnas,
            &second,
            "confirm",
            &none,
            409,
            "connect.illegal_transition",
        ),
        (
            &operator,
            &second,
            "resume",
            &none,
            409,
            "connect.illegal_transition",
        ),
        (&operator, &second, "suspend", &reason, 200, "suspended"),
        (
            &operator,
            &second,
            "suspend",
            &reason,
            409,
            "connect.illegal_transition",
        ),
        (&operator, &second, "resume", &none, 200, "active"),
        (
            &operator,
            &second,
            "nonsense",
            &none,
            404,
            "admin.unknown_endpoint",
        ),
    ];
    for (who, id, action, body, status, expected) in table {
        let (got, out) = act(who, id, action, body.clone()).await;
        let what = format!("{} {action} {id}", who.participant());
        assert_eq!(got.as_u16(), status, "{what}: {out}");
        if status == 200 {
            assert_eq!(out["state"], expected, "{what}");
        } else {
            assert_eq!(out["code"], expected, "{what}: {out}");
        }
    }
    // The new purpose now passes on the data plane.
    let out = bus
        .consumer("apl-ungheni")
        .call(&new_purpose())
        .await
        .unwrap();
    assert_eq!(
        out.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&out.body)
    );
    let record: Value = serde_json::from_slice(&out.body).unwrap();
    assert!(record.get("contributions").is_some());
    assert!(
        record["contributions"][0].get("amount_mdl").is_none(),
        "only the fields asked for are delivered"
    );

    // Listings filter by state.
    let (_, list) = read(&operator, "/v1/connection-requests?state=rejected").await;
    let ids: Vec<&str> = list["connection_requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [first.as_str()]);
    let (status, list) = read(&operator, "/v1/connection-requests?state=nope").await;
    assert_eq!(
        (status, list["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("request.malformed"))
    );
    let (_, list) = read(&operator, "/v1/connection-requests?overdue=true").await;
    assert_eq!(
        list["overdue"], 0,
        "nothing is 30 days old in a fresh sandbox"
    );

    let (status, out) = act(&operator, &second, "revoke", reason.clone()).await;
    assert_eq!(status, StatusCode::OK, "{out}");
    assert_refused(
        &bus.consumer("apl-ungheni")
            .call(&new_purpose())
            .await
            .unwrap(),
        403,
        "policy.basis_not_allowed",
    );
    bus.stop().await;
}

/// Runs `mconnect connect --sandbox DIR --as WHO --json ARGS…` and returns the exit
/// success and the JSON it printed.
async fn cli(bus: &Bus, who: &str, args: &[&str]) -> (bool, Value) {
    let out = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        tokio::process::Command::new(support::mconnect_bin())
            .arg("connect")
            .arg("--sandbox")
            .arg(bus.dir.path())
            .args(["--as", who, "--json"])
            .args(args)
            .output(),
    )
    .await
    .unwrap()
    .unwrap();
    let printed = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.success(), printed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_walks_the_procedure_as_sandbox_participants() {
    let bus = Bus::start().await;
    let file = support::repo().join("examples/connect/mcabinet-tax-debts.json");
    let file = file.to_str().unwrap();

    let (ok, out) = cli(&bus, "mcabinet", &["submit", file]).await;
    assert!(ok, "{out}");
    let id = out["id"].as_str().unwrap().to_string();
    assert_eq!(out["evidence"][0]["verification"]["verified"], true);

    // (who, arguments, succeeds, state after or problem code)
    let steps: Vec<(&str, Vec<&str>, bool, &str)> = vec![
        ("mcabinet", vec!["approve", &id], false, "admin.forbidden"),
        ("age-operator", vec!["review", &id], true, "under_review"),
        (
            "age-operator",
            vec!["request-changes", &id, "--reason", "narrow the fields"],
            true,
            "changes_requested",
        ),
        (
            "mcabinet",
            vec!["resubmit", &id, file, "--reason", "same fields, explained"],
            true,
            "resubmitted",
        ),
        ("age-operator", vec!["review", &id], true, "under_review"),
        (
            "age-operator",
            vec!["approve", &id, "--rate-limit", "2/second"],
            true,
            "approved",
        ),
        ("sfs", vec!["confirm", &id], true, "active"),
        (
            "age-operator",
            vec!["suspend", &id, "--reason", "check"],
            true,
            "suspended",
        ),
        ("age-operator", vec!["resume", &id], true, "active"),
        (
            "age-operator",
            vec!["reject", &id, "--reason", "late"],
            false,
            "connect.illegal_transition",
        ),
        (
            "age-operator",
            vec!["revoke", &id, "--reason", "ended"],
            true,
            "revoked",
        ),
    ];
    for (who, args, succeeds, expected) in steps {
        let (ok, out) = cli(&bus, who, &args).await;
        assert_eq!(ok, succeeds, "{who} {args:?}: {out}");
        let got = if succeeds {
            &out["state"]
        } else {
            &out["code"]
        };
        assert_eq!(got, expected, "{who} {args:?}: {out}");
    }
    assert_eq!(
        cli(&bus, "sfs", &["show", &id]).await.1["history"]
            .as_array()
            .unwrap()
            .len(),
        10
    );
    let (ok, out) = cli(&bus, "mcabinet", &["show", &id, "--evidence"]).await;
    assert!(ok);
    assert_eq!(out["evidence"].as_array().unwrap().len(), 2);
    let (ok, out) = cli(&bus, "age-operator", &["list", "--state", "revoked"]).await;
    assert!(ok);
    assert_eq!(out["connection_requests"][0]["id"], id.as_str());
    bus.stop().await;
}
