//! The provider side: [`serve_provider`] runs an mTLS server that accepts
//! only requests signed by the broker, refuses replays, hands them to your
//! handler and signs your answers (label `mconnect-provider`).
//!
//! Invariant: a [`ProviderRequest`] only exists once the broker's signature
//! and the body's digest have been checked.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};

use crate::httpsig::{self, MessageView, RequestView, SignatureParams};
use crate::keys::{Credentials, SdkError, TrustedKeys, resolve_alg};
use crate::protocol::{headers, labels, query_param, unix_now};
use crate::server::RunningServer;

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

    /// The broker's `traceparent`: the trace id of the consumer's call (or
    /// the one the broker started) and the broker's span id. A provider
    /// logs the trace id and, when it calls further, continues the trace
    /// with [`crate::TraceContext::continue_from`] on these headers, so the
    /// call can be followed end to end. Not covered by the broker's
    /// signature (each hop rewrites it).
    pub fn trace_parent(&self) -> Option<crate::trace::TraceParent> {
        crate::trace::TraceParent::from_headers(&self.headers)
    }

    /// The consumer's `tracestate`, as the broker passed it on.
    pub fn trace_state(&self) -> Option<String> {
        self.trace_parent()?;
        crate::trace::tracestate_from_headers(&self.headers)
    }
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
        ProviderResponse {
            status,
            content_type: crate::protocol::PROBLEM_JSON.into(),
            body: Bytes::from(crate::protocol::Problem::new(status, code, detail).to_json()),
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
/// Memory is bounded (see [`crate::replay::ReplayCache`]): ids are
/// kept for the broker signature's `created` window, after which the
/// signature itself is refused as too old; when full, the window narrows
/// instead of any id being forgotten. Nothing is written to disk: instead a
/// new process refuses broker signatures created before it started, so a
/// request an earlier process may have served cannot be played to it again.
/// The key includes method and target because the broker asks MPower about
/// representation under the exchange id of the call it checks.
pub struct ExchangeIds {
    cache: crate::replay::ReplayCache,
    max_skew: i64,
}

impl ExchangeIds {
    /// Remembers ids for signatures at most `max_skew` from the provider's
    /// clock, at most `capacity` of them, refusing signatures made before now.
    pub fn new(max_skew: Duration, capacity: usize) -> ExchangeIds {
        let max_skew = i64::try_from(max_skew.as_secs()).unwrap_or(i64::MAX);
        let cache = crate::replay::ReplayCache::new(max_skew, capacity);
        cache.raise_floor(unix_now());
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
        let now = unix_now();
        if (now - created).abs() > self.max_skew {
            return Err(SdkError::Verification(
                "broker signature is outside the time window".into(),
            ));
        }
        match self
            .cache
            .check_and_insert(&format!("{method} {target_uri}"), id, created, now)
        {
            crate::replay::ReplayVerdict::Fresh => Ok(()),
            crate::replay::ReplayVerdict::Replayed => Err(SdkError::Replayed(format!(
                "exchange {exchange_id} was already served"
            ))),
            crate::replay::ReplayVerdict::TooOld { floor } => Err(SdkError::Replayed(format!(
                "exchange {exchange_id}: this provider accepts broker signatures created from {floor} on"
            ))),
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
    for &name in crate::protocol::FORWARDED_COMPONENTS {
        if !parsed.params.covers(name) {
            return Err(v(format!("broker signature does not cover {name}")));
        }
    }
    let created = parsed
        .params
        .created
        .ok_or_else(|| v("broker signature has no created".into()))?;
    if (unix_now() - created).unsigned_abs() > max_skew.as_secs() {
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
    params.created = Some(unix_now());
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
