//! An example state register: a real HTTPS provider on the bus, built only on
//! the participant SDK (`mconnect_sdk`). It serves deterministic synthetic
//! data derived from the IDNP/IDNO asked for, so tests and demos can predict
//! every answer.
//!
//! `--register` picks the register: population (asp-rsp), legal-entities
//! (asp-rsud), real-estate (asp-cadastru), vehicles (asp-vehicule), tax-debts
//! (sfs), social-insurance (cnas). On start it prints `LISTENING https://…`.
//!
//! Test hooks (for the broker's failure tests): `--delay-ms` answers late,
//! `--misbehave unsigned|bad-signature|bad-schema|leaky-error|leaky-problem|text-error`
//! answers wrongly on purpose (signed correctly where the mode is not about
//! the signature), for the broker's tests.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use http::StatusCode;
use mconnect_sdk::{
    self, Credentials, ProviderRequest, ProviderResponse, ProviderSettings, TrustedKeys,
};
use serde_json::{Value, json};

#[derive(Parser, Clone)]
struct Args {
    /// Which register to serve.
    #[arg(long)]
    register: String,
    /// This provider's participant id (its key and certificate are in --pki).
    #[arg(long)]
    participant: String,
    /// Directory with ca.cert.pem, broker.cert.pem and {participant}.{cert,key}.pem.
    #[arg(long)]
    pki: PathBuf,
    /// Signature algorithm or key type (rsa-v1_5-sha256 selects PKCS#1 v1.5 for an RSA key).
    #[arg(long, default_value = "ed25519")]
    alg: String,
    /// Listen address.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Answer this many milliseconds late.
    #[arg(long, default_value_t = 0)]
    delay_ms: u64,
    /// Misbehave on purpose: unsigned, bad-signature, bad-schema, leaky-error
    /// (a 404 carrying the record as JSON), leaky-problem (a problem+json 404
    /// with the record as an extra member), text-error (a text/plain 500).
    #[arg(long)]
    misbehave: Option<String>,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // First of all: a sandbox that dies while this starts takes it along.
    mconnect_sdk::exit_when_parent_dies();
    let args = Args::parse();
    let credentials = Credentials::from_pki_dir(&args.pki, &args.participant, &args.alg)?;
    let broker = TrustedKeys::broker_in_pki_dir(&args.pki)?;
    let handler_args = args.clone();
    let server = mconnect_sdk::serve_provider(
        ProviderSettings {
            listen: args.listen,
            credentials,
            broker,
            max_body_bytes: 1024 * 1024,
        },
        move |request| {
            let args = handler_args.clone();
            async move {
                if args.delay_ms > 0 {
                    tokio::time::sleep(Duration::from_millis(args.delay_ms)).await;
                }
                let answer = answer(&args.register, &request);
                if !answer.status.is_success() {
                    return answer;
                }
                match args.misbehave.as_deref() {
                    Some("bad-schema") => {
                        ProviderResponse::json(StatusCode::OK, &json!({"unexpected": true}))
                    }
                    Some("leaky-error") => ProviderResponse {
                        status: StatusCode::NOT_FOUND,
                        ..answer
                    },
                    Some("leaky-problem") => {
                        let record: serde_json::Value =
                            serde_json::from_slice(&answer.body).unwrap_or_default();
                        ProviderResponse {
                            status: StatusCode::NOT_FOUND,
                            content_type: "application/problem+json".into(),
                            body: bytes::Bytes::from(
                                serde_json::to_vec(&json!({
                                    "type": "urn:mconnect:problem:person.archived",
                                    "title": "Not Found",
                                    "status": 404,
                                    "detail": "the person is archived",
                                    "code": "person.archived",
                                    "person": record,
                                }))
                                .unwrap_or_default(),
                            ),
                        }
                    }
                    Some("text-error") => ProviderResponse {
                        status: StatusCode::INTERNAL_SERVER_ERROR,
                        content_type: "text/plain".into(),
                        body: bytes::Bytes::from_static(
                            b"connection to db failed: user=rsp password=hunter2",
                        ),
                    },
                    _ => answer,
                }
            }
        },
    )
    .await?;
    if let Some(mode) = args.misbehave.as_deref()
        && matches!(mode, "unsigned" | "bad-signature")
    {
        // Signature misbehaviour needs its own server: the SDK always signs correctly.
        server.shutdown().await;
        return misbehaving_server(&args, mode).await;
    }
    println!("LISTENING https://{}", server.local_addr());
    // Ctrl-C, SIGTERM, or the sandbox that started it is gone.
    mconnect_sdk::until_stopped().await;
    server.shutdown().await;
    Ok(())
}

/// Serves answers whose signature is missing or wrong, for the broker's tests.
async fn misbehaving_server(args: &Args, mode: &str) -> Result<(), Box<dyn std::error::Error>> {
    let credentials = Credentials::from_pki_dir(&args.pki, &args.participant, &args.alg)?;
    let broker = TrustedKeys::broker_in_pki_dir(&args.pki)?;
    let mode = mode.to_string();
    let register = args.register.clone();
    let signer = credentials.clone();
    let server = mconnect_sdk::serve_raw_provider(
        ProviderSettings {
            listen: args.listen,
            credentials,
            broker,
            max_body_bytes: 1024 * 1024,
        },
        move |request| {
            let mode = mode.clone();
            let register = register.clone();
            let signer = signer.clone();
            async move {
                let answer = answer(&register, &request);
                let mut headers =
                    mconnect_sdk::sign_response(&signer, &answer, &request.exchange_id)
                        .unwrap_or_default();
                if mode == "unsigned" {
                    headers.remove("signature");
                    headers.remove("signature-input");
                }
                let mut body = answer.body.to_vec();
                if mode == "bad-signature" {
                    // Change the body after signing: digest and signature no longer hold.
                    body.extend_from_slice(b" ");
                }
                (answer.status, headers, bytes::Bytes::from(body))
            }
        },
    )
    .await?;
    println!("LISTENING https://{}", server.local_addr());
    // Ctrl-C, SIGTERM, or the sandbox that started it is gone.
    mconnect_sdk::until_stopped().await;
    server.shutdown().await;
    Ok(())
}

/// The register's answer to one request.
fn answer(register: &str, request: &ProviderRequest) -> ProviderResponse {
    let id_param = match register {
        "population" | "social-insurance" => "idnp",
        "legal-entities" => "idno",
        "real-estate" | "vehicles" => "owner",
        "tax-debts" => "taxpayer",
        _ => {
            return ProviderResponse::problem(
                StatusCode::NOT_FOUND,
                "register.unknown",
                "this example does not serve that register",
            );
        }
    };
    if register == "population" && request.method == http::Method::POST {
        let Ok(body) = serde_json::from_slice::<Value>(&request.body) else {
            return ProviderResponse::problem(
                StatusCode::BAD_REQUEST,
                "request.malformed",
                "body must be JSON",
            );
        };
        let persons: Vec<Value> = body["idnps"]
            .as_array()
            .map(|ids| ids.iter().filter_map(|v| v.as_str()).map(person).collect())
            .unwrap_or_default();
        return ProviderResponse::json(StatusCode::OK, &json!({ "persons": persons }));
    }
    let Some(id) = request.query_param(id_param) else {
        return ProviderResponse::problem(
            StatusCode::BAD_REQUEST,
            "request.malformed",
            &format!("query parameter `{id_param}` is required"),
        );
    };
    if id.len() != 13 || !id.bytes().all(|b| b.is_ascii_digit()) {
        return ProviderResponse::problem(
            StatusCode::BAD_REQUEST,
            "request.malformed",
            &format!("`{id_param}` must be 13 digits"),
        );
    }
    let body = match register {
        "population" => person(&id),
        "legal-entities" => company(&id),
        "real-estate" => properties(&id),
        "vehicles" => vehicles(&id),
        "tax-debts" => tax_debts(&id),
        _ => insurance(&id),
    };
    ProviderResponse::json(StatusCode::OK, &body)
}

/// Deterministic pseudo-random numbers from an id.
fn seed(id: &str, salt: u64) -> u64 {
    id.bytes().fold(0xcbf29ce484222325 ^ salt, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
    })
}

fn pick<'a>(list: &[&'a str], id: &str, salt: u64) -> &'a str {
    list[(seed(id, salt) % list.len() as u64) as usize]
}

fn date(id: &str, salt: u64, from_year: u64, span: u64) -> String {
    let s = seed(id, salt);
    format!(
        "{}-{:02}-{:02}",
        from_year + s % span,
        1 + (s / 7) % 12,
        1 + (s / 97) % 28
    )
}

const LOCALITIES: &[&str] = &[
    "Cahul",
    "Bălți",
    "Ungheni",
    "Chișinău",
    "Orhei",
    "Soroca",
    "Comrat",
];
const STREETS: &[&str] = &[
    "Ștefan cel Mare",
    "Independenței",
    "Mihai Eminescu",
    "Alexandru cel Bun",
    "Păcii",
];

fn person(idnp: &str) -> Value {
    let male = seed(idnp, 1).is_multiple_of(2);
    let first = if male {
        pick(
            &["Ion", "Vasile", "Andrei", "Mihai", "Nicolae", "Sergiu"],
            idnp,
            2,
        )
    } else {
        pick(
            &["Maria", "Elena", "Ana", "Natalia", "Tatiana", "Irina"],
            idnp,
            2,
        )
    };
    json!({
        "idnp": idnp,
        "first_name": first,
        "last_name": pick(&["Popescu", "Rusu", "Ceban", "Lungu", "Munteanu", "Cojocaru"], idnp, 3),
        "birth_date": date(idnp, 4, 1940, 65),
        "sex": if male { "M" } else { "F" },
        "citizenship": "MDA",
        "status": if seed(idnp, 5).is_multiple_of(40) { "deceased" } else { "alive" },
        "address": {
            "region": pick(&["Cahul", "Bălți", "Ungheni", "Chișinău"], idnp, 6),
            "locality": pick(LOCALITIES, idnp, 7),
            "street": pick(STREETS, idnp, 8),
            "house": format!("{}", 1 + seed(idnp, 9) % 120),
            "apartment": if seed(idnp, 10).is_multiple_of(2) { Value::Null } else { json!(format!("{}", 1 + seed(idnp, 11) % 80)) },
        },
        "identity_document": {
            "type": "buletin",
            "series": "B",
            "number": format!("{:09}", seed(idnp, 12) % 1_000_000_000),
            "issued": date(idnp, 13, 2015, 8),
            "expires": date(idnp, 13, 2025, 8),
        }
    })
}

fn company(idno: &str) -> Value {
    json!({
        "idno": idno,
        "name": format!("{} {}", pick(&["Agro", "Vin", "Tehno", "Construct", "Lact"], idno, 1), pick(&["Sud", "Nord", "Prim", "Lux", "Service"], idno, 2)),
        "legal_form": pick(&["SRL", "SA", "II"], idno, 3),
        "registered": date(idno, 4, 1995, 28),
        "status": "active",
        "address": {
            "region": pick(&["Cahul", "Bălți", "Ungheni", "Chișinău"], idno, 5),
            "locality": pick(LOCALITIES, idno, 6),
            "street": pick(STREETS, idno, 7),
            "house": format!("{}", 1 + seed(idno, 8) % 200),
        },
        "administrators": [{"idnp": "2003000000027", "name": "Vasile Rusu"}],
        "founders": [
            {"idnp": "2003000000027", "idno": Value::Null, "name": "Vasile Rusu", "share_percent": 60},
            {"idnp": "2004000000035", "idno": Value::Null, "name": "Elena Ceban", "share_percent": 40}
        ],
        "activities": [{"caem": "A01.11", "title": "Cultivarea cerealelor"}]
    })
}

fn properties(owner: &str) -> Value {
    let n = seed(owner, 1) % 3 + 1;
    let list: Vec<Value> = (0..n)
        .map(|i| {
            json!({
                "cadastral_number": format!("{:010}", seed(owner, 10 + i) % 10_000_000_000),
                "type": pick(&["land", "apartment", "house", "commercial"], owner, 20 + i),
                "address": format!("{}, str. {} {}", pick(LOCALITIES, owner, 30 + i), pick(STREETS, owner, 40 + i), 1 + seed(owner, 50 + i) % 90),
                "area_m2": (seed(owner, 60 + i) % 2000 + 30) as f64,
                "share": "1/1",
                "acquired": date(owner, 70 + i, 1995, 29),
            })
        })
        .collect();
    json!({ "owner": owner, "properties": list })
}

fn vehicles(owner: &str) -> Value {
    let n = seed(owner, 1) % 3;
    let list: Vec<Value> = (0..n)
        .map(|i| {
            json!({
                "plate": format!("{} {:03}", pick(&["CH", "BL", "UN", "C"], owner, 10 + i), seed(owner, 20 + i) % 1000),
                "vin": format!("WVW{:014}", seed(owner, 30 + i) % 100_000_000_000_000),
                "make": pick(&["Dacia", "Volkswagen", "Toyota", "Skoda"], owner, 40 + i),
                "model": pick(&["Logan", "Golf", "Corolla", "Octavia"], owner, 50 + i),
                "year": 2000 + seed(owner, 60 + i) % 25,
                "registered": date(owner, 70 + i, 2005, 20),
            })
        })
        .collect();
    json!({ "owner": owner, "vehicles": list })
}

fn tax_debts(taxpayer: &str) -> Value {
    let has = seed(taxpayer, 1).is_multiple_of(3);
    let debts: Vec<Value> = if has {
        vec![
            json!({"tax_code": "IFPF", "title": "Impozit pe bunurile imobiliare", "amount_mdl": (seed(taxpayer, 2) % 5000) as f64 + 0.5, "since": date(taxpayer, 3, 2019, 6)}),
        ]
    } else {
        Vec::new()
    };
    let total: f64 = debts.iter().filter_map(|d| d["amount_mdl"].as_f64()).sum();
    json!({
        "taxpayer": taxpayer,
        "has_debts": has,
        "total_mdl": total,
        "debts": debts,
        "checked_at": "2026-01-01T00:00:00Z",
    })
}

fn insurance(idnp: &str) -> Value {
    let years = seed(idnp, 1) % 4;
    let list: Vec<Value> = (0..years)
        .map(|i| {
            json!({
                "year": 2022 + i,
                "months": 6 + seed(idnp, 10 + i) % 7,
                "employer_idno": "1003603000063",
                "amount_mdl": (seed(idnp, 20 + i) % 30000 + 1000) as f64,
            })
        })
        .collect();
    json!({ "idnp": idnp, "insured": years > 0, "contributions": list })
}
