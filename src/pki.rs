//! Development PKI: a certificate authority and participant certificates
//! made with rcgen, written as PEM.
//!
//! For the sandbox and tests only; production participants bring
//! certificates from the national PKI. Every certificate carries the
//! participant id as its common name and as a DNS name, plus `localhost` and
//! the loopback addresses so the same certificate serves as a TLS server
//! certificate on this machine.
//!
//! Invariant: private keys are written with mode 0600 and never logged.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

use crate::crypto::certificate_fingerprint;

/// The key types the development PKI issues.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyType {
    /// Ed25519.
    Ed25519,
    /// ECDSA on P-256.
    EcdsaP256,
    /// RSA, 2048 bits.
    Rsa2048,
}

impl KeyType {
    /// Parses a key type or an RFC 9421 algorithm name that implies one.
    pub fn parse(name: &str) -> Option<KeyType> {
        match name {
            "ed25519" => Some(KeyType::Ed25519),
            "p256" | "ecdsa-p256" | "ecdsa-p256-sha256" => Some(KeyType::EcdsaP256),
            "rsa" | "rsa2048" | "rsa-pss-sha512" | "rsa-v1_5-sha256" => Some(KeyType::Rsa2048),
            _ => None,
        }
    }
}

/// Why the PKI could not make or read a certificate.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// rcgen refused the parameters or the key.
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    /// A file could not be read or written.
    #[error("cannot access {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// A certificate authority able to issue participant certificates.
pub struct DevCa {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
}

/// A freshly issued certificate with its private key.
#[derive(Clone)]
pub struct IssuedCertificate {
    /// The certificate as PEM.
    pub cert_pem: String,
    /// The PKCS#8 private key as PEM.
    pub key_pem: String,
    /// The certificate as DER.
    pub cert_der: Vec<u8>,
    /// The lowercase hex SHA-256 fingerprint of the DER (the protocol's keyid).
    pub fingerprint: String,
}

impl std::fmt::Debug for IssuedCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedCertificate")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

impl DevCa {
    /// Generates a new CA (ECDSA P-256, valid ten years).
    pub fn generate(common_name: &str) -> Result<DevCa, PkiError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        dn.push(DnType::OrganizationName, "MConnect development PKI");
        dn.push(DnType::CountryName, "MD");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + time::Duration::days(3650);
        let cert = params.self_signed(&key)?;
        Ok(DevCa {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// Loads a CA from its certificate and key PEM.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<DevCa, PkiError> {
        let key = KeyPair::from_pem(key_pem)?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key)?;
        Ok(DevCa {
            issuer,
            cert_pem: cert_pem.to_string(),
        })
    }

    /// Loads a CA written by [`DevCa::write`] from `{dir}/ca.cert.pem` and `{dir}/ca.key.pem`.
    pub fn load(dir: &Path) -> Result<DevCa, PkiError> {
        let cert = read(&dir.join("ca.cert.pem"))?;
        let key = read(&dir.join("ca.key.pem"))?;
        DevCa::from_pem(&cert, &key)
    }

    /// Writes `{dir}/ca.cert.pem` and `{dir}/ca.key.pem`.
    pub fn write(&self, dir: &Path) -> Result<(), PkiError> {
        write_public(&dir.join("ca.cert.pem"), &self.cert_pem)?;
        write_private(&dir.join("ca.key.pem"), &self.issuer.key().serialize_pem())
    }

    /// The CA certificate as PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Issues a certificate for `name` (a participant id or `broker`), usable
    /// for TLS client and server authentication and for message signatures.
    pub fn issue(
        &self,
        name: &str,
        organisation: &str,
        key_type: KeyType,
    ) -> Result<IssuedCertificate, PkiError> {
        self.issue_valid(name, organisation, key_type, -1, 730)
    }

    /// Like [`DevCa::issue`] with explicit validity, in days from now (negative for the past).
    pub fn issue_valid(
        &self,
        name: &str,
        organisation: &str,
        key_type: KeyType,
        from_days: i64,
        until_days: i64,
    ) -> Result<IssuedCertificate, PkiError> {
        let now = time::OffsetDateTime::now_utc();
        self.issue_between(
            name,
            organisation,
            key_type,
            now + time::Duration::days(from_days),
            now + time::Duration::days(until_days),
        )
    }

    /// Like [`DevCa::issue`] with exact validity bounds (tests use a
    /// certificate that expires seconds after it is registered).
    pub fn issue_between(
        &self,
        name: &str,
        organisation: &str,
        key_type: KeyType,
        not_before: time::OffsetDateTime,
        not_after: time::OffsetDateTime,
    ) -> Result<IssuedCertificate, PkiError> {
        let key = match key_type {
            // PKCS#8 v1 (RFC 5208): every tool reads it, while some (Python's
            // `cryptography`) refuse the v2 form aws-lc writes by default.
            KeyType::Ed25519 => {
                let rng = aws_lc_rs::rand::SystemRandom::new();
                let pkcs8 = aws_lc_rs::signature::Ed25519KeyPair::generate_pkcs8v1(&rng)
                    .map_err(|_| rcgen::Error::KeyGenerationUnavailable)?;
                let der = rustls_pki_types::PrivatePkcs8KeyDer::from(pkcs8.as_ref().to_vec());
                KeyPair::from_pkcs8_der_and_sign_algo(&der, &rcgen::PKCS_ED25519)?
            }
            KeyType::EcdsaP256 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?,
            KeyType::Rsa2048 => {
                KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)?
            }
        };
        let mut params = CertificateParams::new(vec![name.to_string(), "localhost".to_string()])?;
        params
            .subject_alt_names
            .push(SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()));
        params
            .subject_alt_names
            .push(SanType::IpAddress(std::net::Ipv6Addr::LOCALHOST.into()));
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        dn.push(DnType::OrganizationName, organisation);
        dn.push(DnType::CountryName, "MD");
        params.distinguished_name = dn;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        if key_type == KeyType::Rsa2048 {
            params.key_usages.push(KeyUsagePurpose::KeyEncipherment);
        }
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.not_before = not_before;
        params.not_after = not_after;
        let cert = params.signed_by(&key, &self.issuer)?;
        let cert_der = cert.der().to_vec();
        Ok(IssuedCertificate {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            fingerprint: certificate_fingerprint(&cert_der),
            cert_der,
        })
    }

    /// Issues a person's signing certificate, as the national PKI issues
    /// one for qualified signatures: the name as common name, the IDNP as
    /// the subject's `serialNumber` in the ETSI EN 319 412-1 form
    /// `PNOMD-{idnp}`, an ECDSA P-256 key for digital signatures and
    /// non-repudiation (and client authentication, as Moldovan eID
    /// certificates allow), valid two years. MSign's reference backend
    /// signs for the sandbox's people with these.
    pub fn issue_person(&self, idnp: &str, name: &str) -> Result<IssuedCertificate, PkiError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        dn.push(
            DnType::CustomDnType(vec![2, 5, 4, 5]),
            format!("PNOMD-{idnp}"),
        );
        dn.push(DnType::CountryName, "MD");
        params.distinguished_name = dn;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::ContentCommitment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + time::Duration::days(730);
        let cert = params.signed_by(&key, &self.issuer)?;
        let cert_der = cert.der().to_vec();
        Ok(IssuedCertificate {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            fingerprint: certificate_fingerprint(&cert_der),
            cert_der,
        })
    }
}

impl IssuedCertificate {
    /// Writes `{dir}/{name}.cert.pem` and `{dir}/{name}.key.pem`.
    pub fn write(&self, dir: &Path, name: &str) -> Result<(), PkiError> {
        write_public(&dir.join(format!("{name}.cert.pem")), &self.cert_pem)?;
        write_private(&dir.join(format!("{name}.key.pem")), &self.key_pem)
    }
}

fn read(path: &Path) -> Result<String, PkiError> {
    std::fs::read_to_string(path).map_err(|source| PkiError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn write_public(path: &Path, text: &str) -> Result<(), PkiError> {
    std::fs::write(path, text).map_err(|source| PkiError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn write_private(path: &Path, text: &str) -> Result<(), PkiError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| PkiError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    file.write_all(text.as_bytes()).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{SigningKey, VerifyingKey};

    #[test]
    fn issues_usable_certificates_for_every_key_type() {
        let ca = DevCa::generate("test ca").unwrap();
        for kt in [KeyType::Ed25519, KeyType::EcdsaP256, KeyType::Rsa2048] {
            let issued = ca.issue("apl-test", "Primăria Test", kt).unwrap();
            let signer = SigningKey::from_pem(&issued.key_pem).unwrap();
            let verifier = VerifyingKey::from_certificate_der(&issued.cert_der).unwrap();
            let sig = signer.sign(b"hello").unwrap();
            verifier
                .verify(signer.algorithm(), b"hello", &sig)
                .unwrap_or_else(|e| panic!("{kt:?}: {e}"));
            assert_eq!(issued.fingerprint.len(), 64);
        }
    }

    #[test]
    fn round_trips_through_files() {
        let dir = tempfile::tempdir().unwrap();
        let ca = DevCa::generate("test ca").unwrap();
        ca.write(dir.path()).unwrap();
        let again = DevCa::load(dir.path()).unwrap();
        let issued = again.issue("asp-rsp", "ASP", KeyType::Ed25519).unwrap();
        issued.write(dir.path(), "asp-rsp").unwrap();
        let mode = std::fs::metadata(dir.path().join("asp-rsp.key.pem"))
            .unwrap()
            .permissions();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(mode.mode() & 0o777, 0o600);
    }
}
