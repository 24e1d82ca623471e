//! MConnect: an interoperability bus and data-exchange broker for government
//! information systems — the broker library.
//!
//! A consumer's signed request travels through [`exchange`] — identified by
//! its certificate ([`registry`]), verified ([`httpsig`]), authorised against
//! the [`rules`] (the [`catalog`] and [`policy`]), forwarded to the provider,
//! checked, minimised, recorded in the [`audit`] log and sealed with the
//! broker's receipt. [`app`] assembles a running broker from a [`config`].
//!
//! The protocol's vocabulary, signatures, TLS and the HTTP server come from
//! the participant SDK (`mconnect-sdk`), re-exported here under their old
//! names so the broker reads as one library; the SDK knows nothing of the
//! broker. The command line and the sandbox live in `mconnect-cli`.
//!
//! See `ARCHITECTURE.md` for one request's path, the dependency rules and
//! the invariants, and `docs/PROTOCOL.md` for the protocol.

#![forbid(unsafe_code)]

pub mod admin;
pub mod app;
pub mod audit;
pub mod backup;
pub mod bootstrap;
pub mod catalog;
pub mod config;
pub mod connect;
pub mod exchange;
pub mod json;
pub mod metrics;
pub mod ops;
pub mod pki;
pub mod policy;
pub mod registry;
pub mod rules;
pub mod store;
pub mod trust;

pub use mconnect_sdk::{crypto, httpsig, ids, server, tls};
