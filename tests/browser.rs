//! The data-access portal in a real browser: `tests/browser/portal_flow.py`
//! drives Debian's Chromium (headless, through Playwright from PyPI) through
//! the catalog, the sign-in and a lookup, runs axe-core (from npm) on every
//! page, and fails on any serious or critical accessibility violation. It
//! also takes connection applications through, one of an authority not yet
//! on the bus (Copceac) with the certificate the sandbox's CA issues here
//! for its system. `tests/run.sh` installs Chromium, Playwright and axe-core
//! first, and builds the binaries the sandbox runs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use support::{Bus, repo};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_official_uses_the_portal_in_chromium_and_every_page_passes_axe() {
    let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| std::path::Path::new(p).is_file())
        .expect("Chromium is not installed: run tests/run.sh, which installs Debian's chromium");
    let bus = Bus::start().await;
    let script = repo().join("tests/browser/portal_flow.py");
    let dir = bus.dir.path().to_path_buf();
    // Copceac is not on the bus: its system's certificate, from the bus CA
    // (the sandbox's), is what its administrator pastes into the form.
    let ca = mconnect::pki::DevCa::load(&bus.pki()).unwrap();
    let copceac = ca
        .issue(
            "apl-copceac",
            "Primăria satului Copceac",
            mconnect::pki::KeyType::Ed25519,
        )
        .unwrap();
    copceac.write(&bus.pki(), "apl-copceac").unwrap();
    let registry = bus.sandbox.broker.broker.registry();
    assert!(registry.snapshot().get("apl-copceac").is_none());
    // The browser runs for some seconds: off the runtime's workers, with a
    // bound so a hung browser fails the test instead of stalling it.
    let output = tokio::time::timeout(
        std::time::Duration::from_secs(240),
        tokio::process::Command::new("python3")
            .arg(&script)
            .arg("--sandbox")
            .arg(&dir)
            .arg("--chromium")
            .arg(chromium)
            .arg("--copceac-certificate")
            .arg(bus.pki().join("apl-copceac.cert.pem"))
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the browser run ends within 4 minutes")
    .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}\n{stdout}");
    let summary: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    let pages = summary["pages_checked"].as_array().unwrap();
    for page in [
        "catalog",
        "service",
        "sign-in",
        "question",
        "check",
        "result",
        "refused",
        "audit-declare",
        "audit-results",
        "audit-record",
        "audit-refused",
        "applications",
        "application-form-errors",
        "application-signing",
        "application-show",
        "application-refused",
        "operator-show",
        "operator-diff",
        "confirmation",
        "application-lookup",
        "application-joining",
        "application-registration-errors",
        "application-registration",
        "registration-check",
        "registration-signing",
        "registration-signed",
        "application-registration-show",
        "application-registration-refused",
        "operator-registration",
        "operator-registration-approved",
        "applications-joined",
        "application-joined-show",
        "registration-confirmation",
    ] {
        assert!(
            pages.iter().any(|p| p == page),
            "axe checked {page}: {summary}"
        );
    }
    // The operator's approval in the browser put Copceac's system on the
    // bus, with the certificate its administrator pasted.
    let snapshot = registry.snapshot();
    let joined = &snapshot
        .get("apl-copceac")
        .expect("Copceac is a participant once approved")
        .participant;
    assert_eq!(joined.organisation.idno, "1003605000089");
    assert_eq!(joined.certificates[0].fingerprint, copceac.fingerprint);
    bus.stop().await;
}
