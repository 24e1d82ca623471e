//! Interoperability: requests signed by an independent RFC 9421
//! implementation (Python's http-message-signatures) with sandbox
//! participants' keys go through the real broker, and that implementation
//! verifies the broker's receipts. `tests/run.sh` installs the package.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_independent_rfc9421_implementation_interoperates() {
    let bus = support::Bus::start().await;
    let script = support::repo().join("tests/interop/rfc9421_interop.py");
    let dir = bus.dir.path().to_path_buf();
    let output = tokio::process::Command::new("python3")
        .arg(&script)
        .arg(&dir)
        .args(["apl-cahul", "apl-balti", "apl-ungheni"])
        .output()
        .await
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "interop failed (is http-message-signatures installed? tests/run.sh installs it)\nstdout: {stdout}\nstderr: {stderr}"
    );
    let results: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let results = results.as_array().unwrap();
    // ed25519, ecdsa-p256-sha256 and rsa-v1_5-sha256 signers, GET and POST.
    let algs: std::collections::BTreeSet<&str> =
        results.iter().filter_map(|r| r["alg"].as_str()).collect();
    assert_eq!(algs.len(), 3, "{stdout}");
    assert!(
        results
            .iter()
            .any(|r| r["service"] == "asp-rsp/persons-lookup"),
        "{stdout}"
    );
    bus.stop().await;
}
