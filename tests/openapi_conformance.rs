//! The admin API does what its OpenAPI document says: schemathesis (PyPI,
//! pinned in tests/interop/requirements.txt; `tests/run.sh` installs it)
//! generates requests from `/v1/openapi.json` — valid ones, invalid ones,
//! undeclared methods — and sends them to a sandbox of this test's own as
//! the operator, over mutual TLS with the operator's certificate, and every
//! check runs (no server error, documented statuses, content types and
//! schemas, valid data accepted, invalid data refused, 405 with `Allow`).
//! No failure is allowed.
//!
//! tests/interop/schemathesis_hooks.py says what JSON Schema cannot (the
//! custom formats `idno` and `pem-certificate`, the path's id repeated in a
//! participant's body). `MCONNECT_SCHEMATHESIS_SEED` replays another seed;
//! `MCONNECT_SCHEMATHESIS_EXAMPLES` runs more cases per operation.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

/// How many operations the document describes, besides `GET
/// /v1/openapi.json` (schemathesis leaves out the document it loaded).
fn documented_operations() -> usize {
    let doc = mconnect::admin::openapi();
    doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(path, _)| *path != "/v1/openapi.json")
        .map(|(_, item)| {
            ["get", "put", "post", "delete", "patch"]
                .iter()
                .filter(|m| item.get(**m).is_some())
                .count()
        })
        .sum()
}

/// The number after `label` on the summary's line, e.g. `Tested: 34`.
fn number_after(output: &str, label: &str) -> Option<usize> {
    output.lines().find_map(|line| {
        let rest = line.trim().strip_prefix(label)?;
        rest.trim()
            .split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_conforms_to_its_openapi_document() {
    let bus = support::Bus::start().await;
    let dir = bus.dir.path().to_path_buf();
    let pki = bus.pki();
    let admin_url = bus.sandbox.manifest.broker.admin_url.clone();
    let seed = std::env::var("MCONNECT_SCHEMATHESIS_SEED").unwrap_or_else(|_| "1".into());
    let examples = std::env::var("MCONNECT_SCHEMATHESIS_EXAMPLES").unwrap_or_else(|_| "30".into());

    let mut command = tokio::process::Command::new("python3");
    command
        .args(["-m", "schemathesis.cli", "run"])
        .arg(format!("{admin_url}/v1/openapi.json"))
        .args(["--checks", "all"])
        .arg("--request-cert")
        .arg(pki.join("age-operator.cert.pem"))
        .arg("--request-cert-key")
        .arg(pki.join("age-operator.key.pem"))
        .arg("--tls-verify")
        .arg(pki.join("ca.cert.pem"))
        .args(["--max-examples", &examples, "--seed", &seed])
        .args(["--workers", "1", "--generation-database", "none"])
        .args(["--request-timeout", "20"])
        .env("SCHEMATHESIS_HOOKS", "tests.interop.schemathesis_hooks")
        .env("PYTHONPATH", support::repo())
        .env("MCONNECT_SANDBOX_DIR", &dir)
        .env("NO_COLOR", "1")
        .current_dir(&dir)
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(300), command.output())
        .await
        .expect("schemathesis finishes within five minutes")
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "schemathesis found the admin API at odds with its document (seed {seed}; is schemathesis installed? tests/run.sh installs it)\nstdout: {stdout}\nstderr: {stderr}"
    );

    // It ran every operation of the document, and ran them in earnest.
    let operations = documented_operations();
    assert_eq!(
        number_after(&stdout, "Tested:"),
        Some(operations),
        "every documented operation is tested\n{stdout}"
    );
    let generated = stdout
        .lines()
        .find(|l| l.contains(" generated, "))
        .unwrap_or_else(|| panic!("no summary of test cases\n{stdout}"));
    let count: usize = generated
        .trim()
        .split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(
        count >= 20 * operations,
        "too few cases ({generated}) for {operations} operations\n{stdout}"
    );
    assert!(
        generated.contains(&format!("{count} passed")),
        "{generated}\n{stdout}"
    );

    // Nothing the run did locked the operator out of its own sandbox.
    let operator = support::admin_client(&dir, &admin_url, "age-operator");
    let request = operator
        .plain(http::Method::GET, "/v1/participants/age-operator", None)
        .unwrap();
    let (status, body) = operator.send(request).await.unwrap();
    assert_eq!(status, http::StatusCode::OK, "{body}");
    bus.stop().await;
}
