//! The consumer side: a [`Call`] signed (RFC 9421 label `mconnect`, RFC 9530
//! digest), sent over mTLS by [`Consumer`], and the broker's receipt verified.
//!
//! Invariant: a [`CallOutcome`] only exists once the receipt's signature has
//! been checked against a key the caller trusts.

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};

use crate::crypto::VerifyingKey;
use crate::httpsig::{self, MessageView, RequestView, SignatureParams};
use crate::keys::{Credentials, SdkError, TrustedKeys, resolve_alg};
use crate::protocol::{headers, labels, unix_now};

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

impl CallOutcome {
    /// The broker's `traceparent` on the answer: the exchange's trace id
    /// (the caller's, or the one the broker started) and the broker's span
    /// id. Not covered by the receipt: the audit record, found by the
    /// receipt, holds the trace id.
    pub fn trace_parent(&self) -> Option<crate::trace::TraceParent> {
        crate::trace::TraceParent::from_headers(&self.headers)
    }
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
    let mut covered = crate::protocol::CONSUMER_COMPONENTS.to_vec();
    for optional in [
        headers::SUBJECT,
        headers::REPRESENTED_PARTY,
        headers::EXCHANGE_ID,
        headers::USER_SIGNATURE,
        headers::USER_CERTIFICATE,
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
    params.created = Some(unix_now());
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

/// A consumer's connection to the broker.
pub struct Consumer {
    credentials: Credentials,
    broker_url: String,
    broker_keys: TrustedKeys,
    client: crate::tls::HttpsClient,
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
        let client = crate::tls::https_client(&tls, crate::tls::ClientOptions::default());
        Ok(Consumer {
            credentials,
            broker_url: broker_url.trim_end_matches('/').to_string(),
            broker_keys,
            client,
        })
    }

    /// Builds the signed request for a call (exposed for tests that tamper with it).
    pub fn build(&self, call: &Call) -> Result<Request<Full<Bytes>>, SdkError> {
        self.build_traced(call, None)
    }

    /// Builds the signed request for a call that continues a trace: with
    /// `traceparent` set to `trace` (the caller's own span), so the broker,
    /// the provider and the audit record carry its trace id. The header is
    /// not signed: trace context is correlation, each hop rewrites it, and
    /// the broker requires no signature over it (PROTOCOL.md section 2).
    pub fn build_traced(
        &self,
        call: &Call,
        trace: Option<&crate::trace::TraceParent>,
    ) -> Result<Request<Full<Bytes>>, SdkError> {
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
        if let Some(trace) = trace {
            h.insert(crate::trace::TRACEPARENT, trace.header_value());
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

    /// Like [`Consumer::call`], continuing the caller's trace `trace`
    /// ([`Consumer::build_traced`]). Without one the broker starts a trace;
    /// either way [`CallOutcome::trace_parent`] names it.
    pub async fn call_traced(
        &self,
        call: &Call,
        trace: &crate::trace::TraceParent,
    ) -> Result<CallOutcome, SdkError> {
        let request = self.build_traced(call, Some(trace))?;
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
