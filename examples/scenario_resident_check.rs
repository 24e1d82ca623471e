//! Scenario: an APL checks a resident in the population register.
//!
//! Primăria Cahul (`apl-cahul`) asks the State Population Register
//! (`asp-rsp/person-by-idnp`) about a person, on its residence-verification
//! grant, and tells whether the person lives in Cahul. Built only on the
//! participant SDK; run against a running sandbox:
//!
//! ```text
//! cargo run --example scenario_resident_check -- --sandbox sandbox --idnp 2000000000015
//! ```

use std::path::PathBuf;

use clap::Parser;
use http::Method;
use mconnect_sdk::{Call, SandboxManifest};
use serde_json::Value;

#[derive(Parser)]
struct Args {
    /// The sandbox directory (holds sandbox.json).
    #[arg(long, default_value = "sandbox")]
    sandbox: PathBuf,
    /// The resident's IDNP.
    #[arg(long, default_value = "2000000000015")]
    idnp: String,
    /// The IDNP of the clerk on whose action the call is made.
    #[arg(long, default_value = "2003000000027")]
    clerk: String,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let sandbox = SandboxManifest::read(&args.sandbox)?;
    let apl = sandbox.consumer(&args.sandbox, "apl-cahul")?;
    let outcome = apl
        .call(&Call {
            method: Method::GET,
            path: format!("/r1/asp-rsp/person-by-idnp?idnp={}", args.idnp),
            body: None,
            calling_user: args.clerk,
            basis: "md-law-436-2006-art-29".into(),
            reason: "residence-verification".into(),
            subject: Some(args.idnp.clone()),
            represented_party: None,
            request_id: None,
        })
        .await?;
    let receipt = outcome
        .receipt
        .map_err(|e| format!("the broker's receipt does not verify: {e}"))?;
    if !outcome.status.is_success() {
        return Err(format!(
            "refused ({}): {}",
            outcome.status,
            String::from_utf8_lossy(&outcome.body)
        )
        .into());
    }
    let person: Value = serde_json::from_slice(&outcome.body)?;
    let name = format!(
        "{} {}",
        person["first_name"].as_str().unwrap_or("?"),
        person["last_name"].as_str().unwrap_or("?")
    );
    let locality = person["address"]["locality"].as_str().unwrap_or("?");
    println!("{name} (IDNP {}) is a resident of {locality}", args.idnp);
    if locality == "Cahul" {
        println!("verdict: lives in Cahul, the local service can proceed");
    } else {
        println!("verdict: not domiciled in Cahul");
    }
    println!(
        "exchange {} recorded in the audit log at {:?}",
        receipt.exchange_id, receipt.audit_seq
    );
    Ok(())
}
