//! The TLS edge: rustls configurations for the broker's listeners (client
//! certificates required, chained to the configured CA, dates enforced) and
//! for mutual TLS towards providers.
//!
//! Architecture invariant: only this module builds rustls configurations, and
//! it always uses the aws-lc-rs provider, the same one that signs and
//! verifies messages (`crate::crypto`), so the process has one crypto stack.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Why TLS material could not be loaded or assembled.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("cannot load {what} from {path}: {reason}")]
    Load {
        /// What was expected (certificates, private key).
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// rustls refused the material (wrong key for the certificate, unsupported key).
    #[error("tls configuration refused: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client-certificate verifier could not be built.
    #[error("client certificate verifier: {0}")]
    Verifier(String),
}

/// A certificate chain and its private key.
pub struct Identity {
    /// Leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The leaf's private key.
    pub key: PrivateKeyDer<'static>,
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Identity {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl Identity {
    /// Loads a chain and key from PEM files.
    pub fn load(cert: &Path, key: &Path) -> Result<Identity, TlsError> {
        Ok(Identity {
            chain: load_certificates(cert)?,
            key: load_private_key(key)?,
        })
    }

    /// Parses a chain and key from PEM text.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Identity, TlsError> {
        let chain = parse_certificates(cert_pem.as_bytes()).map_err(|reason| TlsError::Load {
            what: "certificates",
            path: PathBuf::from("<memory>"),
            reason,
        })?;
        let key =
            PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| TlsError::Load {
                what: "private key",
                path: PathBuf::from("<memory>"),
                reason: e.to_string(),
            })?;
        Ok(Identity { chain, key })
    }

    /// The leaf certificate.
    pub fn leaf(&self) -> Option<&CertificateDer<'static>> {
        self.chain.first()
    }
}

/// The crypto provider every configuration uses.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Loads every certificate in a PEM file.
pub fn load_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = std::fs::read(path).map_err(|e| TlsError::Load {
        what: "certificates",
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    parse_certificates(&bytes).map_err(|reason| TlsError::Load {
        what: "certificates",
        path: path.to_path_buf(),
        reason,
    })
}

fn parse_certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    if certs.is_empty() {
        return Err("no CERTIFICATE block found".into());
    }
    Ok(certs)
}

/// Loads a private key (PKCS#8, SEC1 or PKCS#1) from a PEM file.
pub fn load_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::Load {
        what: "private key",
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// A root store holding the given CA certificates.
pub fn root_store(cas: &[CertificateDer<'static>]) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for ca in cas {
        roots.add(ca.clone())?;
    }
    Ok(roots)
}

/// A server configuration that requires a client certificate chained to one
/// of `cas` and offers HTTP/2 and HTTP/1.1 by ALPN.
pub fn server_config(
    cas: &[CertificateDer<'static>],
    identity: &Identity,
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = provider();
    let verifier = client_verifier(cas)?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(identity.chain.clone(), identity.key.clone_key())?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A server configuration for browsers: the server's certificate only, no
/// client certificate asked (the data-access portal, whose users sign in
/// instead), HTTP/2 and HTTP/1.1 by ALPN.
pub fn browser_server_config(identity: &Identity) -> Result<Arc<ServerConfig>, TlsError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(identity.chain.clone(), identity.key.clone_key())?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The client-certificate verifier of the broker's listeners: chain to one of
/// `cas`, validity dates, client-authentication purpose (rustls-webpki).
/// `crate::trust` checks registered certificates with this same verifier, so
/// a certificate is registrable exactly when it could complete a handshake.
pub fn client_verifier(
    cas: &[CertificateDer<'static>],
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, TlsError> {
    WebPkiClientVerifier::builder_with_provider(Arc::new(root_store(cas)?), provider())
        .build()
        .map_err(|e| TlsError::Verifier(e.to_string()))
}

/// A client configuration that trusts `cas` and presents `identity`.
///
/// ALPN is left empty: the HTTP connector offers h2 and http/1.1 itself.
pub fn client_config(
    cas: &[CertificateDer<'static>],
    identity: &Identity,
) -> Result<Arc<ClientConfig>, TlsError> {
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(root_store(cas)?)
        .with_client_auth_cert(identity.chain.clone(), identity.key.clone_key())?;
    Ok(Arc::new(config))
}

/// A client configuration for servers outside the bus (an adapter's webhook
/// targets): trusts `roots`, presents no certificate.
pub fn server_auth_client_config(
    roots: &[CertificateDer<'static>],
) -> Result<Arc<ClientConfig>, TlsError> {
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(root_store(roots)?)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The subject common name of a DER certificate, for messages and logs.
pub fn common_name(cert_der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).ok()?;
    let cn = cert.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_string)
}

/// The validity of a DER certificate as unix seconds (not before, not after).
pub fn validity(cert_der: &[u8]) -> Option<(i64, i64)> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).ok()?;
    let v = cert.validity();
    Some((v.not_before.timestamp(), v.not_after.timestamp()))
}

/// The pooled HTTPS client every bus client is built on.
pub type HttpsClient = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    http_body_util::Full<bytes::Bytes>,
>;

/// How a bus client connects.
#[derive(Debug, Clone, Copy)]
pub struct ClientOptions {
    /// Offer HTTP/2 by ALPN beside HTTP/1.1. Off for a client whose
    /// signatures cover `@target-uri` rebuilt from `Host` (the admin API),
    /// which only HTTP/1.1 always sends.
    pub http2: bool,
    /// Give up connecting after this long.
    pub connect_timeout: Option<std::time::Duration>,
    /// Idle connections kept per host (hyper's default: no cap).
    pub max_idle_per_host: usize,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            http2: true,
            connect_timeout: None,
            max_idle_per_host: usize::MAX,
        }
    }
}

/// The one mTLS client builder of the bus (the broker towards providers, the
/// consumer towards the broker, the admin client): HTTPS only, `tls` holding
/// the trusted CAs and the client's own certificate, no Nagle delay, and
/// idle connections let go before the servers' own idle limits close them
/// ([`crate::server::CLIENT_POOL_IDLE_TIMEOUT`]).
pub fn https_client(tls: &ClientConfig, options: ClientOptions) -> HttpsClient {
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(options.connect_timeout);
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls.clone())
        .https_only()
        .enable_http1();
    let https = if options.http2 {
        builder.enable_http2().wrap_connector(http)
    } else {
        builder.wrap_connector(http)
    };
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_idle_timeout(crate::server::CLIENT_POOL_IDLE_TIMEOUT)
        .pool_max_idle_per_host(options.max_idle_per_host)
        .build(https)
}
