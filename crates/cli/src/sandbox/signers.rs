//! The sandbox's people's own signing certificates: what the national PKI
//! issues a person for qualified signatures, here issued by the sandbox CA
//! for every official of the definition (the IDNP in the subject's
//! `serialNumber`, `PNOMD-{IDNP}`), written to `{pki}/signers/` where
//! MSign's reference backend signs for them. A connection application is
//! accepted with an official's signature only if it is made with such a
//! certificate naming the official (`mconnect::connect::evidence`).
//!
//! Made once and kept, like the rest of the development PKI; renewed when
//! out of date or of another CA.

use std::path::Path;

use anyhow::{Context, Result};
use mconnect::pki::DevCa;
use mconnect::trust::TrustAnchors;
use mconnect_sdk::ManifestOfficial;

/// Issues the missing or no longer valid signing certificates of
/// `officials` into `{pki_dir}/signers/`.
pub(crate) fn write(ca: &DevCa, pki_dir: &Path, officials: &[ManifestOfficial]) -> Result<()> {
    let dir = pki_dir.join("signers");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let anchors = TrustAnchors::from_pem(ca.cert_pem())?;
    let now = mconnect::exchange::unix_now();
    for official in officials {
        let cert = dir.join(format!("{}.cert.pem", official.idnp));
        let valid = std::fs::read_to_string(&cert).ok().is_some_and(|pem| {
            mconnect::trust::ParsedCertificate::from_pem(&pem)
                .is_ok_and(|parsed| anchors.check(&parsed, now).is_ok())
        });
        if !valid {
            ca.issue_person(&official.idnp, &official.name)?
                .write(&dir, &official.idnp)
                .with_context(|| format!("writing the signing certificate of {}", official.idnp))?;
        }
    }
    Ok(())
}
