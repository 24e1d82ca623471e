//! Serving HTTP: accept, cap connections, TLS handshake (bounded in time),
//! HTTP/2 or HTTP/1.1 by ALPN with header limits, one handler call per
//! request, idle and header-read timeouts, and graceful shutdown that lets
//! requests in flight finish.
//!
//! Used by the broker's data plane and admin listeners, by its plain-HTTP
//! operations listener and by the participant SDK's provider server, so every
//! listener on the bus behaves alike.
//!
//! Invariants:
//! - the handler of a TLS listener receives the peer's verified certificate
//!   fingerprint; a connection that did not present a certificate chained to
//!   the configured CA never reaches it (rustls refuses the handshake);
//! - no connection outlives its limits: at most `max_connections` are open per
//!   listener (counted from accept, before the handshake costs CPU), at most
//!   `max_connections_per_certificate` per client certificate, a request head
//!   must arrive within `header_read_timeout` (HTTP/1), and a connection with
//!   no request in flight is closed after `idle_timeout` (HTTP/1 and HTTP/2,
//!   including one that never sends a byte);
//! - every refusal and every close for a limit is counted in [`ListenerStats`],
//!   and every failed TLS handshake with its reason ([`HandshakeFailure`], a
//!   fixed set).

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::crypto::certificate_fingerprint;

/// Who is on the other end of a connection, as the handler sees it.
#[derive(Clone, Debug)]
pub struct Peer {
    /// Fingerprint of the TLS client certificate (always present behind a
    /// TLS listener; absent on the plain-HTTP operations listener).
    pub fingerprint: Option<String>,
    /// Remote address.
    pub addr: SocketAddr,
}

/// How long a client may take to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long shutdown waits for requests in flight.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connection told to close (idle, or shutting down) may take to
/// finish what it has in flight before it is dropped outright.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// How long bus clients (the broker towards providers, the SDK's consumer,
/// the admin client) keep an idle pooled connection: below the servers'
/// default header-read timeout (which closes an idle HTTP/1 keep-alive
/// connection, see [`ServerLimits::header_read_timeout`]) and idle timeout,
/// so a client lets a connection go before the server closes it rather than
/// send a request into a connection being closed.
pub const CLIENT_POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(8);

/// Limits every connection of a listener obeys (the `[server]` section of
/// the broker configuration; the SDK's provider server uses the defaults).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerLimits {
    /// Largest request head (HTTP/1 buffer, HTTP/2 header list).
    pub max_header_bytes: usize,
    /// An HTTP/1 request head must be complete this long after hyper starts
    /// waiting for it. hyper starts that clock as soon as it waits for the
    /// next request on a kept-alive connection, so an idle HTTP/1 connection
    /// is closed after the shorter of this and `idle_timeout`.
    pub header_read_timeout: Duration,
    /// A connection with no request in flight for this long is closed.
    pub idle_timeout: Duration,
    /// Open connections per listener, counting those still in the handshake.
    pub max_connections: usize,
    /// Open connections per client certificate (TLS listeners).
    pub max_connections_per_certificate: usize,
    /// Concurrent HTTP/2 streams per connection.
    pub max_concurrent_streams: u32,
    /// HTTP/2 keep-alive ping interval.
    pub h2_keepalive_interval: Duration,
    /// An HTTP/2 connection whose ping is not answered in this time is closed.
    pub h2_keepalive_timeout: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            max_header_bytes: 32 * 1024,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            max_connections: 4096,
            max_connections_per_certificate: 256,
            max_concurrent_streams: 128,
            h2_keepalive_interval: Duration::from_secs(20),
            h2_keepalive_timeout: Duration::from_secs(10),
        }
    }
}

/// Counters of one listener, for `/metrics`.
#[derive(Debug, Default)]
pub struct ListenerStats {
    open: AtomicUsize,
    accepted: AtomicU64,
    refused_listener_cap: AtomicU64,
    refused_certificate_cap: AtomicU64,
    /// Failed TLS handshakes, one counter per [`HandshakeFailure`].
    handshake_failed: [AtomicU64; HandshakeFailure::ALL.len()],
    closed_header_timeout: AtomicU64,
    closed_idle: AtomicU64,
}

/// Why a TLS handshake failed: a small fixed set, so that a metric labelled
/// by it has a bounded number of series whatever clients send.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HandshakeFailure {
    /// Not completed within the handshake timeout.
    Timeout,
    /// The client presented no certificate.
    NoCertificate,
    /// The client's certificate (or its chain) is expired or not yet valid.
    CertificateDates,
    /// The client's certificate does not chain to the bus CA, is revoked,
    /// or is not for client authentication.
    CertificateUntrusted,
    /// The client's certificate could not be read or checked otherwise.
    CertificateInvalid,
    /// No protocol version, cipher suite or ALPN protocol in common.
    Incompatible,
    /// Not TLS, or TLS out of order (a plain HTTP request to a TLS port).
    Protocol,
    /// The client sent an alert, typically because it does not trust the
    /// listener's own certificate.
    AlertReceived,
    /// The client closed or reset the connection during the handshake.
    PeerClosed,
    /// Anything else.
    Other,
}

impl HandshakeFailure {
    /// Every reason, in the order of [`ListenerCounts::handshake_failures`].
    pub const ALL: [HandshakeFailure; 10] = [
        HandshakeFailure::Timeout,
        HandshakeFailure::NoCertificate,
        HandshakeFailure::CertificateDates,
        HandshakeFailure::CertificateUntrusted,
        HandshakeFailure::CertificateInvalid,
        HandshakeFailure::Incompatible,
        HandshakeFailure::Protocol,
        HandshakeFailure::AlertReceived,
        HandshakeFailure::PeerClosed,
        HandshakeFailure::Other,
    ];

    /// The reason as a metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            HandshakeFailure::Timeout => "timeout",
            HandshakeFailure::NoCertificate => "no_certificate",
            HandshakeFailure::CertificateDates => "certificate_dates",
            HandshakeFailure::CertificateUntrusted => "certificate_untrusted",
            HandshakeFailure::CertificateInvalid => "certificate_invalid",
            HandshakeFailure::Incompatible => "incompatible",
            HandshakeFailure::Protocol => "protocol",
            HandshakeFailure::AlertReceived => "alert_received",
            HandshakeFailure::PeerClosed => "peer_closed",
            HandshakeFailure::Other => "other",
        }
    }

    /// The reason of a failed `accept` (tokio-rustls hands rustls' error
    /// inside the `io::Error`).
    pub fn of(error: &std::io::Error) -> HandshakeFailure {
        use rustls::{CertificateError, Error as Tls};
        let Some(tls) = error.get_ref().and_then(|e| e.downcast_ref::<Tls>()) else {
            return match error.kind() {
                std::io::ErrorKind::UnexpectedEof
                | std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::ConnectionAborted
                | std::io::ErrorKind::BrokenPipe => HandshakeFailure::PeerClosed,
                _ => HandshakeFailure::Other,
            };
        };
        match tls {
            Tls::NoCertificatesPresented => HandshakeFailure::NoCertificate,
            Tls::InvalidCertificate(c) => match c {
                CertificateError::Expired
                | CertificateError::ExpiredContext { .. }
                | CertificateError::NotValidYet
                | CertificateError::NotValidYetContext { .. } => HandshakeFailure::CertificateDates,
                CertificateError::UnknownIssuer
                | CertificateError::Revoked
                | CertificateError::BadSignature
                | CertificateError::InvalidPurpose
                | CertificateError::InvalidPurposeContext { .. }
                | CertificateError::NotValidForName
                | CertificateError::NotValidForNameContext { .. }
                | CertificateError::ApplicationVerificationFailure => {
                    HandshakeFailure::CertificateUntrusted
                }
                _ => HandshakeFailure::CertificateInvalid,
            },
            Tls::PeerIncompatible(_) | Tls::NoApplicationProtocol => HandshakeFailure::Incompatible,
            Tls::InvalidMessage(_)
            | Tls::InappropriateMessage { .. }
            | Tls::InappropriateHandshakeMessage { .. }
            | Tls::PeerMisbehaved(_)
            | Tls::PeerSentOversizedRecord
            | Tls::DecryptError => HandshakeFailure::Protocol,
            Tls::AlertReceived(_) => HandshakeFailure::AlertReceived,
            _ => HandshakeFailure::Other,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// A copy of a listener's counters at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ListenerCounts {
    /// Connections open now (handshaking ones included).
    pub open: u64,
    /// Connections accepted since start (refused ones included).
    pub accepted: u64,
    /// Closed at once because the listener had `max_connections` open.
    pub refused_listener_cap: u64,
    /// Closed after the handshake because the certificate had
    /// `max_connections_per_certificate` open.
    pub refused_certificate_cap: u64,
    /// TLS handshakes refused or timed out (the sum of
    /// `handshake_failures`).
    pub handshake_failed: u64,
    /// TLS handshakes refused or timed out, by reason, in the order of
    /// [`HandshakeFailure::ALL`].
    pub handshake_failures: [u64; HandshakeFailure::ALL.len()],
    /// Closed because a request head did not arrive in time (HTTP/1; an
    /// idle kept-alive connection waiting for its next head counts here).
    pub closed_header_timeout: u64,
    /// Closed after `idle_timeout` without a request in flight.
    pub closed_idle: u64,
}

impl ListenerStats {
    /// The counters now.
    pub fn counts(&self) -> ListenerCounts {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let handshake_failures = self.handshake_failed.each_ref().map(get);
        ListenerCounts {
            open: self.open.load(Ordering::Relaxed) as u64,
            accepted: get(&self.accepted),
            refused_listener_cap: get(&self.refused_listener_cap),
            refused_certificate_cap: get(&self.refused_certificate_cap),
            handshake_failed: handshake_failures.iter().sum(),
            handshake_failures,
            closed_header_timeout: get(&self.closed_header_timeout),
            closed_idle: get(&self.closed_idle),
        }
    }

    /// Counts a failed TLS handshake.
    fn handshake_failed(&self, reason: HandshakeFailure) {
        self.handshake_failed[reason.index()].fetch_add(1, Ordering::Relaxed);
    }
}

/// A running listener.
pub struct RunningServer {
    local_addr: SocketAddr,
    stats: Arc<ListenerStats>,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl RunningServer {
    /// The bound address (useful when binding port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The listener's connection counters.
    pub fn stats(&self) -> &Arc<ListenerStats> {
        &self.stats
    }

    /// Stops accepting, lets requests in flight finish (bounded), and returns.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
    }
}

/// Binds `addr` and serves `handler` over TLS with the default limits and
/// `max_header_bytes`, until shut down.
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
    let limits = ServerLimits {
        max_header_bytes,
        ..ServerLimits::default()
    };
    serve_with(addr, Some(tls), limits, Arc::default(), handler).await
}

/// Binds `addr` and serves `handler` until shut down: over TLS when `tls` is
/// given (the handler then always sees a certificate fingerprint), plain HTTP
/// otherwise (the operations listener). `stats` may be shared with whoever
/// reports metrics before the listener exists.
pub async fn serve_with<H, F>(
    addr: SocketAddr,
    tls: Option<Arc<rustls::ServerConfig>>,
    limits: ServerLimits,
    stats: Arc<ListenerStats>,
    handler: H,
) -> std::io::Result<RunningServer>
where
    H: Fn(Arc<Peer>, Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let listener = TcpListener::bind(addr).await?;
    let local_addr = listener.local_addr()?;
    let (tx, rx) = watch::channel(false);
    let edge = Arc::new(Edge {
        acceptor: tls.map(TlsAcceptor::from),
        builder: builder(&limits),
        limits,
        stats: stats.clone(),
        per_certificate: Mutex::new(HashMap::new()),
    });
    let task = tokio::spawn(accept_loop(listener, edge, handler, rx));
    Ok(RunningServer {
        local_addr,
        stats,
        shutdown: tx,
        task,
    })
}

/// What every connection of one listener shares.
struct Edge {
    acceptor: Option<TlsAcceptor>,
    builder: auto::Builder<TokioExecutor>,
    limits: ServerLimits,
    stats: Arc<ListenerStats>,
    /// Open connections by certificate fingerprint; an entry is removed when
    /// its count falls to zero, so the map never holds more entries than
    /// there are open connections.
    per_certificate: Mutex<HashMap<String, usize>>,
}

fn builder(limits: &ServerLimits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // hyper enforces the header-read timeout only with a timer; without one
    // a client sending a header byte a second holds the connection forever.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(limits.max_concurrent_streams)
        .keep_alive_interval(limits.h2_keepalive_interval)
        .keep_alive_timeout(limits.h2_keepalive_timeout);
    builder
}

async fn accept_loop<H, F>(
    listener: TcpListener,
    edge: Arc<Edge>,
    handler: H,
    mut shutdown: watch::Receiver<bool>,
) where
    H: Fn(Arc<Peer>, Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    // Connection tasks live in a set so that shutdown can wait for them and
    // then abort the stragglers, rather than leave them running detached.
    let mut connections = JoinSet::new();
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
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            _ = shutdown.changed() => break,
        };
        edge.stats.accepted.fetch_add(1, Ordering::Relaxed);
        // The cap is checked before the handshake: an excess connection costs
        // one accept and one close, never a TLS handshake.
        let Some(slot) = OpenSlot::take(&edge) else {
            edge.stats
                .refused_listener_cap
                .fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%remote, "connection refused: listener at max_connections");
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        connections.spawn(connection(
            tcp,
            remote,
            slot,
            edge.clone(),
            handler.clone(),
            shutdown.clone(),
        ));
    }
    drop(listener);
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!("requests still in flight after the drain timeout; closing");
        connections.shutdown().await;
    }
}

/// One accepted connection: handshake, certificate cap, then HTTP.
async fn connection<H, F>(
    tcp: TcpStream,
    remote: SocketAddr,
    _slot: OpenSlot,
    edge: Arc<Edge>,
    handler: H,
    shutdown: watch::Receiver<bool>,
) where
    H: Fn(Arc<Peer>, Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let Some(acceptor) = edge.acceptor.clone() else {
        let peer = Arc::new(Peer {
            fingerprint: None,
            addr: remote,
        });
        return http(tcp, peer, &edge, handler, shutdown).await;
    };
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            let reason = HandshakeFailure::of(&e);
            edge.stats.handshake_failed(reason);
            tracing::debug!(%remote, error = %e, reason = reason.as_str(), "tls handshake refused");
            return;
        }
        Err(_) => {
            edge.stats.handshake_failed(HandshakeFailure::Timeout);
            tracing::debug!(%remote, "tls handshake timed out");
            return;
        }
    };
    let fingerprint = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|leaf| certificate_fingerprint(leaf));
    // Held until the connection ends; a certificate at its cap is closed
    // right after the handshake, before any request is read.
    let _certificate_slot = match &fingerprint {
        Some(f) => match CertificateSlot::take(&edge, f) {
            Some(slot) => Some(slot),
            None => {
                edge.stats
                    .refused_certificate_cap
                    .fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%remote, fingerprint = %f, "connection refused: certificate at max_connections_per_certificate");
                return;
            }
        },
        None => None,
    };
    let peer = Arc::new(Peer {
        fingerprint,
        addr: remote,
    });
    http(tls, peer, &edge, handler, shutdown).await;
}

/// Serves HTTP on one connection until it ends, goes idle past the idle
/// timeout, or the listener shuts down.
async fn http<IO, H, F>(
    io: IO,
    peer: Arc<Peer>,
    edge: &Edge,
    handler: H,
    mut shutdown: watch::Receiver<bool>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Fn(Arc<Peer>, Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let remote = peer.addr;
    let activity = Arc::new(Activity::new());
    let tracked = activity.clone();
    let service = service_fn(move |req| {
        let busy = tracked.begin();
        let fut = handler(peer.clone(), req);
        async move {
            let response = fut.await;
            drop(busy);
            Ok::<_, std::convert::Infallible>(response)
        }
    });
    let conn = edge.builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let idle_timeout = edge.limits.idle_timeout;
    let mut wait = idle_timeout;
    // Each turn sleeps at least 10 ms and ends the loop or moves the idle
    // deadline forward, so the loop is bounded by the connection's life.
    let ended = loop {
        tokio::select! {
            result = conn.as_mut() => break Some(result),
            _ = tokio::time::sleep(wait) => {
                match activity.idle_for() {
                    Some(idle) if idle >= idle_timeout => {
                        edge.stats.closed_idle.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(%remote, "closing idle connection");
                        break None;
                    }
                    Some(idle) => {
                        wait = idle_timeout.saturating_sub(idle).max(Duration::from_millis(10));
                    }
                    None => wait = idle_timeout,
                }
            }
            // A dropped sender means the listener is gone: close as well.
            _ = shutdown.changed() => break None,
        }
    };
    let result = match ended {
        Some(result) => result,
        None => {
            // HTTP/1 closes at once when idle; HTTP/2 sends GOAWAY and lets
            // streams in flight finish. Either way the wait is bounded.
            conn.as_mut().graceful_shutdown();
            match tokio::time::timeout(CLOSE_GRACE, conn.as_mut()).await {
                Ok(result) => result,
                Err(_) => return,
            }
        }
    };
    if let Err(e) = result {
        let header_timeout = e
            .downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_timeout);
        if header_timeout {
            edge.stats
                .closed_header_timeout
                .fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%remote, "request head not received in time; closed");
        } else {
            tracing::debug!(%remote, error = %e, "connection ended with an error");
        }
    }
}

/// Requests in flight on one connection, and since when it has had none.
struct Activity {
    in_flight: AtomicUsize,
    idle_since: Mutex<Instant>,
}

/// Marks one request in flight until dropped (also when the client goes
/// away and hyper drops the handler's future).
struct Busy(Arc<Activity>);

impl Activity {
    fn new() -> Self {
        Activity {
            in_flight: AtomicUsize::new(0),
            idle_since: Mutex::new(Instant::now()),
        }
    }

    fn begin(self: &Arc<Self>) -> Busy {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        Busy(self.clone())
    }

    /// How long the connection has had no request in flight; `None` while busy.
    fn idle_for(&self) -> Option<Duration> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let since = *self.idle_since.lock().unwrap_or_else(|e| e.into_inner());
        Some(since.elapsed())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        // Restart the idle clock before the count reaches zero, so that a
        // reader seeing zero never sees the old clock.
        *self.0.idle_since.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One place among the listener's `max_connections`, released on drop.
struct OpenSlot(Arc<ListenerStats>);

impl OpenSlot {
    fn take(edge: &Edge) -> Option<OpenSlot> {
        let stats = &edge.stats;
        let before = stats.open.fetch_add(1, Ordering::AcqRel);
        if before >= edge.limits.max_connections {
            stats.open.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(OpenSlot(stats.clone()))
    }
}

impl Drop for OpenSlot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One place among a certificate's `max_connections_per_certificate`,
/// released on drop.
struct CertificateSlot<'a> {
    edge: &'a Edge,
    fingerprint: String,
}

impl<'a> CertificateSlot<'a> {
    fn take(edge: &'a Edge, fingerprint: &str) -> Option<CertificateSlot<'a>> {
        let mut map = edge
            .per_certificate
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let count = map.entry(fingerprint.to_string()).or_insert(0);
        if *count >= edge.limits.max_connections_per_certificate {
            return None;
        }
        *count += 1;
        Some(CertificateSlot {
            edge,
            fingerprint: fingerprint.to_string(),
        })
    }
}

impl Drop for CertificateSlot<'_> {
    fn drop(&mut self) {
        let mut map = self
            .edge
            .per_certificate
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(count) = map.get_mut(&self.fingerprint) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                map.remove(&self.fingerprint);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_handshake_failure_has_its_own_counter() {
        for (i, reason) in HandshakeFailure::ALL.iter().enumerate() {
            assert_eq!(reason.index(), i, "{reason:?}");
        }
        let stats = ListenerStats::default();
        stats.handshake_failed(HandshakeFailure::NoCertificate);
        stats.handshake_failed(HandshakeFailure::NoCertificate);
        stats.handshake_failed(HandshakeFailure::Timeout);
        let counts = stats.counts();
        assert_eq!(counts.handshake_failed, 3);
        assert_eq!(
            counts.handshake_failures[HandshakeFailure::NoCertificate.index()],
            2
        );
        assert_eq!(
            counts.handshake_failures[HandshakeFailure::Timeout.index()],
            1
        );
    }

    #[test]
    fn handshake_errors_map_to_a_bounded_reason() {
        use rustls::{CertificateError, Error as Tls};
        let io = |e: Tls| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
        let table = [
            (io(Tls::NoCertificatesPresented), "no_certificate"),
            (
                io(Tls::InvalidCertificate(CertificateError::Expired)),
                "certificate_dates",
            ),
            (
                io(Tls::InvalidCertificate(CertificateError::UnknownIssuer)),
                "certificate_untrusted",
            ),
            (
                io(Tls::InvalidCertificate(CertificateError::BadEncoding)),
                "certificate_invalid",
            ),
            (
                io(Tls::InvalidMessage(
                    rustls::InvalidMessage::InvalidContentType,
                )),
                "protocol",
            ),
            (
                io(Tls::AlertReceived(rustls::AlertDescription::BadCertificate)),
                "alert_received",
            ),
            (io(Tls::General("x".into())), "other"),
            (
                std::io::Error::from(std::io::ErrorKind::UnexpectedEof),
                "peer_closed",
            ),
            (std::io::Error::other("x"), "other"),
        ];
        for (error, want) in table {
            assert_eq!(HandshakeFailure::of(&error).as_str(), want, "{error}");
        }
    }
}
