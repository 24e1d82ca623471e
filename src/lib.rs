//! MConnect: an interoperability bus and data-exchange broker for government
//! information systems.
//!
//! A consumer's signed request travels through [`exchange`] — identified by
//! its certificate ([`tls`], [`registry`]), verified ([`httpsig`]),
//! authorised against the [`catalog`] and [`policy`], forwarded to the
//! provider, checked, minimised, recorded in the [`audit`] log and sealed with
//! the broker's receipt. [`sdk`] is what participant systems use; [`app`]
//! assembles a running broker; [`cli`] is the `mconnect` command.
//!
//! See `ARCHITECTURE.md` for one request's path and the invariants.

#![forbid(unsafe_code)]

pub mod admin;
pub mod app;
pub mod audit;
pub mod catalog;
pub mod cli;
pub mod config;
pub mod connect;
pub mod crypto;
pub mod exchange;
pub mod httpsig;
pub mod ids;
pub mod json;
pub mod ops;
pub mod pki;
pub mod policy;
pub mod registry;
pub mod sandbox;
pub mod sdk;
pub mod server;
pub mod store;
pub mod tls;
pub mod trust;
