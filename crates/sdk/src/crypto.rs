//! Keys, signatures and hashes for MConnect, on the one crypto provider the
//! whole process uses: aws-lc-rs (the same one rustls runs on).
//!
//! Invariants:
//! - Only the four RFC 9421 asymmetric algorithms exist here (`ed25519`,
//!   `ecdsa-p256-sha256`, `rsa-pss-sha512`, `rsa-v1_5-sha256`); there is no
//!   HMAC and no "none". RSA keys are 2048 to 8192 bits.
//! - A [`VerifyingKey`] is parsed once (from SPKI or from a certificate) and
//!   holds aws-lc-rs parsed keys, so verifying on the hot path never re-parses
//!   DER. Cloning it is an `Arc` increment.
//! - ECDSA signatures are the fixed-width `r || s` form (64 bytes for P-256)
//!   that RFC 9421 section 3.3.4 requires, never ASN.1 DER.
//! - `Debug` of a [`SigningKey`] never shows key material.

use std::fmt;
use std::sync::Arc;

use aws_lc_rs::digest;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    self as sig, EcdsaKeyPair, Ed25519KeyPair, KeyPair, ParsedPublicKey, RsaKeyPair,
};
use x509_parser::oid_registry::{
    OID_KEY_TYPE_EC_PUBLIC_KEY, OID_PKCS1_RSAENCRYPTION, OID_PKCS1_RSASSAPSS, OID_SIG_ED25519,
};
use x509_parser::prelude::FromDer;
use x509_parser::x509::SubjectPublicKeyInfo;

/// An HTTP message signature algorithm from the RFC 9421 registry that
/// MConnect accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// `ed25519`: EdDSA over Curve25519 (RFC 9421 section 3.3.6).
    Ed25519,
    /// `ecdsa-p256-sha256`: ECDSA on P-256 with SHA-256, `r || s` encoding
    /// (RFC 9421 section 3.3.4).
    EcdsaP256Sha256,
    /// `rsa-pss-sha512`: RSASSA-PSS with SHA-512, MGF1-SHA-512 and a 64-byte
    /// salt (RFC 9421 section 3.3.1).
    RsaPssSha512,
    /// `rsa-v1_5-sha256`: RSASSA-PKCS1-v1_5 with SHA-256 (RFC 9421 section
    /// 3.3.2).
    RsaV15Sha256,
}

/// The type of an asymmetric key, independent of the algorithm it signs with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyKind {
    /// An Ed25519 key.
    Ed25519,
    /// An ECDSA key on the NIST P-256 curve.
    EcP256,
    /// An RSA key of 2048 to 8192 bits.
    Rsa,
}

/// A private key ready to sign with one fixed [`Algorithm`].
///
/// Built once at load time; `Send + Sync`, so one instance serves every
/// request.
pub struct SigningKey {
    inner: Signer,
    algorithm: Algorithm,
}

/// A public key ready to verify signatures, parsed once.
///
/// Cheap to clone (an `Arc` inside) and `Send + Sync`.
#[derive(Clone)]
pub struct VerifyingKey {
    inner: Arc<Verifier>,
}

/// Why a key or certificate could not be loaded, or a signature not made.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The text is not a PEM block.
    #[error("key file is not PEM: expected a `-----BEGIN PRIVATE KEY-----` block")]
    NotPem,
    /// A PEM block with a label this module does not read.
    #[error(
        "unsupported PEM block `{0}`: use `PRIVATE KEY` (PKCS#8), `EC PRIVATE KEY` or `RSA PRIVATE KEY`"
    )]
    UnsupportedPemLabel(String),
    /// The private key could not be parsed or is of an unsupported type.
    #[error(
        "private key rejected ({0}): it must be an unencrypted Ed25519, P-256 or RSA (2048-8192 bit, rsaEncryption) key"
    )]
    PrivateKeyRejected(String),
    /// The public key could not be parsed or is of an unsupported type.
    #[error(
        "public key rejected ({0}): it must be an Ed25519, P-256 or RSA (2048-8192 bit) SubjectPublicKeyInfo"
    )]
    PublicKeyRejected(String),
    /// The certificate is not a DER X.509 certificate.
    #[error("certificate is not valid DER X.509: {0}")]
    Certificate(String),
    /// The algorithm does not fit the key type.
    #[error("algorithm `{algorithm}` cannot be used with a {kind:?} key")]
    IncompatibleAlgorithm {
        /// The algorithm that was asked for.
        algorithm: Algorithm,
        /// The kind of the key.
        kind: KeyKind,
    },
    /// The provider failed to produce a signature.
    #[error("signing failed in the crypto provider")]
    SigningFailed,
}

/// Why a signature was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The algorithm does not fit the key type.
    #[error("algorithm `{algorithm}` cannot verify with a {kind:?} key")]
    IncompatibleAlgorithm {
        /// The algorithm that was asked for.
        algorithm: Algorithm,
        /// The kind of the key.
        kind: KeyKind,
    },
    /// The signature does not verify with this key over this message.
    #[error("signature does not verify with the signer's key")]
    Invalid,
}

// The signing half. Each variant keeps the aws-lc-rs key pair, which already
// holds the parsed private key.
enum Signer {
    Ed25519(Ed25519KeyPair),
    EcP256(EcdsaKeyPair),
    Rsa(RsaKeyPair),
}

// The verifying half. RSA keeps one parsed key per padding scheme because an
// aws-lc-rs `ParsedPublicKey` is bound to one algorithm; both are parsed at
// load so neither is parsed per request.
enum Verifier {
    Ed25519(ParsedPublicKey),
    EcP256(ParsedPublicKey),
    Rsa {
        pss_sha512: ParsedPublicKey,
        v15_sha256: ParsedPublicKey,
    },
}

impl Algorithm {
    /// Every algorithm, in registry order.
    pub const ALL: [Algorithm; 4] = [
        Algorithm::RsaPssSha512,
        Algorithm::RsaV15Sha256,
        Algorithm::EcdsaP256Sha256,
        Algorithm::Ed25519,
    ];

    /// The RFC 9421 registry name, as used in the `alg` parameter.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Ed25519 => "ed25519",
            Algorithm::EcdsaP256Sha256 => "ecdsa-p256-sha256",
            Algorithm::RsaPssSha512 => "rsa-pss-sha512",
            Algorithm::RsaV15Sha256 => "rsa-v1_5-sha256",
        }
    }

    /// The algorithm with this registry name (exact, case-sensitive match), if
    /// MConnect supports it.
    pub fn from_name(name: &str) -> Option<Algorithm> {
        Algorithm::ALL.into_iter().find(|alg| alg.as_str() == name)
    }

    /// The kind of key this algorithm signs with.
    pub fn key_kind(self) -> KeyKind {
        match self {
            Algorithm::Ed25519 => KeyKind::Ed25519,
            Algorithm::EcdsaP256Sha256 => KeyKind::EcP256,
            Algorithm::RsaPssSha512 | Algorithm::RsaV15Sha256 => KeyKind::Rsa,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl KeyKind {
    /// The algorithm a key of this kind signs with unless told otherwise.
    pub fn default_algorithm(self) -> Algorithm {
        match self {
            KeyKind::Ed25519 => Algorithm::Ed25519,
            KeyKind::EcP256 => Algorithm::EcdsaP256Sha256,
            KeyKind::Rsa => Algorithm::RsaPssSha512,
        }
    }
}

impl SigningKey {
    /// Reads a private key from PEM: PKCS#8 (`PRIVATE KEY`), SEC1
    /// (`EC PRIVATE KEY`, P-256 only) or PKCS#1 (`RSA PRIVATE KEY`).
    ///
    /// The first private-key block is used; other blocks (for example the
    /// `EC PARAMETERS` that `openssl ecparam -genkey` writes first, or a
    /// certificate) are skipped. The algorithm is the key kind's default (RSA
    /// signs `rsa-pss-sha512`; see [`SigningKey::with_algorithm`]).
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        let mut skipped = None;
        for block in x509_parser::pem::Pem::iter_from_buffer(pem.as_bytes()) {
            // Text after the last block ends the search; what was found so
            // far decides the error.
            let Ok(block) = block else { break };
            match block.label.as_str() {
                "PRIVATE KEY" => return Self::from_pkcs8_der(&block.contents),
                "EC PRIVATE KEY" => {
                    // `from_private_key_der` reads SEC1 (RFC 5915) and checks
                    // the curve is P-256.
                    let pair = EcdsaKeyPair::from_private_key_der(
                        &sig::ECDSA_P256_SHA256_FIXED_SIGNING,
                        &block.contents,
                    )
                    .map_err(|e| KeyError::PrivateKeyRejected(e.to_string()))?;
                    return Ok(Self::new(Signer::EcP256(pair)));
                }
                "RSA PRIVATE KEY" => {
                    let pair = RsaKeyPair::from_der(&block.contents)
                        .map_err(|e| KeyError::PrivateKeyRejected(e.to_string()))?;
                    return Ok(Self::new(Signer::Rsa(pair)));
                }
                other => skipped = skipped.or_else(|| Some(other.to_owned())),
            }
        }
        Err(skipped.map_or(KeyError::NotPem, KeyError::UnsupportedPemLabel))
    }

    /// Reads an unencrypted PKCS#8 (v1 or v2) private key in DER.
    ///
    /// RSA keys must use the `rsaEncryption` OID; keys tagged `id-RSASSA-PSS`
    /// are refused by aws-lc-rs and have to be re-wrapped (see
    /// `crates/sdk/tests/data/rfc9421/README.md`).
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, KeyError> {
        // Each parser checks the algorithm OID inside the document, so at most
        // one of them accepts a given key; the order only decides which
        // rejection reason is reported.
        if let Ok(pair) = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der) {
            return Ok(Self::new(Signer::Ed25519(pair)));
        }
        if let Ok(pair) = EcdsaKeyPair::from_pkcs8(&sig::ECDSA_P256_SHA256_FIXED_SIGNING, der) {
            return Ok(Self::new(Signer::EcP256(pair)));
        }
        RsaKeyPair::from_pkcs8(der)
            .map(|pair| Self::new(Signer::Rsa(pair)))
            .map_err(|e| KeyError::PrivateKeyRejected(e.to_string()))
    }

    fn new(inner: Signer) -> Self {
        let algorithm = inner.kind().default_algorithm();
        SigningKey { inner, algorithm }
    }

    /// The same key, signing with `alg` instead (for example an RSA key
    /// signing `rsa-v1_5-sha256`). Fails when `alg` needs another key type.
    pub fn with_algorithm(mut self, alg: Algorithm) -> Result<Self, KeyError> {
        let kind = self.kind();
        if alg.key_kind() != kind {
            return Err(KeyError::IncompatibleAlgorithm {
                algorithm: alg,
                kind,
            });
        }
        self.algorithm = alg;
        Ok(self)
    }

    /// The algorithm [`SigningKey::sign`] uses.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The kind of this key.
    pub fn kind(&self) -> KeyKind {
        self.inner.kind()
    }

    /// Signs `message` with [`SigningKey::algorithm`].
    ///
    /// Ed25519 and RSA-PKCS#1 v1.5 are deterministic; ECDSA and RSA-PSS are
    /// randomised. ECDSA output is the 64-byte `r || s` form.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        match &self.inner {
            Signer::Ed25519(pair) => Ok(pair.sign(message).as_ref().to_vec()),
            Signer::EcP256(pair) => pair
                .sign(&SystemRandom::new(), message)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| KeyError::SigningFailed),
            Signer::Rsa(pair) => {
                let padding: &'static dyn sig::RsaEncoding = match self.algorithm {
                    Algorithm::RsaV15Sha256 => &sig::RSA_PKCS1_SHA256,
                    _ => &sig::RSA_PSS_SHA512,
                };
                let mut out = vec![0u8; pair.public_modulus_len()];
                pair.sign(padding, &SystemRandom::new(), message, &mut out)
                    .map_err(|_| KeyError::SigningFailed)?;
                Ok(out)
            }
        }
    }

    /// The public half of this key, for checking that a key matches a
    /// certificate or for tests.
    pub fn verifying_key(&self) -> Result<VerifyingKey, KeyError> {
        use aws_lc_rs::encoding::{AsDer, PublicKeyX509Der};
        let spki: Result<PublicKeyX509Der<'static>, _> = match &self.inner {
            Signer::Ed25519(pair) => pair.public_key().as_der(),
            Signer::EcP256(pair) => pair.public_key().as_der(),
            Signer::Rsa(pair) => pair.public_key().as_der(),
        };
        let spki = spki.map_err(|_| KeyError::PublicKeyRejected("cannot encode".into()))?;
        VerifyingKey::from_spki_der(spki.as_ref())
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Deliberately only the type and algorithm: key material must not end
        // up in logs.
        f.debug_struct("SigningKey")
            .field("kind", &self.kind())
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

impl Signer {
    fn kind(&self) -> KeyKind {
        match self {
            Signer::Ed25519(_) => KeyKind::Ed25519,
            Signer::EcP256(_) => KeyKind::EcP256,
            Signer::Rsa(_) => KeyKind::Rsa,
        }
    }
}

impl VerifyingKey {
    /// Parses a DER SubjectPublicKeyInfo holding an Ed25519, P-256 or RSA
    /// (`rsaEncryption`, 2048-8192 bit) key.
    pub fn from_spki_der(spki: &[u8]) -> Result<Self, KeyError> {
        let (rest, info) = SubjectPublicKeyInfo::from_der(spki)
            .map_err(|e| KeyError::PublicKeyRejected(e.to_string()))?;
        if !rest.is_empty() {
            return Err(KeyError::PublicKeyRejected(
                "trailing bytes after SubjectPublicKeyInfo".into(),
            ));
        }
        let oid = &info.algorithm.algorithm;
        let rejected =
            |e: aws_lc_rs::error::KeyRejected| KeyError::PublicKeyRejected(e.to_string());
        let inner = if *oid == OID_SIG_ED25519 {
            Verifier::Ed25519(ParsedPublicKey::new(&sig::ED25519, spki).map_err(rejected)?)
        } else if *oid == OID_KEY_TYPE_EC_PUBLIC_KEY {
            // aws-lc-rs checks the named curve is P-256.
            Verifier::EcP256(
                ParsedPublicKey::new(&sig::ECDSA_P256_SHA256_FIXED, spki).map_err(rejected)?,
            )
        } else if *oid == OID_PKCS1_RSAENCRYPTION {
            Verifier::Rsa {
                pss_sha512: ParsedPublicKey::new(&sig::RSA_PSS_2048_8192_SHA512, spki)
                    .map_err(rejected)?,
                v15_sha256: ParsedPublicKey::new(&sig::RSA_PKCS1_2048_8192_SHA256, spki)
                    .map_err(rejected)?,
            }
        } else if *oid == OID_PKCS1_RSASSAPSS {
            // PSS-restricted keys carry hash and salt constraints we would have
            // to enforce; refusing them is simpler and fails closed.
            return Err(KeyError::PublicKeyRejected(
                "id-RSASSA-PSS keys are not supported, issue the key as rsaEncryption".into(),
            ));
        } else {
            return Err(KeyError::PublicKeyRejected(format!(
                "unsupported key algorithm {oid}"
            )));
        };
        Ok(VerifyingKey {
            inner: Arc::new(inner),
        })
    }

    /// Takes the public key out of a DER X.509 certificate. The certificate
    /// itself (validity, chain) is not checked here.
    pub fn from_certificate_der(cert: &[u8]) -> Result<Self, KeyError> {
        let (rest, cert) = x509_parser::parse_x509_certificate(cert)
            .map_err(|e| KeyError::Certificate(e.to_string()))?;
        if !rest.is_empty() {
            return Err(KeyError::Certificate(
                "trailing bytes after the certificate".into(),
            ));
        }
        Self::from_spki_der(cert.tbs_certificate.subject_pki.raw)
    }

    /// The kind of this key.
    pub fn kind(&self) -> KeyKind {
        match &*self.inner {
            Verifier::Ed25519(_) => KeyKind::Ed25519,
            Verifier::EcP256(_) => KeyKind::EcP256,
            Verifier::Rsa { .. } => KeyKind::Rsa,
        }
    }

    /// The algorithm to assume when a signature does not name one.
    pub fn default_algorithm(&self) -> Algorithm {
        self.kind().default_algorithm()
    }

    /// Whether this key can verify signatures made with `alg`.
    pub fn supports(&self, alg: Algorithm) -> bool {
        alg.key_kind() == self.kind()
    }

    /// Verifies `signature` over `message` with algorithm `alg`.
    pub fn verify(
        &self,
        alg: Algorithm,
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), SignatureError> {
        let parsed = match (&*self.inner, alg) {
            (Verifier::Ed25519(key), Algorithm::Ed25519) => key,
            (Verifier::EcP256(key), Algorithm::EcdsaP256Sha256) => key,
            (Verifier::Rsa { pss_sha512, .. }, Algorithm::RsaPssSha512) => pss_sha512,
            (Verifier::Rsa { v15_sha256, .. }, Algorithm::RsaV15Sha256) => v15_sha256,
            _ => {
                return Err(SignatureError::IncompatibleAlgorithm {
                    algorithm: alg,
                    kind: self.kind(),
                });
            }
        };
        parsed
            .verify_sig(message, signature)
            .map_err(|_| SignatureError::Invalid)
    }
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("kind", &self.kind())
            .finish_non_exhaustive()
    }
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest::digest(&digest::SHA256, data).as_ref());
    out
}

/// SHA-512 of `data`.
pub fn sha512(data: &[u8]) -> [u8; 64] {
    let mut out = [0u8; 64];
    out.copy_from_slice(digest::digest(&digest::SHA512, data).as_ref());
    out
}

/// The protocol's `keyid` for a certificate: lowercase hex SHA-256 of its DER.
pub fn certificate_fingerprint(cert_der: &[u8]) -> String {
    hex::encode(sha256(cert_der))
}

/// `r || s` (32 + 32 bytes) to DER `ECDSA-Sig-Value`, the form openssl reads.
pub fn ecdsa_p256_fixed_to_der(raw: &[u8]) -> Vec<u8> {
    fn integer(bytes: &[u8]) -> Vec<u8> {
        let start = bytes
            .iter()
            .position(|&b| b != 0)
            .unwrap_or(bytes.len() - 1);
        let mut v = bytes[start..].to_vec();
        if v.first().is_some_and(|b| b & 0x80 != 0) {
            v.insert(0, 0);
        }
        let mut out = vec![0x02, v.len() as u8];
        out.extend(v);
        out
    }
    if raw.len() != 64 {
        return raw.to_vec();
    }
    let mut body = integer(&raw[..32]);
    body.extend(integer(&raw[32..]));
    let mut out = vec![0x30, body.len() as u8];
    out.extend(body);
    out
}

/// DER `ECDSA-Sig-Value` back to `r || s` (what [`VerifyingKey::verify`]
/// takes for P-256); `None` when it is not one.
pub fn ecdsa_p256_der_to_fixed(der: &[u8]) -> Option<Vec<u8>> {
    fn integer(input: &[u8]) -> Option<(&[u8], &[u8])> {
        let (&tag, rest) = input.split_first()?;
        let (&len, rest) = rest.split_first()?;
        let len = usize::from(len);
        if tag != 0x02 || len > 33 || rest.len() < len {
            return None;
        }
        Some((&rest[..len], &rest[len..]))
    }
    fn fixed(v: &[u8]) -> Option<[u8; 32]> {
        let v = if v.len() == 33 && v[0] == 0 {
            &v[1..]
        } else {
            v
        };
        if v.len() > 32 {
            return None;
        }
        let mut out = [0u8; 32];
        out[32 - v.len()..].copy_from_slice(v);
        Some(out)
    }
    let (&tag, rest) = der.split_first()?;
    let (&len, rest) = rest.split_first()?;
    if tag != 0x30 || usize::from(len) != rest.len() {
        return None;
    }
    let (r, rest) = integer(rest)?;
    let (s, rest) = integer(rest)?;
    if !rest.is_empty() {
        return None;
    }
    let mut out = fixed(r)?.to_vec();
    out.extend(fixed(s)?);
    Some(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // A failed unwrap is how a test reports failure.
mod tests {
    use super::*;
    use aws_lc_rs::signature::{EcdsaKeyPair, Ed25519KeyPair, RsaKeyPair};

    fn generated(kind: KeyKind) -> SigningKey {
        let rng = SystemRandom::new();
        let der: Vec<u8> = match kind {
            KeyKind::Ed25519 => Ed25519KeyPair::generate_pkcs8(&rng)
                .unwrap()
                .as_ref()
                .to_vec(),
            KeyKind::EcP256 => {
                EcdsaKeyPair::generate_pkcs8(&sig::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                    .unwrap()
                    .as_ref()
                    .to_vec()
            }
            KeyKind::Rsa => {
                use aws_lc_rs::encoding::AsDer;
                let pair = RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
                let doc: aws_lc_rs::encoding::Pkcs8V1Der<'static> = pair.as_der().unwrap();
                doc.as_ref().to_vec()
            }
        };
        SigningKey::from_pkcs8_der(&der).unwrap()
    }

    #[test]
    fn algorithm_names_round_trip() {
        for alg in Algorithm::ALL {
            assert_eq!(Algorithm::from_name(alg.as_str()), Some(alg));
            assert_eq!(alg.to_string(), alg.as_str());
        }
        for bad in ["", "ED25519", "hmac-sha256", "rsa-pss-sha256", "none"] {
            assert_eq!(Algorithm::from_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn every_algorithm_round_trips_and_rejects_tampering() {
        let cases = [
            (KeyKind::Ed25519, Algorithm::Ed25519, Some(64)),
            (KeyKind::EcP256, Algorithm::EcdsaP256Sha256, Some(64)),
            (KeyKind::Rsa, Algorithm::RsaPssSha512, Some(256)),
            (KeyKind::Rsa, Algorithm::RsaV15Sha256, Some(256)),
        ];
        for (kind, alg, len) in cases {
            let key = generated(kind).with_algorithm(alg).unwrap();
            assert_eq!(key.kind(), kind);
            assert_eq!(key.algorithm(), alg);
            let public = key.verifying_key().unwrap();
            assert_eq!(public.kind(), kind);
            assert!(public.supports(alg));
            let signature = key.sign(b"message").unwrap();
            if let Some(len) = len {
                assert_eq!(signature.len(), len, "{alg}");
            }
            public.verify(alg, b"message", &signature).unwrap();
            assert_eq!(
                public.verify(alg, b"messagE", &signature),
                Err(SignatureError::Invalid)
            );
            let mut flipped = signature.clone();
            flipped[10] ^= 1;
            assert_eq!(
                public.verify(alg, b"message", &flipped),
                Err(SignatureError::Invalid)
            );
            assert_eq!(
                public.verify(alg, b"message", &[]),
                Err(SignatureError::Invalid)
            );
            // Another key of the same kind does not verify it.
            let other = generated(kind).verifying_key().unwrap();
            assert_eq!(
                other.verify(alg, b"message", &signature),
                Err(SignatureError::Invalid)
            );
        }
    }

    #[test]
    fn rsa_padding_schemes_do_not_cross_verify() {
        let pss = generated(KeyKind::Rsa);
        assert_eq!(pss.algorithm(), Algorithm::RsaPssSha512);
        let public = pss.verifying_key().unwrap();
        let signature = pss.sign(b"m").unwrap();
        assert_eq!(
            public.verify(Algorithm::RsaV15Sha256, b"m", &signature),
            Err(SignatureError::Invalid)
        );
    }

    #[test]
    fn incompatible_algorithms_are_refused() {
        let ed = generated(KeyKind::Ed25519);
        let public = ed.verifying_key().unwrap();
        assert!(!public.supports(Algorithm::EcdsaP256Sha256));
        assert!(matches!(
            public.verify(Algorithm::RsaPssSha512, b"m", &[0; 64]),
            Err(SignatureError::IncompatibleAlgorithm { .. })
        ));
        let err = ed.with_algorithm(Algorithm::RsaV15Sha256).unwrap_err();
        assert!(matches!(err, KeyError::IncompatibleAlgorithm { .. }));
        assert_eq!(
            err.to_string(),
            "algorithm `rsa-v1_5-sha256` cannot be used with a Ed25519 key"
        );
    }

    #[test]
    fn malformed_keys_are_errors_not_panics() {
        assert!(matches!(SigningKey::from_pem(""), Err(KeyError::NotPem)));
        assert!(matches!(
            SigningKey::from_pem("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"),
            Err(KeyError::UnsupportedPemLabel(_))
        ));
        assert!(matches!(
            SigningKey::from_pem("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"),
            Err(KeyError::PrivateKeyRejected(_))
        ));
        // Blocks before the key are skipped.
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let with_params = format!(
            "-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n{}",
            pair.serialize_pem()
        );
        assert_eq!(
            SigningKey::from_pem(&with_params).unwrap().kind(),
            KeyKind::EcP256
        );
        for junk in [&b""[..], b"\x30", b"\x30\x03\x02\x01\x00", &[0xff; 300]] {
            assert!(SigningKey::from_pkcs8_der(junk).is_err());
            assert!(VerifyingKey::from_spki_der(junk).is_err());
            assert!(VerifyingKey::from_certificate_der(junk).is_err());
        }
        // A valid SPKI followed by garbage.
        let key = generated(KeyKind::EcP256);
        use aws_lc_rs::encoding::AsDer;
        let Signer::EcP256(pair) = &key.inner else {
            unreachable!()
        };
        let mut spki = pair.public_key().as_der().unwrap().as_ref().to_vec();
        assert!(VerifyingKey::from_spki_der(&spki).is_ok());
        spki.push(0);
        assert!(VerifyingKey::from_spki_der(&spki).is_err());
    }

    #[test]
    fn keys_load_from_certificates_for_every_kind() {
        for (alg, kind) in [
            (&rcgen::PKCS_ED25519, KeyKind::Ed25519),
            (&rcgen::PKCS_ECDSA_P256_SHA256, KeyKind::EcP256),
        ] {
            let pair = rcgen::KeyPair::generate_for(alg).unwrap();
            let cert = rcgen::CertificateParams::new(vec!["apl-cahul".to_owned()])
                .unwrap()
                .self_signed(&pair)
                .unwrap();
            let der = cert.der().as_ref();
            let public = VerifyingKey::from_certificate_der(der).unwrap();
            assert_eq!(public.kind(), kind);
            let signing = SigningKey::from_pem(&pair.serialize_pem()).unwrap();
            let signature = signing.sign(b"hello").unwrap();
            public
                .verify(public.default_algorithm(), b"hello", &signature)
                .unwrap();
            let fingerprint = certificate_fingerprint(der);
            assert_eq!(fingerprint.len(), 64);
            assert_eq!(fingerprint, hex::encode(sha256(der)));
            assert!(
                fingerprint
                    .bytes()
                    .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
            );
        }
    }

    #[test]
    fn hashes_match_known_answers() {
        // FIPS 180-2 "abc" vectors.
        assert_eq!(
            hex::encode(sha256(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            hex::encode(sha512(b"abc")),
            "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a\
             2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f"
        );
    }

    #[test]
    fn debug_never_prints_key_material() {
        let key = generated(KeyKind::Ed25519);
        let shown = format!("{key:?}");
        assert_eq!(
            shown,
            "SigningKey { kind: Ed25519, algorithm: Ed25519, .. }"
        );
        let public = format!("{:?}", key.verifying_key().unwrap());
        assert_eq!(public, "VerifyingKey { kind: Ed25519, .. }");
    }

    #[test]
    fn keys_are_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<SigningKey>();
        check::<VerifyingKey>();
    }

    #[test]
    fn ecdsa_encodings_round_trip() {
        for raw in [[0x80u8; 64], [0x01u8; 64], {
            let mut r = [0u8; 64];
            r[5] = 7;
            r[40] = 0xff;
            r
        }] {
            let der = ecdsa_p256_fixed_to_der(&raw);
            assert_eq!(ecdsa_p256_der_to_fixed(&der).unwrap(), raw.to_vec());
        }
        assert!(ecdsa_p256_der_to_fixed(b"\x30\x00junk").is_none());
    }
}
