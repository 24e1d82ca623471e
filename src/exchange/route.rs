//! Routing to providers: the pooled mTLS client (HTTP/2 or HTTP/1.1 by ALPN,
//! keep-alive), the per-service timeout, and the bounded read of the answer.
//!
//! Invariant: the broker never waits on a provider longer than the service's
//! timeout, and never buffers more of an answer than the configured limit.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full, Limited};

use super::error::{ErrorKind, ExchangeError};

/// A provider's answer, fully read.
pub struct ProviderAnswer {
    /// Status and headers.
    pub head: http::response::Parts,
    /// The body.
    pub body: Bytes,
}

/// The pooled client towards providers.
#[derive(Clone)]
pub struct ProviderClient {
    client: crate::tls::HttpsClient,
}

impl ProviderClient {
    /// A client presenting the broker's certificate (inside `tls`).
    pub fn new(tls: Arc<rustls::ClientConfig>, connect_timeout: Duration) -> Self {
        let client = crate::tls::https_client(
            &tls,
            crate::tls::ClientOptions {
                http2: true,
                connect_timeout: Some(connect_timeout),
                max_idle_per_host: 64,
            },
        );
        ProviderClient { client }
    }

    /// Sends the request and reads the answer within `timeout`, at most `max_body` bytes.
    pub async fn send(
        &self,
        request: Request<Full<Bytes>>,
        timeout: Duration,
        max_body: usize,
    ) -> Result<ProviderAnswer, ExchangeError> {
        let exchange = async {
            let response = self.client.request(request).await.map_err(|e| {
                if is_unparsable_answer(&e) {
                    ExchangeError::new(
                        ErrorKind::ProviderBadResponse,
                        format!("provider answer is not HTTP: {}", describe(&e)),
                    )
                } else {
                    ExchangeError::new(
                        ErrorKind::ProviderUnavailable,
                        format!("provider endpoint unreachable: {}", describe(&e)),
                    )
                }
            })?;
            let (head, body) = response.into_parts();
            let body = Limited::new(body, max_body)
                .collect()
                .await
                .map_err(|e| {
                    ExchangeError::new(
                        ErrorKind::ProviderBadResponse,
                        format!("provider answer unreadable or over {max_body} bytes: {e}"),
                    )
                })?
                .to_bytes();
            Ok(ProviderAnswer { head, body })
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(ExchangeError::new(
                ErrorKind::ProviderTimeout,
                format!(
                    "provider did not answer within the service timeout of {} ms",
                    timeout.as_millis()
                ),
            )),
        }
    }
}

/// Whether the provider was reached and answered bytes that are not an HTTP
/// response (502, the provider's fault), as opposed to not being reached (503).
fn is_unparsable_answer(error: &hyper_util::client::legacy::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(error);
    while let Some(e) = source {
        if let Some(h) = e.downcast_ref::<hyper::Error>()
            && (h.is_parse() || h.is_parse_status() || h.is_parse_too_large())
        {
            return true;
        }
        source = e.source();
    }
    false
}

/// The innermost cause of a client error, without internals.
fn describe(error: &hyper_util::client::legacy::Error) -> String {
    let mut source: &dyn std::error::Error = error;
    while let Some(next) = source.source() {
        source = next;
    }
    source.to_string()
}
