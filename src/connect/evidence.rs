//! The signature on a submission, as evidence: checked on arrival with the
//! protocol's RFC 9421 machinery, then kept (exact body bytes, covered
//! header fields, `Signature-Input`, `Signature`, keyid and the signer's
//! certificate) so anyone can verify it again later, after key rotation too.
//!
//! A submission is signed like a data-plane call (label `mconnect`, the SDK's
//! [`mconnect_sdk::sign_request`]); here the signature must cover at least
//! `@method`, `@target-uri` and `content-digest`, carry `created` (within
//! [`MAX_SKEW_SECS`] of the broker's clock) and a `keyid` naming a
//! registered certificate.
//!
//! A second, optional piece is the official's own signature through MSign
//! ([`UserSignature`]): the detached signature over the SHA-256 of the exact
//! body, with the certificate that made it, sent in `MConnect-User-Signature`
//! and `MConnect-User-Certificate` (covered by the RFC 9421 signature). The
//! broker keeps it only if the certificate chains to the bus CA (which
//! stands in for the national PKI that issues people's signing
//! certificates), is in date, names the calling user's IDNP in its subject
//! (`serialNumber`, `PNOMD-{IDNP}` as ETSI EN 319 412-1 writes it, or the
//! bare IDNP) and the signature verifies over the digest; otherwise the
//! submission is refused ([`verify_user_signature`]).
//!
//! Invariants:
//! - nothing is kept unless the signature and the digest verified;
//! - [`Evidence::reverify`] needs only the evidence itself (the signer's
//!   certificate is inside), never the registry's current state; it checks
//!   the official's signature again too (signature, digest and subject; the
//!   chain was checked on arrival).

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use serde::{Deserialize, Serialize};

use crate::crypto::{Algorithm, VerifyingKey, certificate_fingerprint};
use crate::exchange::call::{headers as h, labels};
use crate::httpsig::{self, HttpSigError, MessageView, RequestView};
use crate::registry::RegistrySnapshot;
use crate::trust::{ParsedCertificate, TrustAnchors};

/// How far `created` may be from the broker's clock (PROTOCOL.md section 2).
pub const MAX_SKEW_SECS: i64 = 300;

/// Components every submission signature must cover.
pub const REQUIRED_COMPONENTS: &[&str] = &["@method", "@target-uri", "content-digest"];

/// A verified signature over one submitted version, kept with the request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Evidence {
    /// Which version of the application (1 for the submission, then one more
    /// per resubmission).
    pub version: u32,
    /// When the broker received it (Unix seconds).
    pub received_at: i64,
    /// The HTTP method signed.
    pub method: String,
    /// The target URI signed.
    pub target_uri: String,
    /// The exact body bytes, standard base64.
    pub body: String,
    /// SHA-256 of the body, lowercase hex.
    pub body_sha256: String,
    /// The covered header fields as received (lowercase name → value),
    /// `content-digest` among them.
    pub headers: BTreeMap<String, String>,
    /// The `Signature-Input` field as received.
    pub signature_input: String,
    /// The `Signature` field as received.
    pub signature: String,
    /// The signature's keyid: the SHA-256 fingerprint of the signer's certificate.
    pub keyid: String,
    /// The participant the certificate is registered to.
    pub signer: String,
    /// That participant's organisation IDNO.
    pub signer_idno: String,
    /// The signer's certificate (PEM), so the signature stays checkable
    /// after the certificate is rotated out.
    pub signer_certificate: String,
    /// The signature's `created` (Unix seconds).
    pub created: i64,
    /// `MConnect-Calling-User` when signed: the official who filed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calling_user: Option<String>,
    /// The calling user's own signature (MSign) over the body's SHA-256,
    /// when the submission carried one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_signature: Option<UserSignature>,
}

/// An official's own signature over a submitted version (through MSign),
/// verified on arrival: the second piece of evidence beside the submitting
/// system's RFC 9421 signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserSignature {
    /// The IDNP the certificate names: the calling user.
    pub idnp: String,
    /// SHA-256 of the exact body, lowercase hex: the 32 bytes signed.
    pub digest_sha256: String,
    /// The detached signature as MSign returned it, standard base64.
    pub signature: String,
    /// The algorithm it verified with (`rsa-v1_5-sha256`,
    /// `ecdsa-p256-sha256`, `ed25519`).
    pub algorithm: String,
    /// The signer's certificate (PEM).
    pub certificate: String,
    /// Its SHA-256 fingerprint, lowercase hex.
    pub certificate_fingerprint: String,
    /// Its subject, as text (RFC 4514).
    pub subject: String,
}

/// Why a submission's signature was refused (problem+json material).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{detail}")]
pub struct SignatureRefusal {
    /// HTTP status (401 or 400).
    pub status: StatusCode,
    /// Stable code: `signature.missing`, `signature.invalid`,
    /// `signature.expired`, `digest.mismatch`, `client.certificate_mismatch`
    /// or `request.malformed`.
    pub code: &'static str,
    /// What to fix.
    pub detail: String,
}

fn refusal(status: StatusCode, code: &'static str, detail: impl Into<String>) -> SignatureRefusal {
    SignatureRefusal {
        status,
        code,
        detail: detail.into(),
    }
}

fn invalid(detail: impl Into<String>) -> SignatureRefusal {
    refusal(StatusCode::UNAUTHORIZED, "signature.invalid", detail)
}

/// A signed submission as it arrived.
#[derive(Debug, Clone, Copy)]
pub struct Submission<'a> {
    /// HTTP method.
    pub method: &'a str,
    /// The absolute target URI (`https://{Host}{path}[?query]`).
    pub target_uri: &'a str,
    /// Request headers.
    pub headers: &'a HeaderMap,
    /// Exact body bytes.
    pub body: &'a [u8],
}

/// Verifies a submission's signature and digest against the registry and
/// returns the evidence to keep (`version` 0: the caller numbers it).
pub fn verify_submission(
    submission: &Submission<'_>,
    registry: &RegistrySnapshot,
    now: i64,
) -> Result<Evidence, SignatureRefusal> {
    let parsed = httpsig::parse_signature(submission.headers, labels::REQUEST).map_err(|e| {
        match e {
            HttpSigError::Missing => refusal(
                StatusCode::UNAUTHORIZED,
                "signature.missing",
                "sign the submission with your registered certificate: RFC 9421 label `mconnect` covering @method, @target-uri and content-digest, with created and keyid",
            ),
            other => invalid(format!("signature headers unreadable: {other}")),
        }
    })?;
    let params = &parsed.params;
    let keyid = params.keyid.clone().ok_or_else(|| {
        invalid("signature parameter `keyid` is required: the SHA-256 hex fingerprint of your registered certificate")
    })?;
    let entry = registry.by_fingerprint(&keyid).ok_or_else(|| {
        invalid(format!(
            "keyid {keyid} is not a registered certificate: sign with a certificate registered to the applicant"
        ))
    })?;
    let key = entry
        .key_at(&keyid, now)
        .map_err(|refusal| invalid(format!("keyid {keyid} signs nothing: {refusal}")))?;
    for name in REQUIRED_COMPONENTS {
        if !params.covers(name) {
            return Err(invalid(format!("the signature must cover `{name}`")));
        }
    }
    match params.check_time(now, MAX_SKEW_SECS) {
        Ok(()) => {}
        Err(HttpSigError::Expired(reason)) => {
            return Err(refusal(
                StatusCode::UNAUTHORIZED,
                "signature.expired",
                format!("{reason}; sign again"),
            ));
        }
        Err(other) => return Err(invalid(other.to_string())),
    }
    let created = params.created.unwrap_or(now);
    let alg = algorithm(params.alg.as_deref(), key)?;
    let view = MessageView::Request(RequestView {
        method: submission.method,
        target_uri: submission.target_uri,
        headers: submission.headers,
    });
    httpsig::verify(&view, &parsed, key, alg).map_err(|e| match e {
        HttpSigError::Invalid => invalid(format!(
            "signature does not verify with certificate {keyid} (registered to `{}`): the body, method, target URI {} or a signed header differs from what was signed, or another key signed it",
            entry.participant.id, submission.target_uri
        )),
        other => invalid(format!("signature cannot be checked: {other}")),
    })?;
    let digest = httpsig::digest::content_digest_field(submission.headers)
        .map_err(|e| refusal(StatusCode::BAD_REQUEST, "request.malformed", e.to_string()))?
        .ok_or_else(|| {
            refusal(
                StatusCode::BAD_REQUEST,
                "request.malformed",
                "a submission needs a Content-Digest header (RFC 9530, sha-256 or sha-512)",
            )
        })?;
    httpsig::digest::verify_content_digest(digest, submission.body).map_err(|e| match e {
        httpsig::digest::DigestError::Mismatch => refusal(
            StatusCode::UNAUTHORIZED,
            "digest.mismatch",
            "Content-Digest does not match the body received",
        ),
        other => refusal(
            StatusCode::BAD_REQUEST,
            "request.malformed",
            format!("Content-Digest unusable: {other}"),
        ),
    })?;
    let header_text = |name: &str| -> Option<String> {
        let values: Vec<&str> = submission
            .headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        (!values.is_empty()).then(|| values.join(", "))
    };
    if let Some(client) = header_text(h::CLIENT)
        && client != entry.participant.id
    {
        return Err(refusal(
            StatusCode::UNAUTHORIZED,
            "client.certificate_mismatch",
            format!(
                "MConnect-Client says `{client}` but certificate {keyid} is registered to `{}`",
                entry.participant.id
            ),
        ));
    }
    let mut covered = BTreeMap::new();
    for component in &params.components {
        let name = component.name();
        if name.starts_with('@') {
            continue;
        }
        if let Some(value) = header_text(name) {
            covered.insert(name.to_string(), value);
        }
    }
    let signer_certificate = entry
        .participant
        .certificates
        .iter()
        .find(|c| c.fingerprint == keyid)
        .map(|c| c.pem.clone())
        .unwrap_or_default();
    let calling_user = params
        .covers(h::CALLING_USER)
        .then(|| header_text(h::CALLING_USER))
        .flatten();
    Ok(Evidence {
        version: 0,
        received_at: now,
        method: submission.method.to_string(),
        target_uri: submission.target_uri.to_string(),
        body: STANDARD.encode(submission.body),
        body_sha256: hex::encode(crate::crypto::sha256(submission.body)),
        headers: covered,
        signature_input: header_text("signature-input").unwrap_or_default(),
        signature: header_text("signature").unwrap_or_default(),
        keyid,
        signer: entry.participant.id.clone(),
        signer_idno: entry.participant.organisation.idno.clone(),
        signer_certificate,
        created,
        calling_user,
        user_signature: None,
    })
}

/// Checks the official's own signature a submission carries, if any
/// (`MConnect-User-Signature` and `MConnect-User-Certificate`), against the
/// evidence of its RFC 9421 signature: both fields covered by that
/// signature, the certificate chained to `anchors` and in date at `now`,
/// its subject naming the calling user, and the signature verifying over
/// the SHA-256 of the body. `Ok(None)` when the submission carries none.
pub fn verify_user_signature(
    submission: &Submission<'_>,
    evidence: &Evidence,
    anchors: &TrustAnchors,
    now: i64,
) -> Result<Option<UserSignature>, SignatureRefusal> {
    let present = |name: &str| submission.headers.contains_key(name);
    match (present(h::USER_SIGNATURE), present(h::USER_CERTIFICATE)) {
        (false, false) => return Ok(None),
        (true, true) => {}
        _ => {
            return Err(refusal(
                StatusCode::BAD_REQUEST,
                "request.malformed",
                "MConnect-User-Signature and MConnect-User-Certificate go together: send both or neither",
            ));
        }
    }
    // The values kept are those the RFC 9421 signature covered.
    let (Some(signature), Some(certificate)) = (
        evidence.headers.get(h::USER_SIGNATURE),
        evidence.headers.get(h::USER_CERTIFICATE),
    ) else {
        return Err(invalid(
            "the submission's signature must cover mconnect-user-signature and mconnect-user-certificate",
        ));
    };
    let Some(idnp) = evidence.calling_user.as_deref() else {
        return Err(refusal(
            StatusCode::BAD_REQUEST,
            "request.malformed",
            "a user signature needs a signed MConnect-Calling-User: the official who signed",
        ));
    };
    let der = STANDARD.decode(certificate.trim()).map_err(|_| {
        user_invalid("MConnect-User-Certificate is not base64 of a DER certificate")
    })?;
    let pem = pem_of(&der);
    let parsed = ParsedCertificate::from_pem(&pem)
        .map_err(|e| user_invalid(format!("the signing certificate: {e}")))?;
    anchors.check(&parsed, now).map_err(|e| {
        user_invalid(format!(
            "the signing certificate is not accepted (it must be issued to the person by the national PKI, the bus CA here): {e}"
        ))
    })?;
    let user = UserSignature {
        idnp: idnp.to_string(),
        digest_sha256: hex::encode(crate::crypto::sha256(submission.body)),
        signature: signature.trim().to_string(),
        algorithm: String::new(),
        certificate: pem,
        certificate_fingerprint: certificate_fingerprint(&der),
        subject: String::new(),
    };
    let (algorithm, subject) = user.check().map_err(user_invalid)?;
    Ok(Some(UserSignature {
        algorithm,
        subject,
        ..user
    }))
}

fn user_invalid(detail: impl Into<String>) -> SignatureRefusal {
    refusal(
        StatusCode::UNAUTHORIZED,
        "connect.user_signature_invalid",
        detail,
    )
}

/// A DER certificate as PEM.
fn pem_of(der: &[u8]) -> String {
    let text = STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in text.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem
}

/// The IDNP a person's certificate names: its subject's `serialNumber`
/// (OID 2.5.4.5), `PNOMD-{IDNP}` or the bare IDNP.
fn subject_idnps(der: &[u8]) -> Result<(Vec<String>, String), String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| format!("the signing certificate is not X.509: {e}"))?;
    let subject = cert.subject();
    let serials = subject
        .iter_by_oid(&x509_parser::oid_registry::OID_X509_SERIALNUMBER)
        .filter_map(|a| a.as_str().ok())
        .map(|v| v.strip_prefix("PNOMD-").unwrap_or(v).to_string())
        .collect();
    Ok((serials, subject.to_string()))
}

impl UserSignature {
    /// Checks the signature from what it holds: the certificate names
    /// [`UserSignature::idnp`] and its key verifies the signature over the
    /// digest. Returns the algorithm and the subject.
    fn check(&self) -> Result<(String, String), String> {
        use rustls_pki_types::CertificateDer;
        use rustls_pki_types::pem::PemObject;
        let der = CertificateDer::from_pem_slice(self.certificate.as_bytes())
            .map_err(|e| format!("the signing certificate is unreadable: {e}"))?;
        if certificate_fingerprint(&der) != self.certificate_fingerprint {
            return Err("the kept signing certificate is not the one fingerprinted".into());
        }
        let (idnps, subject) = subject_idnps(&der)?;
        if !idnps.contains(&self.idnp) {
            return Err(format!(
                "the signing certificate ({subject}) does not name the calling user {}: the official who files must sign",
                self.idnp
            ));
        }
        let digest: [u8; 32] = hex::decode(&self.digest_sha256)
            .ok()
            .and_then(|d| d.try_into().ok())
            .ok_or("the signed digest is not a SHA-256 in hex")?;
        let raw = STANDARD
            .decode(&self.signature)
            .map_err(|_| "MConnect-User-Signature is not base64")?;
        let key = VerifyingKey::from_certificate_der(&der)
            .map_err(|e| format!("the signing certificate's key is unusable: {e}"))?;
        // MSign signs RSA keys with PKCS#1 v1.5 and writes ECDSA in DER.
        let (alg, raw) = match key.default_algorithm() {
            Algorithm::RsaPssSha512 | Algorithm::RsaV15Sha256 => (Algorithm::RsaV15Sha256, raw),
            Algorithm::EcdsaP256Sha256 => (
                Algorithm::EcdsaP256Sha256,
                crate::crypto::ecdsa_p256_der_to_fixed(&raw).unwrap_or(raw),
            ),
            Algorithm::Ed25519 => (Algorithm::Ed25519, raw),
        };
        key.verify(alg, &digest, &raw).map_err(|_| {
            "the user signature does not verify over the SHA-256 of the application with the signing certificate".to_string()
        })?;
        Ok((alg.as_str().to_string(), subject))
    }
}

fn algorithm(stated: Option<&str>, key: &VerifyingKey) -> Result<Algorithm, SignatureRefusal> {
    let alg = match stated {
        Some(name) => Algorithm::from_name(name).ok_or_else(|| {
            invalid(format!(
                "algorithm `{name}` is not supported; use ed25519, ecdsa-p256-sha256, rsa-pss-sha512 or rsa-v1_5-sha256"
            ))
        })?,
        None => key.default_algorithm(),
    };
    if !key.supports(alg) {
        return Err(invalid(format!(
            "algorithm `{}` does not fit the signer's key",
            alg.as_str()
        )));
    }
    Ok(alg)
}

impl Evidence {
    /// The exact body bytes.
    pub fn body_bytes(&self) -> Result<Vec<u8>, String> {
        STANDARD
            .decode(&self.body)
            .map_err(|e| format!("stored body is not base64: {e}"))
    }

    /// Verifies the kept signature again from the evidence alone: the
    /// certificate matches the keyid, the signature verifies over the kept
    /// method, target URI and header fields, and the digest matches the kept
    /// body. Time is not checked: `created` is history.
    pub fn reverify(&self) -> Result<(), String> {
        let body = self.body_bytes()?;
        if hex::encode(crate::crypto::sha256(&body)) != self.body_sha256 {
            return Err("the stored body does not match its SHA-256".into());
        }
        let der = {
            use rustls_pki_types::CertificateDer;
            use rustls_pki_types::pem::PemObject;
            CertificateDer::from_pem_slice(self.signer_certificate.as_bytes())
                .map_err(|e| format!("the signer's certificate is unreadable: {e}"))?
        };
        if certificate_fingerprint(&der) != self.keyid {
            return Err("the kept certificate is not the one the keyid names".into());
        }
        let key = VerifyingKey::from_certificate_der(&der)
            .map_err(|e| format!("the signer's certificate key is unusable: {e}"))?;
        let mut headers = HeaderMap::new();
        let fields = self
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .chain([
                ("signature-input", self.signature_input.as_str()),
                ("signature", self.signature.as_str()),
            ]);
        for (name, value) in fields {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("kept header name {name:?} is invalid"))?;
            let value = HeaderValue::from_str(value)
                .map_err(|_| format!("kept value of {name} is invalid"))?;
            headers.insert(name, value);
        }
        let parsed = httpsig::parse_signature(&headers, labels::REQUEST)
            .map_err(|e| format!("kept signature unreadable: {e}"))?;
        if parsed.params.keyid.as_deref() != Some(self.keyid.as_str()) {
            return Err("the kept signature names another keyid".into());
        }
        let alg = algorithm(parsed.params.alg.as_deref(), &key).map_err(|e| e.detail)?;
        httpsig::verify(
            &MessageView::Request(RequestView {
                method: &self.method,
                target_uri: &self.target_uri,
                headers: &headers,
            }),
            &parsed,
            &key,
            alg,
        )
        .map_err(|e| format!("signature does not verify: {e}"))?;
        let digest = httpsig::digest::content_digest_field(&headers)
            .map_err(|e| e.to_string())?
            .ok_or("no Content-Digest was kept")?;
        httpsig::digest::verify_content_digest(digest, &body)
            .map_err(|e| format!("digest: {e}"))?;
        if let Some(user) = &self.user_signature {
            if user.digest_sha256 != self.body_sha256 {
                return Err("the user signature is over another body".into());
            }
            if self.calling_user.as_deref() != Some(user.idnp.as_str()) {
                return Err("the user signature is not the calling user's".into());
            }
            user.check()?;
        }
        Ok(())
    }
}
