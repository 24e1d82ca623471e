//! The participant SDK: everything a participant system needs to speak the
//! bus protocol, and the only part of this library that adapters and
//! examples may use.
//!
//! - Consumers: [`Consumer`] signs a call (RFC 9421 label `mconnect`, RFC 9530
//!   digest), sends it over mTLS and verifies the broker's receipt.
//! - Providers: [`serve_provider`] runs an mTLS server that accepts only
//!   requests signed by the broker, hands them to your handler, and signs
//!   your answers (label `mconnect-provider`).
//! - The building blocks — [`sign_request`], [`verify_broker_request`],
//!   [`sign_response`], [`verify_receipt`] — for systems with their own HTTP stack.
//!
//! Invariant: a [`CallOutcome`] or [`ProviderRequest`] only exists once its
//! signature has been checked against a certificate the caller trusts.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};

pub use crate::crypto::{
    Algorithm, SigningKey, VerifyingKey, certificate_fingerprint, ecdsa_p256_der_to_fixed,
    ecdsa_p256_fixed_to_der, sha256,
};
use crate::exchange::call::{headers, labels};
use crate::httpsig::{self, MessageView, RequestView, SignatureParams};
/// `sandbox.json` (PROTOCOL.md section 9): participant tools read the
/// broker's URLs and their keys from it; `consumer()` builds a client.
pub use crate::sandbox::{ManifestParticipant, ManifestTry, SandboxManifest};
pub use crate::server::RunningServer;
use crate::tls::Identity;
pub use lifeline::{
    LIFELINE_ENV, LIFELINE_GRACE, StopReason, exit_when_parent_dies, until_stopped,
};

mod lifeline;

/// Why an SDK operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SdkError {
    /// Keys or certificates unusable.
    #[error("credentials: {0}")]
    Credentials(String),
    /// The request could not be built (bad URL, header value).
    #[error("request: {0}")]
    Request(String),
    /// The network or TLS failed.
    #[error("transport: {0}")]
    Transport(String),
    /// A signature or digest did not verify.
    #[error("verification: {0}")]
    Verification(String),
    /// A broker-signed request that was already served.
    #[error("replayed: {0}")]
    Replayed(String),
}

/// A participant's credentials: its key and certificate, and the CA.
#[derive(Clone)]
pub struct Credentials {
    /// Participant id.
    pub participant: String,
    /// The signing key.
    pub key: Arc<SigningKey>,
    /// Fingerprint of the certificate (the keyid).
    pub keyid: String,
    /// TLS identity (same certificate and key).
    pub tls: Identity,
    /// CA certificates to trust.
    pub ca: Vec<rustls_pki_types::CertificateDer<'static>>,
}

impl Credentials {
    /// Loads PEM text. `algorithm` overrides the key's default (e.g. `rsa-v1_5-sha256` for an RSA key).
    pub fn from_pem(
        participant: &str,
        cert_pem: &str,
        key_pem: &str,
        ca_pem: &str,
        algorithm: Option<Algorithm>,
    ) -> Result<Credentials, SdkError> {
        let cred = |e: &dyn std::fmt::Display| SdkError::Credentials(e.to_string());
        let mut key = SigningKey::from_pem(key_pem).map_err(|e| cred(&e))?;
        if let Some(alg) = algorithm {
            key = key.with_algorithm(alg).map_err(|e| cred(&e))?;
        }
        let tls = Identity::from_pem(cert_pem, key_pem).map_err(|e| cred(&e))?;
        let leaf = tls
            .leaf()
            .ok_or_else(|| SdkError::Credentials("no certificate".into()))?;
        let ca = parse_certs(ca_pem)?;
        Ok(Credentials {
            participant: participant.to_string(),
            keyid: certificate_fingerprint(leaf),
            key: Arc::new(key),
            tls,
            ca,
        })
    }

    /// Loads a participant from a development-PKI directory laid out as the
    /// sandbox writes it: `{pki}/{participant}.cert.pem`, `.key.pem` and
    /// `{pki}/ca.cert.pem`. `algorithm` is an RFC 9421 name or a key type
    /// (anything else keeps the key's default algorithm).
    pub fn from_pki_dir(
        pki: &std::path::Path,
        participant: &str,
        algorithm: &str,
    ) -> Result<Credentials, SdkError> {
        Credentials::load(
            participant,
            &pki.join(format!("{participant}.cert.pem")),
            &pki.join(format!("{participant}.key.pem")),
            &pki.join("ca.cert.pem"),
            Algorithm::from_name(algorithm),
        )
    }

    /// Loads PEM files.
    pub fn load(
        participant: &str,
        cert: &std::path::Path,
        key: &std::path::Path,
        ca: &std::path::Path,
        algorithm: Option<Algorithm>,
    ) -> Result<Credentials, SdkError> {
        let read = |p: &std::path::Path| {
            std::fs::read_to_string(p)
                .map_err(|e| SdkError::Credentials(format!("{}: {e}", p.display())))
        };
        Credentials::from_pem(
            participant,
            &read(cert)?,
            &read(key)?,
            &read(ca)?,
            algorithm,
        )
    }
}

/// Parses CA certificates from PEM.
pub fn parse_certs(pem: &str) -> Result<Vec<rustls_pki_types::CertificateDer<'static>>, SdkError> {
    use rustls_pki_types::pem::PemObject;
    let certs = rustls_pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| SdkError::Credentials(format!("CA PEM: {e}")))?;
    if certs.is_empty() {
        return Err(SdkError::Credentials("CA PEM holds no certificate".into()));
    }
    Ok(certs)
}

/// Public keys trusted for a role (the broker's, for receipts and forwarded requests), by keyid.
#[derive(Clone, Default)]
pub struct TrustedKeys {
    keys: Vec<(String, VerifyingKey)>,
}

impl TrustedKeys {
    /// Trusts the certificates in a PEM text.
    pub fn from_pem(pem: &str) -> Result<TrustedKeys, SdkError> {
        let mut keys = Vec::new();
        for der in parse_certs(pem)? {
            let key = VerifyingKey::from_certificate_der(&der)
                .map_err(|e| SdkError::Credentials(e.to_string()))?;
            keys.push((certificate_fingerprint(&der), key));
        }
        Ok(TrustedKeys { keys })
    }

    /// Trusts the broker certificate of a development-PKI directory
    /// (`{pki}/broker.cert.pem`, as the sandbox writes it).
    pub fn broker_in_pki_dir(pki: &std::path::Path) -> Result<TrustedKeys, SdkError> {
        let path = pki.join("broker.cert.pem");
        let pem = std::fs::read_to_string(&path)
            .map_err(|e| SdkError::Credentials(format!("{}: {e}", path.display())))?;
        TrustedKeys::from_pem(&pem)
    }

    fn get(&self, keyid: &str) -> Option<&VerifyingKey> {
        self.keys.iter().find(|(k, _)| k == keyid).map(|(_, v)| v)
    }
}

/// The protocol fields of a call.
#[derive(Clone, Debug)]
pub struct Call {
    /// HTTP method.
    pub method: Method,
    /// Path and query on the broker, e.g. `/r1/asp-rsp/person-by-idnp?idnp=...`.
    pub path: String,
    /// JSON body, if any.
    pub body: Option<Bytes>,
    /// IDNP of the user on whose action the call is made.
    pub calling_user: String,
    /// Legal basis id.
    pub basis: String,
    /// Purpose code.
    pub reason: String,
    /// Subject IDNP/IDNO.
    pub subject: Option<String>,
    /// Represented party IDNP/IDNO.
    pub represented_party: Option<String>,
    /// Request id; a fresh UUIDv4 when `None`.
    pub request_id: Option<uuid::Uuid>,
}

/// What the broker's receipt establishes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Receipt {
    /// The broker's exchange id.
    pub exchange_id: String,
    /// The client's request id.
    pub request_id: Option<String>,
    /// The audit log leaf index.
    pub audit_seq: Option<u64>,
    /// The broker certificate that signed.
    pub keyid: String,
}

/// The answer to a call.
#[derive(Debug)]
pub struct CallOutcome {
    /// HTTP status.
    pub status: StatusCode,
    /// Response headers.
    pub headers: HeaderMap,
    /// Body.
    pub body: Bytes,
    /// The receipt check: `Ok` when the broker's signature and digest verify.
    pub receipt: Result<Receipt, String>,
}

/// Signs a request in place: adds `Content-Digest` when there is a body and
/// the `mconnect` signature over the protocol's components.
pub fn sign_request(
    credentials: &Credentials,
    method: &str,
    target_uri: &str,
    request_headers: &mut HeaderMap,
    body: &[u8],
) -> Result<(), SdkError> {
    let mut covered = vec![
        "@method",
        "@target-uri",
        headers::CLIENT,
        headers::CALLING_USER,
        headers::CALL_BASIS,
        headers::CALL_REASON,
        headers::REQUEST_ID,
    ];
    for optional in [
        headers::SUBJECT,
        headers::REPRESENTED_PARTY,
        headers::EXCHANGE_ID,
    ] {
        if request_headers.contains_key(optional) {
            covered.push(optional);
        }
    }
    if !body.is_empty() {
        request_headers.insert(
            headers::CONTENT_DIGEST,
            httpsig::digest::content_digest_header(body),
        );
        covered.push(headers::CONTENT_DIGEST);
    }
    let mut params = SignatureParams::new(&covered);
    params.created = Some(crate::exchange::unix_now());
    params.keyid = Some(credentials.keyid.clone());
    params.alg = Some(credentials.key.algorithm().as_str().to_string());
    let sig = httpsig::sign(
        &MessageView::Request(RequestView {
            method,
            target_uri,
            headers: request_headers,
        }),
        labels::REQUEST,
        &params,
        &credentials.key,
    )
    .map_err(|e| SdkError::Request(e.to_string()))?;
    httpsig::attach(request_headers, sig);
    Ok(())
}

/// Verifies a signed response: the signature with `label`, made by a key
/// `key_for` knows (by keyid), covering `@status`, `content-digest`,
/// `mconnect-exchange-id` and every header of `covered_when_present` that
/// the response carries, and the body against its `Content-Digest`.
/// Returns the keyid that signed. Both the broker (provider answers) and
/// consumers (receipts) check responses with this one function.
pub fn verify_signed_response<'k>(
    status: StatusCode,
    response_headers: &HeaderMap,
    body: &[u8],
    label: &str,
    covered_when_present: &[&str],
    key_for: impl Fn(&str) -> Option<&'k VerifyingKey>,
) -> Result<String, SdkError> {
    let v = |s: String| SdkError::Verification(s);
    let parsed = httpsig::parse_signature(response_headers, label)
        .map_err(|e| v(format!("no `{label}` signature: {e}")))?;
    let keyid = parsed
        .params
        .keyid
        .clone()
        .ok_or_else(|| v(format!("the `{label}` signature has no keyid")))?;
    let key = key_for(&keyid).ok_or_else(|| {
        v(format!(
            "signed by {keyid}, which is not a trusted certificate"
        ))
    })?;
    for name in ["@status", headers::CONTENT_DIGEST, headers::EXCHANGE_ID] {
        if !parsed.params.covers(name) {
            return Err(v(format!("the `{label}` signature does not cover {name}")));
        }
    }
    for name in covered_when_present {
        if response_headers.contains_key(*name) && !parsed.params.covers(name) {
            return Err(v(format!("the `{label}` signature does not cover {name}")));
        }
    }
    let alg = resolve_alg(parsed.params.alg.as_deref(), key)?;
    httpsig::verify(
        &MessageView::Response {
            status: status.as_u16(),
            headers: response_headers,
            request: None,
        },
        &parsed,
        key,
        alg,
    )
    .map_err(|e| v(format!("the `{label}` signature does not verify: {e}")))?;
    let digest = httpsig::digest::content_digest_field(response_headers)
        .map_err(|e| v(e.to_string()))?
        .ok_or_else(|| v("no Content-Digest".into()))?;
    httpsig::digest::verify_content_digest(digest, body)
        .map_err(|e| v(format!("the body does not match its Content-Digest: {e}")))?;
    Ok(keyid)
}

/// Verifies a broker receipt (label `mconnect-receipt`) and the body digest.
pub fn verify_receipt(
    status: StatusCode,
    response_headers: &HeaderMap,
    body: &[u8],
    broker: &TrustedKeys,
) -> Result<Receipt, SdkError> {
    let keyid = verify_signed_response(
        status,
        response_headers,
        body,
        labels::RECEIPT,
        &[headers::REQUEST_ID, headers::AUDIT_SEQ],
        |keyid| broker.get(keyid),
    )?;
    let text = |name: &str| {
        response_headers
            .get(name)
            .and_then(|h| h.to_str().ok())
            .map(str::to_string)
    };
    Ok(Receipt {
        exchange_id: text(headers::EXCHANGE_ID).unwrap_or_default(),
        request_id: text(headers::REQUEST_ID),
        audit_seq: text(headers::AUDIT_SEQ).and_then(|s| s.parse().ok()),
        keyid,
    })
}

fn resolve_alg(name: Option<&str>, key: &VerifyingKey) -> Result<Algorithm, SdkError> {
    match name {
        Some(n) => Algorithm::from_name(n)
            .filter(|a| key.supports(*a))
            .ok_or_else(|| SdkError::Verification(format!("algorithm {n} unusable with the key"))),
        None => Ok(key.default_algorithm()),
    }
}

/// A consumer's connection to the broker.
pub struct Consumer {
    credentials: Credentials,
    broker_url: String,
    broker_keys: TrustedKeys,
    client: hyper_util::client::legacy::Client<
        hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
        Full<Bytes>,
    >,
}

impl Consumer {
    /// A client for the broker at `broker_url` (`https://host:port`), trusting `broker_keys` for receipts.
    pub fn new(
        credentials: Credentials,
        broker_url: &str,
        broker_keys: TrustedKeys,
    ) -> Result<Consumer, SdkError> {
        let tls = crate::tls::client_config(&credentials.ca, &credentials.tls)
            .map_err(|e| SdkError::Credentials(e.to_string()))?;
        let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config((*tls).clone())
            .https_only()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .pool_idle_timeout(crate::server::CLIENT_POOL_IDLE_TIMEOUT)
                .build(https);
        Ok(Consumer {
            credentials,
            broker_url: broker_url.trim_end_matches('/').to_string(),
            broker_keys,
            client,
        })
    }

    /// Builds the signed request for a call (exposed for tests that tamper with it).
    pub fn build(&self, call: &Call) -> Result<Request<Full<Bytes>>, SdkError> {
        let uri = format!("{}{}", self.broker_url, call.path);
        let mut h = HeaderMap::new();
        let mut put = |name: &'static str, value: &str| -> Result<(), SdkError> {
            let v = HeaderValue::from_str(value)
                .map_err(|_| SdkError::Request(format!("{name} value is not a valid header")))?;
            h.insert(name, v);
            Ok(())
        };
        put(headers::CLIENT, &self.credentials.participant)?;
        put(headers::CALLING_USER, &call.calling_user)?;
        put(headers::CALL_BASIS, &call.basis)?;
        put(headers::CALL_REASON, &call.reason)?;
        put(
            headers::REQUEST_ID,
            &call
                .request_id
                .unwrap_or_else(uuid::Uuid::new_v4)
                .to_string(),
        )?;
        if let Some(s) = &call.subject {
            put(headers::SUBJECT, s)?;
        }
        if let Some(r) = &call.represented_party {
            put(headers::REPRESENTED_PARTY, r)?;
        }
        let body = call.body.clone().unwrap_or_default();
        if !body.is_empty() {
            put("content-type", "application/json")?;
        }
        sign_request(&self.credentials, call.method.as_str(), &uri, &mut h, &body)?;
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = call.method.clone();
        *request.uri_mut() = uri
            .parse()
            .map_err(|_| SdkError::Request(format!("{uri} is not a valid URI")))?;
        *request.headers_mut() = h;
        Ok(request)
    }

    /// Signs, sends and checks the receipt.
    pub async fn call(&self, call: &Call) -> Result<CallOutcome, SdkError> {
        let request = self.build(call)?;
        self.send(request).await
    }

    /// Sends a prepared request and checks the receipt.
    pub async fn send(&self, request: Request<Full<Bytes>>) -> Result<CallOutcome, SdkError> {
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| SdkError::Transport(error_chain(&e)))?;
        let (head, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| SdkError::Transport(e.to_string()))?
            .to_bytes();
        let receipt = verify_receipt(head.status, &head.headers, &body, &self.broker_keys)
            .map_err(|e| e.to_string());
        Ok(CallOutcome {
            status: head.status,
            headers: head.headers,
            body,
            receipt,
        })
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// A request forwarded by the broker, its signature verified.
#[derive(Debug)]
pub struct ProviderRequest {
    /// HTTP method.
    pub method: Method,
    /// Path (below the provider's endpoint) and query.
    pub uri: http::Uri,
    /// Headers (the `MConnect-*` ones among them).
    pub headers: HeaderMap,
    /// Body.
    pub body: Bytes,
    /// The broker's exchange id.
    pub exchange_id: String,
}

impl ProviderRequest {
    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// A query parameter (percent-decoding `+` and `%XX`).
    pub fn query_param(&self, name: &str) -> Option<String> {
        query_param(self.uri.query()?, name)
    }
}

/// A parameter of a URL query string, percent-decoded (`+` as space).
pub fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|d| d as u8)
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(hi), Some(lo)) => {
                out.push(hi << 4 | lo);
                i += 3;
            }
            (b'+', _, _) => {
                out.push(b' ');
                i += 1;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A provider's answer before signing.
#[derive(Debug, Clone)]
pub struct ProviderResponse {
    /// HTTP status.
    pub status: StatusCode,
    /// Media type.
    pub content_type: String,
    /// Body.
    pub body: Bytes,
}

impl ProviderResponse {
    /// A JSON answer.
    pub fn json(status: StatusCode, value: &serde_json::Value) -> Self {
        ProviderResponse {
            status,
            content_type: "application/json".into(),
            body: Bytes::from(serde_json::to_vec(value).unwrap_or_default()),
        }
    }

    /// An RFC 9457 problem answer.
    pub fn problem(status: StatusCode, code: &str, detail: &str) -> Self {
        let value = serde_json::json!({
            "type": format!("urn:mconnect:problem:{code}"),
            "title": status.canonical_reason().unwrap_or("Error"),
            "status": status.as_u16(),
            "detail": detail,
            "code": code,
        });
        ProviderResponse {
            status,
            content_type: "application/problem+json".into(),
            body: Bytes::from(serde_json::to_vec(&value).unwrap_or_default()),
        }
    }
}

/// Verifies a request forwarded by the broker (label `mconnect`, keyid of a trusted broker certificate).
///
/// This checks one request on its own; a provider must also refuse a
/// request it has already seen, which [`serve_provider`] does with an
/// [`ExchangeIds`].
pub fn verify_broker_request(
    method: &str,
    target_uri: &str,
    request_headers: &HeaderMap,
    body: &[u8],
    broker: &TrustedKeys,
    max_skew: Duration,
) -> Result<String, SdkError> {
    verify_broker_signature(method, target_uri, request_headers, body, broker, max_skew)
        .map(|(keyid, _)| keyid)
}

/// The exchange ids a provider has served, so that a broker-signed request
/// is acted on once: the same `MConnect-Exchange-Id` to the same method and
/// target is refused (409 `request.replayed`).
///
/// Memory is bounded (see [`crate::exchange::replay::ReplayCache`]): ids are
/// kept for the broker signature's `created` window, after which the
/// signature itself is refused as too old; when full, the window narrows
/// instead of any id being forgotten. Nothing is written to disk: instead a
/// new process refuses broker signatures created before it started, so a
/// request an earlier process may have served cannot be played to it again.
/// The key includes method and target because the broker asks MPower about
/// representation under the exchange id of the call it checks.
pub struct ExchangeIds {
    cache: crate::exchange::replay::ReplayCache,
    max_skew: i64,
}

impl ExchangeIds {
    /// Remembers ids for signatures at most `max_skew` from the provider's
    /// clock, at most `capacity` of them, refusing signatures made before now.
    pub fn new(max_skew: Duration, capacity: usize) -> ExchangeIds {
        let max_skew = i64::try_from(max_skew.as_secs()).unwrap_or(i64::MAX);
        let cache = crate::exchange::replay::ReplayCache::new(max_skew, capacity);
        cache.raise_floor(crate::exchange::unix_now());
        ExchangeIds { cache, max_skew }
    }

    /// Checks a request whose broker signature verified (`created` from it)
    /// and remembers it; an error says why it must not be served.
    pub fn check(
        &self,
        method: &str,
        target_uri: &str,
        exchange_id: &str,
        created: i64,
    ) -> Result<(), SdkError> {
        let id = uuid::Uuid::parse_str(exchange_id).map_err(|_| {
            SdkError::Verification(format!("exchange id {exchange_id:?} is not a UUID"))
        })?;
        let now = crate::exchange::unix_now();
        if (now - created).abs() > self.max_skew {
            return Err(SdkError::Verification(
                "broker signature is outside the time window".into(),
            ));
        }
        match self
            .cache
            .check_and_insert(&format!("{method} {target_uri}"), id, created, now)
        {
            crate::exchange::replay::ReplayVerdict::Fresh => Ok(()),
            crate::exchange::replay::ReplayVerdict::Replayed => Err(SdkError::Replayed(format!(
                "exchange {exchange_id} was already served"
            ))),
            crate::exchange::replay::ReplayVerdict::TooOld { floor } => {
                Err(SdkError::Replayed(format!(
                    "exchange {exchange_id}: this provider accepts broker signatures created from {floor} on"
                )))
            }
        }
    }
}

/// Verifies the broker's signature; returns its keyid and `created`.
fn verify_broker_signature(
    method: &str,
    target_uri: &str,
    request_headers: &HeaderMap,
    body: &[u8],
    broker: &TrustedKeys,
    max_skew: Duration,
) -> Result<(String, i64), SdkError> {
    let v = |s: String| SdkError::Verification(s);
    let parsed = httpsig::parse_signature(request_headers, labels::REQUEST)
        .map_err(|e| v(format!("no broker signature: {e}")))?;
    let keyid = parsed
        .params
        .keyid
        .clone()
        .ok_or_else(|| v("signature has no keyid".into()))?;
    let key = broker
        .get(&keyid)
        .ok_or_else(|| v(format!("{keyid} is not a trusted broker certificate")))?;
    for name in [
        "@method",
        "@target-uri",
        headers::CLIENT,
        headers::CALLING_USER,
        headers::CALL_BASIS,
        headers::CALL_REASON,
        headers::REQUEST_ID,
        headers::EXCHANGE_ID,
    ] {
        if !parsed.params.covers(name) {
            return Err(v(format!("broker signature does not cover {name}")));
        }
    }
    let created = parsed
        .params
        .created
        .ok_or_else(|| v("broker signature has no created".into()))?;
    if (crate::exchange::unix_now() - created).unsigned_abs() > max_skew.as_secs() {
        return Err(v("broker signature is outside the time window".into()));
    }
    let alg = resolve_alg(parsed.params.alg.as_deref(), key)?;
    httpsig::verify(
        &MessageView::Request(RequestView {
            method,
            target_uri,
            headers: request_headers,
        }),
        &parsed,
        key,
        alg,
    )
    .map_err(|e| v(format!("broker signature does not verify: {e}")))?;
    if !body.is_empty() || request_headers.contains_key(headers::CONTENT_DIGEST) {
        if !parsed.params.covers(headers::CONTENT_DIGEST) {
            return Err(v("broker signature does not cover content-digest".into()));
        }
        let digest = httpsig::digest::content_digest_field(request_headers)
            .map_err(|e| v(e.to_string()))?
            .ok_or_else(|| v("body without Content-Digest".into()))?;
        httpsig::digest::verify_content_digest(digest, body)
            .map_err(|e| v(format!("digest: {e}")))?;
    }
    Ok((keyid, created))
}

/// Signs a provider's answer (label `mconnect-provider`) and returns its headers.
pub fn sign_response(
    credentials: &Credentials,
    response: &ProviderResponse,
    exchange_id: &str,
) -> Result<HeaderMap, SdkError> {
    let mut h = HeaderMap::new();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_str(&response.content_type)
            .map_err(|_| SdkError::Request("content type".into()))?,
    );
    h.insert(
        headers::EXCHANGE_ID,
        HeaderValue::from_str(exchange_id).map_err(|_| SdkError::Request("exchange id".into()))?,
    );
    h.insert(
        headers::CONTENT_DIGEST,
        httpsig::digest::content_digest_header(&response.body),
    );
    let mut params =
        SignatureParams::new(&["@status", headers::CONTENT_DIGEST, headers::EXCHANGE_ID]);
    params.created = Some(crate::exchange::unix_now());
    params.keyid = Some(credentials.keyid.clone());
    params.alg = Some(credentials.key.algorithm().as_str().to_string());
    let sig = httpsig::sign(
        &MessageView::Response {
            status: response.status.as_u16(),
            headers: &h,
            request: None,
        },
        labels::PROVIDER,
        &params,
        &credentials.key,
    )
    .map_err(|e| SdkError::Request(e.to_string()))?;
    httpsig::attach(&mut h, sig);
    Ok(h)
}

/// Exchange ids a provider server remembers at most (about 50 bytes each).
const EXCHANGE_IDS_CAPACITY: usize = 1_000_000;

/// Settings of a provider server.
pub struct ProviderSettings {
    /// Where to listen.
    pub listen: SocketAddr,
    /// The provider's credentials.
    pub credentials: Credentials,
    /// The broker certificates whose signatures are accepted.
    pub broker: TrustedKeys,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
}

/// Runs a provider: mTLS, broker signature checked, answers signed.
pub async fn serve_provider<H, F>(
    settings: ProviderSettings,
    handler: H,
) -> Result<RunningServer, SdkError>
where
    H: Fn(ProviderRequest) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = ProviderResponse> + Send + 'static,
{
    let credentials = settings.credentials.clone();
    serve_raw_provider(settings, move |request| {
        let handler = handler.clone();
        let credentials = credentials.clone();
        async move {
            let exchange_id = request.exchange_id.clone();
            let answer = handler(request).await;
            let headers = match sign_response(&credentials, &answer, &exchange_id) {
                Ok(h) => h,
                Err(e) => {
                    tracing::error!(error = %e, "signing the answer failed");
                    HeaderMap::new()
                }
            };
            (answer.status, headers, answer.body)
        }
    })
    .await
}

/// Like [`serve_provider`], but the handler builds the whole answer, headers
/// and signature included. For providers with their own signing, and for
/// tests of how the broker treats a provider that signs wrongly.
pub async fn serve_raw_provider<H, F>(
    settings: ProviderSettings,
    handler: H,
) -> Result<RunningServer, SdkError>
where
    H: Fn(ProviderRequest) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = (StatusCode, HeaderMap, Bytes)> + Send + 'static,
{
    let tls = crate::tls::server_config(&settings.credentials.ca, &settings.credentials.tls)
        .map_err(|e| SdkError::Credentials(e.to_string()))?;
    let credentials = Arc::new(settings.credentials);
    let broker = Arc::new(settings.broker);
    let max_body = settings.max_body_bytes;
    let listen = settings.listen;
    let seen = Arc::new(ExchangeIds::new(
        Duration::from_secs(300),
        EXCHANGE_IDS_CAPACITY,
    ));
    crate::server::serve(listen, tls, 32 * 1024, move |_peer, request| {
        let handler = handler.clone();
        let credentials = credentials.clone();
        let broker = broker.clone();
        let seen = seen.clone();
        async move {
            let (head, body) = request.into_parts();
            let exchange_id = head
                .headers
                .get(headers::EXCHANGE_ID)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            let refusal = |status: StatusCode, code: &str, detail: &str| {
                let answer = ProviderResponse::problem(status, code, detail);
                let h = sign_response(&credentials, &answer, &exchange_id).unwrap_or_default();
                (answer.status, h, answer.body)
            };
            let (status, h, body) = match Limited::new(body, max_body).collect().await {
                Err(_) => refusal(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "request.too_large",
                    "body over the provider's limit",
                ),
                Ok(collected) => {
                    let body = collected.to_bytes();
                    let target = target_uri(&head);
                    let checked = verify_broker_signature(
                        head.method.as_str(),
                        &target,
                        &head.headers,
                        &body,
                        &broker,
                        Duration::from_secs(300),
                    )
                    .and_then(|(_, created)| {
                        seen.check(head.method.as_str(), &target, &exchange_id, created)
                    });
                    match checked {
                        Err(e @ SdkError::Replayed(_)) => {
                            refusal(StatusCode::CONFLICT, "request.replayed", &e.to_string())
                        }
                        Err(e) => refusal(
                            StatusCode::UNAUTHORIZED,
                            "signature.invalid",
                            &e.to_string(),
                        ),
                        Ok(()) => {
                            handler(ProviderRequest {
                                method: head.method.clone(),
                                uri: head.uri.clone(),
                                headers: head.headers.clone(),
                                body,
                                exchange_id: exchange_id.clone(),
                            })
                            .await
                        }
                    }
                }
            };
            let mut response = Response::new(Full::new(body));
            *response.status_mut() = status;
            *response.headers_mut() = h;
            response
        }
    })
    .await
    .map_err(|e| SdkError::Transport(format!("cannot listen on {listen}: {e}")))
}

/// The absolute URI a request was sent to, as the sender's signature covers it.
fn target_uri(head: &http::request::Parts) -> String {
    let authority = head
        .uri
        .authority()
        .map(|a| a.to_string())
        .or_else(|| {
            head.headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_string)
        })
        .unwrap_or_default();
    format!(
        "https://{authority}{}",
        head.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b+c"), "a b c");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }
}
