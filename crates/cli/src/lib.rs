//! The `mconnect` command and the sandbox, apart from the broker library so
//! that the library carries no command-line parsing, progress bars or child
//! processes (ripgrep's thin binary over reusable libraries).
//!
//! [`cli`] turns raw arguments into validated settings and runs the command;
//! [`sandbox`] is `mconnect sandbox`: the whole bus on loopback.

#![forbid(unsafe_code)]

pub mod cli;
pub mod sandbox;
