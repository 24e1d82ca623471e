//! `mconnect audit`: the auditor's tools.
//!
//! - `verify` reads a log directory directly (it never writes, so it may run on
//!   a copy or beside a live broker): every segment, the recomputed tree, every
//!   published signed tree head. Any problem makes the exit code 1. With
//!   `--shipped postgres://…` it then checks the cluster's shared copy
//!   against the log (`mconnect::audit::ship::verify_shipped`): this
//!   broker's rows byte for byte, in order, none missing, none extra.
//! - `query`, `export` and `prove` go through the admin API as an auditor
//!   participant under a legal basis and purpose (`--basis`, `--reason`),
//!   reaching the broker as the shared target settings say (`target`; with
//!   a sandbox, its auditor, basis and reason by default), so each of their
//!   reads is legal-basis-checked and audited like anyone's; they never
//!   read the log files behind the broker's back.
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

use super::output::{self, Table, usage};
use super::target::{Plane, TargetArgs};
use mconnect::audit::auditor::{AuditReader, Search, TreeHeadCheck, bundle_head, bundle_line};
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
        /// Also check the cluster's shared copy in this PostgreSQL database
        /// (`postgres://user[:password]@127.0.0.1/db`, as `[state] postgres`):
        /// this broker's rows must be its records byte for byte, in order,
        /// none missing, none extra.
        #[arg(long, value_name = "POSTGRES_URL", env = "MCONNECT_AUDIT_SHIPPED")]
        shipped: Option<String>,
        /// The broker id the log was shipped under (default: the log
        /// directory's `broker-id` file).
        #[arg(long, requires = "shipped")]
        broker_id: Option<String>,
    },
    /// Search the log through the admin API, newest first.
    #[command(mut_arg("broker", |a| a.hide(true)))]
    Query(QueryArgs),
    /// Write matching records as JSON lines, each with its inclusion proof
    /// against one signed tree head (the first line).
    #[command(mut_arg("broker", |a| a.hide(true)))]
    Export(ExportArgs),
    /// Print record SEQ, its leaf, its inclusion proof and a signed tree head,
    /// and check them locally.
    #[command(mut_arg("broker", |a| a.hide(true)))]
    Prove(ProveArgs),
}

/// Who reads, where, and under which legal basis and purpose.
#[derive(Args, Clone, Debug)]
pub(crate) struct Reading {
    /// The admin API and the auditor (a sandbox's auditor by default).
    #[command(flatten)]
    target: TargetArgs,
    /// The legal basis of the read (default: the profile's `audit-basis`,
    /// or the sandbox auditor's).
    #[arg(long, env = "MCONNECT_AUDIT_BASIS")]
    basis: Option<String>,
    /// The purpose of the read (default: the profile's `audit-reason`, or
    /// the sandbox auditor's).
    #[arg(long, env = "MCONNECT_AUDIT_REASON")]
    reason: Option<String>,
}

/// What records to select, for `query` and `export`.
#[derive(Args, Clone, Debug)]
pub(crate) struct Filters {
    /// Only records about this IDNP/IDNO.
    #[arg(long)]
    subject: Option<String>,
    /// Only calls of this consumer participant.
    #[arg(long)]
    client: Option<String>,
    /// Only calls of this service, as provider/code.
    #[arg(long)]
    service: Option<String>,
    /// Only records of this event type (exchange, audit.read, admin.change).
    #[arg(long)]
    event: Option<String>,
    /// Only records received at or after this time (RFC 3339 or date).
    #[arg(long)]
    from: Option<String>,
    /// Only records received before this time (RFC 3339 or date).
    #[arg(long)]
    to: Option<String>,
    /// Records per page (1-1000).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u16).range(1..=1000))]
    limit: u16,
    /// Start from a previous page's next cursor.
    #[arg(long)]
    cursor: Option<String>,
}

/// `audit query`.
#[derive(Args, Clone, Debug)]
pub(crate) struct QueryArgs {
    #[command(flatten)]
    reading: Reading,
    #[command(flatten)]
    filters: Filters,
    /// Pages to read (the last page's cursor is printed to go on).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pages: u32,
    /// Print the API's JSON pages instead of a table.
    #[arg(long)]
    json: bool,
}

/// `audit export`.
#[derive(Args, Clone, Debug)]
pub(crate) struct ExportArgs {
    #[command(flatten)]
    reading: Reading,
    #[command(flatten)]
    filters: Filters,
    /// Pages to read at most (default: every page to the end).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pages: Option<u32>,
    /// Output file, created or replaced (default: standard output).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// `audit prove`.
#[derive(Args, Clone, Debug)]
pub(crate) struct ProveArgs {
    /// The record's sequence number (the receipt's MConnect-Audit-Seq).
    seq: u64,
    #[command(flatten)]
    reading: Reading,
    /// Print the record, proof and tree head as one JSON object (the export
    /// bundle's two lines, joined).
    #[arg(long)]
    json: bool,
}

/// An export without `--pages` reads on to the end; this bounds a runaway.
const EXPORT_MAX_PAGES: usize = 1_000_000;

/// Runs an audit subcommand.
pub(crate) async fn run(command: AuditCommand) -> Result<ExitCode> {
    match command {
        AuditCommand::Verify {
            dir,
            cert,
            quiet,
            shipped,
            broker_id,
        } => {
            let local = verify(&dir, cert, quiet).await?;
            match shipped {
                None => Ok(local),
                Some(url) => {
                    let copy = verify_copy(&dir, &url, broker_id).await?;
                    Ok(if local == ExitCode::SUCCESS {
                        copy
                    } else {
                        local
                    })
                }
            }
        }
        AuditCommand::Query(args) => query(&args).await,
        AuditCommand::Export(args) => export(&args).await,
        AuditCommand::Prove(args) => prove(&args).await,
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

/// `verify --shipped`: compares the cluster's shared copy with the log.
async fn verify_copy(dir: &Path, url: &str, broker_id: Option<String>) -> Result<ExitCode> {
    let settings = mconnect::store::PostgresSettings::from_url(url)
        .map_err(|e| usage(format!("--shipped {e}")))?;
    let broker = match broker_id {
        Some(id) => id,
        None => {
            let path = dir.join(mconnect::audit::ship::BROKER_ID_FILE);
            std::fs::read_to_string(&path)
                .with_context(|| {
                    format!(
                        "reading {} (the log was never shipped, or give --broker-id)",
                        path.display()
                    )
                })?
                .trim()
                .to_string()
        }
    };
    let dir = dir.to_path_buf();
    let who = broker.clone();
    let report = tokio::task::spawn_blocking(move || {
        let copy = mconnect::store::PgAuditCopy::open(&settings)?;
        anyhow::Ok(mconnect::audit::ship::verify_shipped(&dir, &copy, &who)?)
    })
    .await
    .context("the comparison did not finish")??;
    println!("shipped as      : {}", report.broker_id);
    println!(
        "shipped copy    : records {}..{} ({} below removed under retention)",
        report.position.pruned_below, report.position.shipped, report.position.pruned_below
    );
    println!("rows compared   : {}", report.compared);
    if report.is_ok() {
        println!("shipped result  : OK (the copy matches the log)");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("shipped result  : {} PROBLEM(S)", report.problems.len());
        for problem in &report.problems {
            println!("  {problem}");
        }
        Ok(ExitCode::FAILURE)
    }
}

/// An auditor on the admin API: its client, the basis and reason it reads
/// under, and the broker certificate's check.
struct Auditor {
    admin: AdminClient,
    basis: String,
    reason: String,
    check: Box<TreeHeadCheck>,
}

impl Auditor {
    /// Resolves the reading settings in one step (see `target`).
    fn resolve(reading: &Reading) -> Result<Auditor> {
        let sources = reading.target.sources(Plane::Admin)?;
        let default = sources.sandbox().map(|(_, m)| m.auditor.id.clone());
        let target = sources.resolve(None, default.as_deref(), true)?;
        let basis = reading
            .basis
            .clone()
            .or_else(|| target.audit_basis.clone())
            .ok_or_else(|| usage("name the legal basis of the read with --basis"))?;
        let reason = reading
            .reason
            .clone()
            .or_else(|| target.audit_reason.clone())
            .ok_or_else(|| usage("name the purpose of the read with --reason"))?;
        Ok(Auditor {
            admin: target.admin_client()?,
            basis,
            reason,
            check: target.tree_head_check()?,
        })
    }

    /// Reads under the auditor's basis and reason.
    fn reader(&self) -> AuditReader<'_> {
        AuditReader::new(&self.admin, &self.basis, &self.reason, &*self.check)
    }
}

fn search(filters: &Filters) -> Search {
    Search {
        subject: filters.subject.clone(),
        client: filters.client.clone(),
        service: filters.service.clone(),
        event: filters.event.clone(),
        from: filters.from.clone(),
        to: filters.to.clone(),
        limit: usize::from(filters.limit),
    }
}

async fn query(args: &QueryArgs) -> Result<ExitCode> {
    let auditor = Auditor::resolve(&args.reading)?;
    let reader = auditor.reader();
    let search = search(&args.filters);
    let mut cursor = args.filters.cursor.clone();
    let mut table = Table::new(&[
        "SEQ", "RECEIVED", "EVENT", "CONSUMER", "SERVICE", "SUBJECT", "DECISION", "STATUS",
        "PURPOSE", "BASIS",
    ]);
    for _ in 0..args.pages {
        let page = reader.search(&search, cursor.as_deref()).await?;
        if args.json {
            println!("{}", page.json);
        }
        for entry in &page.entries {
            let r = &entry.record;
            let text = |v: &Option<String>| v.as_deref().unwrap_or("-").to_string();
            table.row(vec![
                entry.seq.to_string(),
                r.received_at.clone(),
                r.event.clone(),
                text(&r.consumer),
                text(&r.service),
                text(&r.subject),
                match r.decision {
                    Decision::Accepted => "accepted",
                    Decision::Refused => "refused",
                }
                .to_string(),
                r.http_status.to_string(),
                text(&r.purpose),
                text(&r.legal_basis),
            ]);
        }
        cursor = page.next_cursor;
        if cursor.is_none() {
            break;
        }
    }
    if !args.json {
        if table.is_empty() {
            println!("no records match");
        } else {
            table.print();
        }
        if let Some(c) = &cursor {
            println!("more: --cursor {c}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn export(args: &ExportArgs) -> Result<ExitCode> {
    let auditor = Auditor::resolve(&args.reading)?;
    let mut sink: Box<dyn Write> = match &args.out {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout())),
    };
    let bar = if args.out.is_some() && std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_style(
            indicatif::ProgressStyle::with_template("exporting {pos} records {spinner}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };
    let max_pages = args.pages.map_or(EXPORT_MAX_PAGES, |n| {
        usize::try_from(n).unwrap_or(EXPORT_MAX_PAGES)
    });
    let exported = auditor
        .reader()
        .export(
            &search(&args.filters),
            args.filters.cursor.as_deref(),
            max_pages,
            |line| {
                writeln!(sink, "{line}")?;
                if line.get("seq").is_some() {
                    bar.inc(1);
                }
                Ok(())
            },
        )
        .await?;
    sink.flush()?;
    bar.finish_and_clear();
    eprintln!(
        "exported {} records with inclusion proofs against the tree head of size {} (signature verified)",
        exported.records, exported.tree_head.tree_size
    );
    Ok(ExitCode::SUCCESS)
}

async fn prove(args: &ProveArgs) -> Result<ExitCode> {
    let seq = args.seq;
    let auditor = Auditor::resolve(&args.reading)?;
    let proven = auditor.reader().prove(seq).await?;
    let sth = &proven.tree_head;
    if args.json {
        let mut joined = bundle_head(sth);
        if let (Some(into), serde_json::Value::Object(line)) = (
            joined.as_object_mut(),
            bundle_line(&proven.entry, sth, &proven.audit_path),
        ) {
            into.extend(line);
        }
        output::print_json(&joined);
        return Ok(ExitCode::SUCCESS);
    }
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
