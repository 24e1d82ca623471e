//! The data-access portal in a real browser: `tests/browser/portal_flow.py`
//! drives Debian's Chromium (headless, through Playwright from PyPI) through
//! the catalog, the sign-in and a lookup, runs axe-core (from npm) on every
//! page, and fails on any serious or critical accessibility violation.
//! `tests/run.sh` installs Chromium, Playwright and axe-core first.

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
    ] {
        assert!(
            pages.iter().any(|p| p == page),
            "axe checked {page}: {summary}"
        );
    }
    bus.stop().await;
}
