//! The MConnect participant SDK: everything a participant system needs to
//! speak the bus protocol (docs/PROTOCOL.md), and the only crate adapters and
//! examples depend on.
//!
//! - [`protocol`]: the vocabulary — header names, signature labels, roles,
//!   the problem media type, the clock, query strings.
//! - [`httpsig`] (RFC 9421 and RFC 9530) over [`crypto`] (one provider,
//!   aws-lc-rs, for TLS and signatures); [`tls`] builds the mTLS
//!   configurations; [`server`] is the one HTTP server every listener on the
//!   bus runs on, the broker's included.
//! - Consumers: [`Consumer`] signs a call, sends it over mTLS and verifies
//!   the broker's receipt ([`consumer`]).
//! - Providers: [`serve_provider`] accepts only broker-signed requests and
//!   signs the answers ([`provider`]).
//! - The building blocks — [`sign_request`], [`verify_broker_request`],
//!   [`sign_response`], [`verify_receipt`] — for systems with their own stack.
//! - [`trace`]: W3C Trace Context (`traceparent`, `tracestate`), so one
//!   call can be followed from consumer to provider.
//! - Adapters: [`adapter`] holds what every adapter binary shares (common
//!   arguments, logging, the run loop, atomic file writes, timestamps).
//!
//! Architecture invariant: this crate knows no broker. It does not depend on
//! the `mconnect` library, so nothing private to the broker can leak into a
//! participant (`tests/layering.rs` keeps it so).

#![forbid(unsafe_code)]

pub mod adapter;
pub mod consumer;
pub mod crypto;
pub mod httpsig;
pub mod ids;
pub mod keys;
mod lifeline;
pub mod manifest;
pub mod protocol;
pub mod provider;
pub mod replay;
pub mod server;
pub mod tls;
pub mod trace;

pub use consumer::{
    Call, CallOutcome, Consumer, Receipt, sign_request, verify_receipt, verify_signed_response,
};
pub use crypto::{
    Algorithm, SigningKey, VerifyingKey, certificate_fingerprint, ecdsa_p256_der_to_fixed,
    ecdsa_p256_fixed_to_der, sha256,
};
pub use keys::{Credentials, SdkError, TrustedKeys, parse_certs};
pub use lifeline::{
    LIFELINE_ENV, LIFELINE_GRACE, StopReason, exit_when_parent_dies, until_stopped,
};
pub use manifest::{
    ManifestAuditor, ManifestBroker, ManifestCluster, ManifestClusterBroker, ManifestOfficial,
    ManifestParticipant, ManifestPortal, ManifestTry, SandboxManifest,
};
pub use protocol::query_param;
pub use provider::{
    ExchangeIds, ProviderRequest, ProviderResponse, ProviderSettings, serve_provider,
    serve_raw_provider, sign_response, verify_broker_request,
};
pub use server::RunningServer;
pub use trace::{TraceContext, TraceOrigin, TraceParent};
