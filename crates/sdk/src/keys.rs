//! A participant's credentials (its key, certificate and CA) and the keys it
//! trusts (the broker's), and the one error type of the SDK.
//!
//! Invariant: a [`Credentials`] holds a key that matches its certificate.

use std::sync::Arc;

use crate::crypto::{Algorithm, SigningKey, VerifyingKey, certificate_fingerprint};
use crate::tls::Identity;

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
    /// A participant program was started without what it needs.
    #[error("arguments: {0}")]
    Arguments(String),
    /// `sandbox.json` missing, unreadable or not naming what was asked for.
    #[error("sandbox manifest: {0}")]
    Manifest(String),
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

    pub(crate) fn get(&self, keyid: &str) -> Option<&VerifyingKey> {
        self.keys.iter().find(|(k, _)| k == keyid).map(|(_, v)| v)
    }
}

/// The algorithm a signature names, if the key can use it; else the key's own.
pub(crate) fn resolve_alg(name: Option<&str>, key: &VerifyingKey) -> Result<Algorithm, SdkError> {
    match name {
        Some(n) => Algorithm::from_name(n)
            .filter(|a| key.supports(*a))
            .ok_or_else(|| SdkError::Verification(format!("algorithm {n} unusable with the key"))),
        None => Ok(key.default_algorithm()),
    }
}
