//! The `mconnect` command line: raw arguments become validated objects in
//! one step, then each subcommand calls into the library.
//!
//! Exit codes: 0 success; 1 a failure at run time; 64 a bad configuration or
//! usage, reported before any port is bound.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};

use mconnect::config::{Config, EXIT_CONFIG};
use mconnect::pki::{DevCa, KeyType};

mod audit;
mod connect;
mod rules;

/// MConnect interoperability bus.
#[derive(Parser)]
#[command(name = "mconnect", version, about)]
struct Cli {
    /// Log filter (tracing EnvFilter syntax), e.g. `info` or `mconnect=debug`.
    #[arg(long, global = true, env = "MCONNECT_LOG", default_value = "info")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the broker with a configuration file.
    Serve {
        /// The TOML configuration (see examples/broker.toml).
        #[arg(long)]
        config: PathBuf,
    },
    /// Development PKI: a CA and participant certificates (PEM).
    #[command(subcommand)]
    Pki(PkiCommand),
    /// Make a signed call as a participant and check the broker's receipt.
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
    Connect(connect::ConnectArgs),
    /// The auditor's tools: verify a log directory; query, export and prove
    /// through the admin API.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
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
    /// Read broker URL, CA and the client's key from this sandbox directory.
    #[arg(long, default_value = "sandbox")]
    sandbox: PathBuf,
    /// Run entry N of sandbox.json's `try` list (overrides the call options below).
    #[arg(long = "try")]
    try_index: Option<usize>,
    /// Calling participant id.
    #[arg(long)]
    client: Option<String>,
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
}

/// Runs the command line; the binary's `main` is only this.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&cli.log)
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
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
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> Result<ExitCode> {
    match command {
        Command::Serve { config } => serve(config).await,
        Command::Pki(cmd) => pki(cmd).map(|_| ExitCode::SUCCESS),
        Command::Call(args) => call(args).await,
        Command::Sandbox(args) => crate::sandbox::run(args).await,
        Command::Catalog(cmd) => rules::catalog(cmd),
        Command::Policy(cmd) => rules::policy(cmd),
        Command::Connect(args) => connect::run(args).await,
        Command::Audit(cmd) => audit::run(cmd).await,
    }
}

async fn serve(path: PathBuf) -> Result<ExitCode> {
    let config = match Config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mconnect: {e}");
            return Ok(ExitCode::from(EXIT_CONFIG as u8));
        }
    };
    let running = match mconnect::app::start(config).await {
        Ok(r) => r,
        Err(e @ mconnect::app::StartError::Bind { .. }) => bail!(e),
        Err(e) => {
            // Everything but binding is a problem with the installation.
            eprintln!("mconnect: {e}");
            return Ok(ExitCode::from(EXIT_CONFIG as u8));
        }
    };
    eprintln!(
        "mconnect: data plane on https://{}, admin on https://{}",
        running.data_addr(),
        running.admin_addr()
    );
    wait_for_shutdown().await;
    running.shutdown().await;
    Ok(ExitCode::SUCCESS)
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
    let manifest = crate::sandbox::SandboxManifest::read(&args.sandbox)?;
    let mut call = mconnect_sdk::Call {
        method: args.method.parse().context("--method")?,
        path: args.path.clone().unwrap_or_default(),
        body: args.body.clone().map(bytes::Bytes::from),
        calling_user: args.user.clone(),
        basis: args.basis.clone().unwrap_or_default(),
        reason: args.reason.clone().unwrap_or_default(),
        subject: args.subject.clone(),
        represented_party: args.represented.clone(),
        request_id: None,
    };
    let mut client = args.client.clone();
    if let Some(n) = args.try_index {
        let entry = manifest.tries.get(n).with_context(|| {
            let path = args.sandbox.join("sandbox.json");
            match manifest.tries.len() {
                0 => format!("--try {n}: {} lists no calls to try", path.display()),
                len => format!(
                    "--try {n} is out of range: {} lists {len} calls to try, numbered 0 to {}",
                    path.display(),
                    len - 1
                ),
            }
        })?;
        call.method = entry.method.parse().context("try.method")?;
        call.path = entry.path.clone();
        call.body = entry
            .body
            .as_ref()
            .map(|b| bytes::Bytes::from(b.to_string()));
        call.basis = entry.basis.clone();
        call.reason = entry.reason.clone();
        call.subject = entry.subject.clone();
        if let Some(user) = &entry.calling_user {
            call.calling_user = user.clone();
        }
        client = Some(entry.client.clone());
    }
    let client = client.context("name the calling participant with --client or use --try N")?;
    if call.path.is_empty() {
        bail!("give --path or --try N");
    }
    let consumer = manifest.consumer(&args.sandbox, &client)?;
    let outcome = consumer.call(&call).await?;
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
    Ok(if outcome.receipt.is_ok() && outcome.status.is_success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
