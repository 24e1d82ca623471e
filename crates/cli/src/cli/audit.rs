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
//! Invariant: nothing the broker answers is taken on trust by `export` and
//! `prove`: tree heads are checked with the broker certificate and every proof
//! is checked locally against the signed root before it is printed or written.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use clap::{Args, Subcommand};
use http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::sandbox::SandboxManifest;
use mconnect::audit::{
    AuditRecord, Hash, SignedTreeHead, certificate_verifier, verify_dir_with_progress,
    verify_inclusion, verify_tree_head,
};
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

/// Checks a tree head signature: `(keyid, message, signature)`.
type SthVerifier = Box<dyn Fn(&str, &[u8], &[u8]) -> Result<(), String> + Send + Sync>;

/// The sandbox's auditor on the admin API.
struct Auditor {
    admin: AdminClient,
    basis: String,
    reason: String,
    verifier: SthVerifier,
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
        let verifier = certificate_verifier(&broker_pem)?;
        Ok(Auditor {
            admin: AdminClient::new(credentials, &manifest.broker.admin_url)?,
            basis: manifest.auditor.basis.clone(),
            reason: manifest.auditor.reason.clone(),
            verifier: Box::new(verifier),
        })
    }

    /// GETs an audit endpoint with the basis and reason; a refusal is an error
    /// naming its problem code.
    async fn get(&self, path_and_query: &str) -> Result<Value> {
        let mut request = self.admin.plain(Method::GET, path_and_query, None)?;
        request
            .headers_mut()
            .insert("mconnect-call-basis", self.basis.parse()?);
        request
            .headers_mut()
            .insert("mconnect-call-reason", self.reason.parse()?);
        let answer = tokio::time::timeout(Duration::from_secs(30), self.admin.send_full(request))
            .await
            .context("the admin API did not answer in 30 s")?
            .with_context(|| format!("calling {}", self.admin.url(path_and_query)))?;
        if answer.status != StatusCode::OK {
            bail!(
                "{path_and_query}: {} {}: {}",
                answer.status,
                answer.body["code"].as_str().unwrap_or("?"),
                answer.body["detail"].as_str().unwrap_or("")
            );
        }
        Ok(answer.body)
    }

    /// A signed tree head, its signature checked with the broker certificate.
    async fn tree_head(&self) -> Result<SignedTreeHead> {
        let sth: SignedTreeHead = serde_json::from_value(self.get("/v1/audit/tree-head").await?)
            .context("the tree head is not in the documented form")?;
        verify_tree_head(&sth, |k, m, s| (self.verifier)(k, m, s))?;
        Ok(sth)
    }

    /// The inclusion proof of `seq` in `sth`, checked against its root.
    async fn inclusion(&self, seq: u64, leaf: &[u8], sth: &SignedTreeHead) -> Result<Vec<Hash>> {
        let answer = self
            .get(&format!(
                "/v1/audit/proof/inclusion?seq={seq}&tree_size={}",
                sth.tree_size
            ))
            .await?;
        let path = hashes(&answer["audit_path"])?;
        verify_inclusion(
            &mconnect::audit::merkle::leaf_hash(leaf),
            seq,
            sth.tree_size,
            &path,
            &sth.root_hash,
        )
        .with_context(|| format!("the inclusion proof of record {seq} does not verify"))?;
        Ok(path)
    }
}

fn hashes(value: &Value) -> Result<Vec<Hash>> {
    value
        .as_array()
        .context("expected an array of hashes")?
        .iter()
        .map(|h| {
            let bytes = STANDARD.decode(h.as_str().context("hash is not a string")?)?;
            <Hash>::try_from(bytes.as_slice()).map_err(|_| anyhow::anyhow!("hash is not 32 bytes"))
        })
        .collect()
}

/// Decodes an item's leaf and checks the record shown is the leaf's record.
fn leaf_of(item: &Value) -> Result<(u64, Vec<u8>)> {
    let seq = item["seq"].as_u64().context("item without seq")?;
    let leaf = STANDARD.decode(item["leaf"].as_str().context("item without leaf")?)?;
    let record = AuditRecord::from_canonical_bytes(&leaf)?;
    if serde_json::to_value(&record)? != item["record"] {
        bail!("record {seq}: the record shown differs from its leaf bytes");
    }
    Ok((seq, leaf))
}

fn search_path(args: &QueryArgs, cursor: Option<&str>) -> String {
    let mut query = vec![format!("limit={}", args.limit)];
    let mut put = |name: &str, value: Option<&str>| {
        if let Some(v) = value {
            query.push(format!("{name}={}", percent(v)));
        }
    };
    put("subject", args.subject.as_deref());
    put("client", args.client.as_deref());
    put("service", args.service.as_deref());
    put("event", args.event.as_deref());
    put("from", args.from.as_deref());
    put("to", args.to.as_deref());
    put("cursor", cursor);
    format!("/v1/audit/records?{}", query.join("&"))
}

/// Percent-encodes everything but unreserved characters (RFC 3986).
fn percent(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

async fn query(args: &QueryArgs) -> Result<ExitCode> {
    let auditor = Auditor::from_sandbox(&args.sandbox)?;
    let mut cursor = args.cursor.clone();
    for _ in 0..args.pages.max(1) {
        let page = auditor.get(&search_path(args, cursor.as_deref())).await?;
        if args.json {
            println!("{page}");
        } else {
            for item in page["items"].as_array().into_iter().flatten() {
                let r = &item["record"];
                let text = |k: &str| r[k].as_str().unwrap_or("-").to_string();
                println!(
                    "{:>8}  {}  {:<12} {:<14} {:<34} subject {:<13} {} {}  purpose {}  basis {}",
                    item["seq"],
                    text("received_at"),
                    text("event"),
                    text("consumer"),
                    text("service"),
                    text("subject"),
                    text("decision"),
                    r["http_status"],
                    text("purpose"),
                    text("legal_basis"),
                );
            }
        }
        cursor = page["next_cursor"].as_str().map(str::to_string);
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
    let sth = auditor.tree_head().await?;
    let mut sink: Box<dyn Write> = match out {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout())),
    };
    writeln!(sink, "{}", json!({ "tree_head": sth }))?;
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_style(
        indicatif::ProgressStyle::with_template("exporting {pos} records {spinner}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    let mut cursor = args.cursor.clone();
    let mut written = 0u64;
    // Pages are bounded by --pages unless it was left at 1, which for an
    // export means "until the end", still capped so a runaway never loops.
    let max_pages = if args.pages <= 1 { 100_000 } else { args.pages };
    for _ in 0..max_pages {
        let page = auditor.get(&search_path(args, cursor.as_deref())).await?;
        for item in page["items"].as_array().into_iter().flatten() {
            let (seq, leaf) = leaf_of(item)?;
            // Records newer than the tree head cannot be proved against it;
            // they belong to the next export.
            if seq >= sth.tree_size {
                continue;
            }
            let path = auditor.inclusion(seq, &leaf, &sth).await?;
            let line = json!({
                "seq": seq,
                "record": item["record"],
                "leaf": item["leaf"],
                "tree_size": sth.tree_size,
                "audit_path": path.iter().map(|h| STANDARD.encode(h)).collect::<Vec<_>>(),
            });
            writeln!(sink, "{line}")?;
            written += 1;
            bar.set_position(written);
        }
        cursor = page["next_cursor"].as_str().map(str::to_string);
        if cursor.is_none() {
            break;
        }
    }
    sink.flush()?;
    bar.finish_and_clear();
    eprintln!(
        "exported {written} records with inclusion proofs against the tree head of size {} (signature verified)",
        sth.tree_size
    );
    Ok(ExitCode::SUCCESS)
}

async fn prove(seq: u64, sandbox: &Path) -> Result<ExitCode> {
    let auditor = Auditor::from_sandbox(sandbox)?;
    let item = auditor.get(&format!("/v1/audit/records/{seq}")).await?;
    let (_, leaf) = leaf_of(&item)?;
    let sth = auditor.tree_head().await?;
    if seq >= sth.tree_size {
        bail!(
            "record {seq} is beyond the tree head of size {}",
            sth.tree_size
        );
    }
    let path = auditor.inclusion(seq, &leaf, &sth).await?;
    let leaf_hash = mconnect::audit::merkle::leaf_hash(&leaf);
    println!("record {seq}:");
    println!(
        "{}",
        serde_json::to_string_pretty(&item["record"]).unwrap_or_default()
    );
    println!("leaf (base64)   : {}", STANDARD.encode(&leaf));
    println!("leaf hash       : {}", STANDARD.encode(leaf_hash));
    println!("inclusion proof : {} hashes", path.len());
    for h in &path {
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
