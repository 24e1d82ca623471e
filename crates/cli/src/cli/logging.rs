//! Logging of every `mconnect` command: a tracing-subscriber filter
//! (`--log`, `MCONNECT_LOG`) and a format (`--log-format`,
//! `MCONNECT_LOG_FORMAT`): `text` for people (the default), or `json`, one
//! JSON object a line for log collectors, with the event's fields at the top
//! level. The broker logs one event per exchange (`mconnect::exchange`:
//! exchange id, request id, trace id, client, provider, service, code,
//! status, audit seq, timings), never a person's id, a query or a body.
//!
//! Invariant: a process logs in one format, set once at start; the sandbox
//! starts its cluster's brokers in the same one ([`format`]).

use std::sync::OnceLock;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// How log events are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One line of text per event (colours on a terminal).
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, `message`
    /// and the event's fields, plus the `span` it happened in.
    Json,
}

impl LogFormat {
    /// The value `--log-format` takes for this format.
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

static FORMAT: OnceLock<LogFormat> = OnceLock::new();

/// The format this process logs in (text until [`init`] set another), for
/// the child processes it starts.
pub fn format() -> LogFormat {
    FORMAT.get().copied().unwrap_or_default()
}

/// Logs to standard error: events `filter` (EnvFilter syntax; `info` when
/// it does not parse) lets through, in `format`. Does nothing when the
/// process already has a subscriber.
pub fn init(filter: &str, format: LogFormat) {
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = init_with_writer(filter, format, std::io::stderr, ansi);
}

/// Like [`init`], to any writer (tests read the JSON lines back); `ansi`
/// colours text only. Fails when the process already has a subscriber.
pub fn init_with_writer<W>(
    filter: &str,
    format: LogFormat,
    writer: W,
    ansi: bool,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let installed = match format {
        LogFormat::Text => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(writer)
            .with_ansi(ansi)
            .try_init(),
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_env_filter(filter)
            .with_writer(writer)
            .try_init(),
    };
    if installed.is_ok() {
        let _ = FORMAT.set(format);
    }
    installed
}
