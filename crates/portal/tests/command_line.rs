//! `mconnect-portal` refuses to start where it would be unsafe: plain HTTP
//! on a public address, the development sign-in anywhere but a sandbox on
//! loopback with no proxy in front, lookups without a place for their state, sign-ins without an audit log.
//! Each refusal is exit 64 with a sentence that says what to do.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::PathBuf;

#[test]
fn unsafe_set_ups_are_refused_before_anything_listens() {
    let dir = tempfile::tempdir().unwrap();
    let officials = dir.path().join("officials.json");
    std::fs::write(
        &officials,
        r#"{"officials": [{"idnp": "2000000000015", "name": "N", "organisation": "O", "participant": "apl-cahul", "roles": ["official"]}]}"#,
    )
    .unwrap();
    let officials = officials.to_str().unwrap();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let policies = root.join("policies");
    let pki = dir.path().to_str().unwrap().to_owned();
    let cases: Vec<(&str, Vec<&str>, &str)> = vec![
        (
            "plain HTTP on a public address",
            vec!["--listen", "0.0.0.0:0"],
            "TLS proxy",
        ),
        (
            "development sign-in on a public address",
            vec![
                "--listen",
                "0.0.0.0:0",
                "--behind-proxy",
                "--dev-officials",
                officials,
            ],
            "sandbox",
        ),
        (
            "development sign-in behind a proxy on loopback",
            vec![
                "--listen",
                "127.0.0.1:0",
                "--behind-proxy",
                "--dev-officials",
                officials,
            ],
            "no proxy",
        ),
        (
            "lookups without a state directory",
            vec![
                "--listen",
                "127.0.0.1:0",
                "--broker-url",
                "https://127.0.0.1:1",
                "--pki",
                &pki,
                "--policies",
                policies.to_str().unwrap(),
            ],
            "--state is required",
        ),
        (
            "a sign-in with no audit log",
            vec!["--listen", "127.0.0.1:0", "--dev-officials", officials],
            "sign-ins are audited",
        ),
    ];
    for (what, args, says) in cases {
        let (code, stderr) = support::portal_command(&args);
        assert_eq!(code, 64, "{what}: {stderr}");
        assert!(stderr.contains(says), "{what}: {stderr}");
    }
}
