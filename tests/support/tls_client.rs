//! A TLS client for raw connections to a sandbox's broker: shared by
//! `tests/connection_limits.rs` and `benches/connections.rs`, which include
//! this file by path (neither wants the rest of `tests/support`).

use std::path::Path;
use std::sync::Arc;

use tokio_rustls::TlsConnector;

/// A TLS client presenting `participant`'s certificate from the sandbox
/// directory `dir`, offering `alpn`.
pub fn connector(dir: &Path, participant: &str, alpn: &[u8]) -> TlsConnector {
    let pki = dir.join("pki");
    let cas = mconnect::tls::load_certificates(&pki.join("ca.cert.pem")).unwrap();
    let identity = mconnect::tls::Identity::load(
        &pki.join(format!("{participant}.cert.pem")),
        &pki.join(format!("{participant}.key.pem")),
    )
    .unwrap();
    let mut config = (*mconnect::tls::client_config(&cas, &identity).unwrap()).clone();
    config.alpn_protocols = vec![alpn.to_vec()];
    TlsConnector::from(Arc::new(config))
}
