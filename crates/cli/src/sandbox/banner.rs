//! The text `mconnect sandbox` prints once it runs: where things are, and
//! calls to try.
//!
//! Invariants: every call it suggests is an entry of the `try` list that was
//! just written to `sandbox.json`, named by its index there (so it is exactly
//! what `mconnect call --try N` runs); every command is printed with absolute
//! paths, quoted for a POSIX shell, so it runs from any working directory.

use std::fmt::Write;
use std::path::Path;

use mconnect::rules::Rules;

use super::SandboxManifest;

/// How many `try` entries the banner suggests; the rest are in sandbox.json.
const SUGGESTED: usize = 6;

/// The banner for a running sandbox in `dir` that wrote `m`, deciding by `rules`.
pub(crate) fn welcome(m: &SandboxManifest, dir: &Path, rules: &Rules) -> String {
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let exe = std::env::current_exe().unwrap_or_else(|_| "mconnect".into());
    let mut out = String::new();
    // Writing to a String cannot fail.
    match &m.cluster {
        None => {
            let _ = writeln!(out, "MConnect sandbox is running.");
            let _ = writeln!(out, "  data plane : {}", m.broker.data_url);
            let _ = writeln!(
                out,
                "  admin API  : {}  (OpenAPI at /v1/openapi.json)",
                m.broker.admin_url
            );
            let _ = writeln!(
                out,
                "  operations : {}/readyz  (plain HTTP)",
                m.broker.ops_url
            );
        }
        Some(cluster) => {
            let _ = writeln!(
                out,
                "MConnect sandbox is running as a cluster of {} brokers.",
                cluster.brokers.len()
            );
            let _ = writeln!(
                out,
                "  data plane : {}  (nginx, TLS passed through to the brokers)",
                cluster.data_url
            );
            for b in &cluster.brokers {
                let _ = writeln!(
                    out,
                    "  broker {:<3} : data {}  admin {}  operations {}/readyz  (pid {})",
                    b.id, b.data_url, b.admin_url, b.ops_url, b.pid
                );
            }
            let _ = writeln!(out, "  PostgreSQL : {}", cluster.postgres);
        }
    }
    if let Some(portal) = &m.portal {
        let _ = writeln!(
            out,
            "  portal     : {}/catalog  (certificate of the sandbox CA, pki/ca.cert.pem)",
            portal.url
        );
    }
    let _ = writeln!(out, "  directory  : {}", dir.display());
    let _ = writeln!(out, "  manifest   : {}", dir.join("sandbox.json").display());
    let _ = writeln!(out);
    if m.tries.is_empty() {
        let _ = writeln!(out, "The shipped policies allow no call to try.");
    } else {
        let _ = writeln!(out, "Try, in another terminal (from any directory):");
    }
    for (i, t) in m.tries.iter().enumerate().take(SUGGESTED) {
        let what = t
            .service
            .split_once('/')
            .and_then(|(provider, code)| rules.catalog.service(provider, code))
            .map(|s| s.name.en.clone())
            .unwrap_or_else(|| t.service.clone());
        let _ = writeln!(
            out,
            "  {} call --sandbox {} --try {i}",
            shell_word(&exe),
            shell_word(&dir)
        );
        let _ = writeln!(
            out,
            "      # {what}: {} {} as {}",
            t.method, t.path, t.client
        );
    }
    if m.tries.len() > SUGGESTED {
        let _ = writeln!(
            out,
            "  ... {} calls in all: `try` in sandbox.json, numbered 0 to {}",
            m.tries.len(),
            m.tries.len() - 1
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "Ctrl-C stops the sandbox; starting it again keeps its audit log."
    );
    out
}

/// A path as one POSIX shell word: as it is when it holds only safe
/// characters, otherwise in single quotes.
fn shell_word(path: &Path) -> String {
    let text = path.display().to_string();
    let safe = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+,:@%".contains(c));
    if safe {
        text
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_only_what_needs_it() {
        for (path, word) in [
            ("/tmp/sandbox", "/tmp/sandbox"),
            ("/tmp/my sandbox", "'/tmp/my sandbox'"),
            ("/tmp/it's", r"'/tmp/it'\''s'"),
            ("", "''"),
        ] {
            assert_eq!(shell_word(Path::new(path)), word);
        }
    }
}
