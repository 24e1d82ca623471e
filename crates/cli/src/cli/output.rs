//! What the commands print and how they exit: aligned tables for people,
//! the API's own JSON for scripts (`--json`), and one exit code per kind of
//! outcome, decided here and nowhere else.
//!
//! Exit codes (`mconnect --help` and README say the same):
//! 0 success; 1 a failure at run time (a receipt or proof that does not
//! verify, a log with problems); 3 the broker refused (a 4xx problem), or an
//! add would overwrite what is registered; 4 the broker could not be
//! reached, or answered 5xx; 64 a bad configuration or usage (arguments,
//! missing or unreadable settings, files), reported before anything is sent.
//!
//! Invariant: a refusal is never printed as a success: in table mode the
//! problem goes to standard error; with `--json` the problem document goes
//! to standard output too, so a script reads one JSON value either way.

use std::fmt;
use std::process::ExitCode;

use http::StatusCode;
use serde_json::Value;

use mconnect::audit::auditor::ReadError;
use mconnect::config::EXIT_CONFIG;
use mconnect_sdk::SdkError;

/// A failure at run time.
pub(crate) const EXIT_FAILURE: u8 = 1;
/// The broker refused: a 4xx problem.
pub(crate) const EXIT_REFUSED: u8 = 3;
/// The broker could not be reached, did not answer in time, or answered 5xx.
pub(crate) const EXIT_UNAVAILABLE: u8 = 4;
/// A bad configuration or usage (sysexits' EX_USAGE; the broker's own
/// configuration errors exit with it too).
pub(crate) const EXIT_USAGE: u8 = EXIT_CONFIG as u8;

/// The exit codes as `mconnect --help` prints them.
pub(crate) const EXIT_CODES_HELP: &str = "\
Exit codes:
  0   success
  1   a failure at run time (a receipt, proof or log that does not verify)
  3   the broker refused (a 4xx problem; its code and detail on stderr),
      or `participant add` would replace a registered participant
  4   the broker could not be reached, did not answer in time, or answered 5xx
  64  a bad configuration or usage: arguments, missing or unreadable
      settings, a profile or key file others may read

Commands that talk to a broker (call, connect, audit query|export|prove,
participant) take its address and the caller's credentials from, in order:
flags (--broker/--admin, --cert, --key, --ca, --broker-cert, --participant),
environment (MCONNECT_BROKER, MCONNECT_ADMIN, MCONNECT_CERT, MCONNECT_KEY,
MCONNECT_CA, MCONNECT_BROKER_CERT, MCONNECT_PARTICIPANT), a --profile NAME
table of $MCONNECT_PROFILES (default ~/.config/mconnect/profiles.toml), and
last a --sandbox DIR's sandbox.json (./sandbox when nothing else names a
broker).";

/// A bad configuration or usage found after the arguments parsed: exit 64.
#[derive(Debug)]
pub(crate) struct Usage(pub(crate) String);

impl fmt::Display for Usage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

/// A usage error as an `anyhow` error.
pub(crate) fn usage(message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Usage(message.into()))
}

/// The exit code of a failed command: the first cause in the chain that
/// says what kind of failure it is, else 1.
pub(crate) fn exit_code_of(error: &anyhow::Error) -> u8 {
    for cause in error.chain() {
        if cause.is::<Usage>() {
            return EXIT_USAGE;
        }
        if let Some(read) = cause.downcast_ref::<ReadError>() {
            match read {
                ReadError::Refused { status, .. } => return for_status(*status),
                ReadError::Unreachable { .. } => return EXIT_UNAVAILABLE,
                _ => {}
            }
        }
        if let Some(SdkError::Transport(_)) = cause.downcast_ref::<SdkError>() {
            return EXIT_UNAVAILABLE;
        }
    }
    EXIT_FAILURE
}

/// The exit code of an HTTP answer's status.
pub(crate) fn for_status(status: StatusCode) -> u8 {
    if status.is_success() {
        0
    } else if status.is_server_error() {
        EXIT_UNAVAILABLE
    } else if status.is_client_error() {
        EXIT_REFUSED
    } else {
        EXIT_FAILURE
    }
}

/// Prints an admin answer: on success `human` (tables) or the JSON with
/// `json`; on a refusal the problem on standard error (and its JSON on
/// standard output with `json`). Returns the exit code of the status.
pub(crate) fn answer(
    status: StatusCode,
    body: &Value,
    json: bool,
    human: impl FnOnce(&Value),
) -> ExitCode {
    if json {
        print_json(body);
    } else if status.is_success() {
        human(body);
    }
    if !status.is_success() {
        eprintln!("mconnect: {}", problem_text(status, body));
    }
    ExitCode::from(for_status(status))
}

/// One line for a problem answer: status, code and detail.
pub(crate) fn problem_text(status: StatusCode, body: &Value) -> String {
    let code = body["code"].as_str().unwrap_or("refused");
    match body["detail"].as_str() {
        Some(detail) if !detail.is_empty() => format!("{status} {code}: {detail}"),
        _ => format!("{status} {code}"),
    }
}

/// Prints a JSON value, pretty, on standard output.
pub(crate) fn print_json(value: &Value) {
    let mut text = serde_json::to_string_pretty(value).unwrap_or_default();
    text.push('\n');
    print_text(&text);
}

/// Writes to standard output; a reader that went away (`| head`) is not
/// an error worth a panic.
pub(crate) fn print_text(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

/// A JSON value as a table cell: strings bare, `null` as `-`, arrays
/// joined with commas.
pub(crate) fn cell(value: &Value) -> String {
    match value {
        Value::Null => "-".to_string(),
        Value::String(s) if s.is_empty() => "-".to_string(),
        Value::String(s) => s.clone(),
        Value::Array(items) if items.is_empty() => "-".to_string(),
        Value::Array(items) => items.iter().map(cell).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

/// Unix seconds as an RFC 3339 date and time (UTC), `-` when out of range.
pub(crate) fn unix_time(value: &Value) -> String {
    value
        .as_i64()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| cell(value))
}

/// A table of text columns, aligned on the widest cell of each column.
pub(crate) struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers.
    pub(crate) fn new(headers: &[&str]) -> Table {
        Table {
            headers: headers.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row (missing cells print empty, extra ones are kept).
    pub(crate) fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// Whether it has no rows.
    pub(crate) fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The table as text, one line per row after the header line; two
    /// spaces between columns, the last column not padded.
    pub(crate) fn render(&self) -> String {
        let columns = self
            .rows
            .iter()
            .map(Vec::len)
            .chain([self.headers.len()])
            .max()
            .unwrap_or(0);
        let mut widths = vec![0usize; columns];
        for line in std::iter::once(&self.headers).chain(&self.rows) {
            for (i, text) in line.iter().enumerate() {
                widths[i] = widths[i].max(text.chars().count());
            }
        }
        let mut out = String::new();
        for line in std::iter::once(&self.headers).chain(&self.rows) {
            let mut text = String::new();
            for (i, width) in widths.iter().enumerate() {
                let value = line.get(i).map_or("", String::as_str);
                text.push_str(value);
                if i + 1 < columns {
                    let pad = width - value.chars().count() + 2;
                    text.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push_str(text.trim_end());
            out.push('\n');
        }
        out
    }

    /// Prints the table on standard output.
    pub(crate) fn print(&self) {
        print_text(&self.render());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_on_the_widest_cell_counting_characters() {
        let mut t = Table::new(&["ID", "NAME"]);
        t.row(vec!["apl-cahul".into(), "Primăria Cahul".into()]);
        t.row(vec!["x".into(), "-".into()]);
        assert_eq!(
            t.render(),
            "ID         NAME\napl-cahul  Primăria Cahul\nx          -\n"
        );
    }

    #[test]
    fn statuses_map_to_exit_codes() {
        for (status, code) in [
            (200, 0),
            (201, 0),
            (400, EXIT_REFUSED),
            (403, EXIT_REFUSED),
            (409, EXIT_REFUSED),
            (500, EXIT_UNAVAILABLE),
            (503, EXIT_UNAVAILABLE),
            (302, EXIT_FAILURE),
        ] {
            assert_eq!(
                for_status(StatusCode::from_u16(status).unwrap_or_default()),
                code,
                "{status}"
            );
        }
    }

    #[test]
    fn the_kind_of_a_failure_is_found_anywhere_in_the_chain() {
        let e = usage("no broker").context("resolving");
        assert_eq!(exit_code_of(&e), EXIT_USAGE);
        let e = anyhow::Error::new(SdkError::Transport("refused".into())).context("calling");
        assert_eq!(exit_code_of(&e), EXIT_UNAVAILABLE);
        let e = anyhow::Error::new(ReadError::Refused {
            path: "/v1/audit/records".into(),
            status: StatusCode::FORBIDDEN,
            code: "policy.basis_not_allowed".into(),
            detail: String::new(),
        });
        assert_eq!(exit_code_of(&e), EXIT_REFUSED);
        assert_eq!(exit_code_of(&anyhow::anyhow!("other")), EXIT_FAILURE);
    }
}
