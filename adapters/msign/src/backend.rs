//! The signature backend: the [`SignBackend`] trait, shaped after the real
//! MSign API (post a sign request for a hash or a document and get a request
//! id; ask for the result — Pending, Success, Failure or Expired — with the
//! signature and the signer's certificate; verify a signature), and
//! [`LocalBackend`], the reference implementation that signs with a key and
//! certificate of the development PKI.
//!
//! The reference signature is a *detached raw signature* in the standard
//! encoding of the key's algorithm, so any tool verifies it with the
//! certificate's public key (`openssl dgst -sha256 -verify`): RSASSA-PKCS#1
//! v1.5 with SHA-256 for an RSA key, ECDSA P-256/SHA-256 in DER
//! (`ECDSA-Sig-Value`) for an EC key, Ed25519 for an Ed25519 key. For a
//! document the signed message is the document; for a hash request it is the
//! 32 bytes of the hash (the document itself never reaches MSign). The real
//! MSign returns XAdES or a signed PDF instead; the trait carries the format
//! name so a deployment can say which it returns.
//!
//! The signer: a person with a signing certificate of their own in the
//! signers directory (`{dir}/{IDNP}.key.pem` and `.cert.pem`, see
//! [`LocalBackend::with_signers`]; the sandbox issues them for its people,
//! the IDNP in the subject's `serialNumber`) is signed for with that key and
//! certificate, as the real MSign signs with the person's qualified
//! certificate. Anyone else is signed for with MSign's own key and
//! certificate, which names no person: good for a demonstration, never
//! accepted where the signer must be the person (a connection application).
//!
//! Invariants:
//! - a request is signed at most once; its result never changes afterwards;
//! - a request not signed within its time to live is `Expired`, never signed
//!   later;
//! - requests live in memory: a restart forgets them (the caller asks again).

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use mconnect_sdk::adapter::now_rfc3339;
use mconnect_sdk::{
    Algorithm, SigningKey, VerifyingKey, certificate_fingerprint, ecdsa_p256_der_to_fixed,
    ecdsa_p256_fixed_to_der, parse_certs,
};
use serde::{Deserialize, Serialize};

/// What the caller asks to have signed.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignRequest {
    /// `hash` (a SHA-256 in hex) or `document` (base64).
    pub content_type: ContentType,
    /// Lowercase or uppercase hex SHA-256, for `hash`.
    #[serde(default)]
    pub hash: Option<String>,
    /// Base64 of the document, for `document`.
    #[serde(default)]
    pub document: Option<String>,
    /// What the signer is shown.
    pub description: String,
    /// IDNP of the person asked to sign.
    pub signer_idnp: String,
}

/// The kind of content signed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContentType {
    /// A SHA-256 hash computed by the caller.
    Hash,
    /// The document itself.
    Document,
}

/// The status of a sign request, as MSign names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SignStatus {
    /// Waiting for the signer.
    Pending,
    /// Signed.
    Success,
    /// The signer refused or signing failed.
    Failure,
    /// Not signed in time.
    Expired,
}

/// The result of a sign request.
#[derive(Clone, Debug, Serialize)]
pub struct SignResponse {
    /// The request id.
    pub request_id: String,
    /// Status.
    pub status: SignStatus,
    /// What was signed.
    pub content_type: ContentType,
    /// IDNP of the signer.
    pub signer_idnp: String,
    /// Base64 of the detached signature, on `Success`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
    /// The signature's format, on `Success`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signature_format: Option<String>,
    /// The signer certificate (PEM), on `Success`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate: Option<String>,
    /// When it was signed (RFC 3339), on `Success`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signed_at: Option<String>,
    /// Why it failed, on `Failure`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
}

/// A verification request.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyRequest {
    /// `hash` or `document`: what the signature covers.
    pub content_type: ContentType,
    /// Hex SHA-256, for `hash`.
    #[serde(default)]
    pub hash: Option<String>,
    /// Base64 document, for `document`.
    #[serde(default)]
    pub document: Option<String>,
    /// Base64 detached signature.
    pub signature: String,
    /// Signer certificate (PEM); MSign's own signing certificate when absent.
    #[serde(default)]
    pub certificate: Option<String>,
}

/// The verdict of a verification.
#[derive(Clone, Debug, Serialize)]
pub struct VerifyResult {
    /// Whether the signature verifies with the certificate's key.
    pub valid: bool,
    /// Whether the certificate is the MSign signing certificate.
    pub signer_known: bool,
    /// The signer certificate's SHA-256 fingerprint (hex).
    pub certificate_fingerprint: String,
    /// The format checked.
    pub signature_format: String,
    /// Why it does not verify, when it does not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Why a backend operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// The request breaks a rule.
    #[error("{0}")]
    Invalid(String),
    /// No such request id.
    #[error("no sign request has id {0}")]
    UnknownRequest(String),
    /// The backend or MSign is unreachable.
    #[error("signature service unavailable: {0}")]
    Unavailable(String),
}

/// The operations of the MSign integration guide. A deployment points an
/// implementation at the real service.
pub trait SignBackend: Send + Sync + 'static {
    /// Posts a sign request; returns its id.
    fn post_sign_request(
        &self,
        request: SignRequest,
    ) -> impl Future<Output = Result<String, SignError>> + Send;

    /// The status and, once signed, the result.
    fn get_sign_response(
        &self,
        request_id: &str,
    ) -> impl Future<Output = Result<SignResponse, SignError>> + Send;

    /// Verifies a detached signature.
    fn verify(
        &self,
        request: VerifyRequest,
    ) -> impl Future<Output = Result<VerifyResult, SignError>> + Send;
}

struct Entry {
    message: Vec<u8>,
    content_type: ContentType,
    signer_idnp: String,
    created: Instant,
    result: Option<SignResponse>,
}

/// The reference backend: the simulated signer signs once `sign_delay` has
/// passed since the request (the real user needs a moment too).
pub struct LocalBackend {
    key: Arc<SigningKey>,
    certificate_pem: String,
    fingerprint: String,
    sign_delay: Duration,
    ttl: Duration,
    requests: Mutex<HashMap<String, Entry>>,
    /// Where the people's own signing keys and certificates are.
    signers: Option<PathBuf>,
}

/// At most this many open requests are kept; the oldest go first, so memory
/// stays bounded whatever callers do.
const MAX_REQUESTS: usize = 10_000;

impl LocalBackend {
    /// A backend signing with `key`, whose certificate is `certificate_pem`.
    pub fn new(
        key: Arc<SigningKey>,
        certificate_pem: String,
        sign_delay: Duration,
        ttl: Duration,
    ) -> Result<LocalBackend, SignError> {
        let der = parse_certs(&certificate_pem)
            .map_err(|e| SignError::Unavailable(e.to_string()))?
            .into_iter()
            .next()
            .ok_or_else(|| SignError::Unavailable("no signing certificate".into()))?;
        Ok(LocalBackend {
            key,
            fingerprint: certificate_fingerprint(&der),
            certificate_pem,
            sign_delay,
            ttl,
            requests: Mutex::new(HashMap::new()),
            signers: None,
        })
    }

    /// Signs for a person with their own key and certificate when `dir`
    /// holds `{IDNP}.key.pem` and `{IDNP}.cert.pem`.
    pub fn with_signers(mut self, dir: PathBuf) -> LocalBackend {
        self.signers = Some(dir);
        self
    }

    /// The person's own key and certificate, if the signers directory has
    /// them; `Err` when they are there but unusable.
    fn personal(&self, idnp: &str) -> Result<Option<(SigningKey, String)>, String> {
        let Some(dir) = &self.signers else {
            return Ok(None);
        };
        let key_path = dir.join(format!("{idnp}.key.pem"));
        if !key_path.exists() {
            return Ok(None);
        }
        let read = |path: PathBuf| {
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))
        };
        let key = SigningKey::from_pem(&read(key_path)?).map_err(|e| e.to_string())?;
        let certificate = read(dir.join(format!("{idnp}.cert.pem")))?;
        Ok(Some((key, certificate)))
    }

    fn sign(&self, entry: &Entry, request_id: &str) -> SignResponse {
        let base = SignResponse {
            request_id: request_id.to_string(),
            status: SignStatus::Success,
            content_type: entry.content_type,
            signer_idnp: entry.signer_idnp.clone(),
            signature: None,
            signature_format: None,
            certificate: None,
            signed_at: None,
            failure_reason: None,
        };
        let personal = match self.personal(&entry.signer_idnp) {
            Ok(personal) => personal,
            Err(e) => {
                return SignResponse {
                    status: SignStatus::Failure,
                    failure_reason: Some(format!("the signer's certificate is unusable: {e}")),
                    ..base
                };
            }
        };
        let (key, certificate) = match &personal {
            Some((key, certificate)) => (key, certificate),
            None => (&*self.key, &self.certificate_pem),
        };
        match key.sign(&entry.message) {
            Ok(raw) => {
                let alg = key.algorithm();
                let encoded = match alg {
                    Algorithm::EcdsaP256Sha256 => ecdsa_p256_fixed_to_der(&raw),
                    _ => raw,
                };
                SignResponse {
                    signature: Some(B64.encode(encoded)),
                    signature_format: Some(format_name(alg).to_string()),
                    certificate: Some(certificate.clone()),
                    signed_at: Some(now_rfc3339()),
                    ..base
                }
            }
            Err(e) => SignResponse {
                status: SignStatus::Failure,
                failure_reason: Some(format!("signing failed: {e}")),
                ..base
            },
        }
    }
}

impl SignBackend for LocalBackend {
    async fn post_sign_request(&self, request: SignRequest) -> Result<String, SignError> {
        let message = content(
            request.content_type,
            request.hash.as_deref(),
            request.document.as_deref(),
        )?;
        if !is_idnp(&request.signer_idnp) {
            return Err(SignError::Invalid(
                "signer_idnp must be a 13-digit IDNP with a valid control digit".into(),
            ));
        }
        if request.description.trim().is_empty() || request.description.len() > 500 {
            return Err(SignError::Invalid(
                "description must be 1 to 500 characters: the signer is shown it".into(),
            ));
        }
        let id = uuid::Uuid::new_v4().to_string();
        let mut requests = self
            .requests
            .lock()
            .map_err(|_| SignError::Unavailable("state lock poisoned".into()))?;
        if requests.len() >= MAX_REQUESTS
            && let Some(oldest) = requests
                .iter()
                .min_by_key(|(_, e)| e.created)
                .map(|(k, _)| k.clone())
        {
            requests.remove(&oldest);
        }
        requests.insert(
            id.clone(),
            Entry {
                message,
                content_type: request.content_type,
                signer_idnp: request.signer_idnp,
                created: Instant::now(),
                result: None,
            },
        );
        Ok(id)
    }

    async fn get_sign_response(&self, request_id: &str) -> Result<SignResponse, SignError> {
        let mut requests = self
            .requests
            .lock()
            .map_err(|_| SignError::Unavailable("state lock poisoned".into()))?;
        let entry = requests
            .get_mut(request_id)
            .ok_or_else(|| SignError::UnknownRequest(request_id.to_string()))?;
        if let Some(done) = &entry.result {
            return Ok(done.clone());
        }
        let age = entry.created.elapsed();
        let pending = |status| SignResponse {
            request_id: request_id.to_string(),
            status,
            content_type: entry.content_type,
            signer_idnp: entry.signer_idnp.clone(),
            signature: None,
            signature_format: None,
            certificate: None,
            signed_at: None,
            failure_reason: None,
        };
        if age >= self.ttl {
            let expired = pending(SignStatus::Expired);
            entry.result = Some(expired.clone());
            return Ok(expired);
        }
        if age < self.sign_delay {
            return Ok(pending(SignStatus::Pending));
        }
        let signed = self.sign(entry, request_id);
        entry.result = Some(signed.clone());
        Ok(signed)
    }

    async fn verify(&self, request: VerifyRequest) -> Result<VerifyResult, SignError> {
        let message = content(
            request.content_type,
            request.hash.as_deref(),
            request.document.as_deref(),
        )?;
        let signature = B64
            .decode(request.signature.trim())
            .map_err(|_| SignError::Invalid("signature must be base64".into()))?;
        let pem = request
            .certificate
            .clone()
            .unwrap_or_else(|| self.certificate_pem.clone());
        let der = parse_certs(&pem)
            .map_err(|_| SignError::Invalid("certificate must be a PEM certificate".into()))?
            .into_iter()
            .next()
            .ok_or_else(|| SignError::Invalid("certificate must be a PEM certificate".into()))?;
        let fingerprint = certificate_fingerprint(&der);
        let key = VerifyingKey::from_certificate_der(&der)
            .map_err(|e| SignError::Invalid(format!("certificate key unusable: {e}")))?;
        let alg = key.default_algorithm();
        // RSA keys sign PKCS#1 v1.5 here (what openssl dgst makes by default).
        let alg = if alg == Algorithm::RsaPssSha512 {
            Algorithm::RsaV15Sha256
        } else {
            alg
        };
        let raw = match alg {
            Algorithm::EcdsaP256Sha256 => ecdsa_p256_der_to_fixed(&signature).unwrap_or_default(),
            _ => signature,
        };
        let outcome = key.verify(alg, &message, &raw);
        Ok(VerifyResult {
            valid: outcome.is_ok(),
            signer_known: fingerprint == self.fingerprint,
            certificate_fingerprint: fingerprint,
            signature_format: format_name(alg).to_string(),
            reason: outcome
                .err()
                .map(|_| "the signature does not match the content and certificate".into()),
        })
    }
}

/// The bytes a signature covers: the document, or the 32 bytes of the hash.
fn content(
    kind: ContentType,
    hash: Option<&str>,
    document: Option<&str>,
) -> Result<Vec<u8>, SignError> {
    match (kind, hash, document) {
        (ContentType::Hash, Some(h), None) => {
            let bytes =
                hex::decode(h.trim()).map_err(|_| SignError::Invalid("hash must be hex".into()))?;
            if bytes.len() != 32 {
                return Err(SignError::Invalid(
                    "hash must be a SHA-256 (64 hex digits)".into(),
                ));
            }
            Ok(bytes)
        }
        (ContentType::Document, None, Some(d)) => {
            let bytes = B64
                .decode(d.trim())
                .map_err(|_| SignError::Invalid("document must be base64".into()))?;
            if bytes.is_empty() {
                return Err(SignError::Invalid("document is empty".into()));
            }
            Ok(bytes)
        }
        (ContentType::Hash, _, _) => Err(SignError::Invalid(
            "content_type hash takes `hash` and no `document`".into(),
        )),
        (ContentType::Document, _, _) => Err(SignError::Invalid(
            "content_type document takes `document` and no `hash`".into(),
        )),
    }
}

/// The name of the detached signature format an algorithm produces here.
fn format_name(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::RsaV15Sha256 => "rsa-pkcs1v15-sha256",
        Algorithm::RsaPssSha512 => "rsa-pss-sha512",
        Algorithm::EcdsaP256Sha256 => "ecdsa-p256-sha256-der",
        Algorithm::Ed25519 => "ed25519",
    }
}

/// A 13-digit IDNP with the Moldovan control digit (the SDK's one check, as
/// the broker applies it).
pub use mconnect_sdk::ids::is_valid_idnp as is_idnp;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A P-256 key and a self-signed certificate made by openssl, so the
    /// ECDSA path (DER conversion both ways) is checked by an outside tool.
    fn ec_backend(delay: Duration, ttl: Duration) -> (LocalBackend, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let status = std::process::Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                "key.pem",
                "-out",
                "cert.pem",
                "-days",
                "1",
                "-subj",
                "/CN=msign-test",
            ])
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(status.status.success(), "{status:?}");
        let key =
            SigningKey::from_pem(&std::fs::read_to_string(dir.path().join("key.pem")).unwrap())
                .unwrap();
        let cert = std::fs::read_to_string(dir.path().join("cert.pem")).unwrap();
        (
            LocalBackend::new(Arc::new(key), cert, delay, ttl).unwrap(),
            dir,
        )
    }

    fn document_request() -> SignRequest {
        SignRequest {
            content_type: ContentType::Document,
            hash: None,
            document: Some(B64.encode(b"contract")),
            description: "test".into(),
            signer_idnp: "2000000000015".into(),
        }
    }

    #[tokio::test]
    async fn pending_then_success_verified_by_openssl_and_by_verify() {
        let (backend, dir) = ec_backend(Duration::from_millis(300), Duration::from_secs(60));
        let id = backend.post_sign_request(document_request()).await.unwrap();
        let first = backend.get_sign_response(&id).await.unwrap();
        assert_eq!(first.status, SignStatus::Pending);
        tokio::time::sleep(Duration::from_millis(350)).await;
        let done = backend.get_sign_response(&id).await.unwrap();
        assert_eq!(done.status, SignStatus::Success);
        assert_eq!(
            done.signature_format.as_deref(),
            Some("ecdsa-p256-sha256-der")
        );
        let signature = done.signature.clone().unwrap();
        // The result never changes once given.
        let again = backend.get_sign_response(&id).await.unwrap();
        assert_eq!(again.signature.as_deref(), Some(signature.as_str()));

        std::fs::write(dir.path().join("doc.bin"), b"contract").unwrap();
        std::fs::write(dir.path().join("doc.sig"), B64.decode(&signature).unwrap()).unwrap();
        let pubkey = std::process::Command::new("openssl")
            .args([
                "x509", "-in", "cert.pem", "-pubkey", "-noout", "-out", "pub.pem",
            ])
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(pubkey.status.success());
        let verified = std::process::Command::new("openssl")
            .args([
                "dgst",
                "-sha256",
                "-verify",
                "pub.pem",
                "-signature",
                "doc.sig",
                "doc.bin",
            ])
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(verified.status.success(), "{verified:?}");

        for (document, valid) in [(&b"contract"[..], true), (&b"contrakt"[..], false)] {
            let verdict = backend
                .verify(VerifyRequest {
                    content_type: ContentType::Document,
                    hash: None,
                    document: Some(B64.encode(document)),
                    signature: signature.clone(),
                    certificate: None,
                })
                .await
                .unwrap();
            assert_eq!(verdict.valid, valid);
            assert!(verdict.signer_known);
        }
    }

    #[tokio::test]
    async fn unsigned_requests_expire_and_unknown_ids_are_named() {
        let (backend, _dir) = ec_backend(Duration::from_secs(60), Duration::from_millis(50));
        let id = backend.post_sign_request(document_request()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(80)).await;
        let expired = backend.get_sign_response(&id).await.unwrap();
        assert_eq!(expired.status, SignStatus::Expired);
        assert!(expired.signature.is_none());
        assert!(matches!(
            backend.get_sign_response("nope").await,
            Err(SignError::UnknownRequest(_))
        ));
    }

    #[tokio::test]
    async fn a_person_with_a_certificate_of_their_own_is_signed_for_with_it() {
        let (msign, dir) = ec_backend(Duration::ZERO, Duration::from_secs(60));
        // The person's key and certificate: another openssl-made pair.
        let (person, person_dir) = ec_backend(Duration::ZERO, Duration::from_secs(60));
        drop(person);
        let signers = dir.path().join("signers");
        std::fs::create_dir_all(&signers).unwrap();
        for suffix in ["key.pem", "cert.pem"] {
            std::fs::copy(
                person_dir.path().join(suffix),
                signers.join(format!("2000000000015.{suffix}")),
            )
            .unwrap();
        }
        let backend = msign.with_signers(signers);
        let id = backend.post_sign_request(document_request()).await.unwrap();
        let done = backend.get_sign_response(&id).await.unwrap();
        assert_eq!(done.status, SignStatus::Success);
        let own = std::fs::read_to_string(person_dir.path().join("cert.pem")).unwrap();
        assert_eq!(done.certificate.as_deref(), Some(own.as_str()));
        let verdict = backend
            .verify(VerifyRequest {
                content_type: ContentType::Document,
                hash: None,
                document: Some(B64.encode(b"contract")),
                signature: done.signature.unwrap(),
                certificate: Some(own),
            })
            .await
            .unwrap();
        assert!(verdict.valid && !verdict.signer_known, "{verdict:?}");
        // Anyone else is signed for with MSign's own certificate.
        let mut other = document_request();
        other.signer_idnp = "2000000000026".into();
        let id = backend.post_sign_request(other).await.unwrap();
        let done = backend.get_sign_response(&id).await.unwrap();
        let msign_cert = std::fs::read_to_string(dir.path().join("cert.pem")).unwrap();
        assert_eq!(done.certificate.as_deref(), Some(msign_cert.as_str()));
    }

    #[test]
    fn content_rules() {
        let hash = "ab".repeat(32);
        assert_eq!(
            content(ContentType::Hash, Some(&hash), None).unwrap().len(),
            32
        );
        for (kind, h, d) in [
            (ContentType::Hash, Some("abcd"), None),
            (ContentType::Hash, None, Some("aGk=")),
            (ContentType::Document, None, Some("***")),
            (ContentType::Document, Some(hash.as_str()), Some("aGk=")),
            (ContentType::Document, None, Some("")),
        ] {
            assert!(content(kind, h, d).is_err(), "{kind:?} {h:?} {d:?}");
        }
    }
}
