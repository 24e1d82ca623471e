//! Which broker a command talks to and as whom: the one argument group
//! (`TargetArgs`) every remote command flattens, and the validated
//! [`Target`] it becomes in one step, before anything is sent.
//!
//! Each setting is taken from the first source that names it:
//!
//! 1. a flag (`--broker`, `--admin`, `--cert`, `--key`, `--ca`,
//!    `--broker-cert`, `--participant`, `--alg`);
//! 2. the environment (`MCONNECT_BROKER`, `MCONNECT_ADMIN`, `MCONNECT_CERT`,
//!    `MCONNECT_KEY`, `MCONNECT_CA`, `MCONNECT_BROKER_CERT`,
//!    `MCONNECT_PARTICIPANT`, `MCONNECT_ALG`);
//! 3. the `[NAME]` table of the profile file (`--profile NAME` or
//!    `MCONNECT_PROFILE`; the file is `$MCONNECT_PROFILES`, else
//!    `$XDG_CONFIG_HOME/mconnect/profiles.toml`, else
//!    `~/.config/mconnect/profiles.toml`), keys spelt like the flags;
//!    relative paths there are relative to the profile file;
//! 4. `sandbox.json` of `--sandbox DIR` (`MCONNECT_SANDBOX`), or of
//!    `./sandbox` when no other source names the broker at all (the
//!    sandbox's own default, as before remote brokers were supported).
//!
//! The participant, when no source names it, is the sandbox's default for
//! the command (its auditor for `audit`), else the client certificate's
//! common name.
//!
//! Invariants: every file is read and parsed here, each error names its
//! file and what is wrong, and all of them are usage errors (exit 64); a
//! profile file or private key that group or others may access is refused,
//! as ssh refuses one; the key must match the certificate.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::Args;
use serde::Deserialize;

use super::output::usage;
use mconnect::audit::auditor::TreeHeadCheck;
use mconnect::connect::client::AdminClient;
use mconnect_sdk::crypto::{Algorithm, SigningKey, VerifyingKey};
use mconnect_sdk::{Consumer, Credentials, SandboxManifest, TrustedKeys, parse_certs};

/// Where the broker is and who calls it (see the module documentation for
/// the order of sources).
#[derive(Args, Clone, Debug, Default)]
pub(crate) struct TargetArgs {
    /// The broker's data plane, `https://host[:port]`.
    #[arg(long, global = true, env = "MCONNECT_BROKER", value_name = "URL")]
    broker: Option<String>,
    /// The broker's admin API, `https://host[:port]`.
    #[arg(long, global = true, env = "MCONNECT_ADMIN", value_name = "URL")]
    admin: Option<String>,
    /// The caller's client certificate (PEM).
    #[arg(long, global = true, env = "MCONNECT_CERT", value_name = "FILE")]
    cert: Option<PathBuf>,
    /// The caller's private key (PEM; mode 0600 or stricter).
    #[arg(long, global = true, env = "MCONNECT_KEY", value_name = "FILE")]
    key: Option<PathBuf>,
    /// The bus CA certificate(s) the broker's TLS certificate chains to (PEM).
    #[arg(long, global = true, env = "MCONNECT_CA", value_name = "FILE")]
    ca: Option<PathBuf>,
    /// The broker certificate whose key signs receipts and tree heads (PEM).
    #[arg(long, global = true, env = "MCONNECT_BROKER_CERT", value_name = "FILE")]
    broker_cert: Option<PathBuf>,
    /// The calling participant's id (default: the certificate's common name).
    #[arg(
        long,
        global = true,
        env = "MCONNECT_PARTICIPANT",
        value_name = "ID",
        visible_alias = "as"
    )]
    participant: Option<String>,
    /// The RFC 9421 algorithm to sign with (default: the key's own, e.g.
    /// rsa-pss-sha512 for RSA; rsa-v1_5-sha256 must be asked for).
    #[arg(long, global = true, env = "MCONNECT_ALG", value_name = "ALG")]
    alg: Option<String>,
    /// A named table of the profile file.
    #[arg(long, global = true, env = "MCONNECT_PROFILE", value_name = "NAME")]
    profile: Option<String>,
    /// A sandbox directory: its sandbox.json names the broker and each
    /// participant's files (the last source; `sandbox` when no other source
    /// names a broker).
    #[arg(long, global = true, env = "MCONNECT_SANDBOX", value_name = "DIR")]
    sandbox: Option<PathBuf>,
}

/// Which listener a command talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Plane {
    /// The data plane (`call`).
    Data,
    /// The admin API (`connect`, `audit`, `participant`).
    Admin,
}

/// One table of the profile file.
#[derive(Deserialize, Debug, Default, Clone)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Profile {
    broker: Option<String>,
    admin: Option<String>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    ca: Option<PathBuf>,
    broker_cert: Option<PathBuf>,
    participant: Option<String>,
    alg: Option<String>,
    /// The legal basis `audit` reads under.
    audit_basis: Option<String>,
    /// The purpose `audit` reads for.
    audit_reason: Option<String>,
}

/// The sources of the settings, read: the arguments, the profile and the
/// sandbox manifest. A command may look into the sandbox (`call --try`)
/// before the settings are resolved.
pub(crate) struct Sources {
    args: TargetArgs,
    plane: Plane,
    profile: Profile,
    sandbox: Option<(PathBuf, SandboxManifest)>,
}

/// The validated settings: the broker's address for the command's plane,
/// the caller's credentials, and what checks the broker's signatures.
pub(crate) struct Target {
    /// The key, certificate and CA of the calling participant.
    credentials: Credentials,
    url: String,
    broker_pem: Option<String>,
    /// The audit basis and purpose from a profile or the sandbox.
    pub(crate) audit_basis: Option<String>,
    /// See `audit_basis`.
    pub(crate) audit_reason: Option<String>,
}

impl TargetArgs {
    /// Reads the profile and the sandbox manifest this command's settings
    /// may come from.
    pub(crate) fn sources(&self, plane: Plane) -> Result<Sources> {
        let profile = match &self.profile {
            Some(name) => read_profile(&profiles_path()?, name)?,
            None => Profile::default(),
        };
        let url_named = match plane {
            Plane::Data => self.broker.is_some() || profile.broker.is_some(),
            Plane::Admin => self.admin.is_some() || profile.admin.is_some(),
        };
        let sandbox = match (&self.sandbox, url_named) {
            (Some(dir), _) => Some((dir.clone(), read_manifest(dir)?)),
            (None, true) => None,
            (None, false) => {
                let dir = PathBuf::from("sandbox");
                let manifest = read_manifest(&dir).map_err(|e| {
                    let (flag, env) = match plane {
                        Plane::Data => ("--broker", "MCONNECT_BROKER"),
                        Plane::Admin => ("--admin", "MCONNECT_ADMIN"),
                    };
                    usage(format!(
                        "no broker named: give {flag} URL (or {env}, or `{}` in a --profile), \
                         or --sandbox DIR; the default sandbox did not answer either: {e}",
                        &flag[2..]
                    ))
                })?;
                Some((dir, manifest))
            }
        };
        Ok(Sources {
            args: self.clone(),
            plane,
            profile,
            sandbox,
        })
    }
}

impl Sources {
    /// The sandbox directory and its manifest, when one is a source.
    pub(crate) fn sandbox(&self) -> Option<(&Path, &SandboxManifest)> {
        self.sandbox.as_ref().map(|(d, m)| (d.as_path(), m))
    }

    /// Resolves and validates the settings. `force` names the participant
    /// regardless of the sources (`call --try`); `sandbox_default` is the
    /// participant to act as when only the sandbox could name one.
    /// `broker_cert` says whether the command checks the broker's
    /// signatures (receipts, tree heads) and so needs its certificate.
    pub(crate) fn resolve(
        &self,
        force: Option<&str>,
        sandbox_default: Option<&str>,
        broker_cert: bool,
    ) -> Result<Target> {
        let (a, p) = (&self.args, &self.profile);
        let sandbox = self.sandbox();
        let url = match self.plane {
            Plane::Data => a
                .broker
                .clone()
                .or_else(|| p.broker.clone())
                .or_else(|| sandbox.map(|(_, m)| m.broker.data_url.clone())),
            Plane::Admin => a
                .admin
                .clone()
                .or_else(|| p.admin.clone())
                .or_else(|| sandbox.map(|(_, m)| m.broker.admin_url.clone())),
        };
        let url = match url {
            Some(u) => check_url(&u)?,
            None => {
                return Err(usage(match self.plane {
                    Plane::Data => "no data plane URL: give --broker URL or MCONNECT_BROKER",
                    Plane::Admin => "no admin API URL: give --admin URL or MCONNECT_ADMIN",
                }));
            }
        };
        let named = force
            .map(str::to_string)
            .or_else(|| a.participant.clone())
            .or_else(|| p.participant.clone())
            .or_else(|| sandbox.and(sandbox_default.map(str::to_string)));
        // The sandbox entry of the participant, when there is one.
        let entry = match (sandbox, &named) {
            (Some((_, m)), Some(id)) => m.participants.iter().find(|e| &e.id == id),
            _ => None,
        };
        let from_sandbox = |relative: &str| sandbox.map(|(dir, _)| dir.join(relative));
        let cert = a
            .cert
            .clone()
            .or_else(|| p.cert.clone())
            .or_else(|| entry.and_then(|e| from_sandbox(&e.cert)));
        let key = a
            .key
            .clone()
            .or_else(|| p.key.clone())
            .or_else(|| entry.and_then(|e| from_sandbox(&e.key)));
        let ca =
            a.ca.clone()
                .or_else(|| p.ca.clone())
                .or_else(|| sandbox.and_then(|(_, m)| from_sandbox(&m.ca)));
        let alg = a
            .alg
            .clone()
            .or_else(|| p.alg.clone())
            .or_else(|| entry.map(|e| e.alg.clone()));
        let missing = |what: &str, flag: &str, env: &str| {
            let hint = match (&named, sandbox) {
                (Some(id), Some((dir, _))) if entry.is_none() => format!(
                    " ({} names no participant `{id}`)",
                    dir.join("sandbox.json").display()
                ),
                (None, Some(_)) => {
                    " (or name a participant of the sandbox with --participant)".to_string()
                }
                _ => String::new(),
            };
            usage(format!("no {what}: give {flag} FILE or {env}{hint}"))
        };
        let cert = cert.ok_or_else(|| missing("client certificate", "--cert", "MCONNECT_CERT"))?;
        let key = key.ok_or_else(|| missing("private key", "--key", "MCONNECT_KEY"))?;
        let ca = ca.ok_or_else(|| missing("CA certificate", "--ca", "MCONNECT_CA"))?;

        let cert_pem = read_text(&cert, "client certificate")?;
        let chain = parse_certs(&cert_pem)
            .map_err(|e| usage(format!("{}: not a PEM certificate ({e})", cert.display())))?;
        let Some(leaf) = chain.first() else {
            return Err(usage(format!("{}: holds no certificate", cert.display())));
        };
        check_private(&key, "private key")?;
        let key_pem = read_text(&key, "private key")?;
        let mut signing = SigningKey::from_pem(&key_pem)
            .map_err(|e| usage(format!("{}: not a usable private key ({e})", key.display())))?;
        let algorithm = match &alg {
            None => None,
            Some(name) => {
                let algorithm = Algorithm::from_name(name).ok_or_else(|| {
                    usage(format!(
                        "--alg {name}: not an RFC 9421 algorithm (ed25519, ecdsa-p256-sha256, \
                         rsa-pss-sha512, rsa-v1_5-sha256)"
                    ))
                })?;
                signing = signing.with_algorithm(algorithm).map_err(|e| {
                    usage(format!("--alg {name} does not suit {}: {e}", key.display()))
                })?;
                Some(algorithm)
            }
        };
        matches_certificate(&signing, leaf).map_err(|why| {
            usage(format!(
                "the key {} does not belong to the certificate {}: {why}",
                key.display(),
                cert.display()
            ))
        })?;
        let ca_pem = read_text(&ca, "CA certificate")?;
        parse_certs(&ca_pem)
            .map_err(|e| usage(format!("{}: not a PEM certificate ({e})", ca.display())))?;
        let participant = match named {
            Some(id) => id,
            None => mconnect_sdk::tls::common_name(leaf)
                .filter(|cn| mconnect::ids::is_valid_participant_id(cn))
                .ok_or_else(|| {
                    usage(format!(
                        "name the calling participant with --participant ID: the certificate {} \
                         has no participant id as its common name",
                        cert.display()
                    ))
                })?,
        };
        check_participant_id(&participant)?;
        let credentials =
            Credentials::from_pem(&participant, &cert_pem, &key_pem, &ca_pem, algorithm)
                .map_err(|e| usage(format!("{}: {e}", cert.display())))?;

        let broker_pem = if broker_cert {
            let path = a
                .broker_cert
                .clone()
                .or_else(|| p.broker_cert.clone())
                .or_else(|| sandbox.and_then(|(_, m)| from_sandbox(&m.broker.cert)))
                .ok_or_else(|| {
                    usage(
                        "no broker certificate to check its signatures with: give \
                         --broker-cert FILE or MCONNECT_BROKER_CERT",
                    )
                })?;
            let pem = read_text(&path, "broker certificate")?;
            TrustedKeys::from_pem(&pem).map_err(|e| usage(format!("{}: {e}", path.display())))?;
            Some(pem)
        } else {
            None
        };
        let auditor = sandbox.map(|(_, m)| &m.auditor);
        Ok(Target {
            credentials,
            url,
            broker_pem,
            audit_basis: p
                .audit_basis
                .clone()
                .or_else(|| auditor.map(|x| x.basis.clone())),
            audit_reason: p
                .audit_reason
                .clone()
                .or_else(|| auditor.map(|x| x.reason.clone())),
        })
    }
}

impl Target {
    /// A client of the admin API as this participant.
    pub(crate) fn admin_client(&self) -> Result<AdminClient> {
        Ok(AdminClient::new(self.credentials.clone(), &self.url)?)
    }

    /// A consumer of the data plane, trusting the broker certificate for
    /// receipts.
    pub(crate) fn consumer(&self) -> Result<Consumer> {
        let pem = self
            .broker_pem
            .as_deref()
            .ok_or_else(|| usage("no broker certificate to verify receipts with"))?;
        Ok(Consumer::new(
            self.credentials.clone(),
            &self.url,
            TrustedKeys::from_pem(pem)?,
        )?)
    }

    /// The check of tree head signatures with the broker certificate.
    pub(crate) fn tree_head_check(&self) -> Result<Box<TreeHeadCheck>> {
        let pem = self
            .broker_pem
            .as_deref()
            .ok_or_else(|| usage("no broker certificate to check tree heads with"))?;
        Ok(Box::new(mconnect::audit::certificate_verifier(pem)?))
    }
}

/// `{dir}/sandbox.json`, as a usage error when missing or unreadable.
fn read_manifest(dir: &Path) -> Result<SandboxManifest> {
    SandboxManifest::read(dir).map_err(|e| usage(e.to_string()))
}

/// Where the profiles are.
fn profiles_path() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("MCONNECT_PROFILES").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(path));
    }
    if let Some(config) = std::env::var_os("XDG_CONFIG_HOME").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(config).join("mconnect/profiles.toml"));
    }
    match std::env::var_os("HOME").filter(|p| !p.is_empty()) {
        Some(home) => Ok(PathBuf::from(home).join(".config/mconnect/profiles.toml")),
        None => Err(usage(
            "--profile: HOME is not set; name the profile file with MCONNECT_PROFILES",
        )),
    }
}

/// The `[name]` table of the profile file at `path`, its relative paths
/// made relative to the file.
fn read_profile(path: &Path, name: &str) -> Result<Profile> {
    check_private(path, "profile file")?;
    let text = read_text(path, "profile file")?;
    let mut tables: std::collections::BTreeMap<String, Profile> =
        toml::from_str(&text).map_err(|e| usage(format!("{}: {e}", path.display())))?;
    let known = tables.keys().cloned().collect::<Vec<_>>().join(", ");
    let mut profile = tables.remove(name).ok_or_else(|| {
        usage(format!(
            "{} has no profile [{name}] (it has: {})",
            path.display(),
            if known.is_empty() { "none" } else { &known }
        ))
    })?;
    let base = path.parent().unwrap_or_else(|| Path::new("."));
    for file in [
        &mut profile.cert,
        &mut profile.key,
        &mut profile.ca,
        &mut profile.broker_cert,
    ]
    .into_iter()
    .flatten()
    {
        *file = expand(base, file);
    }
    Ok(profile)
}

/// `~/…` from HOME; relative paths from `base`.
fn expand(base: &Path, file: &Path) -> PathBuf {
    if let Ok(rest) = file.strip_prefix("~")
        && let Some(home) = std::env::var_os("HOME")
    {
        return PathBuf::from(home).join(rest);
    }
    if file.is_relative() {
        base.join(file)
    } else {
        file.to_path_buf()
    }
}

/// Refuses a file that group or others may access, as ssh refuses a key.
fn check_private(path: &Path, what: &str) -> Result<()> {
    let meta = std::fs::metadata(path)
        .map_err(|e| usage(format!("the {what} {}: {e}", path.display())))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(usage(format!(
            "the {what} {} is accessible by group or others (mode {mode:04o}); \
             it must be private to you: chmod 600 {}",
            path.display(),
            path.display()
        )));
    }
    Ok(())
}

fn read_text(path: &Path, what: &str) -> Result<String> {
    std::fs::read_to_string(path)
        .map_err(|e| usage(format!("reading the {what} {}: {e}", path.display())))
}

/// An https base URL, without a trailing slash.
fn check_url(text: &str) -> Result<String> {
    let uri: http::Uri = text
        .parse()
        .map_err(|e| usage(format!("`{text}` is not a URL: {e}")))?;
    if uri.scheme_str() != Some("https") || uri.host().is_none() {
        return Err(usage(format!(
            "`{text}`: the broker is reached over https only; give https://host[:port]"
        )));
    }
    if uri.query().is_some() || !matches!(uri.path(), "" | "/") {
        return Err(usage(format!(
            "`{text}`: give the broker's base URL, https://host[:port], without a path"
        )));
    }
    Ok(text.trim_end_matches('/').to_string())
}

/// A participant id, or a usage error.
pub(crate) fn check_participant_id(id: &str) -> Result<()> {
    if mconnect::ids::is_valid_participant_id(id) {
        Ok(())
    } else {
        Err(usage(format!(
            "`{id}` is not a participant id ([a-z0-9][a-z0-9-]{{0,62}})"
        )))
    }
}

/// Whether `key` is the private half of the certificate's public key: a
/// probe signed with one verifies with the other.
fn matches_certificate(key: &SigningKey, cert_der: &[u8]) -> Result<(), String> {
    let public = VerifyingKey::from_certificate_der(cert_der).map_err(|e| e.to_string())?;
    let probe = b"mconnect: does this key belong to this certificate?";
    let signature = key.sign(probe).map_err(|e| e.to_string())?;
    public
        .verify(key.algorithm(), probe, &signature)
        .map_err(|e| e.to_string())
}
