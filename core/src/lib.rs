//! Pure logic of the zone_sync module: nothing here links against nginx.
//!
//! The nginx-facing crate (the cdylib at the repository root) stays a thin
//! layer of FFI glue around these pieces, so that `cargo test`, property
//! tests and fuzzers reach everything that can go wrong without nginx.
#![forbid(unsafe_code)]

pub mod api;
pub mod hlc;
pub mod keyval_key;
pub mod merge;
pub mod rate;
pub mod session;
pub mod state_file;
pub mod table;
pub mod wire;
