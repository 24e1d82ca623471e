//! `mconnect participant …`: the participant registry through the admin API
//! (PROTOCOL.md section 8), as the operator or as a participant managing
//! itself: register (`add`), read (`list`, `show`), rotate certificates
//! (`certificate add|remove`) and replace a provider's endpoints
//! (`endpoints set`).
//!
//! Requests are built and sent by the library's admin client
//! (`mconnect::connect::client::AdminClient`), as `connect` and `audit`
//! send theirs; who may do what is the broker's decision, which the answer
//! reports (a refusal exits 3, `output`). What can be checked before
//! anything is sent is checked here and exits 64: ids, IDNOs, roles,
//! fingerprints, the certificate files (parsed, fingerprinted and dated with
//! the registry's own `registered_certificate`), endpoint arguments.
//!
//! Invariant: `add` never replaces a registered participant's document
//! (certificates and endpoints included) unless `--replace` says so.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use http::{Method, StatusCode};
use serde_json::Value;

use super::output::{self, EXIT_REFUSED, Table, cell, unix_time, usage};
use super::target::{Plane, TargetArgs, check_participant_id};
use mconnect::connect::client::AdminClient;
use mconnect::registry::{Endpoint, Organisation, Participant, Role, registered_certificate};

/// `mconnect participant`.
#[derive(Args)]
pub(crate) struct ParticipantArgs {
    /// The admin API and who calls it.
    #[command(flatten)]
    target: TargetArgs,
    /// Print the API's JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: ParticipantCommand,
}

#[derive(Subcommand)]
enum ParticipantCommand {
    /// Operator: register a participant with its organisation, roles and
    /// certificate(s).
    Add(AddArgs),
    /// List every registered participant.
    List,
    /// Show one participant: organisation, roles, certificates, endpoints.
    Show {
        /// Participant id.
        id: String,
    },
    /// Add or remove a certificate (rotation): the participant itself or
    /// an operator.
    #[command(subcommand)]
    Certificate(CertificateCommand),
    /// A provider's endpoints: the provider itself or an operator.
    #[command(subcommand)]
    Endpoints(EndpointsCommand),
}

/// `participant add`.
#[derive(Args)]
struct AddArgs {
    /// The new participant's id.
    id: String,
    /// The organisation's official name.
    #[arg(long = "name", value_name = "NAME")]
    organisation: String,
    /// The organisation's IDNO (13 digits with control digit).
    #[arg(long)]
    idno: String,
    /// A role: consumer, provider, operator, auditor or intermediary
    /// (repeat or separate with commas).
    #[arg(
        long = "role",
        value_name = "ROLE",
        required = true,
        value_delimiter = ','
    )]
    roles: Vec<String>,
    /// A certificate PEM file of the participant (repeat for several). Not
    /// `--cert`, which names the caller's own certificate.
    #[arg(long = "certificate", value_name = "FILE", required = true)]
    certificates: Vec<PathBuf>,
    /// An endpoint of a provider, `SERVICE=URL`, or `URL` for its default.
    #[arg(long = "endpoint", value_name = "[SERVICE=]URL")]
    endpoints: Vec<String>,
    /// Leave its calls out of citizens' access history (security services).
    #[arg(long)]
    confidential: bool,
    /// Replace the document of a participant already registered.
    #[arg(long)]
    replace: bool,
}

#[derive(Subcommand)]
enum CertificateCommand {
    /// Register another certificate of participant ID (it must chain to
    /// the bus CA and be in date).
    Add {
        /// Participant id.
        id: String,
        /// The certificate PEM file.
        file: PathBuf,
    },
    /// Remove a certificate of participant ID by its fingerprint.
    Remove {
        /// Participant id.
        id: String,
        /// The certificate's SHA-256 fingerprint (64 hex digits, as `show` lists).
        fingerprint: String,
    },
}

#[derive(Subcommand)]
enum EndpointsCommand {
    /// Replace every endpoint of provider ID.
    Set {
        /// Participant id.
        id: String,
        /// An endpoint, `SERVICE=URL`, or `URL` for the default (repeat).
        #[arg(
            long = "endpoint",
            value_name = "[SERVICE=]URL",
            required_unless_present = "file",
            conflicts_with = "file"
        )]
        endpoints: Vec<String>,
        /// A JSON file holding the endpoints, `[{"service": …, "url": …}, …]`
        /// (`[]` removes them all).
        #[arg(long, value_name = "FILE")]
        file: Option<PathBuf>,
    },
}

/// Runs `mconnect participant …`.
pub(crate) async fn run(args: ParticipantArgs) -> Result<ExitCode> {
    // Everything the command names is checked before the settings are
    // resolved, and those before anything is sent.
    let request = Request::from_command(args.command)?;
    let client = args
        .target
        .sources(Plane::Admin)?
        .resolve(None, None, false)?
        .admin_client()?;
    let json = args.json;
    match request {
        Request::Add {
            participant,
            replace,
        } => add(&client, &participant, replace, json).await,
        Request::List => {
            let (status, body) = send(&client, Method::GET, "/v1/participants", None).await?;
            Ok(output::answer(status, &body, json, print_list))
        }
        Request::Show(id) => {
            let (status, body) = send(
                &client,
                Method::GET,
                &format!("/v1/participants/{id}"),
                None,
            )
            .await?;
            Ok(output::answer(status, &body, json, print_one))
        }
        Request::AddCertificate { id, pem } => {
            let body = serde_json::json!({ "pem": pem });
            let (status, answer) = send(
                &client,
                Method::POST,
                &format!("/v1/participants/{id}/certificates"),
                Some(&body),
            )
            .await?;
            Ok(output::answer(status, &answer, json, |a| {
                println!("{id}: certificate {} added", cell(&a["fingerprint"]));
            }))
        }
        Request::RemoveCertificate { id, fingerprint } => {
            let (status, answer) = send(
                &client,
                Method::DELETE,
                &format!("/v1/participants/{id}/certificates/{fingerprint}"),
                None,
            )
            .await?;
            Ok(output::answer(status, &answer, json, |a| {
                println!("{id}: certificate {} removed", cell(&a["removed"]));
            }))
        }
        Request::SetEndpoints { id, endpoints } => {
            let body = serde_json::to_value(&endpoints)?;
            let (status, answer) = send(
                &client,
                Method::PUT,
                &format!("/v1/participants/{id}/endpoints"),
                Some(&body),
            )
            .await?;
            Ok(output::answer(status, &answer, json, |a| {
                println!("{id}: endpoints set");
                print_endpoints(&a["endpoints"]);
            }))
        }
    }
}

/// A participant command, checked: what will be sent.
enum Request {
    Add {
        participant: Box<Participant>,
        replace: bool,
    },
    List,
    Show(String),
    AddCertificate {
        id: String,
        pem: String,
    },
    RemoveCertificate {
        id: String,
        fingerprint: String,
    },
    SetEndpoints {
        id: String,
        endpoints: Vec<Endpoint>,
    },
}

impl Request {
    fn from_command(command: ParticipantCommand) -> Result<Request> {
        Ok(match command {
            ParticipantCommand::Add(add) => Request::Add {
                replace: add.replace,
                participant: Box::new(participant(add)?),
            },
            ParticipantCommand::List => Request::List,
            ParticipantCommand::Show { id } => {
                check_participant_id(&id)?;
                Request::Show(id)
            }
            ParticipantCommand::Certificate(CertificateCommand::Add { id, file }) => {
                check_participant_id(&id)?;
                let pem = certificate(&file)?.pem;
                Request::AddCertificate { id, pem }
            }
            ParticipantCommand::Certificate(CertificateCommand::Remove { id, fingerprint }) => {
                check_participant_id(&id)?;
                let fingerprint = fingerprint.to_ascii_lowercase();
                if fingerprint.len() != 64 || !fingerprint.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(usage(format!(
                        "`{fingerprint}` is not a certificate fingerprint (64 hex digits, \
                         as `mconnect participant show {id}` lists them)"
                    )));
                }
                Request::RemoveCertificate { id, fingerprint }
            }
            ParticipantCommand::Endpoints(EndpointsCommand::Set {
                id,
                endpoints,
                file,
            }) => {
                check_participant_id(&id)?;
                let endpoints = match file {
                    Some(file) => endpoints_file(&file)?,
                    None => endpoints
                        .iter()
                        .map(|e| endpoint(e))
                        .collect::<Result<Vec<_>>>()?,
                };
                Request::SetEndpoints { id, endpoints }
            }
        })
    }
}

/// The participant document `add` sends.
fn participant(add: AddArgs) -> Result<Participant> {
    check_participant_id(&add.id)?;
    if !mconnect::ids::is_valid_idno(&add.idno) {
        return Err(usage(format!(
            "--idno {}: not an IDNO (13 digits with a valid control digit)",
            add.idno
        )));
    }
    let mut roles = Vec::new();
    for name in &add.roles {
        let role: Role =
            serde_json::from_value(Value::String(name.trim().to_string())).map_err(|_| {
                usage(format!(
                    "--role {name}: not a role (consumer, provider, operator, auditor, \
                     intermediary)"
                ))
            })?;
        if !roles.contains(&role) {
            roles.push(role);
        }
    }
    let certificates = add
        .certificates
        .iter()
        .map(|f| certificate(f))
        .collect::<Result<Vec<_>>>()?;
    let endpoints = add
        .endpoints
        .iter()
        .map(|e| endpoint(e))
        .collect::<Result<Vec<_>>>()?;
    Ok(Participant {
        id: add.id,
        organisation: Organisation {
            idno: add.idno,
            name: add.organisation,
        },
        roles,
        certificates,
        endpoints,
        confidential: add.confidential,
    })
}

/// A certificate file, read and fingerprinted as the registry will.
fn certificate(file: &Path) -> Result<mconnect::registry::RegisteredCertificate> {
    let pem = std::fs::read_to_string(file)
        .map_err(|e| usage(format!("reading the certificate {}: {e}", file.display())))?;
    registered_certificate(&pem).map_err(|e| usage(format!("{}: {e}", file.display())))
}

/// `SERVICE=URL`, or `URL` for the default endpoint.
fn endpoint(text: &str) -> Result<Endpoint> {
    let (service, url) = if text.starts_with("https://") || text.starts_with("http://") {
        (None, text)
    } else {
        match text.split_once('=') {
            Some((service, url)) if !service.is_empty() && !url.is_empty() => {
                (Some(service.to_string()), url)
            }
            _ => {
                return Err(usage(format!(
                    "--endpoint {text}: give SERVICE=URL, or URL for the default endpoint"
                )));
            }
        }
    };
    Ok(Endpoint {
        service,
        url: url.to_string(),
    })
}

/// The endpoints of a JSON file.
fn endpoints_file(file: &Path) -> Result<Vec<Endpoint>> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| usage(format!("reading {}: {e}", file.display())))?;
    serde_json::from_str(&text).map_err(|e| {
        usage(format!(
            "{}: expected [{{\"service\": CODE, \"url\": URL}}, …]: {e}",
            file.display()
        ))
    })
}

/// `add`: refuses to replace a registered participant unless asked to.
async fn add(
    client: &AdminClient,
    participant: &Participant,
    replace: bool,
    json: bool,
) -> Result<ExitCode> {
    let id = &participant.id;
    let path = format!("/v1/participants/{id}");
    if !replace {
        let (status, body) = send(client, Method::GET, &path, None).await?;
        if status.is_success() {
            if json {
                output::print_json(&body);
            }
            eprintln!(
                "mconnect: participant `{id}` is already registered; --replace replaces its \
                 whole document (certificates and endpoints included)"
            );
            return Ok(ExitCode::from(EXIT_REFUSED));
        }
        if status != StatusCode::NOT_FOUND {
            return Ok(output::answer(status, &body, json, |_| {}));
        }
    }
    let body = serde_json::to_value(participant)?;
    let (status, answer) = send(client, Method::PUT, &path, Some(&body)).await?;
    Ok(output::answer(status, &answer, json, |a| {
        println!("{id}: registered");
        print_one(a);
    }))
}

async fn send(
    client: &AdminClient,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> Result<(StatusCode, Value)> {
    let request = client.plain(method, path, body)?;
    client
        .send(request)
        .await
        .with_context(|| format!("calling {}", client.url(path)))
}

fn print_list(body: &Value) {
    let mut table = Table::new(&[
        "ID",
        "ORGANISATION",
        "IDNO",
        "ROLES",
        "CERTIFICATES",
        "ENDPOINTS",
    ]);
    for p in body["participants"].as_array().into_iter().flatten() {
        let count = |v: &Value| v.as_array().map_or(0, Vec::len).to_string();
        table.row(vec![
            cell(&p["id"]),
            cell(&p["organisation"]["name"]),
            cell(&p["organisation"]["idno"]),
            cell(&p["roles"]),
            count(&p["certificates"]),
            count(&p["endpoints"]),
        ]);
    }
    if table.is_empty() {
        println!("no participants");
    } else {
        table.print();
    }
}

fn print_one(p: &Value) {
    let mut head = Table::new(&["", ""]);
    head.row(vec!["id".into(), cell(&p["id"])]);
    head.row(vec![
        "organisation".into(),
        cell(&p["organisation"]["name"]),
    ]);
    head.row(vec!["idno".into(), cell(&p["organisation"]["idno"])]);
    head.row(vec!["roles".into(), cell(&p["roles"])]);
    print!("{}", head.render().trim_start());
    let mut certificates = Table::new(&["CERTIFICATE", "NOT AFTER"]);
    for c in p["certificates"].as_array().into_iter().flatten() {
        certificates.row(vec![cell(&c["fingerprint"]), unix_time(&c["not_after"])]);
    }
    println!();
    if certificates.is_empty() {
        println!("no certificates");
    } else {
        certificates.print();
    }
    if p["endpoints"].as_array().is_some_and(|e| !e.is_empty()) {
        println!();
        print_endpoints(&p["endpoints"]);
    }
}

fn print_endpoints(endpoints: &Value) {
    let mut table = Table::new(&["SERVICE", "URL"]);
    for e in endpoints.as_array().into_iter().flatten() {
        table.row(vec![
            e["service"].as_str().unwrap_or("(default)").to_string(),
            cell(&e["url"]),
        ]);
    }
    if table.is_empty() {
        println!("no endpoints");
    } else {
        table.print();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_arguments_name_a_service_or_the_default() {
        let e = endpoint("person-by-idnp=https://rsp.example:9443/v1")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(e.service.as_deref(), Some("person-by-idnp"));
        assert_eq!(e.url, "https://rsp.example:9443/v1");
        let e = endpoint("https://rsp.example:9443/x?a=b").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (e.service, e.url.as_str()),
            (None, "https://rsp.example:9443/x?a=b")
        );
        for bad in ["person-by-idnp", "=https://x", "code="] {
            assert!(endpoint(bad).is_err(), "{bad}");
        }
    }
}
