//! Sealing the answer: the broker's `mconnect-receipt` signature over the
//! status, the digest of the body as delivered, the exchange and request ids
//! and the audit sequence number (PROTOCOL.md section 4).
//!
//! Invariant: every answer of the data plane, success or refusal, leaves here
//! signed; a receipt names an audit sequence number only when that record is
//! durable.

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use http_body_util::Full;

use super::call::{headers, labels};
use crate::crypto::SigningKey;
use crate::httpsig::{self, MessageView, SignatureParams};

/// The broker's signing identity.
pub struct Sealer {
    key: SigningKey,
    keyid: String,
}

/// What goes into a receipt.
pub struct Answer<'a> {
    /// HTTP status.
    pub status: StatusCode,
    /// The body as delivered.
    pub body: Bytes,
    /// Its media type.
    pub content_type: &'a str,
    /// The broker's exchange id.
    pub exchange_id: &'a str,
    /// The client's request id, when it was readable.
    pub request_id: Option<&'a str>,
    /// The audit leaf index, when the record is durable.
    pub audit_seq: Option<u64>,
    /// For 429 answers.
    pub retry_after_secs: Option<u64>,
}

impl Sealer {
    /// A sealer signing with the broker key; `keyid` is the broker certificate's fingerprint.
    pub fn new(key: SigningKey, keyid: String) -> Self {
        Sealer { key, keyid }
    }

    /// The broker's keyid.
    pub fn keyid(&self) -> &str {
        &self.keyid
    }

    /// The broker's signing key.
    pub fn key(&self) -> &SigningKey {
        &self.key
    }

    /// Builds the signed answer.
    pub fn seal(&self, answer: Answer<'_>, now: i64) -> Response<Full<Bytes>> {
        let mut h = HeaderMap::new();
        put(
            &mut h,
            http::header::CONTENT_TYPE.as_str(),
            answer.content_type,
        );
        put(&mut h, headers::EXCHANGE_ID, answer.exchange_id);
        h.insert(
            headers::CONTENT_DIGEST,
            httpsig::digest::content_digest_header(&answer.body),
        );
        let mut covered = vec!["@status", headers::CONTENT_DIGEST, headers::EXCHANGE_ID];
        if let Some(id) = answer.request_id {
            put(&mut h, headers::REQUEST_ID, id);
            covered.push(headers::REQUEST_ID);
        }
        if let Some(seq) = answer.audit_seq {
            h.insert(headers::AUDIT_SEQ, HeaderValue::from(seq));
            covered.push(headers::AUDIT_SEQ);
        }
        if let Some(secs) = answer.retry_after_secs {
            h.insert(http::header::RETRY_AFTER, HeaderValue::from(secs));
        }
        let mut params = SignatureParams::new(&covered);
        params.created = Some(now);
        params.keyid = Some(self.keyid.clone());
        params.alg = Some(self.key.algorithm().as_str().to_string());
        let view = MessageView::Response {
            status: answer.status.as_u16(),
            headers: &h,
            request: None,
        };
        match httpsig::sign(&view, labels::RECEIPT, &params, &self.key) {
            Ok(sig) => httpsig::attach(&mut h, sig),
            // Signing with a loaded key does not fail in practice; if it
            // does, the consumer gets an unsigned answer it will reject as
            // unverifiable rather than a forged one.
            Err(e) => tracing::error!(error = %e, "receipt signing failed"),
        }
        let mut response = Response::new(Full::new(answer.body));
        *response.status_mut() = answer.status;
        *response.headers_mut() = h;
        response
    }
}

fn put(h: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        h.insert(name, v);
    }
}
