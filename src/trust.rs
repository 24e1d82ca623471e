//! Certificate acceptance (PROTOCOL.md section 1): a participant certificate
//! is accepted only if it chains to the bus CA and is within its validity
//! dates, when it is registered and every time it is used.
//!
//! The chain is checked by rustls-webpki through the very verifier the TLS
//! listeners use (`tls::client_verifier`), never by hand, so a certificate is
//! registrable exactly when it could complete a handshake. Registration
//! checks chain and dates at the current time. The registry checks the chain
//! once per snapshot, at a moment inside the certificate's own validity (so
//! that "does not chain" and "out of date" stay distinct reasons), and keeps
//! `not_before`/`not_after` as integers that every use compares: a use costs
//! two integer comparisons, never a parse.
//!
//! Invariant: a certificate this module refuses never becomes a usable key.

use std::sync::Arc;
use std::time::Duration;

use rustls::server::danger::ClientCertVerifier;
use rustls::{CertificateError, Error as RustlsError};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, UnixTime};

use crate::tls::TlsError;

/// The bus CA(s) participant certificates must chain to.
#[derive(Clone)]
pub struct TrustAnchors {
    verifier: Arc<dyn ClientCertVerifier>,
    /// The latest `notAfter` among the anchors: no chain outlives it.
    anchors_not_after: i64,
}

impl std::fmt::Debug for TrustAnchors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrustAnchors").finish_non_exhaustive()
    }
}

/// Why a certificate is not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertificateRefusal {
    /// Not PEM, not X.509, or no usable key.
    Unreadable(String),
    /// Past its `notAfter` (unix seconds), or a certificate of its chain is.
    Expired {
        /// When it stopped being valid.
        not_after: i64,
    },
    /// Before its `notBefore` (unix seconds), or a certificate of its chain is.
    NotYetValid {
        /// When it starts being valid.
        not_before: i64,
    },
    /// It does not chain to the bus CA (self-signed, another CA, bad signature).
    Untrusted(String),
    /// It chains, but cannot serve here (wrong purpose, CA certificate as leaf).
    Unusable(String),
}

impl CertificateRefusal {
    /// The stable problem `code` of the refusal.
    pub fn code(&self) -> &'static str {
        match self {
            CertificateRefusal::Unreadable(_) | CertificateRefusal::Unusable(_) => {
                "certificate.invalid"
            }
            CertificateRefusal::Expired { .. } => "certificate.expired",
            CertificateRefusal::NotYetValid { .. } => "certificate.not_yet_valid",
            CertificateRefusal::Untrusted(_) => "certificate.untrusted",
        }
    }
}

impl std::fmt::Display for CertificateRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CertificateRefusal::Unreadable(reason) => write!(f, "certificate unreadable: {reason}"),
            CertificateRefusal::Expired { not_after } => write!(
                f,
                "certificate (or the chain it needs) expired at {}; have the bus CA issue a current one",
                rfc3339(*not_after)
            ),
            CertificateRefusal::NotYetValid { not_before } => write!(
                f,
                "certificate is not valid before {}; register it once it is",
                rfc3339(*not_before)
            ),
            CertificateRefusal::Untrusted(reason) => write!(
                f,
                "certificate does not chain to the bus CA ({reason}); have the bus CA issue it"
            ),
            CertificateRefusal::Unusable(reason) => {
                write!(f, "certificate unusable on this bus: {reason}")
            }
        }
    }
}

/// A certificate read from PEM: the leaf first, then any intermediates, and
/// the leaf's validity as unix seconds.
#[derive(Debug, Clone)]
pub struct ParsedCertificate {
    /// Leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// Start of validity (unix seconds).
    pub not_before: i64,
    /// End of validity, inclusive (unix seconds).
    pub not_after: i64,
}

impl ParsedCertificate {
    /// Reads PEM text: one or more CERTIFICATE blocks, leaf first.
    pub fn from_pem(pem: &str) -> Result<ParsedCertificate, CertificateRefusal> {
        let chain = CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| CertificateRefusal::Unreadable(format!("PEM: {e}")))?;
        let leaf = chain
            .first()
            .ok_or_else(|| CertificateRefusal::Unreadable("no CERTIFICATE block".into()))?;
        let (not_before, not_after) = crate::tls::validity(leaf)
            .ok_or_else(|| CertificateRefusal::Unreadable("not valid X.509".into()))?;
        if not_before > not_after {
            return Err(CertificateRefusal::Unreadable(
                "its validity ends before it begins".into(),
            ));
        }
        Ok(ParsedCertificate {
            chain,
            not_before,
            not_after,
        })
    }

    /// The leaf certificate's DER.
    pub fn leaf(&self) -> &[u8] {
        self.chain.first().map(|c| c.as_ref()).unwrap_or_default()
    }

    /// Whether the dates hold at `now`: the check of every use.
    pub fn dates_at(&self, now: i64) -> Result<(), CertificateRefusal> {
        check_dates(self.not_before, self.not_after, now)
    }
}

/// The date check of every use, on integers kept from the certificate.
pub fn check_dates(not_before: i64, not_after: i64, now: i64) -> Result<(), CertificateRefusal> {
    if now > not_after {
        Err(CertificateRefusal::Expired { not_after })
    } else if now < not_before {
        Err(CertificateRefusal::NotYetValid { not_before })
    } else {
        Ok(())
    }
}

impl TrustAnchors {
    /// Trusts the given CA certificates (the broker's `tls.ca`).
    pub fn new(cas: &[CertificateDer<'static>]) -> Result<TrustAnchors, TlsError> {
        let anchors_not_after = cas
            .iter()
            .filter_map(|ca| crate::tls::validity(ca).map(|(_, not_after)| not_after))
            .max()
            .unwrap_or(i64::MAX);
        Ok(TrustAnchors {
            verifier: crate::tls::client_verifier(cas)?,
            anchors_not_after,
        })
    }

    /// When a chain through `cert` stops being valid: its leaf's `notAfter`,
    /// or an intermediate's, or the bus CA's if earlier (exact with one bus
    /// CA; with several, the latest of them, so never stricter than the
    /// handshake). This is what each use compares, so a kept-alive
    /// connection or a key does not outlive the CA that vouched for it.
    pub fn chain_not_after(&self, cert: &ParsedCertificate) -> i64 {
        cert.chain
            .iter()
            .skip(1)
            .filter_map(|c| crate::tls::validity(c).map(|(_, not_after)| not_after))
            .fold(cert.not_after.min(self.anchors_not_after), i64::min)
    }

    /// Reads the CA certificates from PEM text.
    pub fn from_pem(pem: &str) -> Result<TrustAnchors, TlsError> {
        let cas = CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TlsError::Verifier(format!("CA PEM: {e}")))?;
        TrustAnchors::new(&cas)
    }

    /// Chain and dates at `now`: the check at registration.
    pub fn check(&self, cert: &ParsedCertificate, now: i64) -> Result<(), CertificateRefusal> {
        let (leaf, intermediates) = cert
            .chain
            .split_first()
            .ok_or_else(|| CertificateRefusal::Unreadable("no certificate".into()))?;
        let at = UnixTime::since_unix_epoch(Duration::from_secs(now.max(0).unsigned_abs()));
        self.verifier
            .verify_client_cert(leaf, intermediates, at)
            .map(|_| ())
            .map_err(|e| refusal(e, cert))
    }

    /// The chain alone, checked at a moment inside the leaf's validity; the
    /// dates are left to [`check_dates`] at each use.
    pub fn check_chain(
        &self,
        cert: &ParsedCertificate,
        now: i64,
    ) -> Result<(), CertificateRefusal> {
        // from_pem guarantees not_before <= not_after, so clamp cannot panic;
        // the max/min spelling keeps that true for hand-built values too.
        let at = now.min(cert.not_after).max(cert.not_before);
        self.check(cert, at)
    }
}

fn refusal(e: RustlsError, cert: &ParsedCertificate) -> CertificateRefusal {
    let secs = |t: UnixTime| i64::try_from(t.as_secs()).unwrap_or(i64::MAX);
    match e {
        RustlsError::InvalidCertificate(ce) => match ce {
            CertificateError::Expired => CertificateRefusal::Expired {
                not_after: cert.not_after,
            },
            CertificateError::ExpiredContext { not_after, .. } => CertificateRefusal::Expired {
                not_after: secs(not_after),
            },
            CertificateError::NotValidYet => CertificateRefusal::NotYetValid {
                not_before: cert.not_before,
            },
            CertificateError::NotValidYetContext { not_before, .. } => {
                CertificateRefusal::NotYetValid {
                    not_before: secs(not_before),
                }
            }
            CertificateError::UnknownIssuer => {
                CertificateRefusal::Untrusted("its issuer is not the bus CA".into())
            }
            CertificateError::BadSignature => CertificateRefusal::Untrusted(
                "its signature does not verify with its issuer's key".into(),
            ),
            CertificateError::BadEncoding => {
                CertificateRefusal::Unreadable("bad DER encoding".into())
            }
            CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
                CertificateRefusal::Unusable(
                    "it is not issued for TLS client authentication".into(),
                )
            }
            other => {
                CertificateRefusal::Unusable(RustlsError::InvalidCertificate(other).to_string())
            }
        },
        other => CertificateRefusal::Unusable(other.to_string()),
    }
}

fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("unix time {unix}"))
}
