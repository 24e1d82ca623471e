//! Verifying a consumer's request: RFC 9421 signature with a key registered
//! to the participant named in `MConnect-Client`, the `created`/`expires`
//! window, the covered components the protocol requires, and the RFC 9530
//! digest of the body.
//!
//! Invariant: nothing here trusts a header that the verified signature does
//! not cover; the digest is checked after the signature, so a changed body is
//! reported as `digest.mismatch` and a changed covered header as
//! `signature.invalid`.

use std::sync::Arc;

use http::HeaderMap;

use super::call::CallHeaders;
use super::call::{headers, labels};
use super::error::{ErrorKind, ExchangeError};
use super::record::{Claim, Trace};
use super::replay_store::{self, ReplayRefusal, ReplayStore};
use crate::crypto::Algorithm;
use crate::httpsig::{self, HttpSigError, MessageView, RequestView};
use crate::registry::ParticipantEntry;
use crate::store::{ClaimRefusal, SharedState};

/// Components every consumer signature must cover (PROTOCOL.md section 2).
pub const REQUIRED_COMPONENTS: &[&str] = mconnect_sdk::protocol::CONSUMER_COMPONENTS;

/// What a verified signature established.
#[derive(Debug, Clone)]
pub struct VerifiedSignature {
    /// The certificate fingerprint that signed.
    pub keyid: String,
    /// The signature's `created` (unix seconds).
    pub created: i64,
    /// The signature's `nonce`, if any.
    pub nonce: Option<String>,
}

/// The request as the signature sees it.
pub struct SignedRequest<'a> {
    /// HTTP method.
    pub method: &'a str,
    /// The absolute target URI the client addressed.
    pub target_uri: &'a str,
    /// All request headers.
    pub headers: &'a HeaderMap,
    /// The body.
    pub body: &'a [u8],
}

/// Claims the request id (and a signature nonce) as single-use for this
/// client: only after the signature verified, so an unauthenticated request
/// cannot burn another client's ids. The claim settles with the audit record.
///
/// With brokers side by side (`shared`), the ids are claimed here first (the
/// embedded store: no round trip, and it covers this broker's restarts),
/// then in the cluster's shared table (batched, `store::SharedState`). A
/// refusal there takes the local claim back, so a 503 `state.unavailable`
/// leaves the request id usable for a retry.
pub(super) async fn claim_ids(
    replay: &Arc<dyn ReplayStore>,
    shared: Option<&SharedState>,
    trace: &mut Trace,
    call: &CallHeaders,
    verified: &VerifiedSignature,
    now: i64,
) -> Result<(), ExchangeError> {
    let mut ids = vec![replay_store::replay_id_of_request(&call.request_id)];
    if let Some(nonce) = &verified.nonce {
        // A signature nonce is honoured as a second single-use id.
        ids.push(replay_store::replay_id_of_nonce(nonce));
    }
    match replay.claim(&call.client, &ids, now) {
        Ok(()) => {}
        Err(ReplayRefusal::Replayed) => return Err(replayed(call)),
        Err(ReplayRefusal::Unavailable(why)) => {
            tracing::warn!(reason = %why, "replay check cannot answer; refusing the exchange");
            return Err(ExchangeError::new(
                ErrorKind::AuditUnavailable,
                "the broker cannot check this request id against the ones already used; try again later",
            ));
        }
    }
    // Held from here: if the exchange is dropped while the shared check
    // runs, the claim settles as unrecorded (the id stays used here).
    let claim = Claim {
        store: Arc::clone(replay),
        client: call.client.clone(),
        ids: ids.clone(),
        now,
        settled: false,
    };
    if let Some(shared) = shared {
        match shared.claim(&call.client, &ids, now).await {
            Ok(()) => {}
            Err(ClaimRefusal::Replayed) => {
                claim.release();
                return Err(replayed(call));
            }
            Err(ClaimRefusal::Unavailable(why)) => {
                claim.release();
                tracing::warn!(reason = %why, "the cluster's replay check cannot answer; refusing the exchange");
                return Err(ExchangeError::new(
                    ErrorKind::StateUnavailable,
                    "the broker cannot check this request id against the ones the other brokers of the cluster accepted; try again later",
                ));
            }
        }
    }
    trace.replay_ids = ids;
    trace.claim = Some(claim);
    Ok(())
}

fn replayed(call: &CallHeaders) -> ExchangeError {
    ExchangeError::new(
        ErrorKind::Replayed,
        format!(
            "request id {} (or signature nonce) was already used by `{}` in the last 24 hours; use a fresh UUID per request",
            call.request_id, call.client
        ),
    )
}

/// Verifies the `mconnect` signature and the body digest.
pub fn verify_request(
    request: &SignedRequest<'_>,
    signer: &ParticipantEntry,
    now: i64,
    skew_secs: i64,
) -> Result<VerifiedSignature, ExchangeError> {
    let parsed = httpsig::parse_signature(request.headers, labels::REQUEST).map_err(|e| match e {
        HttpSigError::Missing => ExchangeError::new(
            ErrorKind::SignatureMissing,
            "sign the request with RFC 9421 label `mconnect` (Signature-Input and Signature headers)",
        ),
        other => ExchangeError::new(
            ErrorKind::SignatureInvalid,
            format!("signature headers unreadable: {other}"),
        ),
    })?;
    let params = &parsed.params;
    let keyid = params.keyid.as_deref().ok_or_else(|| {
        invalid("signature parameter `keyid` is required: the SHA-256 hex fingerprint of your certificate")
    })?;
    // Registered to this participant, chained to the bus CA, in date now:
    // otherwise the key signs nothing, and the detail says which failed.
    let key = signer
        .key_at(keyid, now)
        .map_err(|refusal| invalid(format!("keyid {keyid} signs nothing: {refusal}")))?;
    let created = params
        .created
        .ok_or_else(|| invalid("signature parameter `created` is required"))?;
    if (now - created).abs() > skew_secs {
        return Err(ExchangeError::new(
            ErrorKind::SignatureExpired,
            format!(
                "signature created at {created} is more than {skew_secs} s from the broker's clock ({now}); check your clock and sign again"
            ),
        ));
    }
    if let Some(expires) = params.expires
        && expires < now
    {
        return Err(ExchangeError::new(
            ErrorKind::SignatureExpired,
            format!("signature expired at {expires}; sign again"),
        ));
    }
    let has_digest = request.headers.contains_key(headers::CONTENT_DIGEST);
    let conditional = [
        (
            headers::SUBJECT,
            request.headers.contains_key(headers::SUBJECT),
        ),
        (
            headers::REPRESENTED_PARTY,
            request.headers.contains_key(headers::REPRESENTED_PARTY),
        ),
        (
            headers::CONTENT_DIGEST,
            has_digest || !request.body.is_empty(),
        ),
    ];
    for name in REQUIRED_COMPONENTS.iter().copied().chain(
        conditional
            .iter()
            .filter(|(_, present)| *present)
            .map(|(n, _)| *n),
    ) {
        if !params.covers(name) {
            return Err(invalid(format!("the signature must cover `{name}`")));
        }
    }
    let alg = match params.alg.as_deref() {
        Some(name) => Algorithm::from_name(name)
            .ok_or_else(|| invalid(format!("algorithm `{name}` is not supported; use ed25519, ecdsa-p256-sha256, rsa-pss-sha512 or rsa-v1_5-sha256")))?,
        None => key.default_algorithm(),
    };
    if !key.supports(alg) {
        return Err(invalid(format!(
            "algorithm `{}` does not fit the key of certificate {keyid}",
            alg.as_str()
        )));
    }
    let view = MessageView::Request(RequestView {
        method: request.method,
        target_uri: request.target_uri,
        headers: request.headers,
    });
    httpsig::verify(&view, &parsed, key, alg).map_err(|e| match e {
        HttpSigError::Invalid => invalid(format!(
            "signature does not verify with certificate {keyid}: a covered component (method, target URI {}, or a header) differs from what was signed",
            request.target_uri
        )),
        other => invalid(format!("signature cannot be checked: {other}")),
    })?;
    if has_digest || !request.body.is_empty() {
        let value = httpsig::digest::content_digest_field(request.headers)
            .map_err(|e| ExchangeError::new(ErrorKind::Malformed, e.to_string()))?
            .ok_or_else(|| {
            ExchangeError::new(
                ErrorKind::Malformed,
                "a request with a body needs a Content-Digest header (RFC 9530, sha-256 or sha-512)",
            )
        })?;
        httpsig::digest::verify_content_digest(value, request.body).map_err(|e| match e {
            httpsig::digest::DigestError::Mismatch => ExchangeError::new(
                ErrorKind::DigestMismatch,
                "Content-Digest does not match the body received",
            ),
            other => ExchangeError::new(
                ErrorKind::Malformed,
                format!("Content-Digest unusable: {other}"),
            ),
        })?;
    }
    Ok(VerifiedSignature {
        keyid: keyid.to_string(),
        created,
        nonce: params.nonce.clone(),
    })
}

fn invalid(detail: impl Into<String>) -> ExchangeError {
    ExchangeError::new(ErrorKind::SignatureInvalid, detail)
}
