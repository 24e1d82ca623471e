//! `mconnect connect …`: the connection procedure from the command line, as
//! a sandbox participant talking to the admin API over mTLS.
//!
//! The participant's key and certificate come from `sandbox.json`
//! (`--sandbox DIR`, `--as PARTICIPANT`); `submit` and `resubmit` sign the
//! application with that key (RFC 9421, see `connect::client`). Every answer
//! is printed as JSON; a refusal prints its problem and exits 1.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use clap::{Args, Subcommand};
use http::Method;

use mconnect::connect::client::AdminClient;

/// `mconnect connect`.
#[derive(Args)]
pub(crate) struct ConnectArgs {
    /// The sandbox directory holding sandbox.json and the PKI.
    #[arg(long, default_value = "sandbox", global = true)]
    sandbox: PathBuf,
    /// The participant to act as (its certificate decides the role).
    #[arg(long = "as", global = true, value_name = "PARTICIPANT")]
    as_participant: Option<String>,
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
    let participant = args
        .as_participant
        .clone()
        .context("name the participant to act as with --as PARTICIPANT")?;
    let client = client(&args.sandbox, &participant)?;
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
                    .context("--rate-limit is N/second, N/minute or N/hour")?;
                let requests: u32 = requests.parse().context("--rate-limit N")?;
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
    let (status, body) = client.send(request).await?;
    println!(
        "{}",
        serde_json::to_string_pretty(&body).unwrap_or_default()
    );
    if status.is_success() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "mconnect: {status}: {}",
            body["detail"].as_str().unwrap_or("refused")
        );
        Ok(ExitCode::FAILURE)
    }
}

fn client(sandbox: &std::path::Path, participant: &str) -> Result<AdminClient> {
    let manifest = crate::sandbox::SandboxManifest::read(sandbox)?;
    let credentials = manifest.credentials(sandbox, participant)?;
    Ok(AdminClient::new(credentials, &manifest.broker.admin_url)?)
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
        .with_context(|| format!("reading {}", file.display()))
}

/// A request id as a path segment: ids are `cr-YYYY-NNNNNN`, so anything
/// else is refused here rather than sent.
fn segment(id: &str) -> Result<&str> {
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        bail!("`{id}` is not a connection request id (cr-YYYY-NNNNNN)");
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
