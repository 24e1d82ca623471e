//! `sandbox.json` (PROTOCOL.md section 9): what `mconnect sandbox` writes
//! for participant tools and scripts — the broker's URLs and certificate,
//! every participant's key and certificate (paths relative to the sandbox
//! directory), calls the shipped policies allow, and an auditor. Participant
//! code reads it here; only the sandbox writes it.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::consumer::Consumer;
use crate::crypto::Algorithm;
use crate::keys::{Credentials, SdkError, TrustedKeys};
use crate::protocol::Role;

/// `sandbox.json`: what tools and scripts read (paths relative to the directory).
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct SandboxManifest {
    /// The broker.
    pub broker: ManifestBroker,
    /// The CA certificate.
    pub ca: String,
    /// Every participant with its key and certificate.
    pub participants: Vec<ManifestParticipant>,
    /// Calls the shipped policies allow.
    #[serde(rename = "try")]
    pub tries: Vec<ManifestTry>,
    /// A participant allowed to read the audit log.
    pub auditor: ManifestAuditor,
    /// The data-access portal, when the sandbox runs one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub portal: Option<ManifestPortal>,
    /// The brokers behind the load balancer, with `mconnect sandbox
    /// --cluster` (then `broker.data_url` is the load balancer's and
    /// `broker.cert` holds every broker's certificate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ManifestCluster>,
}

/// `sandbox.json`'s `cluster` block (PROTOCOL.md section 9).
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct ManifestCluster {
    /// The load balancer: the URL consumers call (and sign `@target-uri` for).
    pub data_url: String,
    /// Each broker behind it.
    pub brokers: Vec<ManifestClusterBroker>,
    /// The connection string of the PostgreSQL database the brokers share.
    pub postgres: String,
}

/// One broker of a cluster.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct ManifestClusterBroker {
    /// Its name in the sandbox (`a`, `b`).
    pub id: String,
    /// Its own data plane (requests sent here are still signed for the
    /// load balancer's authority).
    pub data_url: String,
    /// Its admin API.
    pub admin_url: String,
    /// Its operations listener (plain HTTP: /healthz, /readyz, /metrics).
    pub ops_url: String,
    /// Its process id (a broker the sandbox restarted has a new one).
    pub pid: u32,
    /// Its certificate (PEM, relative to the sandbox directory).
    pub cert: String,
    /// The SHA-256 fingerprint of that certificate: the keyid of its receipts.
    pub keyid: String,
}

/// The data-access portal in `sandbox.json`.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct ManifestPortal {
    /// Its base URL (HTTPS, certificate of the sandbox CA).
    pub url: String,
    /// The people its development sign-in offers.
    #[serde(default)]
    pub officials: Vec<ManifestOfficial>,
}

/// A local-authority official of the sandbox (the sandbox definition's
/// `officials`, and `sandbox.json`'s `portal.officials`).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ManifestOfficial {
    /// IDNP.
    pub idnp: String,
    /// Full name.
    pub name: String,
    /// The organisation's name.
    pub organisation: String,
    /// The organisation's participant id.
    pub participant: String,
    /// `official`, and `administrator` for who decides which official may
    /// use which grant.
    pub roles: Vec<String>,
}

/// The broker in `sandbox.json`.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct ManifestBroker {
    /// Data plane base URL.
    pub data_url: String,
    /// Admin API base URL.
    pub admin_url: String,
    /// Operations listener base URL (plain HTTP, no client certificate).
    #[serde(default)]
    pub ops_url: String,
    /// Broker certificate.
    pub cert: String,
    /// Its fingerprint.
    pub keyid: String,
}

/// A participant in `sandbox.json`.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct ManifestParticipant {
    /// Participant id.
    pub id: String,
    /// Roles.
    pub roles: Vec<Role>,
    /// Private key PEM.
    pub key: String,
    /// Certificate PEM.
    pub cert: String,
    /// The RFC 9421 algorithm it signs with.
    pub alg: String,
    /// A provider's endpoint (example registers), for tools that bypass the broker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
}

/// A call in `sandbox.json`'s `try` list.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct ManifestTry {
    /// Calling participant.
    pub client: String,
    /// `provider/code`.
    pub service: String,
    /// HTTP method.
    pub method: String,
    /// Path and query on the broker.
    pub path: String,
    /// JSON body.
    pub body: Option<serde_json::Value>,
    /// Legal basis id.
    pub basis: String,
    /// Purpose code.
    pub reason: String,
    /// Subject.
    pub subject: Option<String>,
    /// The IDNP of the user on whose action the call is made, when it must
    /// be a particular person (a power of attorney changes only with its
    /// grantor's consent); otherwise the sandbox's default calling user (`2000000000015`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calling_user: Option<String>,
}

impl ManifestTry {
    /// The call this entry describes, made on behalf of `default_user` when
    /// the entry names no calling user of its own.
    pub fn call(&self, default_user: &str) -> Result<crate::consumer::Call, SdkError> {
        Ok(crate::consumer::Call {
            method: self.method.parse().map_err(|_| {
                SdkError::Manifest(format!(
                    "try entry: `{}` is not an HTTP method",
                    self.method
                ))
            })?,
            path: self.path.clone(),
            body: self
                .body
                .as_ref()
                .map(|b| bytes::Bytes::from(b.to_string())),
            calling_user: self
                .calling_user
                .clone()
                .unwrap_or_else(|| default_user.to_string()),
            basis: self.basis.clone(),
            reason: self.reason.clone(),
            subject: self.subject.clone(),
            represented_party: None,
            request_id: None,
        })
    }
}

/// The auditor in `sandbox.json`.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct ManifestAuditor {
    /// Participant id.
    pub id: String,
    /// Legal basis id.
    pub basis: String,
    /// Purpose code.
    pub reason: String,
}

impl SandboxManifest {
    /// Reads `{dir}/sandbox.json`.
    pub fn read(dir: &Path) -> Result<SandboxManifest, SdkError> {
        let path = dir.join("sandbox.json");
        let text = std::fs::read_to_string(&path).map_err(|e| {
            SdkError::Manifest(format!(
                "reading {}: {e} (start `mconnect sandbox` first)",
                path.display()
            ))
        })?;
        serde_json::from_str(&text)
            .map_err(|e| SdkError::Manifest(format!("parsing {}: {e}", path.display())))
    }

    /// The key, certificate and CA of a sandbox participant (`dir` holds
    /// sandbox.json), signing with the participant's algorithm.
    pub fn credentials(&self, dir: &Path, participant: &str) -> Result<Credentials, SdkError> {
        let p = self
            .participants
            .iter()
            .find(|p| p.id == participant)
            .ok_or_else(|| {
                SdkError::Manifest(format!("no participant `{participant}` in sandbox.json"))
            })?;
        Credentials::load(
            &p.id,
            &dir.join(&p.cert),
            &dir.join(&p.key),
            &dir.join(&self.ca),
            Algorithm::from_name(&p.alg),
        )
        .map_err(|e| {
            SdkError::Credentials(format!(
                "loading the key and certificate of `{participant}`: {e}"
            ))
        })
    }

    /// The keys receipts may be signed with: `broker.cert` and, in a
    /// cluster, every broker's certificate (any of them may answer a call
    /// through the load balancer).
    pub fn broker_keys(&self, dir: &Path) -> Result<TrustedKeys, SdkError> {
        let mut pem = String::new();
        let files = std::iter::once(&self.broker.cert).chain(
            self.cluster
                .iter()
                .flat_map(|c| c.brokers.iter().map(|b| &b.cert)),
        );
        for file in files {
            let path = dir.join(file);
            let text = std::fs::read_to_string(&path)
                .map_err(|e| SdkError::Credentials(format!("reading {}: {e}", path.display())))?;
            pem.push_str(&text);
            pem.push('\n');
        }
        TrustedKeys::from_pem(&pem)
    }

    /// A consumer client for a sandbox participant.
    pub fn consumer(&self, dir: &Path, participant: &str) -> Result<Consumer, SdkError> {
        let credentials = self.credentials(dir, participant)?;
        Consumer::new(credentials, &self.broker.data_url, self.broker_keys(dir)?)
    }
}
