//! `mconnect connect …`: the connection procedure from the command line, as
//! a participant talking to the admin API over mTLS.
//!
//! The admin URL, the participant's key and certificate and the CA come
//! from the shared target settings (`target`: flags, environment, a
//! profile, or a sandbox with `--as PARTICIPANT`); `submit` and `resubmit`
//! sign the application with that key (RFC 9421, see `connect::client`).
//! Answers print as tables, or as the API's JSON with `--json`; a refusal
//! prints its problem and exits 3 (`output`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use bytes::Bytes;
use clap::{Args, Subcommand};
use http::Method;
use serde_json::Value;

use super::output::{self, Table, cell, usage};
use super::target::{Plane, TargetArgs};
use mconnect::connect::client::AdminClient;

/// `mconnect connect`.
#[derive(Args)]
pub(crate) struct ConnectArgs {
    /// The admin API and the participant to act as (its certificate decides
    /// the role).
    #[command(flatten)]
    target: TargetArgs,
    /// Print the API's JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: ConnectCommand,
}

#[derive(Subcommand)]
enum ConnectCommand {
    /// File a signed application (JSON, policies/schema/application.schema.json).
    Submit {
        /// The application file.
        file: PathBuf,
        /// IDNP of the official who files it (MConnect-Calling-User).
        #[arg(long, default_value = "2000000000015")]
        user: String,
    },
    /// List the requests you may see.
    List {
        /// Only requests in this state.
        #[arg(long)]
        state: Option<String>,
        /// Only requests past the 30-day deadline.
        #[arg(long)]
        overdue: bool,
    },
    /// Show one request (with `--evidence`, the kept signed bytes).
    Show {
        /// Request id.
        id: String,
        /// Print the evidence instead.
        #[arg(long)]
        evidence: bool,
    },
    /// Operator: take a request up for review.
    Review(Decision),
    /// Operator: approve (grants wait for the providers' confirmation).
    Approve {
        #[command(flatten)]
        decision: Decision,
        /// Rate limit of the grants, `N/second|minute|hour` (default 10/second).
        #[arg(long)]
        rate_limit: Option<String>,
        /// Largest burst (default twice the rate).
        #[arg(long)]
        burst: Option<u32>,
    },
    /// Operator: refuse (needs --reason).
    Reject(Decision),
    /// Operator: ask for changes (needs --reason).
    RequestChanges(Decision),
    /// Applicant: file a changed, signed application.
    Resubmit {
        /// Request id.
        id: String,
        /// The changed application file.
        file: PathBuf,
        /// IDNP of the official who files it.
        #[arg(long, default_value = "2000000000015")]
        user: String,
        /// What changed.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Provider: confirm for your services.
    Confirm(Decision),
    /// Operator: suspend an active request (needs --reason).
    Suspend(Decision),
    /// Operator: reinstate a suspended request.
    Resume(Decision),
    /// Operator: end a request (needs --reason).
    Revoke(Decision),
}

/// A decision on one request.
#[derive(Args)]
struct Decision {
    /// Request id.
    id: String,
    /// Why.
    #[arg(long)]
    reason: Option<String>,
}

/// Runs `mconnect connect …`.
pub(crate) async fn run(args: ConnectArgs) -> Result<ExitCode> {
    let client = args
        .target
        .sources(Plane::Admin)?
        .resolve(None, None, false)?
        .admin_client()?;
    let view = match &args.command {
        ConnectCommand::List { .. } => View::List,
        ConnectCommand::Show { evidence: true, .. } => View::Evidence,
        ConnectCommand::Show { .. } => View::Full,
        _ => View::Outcome,
    };
    let request = match args.command {
        ConnectCommand::Submit { file, user } => {
            client.signed(Method::POST, "/v1/connection-requests", read(&file)?, &user)?
        }
        ConnectCommand::List { state, overdue } => {
            let mut query = Vec::new();
            if let Some(state) = state {
                query.push(format!("state={state}"));
            }
            if overdue {
                query.push("overdue=true".to_string());
            }
            let path = if query.is_empty() {
                "/v1/connection-requests".to_string()
            } else {
                format!("/v1/connection-requests?{}", query.join("&"))
            };
            client.plain(Method::GET, &path, None)?
        }
        ConnectCommand::Show { id, evidence } => {
            let suffix = if evidence { "/evidence" } else { "" };
            client.plain(
                Method::GET,
                &format!("/v1/connection-requests/{}{suffix}", segment(&id)?),
                None,
            )?
        }
        ConnectCommand::Resubmit {
            id,
            file,
            user,
            reason,
        } => {
            let mut path = format!("/v1/connection-requests/{}/resubmit", segment(&id)?);
            if let Some(reason) = reason {
                path.push_str("?reason=");
                path.push_str(&percent_encode(&reason));
            }
            client.signed(Method::POST, &path, read(&file)?, &user)?
        }
        ConnectCommand::Approve {
            decision,
            rate_limit,
            burst,
        } => {
            let mut body = serde_json::json!({});
            if let Some(reason) = &decision.reason {
                body["reason"] = reason.as_str().into();
            }
            if let Some(rate) = rate_limit {
                let (requests, per) = rate
                    .split_once('/')
                    .ok_or_else(|| usage("--rate-limit is N/second, N/minute or N/hour"))?;
                let requests: u32 = requests
                    .parse()
                    .map_err(|_| usage(format!("--rate-limit {rate}: N is a whole number")))?;
                body["rate_limit"] = serde_json::json!({
                    "requests": requests, "per": per,
                    "burst": burst.unwrap_or(requests.saturating_mul(2)),
                });
            }
            client.plain(
                Method::POST,
                &format!("/v1/connection-requests/{}/approve", segment(&decision.id)?),
                Some(&body),
            )?
        }
        ConnectCommand::Review(d) => decision(&client, "review", &d)?,
        ConnectCommand::Reject(d) => decision(&client, "reject", &d)?,
        ConnectCommand::RequestChanges(d) => decision(&client, "request-changes", &d)?,
        ConnectCommand::Confirm(d) => decision(&client, "confirm", &d)?,
        ConnectCommand::Suspend(d) => decision(&client, "suspend", &d)?,
        ConnectCommand::Resume(d) => decision(&client, "resume", &d)?,
        ConnectCommand::Revoke(d) => decision(&client, "revoke", &d)?,
    };
    let url = request.uri().to_string();
    let (status, body) = client
        .send(request)
        .await
        .with_context(|| format!("calling {url}"))?;
    Ok(output::answer(
        status,
        &body,
        args.json,
        |body| match view {
            View::List => print_list(body),
            View::Full => print_full(body),
            View::Evidence => print_evidence(body),
            View::Outcome => print_outcome(body),
        },
    ))
}

/// Which table an answer prints as.
#[derive(Clone, Copy)]
enum View {
    List,
    Full,
    Evidence,
    Outcome,
}

fn print_list(body: &Value) {
    let mut table = Table::new(&[
        "ID",
        "STATE",
        "APPLICANT",
        "SERVICES",
        "VERSION",
        "SUBMITTED",
        "DUE",
        "OVERDUE",
    ]);
    for r in body["connection_requests"].as_array().into_iter().flatten() {
        table.row(vec![
            cell(&r["id"]),
            cell(&r["state"]),
            cell(&r["applicant"]),
            cell(&r["services"]),
            cell(&r["version"]),
            cell(&r["submitted_at"]),
            cell(&r["due_at"]),
            if r["overdue"] == true { "yes" } else { "no" }.to_string(),
        ]);
    }
    if table.is_empty() {
        println!("no connection requests");
    } else {
        table.print();
    }
    if let Some(n) = body["overdue"].as_u64().filter(|n| *n > 0) {
        println!("{n} overdue");
    }
}

fn print_full(body: &Value) {
    let mut head = Table::new(&["", ""]);
    for (label, key) in [
        ("id", "id"),
        ("state", "state"),
        ("applicant", "applicant"),
        ("services", "services"),
        ("version", "version"),
        ("submitted", "submitted_at"),
        ("updated", "updated_at"),
        ("due", "due_at"),
        ("next", "allowed_transitions"),
    ] {
        head.row(vec![label.to_string(), cell(&body[key])]);
    }
    print!("{}", head.render().trim_start());
    let mut history = Table::new(&["TRANSITION", "FROM", "TO", "BY", "AT", "REASON"]);
    for h in body["history"].as_array().into_iter().flatten() {
        history.row(
            ["transition", "from", "to", "by", "at", "reason"]
                .iter()
                .map(|k| cell(&h[*k]))
                .collect(),
        );
    }
    if !history.is_empty() {
        println!();
        history.print();
    }
    let mut grants = Table::new(&["GRANT", "SERVICE", "STATUS"]);
    for g in body["grants"].as_array().into_iter().flatten() {
        grants.row(vec![
            cell(&g["id"]),
            cell(&g["service"]),
            cell(&g["status"]),
        ]);
    }
    if !grants.is_empty() {
        println!();
        grants.print();
    }
}

fn print_evidence(body: &Value) {
    let mut table = Table::new(&["VERSION", "SIGNER", "CALLING USER", "RECEIVED", "VERIFIED"]);
    for e in body["evidence"].as_array().into_iter().flatten() {
        table.row(vec![
            cell(&e["version"]),
            cell(&e["signer"]),
            cell(&e["calling_user"]),
            cell(&e["received_at"]),
            match e["verification"]["verified"].as_bool() {
                Some(true) => "yes".to_string(),
                _ => format!("NO: {}", cell(&e["verification"]["problem"])),
            },
        ]);
    }
    table.print();
}

/// A change's answer: the request's id and where it stands now.
fn print_outcome(body: &Value) {
    println!("{}: {}", cell(&body["id"]), cell(&body["state"]));
}

fn decision(
    client: &AdminClient,
    action: &str,
    d: &Decision,
) -> Result<http::Request<http_body_util::Full<Bytes>>> {
    let body = match &d.reason {
        Some(reason) => serde_json::json!({ "reason": reason }),
        None => serde_json::json!({}),
    };
    Ok(client.plain(
        Method::POST,
        &format!("/v1/connection-requests/{}/{action}", segment(&d.id)?),
        Some(&body),
    )?)
}

fn read(file: &std::path::Path) -> Result<Bytes> {
    std::fs::read(file)
        .map(Bytes::from)
        .map_err(|e| usage(format!("reading {}: {e}", file.display())))
}

/// A request id as a path segment: ids are `cr-YYYY-NNNNNN`, so anything
/// else is refused here rather than sent.
fn segment(id: &str) -> Result<&str> {
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err(usage(format!(
            "`{id}` is not a connection request id (cr-YYYY-NNNNNN)"
        )));
    }
    Ok(id)
}

/// Percent-encodes a query value (RFC 3986 unreserved characters pass).
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
