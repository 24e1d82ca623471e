//! Issue 11, item 11 (PROTOCOL.md section 9): every entry of the sandbox's
//! `try` list succeeds when the list is run in order on a fresh sandbox, and
//! again when it is run a second time; the representation scenario still
//! runs after it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeSet;

use mconnect_cli::sandbox::SANDBOX_CALLING_USER;
use support::Bus;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_try_entry_succeeds_twice_and_the_scenarios_still_run() {
    let bus = Bus::start().await;
    let manifest = &bus.sandbox.manifest;

    // At least one entry per catalogued service the shipped policies grant.
    let rules = bus.sandbox.broker.broker.rules();
    let tried: BTreeSet<&str> = manifest.tries.iter().map(|t| t.service.as_str()).collect();
    for service in rules.catalog.services() {
        let granted = rules
            .policy
            .grants()
            .any(|g| g.services.contains(&service.key) && g.representation.is_none());
        let admin_only = service.key == "mconnect/audit-log";
        if granted && service.is_callable() && !admin_only {
            assert!(
                tried.contains(service.key.as_str()),
                "no try entry for {}",
                service.key
            );
        }
    }

    for pass in 1..=2 {
        for (i, entry) in manifest.tries.iter().enumerate() {
            let call = entry.call(SANDBOX_CALLING_USER).unwrap();
            let out = bus.consumer(&entry.client).call(&call).await.unwrap();
            assert!(
                out.status.is_success() && out.receipt.is_ok(),
                "pass {pass}, try {i} ({} as {}): {} {}",
                entry.service,
                entry.client,
                out.status,
                String::from_utf8_lossy(&out.body)
            );
        }
    }

    let exe = support::examples_dir().join("scenario_representation");
    let out = tokio::process::Command::new(&exe)
        .arg("--sandbox")
        .arg(bus.dir.path())
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "scenario_representation after the try list: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    bus.stop().await;
}
