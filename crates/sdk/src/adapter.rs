//! What every adapter binary shares: the arguments `mconnect sandbox` passes
//! ([`AdapterArgs`]), logging to standard error, the process shape
//! ([`run_main`]: die with the parent, report an error, exit 1), serving until
//! stopped ([`run_provider`]), durable file writes ([`write_atomic`]) and
//! timestamps that sort as text ([`now_rfc3339`]).
//!
//! Invariants: an adapter prints `LISTENING https://{addr}` on standard
//! output once, after its listener is bound and before it serves (the
//! sandbox waits for that line); a file written with [`write_atomic`] is seen
//! whole, old or new, after any crash.

use std::future::Future;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::keys::{Credentials, SdkError, TrustedKeys};
use crate::provider::{ProviderRequest, ProviderResponse, ProviderSettings, serve_provider};

/// The arguments every adapter takes, as `mconnect sandbox` passes them.
/// Embed with `#[command(flatten)]`; the adapter's own flags sit beside.
#[derive(clap::Args, Debug, Clone)]
pub struct AdapterArgs {
    /// This adapter's participant id (its key and certificate are in --pki);
    /// when absent, the adapter's default id, if it has one.
    #[arg(long)]
    pub participant: Option<String>,
    /// Directory with ca.cert.pem, broker.cert.pem and {participant}.{cert,key}.pem.
    #[arg(long)]
    pub pki: PathBuf,
    /// Signature algorithm or key type; the adapter's default when absent.
    #[arg(long)]
    pub alg: Option<String>,
    /// Listen address.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Data directory, for adapters that keep state.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// The broker's data-plane URL, for adapters that also call the bus.
    #[arg(long)]
    pub broker_url: Option<String>,
}

impl AdapterArgs {
    /// The participant id, or `default` (the adapter's own name).
    pub fn participant_or<'a>(&'a self, default: &'a str) -> &'a str {
        self.participant.as_deref().unwrap_or(default)
    }

    /// This participant's key and certificate and the broker's certificate
    /// from `--pki`, signing with `--alg` or `default_alg`.
    pub fn credentials(
        &self,
        default_participant: &str,
        default_alg: &str,
    ) -> Result<(Credentials, TrustedKeys), SdkError> {
        let alg = self.alg.as_deref().unwrap_or(default_alg);
        let credentials =
            Credentials::from_pki_dir(&self.pki, self.participant_or(default_participant), alg)?;
        let broker = TrustedKeys::broker_in_pki_dir(&self.pki)?;
        Ok((credentials, broker))
    }

    /// The participant id, for an adapter that has no default one.
    pub fn required_participant(&self, service: &str) -> Result<&str, SdkError> {
        self.participant.as_deref().ok_or_else(|| {
            SdkError::Arguments(format!(
                "--participant is required: {service} has no default participant id"
            ))
        })
    }

    /// `--data`, required by adapters that keep state.
    pub fn data_dir(&self) -> Result<&Path, SdkError> {
        self.data.as_deref().ok_or_else(|| {
            SdkError::Arguments("--data is required: the adapter keeps its state there".into())
        })
    }
}

/// Runs an adapter process: first ties it to its parent (a sandbox killed
/// while this starts takes it along), logs to standard error
/// ([`init_logging`]), then runs `main`; an error is printed as
/// `{name}: {error}` and exits 1. `name` is the binary's name,
/// `mconnect-adapter-{x}`.
pub fn run_main<F>(name: &str, main: F) -> ExitCode
where
    F: Future<Output = Result<(), Box<dyn std::error::Error>>>,
{
    crate::lifeline::exit_when_parent_dies();
    init_logging(name);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("{name}: starting the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(main) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {e}");
            ExitCode::from(1)
        }
    }
}

/// Logs to standard error, filtered by `RUST_LOG`; without it, warnings and
/// errors, and the adapter's own events from `info` up (the binary `name`'s
/// crate, [`default_log_filter`]), so an adapter that reports its work at
/// `info` (a notification sent) is heard by default while the SDK's and the
/// libraries' chatter is not. Standard output carries only the `LISTENING`
/// line the sandbox reads.
pub fn init_logging(name: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_log_filter(name)));
    // A second call (tests) keeps the first subscriber.
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter)
        .try_init();
}

/// The filter used when `RUST_LOG` is unset: `warn`, and `info` for the
/// binary `name`'s own events (a binary's events have its crate name as
/// their target: `mconnect-adapter-x` logs as `mconnect_adapter_x`).
pub fn default_log_filter(name: &str) -> String {
    format!("warn,{}=info", name.replace('-', "_"))
}

/// Serves `handler` as a provider until Ctrl-C, SIGTERM or the parent's
/// death, then lets requests in flight finish. Prints
/// `LISTENING https://{addr}` once the listener is bound.
pub async fn run_provider<H, F>(settings: ProviderSettings, handler: H) -> Result<(), SdkError>
where
    H: Fn(ProviderRequest) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = ProviderResponse> + Send + 'static,
{
    let server = serve_provider(settings, handler).await?;
    announce(server.local_addr());
    crate::lifeline::until_stopped().await;
    server.shutdown().await;
    Ok(())
}

/// Prints the line the sandbox waits for, and flushes it.
pub fn announce(addr: SocketAddr) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "LISTENING https://{addr}");
    let _ = out.flush();
}

/// Writes `bytes` to `path` so that a reader, or a restart after a crash,
/// sees the old file or the new one, whole: a temporary file beside it,
/// fsync, rename over, fsync of the directory (the rename is durable only
/// once the directory entry is).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

/// Now in UTC as RFC 3339 with six fraction digits, so that instants sort
/// correctly as text (lists of a person's authorisations, payment orders).
pub fn now_rfc3339() -> String {
    rfc3339(time::OffsetDateTime::now_utc())
}

/// `t` in UTC as RFC 3339 with six fraction digits.
pub fn rfc3339(t: time::OffsetDateTime) -> String {
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
    );
    t.to_offset(time::UtcOffset::UTC)
        .format(&format)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn atomic_write_replaces_whole_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        write_atomic(&path, b"old").unwrap();
        write_atomic(&path, b"new").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "no temporary file is left behind");
    }

    #[test]
    fn by_default_an_adapter_hears_its_own_info_and_others_warnings() {
        for (name, filter) in [
            (
                "mconnect-adapter-mnotify",
                "warn,mconnect_adapter_mnotify=info",
            ),
            ("mconnect-adapter-msign", "warn,mconnect_adapter_msign=info"),
        ] {
            assert_eq!(default_log_filter(name), filter);
            // It parses as a filter, so init_logging never falls back silently.
            assert!(tracing_subscriber::EnvFilter::try_new(filter).is_ok());
        }
    }

    #[test]
    fn timestamps_sort_as_text() {
        let a = rfc3339(time::macros::datetime!(2026-01-02 03:04:05.5 UTC));
        let b = rfc3339(time::macros::datetime!(2026-01-02 03:04:05.25 +02:00));
        assert_eq!(a, "2026-01-02T03:04:05.500000Z");
        assert_eq!(b, "2026-01-02T01:04:05.250000Z");
        assert!(b < a);
    }
}
