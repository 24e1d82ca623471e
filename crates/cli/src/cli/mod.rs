//! The `mconnect` command line: raw arguments become validated objects in
//! one step, then each subcommand calls into the library.
//!
//! Exit codes (`output`, and `mconnect --help`): 0 success; 1 a failure at
//! run time; 3 the broker refused; 4 the broker unreachable or failing; 64 a
//! bad configuration or usage, reported before any port is bound or any
//! request is sent (clap's own usage errors included).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};

use mconnect::pki::{DevCa, KeyType};

mod audit;
mod backup;
mod connect;
pub mod logging;
mod output;
mod participant;
mod rules;
mod serve;
mod target;

use logging::LogFormat;
use output::usage;
use target::{Plane, TargetArgs};

/// MConnect interoperability bus.
#[derive(Parser)]
#[command(name = "mconnect", version, about, after_help = output::EXIT_CODES_HELP)]
struct Cli {
    /// Log filter (tracing EnvFilter syntax), e.g. `info` or `mconnect=debug`.
    #[arg(long, global = true, env = "MCONNECT_LOG", default_value = "info")]
    log: String,
    /// Log format: `text`, or `json` (one object a line; `serve` and
    /// `sandbox` log each exchange as one event with its ids, trace id,
    /// code and timings). The sandbox starts its brokers with the same.
    #[arg(
        long,
        global = true,
        env = "MCONNECT_LOG_FORMAT",
        value_enum,
        default_value_t = LogFormat::Text
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the broker with a configuration file.
    Serve(serve::ServeArgs),
    /// Copy the broker's state and audit log into a new directory, verified
    /// (safe while the broker runs).
    Backup(backup::BackupArgs),
    /// Put a backup back into an empty installation and verify its audit log.
    Restore(backup::RestoreArgs),
    /// Development PKI: a CA and participant certificates (PEM).
    #[command(subcommand)]
    Pki(PkiCommand),
    /// Make a signed call as a participant and check the broker's receipt.
    #[command(
        mut_arg("participant", |a| a.visible_alias("client")),
        mut_arg("admin", |a| a.hide(true))
    )]
    Call(CallArgs),
    /// Start the whole bus on loopback: PKI, broker, example registers.
    Sandbox(crate::sandbox::SandboxArgs),
    /// The semantic catalog: check a catalog directory.
    #[command(subcommand)]
    Catalog(rules::CatalogCommand),
    /// Access policies: check a directory of grants.
    #[command(subcommand)]
    Policy(rules::PolicyCommand),
    /// Connection requests: submit, review, approve, confirm, suspend, revoke…
    #[command(mut_arg("broker", |a| a.hide(true)))]
    Connect(connect::ConnectArgs),
    /// The auditor's tools: verify a log directory; query, export and prove
    /// through the admin API.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Participants on the admin API: add, list, show, certificates, endpoints.
    #[command(mut_arg("broker", |a| a.hide(true)))]
    Participant(participant::ParticipantArgs),
}

#[derive(Subcommand)]
enum PkiCommand {
    /// Create a CA in DIR (ca.cert.pem, ca.key.pem).
    Init {
        /// Output directory.
        #[arg(long)]
        dir: PathBuf,
        /// The CA's common name.
        #[arg(long, default_value = "MConnect development CA")]
        name: String,
    },
    /// Issue a certificate and key for NAME with the CA in DIR.
    Issue {
        /// Directory holding the CA; the new files go there too.
        #[arg(long)]
        dir: PathBuf,
        /// Participant id (or `broker`).
        #[arg(long)]
        name: String,
        /// Organisation name.
        #[arg(long, default_value = "MConnect participant")]
        organisation: String,
        /// Key type: ed25519, p256 or rsa.
        #[arg(long, default_value = "ed25519")]
        key: String,
    },
}

#[derive(Args)]
struct CallArgs {
    /// The broker and the caller (`--client` is `--participant`).
    #[command(flatten)]
    target: TargetArgs,
    /// Run entry N of sandbox.json's `try` list (overrides the participant
    /// and the call options below).
    #[arg(long = "try")]
    try_index: Option<usize>,
    /// HTTP method.
    #[arg(long, default_value = "GET")]
    method: String,
    /// Path and query, e.g. /r1/asp-rsp/person-by-idnp?idnp=2000000000015.
    #[arg(long)]
    path: Option<String>,
    /// JSON body (inline).
    #[arg(long)]
    body: Option<String>,
    /// IDNP of the calling user.
    #[arg(long, default_value = crate::sandbox::SANDBOX_CALLING_USER)]
    user: String,
    /// Legal basis id.
    #[arg(long)]
    basis: Option<String>,
    /// Purpose code.
    #[arg(long)]
    reason: Option<String>,
    /// Subject IDNP/IDNO.
    #[arg(long)]
    subject: Option<String>,
    /// Represented party IDNP/IDNO.
    #[arg(long)]
    represented: Option<String>,
    /// Print status, body and receipt as one JSON object.
    #[arg(long)]
    json: bool,
}

/// Runs the command line; the binary's `main` is only this.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // Help and version are not errors; every usage error exits 64,
            // as the module documents (clap's own default would be 2).
            return if e.use_stderr() {
                ExitCode::from(output::EXIT_USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    logging::init(&cli.log, cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mconnect: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(cli.command));
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("mconnect: {e:#}");
            ExitCode::from(output::exit_code_of(&e))
        }
    }
}

async fn run(command: Command) -> Result<ExitCode> {
    match command {
        Command::Serve(args) => serve::run(args).await,
        Command::Backup(args) => backup::backup(args).await,
        Command::Restore(args) => backup::restore(args).await,
        Command::Pki(cmd) => pki(cmd).map(|_| ExitCode::SUCCESS),
        Command::Call(args) => call(args).await,
        Command::Sandbox(args) => crate::sandbox::run(args).await,
        Command::Catalog(cmd) => rules::catalog(cmd),
        Command::Policy(cmd) => rules::policy(cmd),
        Command::Connect(args) => connect::run(args).await,
        Command::Audit(cmd) => audit::run(cmd).await,
        Command::Participant(args) => participant::run(args).await,
    }
}

/// Waits for Ctrl-C or SIGTERM.
pub async fn wait_for_shutdown() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
    }
}

fn pki(cmd: PkiCommand) -> Result<()> {
    match cmd {
        PkiCommand::Init { dir, name } => {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            if dir.join("ca.key.pem").exists() {
                bail!(
                    "{} already holds a CA; remove it first or use another --dir",
                    dir.display()
                );
            }
            let ca = DevCa::generate(&name)?;
            ca.write(&dir)?;
            println!("CA written to {}/ca.cert.pem", dir.display());
        }
        PkiCommand::Issue {
            dir,
            name,
            organisation,
            key,
        } => {
            let key_type = KeyType::parse(&key)
                .with_context(|| format!("unknown key type `{key}`: use ed25519, p256 or rsa"))?;
            if !mconnect::ids::is_valid_participant_id(&name) {
                bail!("`{name}` is not a participant id ([a-z0-9][a-z0-9-]{{0,62}})");
            }
            let ca = DevCa::load(&dir)?;
            let issued = ca.issue(&name, &organisation, key_type)?;
            issued.write(&dir, &name)?;
            println!("{}", issued.fingerprint);
        }
    }
    Ok(())
}

async fn call(args: CallArgs) -> Result<ExitCode> {
    let sources = args.target.sources(Plane::Data)?;
    let mut call = mconnect_sdk::Call {
        method: args
            .method
            .parse()
            .map_err(|_| usage(format!("--method {}: not an HTTP method", args.method)))?,
        path: args.path.clone().unwrap_or_default(),
        body: args.body.clone().map(bytes::Bytes::from),
        calling_user: args.user.clone(),
        basis: args.basis.clone().unwrap_or_default(),
        reason: args.reason.clone().unwrap_or_default(),
        subject: args.subject.clone(),
        represented_party: args.represented.clone(),
        request_id: None,
    };
    let mut forced = None;
    if let Some(n) = args.try_index {
        let (dir, manifest) = sources.sandbox().ok_or_else(|| {
            usage(format!(
                "--try {n} runs a call of sandbox.json: give --sandbox DIR"
            ))
        })?;
        let entry = manifest.tries.get(n).with_context(|| {
            let path = dir.join("sandbox.json");
            match manifest.tries.len() {
                0 => format!("--try {n}: {} lists no calls to try", path.display()),
                len => format!(
                    "--try {n} is out of range: {} lists {len} calls to try, numbered 0 to {}",
                    path.display(),
                    len - 1
                ),
            }
        })?;
        // The entry's call, on behalf of --user unless it names its own
        // calling user; --represented and a chosen request id still apply.
        call = mconnect_sdk::Call {
            represented_party: call.represented_party.take(),
            request_id: call.request_id.take(),
            ..entry.call(&call.calling_user).context("sandbox.json")?
        };
        forced = Some(entry.client.clone());
    }
    if call.path.is_empty() {
        return Err(usage("give --path or --try N"));
    }
    if !call.path.starts_with('/') {
        return Err(usage(format!(
            "--path {}: give the path and query on the broker, starting with /",
            call.path
        )));
    }
    let target = sources.resolve(forced.as_deref(), None, true)?;
    let consumer = target.consumer()?;
    let outcome = consumer.call(&call).await?;
    if args.json {
        let body = serde_json::from_slice::<serde_json::Value>(&outcome.body)
            .unwrap_or_else(|_| String::from_utf8_lossy(&outcome.body).into_owned().into());
        let receipt = match &outcome.receipt {
            Ok(r) => serde_json::json!({
                "verified": true,
                "exchange_id": r.exchange_id,
                "request_id": r.request_id,
                "audit_seq": r.audit_seq,
                "keyid": r.keyid,
            }),
            Err(e) => serde_json::json!({"verified": false, "error": e}),
        };
        output::print_json(&serde_json::json!({
            "status": outcome.status.as_u16(),
            "body": body,
            "receipt": receipt,
        }));
    } else {
        println!("status: {}", outcome.status);
        println!("body: {}", String::from_utf8_lossy(&outcome.body));
        match &outcome.receipt {
            Ok(r) => println!(
                "receipt: verified (exchange {}, audit seq {}, broker key {})",
                r.exchange_id,
                r.audit_seq
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| "none".into()),
                r.keyid
            ),
            Err(e) => println!("receipt: NOT verified: {e}"),
        }
    }
    // An answer whose receipt does not verify is a failure whatever its
    // status: nothing in it can be relied on.
    Ok(match &outcome.receipt {
        Err(_) => ExitCode::FAILURE,
        Ok(_) => {
            if !outcome.status.is_success() {
                eprintln!(
                    "mconnect: {}",
                    output::problem_text(
                        outcome.status,
                        &serde_json::from_slice(&outcome.body).unwrap_or_default()
                    )
                );
            }
            ExitCode::from(output::for_status(outcome.status))
        }
    })
}
