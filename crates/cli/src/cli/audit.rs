//! `mconnect audit`: the auditor's tools.
//!
//! - `verify` reads a log directory directly (it never writes, so it may run on
//!   a copy or beside a live broker): every segment, the recomputed tree, every
//!   published signed tree head. Any problem makes the exit code 1.
//! - `query`, `export` and `prove` go through the admin API as the sandbox's
//!   auditor (`sandbox.json`: admin URL, auditor id, basis and reason, its key
//!   and certificate), so each of their reads is legal-basis-checked and
//!   audited like anyone's; they never read the log files behind the broker's
//!   back.
//!
//! Invariant: nothing the broker answers is taken on trust: the reading,
//! checking and the evidence bundle are the library's
//! (`mconnect::audit::auditor`, which the portal's auditor pages use too):
//! tree heads are checked with the broker certificate, every proof against
//! the signed root and every record against its leaf before it is printed or
//! written.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use clap::{Args, Subcommand};

use crate::sandbox::SandboxManifest;
use mconnect::audit::auditor::{AuditReader, Search, TreeHeadCheck};
use mconnect::audit::{Decision, certificate_verifier, verify_dir_with_progress};
use mconnect::connect::client::AdminClient;

/// `mconnect audit ...`.
#[derive(Subcommand)]
pub(crate) enum AuditCommand {
    /// Re-read every segment, recompute the Merkle tree and check every signed
    /// tree head; exit 1 on any problem, naming the record it hits.
    Verify {
        /// The audit log directory.
        #[arg(long, default_value = "sandbox/audit")]
        dir: PathBuf,
        /// The broker certificate that signs tree heads (default: `pki/broker.cert.pem`
        /// beside the log directory, as in a sandbox).
        #[arg(long)]
        cert: Option<PathBuf>,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
    },
    /// Search the log through the admin API, newest first.
    Query(QueryArgs),
    /// Write matching records as JSON lines, each with its inclusion proof
    /// against one signed tree head (the first line).
    Export {
        #[command(flatten)]
        query: QueryArgs,
        /// Output file (default: standard output).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Print record SEQ, its leaf, its inclusion proof and a signed tree head,
    /// and check them locally.
    Prove {
        /// The record's sequence number (the receipt's MConnect-Audit-Seq).
        seq: u64,
        /// The sandbox directory (sandbox.json names the auditor).
        #[arg(long, default_value = "sandbox")]
        sandbox: PathBuf,
    },
}

/// Filters shared by `query` and `export`.
#[derive(Args, Clone, Debug)]
pub(crate) struct QueryArgs {
    /// The sandbox directory (sandbox.json names the auditor).
    #[arg(long, default_value = "sandbox")]
    sandbox: PathBuf,
    /// IDNP/IDNO the data is about.
    #[arg(long)]
    subject: Option<String>,
    /// Consumer participant id.
    #[arg(long)]
    client: Option<String>,
    /// Service as provider/code.
    #[arg(long)]
    service: Option<String>,
    /// Event type (exchange, audit.read, admin.change).
    #[arg(long)]
    event: Option<String>,
    /// Earliest time, RFC 3339 or date, inclusive.
    #[arg(long)]
    from: Option<String>,
    /// Latest time, RFC 3339 or date, exclusive.
    #[arg(long)]
    to: Option<String>,
    /// Records per page (1-1000).
    #[arg(long, default_value_t = 50)]
    limit: usize,
    /// Continue from a previous page's next_cursor.
    #[arg(long)]
    cursor: Option<String>,
    /// Pages to read at most (export reads on until the end or this bound).
    #[arg(long, default_value_t = 1)]
    pages: usize,
    /// Print the raw JSON pages instead of one line per record.
    #[arg(long)]
    json: bool,
}

/// Runs an audit subcommand.
pub(crate) async fn run(command: AuditCommand) -> Result<ExitCode> {
    match command {
        AuditCommand::Verify { dir, cert, quiet } => verify(&dir, cert, quiet).await,
        AuditCommand::Query(args) => query(&args).await,
        AuditCommand::Export { query, out } => export(&query, out.as_deref()).await,
        AuditCommand::Prove { seq, sandbox } => prove(seq, &sandbox).await,
    }
}

async fn verify(dir: &Path, cert: Option<PathBuf>, quiet: bool) -> Result<ExitCode> {
    if !dir.join("segments").is_dir() {
        bail!(
            "{} holds no audit log (no segments/ directory); give the log directory with --dir",
            dir.display()
        );
    }
    let cert = cert.unwrap_or_else(|| {
        dir.parent()
            .unwrap_or_else(|| Path::new("."))
            .join("pki/broker.cert.pem")
    });
    let pem = std::fs::read_to_string(&cert).with_context(|| {
        format!(
            "reading the broker certificate {} (give it with --cert)",
            cert.display()
        )
    })?;
    let verifier = certificate_verifier(&pem)?;
    let bar = if quiet {
        indicatif::ProgressBar::hidden()
    } else {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "verifying {bar:40} {bytes}/{total_bytes} ({eta})",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    };
    let dir = dir.to_path_buf();
    let progress = bar.clone();
    let report = tokio::task::spawn_blocking(move || {
        verify_dir_with_progress(&dir, verifier, |done, total| {
            progress.set_length(total);
            progress.set_position(done);
        })
    })
    .await
    .context("the verification did not finish")??;
    bar.finish_and_clear();
    println!("records checked : {}", report.records);
    println!("segments        : {}", report.segments);
    println!("root hash       : {}", STANDARD.encode(report.root_hash));
    println!("tree heads      : {} checked", report.tree_heads_checked);
    if let Some(torn) = &report.torn_tail {
        println!(
            "torn tail       : {} bytes at offset {} of {} (never acknowledged; removed at the next open)",
            torn.bytes_dropped,
            torn.offset,
            torn.segment.display()
        );
    }
    if report.is_ok() {
        println!("result          : OK");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("result          : {} PROBLEM(S)", report.problems.len());
        for problem in &report.problems {
            println!("  {problem}");
        }
        Ok(ExitCode::FAILURE)
    }
}

/// The sandbox's auditor on the admin API: its client, the basis and
/// reason sandbox.json names, and the broker certificate's check.
struct Auditor {
    admin: AdminClient,
    basis: String,
    reason: String,
    check: Box<TreeHeadCheck>,
}

impl Auditor {
    fn from_sandbox(dir: &Path) -> Result<Auditor> {
        let manifest = SandboxManifest::read(dir)?;
        let id = &manifest.auditor.id;
        let credentials = manifest
            .credentials(dir, id)
            .with_context(|| format!("the auditor `{id}` named in sandbox.json"))?;
        let broker_pem = std::fs::read_to_string(dir.join(&manifest.broker.cert))
            .context("reading the broker certificate named in sandbox.json")?;
        let check = certificate_verifier(&broker_pem)?;
        Ok(Auditor {
            admin: AdminClient::new(credentials, &manifest.broker.admin_url)?,
            basis: manifest.auditor.basis.clone(),
            reason: manifest.auditor.reason.clone(),
            check: Box::new(check),
        })
    }

    /// Reads under the sandbox auditor's basis and reason.
    fn reader(&self) -> AuditReader<'_> {
        AuditReader::new(&self.admin, &self.basis, &self.reason, &*self.check)
    }
}

fn search(args: &QueryArgs) -> Search {
    Search {
        subject: args.subject.clone(),
        client: args.client.clone(),
        service: args.service.clone(),
        event: args.event.clone(),
        from: args.from.clone(),
        to: args.to.clone(),
        limit: args.limit,
    }
}

async fn query(args: &QueryArgs) -> Result<ExitCode> {
    let auditor = Auditor::from_sandbox(&args.sandbox)?;
    let reader = auditor.reader();
    let search = search(args);
    let mut cursor = args.cursor.clone();
    for _ in 0..args.pages.max(1) {
        let page = reader.search(&search, cursor.as_deref()).await?;
        if args.json {
            println!("{}", page.json);
        } else {
            for entry in &page.entries {
                let r = &entry.record;
                let text = |v: &Option<String>| v.as_deref().unwrap_or("-").to_string();
                println!(
                    "{:>8}  {}  {:<12} {:<14} {:<34} subject {:<13} {} {}  purpose {}  basis {}",
                    entry.seq,
                    r.received_at,
                    r.event,
                    text(&r.consumer),
                    text(&r.service),
                    text(&r.subject),
                    match r.decision {
                        Decision::Accepted => "accepted",
                        Decision::Refused => "refused",
                    },
                    r.http_status,
                    text(&r.purpose),
                    text(&r.legal_basis),
                );
            }
        }
        cursor = page.next_cursor;
        if cursor.is_none() {
            break;
        }
    }
    if let Some(c) = &cursor
        && !args.json
    {
        println!("more: --cursor {c}");
    }
    Ok(ExitCode::SUCCESS)
}

async fn export(args: &QueryArgs, out: Option<&Path>) -> Result<ExitCode> {
    let auditor = Auditor::from_sandbox(&args.sandbox)?;
    let mut sink: Box<dyn Write> = match out {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout())),
    };
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_style(
        indicatif::ProgressStyle::with_template("exporting {pos} records {spinner}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    // Pages are bounded by --pages unless it was left at 1, which for an
    // export means "until the end", still capped so a runaway never loops.
    let max_pages = if args.pages <= 1 { 100_000 } else { args.pages };
    let exported = auditor
        .reader()
        .export(&search(args), args.cursor.as_deref(), max_pages, |line| {
            writeln!(sink, "{line}")?;
            if line.get("seq").is_some() {
                bar.inc(1);
            }
            Ok(())
        })
        .await?;
    sink.flush()?;
    bar.finish_and_clear();
    eprintln!(
        "exported {} records with inclusion proofs against the tree head of size {} (signature verified)",
        exported.records, exported.tree_head.tree_size
    );
    Ok(ExitCode::SUCCESS)
}

async fn prove(seq: u64, sandbox: &Path) -> Result<ExitCode> {
    let auditor = Auditor::from_sandbox(sandbox)?;
    let proven = auditor.reader().prove(seq).await?;
    let sth = &proven.tree_head;
    println!("record {seq}:");
    println!(
        "{}",
        serde_json::to_string_pretty(&proven.entry.record).unwrap_or_default()
    );
    println!("leaf (base64)   : {}", STANDARD.encode(&proven.entry.leaf));
    println!(
        "leaf hash       : {}",
        STANDARD.encode(proven.entry.leaf_hash())
    );
    println!("inclusion proof : {} hashes", proven.audit_path.len());
    for h in &proven.audit_path {
        println!("  {}", STANDARD.encode(h));
    }
    println!(
        "tree head       : size {}, root {}, time {} ms, key {}",
        sth.tree_size,
        STANDARD.encode(sth.root_hash),
        sth.timestamp,
        sth.keyid
    );
    println!("signature       : {}", STANDARD.encode(&sth.signature));
    println!(
        "checked         : leaf is canonical, proof leads to the signed root, signature verifies with the broker certificate"
    );
    Ok(ExitCode::SUCCESS)
}
