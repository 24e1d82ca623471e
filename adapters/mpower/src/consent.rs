//! How MPower knows that the grantor consents: `MConnect-Calling-User` alone
//! is only the consumer's claim, so it counts in exactly two cases.
//!
//! - **Through the citizen portal**: the request comes from the portal
//!   participant (`mcabinet`, the `MConnect-Client` the broker authenticated
//!   by certificate and signature), whose signed-in user is the calling user,
//!   and that user is the natural person who grants.
//! - **Through MSign**: the request names an MSign sign request; MPower asks
//!   MSign for its result over the bus (as the consumer `mpower`, receipt
//!   verified), and accepts it only when it is `Success`, signed for the
//!   grantor's IDNP, over the SHA-256 of the consent statement for exactly
//!   this action, code and revision (`lifecycle::statement`), with a
//!   signature that verifies with the certificate MSign returned, and that
//!   certificate is MSign's own (pinned by fingerprint from the PKI).
//!
//! This is a part of the bus side, beside `service.rs`, not of the backend:
//! it reads who calls from the broker-forwarded request and asks MSign over
//! the bus, and hands the backend only its verdict (an `Actor`).
//!
//! Invariant: anything else (another consumer, another user, an unsigned,
//! expired, foreign or mismatched signature, MSign unreachable) is not
//! consent; the caller gets a problem saying which, and nothing changes.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use http::{Method, StatusCode};
use mconnect_sdk::{
    Algorithm, Call, Consumer, ProviderRequest, VerifyingKey, certificate_fingerprint,
    ecdsa_p256_der_to_fixed, parse_certs,
};
use serde_json::Value;

use crate::backend::lifecycle::{self, Action};
use crate::backend::{Authorisation, Party, PartyType};

/// The legal basis and purpose under which MPower reads MSign results
/// (grant `mpower-msign-consent`, policies/adapters-sign-power.json).
pub const MSIGN_BASIS: &str = "md-gd-375-2020";
/// See [`MSIGN_BASIS`].
pub const MSIGN_REASON: &str = "consent-verification";

/// Why a claimed consent does not count.
#[derive(Debug, thiserror::Error)]
pub enum ConsentError {
    /// The evidence is there but does not prove the grantor's consent.
    #[error("{0}")]
    Invalid(String),
    /// MSign could not be asked; try again later.
    #[error("{0}")]
    Unavailable(String),
}

/// MSign as MPower reaches it: a bus consumer and the pinned certificate.
pub struct Msign {
    /// MPower's consumer client on the broker.
    pub consumer: Consumer,
    /// MSign's participant id (the path `/r1/{id}/sign-result`).
    pub participant: String,
    /// SHA-256 (hex) of MSign's signing certificate.
    pub certificate_fingerprint: String,
}

/// The two ways consent is verified.
pub struct ConsentChecker {
    /// The citizen portal's participant id.
    pub portal: String,
    /// MSign, when MPower has a broker to reach it through.
    pub msign: Option<Msign>,
}

impl ConsentChecker {
    /// `mcabinet:{idnp}` when the request comes from the portal for its
    /// signed-in user and that user is the (natural) grantor.
    pub fn portal_consent(&self, request: &ProviderRequest, grantor: &Party) -> Option<String> {
        let user = request.header("mconnect-calling-user")?;
        (grantor.party_type == PartyType::Natural
            && request.header("mconnect-client") == Some(self.portal.as_str())
            && user == grantor.id)
            .then(|| format!("{}:{user}", self.portal))
    }

    /// `msign:{request id}` when MSign's result for `sign_request` is the
    /// grantor's signature over the consent statement for `action` on `a`.
    pub async fn msign_consent(
        &self,
        request: &ProviderRequest,
        a: &Authorisation,
        action: Action,
        sign_request: &str,
    ) -> Result<String, ConsentError> {
        let msign = self.msign.as_ref().ok_or_else(|| {
            ConsentError::Unavailable(
                "MPower has no broker to reach MSign through, so a signature cannot be checked"
                    .into(),
            )
        })?;
        if uuid::Uuid::parse_str(sign_request).is_err() {
            return Err(ConsentError::Invalid(
                "msign_request_id must be the UUID MSign gave the sign request".into(),
            ));
        }
        let outcome = msign
            .consumer
            .call(&Call {
                method: Method::GET,
                path: format!(
                    "/r1/{}/sign-result?request_id={sign_request}",
                    msign.participant
                ),
                body: None,
                calling_user: request
                    .header("mconnect-calling-user")
                    .unwrap_or_default()
                    .to_string(),
                basis: MSIGN_BASIS.into(),
                reason: MSIGN_REASON.into(),
                subject: None,
                represented_party: None,
                request_id: None,
            })
            .await
            .map_err(|e| ConsentError::Unavailable(format!("MSign could not be asked: {e}")))?;
        if outcome.receipt.is_err() {
            return Err(ConsentError::Unavailable(
                "the broker's receipt on MSign's answer does not verify".into(),
            ));
        }
        match outcome.status {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => {
                return Err(ConsentError::Invalid(format!(
                    "MSign knows no sign request {sign_request}"
                )));
            }
            other => {
                return Err(ConsentError::Unavailable(format!(
                    "MSign answered {other} for sign request {sign_request}"
                )));
            }
        }
        let result: Value = serde_json::from_slice(&outcome.body)
            .map_err(|_| ConsentError::Unavailable("MSign's answer is not JSON".into()))?;
        let expected = lifecycle::consent_hash(a, action);
        check_result(
            &result,
            &a.authorising,
            &expected,
            &msign.certificate_fingerprint,
        )?;
        Ok(format!("{}:{sign_request}", msign.participant))
    }
}

/// Whether an MSign result proves the grantor signed `expected_hash` (hex
/// SHA-256) with MSign's certificate `msign_fingerprint`.
pub fn check_result(
    result: &Value,
    grantor: &Party,
    expected_hash: &str,
    msign_fingerprint: &str,
) -> Result<(), ConsentError> {
    let invalid = |s: String| Err(ConsentError::Invalid(s));
    let text = |name: &str| result[name].as_str().unwrap_or_default();
    if text("status") != "Success" {
        return invalid(format!(
            "the MSign sign request is {}, not signed",
            result["status"]
        ));
    }
    if grantor.party_type == PartyType::Legal {
        return invalid(
            "a legal person's consent needs its administrator's signature, which MPower cannot yet tie to the IDNO; file it through the person's administrator in the legal-entities register"
                .into(),
        );
    }
    if text("signer_idnp") != grantor.id {
        return invalid(format!(
            "the MSign signature is by {}, not by the grantor {}",
            text("signer_idnp"),
            grantor.id
        ));
    }
    if text("content_type") != "hash" {
        return invalid(
            "sign the consent hash (content_type hash, hash = consent_hashes.<action>)".into(),
        );
    }
    let der = parse_certs(text("certificate"))
        .ok()
        .and_then(|c| c.into_iter().next())
        .ok_or_else(|| ConsentError::Invalid("MSign returned no signer certificate".into()))?;
    if certificate_fingerprint(&der) != msign_fingerprint {
        return invalid("the signer certificate is not MSign's".into());
    }
    let signature = B64
        .decode(text("signature"))
        .map_err(|_| ConsentError::Invalid("the MSign signature is not base64".into()))?;
    let key = VerifyingKey::from_certificate_der(&der)
        .map_err(|_| ConsentError::Invalid("the signer certificate's key is unusable".into()))?;
    let (alg, raw) = match text("signature_format") {
        "rsa-pkcs1v15-sha256" => (Algorithm::RsaV15Sha256, signature),
        "rsa-pss-sha512" => (Algorithm::RsaPssSha512, signature),
        "ed25519" => (Algorithm::Ed25519, signature),
        "ecdsa-p256-sha256-der" => (
            Algorithm::EcdsaP256Sha256,
            ecdsa_p256_der_to_fixed(&signature).unwrap_or_default(),
        ),
        other => return invalid(format!("unknown MSign signature format {other:?}")),
    };
    // A `hash` sign request signs the 32 bytes of the hash.
    let message = hex::decode(expected_hash)
        .map_err(|_| ConsentError::Invalid("consent hash unusable".into()))?;
    key.verify(alg, &message, &raw).map_err(|_| {
        ConsentError::Invalid(
            "the MSign signature is not over this authorisation's consent statement for this action and revision (consent_hashes)"
                .into(),
        )
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use mconnect_sdk::SigningKey;
    use serde_json::json;

    const GRANTOR: &str = "2000000000015";

    /// An Ed25519 key and a self-signed certificate made by openssl.
    fn signer() -> (SigningKey, String) {
        let dir = tempfile::tempdir().unwrap();
        let out = std::process::Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ed25519",
                "-nodes",
                "-keyout",
                "k.pem",
                "-out",
                "c.pem",
                "-days",
                "1",
                "-subj",
                "/CN=msign-test",
            ])
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let key = SigningKey::from_pem(&std::fs::read_to_string(dir.path().join("k.pem")).unwrap())
            .unwrap();
        (
            key,
            std::fs::read_to_string(dir.path().join("c.pem")).unwrap(),
        )
    }

    /// (change to a genuine MSign result) → accepted or the reason's gist.
    #[test]
    fn only_the_grantors_signature_over_this_statement_counts() {
        let (key, cert) = signer();
        let fingerprint = certificate_fingerprint(&parse_certs(&cert).unwrap()[0]);
        let hash = "ab".repeat(32);
        let signature = B64.encode(key.sign(&hex::decode(&hash).unwrap()).unwrap());
        let genuine = json!({
            "status": "Success", "signer_idnp": GRANTOR, "content_type": "hash",
            "signature": signature, "signature_format": "ed25519", "certificate": cert,
        });
        let natural = Party {
            party_type: PartyType::Natural,
            id: GRANTOR.into(),
        };
        type Change = Box<dyn Fn(&mut Value, &mut String, &mut String)>;
        let cases: Vec<(&str, Change, Option<&str>)> = vec![
            ("genuine", Box::new(|_, _, _| {}), None),
            (
                "pending",
                Box::new(|r, _, _| r["status"] = json!("Pending")),
                Some("not signed"),
            ),
            (
                "other signer",
                Box::new(|r, _, _| r["signer_idnp"] = json!("2003000000027")),
                Some("not by the grantor"),
            ),
            (
                "a document",
                Box::new(|r, _, _| r["content_type"] = json!("document")),
                Some("consent hash"),
            ),
            (
                "another statement",
                Box::new(|_, h, _| *h = "cd".repeat(32)),
                Some("not over this"),
            ),
            (
                "a foreign certificate",
                Box::new(|_, _, f| *f = "00".repeat(32)),
                Some("not MSign's"),
            ),
            (
                "no certificate",
                Box::new(|r, _, _| r["certificate"] = json!("")),
                Some("no signer certificate"),
            ),
            (
                "garbled signature",
                Box::new(|r, _, _| r["signature"] = json!("***")),
                Some("not base64"),
            ),
            (
                "unknown format",
                Box::new(|r, _, _| r["signature_format"] = json!("x")),
                Some("unknown"),
            ),
        ];
        for (name, change, want) in cases {
            let (mut r, mut h, mut f) = (genuine.clone(), hash.clone(), fingerprint.clone());
            change(&mut r, &mut h, &mut f);
            match (check_result(&r, &natural, &h, &f), want) {
                (Ok(()), None) => {}
                (Err(ConsentError::Invalid(d)), Some(w)) => assert!(d.contains(w), "{name}: {d}"),
                (got, _) => panic!("{name}: {got:?}"),
            }
        }
        let legal = Party {
            party_type: PartyType::Legal,
            id: "1003603000063".into(),
        };
        assert!(check_result(&genuine, &legal, &hash, &fingerprint).is_err());
    }
}
