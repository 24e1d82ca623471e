//! The upstream seam: where a permitted, validated call is answered. Two
//! kinds stand behind it — a provider reached over mTLS ([`ProviderUpstream`],
//! the request rebuilt from a whitelist and signed by the broker, the answer's
//! `mconnect-provider` signature checked), and the broker's own services
//! (`internal`, answered from the audit log). Both hand back the same
//! [`UpstreamAnswer`], and the exchange passes both through the same answer
//! checks (`answer`): schema, minimisation, problem cut.
//!
//! Invariants:
//! - nothing from the consumer's request reaches a provider except the
//!   method, subpath, query, body and the protocol headers (trace context
//!   is the broker's own span, with the consumer's `tracestate` only once
//!   checked);
//! - an answer leaves a [`ProviderUpstream`] only once it names this
//!   exchange and its signature verifies with a key the provider holds now.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, StatusCode};
use http_body_util::Full;

use super::call::{CallHeaders, Route, headers, labels};
use super::error::{ErrorKind, ExchangeError};
use super::route::{ProviderAnswer, ProviderClient};
use super::seal::Sealer;
use crate::catalog::{Catalog, Service};
use crate::httpsig::{self, MessageView, RequestView, SignatureParams};
use crate::registry::{ParticipantEntry, RegistrySnapshot};
use mconnect_sdk::protocol::unix_now;
use mconnect_sdk::trace::TraceContext;

/// What an upstream is asked to answer.
pub struct UpstreamCall<'a> {
    /// The broker's exchange id (the provider must echo it).
    pub exchange_id: &'a str,
    /// The consumer's request head (method and protocol headers).
    pub head: &'a http::request::Parts,
    /// The service addressed and what follows it.
    pub route: &'a Route<'a>,
    /// The protocol headers, read.
    pub call: &'a CallHeaders,
    /// The catalogued service.
    pub service: &'a Service,
    /// The request body.
    pub body: Bytes,
    /// The registry as this exchange sees it.
    pub registry: &'a RegistrySnapshot,
    /// The catalog as this exchange sees it.
    pub catalog: &'a Catalog,
    /// The exchange's trace context: the provider receives the broker's
    /// span as `traceparent`, and the consumer's checked `tracestate`.
    pub trace: Option<&'a TraceContext>,
}

/// An answer as it came back, its origin checked, before the answer checks.
#[derive(Debug, Clone)]
pub struct UpstreamAnswer {
    /// The status.
    pub status: StatusCode,
    /// The media type, lower-case, without parameters; empty when absent.
    pub media_type: String,
    /// The body.
    pub body: Bytes,
}

/// What an upstream did that the audit record lists, filled as it goes, so
/// a call that fails half-way is recorded with what it got to.
#[derive(Debug, Default)]
pub struct UpstreamTrace {
    /// When the request left for the provider.
    pub forwarded_at: Option<SystemTime>,
    /// Keys the broker signed with.
    pub keyids_made: Vec<String>,
    /// Keys whose signatures were checked.
    pub keyids_checked: Vec<String>,
}

/// The future an upstream returns.
pub type UpstreamFuture<'a> =
    Pin<Box<dyn Future<Output = Result<UpstreamAnswer, ExchangeError>> + Send + 'a>>;

/// Answers permitted, validated calls. Boxed futures keep it object-safe,
/// so the pipeline is tested with a fake in place of the providers.
pub trait Upstream: Send + Sync {
    /// Answers one call.
    fn call<'a>(
        &'a self,
        call: UpstreamCall<'a>,
        trace: &'a mut UpstreamTrace,
    ) -> UpstreamFuture<'a>;
}

/// The providers, over mTLS, signed by the broker.
pub struct ProviderUpstream {
    client: ProviderClient,
    sealer: std::sync::Arc<Sealer>,
    default_timeout: Duration,
    max_response_bytes: usize,
}

impl ProviderUpstream {
    /// Providers reached with `client`, requests signed by `sealer`'s key;
    /// `default_timeout` for services whose catalog entry names none.
    pub fn new(
        client: ProviderClient,
        sealer: std::sync::Arc<Sealer>,
        default_timeout: Duration,
        max_response_bytes: usize,
    ) -> Self {
        ProviderUpstream {
            client,
            sealer,
            default_timeout,
            max_response_bytes,
        }
    }
}

impl Upstream for ProviderUpstream {
    fn call<'a>(
        &'a self,
        call: UpstreamCall<'a>,
        trace: &'a mut UpstreamTrace,
    ) -> UpstreamFuture<'a> {
        Box::pin(async move {
            let provider = call.registry.get(call.route.provider).ok_or_else(|| {
                ExchangeError::new(
                    ErrorKind::ProviderUnavailable,
                    format!("provider `{}` is not registered", call.route.provider),
                )
            })?;
            let request = forward_request(&self.sealer, &call, provider)?;
            trace.keyids_made.push(self.sealer.keyid().to_string());
            trace.forwarded_at = Some(SystemTime::now());
            let timeout = if call.service.timeout.is_zero() {
                self.default_timeout
            } else {
                call.service.timeout
            };
            let answer = self
                .client
                .send(request, timeout, self.max_response_bytes)
                .await?;
            let keyid = check_provider_answer(&answer, provider, call.exchange_id)?;
            trace.keyids_checked.push(keyid);
            let media_type = media_type(&answer.head.headers);
            Ok(UpstreamAnswer {
                status: answer.head.status,
                media_type,
                body: answer.body,
            })
        })
    }
}

/// The media type of a `Content-Type`, lower-case, parameters dropped.
pub(super) fn media_type(headers: &HeaderMap) -> String {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default()
}

/// The request the provider receives: built from a whitelist of the
/// consumer's headers plus the exchange id, signed by the broker.
fn forward_request(
    sealer: &Sealer,
    call: &UpstreamCall<'_>,
    provider: &ParticipantEntry,
) -> Result<Request<Full<Bytes>>, ExchangeError> {
    let route = call.route;
    let base = provider
        .participant
        .endpoint_for(route.code)
        .ok_or_else(|| {
            ExchangeError::new(
                ErrorKind::ProviderUnavailable,
                format!("provider `{}` has registered no endpoint", route.provider),
            )
        })?;
    let mut url = format!("{base}{}{}", call.service.path, route.subpath);
    if let Some(q) = route.query {
        url.push('?');
        url.push_str(q);
    }
    let mut h = HeaderMap::new();
    for name in [
        headers::CLIENT,
        headers::CALLING_USER,
        headers::CALL_BASIS,
        headers::CALL_REASON,
        headers::SUBJECT,
        headers::REPRESENTED_PARTY,
        headers::REQUEST_ID,
        http::header::CONTENT_TYPE.as_str(),
        http::header::ACCEPT.as_str(),
    ] {
        if let Some(v) = call.head.headers.get(name) {
            h.insert(name, v.clone());
        }
    }
    h.insert(
        headers::EXCHANGE_ID,
        HeaderValue::from_str(call.exchange_id)
            .map_err(|_| ExchangeError::new(ErrorKind::Internal, "exchange id unusable"))?,
    );
    // Trace context is the broker's own (its span, the consumer's trace id),
    // never the consumer's header passed through, and the signature leaves
    // it out: each hop rewrites it, tracing proxies in front of a provider
    // included, and it is correlation, not evidence (PROTOCOL.md section 3).
    if let Some(trace) = call.trace {
        trace.insert_headers(&mut h);
    }
    let mut covered = mconnect_sdk::protocol::FORWARDED_COMPONENTS.to_vec();
    if call.call.subject.is_some() {
        covered.push(headers::SUBJECT);
    }
    if call.call.represented_party.is_some() {
        covered.push(headers::REPRESENTED_PARTY);
    }
    if !call.body.is_empty() {
        h.insert(
            headers::CONTENT_DIGEST,
            httpsig::digest::content_digest_header(&call.body),
        );
        covered.push(headers::CONTENT_DIGEST);
    }
    let mut params = SignatureParams::new(&covered);
    params.created = Some(unix_now());
    params.keyid = Some(sealer.keyid().to_string());
    params.alg = Some(sealer.key().algorithm().as_str().to_string());
    let sig = httpsig::sign(
        &MessageView::Request(RequestView {
            method: call.head.method.as_str(),
            target_uri: &url,
            headers: &h,
        }),
        labels::REQUEST,
        &params,
        sealer.key(),
    )
    .map_err(|e| {
        ExchangeError::new(
            ErrorKind::Internal,
            format!("signing the forwarded request failed: {e}"),
        )
    })?;
    httpsig::attach(&mut h, sig);
    let mut request = Request::new(Full::new(call.body.clone()));
    *request.method_mut() = call.head.method.clone();
    *request.uri_mut() = url.parse().map_err(|_| {
        ExchangeError::new(
            ErrorKind::ProviderUnavailable,
            format!("provider endpoint URL {url} is not a valid URI"),
        )
    })?;
    *request.headers_mut() = h;
    Ok(request)
}

/// Checks the provider's `mconnect-provider` signature and digest; returns the keyid used.
fn check_provider_answer(
    answer: &ProviderAnswer,
    provider: &ParticipantEntry,
    exchange_id: &str,
) -> Result<String, ExchangeError> {
    let bad = |detail: String| ExchangeError::new(ErrorKind::ProviderSignatureInvalid, detail);
    let h = &answer.head.headers;
    // The answer must belong to this exchange before its signature matters.
    if h.get(headers::EXCHANGE_ID).and_then(|v| v.to_str().ok()) != Some(exchange_id) {
        return Err(bad("provider answer names another exchange id".into()));
    }
    // A key whose certificate expired, was removed or no longer chains
    // signs nothing; the refusal is kept to say so instead of "untrusted".
    let now = unix_now();
    let refused = std::cell::RefCell::new(None);
    mconnect_sdk::verify_signed_response(
        answer.head.status,
        h,
        &answer.body,
        labels::PROVIDER,
        &[],
        |keyid| match provider.key_at(keyid, now) {
            Ok(key) => Some(key),
            Err(refusal) => {
                *refused.borrow_mut() = Some(refusal);
                None
            }
        },
    )
    .map_err(|e| match refused.take() {
        Some(refusal) => bad(format!(
            "provider answer signed by a key that signs nothing: {refusal}"
        )),
        None => bad(format!(
            "provider `{}` answer unusable: {e}",
            provider.participant.id
        )),
    })
}
