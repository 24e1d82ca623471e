//! Serving HTTP over mutual TLS: accept, handshake (bounded in time), HTTP/2
//! or HTTP/1.1 by ALPN with header limits, one handler call per request, and
//! graceful shutdown that lets requests in flight finish.
//!
//! Used by the broker's data plane and admin listeners and by the participant
//! SDK's provider server, so every listener on the bus behaves alike.
//!
//! Invariant: the handler receives the peer's verified certificate
//! fingerprint; a connection that did not present a certificate chained to
//! the configured CA never reaches it (rustls refuses the handshake).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::exchange::Peer;

/// How long a client may take to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long shutdown waits for requests in flight.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// A running listener.
pub struct RunningServer {
    local_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl RunningServer {
    /// The bound address (useful when binding port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, lets requests in flight finish (bounded), and returns.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
    }
}

/// Binds `addr` and serves `handler` over TLS until shut down.
pub async fn serve<H, F>(
    addr: SocketAddr,
    tls: Arc<rustls::ServerConfig>,
    max_header_bytes: usize,
    handler: H,
) -> std::io::Result<RunningServer>
where
    H: Fn(Arc<Peer>, Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let listener = TcpListener::bind(addr).await?;
    let local_addr = listener.local_addr()?;
    let (tx, rx) = watch::channel(false);
    let task = tokio::spawn(accept_loop(
        listener,
        TlsAcceptor::from(tls),
        max_header_bytes,
        handler,
        rx,
    ));
    Ok(RunningServer {
        local_addr,
        shutdown: tx,
        task,
    })
}

async fn accept_loop<H, F>(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    max_header_bytes: usize,
    handler: H,
    mut shutdown: watch::Receiver<bool>,
) where
    H: Fn(Arc<Peer>, Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .max_buf_size(max_header_bytes.max(8192))
        .keep_alive(true);
    builder
        .http2()
        .max_header_list_size(max_header_bytes as u32)
        .max_concurrent_streams(256);
    let builder = Arc::new(builder);
    loop {
        let (tcp, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let handler = handler.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%remote, error = %e, "tls handshake refused");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%remote, "tls handshake timed out");
                    return;
                }
            };
            let fingerprint = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .map(|leaf| crate::crypto::certificate_fingerprint(leaf));
            let peer = Arc::new(Peer {
                fingerprint,
                addr: remote,
            });
            let service = service_fn(move |req| {
                let fut = handler(peer.clone(), req);
                async move { Ok::<_, std::convert::Infallible>(fut.await) }
            });
            let conn = builder.serve_connection(TokioIo::new(tls), service);
            if let Err(e) = watcher.watch(conn.into_owned()).await {
                tracing::debug!(%remote, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("requests still in flight after the drain timeout; closing");
    }
}
