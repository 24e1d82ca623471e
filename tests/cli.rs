//! The `mconnect` binary as a user runs it: real processes, real files.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::Command;

fn mconnect() -> Command {
    Command::new(support::mconnect_bin())
}

#[test]
fn a_bad_config_exits_64_before_binding() {
    let dir = tempfile::tempdir().unwrap();
    // Unknown key.
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[listen]\ndata = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\nsurprise = 1\n",
    )
    .unwrap();
    let out = mconnect()
        .args(["serve", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(64),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("surprise"));
    // Missing file.
    let out = mconnect()
        .args(["serve", "--config"])
        .arg(dir.path().join("absent.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    // The shipped example parses but points at a sandbox that does not exist yet.
    let example = support::repo().join("examples/broker.toml");
    let text = std::fs::read_to_string(&example).unwrap();
    let copy = dir.path().join("sub/broker.toml");
    std::fs::create_dir_all(copy.parent().unwrap()).unwrap();
    std::fs::write(&copy, text).unwrap();
    let out = mconnect()
        .args(["serve", "--config"])
        .arg(&copy)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("tls.ca"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn pki_makes_a_ca_and_certificates_of_each_key_type() {
    let dir = tempfile::tempdir().unwrap();
    let out = mconnect()
        .args(["pki", "init", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    for (name, key) in [("a-ed", "ed25519"), ("a-ec", "p256"), ("a-rsa", "rsa")] {
        let out = mconnect()
            .args(["pki", "issue", "--name", name, "--key", key, "--dir"])
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let fingerprint = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert_eq!(fingerprint.len(), 64);
        // openssl agrees the certificate chains to the CA.
        let verify = Command::new("openssl")
            .args(["verify", "-CAfile"])
            .arg(dir.path().join("ca.cert.pem"))
            .arg(dir.path().join(format!("{name}.cert.pem")))
            .output()
            .unwrap();
        assert!(
            verify.status.success(),
            "{}",
            String::from_utf8_lossy(&verify.stdout)
        );
    }
    // A second init refuses to overwrite the CA.
    let out = mconnect()
        .args(["pki", "init", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let out = mconnect()
        .args(["pki", "issue", "--name", "Bad_Name", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_command_prints_status_body_and_receipt() {
    let bus = support::Bus::start().await;
    let out = tokio::process::Command::new(support::mconnect_bin())
        .args(["call", "--try", "0", "--sandbox"])
        .arg(bus.dir.path())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("status: 200"), "{stdout}");
    assert!(stdout.contains("receipt: verified"), "{stdout}");
    bus.stop().await;
}

#[test]
fn usage_errors_exit_64_and_the_help_names_every_exit_code() {
    let help = mconnect().arg("--help").output().unwrap();
    assert!(help.status.success());
    let text = String::from_utf8_lossy(&help.stdout);
    for code in ["  0 ", "  1 ", "  3 ", "  4 ", "  64 "] {
        assert!(text.contains(code), "`{code}` in: {text}");
    }
    for args in [
        vec!["no-such-command"],
        vec!["participant", "list", "--no-such-flag"],
        vec!["call", "--try", "not-a-number"],
        vec!["audit", "export", "--pages", "0"],
    ] {
        let out = mconnect().args(&args).output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(64),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
