//! A real SMTP server (Python's aiosmtpd, `pip install -r
//! tests/interop/requirements.txt`) on a loopback port, storing each message
//! in a Maildir, and the way to point the sandbox's MNotify at it: the one
//! line of `{dir}/adapters/mnotify/smtp`, written before the sandbox starts.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// The mailbox the sandbox's try-list notification goes to at every start.
const TRY_LIST_MAILBOX: &str = "try-list@sandbox.mconnect.md";

/// A running aiosmtpd.
pub struct Smtp {
    _child: tokio::process::Child,
    pub port: u16,
    pub maildir: PathBuf,
}

impl Smtp {
    /// Starts aiosmtpd on `port`, writing to `maildir`.
    pub async fn start(port: u16, maildir: &Path) -> Smtp {
        let child = tokio::process::Command::new("python3")
            .args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{port}"))
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(maildir)
            .kill_on_drop(true)
            .spawn()
            .expect("python3 -m aiosmtpd (pip install -r tests/interop/requirements.txt)");
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Smtp {
                    _child: child,
                    port,
                    maildir: maildir.to_path_buf(),
                };
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("aiosmtpd did not listen on {port} within 10 s");
    }

    /// The messages received so far.
    pub fn mails(&self) -> Vec<String> {
        mails(&self.maildir)
    }
}

/// Points the MNotify of a sandbox about to start in `dir` at the SMTP
/// server on `port`, or at none.
pub fn serve_sandbox(dir: &Path, port: Option<u16>) {
    let data = dir.join("adapters").join("mnotify");
    std::fs::create_dir_all(&data).unwrap();
    match port {
        Some(port) => std::fs::write(data.join("smtp"), format!("127.0.0.1:{port}\n")).unwrap(),
        None => {
            let _ = std::fs::remove_file(data.join("smtp"));
        }
    }
}

/// The mail received, less the notification the sandbox sends at start for
/// its try list (addressed to its own fixture mailbox).
pub fn mails(maildir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for sub in ["new", "cur"] {
        if let Ok(entries) = std::fs::read_dir(maildir.join(sub)) {
            for e in entries.flatten() {
                out.push(std::fs::read_to_string(e.path()).unwrap_or_default());
            }
        }
    }
    out.retain(|m| !m.contains(TRY_LIST_MAILBOX));
    out
}

/// Waits (bounded) until `n` messages are there, then a little longer to
/// see that no more come.
pub async fn wait_for_mails(maildir: &Path, n: usize, within: Duration) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + within;
    while mails(maildir).len() < n && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    mails(maildir)
}

/// A loopback port free now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
